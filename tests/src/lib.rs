//! Helpers shared by the integration tests: paths of the built artifacts, tiny generated inputs, and
//! running a pipeline in-process.
use anyhow::Result;
use rifle_core::engine::{RunOptions, Summary};
use rifle_core::model::Net;
use rifle_core::optim::{Algorithm, Group, Optimizer};
use rifle_core::plugin::{Batch, Ctx, Hooks, Perturb, Probe, Progress, Record, Regularizer, Scheduler, Strategy};
use rifle_core::registry::{self, Built, Kind};
use rifle_core::Params;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tch::{Device, Tensor};

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

/// Builds a registered plugin from its parameters written as YAML (`{reinits: 3}`), with the defaults
/// filled in and every value checked against the schema, as a pipeline would.
pub fn build_plugin(kind: Kind, name: &str, yaml: &str) -> Result<Built> {
    let entry = registry::find(kind, name).map_err(anyhow::Error::msg)?;
    let given: serde_yaml::Value = serde_yaml::from_str(yaml)?;
    let mut params = Params { origin: format!("{kind} `{name}`"), values: Default::default() };
    for p in entry.spec.params {
        let value = match given.get(p.name) {
            Some(v) => Some(p.check(v).map_err(|e| anyhow::anyhow!("{name}.{}: {e}", p.name))?),
            None => p.default_value(),
        };
        if let Some(v) = value {
            params.values.insert(p.name.to_string(), v);
        }
    }
    entry.build(&params)
}

pub fn strategy(name: &str, yaml: &str) -> Box<dyn Strategy> {
    match build_plugin(Kind::Strategy, name, yaml).expect("strategy builds") {
        Built::Strategy(s) => s,
        _ => panic!("`{name}` is not a strategy"),
    }
}

pub fn scheduler(name: &str, yaml: &str) -> Box<dyn Scheduler> {
    match build_plugin(Kind::Scheduler, name, yaml).expect("scheduler builds") {
        Built::Scheduler(s) => s,
        _ => panic!("`{name}` is not a scheduler"),
    }
}

pub fn regularizer(name: &str, yaml: &str) -> Box<dyn Regularizer> {
    match build_plugin(Kind::Regularizer, name, yaml).expect("regularizer builds") {
        Built::Regularizer(r) => r,
        _ => panic!("`{name}` is not a regularizer"),
    }
}

pub fn probe(name: &str, yaml: &str) -> Box<dyn Probe> {
    match build_plugin(Kind::Probe, name, yaml).expect("probe builds") {
        Built::Probe(p) => p,
        _ => panic!("`{name}` is not a probe"),
    }
}

/// A strategy seen only as its forward perturbation (no trait upcasting before Rust 1.86).
pub struct AsPerturb<'a>(pub &'a dyn Strategy);

impl Perturb for AsPerturb<'_> {
    fn residual(&self, block: usize, blocks: usize, residual: Tensor, train: bool) -> Tensor {
        self.0.residual(block, blocks, residual, train)
    }
    fn stage_output(&self, stage: usize, x: Tensor, train: bool) -> Tensor {
        self.0.stage_output(stage, x, train)
    }
    fn features(&self, x: Tensor, train: bool) -> Tensor {
        self.0.features(x, train)
    }
    fn head_weight(&self, w: &Tensor, train: bool) -> Tensor {
        self.0.head_weight(w, train)
    }
}

/// The unperturbed network.
pub struct Plain;
impl Perturb for Plain {}

/// Where a run of `epochs` × `steps_per_epoch` stands at global step `step`.
pub fn progress(step: usize, epochs: usize, steps_per_epoch: usize) -> Progress {
    Progress { epoch: step / steps_per_epoch, epochs, step, step_in_epoch: step % steps_per_epoch, steps_per_epoch }
}

/// A tiny model and its optimizer for driving hooks directly: ResNet-18 at 1/8 width (64 features), a head
/// of `classes` outputs, groups `backbone` and `head` as the engine makes them, learning rate 0.1.
pub struct Rig {
    pub net: Net,
    pub optimizer: Optimizer,
    pub records: Vec<Record>,
}

