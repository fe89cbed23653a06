//! The central `size`×`size` crop (torchvision `CenterCrop`, which rounds the offset).
use crate::params::{Param, Params};
use crate::plugin::Augment;
use crate::registry::{Built, Kind};
use anyhow::Result;
use image::RgbImage;
use rand_chacha::ChaCha8Rng;

const PARAMS: &[Param] = &[Param::int("size", 224, "crop side in pixels").min(1.0)];

crate::register_plugin! {
    name: "center_crop",
    kind: Kind::Augment,
    doc: "central square crop",
    params: PARAMS,
    example: "{size: 224}",
    build: build,
}

fn build(p: &Params) -> Result<Built> {
    Ok(Built::Augment(Box::new(CenterCrop(p.int("size")? as u32))))
}

struct CenterCrop(u32);

impl Augment for CenterCrop {
    fn apply(&self, image: RgbImage, _rng: &mut ChaCha8Rng) -> Result<RgbImage> {
        let (w, h) = image.dimensions();
        let s = self.0;
        let offset = |len: u32| ((len.saturating_sub(s)) as f64 / 2.0).round() as u32;
        super::random_crop::crop(&image, offset(w), offset(h), s)
    }
}
