//! Plots with axes: line plots (model comparisons over layers or time) and histograms
//! (permutation null distributions).

use super::axes::{
    Axes, AxesSpec, Legend, Mark, PlotArea, labelled_ticks, nice_bounds, nice_step, tick_labels,
    ticks_in,
};
use super::{check_range, drawable_range, finite_extent, fit, input_error};
use crate::Result;
use crate::canvas::{Align, BLACK, Canvas, Rgb, WHITE, bresenham, text_height, text_width};
use crate::colormap::{OKABE_ITO, categorical};

/// Shade of the horizontal band (the noise ceiling).
pub(crate) const BAND: Rgb = [221, 221, 221];
/// Shade of the x stretches (e.g. significant time points).
pub(crate) const SPAN: Rgb = [214, 230, 244];
/// Colour of a histogram's bars.
pub(crate) const BAR: Rgb = OKABE_ITO[4];
/// Colour of a histogram's tail bins.
pub(crate) const TAIL: Rgb = OKABE_ITO[5];
/// Inner padding of a line plot's frame, so points at the ends stay off the axes.
const PAD: usize = 8;
/// Series with at most this many points get a marker at every point.
const MAX_MARKED: usize = 40;

/// One line of a line plot.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// Name in the legend (no legend entry when empty).
    pub name: String,
    /// X of the points.
    pub x: Vec<f64>,
    /// Y of the points, as many as `x`; a NaN (in either) breaks the line.
    pub y: Vec<f64>,
}

/// A horizontal band shaded across a line plot (e.g. the noise ceiling's lower and upper
/// bounds).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Band {
    /// Lower y.
    pub lower: f64,
    /// Upper y.
    pub upper: f64,
    /// Name in the legend (no legend entry when empty).
    pub label: String,
}

/// Parameters of [`line_plot`].
#[derive(Debug, Clone, PartialEq)]
pub struct LinePlotParams {
    /// Title above the plot (none when empty).
    pub title: String,
    /// Label of the x axis.
    pub x_label: String,
    /// Label of the y axis.
    pub y_label: String,
    /// X ticks as (x, label) pairs, e.g. layer names at x = 0, 1, 2, …; `None`: numeric ticks
    /// at 1-2-5 steps.
    pub x_ticks: Option<Vec<(f64, String)>>,
    /// The y range (lower, upper); `None`: the data's and the band's, widened to 1-2-5 ticks.
    pub y_range: Option<(f64, f64)>,
    /// A horizontal band shaded grey.
    pub band: Option<Band>,
    /// X stretches (from, to) shaded light blue over the plot's height.
    pub spans: Vec<(f64, f64)>,
    /// Name of the stretches in the legend (no legend entry when empty).
    pub spans_label: String,
    /// Width of the figure in pixels.
    pub width: usize,
    /// Height of the figure in pixels.
    pub height: usize,
}

impl Default for LinePlotParams {
    /// No labels, ticks or shading; 720 × 420 pixels.
    fn default() -> Self {
        LinePlotParams {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            x_ticks: None,
            y_range: None,
            band: None,
            spans: Vec::new(),
            spans_label: String::new(),
            width: 720,
            height: 420,
        }
    }
}

/// A value marked on a histogram's x axis.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Marker {
    /// The x value.
    pub value: f64,
    /// Its label (none when empty).
    pub label: String,
}

/// Parameters of [`histogram`].
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramParams {
    /// Number of bins, of equal width from the smallest to the largest value.
    pub bins: usize,
    /// Title above the plot (none when empty).
    pub title: String,
    /// Label of the x axis.
    pub x_label: String,
    /// Label of the y axis.
    pub y_label: String,
    /// A vertical line at a value (e.g. the observed maximum), its label next to it; the x
    /// axis extends to include it.
    pub marker: Option<Marker>,
    /// Bins whose centre is at or above this value (the tail, e.g. beyond the 95th percentile)
    /// are drawn in vermillion instead of blue; the label names them in a legend.
    pub tail: Option<Marker>,
    /// Width of the figure in pixels.
    pub width: usize,
    /// Height of the figure in pixels.
    pub height: usize,
}

