//! Kernel benchmarks (criterion): `cargo bench`. Figures are for comparing builds and backends
//! on one machine; tests never assert timings.

use brainfit_kernels::cv::{CvScheme, split};
use brainfit_kernels::linalg::Backend;
use brainfit_kernels::ridge::{NestedCv, RidgeSpec};
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
    let spec = RidgeSpec::new(brainfit_job_free_logspace(), true, ScoreKind::R2).unwrap();
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

criterion_group!(benches, ridge);
criterion_main!(benches);
