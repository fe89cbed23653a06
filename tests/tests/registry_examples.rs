//! Every registered plugin (built-in, and those of the example dynamic libraries) has a one-line doc, a doc
//! for every parameter, defaults that pass their own checks, and an example that builds through the real
//! pipeline loader. So no plugin lands without a working example and doc; new plugins are picked up as they
//! register. Alone in its test binary: it changes the working directory, to where the dataset examples'
//! relative paths (`data/train`, `data/train.csv`, ...) exist.
use rifle_core::config::{load, PluginUse};
use rifle_core::plugin::{Progress, Split};
use rifle_core::registry::{entries, Built, Kind};
use rifle_tests::{image_folder, plugin_lib, write_file, write_idx_split};
use serde_yaml::{Mapping, Value};
use std::path::Path;

/// The dataset fixtures the examples name, under `dir`.
fn fixtures(dir: &Path) {
    image_folder(&dir.join("data/train"), &["cat", "dog"], 2, 40);
    image_folder(&dir.join("data/test"), &["cat", "dog"], 1, 40);
    write_file(dir, "data/train.csv", "path,label\ntrain/cat/0.png,cat\ntrain/cat/1.png,cat\ntrain/dog/0.png,dog\ntrain/dog/1.png,dog\n");
    write_file(dir, "data/test.csv", "path,label\ntest/cat/0.png,cat\ntest/dog/0.png,dog\n");
    let fashion = |f: &str| dir.join("fashion-mnist").join(f);
    std::fs::create_dir_all(fashion("")).unwrap();
    write_idx_split(&fashion("train-images-idx3-ubyte.gz"), &fashion("train-labels-idx1-ubyte.gz"), 30, true);
    write_idx_split(&fashion("t10k-images-idx3-ubyte.gz"), &fashion("t10k-labels-idx1-ubyte.gz"), 30, true);
}

/// A small valid pipeline with `name: example` placed where plugins of `kind` go.
fn pipeline_with(kind: Kind, name: &str, example: &str, libraries: &[String]) -> String {
    let params: Value = serde_yaml::from_str(example).unwrap_or_else(|e| panic!("{kind} `{name}`: its example `{example}` is not YAML: {e}"));
    let mut use_ = Mapping::new();
    use_.insert(name.into(), params);
    let use_ = Value::Mapping(use_);
    let mut p: Mapping = serde_yaml::from_str(
        "epochs: 1\nbatch_size: 2\nbackbone: {resnet: {arch: resnet18, width: 0.125}}\ndataset: {mock: {classes: 2, train: 4, test: 2, size: 16}}\noptimizer: {lr: 0.1}\n",
    )
    .unwrap();
    p.insert("plugins".into(), Value::Sequence(libraries.iter().map(|l| Value::String(l.clone())).collect()));
    let list = Value::Sequence(vec![use_.clone()]);
    match kind {
        Kind::Backbone => p.insert("backbone".into(), use_),
        Kind::Dataset => p.insert("dataset".into(), use_),
        Kind::Augment => p.insert("augment".into(), Value::Mapping(Mapping::from_iter([("train".into(), list)]))),
        Kind::Scheduler => p.insert("schedulers".into(), list),
        Kind::Regularizer => p.insert("regularizers".into(), list),
        Kind::Strategy => p.insert("strategies".into(), list),
        Kind::Probe => p.insert("probes".into(), list),
    };
    serde_yaml::to_string(&p).unwrap()
}

fn the_use(loaded: &rifle_core::config::Loaded, kind: Kind) -> &PluginUse {
    let p = &loaded.plugins;
    match kind {
        Kind::Backbone => &p.backbone,
        Kind::Dataset => &p.dataset,
        Kind::Augment => &p.augment_train[0],
        Kind::Scheduler => &p.schedulers[0].0,
        Kind::Regularizer => &p.regularizers[0],
        Kind::Strategy => &p.strategies[0],
        Kind::Probe => &p.probes[0],
    }
}

