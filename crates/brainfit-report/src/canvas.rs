//! An RGB raster with the few drawing primitives the figures need, text in the embedded
//! bitmap font, and PNG encoding.
//!
//! Coordinates are pixels, x to the right and y downward from the top-left corner. Positions
//! are `i64` so that shapes may start or end off the canvas: everything is clipped to it.

use crate::font::{self, ADVANCE, GLYPH_HEIGHT, GLYPH_WIDTH};
use crate::{ReportError, Result};

/// A colour: red, green, blue bytes.
pub type Rgb = [u8; 3];

/// White, the background of every figure.
pub const WHITE: Rgb = [255, 255, 255];
/// Black, the colour of axes, text and outlines.
pub const BLACK: Rgb = [0, 0, 0];

/// Where a line of text sits relative to its anchor, along the reading direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Align {
    /// The text starts at the anchor.
    #[default]
    Left,
    /// The text is centred on the anchor.
    Centre,
    /// The text ends at the anchor (its last pixel is the anchor's).
    Right,
}

/// Width in pixels of `text` drawn at `scale`: 6 pixels per character (5 of glyph, 1 of
/// spacing) less the spacing after the last one, times the scale; 0 for an empty string.
#[must_use]
pub fn text_width(text: &str, scale: usize) -> usize {
    let n = text.chars().count();
    if n == 0 { 0 } else { (n * ADVANCE - 1) * scale }
}

/// Height in pixels of a line of text at `scale` (7 pixel rows of glyph, times the scale).
#[must_use]
pub fn text_height(scale: usize) -> usize {
    GLYPH_HEIGHT * scale
}

/// An RGB image, row-major from the top row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canvas {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height` colours, row after row from the top; pixel (x, y) is
    /// `pixels[y * width + x]`.
    pub pixels: Vec<Rgb>,
}

impl Canvas {
    /// A canvas of `width` × `height` pixels filled with `colour`.
    #[must_use]
    pub fn new(width: usize, height: usize, colour: Rgb) -> Self {
        Canvas { width, height, pixels: vec![colour; width * height] }
    }

    /// The colour at (`x`, `y`), `None` outside the canvas.
    #[must_use]
    pub fn pixel(&self, x: usize, y: usize) -> Option<Rgb> {
        (x < self.width && y < self.height).then(|| self.pixels[y * self.width + x])
    }

    /// How many pixels have exactly `colour`.
    #[must_use]
    pub fn count(&self, colour: Rgb) -> usize {
        self.pixels.iter().filter(|&&p| p == colour).count()
    }

    /// Paints the whole canvas.
    pub fn fill(&mut self, colour: Rgb) {
        self.pixels.fill(colour);
    }

