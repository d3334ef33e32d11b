//! Calibration of every permutation test brainfit runs, on null data with the structure real
//! data have: runs with their own offsets and scales, per-run preprocessing, FIR delays and
//! autocorrelated (AR(1)) noise.
//!
//! A p-value is right only if, under the null, `p <= alpha` happens with probability `alpha`.
//! Each configuration here runs real jobs (embedded, in memory) on many independent null data
//! sets, each with its own data and its own permutation seed, and checks that the rate of
//! `p <= 0.05` over all map items and the rate of `p_fwe <= 0.05` over data sets lie within
//! a binomial 99% bound of 0.05. With 19 permutations, `p <= 0.05` means that no permutation
//! reached the observed value, which under an exact test happens with probability exactly
//! 1/20 = 0.05 (with 999 permutations the same event is `p <= 0.05` at 50 exceedances).
//! With 500 data sets the family-wise bound is 0.05 ± 0.025, so a doubled rate (0.10) fails.
//!
//! Each configuration also plants an effect and checks it is found, and two configurations
//! that are known to be invalid (row-level permutations of autocorrelated time series; free
//! permutations across runs of run-structured RSA data) must fail the same bound: the test can
//! fail. `cargo test --test calibration -- --nocapture` prints the table in the README.

use brainfit_io::{Store, join_url, parse_npy, write_nifti_f32, write_npy};
use brainfit_kernels::rng::Rng;
use ndarray::{Array1, Array2, Array3, Axis};

mod common;

/// Permutations per data set: `p <= 0.05` has probability exactly 1/20 under a valid null.
const N_PERM: usize = 19;
/// Null data sets per configuration.
const N_SETS: usize = 500;
const ALPHA: f64 = 0.05;

/// Counts of `p <= 0.05` over map items and of `p_fwe <= 0.05` over data sets.
#[derive(Debug, Default, Clone, Copy)]
struct Rates {
    items: usize,
    item_hits: usize,
    sets: usize,
    fwe_hits: usize,
}

impl Rates {
    fn add(&mut self, p: &[f64], p_fwe: &[f64]) {
        self.items += p.len();
        self.item_hits += p.iter().filter(|&&v| v <= ALPHA + 1e-12).count();
        self.sets += 1;
        self.fwe_hits += usize::from(p_fwe.iter().any(|&v| v <= ALPHA + 1e-12));
    }

    fn item_rate(&self) -> f64 {
        self.item_hits as f64 / self.items as f64
    }

    fn fwe_rate(&self) -> f64 {
        self.fwe_hits as f64 / self.sets as f64
    }

    /// Whether both rates lie within the binomial 99% bound of 0.05 (normal approximation:
    /// `0.05 ± 2.576 sqrt(0.05 · 0.95 / trials)`).
    fn calibrated(&self) -> bool {
        within(self.item_rate(), self.items) && within(self.fwe_rate(), self.sets)
    }

    fn row(&self, name: &str) -> String {
        format!(
            "| {name} | {:.4} ({} items) | {:.3} ({} sets) | ±{:.4} / ±{:.3} |",
            self.item_rate(),
            self.items,
            self.fwe_rate(),
            self.sets,
            half_width(self.items),
            half_width(self.sets)
        )
    }
}

fn half_width(trials: usize) -> f64 {
    2.576 * (ALPHA * (1.0 - ALPHA) / trials as f64).sqrt()
}

fn within(rate: f64, trials: usize) -> bool {
    (rate - ALPHA).abs() <= half_width(trials)
}

/// The run structure of a null data set.
#[derive(Debug, Clone, Copy)]
struct Runs {
    runs: usize,
    per_run: usize,
    /// Per-run, per-column offsets (standard deviation 3) and per-run scales (0.5 to 2).
    offsets: bool,
    /// AR(1) coefficient of the noise within each run (0 = independent rows).
    ar: f64,
}

impl Runs {
    fn n(&self) -> usize {
        self.runs * self.per_run
    }

    fn labels(&self) -> Array1<i64> {
        (0..self.n()).map(|t| (t / self.per_run) as i64).collect()
    }

