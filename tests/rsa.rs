//! RSA end to end: ROI-level comparisons on the real 92-object RDMs against rsatoolbox,
//! searchlight and time-resolved RSA against brute force, condition-label permutations against
//! a brute-force loop, and clear input errors (calibration under the null: tests/calibration.rs).

mod common;

use brainfit_io::{Store, join_url, parse_npy, write_npy};
use brainfit_kernels::compare::{CompareMethod, compare, permute_condensed};
use brainfit_kernels::permutation::{Scheme, p_from_full_null, permutation};
use brainfit_kernels::rdm::{
    NoisePrecision, ObservationDesign, RdmMethod, rdm, square_to_condensed,
};
use brainfit_kernels::rng::Rng;
use brainfit_kernels::searchlight::{sphere_rdm, spheres};
use ndarray::{Array1, Array2, Array3, Axis, Ix1, Ix3};

/// The real 92-object RDMs (Kriegeskorte et al. 2008), carried in `tests/data/`.
const KRIEG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/kriegeskorte2008");

fn krieg(name: &str) -> brainfit_io::NpyArray {
    let path = format!("{KRIEG}/{name}");
    parse_npy(&std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")), &path).unwrap()
}

async fn put<T: brainfit_io::NpyElement, D: ndarray::Dimension>(
    store: &Store,
    url: String,
    a: &ndarray::Array<T, D>,
) {
    store.put(&url, write_npy(&a.view()).into()).await.unwrap();
}

async fn text(store: &Store, url: String) -> String {
    String::from_utf8(store.get(&url).await.unwrap().to_vec()).unwrap()
}

async fn vector(store: &Store, url: String) -> Array1<f64> {
    parse_npy(&store.get(&url).await.unwrap(), &url)
        .unwrap()
        .to_f64()
        .into_dimensionality::<Ix1>()
        .unwrap()
}

const MODEL_NAMES: [&str; 8] =
    ["animacy", "FaceBodyManmadeNatobj", "monkeyIT", "EVA", "HMAX", "V1", "Silhouette", "RADON"];

/// The real RDMs as job inputs: human IT (brain), monkey IT and the 8 models.
async fn write_real(store: &Store, base: &str) -> Vec<(String, Array1<f64>)> {
    let human = krieg("human_it_rdm.npy").to_f64().into_dimensionality::<Ix1>().unwrap();
    let monkey = krieg("monkey_it_rdm.npy").to_f64().into_dimensionality::<Ix1>().unwrap();
    let models = krieg("model_rdms.npy").to_f64().into_dimensionality::<Ix3>().unwrap();
    put(store, join_url(base, "human_it.npy"), &human).await;
    let mut all = vec![("monkey_it".to_string(), monkey.clone())];
    put(store, join_url(base, "monkey_it.npy"), &monkey).await;
    for (i, name) in MODEL_NAMES.iter().enumerate() {
        let square = models.index_axis(Axis(0), i).to_owned();
        put(store, join_url(base, &format!("{name}.npy")), &square).await;
        all.push((name.to_string(), square_to_condensed(square.view(), name).unwrap()));
    }
    all
}

/// ROI RSA on published RDMs alone: no `[data]`, since no brain patterns are needed.
fn real_job(extra: &str) -> String {
    let models: String = std::iter::once("monkey_it".to_string())
        .chain(MODEL_NAMES.iter().map(std::string::ToString::to_string))
        .map(|m| format!("{m} = \"{m}.npy\", "))
        .collect();
    format!(
        "name = \"real\"\noutput = \"out\"\n[rsa]\nbrain_rdms = {{ human_it = \"human_it.npy\" }}\nmodels = {{ {} }}\ncompare = [\"spearman\", \"pearson\", \"kendall_tau_a\", \"cosine\"]\n{extra}",
        models.trim_end_matches(", ")
    )
}

/// The records of a CSV text after its header.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    csv::Reader::from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roi_rsa_on_real_rdms_matches_rsatoolbox() {
    let store = Store::new();
    let base = "memory://rsa/real";
    write_real(&store, base).await;
    common::run_embedded(&store, base, &real_job(""), 2).await.unwrap();
    let csv = text(&store, join_url(base, "out/rsa/compare.csv")).await;
    assert!(csv.starts_with("brain,model,method,value\n"));
    let got = parse_csv(&csv);
    let want = parse_csv(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/rsa/compare_real.csv"
        ))
        .unwrap(),
    );
    assert_eq!(got.len(), want.len());
    for w in &want {
        let g = got.iter().find(|g| g[..3] == w[..3]).unwrap_or_else(|| panic!("no row for {w:?}"));
        let (a, b): (f64, f64) = (g[3].parse().unwrap(), w[3].parse().unwrap());
        assert!((a - b).abs() < 1e-9, "{w:?}: brainfit {a} vs rsatoolbox {b}");
    }
    // the brain RDM is written back
    assert_eq!(vector(&store, join_url(base, "out/rsa/rdms/human_it.npy")).await.len(), 4186);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roi_permutation_p_values_match_a_brute_force_loop() {
    let store = Store::new();
    let base = "memory://rsa/perm";
    let models = write_real(&store, base).await;
    let job =
        real_job("[permutation]\nn = 40\nseed = 3\n[execution]\npermutations_per_task = 15\n");
    common::run_embedded(&store, base, &job, 2).await.unwrap();
    let rows = parse_csv(&text(&store, join_url(base, "out/rsa/compare.csv")).await);
    let human = krieg("human_it_rdm.npy").to_f64().into_dimensionality::<Ix1>().unwrap();
    for method in [CompareMethod::Spearman, CompareMethod::KendallTauA] {
        // family: every model, for one method
        let observed: Array1<f64> =
            models.iter().map(|(_, m)| compare(human.view(), m.view(), method).unwrap()).collect();
        let mut null = Array2::<f64>::zeros((40, models.len()));
        for k in 0..40 {
            let perm = permutation(92, &Scheme::Free, 3, k);
            for (j, (_, m)) in models.iter().enumerate() {
                null[(k as usize, j)] = compare(
                    human.view(),
                    permute_condensed(m.view(), 92, &perm).unwrap().view(),
                    method,
                )
                .unwrap();
            }
        }
        let (p, p_fwe) = p_from_full_null(observed.view(), null.view());
        for (j, (name, _)) in models.iter().enumerate() {
            let row = rows.iter().find(|r| r[1] == *name && r[2] == method.as_str()).unwrap();
            let (gp, gf): (f64, f64) = (row[4].parse().unwrap(), row[5].parse().unwrap());
            assert_eq!((gp, gf), (p[j], p_fwe[j]), "{name} {}", method.as_str());
        }
    }
    // human IT matches monkey IT far beyond chance
    let row = rows.iter().find(|r| r[1] == "monkey_it" && r[2] == "spearman").unwrap();
    assert_eq!(row[5].parse::<f64>().unwrap(), 1.0 / 41.0);
}

