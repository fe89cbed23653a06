//! Resize: the shorter edge to `shorter` keeping the aspect ratio (torchvision `Resize(int)`), or to an
//! exact `size`. Antialiased bilinear, as PIL does it.
use crate::params::{Param, Params};
use crate::plugin::Augment;
use crate::registry::{Built, Kind};
use anyhow::{anyhow, bail, Result};
use fast_image_resize::{images::Image, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;
use rand_chacha::ChaCha8Rng;

const PARAMS: &[Param] = &[
    Param::int("shorter", 0, "resize the shorter edge to this, keeping the aspect ratio").optional().min(1.0),
    Param::ints("size", &[], "resize to exactly [height, width] instead").optional(),
];

crate::register_plugin! {
    name: "resize",
    kind: Kind::Augment,
    doc: "resize (shorter edge, or exact size); antialiased bilinear",
    params: PARAMS,
    example: "{shorter: 256}",
    build: build,
}

enum Target {
    Shorter(u32),
    Exact(u32, u32),
}

fn build(p: &Params) -> Result<Built> {
    let target = match (p.opt_int("shorter")?, p.is_set("size").then(|| p.ints("size")).transpose()?) {
        (Some(s), None) => Target::Shorter(s as u32),
        (None, Some(hw)) if hw.len() == 2 && hw.iter().all(|&v| v > 0) => Target::Exact(hw[0] as u32, hw[1] as u32),
        (None, Some(_)) => bail!("{}: `size` must be [height, width], both positive", p.origin),
        _ => bail!("{}: set exactly one of `shorter` and `size`", p.origin),
    };
    Ok(Built::Augment(Box::new(Resize(target))))
}

struct Resize(Target);

/// Bilinear, antialiased resize of an RGB image.
pub fn resize(image: RgbImage, width: u32, height: u32) -> Result<RgbImage> {
    if image.width() == width && image.height() == height {
        return Ok(image);
    }
    let (w, h) = image.dimensions();
    let src = Image::from_vec_u8(w, h, image.into_raw(), PixelType::U8x3).map_err(|e| anyhow!("resize: {e}"))?;
    let mut dst = Image::new(width, height, PixelType::U8x3);
    Resizer::new()
        .resize(&src, &mut dst, &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)))
        .map_err(|e| anyhow!("resize: {e}"))?;
    RgbImage::from_raw(width, height, dst.into_vec()).ok_or_else(|| anyhow!("resize: buffer size"))
}

impl Augment for Resize {
    fn apply(&self, image: RgbImage, _rng: &mut ChaCha8Rng) -> Result<RgbImage> {
        let (w, h) = image.dimensions();
        let (nw, nh) = match self.0 {
            Target::Exact(h, w) => (w, h),
            // torchvision: the shorter edge becomes `s`, the longer int(s * long / short)
            Target::Shorter(s) if w <= h => (s, ((s as u64 * h as u64) / w as u64) as u32),
            Target::Shorter(s) => (((s as u64 * w as u64) / h as u64) as u32, s),
        };
        resize(image, nw.max(1), nh.max(1))
    }
}
