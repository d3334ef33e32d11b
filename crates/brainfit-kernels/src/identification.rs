//! Identification from decoded feature vectors (Horikawa & Kamitani 2017; Kay et al. 2008):
//! is the feature vector predicted from a test stimulus's brain response closer (by Pearson
//! correlation over feature units) to that stimulus's true feature vector than to the other
//! test stimuli's?
//!
//! Decoding tasks are sharded by feature units, so no task sees whole vectors. The
//! correlations need only sums over units — of each vector, of its squares, and of the
//! products of every predicted with every true vector — which add up across shards exactly:
//! each task returns its [`IdentificationSums`], the merge adds them in task order and then
//! scores identification once.

use crate::{KernelError, Real, Result};
use ndarray::{Array1, Array2, ArrayView2, Axis};

/// Per-unit sums of one test part's predicted (`p`) and true (`t`) feature vectors,
/// `[n_test]` each, and of their products, `[n_test, n_test]` (row: predicted, column: true).
#[derive(Debug, Clone, PartialEq)]
pub struct IdentificationSums {
    /// Units summed over.
    pub n_units: f64,
    sum_p: Array1<f64>,
    sum_t: Array1<f64>,
    sum_pp: Array1<f64>,
    sum_tt: Array1<f64>,
    sum_pt: Array2<f64>,
}

/// Identification scores of one or more test parts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Identification {
    /// Test stimuli whose prediction correlates more with their own true vector than with
    /// any other test stimulus's (ties count as misses).
    pub top1_correct: usize,
    /// Over test stimuli, the fraction of the other test stimuli their prediction
    /// correlates less with than with their own (ties count one half), summed.
    pub pairwise_sum: f64,
    /// Test stimuli scored.
    pub n: usize,
    /// Chance of `top1_correct`, summed over test stimuli (`1 / n_test` each).
    pub top1_chance_sum: f64,
}

impl Identification {
    /// Adds another test part's scores.
    pub fn add(&mut self, other: Identification) {
        self.top1_correct += other.top1_correct;
        self.pairwise_sum += other.pairwise_sum;
        self.n += other.n;
        self.top1_chance_sum += other.top1_chance_sum;
    }

    /// Fraction identified among all test stimuli (chance: [`Identification::top1_chance`]).
    pub fn top1_accuracy(&self) -> f64 {
        self.top1_correct as f64 / self.n as f64
    }

    /// Chance level of [`Identification::top1_accuracy`].
    pub fn top1_chance(&self) -> f64 {
        self.top1_chance_sum / self.n as f64
    }

    /// Mean pairwise identification accuracy (chance 0.5).
    pub fn pairwise_accuracy(&self) -> f64 {
        self.pairwise_sum / self.n as f64
    }
}

impl IdentificationSums {
    /// The sums of predictions `pred` and truths `truth` (`[n_test, n_units]` each).
    pub fn new<T: Real>(pred: ArrayView2<'_, f64>, truth: ArrayView2<'_, T>) -> Result<Self> {
        if pred.dim() != truth.dim() {
            return Err(KernelError::Shape(format!(
                "predictions {:?} and truths {:?} differ in shape",
                pred.dim(),
                truth.dim()
            )));
        }
        let t = truth.mapv(Real::as_f64);
        Ok(IdentificationSums {
            n_units: pred.ncols() as f64,
            sum_p: pred.sum_axis(Axis(1)),
            sum_t: t.sum_axis(Axis(1)),
            sum_pp: pred.mapv(|x| x * x).sum_axis(Axis(1)),
            sum_tt: t.mapv(|x| x * x).sum_axis(Axis(1)),
            sum_pt: pred.dot(&t.t()),
        })
    }

    /// Adds the sums over another shard of units of the same test part.
    pub fn add(&mut self, other: &IdentificationSums) -> Result<()> {
        if other.sum_p.len() != self.sum_p.len() {
            return Err(KernelError::Shape("identification sums of different test parts".into()));
        }
        self.n_units += other.n_units;
        self.sum_p += &other.sum_p;
        self.sum_t += &other.sum_t;
        self.sum_pp += &other.sum_pp;
        self.sum_tt += &other.sum_tt;
        self.sum_pt += &other.sum_pt;
        Ok(())
    }

    /// Flat form for storage: `[n_units, n_test, sum_p, sum_t, sum_pp, sum_tt, sum_pt (row-major)]`.
    pub fn to_flat(&self) -> Vec<f64> {
        let mut out = vec![self.n_units, self.sum_p.len() as f64];
        for a in [&self.sum_p, &self.sum_t, &self.sum_pp, &self.sum_tt] {
            out.extend(a.iter());
        }
        out.extend(self.sum_pt.iter());
        out
    }