    /// Paints the pixel at (`x`, `y`) if it is on the canvas.
    pub fn set_pixel(&mut self, x: i64, y: i64, colour: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            self.pixels[y as usize * self.width + x as usize] = colour;
        }
    }

    /// Paints the `w` × `h` rectangle whose top-left pixel is (`x`, `y`), clipped.
    pub fn fill_rect(&mut self, x: i64, y: i64, w: usize, h: usize, colour: Rgb) {
        let x0 = x.clamp(0, self.width as i64) as usize;
        let y0 = y.clamp(0, self.height as i64) as usize;
        let x1 = (x.saturating_add(w as i64)).clamp(0, self.width as i64) as usize;
        let y1 = (y.saturating_add(h as i64)).clamp(0, self.height as i64) as usize;
        for row in y0..y1 {
            self.pixels[row * self.width + x0..row * self.width + x1].fill(colour);
        }
    }

    /// Outlines the `w` × `h` rectangle at (`x`, `y`) with a border `thickness` pixels wide,
    /// drawn inside the rectangle.
    pub fn rect_outline(
        &mut self,
        x: i64,
        y: i64,
        w: usize,
        h: usize,
        thickness: usize,
        colour: Rgb,
    ) {
        let t = thickness.min(w).min(h);
        self.fill_rect(x, y, w, t, colour);
        self.fill_rect(x, y + (h - t) as i64, w, t, colour);
        self.fill_rect(x, y, t, h, colour);
        self.fill_rect(x + (w - t) as i64, y, t, h, colour);
    }

    /// A horizontal line from `x0` to `x1` (both included, either order) on row `y`,
    /// `thickness` rows thick centred on `y` (the extra row below for even thicknesses).
    pub fn hline(&mut self, x0: i64, x1: i64, y: i64, thickness: usize, colour: Rgb) {
        let t = thickness.max(1);
        let top = y - (t as i64 - 1) / 2;
        self.fill_rect(x0.min(x1), top, x0.abs_diff(x1) as usize + 1, t, colour);
    }

    /// A vertical line from `y0` to `y1` (both included, either order) in column `x`,
    /// `thickness` columns thick centred on `x` (the extra column to the right for even
    /// thicknesses).
    pub fn vline(&mut self, x: i64, y0: i64, y1: i64, thickness: usize, colour: Rgb) {
        let t = thickness.max(1);
        let left = x - (t as i64 - 1) / 2;
        self.fill_rect(left, y0.min(y1), t, y0.abs_diff(y1) as usize + 1, colour);
    }

    /// A straight line from (`x0`, `y0`) to (`x1`, `y1`), both ends included (Bresenham's
    /// algorithm), drawn with a square brush of side `thickness` centred on each point.
    pub fn line(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, thickness: usize, colour: Rgb) {
        let t = thickness.max(1);
        let back = (t as i64 - 1) / 2;
        bresenham(x0, y0, x1, y1, |x, y| {
            if t == 1 {
                self.set_pixel(x, y, colour);
            } else {
                self.fill_rect(x - back, y - back, t, t, colour);
            }
        });
    }

    /// Copies `src` with its top-left corner at (`x`, `y`), each source pixel becoming a
    /// `factor` × `factor` block (nearest-neighbour upscaling; a factor of 0 counts as 1).
    pub fn blit(&mut self, src: &Canvas, x: i64, y: i64, factor: usize) {
        let f = factor.max(1);
        for sy in 0..src.height {
            for sx in 0..src.width {
                let colour = src.pixels[sy * src.width + sx];
                self.fill_rect(x + (sx * f) as i64, y + (sy * f) as i64, f, f, colour);
            }
        }
    }

    /// Draws one line of `text` at an integer `scale` (see [`text_width`]): `y` is the top
    /// row of the glyphs, `x` the anchor that `align` refers to.
    pub fn text(&mut self, x: i64, y: i64, text: &str, scale: usize, align: Align, colour: Rgb) {
        let w = text_width(text, scale) as i64;
        let left = match align {
            Align::Left => x,
            Align::Centre => x - w / 2,
            Align::Right => x - w + 1,
        };
        for_each_text_pixel(text, scale, |u, v| {
            self.fill_rect(left + u as i64, y + v as i64, scale, scale, colour);
        });
    }

    /// Draws `text` turned a quarter turn anticlockwise, reading from bottom to top (a y-axis
    /// label): `x` is the leftmost column (the glyphs' tops), `y` the anchor that `align`
    /// refers to along the text: [`Align::Left`] puts the text's start (its bottom) on row
    /// `y`, [`Align::Right`] its end (its top), [`Align::Centre`] its middle.
    pub fn text_vertical(
        &mut self,
        x: i64,
        y: i64,
        text: &str,
        scale: usize,
        align: Align,
        colour: Rgb,
    ) {
        let w = text_width(text, scale) as i64;
        let bottom = match align {
            Align::Left => y,
            Align::Centre => y + w / 2,
            Align::Right => y + w - 1,
        };
        // pixel (u, v) of the upright text (u along it, v down) goes to (x + v, bottom - u)
        for_each_text_pixel(text, scale, |u, v| {
            self.fill_rect(x + v as i64, bottom - (u + scale - 1) as i64, scale, scale, colour);
        });
    }

    /// The canvas as an 8-bit RGB PNG file.
    ///
    /// # Errors
    /// [`ReportError::Png`] if the canvas has no pixels (PNG needs at least one) or is too
    /// large for PNG.
    pub fn to_png(&self) -> Result<Vec<u8>> {
        let (Ok(w), Ok(h)) = (u32::try_from(self.width), u32::try_from(self.height)) else {
            return Err(ReportError::Png(format!(
                "{}×{} pixels is too large",
                self.width, self.height
            )));
        };
        if w == 0 || h == 0 {
            return Err(ReportError::Png(format!("{w}×{h} pixels: an image needs at least one")));
        }
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| ReportError::Png(e.to_string()))?;
        writer
            .write_image_data(self.pixels.as_flattened())
            .map_err(|e| ReportError::Png(e.to_string()))?;
        writer.finish().map_err(|e| ReportError::Png(e.to_string()))?;
        Ok(out)
    }
}

