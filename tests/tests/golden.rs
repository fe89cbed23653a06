//! The golden check of issue D: Yahoo's open_nsfw ResNet-50-1by2, converted from Caffe by `rifle convert`
//! (`make assets`), gives the published logits on a fixed synthetic image — in-process and through
//! `rifle predict --logits`. The expected logits come from the issue, not from this code.
use rifle_core::model::Net;
use rifle_core::plugin::Perturb;
use rifle_core::plugins::backbone::resnet::ResNetConfig;
use rifle_tests::{asset, rifle_bin, root, write_rgb};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

const EXPECTED: [f64; 2] = [4.0156, -2.9725];
const TOLERANCE: f64 = 1e-3;
/// The model's input convention: RGB pixels 0–255 minus this mean (Caffe's BGR [104, 117, 123]).
const MEAN_RGB: [f32; 3] = [123.0, 117.0, 104.0];

/// The converted weights (`make model`, a dependency of `make test`).
fn converted_weights() -> PathBuf {
    asset("open_nsfw/resnet50_1by2_nsfw.safetensors")
}

/// Pixel (x, y) of the golden image: x is the column, y the row.
fn golden_pixel(x: u32, y: u32) -> [u8; 3] {
    [((3 * x + 5 * y) % 256) as u8, ((7 * x + 2 * y) % 256) as u8, ((x + 11 * y) % 256) as u8]
}

fn assert_golden(logits: &[f64]) {
    assert_eq!(logits.len(), 2, "logits {logits:?}");
    for (got, want) in logits.iter().zip(EXPECTED) {
        assert!((got - want).abs() < TOLERANCE, "logits {logits:?}, expected {EXPECTED:?} within {TOLERANCE}");
    }
}

struct Unperturbed;
impl Perturb for Unperturbed {}

#[test]
fn converted_model_gives_the_published_logits_in_process() {
    let path = converted_weights();
    let (tensors, metadata) = rifle_core::tensorfile::read(&path).unwrap();
    let net = Net::build(&ResNetConfig::preset("resnet50_1by2").unwrap(), 2, Device::Cpu).unwrap();
    let file: std::collections::BTreeMap<String, Tensor> = tensors.into_iter().collect();
    for (name, _) in net.state() {
        let value = file.get(&name).unwrap_or_else(|| panic!("{}: no tensor `{name}`", path.display()));
        net.assign(&name, value).unwrap();
    }
    // The recorded convention is the one this test feeds: mean m/255 and std 1/255 in rifle's terms.
    let normalize: rifle_core::data::Normalize = serde_json::from_str(&metadata[rifle_core::convert::NORMALIZE_KEY]).unwrap();
    for c in 0..3 {
        assert!((normalize.mean[c] * 255.0 - MEAN_RGB[c]).abs() < 1e-4 && (normalize.std[c] * 255.0 - 1.0).abs() < 1e-6, "{normalize:?}");
    }

    let mut chw = vec![0f32; 3 * 224 * 224];
    for y in 0..224u32 {
        for x in 0..224u32 {
            for (c, v) in golden_pixel(x, y).into_iter().enumerate() {
                chw[c * 224 * 224 + (y * 224 + x) as usize] = f32::from(v) - MEAN_RGB[c];
            }
        }
    }
    let input = Tensor::from_slice(&chw).view([1, 3, 224, 224]);
    let logits = tch::no_grad(|| net.forward(&input, false, &Unperturbed)).to_kind(Kind::Double).view([-1]);
    assert_golden(&Vec::<f64>::try_from(&logits).unwrap());
}

#[test]
fn converted_model_gives_the_published_logits_through_rifle_predict() {
    converted_weights();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("golden.png");
    write_rgb(&image, 224, 224, golden_pixel);
    let out = std::process::Command::new(rifle_bin())
        .arg("predict")
        .arg(root().join("pipelines/nsfw-original.yaml"))
        .arg(&image)
        .arg("--logits")
        .output()
        .unwrap();
    assert!(out.status.success(), "rifle predict failed: {}", String::from_utf8_lossy(&out.stderr));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let logits: Vec<f64> = line["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_golden(&logits);
}
