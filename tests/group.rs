//! `[group]` end to end: eight subjects' encoding and searchlight maps tested across subjects,
//! the job's outputs recomputed from the subjects' published maps (the t map by its formula,
//! every p-value by the kernel run in one piece), the planted blob found, and the group
//! table's mistakes refused before any task. The kernel itself is checked against nilearn and
//! exhaustive enumeration in `brainfit-kernels` (`group.rs`), its calibration there too.

mod common;

use brainfit_io::{Mask, Store, join_url, parse_npy, write_nifti_f32, write_npy};
use brainfit_job::inputs::load_mask;
use brainfit_kernels::group::{Connectivity, OneSample, SignFlips, Spatial, Tail, Topology};
use brainfit_kernels::rng::Rng;
use ndarray::{Array1, Array2, Array3, Ix1};

const SHAPE: [usize; 3] = [8, 8, 6];
const SUBJECTS: usize = 8;
const AFFINE: [[f64; 4]; 4] =
    [[3.0, 0.0, 0.0, -12.0], [0.0, 3.0, 0.0, -12.0], [0.0, 0.0, 3.0, -9.0], [0.0, 0.0, 0.0, 1.0]];
/// The blob every subject's voxels carry feature space `a` in.
const BLOB: ([f64; 3], f64) = ([2.0, 2.0, 2.0], 1.8);

fn in_blob(v: [usize; 3]) -> bool {
    let d2: f64 = (0..3).map(|a| (v[a] as f64 - BLOB.0[a]).powi(2)).sum();
    d2 <= BLOB.1 * BLOB.1
}

async fn vector(store: &Store, url: &str) -> Array1<f64> {
    parse_npy(&store.get(url).await.unwrap(), url)
        .unwrap()
        .to_f64()
        .into_dimensionality::<Ix1>()
        .unwrap()
}

/// Eight subjects on one grid: the brain box minus its corners; subject 1's mask also lacks
/// three voxels. Features `a` (driving the blob, more weakly in some subjects) and `b` (noise)
/// are shared; 48 samples in 4 runs.
async fn write_group_study(store: &Store, base: &str) {
    let mut rng = Rng::new(77);
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let a: Array2<f32> = rng.normal_array((48, 5));
    let b: Array2<f32> = rng.normal_array((48, 5));
    files.push(("a.npy".into(), write_npy(&a.view())));
    files.push(("b.npy".into(), write_npy(&b.view())));
    let runs: Array1<i64> = (0..48).map(|t| t / 12).collect();
    files.push(("runs.npy".into(), write_npy(&runs.view())));
    for s in 0..SUBJECTS {
        let mut mask = Array3::<f32>::zeros(SHAPE);
        for ((i, j, k), v) in mask.indexed_iter_mut() {
            let corner = [i, j, k].iter().zip(SHAPE).all(|(&x, n)| x == 0 || x == n - 1);
            let dropped = s == 1 && j == 7 && k == 3 && i < 3;
            if !corner && !dropped {
                *v = 1.0;
            }
        }
        let voxels: Vec<[usize; 3]> = mask
            .indexed_iter()
            .filter(|(_, v)| **v != 0.0)
            .map(|((i, j, k), _)| [i, j, k])
            .collect();
        let mut brain: Array2<f32> = rng.normal_array((48, voxels.len()));
        let gain = 0.7 + 0.2 * (s % 3) as f32;
        for (c, &v) in voxels.iter().enumerate() {
            if in_blob(v) {
                let w: Array1<f32> = rng.normal_array(5);
                let signal = a.dot(&w);
                brain.column_mut(c).scaled_add(gain, &signal);
            }
        }
        files.push((format!("mask{s}.nii.gz"), write_nifti_f32(mask.view(), &AFFINE, true)));
        files.push((format!("brain{s}.npy"), write_npy(&brain.view())));
    }
    common::put_files(store, base, files.iter().map(|(n, b)| (n.as_str(), b.clone()))).await;
}

