//! Preprocessing applied before fitting: FIR delays and per-run z-scoring.
//!
//! Delays shift copies of the features in time, zero-filled, and never reach across a run
//! boundary: the usual `Delayer` shifts the concatenated time series, so the end of one run leaks
//! into the start of the next. Runs are the maximal contiguous stretches of one group label.

use crate::{KernelError, Real, Result};
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis};

/// Start and end (exclusive) of each maximal contiguous stretch of equal group labels.
pub fn run_segments(n: usize, groups: Option<&[i64]>) -> Vec<(usize, usize)> {
    let Some(g) = groups else {
        return if n == 0 { vec![] } else { vec![(0, n)] };
    };
    let mut segments = Vec::new();
    let mut start = 0;
    for i in 1..=n {
        if i == n || g[i] != g[start] {
            segments.push((start, i));
            start = i;
        }
    }
    segments
}

/// Length of the longest run ([`run_segments`]); 0 for no samples.
pub fn longest_run(n: usize, groups: Option<&[i64]>) -> usize {
    run_segments(n, groups).iter().map(|(start, end)| end - start).max().unwrap_or(0)
}

/// FIR-delayed features: `[n, p]` -> `[n, p * delays.len()]`, block `d` holding `x` shifted by
/// `delays[d]` samples (positive = the past predicts the present), zero-filled at run edges.
pub fn delay<T: Real>(
    x: ArrayView2<'_, T>,
    delays: &[i64],
    groups: Option<&[i64]>,
) -> Result<Array2<T>> {
    let (n, p) = x.dim();
    if delays.is_empty() {
        return Err(KernelError::Parameter("delays must not be empty".into()));
    }
    if let Some(g) = groups
        && g.len() != n
    {
        return Err(KernelError::Shape(format!("{} group labels for {n} samples", g.len())));
    }
    let mut out = Array2::<T>::zeros((n, p * delays.len()));
    for (start, end) in run_segments(n, groups) {
        for (d, &lag) in delays.iter().enumerate() {
            for t in start..end {
                let src = t as i64 - lag;
                if src >= start as i64 && src < end as i64 {
                    let src = src as usize;
                    out.slice_mut(ndarray::s![t, d * p..(d + 1) * p]).assign(&x.row(src));
                }
            }
        }
    }
    Ok(out)
}

/// Z-scores each column within each group label (population standard deviation, as
/// `scipy.stats.zscore`). A column constant within a group becomes 0 there.
pub fn zscore_per_group<T: Real>(mut x: ArrayViewMut2<'_, T>, groups: &[i64]) -> Result<()> {
    let n = x.nrows();
    if groups.len() != n {
        return Err(KernelError::Shape(format!("{} group labels for {n} samples", groups.len())));
    }
    let labels: std::collections::BTreeSet<i64> = groups.iter().copied().collect();
    for label in labels {
        let rows: Vec<usize> = (0..n).filter(|&i| groups[i] == label).collect();
        for mut col in x.axis_iter_mut(Axis(1)) {
            let m = rows.len() as f64;
            let mean = rows.iter().map(|&i| col[i].as_f64()).sum::<f64>() / m;
            let var = rows.iter().map(|&i| (col[i].as_f64() - mean).powi(2)).sum::<f64>() / m;
            let sd = var.sqrt();
            for &i in &rows {
                let centred = col[i].as_f64() - mean;
                col[i] = T::from_f64(if sd > 0.0 { centred / sd } else { 0.0 });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn delays_do_not_cross_runs() {
        let x = array![[1.0f64], [2.0], [3.0], [4.0], [5.0]];
        let g = [0, 0, 0, 1, 1];
        let d = delay(x.view(), &[0, 1, 2, -1], Some(&g)).unwrap();
        assert_eq!(d.column(0).to_vec(), vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(d.column(1).to_vec(), vec![0.0, 1.0, 2.0, 0.0, 4.0]);
        assert_eq!(d.column(2).to_vec(), vec![0.0, 0.0, 1.0, 0.0, 0.0]);
        assert_eq!(d.column(3).to_vec(), vec![2.0, 3.0, 0.0, 5.0, 0.0]);
        let whole = delay(x.view(), &[1], None).unwrap();
        assert_eq!(whole.column(0).to_vec(), vec![0.0, 1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn zscore_within_groups() {
        let mut x = array![[1.0f32, 7.0], [3.0, 7.0], [10.0, 1.0], [20.0, 3.0]];
        zscore_per_group(x.view_mut(), &[0, 0, 1, 1]).unwrap();
        assert_eq!(x, array![[-1.0, 0.0], [1.0, 0.0], [-1.0, -1.0], [1.0, 1.0]]);
    }
}
