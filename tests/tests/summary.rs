//! `rifle summary`: one line per run from its pipeline.yaml and metrics.jsonl.
use rifle_tests::write_file;

fn epoch_line(epoch: usize, split: &str, top1: f64, seconds: f64) -> String {
    format!(
        r#"{{"epoch":{epoch},"split":"{split}","loss":1.0,"top1":{top1},"top5":1.0,"lr":0.1,"lr_head":0.1,"skipped_images":0,"skipped_steps":0,"samples":10,"seconds":{seconds},"images_per_s":1.0}}"#
    )
}

#[test]
fn summarises_final_and_best_accuracy_time_and_method() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    write_file(&run, "pipeline.yaml", "name: demo\nregularizers:\n- l2: {alpha: 0.0001}\nstrategies:\n- rifle: {reinits: 3}\n");
    let probe = r#"{"probe":"grad_norm","epoch":0,"step":3,"values":{"layer1":0.5}}"#;
    let lines = [
        epoch_line(0, "train", 0.2, 10.0),
        epoch_line(0, "test", 0.5, 2.0),
        probe.to_string(),
        epoch_line(1, "train", 0.4, 11.0),
        epoch_line(1, "test", 0.75, 2.5),
        epoch_line(2, "train", 0.6, 12.0),
        epoch_line(2, "test", 0.625, 3.0),
    ];
    write_file(&run, "metrics.jsonl", &(lines.join("\n") + "\n"));

    let s = rifle_core::summary::read(&run).unwrap();
    assert_eq!(s.name, "demo");
    assert_eq!(s.method, "l2 + rifle");
    assert_eq!(s.final_top1, Some(0.625));
    assert_eq!(s.best, Some((0.75, 2)), "best top-1 at the second epoch (1-based)");
    assert_eq!(s.epochs, 3);
    assert!((s.seconds - 40.5).abs() < 1e-9, "10 + 2 + 11 + 2.5 + 12 + 3 = 40.5, got {}", s.seconds);

    let plain = dir.path().join("plain");
    write_file(&plain, "pipeline.yaml", "name: base\nregularizers: []\nstrategies: []\n");
    write_file(&plain, "metrics.jsonl", &epoch_line(0, "test", 0.1, 1.0));
    let table = rifle_core::summary::table(&[&run, &plain]).unwrap();
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(rows[0].starts_with("run") && rows[0].contains("final top-1") && rows[0].contains("directory"), "{table}");
    assert!(rows[1].contains("l2 + rifle") && rows[1].contains("62.50%") && rows[1].contains("75.00% (2)") && rows[1].contains("40.5s"), "{table}");
    assert!(rows[2].contains("base") && rows[2].contains("10.00% (1)") && rows[2].trim_end().ends_with(&plain.display().to_string()), "{table}");

    let err = rifle_core::summary::table(&[dir.path().join("missing")]).unwrap_err().to_string();
    assert!(err.contains("not a run directory"), "{err}");
}
