//! Dynamic plugins: the example library loads from a pipeline's `plugins:`, from `--plugin` and from
//! `RIFLE_PLUGIN_PATH`, is listed by `rifle plugins`, and changes training by exactly what it claims. Bad
//! libraries (another build, not a library, no stamp) are refused with a clear error and no crash; a plugin
//! that panics is reported with its name and the run stops with its checkpoint intact. Libraries are never
//! unloaded, so loading one twice is harmless.
use rifle_core::checkpoint::read_state;
use rifle_core::config::load;
use rifle_core::engine::Trainer;
use rifle_core::metrics;
use rifle_tests::{args, exit_code, mock_pipeline, plugin_lib, rifle, set_args, stderr, write_file, TINY};
use std::path::{Path, PathBuf};
use tch::Kind;

fn pipeline_using_label_smoothing(dir: &Path, plugins: &str) -> PathBuf {
    let mock = std::fs::read_to_string(mock_pipeline()).unwrap();
    write_file(dir, "p.yaml", &format!("{}\nplugins: {plugins}\n", mock.replace("strategies: []", "strategies: [{label_smoothing: {epsilon: 0.2}}]")))
}

#[test]
fn the_example_library_loads_from_the_pipeline_the_command_line_and_the_environment() {
    let lib = plugin_lib("rifle_label_smoothing");
    let dir = tempfile::tempdir().unwrap();

    let from_pipeline = pipeline_using_label_smoothing(dir.path(), &format!("[{}]", lib.display()));
    let out = rifle(dir.path(), &args(&["validate", from_pipeline.to_str().unwrap()]), &[]);
    assert_eq!(exit_code(&out), 0, "{}", stderr(&out));

    let without = pipeline_using_label_smoothing(dir.path(), "[]");
    let out = rifle(dir.path(), &args(&["validate", without.to_str().unwrap()]), &[]);
    assert_eq!(exit_code(&out), 1);
    assert!(stderr(&out).contains("strategies[0]: unknown strategy plugin `label_smoothing`"), "{}", stderr(&out));

    let out = rifle(dir.path(), &args(&["validate", without.to_str().unwrap(), "--plugin", lib.to_str().unwrap()]), &[]);
    assert_eq!(exit_code(&out), 0, "{}", stderr(&out));

    // RIFLE_PLUGIN_PATH: every .so in the listed folders (a folder of its own: target/ also holds the
    // deliberately mismatched library).
    let libs = tempfile::tempdir().unwrap();
    std::fs::copy(&lib, libs.path().join("librifle_label_smoothing.so")).unwrap();
    let empty = tempfile::tempdir().unwrap();
    let env = format!("{}:{}", empty.path().display(), libs.path().display());
    let out = rifle(dir.path(), &args(&["validate", without.to_str().unwrap()]), &[("RIFLE_PLUGIN_PATH", &env)]);
    assert_eq!(exit_code(&out), 0, "{}", stderr(&out));

    let out = rifle(dir.path(), &args(&["plugins", "strategy", "--plugin", lib.to_str().unwrap()]), &[]);
    assert_eq!(exit_code(&out), 0, "{}", stderr(&out));
    let listing = String::from_utf8_lossy(&out.stdout);
    let canonical = lib.canonicalize().unwrap();
    assert!(listing.starts_with("strategy:\n"), "{listing}");
    assert!(listing.contains(&format!("  label_smoothing — soft targets (1 − ε)·onehot + ε/C for training batches (example dynamic plugin)  [{}]\n", canonical.display())), "{listing}");
    assert!(listing.contains("      epsilon ") && listing.contains("example: label_smoothing: {epsilon: 0.1}"), "{listing}");
}

/// Σ_c q_c · (logsumexp(z) − z_c) per row, averaged: cross-entropy against q = (1 − ε)·onehot + ε/C, in f64.
fn smoothed_cross_entropy(logits: &[Vec<f64>], labels: &[i64], epsilon: f64) -> f64 {
    let total: f64 = logits
        .iter()
        .zip(labels)
        .map(|(z, &y)| {
            let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            let c = z.len() as f64;
            z.iter().enumerate().map(|(k, zk)| ((if k as i64 == y { 1.0 - epsilon } else { 0.0 }) + epsilon / c) * (lse - zk)).sum::<f64>()
        })
        .sum();
    total / logits.len() as f64
}

