//! `rifle convert`: pretrained weights from other frameworks into safetensors files the `resnet` backbone
//! loads by name, with the model's input convention recorded in the file's metadata.
pub mod caffe;
pub mod protobuf;

use crate::data::Normalize;
use crate::model::Net;
use crate::plugins::backbone::resnet::ResNetConfig;
use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Tensor};

/// Metadata keys of a converted file.
pub const SOURCE_KEY: &str = "rifle.source";
pub const ARCH_KEY: &str = "rifle.arch";
/// The input the model expects, in words.
pub const INPUT_KEY: &str = "rifle.input";
/// The same as the `data.normalize` block a pipeline needs (JSON `{"mean": [..], "std": [..]}`).
pub const NORMALIZE_KEY: &str = "rifle.normalize";

pub struct CaffeOptions<'a> {
    /// The `resnet` preset the file must fit.
    pub arch: &'a str,
    /// Per-channel mean the Caffe model subtracts, in its BGR order, on the 0–255 scale.
    pub mean_bgr: [f32; 3],
    /// Names of the head's outputs, recorded as `rifle.classes`.
    pub classes: Vec<String>,
}

/// The normalisation of a Caffe model fed 0–255 pixels minus a mean: in rifle's terms (x/255 − mean)/std,
/// mean = m/255 and std = 1/255. `mean_bgr` is in Caffe's channel order; the result is RGB.
pub fn caffe_normalize(mean_bgr: [f32; 3]) -> Normalize {
    Normalize { mean: [mean_bgr[2] / 255.0, mean_bgr[1] / 255.0, mean_bgr[0] / 255.0], std: [1.0 / 255.0; 3] }
}

/// The layers of a `.caffemodel` file.
pub fn read_caffe(input: &Path) -> Result<Vec<caffe::Layer>> {
    let bytes = std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))?;
    caffe::read_layers(&bytes).with_context(|| format!("{}: not a readable Caffe model", input.display()))
}

/// Converts a `.caffemodel` into `output`; returns a report to print.
pub fn caffe(input: &Path, output: &Path, options: &CaffeOptions) -> Result<String> {
    let same = |a: &Path, b: &Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b);
    anyhow::ensure!(!same(input, output), "{}: the output would overwrite the model being converted; give another file", output.display());
    let layers = read_caffe(input)?;
    let tensors = caffe::to_resnet(&layers).with_context(|| format!("{}", input.display()))?;
    check_fits(&tensors, options.arch).with_context(|| format!("{}: does not fit `arch: {}`", input.display(), options.arch))?;
    let outputs = tensors.iter().find(|(n, _)| n == "fc.weight").map(|(_, t)| t.size()[0]).unwrap_or(0);
    if !options.classes.is_empty() {
        ensure!(options.classes.len() as i64 == outputs, "--classes names {} classes, the model's head has {outputs} outputs", options.classes.len());
    }
    let normalize = caffe_normalize(options.mean_bgr);
    let [b, g, r] = options.mean_bgr;
    let mut meta = BTreeMap::from([
        (SOURCE_KEY.to_string(), format!("{} (Caffe), converted by rifle convert", input.file_name().map(|n| n.to_string_lossy()).unwrap_or_default())),
        (ARCH_KEY.to_string(), options.arch.to_string()),
        (
            INPUT_KEY.to_string(),
            format!("RGB (the stem conv was flipped from Caffe's BGR), pixels 0-255 minus the mean [{r}, {g}, {b}] (R, G, B), not scaled"),
        ),
        (NORMALIZE_KEY.to_string(), serde_json::to_string(&normalize)?),
    ]);
    if !options.classes.is_empty() {
        meta.insert(crate::checkpoint::CLASSES_KEY.to_string(), serde_json::to_string(&options.classes)?);
    }
    crate::tensorfile::write(output, &tensors, &meta)?;
    let params: i64 = tensors.iter().filter(|(n, _)| !n.contains("running_")).map(|(_, t)| t.numel() as i64).sum();
    Ok(format!(
        "{}: {} layers → {} tensors ({params} parameters, head {outputs} outputs), `arch: {}`\n\
         input: {}\n\
         pipeline: data.normalize: {{mean: {:?}, std: {:?}}}\n",
        output.display(),
        layers.len(),
        tensors.len(),
        options.arch,
        meta[INPUT_KEY],
        normalize.mean,
        normalize.std
    ))
}

/// Every tensor of the `arch` ResNet (head sized from the file) is in `tensors` with its shape, and
/// nothing else is.
fn check_fits(tensors: &[(String, Tensor)], arch: &str) -> Result<()> {
    let file: BTreeMap<&str, &Tensor> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let Some(fc) = file.get("fc.weight") else { bail!("no InnerProduct layer (the head `fc.weight`)") };
    let net = Net::build(&ResNetConfig::preset(arch)?, fc.size()[0] as usize, Device::Cpu)?;
    let model = net.state();
    let mut problems = Vec::new();
    for (name, t) in &model {
        match file.get(name.as_str()) {
            None => problems.push(format!("`{name}` is missing")),
            Some(v) if v.size() != t.size() => problems.push(format!("`{name}` has shape {:?}, the model {:?}", v.size(), t.size())),
            Some(_) => {}
        }
    }
    for name in file.keys().filter(|n| !model.iter().any(|(m, _)| m == *n)) {
        problems.push(format!("`{name}` is not in the model"));
    }
    if !problems.is_empty() {
        let more = if problems.len() > 8 { format!(" and {} more", problems.len() - 8) } else { String::new() };
        bail!("{}{more}", problems.into_iter().take(8).collect::<Vec<_>>().join("; "));
    }
    Ok(())
}