impl Default for HistogramParams {
    /// 30 bins, y label "count", no marker or tail; 720 × 420 pixels.
    fn default() -> Self {
        HistogramParams {
            bins: 30,
            title: String::new(),
            x_label: String::new(),
            y_label: "count".to_owned(),
            marker: None,
            tail: None,
            width: 720,
            height: 420,
        }
    }
}

/// A line plot, placed.
struct LinePlan {
    axes: Axes,
    legend: Legend,
}

fn line_plan(series: &[Series], params: &LinePlotParams) -> Result<LinePlan> {
    const FIGURE: &str = "line_plot";
    for s in series {
        if s.x.len() != s.y.len() {
            let (nx, ny) = (s.x.len(), s.y.len());
            return Err(input_error(FIGURE, format!("series {:?} has {nx} x and {ny} y", s.name)));
        }
    }
    let tick_xs = params.x_ticks.iter().flatten().map(|(x, _)| *x);
    let x_range = drawable_range(finite_extent(
        series.iter().flat_map(|s| s.x.iter().copied()).chain(tick_xs),
    ));
    let (y_range, y_ticks) = if let Some(range) = params.y_range {
        check_range(FIGURE, range)?;
        (range, labelled_ticks(range.0, range.1, 5))
    } else {
        let points = series
            .iter()
            .flat_map(|s| s.x.iter().zip(&s.y).filter(|(x, _)| !x.is_nan()).map(|(_, y)| *y));
        let band = params.band.iter().flat_map(|b| [b.lower, b.upper]);
        let (lo, hi) = drawable_range(finite_extent(points.chain(band)));
        let (range, ticks) = nice_bounds(lo, hi, 5);
        let labels = tick_labels(&ticks);
        (range, ticks.into_iter().zip(labels).collect())
    };
    let x_ticks = match &params.x_ticks {
        Some(ticks) => ticks.clone(),
        None => labelled_ticks(x_range.0, x_range.1, 6),
    };

    let mut legend = Legend::default();
    for (i, s) in series.iter().enumerate().filter(|(_, s)| !s.name.is_empty()) {
        legend.push(Mark::Line, categorical(i), &s.name);
    }
    if let Some(band) = params.band.as_ref().filter(|b| !b.label.is_empty()) {
        legend.push(Mark::Swatch, BAND, &band.label);
    }
    if !params.spans.is_empty() && !params.spans_label.is_empty() {
        legend.push(Mark::Swatch, SPAN, &params.spans_label);
    }
    let axes = Axes::plan(AxesSpec {
        figure: FIGURE,
        width: params.width,
        height: params.height,
        title: &params.title,
        x_label: &params.x_label,
        y_label: &params.y_label,
        x_range,
        y_range,
        x_ticks,
        y_ticks,
        legend_width: legend.size().0,
        pad_x: PAD,
        pad_y: PAD,
    })?;
    Ok(LinePlan { axes, legend })
}

/// Where [`line_plot`] draws its data.
///
/// # Errors
/// As [`line_plot`].
pub fn line_plot_area(series: &[Series], params: &LinePlotParams) -> Result<PlotArea> {
    Ok(line_plan(series, params)?.axes.area)
}

