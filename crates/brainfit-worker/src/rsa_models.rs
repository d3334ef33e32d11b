//! The model side of a subject's RSA, built once per process and RDM method: the model RDMs
//! (given, one per feature space, one per remixed classifier), the regressors of the fitted
//! models (reweighted sets and unit weightings, each with its folds over conditions) and the
//! models a variance partition regresses on; and what a brain RDM gets from them.
//!
//! A permutation relabels the conditions of every model RDM and every regressor alike (rows
//! and columns together), so a fitted model's null refits its weights on relabelled
//! regressors: the whole cross-validation is part of the statistic.

use crate::execute::ModelInputs;
use crate::{JobContext, Result};
use brainfit_job::JobError;
use brainfit_job::plan::model_names;
use brainfit_kernels::compare::{CompareMethod, Relabeller, comparison_features};
use brainfit_kernels::logistic::LogisticCv;
use brainfit_kernels::rdm::{RdmMethod, n_conditions_from_condensed, rdm};
use brainfit_kernels::rsa_fit::{
    FoldPairs, Weighting, condition_folds, fit_weights, held_out, principal_component_scores,
    rdm_variance_partition, unit_regressors,
};
use ndarray::{Array2, ArrayView1, ArrayView2};

/// The pairs of `k` seeded folds over `n` conditions.
fn fold_pairs(n: usize, k: usize, seed: u64) -> Result<FoldPairs> {
    let folds = condition_folds(n, k, seed).map_err(JobError::from)?;
    Ok(FoldPairs::new(n, &folds).map_err(JobError::from)?)
}
use std::borrow::Cow;

/// A subject's model RDMs for one RDM method, with the fitted models' regressors.
#[derive(Debug)]
pub(crate) struct Models {
    /// Condensed RDMs, `[n_models, n_pairs]`: given, feature spaces, remixed.
    pub(crate) raw: Array2<f64>,
    /// Number of conditions.
    pub(crate) n_conditions: usize,
    /// The fitted models (reweighted sets, then unit weightings), in job order.
    pub(crate) fitted: Vec<FittedSet>,
    /// Rows of `raw` that `[rsa] partition` regresses on.
    pub(crate) partition: Vec<usize>,
}

/// One fitted model: its regressors (model RDMs, or one per unit or component) and the pairs of
/// its folds over conditions, made once for every brain RDM and permutation.
#[derive(Debug)]
pub(crate) struct FittedSet {
    /// `[n_regressors, n_pairs]`.
    pub(crate) regressors: Array2<f64>,
    /// The training and test pairs of its folds over conditions.
    pub(crate) pairs: FoldPairs,
}

impl Models {
    /// Maps per brain RDM: one per model, two per fitted model.
    pub(crate) fn n_maps(&self) -> usize {
        self.raw.nrows() + 2 * self.fitted.len()
    }

    /// Comparison features of every model, or None where they do not exist (pairwise methods,
    /// or a model RDM holding NaN): then comparisons go pairwise.
    pub(crate) fn features(&self, method: CompareMethod) -> Option<Array2<f64>> {
        let mut out = Array2::<f64>::zeros(self.raw.dim());
        for (mut o, m) in out.rows_mut().into_iter().zip(self.raw.rows()) {
            o.assign(&comparison_features(m, method).ok()?);
        }
        Some(out)
    }

    /// `rows` relabelled by each permutation of `perms`, stacked after each other:
    /// `[n_perms * n_rows, n_pairs]`.
    pub(crate) fn relabelled(
        rows: &Array2<f64>,
        n: usize,
        perms: &[Vec<usize>],
    ) -> Result<Array2<f64>> {
        let m = rows.nrows();
        let relabellers = rows
            .rows()
            .into_iter()
            .map(|row| Relabeller::new(row, n))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(JobError::from)?;
        let mut out = Array2::<f64>::zeros((perms.len() * m, rows.ncols()));
        for (k, perm) in perms.iter().enumerate() {
            for (j, relabeller) in relabellers.iter().enumerate() {
                let mut row = out.row_mut(k * m + j);
                let row = row.as_slice_mut().expect("rows of a new array are contiguous");
                relabeller.relabel_into(perm, row).map_err(JobError::from)?;
            }
        }
        Ok(out)
    }

