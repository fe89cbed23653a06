//! Resume is an exact continuation. On the CPU with one libtorch thread, a run of 4 epochs straight and the
//! same run stopped by a signal and continued by a new process (`rifle run --resume`) end with bit-identical
//! weights and identical metrics lines (timings aside), with strategies that draw random numbers in the
//! second half: at epoch starts (a head re-initialisation, as RIFLE does) and in every forward pass. Stops
//! at an epoch boundary, inside an epoch, and after an epoch's last step before its evaluation.
use rifle_tests::{args, assert_same_tensors, exit_code, metrics_without_timings, mock_pipeline, plugin_lib, rifle, set_args, stderr, tensors};
use std::path::{Path, PathBuf};

/// Strategies that draw random numbers, active in the second half of the run: RIFLE (re-initialising at epochs 1, 2 and 3: two of them in the resumed half), dropout (fresh masks every
/// step) and two test strategies that draw at epoch starts and in every forward pass.
const RANDOM_STRATEGIES: &[&str] = &[
    "rifle: {reinits: 3, unit: epoch}",
    "dropout: {p: 0.2}",
    "reinit_head: {epochs: [2, 3]}",
    "feature_noise: {std: 0.2}",
];

/// Runs 4 epochs (4 steps each) in `dir/name`; `signal_at` says when the process gets SIGINT (`{}`: never).
/// A stopped run is continued by a new process. Returns the run directory.
fn run(dir: &Path, name: &str, signal_at: &str) -> PathBuf {
    let lib = plugin_lib("rifle_test_faults");
    let strategies: Vec<String> = RANDOM_STRATEGIES.iter().map(|s| format!("{{{s}}}")).chain([format!("{{signal_at: {signal_at}}}")]).collect();
    let mut a = args(&["run", mock_pipeline().to_str().unwrap(), "--out", name]);
    a.extend(set_args(&["epochs=4", "data.workers=2", &format!("plugins=[{}]", lib.display()), &format!("strategies=[{}]", strategies.join(", "))]));
    let out = rifle(dir, &a, &[]);
    let run = dir.join(name);
    if signal_at == "{}" {
        assert_eq!(exit_code(&out), 0, "{}", stderr(&out));
    } else {
        assert_eq!(exit_code(&out), 130, "{}", stderr(&out));
        assert!(!run.join("checkpoints/final.safetensors").exists());
        let out = rifle(dir, &args(&["run", "--resume", name]), &[]);
        assert_eq!(exit_code(&out), 0, "{}", stderr(&out));
    }
    run
}

#[test]
fn a_resumed_run_ends_exactly_where_a_straight_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let straight = run(dir.path(), "straight", "{}");
    let lines = metrics_without_timings(&straight);
    // 4 epochs × (train, test) lines, and one record per RIFLE re-initialisation
    assert_eq!(lines.len(), 8 + 3);
    for (name, signal_at, (epoch, step)) in [("epoch_boundary", "{epoch_end: 1}", (2, 8)), ("mid_epoch", "{step: 9}", (2, 10)), ("before_evaluation", "{step: 7}", (1, 8))] {
        let resumed = run(dir.path(), name, signal_at);
        let log = std::fs::read_to_string(resumed.join("log.txt")).unwrap();
        assert!(log.contains(&format!("resuming {name} at epoch {epoch}, step {step}")), "{name}: {log}");
        for file in ["final", "best", "last"] {
            assert_same_tensors(&straight.join(format!("checkpoints/{file}.safetensors")), &resumed.join(format!("checkpoints/{file}.safetensors")));
        }
        assert_eq!(metrics_without_timings(&resumed), lines, "{name}");
    }
    // The strategies do change training: without them the run ends elsewhere.
    let mut a = args(&["run", mock_pipeline().to_str().unwrap(), "--out", "plain"]);
    a.extend(set_args(&["epochs=4", "data.workers=2"]));
    assert_eq!(exit_code(&rifle(dir.path(), &a, &[])), 0);
    let (plain, with) = (tensors(&dir.path().join("plain/checkpoints/final.safetensors")), tensors(&straight.join("checkpoints/final.safetensors")));
    assert!(plain.iter().any(|(n, t)| !t.equal(&with[n])));
}