/// A 9×8×6 box with a ragged mask; in a blob around (3, 3, 2) the patterns of 20 conditions
/// carry a two-category structure; everywhere else they are noise.
async fn write_volume_study(
    store: &Store,
    base: &str,
) -> (Array2<f64>, Vec<[usize; 3]>, Array1<f64>) {
    let mut rng = Rng::new(77);
    let shape = [9usize, 8, 6];
    let mut mask = Array3::<f32>::zeros((9, 8, 6));
    let mut voxels = Vec::new();
    for i in 0..9 {
        for j in 0..8 {
            for k in 0..6 {
                if (i + 2 * j + 3 * k) % 7 != 0 {
                    mask[(i, j, k)] = 1.0;
                    voxels.push([i, j, k]);
                }
            }
        }
    }
    let n_cond = 20;
    let mut data: Array2<f64> = rng.normal_array((n_cond, voxels.len()));
    let category: Vec<f64> = (0..n_cond).map(|c| if c < 10 { 1.0 } else { -1.0 }).collect();
    for (v, vox) in voxels.iter().enumerate() {
        let d2 = (vox[0] as f64 - 3.0).powi(2)
            + (vox[1] as f64 - 3.0).powi(2)
            + (vox[2] as f64 - 2.0).powi(2);
        if d2 <= 4.0 {
            let w = rng.normal();
            (0..n_cond).for_each(|c| data[(c, v)] += 2.0 * w * category[c]);
        }
    }
    let model =
        Array2::from_shape_fn(
            (n_cond, n_cond),
            |(a, b)| {
                if category[a] == category[b] { 0.0 } else { 1.0 }
            },
        );
    let affine =
        [[2.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0], [0.0, 0.0, 0.0, 1.0]];
    store
        .put(
            &join_url(base, "mask.nii.gz"),
            brainfit_io::write_nifti_f32(mask.view(), &affine, true).into(),
        )
        .await
        .unwrap();
    put(store, join_url(base, "brain.npy"), &data).await;
    put(store, join_url(base, "category.npy"), &model).await;
    let _ = shape;
    (data, voxels, square_to_condensed(model.view(), "category").unwrap())
}

const SEARCHLIGHT_JOB: &str = r#"
name = "sl"
output = "out"
[data]
brain = "brain.npy"
mask = "mask.nii.gz"
[rsa]
models = { category = "category.npy" }
[searchlight]
radius = 1.5
min_voxels = 5
rdm = "correlation"
compare = "spearman"
[permutation]
n = 30
seed = 1
[execution]
centres_per_task = 100
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searchlight_matches_brute_force_and_finds_the_planted_blob() {
    let store = Store::new();
    let base = "memory://rsa/sl";
    let (data, voxels, model) = write_volume_study(&store, base).await;
    // the [rsa] table only supplies models here: no brain RDMs, so no ROI comparisons
    common::run_embedded(&store, base, SEARCHLIGHT_JOB, 3).await.unwrap();
    let dir = |f: &str| join_url(base, &format!("out/searchlight/category/{f}"));
    let rho = vector(&store, dir("rho.npy")).await;
    let centres = parse_npy(&store.get(&dir("centres.npy")).await.unwrap(), "centres")
        .unwrap()
        .to_i64("centres")
        .unwrap();
    let p_fwe = vector(&store, dir("p_fwe.npy")).await;
    assert!(
        store.get(&dir("rho.nii.gz")).await.is_ok()
            && store.get(&dir("p_fwe.nii.gz")).await.is_ok()
    );
    // brute force: spheres by explicit distance, one RDM and one comparison per centre
    let hoods = spheres(&voxels, [9, 8, 6], 1.5, [1.0; 3], 5).unwrap();
    assert_eq!(centres.iter().map(|&c| c as usize).collect::<Vec<_>>(), hoods.centres);
    let mut best = (f64::NEG_INFINITY, 0);
    for (i, &c) in hoods.centres.iter().enumerate() {
        let members: Vec<usize> = (0..voxels.len())
            .filter(|&v| {
                (0..3).map(|a| (voxels[v][a] as f64 - voxels[c][a] as f64).powi(2)).sum::<f64>()
                    <= 2.25
            })
            .collect();
        assert_eq!(hoods.members(i), &members[..]);
        let d = sphere_rdm(data.view(), &members, RdmMethod::Correlation).unwrap();
        let want = compare(d.view(), model.view(), CompareMethod::Spearman).unwrap();
        assert!((rho[i] - want).abs() < 1e-12, "centre {c}: {} vs {want}", rho[i]);
        if rho[i] > best.0 {
            best = (rho[i], i);
        }
    }
    // Spearman against a two-category model saturates, so ties at the top are expected: check
    // instead that the blob's centre is among the best and significant, and that every
    // significant centre's sphere can reach the blob (radius 2 + searchlight radius 1.5).
    let dist2 = |v: [usize; 3]| {
        (v[0] as f64 - 3.0).powi(2) + (v[1] as f64 - 3.0).powi(2) + (v[2] as f64 - 2.0).powi(2)
    };
    let centre = hoods
        .centres
        .iter()
        .position(|&c| voxels[c] == [3, 3, 2])
        .expect("blob centre is a centre");
    assert_eq!(rho[centre], best.0);
    assert!(p_fwe[centre] < 0.05, "the blob survives FWE correction: {}", p_fwe[centre]);
    for (i, &c) in hoods.centres.iter().enumerate() {
        if p_fwe[i] < 0.05 {
            assert!(
                dist2(voxels[c]) <= 12.25,
                "significant centre {:?} cannot see the blob",
                voxels[c]
            );
        }
    }
    let far = p_fwe
        .iter()
        .zip(&hoods.centres)
        .filter(|&(_, &c)| voxels[c][0] >= 7)
        .map(|(p, _)| *p)
        .fold(0.0f64, f64::max);
    assert!(far > 0.05, "noise far from the blob is not significant");
    // bit-identical with one worker and other task sizes, down to one centre per task (tasks
    // read different windows of the brain; their matrix products have one shape)
    let before: Vec<_> = output_bytes(&store, &dir).await;
    for size in [37, 1] {
        let job = SEARCHLIGHT_JOB
            .replace("centres_per_task = 100", &format!("centres_per_task = {size}"));
        common::run_embedded(&store, base, &job, 1).await.unwrap();
        assert!(before == output_bytes(&store, &dir).await, "{size} centres per task");
    }
}

