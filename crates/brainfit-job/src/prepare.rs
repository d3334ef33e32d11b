//! `brainfit prepare`: a voxel-major copy of a subject's brain data, written once per data set.
//!
//! A task reads only the voxels it needs (an encoding chunk, the slabs a searchlight task's
//! spheres reach, the voxels of ROIs) with range requests. In a C-order `.npy` of
//! `[n_samples, n_voxels]` a run of voxels is one byte range per sample row — a thousand
//! requests for a thousand samples, merged only where rows lie close — and a compressed NIfTI
//! image cannot be range-read at all, so every task process reads it whole. A Fortran-order
//! (voxel-major) `.npy` holds each voxel's samples contiguously: a run of voxels is one range.
//! `prepare` writes that copy, streaming a bounded block of voxels at a time; a job points its
//! `[data] brain` at it, with the same mask, and computes the same values to the bit.

use crate::inputs::{self, Matrix};
use crate::spec::SubjectSpec;
use crate::{JobError, Result, with_matrix};
use brainfit_io::{NpyElement, ObjectWriter, Store, npy_header};
use ndarray::ArrayView2;

/// At most this many bytes of the brain matrix are held (and read, and written) at once.
pub const PREPARE_BLOCK_BYTES: usize = 128 << 20;

/// What [`voxel_major_copy`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// Rows (samples) of the matrix.
    pub n_samples: usize,
    /// Columns (voxels) of the matrix.
    pub n_voxels: usize,
    /// `true` for float64 (an `.npy` of float64), `false` for float32 (anything else, as a job
    /// computes it).
    pub f64_data: bool,
    /// Bytes written, header included.
    pub bytes: u64,
}

/// Writes to `out` a Fortran-order (voxel-major) `.npy` of the brain data at `brain`: a 2-D
/// `.npy` (`[n_samples, n_voxels]`, either order; float64 stays float64, other types become
/// float32 as a job reads them), or a 4-D NIfTI image with its `mask` (the masked voxels in
/// mask order, as a job reads them). The values are checked as a job checks them (shape,
/// NaN/Inf, the mask's voxel count); nothing appears at `out` unless the whole copy is written.
pub async fn voxel_major_copy(
    store: &Store,
    brain: &str,
    mask: Option<&str>,
    out: &str,
) -> Result<Prepared> {
    copy_in_blocks(store, brain, mask, out, PREPARE_BLOCK_BYTES).await
}

