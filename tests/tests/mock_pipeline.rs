//! The mock pipeline (pipelines/mock.yaml) learns: its test accuracy ends far above chance, and the run
//! directory holds what the README promises.
use rifle_core::metrics;
use rifle_tests::{root, train};

#[test]
fn mock_pipeline_learns_and_writes_its_run_directory() {
    let out = tempfile::tempdir().unwrap();
    let summary = train(&root().join("pipelines/mock.yaml"), &[], out.path()).unwrap();
    // 8 classes: chance is 12.5%.
    let final_top1 = summary.final_top1.unwrap();
    assert!(final_top1 > 0.5, "final test top-1 {final_top1} is not far above chance (0.125)");

    let (epochs, _) = metrics::read(out.path()).unwrap();
    let test: Vec<_> = epochs.iter().filter(|e| e.split == "test").collect();
    let train_lines: Vec<_> = epochs.iter().filter(|e| e.split == "train").collect();
    assert_eq!(test.len(), 4);
    assert_eq!(train_lines.len(), 4);
    assert!(test.last().unwrap().top1.unwrap() > test.first().unwrap().top1.unwrap(), "accuracy did not rise");
    for e in &epochs {
        assert!(e.loss.is_finite() && e.seconds > 0.0 && e.images_per_s > 0.0);
        assert!(e.top5.unwrap() >= e.top1.unwrap());
    }
    // 512 training samples, batch 32, drop_last: 16 steps of 32 samples per epoch.
    assert!(train_lines.iter().all(|e| e.samples == 512));
    assert!(test.iter().all(|e| e.samples == 256));

    for file in ["pipeline.yaml", "metrics.jsonl", "metrics.csv", "log.txt", "checkpoints/last.safetensors", "checkpoints/best.safetensors", "checkpoints/final.safetensors"] {
        assert!(out.path().join(file).exists(), "{file} missing from the run directory");
    }
    let csv = std::fs::read_to_string(out.path().join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().next().unwrap(), metrics::CSV_COLUMNS.join(","));
    assert_eq!(csv.lines().count(), 1 + 8);
}
