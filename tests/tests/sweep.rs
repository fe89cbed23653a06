//! A sweep over {L2, L2+RIFLE} × 3 seeds on the mock dataset: interrupted with SIGINT, resumed, and
//! reported; the report's mean ± std equals what the run files say.
use rifle_tests::{rifle_bin, root, write_file};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn final_top1(run: &Path) -> f64 {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let last_test = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["split"] == "test")
        .last()
        .expect("a test line");
    100.0 * last_test["top1"].as_f64().unwrap()
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64;
    (mean, var.sqrt())
}

#[test]
fn sweep_is_interrupted_resumed_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let sweep = write_file(
        dir.path(),
        "mock.sweep.yaml",
        &format!(
            "base: {base}\nout: {out}\nset:\n  epochs: 2\n  threads: 1\n  dataset.mock.train: 256\n  dataset.mock.test: 64\n  dataset.mock.size: 32\n\
             axes:\n  - name: method\n    values:\n      L2: {{regularizers: [{{l2: {{alpha: 1.0e-4}}}}]}}\n      \
             L2+RIFLE: {{regularizers: [{{l2: {{alpha: 1.0e-4}}}}], strategies: [{{rifle: {{reinits: 1}}}}]}}\n  \
             - name: seed\n    key: seed\n    values: [0, 1, 2]\n",
            base = root().join("pipelines/mock.yaml").display(),
            out = out.display()
        ),
    );

    // Interrupt in the middle of the second run: after its first epoch's metrics are written.
    let mut child = Command::new(rifle_bin()).arg("sweep").arg(&sweep).stderr(std::process::Stdio::null()).spawn().unwrap();
    let started = Instant::now();
    let second = out.join("method=L2,seed=1");
    let lines = |p: &Path| std::fs::read_to_string(p.join("metrics.jsonl")).map(|t| t.lines().count()).unwrap_or(0);
    while lines(&second) < 2 {
        assert!(started.elapsed() < Duration::from_secs(300), "the second run never got through its first epoch");
        assert!(child.try_wait().unwrap().is_none(), "the sweep ended before it was interrupted");
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe { libc_kill(child.id() as i32) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "an interrupted sweep exits with 130");
    let finished_before: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("checkpoints/final.safetensors").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(finished_before, ["method=L2,seed=0"], "finished before resuming");
    assert!(second.join("checkpoints/last.safetensors").exists(), "the interrupted run left no checkpoint");

    // Resume: finished runs are skipped, the rest run.
    let output = Command::new(rifle_bin()).arg("sweep").arg(&sweep).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("{} already done", finished_before.len())), "{stderr}");
    for run in &finished_before {
        assert!(!stderr.contains(&format!("starting {run}\n")), "{run} ran twice: {stderr}");
    }
    let console = std::fs::read_to_string(second.join("console.log")).unwrap();
    assert!(console.contains("resuming"), "the interrupted run was not resumed: {console}");
    assert_eq!(lines(&second), 4, "2 epochs × (train, test) lines, none duplicated by the resume");

    // The report's cells equal mean ± std computed from the run files.
    let report = Command::new(rifle_bin()).arg("report").arg(&out).output().unwrap();
    assert!(report.status.success(), "{}", String::from_utf8_lossy(&report.stderr));
    let csv = std::fs::read_to_string(out.join("report.csv")).unwrap();
    let mut cells: BTreeMap<String, (f64, f64, usize)> = BTreeMap::new();
    for line in csv.lines().skip(1).filter(|l| l.starts_with("final,")) {
        let f: Vec<&str> = line.split(',').collect();
        // table, group, row, column, mean, std, n
        cells.insert(f[3].to_string(), (f[4].parse().unwrap(), f[5].parse().unwrap(), f[6].parse().unwrap()));
    }
    for method in ["L2", "L2+RIFLE"] {
        let values: Vec<f64> = (0..3).map(|s| final_top1(&out.join(format!("method={method},seed={s}")))).collect();
        let (mean, std) = mean_std(&values);
        let (m, s, n) = cells[method];
        assert_eq!(n, 3);
        assert!((m - mean).abs() < 1e-9 && (s - std).abs() < 1e-9, "{method}: report {m} ± {s}, files {mean} ± {std}");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("Final epoch") && md.contains("Best epoch"));
    let png = std::fs::read(out.join("curves-mock.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

/// SIGINT to one process (not its group): the sweep passes it on to its running child.
unsafe fn libc_kill(pid: i32) {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    kill(pid, 2);
}
