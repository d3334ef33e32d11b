//! The demo study: a small synthetic data set with planted effects, written as real input
//! files, so that `brainfit demo` exercises exactly what a lab's job does.
//!
//! A 24×24×16 volume with an ellipsoidal brain mask (about 3,500 voxels), 180 stimuli in six
//! runs, and two feature spaces ("edges", 40 units, and "objects", 80 units). Voxels in a
//! sphere on the left are driven by "edges", voxels in a sphere on the right by "objects"; all
//! other voxels are noise. Simulated MEG recordings of the same stimuli from six participants
//! (30 time points × 32 channels each, every participant with their own sensor mixing) carry
//! the "objects" geometry between time points 10 and 15. A good analysis
//! finds each space's effect in its own sphere (encoding, best layer, variance partition,
//! searchlight RSA, ROI RSA), and the MEG effect in its time window (time-resolved RSA), and
//! calls them significant after family-wise correction — the MEG effect across the six
//! participants by a group test (sign flips, TFCE over time).

use crate::Result;
use brainfit_io::{Store, join_url, write_nifti_f32, write_npy};
use brainfit_job::outputs::layout::{self, MapDir, MapFile};
use brainfit_kernels::rng::Rng;
use ndarray::{Array1, Array2, Array3, Axis};

/// Volume shape of the demo.
pub const SHAPE: [usize; 3] = [24, 24, 16];
/// Samples per run and number of runs.
pub const RUNS: (usize, usize) = (30, 6);
/// Time points of the simulated MEG that carry the "objects" geometry.
pub const MEG_WINDOW: std::ops::Range<usize> = 10..16;
/// Participants of the simulated MEG (2^6 = 64 sign-flip patterns: the group test is exact).
pub const MEG_PARTICIPANTS: usize = 6;
/// 2 × 2 × 2.5 mm voxels.
const AFFINE: [[f64; 4]; 4] =
    [[2.0, 0.0, 0.0, -24.0], [0.0, 2.0, 0.0, -24.0], [0.0, 0.0, 2.5, -20.0], [0.0, 0.0, 0.0, 1.0]];

/// A planted effect: which feature space drives which sphere.
#[derive(Debug, Clone)]
pub struct Planted {
    /// Feature space name.
    pub space: &'static str,
    /// Sphere centre (voxel coordinates).
    pub centre: [usize; 3],
    /// Sphere radius in voxels.
    pub radius: f64,
    /// Mask indices of the voxels inside the sphere.
    pub voxels: Vec<usize>,
}

/// Where the demo's inputs were written and what was planted.
#[derive(Debug, Clone)]
pub struct Demo {
    /// The job file's text.
    pub job: String,
    /// Planted effects.
    pub planted: Vec<Planted>,
    /// Number of mask voxels.
    pub n_voxels: usize,
    /// Mask voxel coordinates, in mask (nilearn) order.
    pub voxels: Vec<[usize; 3]>,
}

fn within(v: [usize; 3], c: [usize; 3], r: f64) -> bool {
    let d2: f64 = (0..3).map(|i| (v[i] as f64 - c[i] as f64).powi(2)).sum();
    d2 <= r * r
}

