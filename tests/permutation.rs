//! Permutation inference end to end: p-values against a brute-force loop over the same
//! permutations, bit-identical results across workers and task sizes, the family-wise error
//! rate under the null, and clear errors for invalid schemes.

mod common;

use brainfit_io::{Store, join_url, parse_npy, write_npy};
use brainfit_kernels::cv::{CvScheme, split};
use brainfit_kernels::linalg::Backend;
use brainfit_kernels::permutation::{Scheme, p_from_full_null, permutation};
use brainfit_kernels::ridge::{NestedCv, SpectralSpec};
use brainfit_kernels::rng::Rng;
use brainfit_kernels::score::ScoreKind;
use ndarray::{Array1, Array2, Axis};

/// 36 samples in 3 runs, 40 voxels (no mask), voxels 0..5 driven by the features.
async fn write_encoding_study(
    store: &Store,
    base: &str,
    seed: u64,
    effect: f32,
) -> (Array2<f32>, Array2<f32>) {
    write_encoding_study_of(store, base, seed, effect, 40).await
}

/// [`write_encoding_study`] with `n_voxels` voxels.
async fn write_encoding_study_of(
    store: &Store,
    base: &str,
    seed: u64,
    effect: f32,
    n_voxels: usize,
) -> (Array2<f32>, Array2<f32>) {
    let mut rng = Rng::new(seed);
    let x: Array2<f32> = rng.normal_array((36, 4));
    let mut y: Array2<f32> = rng.normal_array((36, n_voxels));
    let w: Array2<f32> = rng.normal_array((4, 5));
    y.slice_mut(ndarray::s![.., ..5]).scaled_add(effect, &x.dot(&w));
    let runs: Array1<i64> = (0..36).map(|t| t / 12).collect();
    store.put(&join_url(base, "brain.npy"), write_npy(&y.view()).into()).await.unwrap();
    store.put(&join_url(base, "x.npy"), write_npy(&x.view()).into()).await.unwrap();
    store.put(&join_url(base, "runs.npy"), write_npy(&runs.view()).into()).await.unwrap();
    (x, y)
}

fn job(scheme: &str, voxels_per_task: usize) -> String {
    format!(
        r#"
name = "perm"
output = "out"
[data]
brain = "brain.npy"
groups = "runs.npy"
[features]
x = "x.npy"
[encoding]
alphas = [0.1, 10.0, 1000.0]
cv = {{ kind = "kfold", k = 3 }}
inner_cv = {{ kind = "kfold", k = 3 }}
[permutation]
n = 19
seed = 7
{scheme}
[execution]
voxels_per_task = {voxels_per_task}
"#
    )
}

