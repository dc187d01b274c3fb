//! Owns the image preprocessing for EfficientNet-Lite0, as pure functions (no wasi calls, so
//! it is unit-tested natively): decode a PNG or JPEG, convert to RGB8, resize so the shorter
//! side is 256 (aspect kept, bilinear/triangle filter with antialiasing), centre-crop 224x224,
//! normalise each channel value as `(x - 127) / 128`, lay out NCHW f32 `[1, 3, 224, 224]`.
//!
//! The resize and the crop are one step: only the 224x224 window of the resized image is
//! computed (fast_image_resize with a source crop box, SIMD where the target has it), which is
//! most of this function's speed.

use std::io::Cursor;

use fast_image_resize as fir;
use image::{ImageError, ImageReader, Limits, RgbImage};

/// Side of the square the model takes.
pub const CROP: u32 = 224;
/// Length of the shorter side after resizing, before the crop.
pub const RESIZE_SHORTER: u32 = 256;
/// Input tensor dimensions.
pub const INPUT_DIMS: [u32; 4] = [1, 3, CROP, CROP];
/// Number of f32 values in the input tensor (150528).
pub const INPUT_LEN: usize = 3 * (CROP as usize) * (CROP as usize);

/// Most bytes the decoder may allocate (the function runs with a 256 MiB memory limit).
const MAX_DECODE_ALLOC: u64 = 128 << 20;

/// Why an image was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreprocessError {
    /// Not a PNG or JPEG the decoder can read (or empty); the decoder's reason.
    NotAnImage(String),
    /// A valid image too big to decode within the memory limit.
    TooLarge(String),
}

/// Decodes `bytes` (PNG or JPEG) into RGB8.
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage, PreprocessError> {
    if bytes.is_empty() {
        return Err(PreprocessError::NotAnImage("the body is empty".into()));
    }
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| PreprocessError::NotAnImage(e.to_string()))?;
    reader.limits(limits);
    match reader.decode() {
        Ok(img) => Ok(img.into_rgb8()),
        Err(ImageError::Limits(e)) => Err(PreprocessError::TooLarge(e.to_string())),
        Err(e) => Err(PreprocessError::NotAnImage(e.to_string())),
    }
}

/// Size after resizing `(width, height)` so that the shorter side is [`RESIZE_SHORTER`],
/// keeping the aspect ratio (the longer side is rounded to the nearest pixel).
pub fn resized_size(width: u32, height: u32) -> (u32, u32) {
    let scale = |long: u32, short: u32| -> u32 {
        let v =
            (u64::from(long) * u64::from(RESIZE_SHORTER) + u64::from(short) / 2) / u64::from(short);
        u32::try_from(v).unwrap_or(u32::MAX).max(RESIZE_SHORTER)
    };
    if width <= height {
        (RESIZE_SHORTER, scale(height, width))
    } else {
        (scale(width, height), RESIZE_SHORTER)
    }
}

/// Largest resized image (RGB8 bytes) we build: a very thin image would otherwise resize to
/// something far past the memory limit.
const MAX_RESIZED_BYTES: u64 = 64 << 20;

/// Resize, centre-crop and normalise an RGB image into the NCHW input tensor
/// ([`INPUT_LEN`] values, channel-major: all R, then all G, then all B).
pub fn to_tensor(rgb: &RgbImage) -> Result<Vec<f32>, PreprocessError> {
    let (w, h) = resized_size(rgb.width(), rgb.height());
    if u64::from(w) * u64::from(h) * 3 > MAX_RESIZED_BYTES {
        return Err(PreprocessError::TooLarge(format!(
            "a {}x{} image resizes to {w}x{h}: the aspect ratio is too extreme",
            rgb.width(),
            rgb.height()
        )));
    }
    // The crop window of the resized image, mapped back to source pixels.
    let scale_x = f64::from(rgb.width()) / f64::from(w);
    let scale_y = f64::from(rgb.height()) / f64::from(h);
    let left = f64::from((w - CROP) / 2) * scale_x;
    let top = f64::from((h - CROP) / 2) * scale_y;
    let source = fir::images::ImageRef::new(
        rgb.width(),
        rgb.height(),
        rgb.as_raw(),
        fir::PixelType::U8x3,
    )
    .map_err(|e| PreprocessError::NotAnImage(e.to_string()))?;
    let mut window = fir::images::Image::new(CROP, CROP, fir::PixelType::U8x3);
    let options = fir::ResizeOptions::new()
        .resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Bilinear))
        .crop(
            left,
            top,
            f64::from(CROP) * scale_x,
            f64::from(CROP) * scale_y,
        );
    fir::Resizer::new()
        .resize(&source, &mut window, &options)
        .map_err(|e| PreprocessError::NotAnImage(e.to_string()))?;
    let pixels = window.buffer();
    let plane = (CROP * CROP) as usize;
    let mut out = vec![0f32; INPUT_LEN];
    for (i, p) in pixels.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (f32::from(p[c]) - 127.0) / 128.0;
        }
    }
    Ok(out)
}

