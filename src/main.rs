//! The `brainfit` command line: run, validate and demo (embedded runs); coordinator, worker,
//! submit, status, cancel and results (distributed runs, in `distributed`).

mod distributed;
mod health;

use anyhow::{Context, Result, bail};
use brainfit_client::{RunOptions, demo, run_job};
use brainfit_io::Store;
use brainfit_job::file::JobText;
use brainfit_job::summary::Summary;
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
        /// Remove the output's lock left by a run that died (only when no run is using it).
        #[arg(long)]
        break_lock: bool,
        /// Do not write OUTPUT/report.html at the end.
        #[arg(long)]
        no_report: bool,
    },
    /// Check a job file and the shapes of all its inputs, without computing.
    Validate {
        /// The job file.
        job: String,
    },
    /// Write a voxel-major (Fortran-order) copy of brain data, once per data set: a task then
    /// reads its voxels in one range request, not one per sample. Point the job's `[data]
    /// brain` at the copy (same mask); the results are the same to the bit.
    Prepare {
        /// The brain data: a 2-D `.npy` `[n_samples, n_voxels]`, or a 4-D NIfTI image (needs
        /// --mask). A path or a URL.
        brain: String,
        /// Where to write the copy: an `.npy` path or URL (written whole or not at all).
        out: String,
        /// The mask: selects a NIfTI image's voxels; an `.npy`'s voxel count is checked
        /// against it.
        #[arg(long)]
        mask: Option<String>,
    },
    /// Push stimulus images through an ONNX network and write the layers' activations to
    /// OUT/features/<name>.npy (an embedded job holding only [extract]), or list the model's
    /// layers.
    Extract {
        /// The ONNX model (a path or a URL).
        model: String,
        /// Print every node with its operator, output tensors and their shapes per image, and
        /// stop.
        #[arg(long)]
        list_layers: bool,
        /// The images: a folder of PNG/JPEG files (name order) or an .npy of uint8
        /// [n, height, width, 3].
        #[arg(long, required_unless_present = "list_layers")]
        images: Option<String>,
        /// The layers, `name=node` (node or tensor name), comma separated.
        #[arg(long, value_delimiter = ',', required_unless_present = "list_layers")]
        layers: Vec<String>,
        /// Where the features are written.
        #[arg(long, default_value = "brainfit-features")]
        out: String,
        /// Images per forward pass.
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// The input size `HEIGHT WIDTH`, for a model that leaves it open.
        #[arg(long, num_args = 2, value_names = ["HEIGHT", "WIDTH"])]
        size: Option<Vec<usize>>,
        /// Number of in-process workers (default: one per CPU core).
        #[arg(long)]
        workers: Option<usize>,
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
        /// Do not write the HTML report at the end.
        #[arg(long)]
        no_report: bool,
    },
    /// Write a self-contained HTML report (maps, plots, tables; images embedded) of a
    /// finished job.
    Report {
        /// The job's output directory (a path or URL holding summary.json).
        output: String,
        /// Where to write the report (default: OUTPUT/report.html).
        #[arg(long)]
        out: Option<String>,
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
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// `file://` URL of a local directory (created if missing).
fn dir_url(dir: &Path) -> Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let abs = dir.canonicalize().with_context(|| format!("cannot resolve {}", dir.display()))?;
    Ok(format!("file://{}", abs.display()))
}

/// A path or URL as a URL (a relative path against the working directory).
fn to_url(path_or_url: &str) -> Result<String> {
    if path_or_url.contains("://") {
        return Ok(path_or_url.to_string());
    }
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    Ok(format!("file://{}", cwd.join(path_or_url).display()))
}

/// The file that marks a directory as made by `brainfit demo` (and so safe to replace).
const DEMO_MARKER: &str = ".brainfit-demo";

