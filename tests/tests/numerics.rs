//! Numerics: a NaN or infinite loss or gradient stops the run with a message naming the step, keeping the
//! last good checkpoint; with `numerics.on_nonfinite: skip` the step is skipped (no update) and counted in
//! the epoch's `skipped_steps`. The NaNs come from the `nonfinite_at` test strategy (NaN inputs, an infinite
//! gradient) at a chosen step, and from a learning rate no model survives.
use rifle_core::checkpoint::{read_state, OPTIMIZER_PREFIX};
use rifle_core::metrics;
use rifle_tests::{mock_pipeline, plugin_lib, tensors, train, TINY};
use std::path::Path;

/// TINY (2 epochs of 4 steps) with the fault library and `extra` overrides.
fn run(out: &Path, extra: &[&str]) -> anyhow::Result<rifle_core::engine::Summary> {
    let lib = format!("plugins=[{}]", plugin_lib("rifle_test_faults").display());
    let overrides: Vec<&str> = TINY.iter().copied().chain([lib.as_str()]).chain(extra.iter().copied()).collect();
    train(&mock_pipeline(), &overrides, out)
}

fn assert_stopped_at_step_6_with_the_epoch_1_checkpoint(out: &Path, error: &str, what: &str) {
    assert!(error.contains(&format!("non-finite {what} at step 6 (epoch 1, batch 2); set `numerics.on_nonfinite: skip` to skip such steps")), "{error}");
    let last = out.join("checkpoints/last.safetensors");
    assert!(
        error.starts_with(&format!("the run stopped at step 6 (epoch 1, batch 2); its last checkpoint {} (epoch 1, step 4) is intact", last.display())),
        "{error}"
    );
    let state = read_state(out).unwrap();
    assert_eq!((state.epoch, state.step, state.step_in_epoch), (1, 4, 0));
    // The checkpoint holds the model as epoch 0 left it (best.safetensors was written at the same moment).
    let best = tensors(&out.join("checkpoints/best.safetensors"));
    for (name, t) in tensors(&last).into_iter().filter(|(n, _)| !n.starts_with(OPTIMIZER_PREFIX)) {
        assert!(t.isfinite().all().int64_value(&[]) == 1 && t.equal(&best[&name]), "`{name}`");
    }
    assert_eq!(metrics::read(out).unwrap().0.len(), 2, "only epoch 0's lines");
}

#[test]
fn a_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint() {
    let out = tempfile::tempdir().unwrap();
    let e = format!("{:#}", run(out.path(), &["strategies=[{nonfinite_at: {steps: [6], what: loss}}]"]).unwrap_err());
    assert_stopped_at_step_6_with_the_epoch_1_checkpoint(out.path(), &e, "loss");
}

#[test]
fn an_infinite_gradient_stops_the_run_naming_the_step() {
    let out = tempfile::tempdir().unwrap();
    let e = format!("{:#}", run(out.path(), &["strategies=[{nonfinite_at: {steps: [6], what: gradient}}]"]).unwrap_err());
    assert_stopped_at_step_6_with_the_epoch_1_checkpoint(out.path(), &e, "gradient");
}

#[test]
fn with_skip_the_steps_are_skipped_and_counted() {
    for what in ["loss", "gradient"] {
        let out = tempfile::tempdir().unwrap();
        let strategy = format!("strategies=[{{nonfinite_at: {{steps: [1, 6, 7], what: {what}}}}}]");
        run(out.path(), &[&strategy, "numerics.on_nonfinite=skip"]).unwrap_or_else(|e| panic!("{what}: {e:#}"));
        let (epochs, _) = metrics::read(out.path()).unwrap();
        let train: Vec<(usize, usize)> = epochs.iter().filter(|e| e.split == "train").map(|e| (e.skipped_steps, e.samples)).collect();
        // 4 steps of 16 per epoch; a skipped step adds nothing to the epoch's samples.
        assert_eq!(train, [(1, 48), (2, 32)], "{what}");
        assert!(epochs.iter().all(|e| e.loss.is_finite()), "{what}: {epochs:?}");
        for (name, t) in tensors(&out.path().join("checkpoints/final.safetensors")) {
            assert_eq!(t.isfinite().all().int64_value(&[]), 1, "{what}: `{name}` is not finite");
        }
    }
}

#[test]
fn a_learning_rate_no_model_survives_is_caught_at_the_first_bad_step() {
    let out = tempfile::tempdir().unwrap();
    let e = format!("{:#}", run(out.path(), &["optimizer.lr=1e30"]).unwrap_err());
    assert!(e.contains("non-finite") && e.contains("set `numerics.on_nonfinite: skip`"), "{e}");
    // Nothing written holds a non-finite value.
    for file in ["last", "best"].map(|f| out.path().join(format!("checkpoints/{f}.safetensors"))).iter().filter(|f| f.exists()) {
        for (name, t) in tensors(file) {
            assert_eq!(t.isfinite().all().int64_value(&[]), 1, "{}: `{name}`", file.display());
        }
    }
}

#[test]
fn a_non_finite_metric_keeps_the_metrics_file_readable() {
    use rifle_core::metrics::{EpochLine, MetricsLog};
    let dir = tempfile::tempdir().unwrap();
    let mut log = MetricsLog::open(dir.path(), 0).unwrap();
    log.epoch(EpochLine { epoch: 0, split: "test".into(), loss: f64::NAN, lr: f64::INFINITY, ..Default::default() }).unwrap();
    let record = rifle_core::plugin::Record { probe: "p".into(), epoch: 0, step: 3, values: [("norm".to_string(), f64::NAN)].into() };
    log.record(&record).unwrap();
    // JSON writes NaN and infinity as null; they read back as NaN.
    let (epochs, records) = metrics::read(dir.path()).unwrap();
    assert!(epochs[0].loss.is_nan() && epochs[0].lr.is_nan());
    assert!(records[0].values["norm"].is_nan());
    // A resume keeps such lines.
    assert_eq!(MetricsLog::open(dir.path(), 2).unwrap().epochs().len(), 1);
}
