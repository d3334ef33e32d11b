//! What the plots share: "nice" tick values, tick labels, the plot area and its axes, legends.

use super::{GAP, MARGIN, TEXT_SCALE, check_size, fit, input_error};
use crate::Result;
use crate::canvas::{Align, BLACK, Canvas, Rgb, text_height, text_width};

/// Length of a tick mark, in pixels.
const TICK: usize = 5;
/// Space between a tick mark and its label, in pixels.
const TICK_GAP: usize = 4;
/// The smallest plot area (either side) a figure accepts, in pixels.
const MIN_PLOT: usize = 40;
/// Light grey of the horizontal grid lines.
const GRID: Rgb = [232, 232, 232];

/// The 1-2-5 step (1, 2 or 5 times a power of ten) that splits `span` into about `target`
/// intervals: the smallest such step at least `span / target`.
pub(crate) fn nice_step(span: f64, target: usize) -> f64 {
    let raw = span / target.max(1) as f64;
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = if fraction <= 1.0 + 1e-9 {
        1.0
    } else if fraction <= 2.0 + 1e-9 {
        2.0
    } else if fraction <= 5.0 + 1e-9 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// The multiples of `step` in `lo..=hi` (with a relative tolerance of 1e-9 of a step).
pub(crate) fn ticks_in(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    // + 0.0 turns -0.0 into 0.0
    (first..=last).map(|k| k as f64 * step + 0.0).collect()
}

/// `(lo, hi)` widened outward to multiples of its 1-2-5 step for about `target` ticks, with
/// the ticks: the axis then starts and ends on a tick.
pub(crate) fn nice_bounds(lo: f64, hi: f64, target: usize) -> ((f64, f64), Vec<f64>) {
    let step = nice_step(hi - lo, target);
    let (lo, hi) = ((lo / step + 1e-9).floor() * step, (hi / step - 1e-9).ceil() * step);
    ((lo, hi), ticks_in(lo, hi, step))
}

/// Labels of evenly spaced `ticks`, all with the decimals their spacing needs (exponent
/// notation for very large or very small values).
pub(crate) fn tick_labels(ticks: &[f64]) -> Vec<String> {
    let step = match ticks {
        [a, b, ..] => (b - a).abs(),
        [a] if *a != 0.0 => a.abs(),
        _ => 1.0,
    };
    let largest = ticks.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let exponent = largest >= 1e6 || step < 1e-5;
    let decimals = ((-step.log10() - 1e-9).ceil().max(0.0) as usize).min(9);
    ticks
        .iter()
        .map(|&v| {
            let s = if exponent { format!("{v:.2e}") } else { format!("{v:.decimals$}") };
            // "-0.00" of a value that rounds to zero
            if s.starts_with('-') && s[1..].chars().all(|c| matches!(c, '0' | '.')) {
                s[1..].to_owned()
            } else {
                s
            }
        })
        .collect()
}

/// Ticks with labels over `lo..=hi` at a 1-2-5 step for about `target` ticks.
pub(crate) fn labelled_ticks(lo: f64, hi: f64, target: usize) -> Vec<(f64, String)> {
    let ticks = ticks_in(lo, hi, nice_step(hi - lo, target));
    let labels = tick_labels(&ticks);
    ticks.into_iter().zip(labels).collect()
}

/// Where a plot's data go: the frame of the axes and the mapping from data to pixels.
///
/// The x axis is drawn along the bottom row of the frame, the y axis along its left column.
/// Data are mapped linearly, `pad_x` and `pad_y` pixels inside the frame (so points at the ends
/// of the range are not drawn on the axes).
#[derive(Debug, Clone, PartialEq)]
pub struct PlotArea {
    /// Leftmost column of the frame (the y axis).
    pub left: usize,
    /// Top row of the frame.
    pub top: usize,
    /// Width of the frame in pixels.
    pub width: usize,
    /// Height of the frame in pixels; its bottom row is the x axis.
    pub height: usize,
    /// Data x at the left and right ends (after padding).
    pub x_range: (f64, f64),
    /// Data y at the bottom and top ends (after padding).
    pub y_range: (f64, f64),
    /// Pixels between the frame's sides and `x_range`'s ends.
    pub pad_x: usize,
    /// Pixels between the frame's top and bottom and `y_range`'s ends.
    pub pad_y: usize,
}

impl PlotArea {
    /// Column (fractional) of data x: `left + pad_x` at `x_range.0`, `right() - pad_x` at
    /// `x_range.1`.
    #[must_use]
    pub fn x_pixel(&self, x: f64) -> f64 {
        let (lo, hi) = self.x_range;
        let span = (self.width - 1 - 2 * self.pad_x) as f64;
        (self.left + self.pad_x) as f64 + (x - lo) / (hi - lo) * span
    }

    /// Row (fractional) of data y: `bottom() - pad_y` at `y_range.0`, `top + pad_y` at
    /// `y_range.1`.
    #[must_use]
    pub fn y_pixel(&self, y: f64) -> f64 {
        let (lo, hi) = self.y_range;
        let span = (self.height - 1 - 2 * self.pad_y) as f64;
        (self.bottom() - self.pad_y) as f64 - (y - lo) / (hi - lo) * span
    }

    /// Rightmost column of the frame.
    #[must_use]
    pub fn right(&self) -> usize {
        self.left + self.width - 1
    }

    /// Bottom row of the frame (the x axis).
    #[must_use]
    pub fn bottom(&self) -> usize {
        self.top + self.height - 1
    }

    /// Fills the part of the rectangle at (`x`, `y`) of `w` × `h` pixels that lies inside the
    /// frame: data never spill over the axes.
    pub(crate) fn fill_clipped(
        &self,
        canvas: &mut Canvas,
        x: i64,
        y: i64,
        w: i64,
        h: i64,
        colour: Rgb,
    ) {
        let x0 = x.max(self.left as i64);
        let y0 = y.max(self.top as i64);
        let x1 = (x + w).min(self.right() as i64 + 1);
        let y1 = (y + h).min(self.bottom() as i64 + 1);
        if x1 > x0 && y1 > y0 {
            canvas.fill_rect(x0, y0, (x1 - x0) as usize, (y1 - y0) as usize, colour);
        }
    }
}

/// Everything a plot's frame needs besides its data.
pub(crate) struct AxesSpec<'a> {
    pub(crate) figure: &'static str,
    pub(crate) width: usize,
    pub(crate) height: usize,
    pub(crate) title: &'a str,
    pub(crate) x_label: &'a str,
    pub(crate) y_label: &'a str,
    pub(crate) x_range: (f64, f64),
    pub(crate) y_range: (f64, f64),
    pub(crate) x_ticks: Vec<(f64, String)>,
    pub(crate) y_ticks: Vec<(f64, String)>,
    /// Width of a legend to the right of the plot, 0 for none.
    pub(crate) legend_width: usize,
    pub(crate) pad_x: usize,
    pub(crate) pad_y: usize,
}

