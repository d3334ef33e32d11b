//! Rendering checks: colour tables against matplotlib, PNG encoding, text, and golden pixels
//! of every figure on small synthetic inputs.

use brainfit_report::canvas::{BLACK, WHITE, text_height, text_width};
use brainfit_report::colormap::categorical;
use brainfit_report::figure::{
    self, Band, GlassBrainParams, HeatmapParams, HistogramParams, LinePlotParams, MASK_GREY,
    MASK_OUTLINE, MapStyle, Marker, MosaicParams, NAN_GREY, Series, Tile, Tiling, VolumeLayout,
};
use brainfit_report::{Align, Canvas, Colormap, ReportError, Rgb};
use ndarray::{Array2, Array3, array};

/// Entries 0, 64, 128, 191 and 255 as printed by scripts/python/make_colormaps.py
/// (matplotlib 3.11.2).
const MATPLOTLIB: [(Colormap, [(usize, Rgb); 5]); 3] = [
    (
        Colormap::Viridis,
        [
            (0, [68, 1, 84]),
            (64, [59, 82, 139]),
            (128, [33, 145, 140]),
            (191, [92, 200, 99]),
            (255, [253, 231, 37]),
        ],
    ),
    (
        Colormap::Cividis,
        [
            (0, [0, 34, 78]),
            (64, [67, 78, 108]),
            (128, [125, 124, 120]),
            (191, [187, 173, 109]),
            (255, [254, 232, 56]),
        ],
    ),
    (
        Colormap::Diverging,
        [
            (0, [5, 48, 97]),
            (64, [107, 172, 209]),
            (128, [247, 246, 246]),
            (191, [229, 131, 104]),
            (255, [103, 0, 31]),
        ],
    ),
];

#[test]
fn colormap_tables_equal_matplotlibs() {
    for (map, entries) in MATPLOTLIB {
        for (i, rgb) in entries {
            assert_eq!(map.table()[i], rgb, "{map:?} entry {i}");
            assert_eq!(map.rgb(i as f64 / 255.0), Some(rgb), "{map:?} at t = {i}/255");
        }
    }
    assert_eq!(Colormap::Viridis.rgb(f64::NAN), None);
}

#[test]
fn png_roundtrip_keeps_size_type_and_pixels() {
    let mut canvas = Canvas::new(37, 21, WHITE);
    canvas.line(0, 0, 36, 20, 2, [200, 10, 30]);
    canvas.fill_rect(5, 5, 7, 3, [1, 2, 3]);
    canvas.text(2, 10, "R² 0.5", 1, Align::Left, BLACK);
    let bytes = canvas.to_png().unwrap();
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0u8; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (37, 21));
    assert_eq!((info.color_type, info.bit_depth), (png::ColorType::Rgb, png::BitDepth::Eight));
    assert_eq!(&buf[..info.buffer_size()], canvas.pixels.as_flattened());
    assert!(matches!(Canvas::new(0, 5, WHITE).to_png(), Err(ReportError::Png(_))));
}

/// The bounding box (x0, y0, x1, y1), inclusive, of the pixels that are not `background`.
fn ink_box(canvas: &Canvas, background: Rgb) -> Option<(usize, usize, usize, usize)> {
    let mut bbox: Option<(usize, usize, usize, usize)> = None;
    for y in 0..canvas.height {
        for x in 0..canvas.width {
            if canvas.pixel(x, y) != Some(background) {
                bbox = Some(match bbox {
                    None => (x, y, x, y),
                    Some((a, b, c, d)) => (a.min(x), b.min(y), c.max(x), d.max(y)),
                });
            }
        }
    }
    bbox
}

