//! The paper's grids as sweeps: table1.sweep.yaml and table2.sweep.yaml expand to the right runs, each on
//! the right pipeline file, and every run's pipeline validates (given dataset folders and a weights file).
use rifle_tests::root;
use std::collections::BTreeSet;

#[test]
fn table_sweeps_expand_and_every_run_validates() {
    let env = tempfile::tempdir().unwrap();
    for dataset in ["CUB_200_2011", "StanfordDogs"] {
        for split in ["train", "test"] {
            std::fs::create_dir_all(env.path().join(dataset).join(split)).unwrap();
        }
    }
    let weights = env.path().join("resnet50.pth");
    std::fs::write(&weights, b"not read when validating").unwrap();
    // This test file is its own process: nothing else reads these variables concurrently.
    std::env::set_var("RIFLE_DATASETS", env.path());
    std::env::set_var("RIFLE_WEIGHTS", &weights);

    let paper = root().join("pipelines/paper");
    for (file, methods, runs) in [
        ("table1.sweep.yaml", &["original", "dropout", "dropconnect", "cnn_dropout", "stochastic_depth", "cyclic_lr", "disturb_label", "rifle"][..], 2 * 2 * 8 * 5),
        ("table2.sweep.yaml", &["rifle", "rifle_a", "rifle_b"][..], 2 * 2 * 3 * 5),
    ] {
        let mut sweep = rifle_core::sweep::load(&paper.join(file)).unwrap();
        assert_eq!(sweep.runs.len(), runs, "{file}");
        let seen: BTreeSet<&str> = sweep.runs.iter().map(|r| r.labels["method"].as_str()).collect();
        assert_eq!(seen, methods.iter().copied().collect(), "{file}");
        for run in &sweep.runs {
            let want = paper.join(&run.labels["regularizer"]).join(format!("{}.yaml", run.labels["method"]));
            assert_eq!(run.base, want, "{file}: {}", run.name);
        }
        let out = tempfile::tempdir().unwrap();
        sweep.out = out.path().to_path_buf();
        sweep.prepare().unwrap_or_else(|e| panic!("{file}: {e:#}"));
        let one = out.path().join("dataset=Stanford-Dogs,regularizer=l2sp,method=rifle,seed=4/sweep-pipeline.yaml");
        let loaded = rifle_core::config::load(&one, &["seed=4".into()], &[]).unwrap();
        assert_eq!(loaded.plugins.strategies[0].name(), "rifle");
        assert_eq!(loaded.plugins.regularizers[0].name(), "l2_sp");
        assert_eq!(loaded.pipeline.seed, 4);
        let train = loaded.plugins.dataset.params.path("train").unwrap();
        assert_eq!(train, env.path().join("StanfordDogs/train"));
    }
}
