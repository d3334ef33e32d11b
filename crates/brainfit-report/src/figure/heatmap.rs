//! Matrices as coloured cells (RDMs).

use ndarray::ArrayView2;

use super::{
    GAP, MARGIN, NAN_GREY, TEXT_SCALE, check_range, check_size, colour_bar, drawable_range,
    finite_extent, fit, input_error,
};
use crate::canvas::{Align, BLACK, Canvas, WHITE, text_height, text_width};
use crate::{Colormap, Result};

/// Row and column labels are drawn for matrices with at most this many rows and columns.
pub(crate) const MAX_LABELS: usize = 40;
/// The matrix is scaled to about this many pixels on its longer side.
const MATRIX_TARGET: usize = 480;
/// The largest automatic cell side, in pixels.
const MAX_CELL: usize = 40;
/// Space between the matrix and its labels.
const LABEL_GAP: usize = 6;

/// Parameters of [`heatmap`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeatmapParams {
    /// The colormap.
    pub colormap: Colormap,
    /// Values at the colormap's ends; `None`: the finite values' extent, made symmetric about
    /// zero (±largest magnitude) for [`Colormap::Diverging`].
    pub range: Option<(f64, f64)>,
    /// One label per row, written left of the matrix (empty: none); drawn only for matrices
    /// of at most 40 rows and columns.
    pub row_labels: Vec<String>,
    /// One label per column, written vertically below the matrix (empty: none); drawn only
    /// for matrices of at most 40 rows and columns.
    pub column_labels: Vec<String>,
    /// Title above the matrix (none when empty).
    pub title: String,
    /// Label of the colour bar.
    pub label: String,
    /// Pixels per cell side; `None`: about 480 pixels for the longer side of the matrix (1 to
    /// 40 per cell, at least 16 when labels are drawn).
    pub cell: Option<usize>,
}

/// Where [`heatmap`] draws its cells.
#[derive(Debug, Clone, PartialEq)]
pub struct HeatmapLayout {
    /// Width of the canvas.
    pub width: usize,
    /// Height of the canvas.
    pub height: usize,
    /// Leftmost column of the matrix.
    pub left: usize,
    /// Top row of the matrix.
    pub top: usize,
    /// Pixels per cell side.
    pub cell: usize,
    /// Rows of the matrix (top to bottom).
    pub rows: usize,
    /// Columns of the matrix (left to right).
    pub columns: usize,
    /// Top-left pixel of the colour bar.
    pub side: (usize, usize),
    /// Whether the row and column labels are drawn.
    pub labelled: bool,
    /// The colour range used.
    pub range: (f64, f64),
}

impl HeatmapLayout {
    /// Top-left pixel of cell (`row`, `column`), row 0 at the top as in the matrix.
    #[must_use]
    pub fn cell_origin(&self, row: usize, column: usize) -> (usize, usize) {
        (self.left + column * self.cell, self.top + row * self.cell)
    }
}

