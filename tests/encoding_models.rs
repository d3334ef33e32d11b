//! The encoding models beyond ridge (`[encoding] model = ...`), decoding (`[decoding]`) and the
//! summaries across feature spaces (best space per voxel, ROI profile), run as whole jobs in
//! memory on a study with planted effects: layer `a` drives voxels 0..30, layer `b` voxels
//! 30..60, the rest is noise.

mod common;

use brainfit_io::{Store, join_url, parse_npy, write_nifti_f32, write_npy};
use brainfit_kernels::rng::Rng;
use ndarray::{Array1, Array2, Array3};

const N: usize = 96;
const SIDE: [usize; 3] = [8, 8, 4]; // 256 voxels, all in the mask

async fn planted_study(store: &Store, base: &str) {
    let mut rng = Rng::new(77);
    let n_vox = SIDE.iter().product::<usize>();
    let a: Array2<f32> = rng.normal_array((N, 6));
    let b: Array2<f32> = rng.normal_array((N, 9));
    let mut brain: Array2<f32> = rng.normal_array((N, n_vox));
    let wa: Array2<f32> = rng.normal_array((6, 30));
    let wb: Array2<f32> = rng.normal_array((9, 30));
    brain.slice_mut(ndarray::s![.., ..30]).scaled_add(0.6, &a.dot(&wa));
    brain.slice_mut(ndarray::s![.., 30..60]).scaled_add(0.6, &b.dot(&wb));
    let runs: Array1<i64> = (0..N as i64).map(|t| t / 24).collect();
    let eye = [[2.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0], [0.0; 4]];
    let mask = Array3::<f32>::ones(SIDE);
    // ROI "front": the first 64 voxels in mask (C) order, i.e. i = 0 and 1
    let mut front = Array3::<f32>::zeros(SIDE);
    front.slice_mut(ndarray::s![..2, .., ..]).fill(1.0);
    // ROI "back": the last 128 voxels (i = 4..8), all noise
    let mut back = Array3::<f32>::zeros(SIDE);
    back.slice_mut(ndarray::s![4.., .., ..]).fill(1.0);
    let files: [(&str, Vec<u8>); 7] = [
        ("mask.nii.gz", write_nifti_f32(mask.view(), &eye, true)),
        ("front.nii.gz", write_nifti_f32(front.view(), &eye, true)),
        ("back.nii.gz", write_nifti_f32(back.view(), &eye, true)),
        ("brain.npy", write_npy(&brain.view())),
        ("a.npy", write_npy(&a.view())),
        ("b.npy", write_npy(&b.view())),
        ("runs.npy", write_npy(&runs.view())),
    ];
    common::put_files(store, base, files).await;
}

fn job(model_lines: &str) -> String {
    format!(
        "name = \"models\"\noutput = \"out\"\n[data]\nbrain = \"brain.npy\"\nmask = \"mask.nii.gz\"\n\
         groups = \"runs.npy\"\n[features]\na = \"a.npy\"\nb = \"b.npy\"\n[rois]\nfront = \"front.nii.gz\"\n\
         [encoding]\n{model_lines}\ncv = {{ kind = \"group\" }}\ninner_cv = {{ kind = \"kfold\", k = 3 }}\n"
    )
}