/// The whole pipeline: image bytes to the input tensor's values.
pub fn preprocess(bytes: &[u8]) -> Result<Vec<f32>, PreprocessError> {
    to_tensor(&decode_rgb(bytes)?)
}

/// Indices of the `k` largest values, largest first (ties keep the lower index first; NaN
/// sorts last).
pub fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| {
        let (va, vb) = (values[a], values[b]);
        match (va.is_nan(), vb.is_nan()) {
            (true, true) => a.cmp(&b),
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            (false, false) => vb.total_cmp(&va).then(a.cmp(&b)),
        }
    });
    idx.truncate(k);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageFormat, Rgb};

    fn encode(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        img.write_to(&mut buf, format).unwrap();
        buf.into_inner()
    }

    #[test]
    fn shorter_side_becomes_256() {
        assert_eq!(resized_size(451, 300), (385, 256));
        assert_eq!(resized_size(300, 451), (256, 385));
        assert_eq!(resized_size(512, 512), (256, 256));
        assert_eq!(resized_size(100, 50), (512, 256));
        assert_eq!(resized_size(10_000, 1), (2_560_000, 256));
    }

    #[test]
    fn extreme_aspect_is_too_large() {
        let img = RgbImage::from_pixel(100_000, 1, Rgb([1, 2, 3]));
        assert!(matches!(to_tensor(&img), Err(PreprocessError::TooLarge(_))));
    }

    #[test]
    fn uniform_colour_normalises_per_channel() {
        let img = RgbImage::from_pixel(300, 200, Rgb([255, 127, 0]));
        let t = preprocess(&encode(&img, ImageFormat::Png)).unwrap();
        assert_eq!(t.len(), INPUT_LEN);
        let plane = INPUT_LEN / 3;
        assert!(t[..plane].iter().all(|&v| v == 1.0));
        assert!(t[plane..2 * plane].iter().all(|&v| v == 0.0));
        assert!(t[2 * plane..].iter().all(|&v| v == -127.0 / 128.0));
    }

    #[test]
    fn crop_is_centred() {
        // 256x512 (no horizontal resize, no vertical resize): top half black, bottom half
        // white. The centre crop spans rows 144..368, so its first 112 rows are black.
        let img = RgbImage::from_fn(
            256,
            512,
            |_, y| if y < 256 { Rgb([0; 3]) } else { Rgb([255; 3]) },
        );
        let t = preprocess(&encode(&img, ImageFormat::Png)).unwrap();
        let at = |c: usize, y: usize, x: usize| t[c * 224 * 224 + y * 224 + x];
        assert_eq!(at(0, 0, 0), -127.0 / 128.0);
        assert_eq!(at(1, 111, 223), -127.0 / 128.0);
        assert_eq!(at(2, 112, 0), 1.0);
        assert_eq!(at(0, 223, 223), 1.0);
    }

    #[test]
    fn jpeg_and_grey_decode() {
        let img = RgbImage::from_pixel(64, 48, Rgb([10, 200, 90]));
        let rgb = decode_rgb(&encode(&img, ImageFormat::Jpeg)).unwrap();
        assert_eq!((rgb.width(), rgb.height()), (64, 48));
        let grey = image::GrayImage::from_pixel(30, 30, image::Luma([77]));
        let mut buf = Cursor::new(Vec::new());
        grey.write_to(&mut buf, ImageFormat::Png).unwrap();
        let rgb = decode_rgb(buf.get_ref()).unwrap();
        assert_eq!(rgb.get_pixel(3, 3).0, [77, 77, 77]);
    }

    #[test]
    fn garbage_and_empty_are_refused() {
        assert!(matches!(
            decode_rgb(b""),
            Err(PreprocessError::NotAnImage(_))
        ));
        assert!(matches!(
            decode_rgb(b"not an image at all"),
            Err(PreprocessError::NotAnImage(_))
        ));
        // A PNG signature followed by junk.
        let mut junk = b"\x89PNG\r\n\x1a\n".to_vec();
        junk.extend_from_slice(&[0xab; 40]);
        assert!(matches!(
            decode_rgb(&junk),
            Err(PreprocessError::NotAnImage(_))
        ));
    }

    #[test]
    fn top_k_sorts_descending() {
        assert_eq!(top_k(&[0.1, 0.5, f32::NAN, 0.5, 0.9], 3), vec![4, 1, 3]);
        assert_eq!(top_k(&[1.0], 5), vec![0]);
    }
}