/// Builds the plugin and uses it a little, as the engine would.
fn exercise(built: Built, what: &str) {
    match built {
        Built::Backbone(b) => {
            let vs = tch::nn::VarStore::new(tch::Device::Cpu);
            let net = b.build(&vs.root()).unwrap_or_else(|e| panic!("{what}: {e:#}"));
            let shape: Vec<i64> = match b.input() {
                rifle_core::plugin::InputKind::Image => vec![2, 3, 32, 32],
                rifle_core::plugin::InputKind::Vector(n) => vec![2, n],
            };
            let x = tch::Tensor::zeros(shape.as_slice(), (tch::Kind::Float, tch::Device::Cpu));
            let y = net.features(&x, false, &NoPerturb);
            assert_eq!(y.size(), [2, net.feature_dim()], "{what}: features have the wrong shape");
        }
        Built::Dataset(d) => {
            assert!(d.task().outputs() >= 1, "{what}: no outputs");
            for split in [Split::Train, Split::Test] {
                let samples = d.split(split).unwrap_or_else(|e| panic!("{what} {split:?}: {e:#}"));
                assert!(!samples.is_empty(), "{what}: the {split:?} split of the example is empty");
                samples.load(0).unwrap_or_else(|e| panic!("{what} {split:?}: {e:#}"));
            }
        }
        Built::Augment(a) => {
            let image = image::RgbImage::from_fn(300, 260, |x, y| image::Rgb([x as u8, y as u8, 7]));
            let out = a.apply(image, &mut rifle_core::data::rng_for(0, 0, 0)).unwrap_or_else(|e| panic!("{what}: {e:#}"));
            assert!(out.width() > 0 && out.height() > 0, "{what}: empty image");
        }
        Built::Scheduler(s) => {
            let progress = Progress { epoch: 1, epochs: 4, step: 10, step_in_epoch: 2, steps_per_epoch: 8 };
            let f = s.factor(&progress);
            assert!(f.is_finite() && f >= 0.0, "{what}: factor {f}");
        }
        Built::Regularizer(_) | Built::Strategy(_) | Built::Probe(_) => {}
    }
}

struct NoPerturb;
impl rifle_core::plugin::Perturb for NoPerturb {}

#[test]
fn every_plugin_builds_from_its_own_example_and_is_documented() {
    let dir = tempfile::tempdir().unwrap();
    fixtures(dir.path());
    std::env::set_current_dir(dir.path()).unwrap();
    let libraries: Vec<String> = ["rifle_label_smoothing", "rifle_test_faults"].iter().map(|l| plugin_lib(l).display().to_string()).collect();
    for lib in &libraries {
        rifle_core::dynamic::load(Path::new(lib)).unwrap();
    }

    let all = entries();
    for kind in [Kind::Backbone, Kind::Dataset, Kind::Augment, Kind::Scheduler, Kind::Strategy] {
        assert!(all.iter().any(|e| e.spec.kind == kind), "no {kind} plugin is registered");
    }
    let mut failures = Vec::new();
    for entry in &all {
        let spec = entry.spec;
        let what = format!("{} `{}` ({})", spec.kind, spec.name, entry.source);
        if spec.doc.trim().is_empty() || spec.doc.contains('\n') {
            failures.push(format!("{what}: its doc must be one non-empty line"));
        }
        for p in spec.params {
            if p.doc.trim().is_empty() {
                failures.push(format!("{what}: parameter `{}` has no doc", p.name));
            }
            if let Some(default) = p.default_value() {
                if let Err(e) = p.check(&default.to_yaml()) {
                    failures.push(format!("{what}: the default of `{}` ({default}) fails its own check: {e}", p.name));
                }
            }
        }
        let path = write_file(dir.path(), &format!("{}-{}.yaml", spec.kind, spec.name), &pipeline_with(spec.kind, spec.name, spec.example, &libraries));
        match load(&path, &[], &[]) {
            Ok(loaded) => match the_use(&loaded, spec.kind).build() {
                Ok(built) => exercise(built, &what),
                Err(e) => failures.push(format!("{what}: its example `{}` does not build: {e:#}", spec.example)),
            },
            Err(e) => failures.push(format!("{what}: its example `{}` does not load: {e}", spec.example)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Sanity: the loop saw the plugins of both sources.
    assert!(all.iter().any(|e| e.spec.name == "label_smoothing") && all.iter().any(|e| e.spec.name == "resnet"));
}