fn plan(matrix: ArrayView2<'_, f64>, params: &HeatmapParams) -> Result<(HeatmapLayout, Canvas)> {
    const FIGURE: &str = "heatmap";
    let (rows, columns) = matrix.dim();
    if rows == 0 || columns == 0 {
        return Err(input_error(FIGURE, "the matrix is empty"));
    }
    for (what, labels, n) in
        [("row", &params.row_labels, rows), ("column", &params.column_labels, columns)]
    {
        if !labels.is_empty() && labels.len() != n {
            return Err(input_error(
                FIGURE,
                format!("{} {what} labels for {n} {what}s", labels.len()),
            ));
        }
    }
    if params.cell == Some(0) {
        return Err(input_error(FIGURE, "the cell size must be at least 1"));
    }
    let range = match params.range {
        Some(range) => range,
        None => {
            let extent = finite_extent(matrix.iter().copied());
            match extent {
                Some((lo, hi))
                    if params.colormap.is_diverging() && lo.abs().max(hi.abs()) > 0.0 =>
                {
                    let m = lo.abs().max(hi.abs());
                    (-m, m)
                }
                _ => drawable_range(extent),
            }
        }
    };
    check_range(FIGURE, range)?;
    let labelled = rows.max(columns) <= MAX_LABELS;
    let th = text_height(TEXT_SCALE);
    let cell = params.cell.unwrap_or_else(|| {
        let auto = (MATRIX_TARGET / rows.max(columns)).clamp(1, MAX_CELL);
        if labelled && !(params.row_labels.is_empty() && params.column_labels.is_empty()) {
            auto.max(th + 2)
        } else {
            auto
        }
    });
    let widest = |labels: &[String]| {
        labels.iter().map(|s| text_width(&fit(s, usize::MAX), TEXT_SCALE)).max()
    };
    let (row_w, col_w) = if labelled {
        (widest(&params.row_labels), widest(&params.column_labels))
    } else {
        (None, None)
    };
    let top = MARGIN + if params.title.is_empty() { 0 } else { th + GAP };
    let left = MARGIN + row_w.map_or(0, |w| w + LABEL_GAP);
    let (mw, mh) = (columns.saturating_mul(cell), rows.saturating_mul(cell));
    check_size(FIGURE, mw, mh)?;
    let bar = colour_bar(params.colormap, range.0, range.1, &params.label, mh.clamp(100, 400))?;
    let side = (left + mw + GAP, top);
    let width =
        (side.0 + bar.width + MARGIN).max(text_width(&params.title, TEXT_SCALE) + 2 * MARGIN);
    let below = col_w.map_or(0, |w| w + LABEL_GAP);
    let height = (top + mh + below).max(top + bar.height) + MARGIN;
    check_size(FIGURE, width, height)?;
    let layout =
        HeatmapLayout { width, height, left, top, cell, rows, columns, side, labelled, range };
    Ok((layout, bar))
}

/// The layout [`heatmap`] draws with.
///
/// # Errors
/// As [`heatmap`].
pub fn heatmap_layout(
    matrix: ArrayView2<'_, f64>,
    params: &HeatmapParams,
) -> Result<HeatmapLayout> {
    Ok(plan(matrix, params)?.0)
}

/// A matrix (an RDM) as a grid of cells, row 0 at the top, coloured by `params.colormap` on
/// the range; NaN cells are [`NAN_GREY`]. A colour bar is on the right, the title above
/// (left-aligned), row labels on the left and column labels (vertical) below when the matrix
/// has at most 40 rows and columns.
///
/// # Errors
/// [`crate::ReportError::Input`] for an empty matrix, label counts that differ from the
/// matrix's, a range that is not finite and increasing, a zero cell size, or a figure over
/// [`super::MAX_SIDE`].
pub fn heatmap(matrix: ArrayView2<'_, f64>, params: &HeatmapParams) -> Result<Canvas> {
    let (layout, bar) = plan(matrix, params)?;
    let (lo, hi) = layout.range;
    let mut canvas = Canvas::new(layout.width, layout.height, WHITE);
    let cell = layout.cell;
    for ((r, c), &v) in matrix.indexed_iter() {
        let colour = params.colormap.rgb_in(v, lo, hi).unwrap_or(NAN_GREY);
        let (x, y) = layout.cell_origin(r, c);
        canvas.fill_rect(x as i64, y as i64, cell, cell, colour);
    }
    let (left, top) = (layout.left as i64, layout.top as i64);
    let (mw, mh) = (layout.columns * cell, layout.rows * cell);
    canvas.rect_outline(left - 1, top - 1, mw + 2, mh + 2, 1, BLACK);
    let th = text_height(TEXT_SCALE) as i64;
    if layout.labelled {
        for (r, label) in params.row_labels.iter().enumerate() {
            let y = top + (r * cell + cell / 2) as i64 - th / 2;
            canvas.text(
                left - LABEL_GAP as i64,
                y,
                &fit(label, usize::MAX),
                TEXT_SCALE,
                Align::Right,
                BLACK,
            );
        }
        for (c, label) in params.column_labels.iter().enumerate() {
            let x = left + (c * cell + cell / 2) as i64 - th / 2;
            let y = top + (mh + LABEL_GAP) as i64;
            canvas.text_vertical(x, y, &fit(label, usize::MAX), TEXT_SCALE, Align::Right, BLACK);
        }
    }
    canvas.text(MARGIN as i64, MARGIN as i64, &params.title, TEXT_SCALE, Align::Left, BLACK);
    canvas.blit(&bar, layout.side.0 as i64, layout.side.1 as i64, 1);
    Ok(canvas)
}
