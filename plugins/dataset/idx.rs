//! IDX files (the MNIST / Fashion-MNIST format), read directly, gzip-compressed or not: 8-bit images
//! [count, rows, cols] and 8-bit labels [count]. Optional fixed subsets (so a small-data study sees the
//! same images in every run), upsampling of the small gray images, and gray replicated to RGB.
use crate::data::{check_index, rng_for, Sample, Task};
use crate::params::{Param, Params};
use crate::plugin::{Dataset, Samples, Split};
use crate::plugins::augment::resize::resize;
use crate::registry::{Built, Kind};
use anyhow::{bail, ensure, Context, Result};
use rand::seq::SliceRandom;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

const PARAMS: &[Param] = &[
    Param::path("train_images", "IDX images of the training split (e.g. train-images-idx3-ubyte.gz)"),
    Param::path("train_labels", "IDX labels of the training split"),
    Param::path("test_images", "IDX images of the evaluation split"),
    Param::path("test_labels", "IDX labels of the evaluation split"),
    Param::strs("classes", &[], "class names in label order (default: the label numbers)"),
    Param::int("per_class", 0, "keep this many training images per class, a fixed draw (0: all)").min(0.0),
    Param::int("test_subset", 0, "keep this many test images, a fixed draw (0: all)").min(0.0),
    Param::int("subset_seed", 0, "seed of the subset draws (independent of the run's seed)"),
    Param::int("size", 0, "resize images to size x size, antialiased bilinear (0: as stored)").range(0.0, 4096.0),
];

crate::register_plugin! {
    name: "idx",
    kind: Kind::Dataset,
    doc: "MNIST-style IDX files (.gz or raw), with fixed per-class and test subsets; gray to RGB",
    params: PARAMS,
    example: "{train_images: fashion-mnist/train-images-idx3-ubyte.gz, train_labels: fashion-mnist/train-labels-idx1-ubyte.gz, test_images: fashion-mnist/t10k-images-idx3-ubyte.gz, test_labels: fashion-mnist/t10k-labels-idx1-ubyte.gz, per_class: 10, test_subset: 20, size: 64}",
    build: build,
}

/// An IDX file's dimensions and 8-bit values.
struct Idx {
    dims: Vec<usize>,
    data: Vec<u8>,
}

fn read_idx(path: &Path) -> Result<Idx> {
    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice()).read_to_end(&mut out).with_context(|| format!("{}: broken gzip data", path.display()))?;
        out
    } else {
        raw
    };
    parse_idx(&bytes).with_context(|| format!("{}: not an IDX file", path.display()))
}

fn parse_idx(bytes: &[u8]) -> Result<Idx> {
    ensure!(bytes.len() >= 4 && bytes[0] == 0 && bytes[1] == 0, "the header does not start with two zero bytes");
    ensure!(bytes[2] == 0x08, "element type 0x{:02x} is not unsigned bytes (0x08), the only type MNIST-style files use", bytes[2]);
    let ndims = bytes[3] as usize;
    ensure!(ndims >= 1 && bytes.len() >= 4 + 4 * ndims, "{ndims} dimensions, or the header is truncated");
    let dims: Vec<usize> = bytes[4..4 + 4 * ndims].chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let numel = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).unwrap_or(usize::MAX);
    let data = &bytes[4 + 4 * ndims..];
    ensure!(data.len() == numel, "dimensions {dims:?} need {numel} bytes, the file has {}", data.len());
    Ok(Idx { dims, data: data.to_vec() })
}

/// One split: images (rows x cols bytes each) and labels, both from file.
fn read_split(images: &Path, labels: &Path) -> Result<(Idx, Vec<usize>)> {
    let images_idx = read_idx(images)?;
    ensure!(images_idx.dims.len() == 3, "{}: images have dimensions {:?}, expected [count, rows, cols]", images.display(), images_idx.dims);
    let labels_idx = read_idx(labels)?;
    ensure!(labels_idx.dims.len() == 1, "{}: labels have dimensions {:?}, expected [count]", labels.display(), labels_idx.dims);
    ensure!(
        images_idx.dims[0] == labels_idx.dims[0],
        "{} has {} images but {} has {} labels",
        images.display(),
        images_idx.dims[0],
        labels.display(),
        labels_idx.dims[0]
    );
    Ok((images_idx, labels_idx.data.iter().map(|&l| l as usize).collect()))
}

/// A fixed draw of `count` of `indices` (all when 0 or more than there are), in file order.
fn draw(mut indices: Vec<usize>, count: usize, seed: u64, stream: u64) -> Vec<usize> {
    if count > 0 && count < indices.len() {
        indices.shuffle(&mut rng_for(seed, stream, 0));
        indices.truncate(count);
        indices.sort_unstable();
    }
    indices
}

