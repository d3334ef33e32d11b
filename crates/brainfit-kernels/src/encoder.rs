//! One entry point for every encoding model (`[encoding] model = ...`): the spectral ones
//! (ridge, PCR, PLS), which share one decomposition per split; LASSO, which works on the
//! features themselves; and banded ridge, which fits several feature spaces jointly. The
//! worker builds an [`Encoder`] once per fit (a feature space, or bands of them) and fits it
//! to every voxel chunk and every permutation, whichever model it is.

use crate::banded::BandedRidgeCv;
use crate::cv::{CvScheme, Fold};
use crate::lasso::LassoCv;
use crate::linalg::LinalgBackend;
use crate::ridge::{NestedCv, SpectralModel, SpectralSpec, mode_prefer_larger};
use crate::score::ScoreKind;
use crate::{KernelError, Real, Result};
use ndarray::{Array1, Array2, ArrayView2, Axis};

/// Checked parameters of an encoding model.
#[derive(Debug, Clone, PartialEq)]
pub enum EncoderSpec {
    /// Ridge, PCR or PLS.
    Spectral(SpectralSpec),
    /// LASSO (scikit-learn's `Lasso` objective) over an alpha grid.
    Lasso {
        /// The alpha grid, ascending.
        alphas: Vec<f64>,
        /// Centre X and Y on each training part.
        intercept: bool,
        /// Held-out score to report.
        score: ScoreKind,
    },
    /// Banded ridge over several feature spaces: candidate band weights, each with every
    /// alpha of the grid.
    Banded {
        /// The alpha grid, ascending.
        alphas: Vec<f64>,
        /// Candidate band weights, `[n_candidates, n_bands]`, rows on the simplex.
        candidates: Array2<f64>,
        /// Centre X and Y on each training part.
        intercept: bool,
        /// Held-out score to report.
        score: ScoreKind,
    },
}

/// What an encoder's nested cross-validation gives per voxel.
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    /// Mean over outer folds of the held-out score.
    pub score: Array1<f64>,
    /// The hyperparameter (alpha, or number of components) chosen most often across outer
    /// folds, ties to the more regularised value.
    pub chosen: Array1<f64>,
    /// Banded ridge: per band, its weight (averaged over outer folds) and its share of the
    /// score (`[n_bands, n_voxels]` each; the shares sum to `score`).
    pub bands: Option<(Array2<f64>, Array2<f64>)>,
}

impl EncoderSpec {
    /// LASSO: checks the alpha grid (non-empty, finite, positive) and sorts it ascending.
    pub fn lasso(alphas: Vec<f64>, intercept: bool, score: ScoreKind) -> Result<Self> {
        let mut alphas = crate::ridge::check_alphas(alphas)?;
        alphas.dedup();
        Ok(EncoderSpec::Lasso { alphas, intercept, score })
    }

    /// The hyperparameter grid from the least to the most regularised value.
    pub fn grid(&self) -> &[f64] {
        match self {
            EncoderSpec::Spectral(s) => s.grid(),
            EncoderSpec::Lasso { alphas, .. } | EncoderSpec::Banded { alphas, .. } => alphas,
        }
    }

    /// Whether each fit centres X and Y on its training part.
    pub fn intercept(&self) -> bool {
        match self {
            EncoderSpec::Spectral(s) => s.intercept,
            EncoderSpec::Lasso { intercept, .. } | EncoderSpec::Banded { intercept, .. } => {
                *intercept
            }
        }
    }

    /// The held-out score it reports.
    pub fn score(&self) -> ScoreKind {
        match self {
            EncoderSpec::Spectral(s) => s.score,
            EncoderSpec::Lasso { score, .. } | EncoderSpec::Banded { score, .. } => *score,
        }
    }

