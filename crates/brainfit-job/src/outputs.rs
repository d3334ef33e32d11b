//! The output: where every artefact lies ([`layout`]), and staging, so that a run's results
//! become visible together, at the end.
//!
//! The merge writes every output into `output/.brainfit/runs/<id>/staged/` (same relative
//! layout), and only when all of them are written does [`StagedOutputs::publish`] move them
//! into `output`: first the earlier run's `summary.json` is removed (from then on the output
//! is marked incomplete), then every staged object is moved into place, `summary.json` last.
//! A run that fails or is cancelled before publishing leaves the earlier complete run
//! untouched; a coordinator killed while publishing redoes the merge and the publication on
//! restart (both are deterministic), so the output ends complete and byte-identical.
//!
//! Moves are renames on a local file system and copies plus deletes on object stores, so
//! publishing takes one short request per output rather than a rewrite of the data.

use crate::{JobError, Result};
use brainfit_io::{Store, join_url};
use bytes::Bytes;

pub use layout::SUMMARY;

/// Every path of the output layout (DESIGN.md), relative to `output` — or to `output/<subject>/`
/// for a subject's results, through [`crate::JobSpec::output_url`], which checks each name
/// again. Nothing else in brainfit spells an output path.
pub mod layout {
    /// The completion marker, at the root of `output`.
    pub const SUMMARY: &str = "summary.json";
    /// What the output's root holds besides the subjects' folders: no subject may take
    /// these names.
    pub const ROOT_NAMES: [&str; 9] = [
        SUMMARY,
        "report.html",
        ".brainfit",
        "rsa",
        "time_resolved",
        "cross_temporal",
        "features",
        "compress",
        "group",
    ];
    /// ROI RSA: every comparison, one row each.
    pub const RSA_COMPARE: &str = "rsa/compare.csv";
    /// The lock object of the output directory.
    pub const LOCK: &str = ".brainfit/lock.json";

    /// Encoding with several feature spaces: each voxel's best space, as a label (1 + its
    /// index in [`BEST_SPACE_LABELS`]; 0 where no space has a finite score), `.npy` and NIfTI.
    pub const BEST_SPACE: &str = "encoding/best_space";
    /// ... the winning score per voxel, `.npy` and NIfTI.
    pub const BEST_SCORE: &str = "encoding/best_score";
    /// ... the labels' feature spaces, `label,space,n_voxels` (voxels each space wins).
    pub const BEST_SPACE_LABELS: &str = "encoding/best_space_labels.csv";
    /// ... the mean score of each feature space in each ROI, `roi,space,n_voxels,mean_score`.
    pub const PROFILE: &str = "encoding/profile.csv";
    /// Banded ridge with `partition`: the variance partition of `bands` (names joined by `+`):
    /// the R² only those bands share (a single band's: its unique R²).
    pub fn partition(bands: &str) -> String {
        format!("encoding/partition/{bands}")
    }
    /// Decoding: identification accuracy per source and feature space.
    pub const DECODING_IDENTIFICATION: &str = "decoding/identification.csv";
    /// With `[data] repeats`: the split-half noise ceiling per voxel, `.npy` and NIfTI.
    pub const CEILING: &str = "encoding/ceiling";
    /// The files directly below `encoding/`, which no feature space may take as its name.
    pub const ENCODING_FILES: [&str; 9] = [
        "partition",
        "ceiling.npy",
        "ceiling.nii.gz",
        "best_space.npy",
        "best_space.nii.gz",
        "best_score.npy",
        "best_score.nii.gz",
        "best_space_labels.csv",
        "profile.csv",
    ];

    /// `[group]` (at the output's root): the group mask, the voxels every group `.npy` map
    /// lists, in order.
    pub const GROUP_MASK: &str = "group/mask.nii.gz";

    /// `[group]`: the directory of the test with key `key` (`<analysis>/<map>`, or
    /// `best_score`), as `summary.json` keys it.
    pub fn group_test(key: &str) -> String {
        format!("group/{key}")
    }

    /// ROI RSA over several subjects (at the output's root): per ROI, model and method, the
    /// subjects' mean comparison and the ROI's noise ceiling.
    pub const RSA_GROUP: &str = "rsa/group.csv";
    /// ROI RSA with fitted models: `brain,fitted,regressor,weight`, fitted on all pairs.
    pub const RSA_WEIGHTS: &str = "rsa/weights.csv";
    /// ROI RSA with `[rsa] partition`: `brain,partition,r2`.
    pub const RSA_PARTITION: &str = "rsa/partition.csv";