/// Checks that `demo` may write into `out`: it does not exist, is empty, or holds an earlier
/// demo (which is then replaced, and said so). Anything else is refused: a typo in `--out`
/// must not overwrite a lab's files.
fn claim_demo_dir(out: &Path) -> Result<()> {
    let Ok(mut entries) = std::fs::read_dir(out) else {
        if out.exists() {
            bail!("{}: exists and is not a directory; choose another --out", out.display());
        }
        eprintln!("brainfit demo: writing a synthetic study to {}", out.display());
        return Ok(());
    };
    if out.join(DEMO_MARKER).is_file() {
        eprintln!("brainfit demo: replacing the earlier demo in {}", out.display());
    } else if entries.next().is_some() {
        bail!(
            "{}: exists and was not made by `brainfit demo` (no {DEMO_MARKER} in it); \
             refusing to write into it: choose another --out, or remove it",
            out.display()
        );
    } else {
        eprintln!("brainfit demo: writing a synthetic study to {} (empty)", out.display());
    }
    Ok(())
}

/// Writes the HTML report of the finished job at `output` (to `dest`, default
/// `output/report.html`) and says where.
pub(crate) async fn write_report(store: &Store, output: &str, dest: Option<&str>) -> Result<()> {
    let url = brainfit_client::report::write_report(store, output, dest)
        .await
        .with_context(|| format!("cannot write the report of {output}"))?;
    println!("report: {url}");
    Ok(())
}