#[test]
fn text_fills_its_box_and_text_width_matches() {
    // 'H' and 'M' have ink in their first and last columns and first and last rows
    for (text, scale) in [("H", 1), ("H", 2), ("HM", 3), ("MHM", 2)] {
        let w = text_width(text, scale);
        assert_eq!(w, (6 * text.len() - 1) * scale);
        let mut canvas = Canvas::new(80, 40, WHITE);
        canvas.text(3, 4, text, scale, Align::Left, BLACK);
        let expect = (3, 4, 3 + w - 1, 4 + text_height(scale) - 1);
        assert_eq!(ink_box(&canvas, WHITE), Some(expect), "{text} at {scale}");
        // right and centre alignment move the same box
        let mut right = Canvas::new(80, 40, WHITE);
        right.text(60, 4, text, scale, Align::Right, BLACK);
        assert_eq!(ink_box(&right, WHITE), Some((60 + 1 - w, 4, 60, expect.3)));
        let mut centre = Canvas::new(80, 40, WHITE);
        centre.text(40, 4, text, scale, Align::Centre, BLACK);
        assert_eq!(ink_box(&centre, WHITE).map(|b| b.0), Some(40 - w / 2));
    }
    assert_eq!(text_width("", 2), 0);
    // vertical text: the box turned
    let mut canvas = Canvas::new(40, 80, WHITE);
    canvas.text_vertical(5, 70, "HM", 2, Align::Left, BLACK);
    assert_eq!(ink_box(&canvas, WHITE), Some((5, 70 + 1 - text_width("HM", 2), 5 + 13, 70)));
}

/// Every pixel of voxel (col, row)'s block in `tile`.
fn block(canvas: &Canvas, tile: &Tile, col: usize, row: usize) -> Vec<Rgb> {
    let (x0, y0) = tile.cell_origin(col, row);
    let mut out = Vec::new();
    for y in y0..y0 + tile.scale {
        for x in x0..x0 + tile.scale {
            out.push(canvas.pixel(x, y).unwrap());
        }
    }
    out
}

fn block_centre(canvas: &Canvas, tile: &Tile, col: usize, row: usize) -> Rgb {
    let (x0, y0) = tile.cell_origin(col, row);
    canvas.pixel(x0 + tile.scale / 2, y0 + tile.scale / 2).unwrap()
}

fn tile(layout: &VolumeLayout, index: usize) -> &Tile {
    layout.tiles.iter().find(|t| t.index == index).expect("tile")
}

/// A 10×10×4 map: slices 1 and 2 have an in-mask box i, j in 2..8 of value 0.5; slices 0
/// and 3 are outside the mask.
fn synthetic_map() -> Array3<f32> {
    let mut v = Array3::from_elem((10, 10, 4), f32::NAN);
    for k in 1..3 {
        for i in 2..8 {
            for j in 2..8 {
                v[[i, j, k]] = 0.5;
            }
        }
    }
    v
}

