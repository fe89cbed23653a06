//! Helpers shared by the integration tests: paths of the built artifacts, tiny generated inputs, and
//! running a pipeline in-process.
use anyhow::Result;
use rifle_core::engine::{RunOptions, Summary};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

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

/// A file of the asset cache (`$RIFLE_CACHE/assets`, default `~/.cache/rifle/assets`) that `make assets`
/// fetches (`make test` fetches the model). A missing asset fails the test: it is never skipped.
pub fn asset(relative: &str) -> PathBuf {
    let cache = std::env::var_os("RIFLE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/rifle"));
    let path = cache.join("assets").join(relative);
    assert!(path.exists(), "{} is missing: run `make assets` (or `make test`, which fetches and converts the model) first", path.display());
    path
}