/// Reads a job file (path or URL) and checks it; relative inputs resolve against its directory.
async fn load_job(store: &Store, job: &str) -> Result<JobSpec> {
    Ok(JobText::read(store, job).await?.parse()?)
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

/// `"1 task"`, `"3 tasks"`.
fn count(n: impl std::fmt::Display, noun: &str) -> String {
    let n = n.to_string();
    if n == "1" { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

/// A value that may be missing, as `{:>7.4}` prints it (NaN when missing).
fn or_nan(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::NAN)
}

/// A count of FWE-significant items, or `-` without permutations.
fn significant(n: Option<usize>) -> String {
    n.map_or_else(|| "-".into(), |n| n.to_string())
}

/// Prints a finished run's summary; `seconds` is its wall-clock time.
fn print_summary(s: &Summary, seconds: f64, output: &str) {
    println!(
        "brainfit: job {} finished in {seconds:.1} s ({}, {}, {} backend)",
        s.name,
        count(s.tasks, "task"),
        count(s.workers, "worker"),
        s.linalg_backend
    );
    if let Some(perm) = &s.permutation {
        println!(
            "  {} ({} scheme); the smallest possible p is 1/{} = {:.2e}",
            count(perm.n, "permutation"),
            perm.scheme,
            perm.n + 1,
            perm.smallest_p
        );
    }
    for subject in &s.subjects {
        println!(
            "  {}: {} samples x {} voxels ({})",
            subject.name, subject.n_samples, subject.n_voxels, subject.precision
        );
        for (space, e) in subject.encoding.iter().flatten() {
            println!(
                "    encoding {space:<16} {:>5} features  {} mean score {:>7.4}  max {:>7.4} at {}  median {} {:.3e}",
                e.n_features,
                e.model,
                or_nan(e.score.mean),
                or_nan(e.score.max),
                e.score.describe_peak(),
                e.hyperparameter,
                or_nan(e.chosen_median)
            );
        }
        if let Some(c) = &subject.ceiling {
            println!(
                "    noise ceiling: mean {:.3}, {} reliable voxels (encoding/ceiling.nii.gz)",
                or_nan(c.mean),
                c.n_reliable
            );
        }
        for (bands, p) in subject.partition.iter().flatten() {
            println!(
                "    partition {bands:<15} mean R² {:>7.4}  ({} of {} voxels negative)",
                or_nan(p.mean),
                p.n_negative,
                p.n_finite
            );
        }
        for (target, d) in subject.decoding.iter().flatten() {
            println!(
                "    decoding {target:<16} {:>5} units  mean score {:>7.4}  identification {:.3} (chance {:.3}), pairwise {:.3}",
                d.score.n,
                or_nan(d.score.mean),
                d.top1_accuracy,
                d.top1_chance,
                d.pairwise_accuracy
            );
        }
        for (model, sl) in subject.searchlight.iter().flatten() {
            println!(
                "    searchlight {model:<15} max rho {:>7.4} at {} ({}, {} FWE-significant)",
                or_nan(sl.rho.max),
                sl.rho.describe_peak(),
                count(sl.rho.n, "centre"),
                significant(sl.significant_fwe_05)
            );
        }
        if !subject.rsa.is_empty() {
            println!("    ROI RSA: {} in rsa/compare.csv", count(subject.rsa.len(), "comparison"));
        }
    }
    for (model, t) in &s.time_resolved {
        println!(
            "  time-resolved {model:<13} max rho {:>7.4} ({}, {} FWE-significant)",
            or_nan(t.rho.max),
            count(t.rho.n, "time point"),
            significant(t.significant_fwe_05)
        );
    }
    for (map, g) in &s.group {
        let tfce = g.significant_tfce_fwe_05.map_or_else(String::new, |k| format!(", TFCE {k}"));
        let clusters = g
            .clusters_fwe_05
            .map_or_else(String::new, |k| format!(", {k} of {} clusters", g.clusters));
        // time courses: the recordings are the subjects, the items time points
        let time = g.source == "time_resolved";
        let peak = match (time, g.t.argmax) {
            (true, Some(t)) => format!("time point {t}"),
            _ => g.t.describe_peak(),
        };
        let exact = if g.exhaustive { ", every pattern" } else { "" };
        // a test that counts negative t names the most negative too
        let min = match (g.tail.as_str(), g.t_min) {
            ("greater", _) | (_, None) => String::new(),
            (_, Some(t)) => format!(", min t {t:.3}"),
        };
        println!(
            "  group {map:<21} max t {:>7.3} at {peak}{min} ({} {}, {} flips{exact}; FWE-significant: max-T {}{tfce}{clusters})",
            or_nan(g.t.max),
            g.n_subjects,
            if time { "recordings" } else { "subjects" },
            g.n_flips,
            g.significant_fwe_05
        );
    }
    for warning in &s.warnings {
        println!("  warning: {warning}");
    }
    println!("  results: {output}");
}

/// glibc gives every thread that allocates its own heap arena (up to 8 per core); compute
/// threads come and go, so freed blocks scatter over many arenas and resident memory of a
/// whole-brain run doubles (measured: 900 MB vs 480 MB). Two arenas keep it bounded at no
/// measurable cost: compute threads spend their time in GEMMs, not in malloc.
#[allow(unsafe_code)] // mallopt has no safe wrapper
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Runs a command; a failure prints its message and causes on one line and exits with 1.
fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(async_main()));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // the message and its causes, never a backtrace (RUST_BACKTRACE is for panics)
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn async_main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BRAINFIT_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if std::env::args().any(|a| a == "--token" || a.starts_with("--token=")) {
        eprintln!(
            "brainfit: warning: --token on the command line is visible to every user of this machine (ps); set BRAINFIT_TOKEN instead"
        );
    }
    let cli = Cli::parse();
    let store = Store::new();
    match cli.command {
        Command::Run { job, workers, break_lock, no_report } => {
            let spec = load_job(&store, &job).await?;
            if break_lock {
                let lock = brainfit_job::JobRun::lock_url(&spec);
                store.delete(&lock).await?;
                eprintln!("brainfit: removed the output's lock {lock}");
            }
            let output = spec.output.clone();
            let report = run(&store, spec, workers.unwrap_or_else(default_workers)).await?;
            print_summary(&report.summary, report.seconds, &output);
            if !no_report {
                write_report(&store, &output, None).await?;
            }
        }
        Command::Report { output, out } => {
            let out = out.as_deref().map(to_url).transpose()?;
            write_report(&store, &to_url(&output)?, out.as_deref()).await?;
        }
        Command::Validate { job } => {
            let spec = load_job(&store, &job).await?;
            let inventory = inputs::inspect(&store, &spec).await?;
            let tasks = brainfit_job::plan(&spec, &inventory);
            println!("{job}: valid");
            for (subject, inv) in spec.subjects.iter().zip(&inventory.subjects) {
                if subject.brain.is_none() {
                    println!("  no brain data: {} conditions (given RDMs)", inv.n_samples);
                    continue;
                }
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
            if let Some(p) = &spec.permutation {
                let why = match (p.scheme_by_default, p.scheme) {
                    (true, brainfit_job::spec::PermutationScheme::WithinGroup) => {
                        ", the default: the data have groups (runs)"
                    }
                    (true, _) => ", the default: the data have no groups",
                    (false, _) => "",
                };
                println!(
                    "  {} (seed {}), scheme {}{why}",
                    count(p.n, "permutation"),
                    p.seed,
                    p.scheme.describe()
                );
            }
            if spec.group.is_some() {
                let maps = brainfit_job::group::group_maps(&spec, &inventory).unwrap_or_default();
                for map in &maps {
                    let flips = brainfit_job::group::n_flips(&spec, map);
                    let exhaustive = brainfit_job::group::exhaustive(&spec, map);
                    let all = if exhaustive { " (every pattern: exact p-values)" } else { "" };
                    println!(
                        "  group test {}: {}{all}",
                        map.dir(),
                        count(flips as usize, "sign flip")
                    );
                }
            }
            println!("  {}; results would go to {}", count(tasks.len(), "task"), spec.output);
            for warning in &inventory.warnings {
                println!("  warning: {warning}");
            }
        }
        Command::Prepare { brain, out, mask } => {
            let started = std::time::Instant::now();
            let p = brainfit_job::prepare::voxel_major_copy(&store, &brain, mask.as_deref(), &out)
                .await
                .with_context(|| format!("nothing was written to {out}"))?;
            println!(
                "brainfit prepare: wrote {out} in {:.1} s: {} samples x {} voxels, {}, voxel-major \
                 (Fortran order), {:.1} MB; point the job's [data] brain at it, with the same mask",
                started.elapsed().as_secs_f64(),
                p.n_samples,
                p.n_voxels,
                if p.f64_data { "float64" } else { "float32" },
                p.bytes as f64 / 1e6
            );
        }
        Command::Extract { model, list_layers, images, layers, out, batch, size, workers } => {
            let size = size.map(|s| (s[0], s[1]));
            if list_layers {
                let bytes = store.get(&to_url(&model)?).await?;
                for layer in brainfit_extract::list_layers(&bytes, &model, size)? {
                    for (tensor, shape) in &layer.outputs {
                        let shape = shape.as_ref().map_or_else(
                            || "?".to_string(),
                            |s| s.iter().map(ToString::to_string).collect::<Vec<_>>().join("x"),
                        );
                        println!("{}\t{}\t{tensor}\t{shape}", layer.node, layer.op);
                    }
                }
                return Ok(());
            }
            let quote = |s: &str| serde_json::to_string(s).expect("a string serialises");
            let mut table = Vec::new();
            for entry in &layers {
                let (name, node) = entry
                    .split_once('=')
                    .with_context(|| format!("--layers {entry}: write name=node"))?;
                table.push(format!("{} = {}", quote(name), quote(node)));
            }
            let mut text = format!(
                "name = \"brainfit extract\"\noutput = {}\n[extract]\nmodel = {}\nimages = {}\nbatch = {batch}\nlayers = {{ {} }}\n",
                quote(&to_url(&out)?),
                quote(&to_url(&model)?),
                quote(&to_url(images.as_deref().unwrap_or_default())?),
                table.join(", ")
            );
            if let Some((h, w)) = size {
                text.push_str(&format!("[extract.preprocess]\nsize = [{h}, {w}]\n"));
            }
            let cwd = dir_url(Path::new("."))?;
            let spec = JobSpec::from_toml(&text, "brainfit extract", &cwd)?;
            let output = spec.output.clone();
            let report = run(&store, spec, workers.unwrap_or_else(default_workers)).await?;
            print_summary(&report.summary, report.seconds, &output);
        }
        Command::Demo { out, workers, no_report } => {
            claim_demo_dir(&out)?;
            let out_url = dir_url(&out)?;
            std::fs::write(out.join(DEMO_MARKER), "made by `brainfit demo`\n")
                .with_context(|| format!("cannot write {}", out.join(DEMO_MARKER).display()))?;
            let study = demo::generate(&store, &out_url).await?;
            let spec =
                JobSpec::from_toml(&study.job, &format!("{}/job.toml", out.display()), &out_url)?;
            let output = spec.output.clone();
            let report = run(&store, spec, workers.unwrap_or_else(default_workers)).await?;
            print_summary(&report.summary, report.seconds, &output);
            println!(
                "planted effects ({} mask voxels, {} stimuli):",
                study.n_voxels,
                demo::RUNS.0 * demo::RUNS.1
            );
            let (lines, all_found) = demo::check(&store, &output, &study).await?;
            lines.iter().for_each(|l| println!("{l}"));
            if !no_report {
                write_report(&store, &output, None).await?;
            }
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