/// Writes the demo's inputs below `out` and returns the job that analyses them.
pub async fn generate(store: &Store, out: &str) -> Result<Demo> {
    let mut rng = Rng::new(2008);
    let [nx, ny, nz] = SHAPE;
    let centre = [(nx as f64 - 1.0) / 2.0, (ny as f64 - 1.0) / 2.0, (nz as f64 - 1.0) / 2.0];
    let semi = [11.0, 11.0, 7.0];
    let mut mask = Array3::<f32>::zeros((nx, ny, nz));
    let mut voxels = Vec::new();
    for i in 0..nx {
        for j in 0..ny {
            for k in 0..nz {
                let r: f64 = [i, j, k]
                    .iter()
                    .enumerate()
                    .map(|(a, &c)| ((c as f64 - centre[a]) / semi[a]).powi(2))
                    .sum();
                if r <= 1.0 {
                    mask[(i, j, k)] = 1.0;
                    voxels.push([i, j, k]);
                }
            }
        }
    }
    let n = RUNS.0 * RUNS.1;
    let groups: Array1<i64> = (0..n).map(|t| (t / RUNS.0) as i64).collect();
    let spaces: [(&'static str, usize, [usize; 3]); 2] =
        [("edges", 40, [6, 12, 8]), ("objects", 80, [17, 12, 8])];
    let mut brain: Array2<f32> = rng.normal_array((n, voxels.len()));
    let mut planted = Vec::new();
    let mut objects = Array2::<f64>::zeros((0, 0));
    for (name, p, c) in spaces {
        let x: Array2<f64> = rng.normal_array((n, p));
        if name == "objects" {
            objects = x.clone();
        }
        let members: Vec<usize> =
            (0..voxels.len()).filter(|&v| within(voxels[v], c, 3.5)).collect();
        for &v in &members {
            // signal variance ~ 1.5 against unit noise: held-out R² around 0.3–0.5
            let w: Array1<f64> = rng.normal_array(p) * (1.5 / p as f64).sqrt();
            let signal = x.dot(&w);
            brain.column_mut(v).iter_mut().zip(&signal).for_each(|(b, s)| *b += *s as f32);
        }
        store
            .put(
                &join_url(out, &format!("inputs/{name}.npy")),
                write_npy(&x.mapv(|e| e as f32).view()).into(),
            )
            .await?;
        let mut roi = Array3::<f32>::zeros((nx, ny, nz));
        members.iter().for_each(|&v| roi[(voxels[v][0], voxels[v][1], voxels[v][2])] = 1.0);
        let roi_url = join_url(out, &format!("inputs/roi_{name}.nii.gz"));
        store.put(&roi_url, write_nifti_f32(roi.view(), &AFFINE, true).into()).await?;
        planted.push(Planted { space: name, centre: c, radius: 3.5, voxels: members });
    }
    // MEG per participant: [30 times, 180 stimuli, 32 channels]; the objects geometry during
    // MEG_WINDOW, through the participant's own sensor mixing
    for p in 1..=MEG_PARTICIPANTS {
        let mut meg: Array3<f32> = rng.normal_array((30, n, 32));
        let mixing: Array2<f64> = rng.normal_array((80, 32)) * (2.0 / 80f64).sqrt();
        let evoked = objects.dot(&mixing);
        for t in MEG_WINDOW {
            meg.index_axis_mut(Axis(0), t).zip_mut_with(&evoked, |m, e| *m += *e as f32);
        }
        let url = join_url(out, &format!("inputs/meg_p{p}.npy"));
        store.put(&url, write_npy(&meg.view()).into()).await?;
    }
    for (name, bytes) in [
        ("inputs/mask.nii.gz", write_nifti_f32(mask.view(), &AFFINE, true)),
        ("inputs/brain.npy", write_npy(&brain.view())),
        ("inputs/runs.npy", write_npy(&groups.view())),
    ] {
        store.put(&join_url(out, name), bytes.into()).await?;
    }
    let job = r#"# brainfit demo: synthetic study with planted effects (see `brainfit demo --help`)
name = "demo"
output = "results"

[data]
brain  = "inputs/brain.npy"      # [180 stimuli, voxels] f32
mask   = "inputs/mask.nii.gz"
groups = "inputs/runs.npy"       # six runs of 30 stimuli

[features]
edges   = "inputs/edges.npy"
objects = "inputs/objects.npy"

[encoding]                       # each layer alone (ridge) and both jointly (banded ridge),
model     = "banded_ridge"       #   alpha per voxel, leave-one-run-out, then the variance
partition = true                 #   partition: what each layer explains alone, what they share
alphas    = { logspace = [-1, 4, 11] }
random_search = { n_iter = 6, concentrations = [0.1] }
cv        = { kind = "group" }
inner_cv  = { kind = "group" }
score     = "r2"

[searchlight]                    # every feature space's RDM against 4 mm spheres
radius_mm = 4.0
min_voxels = 10
rdm = "correlation"
compare = "spearman"

[rsa]                            # ROI-level RSA in the two planted spheres
rois = { edges_roi = "inputs/roi_edges.nii.gz", objects_roi = "inputs/roi_objects.nii.gz" }
compare = ["spearman", "pearson"]

[time_resolved]                  # MEG: one RDM per time point against every model,
[time_resolved.data]             #   for each participant's recording (outputs below p1/ ...)
p1 = "inputs/meg_p1.npy"
p2 = "inputs/meg_p2.npy"
p3 = "inputs/meg_p3.npy"
p4 = "inputs/meg_p4.npy"
p5 = "inputs/meg_p5.npy"
p6 = "inputs/meg_p6.npy"

[group]                          # the objects time course across the six participants:
maps = ["time_resolved/objects"] #   sign flips of Fisher z, TFCE over time
fisher_z = true
tail = "greater"
tfce = true
n = 1000                         # 2^6 = 64 patterns are fewer: all of them, exact p-values

[permutation]                    # max-statistic FWE over each map
n = N_PERMUTATIONS
seed = 0
scheme = "within-group"

[execution]
voxels_per_task = 1024
centres_per_task = 1024
"#
    .replace("N_PERMUTATIONS", &N_PERMUTATIONS.to_string());
    store.put(&join_url(out, "job.toml"), job.clone().into_bytes().into()).await?;
    Ok(Demo { job, planted, n_voxels: voxels.len(), voxels })
}

/// Permutations the demo's job runs.
pub const N_PERMUTATIONS: usize = 50;

/// A permutation p-value to three significant digits; at the floor `1 / (n + 1)` (no null
/// value reached the observed one) it says so, since a smaller p cannot be told apart with `n`
/// permutations.
pub fn describe_p(p: f64, n: usize) -> String {
    let floor = 1.0 / (n as f64 + 1.0);
    if (p - floor).abs() <= 1e-12 {
        format!("{p:.3} = 1/{}, the smallest possible with {n} permutations", n + 1)
    } else {
        format!("{p:.3}")
    }
}

/// How well a score map recovers a planted sphere.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// Feature space.
    pub space: String,
    /// Mean score inside the planted sphere.
    pub inside: f64,
    /// Mean score elsewhere.
    pub outside: f64,
    /// Fraction of the sphere's size worth of top-scoring voxels that lie inside it.
    pub precision: f64,
}

/// Compares a score map with the sphere planted for `planted.space`.
pub fn recovery(planted: &Planted, score: &[f64]) -> Recovery {
    let inside_set: std::collections::HashSet<usize> = planted.voxels.iter().copied().collect();
    let mean = |it: &mut dyn Iterator<Item = f64>| {
        let v: Vec<f64> = it.filter(|x| x.is_finite()).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let inside = mean(&mut planted.voxels.iter().map(|&v| score[v]));
    let outside = mean(&mut (0..score.len()).filter(|v| !inside_set.contains(v)).map(|v| score[v]));
    let mut order: Vec<usize> = (0..score.len()).collect();
    let key = |v: usize| {
        if score[v].is_nan() { f64::NEG_INFINITY } else { score[v] }
    };
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)));
    let k = planted.voxels.len();
    let hits = order.iter().take(k).filter(|v| inside_set.contains(v)).count();
    Recovery {
        space: planted.space.to_string(),
        inside,
        outside,
        precision: hits as f64 / k.max(1) as f64,
    }
}

