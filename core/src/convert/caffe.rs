//! Caffe `.caffemodel` (a binary `NetParameter`) to safetensors with the torchvision ResNet names the
//! `resnet` backbone uses.
//!
//! Layer names follow the Caffe ResNet naming of Yahoo's open_nsfw (`conv_1`, `bn_1`, `scale_1`,
//! `conv_stage{S}_block{B}_branch2{a,b,c}`, `..._proj_shortcut`, one `InnerProduct` head). The mapping:
//! - Convolution `conv_X` → `<module>.weight` / `.bias`; the stem conv's input channels are reversed so the
//!   converted model takes RGB where the Caffe model took BGR;
//! - BatchNorm `bn_X` (mean, variance, scale factor) → `running_mean = mean / factor`,
//!   `running_var = variance / factor + (eps − 1e-5)`: torch's BatchNorm uses eps 1e-5, so a model with
//!   another eps keeps its exact denominator √(var + eps);
//! - Scale `scale_X` (gamma, beta) → the same BatchNorm's `weight` / `bias`;
//! - the `InnerProduct` layer → `fc.weight` / `fc.bias`.
//!
//! Only `NetParameter.layer` (field 100) is read: Caffe's old V1 `layers` format predates BatchNorm, so no
//! BatchNorm ResNet is stored that way.
use super::protobuf::{self as pb, Wire};
use anyhow::{anyhow, bail, ensure, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use tch::Tensor;

/// The BatchNorm eps of torch (and of the `resnet` backbone).
const TORCH_BN_EPS: f32 = 1e-5;
/// Caffe's default `BatchNormParameter.eps`.
const CAFFE_BN_EPS: f32 = 1e-5;

/// A parameter blob: its shape and values.
#[derive(Clone, Debug, PartialEq)]
pub struct Blob {
    pub shape: Vec<i64>,
    pub data: Vec<f32>,
}

/// A layer with its parameter blobs.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub name: String,
    pub kind: String,
    pub blobs: Vec<Blob>,
    /// `batch_norm_param.eps` (BatchNorm layers).
    pub bn_eps: f32,
}

/// The layers of a binary `NetParameter`.
pub fn read_layers(bytes: &[u8]) -> Result<Vec<Layer>> {
    let net = pb::fields(bytes).context("not a protobuf message")?;
    let mut layers = Vec::new();
    let mut v1 = 0;
    for (field, value) in &net {
        match field {
            100 => layers.push(read_layer(pb::message(value)?).with_context(|| format!("layer {}", layers.len()))?),
            2 => v1 += 1,
            _ => {}
        }
    }
    if layers.is_empty() {
        if v1 > 0 {
            bail!("the net uses Caffe's old V1 `layers` format; upgrade it with Caffe's `upgrade_net_proto_binary` first");
        }
        bail!("no layers (is this a .caffemodel?)");
    }
    Ok(layers)
}

