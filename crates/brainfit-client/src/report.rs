//! `brainfit report`: one self-contained HTML file that shows a finished job's results as
//! pictures and tables, so that nobody has to load NIfTI and `.npy` files into other tools to
//! see what a run found.
//!
//! Everything comes from the output directory alone — `summary.json` (which echoes the job
//! file) and the maps, CSVs and null distributions beside it — read through the same
//! [`Store`] as every other output, so a report can be made of results on object storage. The
//! figures are drawn by `brainfit-report` (pure Rust, no fonts or plotting library) and
//! embedded as PNG `data:` URLs: the file opens anywhere, offline, and can be mailed.
//!
//! What is shown, per subject: each encoding score map (slice mosaic over the mask outline,
//! FWE-significant voxels outlined, and a glass-brain projection), the hyperparameters chosen
//! (with a warning when many voxels sit at an edge of the grid — a silent failure of too narrow
//! grids), the permutation null of the maximum with the observed maximum, the best feature space
//! per voxel, variance partitions, the noise ceiling, ROI layer profiles, searchlight maps,
//! ROI RSA comparisons across models and the brain RDMs; for the job, time courses of
//! time-resolved RSA (the FWE-significant stretch shaded), the cross-temporal matrix, the
//! extraction, and the job file itself. Tables give per map the significant voxels, the peak
//! (voxel and world mm) and the mean within the mask.

use crate::Result;
use brainfit_io::{IoError, Store, join_url, parse_nifti, parse_npy};
use brainfit_job::outputs::layout::{self, MapDir, MapFile};
use brainfit_job::summary::{MapStats, SubjectSummary};
use brainfit_job::{JobSpec, Summary};
use brainfit_report::figure::{
    self, Band, GlassBrainParams, HeatmapParams, HistogramParams, LinePlotParams, MapStyle, Marker,
    MosaicParams, Series, Tiling,
};
use brainfit_report::{Canvas, Colormap};
use ndarray::{Array2, Array3};
use std::fmt::Write as _;

/// The report's file name, written beside `summary.json` by default.
pub const REPORT: &str = "report.html";

/// The significance level of the outlines and shaded stretches.
const ALPHA_FWE: f64 = 0.05;
/// Share of voxels at one end of the hyperparameter grid above which the report warns.
const EDGE_SHARE: f64 = 0.10;

/// Builds the report of the finished job whose output is `output` and writes it to `dest`
/// (default `output/report.html`). Returns the URL written.
pub async fn write_report(store: &Store, output: &str, dest: Option<&str>) -> Result<String> {
    let html = build_report(store, output).await?;
    let url = dest.map_or_else(|| join_url(output, REPORT), str::to_string);
    store.put(&url, html.into_bytes().into()).await?;
    Ok(url)
}

/// The report of the finished job whose output is `output`, as one HTML document.
pub async fn build_report(store: &Store, output: &str) -> Result<String> {
    let summary_url = join_url(output, layout::SUMMARY);
    let bytes = store.get(&summary_url).await.map_err(|e| match e {
        IoError::NotFound { .. } => IoError::NotFound { url: summary_url.clone() },
        other => other,
    })?;
    let summary: Summary = serde_json::from_slice(&bytes).map_err(|e| IoError::Value {
        name: summary_url.clone(),
        reason: format!("is not a brainfit summary: {e}"),
    })?;
    // the job as it ran: which subjects, grids and permutations there were
    let spec = JobSpec::from_toml(&summary.job, &summary_url, output)?;
    let mut doc = Document::new(&summary);
    let reader = Reader { store, output };
    for (subject, results) in spec.subjects.iter().zip(&summary.subjects) {
        let prefix = |relative: &str| subject.output_path(relative);
        if spec.subjects.len() > 1 {
            doc.heading(2, &format!("Subject {}", results.name));
        }
        subject_section(&mut doc, &reader, &spec, &summary, results, &prefix).await?;
    }
    job_level_section(&mut doc, &reader, &summary).await?;
    group_section(&mut doc, &reader, &summary).await?;
    doc.heading(2, "Job file");
    doc.pre(&summary.job);
    Ok(doc.finish())
}

/// Reads the output's files, telling a missing file (`None`) from an unreadable one (`Err`).
struct Reader<'a> {
    store: &'a Store,
    output: &'a str,
}

