//! Run directories are never written over: a second run into a folder that holds a run is refused (the
//! first run's files are untouched), a resumed run continues its recorded pipeline exactly (no `--set`,
//! no `--out`), and libraries given with `--plugin` or found through `RIFLE_PLUGIN_PATH` are recorded so
//! that the run's pipeline works alone. A run that cannot start leaves no folder; one that fails logs why.
//! Also: an input too small for the network is an error, not a crash; reports of one run show no std.
use rifle_tests::{args, exit_code, mock_pipeline, plugin_lib, rifle, set_args, stderr, write_rgb};
use std::path::Path;

fn run_mock(dir: &Path, out: &str, extra: &[&str]) -> std::process::Output {
    let mut a = args(&["run", mock_pipeline().to_str().unwrap(), "--out", out]);
    a.extend(set_args(&[&["epochs=1"], extra].concat()));
    rifle(dir, &a, &[])
}

#[test]
fn a_folder_holding_a_run_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(exit_code(&run_mock(dir.path(), "run", &[])), 0);
    let metrics = std::fs::read(dir.path().join("run/metrics.jsonl")).unwrap();
    let pipeline = std::fs::read(dir.path().join("run/pipeline.yaml")).unwrap();
    let out = run_mock(dir.path(), "run", &["seed=7"]);
    assert_eq!(exit_code(&out), 1);
    assert!(stderr(&out).contains("run already holds a run (metrics or checkpoints); continue it with `rifle run --resume run`"), "{}", stderr(&out));
    assert_eq!(std::fs::read(dir.path().join("run/metrics.jsonl")).unwrap(), metrics);
    assert_eq!(std::fs::read(dir.path().join("run/pipeline.yaml")).unwrap(), pipeline);

    // Resuming continues the recorded pipeline; overrides would make pipeline.yaml lie.
    for extra in [&["--set", "optimizer.lr=5"][..], &["--out", "elsewhere"][..]] {
        let out = rifle(dir.path(), &args(&[&["run", "--resume", "run"][..], extra].concat()), &[]);
        assert_eq!(exit_code(&out), 1);
        assert!(stderr(&out).contains("--resume continues run/pipeline.yaml exactly as recorded: --out and --set (other than device=) do not apply"), "{}", stderr(&out));
    }
}

#[test]
fn default_run_directories_are_distinct_even_within_one_second() {
    let dir = tempfile::tempdir().unwrap();
    let start = |seed: &str| {
        let mut a = args(&["run", mock_pipeline().to_str().unwrap()]);
        a.extend(set_args(&["epochs=1", "output.dir=runs", &format!("seed={seed}")]));
        let mut command = std::process::Command::new(rifle_tests::rifle_bin());
        command.current_dir(dir.path()).args(a).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        command.spawn().unwrap()
    };
    // Started together, both are likely to read the same clock second; each must get its own folder.
    let (mut a, mut b) = (start("0"), start("5"));
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    let mut seeds: Vec<String> = std::fs::read_dir(dir.path().join("runs"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path().join("pipeline.yaml")).unwrap())
        .map(|text| text.lines().find(|l| l.starts_with("seed:")).unwrap().to_string())
        .collect();
    seeds.sort();
    assert_eq!(seeds, ["seed: 0", "seed: 5"]);
}

#[test]
fn a_plugin_given_on_the_command_line_or_found_through_the_environment_is_recorded_in_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let lib = plugin_lib("rifle_label_smoothing");
    // A folder of its own for RIFLE_PLUGIN_PATH (target/ also holds the deliberately mismatched library).
    let libs = tempfile::tempdir().unwrap();
    let copy = libs.path().join("librifle_label_smoothing.so");
    std::fs::copy(&lib, &copy).unwrap();
    let env = libs.path().display().to_string();
    for (name, flags, vars) in [("flag", vec!["--plugin", lib.to_str().unwrap()], vec![]), ("env", vec![], vec![("RIFLE_PLUGIN_PATH", env.as_str())])] {
        let mut a = args(&[&["run", mock_pipeline().to_str().unwrap(), "--out", name][..], &flags].concat());
        a.extend(set_args(&["epochs=1", "strategies=[{label_smoothing: {epsilon: 0.1}}]"]));
        let out = rifle(dir.path(), &a, &vars);
        assert_eq!(exit_code(&out), 0, "{name}: {}", stderr(&out));
        let recorded = dir.path().join(name).join("pipeline.yaml");
        let text = std::fs::read_to_string(&recorded).unwrap();
        let expected = if name == "flag" { &lib } else { &copy };
        assert!(text.contains(&format!("plugins:\n- {}\n", expected.display())), "{name}: {text}");
        let out = rifle(dir.path(), &args(&["validate", recorded.to_str().unwrap()]), &[]);
        assert_eq!(exit_code(&out), 0, "{name}: the recorded pipeline loads without the flag or the variable: {}", stderr(&out));
    }
}