#[test]
fn slice_mosaic_golden_pixels() {
    let mut v = synthetic_map();
    v[[3, 6, 1]] = 1.0; // the range maximum
    v[[6, 2, 1]] = 0.1; // below the threshold
    v[[4, 4, 2]] = 0.2; // below the threshold, inside the significant region's neighbourhood
    let mut sig = Array3::from_elem(v.dim(), false);
    sig[[5, 5, 2]] = true;
    sig[[6, 5, 2]] = true;
    let params = MosaicParams {
        map: MapStyle { threshold: Some(0.3), label: "R²".into(), ..MapStyle::default() },
        significant: Some(sig.view()),
        tiling: Tiling { scale: Some(6), ..Tiling::default() },
        ..MosaicParams::default()
    };
    let layout = figure::slice_mosaic_layout(v.view(), &params).unwrap();
    let canvas = figure::slice_mosaic(v.view(), None, &params).unwrap();
    assert_eq!((canvas.width, canvas.height), (layout.width, layout.height));
    // slices without a voxel in the mask are left out
    assert_eq!(layout.tiles.iter().map(|t| t.index).collect::<Vec<_>>(), [1, 2]);
    let (t1, t2) = (tile(&layout, 1), tile(&layout, 2));
    assert_eq!((t1.columns, t1.rows, t1.scale), (10, 10, 6));
    // orientation: i to the right, j upward
    assert_eq!(t1.cell_origin(3, 6), (t1.x + 18, t1.y + 3 * 6));
    let top = Colormap::Viridis.table()[255];
    assert!(block(&canvas, t1, 3, 6).iter().all(|&p| p == top));
    assert!(block(&canvas, t1, 6, 2).iter().all(|&p| p == MASK_GREY));
    let half = Colormap::Viridis.rgb(0.5).unwrap();
    assert!(block(&canvas, t1, 4, 4).iter().all(|&p| p == half));
    // outside the mask: white, the mask outlined just outside it
    assert_eq!(block_centre(&canvas, t1, 0, 0), WHITE);
    let (x, y) = t1.cell_origin(1, 4);
    assert_eq!(canvas.pixel(x + 5, y + 2), Some(MASK_OUTLINE));
    assert_eq!(canvas.pixel(x + 4, y + 2), Some(WHITE));
    // the significant pair: its outer border black, inside and the shared edge coloured
    let (x0, y0) = t2.cell_origin(5, 5);
    for (dx, dy) in [(0, 0), (11, 0), (0, 5), (11, 5), (5, 0), (6, 5), (0, 3)] {
        assert_eq!(canvas.pixel(x0 + dx, y0 + dy), Some(BLACK), "outline at +({dx}, {dy})");
    }
    for (dx, dy) in [(1, 1), (5, 3), (6, 3), (10, 4)] {
        assert_eq!(canvas.pixel(x0 + dx, y0 + dy), Some(half), "inside at +({dx}, {dy})");
    }
    assert!(block(&canvas, t2, 4, 4).iter().all(|&p| p == MASK_GREY));
    // the colour bar: its top and bottom colours
    let bar = |c: Rgb| canvas.pixels.contains(&c);
    assert!(bar(Colormap::Viridis.table()[0]) && bar(top));
}

#[test]
fn slice_mosaic_shows_the_background_where_uncoloured() {
    let mut v = synthetic_map();
    v[[6, 2, 1]] = 0.1;
    let mut bg = Array3::from_elem(v.dim(), 0.0f32);
    bg[[6, 2, 1]] = 50.0;
    bg[[0, 0, 1]] = 75.0;
    bg[[1, 1, 2]] = 100.0;
    let params = MosaicParams {
        map: MapStyle { threshold: Some(0.3), ..MapStyle::default() },
        tiling: Tiling { scale: Some(4), columns: Some(1), ..Tiling::default() },
        ..MosaicParams::default()
    };
    let canvas = figure::slice_mosaic(v.view(), Some(bg.view()), &params).unwrap();
    let layout = figure::slice_mosaic_layout(v.view(), &params).unwrap();
    let t1 = tile(&layout, 1);
    // one tile per row
    assert_eq!(layout.tiles[0].x, layout.tiles[1].x);
    assert!(block(&canvas, t1, 6, 2).iter().all(|&p| p == [128, 128, 128]));
    // outside the mask too
    assert!(block(&canvas, t1, 0, 0).iter().all(|&p| p == [191, 191, 191]));
    assert!(block(&canvas, t1, 9, 9).iter().all(|&p| p == BLACK));
    // no mask outline over an anatomical background
    assert_eq!(canvas.count(MASK_OUTLINE), 0);
    let wrong = Array3::<f32>::zeros((10, 10, 3));
    let err = figure::slice_mosaic(v.view(), Some(wrong.view()), &params).unwrap_err();
    assert!(matches!(err, ReportError::Input { figure: "slice_mosaic", .. }), "{err}");
}

