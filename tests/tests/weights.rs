//! Pretrained weights (policy in core/src/weights.rs), read from real `torch.save` files in both formats
//! (tests/fixtures/weights, written by tests/fixtures/make_pth.py): wrapper prefixes are stripped, BatchNorm
//! step counters ignored, a head of another size skipped (the rest loads), half precision upcast (the model
//! stays f32); a file that matches nothing, has no tensors, or is broken is an error naming the file and
//! the keys involved. Every tensor in the fixtures holds v(i) = ((i mod 128) − 64) / 64 at flat index i of
//! its base storage.
use rifle_core::config::Weights;
use rifle_core::model::Net;
use rifle_core::plugins::backbone::resnet::ResNetConfig;
use rifle_core::weights::{load, LoadReport};
use rifle_tests::{root, write_file};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/weights").join(name)
}

/// ResNet-18 at width 1/16 (stem 4 channels, 32 features), as the fixtures were written for.
fn net(classes: usize) -> Net {
    let mut c = ResNetConfig::preset("resnet18").unwrap();
    c.width = 0.0625;
    c.stem_width = 4;
    Net::build(&c, classes, Device::Cpu).unwrap()
}

fn weights(path: &Path) -> Weights {
    Weights { path: path.display().to_string(), strip_prefix: vec!["module.".into()], exclude: vec![] }
}

fn v(i: i64) -> f64 {
    ((i % 128) - 64) as f64 / 64.0
}

/// Row-major flat index of `at` in `shape`.
fn flat(at: &[i64], shape: &[i64]) -> i64 {
    at.iter().zip(shape).fold(0, |acc, (i, d)| acc * d + i)
}

/// Every element of the model's tensor `name` equals `want(multi-index)`.
fn assert_values(net: &Net, name: &str, want: impl Fn(&[i64]) -> f64) {
    let t = net.tensor(name).unwrap();
    assert_eq!(t.kind(), Kind::Float, "`{name}` changed dtype");
    let shape = t.size();
    let values: Vec<f64> = Vec::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap();
    for (n, got) in values.iter().enumerate() {
        let mut at = vec![0i64; shape.len()];
        let mut rest = n as i64;
        for d in (0..shape.len()).rev() {
            at[d] = rest % shape[d];
            rest /= shape[d];
        }
        assert_eq!(*got, want(&at), "`{name}`{at:?}");
    }
}

/// The stem and the first conv hold the fixture's values (the conv was saved as a permuted view of a
/// [3, 3, 4, 4] tensor: element [o, i, h, w] is base element [h, w, o, i]).
fn assert_body_loaded(net: &Net) {
    assert_values(net, "conv1.weight", |at| v(flat(at, &[4, 3, 7, 7])));
    for name in ["bn1.weight", "bn1.bias", "bn1.running_mean"] {
        assert_values(net, name, |at| v(at[0]));
    }
    assert_values(net, "bn1.running_var", |at| v(at[0]) + 2.0);
    assert_values(net, "layer1.0.conv1.weight", |at| v(flat(&[at[2], at[3], at[0], at[1]], &[3, 3, 4, 4])));
}

const BODY: [&str; 6] = ["bn1.bias", "bn1.running_mean", "bn1.running_var", "bn1.weight", "conv1.weight", "layer1.0.conv1.weight"];

#[test]
fn wrapped_checkpoints_with_step_counters_load_and_a_head_of_another_size_is_kept() {
    for file in ["wrapped.pth", "wrapped_legacy.pth"] {
        let mut net = net(3);
        let head_before = net.head_weight.copy();
        let report = load(&mut net, &weights(&fixture(file))).unwrap_or_else(|e| panic!("{file}: {e:#}"));
        assert_eq!(report.loaded, BODY, "{file}");
        assert_eq!(report.skipped_head, ["fc.bias", "fc.weight"], "{file}: the 5-class head does not fit 3 classes");
        assert!(report.unexpected.is_empty(), "{file}: `num_batches_tracked` is ignored, not unexpected: {:?}", report.unexpected);
        assert!(report.missing.contains(&"layer1.0.bn1.weight".to_string()) && !report.missing.contains(&"fc.weight".to_string()));
        assert_body_loaded(&net);
        assert!(net.head_weight.equal(&head_before), "{file}: the new head was overwritten");
    }
}

