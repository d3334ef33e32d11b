//! Brain-volume figures: slice mosaics, glass-brain projections and categorical maps.
//!
//! Each tile shows a 2-D grid of voxels, `columns` wide (the volume's first kept axis, left to
//! right) and `rows` high (its second kept axis, bottom to top), every voxel a `scale` ×
//! `scale` block of pixels.

use ndarray::{ArrayView1, ArrayView2, ArrayView3, Axis};

use super::axes::{Legend, Mark};
use super::{
    GAP, MARGIN, MASK_GREY, MASK_OUTLINE, TEXT_SCALE, check_range, check_size, colour_bar,
    input_error,
};
use crate::Result;
use crate::canvas::{Align, BLACK, Canvas, Rgb, WHITE, text_height, text_width};
use crate::colormap::{Colormap, categorical};

/// Tiles are scaled so that their longer side is at least this many pixels.
const TILE_TARGET: usize = 120;
/// Space between a tile's label and its image.
const LABEL_GAP: usize = 4;

/// How a continuous map is coloured.
#[derive(Debug, Clone, PartialEq)]
pub struct MapStyle {
    /// The colormap.
    pub colormap: Colormap,
    /// Values mapped to the colormap's ends (lower, upper); values beyond take the end colours.
    pub range: (f64, f64),
    /// Values below it are not coloured: `value < threshold` for a sequential map,
    /// `|value| < threshold` for [`Colormap::Diverging`]. `None`: all values are coloured.
    pub threshold: Option<f64>,
    /// Label of the colour bar (what the values are, e.g. "R²").
    pub label: String,
}

impl Default for MapStyle {
    /// viridis on (0, 1), no threshold, no label.
    fn default() -> Self {
        MapStyle {
            colormap: Colormap::Viridis,
            range: (0.0, 1.0),
            threshold: None,
            label: String::new(),
        }
    }
}

impl MapStyle {
    /// The colour of `value`: `None` for NaN and for values below the threshold.
    #[must_use]
    pub fn colour(&self, value: f64) -> Option<Rgb> {
        let shown = match self.threshold {
            None => true,
            Some(t) if self.colormap.is_diverging() => value.abs() >= t,
            Some(t) => value >= t,
        };
        if shown { self.colormap.rgb_in(value, self.range.0, self.range.1) } else { None }
    }

    fn check(&self, figure: &'static str) -> Result<()> {
        check_range(figure, self.range)?;
        if self.threshold.is_some_and(|t| !t.is_finite()) {
            return Err(input_error(figure, "the threshold is not finite"));
        }
        Ok(())
    }
}

/// How the slices of a mosaic are chosen, scaled and laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tiling {
    /// Pixels per voxel side; `None`: the smallest integer making a slice's longer side at
    /// least 120 pixels.
    pub scale: Option<usize>,
    /// The most slices shown: with more non-empty slices, this many are taken evenly spaced
    /// from the first to the last.
    pub max_slices: usize,
    /// Tiles per row; `None`: as many as fit in `max_width`.
    pub columns: Option<usize>,
    /// Width in pixels that the rows of tiles may take when `columns` is `None`.
    pub max_width: usize,
}

impl Default for Tiling {
    /// Automatic scale, at most 24 slices, rows of up to 1200 pixels.
    fn default() -> Self {
        Tiling { scale: None, max_slices: 24, columns: None, max_width: 1200 }
    }
}

/// Parameters of [`slice_mosaic`].
#[derive(Debug, Clone, Default)]
pub struct MosaicParams<'a> {
    /// Colours of the values.
    pub map: MapStyle,
    /// Voxels whose regions are outlined (e.g. significant after correction), same shape as
    /// the values. The outline is drawn on the region's own border pixels (inside it), so it
    /// never hides a voxel outside the region.
    pub significant: Option<ArrayView3<'a, bool>>,
    /// Colour of the outline of `significant` (the default `[0, 0, 0]` is black).
    pub outline: Rgb,
    /// Slices, scale and layout.
    pub tiling: Tiling,
}

