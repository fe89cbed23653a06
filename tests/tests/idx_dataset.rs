//! The `idx` dataset plugin on small generated IDX files: labels, fixed subsets, resizing, gray to RGB, and
//! errors that name the file.
use rifle_core::data::{Input, Target, Task};
use rifle_core::plugin::{Dataset, Split};
use rifle_core::registry::Built;
use rifle_tests::{gzip, idx, write_file, write_idx_split};
use std::path::Path;

/// `<dir>/<name>-images` and `<dir>/<name>-labels`.
fn split(dir: &Path, name: &str, n: u32, compress: bool) {
    write_idx_split(&dir.join(format!("{name}-images")), &dir.join(format!("{name}-labels")), n, compress);
}

fn build(dir: &Path, params: &str) -> anyhow::Result<Box<dyn Dataset>> {
    let d = dir.display();
    let yaml = format!(
        "epochs: 1\nbatch_size: 2\nbackbone: {{resnet: {{arch: resnet18}}}}\noptimizer: {{lr: 0.1}}\n\
         dataset:\n  idx: {{train_images: {d}/train-images, train_labels: {d}/train-labels, test_images: {d}/test-images, test_labels: {d}/test-labels, {params}}}\n"
    );
    let pipeline = write_file(dir, "p.yaml", &yaml);
    let loaded = rifle_core::cli::load(&pipeline, &[], &[])?;
    match loaded.plugins.dataset.build()? {
        Built::Dataset(d) => Ok(d),
        _ => panic!("not a dataset"),
    }
}

/// (pixel value, label, width, height) of every sample of a split; checks each image is a constant gray.
fn samples(d: &dyn Dataset, split: Split) -> Vec<(u8, usize, u32, u32)> {
    let s = d.split(split).unwrap();
    (0..s.len())
        .map(|i| {
            let sample = s.load(i).unwrap();
            let (Input::Image(img), Target::Class(c)) = (sample.input, sample.target) else { panic!("not an image sample") };
            let p = img.get_pixel(0, 0).0;
            assert!(p[0] == p[1] && p[1] == p[2], "gray is replicated to RGB");
            assert!(img.pixels().all(|q| q.0 == p), "a constant image stays constant");
            (p[0], c, img.width(), img.height())
        })
        .collect()
}

#[test]
fn reads_gzip_and_raw_idx_with_labels_and_names() {
    let dir = tempfile::tempdir().unwrap();
    split(dir.path(), "train", 9, true);
    split(dir.path(), "test", 6, false);
    let d = build(dir.path(), "classes: [a, b, c]").unwrap();
    assert_eq!(d.task(), Task::Classify { classes: vec!["a".into(), "b".into(), "c".into()] });
    let train = samples(d.as_ref(), Split::Train);
    assert_eq!(train.len(), 9);
    for (i, (value, label, w, h)) in train.into_iter().enumerate() {
        assert_eq!((value, label, w, h), (i as u8, i % 3, 3, 4));
    }
    assert_eq!(samples(d.as_ref(), Split::Test).len(), 6);
    // Without `classes`, the names are the label numbers.
    let d = build(dir.path(), "size: 0").unwrap();
    assert_eq!(d.task(), Task::Classify { classes: vec!["0".into(), "1".into(), "2".into()] });
}

#[test]
fn subsets_are_fixed_and_stratified_and_images_are_resized() {
    let dir = tempfile::tempdir().unwrap();
    split(dir.path(), "train", 30, true);
    split(dir.path(), "test", 20, true);
    let params = "per_class: 4, test_subset: 7, size: 8";
    let first = samples(build(dir.path(), params).unwrap().as_ref(), Split::Train);
    assert_eq!(first.len(), 12);
    for class in 0..3 {
        assert_eq!(first.iter().filter(|s| s.1 == class).count(), 4, "class {class}");
    }
    // Each sample keeps its own label (value mod 3) and is resized to 8x8.
    assert!(first.iter().all(|&(v, c, w, h)| v as usize % 3 == c && (w, h) == (8, 8)));
    let values: std::collections::BTreeSet<u8> = first.iter().map(|s| s.0).collect();
    assert_eq!(values.len(), 12, "no image is drawn twice");
    let test = samples(build(dir.path(), params).unwrap().as_ref(), Split::Test);
    assert_eq!(test.len(), 7);
    // The same draw every time; another subset seed draws another subset.
    assert_eq!(first, samples(build(dir.path(), params).unwrap().as_ref(), Split::Train));
    let other = samples(build(dir.path(), &format!("{params}, subset_seed: 1")).unwrap().as_ref(), Split::Train);
    assert_ne!(first, other);
}

#[test]
fn bad_files_are_errors_that_name_them() {
    let dir = tempfile::tempdir().unwrap();
    split(dir.path(), "train", 6, false);
    split(dir.path(), "test", 3, false);
    let err = |params: &str| format!("{:#}", build(dir.path(), params).err().expect("an error"));

    let e = err("per_class: 3");
    assert!(e.contains("fewer than per_class 3"), "{e}");
    let e = err("classes: [a, b]");
    assert!(e.contains("label 2") && e.contains("2 classes"), "{e}");

    std::fs::write(dir.path().join("test-labels"), idx(&[2], &[0, 1])).unwrap();
    let e = err("size: 0");
    assert!(e.contains("test-images has 3 images but") && e.contains("test-labels has 2 labels"), "{e}");

    std::fs::write(dir.path().join("test-labels"), b"PNG not idx").unwrap();
    let e = err("size: 0");
    assert!(e.contains("test-labels: not an IDX file"), "{e}");

    std::fs::write(dir.path().join("test-labels"), &idx(&[5], &[0, 1])).unwrap();
    let e = err("size: 0");
    assert!(e.contains("test-labels") && e.contains("need 5 bytes"), "{e}");

    std::fs::write(dir.path().join("test-labels"), &gzip(&idx(&[3], &[0, 1, 2]))[..10]).unwrap();
    let e = err("size: 0");
    assert!(e.contains("test-labels: broken gzip data"), "{e}");
}

#[test]
fn a_label_far_above_the_others_is_refused_unless_the_classes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    split(dir.path(), "test", 3, false);
    // Labels 0, 1, 2, 255: a corrupt byte that would otherwise make a 256-class head.
    std::fs::write(dir.path().join("train-images"), idx(&[4, 4, 3], &[0; 48])).unwrap();
    std::fs::write(dir.path().join("train-labels"), idx(&[4], &[0, 1, 2, 255])).unwrap();
    let e = format!("{:#}", build(dir.path(), "size: 0").err().expect("refused"));
    assert!(e.contains("the labels go up to 255, but label 3 never occurs in") && e.contains("train-labels; is a label file corrupt?"), "{e}");
    let names: Vec<String> = (0..256).map(|c| format!("c{c}")).collect();
    assert!(build(dir.path(), &format!("classes: [{}]", names.join(", "))).is_ok(), "named classes may be unused");
}