async fn read_vector(store: &Store, url: &str) -> Result<Vec<f64>> {
    Ok(brainfit_io::parse_npy(&store.get(url).await?, url)?.to_f64().iter().copied().collect())
}

fn distance(a: [usize; 3], b: [usize; 3]) -> f64 {
    (0..3).map(|i| (a[i] as f64 - b[i] as f64).powi(2)).sum::<f64>().sqrt()
}

/// Checks every analysis's outputs against the planted effects. Returns one line per check
/// and whether all of them recovered their effect.
pub async fn check(store: &Store, output: &str, study: &Demo) -> Result<(Vec<String>, bool)> {
    let mut lines = Vec::new();
    let mut all = true;
    let mut say = |found: bool, text: String| {
        all &= found;
        lines.push(format!("  {text} -> {}", if found { "recovered" } else { "NOT recovered" }));
    };
    let mask_voxels = &study.voxels;
    for planted in &study.planted {
        let name = planted.space;
        // encoding
        let map = |dir: MapDir<'_>, file| join_url(output, &dir.npy(file));
        let score = read_vector(store, &map(MapDir::Encoding(name), MapFile::Score)).await?;
        let p_fwe = read_vector(store, &map(MapDir::Encoding(name), MapFile::PFwe)).await?;
        let r = recovery(planted, &score);
        let inside: std::collections::HashSet<usize> = planted.voxels.iter().copied().collect();
        let sig_in = planted.voxels.iter().filter(|&&v| p_fwe[v] < 0.05).count();
        let sig_out = (0..score.len()).filter(|v| !inside.contains(v) && p_fwe[*v] < 0.05).count();
        say(
            r.precision >= 0.5 && r.inside > r.outside + 0.1 && sig_in > sig_out,
            format!(
                "encoding   {name:<8} sphere at {:?}: mean R² {:.3} inside vs {:.3} outside; FWE p < 0.05 in {sig_in} of {} voxels inside, {sig_out} outside",
                planted.centre,
                r.inside,
                r.outside,
                planted.voxels.len()
            ),
        );
        // searchlight: the best centre sits where its sphere reaches the planted one
        let dir = MapDir::Searchlight(name);
        let rho = read_vector(store, &map(dir, MapFile::Rho)).await?;
        let centres = read_vector(store, &map(dir, MapFile::Centres)).await?;
        let sl_fwe = read_vector(store, &map(dir, MapFile::PFwe)).await?;
        let best = (0..rho.len())
            .filter(|&i| rho[i].is_finite())
            .max_by(|&a, &b| rho[a].total_cmp(&rho[b]));
        let near = |i: usize| {
            distance(mask_voxels[centres[i] as usize], planted.centre) <= planted.radius + 2.0
        };
        let sig: Vec<usize> = (0..rho.len()).filter(|&i| sl_fwe[i] < 0.05).collect();
        let sig_near = sig.iter().filter(|&&i| near(i)).count();
        let found = best.is_some_and(near) && sig_near > 0 && sig_near * 2 > sig.len();
        say(
            found,
            format!(
                "searchlight {name:<7} best centre {} (rho {:.3}); {sig_near} of {} FWE-significant centres near the sphere",
                best.map_or("none".to_string(), |i| format!(
                    "{:?}",
                    mask_voxels[centres[i] as usize]
                )),
                best.map_or(f64::NAN, |i| rho[i]),
                sig.len()
            ),
        );
    }
    // best space per voxel: each sphere is won by the space planted in it
    let best =
        read_vector(store, &join_url(output, &format!("{}.npy", layout::BEST_SPACE))).await?;
    let labels = ["edges", "objects"]; // label l is the l-th space in name order
    for planted in &study.planted {
        let label = labels.iter().position(|&s| s == planted.space).map_or(0.0, |i| i as f64 + 1.0);
        let won = planted.voxels.iter().filter(|&&v| best[v] == label).count();
        say(
            won * 4 >= planted.voxels.len() * 3,
            format!(
                "best space {:<8} wins {won} of the {} voxels of its sphere (encoding/best_space.nii.gz)",
                planted.space,
                planted.voxels.len()
            ),
        );
    }
    // variance partition: each sphere's variance is unique to its own layer, not shared
    let partition = |bands: &str| join_url(output, &format!("{}.npy", layout::partition(bands)));
    let shared = read_vector(store, &partition("edges+objects")).await?;
    for planted in &study.planted {
        let own = read_vector(store, &partition(planted.space)).await?;
        let other_name = if planted.space == "edges" { "objects" } else { "edges" };
        let other = read_vector(store, &partition(other_name)).await?;
        let mean = |m: &[f64]| {
            planted.voxels.iter().map(|&v| m[v]).sum::<f64>() / planted.voxels.len() as f64
        };
        let (own, other, shared) = (mean(&own), mean(&other), mean(&shared));
        say(
            own > 0.15 && own > other + 0.1 && shared.abs() < 0.1,
            format!(
                "partition  {:<8} sphere: unique R² {own:.3} ({}), {other:.3} ({other_name}), shared {shared:.3}",
                planted.space, planted.space
            ),
        );
    }
    // ROI RSA: each ROI prefers its own feature space, significantly
    let csv_url = join_url(output, layout::RSA_COMPARE);
    let bytes = store.get(&csv_url).await?;
    let records: Vec<csv::StringRecord> = csv::Reader::from_reader(bytes.as_ref())
        .records()
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| brainfit_job::JobError::Corrupt(format!("{csv_url}: {e}")))?;
    for planted in &study.planted {
        let roi = format!("{}_roi", planted.space);
        let rows: Vec<Vec<&str>> = records
            .iter()
            .map(|r| r.iter().collect())
            .filter(|r: &Vec<&str>| r[0] == roi && r[2] == "spearman")
            .collect();
        let value = |r: &Vec<&str>| r[3].parse::<f64>().unwrap_or(f64::NAN);
        let p_fwe = |r: &Vec<&str>| r[5].parse::<f64>().unwrap_or(f64::NAN);
        let best = rows.iter().max_by(|a, b| value(a).total_cmp(&value(b)));
        let found = best.is_some_and(|b| b[1] == planted.space && p_fwe(b) < 0.05);
        say(
            found,
            format!(
                "ROI RSA    {roi:<12} best model {} (spearman {:.3}, p_fwe {})",
                best.map_or("none", |b| b[1]),
                best.map_or(f64::NAN, value),
                describe_p(best.map_or(f64::NAN, p_fwe), N_PERMUTATIONS)
            ),
        );
    }
    // time-resolved, across the participants: the objects model is significant only inside
    // its window
    let group = |file: &str| {
        join_url(output, &format!("{}/{file}", layout::group_test("time_resolved/objects")))
    };
    let p_tfce = read_vector(store, &group("p_tfce_fwe.npy")).await?;
    let sig: Vec<usize> = (0..p_tfce.len()).filter(|&t| p_tfce[t] < 0.05).collect();
    let found = !sig.is_empty() && sig.iter().all(|t| MEG_WINDOW.contains(t));
    say(
        found,
        format!(
            "MEG group  objects significant (TFCE, {MEG_PARTICIPANTS} participants) at time points {sig:?} (planted {MEG_WINDOW:?})"
        ),
    );
    Ok((lines, all))
}
