//! The MLP-oracle study (paper §4.6.2) end to end at a tiny scale: a teacher trained on the source task,
//! transferred to the target task with a fresh last layer and RIFLE, measured by the OT probe; and the
//! study's sweep files expand to 5 teachers and {L2, L2+RIFLE} × 5 transfers.
use rifle_core::metrics;
use rifle_tests::{root, train};

#[test]
fn teacher_then_transfer_with_a_new_last_layer_and_the_ot_probe() {
    rifle_core::logging::init(); // the run's log.txt records what the weights loader did
    let dir = tempfile::tempdir().unwrap();
    let study = root().join("pipelines/paper/mlp");
    let teacher = dir.path().join("teacher");
    train(&study.join("teacher.yaml"), &["epochs=3", "dataset.mlp_oracle.train=200", "dataset.mlp_oracle.test=100"], &teacher).unwrap();
    let (t_epochs, _) = metrics::read(&teacher).unwrap();
    let t_test: Vec<f64> = t_epochs.iter().filter(|e| e.split == "test").map(|e| e.loss).collect();
    assert!(t_test.iter().all(|l| l.is_finite()) && t_test[2] < t_test[0], "the teacher did not learn: {t_test:?}");

    let weights = format!("weights.path={}", teacher.join("checkpoints/final.safetensors").display());
    let out = dir.path().join("transfer");
    let overrides = [weights.as_str(), "epochs=4", "dataset.mlp_oracle.train=200", "dataset.mlp_oracle.test=100", "strategies=[{rifle: {reinits: 1}}]"];
    train(&study.join("transfer.yaml"), &overrides, &out).unwrap();
    let log = std::fs::read_to_string(out.join("log.txt")).unwrap();
    assert!(log.contains("kept 1 excluded tensor(s) at initialisation: out.weight"), "{log}");
    let (epochs, records) = metrics::read(&out).unwrap();
    let ot: Vec<f64> = records.iter().filter(|r| r.probe == "oracle_distance").map(|r| r.values["ot"]).collect();
    assert_eq!(ot.len(), 4, "one OT distance per epoch");
    assert!(ot.iter().all(|d| (0.0..=2.0).contains(d)), "unit vectors are at most 2 apart: {ot:?}");
    let reinits: Vec<usize> = records.iter().filter(|r| r.probe == "rifle").map(|r| r.epoch).collect();
    assert_eq!(reinits, [2], "one re-initialisation, at the start of the second half");
    assert!(epochs.iter().filter(|e| e.split == "test").all(|e| e.loss.is_finite() && e.top1.is_none()));
}

#[test]
fn the_study_sweeps_expand_to_five_teachers_and_ten_transfers() {
    let study = root().join("pipelines/paper/mlp");
    let teachers = rifle_core::sweep::load(&study.join("teachers.sweep.yaml")).unwrap();
    assert_eq!(teachers.runs.len(), 5);
    assert_eq!(teachers.runs[3].set, ["seed=3", "dataset.mlp_oracle.seed=3", "probes[0].oracle_distance.seed=3"]);
    let transfer = rifle_core::sweep::load(&study.join("transfer.sweep.yaml")).unwrap();
    assert_eq!(transfer.runs.len(), 10);
    let run = transfer.runs.iter().find(|r| r.name == "method=L2+RIFLE,seed=4").unwrap();
    assert!(run.set.contains(&"weights.path=\"runs/paper-mlp/teachers/seed=4/checkpoints/final.safetensors\"".to_string()), "{:?}", run.set);
    assert!(run.set.contains(&"probes[0].oracle_distance.seed=4".to_string()));
}
