//! The vertical colour bar attached to maps and heatmaps.

use super::axes::labelled_ticks;
use super::{GAP, MAX_SIDE, TEXT_SCALE, check_range, fit, input_error};
use crate::canvas::{Align, BLACK, Canvas, WHITE, text_height, text_width};
use crate::{Colormap, Result};

/// Width of the bar itself, black frame included.
const BAR_WIDTH: usize = 18;
const TICK: usize = 5;
const TICK_GAP: usize = 4;

/// A vertical colour bar: `min` at the bottom, `max` at the top, ticks at 1-2-5 steps with
/// their labels on the right, and `label` (if not empty) written vertically beyond them.
///
/// The colours fill columns 1 to 16 of rows `pad` to `pad + bar_height - 1`, where
/// `pad = 9` leaves room for the end tick labels; row `pad + r` shows `colormap` at
/// `t = 1 - r / (bar_height - 1)`. The canvas is `bar_height + 18` pixels high and as wide as
/// its labels need.
///
/// # Errors
/// [`crate::ReportError::Input`] if `(min, max)` is not a finite increasing range or
/// `bar_height` is below 2 or above [`MAX_SIDE`].
pub fn colour_bar(
    colormap: Colormap,
    min: f64,
    max: f64,
    label: &str,
    bar_height: usize,
) -> Result<Canvas> {
    const FIGURE: &str = "colour_bar";
    check_range(FIGURE, (min, max))?;
    if !(2..=MAX_SIDE).contains(&bar_height) {
        return Err(input_error(
            FIGURE,
            format!("bar height {bar_height} is not in 2..={MAX_SIDE}"),
        ));
    }
    let th = text_height(TEXT_SCALE);
    let pad = th / 2 + 2;
    let height = bar_height + 2 * pad;
    let ticks = labelled_ticks(min, max, 5);
    let tick_w = ticks.iter().map(|(_, s)| text_width(s, TEXT_SCALE)).max().unwrap_or(0);
    let label = fit(label, height);
    let mut width = BAR_WIDTH + TICK + TICK_GAP + tick_w;
    if !label.is_empty() {
        width += GAP + th;
    }

    let mut canvas = Canvas::new(width, height, WHITE);
    let last = (bar_height - 1) as f64;
    for r in 0..bar_height {
        if let Some(colour) = colormap.rgb(1.0 - r as f64 / last) {
            canvas.hline(1, BAR_WIDTH as i64 - 2, (pad + r) as i64, 1, colour);
        }
    }
    canvas.rect_outline(0, pad as i64 - 1, BAR_WIDTH, bar_height + 2, 1, BLACK);
    for (v, text) in &ticks {
        let y = pad as i64 + ((1.0 - (v - min) / (max - min)) * last).round() as i64;
        canvas.hline(BAR_WIDTH as i64, (BAR_WIDTH + TICK) as i64 - 1, y, 1, BLACK);
        let x = (BAR_WIDTH + TICK + TICK_GAP) as i64;
        canvas.text(x, y - th as i64 / 2, text, TEXT_SCALE, Align::Left, BLACK);
    }
    let centre = (pad + bar_height / 2) as i64;
    canvas.text_vertical((width - th) as i64, centre, &label, TEXT_SCALE, Align::Centre, BLACK);
    Ok(canvas)
}