    /// The model's job-file name.
    pub fn name(&self) -> &'static str {
        match self {
            EncoderSpec::Spectral(s) => match s.model() {
                SpectralModel::Ridge => "ridge",
                SpectralModel::Pcr => "pcr",
                SpectralModel::Pls => "pls",
            },
            EncoderSpec::Lasso { .. } => "lasso",
            EncoderSpec::Banded { .. } => "banded_ridge",
        }
    }

    /// What the grid holds: `"alpha"` (ridge, LASSO) or `"components"` (PCR, PLS); also the
    /// stem of the per-voxel map of the chosen values.
    pub fn hyperparameter(&self) -> &'static str {
        match self {
            EncoderSpec::Spectral(s) if s.model() != SpectralModel::Ridge => "components",
            _ => "alpha",
        }
    }
}

/// A fit's feature spaces prepared for nested cross-validation under one model.
#[derive(Debug, Clone)]
pub enum Encoder<T> {
    /// Ridge, PCR and PLS: every split's eigendecomposition.
    Spectral(NestedCv<T>),
    /// LASSO: the features and the splits.
    Lasso(LassoCv<T>),
    /// Banded ridge: every split's per-band blocks.
    Banded(BandedRidgeCv<T>),
}

impl<T: Real> Encoder<T> {
    /// Prepares the feature spaces `spaces` (each `[n_samples, n_features]`; exactly one
    /// except for banded ridge) for the outer folds `outer` and inner scheme `inner` under
    /// `spec`.
    pub fn new<B: LinalgBackend>(
        spaces: &[ArrayView2<'_, T>],
        outer: &[Fold],
        inner: CvScheme,
        groups: Option<&[i64]>,
        spec: &EncoderSpec,
    ) -> Result<Self> {
        let one = || match spaces {
            [x] => Ok(*x),
            _ => Err(KernelError::Parameter(format!(
                "{} fits one feature space, got {}",
                spec.name(),
                spaces.len()
            ))),
        };
        Ok(match spec {
            EncoderSpec::Spectral(s) => {
                Encoder::Spectral(NestedCv::new::<B>(one()?, outer, inner, groups, s.intercept)?)
            }
            EncoderSpec::Lasso { intercept, .. } => {
                Encoder::Lasso(LassoCv::new(one()?, outer, inner, groups, *intercept)?)
            }
            EncoderSpec::Banded { intercept, .. } => {
                Encoder::Banded(BandedRidgeCv::new::<B>(spaces, outer, inner, groups, *intercept)?)
            }
        })
    }

    /// Runs the nested cross-validation for every column of `y` (`[n_samples, n_voxels]`).
    /// `spec` must be the one the encoder was made with.
    pub fn fit<B: LinalgBackend>(
        &self,
        y: ArrayView2<'_, T>,
        spec: &EncoderSpec,
    ) -> Result<Fitted> {
        let single = |r: crate::ridge::EncodingResult| Fitted {
            score: r.score,
            chosen: r.alpha,
            bands: None,
        };
        match (self, spec) {
            (Encoder::Spectral(cv), EncoderSpec::Spectral(s)) => cv.fit::<B>(y, s).map(single),
            (Encoder::Lasso(cv), EncoderSpec::Lasso { alphas, score, .. }) => {
                cv.fit(y, alphas, *score).map(single)
            }
            (Encoder::Banded(cv), EncoderSpec::Banded { alphas, candidates, score, .. }) => {
                let r = cv.fit::<B>(y, candidates.view(), alphas, *score)?;
                let index = |a: f64| alphas.iter().position(|&g| g == a).expect("a grid alpha");
                let chosen = r
                    .fold_alpha
                    .axis_iter(Axis(1))
                    .map(|folds| {
                        alphas[mode_prefer_larger(folds.iter().map(|&a| index(a)), alphas.len())]
                    })
                    .collect();
                Ok(Fitted { score: r.score, chosen, bands: Some((r.gamma, r.split_score)) })
            }
            _ => Err(KernelError::Parameter(format!(
                "an encoder prepared for another model cannot fit {}",
                spec.name()
            ))),
        }
    }
}