/// A brain matrix above `BRAINFIT_WHOLE_BRAIN_BYTES` is read in slabs, task by task (here
/// forced with a budget of 0 and one centre per task): the same bytes as a whole read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searchlight_slabs_and_whole_reads_give_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().display().to_string();
    let store = Store::new();
    write_volume_study(&store, &base).await;
    let job = SEARCHLIGHT_JOB.replace("centres_per_task = 100", "centres_per_task = 5");
    std::fs::write(dir.path().join("job.toml"), job).unwrap();
    let out = |f: &str| join_url(&base, &format!("out/searchlight/category/{f}"));
    let mut runs = Vec::new();
    for budget in ["0", "1000000000"] {
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_brainfit"))
            .args(["run", &format!("{base}/job.toml"), "--workers", "2"])
            .env("BRAINFIT_WHOLE_BRAIN_BYTES", budget)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        runs.push(output_bytes(&store, &out).await);
    }
    assert!(runs[0] == runs[1], "slabs and whole reads differ");
}

async fn output_bytes(store: &Store, dir: &impl Fn(&str) -> String) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for f in ["rho.npy", "p.npy", "p_fwe.npy", "null_max.npy", "centres.npy", "rho.nii.gz"] {
        out.push(store.get(&dir(f)).await.unwrap().to_vec());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_resolved_rsa_peaks_where_the_structure_is() {
    let store = Store::new();
    let base = "memory://rsa/meg";
    let mut rng = Rng::new(5);
    let (t, n, c) = (12, 16, 10);
    let mut meg: Array3<f64> = rng.normal_array((t, n, c));
    let category: Vec<f64> = (0..n).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }).collect();
    for time in 5..8 {
        for ch in 0..c {
            let w = rng.normal();
            (0..n).for_each(|i| meg[(time, i, ch)] += 3.0 * w * category[i]);
        }
    }
    let model =
        Array2::from_shape_fn((n, n), |(a, b)| if category[a] == category[b] { 0.0 } else { 1.0 });
    put(&store, join_url(base, "meg.npy"), &meg).await;
    put(&store, join_url(base, "parity.npy"), &model).await;
    put(&store, join_url(base, "brain.npy"), &Array2::<f64>::zeros((n, 3))).await;
    let job = "name = \"meg\"\noutput = \"out\"\n[data]\nbrain = \"brain.npy\"\n[rsa]\nmodels = { parity = \"parity.npy\" }\n[time_resolved]\ndata = \"meg.npy\"\n[permutation]\nn = 50\n";
    common::run_embedded(&store, base, job, 2).await.unwrap();
    let rho = vector(&store, join_url(base, "out/time_resolved/parity/rho.npy")).await;
    let p_fwe = vector(&store, join_url(base, "out/time_resolved/parity/p_fwe.npy")).await;
    let m = square_to_condensed(model.view(), "parity").unwrap();
    for time in 0..t {
        let d = rdm(meg.index_axis(Axis(0), time), RdmMethod::Correlation).unwrap();
        let want = compare(d.view(), m.view(), CompareMethod::Spearman).unwrap();
        assert!((rho[time] - want).abs() < 1e-12);
        assert_eq!(
            p_fwe[time] < 0.05,
            (5..8).contains(&time),
            "time {time}: rho {} p_fwe {}",
            rho[time],
            p_fwe[time]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatched_conditions_and_tiny_rdms_are_clear_errors() {
    let store = Store::new();
    let base = "memory://rsa/bad";
    write_real(&store, base).await;
    let small: Array2<f64> =
        Array2::from_shape_fn((10, 10), |(a, b)| if a == b { 0.0 } else { 1.0 + (a + b) as f64 });
    put(&store, join_url(base, "small.npy"), &small).await;
    let err =
        common::run_embedded(&store, base, &real_job("").replace("animacy.npy", "small.npy"), 1)
            .await
            .unwrap_err();
    assert!(
        err.contains("small.npy") && err.contains("10 conditions") && err.contains("92"),
        "{err}"
    );
    let asym =
        Array2::from_shape_fn((92, 92), |(a, b)| if a == b { 0.0 } else { (a * 3 + b) as f64 });
    put(&store, join_url(base, "asym.npy"), &asym).await;
    let err =
        common::run_embedded(&store, base, &real_job("").replace("animacy.npy", "asym.npy"), 1)
            .await
            .unwrap_err();
    assert!(err.contains("asym.npy") && err.contains("symmetric"), "{err}");
    put(&store, join_url(base, "two.npy"), &Array2::<f64>::zeros((2, 4))).await;
    let job = "name = \"t\"\noutput = \"o\"\n[data]\nbrain = \"two.npy\"\n[rsa]\nbrain_rdms = { b = \"two_rdm.npy\" }\n";
    put(&store, join_url(base, "two_rdm.npy"), &Array1::from(vec![1.0])).await;
    let err = common::run_embedded(&store, base, job, 1).await.unwrap_err();
    assert!(err.contains("at least 3 conditions"), "{err}");
}

/// A searchlight nobody tuned on: rsatoolbox's volume searchlight (spheres truncated at the
/// mask, correlation RDMs, Spearman) on a ragged mask. rsatoolbox keeps distances < 2, which is
/// brainfit's radius 1.9 (<=).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searchlight_matches_rsatoolbox() {
    let store = Store::new();
    let base = "memory://rsa/rsatoolbox-searchlight";
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rsa");
    for (from, to) in [
        ("searchlight_mask.nii.gz", "mask.nii.gz"),
        ("searchlight_data.npy", "brain.npy"),
        ("searchlight_model.npy", "model.npy"),
    ] {
        store
            .put(&join_url(base, to), std::fs::read(format!("{fixtures}/{from}")).unwrap().into())
            .await
            .unwrap();
    }
    let job = "name = \"sl\"\noutput = \"out\"\n[data]\nbrain = \"brain.npy\"\nmask = \"mask.nii.gz\"\n[rsa]\nmodels = { m = \"model.npy\" }\n[searchlight]\nradius = 1.9\nmin_voxels = 4\n";
    common::run_embedded(&store, base, job, 2).await.unwrap();
    let read = |f: &str| parse_npy(&std::fs::read(format!("{fixtures}/{f}")).unwrap(), f).unwrap();
    let want_centres = read("searchlight_centres.npy").to_i64("centres").unwrap();
    let want_rho = read("searchlight_rho.npy").to_f64();
    let centres_url = join_url(base, "out/searchlight/m/centres.npy");
    let centres =
        parse_npy(&store.get(&centres_url).await.unwrap(), "c").unwrap().to_i64("c").unwrap();
    let rho = vector(&store, join_url(base, "out/searchlight/m/rho.npy")).await;
    assert_eq!(centres, want_centres);
    for (i, (g, w)) in rho.iter().zip(want_rho.iter()).enumerate() {
        assert!((g - w).abs() < 1e-9, "centre {}: brainfit {g} vs rsatoolbox {w}", centres[i]);
    }
}

/// Observations of 12 conditions in 4 runs (each condition once per run, shuffled within runs)
/// over the volume of [`write_volume_study`]'s mask, with run offsets.
const CROSSNOBIS_JOB: &str = r#"
name = "cn"
output = "out"
[data]
brain = "obs.npy"
mask = "mask.nii.gz"
groups = "runs.npy"
conditions = "conds.npy"
[features]
layer = "layer.npy"
[rsa]
rois = { box = "mask.nii.gz" }
rdm = "crossnobis"
noise = "shrinkage_diag"
compare = ["spearman", "pearson"]
[searchlight]
radius = 1.5
min_voxels = 5
rdm = "crossnobis"
compare = "pearson"
[permutation]
n = 20
seed = 3
[execution]
centres_per_task = 150
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossnobis_rsa_runs_from_conditions_and_runs() {
    let store = Store::new();
    let base = "memory://cn";
    let (_, voxels, _) = write_volume_study(&store, base).await;
    let (n_cond, n_runs) = (12usize, 4usize);
    let mut rng = Rng::new(5);
    let (mut conds, mut runs) = (Vec::new(), Vec::new());
    for r in 0..n_runs {
        let mut order: Vec<i64> = (0..n_cond as i64).map(|c| 10 + 3 * c).collect();
        rng.shuffle(&mut order);
        conds.extend(order);
        runs.extend(std::iter::repeat_n(r as i64, n_cond));
    }
    let signal: Array2<f64> = rng.normal_array((n_cond, voxels.len()));
    let mut obs: Array2<f64> = rng.normal_array((n_cond * n_runs, voxels.len()));
    for (o, (&c, &r)) in conds.iter().zip(&runs).enumerate() {
        let k = ((c - 10) / 3) as usize;
        let offset = 2.0 * r as f64;
        obs.row_mut(o).scaled_add(1.0, &signal.row(k));
        obs.row_mut(o).mapv_inplace(|v| v + offset);
    }
    // the layer's activations per observation: the same for every run of a condition
    let units: Array2<f64> = rng.normal_array((n_cond, 7));
    let layer = Array2::from_shape_fn((n_cond * n_runs, 7), |(o, u)| {
        units[(((conds[o] - 10) / 3) as usize, u)]
    });
    put(&store, join_url(base, "obs.npy"), &obs).await;
    put(&store, join_url(base, "layer.npy"), &layer).await;
    put(&store, join_url(base, "conds.npy"), &Array1::from(conds.clone())).await;
    put(&store, join_url(base, "runs.npy"), &Array1::from(runs.clone())).await;
    let summary = common::run_embedded(&store, base, CROSSNOBIS_JOB, 2).await.unwrap();
    let note = "its permutations exchange the condition labels freely";
    assert!(summary.warnings.iter().any(|w| w.contains(note)), "{:?}", summary.warnings);

    // the ROI (the whole mask): rsatoolbox's crossnobis over the observations, whitened by the
    // shrinkage estimate of the residuals about the condition means (kernel-tested)
    let design = ObservationDesign::new(conds.clone(), runs.clone()).unwrap();
    let want =
        design.rdm(obs.view(), RdmMethod::Crossnobis, NoisePrecision::ShrinkageDiag).unwrap();
    let got = vector(&store, join_url(base, "out/rsa/rdms/box.npy")).await;
    assert!(got.iter().zip(&want).all(|(g, w)| (g - w).abs() < 1e-12 * w.abs()), "{got}");
    let model = rdm(units.view(), RdmMethod::Euclidean).unwrap();
    let rows = parse_csv(&text(&store, join_url(base, "out/rsa/compare.csv")).await);
    assert_eq!(rows.len(), 2);
    let r: f64 = rows[1][3].parse().unwrap();
    assert_eq!(rows[1][..3], ["box", "layer", "pearson"]);
    let want_r = compare(want.view(), model.view(), CompareMethod::Pearson).unwrap();
    assert!((r - want_r).abs() < 1e-12, "{r} vs {want_r}");
    // searchlight centres: crossnobis of each sphere's observations, without whitening
    let hoods = spheres(&voxels, [9, 8, 6], 1.5, [1.0; 3], 5).unwrap();
    let rho = vector(&store, join_url(base, "out/searchlight/layer/rho.npy")).await;
    assert_eq!(rho.len(), hoods.centres.len());
    for c in (0..hoods.centres.len()).step_by(17) {
        let sphere = obs.select(Axis(1), hoods.members(c));
        let d = design.rdm(sphere.view(), RdmMethod::Crossnobis, NoisePrecision::None).unwrap();
        let want = compare(d.view(), model.view(), CompareMethod::Pearson).unwrap();
        assert!((rho[c] - want).abs() < 1e-12, "centre {c}: {} vs {want}", rho[c]);
    }
    // conditions are exchanged freely: the nulls are relabellings of the 12 conditions
    let p = vector(&store, join_url(base, "out/searchlight/layer/p.npy")).await;
    assert!(p.iter().all(|&p| (1.0 / 21.0..=1.0).contains(&p)));

    // crossnobis without conditions, a condition missing from a run, noise without crossnobis
    let no_conditions = CROSSNOBIS_JOB.replace("conditions = \"conds.npy\"\n", "");
    let e = common::run_embedded(&store, base, &no_conditions, 1).await.unwrap_err();
    assert!(e.contains("[data] conditions") && e.contains("crossnobis"), "{e}");
    let mut gappy = conds.clone();
    gappy[0] = gappy[1];
    put(&store, join_url(base, "gappy.npy"), &Array1::from(gappy)).await;
    let job = CROSSNOBIS_JOB.replace("conds.npy", "gappy.npy");
    let e = common::run_embedded(&store, base, &job, 1).await.unwrap_err();
    assert!(e.contains("every condition in every run"), "{e}");
    let job =
        SEARCHLIGHT_JOB.replace("rdm = \"correlation\"", "rdm = \"correlation\"\nnoise = \"diag\"");
    let e = common::run_embedded(&store, base, &job, 1).await.unwrap_err();
    assert!(e.contains("applies to rdm = \"crossnobis\" only"), "{e}");
}

/// The 2-D `.npy` at `url`.
async fn matrix(store: &Store, url: String) -> Array2<f64> {
    parse_npy(&store.get(&url).await.unwrap(), &url)
        .unwrap()
        .to_f64()
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_temporal_rsa_matches_brute_force_between_recordings() {
    let store = Store::new();
    let base = "memory://rsa/xt";
    let mut rng = Rng::new(9);
    let n = 14;
    let category: Vec<f64> = (0..n).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }).collect();
    // the same structure at times 2..4 of the first recording and 1..2 of the second
    let recording = |rng: &mut Rng, times: usize, channels: usize, on: std::ops::Range<usize>| {
        let mut x: Array3<f64> = rng.normal_array((times, n, channels));
        for t in on {
            for ch in 0..channels {
                let w = rng.normal();
                (0..n).for_each(|i| x[(t, i, ch)] += 3.0 * w * category[i]);
            }
        }
        x
    };
    let meg = recording(&mut rng, 6, 8, 2..4);
    let eeg = recording(&mut rng, 4, 5, 1..2);
    put(&store, join_url(base, "meg.npy"), &meg).await;
    put(&store, join_url(base, "eeg.npy"), &eeg).await;
    let model =
        Array2::from_shape_fn((n, n), |(a, b)| f64::from(u8::from(category[a] != category[b])));
    put(&store, join_url(base, "parity.npy"), &model).await;
    let job = |method: &str| {
        format!(
            "name = \"xt\"\noutput = \"out\"\n[rsa]\nmodels = {{ parity = \"parity.npy\" }}\n[time_resolved]\ndata = \"meg.npy\"\ncross_data = \"eeg.npy\"\ncompare = \"{method}\"\n[permutation]\nn = 40\nseed = 2\n[execution]\npermutations_per_task = 15\n"
        )
    };
    for method in [CompareMethod::Spearman, CompareMethod::KendallTauA] {
        common::run_embedded(&store, base, &job(method.as_str()), 2).await.unwrap();
        let rho = matrix(&store, join_url(base, "out/cross_temporal/rho.npy")).await;
        let p = matrix(&store, join_url(base, "out/cross_temporal/p.npy")).await;
        let p_fwe = matrix(&store, join_url(base, "out/cross_temporal/p_fwe.npy")).await;
        assert_eq!(rho.dim(), (6, 4));
        let rdms = |x: &Array3<f64>| -> Vec<Array1<f64>> {
            x.outer_iter().map(|t| rdm(t, RdmMethod::Correlation).unwrap()).collect()
        };
        let (a, b) = (rdms(&meg), rdms(&eeg));
        // brute force: relabel the second recording's RDMs, compare every pair of times
        let nulls: Vec<Array2<f64>> = (0..40)
            .map(|k| {
                let perm = permutation(n, &Scheme::Free, 2, k);
                Array2::from_shape_fn((6, 4), |(i, j)| {
                    let relabelled = permute_condensed(b[j].view(), n, &perm).unwrap();
                    compare(a[i].view(), relabelled.view(), method).unwrap()
                })
            })
            .collect();
        for ((i, j), &r) in rho.indexed_iter() {
            let want = compare(a[i].view(), b[j].view(), method).unwrap();
            assert!((r - want).abs() < 1e-12, "{method:?} ({i}, {j}): {r} vs {want}");
            let ge = nulls.iter().filter(|m| m[(i, j)] >= r).count();
            assert!((p[(i, j)] - (1 + ge) as f64 / 41.0).abs() < 1e-12);
            let ge_max = nulls.iter().filter(|m| m.fold(f64::MIN, |x, &y| x.max(y)) >= r).count();
            assert!((p_fwe[(i, j)] - (1 + ge_max) as f64 / 41.0).abs() < 1e-12);
        }
        // where both recordings carry the structure, it survives the correction
        assert!(p_fwe[(2, 1)] < 0.05 && p_fwe[(3, 1)] < 0.05, "{p_fwe}");
    }
    // within one recording: the diagonal is no item, and each pair of times is one (the upper
    // triangle, mirrored, in the observed matrix and in the nulls)
    let job = job("spearman").replace("cross_data = \"eeg.npy\"", "cross_temporal = true");
    common::run_embedded(&store, base, &job, 1).await.unwrap();
    let rho = matrix(&store, join_url(base, "out/cross_temporal/rho.npy")).await;
    let p = matrix(&store, join_url(base, "out/cross_temporal/p.npy")).await;
    assert_eq!(rho.dim(), (6, 6));
    let a: Vec<Array1<f64>> =
        meg.outer_iter().map(|t| rdm(t, RdmMethod::Correlation).unwrap()).collect();
    for i in 0..6 {
        assert!(rho[(i, i)].is_nan() && p[(i, i)].is_nan());
        for j in i + 1..6 {
            let want = compare(a[i].view(), a[j].view(), CompareMethod::Spearman).unwrap();
            assert!((rho[(i, j)] - want).abs() < 1e-12);
            assert_eq!((rho[(j, i)], p[(j, i)]), (rho[(i, j)], p[(i, j)]));
        }
    }
    assert!(p[(2, 3)] < 0.05, "times 2 and 3 share the structure: {p}");
}

