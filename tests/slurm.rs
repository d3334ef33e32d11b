//! `deploy/slurm/brainfit.sbatch` on a real single-node Slurm cluster on this machine, started
//! and stopped by `deploy/slurm/test-cluster.sh` (which installs Slurm and munge from Debian's
//! packages if they are missing: that needs root, as on this project's machines). The batch job
//! runs a coordinator and two workers as job steps, submits the job, and must give the same
//! bytes as `brainfit run`.

mod common;

use brainfit_io::Store;
use common::{ENCODING_JOB, outputs, write_study};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Stops the test cluster when dropped.
struct Cluster(PathBuf);

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(root().join("deploy/slurm/test-cluster.sh"))
            .arg("stop")
            .arg(&self.0)
            .status();
    }
}

/// A directory holding the tiny study and its encoding job; its outputs.
fn study() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let base = format!("file://{}", dir.path().display());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(write_study(&Store::new(), &base, None));
    std::fs::write(dir.path().join("job.toml"), ENCODING_JOB).unwrap();
    dir
}

fn job_outputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(outputs(&Store::new(), &format!("file://{}/out", dir.display())))
}

#[test]
fn the_sbatch_script_gives_the_embedded_outputs_on_a_real_slurm_cluster() {
    let bin = env!("CARGO_BIN_EXE_brainfit");
    // the reference: the same job run embedded
    let embedded = study();
    let out = Command::new(bin)
        .args(["run", "job.toml", "--workers", "2"])
        .current_dir(embedded.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reference = job_outputs(embedded.path());
    assert!(!reference.is_empty());

    let state = tempfile::tempdir().unwrap();
    let out = Command::new(root().join("deploy/slurm/test-cluster.sh"))
        .arg("start")
        .arg(state.path())
        .output()
        .unwrap();
    let _cluster = Cluster(state.path().to_path_buf());
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "the test cluster did not start:\n{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conf = printed
        .lines()
        .find_map(|l| l.strip_prefix("SLURM_CONF="))
        .expect("test-cluster.sh prints SLURM_CONF")
        .to_string();

    let dir = study();
    let out = Command::new("sbatch")
        .args(["--wait", "--ntasks", "3"])
        .arg(root().join("deploy/slurm/brainfit.sbatch"))
        .arg("job.toml")
        .current_dir(dir.path())
        .env("SLURM_CONF", &conf)
        .env("BRAINFIT_BIN", bin)
        .env_remove("BRAINFIT_TOKEN")
        .output()
        .unwrap();
    let log: String = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("brainfit-"))
        .filter(|p| p.is_file())
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(out.status.success(), "sbatch failed: {}\n{log}", String::from_utf8_lossy(&out.stderr));
    assert!(log.contains("succeeded"), "{log}");
    // the token made for the allocation (64 hex digits) is never printed
    let hex_run = log.split(|c: char| !c.is_ascii_hexdigit()).map(str::len).max().unwrap_or(0);
    assert!(hex_run < 64, "something token-like was printed:\n{log}");
    assert_eq!(job_outputs(dir.path()), reference, "Slurm outputs differ from brainfit run's");
}
