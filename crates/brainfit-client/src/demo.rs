//! The demo study: a small synthetic data set with planted effects, written as real input
//! files, so that `brainfit demo` exercises exactly what a lab's job does.
//!
//! A 24×24×16 volume with an ellipsoidal brain mask (about 3,500 voxels), 180 stimuli in six
//! runs, and two feature spaces ("edges", 40 units, and "objects", 80 units). Voxels in a
//! sphere on the left are driven by "edges", voxels in a sphere on the right by "objects"; all
//! other voxels are noise. A good analysis finds each space's effect in its own sphere.

use crate::Result;
use brainfit_io::{Store, join_url, write_nifti_f32, write_npy};
use brainfit_kernels::rng::Rng;
use ndarray::{Array1, Array2, Array3};

/// Volume shape of the demo.
pub const SHAPE: [usize; 3] = [24, 24, 16];
/// Samples per run and number of runs.
pub const RUNS: (usize, usize) = (30, 6);

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
}

fn within(v: [usize; 3], c: [usize; 3], r: f64) -> bool {
    let d2: f64 = (0..3).map(|i| (v[i] as f64 - c[i] as f64).powi(2)).sum();
    d2 <= r * r
}

/// Writes the demo's inputs below `out` and returns the job that analyses them.
pub async fn generate(store: &Store, out: &str) -> Result<Demo> {
    let mut rng = Rng::new(2008);
    let [nx, ny, nz] = SHAPE;
    let centre = [
        (nx as f64 - 1.0) / 2.0,
        (ny as f64 - 1.0) / 2.0,
        (nz as f64 - 1.0) / 2.0,
    ];
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
    for (name, p, c) in spaces {
        let x: Array2<f64> = rng.normal_array((n, p));
        let members: Vec<usize> = (0..voxels.len())
            .filter(|&v| within(voxels[v], c, 3.5))
            .collect();
        for &v in &members {
            // signal variance ~ 1.5 against unit noise: held-out R² around 0.3–0.5
            let w: Array1<f64> = rng.normal_array(p) * (1.5 / p as f64).sqrt();
            let signal = x.dot(&w);
            brain
                .column_mut(v)
                .iter_mut()
                .zip(&signal)
                .for_each(|(b, s)| *b += *s as f32);
        }
        store
            .put(
                &join_url(out, &format!("inputs/{name}.npy")),
                write_npy(&x.mapv(|e| e as f32).view()).into(),
            )
            .await?;
        planted.push(Planted {
            space: name,
            centre: c,
            radius: 3.5,
            voxels: members,
        });
    }
    let affine = [
        [2.0, 0.0, 0.0, -24.0],
        [0.0, 2.0, 0.0, -24.0],
        [0.0, 0.0, 2.5, -20.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    store
        .put(
            &join_url(out, "inputs/mask.nii.gz"),
            write_nifti_f32(mask.view(), &affine, true).into(),
        )
        .await?;
    store
        .put(
            &join_url(out, "inputs/brain.npy"),
            write_npy(&brain.view()).into(),
        )
        .await?;
    store
        .put(
            &join_url(out, "inputs/runs.npy"),
            write_npy(&groups.view()).into(),
        )
        .await?;
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

[encoding]
alphas   = { logspace = [-1, 4, 11] }
cv       = { kind = "group" }
inner_cv = { kind = "group" }
score    = "r2"

[execution]
voxels_per_task = 1024
"#
    .to_string();
    store
        .put(&join_url(out, "job.toml"), job.clone().into_bytes().into())
        .await?;
    Ok(Demo {
        job,
        planted,
        n_voxels: voxels.len(),
    })
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
    let outside = mean(
        &mut (0..score.len())
            .filter(|v| !inside_set.contains(v))
            .map(|v| score[v]),
    );
    let mut order: Vec<usize> = (0..score.len()).collect();
    let key = |v: usize| {
        if score[v].is_nan() {
            f64::NEG_INFINITY
        } else {
            score[v]
        }
    };
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)));
    let k = planted.voxels.len();
    let hits = order
        .iter()
        .take(k)
        .filter(|v| inside_set.contains(v))
        .count();
    Recovery {
        space: planted.space.to_string(),
        inside,
        outside,
        precision: hits as f64 / k.max(1) as f64,
    }
}
