//! The tiny AlexNet of `scripts/python/make_fixtures_onnx.py` on the real 92 stimulus images:
//! preprocessing (Pillow-exact) and tract's activations against onnxruntime's.

use brainfit_extract::{Network, decode_image, inspect_model, list_layers};
use brainfit_io::{NpyData, parse_npy};
use brainfit_kernels::image::{Preprocessing, preprocess};
use ndarray::{Array2, Array3, ArrayD, Axis};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn read(path: &str) -> Vec<u8> {
    std::fs::read(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn f32s(path: &str) -> ArrayD<f32> {
    match parse_npy(&read(path), path).unwrap().data {
        NpyData::F32(a) => a,
        _ => panic!("{path}: unexpected dtype"),
    }
}

fn images() -> Vec<Array3<u8>> {
    let path = "tests/data/kriegeskorte2008/images.npy";
    match parse_npy(&read(path), path).unwrap().data {
        NpyData::U8(a) => {
            a.axis_iter(Axis(0)).map(|img| img.to_owned().into_dimensionality().unwrap()).collect()
        }
        _ => panic!("{path}: unexpected dtype"),
    }
}

const MODEL: &str = "tests/fixtures/onnx/tiny_alexnet.onnx";

fn preprocessing() -> Preprocessing {
    Preprocessing { height: 64, width: 64, ..Preprocessing::default() }
}

#[test]
fn activations_match_onnxruntime_on_the_92_images() {
    let inputs: Vec<Array3<f32>> =
        images().iter().map(|img| preprocess(img.view(), &preprocessing()).unwrap()).collect();
    assert_eq!(inputs.len(), 92);
    // preprocessing: the fixture's first input, computed with Pillow and NumPy
    let first = f32s("tests/fixtures/onnx/input_first.npy");
    let diff = (&inputs[0].view().into_dyn() - &first).mapv(f32::abs).fold(0f32, |a, &b| a.max(b));
    assert!(diff <= 1e-6, "preprocessed input differs by {diff}");

    let layers = ["conv1_out", "relu2_out", "add3_out", "fc6", "relu7_out", "prob_out"];
    let layers: Vec<String> = layers.iter().map(ToString::to_string).collect();
    // a batch that does not divide 92: the last batch is padded
    let net = Network::load(&read(MODEL), MODEL, &layers, 10, None).unwrap();
    assert_eq!(net.units(), [1800, 784, 144, 64, 32, 10]);
    let out = net.run(&inputs).unwrap();
    for (layer, got) in layers.iter().zip(&out) {
        let tensor = if layer == "fc6" { "fc6_out".to_string() } else { layer.clone() };
        let want = f32s(&format!("tests/fixtures/onnx/{tensor}.npy"));
        let want: Array2<f32> = want.into_dimensionality().unwrap();
        let rows = want.nrows();
        let got = got.slice(ndarray::s![..rows, ..]);
        let worst = (&got - &want).mapv(f32::abs).fold(0f32, |a, &b| a.max(b));
        assert!(worst <= 1e-4, "{layer}: max |tract - onnxruntime| = {worst}");
        eprintln!("{layer}: {rows} images, max |diff| {worst:.2e}");
    }
    // one image at a time gives the same values as in a batch, up to float32 rounding
    let single = Network::load(&read(MODEL), MODEL, &layers[5..], 1, None).unwrap();
    let alone = &single.run(&inputs[..3]).unwrap()[0];
    let worst =
        (alone - &out[5].slice(ndarray::s![..3, ..])).mapv(f32::abs).fold(0f32, |a, &b| a.max(b));
    assert!(worst <= 1e-6, "batch of 1 vs 10: {worst}");
    // and the same batches give the same bytes
    assert_eq!(net.run(&inputs).unwrap(), out);
}

#[test]
fn layers_are_listed_with_their_shapes_and_unknown_ones_are_refused() {
    let listed = list_layers(&read(MODEL), MODEL, None).unwrap();
    let csv = String::from_utf8(read("tests/fixtures/onnx/layers.csv")).unwrap();
    let mut rows = 0;
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let node =
            listed.iter().find(|l| l.node == f[0]).unwrap_or_else(|| panic!("{} not listed", f[0]));
        assert_eq!(node.op, f[1], "{}", f[0]);
        let (tensor, shape) = &node.outputs[0];
        assert_eq!(tensor, f[2]);
        let shape: Vec<String> = shape.as_ref().unwrap().iter().map(ToString::to_string).collect();
        assert_eq!(shape.join("x"), f[3], "{}", f[0]);
        rows += 1;
    }
    assert_eq!(rows, 17);
    let info =
        inspect_model(&read(MODEL), MODEL, &["lrn1".into(), "pool2_out".into()], None).unwrap();
    assert_eq!(info.layers, [vec![8, 15, 15], vec![16, 3, 3]]);
    assert_eq!((info.input.height, info.input.width, info.input.batch), (Some(64), Some(64), None));
    let e = inspect_model(&read(MODEL), MODEL, &["conv9".into()], None).unwrap_err().to_string();
    assert!(
        e.contains("tiny_alexnet.onnx") && e.contains("\"conv9\"") && e.contains("--list-layers"),
        "{e}"
    );
    let e = inspect_model(&read(MODEL), MODEL, &["fc6".into()], Some((32, 32)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("takes 64 × 64 images"), "{e}");
    let e = Network::load(b"\x08\x07garbage", "bad.onnx", &["x".into()], 1, None)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("bad.onnx: "), "{e}");
}

#[test]
fn png_files_decode_to_the_same_pixels_as_the_npy() {
    let img = &images()[5];
    let (h, w, _) = img.dim();
    let mut png = Vec::new();
    image_png(&mut png, img.as_slice().unwrap(), w as u32, h as u32);
    assert_eq!(&decode_image(&png, "5.png").unwrap(), img);
}

fn image_png(out: &mut Vec<u8>, pixels: &[u8], w: u32, h: u32) {
    image::write_buffer_with_format(
        &mut std::io::Cursor::new(out),
        pixels,
        w,
        h,
        image::ColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .unwrap();
}
