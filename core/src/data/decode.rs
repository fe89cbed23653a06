//! Every image becomes 8-bit RGB by these rules (docs/reliability.md lists them):
//! - gray is replicated to the three channels; 16-bit samples are scaled to 8 bits with rounding
//!   (v8 = round(v16 / 257));
//! - alpha (gray+alpha, RGBA, palette with transparency) is composited over `background`:
//!   c = round(α·c + (1 − α)·background), α = a / max;
//! - CMYK and YCCK JPEGs (Adobe's inverted convention) are converted without colour management:
//!   R = (255 − C)(255 − K)/255, likewise G from M and B from Y, with C, M, Y, K the ink amounts;
//! - EXIF orientation is applied (`exif: apply`, the default, as a photo viewer shows the image) or ignored;
//! - an unreadable, truncated, zero-byte or non-image file is an error that names the file. A JPEG must
//!   reach its end-of-image marker: the decoder would fill a cut-off file's missing rows with gray.
use anyhow::{anyhow, bail, Context, Result};
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExifPolicy {
    Apply,
    Ignore,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DecodeRules {
    pub background: [u8; 3],
    pub exif: ExifPolicy,
}

impl Default for DecodeRules {
    fn default() -> Self {
        DecodeRules { background: [255, 255, 255], exif: ExifPolicy::Apply }
    }
}

/// Decodes an image file to RGB by the rules above.
pub fn decode_file(path: &Path, rules: &DecodeRules) -> Result<RgbImage> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read image {}", path.display()))?;
    decode_bytes(&bytes, rules).with_context(|| format!("cannot decode image {}", path.display()))
}

pub fn decode_bytes(bytes: &[u8], rules: &DecodeRules) -> Result<RgbImage> {
    if bytes.is_empty() {
        bail!("the file is empty (0 bytes)");
    }
    let reader = ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format()?;
    match reader.format() {
        None => bail!("not an image in a known format"),
        Some(image::ImageFormat::Jpeg) if !jpeg_is_complete(bytes) => {
            bail!("the JPEG is truncated: its data ends before the end-of-image marker")
        }
        Some(_) => {}
    }
    let mut decoder = reader.into_decoder().map_err(|e| anyhow!("{e}"))?;
    let orientation = decoder.orientation().ok();
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| anyhow!("{e}"))?;
    if let (ExifPolicy::Apply, Some(o)) = (rules.exif, orientation) {
        image.apply_orientation(o);
    }
    Ok(to_rgb(image, rules.background))
}

/// Converts any colour mode to 8-bit RGB, compositing alpha over `background`.
pub fn to_rgb(image: DynamicImage, background: [u8; 3]) -> RgbImage {
    if !image.color().has_alpha() {
        return match image {
            DynamicImage::ImageRgb8(rgb) => rgb,
            DynamicImage::ImageLuma8(gray) => {
                RgbImage::from_fn(gray.width(), gray.height(), |x, y| {
                    let g = gray.get_pixel(x, y)[0];
                    image::Rgb([g, g, g])
                })
            }
            other => {
                let rgb16 = other.to_rgb16();
                RgbImage::from_fn(rgb16.width(), rgb16.height(), |x, y| {
                    let p = rgb16.get_pixel(x, y).0;
                    image::Rgb(p.map(scale16))
                })
            }
        };
    }
    let rgba = image.to_rgba16();
    let bg = background.map(f32::from);
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        let alpha = f32::from(a) / 65535.0;
        let mix = |c: u16, bg: f32| (alpha * (f32::from(c) / 257.0) + (1.0 - alpha) * bg).round().clamp(0.0, 255.0) as u8;
        image::Rgb([mix(r, bg[0]), mix(g, bg[1]), mix(b, bg[2])])
    })
}

/// Whether a JPEG's marker structure reaches its end-of-image marker (EOI). Segments are skipped by their
/// lengths (so an EXIF thumbnail's own markers do not count) and entropy-coded data up to the next marker
/// that is not a stuffed byte, a restart or fill; bytes between segments are skipped as decoders do.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let at = |i: usize| bytes.get(i).copied();
    let mut i = 2; // after SOI
    loop {
        match (at(i), at(i + 1)) {
            (Some(0xFF), Some(0xD9)) => return true,
            (Some(0xFF), Some(0xFF)) => i += 1,
            (Some(0xFF), Some(0x01 | 0xD0..=0xD7)) => i += 2,
            (Some(0xFF), Some(marker)) => {
                let (Some(hi), Some(lo)) = (at(i + 2), at(i + 3)) else { return false };
                i += 2 + usize::from(u16::from_be_bytes([hi, lo]));
                if marker == 0xDA {
                    // Entropy-coded data: 0xFF appears only as FF 00, a restart marker, or fill.
                    while !(at(i) == Some(0xFF) && at(i + 1).is_some_and(|m| !matches!(m, 0x00 | 0xD0..=0xD7 | 0xFF))) {
                        if at(i + 1).is_none() {
                            return false;
                        }
                        i += 1;
                    }
                }
            }
            (Some(_), Some(_)) => i += 1,
            _ => return false,
        }
    }
}

/// 16-bit to 8-bit with rounding: round(v / 257).
fn scale16(v: u16) -> u8 {
    ((u32::from(v) + 128) / 257) as u8
}
