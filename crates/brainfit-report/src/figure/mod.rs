//! The report's figures. Each returns a [`Canvas`](crate::Canvas) with a white background;
//! each has a layout function (`*_layout`, `*_area`) that the renderer itself uses, so callers
//! (tests, image maps of the HTML report) know where every voxel, cell or data point was drawn.
//!
//! Sizes: plots are exactly `width` × `height` of their parameters (720 × 420 by default);
//! volume figures and heatmaps size themselves (about 120 pixels per slice side by default),
//! as their layout reports. No figure is larger than [`MAX_SIDE`] pixels on a side.

mod axes;
mod colour_bar;
mod heatmap;
mod plot;
mod volume;

pub use axes::PlotArea;
pub use colour_bar::colour_bar;
pub use heatmap::{HeatmapLayout, HeatmapParams, heatmap, heatmap_layout};
pub use plot::{
    Band, HistogramParams, LinePlotParams, Marker, Series, histogram, histogram_area, line_plot,
    line_plot_area,
};
pub use volume::{
    GlassBrainParams, MapStyle, MosaicParams, Tile, Tiling, VolumeLayout, categorical_mosaic,
    categorical_mosaic_layout, glass_brain, glass_brain_layout, slice_mosaic, slice_mosaic_layout,
};

use crate::canvas::{Rgb, text_width};
use crate::{ReportError, Result};

/// Integer scale of all text in the figures: 10 × 14 pixel glyphs.
pub const TEXT_SCALE: usize = 2;
/// Empty border around every figure, in pixels.
pub const MARGIN: usize = 12;
/// Space between the parts of a figure (tiles, plot and legend, map and colour bar), in pixels.
pub const GAP: usize = 12;
/// The largest width or height of a figure, in pixels; larger inputs are refused.
pub const MAX_SIDE: usize = 8192;

/// Brain voxels that carry no colour (below threshold, or no value to show) when there is no
/// anatomical background; also the glass brain's silhouette. Light grey, in no colormap.
pub const MASK_GREY: Rgb = [210, 210, 210];
/// The outline of the brain mask drawn around a map without anatomical background.
pub const MASK_OUTLINE: Rgb = [140, 140, 140];
/// NaN cells of a heatmap: a mid-light grey that none of the colormaps contains.
pub const NAN_GREY: Rgb = [180, 180, 180];

/// Longest label, in characters, before it is shortened with "..".
const MAX_LABEL_CHARS: usize = 48;

fn input_error(figure: &'static str, message: impl Into<String>) -> ReportError {
    ReportError::Input { figure, message: message.into() }
}

/// `text` shortened with ".." to at most `max_chars` characters.
fn shorten(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        text.to_owned()
    } else {
        let kept: String = text.chars().take(max_chars.saturating_sub(2)).collect();
        format!("{kept}..")
    }
}

/// `text` shortened so that it is at most `max_width` pixels wide at [`TEXT_SCALE`].
fn fit(text: &str, max_width: usize) -> String {
    let mut chars = text.chars().count().min(MAX_LABEL_CHARS);
    loop {
        let s = shorten(text, chars);
        if chars <= 3 || text_width(&s, TEXT_SCALE) <= max_width {
            return s;
        }
        chars -= 1;
    }
}

/// Refuses a figure wider or taller than [`MAX_SIDE`].
fn check_size(figure: &'static str, width: usize, height: usize) -> Result<()> {
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(input_error(
            figure,
            format!("the figure would be {width}×{height} pixels, more than {MAX_SIDE} on a side"),
        ));
    }
    Ok(())
}

/// Checks that a value range is finite and not empty.
fn check_range(figure: &'static str, (lo, hi): (f64, f64)) -> Result<()> {
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Err(input_error(
            figure,
            format!("range ({lo}, {hi}) is not finite and increasing"),
        ));
    }
    Ok(())
}

/// The smallest and largest non-NaN value of `values` (infinities skipped too), if any.
fn finite_extent(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    values.into_iter().filter(|v| v.is_finite()).fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// A range that can be drawn: `extent` widened by 0.5 on each side if it is a single value,
/// (0, 1) if there is none.
fn drawable_range(extent: Option<(f64, f64)>) -> (f64, f64) {
    match extent {
        None => (0.0, 1.0),
        Some((lo, hi)) if lo < hi => (lo, hi),
        Some((v, _)) => (v - 0.5, v + 0.5),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_shortens_to_the_width() {
        assert_eq!(fit("conv1", 1000), "conv1");
        let long = "features.denseblock4.denselayer16.conv2.output.relu";
        assert_eq!(fit(long, 1000).chars().count(), MAX_LABEL_CHARS);
        let s = fit(long, 100);
        assert!(s.ends_with("..") && text_width(&s, TEXT_SCALE) <= 100, "{s}");
    }

    #[test]
    fn ranges() {
        assert_eq!(finite_extent([3.0, f64::NAN, -1.0, f64::INFINITY]), Some((-1.0, 3.0)));
        assert_eq!(finite_extent([f64::NAN]), None);
        assert_eq!(drawable_range(Some((2.0, 2.0))), (1.5, 2.5));
        assert_eq!(drawable_range(None), (0.0, 1.0));
        assert!(check_range("t", (1.0, 1.0)).is_err());
        assert!(check_range("t", (0.0, f64::NAN)).is_err());
        assert!(check_range("t", (-1.0, 1.0)).is_ok());
    }
}
