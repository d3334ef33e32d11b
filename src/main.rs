//! The `brainfit` command line: run, validate and demo (embedded runs); coordinator, worker,
//! submit, status, cancel and results (distributed runs, in `distributed`).

mod distributed;

use anyhow::{Context, Result, bail};
use brainfit_client::{RunOptions, demo, run_job};
use brainfit_io::Store;
use brainfit_job::{JobSpec, inputs};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "brainfit",
    version,
    about = "Compare deep networks with brains: voxelwise encoding, RSA, permutation inference"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job embedded: the scheduler and N workers in this process.
    Run {
        /// The job file (TOML; a path or a URL).
        job: String,
        /// Number of in-process workers (default: one per CPU core).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Check a job file and the shapes of all its inputs, without computing.
    Validate {
        /// The job file.
        job: String,
    },
    /// Make a synthetic study with planted effects, run every analysis on it, and report
    /// whether the effects were recovered.
    Demo {
        /// Where to write the inputs, the job file and the results.
        #[arg(long, default_value = "brainfit-demo")]
        out: PathBuf,
        /// Number of in-process workers (default: one per CPU core).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Run the gRPC coordinator: accepts jobs, leases their tasks to workers, merges results.
    Coordinator(distributed::CoordinatorArgs),
    /// Run a worker for a coordinator (drains on SIGTERM: finishes running tasks, hands back
    /// the others).
    Worker(distributed::WorkerArgs),
    /// Send a job to a coordinator; with --wait, follow it and exit with its outcome.
    Submit(distributed::SubmitArgs),
    /// Show a job's progress, or every job and worker.
    Status(distributed::StatusArgs),
    /// Cancel a job.
    Cancel(distributed::CancelArgs),
    /// Show where a finished job's outputs are, and its summary.
    Results(distributed::ResultsArgs),
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// `file://` URL of a local directory (created if missing).
fn dir_url(dir: &Path) -> Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let abs = dir.canonicalize().with_context(|| format!("cannot resolve {}", dir.display()))?;
    Ok(format!("file://{}", abs.display()))
}

/// Reads a job file (path or URL) and checks it; relative inputs resolve against its directory.
async fn load_job(store: &Store, job: &str) -> Result<JobSpec> {
    let url = if job.contains("://") {
        job.to_string()
    } else {
        let p = Path::new(job);
        let abs = std::env::current_dir()?.join(p);
        format!("file://{}", abs.display())
    };
    let bytes = store.get(&url).await?;
    let text =
        String::from_utf8(bytes.to_vec()).with_context(|| format!("{job}: not UTF-8 text"))?;
    Ok(JobSpec::from_toml(&text, job, &brainfit_io::store::parent_url(&url))?)
}

fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} tasks ({msg}) eta {eta}",
        )
        .expect("valid template"),
    );
    bar
}

async fn run(store: &Store, spec: JobSpec, workers: usize) -> Result<brainfit_client::RunReport> {
    let bar = progress_bar();
    let cb_bar = bar.clone();
    let options = RunOptions {
        workers,
        on_progress: Some(Box::new(move |p| {
            cb_bar.set_length(p.total as u64);
            cb_bar.set_position(p.done as u64);
            cb_bar.set_message(format!("{} running", p.running));
        })),
    };
    let output = spec.output.clone();
    let result = run_job(store, spec, options).await;
    bar.finish_and_clear();
    result.with_context(|| format!("the run failed; nothing complete was written to {output}"))
}