/// A plot's frame, placed: the area, and the ticks and labels to draw around it.
pub(crate) struct Axes {
    pub(crate) area: PlotArea,
    title: String,
    x_label: String,
    y_label: String,
    x_ticks: Vec<(f64, String)>,
    /// Draw every `x_label_every`-th x tick label (1: all).
    x_label_every: usize,
    x_vertical: bool,
    y_ticks: Vec<(f64, String)>,
}

impl Axes {
    /// Places the frame in a `width` × `height` figure: margins for the title, tick labels,
    /// axis labels and legend. X tick labels are turned vertical when they would overlap side
    /// by side, and thinned when even vertical ones would.
    pub(crate) fn plan(spec: AxesSpec<'_>) -> Result<Axes> {
        check_size(spec.figure, spec.width, spec.height)?;
        let th = text_height(TEXT_SCALE);
        let label = |s: &str| fit(s, spec.width.saturating_sub(2 * MARGIN));
        let (title, x_label, y_label) =
            (label(spec.title), label(spec.x_label), label(spec.y_label));
        let shorten_ticks = |ticks: Vec<(f64, String)>| -> Vec<(f64, String)> {
            ticks.into_iter().map(|(v, s)| (v, fit(&s, 20 * 12))).collect()
        };
        let (x_ticks, y_ticks) = (shorten_ticks(spec.x_ticks), shorten_ticks(spec.y_ticks));
        let widest = |ticks: &[(f64, String)]| {
            ticks.iter().map(|(_, s)| text_width(s, TEXT_SCALE)).max().unwrap_or(0)
        };
        let (x_tick_w, y_tick_w) = (widest(&x_ticks), widest(&y_ticks));

        let top = MARGIN + if title.is_empty() { 0 } else { th + GAP };
        let left =
            MARGIN + if y_label.is_empty() { 0 } else { th + GAP } + y_tick_w + TICK_GAP + TICK;
        let overhang = (x_tick_w / 2).saturating_sub(spec.pad_x);
        let legend = if spec.legend_width > 0 { GAP + spec.legend_width } else { 0 };
        let right = MARGIN + overhang + legend;
        let too_small = || {
            input_error(
                spec.figure,
                format!(
                    "{}×{} pixels leave no room for the plot beside its labels",
                    spec.width, spec.height
                ),
            )
        };
        let width = spec
            .width
            .checked_sub(left + right)
            .filter(|&w| w >= MIN_PLOT)
            .ok_or_else(too_small)?;
        let mut area = PlotArea {
            left,
            top,
            width,
            height: MIN_PLOT,
            x_range: spec.x_range,
            y_range: spec.y_range,
            pad_x: spec.pad_x,
            pad_y: spec.pad_y,
        };

        let mut columns: Vec<f64> = x_ticks.iter().map(|&(v, _)| area.x_pixel(v)).collect();
        columns.sort_by(f64::total_cmp);
        let spacing = columns.windows(2).map(|w| w[1] - w[0]).fold(f64::INFINITY, f64::min);
        let x_vertical = (x_tick_w + 2 * TICK_GAP) as f64 > spacing;
        let x_label_every = if x_vertical {
            ((th + TICK_GAP) as f64 / spacing.max(1.0)).ceil().max(1.0) as usize
        } else {
            1
        };
        let tick_band = match (x_ticks.is_empty(), x_vertical) {
            (true, _) => 0,
            (false, true) => x_tick_w,
            (false, false) => th,
        };
        let bottom =
            TICK + TICK_GAP + tick_band + if x_label.is_empty() { 0 } else { GAP + th } + MARGIN;
        area.height = spec
            .height
            .checked_sub(top + bottom)
            .filter(|&h| h >= MIN_PLOT)
            .ok_or_else(too_small)?;
        Ok(Axes { area, title, x_label, y_label, x_ticks, x_label_every, x_vertical, y_ticks })
    }

