//! The HTML of `brainfit report` opened in a real browser, headless Chromium (Debian's
//! `chromium`, installed by `scripts/chromium.sh` when missing): that the page renders (a
//! screenshot of the expected size that is not blank) and that every image in it decoded.
//!
//! The harness itself (`tests/common/chromium.rs`) is checked first on a small page with a
//! good and a broken image: the browser must tell them apart, so a report with an image that
//! does not decode would fail. Then a real job's report, made by the `brainfit report` binary:
//! every section its results call for, every image decoded at the size the HTML states, a
//! non-blank screenshot, and the job file's text escaped. The demo's report (the README's
//! first command) is checked the same way in `tests/demo.rs`.

mod common;

use brainfit_io::{Store, join_url};
use common::chromium::{decoded_images, png_rgba, png_size_and_colours, screenshot};
use common::{ENCODING_JOB, run_embedded, write_study};
use std::process::Command;

/// A 40×30 RGB PNG: white, with a pure red 20×20 square at (10, 5).
fn red_square_png() -> Vec<u8> {
    let (w, h) = (40u32, 30u32);
    let mut pixels = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let red = (10..30).contains(&x) && (5..25).contains(&y);
            pixels.extend_from_slice(if red { &[255, 0, 0] } else { &[255, 255, 255] });
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(&pixels).unwrap();
    writer.finish().unwrap();
    out
}

/// Standard base64 (with padding) of `bytes`.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn chromium_sees_decoded_and_broken_images() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("page with space.html");
    let good_src = format!("data:image/png;base64,{}", base64(&red_square_png()));
    let page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>harness</title></head>\n\
         <body style=\"background: white\">\n<h1>Images</h1>\n\
         <img alt=\"red square\" src=\"{good_src}\">\n\
         <img alt=\"broken\" src=\"data:image/png;base64,AAAA\">\n</body></html>\n"
    );
    std::fs::write(&html, &page).unwrap();

    let images = decoded_images(&html);
    assert_eq!(images.len(), 2, "{images:#?}");
    let (good, broken) = (&images[0], &images[1]);
    assert_eq!(good.alt, "red square");
    assert_eq!(good.src_prefix, good_src[..40]);
    assert!(good.decoded(), "{good:?}");
    assert_eq!((good.natural_width, good.natural_height), (40, 30));
    assert_eq!(broken.alt, "broken");
    assert_eq!(broken.src_prefix, "data:image/png;base64,AAAA");
    assert!(!broken.decoded(), "{broken:?}");
    assert_eq!((broken.natural_width, broken.natural_height), (0, 0));
    // the page is left as it was, and no copy of it stays behind
    assert_eq!(std::fs::read_to_string(&html).unwrap(), page);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    let shot = screenshot(&html, 800, 600);
    let (width, height, colours) = png_size_and_colours(&shot);
    assert_eq!((width, height), (800, 600));
    assert!(colours > 3, "a screenshot of {colours} colours is as good as blank");
    let (_, _, pixels) = png_rgba(&shot);
    let red = pixels.iter().filter(|p| p[0] >= 240 && p[1] <= 15 && p[2] <= 15).count();
    assert!(red >= 20 * 20, "the red square is missing from the screenshot ({red} red pixels)");
}