    /// Noise `[n, columns]` with this structure.
    fn noise(&self, rng: &mut Rng, columns: usize) -> Array2<f64> {
        let mut out = Array2::<f64>::zeros((self.n(), columns));
        let innovation = (1.0 - self.ar * self.ar).sqrt();
        for r in 0..self.runs {
            let scale = if self.offsets { 0.5 + 1.5 * rng.uniform() } else { 1.0 };
            for c in 0..columns {
                let offset = if self.offsets { 3.0 * rng.normal() } else { 0.0 };
                let mut e = rng.normal();
                for t in 0..self.per_run {
                    if t > 0 {
                        e = self.ar * e + innovation * rng.normal();
                    }
                    out[(r * self.per_run + t, c)] = offset + scale * e;
                }
            }
        }
        out
    }
}

async fn put<T: brainfit_io::NpyElement, D: ndarray::Dimension>(
    store: &Store,
    base: &str,
    name: &str,
    a: &ndarray::Array<T, D>,
) {
    store.put(&join_url(base, name), write_npy(&a.view()).into()).await.unwrap();
}

async fn vector(store: &Store, url: &str) -> Vec<f64> {
    let bytes = store.get(url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
    parse_npy(&bytes, url).unwrap().to_f64().iter().copied().collect()
}

/// An encoding configuration: data structure, preprocessing, score and scheme.
#[derive(Debug, Clone, Copy)]
struct Encoding {
    runs: Runs,
    groups: bool,
    zscore: bool,
    delays: &'static str,
    score: &'static str,
    /// `scheme = ...` line, or "" for the default.
    scheme: &'static str,
}

const VOXELS: usize = 10;
const FEATURES: usize = 5;

impl Encoding {
    fn job(&self, seed: usize, n_perm: usize) -> String {
        let (groups, cv) = if self.groups {
            ("groups = \"runs.npy\"", "{ kind = \"group\" }")
        } else {
            ("", "{ kind = \"kfold\", k = 5 }")
        };
        format!(
            r#"
name = "calibration"
output = "out"
[data]
brain = "brain.npy"
{groups}
[features]
x = "x.npy"
[encoding]
alphas = [1, 10, 100, 1000]
cv = {cv}
inner_cv = {cv}
score = "{score}"
zscore = "{zscore}"
delays = {delays}
[permutation]
n = {n_perm}
seed = {seed}
{scheme}
"#,
            score = self.score,
            zscore = if self.zscore { "per-group" } else { "none" },
            delays = self.delays,
            scheme = self.scheme,
        )
    }

    /// Runs data set `i` (null, or with voxels 0..3 driven by the features) and returns
    /// (p, p_fwe) over the voxels.
    async fn run(&self, store: &Store, i: usize, planted: bool) -> (Vec<f64>, Vec<f64>) {
        let base = "memory://calibration/encoding";
        let mut rng = Rng::new(1_000_003 * i as u64 + u64::from(planted));
        let x: Array2<f64> = rng.normal_array((self.runs.n(), FEATURES));
        let mut y = self.runs.noise(&mut rng, VOXELS);
        if planted {
            // unit-norm weights: each planted voxel gets signal variance 36 (noise: 0.25 to 4,
            // run offsets: 9)
            let mut w: Array2<f64> = rng.normal_array((FEATURES, 3));
            for mut column in w.columns_mut() {
                let norm = column.dot(&column).sqrt();
                column /= norm;
            }
            // what the job's delays see: x at lag 1 (or lag 0 without delays)
            let lagged = if self.delays == "[0]" {
                x.clone()
            } else {
                let mut l = Array2::<f64>::zeros(x.dim());
                for t in 0..x.nrows() {
                    if t % self.runs.per_run > 0 {
                        l.row_mut(t).assign(&x.row(t - 1));
                    }
                }
                l
            };
            y.slice_mut(ndarray::s![.., ..3]).scaled_add(6.0, &lagged.dot(&w));
        }
        put(store, base, "x.npy", &x).await;
        put(store, base, "brain.npy", &y).await;
        put(store, base, "runs.npy", &self.runs.labels()).await;
        // a planted effect is looked for as a user would, with 99 permutations (19 random
        // whole-run orders out of 720 may include the observed order itself)
        let n_perm = if planted { 99 } else { N_PERM };
        common::run_embedded(store, base, &self.job(i, n_perm), 1).await.unwrap();
        let out = join_url(base, "out/encoding/x");
        (
            vector(store, &format!("{out}/p.npy")).await,
            vector(store, &format!("{out}/p_fwe.npy")).await,
        )
    }

    async fn rates(&self) -> Rates {
        let store = Store::new();
        let mut rates = Rates::default();
        for i in 0..N_SETS {
            let (p, p_fwe) = self.run(&store, i, false).await;
            rates.add(&p, &p_fwe);
        }
        rates
    }

    async fn finds_planted_effect(&self) -> bool {
        let (_, p_fwe) = self.run(&Store::new(), 0, true).await;
        let found = p_fwe[..3].iter().all(|&p| p <= ALPHA + 1e-12);
        if !found {
            println!("planted effect: p_fwe {p_fwe:?}");
        }
        found
    }
}

/// Independent trials (betas) in 6 runs of 20, with run offsets and scales.
const BETAS: Runs = Runs { runs: 6, per_run: 20, offsets: true, ar: 0.0 };
/// Time series: 6 runs of 20 volumes, run offsets and scales, AR(1) noise with φ = 0.9.
const SERIES: Runs = Runs { runs: 6, per_run: 20, offsets: true, ar: 0.9 };
/// No runs at all: independent rows.
const PLAIN: Runs = Runs { runs: 1, per_run: 120, offsets: false, ar: 0.0 };

fn encoding_configs(scheme: &'static str, runs: Runs, delays: &[&'static str]) -> Vec<Encoding> {
    let mut out = Vec::new();
    for score in ["r2", "pearson"] {
        for zscore in [false, true] {
            for &d in delays {
                out.push(Encoding { runs, groups: true, zscore, delays: d, score, scheme });
            }
        }
    }
    out
}