fn print_summary(report: &brainfit_client::RunReport, output: &str) {
    let s = &report.summary;
    println!(
        "brainfit: job {} finished in {:.1} s ({} tasks, {} workers, {} backend)",
        s["name"].as_str().unwrap_or("?"),
        report.seconds,
        report.tasks,
        s["workers"],
        s["linalg_backend"].as_str().unwrap_or("?")
    );
    for subject in s["subjects"].as_array().into_iter().flatten() {
        let name = subject["name"].as_str().map(|n| format!("{n}: ")).unwrap_or_default();
        println!(
            "  {name}{} samples x {} voxels ({})",
            subject["n_samples"],
            subject["n_voxels"],
            subject["precision"].as_str().unwrap_or("?")
        );
        if let Some(enc) = subject["encoding"].as_object() {
            for (space, e) in enc {
                let sc = &e["score"];
                println!(
                    "    encoding {space:<16} {:>5} features  mean score {:>7.4}  max {:>7.4} (voxel {})  median alpha {}",
                    e["n_features"],
                    sc["mean"].as_f64().unwrap_or(f64::NAN),
                    sc["max"].as_f64().unwrap_or(f64::NAN),
                    sc["argmax"],
                    e["alpha_median"]
                );
            }
        }
        for (model, sl) in subject["searchlight"].as_object().into_iter().flatten() {
            println!(
                "    searchlight {model:<15} max rho {:>7.4} ({} centres, {} FWE-significant)",
                sl["rho"]["max"].as_f64().unwrap_or(f64::NAN),
                sl["rho"]["n"],
                sl["significant_fwe_05"]
            );
        }
        if let Some(rows) = subject["rsa"].as_array() {
            println!("    ROI RSA: {} comparisons in rsa/compare.csv", rows.len());
        }
    }
    for (model, t) in s["time_resolved"].as_object().into_iter().flatten() {
        println!(
            "  time-resolved {model:<13} max rho {:>7.4} ({} time points, {} FWE-significant)",
            t["rho"]["max"].as_f64().unwrap_or(f64::NAN),
            t["rho"]["n"],
            t["significant_fwe_05"]
        );
    }
    println!("  results: {output}");
}

/// glibc gives every thread that allocates its own heap arena (up to 8 per core); compute
/// threads come and go, so freed blocks scatter over many arenas and resident memory of a
/// whole-brain run doubles (measured: 900 MB vs 480 MB). Two arenas keep it bounded at no
/// measurable cost: compute threads spend their time in GEMMs, not in malloc.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> Result<()> {
    limit_malloc_arenas();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async_main())
}

async fn async_main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BRAINFIT_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let store = Store::new();
    match cli.command {
        Command::Run { job, workers } => {
            let spec = load_job(&store, &job).await?;
            let output = spec.output.clone();
            let report = run(&store, spec, workers.unwrap_or_else(default_workers)).await?;
            print_summary(&report, &output);
        }
        Command::Validate { job } => {
            let spec = load_job(&store, &job).await?;
            let inventory = inputs::inspect(&store, &spec).await?;
            let tasks = brainfit_job::plan(&spec, &inventory);
            println!("{job}: valid");
            for (subject, inv) in spec.subjects.iter().zip(&inventory.subjects) {
                println!(
                    "  {}: {} samples x {} voxels ({})",
                    subject.label(),
                    inv.n_samples,
                    inv.n_voxels,
                    if inv.f64_data { "f64" } else { "f32" }
                );
                for (space, p) in &inv.spaces {
                    println!("    feature space {:<16} {p} features", space.name);
                }
            }
            println!("  {} tasks; results would go to {}", tasks.len(), spec.output);
        }
        Command::Demo { out, workers } => {
            let out_url = dir_url(&out)?;
            eprintln!("brainfit demo: writing a synthetic study to {}", out.display());
            let study = demo::generate(&store, &out_url).await?;
            let spec =
                JobSpec::from_toml(&study.job, &format!("{}/job.toml", out.display()), &out_url)?;
            let output = spec.output.clone();
            let report = run(&store, spec, workers.unwrap_or_else(default_workers)).await?;
            print_summary(&report, &output);
            println!(
                "planted effects ({} mask voxels, {} stimuli):",
                study.n_voxels,
                demo::RUNS.0 * demo::RUNS.1
            );
            let (lines, all_found) = demo::check(&store, &output, &study).await?;
            lines.iter().for_each(|l| println!("{l}"));
            if !all_found {
                bail!("a planted effect was not recovered");
            }
        }
        Command::Coordinator(args) => distributed::coordinator(args).await?,
        Command::Worker(args) => distributed::worker(args).await?,
        Command::Submit(args) => distributed::submit(args).await?,
        Command::Status(args) => distributed::status(args).await?,
        Command::Cancel(args) => distributed::cancel(args).await?,
        Command::Results(args) => distributed::results(args).await?,
    }
    Ok(())
}
