//! deploy/ checked for real, as far as this machine allows: every Kubernetes manifest against
//! the Kubernetes 1.32 schemas (kubernetes-validate --strict, offline), the Dockerfile with
//! hadolint, and what schemas miss — that the manifests agree with each other, with the
//! Dockerfile's user and with the variables and endpoints the binary really has.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Kubernetes objects' files below `dir` (variants in subdirectories included).
fn manifests(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(manifests(&path));
        } else if path.extension().is_some_and(|e| e == "yaml")
            && !path.ends_with("kustomization.yaml")
        // not a Kubernetes API object
        {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn validate(files: &[PathBuf]) -> Output {
    Command::new(common::venv_tool("kubernetes-validate"))
        .args(["--strict", "-k", "1.32"])
        .args(files)
        .output()
        .unwrap()
}

/// The environment variables the binary reads: those its commands' --help name, the log
/// filter and the memory budgets (read directly); the object stores' AWS_*, GOOGLE_* and
/// AZURE_* ones are allowed by check_manifests.py.
fn binary_variables() -> Vec<String> {
    let mut vars = ["BRAINFIT_LOG", "BRAINFIT_MAX_ARRAY_BYTES", "BRAINFIT_WHOLE_BRAIN_BYTES"]
        .map(String::from)
        .to_vec();
    for command in ["coordinator", "worker", "submit"] {
        let out = Command::new(env!("CARGO_BIN_EXE_brainfit"))
            .args([command, "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout).to_string();
        vars.extend(
            help.split("[env: ").skip(1).map(|s| s.split(['=', ']']).next().unwrap().to_string()),
        );
    }
    vars.sort();
    vars.dedup();
    assert!(vars.contains(&"BRAINFIT_TOKEN".to_string()), "{vars:?}");
    vars
}

fn check_manifests(k8s: &Path) -> Output {
    Command::new(common::venv_tool("python"))
        .arg(root().join("deploy/k8s/check_manifests.py"))
        .arg(k8s)
        .arg(root().join("deploy/docker/Dockerfile"))
        .args(binary_variables())
        .output()
        .unwrap()
}

#[test]
fn kubernetes_manifests_validate_strictly_against_the_schemas() {
    let files = manifests(&root().join("deploy/k8s"));
    assert!(files.len() >= 5, "{files:?}");
    assert!(files.iter().any(|f| f.ends_with("sweep/worker-job.yaml")), "{files:?}");
    let out = validate(&files);
    assert!(out.status.success(), "{}", text(&out));
    // the validator does refuse: an unknown field in a copy fails
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("worker.yaml");
    let worker = std::fs::read_to_string(root().join("deploy/k8s/worker.yaml")).unwrap();
    std::fs::write(&broken, worker.replace("replicas: 2", "replicas: 2\n  replicaz: 3")).unwrap();
    let out = validate(&[broken]);
    assert!(!out.status.success(), "an unknown field passed strict validation: {}", text(&out));
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let out = Command::new(common::venv_tool("hadolint"))
        .arg("--config")
        .arg(root().join("deploy/docker/.hadolint.yaml"))
        .arg(root().join("deploy/docker/Dockerfile"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn manifests_agree_with_each_other_the_image_and_the_binary() {
    let k8s = root().join("deploy/k8s");
    let out = check_manifests(&k8s);
    assert!(out.status.success(), "{}", text(&out));
    // and the check does catch mistakes: a copy with a probe on an unserved path, a worker
    // pointing at a Service that does not exist and a Secret key nothing reads
    let dir = tempfile::tempdir().unwrap();
    for file in std::fs::read_dir(&k8s).unwrap() {
        let path = file.unwrap().path();
        if path.is_dir() {
            continue; // the base manifests are enough to break
        }
        let mut text = std::fs::read_to_string(&path).unwrap();
        text = text
            .replace("path: /healthz", "path: /health")
            .replace("http://brainfit-coordinator:50051", "http://coordinator:50051")
            .replace("BRAINFIT_TOKEN:", "BRAINFIT_SECRET:");
        std::fs::write(dir.path().join(path.file_name().unwrap()), text).unwrap();
    }
    let out = check_manifests(dir.path());
    let report = text(&out);
    assert!(!out.status.success(), "{report}");
    for needle in ["/health,", "names no Service", "BRAINFIT_SECRET is no variable"] {
        assert!(report.contains(needle), "{needle:?} missing from:\n{report}");
    }
}