    /// `[rsa] partition` in searchlight or time-resolved RSA (`analysis`): the map of one
    /// subset of the models (names joined by `+`).
    pub fn rsa_partition(analysis: &str, subset: &str) -> String {
        format!("{analysis}/partition/{subset}")
    }

    /// A fitted model's weight of one regressor per searchlight centre or time point
    /// (`analysis`), fitted on all pairs, beside the fitted model's comparison map.
    pub fn rsa_weight(analysis: &str, fitted: &str, regressor: &str) -> String {
        format!("{analysis}/{fitted}/weight_{regressor}")
    }

    /// ROI RSA: brain RDM `brain` (condensed).
    pub fn rsa_rdm(brain: &str) -> String {
        format!("rsa/rdms/{brain}.npy")
    }

    /// The directory of run `id`'s partial results and staged outputs.
    pub fn run(id: &str) -> String {
        format!(".brainfit/runs/{id}")
    }

    /// Below [`run`]: the partial result of the task with key `key`.
    pub fn part(key: &str) -> String {
        format!("parts/{key}.part")
    }

    /// Below [`run`]: the partial results.
    pub const PARTS: &str = "parts";
    /// Below [`run`]: the staged outputs.
    pub const STAGED: &str = "staged";

    /// A directory of maps: one feature space's encoding, one model's searchlight or
    /// time-resolved comparison.
    #[derive(Debug, Clone, Copy)]
    pub enum MapDir<'a> {
        /// `encoding/<space>/`.
        Encoding(&'a str),
        /// `searchlight/<model>/`.
        Searchlight(&'a str),
        /// `time_resolved/<model>/` (at the output's root).
        TimeResolved(&'a str),
        /// `decoding/<source>/<space>/`: one feature space decoded from one source.
        Decoding(&'a str, &'a str),
        /// `cross_temporal/` (at the output's root): the time x time matrix.
        CrossTemporal,
    }

    /// The files of a map directory.
    #[derive(Debug, Clone, Copy)]
    pub enum MapFile {
        /// Encoding score per voxel.
        Score,
        /// Chosen alpha per voxel (ridge, LASSO).
        Alpha,
        /// Chosen number of components per voxel (PCR, PLS).
        Components,
        /// RDM comparison per centre or time point.
        Rho,
        /// Searchlight centres' mask indices.
        Centres,
        /// Uncorrected p-values.
        P,
        /// Family-wise corrected p-values.
        PFwe,
        /// The maximum statistic of each permutation.
        NullMax,
    }

    impl MapFile {
        fn stem(self) -> &'static str {
            match self {
                MapFile::Score => "score",
                MapFile::Alpha => "alpha",
                MapFile::Components => "components",
                MapFile::Rho => "rho",
                MapFile::Centres => "centres",
                MapFile::P => "p",
                MapFile::PFwe => "p_fwe",
                MapFile::NullMax => "null_max",
            }
        }
    }

    impl MapDir<'_> {
        fn dir(self) -> String {
            match self {
                MapDir::Encoding(space) => format!("encoding/{space}"),
                MapDir::Searchlight(model) => format!("searchlight/{model}"),
                MapDir::TimeResolved(model) => format!("time_resolved/{model}"),
                MapDir::Decoding(source, space) => format!("decoding/{source}/{space}"),
                MapDir::CrossTemporal => "cross_temporal".into(),
            }
        }

        /// A file of the directory by stem and extension (maps named after feature spaces).
        pub fn file(self, stem: &str, extension: &str) -> String {
            format!("{}/{stem}.{extension}", self.dir())
        }

        /// The `.npy` of `file`.
        pub fn npy(self, file: MapFile) -> String {
            format!("{}/{}.npy", self.dir(), file.stem())
        }

        /// The NIfTI image of `file` (maps on a mask).
        pub fn nifti(self, file: MapFile) -> String {
            format!("{}/{}.nii.gz", self.dir(), file.stem())
        }
    }
}

/// Outputs of one run, written to a staging area and published together.
#[derive(Debug, Clone)]
pub struct StagedOutputs<'a> {
    store: &'a Store,
    /// `output`, with a trailing `/`: every final URL starts with it.
    output_dir: String,
    staging: String,
}

