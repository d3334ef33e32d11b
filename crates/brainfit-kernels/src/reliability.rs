//! Noise ceilings for encoding from repeated measurements: how much of a voxel's response is
//! reproducible at all, and so how high a held-out score could go.
//!
//! The measurements are split into two halves (even- and odd-numbered, in the order given),
//! each averaged; the split-half reliability of a voxel is the Pearson correlation `r` of the
//! two halves over samples, and the Spearman–Brown prophecy formula steps it up to the
//! reliability of the average of both halves, `ρ = 2r / (1 + r)` (Spearman 1910; Brown 1910):
//! the fraction of the averaged data's variance that is reproducible signal. A model that
//! predicted the signal perfectly would reach `R² = ρ` and `r = √ρ` on the averaged data, so
//! these are the ceilings the scores are divided by ([`normalised_score`]).

use crate::score::ScoreKind;
use crate::{KernelError, Real, Result};
use ndarray::{Array1, Array2, ArrayView2, Zip};

/// Spearman–Brown-corrected split-half reliability per column (voxel) of `repeats` (each
/// `[n_samples, n_voxels]`, at least two): NaN where a half is constant over samples.
pub fn split_half_ceiling<T: Real>(repeats: &[ArrayView2<'_, T>]) -> Result<Array1<f64>> {
    let first = repeats.first().ok_or_else(|| {
        KernelError::Parameter("a split-half ceiling needs at least two measurements".into())
    })?;
    if repeats.len() < 2 {
        return Err(KernelError::Parameter(
            "a split-half ceiling needs at least two measurements".into(),
        ));
    }
    let dim = first.dim();
    if let Some(r) = repeats.iter().find(|r| r.dim() != dim) {
        return Err(KernelError::Shape(format!(
            "repeated measurements of shapes {dim:?} and {:?}",
            r.dim()
        )));
    }
    let half = |parity: usize| {
        let members: Vec<&ArrayView2<'_, T>> = repeats.iter().skip(parity).step_by(2).collect();
        let mut sum = Array2::<f64>::zeros(dim);
        for m in &members {
            Zip::from(&mut sum).and(*m).for_each(|s, &x| *s += x.as_f64());
        }
        sum / members.len() as f64
    };
    let (a, b) = (half(0), half(1));
    Ok(Zip::from(a.columns()).and(b.columns()).map_collect(|a, b| {
        let (ma, mb) = (a.mean().unwrap_or(f64::NAN), b.mean().unwrap_or(f64::NAN));
        let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
        for (&x, &y) in a.iter().zip(b) {
            ab += (x - ma) * (y - mb);
            aa += (x - ma) * (x - ma);
            bb += (y - mb) * (y - mb);
        }
        let r = ab / (aa * bb).sqrt();
        2.0 * r / (1.0 + r)
    }))
}

/// The smallest ceiling a score is normalised by.
pub const MIN_CEILING: f64 = 0.1;

/// Whether a voxel's ceiling `ρ`, from `n_samples` samples, is reliable enough to normalise
/// by: `ρ >= MIN_CEILING` and the split-half correlation `r = ρ / (2 − ρ)` significantly
/// positive (one-sided p < 0.05 by Fisher's z: `atanh(r) · √(n − 3) > 1.645`). With few
/// samples, noise voxels reach a ceiling of 0.1 by chance; the test keeps most of them out.
pub fn is_reliable(ceiling: f64, n_samples: usize) -> bool {
    if ceiling.is_nan() || ceiling < MIN_CEILING || n_samples < 4 {
        return false;
    }
    let r = ceiling / (2.0 - ceiling);
    r.min(1.0 - 1e-15).atanh() * ((n_samples - 3) as f64).sqrt() > 1.644_853_626_951_472_2
}

/// A held-out score as a fraction of its ceiling `ρ`: `score / ρ` for R², `score / √ρ` for
/// Pearson's r; NaN where the ceiling is not reliable ([`is_reliable`]: an unreliable voxel
/// has no meaningful ceiling, and dividing by a small one inflates noise).
pub fn normalised_score(score: f64, ceiling: f64, kind: ScoreKind, n_samples: usize) -> f64 {
    if !is_reliable(ceiling, n_samples) {
        return f64::NAN;
    }
    match kind {
        ScoreKind::R2 => score / ceiling,
        ScoreKind::Pearson => score / ceiling.sqrt(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn matches_the_formula_on_seeded_data() {
        let mut rng = Rng::new(9);
        let signal: Array2<f64> = rng.normal_array((20_000, 5));
        // noise sd grows with the voxel: reliability falls
        let repeats: Vec<Array2<f64>> = (0..4)
            .map(|_| {
                let mut m = signal.clone();
                for (j, mut c) in m.columns_mut().into_iter().enumerate() {
                    c.iter_mut().for_each(|x| *x += (j as f64 + 0.5) * rng.normal());
                }
                m
            })
            .collect();
        let views: Vec<_> = repeats.iter().map(|r| r.view()).collect();
        let got = split_half_ceiling(&views).unwrap();
        for j in 0..5 {
            // naive: halves {0, 2} and {1, 3}, Pearson r, Spearman–Brown
            let a: Vec<f64> =
                (0..20_000).map(|i| (repeats[0][(i, j)] + repeats[2][(i, j)]) / 2.0).collect();
            let b: Vec<f64> =
                (0..20_000).map(|i| (repeats[1][(i, j)] + repeats[3][(i, j)]) / 2.0).collect();
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            let (ma, mb) = (mean(&a), mean(&b));
            let cov: f64 = a.iter().zip(&b).map(|(x, y)| (x - ma) * (y - mb)).sum();
            let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
            let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
            let r = cov / (va * vb).sqrt();
            assert!((got[j] - 2.0 * r / (1.0 + r)).abs() < 1e-12);
            // and the truth: signal variance 1 against noise (j + 0.5)² / 4 in the average
            let truth = 1.0 / (1.0 + (j as f64 + 0.5).powi(2) / 4.0);
            assert!((got[j] - truth).abs() < 0.05, "voxel {j}: {} vs {truth}", got[j]);
        }
        assert!(got[0] > got[4]);
    }

    #[test]
    fn constant_halves_bad_shapes_and_thresholds() {
        let a = Array2::<f32>::ones((10, 2));
        let got = split_half_ceiling(&[a.view(), a.view()]).unwrap();
        assert!(got.iter().all(|v| v.is_nan()));
        assert!(split_half_ceiling(&[a.view()]).is_err());
        let b = Array2::<f32>::ones((9, 2));
        assert!(split_half_ceiling(&[a.view(), b.view()]).is_err());
        assert_eq!(normalised_score(0.2, 0.5, ScoreKind::R2, 1000), 0.4);
        assert_eq!(normalised_score(0.2, 0.25, ScoreKind::Pearson, 1000), 0.4);
        assert!(normalised_score(0.2, 0.05, ScoreKind::R2, 10_000).is_nan(), "below 0.1");
        assert!(normalised_score(0.2, f64::NAN, ScoreKind::R2, 100).is_nan());
        // ρ = 0.2 is r = 1/9: significant with 1,000 samples, not with 50
        assert!(is_reliable(0.2, 1000) && !is_reliable(0.2, 50));
        assert!(is_reliable(1.0, 10) && !is_reliable(0.9, 3));
    }
}