/// Lines over x, one per series (colours [`categorical`]`(i)` for series `i`), 2 pixels
/// thick, with a 5 × 5 marker on every point of series of up to 40 points and on every point
/// between NaNs. The figure is `params.width` × `params.height` pixels; the x range is the
/// data's (and the x ticks'), the y range `params.y_range` or the data's and the band's
/// widened to 1-2-5 ticks. Under the lines: the band in grey, the spans in light blue and
/// light grid lines at the y ticks. A legend on the right names the series, band and spans
/// that have a name. X tick labels that do not fit side by side are written vertically.
///
/// # Errors
/// [`crate::ReportError::Input`] for a series with different numbers of x and y, a `y_range`
/// that is not finite and increasing, or a figure too small for its labels (or over
/// [`super::MAX_SIDE`]).
pub fn line_plot(series: &[Series], params: &LinePlotParams) -> Result<Canvas> {
    let LinePlan { axes, legend } = line_plan(series, params)?;
    let a = &axes.area;
    let mut canvas = Canvas::new(params.width, params.height, WHITE);
    let (top, height) = (a.top as i64, a.height as i64);
    axes.draw_grid(&mut canvas);
    for &(from, to) in &params.spans {
        let (x0, x1) =
            (a.x_pixel(from.min(to)).round() as i64, a.x_pixel(from.max(to)).round() as i64);
        a.fill_clipped(&mut canvas, x0, top, x1 - x0 + 1, height, SPAN);
    }
    if let Some(band) = &params.band {
        let y0 = a.y_pixel(band.lower.max(band.upper)).round() as i64;
        let y1 = a.y_pixel(band.lower.min(band.upper)).round() as i64;
        a.fill_clipped(&mut canvas, a.left as i64, y0, a.width as i64, y1 - y0 + 1, BAND);
    }
    for (i, s) in series.iter().enumerate() {
        draw_series(&mut canvas, a, s, categorical(i));
    }
    axes.draw(&mut canvas);
    legend.draw(&mut canvas, (a.right() + super::GAP) as i64, a.top as i64);
    Ok(canvas)
}

/// One series: segments between consecutive finite points, markers where due.
fn draw_series(canvas: &mut Canvas, a: &PlotArea, s: &Series, colour: Rgb) {
    let points: Vec<Option<(i64, i64)>> =
        s.x.iter()
            .zip(&s.y)
            .map(|(&x, &y)| {
                (x.is_finite() && y.is_finite())
                    .then(|| (a.x_pixel(x).round() as i64, a.y_pixel(y).round() as i64))
            })
            .collect();
    let mark_all = points.iter().flatten().count() <= MAX_MARKED;
    for (i, p) in points.iter().enumerate() {
        let Some((x, y)) = *p else { continue };
        if let Some(Some((x1, y1))) = points.get(i + 1) {
            bresenham(x, y, *x1, *y1, |px, py| a.fill_clipped(canvas, px, py, 2, 2, colour));
        }
        let isolated = i.checked_sub(1).is_none_or(|j| points[j].is_none())
            && points.get(i + 1).is_none_or(Option::is_none);
        if mark_all || isolated {
            a.fill_clipped(canvas, x - 2, y - 2, 5, 5, colour);
        }
    }
}

/// A histogram, placed.
struct HistogramPlan {
    axes: Axes,
    legend: Legend,
    /// Bin edges, `bins + 1` of them.
    edges: Vec<f64>,
    counts: Vec<usize>,
}

fn histogram_plan(values: &[f64], params: &HistogramParams) -> Result<HistogramPlan> {
    const FIGURE: &str = "histogram";
    if params.bins == 0 {
        return Err(input_error(FIGURE, "bins must be at least 1"));
    }
    let Some(extent) = finite_extent(values.iter().copied()) else {
        return Err(input_error(FIGURE, "no finite value"));
    };
    let (lo, hi) = drawable_range(Some(extent));
    let n = params.bins;
    let edges: Vec<f64> = (0..=n).map(|b| lo + (hi - lo) * b as f64 / n as f64).collect();
    let mut counts = vec![0usize; n];
    for v in values.iter().filter(|v| v.is_finite()) {
        counts[(((v - lo) / (hi - lo) * n as f64) as usize).min(n - 1)] += 1;
    }
    let marked = params.marker.iter().map(|m| m.value).filter(|v| v.is_finite());
    let x_range = drawable_range(finite_extent([lo, hi].into_iter().chain(marked)));
    let top = counts.iter().copied().max().unwrap_or(1) as f64;
    // whole counts: steps of at least 1
    let step = nice_step(top, 5).max(1.0);
    let y_max = (top / step).ceil() * step;
    let ticks = ticks_in(0.0, y_max, step);
    let y_ticks = ticks.iter().copied().zip(tick_labels(&ticks)).collect();

    let mut legend = Legend::default();
    if let Some(tail) = params.tail.as_ref().filter(|t| !t.label.is_empty()) {
        legend.push(Mark::Swatch, TAIL, &tail.label);
    }
    let axes = Axes::plan(AxesSpec {
        figure: FIGURE,
        width: params.width,
        height: params.height,
        title: &params.title,
        x_label: &params.x_label,
        y_label: &params.y_label,
        x_range,
        y_range: (0.0, y_max),
        x_ticks: labelled_ticks(x_range.0, x_range.1, 6),
        y_ticks,
        legend_width: legend.size().0,
        pad_x: PAD,
        pad_y: 0,
    })?;
    Ok(HistogramPlan { axes, legend, edges, counts })
}

