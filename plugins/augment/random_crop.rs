//! A random `size`×`size` crop (torchvision `RandomCrop`); an image smaller than the crop is an error.
use crate::params::{Param, Params};
use crate::plugin::Augment;
use crate::registry::{Built, Kind};
use anyhow::{bail, Result};
use image::RgbImage;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

const PARAMS: &[Param] = &[Param::int("size", 224, "crop side in pixels").min(1.0)];

crate::register_plugin! {
    name: "random_crop",
    kind: Kind::Augment,
    doc: "random square crop",
    params: PARAMS,
    example: "{size: 224}",
    build: build,
}

fn build(p: &Params) -> Result<Built> {
    Ok(Built::Augment(Box::new(RandomCrop(p.int("size")? as u32))))
}

struct RandomCrop(u32);

/// The `size`×`size` window at (left, top).
pub fn crop(image: &RgbImage, left: u32, top: u32, size: u32) -> Result<RgbImage> {
    let (w, h) = image.dimensions();
    if w < size || h < size {
        bail!("cannot crop {size}x{size} from a {w}x{h} image; resize it first");
    }
    Ok(image::imageops::crop_imm(image, left, top, size, size).to_image())
}

impl Augment for RandomCrop {
    fn apply(&self, image: RgbImage, rng: &mut ChaCha8Rng) -> Result<RgbImage> {
        let (w, h) = image.dimensions();
        let s = self.0;
        let left = if w > s { rng.random_range(0..=w - s) } else { 0 };
        let top = if h > s { rng.random_range(0..=h - s) } else { 0 };
        crop(&image, left, top, s)
    }
}
