//! Pipelines: every mistake is an error naming `file:line:column` and the path inside the pipeline (with the
//! valid keys and the closest one for unknown keys), or has the documented accepted meaning (YAML 1.1
//! booleans where a string is expected, numbers in exponent form, merge keys, `extends`, `--set`). The
//! resolved pipeline a run records runs again to the same result.
use rifle_core::config::{load, Amp, Loaded};
use rifle_core::params::Value;
use rifle_tests::{args, assert_same_tensors, exit_code, metrics_without_timings, mock_pipeline, plugin_lib, rifle, stderr, train, write_file, TINY};
use std::path::{Path, PathBuf};

/// Lines 1-8 of most test pipelines; what a test appends starts on line 9.
const BASE: &str = "\
epochs: 1
batch_size: 4
backbone:
  resnet: {arch: resnet18, width: 0.25}
dataset:
  mock: {classes: 4, train: 8, test: 4, size: 16}
optimizer:
  lr: 0.1
";

/// Writes `text` as `p.yaml` in a new folder; returns the folder (kept alive) and the file.
fn pipeline(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "p.yaml", text);
    (dir, path)
}

fn load_text(text: &str, overrides: &[&str]) -> Result<Loaded, String> {
    let (_dir, path) = pipeline(text);
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    load(&path, &overrides, &[]).map_err(|e| e.to_string().replace(&path.display().to_string(), "p.yaml"))
}

/// The error of a pipeline that must fail to load, with its own path shown as `p.yaml`.
fn error(text: &str, overrides: &[&str]) -> String {
    match load_text(text, overrides) {
        Ok(_) => panic!("the pipeline loaded, but it should not have:\n{text}"),
        Err(e) => e,
    }
}