impl Reader<'_> {
    async fn bytes(&self, relative: &str) -> Result<Option<bytes::Bytes>> {
        // the names come from summary.json: each must be an output name, so that a forged
        // summary cannot make the report read (and draw) files outside the output
        for name in relative.split('/').flat_map(|component| component.split('+')) {
            brainfit_job::spec::check_name("report input", name).map_err(|reason| {
                IoError::Value { name: join_url(self.output, layout::SUMMARY), reason }
            })?;
        }
        match self.store.get(&join_url(self.output, relative)).await {
            Ok(b) => Ok(Some(b)),
            Err(IoError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn vector(&self, relative: &str) -> Result<Option<Vec<f64>>> {
        let Some(b) = self.bytes(relative).await? else { return Ok(None) };
        let url = join_url(self.output, relative);
        Ok(Some(parse_npy(&b, &url)?.to_f64().iter().copied().collect()))
    }

    async fn matrix(&self, relative: &str) -> Result<Option<Array2<f64>>> {
        let Some(b) = self.bytes(relative).await? else { return Ok(None) };
        let url = join_url(self.output, relative);
        let a = parse_npy(&b, &url)?.to_f64();
        let a = a
            .into_dimensionality::<ndarray::Ix2>()
            .map_err(|_| IoError::Value { name: url.clone(), reason: "is not a matrix".into() })?;
        Ok(Some(a))
    }

    /// A 3-D map (NIfTI, NaN outside the mask) as f32.
    async fn volume(&self, relative: &str) -> Result<Option<Array3<f32>>> {
        let Some(b) = self.bytes(relative).await? else { return Ok(None) };
        let url = join_url(self.output, relative);
        let image = parse_nifti(&b, &url)?;
        let [x, y, z] = image.spatial_shape();
        let volume: Array3<f32> =
            image.data.mapv(|v| v as f32).into_shape_with_order((x, y, z)).map_err(|_| {
                IoError::Value { name: url.clone(), reason: "is not one 3-D volume".into() }
            })?;
        Ok(Some(volume))
    }

    async fn text(&self, relative: &str) -> Result<Option<String>> {
        Ok(self.bytes(relative).await?.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }
}

/// One subject's results.
async fn subject_section(
    doc: &mut Document,
    reader: &Reader<'_>,
    spec: &JobSpec,
    summary: &Summary,
    results: &SubjectSummary,
    prefix: &dyn Fn(&str) -> String,
) -> Result<()> {
    let n_perm = summary.permutation.as_ref().map(|p| p.n);
    if let Some(encoding) = &results.encoding {
        doc.heading(3, "Voxelwise encoding");
        let grid = spec.encoding.as_ref().map(|e| e.model.grid().to_vec()).unwrap_or_default();
        let rows = encoding
            .iter()
            .map(|(space, e)| {
                let mut row = stats_row(space, &e.score, e.significant_fwe_05, n_perm);
                row.insert(1, format!("{} ({} features)", e.model, e.n_features));
                row
            })
            .collect();
        doc.table(&["feature space", "model", "mean score", "max", "peak", "FWE p < 0.05"], rows);
        for (space, e) in encoding {
            let dir = MapDir::Encoding(space);
            doc.heading(4, space);
            let label = format!("score ({space})");
            map_figures(doc, reader, prefix, dir, MapFile::Score, (&label, "score"), &e.score)
                .await?;
            doc.row_start();
            let chosen = prefix(&dir.file(&e.hyperparameter, "npy"));
            if let Some(values) = reader.vector(&chosen).await? {
                let scores = reader.vector(&prefix(&dir.npy(MapFile::Score))).await?;
                hyperparameter_figure(
                    doc,
                    space,
                    &e.hyperparameter,
                    &values,
                    scores.as_deref(),
                    &grid,
                )?;
            }
            null_figure(doc, reader, &prefix(&dir.npy(MapFile::NullMax)), &e.score, "score")
                .await?;
            doc.row_end();
        }
    }
    if let Some(best) = &results.best_space {
        doc.heading(3, "Best feature space per voxel");
        let labels = reader.volume(&prefix(&format!("{}.nii.gz", layout::BEST_SPACE))).await?;
        let scores = reader.volume(&prefix(&format!("{}.nii.gz", layout::BEST_SCORE))).await?;
        if let (Some(labels), Some(scores)) = (labels, scores) {
            // voxels no space predicts (best score <= 0) are noise: not coloured
            let shown = ndarray::Zip::from(&labels)
                .and(&scores)
                .map_collect(|&l, &s| if l >= 1.0 && s > 0.0 { l as i32 - 1 } else { -1 });
            if shown.iter().any(|&l| l >= 0) {
                let canvas =
                    figure::categorical_mosaic(shown.view(), &best.spaces, &Tiling::default())?;
                doc.figure(&canvas, "best feature space per voxel", "Each voxel whose best score is above 0 coloured by the feature space that scores highest there; white: outside the mask, or no space predicts it.")?;
            }
        }
        let rows = best
            .spaces
            .iter()
            .zip(&best.voxels_won)
            .map(|(s, n)| vec![s.clone(), n.to_string()])
            .collect();
        doc.table(&["feature space", "voxels won"], rows);
    }
    if let Some(partition) = &results.partition {
        doc.heading(3, "Variance partitioning");
        let rows = partition
            .iter()
            .map(|(bands, p)| {
                vec![bands.clone(), fmt(p.mean), p.n_finite.to_string(), p.n_negative.to_string()]
            })
            .collect();
        doc.table(&["bands", "mean R²", "voxels", "negative"], rows);
        for bands in partition.keys() {
            let file = prefix(&format!("{}.nii.gz", layout::partition(bands)));
            if let Some(volume) = reader.volume(&file).await? {
                let what = format!("R² of {bands} alone");
                volume_figures(doc, &volume, None, &what, "R²")?;
            }
        }
    }
    if let Some(ceiling) = &results.ceiling {
        doc.heading(3, "Noise ceiling");
        doc.para(&format!(
            "Split-half noise ceiling: mean {} over voxels, {} reliable voxels.",
            fmt(ceiling.mean),
            ceiling.n_reliable
        ));
        if let Some(volume) = reader.volume(&prefix(&format!("{}.nii.gz", layout::CEILING))).await?
        {
            volume_figures(doc, &volume, None, "noise ceiling", "ceiling")?;
        }
    }
    if let Some(text) = reader.text(&prefix(layout::PROFILE)).await? {
        doc.heading(3, "Layer profiles in the ROIs");
        profile_figure(doc, &text)?;
    }
    if let Some(decoding) = &results.decoding {
        doc.heading(3, "Decoding");
        let rows = decoding
            .iter()
            .map(|(name, d)| {
                vec![
                    name.clone(),
                    d.n_voxels.to_string(),
                    fmt(d.score.mean),
                    format!("{:.3} (chance {:.3})", d.top1_accuracy, d.top1_chance),
                    format!("{:.3}", d.pairwise_accuracy),
                ]
            })
            .collect();
        doc.table(
            &[
                "source / space",
                "voxels",
                "mean unit score",
                "top-1 identification",
                "pairwise (chance 0.5)",
            ],
            rows,
        );
    }
    if let Some(searchlight) = &results.searchlight {
        doc.heading(3, "Searchlight RSA");
        let rows = searchlight
            .iter()
            .map(|(model, m)| {
                let mut row = stats_row(model, &m.rho, m.significant_fwe_05, n_perm);
                row.insert(1, format!("{} RDM, {}", m.rdm, m.compare));
                row
            })
            .collect();
        doc.table(&["model", "RDM, comparison", "mean", "max", "peak", "FWE p < 0.05"], rows);
        for (model, m) in searchlight {
            let dir = MapDir::Searchlight(model);
            doc.heading(4, model);
            let label = format!("{} with {model}", m.compare);
            map_figures(doc, reader, prefix, dir, MapFile::Rho, (&label, &m.compare), &m.rho)
                .await?;
            null_figure(doc, reader, &prefix(&dir.npy(MapFile::NullMax)), &m.rho, &m.compare)
                .await?;
        }
    }
    if !results.rsa.is_empty() {
        doc.heading(3, "ROI RSA");
        rsa_section(doc, reader, results, prefix).await?;
    }
    Ok(())
}

/// Time-resolved and cross-temporal RSA, and the extraction: results at the output's root.
async fn job_level_section(
    doc: &mut Document,
    reader: &Reader<'_>,
    summary: &Summary,
) -> Result<()> {
    if !summary.time_resolved.is_empty() {
        doc.heading(2, "Time-resolved RSA");
        let n_perm = summary.permutation.as_ref().map(|p| p.n);
        let rows = summary
            .time_resolved
            .iter()
            .map(|(model, m)| {
                let mut row = stats_row(model, &m.rho, m.significant_fwe_05, n_perm);
                row[3] = m.rho.argmax.map_or("-".into(), |t| format!("time point {t}"));
                row
            })
            .collect();
        doc.table(&["model", "mean", "max", "peak", "FWE p < 0.05"], rows);
        for (key, m) in &summary.time_resolved {
            // `<recording>/<model>` for named recordings, whose outputs lie below `<recording>/`
            let (root, model) = key.split_once('/').map_or(("", key.as_str()), |(r, m)| (r, m));
            let at = |relative: String| match root {
                "" => relative,
                root => format!("{root}/{relative}"),
            };
            let dir = MapDir::TimeResolved(model);
            let Some(rho) = reader.vector(&at(dir.npy(MapFile::Rho))).await? else { continue };
            let p_fwe = reader.vector(&at(dir.npy(MapFile::PFwe))).await?;
            let x: Vec<f64> = (0..rho.len()).map(|t| t as f64).collect();
            let params = LinePlotParams {
                title: format!("{key}: {} over time", m.compare),
                x_label: "time point".into(),
                y_label: m.compare.clone(),
                spans: p_fwe.as_deref().map(significant_spans).unwrap_or_default(),
                spans_label: format!("FWE p < {ALPHA_FWE}"),
                ..LinePlotParams::default()
            };
            let canvas =
                figure::line_plot(&[Series { name: model.to_string(), x, y: rho }], &params)?;
            doc.figure(
                &canvas,
                &format!("time course of {key}"),
                "Shaded: time points whose family-wise corrected p is below 0.05.",
            )?;
            null_figure(doc, reader, &at(dir.npy(MapFile::NullMax)), &m.rho, &m.compare).await?;
        }
    }
    if let Some(ct) = &summary.cross_temporal {
        doc.heading(2, "Cross-temporal RSA");
        if let Some(matrix) = reader.matrix(&MapDir::CrossTemporal.npy(MapFile::Rho)).await? {
            let params = HeatmapParams {
                colormap: Colormap::Diverging,
                title: format!("{} between time points", ct.compare),
                label: ct.compare.clone(),
                ..HeatmapParams::default()
            };
            let canvas = figure::heatmap(matrix.view(), &params)?;
            doc.figure(
                &canvas,
                "cross-temporal RSA matrix",
                "Rows: time points of the first recording; columns: of the second.",
            )?;
        }
    }
    if let Some(x) = &summary.extraction {
        doc.heading(2, "Feature extraction");
        doc.para(&format!(
            "{} images{} at {}×{} input.",
            x.images,
            x.reference_images
                .map_or_else(String::new, |r| format!(" ({r} reference images for PCA)")),
            x.input_size[0],
            x.input_size[1]
        ));
        let rows = x
            .layers
            .iter()
            .map(|l| {
                let shape = l.shape.iter().map(ToString::to_string).collect::<Vec<_>>().join("×");
                vec![
                    l.name.clone(),
                    l.node.clone(),
                    shape,
                    l.features.to_string(),
                    l.compression.clone(),
                ]
            })
            .collect();
        doc.table(&["space", "node", "shape per image", "features", "compression"], rows);
    }
    Ok(())
}

/// `[group]`: per tested map a table row, the t map with its significant voxels outlined
/// (TFCE's FWE p when computed, else max-T's), the cluster table and the null of max-T.
async fn group_section(doc: &mut Document, reader: &Reader<'_>, summary: &Summary) -> Result<()> {
    if summary.group.is_empty() {
        return Ok(());
    }
    doc.heading(2, "Group tests");
    doc.para(
        "Sign-flip permutation tests of the subjects' maps (one-sample or paired t; Nichols & Holmes 2002), family-wise corrected over the group mask by the maximum t, by TFCE (Smith & Nichols 2009) and by cluster mass.",
    );
    let count =
        |k: Option<usize>, n: usize| k.map_or_else(|| "-".into(), |k| format!("{k} of {n}"));
    let rows = summary
        .group
        .iter()
        .map(|(name, g)| {
            let flips =
                if g.exhaustive { format!("{} (all)", g.n_flips) } else { g.n_flips.to_string() };
            vec![
                name.clone(),
                format!("{}, {}{}", g.test, g.tail, if g.fisher_z { ", Fisher z" } else { "" }),
                g.n_subjects.to_string(),
                flips,
                format!("{} at {}", fmt(g.t.max), g.t.describe_peak()),
                count(Some(g.significant_fwe_05), g.t.n_finite),
                count(g.significant_tfce_fwe_05, g.t.n_finite),
                g.clusters_fwe_05.map_or_else(|| "-".into(), |k| format!("{k} of {}", g.clusters)),
            ]
        })
        .collect();
    doc.table(
        &[
            "map",
            "test",
            "subjects",
            "sign flips",
            "max t (peak)",
            "max-T FWE p < 0.05",
            "TFCE FWE p < 0.05",
            "clusters FWE p < 0.05",
        ],
        rows,
    );
    for (name, g) in &summary.group {
        let dir = layout::group_test(name);
        doc.heading(3, &format!("Group: {name}"));
        if g.n_missing > 0 {
            doc.warning(&format!(
                "{} of {} voxels of the group mask lack a finite value in some subject and have no statistic.",
                g.n_missing, g.n_voxels
            ));
        }
        let which = if g.significant_tfce_fwe_05.is_some() { "p_tfce_fwe" } else { "p_fwe" };
        let what = format!("group t of {name}");
        if let Some(t) = reader.volume(&format!("{dir}/t.nii.gz")).await? {
            let significant = reader
                .volume(&format!("{dir}/{which}.nii.gz"))
                .await?
                .map(|p| p.mapv(|v| v.is_finite() && f64::from(v) < ALPHA_FWE));
            volume_figures(doc, &t, significant.as_ref(), &what, "t")?;
        } else if g.source == "roi_rsa" {
            // ROIs: a table, no picture
            let Some(csv) =
                reader.text(&format!("{dir}/{}", brainfit_job::group::ROI_TABLE)).await?
            else {
                continue;
            };
            let mut lines = csv.lines();
            let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
            let rows: Vec<Vec<String>> = lines
                .map(|l| l.split(',').map(str::to_string).collect())
                .filter(|r: &Vec<String>| r.len() == header.len())
                .collect();
            doc.para("Per brain RDM or ROI: the subjects' mean comparison, t, uncorrected p and max-T FWE p over the ROIs.");
            doc.table(&header, rows);
        } else if let Some(t) = reader.vector(&format!("{dir}/t.npy")).await? {
            // a time course (time-resolved maps have no grid)
            let p = reader.vector(&format!("{dir}/{which}.npy")).await?;
            let params = LinePlotParams {
                title: what.clone(),
                x_label: "time point".into(),
                y_label: "t".into(),
                spans: p.as_deref().map(significant_spans).unwrap_or_default(),
                spans_label: format!("FWE p < {ALPHA_FWE}"),
                ..LinePlotParams::default()
            };
            let x: Vec<f64> = (0..t.len()).map(|i| i as f64).collect();
            let canvas = figure::line_plot(&[Series { name: name.clone(), x, y: t }], &params)?;
            let by = if which == "p_tfce_fwe" { "TFCE" } else { "max-T" };
            doc.figure(
                &canvas,
                &format!("time course of {what}"),
                &format!("Shaded: time points whose family-wise corrected p ({by}) is below 0.05."),
            )?;
        } else {
            continue;
        }
        if let Some(csv) = reader.text(&format!("{dir}/clusters.csv")).await? {
            let mut lines = csv.lines();
            let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
            let rows: Vec<Vec<String>> = lines
                .take(10)
                .map(|l| l.split(',').map(str::to_string).collect())
                .filter(|r: &Vec<String>| r.len() == header.len())
                .collect();
            if let Some(u) = g.cluster_threshold_t {
                doc.para(&format!(
                    "Clusters of |t| > {u:.3} ({} in all; the 10 largest by mass; peak in voxels and mm).",
                    g.clusters
                ));
            }
            doc.table(&header, rows);
        }
        null_figure(doc, reader, &format!("{dir}/null_max.npy"), &g.t, "t").await?;
    }
    Ok(())
}

/// A map's mosaic and glass brain, with its FWE-significant voxels outlined.
#[allow(clippy::too_many_arguments)]
async fn map_figures(
    doc: &mut Document,
    reader: &Reader<'_>,
    prefix: &dyn Fn(&str) -> String,
    dir: MapDir<'_>,
    file: MapFile,
    (what, bar): (&str, &str),
    stats: &MapStats,
) -> Result<()> {
    let Some(volume) = reader.volume(&prefix(&dir.nifti(file))).await? else {
        if stats.n > 0 {
            doc.para(&format!("{what}: no mask, so no map image (see the table)."));
        }
        return Ok(());
    };
    let significant = reader
        .volume(&prefix(&dir.nifti(MapFile::PFwe)))
        .await?
        .map(|p| p.mapv(|v| v.is_finite() && f64::from(v) < ALPHA_FWE));
    volume_figures(doc, &volume, significant.as_ref(), what, bar)
}

/// The slice mosaic and the glass brain of one volume.
fn volume_figures(
    doc: &mut Document,
    volume: &Array3<f32>,
    significant: Option<&Array3<bool>>,
    what: &str,
    bar: &str,
) -> Result<()> {
    if !volume.iter().any(|v| v.is_finite()) {
        doc.para(&format!("{what}: no finite value to show."));
        return Ok(());
    }
    let style = map_style(volume, bar);
    let mosaic = MosaicParams {
        map: style.clone(),
        significant: significant.map(|s| s.view()),
        ..MosaicParams::default()
    };
    let canvas = figure::slice_mosaic(volume.view(), None, &mosaic)?;
    let outlined = if significant.is_some_and(|s| s.iter().any(|&b| b)) {
        " Outlined: voxels with family-wise corrected p < 0.05."
    } else if significant.is_some() {
        " No voxel has a family-wise corrected p below 0.05."
    } else {
        ""
    };
    let grey =
        style.threshold.map_or_else(String::new, |t| format!(" values below {t} shown grey;"));
    let caption = format!(
        "{what}, axial slices (first voxel axis left to right, second upward) inside the mask outline;{grey} white: outside the mask.{outlined}"
    );
    doc.figure(&canvas, &format!("slice mosaic of {what}"), &caption)?;
    let glass = figure::glass_brain(volume.view(), &GlassBrainParams { map: style, scale: None })?;
    doc.figure(
        &glass,
        &format!("glass brain of {what}"),
        "Maximum-intensity projections along each voxel axis (\"glass brain\").",
    )?;
    Ok(())
}

/// Sequential viridis from 0 to the maximum for one-signed maps (values below 0 grey); a
/// zero-centred diverging map when the negative values reach further than the positive ones.
/// `label`: the colour bar's.
fn map_style(volume: &Array3<f32>, label: &str) -> MapStyle {
    let finite = volume.iter().filter(|v| v.is_finite()).map(|&v| f64::from(v));
    let (lo, hi) =
        finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if -lo > hi {
        let m = lo.abs().max(hi.abs()).max(f64::MIN_POSITIVE);
        MapStyle {
            colormap: Colormap::Diverging,
            range: (-m, m),
            threshold: None,
            label: label.into(),
        }
    } else {
        let top = if hi > 0.0 { hi } else { 1.0 };
        MapStyle {
            colormap: Colormap::Viridis,
            range: (0.0, top),
            threshold: Some(0.0),
            label: label.into(),
        }
    }
}

/// The chosen hyperparameters' histogram, warning when many of the voxels the space predicts
/// (score above 0, when `scores` are given) sit at an edge of the grid: noise voxels rightly
/// choose the strongest regularisation, so they are not counted.
fn hyperparameter_figure(
    doc: &mut Document,
    space: &str,
    name: &str,
    values: &[f64],
    scores: Option<&[f64]>,
    grid: &[f64],
) -> Result<()> {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return Ok(());
    }
    let log = name == "alpha" && finite.iter().all(|&v| v > 0.0);
    let shown: Vec<f64> =
        if log { finite.iter().map(|v| v.log10()).collect() } else { finite.clone() };
    let (gmin, gmax) =
        grid.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let params = HistogramParams {
        bins: grid.len().clamp(5, 40),
        width: 560,
        height: 360,
        title: format!("{name} chosen per voxel ({space})"),
        x_label: if log { format!("log10 {name}") } else { name.to_string() },
        y_label: "voxels".into(),
        ..HistogramParams::default()
    };
    let canvas = figure::histogram(&shown, &params)?;
    doc.figure(
        &canvas,
        &format!("{name} histogram of {space}"),
        &format!("The {name} chosen by inner cross-validation, per voxel."),
    )?;
    let predicted: Vec<f64> = match scores {
        Some(s) if s.len() == values.len() => values
            .iter()
            .zip(s)
            .filter(|(v, s)| v.is_finite() && **s > 0.0)
            .map(|(v, _)| *v)
            .collect(),
        _ => finite.clone(),
    };
    if grid.len() > 1 && !predicted.is_empty() {
        for (edge, side) in [(gmin, "smallest"), (gmax, "largest")] {
            let at = predicted
                .iter()
                .filter(|&&v| (v - edge).abs() <= 1e-9 * edge.abs().max(1.0))
                .count();
            let share = at as f64 / predicted.len() as f64;
            if share > EDGE_SHARE {
                doc.warning(&format!(
                    "{space}: {:.0}% of the {} voxels with a score above 0 chose the {side} {name} of the grid ({edge:e}); their best value may lie beyond it: widen the grid on that side.",
                    100.0 * share,
                    predicted.len()
                ));
            }
        }
    }
    Ok(())
}

/// The permutation null distribution of the map maximum, with the observed maximum marked.
async fn null_figure(
    doc: &mut Document,
    reader: &Reader<'_>,
    relative: &str,
    stats: &MapStats,
    what: &str,
) -> Result<()> {
    let Some(null) = reader.vector(relative).await? else { return Ok(()) };
    if !null.iter().any(|v| v.is_finite()) {
        return Ok(());
    }
    let params = HistogramParams {
        title: format!("null distribution of the maximum {what}"),
        x_label: format!("maximum {what} of a permutation"),
        y_label: "permutations".into(),
        marker: stats.max.map(|value| Marker { value, label: "observed maximum".into() }),
        width: 560,
        height: 360,
        ..HistogramParams::default()
    };
    let canvas = figure::histogram(&null, &params)?;
    doc.figure(&canvas, &format!("null maximum of {what}"), &format!("{} permutations; a voxel's family-wise corrected p is the share of permutation maxima at or above its value.", null.len()))?;
    Ok(())
}

/// `encoding/profile.csv` (`roi,space,n_voxels,mean_score`): one line per ROI over spaces.
fn profile_figure(doc: &mut Document, text: &str) -> Result<()> {
    let mut rows: Vec<(String, String, f64)> = Vec::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        if let [roi, space, _, score] = fields[..] {
            rows.push((roi.to_string(), space.to_string(), score.parse().unwrap_or(f64::NAN)));
        }
    }
    let spaces = unique(rows.iter().map(|r| r.1.as_str()));
    let series: Vec<Series> = unique(rows.iter().map(|r| r.0.as_str()))
        .into_iter()
        .map(|roi| Series {
            name: roi.clone(),
            x: (0..spaces.len()).map(|i| i as f64).collect(),
            y: spaces
                .iter()
                .map(|s| rows.iter().find(|r| r.0 == roi && &r.1 == s).map_or(f64::NAN, |r| r.2))
                .collect(),
        })
        .collect();
    if series.is_empty() {
        return Ok(());
    }
    let params = LinePlotParams {
        title: "mean encoding score per ROI".into(),
        x_label: "feature space".into(),
        y_label: "mean score".into(),
        x_ticks: Some(spaces.iter().enumerate().map(|(i, s)| (i as f64, s.clone())).collect()),
        ..LinePlotParams::default()
    };
    let canvas = figure::line_plot(&series, &params)?;
    doc.figure(
        &canvas,
        "layer profile per ROI",
        "Mean held-out score of each feature space within each ROI.",
    )
}

/// ROI RSA: a profile over models per method, the table, and the brain RDMs.
async fn rsa_section(
    doc: &mut Document,
    reader: &Reader<'_>,
    results: &SubjectSummary,
    prefix: &dyn Fn(&str) -> String,
) -> Result<()> {
    let rows = &results.rsa;
    let models = unique(rows.iter().map(|r| r.model.as_str()));
    let brains = unique(rows.iter().map(|r| r.brain.as_str()));
    doc.row_start();
    for method in unique(rows.iter().map(|r| r.method.as_str())) {
        let series: Vec<Series> = brains
            .iter()
            .map(|brain| Series {
                name: brain.clone(),
                x: (0..models.len()).map(|i| i as f64).collect(),
                y: models
                    .iter()
                    .map(|m| {
                        rows.iter()
                            .find(|r| &r.brain == brain && &r.model == m && r.method == method)
                            .map_or(f64::NAN, |r| r.value)
                    })
                    .collect(),
            })
            .collect();
        // a noise ceiling is drawn when exactly one brain RDM has one for this method
        let ceilings: Vec<[f64; 2]> = brains
            .iter()
            .filter_map(|b| {
                rows.iter().find(|r| &r.brain == b && r.method == method)?.noise_ceiling
            })
            .collect();
        let band = match ceilings[..] {
            [[lower, upper]] => Some(Band { lower, upper, label: "noise ceiling".into() }),
            _ => None,
        };
        let params = LinePlotParams {
            width: 600,
            title: format!("ROI RSA: {method}"),
            x_label: "model".into(),
            y_label: method.clone(),
            x_ticks: Some(models.iter().enumerate().map(|(i, s)| (i as f64, s.clone())).collect()),
            band,
            ..LinePlotParams::default()
        };
        let canvas = figure::line_plot(&series, &params)?;
        doc.figure(
            &canvas,
            &format!("ROI RSA profile, {method}"),
            "Each brain RDM compared with each model RDM.",
        )?;
    }
    doc.row_end();
    let table = rows
        .iter()
        .map(|r| {
            vec![
                r.brain.clone(),
                r.model.clone(),
                r.method.clone(),
                format!("{:.4}", r.value),
                fmt(r.p),
                fmt(r.p_fwe),
                r.noise_ceiling.map_or_else(|| "-".into(), |[l, u]| format!("{l:.3} – {u:.3}")),
            ]
        })
        .collect();
    doc.table(&["brain", "model", "method", "value", "p", "p FWE", "noise ceiling"], table);
    for brain in &brains {
        let Some(condensed) = reader.vector(&prefix(&layout::rsa_rdm(brain))).await? else {
            continue;
        };
        let Some(square) = square_rdm(&condensed) else { continue };
        let params = HeatmapParams {
            colormap: Colormap::Viridis,
            title: format!("brain RDM {brain}"),
            label: "dissimilarity".into(),
            ..HeatmapParams::default()
        };
        let canvas = figure::heatmap(square.view(), &params)?;
        doc.figure(
            &canvas,
            &format!("RDM of {brain}"),
            "Conditions in the order of the data's rows.",
        )?;
    }
    Ok(())
}

/// A condensed RDM (upper triangle, row-major) as a square matrix, or `None` if its length is
/// not n(n-1)/2.
fn square_rdm(condensed: &[f64]) -> Option<Array2<f64>> {
    // n(n-1)/2 = len  <=>  n = (1 + sqrt(1 + 8 len)) / 2
    let n = ((1.0 + (1.0 + 8.0 * condensed.len() as f64).sqrt()) / 2.0).round() as usize;
    if n < 2 || n * (n - 1) / 2 != condensed.len() {
        return None;
    }
    let mut m = Array2::zeros((n, n));
    let mut k = 0;
    for i in 0..n {
        for j in i + 1..n {
            m[[i, j]] = condensed[k];
            m[[j, i]] = condensed[k];
            k += 1;
        }
    }
    Some(m)
}

/// Stretches of consecutive points with `p < ALPHA_FWE`, as x intervals around them.
fn significant_spans(p: &[f64]) -> Vec<(f64, f64)> {
    let mut spans = Vec::new();
    let mut start = None;
    for (t, &v) in p.iter().chain(std::iter::once(&f64::NAN)).enumerate() {
        match (v < ALPHA_FWE, start) {
            (true, None) => start = Some(t),
            (false, Some(s)) => {
                spans.push((s as f64 - 0.5, t as f64 - 0.5));
                start = None;
            }
            _ => {}
        }
    }
    spans
}

/// One row of a map table: name, mean, max, peak, significant count.
fn stats_row(
    name: &str,
    s: &MapStats,
    significant: Option<usize>,
    n_perm: Option<usize>,
) -> Vec<String> {
    let significant = match (significant, n_perm) {
        (Some(k), Some(n)) => format!("{k} of {} ({n} permutations)", s.n_finite),
        _ => "no permutations".into(),
    };
    vec![name.to_string(), fmt(s.mean), fmt(s.max), s.describe_peak(), significant]
}

fn fmt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.4}"))
}