    /// Light horizontal lines at the y ticks, to be drawn under the data.
    pub(crate) fn draw_grid(&self, canvas: &mut Canvas) {
        let a = &self.area;
        for &(v, _) in &self.y_ticks {
            let y = a.y_pixel(v).round() as i64;
            canvas.hline(a.left as i64 + 1, a.right() as i64, y, 1, GRID);
        }
    }

    /// The axes, ticks, tick labels, axis labels and title, to be drawn over the data.
    pub(crate) fn draw(&self, canvas: &mut Canvas) {
        let a = &self.area;
        let th = text_height(TEXT_SCALE) as i64;
        let (left, bottom) = (a.left as i64, a.bottom() as i64);
        canvas.vline(left, a.top as i64, bottom, 1, BLACK);
        canvas.hline(left, a.right() as i64, bottom, 1, BLACK);
        for (v, label) in &self.y_ticks {
            let y = a.y_pixel(*v).round() as i64;
            canvas.hline(left - TICK as i64, left - 1, y, 1, BLACK);
            let x = left - (TICK + TICK_GAP) as i64;
            canvas.text(x, y - th / 2, label, TEXT_SCALE, Align::Right, BLACK);
        }
        let label_top = bottom + (TICK + TICK_GAP) as i64;
        for (i, (v, label)) in self.x_ticks.iter().enumerate() {
            let x = a.x_pixel(*v).round() as i64;
            canvas.vline(x, bottom + 1, bottom + TICK as i64, 1, BLACK);
            if i % self.x_label_every != 0 {
                continue;
            }
            if self.x_vertical {
                canvas.text_vertical(x - th / 2, label_top, label, TEXT_SCALE, Align::Right, BLACK);
            } else {
                canvas.text(x, label_top, label, TEXT_SCALE, Align::Centre, BLACK);
            }
        }
        let centre_x = (a.left + a.width / 2) as i64;
        let height = canvas.height as i64;
        canvas.text(
            centre_x,
            height - (MARGIN as i64) - th,
            &self.x_label,
            TEXT_SCALE,
            Align::Centre,
            BLACK,
        );
        let centre_y = (a.top + a.height / 2) as i64;
        canvas.text_vertical(
            MARGIN as i64,
            centre_y,
            &self.y_label,
            TEXT_SCALE,
            Align::Centre,
            BLACK,
        );
        let centre = (canvas.width / 2) as i64;
        canvas.text(centre, MARGIN as i64, &self.title, TEXT_SCALE, Align::Centre, BLACK);
    }
}

/// How a legend entry shows its colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    /// A filled square (areas, categories).
    Swatch,
    /// A short thick line with a point marker (series).
    Line,
}

/// A legend: one row per entry, its mark then its label.
#[derive(Debug, Clone, Default)]
pub(crate) struct Legend {
    entries: Vec<(Mark, Rgb, String)>,
}

