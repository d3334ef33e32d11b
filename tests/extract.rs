//! From images to results in one job: `[extract]` runs the tiny AlexNet of
//! `scripts/python/make_fixtures_onnx.py` on the real 92 stimulus images, compresses a layer
//! with PCA and another with a random projection, and the same job fits encoding models and
//! compares the layers' RDMs with human IT (Kriegeskorte et al. 2008). The activations are
//! checked against onnxruntime's, the PCA against a naive fit of the kernel on them, and
//! mistakes in the images or the layer names get clear errors.

mod common;

use brainfit_io::{Store, join_url, parse_npy, write_npy};
use brainfit_kernels::rng::Rng;
use common::run_embedded;
use ndarray::{Array2, Ix2};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn matrix(bytes: &[u8], name: &str) -> Array2<f64> {
    parse_npy(bytes, name).unwrap().to_f64().into_dimensionality::<Ix2>().unwrap()
}

fn fixture(name: &str) -> Array2<f64> {
    let path = format!("{ROOT}/tests/fixtures/onnx/{name}.npy");
    matrix(&std::fs::read(&path).unwrap(), &path)
}

fn max_diff(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    assert_eq!(a.dim(), b.dim());
    (a - b).mapv(f64::abs).fold(0.0, |m, &v| m.max(v))
}

/// The study: the model, the images, human IT's RDM, and brain data whose first 10 voxels are
/// driven by the network's fc6 units (onnxruntime's values), the other 10 noise.
async fn write_inputs(store: &Store, base: &str) {
    for (from, to) in [
        ("tests/fixtures/onnx/tiny_alexnet.onnx", "net.onnx"),
        ("tests/data/kriegeskorte2008/images.npy", "images.npy"),
        ("tests/data/kriegeskorte2008/human_it_rdm.npy", "human_it.npy"),
    ] {
        let bytes = std::fs::read(format!("{ROOT}/{from}")).unwrap();
        store.put(&join_url(base, to), bytes.into()).await.unwrap();
    }
    let mut rng = Rng::new(15);
    let fc6 = fixture("fc6_out");
    let w: Array2<f64> = rng.normal_array((64, 10));
    let mut brain: Array2<f64> = rng.normal_array((92, 20));
    let signal = fc6.dot(&w);
    let scale = 2.0 / signal.std(0.0);
    brain.slice_mut(ndarray::s![.., ..10]).scaled_add(scale, &signal);
    store.put(&join_url(base, "brain.npy"), write_npy(&brain.view()).into()).await.unwrap();
}