fn npy(files: &[(String, Vec<u8>)], name: &str) -> Vec<f64> {
    let (_, bytes) = files.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name}"));
    parse_npy(bytes, name).unwrap().to_f64().iter().copied().collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_model_finds_the_planted_voxels_the_same_on_1_and_3_workers() {
    let store = Store::new();
    let base = "memory://models/study";
    planted_study(&store, base).await;
    for (model, grid, chosen, grid_values) in [
        ("lasso", "alphas = [0.003, 0.03, 0.3]", "alpha", vec![0.003, 0.03, 0.3]),
        ("pcr", "components = [1, 3, 6]", "components", vec![1.0, 3.0, 6.0]),
        ("pls", "components = [1, 2, 4, 6]", "components", vec![1.0, 2.0, 4.0, 6.0]),
    ] {
        let job = job(&format!("model = \"{model}\"\n{grid}"));
        let summary = common::run_embedded(&store, base, &job, 1).await.unwrap();
        let one = common::outputs(&store, &join_url(base, "out")).await;
        common::run_embedded(&store, base, &job, 3).await.unwrap();
        let three = common::outputs(&store, &join_url(base, "out")).await;
        assert!(one == three, "{model}: outputs differ between 1 and 3 workers");
        let score = npy(&one, "encoding/a/score.npy");
        let (planted, rest) = (mean(&score[..30]), mean(&score[60..]));
        assert!(planted > 0.4 && rest < 0.05, "{model}: planted {planted}, rest {rest}");
        let picked = npy(&one, &format!("encoding/a/{chosen}.npy"));
        assert!(picked.iter().all(|v| grid_values.contains(v)), "{model}: {chosen} off the grid");
        let e = &summary.subjects[0].encoding.as_ref().unwrap()["a"];
        assert_eq!((e.model.as_str(), e.hyperparameter.as_str()), (model, chosen));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_best_space_map_and_the_roi_profile_recover_the_planted_layers() {
    let store = Store::new();
    let base = "memory://models/best";
    planted_study(&store, base).await;
    let summary = common::run_embedded(&store, base, &job(""), 2).await.unwrap();
    let out = common::outputs(&store, &join_url(base, "out")).await;
    let best = npy(&out, "encoding/best_space.npy");
    let won = |range: std::ops::Range<usize>, label: f64| {
        best[range.clone()].iter().filter(|&&l| l == label).count() as f64 / range.len() as f64
    };
    assert!(won(0..30, 1.0) > 0.9, "layer a wins its voxels: {:?}", &best[..30]);
    assert!(won(30..60, 2.0) > 0.9, "layer b wins its voxels: {:?}", &best[30..60]);
    let best_score = npy(&out, "encoding/best_score.npy");
    let a = npy(&out, "encoding/a/score.npy");
    let b = npy(&out, "encoding/b/score.npy");
    for v in 0..best.len() {
        assert_eq!(best_score[v], a[v].max(b[v]), "voxel {v}: the winning score");
    }
    let labels = &out.iter().find(|(n, _)| n == "encoding/best_space_labels.csv").unwrap().1;
    let labels = String::from_utf8(labels.clone()).unwrap();
    assert!(labels.starts_with("label,space,n_voxels\n1,a,"), "{labels}");
    let won_by = &summary.subjects[0].best_space.as_ref().unwrap();
    assert_eq!(won_by.spaces, ["a", "b"]);
    assert_eq!(won_by.voxels_won.iter().sum::<usize>(), best.len());
    assert!(out.iter().any(|(n, _)| n == "encoding/best_space.nii.gz"));
    // the profile: ROI "front" (voxels 0..64) holds a's 30 voxels and b's 30
    let profile = &out.iter().find(|(n, _)| n == "encoding/profile.csv").unwrap().1;
    let profile = String::from_utf8(profile.clone()).unwrap();
    let rows: Vec<Vec<&str>> = profile.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows[0], ["roi", "space", "n_voxels", "mean_score"]);
    assert_eq!(rows.len(), 3, "{profile}");
    for (row, score) in rows[1..].iter().zip([&a, &b]) {
        let want = mean(&score[..64]);
        assert_eq!((row[0], row[2]), ("front", "64"));
        assert!((row[3].parse::<f64>().unwrap() - want).abs() < 1e-12, "{profile}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grids_the_data_cannot_support_are_refused_before_any_task() {
    let store = Store::new();
    let base = "memory://models/refused";
    planted_study(&store, base).await;
    // a has 6 features: 7 components cannot exist
    let err = common::run_embedded(&store, base, &job("model = \"pcr\"\ncomponents = [2, 7]"), 1)
        .await
        .unwrap_err();
    assert!(
        err.contains("job.toml") && err.contains("7 components") && err.contains("at most 6"),
        "{err}"
    );
    for (lines, needle) in [
        ("model = \"pls\"", "needs components"),
        ("model = \"pcr\"\nalphas = [1.0]", "not alphas"),
        ("model = \"lasso\"\ncomponents = [2]", "not components"),
        ("model = \"lasso\"\nalphas = [0.0]", "> 0"),
        ("model = \"pls\"\ncomponents = [0, 2]", ">= 1"),
        ("model = \"elastic\"", "unknown variant"),
    ] {
        let err = common::run_embedded(&store, base, &job(lines), 1).await.unwrap_err();
        assert!(err.contains(needle), "{lines}: {err}");
    }
    assert!(store.list(&join_url(base, "out")).await.unwrap().is_empty(), "nothing written");
}

/// Layers `a = [z, u_a]` and `b = [z, u_b]` share the latent `z`: voxels 0..30 read `u_a`
/// only, 30..60 `u_b` only, 60..90 `z` only (each with signal variance 1 against unit noise,
/// an R² of about 0.5); the rest is noise.
async fn shared_study(store: &Store, base: &str) {
    planted_study(store, base).await; // mask, runs; brain and layers replaced below
    let mut rng = Rng::new(2018);
    let n_vox = SIDE.iter().product::<usize>();
    let z: Array2<f64> = rng.normal_array((N, 3));
    let (ua, ub): (Array2<f64>, Array2<f64>) = (rng.normal_array((N, 3)), rng.normal_array((N, 4)));
    let mut brain: Array2<f64> = rng.normal_array((N, n_vox));
    for (range, source) in [(0..30, &ua), (30..60, &ub), (60..90, &z)] {
        for v in range {
            let w: Array1<f64> = rng.normal_array(source.ncols());
            let signal = source.dot(&w);
            let scale = 1.0 / signal.std(0.0);
            brain.column_mut(v).scaled_add(scale, &signal);
        }
    }
    let a = ndarray::concatenate![ndarray::Axis(1), z, ua];
    let b = ndarray::concatenate![ndarray::Axis(1), z, ub];
    for (name, m) in [("brain.npy", &brain), ("a.npy", &a), ("b.npy", &b)] {
        store.put(&join_url(base, name), write_npy(&m.view()).into()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banded_ridge_partitions_the_variance_it_was_given() {
    let store = Store::new();
    let base = "memory://models/partition";
    shared_study(&store, base).await;
    let job =
        job("model = \"banded_ridge\"\nalphas = { logspace = [-2, 4, 7] }\npartition = true\n\
                   random_search = { n_iter = 12, seed = 3 }");
    let summary = common::run_embedded(&store, base, &job, 1).await.unwrap();
    let out = common::outputs(&store, &join_url(base, "out")).await;
    common::run_embedded(&store, base, &job, 3).await.unwrap();
    assert!(out == common::outputs(&store, &join_url(base, "out")).await, "1 vs 3 workers");
    // the fits: each band alone (ridge) and both jointly, with weights and split scores
    let joint = npy(&out, "encoding/a+b/score.npy");
    let (split_a, split_b) =
        (npy(&out, "encoding/a+b/split_a.npy"), npy(&out, "encoding/a+b/split_b.npy"));
    for v in 0..joint.len() {
        assert!((split_a[v] + split_b[v] - joint[v]).abs() < 1e-9, "split scores sum, voxel {v}");
    }
    let weight_a = npy(&out, "encoding/a+b/weight_a.npy");
    assert!(mean(&weight_a[0..30]) > 0.6 && mean(&weight_a[30..60]) < 0.4, "band weights");
    // the partition recovers what was planted
    let unique_a = npy(&out, "encoding/partition/a.npy");
    let unique_b = npy(&out, "encoding/partition/b.npy");
    let shared = npy(&out, "encoding/partition/a+b.npy");
    let (r2, tol) = (mean(&joint[..90]), 0.12);
    for (name, map, want) in [
        ("unique a", &unique_a, [r2, 0.0, 0.0]),
        ("unique b", &unique_b, [0.0, r2, 0.0]),
        ("shared", &shared, [0.0, 0.0, r2]),
    ] {
        for (g, range) in [0..30, 30..60, 60..90].into_iter().enumerate() {
            let got = mean(&map[range]);
            assert!((got - want[g]).abs() < tol, "{name} in group {g}: {got} vs {}", want[g]);
        }
    }
    // set arithmetic, exactly: unique a = R²(a+b) − R²(b), shared = R²(a) + R²(b) − R²(a+b)
    let (ra, rb) = (npy(&out, "encoding/a/score.npy"), npy(&out, "encoding/b/score.npy"));
    for v in 0..joint.len() {
        assert!((unique_a[v] - (joint[v] - rb[v])).abs() < 1e-12);
        assert!((shared[v] - (ra[v] + rb[v] - joint[v])).abs() < 1e-12);
    }
    let partition = summary.subjects[0].partition.as_ref().unwrap();
    assert_eq!(partition.keys().collect::<Vec<_>>(), ["a", "a+b", "b"]);
    assert!(partition["a+b"].n_negative > 0, "noise voxels give negative shared estimates");
    let profile = &out.iter().find(|(n, _)| n == "encoding/profile.csv").unwrap().1;
    assert!(String::from_utf8_lossy(profile).contains("front,partition:a+b,"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_noise_ceiling_comes_from_the_repeats_and_normalises_the_scores() {
    let store = Store::new();
    let base = "memory://models/ceiling";
    planted_study(&store, base).await; // mask, layers, runs; brain and repeats replaced
    let a = parse_npy(&store.get(&join_url(base, "a.npy")).await.unwrap(), "a").unwrap();
    let a = a.to_f64().into_dimensionality::<ndarray::Ix2>().unwrap();
    let mut rng = Rng::new(1910);
    let n_vox = SIDE.iter().product::<usize>();
    // voxels 0..30 carry a's signal (variance ~1) in every repeat; each repeat adds unit noise
    let mut signal = Array2::<f64>::zeros((N, n_vox));
    let w: Array2<f64> = rng.normal_array((6, 30));
    signal.slice_mut(ndarray::s![.., ..30]).assign(&(a.dot(&w) / 6f64.sqrt()));
    let repeats: Vec<Array2<f64>> = (0..4)
        .map(|_| {
            let noise: Array2<f64> = rng.normal_array((N, n_vox));
            &signal + &noise
        })
        .collect();
    let brain = repeats.iter().fold(Array2::<f64>::zeros((N, n_vox)), |m, r| m + r) / 4.0;
    store.put(&join_url(base, "brain.npy"), write_npy(&brain.view()).into()).await.unwrap();
    for (k, r) in repeats.iter().enumerate() {
        let url = join_url(base, &format!("repeat{k}.npy"));
        store.put(&url, write_npy(&r.view()).into()).await.unwrap();
    }
    let job = job("").replace(
        "groups = \"runs.npy\"",
        "groups = \"runs.npy\"\nrepeats = [\"repeat0.npy\", \"repeat1.npy\", \"repeat2.npy\", \"repeat3.npy\"]",
    );
    let summary = common::run_embedded(&store, base, &job, 2).await.unwrap();
    let out = common::outputs(&store, &join_url(base, "out")).await;
    let ceiling = npy(&out, "encoding/ceiling.npy");
    // signal variance 1 against noise 1/4 in the average: a ceiling of 0.8
    assert!((mean(&ceiling[..30]) - 0.8).abs() < 0.1, "{}", mean(&ceiling[..30]));
    assert!(mean(&ceiling[30..]).abs() < 0.05, "{}", mean(&ceiling[30..]));
    let score = npy(&out, "encoding/a/score.npy");
    let normalised = npy(&out, "encoding/a/score_normalised.npy");
    for v in 0..n_vox {
        if brainfit_kernels::reliability::is_reliable(ceiling[v], N) {
            assert_eq!(normalised[v], score[v] / ceiling[v], "voxel {v}");
        } else {
            assert!(normalised[v].is_nan(), "voxel {v}: unreliable, no normalised score");
        }
    }
    let planted: Vec<f64> = normalised[..30].iter().copied().filter(|v| v.is_finite()).collect();
    assert!(planted.len() >= 27, "most planted voxels are reliable: {:?}", &ceiling[..30]);
    let fraction = mean(&planted);
    assert!(fraction > 0.5 && fraction < 1.2, "planted voxels reach {fraction} of the ceiling");
    let c = summary.subjects[0].ceiling.as_ref().unwrap();
    // the planted voxels, and about 5% of the noise voxels (one-sided p < 0.05)
    assert!(c.n_reliable >= 30 && c.n_reliable < 30 + 226 / 10, "{c:?}");
    assert!(out.iter().any(|(n, _)| n == "encoding/b/score_normalised.nii.gz"));
    // a repeat shaped unlike the brain data is refused, naming the file
    let small: Array2<f64> = Array2::zeros((N, 10));
    store.put(&join_url(base, "repeat3.npy"), write_npy(&small.view()).into()).await.unwrap();
    let err = common::run_embedded(&store, base, &job, 1).await.unwrap_err();
    assert!(err.contains("repeat3.npy") && err.contains("shaped like the brain data"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoding_predicts_the_planted_layers_and_identifies_the_stimuli() {
    let store = Store::new();
    let base = "memory://models/decoding";
    planted_study(&store, base).await;
    // a wide layer read out of `a` (1,100 units: three unit shards of 512)
    let a = parse_npy(&store.get(&join_url(base, "a.npy")).await.unwrap(), "a").unwrap();
    let a = a.to_f64().into_dimensionality::<ndarray::Ix2>().unwrap();
    let mut rng = Rng::new(2017);
    let mixing: Array2<f64> = rng.normal_array((6, 1100));
    let noise: Array2<f64> = rng.normal_array((N, 1100));
    let c = a.dot(&mixing) + noise * 0.5;
    store.put(&join_url(base, "c.npy"), write_npy(&c.view()).into()).await.unwrap();
    let job = job("").replace("b = \"b.npy\"", "b = \"b.npy\"\nc = \"c.npy\"").replace(
        "[encoding]\n",
        "[decoding]\nspaces = [\"a\", \"c\"]\nalphas = { logspace = [0, 5, 6] }\n",
    ) + "[permutation]\nn = 4\nscheme = \"whole-groups\"\n";
    let summary = common::run_embedded(&store, base, &job, 1).await.unwrap();
    let out = common::outputs(&store, &join_url(base, "out")).await;
    common::run_embedded(&store, base, &job, 3).await.unwrap();
    assert!(out == common::outputs(&store, &join_url(base, "out")).await, "1 vs 3 workers");
    let score_a = npy(&out, "decoding/brain/a/score.npy");
    assert_eq!(score_a.len(), 6);
    assert!(mean(&score_a) > 0.3, "a's units are decoded from its 30 voxels: {score_a:?}");
    assert_eq!(npy(&out, "decoding/brain/c/score.npy").len(), 1100);
    assert_eq!(npy(&out, "decoding/brain/c/p_fwe.npy").len(), 1100);
    assert!(!out.iter().any(|(n, _)| n.starts_with("decoding/brain/b/")), "b is not decoded");
    let csv = &out.iter().find(|(n, _)| n == "decoding/identification.csv").unwrap().1;
    let csv = String::from_utf8(csv.clone()).unwrap();
    let rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(
        rows[0],
        ["source", "space", "n_units", "top1_accuracy", "top1_chance", "pairwise_accuracy"]
    );
    assert_eq!((rows[1][0], rows[1][1], rows[2][1], rows[2][2]), ("brain", "a", "c", "1100"));
    for row in &rows[1..] {
        let (top1, chance, pairwise): (f64, f64, f64) =
            (row[3].parse().unwrap(), row[4].parse().unwrap(), row[5].parse().unwrap());
        assert!((chance - 1.0 / 24.0).abs() < 1e-12, "leave-one-run-out: 24 test stimuli");
        assert!(top1 > 4.0 * chance && pairwise > 0.8, "{row:?}");
    }
    let d = &summary.subjects[0].decoding.as_ref().unwrap()["brain/c"];
    assert_eq!((d.n_voxels, d.score.n), (256, 1100));
    // an ROI as the source: voxels 0..64 hold a's voxels
    let roi_job = job.replace("[decoding]\n", "[decoding]\nrois = [\"front\"]\n");
    let summary = common::run_embedded(&store, base, &roi_job, 2).await.unwrap();
    let d = &summary.subjects[0].decoding.as_ref().unwrap()["front/a"];
    assert_eq!(d.n_voxels, 64);
    assert!(d.pairwise_accuracy > 0.8, "{d:?}");
    let err = common::run_embedded(
        &store,
        base,
        &job.replace("[decoding]\n", "[decoding]\nrois = [\"v1\"]\n"),
        1,
    )
    .await
    .unwrap_err();
    assert!(err.contains("[decoding] rois") && err.contains("v1"), "{err}");
}

#[test]
fn partition_fits_come_in_size_then_band_order() {
    let spec = brainfit_job::JobSpec::from_toml(
        &job("model = \"banded_ridge\"\npartition = true\nbands = [\"b\", \"a\", \"c\"]")
            .replace("b = \"b.npy\"", "b = \"b.npy\"\nc = \"c.npy\""),
        "job.toml",
        "memory://x",
    )
    .unwrap();
    let names: Vec<String> =
        spec.encoding.unwrap().fits(&["a", "b", "c"]).into_iter().map(|f| f.name).collect();
    assert_eq!(names, ["b", "a", "c", "b+a", "b+c", "a+c", "b+a+c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_roi_profile_gets_permutation_p_values_corrected_over_the_rois() {
    let store = Store::new();
    let base = "memory://models/profile";
    planted_study(&store, base).await;
    let job = job("")
        .replace("front = \"front.nii.gz\"", "front = \"front.nii.gz\"\nback = \"back.nii.gz\"")
        + "[permutation]\nn = 19\nscheme = \"within-group\"\n";
    common::run_embedded(&store, base, &job, 2).await.unwrap();
    let out = common::outputs(&store, &join_url(base, "out")).await;
    let profile = &out.iter().find(|(n, _)| n == "encoding/profile.csv").unwrap().1;
    let profile = String::from_utf8(profile.clone()).unwrap();
    let rows: Vec<Vec<&str>> = profile.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows[0], ["roi", "space", "n_voxels", "mean_score", "p", "p_fwe"]);
    // ROIs in name order: back (noise), front (both layers' planted voxels)
    for row in &rows[1..] {
        let (p, p_fwe): (f64, f64) = (row[4].parse().unwrap(), row[5].parse().unwrap());
        assert!((1.0 / 20.0..=1.0).contains(&p) && p <= p_fwe, "{row:?}");
        match row[0] {
            "front" => {
                assert_eq!(p_fwe, 0.05, "planted voxels: no null ROI mean reaches it: {row:?}");
            }
            "back" => assert!(p > 0.05, "noise: {row:?}"),
            roi => panic!("unexpected ROI {roi}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searchlight_decoding_finds_the_spheres_that_carry_the_layer() {
    let store = Store::new();
    let base = "memory://models/decoding-searchlight";
    planted_study(&store, base).await;
    let job = job("").replace(
        "[encoding]\n",
        "[decoding]\nspaces = [\"a\"]\nradius = 1.5\nalphas = { logspace = [0, 4, 5] }\n",
    ) + "[permutation]\nn = 4\n[execution]\ncentres_per_task = 100\n";
    let summary = common::run_embedded(&store, base, &job, 1).await.unwrap();
    let out = common::outputs(&store, &join_url(base, "out")).await;
    common::run_embedded(&store, base, &job, 3).await.unwrap();
    assert!(out == common::outputs(&store, &join_url(base, "out")).await, "1 vs 3 workers");
    let centres = npy(&out, "decoding/searchlight/a/centres.npy");
    let score = npy(&out, "decoding/searchlight/a/score.npy");
    let identification = npy(&out, "decoding/searchlight/a/identification.npy");
    assert_eq!((centres.len(), identification.len()), (score.len(), score.len()));
    for name in ["p", "p_fwe", "identification_p_fwe", "score.nii", "identification.nii"] {
        assert!(
            out.iter().any(|(n, _)| n.starts_with(&format!("decoding/searchlight/a/{name}"))),
            "{name}"
        );
    }
    // centres among the planted voxels (0..30) decode `a`; centres far from them do not
    let (mut near, mut far) = (Vec::new(), Vec::new());
    for (i, &c) in centres.iter().enumerate() {
        match c as usize {
            0..30 => near.push(i),
            128.. => far.push(i),
            _ => {}
        }
    }
    let at = |m: &[f64], idx: &[usize]| mean(&idx.iter().map(|&i| m[i]).collect::<Vec<_>>());
    assert!(at(&identification, &near) > 0.7, "{}", at(&identification, &near));
    assert!((at(&identification, &far) - 0.5).abs() < 0.1, "{}", at(&identification, &far));
    assert!(at(&score, &near) > at(&score, &far) + 0.05);
    let s = &summary.subjects[0].decoding_searchlight.as_ref().unwrap()["a"];
    assert_eq!(s.centres, centres.len());
    assert!(
        !out.iter().any(|(n, _)| n == "decoding/identification.csv"),
        "no unit decoding asked for"
    );
}