/// Parameters of [`glass_brain`].
#[derive(Debug, Clone, Default)]
pub struct GlassBrainParams {
    /// Colours of the projected values.
    pub map: MapStyle,
    /// Pixels per voxel side; `None`: the smallest integer making the longest side at least
    /// 120 pixels.
    pub scale: Option<usize>,
}

/// One tile of a volume figure: a slice or a projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tile {
    /// The slice index `k` (mosaics) or the axis projected over (glass brain: 2, 1, 0).
    pub index: usize,
    /// The label written above the tile.
    pub label: String,
    /// Leftmost pixel column of the image.
    pub x: usize,
    /// Top pixel row of the image (below the label).
    pub y: usize,
    /// Voxels across (left to right).
    pub columns: usize,
    /// Voxels up (bottom to top).
    pub rows: usize,
    /// Pixels per voxel side.
    pub scale: usize,
}

impl Tile {
    /// Top-left pixel of the `scale` × `scale` block of voxel (`column`, `row`), `row` counted
    /// from the bottom: `(x + column * scale, y + (rows - 1 - row) * scale)`.
    #[must_use]
    pub fn cell_origin(&self, column: usize, row: usize) -> (usize, usize) {
        (self.x + column * self.scale, self.y + (self.rows - 1 - row) * self.scale)
    }

    /// Width of the image in pixels.
    #[must_use]
    pub fn pixel_width(&self) -> usize {
        self.columns * self.scale
    }

    /// Height of the image in pixels.
    #[must_use]
    pub fn pixel_height(&self) -> usize {
        self.rows * self.scale
    }
}

/// Where a volume figure draws its tiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeLayout {
    /// Width of the canvas.
    pub width: usize,
    /// Height of the canvas.
    pub height: usize,
    /// The tiles, row by row from the top left.
    pub tiles: Vec<Tile>,
    /// Top-left pixel of the colour bar or legend, right of the tiles.
    pub side: (usize, usize),
}

/// A tile before placement.
struct TileSpec {
    index: usize,
    label: String,
    columns: usize,
    rows: usize,
}

/// Places `specs` in a grid (row by row, `columns` per row or as many as fit in `max_width`),
/// each image below its label.
fn arrange(
    specs: Vec<TileSpec>,
    scale: usize,
    columns: Option<usize>,
    max_width: usize,
) -> (Vec<Tile>, usize, usize) {
    let label_h = text_height(TEXT_SCALE) + LABEL_GAP;
    let cell_w = specs
        .iter()
        .map(|s| (s.columns * scale).max(text_width(&s.label, TEXT_SCALE)))
        .max()
        .unwrap_or(0);
    let cell_h = label_h + specs.iter().map(|s| s.rows * scale).max().unwrap_or(0);
    let per_row = columns
        .unwrap_or_else(|| max_width.saturating_add(GAP) / (cell_w + GAP))
        .clamp(1, specs.len().max(1));
    let n_rows = specs.len().div_ceil(per_row);
    let tiles = specs
        .into_iter()
        .enumerate()
        .map(|(t, s)| Tile {
            index: s.index,
            label: s.label,
            x: MARGIN + (t % per_row) * (cell_w + GAP),
            y: MARGIN + (t / per_row) * (cell_h + GAP) + label_h,
            columns: s.columns,
            rows: s.rows,
            scale,
        })
        .collect();
    (tiles, per_row * (cell_w + GAP) - GAP, n_rows * (cell_h + GAP) - GAP)
}

/// The layout of tiles of a `grid_w` × `grid_h` grid with `side` (colour bar, legend) to their
/// right.
fn finish(
    figure: &'static str,
    tiles: Vec<Tile>,
    grid: (usize, usize),
    side: &Canvas,
) -> Result<VolumeLayout> {
    let (grid_w, grid_h) = grid;
    let side_x = MARGIN + grid_w + GAP;
    let width = side_x + side.width + MARGIN;
    let height = 2 * MARGIN + grid_h.max(side.height);
    check_size(figure, width, height)?;
    Ok(VolumeLayout { width, height, tiles, side: (side_x, MARGIN) })
}