fn ok(text: &str, overrides: &[&str]) -> Loaded {
    load_text(text, overrides).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_typo_in_a_plugins_parameters_names_line_column_path_valid_keys_and_the_suggestion() {
    let text = format!("{BASE}augment:\n  train:\n    - hflip: {{pp: 0.5}}\n");
    assert_eq!(error(&text, &[]), "p.yaml:11:15: augment.train[0].hflip.pp: unknown key `pp` for augment `hflip`; valid keys: p (did you mean `p`?)");

    // The same through the CLI: `rifle validate` prints it and exits non-zero.
    let (dir, _) = pipeline(&text);
    let out = rifle(dir.path(), &args(&["validate", "p.yaml"]), &[]);
    assert_eq!(exit_code(&out), 1);
    assert_eq!(stderr(&out), "error: p.yaml:11:15: augment.train[0].hflip.pp: unknown key `pp` for augment `hflip`; valid keys: p (did you mean `p`?)\n");

    // Inside a strategy from a dynamic library.
    let lib = plugin_lib("rifle_label_smoothing");
    let text = format!("{BASE}plugins: [{}]\nstrategies:\n  - label_smoothing:\n      epsilonn: 0.1\n", lib.display());
    assert_eq!(
        error(&text, &[]),
        "p.yaml:12:7: strategies[0].label_smoothing.epsilonn: unknown key `epsilonn` for strategy `label_smoothing`; valid keys: epsilon (did you mean `epsilon`?)"
    );
}

#[test]
fn unknown_keys_list_the_valid_ones_and_suggest_the_closest() {
    let e = error(&format!("{BASE}epoch: 3\n"), &[]);
    assert!(e.starts_with("p.yaml:9:1: epoch: unknown key `epoch`; valid keys: extends, name, seed, device, threads, epochs,"), "{e}");
    assert!(e.ends_with("(did you mean `epochs`?)"), "{e}");

    let e = error(&BASE.replace("  lr: 0.1\n", "  lr: 0.1\n  momentun: 0.9\n"), &[]);
    assert_eq!(e, "p.yaml:9:3: optimizer.momentun: unknown key `momentun`; valid keys: algorithm, lr, momentum, nesterov, betas, eps, weight_decay, groups (did you mean `momentum`?)");

    // A sweep file given where a pipeline goes says what it is.
    let e = error("base: mock.yaml\naxes: []\n", &[]);
    assert!(e.starts_with("p.yaml:1:1: base: unknown key `base`; valid keys: extends,"), "{e}");
    assert!(e.ends_with("(this looks like a sweep file: run it with `rifle sweep`, which checks every run before the first starts)"), "{e}");

    // A plugin name is checked like a key.
    let e = error(&BASE.replace("  resnet: {", "  resnett: {"), &[]);
    assert_eq!(e, "p.yaml:4:3: backbone: unknown backbone plugin `resnett`; did you mean `resnet`? backbone plugins are: mlp, resnet");
}

#[test]
fn integer_fields_refuse_floats() {
    let e = error(&BASE.replace("epochs: 1", "epochs: 2.0"), &[]);
    assert!(e.starts_with("p.yaml:1:9: epochs: invalid type: floating point `2"), "{e}");
    assert!(e.ends_with("expected a non-negative integer (this key takes an integer)"), "{e}");
    assert_eq!(error(&BASE.replace("classes: 4", "classes: 4.0"), &[]), "p.yaml:6:19: dataset.mock.classes: expected an integer, found the float 4.0");
    // An exponent makes a float, even when its value is whole.
    assert_eq!(error(&BASE.replace("classes: 4", "classes: 1e1"), &[]), "p.yaml:6:19: dataset.mock.classes: expected an integer, found the float 10.0");
}

#[test]
fn a_quoted_number_where_a_number_is_expected_is_an_error() {
    assert_eq!(error(&BASE.replace("lr: 0.1", "lr: \"0.1\""), &[]), "p.yaml:8:7: optimizer.lr: invalid type: string \"0.1\", expected a number (numbers must not be quoted)");
    assert_eq!(error(&BASE.replace("epochs: 1", "epochs: '3'"), &[]), "p.yaml:1:9: epochs: invalid type: string \"3\", expected a non-negative integer (numbers must not be quoted)");
    assert_eq!(
        error(&BASE.replace("size: 16", "size: \"16\""), &[]),
        "p.yaml:6:47: dataset.mock.size: expected an integer, found the string \"16\" (numbers must not be quoted)"
    );
    // A word is not a quoted number: no such hint.
    assert_eq!(error(&BASE.replace("epochs: 1", "epochs: many"), &[]), "p.yaml:1:9: epochs: invalid type: string \"many\", expected a non-negative integer");
}

#[test]
fn yaml_1_1_booleans_are_strings_an_error_where_a_bool_is_expected_and_accepted_where_a_string_is() {
    let e = error(&BASE.replace("  lr: 0.1\n", "  lr: 0.1\n  momentum: 0.9\n  nesterov: on\n"), &[]);
    assert_eq!(e, "p.yaml:10:13: optimizer.nesterov: invalid type: string \"on\", expected a boolean (YAML 1.2 reads yes/no/on/off as strings: write true or false)");
    let e = error(&format!("{BASE}data: {{drop_last: no}}\n"), &[]);
    assert_eq!(e, "p.yaml:9:19: data.drop_last: invalid type: string \"no\", expected a boolean (YAML 1.2 reads yes/no/on/off as strings: write true or false)");
    let e = error(&BASE.replace("width: 0.25}", "width: 0.25, conv_bias: yes}"), &[]);
    assert_eq!(e, "p.yaml:4:52: backbone.resnet.conv_bias: expected a bool (true or false), found the string \"yes\" (YAML 1.2 reads it as a string: write true)");

    // Where a string is expected, `no` is the string "no" (YAML 1.2), not false.
    let loaded = ok(&format!("{BASE}name: no\n"), &[]);
    assert_eq!(loaded.pipeline.name, "no");
    // A choice of strings does not list `no`: an error that lists the choices.
    let e = error(&format!("{BASE}data: {{exif: no}}\n"), &[]);
    assert_eq!(e, "p.yaml:9:14: data.exif: unknown variant `no`, expected `apply` or `ignore`");
}

#[test]
fn numbers_in_exponent_form_are_floats() {
    for (text, value) in [("1e-4", 1e-4), ("1.0e-4", 1e-4), ("1E-4", 1e-4), ("2.5e-3", 2.5e-3), ("1e+2", 100.0), ("5e3", 5000.0)] {
        let loaded = ok(&BASE.replace("lr: 0.1", &format!("lr: {text}")), &[]);
        assert_eq!(loaded.pipeline.optimizer.lr, value, "lr: {text}");
    }
    let loaded = ok(&BASE.replace("size: 16", "size: 16, noise: 5e-1"), &[]);
    assert_eq!(loaded.plugins.dataset.params.values["noise"], Value::Float(0.5));
    // The resolved pipeline writes small numbers in exponent form; they read back as the same floats.
    assert!(loaded.resolved.contains("eps: 1e-8"), "{}", loaded.resolved);
    let (_dir, path) = pipeline(&loaded.resolved);
    assert_eq!(load(&path, &[], &[]).unwrap().pipeline.optimizer.eps, 1e-8);
}

#[test]
fn duplicate_keys_are_errors_at_the_second_one() {
    assert_eq!(
        error(&format!("{BASE}epochs: 3\n"), &[]),
        "p.yaml:9:1: epochs: duplicate key: already set at p.yaml:1:1 (a key may appear once per mapping)"
    );
    assert_eq!(
        error(&BASE.replace("  lr: 0.1\n", "  lr: 0.1\n  lr: 0.2\n"), &[]),
        "p.yaml:9:3: optimizer.lr: duplicate key: already set at p.yaml:8:3 (a key may appear once per mapping)"
    );
    assert_eq!(
        error(&BASE.replace("classes: 4,", "classes: 4, classes: 5,"), &[]),
        "p.yaml:6:22: dataset.mock.classes: duplicate key: already set at p.yaml:6:10 (a key may appear once per mapping)"
    );
}

const ANCHORS: &str = "\
x-crop: &crop
  size: 8
epochs: 1
batch_size: 4
backbone:
  resnet: {arch: resnet18, width: 0.25}
dataset:
  mock: {classes: 4, train: 8, test: 4, size: 16}
x-sgd: &sgd
  lr: 0.1
  momentum: 0.9
optimizer:
  <<: *sgd
  lr: 0.5
augment:
  train:
    - random_crop: *crop
  eval:
    - center_crop:
        <<: *crop
        size: 12
";

#[test]
fn anchors_and_merge_keys_with_explicit_keys_winning() {
    let loaded = ok(ANCHORS, &[]);
    assert_eq!(loaded.pipeline.optimizer.lr, 0.5, "the explicit key overrides the merged one");
    assert_eq!(loaded.pipeline.optimizer.momentum, 0.9, "merged");
    assert_eq!(loaded.plugins.augment_train[0].params.values["size"], Value::Int(8));
    assert_eq!(loaded.plugins.augment_eval[0].params.values["size"], Value::Int(12));
    // `x-` keys only hold anchors: they are not in the resolved pipeline.
    assert!(!loaded.resolved.contains("x-crop") && !loaded.resolved.contains("x-sgd"), "{}", loaded.resolved);

    // A mistake inside anchored content is reported where the anchor defines it, for each use.
    let e = error(&ANCHORS.replace("  size: 8\n", "  size: 8\n  sizee: 3\n"), &[]);
    assert_eq!(
        e,
        "p.yaml:3:3: augment.train[0].random_crop.sizee: unknown key `sizee` for augment `random_crop`; valid keys: size (did you mean `size`?)\n\
         p.yaml:3:3: augment.eval[0].center_crop.sizee: unknown key `sizee` for augment `center_crop`; valid keys: size (did you mean `size`?)"
    );
    // A wrong value in merged content: located at the anchor; the explicit override is checked where written.
    let e = error(&ANCHORS.replace("  momentum: 0.9", "  momentum: high"), &[]);
    assert_eq!(e, "p.yaml:11:13: optimizer.momentum: invalid type: string \"high\", expected a number");
    // Other top-level keys stay errors.
    assert!(error(&format!("y-crop: 1\n{ANCHORS}"), &[]).starts_with("p.yaml:1:1: y-crop: unknown key `y-crop`"));
}

#[test]
fn extends_merges_a_base_and_reports_cycles_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let base = write_file(dir.path(), "base.yaml", &format!("{BASE}augment:\n  train: [hflip]\n  eval: [{{center_crop: {{size: 8}}}}]\n").replace("  lr: 0.1\n", "  lr: 0.1\n  momentum: 0.9\n"));
    let child = write_file(dir.path(), "grid/child.yaml", "extends: ../base.yaml\nepochs: 3\noptimizer: {lr: 0.01}\naugment: {train: [{random_crop: {size: 12}}]}\n");
    let loaded = load(&child, &[], &[]).unwrap_or_else(|e| panic!("{e}"));
    let p = &loaded.pipeline;
    assert_eq!((p.epochs, p.batch_size, p.optimizer.lr, p.optimizer.momentum), (3, 4, 0.01, 0.9), "mappings merge key by key");
    assert_eq!(loaded.plugins.augment_train.len(), 1, "lists are replaced, not appended");
    assert_eq!(loaded.plugins.augment_train[0].name(), "random_crop");
    assert_eq!(loaded.plugins.augment_eval[0].name(), "center_crop", "untouched keys come from the base");
    assert!(!loaded.resolved.contains("extends"));

    // Errors point into the file that wrote the key.
    let typo = write_file(dir.path(), "typo.yaml", "extends: base.yaml\noptimizer: {lrr: 0.01}\n");
    let e = load(&typo, &[], &[]).err().unwrap().to_string();
    assert!(e.starts_with(&format!("{}:2:13: optimizer.lrr: unknown key `lrr`", typo.display())), "{e}");
    let bad_base = write_file(dir.path(), "bad_base.yaml", &BASE.replace("lr: 0.1", "lr: fast"));
    let extends_bad = write_file(dir.path(), "extends_bad.yaml", "extends: bad_base.yaml\nepochs: 2\n");
    let e = load(&extends_bad, &[], &[]).err().unwrap().to_string();
    assert_eq!(e, format!("{}:8:7: optimizer.lr: invalid type: string \"fast\", expected a number", bad_base.display()));

    let a = write_file(dir.path(), "a.yaml", "extends: b.yaml\nepochs: 2\n");
    let b = write_file(dir.path(), "b.yaml", "extends: a.yaml\n");
    let e = load(&a, &[], &[]).err().unwrap().to_string();
    let (a, b) = (a.canonicalize().unwrap(), b.canonicalize().unwrap());
    assert_eq!(e, format!("{}:1:10: extends: `extends` forms a cycle: {} -> {} -> {}", b.display(), a.display(), b.display(), a.display()));

    let missing = write_file(dir.path(), "missing.yaml", "extends: nope.yaml\nepochs: 2\n");
    let e = load(&missing, &[], &[]).err().unwrap().to_string();
    assert_eq!(e, format!("{}:1:10: extends: extended file {} does not exist", missing.display(), dir.path().join("nope.yaml").display()));
    let _ = base;
}