/// Width of the mark column of a legend.
const MARK_WIDTH: usize = 24;
/// Side of a legend's swatch.
const SWATCH: usize = 14;
/// Height of a legend row.
const ROW: usize = 20;

impl Legend {
    /// Adds an entry (labels are shortened to 48 characters).
    pub(crate) fn push(&mut self, mark: Mark, colour: Rgb, label: &str) {
        self.entries.push((mark, colour, fit(label, usize::MAX)));
    }

    /// Width and height in pixels; (0, 0) when empty.
    pub(crate) fn size(&self) -> (usize, usize) {
        if self.entries.is_empty() {
            return (0, 0);
        }
        let label =
            self.entries.iter().map(|(_, _, s)| text_width(s, TEXT_SCALE)).max().unwrap_or(0);
        (MARK_WIDTH + TICK_GAP + 2 + label, self.entries.len() * ROW - (ROW - SWATCH))
    }

    /// Draws the legend with its top-left corner at (`x`, `y`).
    pub(crate) fn draw(&self, canvas: &mut Canvas, x: i64, y: i64) {
        let th = text_height(TEXT_SCALE) as i64;
        for (i, (mark, colour, label)) in self.entries.iter().enumerate() {
            let row = y + (i * ROW) as i64;
            let middle = row + SWATCH as i64 / 2;
            match mark {
                Mark::Swatch => {
                    let sx = x + ((MARK_WIDTH - SWATCH) / 2) as i64;
                    canvas.fill_rect(sx, row, SWATCH, SWATCH, *colour);
                }
                Mark::Line => {
                    canvas.hline(x, x + MARK_WIDTH as i64 - 1, middle, 2, *colour);
                    canvas.fill_rect(x + MARK_WIDTH as i64 / 2 - 2, middle - 2, 5, 5, *colour);
                }
            }
            let tx = x + (MARK_WIDTH + TICK_GAP + 2) as i64;
            canvas.text(tx, middle - th / 2, label, TEXT_SCALE, Align::Left, BLACK);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_one_two_five() {
        assert_eq!(nice_step(1.0, 5), 0.2);
        assert_eq!(nice_step(10.0, 5), 2.0);
        assert_eq!(nice_step(0.37, 5), 0.1);
        assert_eq!(nice_step(2.3, 5), 0.5);
        assert_eq!(nice_step(70.0, 5), 20.0);
        assert_eq!(nice_step(0.0, 5), 1.0);
    }

    #[test]
    fn ticks_are_multiples_of_the_step_inside_the_range() {
        assert_eq!(ticks_in(-0.05, 0.37, 0.1), vec![0.0, 0.1, 0.2, 0.30000000000000004]);
        assert_eq!(ticks_in(0.0, 1.0, 0.2).len(), 6);
        let ((lo, hi), ticks) = nice_bounds(0.03, 0.91, 5);
        assert_eq!((lo, hi), (0.0, 1.0));
        assert_eq!(ticks.len(), 6);
        let ((lo, hi), _) = nice_bounds(-3.0, 7.0, 5);
        assert_eq!((lo, hi), (-4.0, 8.0));
        assert!(ticks_in(-1.0, 1.0, 0.5).iter().all(|v| !(v.is_sign_negative() && *v == 0.0)));
    }

    #[test]
    fn labels_carry_the_decimals_of_the_step() {
        assert_eq!(tick_labels(&ticks_in(0.0, 0.37, 0.1)), ["0.0", "0.1", "0.2", "0.3"]);
        assert_eq!(tick_labels(&[0.0, 0.05, 0.1]), ["0.00", "0.05", "0.10"]);
        assert_eq!(tick_labels(&[-10.0, 0.0, 10.0]), ["-10", "0", "10"]);
        assert_eq!(tick_labels(&[0.0, 2e6]), ["0.00e0", "2.00e6"]);
        assert_eq!(tick_labels(&[-1e-12, 0.5]), ["0.0", "0.5"]);
    }

    #[test]
    fn plot_area_maps_range_ends_to_padded_frame() {
        let a = PlotArea {
            left: 10,
            top: 5,
            width: 101,
            height: 51,
            x_range: (0.0, 10.0),
            y_range: (-1.0, 1.0),
            pad_x: 5,
            pad_y: 0,
        };
        assert_eq!(a.x_pixel(0.0), 15.0);
        assert_eq!(a.x_pixel(10.0), 105.0);
        assert_eq!(a.right(), 110);
        assert_eq!(a.y_pixel(-1.0), 55.0);
        assert_eq!(a.y_pixel(1.0), 5.0);
        assert_eq!(a.y_pixel(0.0), 30.0);
    }
}