#[test]
fn a_missing_device_leaves_no_run_directory_and_a_failed_run_logs_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(&["run", mock_pipeline().to_str().unwrap()]);
    a.extend(set_args(&["output.dir=runs", "device=cuda:7"]));
    let out = rifle(dir.path(), &a, &[]);
    assert_eq!(exit_code(&out), 1);
    assert!(stderr(&out).contains("device `cuda:7` is not available"), "{}", stderr(&out));
    assert!(!dir.path().join("runs").exists(), "a run directory was created for a run that could not start");

    // A run that stops on an error says why in its own log, not only on the terminal.
    let out = run_mock(dir.path(), "nan", &["optimizer.lr=1e30"]);
    assert_eq!(exit_code(&out), 1);
    let log = std::fs::read_to_string(dir.path().join("nan/log.txt")).unwrap();
    let last = log.lines().last().unwrap();
    assert!(last.starts_with("error: ") && last.contains("non-finite"), "{log}");
    assert!(stderr(&out).contains(last), "{}", stderr(&out));

    let out = rifle(dir.path(), &args(&["run", "--resume", "no-such-run"]), &[]);
    assert_eq!(exit_code(&out), 1);
    assert!(stderr(&out).contains("--resume no-such-run: no such directory"), "{}", stderr(&out));
}

#[test]
fn an_image_too_small_for_the_network_is_an_error_naming_its_shape() {
    let dir = tempfile::tempdir().unwrap();
    // A max-pool without padding (Caffe's ResNets) cannot take the 1x1 map a 1x1 image leaves after the stem.
    assert_eq!(exit_code(&run_mock(dir.path(), "run", &["backbone.resnet.maxpool_ceil=true"])), 0);
    let tiny = dir.path().join("tiny.png");
    write_rgb(&tiny, 1, 1, |_, _| [10, 20, 30]);
    // mock.yaml's eval augmentations leave the size as it is, so the 1x1 image reaches the network.
    let out = rifle(dir.path(), &args(&["predict", "run", tiny.to_str().unwrap()]), &[]);
    let err = stderr(&out);
    assert_eq!(exit_code(&out), 1, "{err}");
    assert!(err.contains("tiny.png: the network cannot take an input of shape [1, 3, 1, 1]"), "{err}");
    assert!(err.contains("Output size is too small") && !err.contains("panicked") && !err.contains("frame #") && !err.contains("unwrap"), "{err}");
}

#[test]
fn a_report_of_one_run_shows_no_std_and_refuses_an_unknown_label() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(exit_code(&run_mock(dir.path(), "run", &[])), 0);
    let out = rifle(dir.path(), &args(&["report", "run"]), &[]);
    assert_eq!(exit_code(&out), 0, "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let row = table.lines().find(|l| l.starts_with("| mock |")).unwrap_or_else(|| panic!("{table}"));
    assert!(row.ends_with(" (1) |") && !row.contains('±'), "{row}");
    let csv = std::fs::read_to_string(dir.path().join("run/report.csv")).unwrap();
    assert!(csv.lines().nth(1).unwrap().ends_with(",,1"), "{csv}");
    let out = rifle(dir.path(), &args(&["report", "run", "--rows", "nosuch"]), &[]);
    assert_eq!(exit_code(&out), 1);
    assert!(stderr(&out).contains("no run has the label `nosuch`; the runs' labels are: dataset, method, seed"), "{}", stderr(&out));
}