#[test]
fn glass_brain_projects_the_extreme() {
    let mut v = Array3::from_elem((6, 5, 4), f32::NAN);
    v[[3, 4, 0]] = 0.2;
    v[[3, 4, 1]] = 0.9;
    v[[3, 4, 2]] = 0.5;
    v[[1, 1, 3]] = 0.05; // below the threshold: silhouette only
    let params = GlassBrainParams {
        map: MapStyle { threshold: Some(0.1), ..MapStyle::default() },
        scale: Some(5),
    };
    let layout = figure::glass_brain_layout(v.view(), &params).unwrap();
    let canvas = figure::glass_brain(v.view(), &params).unwrap();
    assert_eq!((canvas.width, canvas.height), (layout.width, layout.height));
    assert_eq!(
        layout.tiles.iter().map(|t| (t.index, t.columns, t.rows)).collect::<Vec<_>>(),
        [(2, 6, 5), (1, 6, 4), (0, 5, 4)]
    );
    let nine = Colormap::Viridis.rgb(0.9).unwrap();
    assert!(block(&canvas, tile(&layout, 2), 3, 4).iter().all(|&p| p == nine));
    // over j and over i the three voxels stay apart
    assert_eq!(block_centre(&canvas, tile(&layout, 1), 3, 0), Colormap::Viridis.rgb(0.2).unwrap());
    assert_eq!(block_centre(&canvas, tile(&layout, 0), 4, 1), nine);
    assert_eq!(block_centre(&canvas, tile(&layout, 2), 1, 1), MASK_GREY);
    assert_eq!(block_centre(&canvas, tile(&layout, 2), 0, 0), WHITE);

    // diverging: the largest magnitude, sign kept
    let mut d = Array3::from_elem((3, 3, 3), f32::NAN);
    d[[1, 1, 0]] = 0.5;
    d[[1, 1, 2]] = -0.8;
    let params = GlassBrainParams {
        map: MapStyle { colormap: Colormap::Diverging, range: (-1.0, 1.0), ..MapStyle::default() },
        scale: Some(4),
    };
    let layout = figure::glass_brain_layout(d.view(), &params).unwrap();
    let canvas = figure::glass_brain(d.view(), &params).unwrap();
    let expect = Colormap::Diverging.rgb(0.1).unwrap();
    assert!(block(&canvas, tile(&layout, 2), 1, 1).iter().all(|&p| p == expect));
}

#[test]
fn categorical_mosaic_uses_the_palette() {
    let mut labels = Array3::from_elem((8, 8, 2), -1i32);
    for i in 1..7 {
        for j in 1..7 {
            labels[[i, j, 0]] = (i % 3) as i32;
        }
    }
    labels[[4, 4, 1]] = 2;
    let names: Vec<String> = ["conv1", "conv2", "fc6"].map(String::from).to_vec();
    let tiling = Tiling { scale: Some(5), ..Tiling::default() };
    let layout = figure::categorical_mosaic_layout(labels.view(), &names, &tiling).unwrap();
    let canvas = figure::categorical_mosaic(labels.view(), &names, &tiling).unwrap();
    assert_eq!((canvas.width, canvas.height), (layout.width, layout.height));
    let t0 = tile(&layout, 0);
    for i in 1..7 {
        assert!(block(&canvas, t0, i, 3).iter().all(|&p| p == categorical(i % 3)), "i = {i}");
    }
    assert!(block(&canvas, tile(&layout, 1), 4, 4).iter().all(|&p| p == categorical(2)));
    assert_eq!(block_centre(&canvas, t0, 0, 7), WHITE);
    // the legend's swatches (14 × 14) right of the tiles
    let (sx, sy) = layout.side;
    let swatch = |i: usize| canvas.pixel(sx + 12, sy + i * 20 + 7).unwrap();
    assert_eq!([swatch(0), swatch(1), swatch(2)], [categorical(0), categorical(1), categorical(2)]);
    let too_few = &names[..2];
    assert!(figure::categorical_mosaic(labels.view(), too_few, &tiling).is_err());
}