#[test]
fn set_overrides_are_typed_like_the_file() {
    let mock = std::fs::read_to_string(mock_pipeline()).unwrap();
    let loaded = ok(&mock, &["optimizer.lr=1e-3", "epochs=3", "augment.train[0].hflip.p=0.25", "dataset.mock.noise=0", "name=no"]);
    assert_eq!((loaded.pipeline.optimizer.lr, loaded.pipeline.epochs), (1e-3, 3));
    assert_eq!(loaded.plugins.augment_train[0].params.values["p"], Value::Float(0.25));
    assert_eq!(loaded.plugins.dataset.params.values["noise"], Value::Float(0.0), "an integer is accepted where a float is expected");
    assert_eq!(loaded.pipeline.name, "no");

    let cases = [
        ("epochs=3.5", "--set epochs=3.5: epochs: invalid type: floating point `3.5`, expected a non-negative integer (this key takes an integer)"),
        ("optimizer.lr=\"0.1\"", "--set optimizer.lr=\"0.1\": optimizer.lr: invalid type: string \"0.1\", expected a number (numbers must not be quoted)"),
        (
            "data.drop_last=no",
            "--set data.drop_last=no: data.drop_last: invalid type: string \"no\", expected a boolean (YAML 1.2 reads yes/no/on/off as strings: write true or false)",
        ),
        (
            "backbone.resnet.widht=0.5",
            "--set backbone.resnet.widht=0.5: backbone.resnet.widht: unknown key `widht` for backbone `resnet`; valid keys: arch, width, stem_width, stride_on_1x1, conv_bias, maxpool_ceil (did you mean `width`?)",
        ),
        ("dataset.mock.size=1e1", "--set dataset.mock.size=1e1: dataset.mock.size: expected an integer, found the float 10.0"),
        ("strategies[2].x=1", "--set strategies[2].x=1: strategies[2]: index 2 is past the end of a list of 0"),
        ("epochs.x=1", "--set epochs.x=1: epochs.x: cannot set a key inside the integer 4"),
        ("a..b=1", "--set a..b=1: a..b: not a key path (write it like `optimizer.lr` or `strategies[0].rifle.reinits`)"),
        ("epochs", "--set epochs: expected KEY.PATH=VALUE"),
        ("optimizer.lr=[1", "--set optimizer.lr=[1: optimizer.lr: the value is not valid YAML: did not find expected ',' or ']'"),
    ];
    for (arg, want) in cases {
        assert_eq!(error(&mock, &[arg]), want, "--set {arg}");
    }
    // A key the override creates is reported at the command line, not somewhere in the file.
    assert!(error(&mock, &["optimiser.lr=0.1"]).starts_with("--set optimiser.lr=0.1: optimiser: unknown key `optimiser`; valid keys:"));
    // Replacing a subtree: errors inside the new value point at the command line.
    let e = error(&mock, &["backbone={resnet: {arch: resnet34, wdth: 1}}"]);
    assert!(e.starts_with("--set backbone={resnet: {arch: resnet34, wdth: 1}}: backbone.resnet.wdth: unknown key `wdth`"), "{e}");
}