#[test]
fn label_smoothing_trains_on_exactly_the_smoothed_cross_entropy() {
    let lib = plugin_lib("rifle_label_smoothing");
    let dir = tempfile::tempdir().unwrap();
    let path = pipeline_using_label_smoothing(dir.path(), &format!("[{}]", lib.display()));
    // One epoch of one step of 16 images: the epoch's train loss is that step's loss.
    let overrides: Vec<String> = TINY.iter().map(|s| s.to_string()).chain(["epochs=1".into(), "dataset.mock.train=16".into()]).collect();
    let loaded = load(&path, &overrides, &[]).unwrap_or_else(|e| panic!("{e}"));
    let out = dir.path().join("run");
    let mut trainer = Trainer::build(&loaded, &out, false).unwrap();
    assert_eq!(trainer.train.steps_per_epoch(), 1);
    // A confident head, so that the smoothed and the plain cross-entropy are far apart (at initialisation
    // the logits are nearly uniform and both are close to ln C).
    tch::no_grad(|| {
        let _ = trainer.net.head_weight.g_mul_scalar_(40.0);
    });

    // The logits of that step, computed before it from the same model and batch (train mode: BatchNorm uses
    // the batch's statistics, as in the step).
    let batch = trainer.train.epoch(0, 0).next().unwrap().unwrap();
    let logits = tch::no_grad(|| trainer.net.forward(&batch.inputs, true, &NoPerturb)).to_kind(Kind::Double);
    let rows: Vec<Vec<f64>> = Vec::<Vec<f64>>::try_from(&logits).unwrap();
    let labels: Vec<i64> = Vec::<i64>::try_from(&batch.targets).unwrap();
    let smoothed = smoothed_cross_entropy(&rows, &labels, 0.2);
    let plain = smoothed_cross_entropy(&rows, &labels, 0.0);

    trainer.fit(&std::sync::atomic::AtomicBool::new(false), None).unwrap();
    let (epochs, _) = metrics::read(&out).unwrap();
    let trained = epochs.iter().find(|e| e.split == "train").unwrap().loss;
    assert!((trained - smoothed).abs() < 1e-5 * smoothed, "trained on {trained}, the smoothed cross-entropy is {smoothed}");
    assert!((trained - plain).abs() > 1e-2, "the loss {trained} is the plain cross-entropy {plain}: smoothing changed nothing");
}

struct NoPerturb;
impl rifle_core::plugin::Perturb for NoPerturb {}

/// A validate run that loads `library` with --plugin: must fail cleanly (exit 1, no signal) with `message`.
fn refused(library: &Path, message: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = rifle(dir.path(), &args(&["validate", mock_pipeline().to_str().unwrap(), "--plugin", library.to_str().unwrap()]), &[]);
    assert_eq!(exit_code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains(message), "expected `{message}` in:\n{}", stderr(&out));
    assert!(stderr(&out).contains(&library.display().to_string()), "the error does not name the library:\n{}", stderr(&out));
}

#[test]
fn a_library_built_against_another_rifle_is_refused_with_why_and_how_to_rebuild() {
    let lib = plugin_lib("rifle_mismatched");
    refused(&lib, "was built by another toolchain or against another rifle-core, refusing to load it");
    refused(&lib, "layout: library has `00000000deadbeef`, this rifle has `");
    refused(&lib, "Rebuild it against this rifle with the same toolchain and profile");
    let out = rifle(Path::new("."), &args(&["plugins", "--plugin", lib.to_str().unwrap()]), &[]);
    assert_eq!(exit_code(&out), 1);
    assert!(stderr(&out).contains("refusing to load it"), "{}", stderr(&out));
}