#[test]
fn heatmap_cells_take_their_colours() {
    let m = array![[0.0, 0.5, f64::NAN], [0.5, 0.0, 1.0], [0.25, 1.0, 0.0]];
    let params = HeatmapParams {
        range: Some((0.0, 1.0)),
        row_labels: vec!["a".into(), "b".into(), "c".into()],
        column_labels: vec!["a".into(), "b".into(), "c".into()],
        title: "RDM".into(),
        ..HeatmapParams::default()
    };
    let layout = figure::heatmap_layout(m.view(), &params).unwrap();
    let canvas = figure::heatmap(m.view(), &params).unwrap();
    assert_eq!((canvas.width, canvas.height), (layout.width, layout.height));
    assert!(layout.labelled && layout.cell >= 16);
    for ((r, c), &v) in m.indexed_iter() {
        let expect = Colormap::Viridis.rgb_in(v, 0.0, 1.0).unwrap_or(NAN_GREY);
        let (x, y) = layout.cell_origin(r, c);
        for (dx, dy) in [(0, 0), (layout.cell - 1, layout.cell - 1), (layout.cell / 2, 1)] {
            assert_eq!(canvas.pixel(x + dx, y + dy), Some(expect), "cell ({r}, {c})");
        }
    }
    // diverging with no range: symmetric about zero
    let d = array![[-0.5, 2.0]];
    let params = HeatmapParams { colormap: Colormap::Diverging, ..HeatmapParams::default() };
    let layout = figure::heatmap_layout(d.view(), &params).unwrap();
    assert_eq!(layout.range, (-2.0, 2.0));
    let canvas = figure::heatmap(d.view(), &params).unwrap();
    let (x, y) = layout.cell_origin(0, 1);
    assert_eq!(canvas.pixel(x, y), Some(Colormap::Diverging.table()[255]));
    let bad = HeatmapParams { row_labels: vec!["only one".into()], ..HeatmapParams::default() };
    assert!(figure::heatmap(m.view(), &bad).is_err());
}

fn series_colour_in_column(canvas: &Canvas, x: usize, colour: Rgb) -> Vec<usize> {
    (0..canvas.height).filter(|&y| canvas.pixel(x, y) == Some(colour)).collect()
}

#[test]
fn line_plot_points_land_where_the_area_says() {
    let series = vec![
        Series {
            name: "alexnet".into(),
            x: vec![0.0, 1.0, 2.0, 3.0, 4.0],
            y: vec![0.1, 0.4, f64::NAN, 0.3, 0.2],
        },
        Series { name: "vgg".into(), x: vec![0.0, 4.0], y: vec![0.05, 0.05] },
    ];
    let params = LinePlotParams {
        x_label: "layer".into(),
        y_label: "Spearman r".into(),
        x_ticks: Some((0..5).map(|i| (f64::from(i), format!("layer{i}"))).collect()),
        band: Some(Band { lower: 0.35, upper: 0.45, label: "noise ceiling".into() }),
        spans: vec![(2.5, 3.5)],
        spans_label: "p < 0.05".into(),
        ..LinePlotParams::default()
    };
    let area = figure::line_plot_area(&series, &params).unwrap();
    let canvas = figure::line_plot(&series, &params).unwrap();
    assert_eq!((canvas.width, canvas.height), (720, 420));
    assert_eq!(area.x_range, (0.0, 4.0));
    // the y range covers the data and the band, ending on ticks
    assert!(area.y_range.0 <= 0.05 && area.y_range.1 >= 0.45);
    let colour = categorical(0);
    for (x, y) in [(0.0, 0.1), (1.0, 0.4), (3.0, 0.3), (4.0, 0.2)] {
        let (px, py) = (area.x_pixel(x).round() as usize, area.y_pixel(y).round() as usize);
        // the 5 × 5 marker around the point
        for (dx, dy) in [(0, 0), (2, 2), (-2, -2), (2, -2)] {
            let p = canvas.pixel(px.wrapping_add_signed(dx), py.wrapping_add_signed(dy));
            assert_eq!(p, Some(colour), "point ({x}, {y}) at +({dx}, {dy})");
        }
    }
    // the NaN at x = 2 breaks the line: nothing of the series between x = 1 and 3 except
    // the markers' reach
    let gap_column = area.x_pixel(2.0).round() as usize;
    assert!(series_colour_in_column(&canvas, gap_column, colour).is_empty());
    let joined = area.x_pixel(0.5).round() as usize;
    assert!(!series_colour_in_column(&canvas, joined, colour).is_empty());
    // shading: the band at x = 0.5 above the line, the span around x = 3 away from the series
    let band_row = area.y_pixel(0.4).round() as usize;
    assert_eq!(canvas.pixel(area.x_pixel(0.1).round() as usize, band_row), Some([221, 221, 221]));
    let span_column = area.x_pixel(3.3).round() as usize;
    assert_eq!(
        canvas.pixel(span_column, area.y_pixel(0.15).round() as usize),
        Some([214, 230, 244])
    );
    // the second series' flat line
    let row = area.y_pixel(0.05).round() as usize;
    assert_eq!(canvas.pixel(area.x_pixel(2.0).round() as usize, row), Some(categorical(1)));
    let mismatched = [Series { name: String::new(), x: vec![0.0], y: vec![] }];
    assert!(figure::line_plot(&mismatched, &LinePlotParams::default()).is_err());
}