/// The real human IT RDMs of the 4 subjects (session-averaged, condensed), and every model.
async fn write_subjects(store: &Store, base: &str) -> Vec<Array1<f64>> {
    let all = krieg("human_it_rdms.npy").to_f64().into_dimensionality::<ndarray::Ix4>().unwrap();
    let mut subjects = Vec::new();
    for s in 0..4 {
        let square = all.index_axis(Axis(0), s).mean_axis(Axis(0)).unwrap();
        let v = square_to_condensed(square.view(), "subject").unwrap();
        put(store, join_url(base, &format!("s{}.npy", s + 1)), &v).await;
        subjects.push(v);
    }
    subjects
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reweighted_rsa_and_noise_ceilings_on_the_real_rdms() {
    use brainfit_kernels::rsa_fit::{
        condition_folds, crossval_reweighted, crossval_unweighted, noise_ceiling,
    };
    let store = Store::new();
    let base = "memory://rsa/reweight";
    let models = write_real(&store, base).await;
    let subjects = write_subjects(&store, base).await;
    let methods = ["spearman", "pearson", "rho_a", "tau_b", "corr_cov", "cka_linear_unbiased"];
    let model_list: String = MODEL_NAMES.iter().map(|m| format!("{m:?}, ")).collect();
    let job = format!(
        "name = \"rw\"\noutput = \"out\"\n[rsa]\nbrain_rdms = {{ s1 = \"s1.npy\", s2 = \"s2.npy\", s3 = \"s3.npy\", s4 = \"s4.npy\" }}\nmodels = {{ {} }}\ncompare = {methods:?}\nceiling = {{ human = [\"s1\", \"s2\", \"s3\", \"s4\"] }}\n[rsa.reweight.all]\nmodels = [{}]\nfolds = 4\nseed = 7\n[permutation]\nn = 19\nseed = 4\n[execution]\npermutations_per_task = 7\n",
        MODEL_NAMES
            .iter()
            .map(|m| format!("{m} = \"{m}.npy\", "))
            .collect::<String>()
            .trim_end_matches(", "),
        model_list.trim_end_matches(", ")
    );
    common::run_embedded(&store, base, &job, 2).await.unwrap();
    let compared = text(&store, join_url(base, "out/rsa/compare.csv")).await;
    let header = compared.lines().next().unwrap();
    assert_eq!(header, "brain,model,method,value,p,p_fwe,noise_ceiling_lower,noise_ceiling_upper");
    let rows = parse_csv(&compared);
    // brains (4 subjects, then the group) × (8 models, all, all.unweighted) × methods
    assert_eq!(rows.len(), 5 * 10 * methods.len());
    let value = |brain: &str, model: &str, method: &str| -> Vec<String> {
        rows.iter()
            .find(|r| r[0] == brain && r[1] == model && r[2] == method)
            .unwrap_or_else(|| panic!("{brain} {model} {method}"))
            .clone()
    };
    let folds = condition_folds(92, 4, 7).unwrap();
    let mut stacked = Array2::<f64>::zeros((8, 4186));
    for (i, (_, m)) in models.iter().skip(1).enumerate() {
        stacked.row_mut(i).assign(m);
    }
    for method in methods {
        let m = CompareMethod::parse(method).unwrap();
        let mut group = [0.0; 10];
        for (s, subject) in subjects.iter().enumerate() {
            let brain = format!("s{}", s + 1);
            for (j, (name, model)) in models.iter().skip(1).enumerate() {
                let got: f64 = value(&brain, name, method)[3].parse().unwrap();
                let want = compare(subject.view(), model.view(), m).unwrap();
                assert!((got - want).abs() < 1e-12, "{brain} {name} {method}: {got} vs {want}");
                group[j] += got / 4.0;
            }
            let cv = crossval_reweighted(stacked.view(), subject.view(), 92, &folds, m).unwrap();
            let got: f64 = value(&brain, "all", method)[3].parse().unwrap();
            assert!((got - cv.mean).abs() < 1e-12, "{brain} {method}: {got} vs {}", cv.mean);
            group[8] += got / 4.0;
            let plain = crossval_unweighted(stacked.view(), subject.view(), 92, &folds, m).unwrap();
            let got: f64 = value(&brain, "all.unweighted", method)[3].parse().unwrap();
            assert!((got - plain).abs() < 1e-12);
            group[9] += got / 4.0;
            assert_eq!(value(&brain, "all", method)[6], "", "no ceiling on a subject's row");
        }
        let names: Vec<&str> =
            MODEL_NAMES.iter().copied().chain(["all", "all.unweighted"]).collect();
        let mut pooled = Array2::<f64>::zeros((4, 4186));
        for (mut row, s) in pooled.rows_mut().into_iter().zip(&subjects) {
            row.assign(s);
        }
        let (lower, upper) = noise_ceiling(pooled.view(), m).unwrap();
        for (j, name) in names.iter().enumerate() {
            let row = value("human", name, method);
            let got: f64 = row[3].parse().unwrap();
            assert!((got - group[j]).abs() < 1e-12, "group mean {name} {method}");
            let (lo, hi): (f64, f64) = (row[6].parse().unwrap(), row[7].parse().unwrap());
            assert!((lo - lower).abs() < 1e-12 && (hi - upper).abs() < 1e-12, "{method}");
            assert!(lo < hi, "{method}: the lower bound is below the upper one");
        }
    }
    // RDM-only jobs also partition, weight units and remix (no [data]: features of the 92
    // conditions, a training set for the classifier)
    let mut rng = Rng::new(92);
    let units: Array2<f64> = rng.normal_array((92, 6));
    put(&store, join_url(base, "units.npy"), &units).await;
    let train: Array2<f64> = rng.normal_array((30, 6));
    put(&store, join_url(base, "train.npy"), &train).await;
    put(&store, join_url(base, "labels.npy"), &(0..30).map(|i| i % 3).collect::<Array1<i64>>())
        .await;
    let extra = "partition = [\"animacy\", \"EVA\"]\n[features]\nunits = \"units.npy\"\n[rsa.unit_weighting.w]\nspace = \"units\"\nfolds = 4\n[rsa.remix.r]\nspace = \"units\"\ntrain = \"train.npy\"\nlabels = \"labels.npy\"\nfolds = 3\n";
    let rdm_only = job
        .replace("[rsa.reweight.all]", &format!("{extra}[rsa.reweight.all]"))
        .replace("output = \"out\"", "output = \"out2\"")
        .replace("n = 19", "n = 3");
    common::run_embedded(&store, base, &rdm_only, 1).await.unwrap();
    let partition = parse_csv(&text(&store, join_url(base, "out2/rsa/partition.csv")).await);
    assert_eq!(partition.len(), 4 * 3);
    let compared = parse_csv(&text(&store, join_url(base, "out2/rsa/compare.csv")).await);
    for model in ["units", "r", "w", "w.unweighted"] {
        assert!(
            compared.iter().any(|r| r[1] == model && r[3].parse::<f64>().unwrap().is_finite()),
            "{model}"
        );
    }
    // the weights fitted on all pairs, per brain RDM (the group has no single RDM)
    let weights = parse_csv(&text(&store, join_url(base, "out/rsa/weights.csv")).await);
    assert_eq!(weights.len(), 4 * 9);
    for (s, subject) in subjects.iter().enumerate() {
        let all: Vec<usize> = (0..4186).collect();
        let full =
            brainfit_kernels::rsa_fit::fit_weights(stacked.view(), subject.view(), &all).unwrap();
        let rows = &weights[s * 9..(s + 1) * 9];
        let regressors = MODEL_NAMES.iter().copied().chain(["intercept"]);
        let values = full.weights.iter().chain([&full.intercept]);
        for ((row, regressor), &want) in rows.iter().zip(regressors).zip(values) {
            assert_eq!(row[..3], [format!("s{}", s + 1), "all".into(), regressor.to_string()]);
            assert_eq!(row[3].parse::<f64>().unwrap(), want, "{row:?}");
        }
        assert!(full.weights.iter().all(|&w| w >= 0.0));
    }
    // the reweighted fit's null refits every fold on relabelled models: brute force for s1
    let subject = &subjects[0];
    let observed =
        crossval_reweighted(stacked.view(), subject.view(), 92, &folds, CompareMethod::Spearman)
            .unwrap()
            .mean;
    let exceed = (0..19)
        .filter(|&k| {
            let perm = permutation(92, &Scheme::Free, 4, k);
            let mut relabelled = stacked.clone();
            for mut row in relabelled.rows_mut() {
                let r = permute_condensed(row.view(), 92, &perm).unwrap();
                row.assign(&r);
            }
            let cv = crossval_reweighted(
                relabelled.view(),
                subject.view(),
                92,
                &folds,
                CompareMethod::Spearman,
            );
            cv.unwrap().mean >= observed
        })
        .count();
    let p: f64 = value("s1", "all", "spearman")[4].parse().unwrap();
    assert!((p - (1 + exceed) as f64 / 20.0).abs() < 1e-12, "{p} vs {exceed}");
    // fitted to the models, human IT beats the unweighted sum on held-out pairs
    let fitted: f64 = value("human", "all", "spearman")[3].parse().unwrap();
    let plain: f64 = value("human", "all.unweighted", "spearman")[3].parse().unwrap();
    assert!(fitted > plain, "reweighted {fitted} vs unweighted {plain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_unit_weighting_and_remix_in_rois_searchlights_and_time() {
    use brainfit_kernels::logistic::LogisticCv;
    use brainfit_kernels::rsa_fit::{
        condition_folds, crossval_reweighted, partition_from_unions, principal_component_scores,
        rdm_r2, unit_regressors,
    };
    let store = Store::new();
    let base = "memory://rsa/fitted";
    let (_, voxels, _) = write_volume_study(&store, base).await;
    let mut rng = Rng::new(23);
    let n = 20;
    let low: Array2<f64> = rng.normal_array((n, 6));
    let high: Array2<f64> = rng.normal_array((n, 8));
    let mut brain: Array2<f64> = rng.normal_array((n, voxels.len()));
    let w_low: Array2<f64> = rng.normal_array((6, voxels.len()));
    let w_high: Array2<f64> = rng.normal_array((8, voxels.len()));
    brain = brain + low.dot(&w_low) * 0.7 + high.dot(&w_high) * 0.7;
    let mut meg: Array3<f64> = rng.normal_array((4, n, 5));
    let w_meg: Array2<f64> = rng.normal_array((8, 5));
    meg.index_axis_mut(Axis(0), 2).scaled_add(1.0, &high.dot(&w_meg));
    // a training set for the remixed classifier: 3 categories of 15 images in high's units
    let centres: Array2<f64> = rng.normal_array((3, 8));
    let labels: Array1<i64> = (0..45).map(|i| (i % 3) as i64).collect();
    let mut train: Array2<f64> = rng.normal_array((45, 8));
    for (mut row, &l) in train.rows_mut().into_iter().zip(&labels) {
        row.scaled_add(2.0, &centres.row(l as usize));
    }
    for (name, a) in
        [("brain.npy", &brain), ("low.npy", &low), ("high.npy", &high), ("train.npy", &train)]
    {
        put(&store, join_url(base, name), a).await;
    }
    put(&store, join_url(base, "meg.npy"), &meg).await;
    put(&store, join_url(base, "labels.npy"), &labels).await;
    let job = r#"
name = "fitted"
output = "out"
[data]
brain = "brain.npy"
mask = "mask.nii.gz"
[features]
low = "low.npy"
high = "high.npy"
[rsa]
rois = { box = "mask.nii.gz" }
compare = ["pearson"]
partition = ["low", "high"]
[rsa.unit_weighting.units]
space = "high"
components = 4
folds = 3
[rsa.remix.cat]
space = "high"
train = "train.npy"
labels = "labels.npy"
cs = [0.1, 1.0, 10.0]
folds = 3
[searchlight]
radius = 1.5
min_voxels = 5
compare = "pearson"
[time_resolved]
data = "meg.npy"
compare = "pearson"
[execution]
centres_per_task = 120
"#;
    common::run_embedded(&store, base, job, 2).await.unwrap();
    let corr = RdmMethod::Correlation;
    let (m_low, m_high) = (rdm(low.view(), corr).unwrap(), rdm(high.view(), corr).unwrap());
    let fit = LogisticCv { cs: vec![0.1, 1.0, 10.0], folds: 3 }
        .fit(train.view(), labels.as_slice().unwrap())
        .unwrap();
    let m_cat = rdm(fit.model.decision_function(high.view()).unwrap().view(), corr).unwrap();
    let mut models = Array2::<f64>::zeros((3, m_low.len()));
    // feature spaces in name order, then the remixed model
    for (mut row, m) in models.rows_mut().into_iter().zip([&m_high, &m_low, &m_cat]) {
        row.assign(m);
    }
    let units = unit_regressors(principal_component_scores(high.view(), 4).unwrap().view());
    let folds = condition_folds(n, 3, 0).unwrap();
    // everything a brain RDM gets: the three models, the unit weighting, the partition
    let expect = |b: &Array1<f64>| -> (Vec<f64>, Vec<f64>) {
        let mut values: Vec<f64> = models
            .rows()
            .into_iter()
            .map(|m| compare(b.view(), m, CompareMethod::Pearson).unwrap())
            .collect();
        let cv =
            crossval_reweighted(units.view(), b.view(), n, &folds, CompareMethod::Pearson).unwrap();
        values.push(cv.mean);
        let r2 = |mask: u32| {
            // partition = ["low", "high"]: rows 1 and 0
            let rows: Vec<usize> = [1, 0]
                .into_iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, row)| row)
                .collect();
            Array1::from_elem(1, rdm_r2(b.view(), models.view(), &rows))
        };
        let mut parts = partition_from_unions(2, r2);
        parts.sort_by_key(|(mask, _)| *mask);
        (values, parts.into_iter().map(|(_, v)| v[0]).collect())
    };
    // ROI: the whole mask
    let box_rdm = vector(&store, join_url(base, "out/rsa/rdms/box.npy")).await;
    let (values, parts) = expect(&box_rdm);
    let rows = parse_csv(&text(&store, join_url(base, "out/rsa/compare.csv")).await);
    let names = ["high", "low", "cat", "units", "units.unweighted"];
    assert_eq!(rows.iter().map(|r| r[1].as_str()).collect::<Vec<_>>(), names);
    for (row, want) in rows.iter().zip(&values) {
        let got: f64 = row[3].parse().unwrap();
        assert!((got - want).abs() < 1e-12, "{}: {got} vs {want}", row[1]);
    }
    let partition = parse_csv(&text(&store, join_url(base, "out/rsa/partition.csv")).await);
    let subsets: Vec<&str> = partition.iter().map(|r| r[1].as_str()).collect();
    assert_eq!(subsets, ["low", "high", "low+high"]);
    for (row, want) in partition.iter().zip(&parts) {
        assert!((row[2].parse::<f64>().unwrap() - want).abs() < 1e-12, "{row:?} vs {want}");
    }
    // both layers' unique variance is there, and they add up with the shared part
    assert!(parts[0] > 0.0 && parts[1] > 0.0, "{parts:?}");
    // searchlight: the same per sphere
    let hoods = spheres(&voxels, [9, 8, 6], 1.5, [1.0; 3], 5).unwrap();
    for c in (0..hoods.centres.len()).step_by(29) {
        let b = sphere_rdm(brain.view(), hoods.members(c), corr).unwrap();
        let (values, parts) = expect(&b);
        for (name, want) in names.iter().zip(&values) {
            let got =
                vector(&store, join_url(base, &format!("out/searchlight/{name}/rho.npy"))).await[c];
            assert!((got - want).abs() < 1e-12, "centre {c} {name}: {got} vs {want}");
        }
        for (subset, want) in ["low", "high", "low+high"].iter().zip(&parts) {
            let got =
                vector(&store, join_url(base, &format!("out/searchlight/partition/{subset}.npy")))
                    .await[c];
            assert!((got - want).abs() < 1e-12, "centre {c} {subset}");
        }
    }
    // the unit weighting's weights per centre, fitted on all pairs, beside its map
    let all: Vec<usize> = (0..m_low.len()).collect();
    for c in (0..hoods.centres.len()).step_by(41) {
        let b = sphere_rdm(brain.view(), hoods.members(c), corr).unwrap();
        let fit = brainfit_kernels::rsa_fit::fit_weights(units.view(), b.view(), &all).unwrap();
        for (k, want) in fit.weights.iter().enumerate() {
            let url = join_url(base, &format!("out/searchlight/units/weight_pc_{}.npy", k + 1));
            assert_eq!(vector(&store, url).await[c], *want, "centre {c}, component {}", k + 1);
        }
    }
    // time-resolved: per time point
    for t in 0..4 {
        let b = rdm(meg.index_axis(Axis(0), t), corr).unwrap();
        let (values, parts) = expect(&b);
        for (name, want) in names.iter().zip(&values) {
            let got = vector(&store, join_url(base, &format!("out/time_resolved/{name}/rho.npy")))
                .await[t];
            assert!((got - want).abs() < 1e-12, "time {t} {name}: {got} vs {want}");
        }
        for (subset, want) in ["low", "high", "low+high"].iter().zip(&parts) {
            let got = vector(
                &store,
                join_url(base, &format!("out/time_resolved/partition/{subset}.npy")),
            )
            .await[t];
            assert!((got - want).abs() < 1e-12, "time {t} {subset}");
        }
    }
    // checked before any task: an unknown model, too many components, a model named partition
    for (from, to, message) in [
        ("partition = [\"low\", \"high\"]", "partition = [\"low\", \"nope\"]", "is not a model"),
        ("components = 4", "components = 40", "components = 40"),
        ("[rsa.remix.cat]", "[rsa.remix.partition]", "no model may be named \"partition\""),
    ] {
        let e = common::run_embedded(&store, base, &job.replace(from, to), 1).await.unwrap_err();
        assert!(e.contains(message), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roi_rsa_over_subjects_has_a_group_table_with_noise_ceilings() {
    use brainfit_kernels::rsa_fit::noise_ceiling;
    let store = Store::new();
    let base = "memory://rsa/group";
    let (data, _, model) = write_volume_study(&store, base).await;
    let mut rng = Rng::new(3);
    for s in 1..=3 {
        let noise: Array2<f64> = rng.normal_array(data.dim());
        put(&store, join_url(base, &format!("b{s}.npy")), &(&data + &noise)).await;
    }
    let subjects: String = (1..=3)
        .map(|s| format!("[[subjects]]\nname = \"s{s}\"\ndata = {{ brain = \"b{s}.npy\", mask = \"mask.nii.gz\" }}\n"))
        .collect();
    let job = format!(
        "name = \"group\"\noutput = \"out\"\n{subjects}[rsa]\nrois = {{ all = \"mask.nii.gz\" }}\nmodels = {{ category = \"category.npy\" }}\ncompare = [\"spearman\", \"rho_a\"]\n"
    );
    let summary = common::run_embedded(&store, base, &job, 2).await.unwrap();
    let rows = parse_csv(&text(&store, join_url(base, "out/rsa/group.csv")).await);
    assert_eq!(rows.len(), 2);
    let mut rdms = Array2::<f64>::zeros((3, model.len()));
    for s in 0..3 {
        let d = vector(&store, join_url(base, &format!("out/s{}/rsa/rdms/all.npy", s + 1))).await;
        rdms.row_mut(s).assign(&d);
    }
    for (row, method) in rows.iter().zip([CompareMethod::Spearman, CompareMethod::RhoA]) {
        assert_eq!(row[..3], ["all".to_string(), "category".into(), method.as_str().into()]);
        let mean =
            rdms.rows().into_iter().map(|d| compare(d, model.view(), method).unwrap()).sum::<f64>()
                / 3.0;
        assert!((row[3].parse::<f64>().unwrap() - mean).abs() < 1e-12);
        assert_eq!(row[4], "3");
        let (lower, upper) = noise_ceiling(rdms.view(), method).unwrap();
        assert_eq!(
            (row[5].parse::<f64>().unwrap(), row[6].parse::<f64>().unwrap()),
            (lower, upper)
        );
        assert!(lower < upper);
    }
    assert_eq!(summary.rsa_group.len(), 2);
}
