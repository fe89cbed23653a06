//! `rifle predict`: a trained run (or a pipeline plus weights) classifies images, with the pipeline's
//! evaluation transforms and normalisation.
use crate::checkpoint::CLASSES_KEY;
use crate::data::decode::{decode_file, DecodeRules};
use crate::model::Net;
use crate::plugin::Augment;
use crate::registry::Built;
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Returns what to print: one line per image.
pub fn predict(model: &Path, images: &[PathBuf], weights: Option<&Path>, top_k: usize, logits: bool, set: &[String]) -> Result<String> {
    if images.is_empty() {
        bail!("give at least one image");
    }
    let (pipeline, default_weights) = if model.is_dir() {
        (model.join("pipeline.yaml"), Some(model.join("checkpoints/best.safetensors")))
    } else {
        (model.to_path_buf(), None)
    };
    let loaded = crate::cli::load(&pipeline, set, &[])?;
    let weights = weights
        .map(Path::to_path_buf)
        .or(default_weights)
        .or_else(|| loaded.pipeline.weights.as_ref().map(|w| PathBuf::from(&w.path)))
        .ok_or_else(|| anyhow!("no weights: pass --weights FILE (the pipeline has no `weights` section)"))?;
    let tensors = crate::weights::read_any(&weights)?;
    let Built::Backbone(backbone) = loaded.plugins.backbone.build()? else { bail!("backbone: not a backbone plugin") };
    let head = format!("{}.weight", backbone.head().0);
    let outputs = tensors
        .iter()
        .find(|(n, _)| crate::weights::strip(n, &loaded.pipeline.weights.as_ref().map(|w| w.strip_prefix.clone()).unwrap_or_default()) == head)
        .map(|(_, t)| t.size()[0] as usize)
        .ok_or_else(|| anyhow!("{}: no head tensor `{head}`", weights.display()))?;
    let net = Net::build(backbone.as_ref(), outputs, Device::Cpu)?;
    let prefixes = loaded.pipeline.weights.as_ref().map(|w| w.strip_prefix.clone()).unwrap_or_else(|| vec!["module.".into()]);
    let by_name: std::collections::BTreeMap<String, Tensor> = tensors.into_iter().map(|(n, t)| (crate::weights::strip(&n, &prefixes), t)).collect();
    for (name, _) in net.state() {
        let t = by_name.get(&name).ok_or_else(|| anyhow!("{}: missing `{name}`", weights.display()))?;
        net.assign(&name, t)?;
    }
    let classes: Vec<String> = crate::tensorfile::read(&weights)
        .ok()
        .and_then(|(_, meta)| meta.get(CLASSES_KEY).and_then(|c| serde_json::from_str(c).ok()))
        .filter(|c: &Vec<String>| c.len() == outputs)
        .unwrap_or_else(|| (0..outputs).map(|i| i.to_string()).collect());
    let augments: Vec<Box<dyn Augment>> = loaded
        .plugins
        .augment_eval
        .iter()
        .map(|u| match u.build()? {
            Built::Augment(a) => Ok(a),
            _ => bail!("{}: not an augment", u.at),
        })
        .collect::<Result<_>>()?;
    let data = &loaded.pipeline.data;
    let rules = DecodeRules { background: data.background, exif: data.exif };
    let chain = NoPerturb;
    let mut out = String::new();
    for path in images {
        let mut image = decode_file(path, &rules)?;
        let mut rng = crate::data::rng_for(0, 0, 0);
        for a in &augments {
            image = a.apply(image, &mut rng).with_context(|| format!("{}", path.display()))?;
        }
        let (w, h) = image.dimensions();
        let mut buf = vec![0f32; 3 * (w * h) as usize];
        data.normalize.write_chw(&image, &mut buf);
        let x = Tensor::from_slice(&buf).view([1, 3, i64::from(h), i64::from(w)]);
        let y = tch::no_grad(|| net.try_forward(&x, false, &chain)).with_context(|| format!("{}", path.display()))?.to_kind(Kind::Double).squeeze_dim(0);
        let values: Vec<f64> = Vec::try_from(&y)?;
        if logits {
            out.push_str(&serde_json::to_string(&serde_json::json!({"image": path.display().to_string(), "logits": values}))?);
        } else {
            let probs: Vec<f64> = Vec::try_from(&y.softmax(-1, Kind::Double))?;
            let mut order: Vec<usize> = (0..probs.len()).collect();
            order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
            let top: Vec<String> = order.iter().take(top_k.max(1)).map(|&i| format!("{} {:.2}%", classes[i], 100.0 * probs[i])).collect();
            out.push_str(&format!("{}: {}", path.display(), top.join(", ")));
        }
        out.push('\n');
    }
    Ok(out)
}

struct NoPerturb;
impl crate::plugin::Perturb for NoPerturb {}