#[test]
fn histogram_bars_are_proportional_to_counts() {
    // 3 bins over [0.5, 2.5]: counts 1, 2, 4
    let values = [0.5, 1.5, 1.5, 2.5, 2.5, 2.5, 2.5, f64::NAN];
    let params = HistogramParams {
        bins: 3,
        x_label: "max r".into(),
        marker: Some(Marker { value: 3.0, label: "observed".into() }),
        ..HistogramParams::default()
    };
    let area = figure::histogram_area(&values, &params).unwrap();
    let canvas = figure::histogram(&values, &params).unwrap();
    assert_eq!((canvas.width, canvas.height), (720, 420));
    assert_eq!(area.y_range, (0.0, 4.0));
    // the marker extends the axis
    assert_eq!(area.x_range, (0.5, 3.0));
    let bar = brainfit_report::colormap::OKABE_ITO[4];
    let heights: Vec<usize> = [0.5 + 1.0 / 3.0, 1.5, 2.5 - 1.0 / 3.0]
        .iter()
        .map(|&x| series_colour_in_column(&canvas, area.x_pixel(x).round() as usize, bar).len())
        .collect();
    let unit = (area.height - 1) as f64 / 4.0;
    for (h, count) in heights.iter().zip([1.0, 2.0, 4.0]) {
        assert!((*h as f64 - count * unit).abs() <= 1.0, "{heights:?} for counts 1, 2, 4");
    }
    // the marker line is black at x = 3
    let mx = area.x_pixel(3.0).round() as usize;
    assert_eq!(canvas.pixel(mx, area.bottom() - 3), Some(BLACK));
    // the tail: bins with centre >= 2 in vermillion
    let tail =
        HistogramParams { tail: Some(Marker { value: 2.0, label: "p < 0.05".into() }), ..params };
    let area = figure::histogram_area(&values, &tail).unwrap();
    let canvas = figure::histogram(&values, &tail).unwrap();
    let unit = (area.height - 1) as f64 / 4.0;
    let vermillion = brainfit_report::colormap::OKABE_ITO[5];
    let last = series_colour_in_column(&canvas, area.x_pixel(2.2).round() as usize, vermillion);
    assert!(last.len() as f64 >= 4.0 * unit - 1.0);
    assert!(
        series_colour_in_column(&canvas, area.x_pixel(1.5).round() as usize, vermillion).is_empty()
    );
    assert!(figure::histogram(&[f64::NAN], &HistogramParams::default()).is_err());
}

#[test]
fn colour_bar_runs_from_min_at_the_bottom_to_max_at_the_top() {
    let bar = figure::colour_bar(Colormap::Cividis, -1.0, 3.0, "t", 150).unwrap();
    assert_eq!(bar.height, 150 + 18);
    let column: Vec<Rgb> = (0..bar.height).map(|y| bar.pixel(8, y).unwrap()).collect();
    let table = Colormap::Cividis.table();
    assert_eq!(column[9], table[255]);
    assert_eq!(column[9 + 149], table[0]);
    assert_eq!((column[8], column[9 + 150]), (BLACK, BLACK));
    assert!(figure::colour_bar(Colormap::Cividis, 1.0, 1.0, "", 150).is_err());
}

/// Whether a canvas shows something: more than one colour, and not only white.
fn non_blank(canvas: &Canvas) -> bool {
    canvas.count(WHITE) < canvas.pixels.len()
        && canvas.pixels.iter().any(|&p| p != canvas.pixels[0])
}

