//! `rifle convert` from the command line: listing the Caffe model, refusing an arch it does not fit, and
//! naming the file it cannot read.
use rifle_tests::{asset, rifle_bin};
use std::process::{Command, Output};

fn rifle(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(rifle_bin()).arg("convert").args(args).output().unwrap()
}

#[test]
fn lists_the_layers_of_the_caffe_model() {
    let model = asset("open_nsfw/resnet_50_1by2_nsfw.caffemodel");
    let out = rifle(&[model.as_os_str(), "--list".as_ref()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let kinds = |kind: &str| text.lines().filter(|l| l.split_whitespace().nth(1) == Some(kind)).count();
    // ResNet-50: 1 stem conv + 16 blocks x 3 convs + 4 projection shortcuts = 53, each with BatchNorm + Scale.
    assert_eq!((kinds("Convolution"), kinds("BatchNorm"), kinds("Scale"), kinds("InnerProduct")), (53, 53, 53, 1), "{text}");
    let stem = text.lines().find(|l| l.starts_with("conv_1 ")).expect("a conv_1 layer");
    assert!(stem.contains("[64, 3, 7, 7] [64]"), "{stem}");
    let head = text.lines().find(|l| l.contains("InnerProduct")).unwrap();
    assert!(head.contains("[2, 1024] [2]"), "{head}");
}

#[test]
fn refuses_an_arch_the_weights_do_not_fit_and_names_unreadable_files() {
    let model = asset("open_nsfw/resnet_50_1by2_nsfw.caffemodel");
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.safetensors");
    let out = rifle(&[model.as_os_str(), output.as_os_str(), "--arch".as_ref(), "resnet50".as_ref()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("does not fit `arch: resnet50`") && err.contains("`fc.weight` has shape [2, 1024], the model [2, 2048]"), "{err}");
    assert!(!output.exists(), "nothing is written when the weights do not fit");

    let garbage = dir.path().join("garbage.caffemodel");
    std::fs::write(&garbage, b"\xff\xff\xff not protobuf").unwrap();
    let out = rifle(&[garbage.as_os_str(), output.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("garbage.caffemodel: not a readable Caffe model"), "{err}");

    let missing = dir.path().join("missing.caffemodel");
    let out = rifle(&[missing.as_os_str(), "--list".as_ref()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("missing.caffemodel"), "{err}");
}