#[test]
fn every_unset_variable_is_named_at_once() {
    let text = "epochs: 1\nbatch_size: 4\nbackbone: {resnet: {arch: resnet18}}\nweights: {path: \"${RIFLE_TEST_UNSET_W}/w.pth\"}\ndataset:\n  image_folder: {train: \"${RIFLE_TEST_UNSET_D}/train\", test: \"${RIFLE_TEST_UNSET_D}/test\"}\noptimizer: {lr: 0.1}\n";
    assert_eq!(
        error(text, &[]),
        "p.yaml:6:25: dataset.image_folder.train: `${RIFLE_TEST_UNSET_D}/train`: environment variable `RIFLE_TEST_UNSET_D` is not set\n\
         p.yaml:6:62: dataset.image_folder.test: `${RIFLE_TEST_UNSET_D}/test`: environment variable `RIFLE_TEST_UNSET_D` is not set\n\
         p.yaml:4:17: weights.path: `${RIFLE_TEST_UNSET_W}/w.pth`: environment variable `RIFLE_TEST_UNSET_W` is not set"
    );
}

#[test]
fn relative_paths_are_relative_to_the_file_that_writes_them() {
    let dir = tempfile::tempdir().unwrap();
    rifle_tests::image_folder(&dir.path().join("sets/data/train"), &["a", "b"], 1, 8);
    rifle_tests::image_folder(&dir.path().join("sets/data/test"), &["a", "b"], 1, 8);
    let text = BASE.replace("  mock: {classes: 4, train: 8, test: 4, size: 16}", "  image_folder: {train: data/train, test: data/test}");
    let path = write_file(dir.path(), "sets/p.yaml", &text);
    // Loaded from elsewhere (the tests run in the crate folder), the paths still mean sets/data/...
    let loaded = load(&path, &[], &[]).unwrap_or_else(|e| panic!("{e}"));
    let train = &loaded.plugins.dataset.params.values["train"];
    assert_eq!(*train, Value::Str(dir.path().join("sets/data/train").display().to_string()));
    let e = load(&path, &["dataset.image_folder.test=elsewhere".into()], &[]).err().unwrap().to_string();
    assert_eq!(e, format!("--set dataset.image_folder.test=elsewhere: dataset.image_folder.test: {} does not exist", std::env::current_dir().unwrap().join("elsewhere").display()));
}