/// Where [`histogram`] draws its bars.
///
/// # Errors
/// As [`histogram`].
pub fn histogram_area(values: &[f64], params: &HistogramParams) -> Result<PlotArea> {
    Ok(histogram_plan(values, params)?.axes.area)
}

/// A histogram of the finite `values` (NaN and infinities are left out) in `params.bins`
/// bins of equal width from the smallest to the largest value (the largest value falls in
/// the last bin). Bin `b` is a bar from x = `edges[b]` to `edges[b + 1]` and from the x axis
/// up to its count; the y axis counts in whole steps. The figure is `params.width` ×
/// `params.height` pixels.
///
/// # Errors
/// [`crate::ReportError::Input`] for no finite value, zero bins, or a figure too small for
/// its labels (or over [`super::MAX_SIDE`]).
pub fn histogram(values: &[f64], params: &HistogramParams) -> Result<Canvas> {
    let HistogramPlan { axes, legend, edges, counts } = histogram_plan(values, params)?;
    let a = &axes.area;
    let mut canvas = Canvas::new(params.width, params.height, WHITE);
    axes.draw_grid(&mut canvas);
    let base = a.bottom() as i64;
    for (b, &count) in counts.iter().enumerate() {
        let (x0, x1) = (a.x_pixel(edges[b]).round() as i64, a.x_pixel(edges[b + 1]).round() as i64);
        // a one-pixel gap between bars that are wide enough
        let gap = i64::from(x1 - x0 >= 4);
        let y = a.y_pixel(count as f64).round() as i64;
        let tail = params.tail.as_ref().is_some_and(|t| (edges[b] + edges[b + 1]) / 2.0 >= t.value);
        a.fill_clipped(
            &mut canvas,
            x0,
            y,
            x1 - x0 + 1 - gap,
            base - y,
            if tail { TAIL } else { BAR },
        );
    }
    axes.draw(&mut canvas);
    if let Some(marker) = params.marker.as_ref().filter(|m| m.value.is_finite()) {
        let x = a.x_pixel(marker.value).round() as i64;
        canvas.vline(x, a.top as i64, base - 1, 2, BLACK);
        let label = fit(&marker.label, a.width / 2);
        let w = text_width(&label, super::TEXT_SCALE) as i64;
        let (lx, align) = if x + 6 + w <= a.right() as i64 {
            (x + 6, Align::Left)
        } else {
            (x - 6, Align::Right)
        };
        let left = if align == Align::Left { lx } else { lx - w + 1 };
        let th = text_height(super::TEXT_SCALE);
        canvas.fill_rect(left - 2, a.top as i64 + 2, w as usize + 4, th + 4, WHITE);
        canvas.text(lx, a.top as i64 + 4, &label, super::TEXT_SCALE, align, BLACK);
    }
    legend.draw(&mut canvas, (a.right() + super::GAP) as i64, a.top as i64);
    Ok(canvas)
}