fn unique<'a>(items: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        if !out.iter().any(|o| o == item) {
            out.push(item.to_string());
        }
    }
    out
}

/// The HTML document being written: headings, paragraphs, warnings, tables and figures, every
/// text escaped.
struct Document {
    body: String,
    title: String,
}

impl Document {
    fn new(summary: &Summary) -> Document {
        let title = format!("brainfit report: {}", summary.name);
        let mut doc = Document { body: String::new(), title: title.clone() };
        doc.heading(1, &title);
        let mut facts = vec![
            ("brainfit", summary.brainfit_version.clone()),
            ("linear algebra", summary.linalg_backend.clone()),
            ("tasks", summary.tasks.to_string()),
            ("workers", summary.workers.to_string()),
            ("compute time", format!("{:.1} s", summary.compute_seconds)),
            ("subjects", summary.subjects.len().to_string()),
        ];
        if let Some(p) = &summary.permutation {
            facts.push((
                "permutations",
                format!(
                    "{} ({} scheme, seed {}); smallest possible p {:.2e}",
                    p.n, p.scheme, p.seed, p.smallest_p
                ),
            ));
        }
        let rows = facts.into_iter().map(|(k, v)| vec![k.to_string(), v]).collect();
        doc.table(&["", ""], rows);
        for w in &summary.warnings {
            doc.warning(w);
        }
        doc
    }