/// [`voxel_major_copy`], holding at most `block_bytes` of the matrix at once.
async fn copy_in_blocks(
    store: &Store,
    brain: &str,
    mask: Option<&str>,
    out: &str,
    block_bytes: usize,
) -> Result<Prepared> {
    if brainfit_io::canonical_url(brain)? == brainfit_io::canonical_url(out)? {
        return Err(JobError::Input {
            url: out.to_string(),
            message: "is the input itself; write the voxel-major copy to another file".into(),
        });
    }
    if !out.to_ascii_lowercase().ends_with(".npy") {
        return Err(JobError::Input {
            url: out.to_string(),
            message: "the copy is an .npy file: give it a name ending in .npy".into(),
        });
    }
    let subject = SubjectSpec {
        name: None,
        brain: Some(brain.to_string()),
        mask: mask.map(str::to_string),
        groups: None,
        features: Default::default(),
        repeats: Vec::new(),
        conditions: None,
    };
    // a NIfTI image is compressed: decoded whole, once; a .npy is read a block at a time
    let (whole, n, v, f64_data) = if inputs::is_nifti(brain) {
        let (matrix, _) = inputs::load_brain(store, &subject).await?;
        let (n, v) = matrix.dim();
        let f64_data = matches!(matrix, Matrix::F64(_));
        (Some(matrix), n, v, f64_data)
    } else {
        let mask = match mask {
            Some(url) => Some(inputs::load_mask(store, url).await?),
            None => None,
        };
        let (n, v, f64_data) = inputs::brain_npy_shape(store, &subject, mask.as_ref()).await?;
        (None, n, v, f64_data)
    };
    let mut writer = start(store, out, n, v, f64_data).await?;
    let step = block_columns(n, v, f64_data, block_bytes);
    for c in (0..v).step_by(step) {
        let columns = c..(c + step).min(v);
        let block = match &whole {
            Some(matrix) => Ok(with_matrix!(matrix, |a| voxel_major_bytes(
                a.slice(ndarray::s![.., columns.clone()])
            ))),
            None => {
                inputs::load_brain_columns(store, brain, std::slice::from_ref(&columns), f64_data)
                    .await
                    .map(|block| with_matrix!(&block, |a| voxel_major_bytes(a.view())))
            }
        };
        let written = match block {
            Ok(block) => writer.write(&block).await.map_err(JobError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            return Err(abandon(writer, e).await);
        }
    }
    let bytes = writer.finish().await?;
    Ok(Prepared { n_samples: n, n_voxels: v, f64_data, bytes })
}

/// Columns per block: as many as fit in `block_bytes`, at least one.
fn block_columns(n: usize, v: usize, f64_data: bool, block_bytes: usize) -> usize {
    let item = if f64_data { 8 } else { 4 };
    (block_bytes / (n * item).max(1)).clamp(1, v.max(1))
}

/// Opens the upload and writes the header of an `[n, v]` Fortran-order `.npy`.
async fn start(
    store: &Store,
    out: &str,
    n: usize,
    v: usize,
    f64_data: bool,
) -> Result<ObjectWriter> {
    let header =
        if f64_data { npy_header::<f64>(&[n, v], true) } else { npy_header::<f32>(&[n, v], true) };
    let mut writer = store.writer(out).await?;
    if let Err(e) = writer.write(&header).await {
        return Err(abandon(writer, e.into()).await);
    }
    Ok(writer)
}

/// Aborts the upload (nothing is left at its URL) and returns the error that stopped it.
async fn abandon(writer: ObjectWriter, e: JobError) -> JobError {
    if let Err(abort) = writer.abort().await {
        tracing::warn!("could not abort an unfinished upload: {abort}");
    }
    e
}

/// A block of columns as a Fortran-order `.npy` body: column after column, little-endian.
fn voxel_major_bytes<T: NpyElement>(block: ArrayView2<T>) -> Vec<u8> {
    let mut out = Vec::with_capacity(block.len() * std::mem::size_of::<T>());
    // the transpose's logical order walks the block column after column
    for &x in block.t() {
        x.write_le(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use brainfit_io::{parse_npy, write_npy};
    use brainfit_kernels::rng::Rng;
    use ndarray::Array2;

    /// The copy's header says Fortran order and its values are the source's, bit for bit.
    async fn assert_copy(store: &Store, out: &str, want: ndarray::ArrayD<f64>, f64_data: bool) {
        let bytes = store.get(out).await.unwrap();
        let header = brainfit_io::parse_npy_header(&bytes, out).unwrap();
        assert!(header.fortran_order, "{header:?}");
        assert_eq!(header.dtype, if f64_data { "<f8" } else { "<f4" });
        let copy = parse_npy(&bytes, out).unwrap();
        assert_eq!(copy.to_f64(), want);
    }

    #[tokio::test]
    async fn a_copy_in_many_blocks_holds_the_same_values_voxel_major() {
        let store = Store::new();
        let mut rng = Rng::new(7);
        let brain: Array2<f32> = rng.normal_array((9, 23));
        store.put("memory://p/brain.npy", write_npy(&brain.view()).into()).await.unwrap();
        // 9 samples x 4 bytes = 36 bytes a voxel; 100-byte blocks hold 2 voxels: 12 blocks
        let p = copy_in_blocks(&store, "memory://p/brain.npy", None, "memory://p/vm.npy", 100)
            .await
            .unwrap();
        assert_eq!((p.n_samples, p.n_voxels, p.f64_data), (9, 23, false));
        assert_eq!(p.bytes, store.size("memory://p/vm.npy").await.unwrap());
        assert_copy(&store, "memory://p/vm.npy", brain.mapv(f64::from).into_dyn(), false).await;
        // a copy of the copy (Fortran order in) is the same file
        copy_in_blocks(&store, "memory://p/vm.npy", None, "memory://p/vm2.npy", 100).await.unwrap();
        assert_eq!(
            store.get("memory://p/vm.npy").await.unwrap(),
            store.get("memory://p/vm2.npy").await.unwrap()
        );
        // float64 stays float64
        let brain64: Array2<f64> = rng.normal_array((5, 6));
        store.put("memory://p/b64.npy", write_npy(&brain64.view()).into()).await.unwrap();
        let p = voxel_major_copy(&store, "memory://p/b64.npy", None, "memory://p/vm64.npy")
            .await
            .unwrap();
        assert!(p.f64_data);
        assert_copy(&store, "memory://p/vm64.npy", brain64.into_dyn(), true).await;
    }

    #[tokio::test]
    async fn a_nifti_image_is_copied_as_its_masked_voxels_in_mask_order() {
        // the image and mask of tests/nifti_input.rs (made with nilearn)
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/nifti");
        let store = Store::new();
        for f in ["img4d.nii.gz", "mask.nii.gz"] {
            let bytes = std::fs::read(format!("{fixtures}/{f}")).unwrap();
            store.put(&format!("memory://n/{f}"), bytes.into()).await.unwrap();
        }
        let subject = SubjectSpec {
            name: None,
            brain: Some("memory://n/img4d.nii.gz".into()),
            mask: Some("memory://n/mask.nii.gz".into()),
            groups: None,
            features: Default::default(),
            repeats: Vec::new(),
            conditions: None,
        };
        let (Matrix::F32(want), _) = inputs::load_brain(&store, &subject).await.unwrap() else {
            panic!("a NIfTI image is read as float32")
        };
        let (bold, mask) = ("memory://n/img4d.nii.gz", Some("memory://n/mask.nii.gz"));
        let p = copy_in_blocks(&store, bold, mask, "memory://n/vm.npy", 4 * want.nrows() * 3)
            .await
            .unwrap();
        assert_eq!((p.n_samples, p.n_voxels), want.dim());
        assert!(want.ncols() > 3, "several blocks");
        assert_copy(&store, "memory://n/vm.npy", want.mapv(f64::from).into_dyn(), false).await;
        let err =
            voxel_major_copy(&store, bold, None, "memory://n/x.npy").await.unwrap_err().to_string();
        assert!(err.contains("img4d.nii.gz") && err.contains("mask"), "{err}");
    }

    #[tokio::test]
    async fn bad_input_writes_nothing_and_says_what_is_wrong() {
        let store = Store::new();
        let mut brain = Array2::<f32>::ones((4, 30));
        brain[(2, 17)] = f32::NAN;
        store.put("memory://e/brain.npy", write_npy(&brain.view()).into()).await.unwrap();
        // the NaN is in the third block of 8 voxels: two blocks were already uploaded
        let err = copy_in_blocks(&store, "memory://e/brain.npy", None, "memory://e/vm.npy", 128)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("brain.npy") && err.contains("NaN at sample 2, voxel 17"), "{err}");
        assert!(store.list("memory://e").await.unwrap() == vec!["memory://e/brain.npy"]);
        let err = voxel_major_copy(&store, "memory://e/brain.npy", None, "memory://e/brain.npy")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("the input itself"), "{err}");
        let err = voxel_major_copy(&store, "memory://e/brain.npy", None, "memory://e/vm.nii")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("vm.nii") && err.contains(".npy"), "{err}");
        let three_d = ndarray::Array3::<f32>::ones((2, 3, 4));
        store.put("memory://e/3d.npy", write_npy(&three_d.view()).into()).await.unwrap();
        let err = voxel_major_copy(&store, "memory://e/3d.npy", None, "memory://e/vm.npy")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("3d.npy") && err.contains("2-D"), "{err}");
    }
}
