//! Images: every colour mode and bit depth decodes to the RGB the rules in core/src/data/decode.rs give,
//! recomputed here from those rules: gray replicated; 16 bits scaled by round(v / 257); alpha composited as
//! round(α·c + (1 − α)·background); CMYK and YCCK (Adobe, inverted) as (255 − ink)(255 − K)/255; EXIF
//! orientation applied or ignored. Unreadable files are errors naming the file, or skipped and counted.
use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, LumaA, Rgb, Rgba};
use rifle_core::data::decode::{decode_bytes, decode_file, DecodeRules, ExifPolicy};
use rifle_core::metrics;
use rifle_tests::{image_folder, train, write_file};

const BG: [u8; 3] = [10, 20, 250];

fn rules(exif: ExifPolicy) -> DecodeRules {
    DecodeRules { background: BG, exif }
}

fn png(image: DynamicImage) -> Vec<u8> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, ImageFormat::Png).unwrap();
    bytes.into_inner()
}

fn decode(bytes: &[u8]) -> Vec<[u8; 3]> {
    decode_bytes(bytes, &rules(ExifPolicy::Apply)).unwrap_or_else(|e| panic!("{e:#}")).pixels().map(|p| p.0).collect()
}

/// round(α·c + (1 − α)·bg) for c on the 0..=255 scale; the inputs are chosen away from ties (x.5).
fn over(c: f64, alpha: f64, bg: u8) -> u8 {
    let v = alpha * c + (1.0 - alpha) * f64::from(bg);
    assert!(((v - v.floor()) - 0.5).abs() > 1e-3, "test input too close to a rounding tie: {v}");
    v.round() as u8
}

fn scale16(v: u16) -> u8 {
    let x = f64::from(v) / 257.0;
    assert!(((x - x.floor()) - 0.5).abs() > 1e-3, "test input too close to a rounding tie: {x}");
    x.round() as u8
}

#[test]
fn gray_is_replicated() {
    let gray = ImageBuffer::from_fn(3, 1, |x, _| Luma([[0u8, 77, 255][x as usize]]));
    assert_eq!(decode(&png(DynamicImage::ImageLuma8(gray))), [[0, 0, 0], [77, 77, 77], [255, 255, 255]]);
}

#[test]
fn gray_with_alpha_is_composited_over_the_background() {
    let px = [(200u8, 255u8), (200, 0), (200, 100), (13, 180)];
    let image = ImageBuffer::from_fn(4, 1, |x, _| LumaA([px[x as usize].0, px[x as usize].1]));
    let want: Vec<[u8; 3]> = px.iter().map(|&(v, a)| BG.map(|bg| over(f64::from(v), f64::from(a) / 255.0, bg))).collect();
    assert_eq!(want[0], [200, 200, 200]);
    assert_eq!(want[1], BG);
    assert_eq!(decode(&png(DynamicImage::ImageLumaA8(image))), want);
}

#[test]
fn rgba_is_composited_over_the_background() {
    let px = [[255u8, 0, 100, 51], [1, 2, 3, 254], [90, 180, 33, 0]];
    let image = ImageBuffer::from_fn(3, 1, |x, _| Rgba(px[x as usize]));
    let want: Vec<[u8; 3]> = px.iter().map(|p| [0, 1, 2].map(|c| over(f64::from(p[c]), f64::from(p[3]) / 255.0, BG[c]))).collect();
    assert_eq!(decode(&png(DynamicImage::ImageRgba8(image))), want);
}

#[test]
fn a_palette_with_transparency_is_composited_over_the_background() {
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, 3, 1);
        encoder.set_color(png::ColorType::Indexed);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_palette(vec![255, 0, 0, 0, 255, 0, 40, 60, 201]);
        encoder.set_trns(vec![255, 0, 77]);
        encoder.write_header().unwrap().write_image_data(&[0, 1, 2]).unwrap();
    }
    let blended = [40.0, 60.0, 201.0].iter().zip(BG).map(|(&c, bg)| over(c, 77.0 / 255.0, bg)).collect::<Vec<_>>();
    assert_eq!(decode(&bytes), [[255, 0, 0], BG, [blended[0], blended[1], blended[2]]]);
}

#[test]
fn sixteen_bit_samples_are_scaled_with_rounding() {
    let values = [0u16, 32767, 32769, 65535, 1000];
    let gray = ImageBuffer::from_fn(5, 1, |x, _| Luma([values[x as usize]]));
    let want: Vec<[u8; 3]> = values.iter().map(|&v| [scale16(v); 3]).collect();
    assert_eq!(want[..4], [[0; 3], [127; 3], [128; 3], [255; 3]]);
    assert_eq!(decode(&png(DynamicImage::ImageLuma16(gray))), want);

    let rgb = ImageBuffer::from_fn(1, 1, |_, _| Rgb([65535u16, 32769, 1000]));
    assert_eq!(decode(&png(DynamicImage::ImageRgb16(rgb))), [[255, 128, scale16(1000)]]);

    let px = [[65535u16, 0, 30000, 32770], [12345, 54321, 777, 65535], [9, 9, 9, 0]];
    let rgba = ImageBuffer::from_fn(3, 1, |x, _| Rgba(px[x as usize]));
    let want: Vec<[u8; 3]> = px.iter().map(|p| [0, 1, 2].map(|c| over(f64::from(p[c]) / 257.0, f64::from(p[3]) / 65535.0, BG[c]))).collect();
    assert_eq!(decode(&png(DynamicImage::ImageRgba16(rgba))), want);
}

