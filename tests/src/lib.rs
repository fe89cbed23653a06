//! Helpers shared by the integration tests: paths of the built artifacts, tiny generated inputs, and
//! running a pipeline in-process.
use anyhow::Result;
use rifle_core::engine::{RunOptions, Summary};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tch::Tensor;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The cargo target profile directory the tests were built into (e.g. target/debug).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test binary>
    exe.parent().and_then(Path::parent).expect("target profile directory").to_path_buf()
}

/// The `rifle` binary (built by `make test` before the tests run).
pub fn rifle_bin() -> PathBuf {
    let bin = target_dir().join("rifle");
    assert!(bin.exists(), "{} is missing: run `cargo build --workspace` (make test does) first", bin.display());
    bin
}

/// A dynamic plugin library built from plugins/examples (e.g. `rifle_label_smoothing`).
pub fn plugin_lib(crate_name: &str) -> PathBuf {
    let lib = target_dir().join(format!("lib{crate_name}.so"));
    assert!(lib.exists(), "{} is missing: run `cargo build --workspace` (make test does) first", lib.display());
    lib
}

/// Writes `yaml` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create parent folder");
    }
    std::fs::write(&path, text).expect("write file");
    path
}

/// Loads and trains a pipeline file in-process into `out`, with `--set` overrides.
pub fn train(pipeline: &Path, overrides: &[&str], out: &Path) -> Result<Summary> {
    let set: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let loaded = rifle_core::cli::load(pipeline, &set, &[])?;
    let options = RunOptions { out: Some(out.to_path_buf()), resume: false, stop: Arc::new(AtomicBool::new(false)), progress_bar: false };
    rifle_core::cli::execute(&loaded, out, &options)
}

/// Saves an image of `width`x`height` whose pixel (x, y) is `f(x, y)`, in the format of the extension.
pub fn write_rgb(path: &Path, width: u32, height: u32, f: impl Fn(u32, u32) -> [u8; 3]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create parent folder");
    }
    image::RgbImage::from_fn(width, height, |x, y| image::Rgb(f(x, y))).save(path).expect("save image");
}

/// A small ImageFolder split: `classes` sub-folders with `per_class` images each, coloured by class.
pub fn image_folder(dir: &Path, classes: &[&str], per_class: usize, size: u32) -> PathBuf {
    for (c, class) in classes.iter().enumerate() {
        for i in 0..per_class {
            let shade = (40 * c as u32 + 3 * i as u32) as u8;
            write_rgb(&dir.join(class).join(format!("{i}.png")), size, size, |x, _| [shade, (x * 8) as u8, 255 - shade]);
        }
    }
    dir.to_path_buf()
}

/// The repository's tiny mock pipeline.
pub fn mock_pipeline() -> PathBuf {
    root().join("pipelines/mock.yaml")
}

/// `--set` overrides that shrink pipelines/mock.yaml to a run of a second or two: 4 classes, 64 training and
/// 32 test images of 16x16, batches of 16 (4 steps per epoch), 2 epochs, one libtorch thread (bit-exact).
pub const TINY: &[&str] = &[
    "epochs=2",
    "batch_size=16",
    "threads=1",
    "dataset.mock.classes=4",
    "dataset.mock.train=64",
    "dataset.mock.test=32",
    "dataset.mock.size=16",
];

/// TINY plus `extra`, as `--set A --set B ...` arguments for the binary.
pub fn set_args(extra: &[&str]) -> Vec<String> {
    TINY.iter().chain(extra).flat_map(|s| ["--set".to_string(), s.to_string()]).collect()
}

/// Runs the `rifle` binary in `cwd` and waits for it.
pub fn rifle(cwd: &Path, args: &[String], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(rifle_bin());
    command.current_dir(cwd).args(args).env_remove("RIFLE_PLUGIN_PATH");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run rifle")
}

/// `args` as owned strings.
pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The exit code, failing the test if the process died of a signal (a crash or an abort).
pub fn exit_code(output: &Output) -> i32 {
    output.status.code().unwrap_or_else(|| panic!("rifle was killed by a signal: {:?}\n{}", output.status, stderr(output)))
}

/// The tensors of a safetensors file by name.
pub fn tensors(path: &Path) -> BTreeMap<String, Tensor> {
    rifle_core::tensorfile::read(path).unwrap_or_else(|e| panic!("{e:#}")).0.into_iter().collect()
}

/// Asserts two safetensors files hold the same tensors, bit for bit.
pub fn assert_same_tensors(a: &Path, b: &Path) {
    let (ta, tb) = (tensors(a), tensors(b));
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>(), "{} and {} hold different tensors", a.display(), b.display());
    for (name, x) in &ta {
        let y = &tb[name];
        assert!(x.size() == y.size() && x.kind() == y.kind() && x.equal(y), "`{name}` differs between {} and {}", a.display(), b.display());
    }
}

/// A run's metrics.jsonl lines without their timing fields (seconds, images_per_s), which differ run to run.
pub fn metrics_without_timings(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).expect("read metrics.jsonl");
    text.lines()
        .map(|line| {
            let mut value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            if let Some(object) = value.as_object_mut() {
                object.remove("seconds");
                object.remove("images_per_s");
            }
            value
        })
        .collect()
}
