//! Data: samples, image decoding rules, folder and list datasets, and the prefetching loader.
pub mod decode;
pub mod folder;
pub mod loader;

use anyhow::Result;
use image::RgbImage;

/// What a model learns: classes (names in label order) or a regression with `outputs` values.
#[derive(Clone, Debug, PartialEq)]
pub enum Task {
    Classify { classes: Vec<String> },
    Regress { outputs: usize },
}

impl Task {
    /// The head's output count.
    pub fn outputs(&self) -> usize {
        match self {
            Task::Classify { classes } => classes.len(),
            Task::Regress { outputs } => *outputs,
        }
    }
}

pub enum Input {
    Image(RgbImage),
    /// A feature vector (e.g. the MLP-oracle study); augmentations do not apply.
    Vector(Vec<f32>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    Class(usize),
    Values(Vec<f32>),
}

pub struct Sample {
    pub input: Input,
    pub target: Target,
}

impl Sample {
    pub fn image(image: RgbImage, class: usize) -> Sample {
        Sample { input: Input::Image(image), target: Target::Class(class) }
    }
}

/// What to do with an image that cannot be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBadImage {
    /// Stop with an error naming the file.
    Error,
    /// Leave the sample out of its batch, warn, and count it in the epoch's metrics.
    Skip,
}

/// Per-channel normalisation applied when an image becomes a tensor: (x/255 − mean) / std.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for Normalize {
    /// ImageNet statistics, as torchvision uses them.
    fn default() -> Self {
        Normalize { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }
    }
}

impl Normalize {
    /// Writes the image as CHW floats into `out` (length 3·H·W).
    pub fn write_chw(&self, image: &RgbImage, out: &mut [f32]) {
        let plane = (image.width() * image.height()) as usize;
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * self.std[c]));
        let shift: [f32; 3] = std::array::from_fn(|c| self.mean[c] / self.std[c]);
        for (i, px) in image.as_raw().chunks_exact(3).enumerate() {
            r[i] = f32::from(px[0]) * scale[0] - shift[0];
            g[i] = f32::from(px[1]) * scale[1] - shift[1];
            b[i] = f32::from(px[2]) * scale[2] - shift[2];
        }
    }
}

/// A deterministic RNG for (seed, stream, index): the same numbers whatever thread or process asks.
pub fn rng_for(seed: u64, stream: u64, index: u64) -> rand_chacha::ChaCha8Rng {
    use rand::SeedableRng;
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&stream.to_le_bytes());
    key[16..24].copy_from_slice(&index.to_le_bytes());
    rand_chacha::ChaCha8Rng::from_seed(key)
}

/// An error unless `index` addresses one of the split's `len` samples.
pub fn check_index(index: usize, len: usize, what: &str) -> Result<()> {
    anyhow::ensure!(index < len, "{what}: sample {index} is out of range (the split has {len})");
    Ok(())
}