/// Calls `f(x, y)` for every point of the line from (`x0`, `y0`) to (`x1`, `y1`), both ends
/// included, in order (Bresenham's algorithm).
pub(crate) fn bresenham(x0: i64, y0: i64, x1: i64, y1: i64, mut f: impl FnMut(i64, i64)) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = ((x1 - x0).signum(), (y1 - y0).signum());
    let (mut x, mut y, mut err) = (x0, y0, dx + dy);
    loop {
        f(x, y);
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

/// Calls `f(u, v)` with the top-left corner, in pixels from the text's top-left, of every
/// `scale` × `scale` block that a set glyph pixel of `text` covers.
fn for_each_text_pixel(text: &str, scale: usize, mut f: impl FnMut(usize, usize)) {
    for (i, c) in text.chars().enumerate() {
        let glyph = font::glyph(c);
        for row in 0..GLYPH_HEIGHT {
            for col in 0..GLYPH_WIDTH {
                if font::is_set(glyph, col, row) {
                    f((i * ADVANCE + col) * scale, row * scale);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RED: Rgb = [255, 0, 0];

    fn painted(c: &Canvas, colour: Rgb) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for y in 0..c.height {
            for x in 0..c.width {
                if c.pixel(x, y) == Some(colour) {
                    out.push((x, y));
                }
            }
        }
        out
    }

    #[test]
    fn fill_rect_clips_and_covers_exactly() {
        let mut c = Canvas::new(10, 8, WHITE);
        c.fill_rect(-2, 6, 5, 10, RED);
        assert_eq!(painted(&c, RED), vec![(0, 6), (1, 6), (2, 6), (0, 7), (1, 7), (2, 7)]);
        c.fill_rect(20, 20, 3, 3, RED);
        c.fill_rect(i64::MAX - 1, 0, usize::MAX / 2, 1, RED);
        assert_eq!(c.count(RED), 6);
    }

    #[test]
    fn bresenham_lines_are_connected_and_end_at_both_points() {
        let mut c = Canvas::new(20, 20, WHITE);
        c.line(1, 2, 17, 9, 1, RED);
        let px = painted(&c, RED);
        assert!(px.contains(&(1, 2)) && px.contains(&(17, 9)));
        // x-major: exactly one pixel per column
        assert_eq!(px.len(), 17);
        let mut c = Canvas::new(20, 20, WHITE);
        c.line(5, 18, 3, 0, 1, RED);
        assert_eq!(painted(&c, RED).len(), 19);
        let mut c = Canvas::new(20, 20, WHITE);
        c.line(10, 10, 10, 10, 3, RED);
        assert_eq!(painted(&c, RED).len(), 9);
    }

    #[test]
    fn hline_vline_and_outline() {
        let mut c = Canvas::new(12, 12, WHITE);
        c.hline(8, 2, 5, 1, RED);
        assert_eq!(painted(&c, RED), (2..=8).map(|x| (x, 5)).collect::<Vec<_>>());
        let mut c = Canvas::new(12, 12, WHITE);
        c.vline(3, 1, 4, 2, RED);
        assert_eq!(c.count(RED), 8);
        let mut c = Canvas::new(12, 12, WHITE);
        c.rect_outline(1, 1, 5, 4, 1, RED);
        assert_eq!(c.count(RED), 14);
        assert_eq!(c.pixel(3, 2), Some(WHITE));
    }

    #[test]
    fn blit_upscales_by_whole_blocks() {
        let mut src = Canvas::new(2, 1, WHITE);
        src.set_pixel(1, 0, RED);
        let mut c = Canvas::new(10, 10, BLACK);
        c.blit(&src, 1, 2, 3);
        assert_eq!(
            painted(&c, RED),
            (2..5).flat_map(|y| (4..7).map(move |x| (x, y))).collect::<Vec<_>>()
        );
        assert_eq!(c.count(WHITE), 9);
    }

    #[test]
    fn vertical_text_is_the_upright_text_turned() {
        let mut up = Canvas::new(40, 20, WHITE);
        up.text(0, 0, "Ab", 2, Align::Left, RED);
        let w = text_width("Ab", 2);
        let mut turned = Canvas::new(20, 40, WHITE);
        turned.text_vertical(0, w as i64 - 1, "Ab", 2, Align::Left, RED);
        for y in 0..20 {
            for x in 0..40 {
                let expect = up.pixel(x, y).unwrap();
                let got = if x < w { turned.pixel(y, w - 1 - x).unwrap() } else { WHITE };
                assert_eq!(got, expect, "({x}, {y})");
            }
        }
        assert_eq!(up.count(RED), turned.count(RED));
    }
}