#[test]
fn a_file_that_is_not_a_library_and_a_library_without_the_stamp_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = write_file(dir.path(), "libnotes.so", "these are notes, not a library\n");
    // The loader's own reason is kept (glibc's, for a file shorter than an ELF header).
    refused(&text, &format!("cannot load: dlopen failed: {}: file too short", text.display()));
    refused(&dir.path().join("libmissing.so"), "cannot open");
    // A real shared library that is not a rifle plugin: libtorch's own libc10.so, mapped into this process.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let c10 = maps.lines().filter_map(|l| l.split_whitespace().nth(5)).find(|p| p.ends_with("/libc10.so")).expect("libc10.so is mapped");
    refused(Path::new(c10), "not a rifle plugin (no `rifle_plugin_stamp` symbol); export its plugins with `rifle_core::export_plugins!();`");
}

/// Runs the tiny mock pipeline (2 epochs of 4 steps) with a `panic_at` strategy from the fault library.
fn run_with_panic(hook: &str) -> (std::process::Output, tempfile::TempDir) {
    let faults = plugin_lib("rifle_test_faults");
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(&["run", mock_pipeline().to_str().unwrap(), "--out", "run"]);
    a.extend(set_args(&[&format!("plugins=[{}]", faults.display()), &format!("strategies=[{{panic_at: {{step: 6, hook: {hook}}}}}]")]));
    let out = rifle(dir.path(), &a, &[]);
    (out, dir)
}

#[test]
fn a_panicking_plugin_is_reported_by_name_and_the_run_stops_with_its_checkpoint() {
    for (hook, what) in [
        ("before_step", "plugin `panic_at` panicked in before_step: injected panic at step 6"),
        ("features", "plugin `panic_at` panicked in features: injected panic in the forward pass at step 6"),
    ] {
        let (out, dir) = run_with_panic(hook);
        // Not SIGABRT: a library's panic cannot be caught by the host's runtime unless the library contains it.
        assert_eq!(exit_code(&out), 1, "{}", stderr(&out));
        let err = stderr(&out);
        let run = dir.path().join("run");
        assert!(err.contains(what), "{err}");
        assert!(
            err.contains("the run stopped at step 6 (epoch 1, batch 2); its last checkpoint run/checkpoints/last.safetensors (epoch 1, step 4) is intact; continue with `rifle run --resume run`"),
            "{err}"
        );
        let state = read_state(&run).unwrap();
        assert_eq!((state.epoch, state.step, state.step_in_epoch), (1, 4, 0));
        assert_eq!(metrics::read(&run).unwrap().0.len(), 2, "epoch 0's train and test lines");
    }
}

#[test]
fn loading_the_same_library_twice_is_harmless() {
    let lib = plugin_lib("rifle_label_smoothing");
    // Another test of this binary may have loaded it already; from the second load on, nothing is new.
    rifle_core::dynamic::load(&lib).unwrap();
    assert!(rifle_core::dynamic::load(&lib).unwrap().is_empty(), "nothing new the second time");
    // Through another name for the same file: the same library.
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&lib, dir.path().join("liblink.so")).unwrap();
    assert!(rifle_core::dynamic::load(&dir.path().join("liblink.so")).unwrap().is_empty());
    let found: Vec<_> = rifle_core::registry::entries().into_iter().filter(|e| e.spec.name == "label_smoothing").collect();
    assert_eq!(found.len(), 1);
    // A copy elsewhere is another library claiming a taken name: refused, naming both.
    std::fs::copy(&lib, dir.path().join("libcopy.so")).unwrap();
    let e = format!("{:#}", rifle_core::dynamic::load(&dir.path().join("libcopy.so")).unwrap_err());
    assert!(e.contains("strategy plugin `label_smoothing` is already registered by") && e.contains(&lib.canonicalize().unwrap().display().to_string()), "{e}");
    // The plugin still builds and works after all that (its library is never unloaded).
    let params = rifle_core::Params { origin: "test".into(), values: [("epsilon".to_string(), rifle_core::params::Value::Float(0.1))].into() };
    assert!(matches!(found[0].build(&params), Ok(rifle_core::Built::Strategy(_))));
}