const JOB: &str = r#"
name = "images-to-maps"
output = "out"
[data]
brain = "brain.npy"
[extract]
model = "net.onnx"
images = "images.npy"
layers = { fc6 = "fc6_out", relu2 = "relu2", conv1 = "conv1_out" }
batch = 8
images_per_task = 40
[compress.relu2]
method = "pca"
components = 12
batch = 40
[compress.conv1]
method = "sparse_random_projection"
components = 40
seed = 7
[encoding]
alphas = { logspace = [-2, 4, 7] }
cv = { kind = "kfold", k = 4 }
inner_cv = { kind = "kfold", k = 3 }
[rsa]
brain_rdms = { human_it = "human_it.npy" }
compare = ["spearman"]
[permutation]
n = 19
scheme = "free"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_goes_from_images_to_encoding_maps_and_rsa() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new();
    let base = format!("file://{}", dir.path().display());
    write_inputs(&store, &base).await;
    let summary = run_embedded(&store, &base, JOB, 2).await.unwrap();
    // 3 extraction tasks, 3 assemblies, then the analyses
    assert!(summary.tasks > 6, "{}", summary.tasks);
    let x = summary.extraction.as_ref().expect("extraction summarised");
    assert_eq!((x.images, x.input_size), (92, [64, 64]));
    let features: Vec<(&str, usize, &str)> =
        x.layers.iter().map(|l| (l.name.as_str(), l.features, l.compression.as_str())).collect();
    assert_eq!(
        features,
        [("conv1", 40, "sparse_random_projection"), ("fc6", 64, "none"), ("relu2", 12, "pca")]
    );
    let out = join_url(&base, "out");
    let read = |name: &str| {
        let url = join_url(&out, name);
        let store = store.clone();
        async move { store.get(&url).await.unwrap_or_else(|e| panic!("{e}")) }
    };

    // the activations, as onnxruntime computes them from Pillow-preprocessed images
    let fc6 = matrix(&read("features/fc6.npy").await, "fc6");
    let d = max_diff(&fc6, &fixture("fc6_out"));
    assert!(d < 1e-4, "fc6 vs onnxruntime: {d}");

    // PCA fitted on the stimuli in batches of 40 (scikit-learn's IncrementalPCA batches: 40,
    // then the last 52), as the kernel fits it in memory on onnxruntime's activations
    let relu2 = fixture("relu2_out");
    let (pca, mut components) = brainfit_kernels::compress::fit_in_memory::<
        brainfit_kernels::linalg::Backend,
    >(relu2.view(), 12, Some(40), 4096)
    .unwrap();
    let expected = pca
        .transform::<brainfit_kernels::linalg::Backend, _>(
            92,
            |cols| Ok(relu2.slice(ndarray::s![.., cols]).to_owned()),
            &mut components,
        )
        .unwrap();
    let got = matrix(&read("features/relu2.npy").await, "relu2");
    let d = max_diff(&got, &expected);
    assert!(d < 1e-3, "PCA scores vs the kernel on onnxruntime's activations: {d}");
    let model = brainfit_io::parse_npz(&read("compress/relu2.npz").await, "relu2.npz").unwrap();
    let keys: Vec<&str> = model.iter().map(|(k, _)| k.as_str()).collect();
    assert!(keys.contains(&"components") && keys.contains(&"mean"), "{keys:?}");
    let conv1 = matrix(&read("features/conv1.npy").await, "conv1");
    assert_eq!(conv1.dim(), (92, 40));

    // the encoding maps: fc6 explains the voxels it drives
    let score = parse_npy(&read("encoding/fc6/score.npy").await, "score").unwrap().to_f64();
    let driven = score.iter().take(10).sum::<f64>() / 10.0;
    let noise = score.iter().skip(10).sum::<f64>() / 10.0;
    assert!(driven > 0.15 && noise < 0.0, "fc6 scores: driven {driven}, noise {noise}");
    // the RSA comparison of every layer with human IT
    let compare = String::from_utf8(read("rsa/compare.csv").await.to_vec()).unwrap();
    for layer in ["fc6", "relu2", "conv1"] {
        assert!(
            compare.lines().any(|l| l.starts_with(&format!("human_it,{layer},spearman,"))),
            "{layer} missing from\n{compare}"
        );
    }
    // nothing of the run's work area is left
    assert!(store.list(&join_url(&out, ".brainfit")).await.unwrap().is_empty());

    // a later job applies the saved PCA model to the same layer: the same features
    let reuse = JOB
        .replace("output = \"out\"", "output = \"again\"")
        .replace("components = 12\nbatch = 40", "model = \"out/compress/relu2.npz\"");
    run_embedded(&store, &base, &reuse, 1).await.unwrap();
    let again = store.get(&join_url(&base, "again/features/relu2.npy")).await.unwrap();
    let d = max_diff(&matrix(&again, "again"), &got);
    assert!(d < 1e-9, "the saved model gives other scores: {d}");

    // the same model as numpy.savez_compressed of scikit-learn's float32 attributes, the
    // components in Fortran order: read a block of units at a time, the same features
    let f32_member = |a: &ndarray::ArrayD<f64>, fortran: bool| {
        let mut bytes = brainfit_io::npy_header::<f32>(a.shape(), fortran);
        let order: Vec<f64> =
            if fortran { a.t().iter().copied().collect() } else { a.iter().copied().collect() };
        order.iter().for_each(|v| bytes.extend_from_slice(&(*v as f32).to_le_bytes()));
        bytes
    };
    let mut zipped = std::io::Cursor::new(Vec::new());
    {
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(&mut zipped);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (key, array) in &model {
            let array = array.clone().into_f64();
            zip.start_file(format!("{key}.npy"), opts).unwrap();
            zip.write_all(&f32_member(&array, key == "components")).unwrap();
        }
        zip.finish().unwrap();
    }
    store.put(&join_url(&base, "sklearn.npz"), zipped.into_inner().into()).await.unwrap();
    let sklearn = JOB
        .replace("output = \"out\"", "output = \"sklearn\"")
        .replace("components = 12\nbatch = 40", "model = \"sklearn.npz\"");
    run_embedded(&store, &base, &sklearn, 1).await.unwrap();
    let from_f32 = store.get(&join_url(&base, "sklearn/features/relu2.npy")).await.unwrap();
    let scale = got.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let d = max_diff(&matrix(&from_f32, "sklearn"), &got) / scale;
    assert!(d < 1e-5, "a float32 Fortran-order model gives other scores: {d} relative");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_folders_and_layer_names_are_checked_before_any_task() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new();
    let base = format!("file://{}", dir.path().display());
    write_inputs(&store, &base).await;
    let only_extract = |images: &str, layer: &str| {
        format!(
            "name = \"x\"\noutput = \"out\"\n[extract]\nmodel = \"net.onnx\"\nimages = \"{images}\"\nlayers = {{ l = \"{layer}\" }}\n"
        )
    };
    // a folder of PNG files (the first 3 stimuli) and a stray text file
    let images = parse_npy(
        &std::fs::read(format!("{ROOT}/tests/data/kriegeskorte2008/images.npy")).unwrap(),
        "images",
    )
    .unwrap();
    let brainfit_io::NpyData::U8(images) = images.data else { panic!("uint8 images") };
    for i in 0..3 {
        let img = images.index_axis(ndarray::Axis(0), i);
        let mut png = Vec::new();
        let img = img.as_standard_layout();
        image_png(&mut png, img.as_slice().unwrap(), 175, 175);
        store.put(&join_url(&base, &format!("folder/{i:02}.png")), png.into()).await.unwrap();
    }
    let summary = run_embedded(&store, &base, &only_extract("folder", "fc6_out"), 1).await.unwrap();
    assert_eq!(summary.extraction.unwrap().images, 3);
    let from_png = matrix(&store.get(&join_url(&base, "out/features/l.npy")).await.unwrap(), "l");
    let d = max_diff(&from_png, &fixture("fc6_out").slice(ndarray::s![..3, ..]).to_owned());
    assert!(d < 1e-4, "PNG files give other activations: {d}");

    store
        .put(&join_url(&base, "folder/notes.txt"), b"stimulus list".to_vec().into())
        .await
        .unwrap();
    let e = run_embedded(&store, &base, &only_extract("folder", "fc6_out"), 1).await.unwrap_err();
    assert!(e.contains("notes.txt") && e.contains("not a PNG or JPEG"), "{e}");
    assert!(!e.contains("stimulus list"), "file contents echoed: {e}");
    let e = run_embedded(&store, &base, &only_extract("images.npy", "fc9"), 1).await.unwrap_err();
    assert!(e.contains("net.onnx") && e.contains("\"fc9\""), "{e}");
    let e =
        run_embedded(&store, &base, &only_extract("brain.npy", "fc6_out"), 1).await.unwrap_err();
    assert!(e.contains("brain.npy") && e.contains("uint8 [n, height, width, 3]"), "{e}");
    // brain data whose rows are not the images
    let wrong = JOB
        .replace("images = \"images.npy\"", "images = \"folder\"")
        .replace("[compress.relu2]\nmethod = \"pca\"\ncomponents = 12\nbatch = 40\n", "");
    store.delete(&join_url(&base, "folder/notes.txt")).await.unwrap();
    let e = run_embedded(&store, &base, &wrong, 1).await.unwrap_err();
    assert!(e.contains("folder") && e.contains("92 samples"), "{e}");
    // names that would become paths outside the output
    let e = run_embedded(
        &store,
        &base,
        &only_extract("images.npy", "fc6_out").replace("{ l =", "{ \"../l\" ="),
        1,
    )
    .await
    .unwrap_err();
    assert!(e.contains("[extract] layers") && e.contains("../l"), "{e}");
}

fn image_png(out: &mut Vec<u8>, pixels: &[u8], w: u32, h: u32) {
    let enc = png_encoder(out, w, h);
    enc.write_header().unwrap().write_image_data(pixels).unwrap();
}

fn png_encoder(out: &mut Vec<u8>, w: u32, h: u32) -> png::Encoder<'_, &mut Vec<u8>> {
    let mut enc = png::Encoder::new(out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc
}