/// The pixels per voxel side that make the longer side at least [`TILE_TARGET`] pixels.
fn auto_scale(longest: usize) -> usize {
    TILE_TARGET.div_ceil(longest.max(1)).max(1)
}

/// A colour bar about as tall as the tiles (100 to 400 pixels of colours), for a style whose
/// range was checked.
fn side_colour_bar(map: &MapStyle, grid_h: usize) -> Result<Canvas> {
    let bar = grid_h.saturating_sub(2 * text_height(TEXT_SCALE)).clamp(100, 400);
    colour_bar(map.colormap, map.range.0, map.range.1, &map.label, bar)
}

fn check_volume<T>(
    figure: &'static str,
    what: &str,
    v: &ArrayView3<'_, T>,
    shape: (usize, usize, usize),
) -> Result<()> {
    if v.dim() != shape {
        return Err(input_error(
            figure,
            format!("{what} has shape {:?}, the values {shape:?}", v.dim()),
        ));
    }
    Ok(())
}

fn check_tiling(figure: &'static str, tiling: &Tiling) -> Result<()> {
    if tiling.max_slices == 0 || tiling.scale == Some(0) || tiling.columns == Some(0) {
        return Err(input_error(figure, "max_slices, scale and columns must be at least 1"));
    }
    Ok(())
}

/// The slices (along the third axis) with at least one voxel in `mask`, at most
/// `tiling.max_slices` of them evenly spread.
fn slice_specs(
    figure: &'static str,
    mask: ArrayView3<'_, bool>,
    tiling: &Tiling,
) -> Result<Vec<TileSpec>> {
    let (nx, ny, nz) = mask.dim();
    let non_empty: Vec<usize> =
        (0..nz).filter(|&k| mask.index_axis(Axis(2), k).iter().any(|&m| m)).collect();
    if non_empty.is_empty() {
        return Err(input_error(figure, "no voxel is in the mask"));
    }
    let (n, m) = (non_empty.len(), tiling.max_slices);
    let chosen: Vec<usize> = if n <= m {
        non_empty
    } else if m == 1 {
        vec![non_empty[n / 2]]
    } else {
        (0..m).map(|t| non_empty[t * (n - 1) / (m - 1)]).collect()
    };
    Ok(chosen
        .into_iter()
        .map(|k| TileSpec { index: k, label: format!("k = {k}"), columns: nx, rows: ny })
        .collect())
}

/// Layout of a mosaic of the slices of `mask`, with `side` made for the grid's height.
fn mosaic_plan(
    figure: &'static str,
    mask: ArrayView3<'_, bool>,
    tiling: &Tiling,
    side: impl FnOnce(usize) -> Result<Canvas>,
) -> Result<(VolumeLayout, Canvas)> {
    check_tiling(figure, tiling)?;
    let (nx, ny, _) = mask.dim();
    let specs = slice_specs(figure, mask, tiling)?;
    let scale = tiling.scale.unwrap_or_else(|| auto_scale(nx.max(ny)));
    check_size(figure, nx.saturating_mul(scale), ny.saturating_mul(scale))?;
    let (tiles, grid_w, grid_h) = arrange(specs, scale, tiling.columns, tiling.max_width);
    let side = side(grid_h)?;
    Ok((finish(figure, tiles, (grid_w, grid_h), &side)?, side))
}

fn map_mosaic_plan(
    values: ArrayView3<'_, f32>,
    params: &MosaicParams<'_>,
) -> Result<(VolumeLayout, Canvas)> {
    const FIGURE: &str = "slice_mosaic";
    params.map.check(FIGURE)?;
    if let Some(sig) = &params.significant {
        check_volume(FIGURE, "the significance volume", sig, values.dim())?;
    }
    let mask = values.mapv(|v| !v.is_nan());
    mosaic_plan(FIGURE, mask.view(), &params.tiling, |h| side_colour_bar(&params.map, h))
}

