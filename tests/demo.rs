//! `brainfit demo`, the README's first command, run as a user runs it: the binary, a real
//! directory, every planted effect recovered, and a directory it did not make left alone; and
//! its HTML report, opened in headless Chromium.

mod common;

use common::chromium::{decoded_images, png_size_and_colours, screenshot};
use std::process::Command;

fn demo(out: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_brainfit"))
        .args(["demo", "--workers", "2", "--out"])
        .arg(out)
        .output()
        .expect("run brainfit demo")
}

#[test]
fn demo_recovers_every_planted_effect_and_never_overwrites_foreign_directories() {
    let dir = tempfile::tempdir().unwrap();

    // a directory with someone's files in it is refused, and left as it was
    let foreign = dir.path().join("thesis");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("chapter1.tex"), "precious").unwrap();
    let out = demo(&foreign);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "demo wrote into a foreign directory");
    assert!(stderr.contains("was not made by `brainfit demo`"), "{stderr}");
    let left: Vec<_> =
        std::fs::read_dir(&foreign).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec!["chapter1.tex"]);

    // an earlier demo's directory is replaced, and the run says so
    let earlier = dir.path().join("demo");
    std::fs::create_dir(&earlier).unwrap();
    std::fs::write(earlier.join(".brainfit-demo"), "made by `brainfit demo`\n").unwrap();
    let out = demo(&earlier);
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("replacing the earlier demo"), "{stderr}");
    let recovered = stdout.lines().filter(|l| l.ends_with("-> recovered")).count();
    assert_eq!(
        recovered, 11,
        "every planted effect (2 encoding, 2 searchlight, 2 best space, 2 partition, 2 ROI, MEG group):\n{stdout}"
    );
    assert!(!stdout.contains("NOT recovered"), "{stdout}");
    // what a reader needs: task counts in words, the permutation floor, peaks as coordinates
    assert!(stdout.contains("50 permutations (within-group scheme)"), "{stdout}");
    assert!(stdout.contains("1/51"), "{stdout}");
    assert!(stdout.contains(" mm)"), "peaks in voxel and mm coordinates:\n{stdout}");
    assert!(!stdout.contains(" 1 tasks"), "{stdout}");

    // summary.json: the subject is named, ROI RSA rows carry their p-values
    let summary: brainfit_job::Summary =
        serde_json::from_slice(&std::fs::read(earlier.join("results/summary.json")).unwrap())
            .unwrap();
    let subject = &summary.subjects[0];
    assert_eq!(subject.name, "demo");
    assert!(!subject.rsa.is_empty());
    for row in &subject.rsa {
        let (p, p_fwe) = (row.p.unwrap(), row.p_fwe.unwrap());
        assert!((1.0 / 51.0..=1.0).contains(&p) && p <= p_fwe, "{row:?}");
    }
    let score = &subject.encoding.as_ref().unwrap()["edges"].score;
    assert!(score.peak.is_some(), "{score:?}");
    assert_eq!(summary.permutation.unwrap().smallest_p, 1.0 / 51.0);

    // the report, written at the end of the run: every analysis shown, every image decoded
    let report = earlier.join("results/report.html");
    assert!(stdout.contains("report: file://"), "{stdout}");
    let html = std::fs::read_to_string(&report).unwrap();
    for section in [
        "Voxelwise encoding",
        "Best feature space per voxel",
        "Variance partitioning",
        "Layer profiles in the ROIs",
        "Searchlight RSA",
        "ROI RSA",
        "Time-resolved RSA",
        "Group tests",
        "Job file",
    ] {
        assert!(html.contains(&format!("{section}</h")), "the demo's report lacks {section}");
    }
    let images = decoded_images(&report);
    assert!(images.len() >= 25, "{} images", images.len());
    assert!(images.iter().all(common::chromium::ImageState::decoded), "{images:#?}");
    let (width, height, colours) = png_size_and_colours(&screenshot(&report, 1280, 1600));
    assert_eq!((width, height), (1280, 1600));
    assert!(colours > 100, "a screenshot of {colours} colours is as good as blank");
}
