//! Images listed in CSV files (`path,label` with a header; rules in `core/src/data/folder.rs`).
use crate::data::decode::DecodeRules;
use crate::data::folder::{csv_split, FileSamples};
use crate::data::Task;
use crate::params::{Param, Params};
use crate::plugin::{Dataset, Samples, Split};
use crate::registry::{Built, Kind};
use anyhow::Result;
use std::path::PathBuf;
use std::sync::Arc;

const PARAMS: &[Param] = &[
    Param::path("train", "CSV list of the training split"),
    Param::path("test", "CSV list of the evaluation split"),
    Param::path("root", "folder the listed paths are relative to").optional(),
    Param::ints("background", &[255, 255, 255], "RGB that transparent pixels are composited over"),
    Param::choice("exif", "apply", &["apply", "ignore"], "EXIF orientation of JPEGs: apply or ignore"),
];

crate::register_plugin! {
    name: "csv_list",
    kind: Kind::Dataset,
    doc: "images listed in CSV files with `path,label` columns",
    params: PARAMS,
    example: "{train: data/train.csv, test: data/test.csv}",
    build: build,
}

struct CsvList {
    classes: Vec<String>,
    train: Vec<(PathBuf, usize)>,
    test: PathBuf,
    root: PathBuf,
    rules: DecodeRules,
}

fn build(p: &Params) -> Result<Built> {
    let train_csv = p.path("train")?;
    let root = match p.opt_path("root")? {
        Some(r) => r,
        None => train_csv.parent().map(PathBuf::from).unwrap_or_default(),
    };
    let (classes, train) = csv_split(&train_csv, &root, None)?;
    let rules = super::image_folder::decode_rules(p)?;
    Ok(Built::Dataset(Box::new(CsvList { classes, train, test: p.path("test")?, root, rules })))
}

impl Dataset for CsvList {
    fn task(&self) -> Task {
        Task::Classify { classes: self.classes.clone() }
    }
    fn split(&self, split: Split) -> Result<Arc<dyn Samples>> {
        let files = match split {
            Split::Train => self.train.clone(),
            Split::Test => csv_split(&self.test, &self.root, Some(&self.classes))?.1,
        };
        Ok(Arc::new(FileSamples { files, rules: self.rules.clone() }))
    }
}
