//! Dataset layout (rules in core/src/data/folder.rs): hidden files and folders, notebook checkpoints and
//! stray files are skipped; an empty class folder is an error in training and fine in evaluation; class
//! names with spaces or non-ASCII characters map by their NFC form; evaluation splits map labels by class
//! name (missing or empty classes fine, extra ones an error); CSV lists accept a BOM and CRLF; a label the
//! head cannot represent is rejected before the step that would use it, naming the sample.
use anyhow::Result;
use rifle_core::config::load;
use rifle_core::data::folder::{csv_split, folder_split};
use rifle_core::data::{check_index, Sample, Task};
use rifle_core::engine::Trainer;
use rifle_core::plugin::{Dataset, Samples, Split};
use rifle_core::{register_plugin, Built, Kind, Param, Params};
use rifle_tests::{image_folder, write_file, write_rgb};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn rel(root: &Path, files: &[(PathBuf, usize)]) -> Vec<(String, usize)> {
    files.iter().map(|(p, l)| (p.strip_prefix(root).unwrap().display().to_string(), *l)).collect()
}

fn err<T>(r: Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

fn png(path: &Path) {
    write_rgb(path, 4, 4, |_, _| [1, 2, 3]);
}

#[test]
fn hidden_files_notebook_checkpoints_and_stray_files_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train");
    for f in ["a/0.png", "a/1.JPG", "a/.hidden.png", "a/.ipynb_checkpoints/0-checkpoint.png", "b/0.png", "b/more/1.png", ".ipynb_checkpoints/a/x.png", "__MACOSX/a/._0.png", ".trash/c/0.png"] {
        png(&train.join(f));
    }
    for f in ["README.txt", ".DS_Store", "a/notes.txt", "b/labels.csv"] {
        write_file(&train, f, "not an image");
    }
    let (classes, files) = folder_split(&train, None).unwrap();
    assert_eq!(classes, ["a", "b"]);
    assert_eq!(rel(&train, &files), [("a/0.png".into(), 0), ("a/1.JPG".into(), 0), ("b/0.png".into(), 1), ("b/more/1.png".into(), 1)]);
}

#[test]
fn an_empty_class_folder_is_an_error_in_training_and_fine_in_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let train = image_folder(&dir.path().join("train"), &["a", "b"], 1, 4);
    std::fs::create_dir_all(train.join("c/.ipynb_checkpoints")).unwrap();
    png(&train.join("c/.ipynb_checkpoints/0-checkpoint.png"));
    write_file(&train, "c/notes.txt", "only notes here");
    assert_eq!(err(folder_split(&train, None)), format!("{}: class folder `c` has no images; remove it or add images", train.join("c").display()));

    let test = image_folder(&dir.path().join("test"), &["a"], 2, 4);
    std::fs::create_dir_all(test.join("b")).unwrap();
    let classes = ["a".to_string(), "b".to_string(), "c".to_string()];
    let (names, files) = folder_split(&test, Some(&classes)).unwrap();
    assert_eq!(names, classes, "evaluation keeps the training label map");
    assert_eq!(rel(&test, &files), [("a/0.png".into(), 0), ("a/1.png".into(), 0)]);
}

#[test]
fn class_names_with_spaces_and_non_ascii_map_by_their_nfc_form() {
    let dir = tempfile::tempdir().unwrap();
    let (nfc, nfd) = ("Caf\u{e9}", "Cafe\u{301}");
    let train = image_folder(&dir.path().join("train"), &[nfc, "red fox"], 1, 4);
    let test = image_folder(&dir.path().join("test"), &[nfd, "red fox"], 1, 4);
    let (classes, _) = folder_split(&train, None).unwrap();
    assert_eq!(classes, [nfc, "red fox"]);
    let (_, files) = folder_split(&test, Some(&classes)).unwrap();
    assert_eq!(rel(&test, &files), [(format!("{nfd}/0.png"), 0), ("red fox/0.png".into(), 1)], "the NFD folder is the NFC class");

    // Both spellings side by side in one split are one class written twice: an error, not two classes.
    png(&train.join(nfd).join("0.png"));
    let e = err(folder_split(&train, None));
    assert!(e.contains(&format!("are the same class name `{nfc}` after Unicode normalisation")), "{e}");

    // CSV labels too.
    let root = dir.path();
    let train_csv = write_file(root, "train.csv", &format!("path,label\ntrain/{nfc}/0.png,{nfc}\ntrain/red fox/0.png,red fox\n"));
    let test_csv = write_file(root, "test.csv", &format!("path,label\ntest/{nfd}/0.png,{nfd}\n"));
    let (classes, _) = csv_split(&train_csv, root, None).unwrap();
    assert_eq!(classes, [nfc, "red fox"]);
    assert_eq!(csv_split(&test_csv, root, Some(&classes)).unwrap().1, [(root.join(format!("test/{nfd}/0.png")), 0)]);
}

