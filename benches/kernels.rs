//! Kernel benchmarks (criterion): `cargo bench`. Figures are for comparing builds and backends
//! on one machine; tests never assert timings.

use brainfit_kernels::cv::{CvScheme, split};
use brainfit_kernels::linalg::Backend;
use brainfit_kernels::ridge::{NestedCv, SpectralSpec};
use brainfit_kernels::rng::Rng;
use brainfit_kernels::score::ScoreKind;
use criterion::{Criterion, criterion_group, criterion_main};
use ndarray::Array2;

fn ridge(c: &mut Criterion) {
    let mut rng = Rng::new(1);
    let (n, p, v) = (300, 100, 2048);
    let x: Array2<f32> = rng.normal_array((n, p));
    let y: Array2<f32> = rng.normal_array((n, v));
    let outer = split(CvScheme::KFold { k: 5 }, n, None).unwrap();
    let spec = SpectralSpec::ridge(brainfit_job_free_logspace(), true, ScoreKind::R2).unwrap();
    let mut group = c.benchmark_group("ridge");
    group.sample_size(10);
    group.bench_function("decompose 300x100, 5x5 folds", |b| {
        b.iter(|| {
            NestedCv::new::<Backend>(x.view(), &outer, CvScheme::KFold { k: 5 }, None, true)
                .unwrap()
        })
    });
    let cv =
        NestedCv::new::<Backend>(x.view(), &outer, CvScheme::KFold { k: 5 }, None, true).unwrap();
    group.bench_function("fit 2048 voxels, 15 alphas", |b| {
        b.iter(|| cv.fit::<Backend>(y.view(), &spec).unwrap())
    });
    group.finish();
}

fn brainfit_job_free_logspace() -> Vec<f64> {
    (0..15).map(|i| 10f64.powf(-2.0 + 0.5 * i as f64)).collect()
}

fn searchlight(c: &mut Criterion) {
    use brainfit_kernels::compare::{CompareMethod, comparison_features};
    use brainfit_kernels::rdm::{RdmMethod, rdm};
    use brainfit_kernels::searchlight::{searchlight, spheres};
    let mut rng = Rng::new(2);
    // a 12x12x12 box: 1,728 centres, radius-3 spheres of up to 123 voxels, 92 conditions
    let voxels: Vec<[usize; 3]> =
        (0..12).flat_map(|i| (0..12).flat_map(move |j| (0..12).map(move |k| [i, j, k]))).collect();
    let hoods = spheres(&voxels, [12, 12, 12], 3.0, [1.0; 3], 1).unwrap();
    let data: Array2<f32> = rng.normal_array((92, voxels.len()));
    let patterns: Array2<f64> = rng.normal_array((92, 20));
    let model = rdm(patterns.view(), RdmMethod::Euclidean).unwrap();
    let raw = model.clone().insert_axis(ndarray::Axis(0));
    let features = comparison_features(model.view(), CompareMethod::Spearman)
        .unwrap()
        .insert_axis(ndarray::Axis(0));
    let mut group = c.benchmark_group("searchlight");
    group.sample_size(10);
    group.bench_function("1728 centres, 92 conditions, radius 3, spearman", |b| {
        b.iter(|| {
            searchlight::<f32, Backend>(
                data.view(),
                &hoods,
                0..hoods.len(),
                RdmMethod::Correlation,
                features.view(),
                raw.view(),
                CompareMethod::Spearman,
            )
            .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, ridge, searchlight);
criterion_main!(benches);