/// The layout [`slice_mosaic`] draws with.
///
/// # Errors
/// As [`slice_mosaic`].
pub fn slice_mosaic_layout(
    values: ArrayView3<'_, f32>,
    params: &MosaicParams<'_>,
) -> Result<VolumeLayout> {
    Ok(map_mosaic_plan(values, params)?.0)
}

/// Axial slices (along the third axis) of a brain map in a grid, with a colour bar on the
/// right.
///
/// `values[[i, j, k]]`: NaN is outside the brain mask; slices without a voxel in the mask are
/// left out. Voxel (i, j) of slice k is drawn at [`Tile::cell_origin`]`(i, j)` of the tile
/// whose `index` is k (so `j` increases upward). A voxel's colour is, in order of precedence:
/// the map's colour ([`MapStyle::colour`]); else the anatomical `background` (same shape,
/// drawn in greys from black at its smallest finite value to white at its largest) where it is
/// not NaN; else [`MASK_GREY`] inside the mask; else white. Without a background the mask's
/// outline is drawn just outside it in [`MASK_OUTLINE`]. The regions of
/// `params.significant` are outlined on their own border pixels in `params.outline`.
///
/// # Errors
/// [`crate::ReportError::Input`] for a background or significance volume of another shape, a
/// range that is not finite and increasing, a non-finite threshold, a zero scale, column count
/// or `max_slices`, no voxel in the mask, or a figure over [`super::MAX_SIDE`].
pub fn slice_mosaic(
    values: ArrayView3<'_, f32>,
    background: Option<ArrayView3<'_, f32>>,
    params: &MosaicParams<'_>,
) -> Result<Canvas> {
    if let Some(bg) = &background {
        check_volume("slice_mosaic", "the background", bg, values.dim())?;
    }
    let (layout, bar) = map_mosaic_plan(values, params)?;
    let bg_range = background.and_then(|bg| super::finite_extent(bg.iter().map(|&v| f64::from(v))));
    let mut canvas = Canvas::new(layout.width, layout.height, WHITE);
    for tile in &layout.tiles {
        let bg = background.map(|b| b.index_axis_move(Axis(2), tile.index)).zip(bg_range);
        draw_label(&mut canvas, tile);
        draw_map_tile(&mut canvas, tile, values.index_axis(Axis(2), tile.index), bg, &params.map);
        if let Some(sig) = &params.significant {
            let sig = sig.index_axis(Axis(2), tile.index);
            outline(&mut canvas, tile, |c, r| sig[[c, r]], Side::Inside, params.outline);
        }
    }
    canvas.blit(&bar, layout.side.0 as i64, layout.side.1 as i64, 1);
    Ok(canvas)
}

/// The extreme of a lane of voxels, NaN when all are NaN: the largest value for a sequential
/// map; for a diverging one the value of largest magnitude, sign kept (the positive one of a
/// tie).
fn extreme(lane: ArrayView1<'_, f32>, diverging: bool) -> f32 {
    lane.iter().filter(|v| !v.is_nan()).fold(f32::NAN, |best, &v| {
        let better = if diverging {
            v.abs() > best.abs() || (v.abs() == best.abs() && v > best)
        } else {
            v > best
        };
        if best.is_nan() || better { v } else { best }
    })
}
fn glass_plan(
    values: ArrayView3<'_, f32>,
    params: &GlassBrainParams,
) -> Result<(VolumeLayout, Canvas)> {
    const FIGURE: &str = "glass_brain";
    params.map.check(FIGURE)?;
    if params.scale == Some(0) {
        return Err(input_error(FIGURE, "scale must be at least 1"));
    }
    let (nx, ny, nz) = values.dim();
    if values.iter().all(|v| v.is_nan()) {
        return Err(input_error(FIGURE, "no voxel is in the mask"));
    }
    let scale = params.scale.unwrap_or_else(|| auto_scale(nx.max(ny).max(nz)));
    check_size(FIGURE, nx.max(ny).saturating_mul(scale), ny.max(nz).saturating_mul(scale))?;
    let what = if params.map.colormap.is_diverging() { "|max|" } else { "max" };
    let specs = vec![
        TileSpec { index: 2, label: format!("{what} over k"), columns: nx, rows: ny },
        TileSpec { index: 1, label: format!("{what} over j"), columns: nx, rows: nz },
        TileSpec { index: 0, label: format!("{what} over i"), columns: ny, rows: nz },
    ];
    let (tiles, grid_w, grid_h) = arrange(specs, scale, Some(3), usize::MAX);
    let bar = side_colour_bar(&params.map, grid_h)?;
    Ok((finish(FIGURE, tiles, (grid_w, grid_h), &bar)?, bar))
}

