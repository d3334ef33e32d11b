//! Held-out scores per voxel: R² and Pearson r, accumulated in f64.
//!
//! A voxel whose test part is constant has no defined score: both return NaN there (scikit-learn
//! would force R² to 0 or 1; brainfit reports that the score is undefined).

use crate::Real;
use ndarray::{Array1, ArrayView2, Zip};

/// Which held-out score to report (job-file spellings `"r2"`, `"pearson"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreKind {
    /// `1 - SS_res / SS_tot`, SS_tot around the test part's own mean.
    R2,
    /// Pearson correlation between prediction and truth.
    Pearson,
}

/// Score of each column of `pred` against the same column of `truth`.
pub fn score_columns<T: Real>(
    kind: ScoreKind,
    truth: ArrayView2<'_, T>,
    pred: ArrayView2<'_, f64>,
) -> Array1<f64> {
    assert_eq!(truth.dim(), pred.dim());
    let n = truth.nrows() as f64;
    let mut out = Array1::<f64>::zeros(truth.ncols());
    Zip::from(&mut out).and(truth.columns()).and(pred.columns()).for_each(|o, y, p| {
        let my = y.iter().map(|v| v.as_f64()).sum::<f64>() / n;
        let ss_tot: f64 = y.iter().map(|v| (v.as_f64() - my).powi(2)).sum();
        *o = match kind {
            ScoreKind::R2 => {
                let ss_res: f64 =
                    y.iter().zip(p.iter()).map(|(v, q)| (v.as_f64() - q).powi(2)).sum();
                if ss_tot > 0.0 { 1.0 - ss_res / ss_tot } else { f64::NAN }
            }
            ScoreKind::Pearson => {
                let mp = p.sum() / n;
                let ss_p: f64 = p.iter().map(|q| (q - mp).powi(2)).sum();
                let cross: f64 =
                    y.iter().zip(p.iter()).map(|(v, q)| (v.as_f64() - my) * (q - mp)).sum();
                if ss_tot > 0.0 && ss_p > 0.0 { cross / (ss_tot * ss_p).sqrt() } else { f64::NAN }
            }
        };
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn r2_and_pearson_by_hand() {
        let y = array![[1.0f64, 2.0], [2.0, 2.0], [3.0, 2.0]];
        let p = array![[1.5, 0.0], [2.0, 1.0], [2.5, 2.0]];
        let r2 = score_columns(ScoreKind::R2, y.view(), p.view());
        assert!((r2[0] - (1.0 - 0.5 / 2.0)).abs() < 1e-15);
        assert!(r2[1].is_nan(), "constant truth has no R²");
        let r = score_columns(ScoreKind::Pearson, y.view(), p.view());
        assert!((r[0] - 1.0).abs() < 1e-15);
        assert!(r[1].is_nan());
    }
}
