//! pipelines/paper/: `rifle validate` passes on every file, and each file holds the paper's settings
//! (§4.2) with the regularizer of its folder and the method of its name.
use rifle_core::registry::{self, Kind};
use rifle_tests::{build_plugin, rifle_bin, root};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Table 1 / Table 2 pipelines: every `.yaml` under pipelines/paper except sweeps and the MLP-oracle
/// study (tests/tests/mlp_study.rs runs that one).
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.ends_with("mlp") || path.to_string_lossy().ends_with(".sweep.yaml") {
            continue;
        }
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

/// A dataset root with train/ and test/ folders and a weights file: what validation checks exists.
fn environment() -> (tempfile::TempDir, Vec<(&'static str, PathBuf)>) {
    let dir = tempfile::tempdir().unwrap();
    for split in ["train", "test"] {
        std::fs::create_dir_all(dir.path().join("data").join(split)).unwrap();
    }
    std::fs::write(dir.path().join("resnet50.pth"), b"not read by validate").unwrap();
    let vars = vec![("RIFLE_DATA", dir.path().join("data")), ("RIFLE_WEIGHTS", dir.path().join("resnet50.pth"))];
    (dir, vars)
}

fn validate(file: &Path, vars: &[(&str, PathBuf)], extra: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(rifle_bin());
    cmd.arg("validate").arg(file).args(extra).env_remove("RIFLE_DATA").env_remove("RIFLE_WEIGHTS");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Table 1's columns and Table 2's ablations, with the strategy (or scheduler) each one adds.
const METHODS: &[(&str, &str)] = &[
    ("original", ""),
    ("dropout", "dropout"),
    ("dropconnect", "dropconnect"),
    ("cnn_dropout", "cnn_dropout"),
    ("stochastic_depth", "stochastic_depth"),
    ("cyclic_lr", ""),
    ("disturb_label", "disturb_label"),
    ("rifle", "rifle"),
    ("rifle_a", "rifle_a"),
    ("rifle_b", "rifle_b"),
];

/// The plugin names of a resolved plugin list (`- name: {params}` entries).
fn plugin_names(list: &serde_yaml::Value) -> Vec<String> {
    let items = list.as_sequence().expect("a plugin list");
    items.iter().map(|v| v.as_mapping().expect("name: params").keys().next().and_then(|k| k.as_str()).expect("a name").to_string()).collect()
}

#[test]
fn every_paper_pipeline_validates_and_holds_the_papers_settings() {
    let dir = root().join("pipelines/paper");
    let mut all = Vec::new();
    files(&dir, &mut all);
    let (_tmp, vars) = environment();
    let mut printed = std::collections::BTreeMap::new();
    for file in &all {
        let (ok, resolved, stderr) = validate(file, &vars, &["--print"]);
        assert!(ok, "{}: {stderr}", file.display());
        printed.insert(file.clone(), resolved);
    }
    for (folder, regularizer) in [("l2", "l2"), ("l2sp", "l2_sp")] {
        for (method, strategy) in METHODS {
            let file = dir.join(folder).join(format!("{method}.yaml"));
            let printed = printed.get(&file).unwrap_or_else(|| panic!("{} is missing", file.display()));
            let p: serde_yaml::Value = serde_yaml::from_str(printed).unwrap();
            let at = file.display();
            assert_eq!(p["epochs"].as_u64(), Some(40), "{at}");
            assert_eq!(p["batch_size"].as_u64(), Some(32), "{at}");
            assert_eq!(p["backbone"]["resnet"]["arch"].as_str(), Some("resnet50"), "{at}");
            assert_eq!(p["optimizer"]["algorithm"].as_str(), Some("sgd"), "{at}");
            assert_eq!(p["optimizer"]["lr"].as_f64(), Some(0.01), "{at}");
            assert_eq!(p["optimizer"]["momentum"].as_f64(), Some(0.9), "{at}");
            assert_eq!(p["optimizer"]["weight_decay"].as_f64(), Some(0.0), "{at}: decay comes from the regularizer");
            for (key, imagenet) in [("mean", [0.485, 0.456, 0.406]), ("std", [0.229, 0.224, 0.225])] {
                let got: Vec<f64> = p["data"]["normalize"][key].as_sequence().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
                assert!(got.iter().zip(imagenet).all(|(g, w)| (g - w).abs() < 1e-6), "{at}: normalize.{key} {got:?}");
            }
            let names = |key: &str| plugin_names(&p[key]);
            assert_eq!(names("regularizers"), [regularizer], "{at}");
            assert_eq!(plugin_names(&p["augment"]["train"]), ["resize", "random_crop", "hflip"], "{at}");
            assert_eq!(plugin_names(&p["augment"]["eval"]), ["resize", "center_crop"], "{at}");
            assert_eq!(p["augment"]["train"][0]["resize"]["shorter"].as_u64(), Some(256), "{at}");
            assert_eq!(p["augment"]["train"][1]["random_crop"]["size"].as_u64(), Some(224), "{at}");
            assert_eq!(p["augment"]["eval"][1]["center_crop"]["size"].as_u64(), Some(224), "{at}");
            let strategies = names("strategies");
            if strategy.is_empty() {
                assert!(strategies.is_empty(), "{at}: {strategies:?}");
            } else {
                assert_eq!(strategies, [strategy.to_string()], "{at}");
            }
            let schedule = if *method == "cyclic_lr" { "cyclic" } else { "cosine" };
            assert_eq!(names("schedulers"), [schedule], "{at}");
        }
    }
}

#[test]
fn the_dataset_and_weights_come_from_the_environment() {
    let file = root().join("pipelines/paper/l2/rifle.yaml");
    let (ok, _, stderr) = validate(&file, &[], &[]);
    assert!(!ok && stderr.contains("RIFLE_DATA"), "{stderr}");
    // --set replaces them.
    let (tmp, vars) = environment();
    let data = tmp.path().join("data");
    let set = [
        format!("dataset.image_folder.train={}", data.join("train").display()),
        format!("dataset.image_folder.test={}", data.join("test").display()),
        format!("weights.path={}", vars[1].1.display()),
    ];
    let args: Vec<&str> = set.iter().flat_map(|s| ["--set", s.as_str()]).collect();
    let (ok, _, stderr) = validate(&file, &[], &args);
    assert!(ok, "{stderr}");
}

#[test]
fn every_method_plugin_is_registered_and_builds_from_its_example() {
    let methods = [
        (Kind::Strategy, ["rifle", "rifle_a", "rifle_b", "dropout", "dropconnect", "cnn_dropout", "stochastic_depth", "disturb_label"].as_slice()),
        (Kind::Regularizer, &["l2", "l2_sp"]),
        (Kind::Scheduler, &["constant", "step", "multistep", "cosine", "cyclic", "warmup"]),
        (Kind::Probe, &["grad_norm", "weight_distance"]),
    ];
    for (kind, names) in methods {
        for name in names {
            let entry = registry::find(kind, name).unwrap_or_else(|e| panic!("{e}"));
            if let Err(e) = build_plugin(kind, name, entry.spec.example) {
                panic!("{kind} `{name}` does not build from its example {}: {e:#}", entry.spec.example);
            }
        }
    }
}