/// The layout [`glass_brain`] draws with.
///
/// # Errors
/// As [`glass_brain`].
pub fn glass_brain_layout(
    values: ArrayView3<'_, f32>,
    params: &GlassBrainParams,
) -> Result<VolumeLayout> {
    Ok(glass_plan(values, params)?.0)
}

/// Maximum-intensity projections of a brain map over each axis, side by side (over k: (i, j);
/// over j: (i, k); over i: (j, k); the second kept axis upward), with a colour bar.
///
/// Each pixel shows the extreme of the non-NaN voxels along its line: the largest value, or
/// for [`Colormap::Diverging`] the value of largest magnitude with its sign (the positive one
/// of a tie). Lines with a voxel in the mask but an extreme below the threshold show the
/// silhouette in [`MASK_GREY`]; the silhouette is outlined in [`MASK_OUTLINE`]; lines without
/// a voxel in the mask are white.
///
/// # Errors
/// [`crate::ReportError::Input`] for a range that is not finite and increasing, a non-finite
/// threshold, a zero scale, no voxel in the mask, or a figure over [`super::MAX_SIDE`].
pub fn glass_brain(values: ArrayView3<'_, f32>, params: &GlassBrainParams) -> Result<Canvas> {
    let (layout, bar) = glass_plan(values, params)?;
    let mut canvas = Canvas::new(layout.width, layout.height, WHITE);
    let diverging = params.map.colormap.is_diverging();
    for tile in &layout.tiles {
        let image = values.map_axis(Axis(tile.index), |lane| extreme(lane, diverging));
        draw_label(&mut canvas, tile);
        draw_map_tile(&mut canvas, tile, image.view(), None, &params.map);
    }
    canvas.blit(&bar, layout.side.0 as i64, layout.side.1 as i64, 1);
    Ok(canvas)
}

fn categorical_plan(
    labels: ArrayView3<'_, i32>,
    names: &[String],
    tiling: &Tiling,
) -> Result<(VolumeLayout, Canvas)> {
    const FIGURE: &str = "categorical_mosaic";
    if let Some(&bad) = labels.iter().find(|&&l| l >= 0 && l as usize >= names.len()) {
        return Err(input_error(
            FIGURE,
            format!("label {bad} has no name ({} names)", names.len()),
        ));
    }
    let mut legend = Legend::default();
    for (i, name) in names.iter().enumerate() {
        legend.push(Mark::Swatch, categorical(i), name);
    }
    let mask = labels.mapv(|l| l >= 0);
    mosaic_plan(FIGURE, mask.view(), tiling, |_| {
        let (w, h) = legend.size();
        let mut side = Canvas::new(w, h, WHITE);
        legend.draw(&mut side, 0, 0);
        Ok(side)
    })
}

/// The layout [`categorical_mosaic`] draws with.
///
/// # Errors
/// As [`categorical_mosaic`].
pub fn categorical_mosaic_layout(
    labels: ArrayView3<'_, i32>,
    names: &[String],
    tiling: &Tiling,
) -> Result<VolumeLayout> {
    Ok(categorical_plan(labels, names, tiling)?.0)
}

