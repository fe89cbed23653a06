//! Nothing lost: checkpoints are written atomically (a failed write is an error and the previous file stays
//! intact and loadable), a corrupt checkpoint is detected on load (every single-byte change), and SIGINT or
//! SIGTERM stop the run at the next step boundary with a resumable checkpoint and exit code 130, while a
//! second signal exits at once. Signals come from the `signal_at` test strategy (during a chosen step) and
//! from `kill`, as a user or a scheduler sends them.
use rifle_core::checkpoint::read_state;
use rifle_core::config::load;
use rifle_core::engine::Trainer;
use rifle_core::tensorfile;
use rifle_tests::{args, exit_code, mock_pipeline, plugin_lib, rifle, rifle_bin, set_args, stderr, train, TINY};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

fn small_file(path: &Path) {
    let a = Tensor::from_slice(&[1.5f32, -2.0, 3.25, 0.0, 7.0, 8.5]).view([2, 3]);
    let b = Tensor::from_slice(&[42i64, 7]);
    let meta = BTreeMap::from([("rifle.state".to_string(), r#"{"epoch":2,"step":9}"#.to_string())]);
    tensorfile::write(path, &[("a".into(), a), ("b".into(), b)], &meta).unwrap();
}

#[test]
fn a_failed_write_is_an_error_and_the_previous_file_stays_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("last.safetensors");
    small_file(&path);
    let before = std::fs::read(&path).unwrap();
    // The temporary file's place is taken (by a folder), so the write fails before the rename.
    let tmp = dir.path().join(format!(".last.safetensors.tmp-{}", std::process::id()));
    std::fs::create_dir(&tmp).unwrap();
    let other = Tensor::zeros([3], (Kind::Float, Device::Cpu));
    let e = format!("{:#}", tensorfile::write(&path, &[("a".into(), other)], &BTreeMap::new()).unwrap_err());
    assert!(e.starts_with(&format!("cannot write {} (the previous file, if any, is unchanged)", path.display())), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(tensorfile::read_checked(&path).is_ok());
}

#[test]
fn a_run_whose_checkpoint_cannot_be_written_fails_and_keeps_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let overrides: Vec<&str> = TINY.iter().copied().chain(["epochs=1"]).collect();
    train(&mock_pipeline(), &overrides, &run).unwrap();
    let last = run.join("checkpoints/last.safetensors");
    let before = std::fs::read(&last).unwrap();

    // Continue the finished run for one more epoch; its checkpoint write fails.
    std::fs::create_dir(run.join(format!("checkpoints/.last.safetensors.tmp-{}", std::process::id()))).unwrap();
    let loaded = load(&run.join("pipeline.yaml"), &["epochs=2".into()], &[]).unwrap();
    let mut trainer = Trainer::build(&loaded, &run, true).unwrap();
    let e = format!("{:#}", trainer.fit(&std::sync::atomic::AtomicBool::new(false), None).unwrap_err());
    assert!(e.contains(&format!("its last checkpoint {} (epoch 1, step 4) is intact", last.display())), "{e}");
    assert!(e.contains(&format!("cannot write {} (the previous file, if any, is unchanged)", last.display())), "{e}");
    assert_eq!(std::fs::read(&last).unwrap(), before);
    assert_eq!(read_state(&run).unwrap().epoch, 1);
}

#[test]
fn every_single_byte_corruption_of_a_checkpoint_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    small_file(&path);
    let good = std::fs::read(&path).unwrap();
    let bad = dir.path().join("bad.safetensors");
    for i in 0..good.len() {
        for flip in [0x01u8, 0x80] {
            let mut bytes = good.clone();
            bytes[i] ^= flip;
            std::fs::write(&bad, &bytes).unwrap();
            let result = tensorfile::read_checked(&bad);
            assert!(result.is_err(), "byte {i} ^ {flip:#04x} went unnoticed");
            assert!(format!("{:#}", result.unwrap_err()).contains(&bad.display().to_string()));
        }
    }
    for len in [0, 7, 8, good.len() / 2, good.len() - 1] {
        std::fs::write(&bad, &good[..len]).unwrap();
        assert!(tensorfile::read_checked(&bad).is_err(), "truncated to {len} bytes");
    }
}

#[test]
fn resuming_from_a_corrupt_checkpoint_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let overrides: Vec<&str> = TINY.iter().copied().chain(["epochs=1"]).collect();
    train(&mock_pipeline(), &overrides, &run).unwrap();
    let last = run.join("checkpoints/last.safetensors");
    let mut bytes = std::fs::read(&last).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0x20; // in the tensor data
    std::fs::write(&last, bytes).unwrap();
    let out = rifle(dir.path(), &args(&["run", "--resume", run.to_str().unwrap()]), &[]);
    assert_eq!(exit_code(&out), 1);
    let err = stderr(&out);
    assert!(err.contains(&format!("{} is not a valid safetensors file", last.display())) && err.contains("checksum mismatch"), "{err}");
    assert!(err.contains("the file is corrupt"), "{err}");
}