#[test]
fn a_plain_legacy_state_dict_inside_a_wrapper_loads_with_its_head() {
    let mut net = net(5);
    let report = load(&mut net, &weights(&fixture("plain_legacy.pth"))).unwrap();
    let mut want: Vec<&str> = BODY.to_vec();
    want.extend(["fc.bias", "fc.weight"]);
    want.sort();
    assert_eq!(report.loaded, want);
    assert!(report.skipped_head.is_empty() && report.unexpected.is_empty());
    assert_body_loaded(&net);
    assert_values(&net, "fc.weight", |at| v(flat(at, &[5, 32])));
    assert_values(&net, "fc.bias", |at| v(at[0]));
}

#[test]
fn excluded_tensors_keep_their_initialisation_even_when_the_file_fits() {
    // The 5-class head fits a 5-class model, but `exclude: [fc.]` asks for a new last layer (transfer).
    let mut net = net(5);
    let fresh = net.tensor("fc.weight").unwrap().copy();
    let mut w = weights(&fixture("plain_legacy.pth"));
    w.exclude = vec!["fc.".into()];
    let report = load(&mut net, &w).unwrap();
    assert_eq!(report.excluded, ["fc.bias", "fc.weight"]);
    assert_eq!(report.loaded, BODY);
    assert_body_loaded(&net);
    assert!(net.tensor("fc.weight").unwrap().equal(&fresh), "the excluded head was overwritten");
}

#[test]
fn half_precision_files_are_upcast_and_the_model_stays_f32() {
    for file in ["fp16.pth", "bf16_legacy.pth"] {
        let mut net = net(3);
        let report = load(&mut net, &weights(&fixture(file))).unwrap_or_else(|e| panic!("{file}: {e:#}"));
        assert_eq!(report.loaded, BODY, "{file}");
        assert_body_loaded(&net);
        assert!(net.state().iter().all(|(_, t)| t.kind() == Kind::Float), "{file}: a model tensor changed dtype");
    }
    // The same through safetensors, written here with both half types.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("half.safetensors");
    let stem = Tensor::from_slice(&(0..588).map(|i| v(i) as f32).collect::<Vec<_>>()).view([4, 3, 7, 7]);
    let bn = Tensor::from_slice(&[v(0) as f32, v(1) as f32, v(2) as f32, v(3) as f32]);
    let tensors = vec![("conv1.weight".to_string(), stem.to_kind(Kind::Half)), ("module.bn1.weight".to_string(), bn.to_kind(Kind::BFloat16))];
    rifle_core::tensorfile::write(&path, &tensors, &BTreeMap::new()).unwrap();
    let mut net = net(3);
    let report = load(&mut net, &weights(&path)).unwrap();
    assert_eq!(report.loaded, ["bn1.weight", "conv1.weight"]);
    assert_values(&net, "conv1.weight", |at| v(flat(at, &[4, 3, 7, 7])));
    assert_values(&net, "bn1.weight", |at| v(at[0]));
}

