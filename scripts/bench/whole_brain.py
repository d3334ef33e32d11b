"""A whole-brain, many-subject brainfit run, distributed over worker processes on loopback with
a moto S3 server (issue 12, item 6). Run it through `scripts/bench/whole_brain.sh`, which sets
up the venvs and the release binary; directly:

    .venv-bench/bin/python scripts/bench/whole_brain.py [--scale F] [--workers N] [--threads T]

The study (generated, seeded): S subjects (4) x 3 layers (p = 512, 4,096 and 50,000 features:
the last one is fitted in the dual form), n = 1,000 stimuli, 60,000 voxels in a compact mask;
encoding (nested ridge: 10 alphas, 2 outer x 5 inner folds), a radius-3 searchlight against the
layers' RDMs (correlation RDMs, Spearman), and 100 permutations for both. The activations are
the same for every subject (one stimulus set); each subject has its own brain data, where layer
p = 512 drives a third of the voxels.

--scale F multiplies the voxel count (the centres with it) and nothing else: every cost but
the per-space decompositions and the model RDMs is linear in voxels, so the figures of a scaled
run extrapolate to the full brain (the report prints both, the extrapolation marked so).

Everything lives on S3 (moto_server from .venv-test, one bucket): inputs, outputs and the job's
parts; the coordinator keeps its state on local disk. Reported, from one run: wall time of
`brainfit submit --wait`; per task kind (from the workers' BRAINFIT_LOG=brainfit_worker=debug
lines): tasks, summed compute and load seconds, read requests and bytes; per process: CPU
seconds and peak RSS (VmHWM from /proc, read before the process is stopped).
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "target" / "release" / "brainfit"
MOTO = Path(os.environ.get("TEST_VENV", ROOT / ".venv-test")) / "bin" / "moto_server"
FULL_VOXELS = 60_000
BUCKET = "whole-brain"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=float, default=1.0, help="voxels = 60,000 x scale")
    p.add_argument("--subjects", type=int, default=4)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--layers", default="512,4096,50000", help="features per layer")
    p.add_argument("--perms", type=int, default=100)
    p.add_argument("--workers", type=int, default=2, help="worker processes")
    p.add_argument("--threads", type=int, default=1, help="--threads of each worker")
    p.add_argument("--prepare", action="store_true",
                   help="run `brainfit prepare` on every brain matrix and point the job at the voxel-major copies")
    p.add_argument("--whole-brain-bytes", type=int,
                   help="BRAINFIT_WHOLE_BRAIN_BYTES of the workers (0: every task reads only its voxels)")
    p.add_argument("--workdir", help="keep the data, logs and outputs here (default: a temp dir)")
    p.add_argument("--json", help="also write the report as JSON to this file")
    return p.parse_args()


def compact_mask(n_voxels: int):
    """A ball-like mask of exactly n_voxels voxels: the n nearest to the grid's centre."""
    side = int(np.ceil((n_voxels * 6 / np.pi) ** (1 / 3))) + 4
    grid = np.indices((side, side, side)).reshape(3, -1).T
    d = ((grid - (side - 1) / 2) ** 2 * [1.0, 1.1, 1.2]).sum(1)  # an ellipsoid, no ties
    mask = np.zeros(side ** 3, dtype=np.uint8)
    mask[np.argsort(d, kind="stable")[:n_voxels]] = 1
    return mask.reshape(side, side, side)


def generate(data: Path, args, n_voxels: int):
    rng = np.random.default_rng(2026)
    layers = [int(p) for p in args.layers.split(",")]
    mask = compact_mask(n_voxels)
    nib.save(nib.Nifti1Image(mask, np.diag([2.0, 2.0, 2.0, 1.0])), data / "mask.nii.gz")
    n = args.samples
    acts = {}
    for p in layers:
        x = rng.standard_normal((n, p), dtype=np.float32)
        np.save(data / f"layer{p}.npy", x)
        acts[p] = x
    driver = acts[layers[0]]
    driven = n_voxels // 3
    for s in range(args.subjects):
        y = rng.standard_normal((n, n_voxels), dtype=np.float32)
        w = rng.standard_normal((driver.shape[1], driven), dtype=np.float32) / np.sqrt(driver.shape[1])
        y[:, :driven] += 0.5 * (driver @ w)
        np.save(data / f"brain{s}.npy", y)
    return layers