async fn read(store: &Store, base: &str, file: &str) -> Array1<f64> {
    let url = join_url(base, &format!("out/encoding/x/{file}"));
    parse_npy(&store.get(&url).await.unwrap(), &url)
        .unwrap()
        .to_f64()
        .into_dimensionality()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoding_p_values_match_a_brute_force_refit() {
    let store = Store::new();
    let base = "memory://perm/enc";
    let (x, y) = write_encoding_study(&store, base, 1, 1.0).await;
    let runs: Vec<i64> = (0..36).map(|t| t / 12).collect();
    for (scheme, kernel_scheme) in [
        ("scheme = \"free\"\nfree_across_groups = true", Scheme::Free),
        ("", Scheme::WithinGroup(runs.clone())), // the default with groups
        ("scheme = \"whole-groups\"", Scheme::WholeGroups(runs.clone())),
        ("scheme = \"block\"\nblock_len = 5", Scheme::Block { len: 5, groups: Some(runs.clone()) }),
    ] {
        common::run_embedded(&store, base, &job(scheme, 4096), 2).await.unwrap();
        let (p, p_fwe) = (read(&store, base, "p.npy").await, read(&store, base, "p_fwe.npy").await);
        // brute force: every permutation refits from scratch, decompositions included
        let spec = SpectralSpec::ridge(vec![0.1, 10.0, 1000.0], true, ScoreKind::R2).unwrap();
        let outer = split(CvScheme::KFold { k: 3 }, 36, None).unwrap();
        let fit = |y: &Array2<f32>| {
            let cv =
                NestedCv::new::<Backend>(x.view(), &outer, CvScheme::KFold { k: 3 }, None, true)
                    .unwrap();
            cv.fit::<Backend>(y.view(), &spec).unwrap().score
        };
        let observed = fit(&y);
        let mut null = Array2::<f64>::zeros((19, 40));
        for k in 0..19 {
            let order = permutation(36, &kernel_scheme, 7, k);
            null.row_mut(k as usize).assign(&fit(&y.select(Axis(0), &order)));
        }
        let (want_p, want_fwe) = p_from_full_null(observed.view(), null.view());
        assert_eq!(p.to_vec(), want_p, "{scheme}");
        assert_eq!(p_fwe.to_vec(), want_fwe, "{scheme}");
        // (row-level schemes only: 3 whole runs have 3! = 6 orders, blocks of 5 in runs of 12
        // keep most of the pairing, so p cannot get small there)
        if matches!(kernel_scheme, Scheme::Free | Scheme::WithinGroup(_)) {
            assert!(p_fwe.iter().take(5).all(|&v| v <= 0.05), "planted voxels found: {p_fwe}");
        }
        let null_max = read(&store, base, "null_max.npy").await;
        assert_eq!(null_max.len(), 19);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p_values_are_bit_identical_across_workers_and_task_sizes() {
    let store = Store::new();
    let base = "memory://perm/bits";
    // tasks hold multiples of 512 voxels: 1600 voxels make one task, four (the last with 64
    // voxels) or two, so the shards' maps and null maxima are really merged
    write_encoding_study_of(&store, base, 2, 0.5, 1600).await;
    let mut seen = Vec::new();
    for (workers, per_task, tasks) in [(1, 4096, 1), (4, 512, 4), (3, 1024, 2)] {
        common::run_embedded(&store, base, &job("", per_task), workers).await.unwrap();
        let summary = store.get(&join_url(base, "out/summary.json")).await.unwrap();
        let summary: brainfit_job::Summary = serde_json::from_slice(&summary).unwrap();
        assert_eq!(summary.tasks, tasks, "{per_task} voxels per task");
        let mut files = Vec::new();
        for f in ["score.npy", "p.npy", "p_fwe.npy", "null_max.npy"] {
            files.push(store.get(&join_url(base, &format!("out/encoding/x/{f}"))).await.unwrap());
        }
        seen.push(files);
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_schemes_are_clear_errors() {
    let store = Store::new();
    let base = "memory://perm/bad";
    write_encoding_study(&store, base, 3, 0.0).await;
    let err =
        common::run_embedded(&store, base, &job("scheme = \"block\"\nblock_len = 36", 4096), 1)
            .await
            .unwrap_err();
    assert!(err.contains("block length 36") && err.contains("longest run (12 samples)"), "{err}");
    // free permutations across runs need the explicit opt-in, and say why
    let err =
        common::run_embedded(&store, base, &job("scheme = \"free\"", 4096), 1).await.unwrap_err();
    assert!(err.contains("free_across_groups = true") && err.contains("mixes rows"), "{err}");
    // whole runs move only between runs of equal length
    let unequal = job("scheme = \"whole-groups\"", 4096).replace("groups = \"runs.npy\"", "groups = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]");
    let err = common::run_embedded(&store, base, &unequal, 1).await.unwrap_err();
    assert!(err.contains("group 0 has 13 samples, group 1 has 23"), "{err}");
    // per-run z-scoring with folds that split a run would leak test rows' statistics
    let leaky = job("", 4096)
        .replace("[encoding]", "[encoding]\nzscore = \"per-group\"")
        .replace("{ kind = \"kfold\", k = 3 }\ninner_cv", "{ kind = \"kfold\", k = 4 }\ninner_cv");
    let err = common::run_embedded(&store, base, &leaky, 1).await.unwrap_err();
    assert!(err.contains("cv folds that split run 0") && err.contains("leak"), "{err}");
    let err = common::run_embedded(&store, base, &job("scheme = \"sideways\"", 4096), 1)
        .await
        .unwrap_err();
    assert!(err.contains("sideways"), "{err}");
    let no_groups = job("scheme = \"within-group\"", 4096).replace("groups = \"runs.npy\"\n", "");
    let err = common::run_embedded(&store, base, &no_groups, 1).await.unwrap_err();
    assert!(err.contains("within-group") && err.contains("groups"), "{err}");
    let err = common::run_embedded(
        &store,
        base,
        &job("scheme = \"free\"", 4096).replace("n = 19", "n = 0"),
        1,
    )
    .await
    .unwrap_err();
    assert!(err.contains("n must be 1 to 1000000, got 0"), "{err}");
}