#[test]
fn every_figure_of_a_tiny_input_is_drawn_at_its_documented_size() {
    let mut v = Array3::from_elem((2, 2, 1), f32::NAN);
    v[[0, 0, 0]] = 0.7;
    let map = MosaicParams::default();
    let layout = figure::slice_mosaic_layout(v.view(), &map).unwrap();
    let c = figure::slice_mosaic(v.view(), None, &map).unwrap();
    assert_eq!((c.width, c.height), (layout.width, layout.height));
    assert!(non_blank(&c));

    let glass = GlassBrainParams::default();
    let layout = figure::glass_brain_layout(v.view(), &glass).unwrap();
    let c = figure::glass_brain(v.view(), &glass).unwrap();
    assert_eq!((c.width, c.height), (layout.width, layout.height));
    assert!(non_blank(&c));

    let labels = v.mapv(|x| if x.is_nan() { -1 } else { 0 });
    let names = vec!["only".to_owned()];
    let layout =
        figure::categorical_mosaic_layout(labels.view(), &names, &Tiling::default()).unwrap();
    let c = figure::categorical_mosaic(labels.view(), &names, &Tiling::default()).unwrap();
    assert_eq!((c.width, c.height), (layout.width, layout.height));
    assert!(non_blank(&c));

    let series = [Series { name: String::new(), x: vec![1.0], y: vec![1.0] }];
    let c = figure::line_plot(&series, &LinePlotParams::default()).unwrap();
    assert_eq!((c.width, c.height), (720, 420));
    assert!(non_blank(&c));
    let c = figure::line_plot(
        &[],
        &LinePlotParams { width: 300, height: 200, ..LinePlotParams::default() },
    )
    .unwrap();
    assert_eq!((c.width, c.height), (300, 200));
    assert!(non_blank(&c));

    let c = figure::histogram(&[2.0], &HistogramParams::default()).unwrap();
    assert_eq!((c.width, c.height), (720, 420));
    assert!(non_blank(&c));

    let m = Array2::from_elem((1, 1), 0.3);
    let hp = HeatmapParams::default();
    let layout = figure::heatmap_layout(m.view(), &hp).unwrap();
    let c = figure::heatmap(m.view(), &hp).unwrap();
    assert_eq!((c.width, c.height), (layout.width, layout.height));
    assert!(non_blank(&c));

    let c = figure::colour_bar(Colormap::Viridis, 0.0, 1.0, "", 2).unwrap();
    assert!(non_blank(&c));
    // and each encodes
    assert!(c.to_png().unwrap().starts_with(b"\x89PNG"));
}

#[test]
fn unusable_inputs_are_refused_with_the_figure_named() {
    let v = Array3::from_elem((3, 3, 3), f32::NAN);
    let err = figure::slice_mosaic(v.view(), None, &MosaicParams::default()).unwrap_err();
    assert!(matches!(err, ReportError::Input { figure: "slice_mosaic", .. }), "{err}");
    let w = synthetic_map();
    let bad_range = MosaicParams {
        map: MapStyle { range: (1.0, 0.0), ..MapStyle::default() },
        ..MosaicParams::default()
    };
    assert!(figure::slice_mosaic(w.view(), None, &bad_range).is_err());
    let sig = Array3::from_elem((10, 10, 5), true);
    let bad_sig = MosaicParams { significant: Some(sig.view()), ..MosaicParams::default() };
    assert!(figure::slice_mosaic(w.view(), None, &bad_sig).is_err());
    let huge = MosaicParams {
        tiling: Tiling { scale: Some(10_000), ..Tiling::default() },
        ..MosaicParams::default()
    };
    assert!(figure::slice_mosaic(w.view(), None, &huge).is_err());
    let small =
        LinePlotParams { width: 60, height: 50, y_label: "y".into(), ..LinePlotParams::default() };
    let err = figure::line_plot(&[], &small).unwrap_err();
    assert!(err.to_string().starts_with("line_plot: "), "{err}");
}
