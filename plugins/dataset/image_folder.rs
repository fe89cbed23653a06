//! An ImageFolder dataset: `train` and `test` folders with one sub-folder per class (rules in
//! `core/src/data/folder.rs`).
use crate::data::decode::DecodeRules;
use crate::data::folder::{folder_split, FileSamples};
use crate::data::Task;
use crate::params::{Param, Params};
use crate::plugin::{Dataset, Samples, Split};
use crate::registry::{Built, Kind};
use anyhow::Result;
use std::path::PathBuf;
use std::sync::Arc;

const PARAMS: &[Param] = &[
    Param::path("train", "training split: a folder with one sub-folder per class"),
    Param::path("test", "evaluation split, same layout; labels map by class name"),
    Param::ints("background", &[255, 255, 255], "RGB that transparent pixels are composited over"),
    Param::choice("exif", "apply", &["apply", "ignore"], "EXIF orientation of JPEGs: apply it (as a viewer shows the photo) or ignore it"),
];

crate::register_plugin! {
    name: "image_folder",
    kind: Kind::Dataset,
    doc: "images in class sub-folders (torchvision ImageFolder layout)",
    params: PARAMS,
    example: "{train: data/train, test: data/test}",
    build: build,
}

pub fn decode_rules(p: &Params) -> Result<DecodeRules> {
    let bg = p.ints("background")?;
    anyhow::ensure!(bg.len() == 3 && bg.iter().all(|v| (0..=255).contains(v)), "{}: `background` must be three values in 0..=255", p.origin);
    let exif = if p.str("exif")? == "ignore" { crate::data::decode::ExifPolicy::Ignore } else { crate::data::decode::ExifPolicy::Apply };
    Ok(DecodeRules { background: [bg[0] as u8, bg[1] as u8, bg[2] as u8], exif })
}

struct ImageFolder {
    classes: Vec<String>,
    train: Vec<(PathBuf, usize)>,
    test: PathBuf,
    rules: DecodeRules,
}

fn build(p: &Params) -> Result<Built> {
    let (classes, train) = folder_split(&p.path("train")?, None)?;
    Ok(Built::Dataset(Box::new(ImageFolder { classes, train, test: p.path("test")?, rules: decode_rules(p)? })))
}

impl Dataset for ImageFolder {
    fn task(&self) -> Task {
        Task::Classify { classes: self.classes.clone() }
    }
    fn split(&self, split: Split) -> Result<Arc<dyn Samples>> {
        let files = match split {
            Split::Train => self.train.clone(),
            Split::Test => folder_split(&self.test, Some(&self.classes))?.1,
        };
        Ok(Arc::new(FileSamples { files, rules: self.rules.clone() }))
    }
}