#[test]
fn the_resolved_pipeline_runs_again_to_the_same_result() {
    let first = tempfile::tempdir().unwrap();
    train(&mock_pipeline(), TINY, first.path()).unwrap();
    let resolved = first.path().join("pipeline.yaml");
    let text = std::fs::read_to_string(&resolved).unwrap();
    for filled in ["threads: 1", "noise: 0.6", "unit: step", "on_bad_image: error", "checkpoint_every: 1"] {
        assert!(text.contains(filled), "the resolved pipeline lacks `{filled}`:\n{text}");
    }

    let second = tempfile::tempdir().unwrap();
    train(&resolved, &[], second.path()).unwrap();
    assert_eq!(std::fs::read_to_string(second.path().join("pipeline.yaml")).unwrap(), text, "resolving is idempotent");
    let ckpt = |d: &Path| d.join("checkpoints/final.safetensors");
    assert_same_tensors(&ckpt(first.path()), &ckpt(second.path()));
    assert_eq!(metrics_without_timings(first.path()), metrics_without_timings(second.path()));
}

#[test]
fn amp_takes_off_fp16_or_bf16_and_nothing_else() {
    let amp = |v: &str| ok(&format!("{BASE}amp: {v}\n"), &[]).pipeline.amp;
    assert_eq!([amp("off"), amp("fp16"), amp("bf16")], [Amp::Off, Amp::Fp16, Amp::Bf16]);
    let e = error(&format!("{BASE}amp: fp8\n"), &[]);
    assert_eq!(e.lines().next().unwrap().split(": ").take(2).collect::<Vec<_>>(), ["p.yaml:9:6", "amp"], "{e}");
}

#[test]
fn optimizer_values_out_of_range_are_errors() {
    let e = error(&BASE.replace("  lr: 0.1\n", "  lr: 0.1\n  weight_decay: -1\n  groups: {backbone: {lr_mult: -1}}\n"), &[]);
    assert!(e.contains("p.yaml:9:17: optimizer.weight_decay: must be a non-negative number, found -1"), "{e}");
    assert!(e.contains("optimizer.groups.backbone.lr_mult: must be a non-negative number (0 freezes the group), found -1"), "{e}");
    let e = error(BASE, &["optimizer.betas=[2, 0.9]", "optimizer.eps=0"]);
    assert!(e.contains("optimizer.betas[0]: must be in [0, 1), found 2") && e.contains("optimizer.eps: must be a positive number, found 0"), "{e}");
}