struct IdxDataset {
    classes: Vec<String>,
    train: Arc<IdxSamples>,
    test: Arc<IdxSamples>,
}

fn build(p: &Params) -> Result<Built> {
    let seed = p.int("subset_seed")? as u64;
    let size = p.usize("size")? as u32;
    let (train_images, train_labels) = read_split(&p.path("train_images")?, &p.path("train_labels")?)?;
    let (test_images, test_labels) = read_split(&p.path("test_images")?, &p.path("test_labels")?)?;
    let max_label = train_labels.iter().chain(&test_labels).copied().max().unwrap_or(0);
    let mut classes = p.strs("classes")?;
    if classes.is_empty() {
        // Without names, the labels define the classes: every one of 0..=max must occur in training, or a
        // corrupt byte (255) would silently make a 256-class head.
        let mut seen = vec![false; max_label + 1];
        train_labels.iter().for_each(|&l| seen[l] = true);
        if let Some(missing) = seen.iter().position(|s| !s) {
            bail!(
                "{}: the labels go up to {max_label}, but label {missing} never occurs in {}; is a label file corrupt? (name the classes with `classes` to allow unused ones)",
                p.origin,
                p.path("train_labels")?.display()
            );
        }
        classes = (0..=max_label).map(|c| c.to_string()).collect();
    }
    ensure!(
        max_label < classes.len(),
        "{}: label {max_label} occurs in the files, but `classes` names only {} classes",
        p.origin,
        classes.len()
    );
    let per_class = p.usize("per_class")?;
    let train: Vec<usize> = if per_class == 0 {
        (0..train_labels.len()).collect()
    } else {
        let mut chosen = Vec::new();
        for class in 0..classes.len() {
            let members: Vec<usize> = (0..train_labels.len()).filter(|&i| train_labels[i] == class).collect();
            if members.len() < per_class {
                bail!("{}: class `{}` has {} training images, fewer than per_class {per_class}", p.origin, classes[class], members.len());
            }
            chosen.extend(draw(members, per_class, seed, 1 + class as u64));
        }
        chosen.sort_unstable();
        chosen
    };
    let test = draw((0..test_labels.len()).collect(), p.usize("test_subset")?, seed, 0);
    let pick = |idx: Idx, labels: &[usize], keep: Vec<usize>, name: &str| IdxSamples {
        rows: idx.dims[1] as u32,
        cols: idx.dims[2] as u32,
        size,
        images: keep.iter().map(|&i| idx.data[i * idx.dims[1] * idx.dims[2]..(i + 1) * idx.dims[1] * idx.dims[2]].to_vec()).collect(),
        labels: keep.iter().map(|&i| labels[i]).collect(),
        source: keep,
        name: name.to_string(),
    };
    Ok(Built::Dataset(Box::new(IdxDataset {
        train: Arc::new(pick(train_images, &train_labels, train, &p.path("train_images")?.display().to_string())),
        test: Arc::new(pick(test_images, &test_labels, test, &p.path("test_images")?.display().to_string())),
        classes,
    })))
}

impl Dataset for IdxDataset {
    fn task(&self) -> Task {
        Task::Classify { classes: self.classes.clone() }
    }
    fn split(&self, split: Split) -> Result<Arc<dyn Samples>> {
        Ok(match split {
            Split::Train => self.train.clone(),
            Split::Test => self.test.clone(),
        })
    }
}

struct IdxSamples {
    rows: u32,
    cols: u32,
    /// Output side (0: as stored).
    size: u32,
    images: Vec<Vec<u8>>,
    labels: Vec<usize>,
    /// Each sample's index in the file, for messages.
    source: Vec<usize>,
    name: String,
}

impl Samples for IdxSamples {
    fn len(&self) -> usize {
        self.images.len()
    }
    fn load(&self, index: usize) -> Result<Sample> {
        check_index(index, self.images.len(), &self.name)?;
        let gray = &self.images[index];
        let rgb = image::RgbImage::from_fn(self.cols, self.rows, |x, y| {
            let v = gray[(y * self.cols + x) as usize];
            image::Rgb([v, v, v])
        });
        let rgb = if self.size == 0 { rgb } else { resize(rgb, self.size, self.size)? };
        Ok(Sample::image(rgb, self.labels[index]))
    }
    fn describe(&self, index: usize) -> String {
        format!("{}[{}]", self.name, self.source.get(index).copied().unwrap_or(index))
    }
}