fn error(path: &Path, prefixes: &[&str]) -> String {
    let w = Weights { path: path.display().to_string(), strip_prefix: prefixes.iter().map(|s| s.to_string()).collect(), exclude: vec![] };
    match load(&mut net(3), &w) {
        Ok(report) => panic!("{} loaded: {report:?}", path.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn a_file_that_matches_nothing_is_an_error_listing_the_keys_on_both_sides() {
    let path = fixture("other_model.pth");
    assert_eq!(
        error(&path, &["module."]),
        format!(
            "weights {}: no tensor matches the model, refusing to train from a random start. The file has keys like [decoder.out.bias, encoder.embed.weight]; \
             the model expects [bn1.bias, bn1.running_mean, bn1.running_var, bn1.weight]. Set `weights.strip_prefix` if the file's keys carry a wrapper prefix",
            path.display()
        )
    );
    // An unknown wrapper prefix: the error shows it, and naming it loads the file.
    let dir = tempfile::tempdir().unwrap();
    let wrapped = dir.path().join("wrapped.safetensors");
    let conv = Tensor::zeros([4, 3, 7, 7], (Kind::Float, Device::Cpu));
    rifle_core::tensorfile::write(&wrapped, &[("model.backbone.conv1.weight".into(), conv)], &BTreeMap::new()).unwrap();
    assert!(error(&wrapped, &["module."]).contains("The file has keys like [model.backbone.conv1.weight]"));
    let w = Weights { path: wrapped.display().to_string(), strip_prefix: vec!["model.".into(), "backbone.".into()], exclude: vec![] };
    assert_eq!(load(&mut net(3), &w).unwrap().loaded, ["conv1.weight"]);
}

#[test]
fn a_body_tensor_of_another_shape_is_an_error_naming_the_key_and_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other_stem.safetensors");
    let stem = Tensor::zeros([4, 3, 3, 3], (Kind::Float, Device::Cpu));
    rifle_core::tensorfile::write(&path, &[("conv1.weight".into(), stem)], &BTreeMap::new()).unwrap();
    assert_eq!(error(&path, &["module."]), format!("weights {}: `conv1.weight` has shape [4, 3, 3, 3] in the file but [4, 3, 7, 7] in the model", path.display()));
}

#[test]
fn files_with_no_tensors_or_broken_contents_are_errors_naming_the_file() {
    let empty = fixture("empty.pth");
    assert_eq!(error(&empty, &["module."]), format!("weights {} contain no tensors", empty.display()));

    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(fixture("wrapped.pth")).unwrap();
    let legacy = std::fs::read(fixture("wrapped_legacy.pth")).unwrap();
    let mut header_broken = Vec::new();
    {
        let path = dir.path().join("ok.safetensors");
        rifle_core::tensorfile::write(&path, &[("conv1.weight".into(), Tensor::zeros([4, 3, 7, 7], (Kind::Float, Device::Cpu)))], &BTreeMap::new()).unwrap();
        header_broken.extend(std::fs::read(&path).unwrap());
        header_broken[9] = b'!'; // inside the JSON header
    }
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("zero.pth", vec![], "is empty (0 bytes)"),
        ("half_zip.pth", good[..good.len() / 2].to_vec(), "not a readable PyTorch checkpoint"),
        ("half_legacy.pth", legacy[..legacy.len() - 100].to_vec(), "not a readable PyTorch checkpoint"),
        ("header.safetensors", header_broken, "not a valid safetensors file"),
        ("notes.pth", b"these are not weights".to_vec(), "not a valid safetensors file"),
    ];
    for (name, bytes, why) in cases {
        let path = write_file(dir.path(), name, "");
        std::fs::write(&path, bytes).unwrap();
        let e = error(&path, &["module."]);
        assert!(e.contains(&path.display().to_string()) && e.contains(why), "{name}: {e}");
    }
}

#[test]
fn a_checkpoint_of_this_model_loads_every_tensor() {
    let source = net(3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all.safetensors");
    rifle_core::tensorfile::write(&path, &source.cpu_state(), &BTreeMap::new()).unwrap();
    let mut target = net(3);
    let report: LoadReport = load(&mut target, &weights(&path)).unwrap();
    assert_eq!(report.loaded.len(), source.state().len());
    assert!(report.missing.is_empty() && report.unexpected.is_empty() && report.skipped_head.is_empty());
    for (name, t) in source.state() {
        assert!(target.tensor(&name).unwrap().equal(&t), "`{name}`");
    }
}