fn read_layer(bytes: &[u8]) -> Result<Layer> {
    let mut layer = Layer { name: String::new(), kind: String::new(), blobs: Vec::new(), bn_eps: CAFFE_BN_EPS };
    for (field, value) in pb::fields(bytes)? {
        match field {
            1 => layer.name = pb::string(&value)?,
            2 => layer.kind = pb::string(&value)?,
            7 => {
                let blob = read_blob(pb::message(&value)?).with_context(|| format!("layer `{}`: blob {}", layer.name, layer.blobs.len()))?;
                layer.blobs.push(blob);
            }
            139 => {
                for (f, v) in pb::fields(pb::message(&value)?)? {
                    if f == 3 {
                        layer.bn_eps = *pb::floats(&[v])?.first().ok_or_else(|| anyhow!("layer `{}`: empty batch_norm_param.eps", layer.name))?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(layer)
}

fn read_blob(bytes: &[u8]) -> Result<Blob> {
    let mut by_field: BTreeMap<u32, Vec<Wire>> = BTreeMap::new();
    for (field, value) in pb::fields(bytes)? {
        by_field.entry(field).or_default().push(value);
    }
    let get = |f: u32| by_field.get(&f).map(Vec::as_slice).unwrap_or_default();
    let shape: Vec<i64> = match get(7).last() {
        Some(shape) => {
            let dims = pb::fields(pb::message(shape)?)?.into_iter().filter(|(f, _)| *f == 1).map(|(_, v)| v).collect::<Vec<_>>();
            pb::varints(&dims)?.into_iter().map(|d| d as i64).collect()
        }
        // The legacy 4-D shape (num, channels, height, width); each defaults to 0 when absent.
        None => [1, 2, 3, 4].iter().map(|&f| Ok(pb::varints(get(f))?.last().copied().unwrap_or(0) as i64)).collect::<Result<_>>()?,
    };
    let data = if get(5).is_empty() && !get(8).is_empty() { pb::doubles(get(8))?.into_iter().map(|d| d as f32).collect() } else { pb::floats(get(5))? };
    // Dimensions come from the file: each must be a non-negative i64 and their product must not overflow.
    let numel = shape.iter().try_fold(1i64, |n, &d| if d >= 0 { n.checked_mul(d) } else { None });
    ensure!(numel == Some(data.len() as i64), "shape {shape:?} does not fit the {} values the blob holds", data.len());
    Ok(Blob { shape, data })
}

/// The torchvision (conv, batch-norm) module names for a Caffe layer-name suffix: `1` is the stem,
/// `stage{S}_block{B}_branch2{a,b,c}` a bottleneck's convs, `stage{S}_block{B}_proj_shortcut` its projection.
fn modules(suffix: &str) -> Option<(String, String)> {
    if suffix == "1" {
        return Some(("conv1".into(), "bn1".into()));
    }
    let rest = suffix.strip_prefix("stage")?;
    let (stage, rest) = rest.split_once("_block")?;
    let (block, part) = rest.split_once('_')?;
    let (stage, block): (usize, usize) = (stage.parse().ok()?, block.parse().ok()?);
    let prefix = format!("layer{}.{block}", stage + 1);
    let n = match part {
        "proj_shortcut" => return Some((format!("{prefix}.downsample.0"), format!("{prefix}.downsample.1"))),
        "branch2a" => 1,
        "branch2b" => 2,
        "branch2c" => 3,
        _ => return None,
    };
    Some((format!("{prefix}.conv{n}"), format!("{prefix}.bn{n}")))
}

fn tensor(blob: &Blob) -> Tensor {
    Tensor::from_slice(&blob.data).view(blob.shape.as_slice())
}

/// A vector blob of `len` values (Caffe sometimes stores vectors as [1, 1, 1, n]).
fn vector(layer: &Layer, index: usize, len: Option<usize>) -> Result<Vec<f32>> {
    let blob = layer.blobs.get(index).ok_or_else(|| anyhow!("layer `{}` ({}): blob {index} is missing", layer.name, layer.kind))?;
    if let Some(len) = len {
        ensure!(blob.data.len() == len, "layer `{}` ({}): blob {index} has {} values, expected {len}", layer.name, layer.kind, blob.data.len());
    }
    Ok(blob.data.clone())
}

/// Maps a Caffe ResNet's layers onto torchvision ResNet names (see the module documentation).
pub fn to_resnet(layers: &[Layer]) -> Result<Vec<(String, Tensor)>> {
    let mut out: BTreeMap<String, Tensor> = BTreeMap::new();
    let (mut stats, mut affine) = (BTreeSet::new(), BTreeSet::new());
    let mut put = |name: String, t: Tensor, layer: &Layer| -> Result<()> {
        ensure!(!out.contains_key(&name), "layer `{}` maps to `{name}`, which an earlier layer already set", layer.name);
        out.insert(name, t);
        Ok(())
    };
    let module = |layer: &Layer, prefix: &str| -> Result<(String, String)> {
        layer.name.strip_prefix(prefix).and_then(modules).ok_or_else(|| {
            anyhow!(
                "layer `{}` ({}): unknown name; expected `{prefix}1` or `{prefix}stage<S>_block<B>_branch2<a|b|c>` / `{prefix}stage<S>_block<B>_proj_shortcut`",
                layer.name,
                layer.kind
            )
        })
    };
    for layer in layers.iter().filter(|l| !l.blobs.is_empty()) {
        match layer.kind.as_str() {
            "Convolution" => {
                let (conv, _) = module(layer, "conv_")?;
                let mut weight = tensor(&layer.blobs[0]);
                ensure!(weight.dim() == 4, "layer `{}`: the weight has shape {:?}, expected 4 dimensions", layer.name, layer.blobs[0].shape);
                if conv == "conv1" {
                    ensure!(weight.size()[1] == 3, "layer `{}`: the stem takes {} channels, expected 3 (BGR)", layer.name, weight.size()[1]);
                    weight = weight.flip([1]); // BGR → RGB
                }
                let cout = weight.size()[0] as usize;
                put(format!("{conv}.weight"), weight, layer)?;
                if layer.blobs.len() > 1 {
                    put(format!("{conv}.bias"), Tensor::from_slice(&vector(layer, 1, Some(cout))?), layer)?;
                }
            }
            "BatchNorm" => {
                let (_, bn) = module(layer, "bn_")?;
                let mean = vector(layer, 0, None)?;
                let var = vector(layer, 1, Some(mean.len()))?;
                let factor = vector(layer, 2, Some(1))?[0];
                // Caffe: a zero factor means the statistics were never accumulated (they read as zero).
                let scale = if factor == 0.0 { 0.0 } else { 1.0 / factor };
                let shift = layer.bn_eps - TORCH_BN_EPS;
                ensure!(layer.bn_eps > 0.0, "layer `{}`: eps {} is not positive", layer.name, layer.bn_eps);
                put(format!("{bn}.running_mean"), Tensor::from_slice(&mean.iter().map(|m| m * scale).collect::<Vec<_>>()), layer)?;
                put(format!("{bn}.running_var"), Tensor::from_slice(&var.iter().map(|v| v * scale + shift).collect::<Vec<_>>()), layer)?;
                stats.insert(bn);
            }
            "Scale" => {
                let (_, bn) = module(layer, "scale_")?;
                let gamma = vector(layer, 0, None)?;
                ensure!(layer.blobs.len() == 2, "layer `{}`: a Scale layer without bias_term cannot map onto a BatchNorm", layer.name);
                let beta = vector(layer, 1, Some(gamma.len()))?;
                put(format!("{bn}.weight"), Tensor::from_slice(&gamma), layer)?;
                put(format!("{bn}.bias"), Tensor::from_slice(&beta), layer)?;
                affine.insert(bn);
            }
            "InnerProduct" => {
                let blob = &layer.blobs[0];
                // Old Caffe files store the matrix as [1, 1, out, in].
                let dims: Vec<i64> = blob.shape.iter().copied().skip_while(|&d| d == 1).collect();
                let (rows, cols) = match (dims.as_slice(), blob.shape.last()) {
                    ([r, c], _) => (*r, *c),
                    ([c], _) | ([], Some(c)) => (1, *c),
                    _ => bail!("layer `{}`: the weight has shape {:?}, expected [outputs, inputs]", layer.name, blob.shape),
                };
                put("fc.weight".into(), Tensor::from_slice(&blob.data).view([rows, cols]), layer)?;
                if layer.blobs.len() > 1 {
                    put("fc.bias".into(), Tensor::from_slice(&vector(layer, 1, Some(rows as usize))?), layer)?;
                }
            }
            other => bail!("layer `{}`: type `{other}` has parameters but no mapping onto a ResNet", layer.name),
        }
    }
    // A BatchNorm needs both halves: the statistics (Caffe BatchNorm) and the affine part (Caffe Scale).
    for bn in stats.symmetric_difference(&affine) {
        let (has, lacks) = if stats.contains(bn) { ("BatchNorm", "Scale layer (gamma, beta)") } else { ("Scale", "BatchNorm layer (mean, variance)") };
        bail!("`{bn}` has a Caffe {has} but no {lacks}");
    }
    Ok(out.into_iter().collect())
}

/// One line per layer: name, type and blob shapes (`rifle convert --list`).
pub fn describe(layers: &[Layer]) -> String {
    layers
        .iter()
        .map(|l| {
            let shapes: Vec<String> = l.blobs.iter().map(|b| format!("{:?}", b.shape)).collect();
            format!("{:<40} {:<14} {}\n", l.name, l.kind, shapes.join(" "))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::protobuf::encode as e;
    use super::*;

    fn blob(shape: &[u64], data: &[f32]) -> Vec<u8> {
        let mut dims = Vec::new();
        let mut packed = Vec::new();
        shape.iter().for_each(|&d| e::varint(d, &mut packed));
        e::bytes(1, &packed, &mut dims);
        let mut out = Vec::new();
        e::bytes(7, &dims, &mut out);
        e::packed_floats(5, data, &mut out);
        out
    }

    fn layer(name: &str, kind: &str, blobs: &[Vec<u8>], eps: Option<f32>) -> Vec<u8> {
        let mut out = Vec::new();
        e::bytes(1, name.as_bytes(), &mut out);
        e::bytes(2, kind.as_bytes(), &mut out);
        for b in blobs {
            e::bytes(7, b, &mut out);
        }
        if let Some(eps) = eps {
            let mut p = Vec::new();
            e::int(1, 1, &mut p);
            e::float(3, eps, &mut p);
            e::bytes(139, &p, &mut out);
        }
        out
    }

    fn net(layers: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        e::bytes(1, b"tiny", &mut out);
        for l in layers {
            e::bytes(100, l, &mut out);
        }
        out
    }

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::try_from(t.flatten(0, -1)).unwrap()
    }

    #[test]
    fn maps_a_tiny_caffe_resnet_onto_torchvision_names() {
        // Stem: 2 output channels over 3 input channels (BGR), 1x1 kernel; weight[o][c] = 10·o + c.
        let stem: Vec<f32> = (0..2).flat_map(|o| (0..3).map(move |c| (10 * o + c) as f32)).collect();
        let bytes = net(&[
            layer("data", "Input", &[], None),
            layer("conv_1", "Convolution", &[blob(&[2, 3, 1, 1], &stem), blob(&[2], &[0.5, -0.5])], None),
            layer("bn_1", "BatchNorm", &[blob(&[2], &[4.0, 8.0]), blob(&[2], &[2.0, 6.0]), blob(&[1], &[2.0])], Some(1e-3)),
            layer("scale_1", "Scale", &[blob(&[2], &[1.5, 2.5]), blob(&[2], &[0.1, 0.2])], None),
            layer("relu_1", "ReLU", &[], None),
            layer("conv_stage1_block0_proj_shortcut", "Convolution", &[blob(&[1, 2, 1, 1], &[1.0, 2.0])], None),
            layer("conv_stage3_block2_branch2b", "Convolution", &[blob(&[1, 1, 3, 3], &[0.0; 9])], None),
            layer("fc_nsfw", "InnerProduct", &[blob(&[2, 2], &[1.0, 2.0, 3.0, 4.0]), blob(&[2], &[7.0, 8.0])], None),
        ]);
        let layers = read_layers(&bytes).unwrap();
        assert_eq!(layers.len(), 8);
        assert_eq!(layers[2].bn_eps, 1e-3);
        let map: BTreeMap<String, Tensor> = to_resnet(&layers).unwrap().into_iter().collect();
        let names: Vec<&str> = map.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "bn1.bias", "bn1.running_mean", "bn1.running_var", "bn1.weight", "conv1.bias", "conv1.weight", "fc.bias", "fc.weight",
                "layer2.0.downsample.0.weight", "layer4.2.conv2.weight"
            ]
        );
        // RGB input channel c is the Caffe (BGR) channel 2 − c.
        assert_eq!(values(&map["conv1.weight"]), vec![2.0, 1.0, 0.0, 12.0, 11.0, 10.0]);
        assert_eq!(map["conv1.weight"].size(), [2, 3, 1, 1]);
        assert_eq!(values(&map["bn1.running_mean"]), vec![2.0, 4.0]);
        // variance / factor, plus (1e-3 − 1e-5) so that torch's eps 1e-5 gives the same √(var + eps)
        let var = values(&map["bn1.running_var"]);
        assert!((var[0] - (1.0 + 0.00099)).abs() < 1e-6 && (var[1] - (3.0 + 0.00099)).abs() < 1e-6, "{var:?}");
        assert_eq!(values(&map["bn1.weight"]), vec![1.5, 2.5]);
        assert_eq!(values(&map["bn1.bias"]), vec![0.1, 0.2]);
        assert_eq!(values(&map["fc.weight"]), vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(map["fc.weight"].size(), [2, 2]);
        assert_eq!(values(&map["fc.bias"]), vec![7.0, 8.0]);
    }

    #[test]
    fn legacy_shapes_and_zero_factor() {
        let mut legacy = Vec::new();
        for (f, v) in [(1, 1), (2, 1), (3, 2), (4, 3)] {
            e::int(f, v, &mut legacy);
        }
        e::packed_floats(5, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &mut legacy);
        let layers = read_layers(&net(&[
            layer("fc", "InnerProduct", &[legacy], None),
            layer("bn_1", "BatchNorm", &[blob(&[1], &[4.0]), blob(&[1], &[2.0]), blob(&[1], &[0.0])], None),
            layer("scale_1", "Scale", &[blob(&[1], &[1.0]), blob(&[1], &[0.0])], None),
        ]))
        .unwrap();
        let map: BTreeMap<String, Tensor> = to_resnet(&layers).unwrap().into_iter().collect();
        assert_eq!(map["fc.weight"].size(), [2, 3]);
        assert_eq!(values(&map["bn1.running_mean"]), vec![0.0]);
        assert_eq!(values(&map["bn1.running_var"]), vec![0.0]);
    }

    #[test]
    fn bad_input_names_the_layer() {
        let unknown = net(&[layer("conv_head", "Convolution", &[blob(&[1, 1, 1, 1], &[1.0])], None)]);
        let err = to_resnet(&read_layers(&unknown).unwrap()).unwrap_err().to_string();
        assert!(err.contains("`conv_head`") && err.contains("unknown name"), "{err}");

        let short = net(&[layer("conv_1", "Convolution", &[blob(&[2, 3, 1, 1], &[1.0; 5])], None)]);
        let err = format!("{:#}", read_layers(&short).unwrap_err());
        assert!(err.contains("`conv_1`") && err.contains("shape [2, 3, 1, 1] does not fit the 5 values"), "{err}");
        // Dimensions whose product overflows, and one that is negative as i64, are errors, not panics.
        let huge = net(&[layer("conv_1", "Convolution", &[blob(&[1 << 40, 1 << 40], &[1.0])], None)]);
        assert!(format!("{:#}", read_layers(&huge).unwrap_err()).contains("does not fit the 1 values"));
        let negative = net(&[layer("fc", "InnerProduct", &[blob(&[u64::MAX, 0], &[])], None)]);
        assert!(format!("{:#}", read_layers(&negative).unwrap_err()).contains("[-1, 0] does not fit the 0 values"));

        let lonely = net(&[layer("bn_1", "BatchNorm", &[blob(&[1], &[0.0]), blob(&[1], &[1.0]), blob(&[1], &[1.0])], None)]);
        let err = to_resnet(&read_layers(&lonely).unwrap()).unwrap_err().to_string();
        assert!(err.contains("`bn1`") && err.contains("no Scale"), "{err}");

        let mut v1 = Vec::new();
        e::bytes(2, b"old", &mut v1);
        assert!(read_layers(&v1).unwrap_err().to_string().contains("V1"));
        assert!(read_layers(b"\xff\xff").is_err());
    }
}