    /// Inverse of [`IdentificationSums::to_flat`].
    pub fn from_flat(flat: &[f64]) -> Result<Self> {
        let bad = || KernelError::Shape("malformed identification sums".into());
        let (&n_units, rest) = flat.split_first().ok_or_else(bad)?;
        let (&m, rest) = rest.split_first().ok_or_else(bad)?;
        let m = m as usize;
        if rest.len() != 4 * m + m * m {
            return Err(bad());
        }
        let part = |i: usize| Array1::from(rest[i * m..(i + 1) * m].to_vec());
        let sum_pt = Array2::from_shape_vec((m, m), rest[4 * m..].to_vec()).map_err(|_| bad())?;
        Ok(IdentificationSums {
            n_units,
            sum_p: part(0),
            sum_t: part(1),
            sum_pp: part(2),
            sum_tt: part(3),
            sum_pt,
        })
    }

    /// Pearson correlation of predicted vector `i` with true vector `j` over all units.
    pub fn correlation(&self, i: usize, j: usize) -> f64 {
        let u = self.n_units;
        let cov = self.sum_pt[(i, j)] - self.sum_p[i] * self.sum_t[j] / u;
        let var_p = self.sum_pp[i] - self.sum_p[i] * self.sum_p[i] / u;
        let var_t = self.sum_tt[j] - self.sum_t[j] * self.sum_t[j] / u;
        cov / (var_p * var_t).sqrt()
    }

    /// Identification over this test part. A NaN correlation never wins.
    pub fn identify(&self) -> Identification {
        let m = self.sum_p.len();
        let mut out =
            Identification { top1_correct: 0, pairwise_sum: 0.0, n: m, top1_chance_sum: 0.0 };
        for i in 0..m {
            let own = self.correlation(i, i);
            let (mut beaten, mut tied, mut lost) = (0usize, 0usize, false);
            for j in (0..m).filter(|&j| j != i) {
                let other = self.correlation(i, j);
                if own > other || (own.is_finite() && other.is_nan()) {
                    beaten += 1;
                } else if own == other {
                    (tied, lost) = (tied + 1, true);
                } else {
                    lost = true;
                }
            }
            if !lost && own.is_finite() {
                out.top1_correct += 1;
            }
            if m > 1 {
                out.pairwise_sum += (beaten as f64 + 0.5 * tied as f64) / (m - 1) as f64;
            }
            out.top1_chance_sum += 1.0 / m as f64;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use ndarray::s;

    fn pearson(a: &[f64], b: &[f64]) -> f64 {
        let n = a.len() as f64;
        let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
        let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
        let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
        let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
        cov / (va * vb).sqrt()
    }

    #[test]
    fn shards_add_up_to_the_whole_and_identify_like_a_naive_loop() {
        let mut rng = Rng::new(17);
        let truth: Array2<f64> = rng.normal_array((12, 50));
        let noise: Array2<f64> = rng.normal_array((12, 50));
        let pred = &truth * 0.4 + &noise; // weakly informative predictions
        let whole = IdentificationSums::new(pred.view(), truth.view()).unwrap();
        let mut sharded =
            IdentificationSums::new(pred.slice(s![.., ..17]), truth.slice(s![.., ..17])).unwrap();
        for cols in [17..30, 30..50] {
            let shard = IdentificationSums::new(
                pred.slice(s![.., cols.clone()]),
                truth.slice(s![.., cols]),
            )
            .unwrap();
            sharded.add(&IdentificationSums::from_flat(&shard.to_flat()).unwrap()).unwrap();
        }
        let mut naive = (0, 0.0);
        for i in 0..12 {
            let p = pred.row(i).to_vec();
            let own = pearson(&p, &truth.row(i).to_vec());
            assert!((sharded.correlation(i, i) - own).abs() < 1e-12);
            let others: Vec<f64> =
                (0..12).filter(|&j| j != i).map(|j| pearson(&p, &truth.row(j).to_vec())).collect();
            if others.iter().all(|&o| own > o) {
                naive.0 += 1;
            }
            naive.1 += others.iter().filter(|&&o| own > o).count() as f64 / 11.0;
        }
        for sums in [&whole, &sharded] {
            let id = sums.identify();
            assert_eq!(id.top1_correct, naive.0);
            assert!((id.pairwise_sum - naive.1).abs() < 1e-12);
            assert!((id.top1_chance() - 1.0 / 12.0).abs() < 1e-15);
        }
        assert!(whole.identify().pairwise_accuracy() > 0.7, "informative predictions identify");
    }

    #[test]
    fn perfect_and_constant_predictions() {
        let mut rng = Rng::new(3);
        let truth: Array2<f32> = rng.normal_array((6, 20));
        let exact = truth.mapv(f64::from);
        let id = IdentificationSums::new(exact.view(), truth.view()).unwrap().identify();
        assert_eq!((id.top1_correct, id.pairwise_accuracy()), (6, 1.0));
        let flat = Array2::<f64>::ones((6, 20));
        let id = IdentificationSums::new(flat.view(), truth.view()).unwrap().identify();
        assert_eq!(id.top1_correct, 0, "a constant prediction identifies nothing");
        assert!(IdentificationSums::new(flat.view(), truth.slice(s![.., ..3])).is_err());
        assert!(IdentificationSums::from_flat(&[1.0, 2.0, 0.0]).is_err());
    }
}