#[test]
fn evaluation_splits_map_labels_by_class_name_and_refuse_extra_classes() {
    let dir = tempfile::tempdir().unwrap();
    let train = image_folder(&dir.path().join("train"), &["a", "b", "c"], 1, 4);
    let (classes, _) = folder_split(&train, None).unwrap();
    let missing_b = image_folder(&dir.path().join("test"), &["a", "c"], 1, 4);
    assert_eq!(rel(&missing_b, &folder_split(&missing_b, Some(&classes)).unwrap().1), [("a/0.png".into(), 0), ("c/0.png".into(), 2)]);

    let extra = image_folder(&dir.path().join("other"), &["a", "d", "e"], 1, 4);
    assert_eq!(
        err(folder_split(&extra, Some(&classes))),
        format!("{}: class folder(s) `d`, `e` exist here but not in the training split; labels map by class name, so this split cannot be evaluated", extra.display())
    );
}

#[test]
fn csv_lists_accept_a_bom_and_crlf_and_refuse_labels_training_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let train_csv = write_file(root, "train.csv", "\u{feff}path,label\r\nimgs/0.png,dog\r\nimgs/1.png,cat\r\n\"imgs/2, copy.png\",dog\r\n");
    let (classes, files) = csv_split(&train_csv, root, None).unwrap();
    assert_eq!(classes, ["cat", "dog"]);
    assert_eq!(files, [(root.join("imgs/0.png"), 1), (root.join("imgs/1.png"), 0), (root.join("imgs/2, copy.png"), 1)]);

    let test_csv = write_file(root, "test.csv", "path,label\r\nimgs/3.png,cat\r\nimgs/4.png,bird\r\n");
    assert_eq!(err(csv_split(&test_csv, root, Some(&classes))), format!("{}:3: label `bird` is not a class of the training split", test_csv.display()));

    // Integer labels: classes 0..=max of the training split; a larger label in evaluation is refused.
    let numeric = write_file(root, "n_train.csv", "path,label\na.png,0\nb.png,2\n");
    let (classes, _) = csv_split(&numeric, root, None).unwrap();
    assert_eq!(classes, ["0", "1", "2"]);
    let beyond = write_file(root, "n_test.csv", "path,label\nc.png,3\n");
    assert_eq!(err(csv_split(&beyond, root, Some(&classes))), format!("{}:2: label `3` is not a class of the training split", beyond.display()));
}

const PARAMS: &[Param] = &[Param::choice("lie", "class_of", &["class_of", "load"], "where sample 5's label 9 shows up")];

register_plugin! {
    name: "bad_labels",
    kind: Kind::Dataset,
    doc: "test fixture: 4 classes, but sample 5 has label 9",
    params: PARAMS,
    example: "{lie: class_of}",
    build: build,
}

fn build(p: &Params) -> Result<Built> {
    Ok(Built::Dataset(Box::new(BadLabels { known: p.str("lie")? == "class_of" })))
}

#[derive(Clone)]
struct BadLabels {
    /// Whether the label is known without loading (`class_of`) or only from `load`.
    known: bool,
}

impl BadLabels {
    fn label(index: usize) -> usize {
        if index == 5 {
            9
        } else {
            index % 4
        }
    }
}

impl Dataset for BadLabels {
    fn task(&self) -> Task {
        Task::Classify { classes: (0..4).map(|c| c.to_string()).collect() }
    }
    fn split(&self, _split: Split) -> Result<Arc<dyn Samples>> {
        Ok(Arc::new(self.clone()))
    }
}

impl Samples for BadLabels {
    fn len(&self) -> usize {
        16
    }
    fn load(&self, index: usize) -> Result<Sample> {
        check_index(index, 16, "bad")?;
        Ok(Sample::image(image::RgbImage::new(8, 8), Self::label(index)))
    }
    fn describe(&self, index: usize) -> String {
        format!("bad[{index}]")
    }
    fn class_of(&self, index: usize) -> Option<usize> {
        self.known.then(|| Self::label(index))
    }
}

#[test]
fn labels_beyond_the_head_are_rejected_before_they_are_trained_on() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write_file(
        dir.path(),
        "p.yaml",
        "epochs: 1\nbatch_size: 4\nthreads: 1\ndevice: cpu\nbackbone: {resnet: {arch: resnet18, width: 0.125}}\ndataset: {bad_labels: {lie: class_of}}\noptimizer: {lr: 0.1}\n",
    );
    // Known labels: checked when the run is built, before any step.
    let loaded = load(&pipeline, &[], &[]).unwrap();
    let e = err(Trainer::build(&loaded, &dir.path().join("a"), false));
    assert_eq!(e, "dataset `bad_labels`, training split: bad[5]: label 9 is out of range: the head has 4 classes (labels 0..=3)");
    assert!(!dir.path().join("a/pipeline.yaml").exists(), "nothing of the run was written");

    // Labels known only once loaded: checked as each batch is made, before the step that would use it.
    let loaded = load(&pipeline, &["dataset.bad_labels.lie=load".into()], &[]).unwrap();
    let mut trainer = Trainer::build(&loaded, &dir.path().join("b"), false).unwrap();
    let e = err(trainer.fit(&std::sync::atomic::AtomicBool::new(false), None));
    assert!(e.contains("bad[5]: label 9 is out of range: the head has 4 classes (labels 0..=3)"), "{e}");
    assert!(e.contains("no checkpoint had been written yet"), "{e}");
}
