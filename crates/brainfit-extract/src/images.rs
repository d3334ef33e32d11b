//! Decoding stimulus images into RGB pixels.
//!
//! Every image becomes `[height, width, 3]` `u8` RGB, as Pillow's `Image.convert("RGB")` gives
//! it: grey levels are repeated over the three channels and an alpha channel is dropped (not
//! composited). 16-bit images are scaled to 8 bits by the decoder.

use crate::{ExtractError, Result, foreign};
use ndarray::Array3;

/// Whether `name` (a file name or URL) names a PNG or JPEG file, by its extension.
pub fn is_image_name(name: &str) -> bool {
    let lower = name.rsplit('/').next().unwrap_or(name).to_ascii_lowercase();
    [".png", ".jpg", ".jpeg"].iter().any(|ext| lower.ends_with(ext))
}

/// At most this many pixels per image (a 16k × 16k photograph): a header claiming more is
/// refused before the decoder allocates.
pub(crate) const MAX_IMAGE_PIXELS: u64 = 1 << 28;

/// Decodes a PNG or JPEG file's bytes (`name` for messages) to RGB pixels.
pub fn decode_image(bytes: &[u8], name: &str) -> Result<Array3<u8>> {
    let bad = |message: String| ExtractError::Image { image: name.to_string(), message };
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad(format!("cannot be read: {}", foreign(e))))?;
    match reader.format() {
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg) => {}
        _ => return Err(bad("is not a PNG or JPEG image".into())),
    }
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_IMAGE_PIXELS * 8);
    let mut reader = reader;
    reader.limits(limits);
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| bad(format!("has an unreadable header: {}", foreign(e))))?;
    if u64::from(width) * u64::from(height) > MAX_IMAGE_PIXELS {
        return Err(bad(format!(
            "is {width} × {height} pixels, more than brainfit decodes ({MAX_IMAGE_PIXELS})"
        )));
    }
    let decoded = image::load_from_memory(bytes)
        .map_err(|e| bad(format!("cannot be decoded: {}", foreign(e))))?
        .to_rgb8();
    let (width, height) = (decoded.width() as usize, decoded.height() as usize);
    if width == 0 || height == 0 {
        return Err(bad("has no pixels".into()));
    }
    Array3::from_shape_vec((height, width, 3), decoded.into_raw())
        .map_err(|e| bad(format!("decoded to an unexpected buffer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32, pixels: Vec<u8>, colour: image::ColorType) -> Vec<u8> {
        let mut out = Vec::new();
        image::write_buffer_with_format(
            &mut std::io::Cursor::new(&mut out),
            &pixels,
            width,
            height,
            colour,
            image::ImageFormat::Png,
        )
        .unwrap();
        out
    }

    #[test]
    fn png_pixels_come_back_exactly_as_rgb() {
        let pixels: Vec<u8> = (0..4 * 3 * 3).map(|i| (i * 7 % 256) as u8).collect();
        let img =
            decode_image(&png(4, 3, pixels.clone(), image::ColorType::Rgb8), "a.png").unwrap();
        assert_eq!(img.dim(), (3, 4, 3));
        assert_eq!(img.as_slice().unwrap(), &pixels[..]);
    }

    #[test]
    fn grey_and_alpha_become_rgb_as_pillow_converts_them() {
        let grey = decode_image(&png(2, 1, vec![10, 200], image::ColorType::L8), "g.png").unwrap();
        assert_eq!(grey.as_slice().unwrap(), &[10, 10, 10, 200, 200, 200]);
        let rgba = png(1, 1, vec![1, 2, 3, 0], image::ColorType::Rgba8);
        assert_eq!(decode_image(&rgba, "a.png").unwrap().as_slice().unwrap(), &[1, 2, 3]);
    }

    #[test]
    fn other_files_are_refused_naming_them() {
        let e = decode_image(b"not an image at all", "notes.png").unwrap_err().to_string();
        assert!(e.starts_with("notes.png: "), "{e}");
        let mut truncated = png(8, 8, vec![9; 8 * 8 * 3], image::ColorType::Rgb8);
        truncated.truncate(truncated.len() / 2);
        let e = decode_image(&truncated, "cut.png").unwrap_err().to_string();
        assert!(e.starts_with("cut.png: "), "{e}");
        assert!(is_image_name("s3://b/x/IMG_01.JPG") && is_image_name("a.jpeg"));
        assert!(!is_image_name("a.txt") && !is_image_name("png"));
    }
}