    fn heading(&mut self, level: u8, text: &str) {
        let _ = writeln!(self.body, "<h{level}>{}</h{level}>", escape(text));
    }

    fn para(&mut self, text: &str) {
        let _ = writeln!(self.body, "<p>{}</p>", escape(text));
    }

    fn warning(&mut self, text: &str) {
        let _ = writeln!(self.body, "<p class=\"warning\">Warning: {}</p>", escape(text));
    }

    /// Figures until [`Document::row_end`] sit side by side where the page is wide enough.
    fn row_start(&mut self) {
        self.body.push_str("<div class=\"row\">\n");
    }

    fn row_end(&mut self) {
        self.body.push_str("</div>\n");
    }

    fn pre(&mut self, text: &str) {
        let _ = writeln!(self.body, "<pre>{}</pre>", escape(text));
    }

    fn table(&mut self, header: &[&str], rows: Vec<Vec<String>>) {
        self.body.push_str("<table>\n");
        if header.iter().any(|h| !h.is_empty()) {
            self.body.push_str("<tr>");
            for h in header {
                let _ = write!(self.body, "<th>{}</th>", escape(h));
            }
            self.body.push_str("</tr>\n");
        }
        for row in rows {
            self.body.push_str("<tr>");
            for cell in row {
                let _ = write!(self.body, "<td>{}</td>", escape(&cell));
            }
            self.body.push_str("</tr>\n");
        }
        self.body.push_str("</table>\n");
    }

