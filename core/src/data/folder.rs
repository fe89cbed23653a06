//! Image files on disk: the ImageFolder layout and CSV lists, and the samples they give.
//!
//! Rules (docs/reliability.md): classes are the sorted names of the training split's sub-folders, Unicode
//! NFC-normalised; hidden files and folders (leading `.`, which covers `.ipynb_checkpoints`) and `__MACOSX`
//! are skipped; files without an image extension are skipped and counted; class folders are searched
//! recursively. Evaluation splits map labels by class name: a class missing or empty there is fine, a class
//! that exists only there is an error, and an empty class folder in training is an error.
use super::decode::{decode_file, DecodeRules};
use super::{check_index, Sample};
use crate::plugin::Samples;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use unicode_normalization::UnicodeNormalization;

pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp", "gif", "tif", "tiff", "webp", "ppm", "pgm", "pbm", "pnm", "tga"];

/// Files of a split with their class index.
pub struct FileSamples {
    pub files: Vec<(PathBuf, usize)>,
    pub rules: DecodeRules,
}

impl Samples for FileSamples {
    fn len(&self) -> usize {
        self.files.len()
    }
    fn load(&self, index: usize) -> Result<Sample> {
        check_index(index, self.files.len(), "image list")?;
        let (path, class) = &self.files[index];
        Ok(Sample::image(decode_file(path, &self.rules)?, *class))
    }
    fn describe(&self, index: usize) -> String {
        self.files.get(index).map(|(p, _)| p.display().to_string()).unwrap_or_default()
    }
    fn class_of(&self, index: usize) -> Option<usize> {
        self.files.get(index).map(|(_, class)| *class)
    }
}

pub fn is_hidden(name: &str) -> bool {
    name.starts_with('.') || name == "__MACOSX"
}

pub fn has_image_extension(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

pub fn normalize_class(name: &str) -> String {
    name.nfc().collect()
}

/// The class folders of an ImageFolder split: NFC name → folder, sorted by name.
pub fn class_folders(root: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let entries = std::fs::read_dir(root).with_context(|| format!("cannot read dataset folder {}", root.display()))?;
    let mut classes = BTreeMap::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read dataset folder {}", root.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_hidden(&name) || !entry.path().is_dir() {
            continue;
        }
        let key = normalize_class(&name);
        if let Some(previous) = classes.insert(key.clone(), entry.path()) {
            bail!(
                "{}: class folders `{}` and `{}` are the same class name `{key}` after Unicode normalisation",
                root.display(),
                previous.display(),
                entry.path().display()
            );
        }
    }
    Ok(classes)
}

/// Image files under a folder (recursively), sorted, and how many non-image files were skipped.
pub fn image_files(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let (mut images, mut skipped) = (Vec::new(), Vec::new());
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))? {
            let path = entry.with_context(|| format!("cannot read {}", d.display()))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if is_hidden(&name) {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if has_image_extension(&path) {
                images.push(path);
            } else {
                skipped.push(path);
            }
        }
    }
    images.sort();
    skipped.sort();
    Ok((images, skipped))
}

/// An ImageFolder split. `classes` fixes the label map (from the training split); `None` makes this split
/// the one that defines it.
pub fn folder_split(root: &Path, classes: Option<&[String]>) -> Result<(Vec<String>, Vec<(PathBuf, usize)>)> {
    let folders = class_folders(root)?;
    let names: Vec<String> = match classes {
        Some(known) => {
            let extra: Vec<&String> = folders.keys().filter(|k| !known.contains(k)).collect();
            if !extra.is_empty() {
                bail!(
                    "{}: class folder(s) {} exist here but not in the training split; labels map by class name, so this split cannot be evaluated",
                    root.display(),
                    extra.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
                );
            }
            known.to_vec()
        }
        None => {
            if folders.is_empty() {
                bail!("{}: no class folders (expected one sub-folder per class)", root.display());
            }
            folders.keys().cloned().collect()
        }
    };
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    for (label, name) in names.iter().enumerate() {
        let Some(folder) = folders.get(name) else { continue };
        let (images, other) = image_files(folder)?;
        if images.is_empty() && classes.is_none() {
            bail!("{}: class folder `{name}` has no images; remove it or add images", folder.display());
        }
        files.extend(images.into_iter().map(|p| (p, label)));
        skipped.extend(other);
    }
    if let Some(first) = skipped.first() {
        tracing::warn!("{}: skipped {} file(s) without an image extension (e.g. {})", root.display(), skipped.len(), first.display());
    }
    Ok((names, files))
}

/// A CSV list split: a header row, then `path,label` rows (a UTF-8 BOM and CRLF line ends are accepted).
/// Paths are relative to `root`. Labels are class names; when every training label is a non-negative
/// integer, classes are `0..=max` and labels are those integers.
pub fn csv_split(file: &Path, root: &Path, classes: Option<&[String]>) -> Result<(Vec<String>, Vec<(PathBuf, usize)>)> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read CSV list {}", file.display()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut reader = csv::ReaderBuilder::new().has_headers(true).trim(csv::Trim::All).from_reader(text.as_bytes());
    let headers = reader.headers().with_context(|| format!("{}: cannot read the header row", file.display()))?.clone();
    let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (Some(path_col), Some(label_col)) = (column("path"), column("label")) else {
        bail!("{}: the header row must name the columns `path` and `label` (found: {})", file.display(), headers.iter().collect::<Vec<_>>().join(", "));
    };
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = record.with_context(|| format!("{}:{line}: malformed row", file.display()))?;
        let (Some(path), Some(label)) = (record.get(path_col), record.get(label_col)) else {
            bail!("{}:{line}: expected the columns `path` and `label`", file.display());
        };
        if path.is_empty() || label.is_empty() {
            bail!("{}:{line}: empty path or label", file.display());
        }
        rows.push((root.join(path), normalize_class(label), line));
    }
    let names: Vec<String> = match classes {
        Some(known) => known.to_vec(),
        None => {
            let numeric: Option<Vec<usize>> = rows.iter().map(|(_, l, _)| l.parse::<usize>().ok()).collect();
            match numeric {
                Some(ids) => (0..=ids.iter().copied().max().unwrap_or(0)).map(|i| i.to_string()).collect(),
                None => {
                    let mut names: Vec<String> = rows.iter().map(|(_, l, _)| l.clone()).collect();
                    names.sort();
                    names.dedup();
                    names
                }
            }
        }
    };
    if names.is_empty() {
        bail!("{}: no rows", file.display());
    }
    let files = rows
        .into_iter()
        .map(|(path, label, line)| match names.iter().position(|n| *n == label) {
            Some(i) => Ok((path, i)),
            None => bail!("{}:{line}: label `{label}` is not a class of the training split", file.display()),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((names, files))
}