fn subjects() -> String {
    (0..SUBJECTS)
        .map(|s| {
            format!(
                "[[subjects]]\nname = \"s{s}\"\ndata = {{ brain = \"brain{s}.npy\", mask = \"mask{s}.nii.gz\", groups = \"runs.npy\" }}\n"
            )
        })
        .collect()
}

fn encoding_job(group: &str) -> String {
    format!(
        "name = \"group\"\noutput = \"out\"\n{}[features]\na = \"a.npy\"\nb = \"b.npy\"\n[encoding]\nalphas = {{ logspace = [-1, 3, 5] }}\ncv = {{ kind = \"group\" }}\ninner_cv = {{ kind = \"kfold\", k = 3 }}\n[execution]\npermutations_per_task = 30\n[group]\n{group}",
        subjects()
    )
}

/// The subjects' published maps `rel` (over each subject's mask; searchlight maps through
/// their centres) on the voxels in every mask, as the test recomputes them.
async fn subject_matrix(
    store: &Store,
    base: &str,
    rel: &str,
    centres: bool,
) -> (Array2<f64>, Vec<usize>) {
    let mut masks: Vec<Mask> = Vec::new();
    for s in 0..SUBJECTS {
        masks.push(load_mask(store, &join_url(base, &format!("mask{s}.nii.gz"))).await.unwrap());
    }
    let flat = |v: &[usize; 3]| (v[0] * SHAPE[1] + v[1]) * SHAPE[2] + v[2];
    let total = SHAPE.iter().product::<usize>();
    let mut count = vec![0; total];
    for m in &masks {
        m.voxels.iter().for_each(|v| count[flat(v)] += 1);
    }
    let common: Vec<usize> = (0..total).filter(|&v| count[v] == SUBJECTS).collect();
    let mut out = Array2::from_elem((SUBJECTS, common.len()), f64::NAN);
    for (s, m) in masks.iter().enumerate() {
        let values = vector(store, &join_url(base, &format!("out/s{s}/{rel}"))).await;
        let mut on_grid = vec![f64::NAN; total];
        if centres {
            let dir = rel.rsplit_once('/').unwrap().0;
            let c = vector(store, &join_url(base, &format!("out/s{s}/{dir}/centres.npy"))).await;
            for (&c, &x) in c.iter().zip(&values) {
                on_grid[flat(&m.voxels[c as usize])] = x;
            }
        } else {
            for (v, &x) in m.voxels.iter().zip(&values) {
                on_grid[flat(v)] = x;
            }
        }
        for (e, &v) in common.iter().enumerate() {
            out[(s, e)] = on_grid[v];
        }
    }
    (out, common)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoding_maps_are_tested_across_subjects_and_the_blob_is_found() {
    let store = Store::new();
    let base = "memory://group/encoding";
    write_group_study(&store, base).await;
    let job = encoding_job(
        "maps = [\"encoding\"]\nn = 100\nseed = 3\ntail = \"greater\"\ntfce = true\ncluster_threshold = 2.0\n",
    );
    let summary = common::run_embedded(&store, base, &job, 2).await.unwrap();
    let out = |rel: &str| join_url(base, &format!("out/{rel}"));

    // the group mask is the masks' intersection; subject 1's missing voxels are reported
    let group_mask = load_mask(&store, &out("group/mask.nii.gz")).await.unwrap();
    let (values, common) = subject_matrix(&store, base, "encoding/a/score.npy", false).await;
    assert_eq!(group_mask.len(), common.len());
    assert_eq!(group_mask.len(), SHAPE.iter().product::<usize>() - 8 - 3);
    assert!(
        summary.warnings.iter().any(|w| w.contains("3 voxels") && w.contains("s1's mask")),
        "{:?}",
        summary.warnings
    );

    // the t map by its formula, from the subjects' published score maps
    let t = vector(&store, &out("group/encoding/a/t.npy")).await;
    let n = SUBJECTS as f64;
    for (e, col) in values.columns().into_iter().enumerate() {
        let mean = col.sum() / n;
        let sd = (col.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        let want = mean / (sd / n.sqrt());
        assert!(
            (t[e] - want).abs() <= 1e-10 * want.abs().max(1.0),
            "voxel {e}: {} vs {want}",
            t[e]
        );
    }
    let mean = vector(&store, &out("group/encoding/a/mean.npy")).await;
    assert!((mean[0] - values.column(0).sum() / n).abs() < 1e-12);

    // every p-value as the kernel gives it run in one piece over all 100 flips (the job ran
    // four tasks of 30 flips and merged them)
    let spatial = Spatial {
        topology: Topology::volume(SHAPE, &common, Connectivity::Corners).unwrap(),
        tfce: Some(Default::default()),
        cluster_threshold: Some(2.0),
    };
    let test = OneSample::new(values.view(), 0.0).unwrap();
    let flips = SignFlips::new(SUBJECTS, 100, 3).unwrap();
    assert!(!flips.is_exhaustive());
    let want = brainfit_kernels::group::run(&test, Some(&spatial), Tail::Greater, &flips).unwrap();
    let expected: [(&str, &[f64]); 6] = [
        ("t", &want.t),
        ("p", &want.p),
        ("p_fwe", &want.p_fwe),
        ("tfce", want.tfce.as_ref().unwrap()),
        ("p_tfce_fwe", want.p_fwe_tfce.as_ref().unwrap()),
        ("p_cluster_mass_fwe", want.p_fwe_mass.as_ref().unwrap()),
    ];
    for (name, want) in expected {
        let got = vector(&store, &out(&format!("group/encoding/a/{name}.npy"))).await;
        assert_eq!(got.len(), want.len(), "{name}");
        for (g, w) in got.iter().zip(want) {
            assert!(g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()), "{name}: {g} vs {w}");
        }
    }
    assert_eq!(vector(&store, &out("group/encoding/a/null_max.npy")).await.len(), 100);

    // the blob: its centre significant by TFCE, the largest cluster holds it, with its peak
    // in mm through the affine
    let centre = group_mask.voxels.iter().position(|&v| v == [2, 2, 2]).unwrap();
    let p_tfce = vector(&store, &out("group/encoding/a/p_tfce_fwe.npy")).await;
    assert!(
        p_tfce[centre] < 0.05,
        "{} t {} values {:?} summary {:?}",
        p_tfce[centre],
        t[centre],
        values.column(centre),
        summary.group
    );
    let far = group_mask.voxels.iter().position(|&v| v == [6, 6, 4]).unwrap();
    assert!(p_tfce[far] > 0.05);
    let csv =
        String::from_utf8(store.get(&out("group/encoding/a/clusters.csv")).await.unwrap().to_vec())
            .unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "cluster,sign,size,mass,p_fwe_mass,p_fwe_extent,peak_t,peak_i,peak_j,peak_k,peak_x,peak_y,peak_z"
    );
    let first: Vec<&str> = lines.next().unwrap().split(',').collect();
    let ijk = [first[7], first[8], first[9]].map(|x| x.parse::<usize>().unwrap());
    assert!(in_blob(ijk), "largest cluster peaks at {ijk:?}");
    assert_eq!(first[10].parse::<f64>().unwrap(), 3.0 * ijk[0] as f64 - 12.0);
    assert!(first[4].parse::<f64>().unwrap() < 0.05);
    assert_eq!(want.clusters[0].cluster.size.to_string(), first[2]);

    // the summary; feature space b drives nothing
    let a = &summary.group["encoding/a"];
    assert_eq!((a.n_subjects, a.n_flips, a.exhaustive), (SUBJECTS, 100, false));
    assert!(in_blob(a.t.peak.as_ref().unwrap().voxel));
    assert!(a.significant_tfce_fwe_05.unwrap() > 0);
    assert_eq!(a.clusters_fwe_05, Some(1));
    let b = &summary.group["encoding/b"];
    assert_eq!(b.significant_fwe_05, 0);
    assert_eq!(b.significant_tfce_fwe_05, Some(0));
    for f in ["t.nii.gz", "p_fwe.nii.gz", "p_tfce_fwe.nii.gz", "mean.nii.gz"] {
        assert!(store.size(&out(&format!("group/encoding/b/{f}"))).await.is_ok(), "{f}");
    }

    // the report has a group section: the table, each map's pictures and cluster table
    let html = brainfit_client::report::build_report(&store, &join_url(base, "out")).await.unwrap();
    for needle in [
        "<h2>Group tests</h2>",
        "<h3>Group: encoding/a</h3>",
        "alt=\"slice mosaic of group t of encoding/a\"",
        "alt=\"glass brain of group t of encoding/b\"",
        "alt=\"null maximum of t\"",
        "<th>peak_x</th>",
        "one-sample against 0, greater",
    ] {
        assert!(html.contains(needle), "the report lacks {needle:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paired_searchlight_maps_are_fisher_z_differences_with_exact_flips() {
    let store = Store::new();
    let base = "memory://group/paired";
    write_group_study(&store, base).await;
    let job = format!(
        "name = \"paired\"\noutput = \"out\"\n{}[features]\na = \"a.npy\"\nb = \"b.npy\"\n[searchlight]\nradius = 1.5\n[group]\nmaps = [\"searchlight\"]\ntest = \"paired\"\npairs = [[\"a\", \"b\"]]\nfisher_z = true\nn = 300\ncluster_p = 0.01\nconnectivity = 6\n",
        subjects()
    );
    let summary = common::run_embedded(&store, base, &job, 2).await.unwrap();
    let s = &summary.group["searchlight/a-vs-b"];
    // 2^8 = 256 patterns are no more than 300: every one, exact p-values
    assert_eq!((s.n_flips, s.exhaustive, s.fisher_z), (256, true, true));
    let (a, common) = subject_matrix(&store, base, "searchlight/a/rho.npy", true).await;
    let (b, _) = subject_matrix(&store, base, "searchlight/b/rho.npy", true).await;
    let diff = a.mapv(f64::atanh) - b.mapv(f64::atanh);
    let mean = vector(&store, &join_url(base, "out/group/searchlight/a-vs-b/mean.npy")).await;
    for (e, col) in diff.columns().into_iter().enumerate() {
        let want = col.sum() / SUBJECTS as f64;
        assert!((mean[e] - want).abs() < 1e-12 || (mean[e].is_nan() && want.is_nan()), "{e}");
    }
    // edge voxels without a kept centre in some subject have no statistic, and are counted
    let t = vector(&store, &join_url(base, "out/group/searchlight/a-vs-b/t.npy")).await;
    let missing = diff.columns().into_iter().filter(|c| c.iter().any(|x| x.is_nan())).count();
    assert_eq!(s.n_missing, missing);
    assert_eq!(t.iter().filter(|x| x.is_nan()).count(), missing);
    // the cluster-forming p became Student's t quantile with 7 degrees of freedom, two-sided
    let u = brainfit_kernels::group::t_threshold(0.01, 7.0, Tail::TwoSided).unwrap();
    assert_eq!(s.cluster_threshold_t, Some(u));
    assert!((u - 3.4994).abs() < 1e-3, "{u}");
    // the smallest p of exhaustive flips is 1/256
    let p = vector(&store, &join_url(base, "out/group/searchlight/a-vs-b/p.npy")).await;
    let smallest = p.iter().copied().filter(|x| x.is_finite()).fold(1.0, f64::min);
    assert!(smallest >= 1.0 / 256.0);
    assert_eq!(common.len(), t.len());
}

/// Subject 5's mask image, as written.
async fn subject5_mask(store: &Store, base: &str) -> Array3<f32> {
    let m = load_mask(store, &join_url(base, "mask5.nii.gz")).await.unwrap();
    let mut out = Array3::<f32>::zeros(SHAPE);
    m.voxels.iter().for_each(|v| out[*v] = 1.0);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_mistakes_are_refused_before_any_task() {
    let store = Store::new();
    let base = "memory://group/mistakes";
    write_group_study(&store, base).await;
    // subject 5's mask on another grid: shifted by one voxel
    let mut shifted = AFFINE;
    shifted[0][3] += 3.0;
    let mask = subject5_mask(&store, base).await;
    store
        .put(&join_url(base, "shifted.nii.gz"), write_nifti_f32(mask.view(), &shifted, true).into())
        .await
        .unwrap();
    let ok = encoding_job("maps = [\"encoding\"]\nn = 10\n");
    let cases: Vec<(String, &str)> = vec![
        (
            ok.replace("mask5.nii.gz", "shifted.nii.gz"),
            "shifted.nii.gz: [group] needs every mask on one grid",
        ),
        (ok.replace("maps = [\"encoding\"]", "maps = [\"encodings\"]"), "is not \"encoding\""),
        (
            ok.replace("maps = [\"encoding\"]", "maps = [\"encoding/c\"]"),
            "encoding/c is not a map of the job (it has a, b)",
        ),
        (
            ok.replace("maps = [\"encoding\"]", "maps = [\"searchlight\"]"),
            "\"searchlight\" needs [searchlight]",
        ),
        (
            ok.replace("maps = [\"encoding\"]", "maps = [\"split\"]"),
            "\"split\" needs [encoding] model = \"banded_ridge\"",
        ),
        (ok.replace("maps = [\"encoding\"]", "maps = [\"roi_rsa\"]"), "\"roi_rsa\" needs [rsa]"),
        (ok.replace("n = 10", "n = 10\nfisher_z = true"), "no tested map is a correlation"),
        (ok.replace("n = 10", "n = 10\ntest = \"paired\""), "needs pairs"),
        (
            ok.replace("n = 10", "n = 10\ntest = \"paired\"\npairs = [[\"a\", \"c\"]]"),
            "[\"a\", \"c\"] are not two maps",
        ),
        (ok.replace("n = 10", "n = 10\ncluster_p = 2"), "cluster_p must be in (0, 1)"),
        (ok.replace("n = 10", "n = 0"), "n must be 1 to"),
        (ok.replace("n = 10", "n = 10\nconnectivity = 4"), "connectivity must be 6, 18 or 26"),
        (ok.replace("name = \"s3\"", "name = \"group\""), "the name is taken by the output"),
        (
            ok.replace(
                "name = \"s2\"\ndata = { brain = \"brain2.npy\", mask = \"mask2.nii.gz\", groups = \"runs.npy\" }\n",
                "name = \"s2\"\ndata = { brain = \"brain2.npy\", mask = \"mask2.nii.gz\", groups = \"runs.npy\" }\nfeatures = { c = \"a.npy\" }\n",
            )
            .replace("maps = [\"encoding\"]", "maps = [\"encoding/c\"]"),
            "[group] encoding/c is not a map of s0: subjects must share the maps tested",
        ),
        (
            ok.replace("n = 10", "n = 10\nmask = \"shifted.nii.gz\""),
            "shifted.nii.gz: [group] needs every mask on one grid",
        ),
    ];
    for (job, message) in cases {
        let e = common::run_embedded(&store, base, &job, 1).await.unwrap_err();
        assert!(e.contains(message), "expected {message:?} in: {e}");
    }
    // one subject is no group
    let single = "name = \"one\"\noutput = \"out\"\n[data]\nbrain = \"brain0.npy\"\nmask = \"mask0.nii.gz\"\n[features]\na = \"a.npy\"\n[encoding]\n[group]\nmaps = [\"encoding\"]\n";
    let e = common::run_embedded(&store, base, single, 1).await.unwrap_err();
    assert!(e.contains("list two or more [[subjects]]"), "{e}");
    // nothing was computed: no part and no output
    assert!(store.list(&join_url(base, "out")).await.unwrap().is_empty());
    // a map only some subjects have is left out of "encoding", and said so
    let extra = ok.replace(
        "name = \"s2\"\ndata = { brain = \"brain2.npy\", mask = \"mask2.nii.gz\", groups = \"runs.npy\" }\n",
        "name = \"s2\"\ndata = { brain = \"brain2.npy\", mask = \"mask2.nii.gz\", groups = \"runs.npy\" }\nfeatures = { c = \"a.npy\" }\n",
    );
    let summary = common::run_embedded(&store, base, &extra, 2).await.unwrap();
    assert!(
        summary.warnings.iter().any(|w| w.contains("encoding/c is not a map of s0")),
        "{:?}",
        summary.warnings
    );
    assert_eq!(summary.group.keys().collect::<Vec<_>>(), ["encoding/a", "encoding/b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_courses_of_named_recordings_are_tested_over_time_with_1d_tfce() {
    let store = Store::new();
    let base = "memory://group/time";
    let (n_times, n_conditions, n_channels, recordings) = (24, 12, 8, 6);
    let window = 9..14;
    let category = |c: usize| c / 4;
    let mut model = Array2::<f64>::zeros((n_conditions, n_conditions));
    for ((i, j), v) in model.indexed_iter_mut() {
        *v = f64::from(category(i) != category(j));
    }
    let mut files = vec![("cat.npy".to_string(), write_npy(&model.view()))];
    let mut rng = Rng::new(90);
    for r in 0..recordings {
        let means: Array2<f64> = rng.normal_array((3, n_channels));
        let mut data: ndarray::Array3<f64> = rng.normal_array((n_times, n_conditions, n_channels));
        for t in window.clone() {
            for c in 0..n_conditions {
                let mut row = data.slice_mut(ndarray::s![t, c, ..]);
                row.scaled_add(1.2, &means.row(category(c)));
            }
        }
        files.push((format!("meg{r}.npy"), write_npy(&data.view())));
    }
    common::put_files(&store, base, files.iter().map(|(n, b)| (n.as_str(), b.clone()))).await;
    let data: String =
        (0..recordings).map(|r| format!("m{r} = \"meg{r}.npy\"")).collect::<Vec<_>>().join(", ");
    let job = format!(
        "name = \"meg\"\noutput = \"out\"\n[rsa]\nmodels = {{ cat = \"cat.npy\" }}\n[time_resolved]\ndata = {{ {data} }}\n[group]\nmaps = [\"time_resolved\"]\nfisher_z = true\ntail = \"greater\"\nn = 1000\ntfce = true\ncluster_threshold = 2.0\n[execution]\npermutations_per_task = 20\n"
    );
    let summary = common::run_embedded(&store, base, &job, 2).await.unwrap();
    let out = |rel: &str| join_url(base, &format!("out/{rel}"));
    // each recording's time course lies below its name
    let mut z = Array2::<f64>::zeros((recordings, n_times));
    for r in 0..recordings {
        let rho = vector(&store, &out(&format!("m{r}/time_resolved/cat/rho.npy"))).await;
        z.row_mut(r).assign(&rho.mapv(f64::atanh));
        assert!(summary.time_resolved.contains_key(&format!("m{r}/cat")));
    }
    let g = &summary.group["time_resolved/cat"];
    // 2^6 = 64 patterns: every one
    assert_eq!((g.n_subjects, g.n_flips, g.exhaustive, g.fisher_z), (recordings, 64, true, true));
    let want = brainfit_kernels::group::run(
        &OneSample::new(z.view(), 0.0).unwrap(),
        Some(&Spatial {
            topology: Topology::series(n_times),
            tfce: Some(Default::default()),
            cluster_threshold: Some(2.0),
        }),
        Tail::Greater,
        &SignFlips::new(recordings, 1000, 0).unwrap(),
    )
    .unwrap();
    for (name, want) in [("t", &want.t), ("p_tfce_fwe", want.p_fwe_tfce.as_ref().unwrap())] {
        let got = vector(&store, &out(&format!("group/time_resolved/cat/{name}.npy"))).await;
        assert_eq!(got.to_vec(), *want, "{name}");
    }
    let p = vector(&store, &out("group/time_resolved/cat/p_tfce_fwe.npy")).await;
    for t in 0..n_times {
        // the smallest p of 64 patterns is 1/64
        assert_eq!(p[t] < 0.05, window.contains(&t), "time {t}: p {}", p[t]);
    }
    let csv = String::from_utf8(
        store.get(&out("group/time_resolved/cat/clusters.csv")).await.unwrap().to_vec(),
    )
    .unwrap();
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().ends_with(",peak_t,peak_time"));
    let peak: usize = lines.next().unwrap().rsplit(',').next().unwrap().parse().unwrap();
    assert!(window.contains(&peak), "{peak}");
    // time courses have no grid: no NIfTI and no group mask
    assert!(store.size(&out("group/time_resolved/cat/t.nii.gz")).await.is_err());
    assert!(store.size(&out("group/mask.nii.gz")).await.is_err());
    let html = brainfit_client::report::build_report(&store, &join_url(base, "out")).await.unwrap();
    for needle in [
        "alt=\"time course of group t of time_resolved/cat\"",
        "alt=\"time course of m3/cat\"",
        "<th>peak_time</th>",
    ] {
        assert!(html.contains(needle), "the report lacks {needle:?}");
    }
    // one recording is no group
    let one = job.replace(&data, "m0 = \"meg0.npy\"");
    let e = common::run_embedded(&store, base, &one, 1).await.unwrap_err();
    assert!(e.contains("name two or more"), "{e}");
}

/// An ROI image on the study's grid: the voxels within `radius` of `centre`.
fn roi_image(centre: [f64; 3], radius: f64) -> Array3<f32> {
    Array3::from_shape_fn(SHAPE, |(i, j, k)| {
        let d2: f64 = [i, j, k].iter().zip(centre).map(|(&x, c)| (x as f64 - c).powi(2)).sum();
        f32::from(d2 <= radius * radius)
    })
}

/// Banded ridge's per-band split scores and ROI RSA comparisons tested across subjects: the
/// split maps are volumes (TFCE applies); the ROIs are items without neighbours (max-T only,
/// said in a warning), listed with their statistics in `table.csv`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_scores_and_roi_comparisons_are_tested_across_subjects() {
    let store = Store::new();
    let base = "memory://group/split_roi";
    write_group_study(&store, base).await;
    let rois = [("blob", roi_image(BLOB.0, 1.8)), ("far", roi_image([5.0, 5.0, 3.0], 1.8))];
    for (name, image) in &rois {
        let url = join_url(base, &format!("{name}.nii.gz"));
        store.put(&url, write_nifti_f32(image.view(), &AFFINE, true).into()).await.unwrap();
    }
    let job = format!(
        "name = \"split\"\noutput = \"out\"\n{}[features]\na = \"a.npy\"\nb = \"b.npy\"\n[encoding]\nmodel = \"banded_ridge\"\nalphas = {{ logspace = [-1, 3, 3] }}\nrandom_search = {{ n_iter = 4, concentrations = [1.0], seed = 0 }}\ncv = {{ kind = \"group\" }}\ninner_cv = {{ kind = \"kfold\", k = 3 }}\n[rsa]\nrois = {{ blob = \"blob.nii.gz\", far = \"far.nii.gz\" }}\ncompare = [\"spearman\", \"pearson\"]\n[group]\nmaps = [\"split\", \"roi_rsa/a\"]\nn = 300\ntfce = true\ntail = \"greater\"\n[execution]\npermutations_per_task = 50\n",
        subjects()
    );
    let summary = common::run_embedded(&store, base, &job, 2).await.unwrap();
    let out = |rel: &str| join_url(base, &format!("out/{rel}"));
    assert_eq!(
        summary.group.keys().collect::<Vec<_>>(),
        ["roi_rsa/a", "split/a", "split/b"],
        "{:?}",
        summary.warnings
    );
    assert!(summary.warnings.iter().any(|w| w.contains("roi_rsa: ROIs have no neighbours")));

    // split maps: the t map by its formula from the subjects' published split_<band> maps
    let n = SUBJECTS as f64;
    let t_of = |col: ndarray::ArrayView1<'_, f64>| {
        let mean = col.sum() / n;
        let sd = (col.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        mean / (sd / n.sqrt())
    };
    let (split_a, _) = subject_matrix(&store, base, "encoding/a+b/split_a.npy", false).await;
    let t = vector(&store, &out("group/split/a/t.npy")).await;
    for (e, col) in split_a.columns().into_iter().enumerate() {
        let want = t_of(col);
        assert!(
            (t[e] - want).abs() <= 1e-10 * want.abs().max(1.0),
            "voxel {e}: {} vs {want}",
            t[e]
        );
    }
    let split = &summary.group["split/a"];
    // 2^8 = 256 patterns, every one
    assert_eq!((split.n_flips, split.exhaustive), (256, true));
    assert!(in_blob(split.t.peak.as_ref().unwrap().voxel), "{:?}", split.t.peak);
    assert!(split.significant_tfce_fwe_05.unwrap() > 0);
    assert!(store.size(&out("group/split/a/tfce.nii.gz")).await.is_ok());

    // ROI comparisons: each subject's spearman value of model a per ROI, from its compare.csv
    let mut values = Array2::<f64>::zeros((SUBJECTS, rois.len()));
    for s in 0..SUBJECTS {
        let csv = String::from_utf8(
            store.get(&out(&format!("s{s}/rsa/compare.csv"))).await.unwrap().to_vec(),
        )
        .unwrap();
        for line in csv.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            if f[1] == "a" && f[2] == "spearman" {
                let r = rois.iter().position(|(name, _)| *name == f[0]).unwrap();
                values[(s, r)] = f[3].parse().unwrap();
            }
        }
    }
    let want = brainfit_kernels::group::run(
        &OneSample::new(values.view(), 0.0).unwrap(),
        None,
        Tail::Greater,
        &SignFlips::new(SUBJECTS, 300, 0).unwrap(),
    )
    .unwrap();
    for (name, want) in [("t", &want.t), ("p", &want.p), ("p_fwe", &want.p_fwe)] {
        let got = vector(&store, &out(&format!("group/roi_rsa/a/{name}.npy"))).await;
        assert_eq!(got.to_vec(), *want, "{name}");
    }
    // the blob's ROI carries the model, the far one does not
    assert!(want.p_fwe[0] < 0.05 && want.p_fwe[1] > 0.05, "{:?} {values}", want.p_fwe);
    let table =
        String::from_utf8(store.get(&out("group/roi_rsa/a/table.csv")).await.unwrap().to_vec())
            .unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "brain,mean,t,p,p_fwe");
    assert!(lines[1].starts_with(&format!(
        "blob,{:?},{:?},",
        values.column(0).sum() / n,
        want.t[0]
    )));
    assert!(lines[2].starts_with("far,"));
    // no neighbours: no TFCE, clusters or NIfTI for ROIs
    for f in ["tfce.npy", "clusters.csv", "t.nii.gz"] {
        assert!(store.size(&out(&format!("group/roi_rsa/a/{f}"))).await.is_err(), "{f}");
    }
    let roi = &summary.group["roi_rsa/a"];
    assert_eq!((roi.n_voxels, roi.significant_fwe_05, roi.significant_tfce_fwe_05), (2, 1, None));

    let html = brainfit_client::report::build_report(&store, &join_url(base, "out")).await.unwrap();
    for needle in ["<h3>Group: roi_rsa/a</h3>", "<th>p_fwe</th>", "<td>blob</td>"] {
        assert!(html.contains(needle), "the report lacks {needle:?}");
    }
}