/// `rifle run` on the tiny mock pipeline (4 steps per epoch) with a `signal_at` strategy, in `dir/run`.
fn run_with_signal(dir: &Path, epochs: usize, signal_at: &str) -> std::process::Output {
    let lib = plugin_lib("rifle_test_faults");
    let mut a = args(&["run", mock_pipeline().to_str().unwrap(), "--out", "run"]);
    let epochs = format!("epochs={epochs}");
    a.extend(set_args(&[&epochs, &format!("plugins=[{}]", lib.display()), &format!("strategies=[{{signal_at: {signal_at}}}]")]));
    rifle(dir, &a, &[])
}

#[test]
fn sigint_and_sigterm_stop_at_the_next_step_boundary_with_a_resumable_checkpoint() {
    for signal in ["INT", "TERM"] {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let out = run_with_signal(dir.path(), 3, &format!("{{step: 5, signal: {signal}}}"));
        assert_eq!(exit_code(&out), 130, "SIG{signal}: {}", stderr(&out));
        assert!(stderr(&out).contains("stopped; resume with: rifle run --resume run\n"), "{}", stderr(&out));
        // Step 5 (epoch 1, batch 1) was finished, then the run stopped: 6 steps done.
        let state = read_state(&run).unwrap();
        assert_eq!((state.epoch, state.step_in_epoch, state.step), (1, 2, 6), "SIG{signal}");
        assert!(!run.join("checkpoints/final.safetensors").exists());

        let out = rifle(dir.path(), &args(&["run", "--resume", run.to_str().unwrap()]), &[]);
        assert_eq!(exit_code(&out), 0, "{}", stderr(&out));
        assert!(run.join("checkpoints/final.safetensors").exists());
        let (epochs, _) = rifle_core::metrics::read(&run).unwrap();
        assert_eq!(epochs.iter().map(|e| (e.epoch, e.split.as_str())).collect::<Vec<_>>(), [(0, "train"), (0, "test"), (1, "train"), (1, "test"), (2, "train"), (2, "test")]);
    }
}

#[test]
fn a_second_signal_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_with_signal(dir.path(), 3, "{step: 5, times: 2}");
    assert_eq!(exit_code(&out), 130, "{}", stderr(&out));
    assert!(!stderr(&out).contains("stopped; resume with"), "the run stopped cleanly instead: {}", stderr(&out));
    // Nothing was written after the signals: the checkpoint is still the one of epoch 0's end.
    let state = read_state(&dir.path().join("run")).unwrap();
    assert_eq!((state.epoch, state.step), (1, 4));
}

#[test]
fn ctrl_c_from_outside_stops_the_run_and_resume_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut a = args(&["run", mock_pipeline().to_str().unwrap(), "--out", run.to_str().unwrap()]);
    a.extend(set_args(&["epochs=12"]));
    let mut child = Command::new(rifle_bin()).args(&a).stderr(std::process::Stdio::piped()).spawn().unwrap();
    // Once the first epoch is done, as a user would press Ctrl-C.
    let started = Instant::now();
    while std::fs::read_to_string(run.join("metrics.jsonl")).map_or(true, |m| m.lines().count() < 2) {
        assert!(started.elapsed() < Duration::from_secs(120), "no epoch finished");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before the signal");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(exit_code(&out), 130, "{}", stderr(&out));
    let state = read_state(&run).unwrap();
    assert!(state.epoch < 12 && state.step >= 4, "{state:?}");

    let out = rifle(dir.path(), &args(&["run", "--resume", run.to_str().unwrap()]), &[]);
    assert_eq!(exit_code(&out), 0, "{}", stderr(&out));
    let (epochs, _) = rifle_core::metrics::read(&run).unwrap();
    assert_eq!(epochs.len(), 24, "every epoch's train and test line, once");
    for (i, e) in epochs.iter().enumerate() {
        assert_eq!((e.epoch, e.split.as_str()), (i / 2, if i % 2 == 0 { "train" } else { "test" }));
    }
}