/// A JPEG at quality 100 without chroma subsampling, with optional extra APP segments.
fn jpeg(data: &[u8], width: u16, height: u16, color: jpeg_encoder::ColorType, app1: Option<Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, 100);
    encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_4_4);
    if let Some(segment) = app1 {
        encoder.add_app_segment(1, segment).unwrap();
    }
    encoder.encode(data, width, height, color).unwrap();
    out
}

/// Every pixel within `tolerance` (JPEG is lossy) of `want`.
fn assert_near(got: &[[u8; 3]], want: [u8; 3], tolerance: u8, what: &str) {
    for p in got {
        assert!((0..3).all(|c| p[c].abs_diff(want[c]) <= tolerance), "{what}: {p:?} is not within {tolerance} of {want:?}");
    }
}

#[test]
fn cmyk_and_ycck_jpegs_convert_by_the_ink_rule() {
    let ink = [0u8, 100, 200, 50];
    let data: Vec<u8> = (0..16 * 16).flat_map(|_| ink).collect();
    // (255 − ink)(255 − K) / 255, the naive (uncalibrated) conversion.
    let want = [0, 1, 2].map(|c| ((255.0 - f64::from(ink[c])) * (255.0 - f64::from(ink[3])) / 255.0).round() as u8);
    assert_eq!(want, [205, 125, 44]);
    assert_near(&decode(&jpeg(&data, 16, 16, jpeg_encoder::ColorType::Cmyk, None)), want, 2, "CMYK");
    assert_near(&decode(&jpeg(&data, 16, 16, jpeg_encoder::ColorType::CmykAsYcck, None)), want, 3, "YCCK");
}

/// An EXIF APP1 segment holding only an orientation tag.
fn exif_orientation(value: u16) -> Vec<u8> {
    let mut e = b"Exif\0\0MM\0\x2a\0\0\0\x08".to_vec();
    e.extend_from_slice(&[0, 1]); // one entry
    e.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1]); // Orientation, SHORT, count 1
    e.extend_from_slice(&value.to_be_bytes());
    e.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // padding, no next IFD
    e
}

#[test]
fn exif_orientation_is_applied_or_ignored_as_configured() {
    // 16x8: red on the left half, blue on the right.
    let (red, blue) = ([255u8, 0, 0], [0u8, 0, 255]);
    let data: Vec<u8> = (0..8).flat_map(|_| (0..16).flat_map(move |x| if x < 8 { red } else { blue })).collect();
    let at = |image: &image::RgbImage, x: u32, y: u32| image.get_pixel(x, y).0;
    let near = |got: [u8; 3], want: [u8; 3]| (0..3).all(|c| got[c].abs_diff(want[c]) <= 8);

    let rotated = jpeg(&data, 16, 8, jpeg_encoder::ColorType::Rgb, Some(exif_orientation(6)));
    let applied = decode_bytes(&rotated, &rules(ExifPolicy::Apply)).unwrap();
    // Orientation 6 is "rotate 90° clockwise to view": the left half becomes the top half.
    assert_eq!(applied.dimensions(), (8, 16));
    assert!(near(at(&applied, 4, 3), red) && near(at(&applied, 4, 12), blue));
    let ignored = decode_bytes(&rotated, &rules(ExifPolicy::Ignore)).unwrap();
    assert_eq!(ignored.dimensions(), (16, 8));
    assert!(near(at(&ignored, 3, 4), red) && near(at(&ignored, 12, 4), blue));

    // Orientation 3 is a half turn: left and right swap.
    let upside_down = decode_bytes(&jpeg(&data, 16, 8, jpeg_encoder::ColorType::Rgb, Some(exif_orientation(3))), &rules(ExifPolicy::Apply)).unwrap();
    assert_eq!(upside_down.dimensions(), (16, 8));
    assert!(near(at(&upside_down, 3, 4), blue) && near(at(&upside_down, 12, 4), red));
}