/// A map of categories (the best layer per voxel) as a slice mosaic like [`slice_mosaic`]'s:
/// voxel label `l >= 0` is drawn in [`categorical`]`(l)` and named `names[l]` in the legend on
/// the right (every name, in order); negative labels are outside the mask (white, the mask
/// outlined in [`MASK_OUTLINE`]).
///
/// # Errors
/// [`crate::ReportError::Input`] for a label without a name, a zero scale, column count or
/// `max_slices`, no voxel in the mask, or a figure over [`super::MAX_SIDE`].
pub fn categorical_mosaic(
    labels: ArrayView3<'_, i32>,
    names: &[String],
    tiling: &Tiling,
) -> Result<Canvas> {
    let (layout, legend) = categorical_plan(labels, names, tiling)?;
    let mut canvas = Canvas::new(layout.width, layout.height, WHITE);
    for tile in &layout.tiles {
        let slice = labels.index_axis(Axis(2), tile.index);
        draw_label(&mut canvas, tile);
        paint_cells(&mut canvas, tile, |c, r| usize::try_from(slice[[c, r]]).ok().map(categorical));
        outline(&mut canvas, tile, |c, r| slice[[c, r]] >= 0, Side::Outside, MASK_OUTLINE);
    }
    canvas.blit(&legend, layout.side.0 as i64, layout.side.1 as i64, 1);
    Ok(canvas)
}

/// A tile's label, left-aligned above its image.
fn draw_label(canvas: &mut Canvas, tile: &Tile) {
    let y = tile.y - LABEL_GAP - text_height(TEXT_SCALE);
    canvas.text(tile.x as i64, y as i64, &tile.label, TEXT_SCALE, Align::Left, BLACK);
}

