//! Horizontal flip with probability `p` (torchvision `RandomHorizontalFlip`).
use crate::params::{Param, Params};
use crate::plugin::Augment;
use crate::registry::{Built, Kind};
use anyhow::Result;
use image::RgbImage;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

const PARAMS: &[Param] = &[Param::float("p", 0.5, "flip probability").range(0.0, 1.0)];

crate::register_plugin! {
    name: "hflip",
    kind: Kind::Augment,
    doc: "random horizontal flip",
    params: PARAMS,
    example: "{p: 0.5}",
    build: build,
}

fn build(p: &Params) -> Result<Built> {
    Ok(Built::Augment(Box::new(HFlip(p.float("p")?))))
}

struct HFlip(f64);

impl Augment for HFlip {
    fn apply(&self, image: RgbImage, rng: &mut ChaCha8Rng) -> Result<RgbImage> {
        // Always draw, so later augments see the same random stream whatever this one decides.
        let draw: f64 = rng.random();
        Ok(if draw < self.0 { image::imageops::flip_horizontal(&image) } else { image })
    }
}