def job_text(args, layers, bucket_url: str, brain: str):
    features = "\n".join(f'layer{p} = "{bucket_url}/data/layer{p}.npy"' for p in layers)
    subjects = "\n".join(
        f'[[subjects]]\nname = "sub{s:02}"\n[subjects.data]\nbrain = "{bucket_url}/data/{brain}{s}.npy"\n'
        f'mask = "{bucket_url}/data/mask.nii.gz"\n'
        for s in range(args.subjects)
    )
    return f"""name = "whole-brain"
output = "{bucket_url}/out"

[features]
{features}

{subjects}
[encoding]
alphas = {{ logspace = [-2, 5, 10] }}
cv = {{ kind = "kfold", k = 2 }}
inner_cv = {{ kind = "kfold", k = 5 }}

[searchlight]
radius = 3.0

""" + (f"\n[permutation]\nn = {args.perms}\nseed = 0\n" if args.perms else "")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body=None):
    req = urllib.request.Request(url, data=body, method=method)
    with urllib.request.urlopen(req, timeout=600) as r:
        return r.status


def proc_figures(pid: int):
    """(CPU seconds, peak RSS in MB) of a live process, from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    hwm = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return cpu, int(hwm.group(1)) / 1024


TASK_LINE = re.compile(r"task computed task=(\S+) load_s=(\S+) read_requests=(\d+) read_bytes=(\d+) compute_s=(\S+)")


def task_figures(logs):
    kinds = defaultdict(lambda: dict(tasks=0, compute_s=0.0, load_s=0.0, read_requests=0, read_bytes=0))
    for log in logs:
        for m in TASK_LINE.finditer(Path(log).read_text(errors="replace")):
            kind = m.group(1).split("-")[1]
            k = kinds[kind]
            k["tasks"] += 1
            k["load_s"] += float(m.group(2))
            k["read_requests"] += int(m.group(3))
            k["read_bytes"] += int(m.group(4))
            k["compute_s"] += float(m.group(5))
    return dict(kinds)


def main():
    args = parse_args()
    if not BIN.exists():
        raise SystemExit(f"{BIN} is missing: run scripts/bench/whole_brain.sh (it builds it)")
    if not MOTO.exists():
        raise SystemExit(f"{MOTO} is missing: run scripts/bench/whole_brain.sh (it sets up .venv-test)")
    n_voxels = max(1000, round(FULL_VOXELS * args.scale))
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="brainfit-wb-"))
    (work / "data").mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)
    t0 = time.perf_counter()
    layers = generate(work / "data", args, n_voxels)
    print(f"whole_brain: {args.subjects} subjects x {n_voxels} voxels x {args.samples} samples, "
          f"layers {layers}, {args.perms} permutations; data generated in {time.perf_counter() - t0:.0f} s",
          flush=True)

    procs = {}
    try:
        port = free_port()
        procs["moto"] = subprocess.Popen([str(MOTO), "-H", "127.0.0.1", "-p", str(port)],
                                         stdout=subprocess.DEVNULL, stderr=open(work / "logs/moto.log", "w"))
        endpoint = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                http("PUT", f"{endpoint}/{BUCKET}")
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit("moto_server did not start: see logs/moto.log")
        t0 = time.perf_counter()
        # with boto3 from .venv-test (moto's own dependency): moto wants signed object PUTs
        upload = ("import boto3, sys; from pathlib import Path; s3 = boto3.client('s3', endpoint_url=sys.argv[1], "
                  "aws_access_key_id='testing', aws_secret_access_key='testing', region_name='us-east-1')\n"
                  "for f in sorted(Path(sys.argv[2]).iterdir()): s3.upload_file(str(f), sys.argv[3], 'data/' + f.name)")
        subprocess.run([str(MOTO.parent / "python"), "-c", upload, endpoint, str(work / "data"), BUCKET], check=True)
        print(f"whole_brain: uploaded to moto in {time.perf_counter() - t0:.0f} s", flush=True)
        bucket_url = f"s3://{BUCKET}"
        env = dict(os.environ, AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing",
                   AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1", BRAINFIT_TOKEN="bench")
        brain = "brain"
        if args.prepare:
            t0 = time.perf_counter()
            for s in range(args.subjects):
                subprocess.run([str(BIN), "prepare", f"{bucket_url}/data/brain{s}.npy",
                                f"{bucket_url}/data/voxel-major{s}.npy"], env=env, check=True,
                               stdout=subprocess.DEVNULL)
            brain = "voxel-major"
            print(f"whole_brain: prepared voxel-major copies in {time.perf_counter() - t0:.1f} s", flush=True)
        (work / "job.toml").write_text(job_text(args, layers, bucket_url, brain))
        state = work / "state"
        shutil.rmtree(state, ignore_errors=True)
        procs["coordinator"] = subprocess.Popen(
            [str(BIN), "coordinator", "--listen", "127.0.0.1:0", "--state", str(state)], env=env,
            stdout=subprocess.PIPE, stderr=open(work / "logs/coordinator.log", "w"), text=True)
        line = procs["coordinator"].stdout.readline()
        address = line.split("listening on ")[1].split()[0]
        url = f"http://{address}"
        worker_env = dict(env, BRAINFIT_LOG="brainfit_worker=debug")
        if args.whole_brain_bytes is not None:
            worker_env["BRAINFIT_WHOLE_BRAIN_BYTES"] = str(args.whole_brain_bytes)
        logs = []
        for w in range(args.workers):
            log = work / f"logs/worker{w}.log"
            logs.append(log)
            procs[f"worker{w}"] = subprocess.Popen(
                [str(BIN), "worker", "--coordinator", url, "--threads", str(args.threads)],
                env=worker_env, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
        t0 = time.perf_counter()
        submit = subprocess.run([str(BIN), "submit", str(work / "job.toml"), "--wait", "--coordinator", url],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wall = time.perf_counter() - t0
        if submit.returncode != 0:
            sys.stdout.write(submit.stdout)
            raise SystemExit(f"the job failed; logs in {work / 'logs'}")
        processes = {name: proc_figures(p.pid) for name, p in procs.items()}
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGKILL)
            p.wait()

    kinds = task_figures(logs)
    factor = FULL_VOXELS / n_voxels
    report = dict(subjects=args.subjects, voxels=n_voxels, samples=args.samples, layers=layers,
                  permutations=args.perms, workers=args.workers, threads=args.threads, wall_s=wall,
                  kinds=kinds, processes={k: dict(cpu_s=c, peak_rss_mb=r) for k, (c, r) in processes.items()})
    print(f"\nwall time (submit --wait): {wall:.1f} s on {args.workers} worker processes x "
          f"{args.threads} thread(s)\n")
    print("| task kind | tasks | compute s (summed) | load s (summed) | read requests | MB read |"
          + (" compute s at 60,000 voxels (extrapolated) |" if factor != 1 else ""))
    print("|---|---|---|---|---|---|" + ("---|" if factor != 1 else ""))
    for kind, k in sorted(kinds.items()):
        extra = f" {k['compute_s'] * factor:.0f} |" if factor != 1 else ""
        print(f"| {kind} | {k['tasks']} | {k['compute_s']:.1f} | {k['load_s']:.1f} | {k['read_requests']} | "
              f"{k['read_bytes'] / 1e6:.1f} |{extra}")
    print("\n| process | CPU s | peak RSS MB |\n|---|---|---|")
    for name, (cpu, rss) in processes.items():
        print(f"| {name} | {cpu:.1f} | {rss:.0f} |")
    if factor != 1:
        total = sum(k["compute_s"] for k in kinds.values()) * factor
        cores = args.workers * args.threads
        print(f"\nextrapolated to 60,000 voxels (x{factor:.1f}, linear in voxels and centres; the per-space "
              f"decompositions and model RDMs, which do not grow with voxels, are scaled too, so this errs "
              f"high): about {total / 60:.0f} min of compute, {total / 60 / cores:.0f} min of wall time on "
              f"{cores} cores")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"\ndata, job, logs and state in {work}")


if __name__ == "__main__":
    main()