    fn figure(&mut self, canvas: &Canvas, alt: &str, caption: &str) -> Result<()> {
        let png = canvas.to_png()?;
        let _ = writeln!(
            self.body,
            "<figure><img src=\"data:image/png;base64,{}\" width=\"{}\" height=\"{}\" alt=\"{}\"><figcaption>{}</figcaption></figure>",
            base64(&png),
            canvas.width,
            canvas.height,
            escape(alt),
            escape(caption)
        );
        Ok(())
    }

    fn finish(self) -> String {
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{}</body>\n</html>\n",
            escape(&self.title),
            self.body
        )
    }
}

/// The page's style: readable tables and figures, nothing fetched.
const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1280px;padding:0 1em;color:#222}\
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}\
th{background:#f3f3f3}figure{margin:1.2em 0}figcaption{color:#555;font-size:.9em;max-width:900px}\
img{max-width:100%;height:auto;image-rendering:pixelated}\
.warning{background:#fff4d6;border-left:4px solid #e69f00;padding:.4em .8em}\
pre{background:#f6f6f6;padding:1em;overflow:auto}.row{display:flex;flex-wrap:wrap;gap:0 2em}.row figure{max-width:600px}h4{margin-bottom:0}";

/// `text` with HTML's special characters escaped (job files and names are untrusted).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condensed_rdms_unfold_symmetrically() {
        let m = square_rdm(&[1.0, 2.0, 3.0]).expect("n = 3");
        assert_eq!(m, ndarray::arr2(&[[0.0, 1.0, 2.0], [1.0, 0.0, 3.0], [2.0, 3.0, 0.0]]));
        assert!(square_rdm(&[1.0, 2.0]).is_none());
    }

    #[test]
    fn significant_stretches_become_spans() {
        let p = [0.5, 0.01, 0.02, 0.3, 0.04, f64::NAN, 0.01];
        assert_eq!(significant_spans(&p), vec![(0.5, 2.5), (3.5, 4.5), (5.5, 6.5)]);
    }

    #[test]
    fn untrusted_text_is_escaped() {
        assert_eq!(
            escape("<img src=x onerror='a'>&\""),
            "&lt;img src=x onerror=&#39;a&#39;&gt;&amp;&quot;"
        );
    }
}