    /// Each fitted model's regressors under the relabellings `orders`, stacked relabelling
    /// after relabelling (`[n_orders * n_regressors, n_pairs]`, one relabeller per row for
    /// all of them), or as they are, borrowed (`None`: one "relabelling", no copy).
    pub(crate) fn fitted_regressors(
        &self,
        orders: Option<&[Vec<usize>]>,
    ) -> Result<Vec<Cow<'_, Array2<f64>>>> {
        self.fitted
            .iter()
            .map(|f| match orders {
                None => Ok(Cow::Borrowed(&f.regressors)),
                Some(o) => Ok(Cow::Owned(Self::relabelled(&f.regressors, self.n_conditions, o)?)),
            })
            .collect()
    }

    /// Relabelling `j`'s regressors of every fitted model, as views into `stacked` (from
    /// [`Self::fitted_regressors`]).
    pub(crate) fn fitted_slice<'a>(
        &self,
        stacked: &'a [Cow<'_, Array2<f64>>],
        j: usize,
    ) -> Vec<ArrayView2<'a, f64>> {
        stacked
            .iter()
            .zip(&self.fitted)
            .map(|(rows, set)| {
                let k = set.regressors.nrows();
                rows.slice(ndarray::s![j * k..(j + 1) * k, ..])
            })
            .collect()
    }

    /// What brain RDM `brain` gets from the fitted models under each of `methods`
    /// (`[method][value]`), two values per fitted model: the cross-validated comparison of the
    /// reweighted regressors, and of the regressors summed with equal weights on the same
    /// held-out pairs. `regressors` are [`Self::fitted`]'s, relabelled or not; the folds are
    /// fitted once for all methods.
    pub(crate) fn fitted_values(
        &self,
        brain: ArrayView1<'_, f64>,
        regressors: &[ArrayView2<'_, f64>],
        methods: &[CompareMethod],
    ) -> Result<Vec<Vec<f64>>> {
        let mut out = vec![Vec::with_capacity(2 * self.fitted.len()); methods.len()];
        for (set, x) in self.fitted.iter().zip(regressors) {
            for weighting in [Weighting::Fitted, Weighting::Equal] {
                let held = held_out(*x, brain, &set.pairs, weighting).map_err(JobError::from)?;
                for (values, &method) in out.iter_mut().zip(methods) {
                    values.push(held.score(method).map_err(JobError::from)?);
                }
            }
        }
        Ok(out)
    }

    /// The weights of each fitted model (reweighted set, unit weighting) fitted to brain RDM
    /// `brain` on all pairs, concatenated in job order, then each one's intercept: what the
    /// cross-validated values estimate the generalisation of.
    pub(crate) fn fitted_weights(&self, brain: ArrayView1<'_, f64>) -> Result<Vec<f64>> {
        let mut weights = Vec::new();
        let mut intercepts = Vec::new();
        let all: Vec<usize> = (0..brain.len()).collect();
        for set in &self.fitted {
            let fit = fit_weights(set.regressors.view(), brain, &all).map_err(JobError::from)?;
            weights.extend(fit.weights.iter().copied());
            intercepts.push(fit.intercept);
        }
        weights.extend(intercepts);
        Ok(weights)
    }

    /// The variance partition of brain RDM `brain` over the partition models (Bankson,
    /// Hebart et al. 2018): per subset of them (in [`brainfit_job::plan::partition_names`]'
    /// order: ascending masks), the in-sample R² only that subset explains, every union fit on
    /// the same pairs. Empty without `[rsa] partition`.
    pub(crate) fn partition_values(&self, brain: ArrayView1<'_, f64>) -> Result<Vec<f64>> {
        if self.partition.is_empty() {
            return Ok(Vec::new());
        }
        let bands: Vec<[usize; 1]> = self.partition.iter().map(|&r| [r]).collect();
        let parts = rdm_variance_partition(brain, self.raw.view(), &bands);
        Ok(parts.map_err(JobError::from)?.into_iter().map(|(_, v)| v).collect())
    }

    /// Builds a subject's models for RDM `method` from their inputs.
    pub(crate) fn build(
        job: &JobContext,
        si: usize,
        method: RdmMethod,
        inputs: ModelInputs,
    ) -> Result<Models> {
        let inv = &job.inventory.subjects[si];
        let design = inputs.design.as_deref().and_then(Option::as_ref);
        // with [data] conditions, activations are averaged per condition; crossnobis estimates
        // Euclidean geometry, so the models' RDMs are Euclidean then
        let model_method =
            if method == RdmMethod::Crossnobis { RdmMethod::Euclidean } else { method };
        let per_condition = |x: &Array2<f64>| -> Result<Array2<f64>> {
            Ok(match design {
                Some(d) => d.condition_means(x.view()).map_err(JobError::from)?,
                None => x.clone(),
            })
        };
        let space_error =
            |url: &str, what: String| JobError::Input { url: url.to_string(), message: what };
        let mut activations = Vec::new();
        let mut rows = inputs.given;
        for ((space, _), x) in inv.spaces.iter().zip(&inputs.spaces) {
            let x = per_condition(x)?;
            let d = rdm(x.view(), model_method).map_err(|e| {
                space_error(&space.url, format!("model RDM of feature space {}: {e}", space.name))
            })?;
            rows.push(d);
            activations.push(x);
        }
        let rsa = job.spec.rsa.as_ref();
        let space_index = |name: &str| {
            inv.spaces.iter().position(|(s, _)| s.name == name).ok_or_else(|| {
                JobError::Corrupt(format!("feature space {name} was checked but is missing"))
            })
        };
        // remixed models: a classifier trained on the training images' activations, its
        // decision values for the experiment's stimuli
        for ((name, remix), (train, labels)) in rsa.iter().flat_map(|r| &r.remix).zip(inputs.remix)
        {
            let cv = LogisticCv { cs: remix.cs.clone(), folds: remix.folds };
            let fit = cv
                .fit(train.view(), &labels)
                .map_err(|e| space_error(&remix.train, format!("remixed model {name}: {e}")))?;
            let stimuli = &activations[space_index(&remix.space)?];
            let decision = fit.model.decision_function(stimuli.view()).map_err(JobError::from)?;
            rows.push(rdm(decision.view(), model_method).map_err(|e| {
                space_error(&remix.train, format!("remixed model {name}'s RDM: {e}"))
            })?);
        }
        let n_pairs = rows.first().map_or(0, ndarray::ArrayBase::len);
        let names = model_names(&job.spec, inv);
        let n_conditions = n_conditions_from_condensed(n_pairs).map_err(JobError::from)?;
        let mut raw = Array2::<f64>::zeros((rows.len(), n_pairs));
        for (i, r) in rows.iter().enumerate() {
            if r.len() != n_pairs {
                return Err(JobError::Corrupt(format!(
                    "model {} has {} pairs, expected {n_pairs}",
                    names[i],
                    r.len()
                ))
                .into());
            }
            raw.row_mut(i).assign(r);
        }
        let row_of = |name: &String| {
            names.iter().position(|n| n == name).ok_or_else(|| {
                JobError::Corrupt(format!("model {name} was checked but is missing"))
            })
        };
        let mut fitted = Vec::new();
        for set in rsa.iter().flat_map(|r| r.reweight.values()) {
            let chosen = set.models.iter().map(row_of).collect::<std::result::Result<Vec<_>, _>>();
            let regressors = raw.select(ndarray::Axis(0), &chosen?);
            fitted.push(FittedSet {
                regressors,
                pairs: fold_pairs(n_conditions, set.folds, set.seed)?,
            });
        }
        for (name, unit) in rsa.iter().flat_map(|r| &r.unit_weighting) {
            let x = &activations[space_index(&unit.space)?];
            let x = match unit.components {
                Some(k) => principal_component_scores(x.view(), k)
                    .map_err(|e| JobError::Corrupt(format!("unit weighting {name}: {e}")))?,
                None => x.clone(),
            };
            let pairs = fold_pairs(n_conditions, unit.folds, unit.seed)?;
            fitted.push(FittedSet { regressors: unit_regressors(x.view()), pairs });
        }
        let partition = rsa
            .map(|r| r.partition.iter().map(row_of).collect::<std::result::Result<Vec<_>, _>>())
            .transpose()?
            .unwrap_or_default();
        Ok(Models { raw, n_conditions, fitted, partition })
    }
}