async fn check_all(name: &str, configs: Vec<Encoding>) {
    let mut failures = Vec::new();
    for c in configs {
        let rates = c.rates().await;
        let label = format!(
            "{name}: {} scheme, zscore {}, delays {}, {}",
            if c.scheme.is_empty() { "default" } else { c.scheme },
            if c.zscore { "per-group" } else { "none" },
            c.delays,
            c.score
        );
        println!("{}", rates.row(&label));
        if !rates.calibrated() {
            failures.push(format!("{label}: {rates:?}"));
        }
        if !c.finds_planted_effect().await {
            failures.push(format!("{label}: the planted effect was not found"));
        }
    }
    assert!(failures.is_empty(), "miscalibrated:\n{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoding_on_independent_trials_in_runs_is_calibrated_by_default() {
    // the default scheme with groups is within-group
    check_all("betas in runs", encoding_configs("", BETAS, &["[0]"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoding_on_time_series_is_calibrated_with_whole_run_permutations() {
    let configs = encoding_configs("scheme = \"whole-groups\"", SERIES, &["[0]", "[1, 2, 3]"]);
    check_all("AR(1) time series", configs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoding_without_runs_is_calibrated_with_free_permutations() {
    let configs = ["r2", "pearson"].map(|score| Encoding {
        runs: PLAIN,
        groups: false,
        zscore: false,
        delays: "[0]",
        score,
        scheme: "",
    });
    check_all("no runs", configs.to_vec()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_permutations_of_autocorrelated_time_series_fail_the_same_bound() {
    // what brainfit warns about: delays with a row-level scheme on AR(1) noise
    let c = Encoding {
        runs: SERIES,
        groups: true,
        zscore: false,
        delays: "[1, 2, 3]",
        score: "r2",
        scheme: "scheme = \"within-group\"",
    };
    let rates = c.rates().await;
    println!("{}", rates.row("AR(1) time series, within-group (warned), delays [1, 2, 3], r2"));
    assert!(
        rates.item_rate() > ALPHA + half_width(rates.items),
        "the calibration bound must catch an invalid null: {rates:?}"
    );
}

/// RSA on conditions in runs: brain patterns and the model's activations both carry per-run
/// offsets (as betas estimated run by run do), independent of each other.
struct Rsa {
    /// The conditions' structure (with runs, the job gives `groups`).
    conditions: Runs,
    scheme: &'static str,
}

/// 60 conditions in 6 runs, with run offsets in brain patterns and activations alike.
const CONDITIONS: Runs = Runs { runs: 6, per_run: 10, offsets: true, ar: 0.0 };
/// 60 conditions without runs.
const PLAIN_CONDITIONS: Runs = Runs { runs: 1, per_run: 60, offsets: false, ar: 0.0 };
/// A 6×6×6 volume, every voxel in the mask; searchlight spheres of radius 1.
const SIDE: usize = 6;
const MEG_TIMES: usize = 10;

impl Rsa {
    fn job(&self, seed: usize) -> String {
        format!(
            r#"
name = "calibration"
output = "out"
[data]
brain = "brain.npy"
mask = "mask.nii.gz"
{groups}
[features]
model = "model.npy"
[searchlight]
radius = 1.0
min_voxels = 4
[rsa]
rois = {{ left = "left.nii.gz", right = "right.nii.gz" }}
[time_resolved]
data = "meg.npy"
[permutation]
n = {N_PERM}
seed = {seed}
{scheme}
"#,
            groups = if self.conditions.runs > 1 { "groups = \"runs.npy\"" } else { "" },
            scheme = self.scheme
        )
    }

    /// Runs data set `i`; the (p, p_fwe) of searchlight (8 centres whose spheres do not
    /// overlap, and the whole map's p_fwe), ROI RSA and time-resolved RSA.
    async fn run(&self, store: &Store, i: usize, planted: bool) -> [(Vec<f64>, Vec<f64>); 3] {
        let base = "memory://calibration/rsa";
        let mut rng = Rng::new(7_000_001 * i as u64 + u64::from(planted));
        let n = self.conditions.n();
        let model = self.conditions.noise(&mut rng, 5);
        let mut brain = self.conditions.noise(&mut rng, SIDE * SIDE * SIDE);
        let mut meg = Array3::<f64>::zeros((MEG_TIMES, n, 8));
        for mut t in meg.axis_iter_mut(Axis(0)) {
            t.assign(&self.conditions.noise(&mut rng, 8));
        }
        if planted {
            let w: Array2<f64> = rng.normal_array((5, brain.ncols()));
            brain.scaled_add(1.0, &model.dot(&w));
            let w: Array2<f64> = rng.normal_array((5, 8));
            meg.index_axis_mut(Axis(0), 0).scaled_add(1.0, &model.dot(&w));
        }
        let affine = [
            [2.0, 0.0, 0.0, 0.0],
            [0.0, 2.0, 0.0, 0.0],
            [0.0, 0.0, 2.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let mask = Array3::<f32>::ones((SIDE, SIDE, SIDE));
        let half = |left: bool| {
            Array3::from_shape_fn((SIDE, SIDE, SIDE), |(x, _, _)| {
                f32::from(u8::from((x < SIDE / 2) == left))
            })
        };
        for (name, volume) in
            [("mask.nii.gz", mask), ("left.nii.gz", half(true)), ("right.nii.gz", half(false))]
        {
            store
                .put(&join_url(base, name), write_nifti_f32(volume.view(), &affine, false).into())
                .await
                .unwrap();
        }
        put(store, base, "brain.npy", &brain).await;
        put(store, base, "model.npy", &model).await;
        put(store, base, "meg.npy", &meg).await;
        put(store, base, "runs.npy", &self.conditions.labels()).await;
        common::run_embedded(store, base, &self.job(i), 1).await.unwrap();

        let out = |f: &str| join_url(base, &format!("out/{f}"));
        let sl_p = vector(store, &out("searchlight/model/p.npy")).await;
        let sl_fwe = vector(store, &out("searchlight/model/p_fwe.npy")).await;
        // centres at (1|4, 1|4, 1|4): radius-1 spheres 3 voxels apart never share a voxel;
        // every voxel is a centre, in mask order
        let spaced: Vec<f64> = [1, 4]
            .iter()
            .flat_map(|&a| [1, 4].map(move |b| (a, b)))
            .flat_map(|(a, b)| [1, 4].map(move |c| (a * SIDE + b) * SIDE + c))
            .map(|v| sl_p[v])
            .collect();
        let csv =
            String::from_utf8(store.get(&out("rsa/compare.csv")).await.unwrap().to_vec()).unwrap();
        let (mut roi_p, mut roi_fwe) = (Vec::new(), Vec::new());
        for fields in csv::Reader::from_reader(csv.as_bytes()).records() {
            let fields = fields.unwrap();
            roi_p.push(fields[4].parse().unwrap());
            roi_fwe.push(fields[5].parse().unwrap());
        }
        let tr_p = vector(store, &out("time_resolved/model/p.npy")).await;
        let tr_fwe = vector(store, &out("time_resolved/model/p_fwe.npy")).await;
        [(spaced, sl_fwe), (roi_p, roi_fwe), (tr_p, tr_fwe)]
    }

    async fn rates(&self) -> [Rates; 3] {
        let store = Store::new();
        let mut rates = [Rates::default(); 3];
        for i in 0..N_SETS {
            for (r, (p, p_fwe)) in rates.iter_mut().zip(self.run(&store, i, false).await) {
                r.add(&p, &p_fwe);
            }
        }
        rates
    }
}

const RSA_ANALYSES: [&str; 3] = ["searchlight", "ROI RSA", "time-resolved RSA"];

async fn check_rsa(rsa: Rsa, design: &str) {
    let rates = rsa.rates().await;
    let mut failures = Vec::new();
    for (name, r) in RSA_ANALYSES.iter().zip(&rates) {
        println!("{}", r.row(&format!("{name}, {design}")));
        if !r.calibrated() {
            failures.push(format!("{name}: {r:?}"));
        }
    }
    let planted = rsa.run(&Store::new(), 0, true).await;
    for (name, (_, p_fwe)) in RSA_ANALYSES.iter().zip(&planted) {
        if !p_fwe.iter().any(|&p| p <= ALPHA + 1e-12) {
            failures.push(format!("{name}: the planted effect was not found"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_on_conditions_in_runs_is_calibrated_by_default() {
    let rsa = Rsa { conditions: CONDITIONS, scheme: "" };
    check_rsa(rsa, "conditions in runs: default (within-group) scheme").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_without_runs_is_calibrated_by_default() {
    let rsa = Rsa { conditions: PLAIN_CONDITIONS, scheme: "" };
    check_rsa(rsa, "no runs: default (free) scheme").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_permutations_across_runs_of_rsa_data_fail_the_same_bound() {
    let rsa =
        Rsa { conditions: CONDITIONS, scheme: "scheme = \"free\"\nfree_across_groups = true" };
    let rates = rsa.rates().await;
    for (name, r) in RSA_ANALYSES.iter().zip(&rates) {
        println!("{}", r.row(&format!("{name}, conditions in runs: free across runs (warned)")));
    }
    // ROI RSA: both RDMs share the run structure, which a free permutation destroys
    assert!(rates[1].fwe_rate() > ALPHA + half_width(rates[1].sets), "{:?}", rates[1]);
}

/// Adds one data set's (p, p_fwe) of each map to its rates.
fn add_all<const N: usize>(rates: &mut [Rates; N], maps: [(Vec<f64>, Vec<f64>); N]) {
    for (r, (p, p_fwe)) in rates.iter_mut().zip(maps) {
        r.add(&p, &p_fwe);
    }
}

/// Prints the table rows, then fails on the first map outside the bound.
fn print_and_check(names: &[&str], rates: &[Rates]) {
    for (name, r) in names.iter().zip(rates) {
        println!("{}", r.row(name));
    }
    for (name, r) in names.iter().zip(rates) {
        assert!(r.calibrated(), "{name}: {r:?}");
    }
}

/// A mask of [`VOXELS`] voxels on a line, and two ROIs of 5 (`a`: voxels 0..5, `b`: the rest).
async fn put_line_masks(store: &Store, base: &str) {
    let eye = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0; 4]];
    let mask = Array3::<f32>::ones((VOXELS, 1, 1));
    let mut a = Array3::<f32>::zeros((VOXELS, 1, 1));
    a.slice_mut(ndarray::s![..5, .., ..]).fill(1.0);
    let b = mask.mapv(|m| m) - &a;
    let files = [("mask.nii.gz", &mask), ("a.nii.gz", &a), ("b.nii.gz", &b)]
        .map(|(name, m)| (name, write_nifti_f32(m.view(), &eye, true)));
    common::put_files(store, base, files).await;
}

/// The inference paths of issue 13 in one job per data set, on betas in runs with run offsets
/// and scales (the default within-group scheme): a PLS encoding map (the models share the
/// permutation machinery; PLS chooses its hyperparameter per voxel like every other), the ROI
/// profile's p and its max-over-ROIs correction, and decoding's per-unit p with FWE over
/// units, from ROI `a` (voxels 0..5) and as a searchlight (radius 1: spheres of 2 or 3 voxels
/// along the 10-voxel line; its score and identification maps, FWE over centres). Returns
/// (encoding, profile, ROI decoding, searchlight score, searchlight identification)
/// (p, p_fwe) for data set `i`: each map its own family.
async fn issue13_run(store: &Store, i: usize, planted: bool) -> [(Vec<f64>, Vec<f64>); 5] {
    let base = "memory://calibration/models";
    let runs = BETAS;
    let mut rng = Rng::new(7_000_033 * i as u64 + 5 + u64::from(planted));
    let x: Array2<f64> = rng.normal_array((runs.n(), FEATURES));
    let mut y = runs.noise(&mut rng, VOXELS);
    if planted {
        // voxels 0..3 read x strongly (unit-norm weights, signal variance 36); x is then
        // decodable from them
        let mut w: Array2<f64> = rng.normal_array((FEATURES, 3));
        for mut column in w.columns_mut() {
            let norm = column.dot(&column).sqrt();
            column /= norm;
        }
        y.slice_mut(ndarray::s![.., ..3]).scaled_add(6.0, &x.dot(&w));
    }
    put(store, base, "x.npy", &x).await;
    put(store, base, "brain.npy", &y).await;
    put(store, base, "runs.npy", &runs.labels()).await;
    if i == 0 {
        put_line_masks(store, base).await;
    }
    let n_perm = if planted { 99 } else { N_PERM };
    let seed = i + 1000;
    let job = format!(
        r#"
name = "calibration"
output = "out"
[data]
brain = "brain.npy"
mask = "mask.nii.gz"
groups = "runs.npy"
[features]
x = "x.npy"
[rois]
a = "a.nii.gz"
b = "b.nii.gz"
[encoding]
model = "pls"
components = [1, 2, 4]
cv = {{ kind = "group" }}
inner_cv = {{ kind = "group" }}
[decoding]
rois = ["a"]
radius = 1.0
min_voxels = 2
alphas = [1, 10, 100, 1000]
cv = {{ kind = "group" }}
inner_cv = {{ kind = "group" }}
[permutation]
n = {n_perm}
seed = {seed}
"#
    );
    common::run_embedded(store, base, &job, 1).await.unwrap();
    let out = join_url(base, "out");
    let maps = |dir: String| async move {
        (
            vector(store, &format!("{dir}/p.npy")).await,
            vector(store, &format!("{dir}/p_fwe.npy")).await,
        )
    };
    let encoding = maps(format!("{out}/encoding/x")).await;
    let decoding = maps(format!("{out}/decoding/a/x")).await;
    // the searchlight's items: the centres whose spheres do not overlap (0, 3, 6, 9: spheres
    // {0, 1}, {2, 3, 4}, {5, 6, 7}, {8, 9}), so that they are independent trials; its family
    // is every centre
    let sl = format!("{out}/decoding/searchlight/x");
    let apart = |p: Vec<f64>| [0, 3, 6, 9].map(|c| p[c]).to_vec();
    let (p_score, fwe_score) = maps(sl.clone()).await;
    let searchlight = (apart(p_score), fwe_score);
    let identification = (
        apart(vector(store, &format!("{sl}/identification_p.npy")).await),
        vector(store, &format!("{sl}/identification_p_fwe.npy")).await,
    );
    let csv = store.get(&format!("{out}/encoding/profile.csv")).await.unwrap();
    let (mut p, mut p_fwe) = (Vec::new(), Vec::new());
    for line in String::from_utf8_lossy(&csv).lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        p.push(fields[4].parse().unwrap());
        p_fwe.push(fields[5].parse().unwrap());
    }
    [encoding, (p, p_fwe), decoding, searchlight, identification]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pls_encoding_roi_profiles_and_decoding_are_calibrated_in_runs() {
    let store = Store::new();
    let mut rates = [Rates::default(); 5];
    for i in 0..N_SETS {
        add_all(&mut rates, issue13_run(&store, i, false).await);
    }
    let names = [
        "PLS encoding, betas in runs",
        "ROI profile (2 ROIs)",
        "decoding from an ROI (5 units)",
        "searchlight decoding, mean score (10 centres, 4 apart)",
        "searchlight decoding, identification (10 centres, 4 apart)",
    ];
    print_and_check(&names, &rates);
    let [encoding, profile, decoding, searchlight, _] = issue13_run(&store, 0, true).await;
    assert!(encoding.1[..3].iter().all(|&p| p <= ALPHA), "planted voxels: {:?}", encoding.1);
    assert!(profile.1[0] <= ALPHA, "ROI a holds them: {:?}", profile.1);
    // three voxels carry at most three of x's five directions: most units are decodable
    let decoded = decoding.1.iter().filter(|&&p| p <= ALPHA).count();
    assert!(decoded >= 3, "x decoded: {:?}", decoding.1);
    // the spheres around voxels 0..3 decode x
    assert!(searchlight.1[..3].iter().all(|&p| p <= ALPHA), "searchlight: {:?}", searchlight.1);
}

/// Issue 14's design: 12 conditions, each measured once in each of 4 runs (shuffled within
/// runs), with run offsets and scales.
const CONDITION_RUNS: Runs = Runs { runs: 4, per_run: 12, offsets: true, ar: 0.0 };
const N_CONDITIONS: usize = 12;

/// The inference paths of issue 14 in one job per data set: crossnobis RDMs of two ROIs (shrinkage
/// whitening) and of a searchlight along a 10-voxel line, from observations of conditions in
/// runs; given brain RDMs and their ceiling group's mean; comparisons by Spearman and unbiased
/// CKA; a reweighted set of two layers and a unit weighting of three components (fitted per
/// permutation); and cross-temporal RSA of MEG-like data. Returns, for data set `i`:
/// (ROI model rows, ROI fitted rows, searchlight (4 centres apart, per model), cross-temporal
/// (3 entries sharing no time point)) as (p, p_fwe); the ROI families are each method's rows.
async fn issue14_run(store: &Store, i: usize, planted: bool) -> [(Vec<f64>, Vec<f64>); 4] {
    let base = "memory://calibration/issue14";
    let mut rng = Rng::new(9_000_011 * i as u64 + 3 + u64::from(planted));
    let runs = CONDITION_RUNS;
    let n_obs = runs.n();
    // each run measures every condition once, in its own order
    let mut conditions = Vec::with_capacity(n_obs);
    for _ in 0..runs.runs {
        let mut order: Vec<i64> = (0..N_CONDITIONS as i64).collect();
        rng.shuffle(&mut order);
        conditions.extend(order);
    }
    let per_observation = |x: &Array2<f64>| {
        Array2::from_shape_fn((n_obs, x.ncols()), |(o, u)| x[(conditions[o] as usize, u)])
    };
    let p_layer: Array2<f64> = rng.normal_array((N_CONDITIONS, 4));
    let q_layer: Array2<f64> = rng.normal_array((N_CONDITIONS, 6));
    let mut brain = runs.noise(&mut rng, VOXELS);
    let mut meg: Array3<f64> = rng.normal_array((6, N_CONDITIONS, 4));
    if planted {
        let w: Array2<f64> = rng.normal_array((4, 5));
        brain.slice_mut(ndarray::s![.., ..5]).scaled_add(1.5, &per_observation(&p_layer).dot(&w));
        let structure: Array2<f64> = rng.normal_array((N_CONDITIONS, 4));
        for t in [1, 4] {
            meg.index_axis_mut(Axis(0), t).scaled_add(4.0, &structure);
        }
    }
    put(store, base, "brain.npy", &brain).await;
    put(store, base, "p.npy", &per_observation(&p_layer)).await;
    put(store, base, "q.npy", &per_observation(&q_layer)).await;
    put(store, base, "conditions.npy", &Array1::from(conditions.clone())).await;
    put(store, base, "runs.npy", &runs.labels()).await;
    put(store, base, "meg.npy", &meg).await;
    for g in 1..=3 {
        let patterns: Array2<f64> = rng.normal_array((N_CONDITIONS, 8));
        let d = brainfit_kernels::rdm::rdm(
            patterns.view(),
            brainfit_kernels::rdm::RdmMethod::Correlation,
        );
        put(store, base, &format!("g{g}.npy"), &d.unwrap()).await;
    }
    if i == 0 {
        put_line_masks(store, base).await;
    }
    let n_perm = if planted { 99 } else { N_PERM };
    let seed = i + 2000;
    let job = format!(
        r#"
name = "calibration"
output = "out"
[data]
brain = "brain.npy"
mask = "mask.nii.gz"
groups = "runs.npy"
conditions = "conditions.npy"
[features]
p = "p.npy"
q = "q.npy"
[rsa]
rois = {{ a = "a.nii.gz", b = "b.nii.gz" }}
brain_rdms = {{ g1 = "g1.npy", g2 = "g2.npy", g3 = "g3.npy" }}
ceiling = {{ grp = ["g1", "g2", "g3"] }}
rdm = "crossnobis"
noise = "shrinkage_diag"
compare = ["spearman", "cka_linear_unbiased"]
[rsa.reweight.both]
models = ["p", "q"]
folds = 3
seed = {seed}
[rsa.unit_weighting.u]
space = "q"
components = 3
folds = 3
[searchlight]
radius = 1.0
min_voxels = 2
rdm = "crossnobis"
compare = "spearman"
[time_resolved]
data = "meg.npy"
cross_temporal = true
[permutation]
n = {n_perm}
seed = {seed}
"#
    );
    common::run_embedded(store, base, &job, 1).await.unwrap();
    let out = join_url(base, "out");
    let csv = store.get(&format!("{out}/rsa/compare.csv")).await.unwrap();
    // rows: brain,model,method,value,p,p_fwe,... Items: the ROIs' and given RDMs' comparisons
    // with the layers; then the ceiling group's and the fitted models' rows (not the
    // unweighted sums, plain comparisons of fixed RDMs). Families: each method's rows.
    let (mut plain, mut fitted) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
    for fields in csv::Reader::from_reader(&csv[..]).records() {
        let f = fields.unwrap();
        let (p, p_fwe): (f64, f64) = (f[4].parse().unwrap(), f[5].parse().unwrap());
        let layer = matches!(&f[1], "p" | "q");
        if layer && &f[0] != "grp" {
            plain.0.push(p);
        } else if matches!(&f[1], "both" | "u") || layer {
            fitted.0.push(p);
        }
        // the spearman family with the first, unbiased CKA's with the second
        if &f[2] == "spearman" { plain.1.push(p_fwe) } else { fitted.1.push(p_fwe) }
    }
    let maps = |dir: String| async move {
        (
            vector(store, &format!("{dir}/p.npy")).await,
            vector(store, &format!("{dir}/p_fwe.npy")).await,
        )
    };
    // searchlight along the line: centres 0, 3, 6, 9 have disjoint spheres
    let (p, p_fwe) = maps(format!("{out}/searchlight/p")).await;
    let searchlight = ([0, 3, 6, 9].map(|c| p[c]).to_vec(), p_fwe);
    let (p, p_fwe) = maps(format!("{out}/cross_temporal")).await;
    // [6, 6] row-major: (0, 3), (1, 4), (2, 5) share no time point
    let cross = ([3, 10, 17].map(|k| p[k]).to_vec(), p_fwe);
    [plain, fitted, searchlight, cross]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossnobis_fitted_models_cka_ceilings_and_cross_temporal_rsa_are_calibrated() {
    let store = Store::new();
    let mut rates = [Rates::default(); 4];
    for i in 0..N_SETS {
        add_all(&mut rates, issue14_run(&store, i, false).await);
    }
    let names = [
        "ROI RSA: crossnobis ROIs and given RDMs vs layers (FWE: spearman rows)",
        "ceiling group, reweighted set, unit weighting (FWE: unbiased CKA rows)",
        "crossnobis searchlight (10 centres, 4 apart)",
        "cross-temporal RSA (6 x 6 without its diagonal, 3 entries apart)",
    ];
    print_and_check(&names, &rates);
    let [plain, fitted, searchlight, cross] = issue14_run(&store, 0, true).await;
    // ROI a carries layer p: brains are the given RDMs g1..g3, then ROIs a and b, with 6
    // spearman rows each (p, q, both, both.unweighted, u, u.unweighted)
    assert!(plain.1[18] <= ALPHA, "ROI a vs p: {plain:?}");
    assert!(fitted.0.iter().any(|&p| p <= ALPHA), "reweighted or unit-weighted: {fitted:?}");
    assert!(searchlight.1[..4].iter().any(|&p| p <= ALPHA), "searchlight: {:?}", searchlight.1);
    // times 1 and 4 share a structure: entry (1, 4) of the cross-temporal matrix
    assert!(cross.1[10] <= ALPHA, "cross-temporal: {:?}", cross.1);
}
