//! Cross-validation splits, exactly as scikit-learn makes them.
//!
//! `KFold` is scikit-learn's unshuffled `KFold`: contiguous test folds, the first `n % k` folds
//! one sample larger. `LeaveOneGroupOut` holds out each group (run) in ascending label order.
//! Inner splits are made the same way on the positions of an outer training part.

use crate::{KernelError, Result};
use std::collections::BTreeSet;

/// How samples are split into training and test parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CvScheme {
    /// `k` contiguous folds (scikit-learn's `KFold(k, shuffle=False)`).
    KFold {
        /// Number of folds, at least 2.
        k: usize,
    },
    /// Each distinct group label is one test fold (scikit-learn's `LeaveOneGroupOut`).
    LeaveOneGroupOut,
}

/// One split: sample indices of the training and test parts, each ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fold {
    /// Training sample indices.
    pub train: Vec<usize>,
    /// Test sample indices.
    pub test: Vec<usize>,
}

/// Splits `n` samples (with optional per-sample `groups`) into folds.
pub fn split(scheme: CvScheme, n: usize, groups: Option<&[i64]>) -> Result<Vec<Fold>> {
    if let Some(g) = groups
        && g.len() != n
    {
        return Err(KernelError::Shape(format!("{} group labels for {n} samples", g.len())));
    }
    let folds: Vec<Vec<usize>> = match scheme {
        CvScheme::KFold { k } => {
            if k < 2 {
                return Err(KernelError::CrossValidation(format!("kfold needs k >= 2, got {k}")));
            }
            if k > n {
                return Err(KernelError::CrossValidation(format!(
                    "kfold with k = {k} needs at least {k} samples, got {n}"
                )));
            }
            let mut start = 0;
            (0..k)
                .map(|i| {
                    let size = n / k + usize::from(i < n % k);
                    let test: Vec<usize> = (start..start + size).collect();
                    start += size;
                    test
                })
                .collect()
        }
        CvScheme::LeaveOneGroupOut => {
            let g = groups.ok_or_else(|| {
                KernelError::CrossValidation("leave-one-group-out needs group labels".into())
            })?;
            let labels: BTreeSet<i64> = g.iter().copied().collect();
            if labels.len() < 2 {
                return Err(KernelError::CrossValidation(format!(
                    "leave-one-group-out needs at least 2 groups, got {}",
                    labels.len()
                )));
            }
            labels.iter().map(|&l| (0..n).filter(|&i| g[i] == l).collect()).collect()
        }
    };
    Ok(folds
        .into_iter()
        .map(|test| {
            let mut in_test = vec![false; n];
            test.iter().for_each(|&i| in_test[i] = true);
            let train = (0..n).filter(|&i| !in_test[i]).collect();
            Fold { train, test }
        })
        .collect())
}

/// Inner folds of an outer training part, as indices into the full sample axis.
pub fn split_within(
    scheme: CvScheme,
    outer_train: &[usize],
    groups: Option<&[i64]>,
) -> Result<Vec<Fold>> {
    let sub_groups: Option<Vec<i64>> = groups.map(|g| outer_train.iter().map(|&i| g[i]).collect());
    let folds = split(scheme, outer_train.len(), sub_groups.as_deref())?;
    let map = |v: Vec<usize>| v.into_iter().map(|i| outer_train[i]).collect();
    Ok(folds.into_iter().map(|f| Fold { train: map(f.train), test: map(f.test) }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kfold_sizes_match_scikit_learn() {
        // sklearn: KFold(3).split(range(10)) -> test [0..4), [4..7), [7..10)
        let f = split(CvScheme::KFold { k: 3 }, 10, None).unwrap();
        assert_eq!(f[0].test, vec![0, 1, 2, 3]);
        assert_eq!(f[1].test, vec![4, 5, 6]);
        assert_eq!(f[2].test, vec![7, 8, 9]);
        assert_eq!(f[1].train, vec![0, 1, 2, 3, 7, 8, 9]);
        // one-sample folds
        let f = split(CvScheme::KFold { k: 4 }, 4, None).unwrap();
        assert!(f.iter().all(|f| f.test.len() == 1 && f.train.len() == 3));
    }

    #[test]
    fn groups_in_ascending_label_order() {
        let g = [5, 5, 1, 1, 3, 5];
        let f = split(CvScheme::LeaveOneGroupOut, 6, Some(&g)).unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].test, vec![2, 3]);
        assert_eq!(f[2].test, vec![0, 1, 5]);
        let inner = split_within(CvScheme::LeaveOneGroupOut, &f[0].train, Some(&g)).unwrap();
        assert_eq!(inner[0].test, vec![4]);
        assert_eq!(inner[1].train, vec![4]);
    }

    #[test]
    fn bad_splits_are_errors() {
        assert!(split(CvScheme::KFold { k: 1 }, 10, None).is_err());
        assert!(split(CvScheme::KFold { k: 11 }, 10, None).is_err());
        assert!(split(CvScheme::LeaveOneGroupOut, 3, None).is_err());
        assert!(split(CvScheme::LeaveOneGroupOut, 3, Some(&[1, 1, 1])).is_err());
        assert!(split(CvScheme::LeaveOneGroupOut, 3, Some(&[1, 2])).is_err());
    }
}