impl Rig {
    pub fn new(classes: usize, algorithm: Algorithm) -> Rig {
        let Built::Backbone(backbone) = build_plugin(Kind::Backbone, "resnet", "{arch: resnet18, width: 0.125, stem_width: 8}").expect("backbone builds")
        else {
            panic!("not a backbone")
        };
        let net = Net::build(backbone.as_ref(), classes, Device::Cpu).expect("net builds");
        let groups = ["backbone", "head"]
            .into_iter()
            .map(|name| Group {
                name: name.to_string(),
                lr: 0.1,
                weight_decay: 0.0,
                params: net.parameters().into_iter().filter(|(n, _)| net.is_head(n) == (name == "head")).collect(),
            })
            .collect();
        Rig { net, optimizer: Optimizer::new(algorithm, groups), records: Vec::new() }
    }

    pub fn sgd(classes: usize, momentum: f64) -> Rig {
        Rig::new(classes, Algorithm::Sgd { momentum, nesterov: false })
    }

    /// Runs `f` with a hook context at `progress`; returns the learning rates the hook leaves, starting
    /// from `lrs`.
    pub fn with_ctx<T>(&mut self, progress: Progress, lrs: &[f64], f: impl FnOnce(&mut Ctx) -> T) -> (T, Vec<f64>) {
        let mut lrs = lrs.to_vec();
        let mut ctx = Ctx { progress, net: &mut self.net, optimizer: &mut self.optimizer, lrs: &mut lrs, records: &mut self.records };
        let out = f(&mut ctx);
        (out, lrs)
    }

    /// `before_step` of `hooks` at `progress` on a dummy batch; returns the learning rates it leaves.
    pub fn before_step(&mut self, hooks: &mut dyn Hooks, progress: Progress, lrs: &[f64]) -> Result<Vec<f64>> {
        let mut batch = Batch { images: Tensor::zeros([1, 3, 16, 16], (tch::Kind::Float, Device::Cpu)), labels: Tensor::from_slice(&[0i64]), soft_targets: None };
        let (out, lrs) = self.with_ctx(progress, lrs, |ctx| hooks.before_step(ctx, &mut batch));
        out.map(|_| lrs)
    }

    /// Forward and backward on a random batch of 4 images (16x16): every parameter gets a gradient.
    pub fn backward(&mut self) {
        let x = Tensor::randn([4, 3, 16, 16], (tch::Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 1, 2, 3]).remainder(self.net.head_weight.size()[0]);
        self.optimizer.zero_grad();
        self.net.forward(&x, true, &Plain).cross_entropy_for_logits(&y).backward();
    }

    /// A copy of every tensor of the model (parameters and buffers) whose name passes `keep`.
    pub fn snapshot(&self, keep: impl Fn(&str) -> bool) -> Vec<(String, Tensor)> {
        self.net.state().into_iter().filter(|(n, _)| keep(n)).map(|(n, t)| (n, t.detach().copy())).collect()
    }
}

/// Every element of a tensor, as f64.
pub fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.detach().to_kind(tch::Kind::Double).flatten(0, -1)).expect("tensor to Vec")
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

/// An IDX file of unsigned bytes with these dimensions.
pub fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// IDX files at `images` and `labels` (gzipped if `compress`): `n` images of 4x3 (rows x cols) whose every
/// pixel is the image's index, label = index mod 3.
pub fn write_idx_split(images: &Path, labels: &Path, n: u32, compress: bool) {
    let pixels: Vec<u8> = (0..n).flat_map(|i| std::iter::repeat_n(i as u8, 12)).collect();
    let label_bytes: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
    let wrap = |b: Vec<u8>| if compress { gzip(&b) } else { b };
    std::fs::write(images, wrap(idx(&[n, 4, 3], &pixels))).unwrap();
    std::fs::write(labels, wrap(idx(&[n], &label_bytes))).unwrap();
}