impl<'a> StagedOutputs<'a> {
    /// Outputs for the directory `output`, staged under `staging` (a directory that only this
    /// run writes, below `output/.brainfit/`).
    pub fn new(store: &'a Store, output: &str, staging: String) -> StagedOutputs<'a> {
        StagedOutputs { store, output_dir: format!("{}/", output.trim_end_matches('/')), staging }
    }

    /// Where the output destined for `final_url` is staged.
    fn staged_url(&self, final_url: &str) -> Result<String> {
        let rel = final_url.strip_prefix(&self.output_dir).ok_or_else(|| {
            JobError::Corrupt(format!("{final_url} is not below the output {}", self.output_dir))
        })?;
        Ok(join_url(&self.staging, rel))
    }

    /// Stages `data` as the future content of `final_url` (a URL below `output`).
    pub async fn put(&self, final_url: &str, data: Bytes) -> Result<()> {
        self.store.put(&self.staged_url(final_url)?, data).await?;
        Ok(())
    }

    /// Stages the object at `from` (written by the run's tasks, below `output/.brainfit/`) as
    /// the future content of `final_url`, by moving it. Repeating it after it was moved is
    /// fine (a merge redone after a crash).
    pub async fn adopt(&self, from: &str, final_url: &str) -> Result<()> {
        let staged = self.staged_url(final_url)?;
        if self.store.size(from).await.is_ok() {
            self.store.rename(from, &staged).await?;
        } else {
            // moved by an earlier attempt of this merge, or never written
            self.store.size(&staged).await?;
        }
        Ok(())
    }

    /// Moves every staged output into `output`, `summary.json` last, after removing the
    /// earlier run's `summary.json`.
    pub async fn publish(&self) -> Result<()> {
        let summary = join_url(&self.output_dir, SUMMARY);
        let staged_summary = join_url(&self.staging, SUMMARY);
        let staged = self.store.list(&self.staging).await?;
        if !staged.contains(&staged_summary) {
            return Err(JobError::Corrupt(format!(
                "nothing to publish: {staged_summary} was not staged"
            )));
        }
        self.store.delete(&summary).await?;
        let prefix = format!("{}/", self.staging.trim_end_matches('/'));
        for url in staged.iter().filter(|u| **u != staged_summary) {
            let rel = url.strip_prefix(&prefix).ok_or_else(|| {
                JobError::Corrupt(format!("{url} was listed outside the staging area {prefix}"))
            })?;
            self.store.rename(url, &join_url(&self.output_dir, rel)).await?;
        }
        self.store.rename(&staged_summary, &summary).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nothing_is_visible_until_published_and_the_summary_comes_last() {
        let store = Store::new();
        let out = "memory://staging/study/out";
        store.put(&join_url(out, SUMMARY), Bytes::from_static(b"earlier")).await.unwrap();
        store.put(&join_url(out, "a/old.npy"), Bytes::from_static(b"old")).await.unwrap();
        let staged = StagedOutputs::new(&store, out, join_url(out, ".brainfit/runs/r1/staged"));
        staged.put(&join_url(out, "a/x.npy"), Bytes::from_static(b"x")).await.unwrap();
        staged.put(&join_url(out, "a/old.npy"), Bytes::from_static(b"new")).await.unwrap();
        assert!(staged.put("memory://staging/study/elsewhere", Bytes::new()).await.is_err());
        // an unfinished run: the earlier run is what the output shows
        assert!(staged.publish().await.is_err(), "no summary staged: nothing published");
        assert_eq!(&store.get(&join_url(out, SUMMARY)).await.unwrap()[..], b"earlier");
        assert!(store.get(&join_url(out, "a/x.npy")).await.is_err());
        assert_eq!(&store.get(&join_url(out, "a/old.npy")).await.unwrap()[..], b"old");

        staged.put(&join_url(out, SUMMARY), Bytes::from_static(b"new run")).await.unwrap();
        staged.publish().await.unwrap();
        assert_eq!(&store.get(&join_url(out, SUMMARY)).await.unwrap()[..], b"new run");
        assert_eq!(&store.get(&join_url(out, "a/x.npy")).await.unwrap()[..], b"x");
        assert_eq!(&store.get(&join_url(out, "a/old.npy")).await.unwrap()[..], b"new");
        assert!(store.list(&join_url(out, ".brainfit")).await.unwrap().is_empty());
    }
}