/// A job with two feature spaces (so a best-space map), permutations and a searchlight, on the
/// tiny study; its job file carries markup in a comment, which the report must escape.
const JOB_EXTRA: &str = r#"
[searchlight]
radius = 2.0
min_voxels = 5
[permutation]
n = 20
seed = 3
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_report_renders_in_chromium_with_every_image_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let base = format!("file://{}", dir.path().display());
    let store = Store::new();
    write_study(&store, &base, None).await;
    let job = format!("# </pre><script>alert('job file')</script>\n{ENCODING_JOB}{JOB_EXTRA}");
    let summary = run_embedded(&store, &base, &job, 2).await.unwrap();
    assert!(summary.permutation.is_some());

    // the binary, as a user runs it, to a file of their choosing
    let out_dir = dir.path().join("out");
    let html = dir.path().join("tiny report.html");
    let run = Command::new(env!("CARGO_BIN_EXE_brainfit"))
        .arg("report")
        .arg(&out_dir)
        .arg("--out")
        .arg(&html)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("report: file://") && stdout.contains("tiny report.html"), "{stdout}");
    let text = std::fs::read_to_string(&html).unwrap();

    // every result the job produced has its section and pictures
    for needle in [
        "<h1>brainfit report: tiny</h1>",
        "<h3>Voxelwise encoding</h3>",
        "<h3>Best feature space per voxel</h3>",
        "<h3>Searchlight RSA</h3>",
        "alt=\"slice mosaic of score (a)\"",
        "alt=\"glass brain of score (b)\"",
        "alt=\"alpha histogram of a\"",
        "alt=\"null maximum of score\"",
        "alt=\"best feature space per voxel\"",
        "20 (within-group scheme, seed 3)",
        "&lt;script&gt;alert(&#39;job file&#39;)&lt;/script&gt;",
    ] {
        assert!(text.contains(needle), "the report lacks {needle:?}");
    }
    assert!(!text.contains("<script"), "markup of the job file reached the page");
    assert!(
        !text.contains("src=\"http") && !text.contains("href=\"http"),
        "the report must not fetch anything"
    );
    // the peak of the score map, in voxels and mm, as the summary has it
    let peak = summary.subjects[0].encoding.as_ref().unwrap()["a"].score.peak.clone().unwrap();
    let voxel = format!("voxel [{}, {}, {}]", peak.voxel[0], peak.voxel[1], peak.voxel[2]);
    assert!(text.contains(&voxel), "the peak {voxel} is not in the table");

    // in the browser: every image decoded, at the size the HTML gives it
    let images = decoded_images(&html);
    let declared: Vec<(u32, u32)> = text
        .split("<img ")
        .skip(1)
        .map(|tag| {
            let attr = |name: &str| -> u32 {
                let start = tag.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                tag[start..].split('"').next().unwrap().parse().unwrap()
            };
            (attr("width"), attr("height"))
        })
        .collect();
    assert!(images.len() >= 9, "only {} images", images.len());
    assert_eq!(images.len(), declared.len());
    for (image, size) in images.iter().zip(&declared) {
        assert!(image.decoded(), "{image:?} did not decode");
        assert_eq!((image.natural_width, image.natural_height), *size, "{}", image.alt);
    }
    let shot = screenshot(&html, 1280, 2400);
    let (width, height, colours) = png_size_and_colours(&shot);
    assert_eq!((width, height), (1280, 2400));
    assert!(colours > 100, "a screenshot of {colours} colours is as good as blank");

    // the default place is beside summary.json; a directory without one is refused by name
    let run =
        Command::new(env!("CARGO_BIN_EXE_brainfit")).arg("report").arg(&out_dir).output().unwrap();
    assert!(run.status.success());
    assert!(store.get(&join_url(&base, "out/report.html")).await.is_ok());
    let run = Command::new(env!("CARGO_BIN_EXE_brainfit"))
        .arg("report")
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(stderr.contains("summary.json"), "{stderr}");

    // a forged summary cannot point the report outside the output
    let summary_path = out_dir.join("summary.json");
    let mut forged: brainfit_job::Summary =
        serde_json::from_slice(&std::fs::read(&summary_path).unwrap()).unwrap();
    let encoding = forged.subjects[0].encoding.as_mut().unwrap();
    let a = encoding.remove("a").unwrap();
    encoding.insert("../../elsewhere".into(), a);
    std::fs::write(&summary_path, serde_json::to_vec(&forged).unwrap()).unwrap();
    let run =
        Command::new(env!("CARGO_BIN_EXE_brainfit")).arg("report").arg(&out_dir).output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "a report read outside its output");
    assert!(stderr.contains("report input name"), "{stderr}");
}