/// A continuous map's tile: colours (with background or mask grey), and the mask's outline
/// when there is no background. `background` comes with its value range.
fn draw_map_tile(
    canvas: &mut Canvas,
    tile: &Tile,
    values: ArrayView2<'_, f32>,
    background: Option<(ArrayView2<'_, f32>, (f64, f64))>,
    style: &MapStyle,
) {
    paint_cells(canvas, tile, |c, r| {
        let v = f64::from(values[[c, r]]);
        style
            .colour(v)
            .or_else(|| background.and_then(|(bg, range)| grey(f64::from(bg[[c, r]]), range)))
            .or_else(|| (!v.is_nan()).then_some(MASK_GREY))
    });
    if background.is_none() {
        outline(canvas, tile, |c, r| !values[[c, r]].is_nan(), Side::Outside, MASK_OUTLINE);
    }
}

/// The grey of an anatomical value: black at `lo`, white at `hi`; `None` for NaN.
fn grey(value: f64, (lo, hi): (f64, f64)) -> Option<Rgb> {
    if value.is_nan() {
        return None;
    }
    let t = if hi > lo { ((value - lo) / (hi - lo)).clamp(0.0, 1.0) } else { 0.5 };
    let g = (t * 255.0).round() as u8;
    Some([g, g, g])
}

/// Fills the block of each voxel of `tile` with `colour(column, row)`, if any.
fn paint_cells(canvas: &mut Canvas, tile: &Tile, colour: impl Fn(usize, usize) -> Option<Rgb>) {
    for row in 0..tile.rows {
        for col in 0..tile.columns {
            if let Some(c) = colour(col, row) {
                let (x, y) = tile.cell_origin(col, row);
                canvas.fill_rect(x as i64, y as i64, tile.scale, tile.scale, c);
            }
        }
    }
}

/// Which side of a region's border an outline takes.
#[derive(Clone, Copy)]
enum Side {
    /// The region's pixels with a 4-neighbour outside it.
    Inside,
    /// The pixels outside the region with an 8-neighbour inside it.
    Outside,
}

/// Outlines the region of voxels of `tile` where `inside(column, row)`, one pixel wide.
fn outline(
    canvas: &mut Canvas,
    tile: &Tile,
    inside: impl Fn(usize, usize) -> bool,
    side: Side,
    colour: Rgb,
) {
    let (w, h, s) = (tile.pixel_width() as i64, tile.pixel_height() as i64, tile.scale as i64);
    // whether pixel (px, py) of the tile image (y down) belongs to the region
    let member = |px: i64, py: i64| {
        px >= 0
            && py >= 0
            && px < w
            && py < h
            && inside((px / s) as usize, tile.rows - 1 - (py / s) as usize)
    };
    let (x0, y0) = (tile.x as i64, tile.y as i64);
    for py in -1..=h {
        for px in -1..=w {
            let on_border = match side {
                Side::Inside => {
                    member(px, py)
                        && [(-1, 0), (1, 0), (0, -1), (0, 1)]
                            .iter()
                            .any(|&(dx, dy)| !member(px + dx, py + dy))
                }
                Side::Outside => {
                    !member(px, py)
                        && (-1..=1).any(|dy| {
                            (-1..=1).any(|dx| (dx, dy) != (0, 0) && member(px + dx, py + dy))
                        })
                }
            };
            if on_border {
                canvas.set_pixel(x0 + px, y0 + py, colour);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn extreme_keeps_the_sign_of_the_largest_magnitude() {
        let lane = array![0.5f32, -2.0, f32::NAN, 1.5];
        assert_eq!(extreme(lane.view(), true), -2.0);
        assert_eq!(extreme(lane.view(), false), 1.5);
        assert_eq!(extreme(array![-1.0f32, 1.0].view(), true), 1.0);
        assert_eq!(extreme(array![1.0f32, -1.0].view(), true), 1.0);
        assert!(extreme(array![f32::NAN, f32::NAN].view(), true).is_nan());
    }

    #[test]
    fn threshold_hides_small_values() {
        let style = MapStyle { threshold: Some(0.5), ..MapStyle::default() };
        assert_eq!(style.colour(0.49), None);
        assert_eq!(style.colour(0.5), Colormap::Viridis.rgb(0.5));
        assert_eq!(style.colour(-3.0), None);
        let div = MapStyle { colormap: Colormap::Diverging, range: (-1.0, 1.0), ..style };
        assert_eq!(div.colour(-0.7), Colormap::Diverging.rgb(0.15));
        assert_eq!(div.colour(0.2), None);
    }

    #[test]
    fn slices_are_spread_evenly() {
        let mut mask = ndarray::Array3::from_elem((2, 2, 10), true);
        mask.index_axis_mut(Axis(2), 0).fill(false);
        let tiling = Tiling { max_slices: 4, ..Tiling::default() };
        let picked: Vec<usize> =
            slice_specs("t", mask.view(), &tiling).unwrap().into_iter().map(|s| s.index).collect();
        assert_eq!(picked, [1, 3, 6, 9]);
        let one = Tiling { max_slices: 1, ..Tiling::default() };
        assert_eq!(slice_specs("t", mask.view(), &one).unwrap()[0].index, 5);
    }

    #[test]
    fn outlines_take_the_chosen_side() {
        let tile =
            Tile { index: 0, label: String::new(), x: 5, y: 5, columns: 3, rows: 3, scale: 4 };
        let centre = |c: usize, r: usize| (c, r) == (1, 1);
        let mut canvas = Canvas::new(30, 30, WHITE);
        outline(&mut canvas, &tile, centre, Side::Inside, BLACK);
        // the 4×4 block at (9, 9): its 12 border pixels
        assert_eq!(canvas.count(BLACK), 12);
        assert_eq!(canvas.pixel(9, 9), Some(BLACK));
        assert_eq!(canvas.pixel(10, 10), Some(WHITE));
        let mut canvas = Canvas::new(30, 30, WHITE);
        outline(&mut canvas, &tile, centre, Side::Outside, BLACK);
        // the ring around it: 6×6 - 4×4
        assert_eq!(canvas.count(BLACK), 20);
        assert_eq!(canvas.pixel(8, 8), Some(BLACK));
        assert_eq!(canvas.pixel(9, 9), Some(WHITE));
    }
}