#[test]
fn truncated_empty_and_non_image_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good_png = png(DynamicImage::ImageRgb8(ImageBuffer::from_fn(32, 32, |x, y| Rgb([x as u8 * 8, y as u8 * 8, 99]))));
    let photo: Vec<u8> = (0..32 * 32).flat_map(|i| [(i * 7 % 256) as u8, (i % 256) as u8, 40]).collect();
    let good_jpeg = jpeg(&photo, 32, 32, jpeg_encoder::ColorType::Rgb, None);
    let cases = [
        ("empty.png", Vec::new(), "the file is empty (0 bytes)"),
        ("notes.png", b"not an image at all\n".to_vec(), "not an image in a known format"),
        ("half.png", good_png[..good_png.len() / 2].to_vec(), ""),
        // The JPEG decoder itself would fill the missing half with gray and report success.
        ("half.jpg", good_jpeg[..good_jpeg.len() / 2].to_vec(), "the JPEG is truncated: its data ends before the end-of-image marker"),
        ("no_end.jpg", good_jpeg[..good_jpeg.len() - 2].to_vec(), "the JPEG is truncated"),
    ];
    for (name, bytes, why) in cases {
        let path = write_file(dir.path(), name, "");
        std::fs::write(&path, bytes).unwrap();
        let e = format!("{:#}", decode_file(&path, &rules(ExifPolicy::Apply)).expect_err(name));
        assert!(e.starts_with(&format!("cannot decode image {}: ", path.display())), "{e}");
        assert!(e.contains(why), "{e}");
    }
    // Bytes after the end-of-image marker (some cameras append data) are not a truncation.
    let mut trailing = good_jpeg.clone();
    trailing.extend_from_slice(b"\xff\xd8 appended by a camera");
    assert_eq!(decode_bytes(&trailing, &rules(ExifPolicy::Apply)).unwrap(), decode_bytes(&good_jpeg, &rules(ExifPolicy::Apply)).unwrap());
}

/// An ImageFolder of 8x8 images with one unreadable file in each split.
fn dataset_with_bad_files(dir: &std::path::Path) -> std::path::PathBuf {
    image_folder(&dir.join("train"), &["a", "b"], 4, 8);
    image_folder(&dir.join("test"), &["a", "b"], 2, 8);
    write_file(dir, "train/a/bad.png", "");
    write_file(dir, "test/b/broken.jpg", "\u{ff}\u{d8} truncated");
    write_file(
        dir,
        "p.yaml",
        "epochs: 2\nbatch_size: 3\nthreads: 1\ndevice: cpu\nbackbone: {resnet: {arch: resnet18, width: 0.125}}\n\
         dataset: {image_folder: {train: train, test: test}}\noptimizer: {lr: 0.01}\n",
    )
}

#[test]
fn unreadable_images_stop_the_run_naming_the_file_or_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dataset_with_bad_files(dir.path());

    let e = format!("{:#}", train(&pipeline, &[], &dir.path().join("strict")).unwrap_err());
    assert!(e.contains(&format!("cannot decode image {}: the file is empty (0 bytes)", dir.path().join("train/a/bad.png").display())), "{e}");
    assert!(e.contains("set `data.on_bad_image: skip` to leave unreadable images out"), "{e}");

    let out = dir.path().join("lenient");
    train(&pipeline, &["data.on_bad_image=skip"], &out).unwrap();
    let (epochs, _) = metrics::read(&out).unwrap();
    assert_eq!(epochs.len(), 4);
    for e in &epochs {
        // 9 training files (3 full batches, nothing dropped), 5 test files: one unreadable in each split.
        let (skipped, samples) = if e.split == "train" { (1, 8) } else { (1, 4) };
        assert_eq!((e.skipped_images, e.samples), (skipped, samples), "{e:?}");
    }
}

#[test]
fn the_decoding_rules_are_one_setting_for_training_and_predict() {
    use rifle_core::config::load;
    use rifle_core::params::Value;
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dataset_with_bad_files(dir.path());
    let exif = |set: &[&str]| {
        let loaded = load(&pipeline, &set.iter().map(|s| s.to_string()).collect::<Vec<_>>(), &[]).unwrap_or_else(|e| panic!("{e}"));
        (loaded.pipeline.data.exif, loaded.plugins.dataset.params.values["exif"].clone(), loaded.plugins.dataset.params.values["background"].clone())
    };
    // `data.exif` (what predict uses) reaches the dataset (what training uses), and the other way round.
    assert_eq!(exif(&["data.exif=ignore"]).1, Value::Str("ignore".into()));
    assert_eq!(exif(&["dataset.image_folder.exif=ignore"]).0, ExifPolicy::Ignore);
    let black = Value::List(vec![Value::Int(0); 3]);
    assert_eq!(exif(&["data.background=[0, 0, 0]"]).2, black);
    // Set differently in both places: an error, not a silent choice.
    let e = load(&pipeline, &["data.background=[0, 0, 0]".into(), "dataset.image_folder.background=[1, 2, 3]".into()], &[]).err().unwrap().to_string();
    assert_eq!(e, "--set dataset.image_folder.background=[1, 2, 3]: dataset.image_folder.background: `[1, 2, 3]` contradicts data.background `[0, 0, 0]`; set it in one place");
}
