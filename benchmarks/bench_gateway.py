"""Dask Gateway on a real one-node SLURM (the facility's set-up): start-up, elasticity, throughput.

1. ``new_cluster()`` to the first connected worker (a scheduler job, then a worker job).
2. ``adapt(0, 4)`` under a queue of tasks: time to 4 connected workers. Target < 10 s.
3. Idle release: from the last task's end to all worker jobs gone from ``squeue``, with a 10 s
   idle-worker timeout. Target < 30 s.
4. Z->mumu over 2M real events (the AGC example file replicated into 10 files of 200k) on 2
   gateway workers vs casa's LocalCluster with 2 workers, same run, histograms checked equal.
   Target >= 0.9x.

    python benchmarks/bench_gateway.py [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import time_to_workers, write_section  # noqa: E402
from bench_open import SOURCE, replicate  # noqa: E402

import casa_compute  # noqa: E402
from casa_compute.clusters.gateway import CasaGatewayCluster  # noqa: E402
from casa_compute.processors import DimuonProcessor  # noqa: E402
from casa_facility.gateway import GatewayService  # noqa: E402
from casa_facility.services.pki import TestIssuer, write_token_file  # noqa: E402
from casa_facility.services.slurm import SlurmService  # noqa: E402

warnings.filterwarnings("ignore", category=RuntimeWarning)


def squeue_jobs() -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %o"], capture_output=True, text=True).stdout
    return out.split("\n") if out.strip() else []


def worker_jobs() -> int:
    """Gateway worker jobs in the queue (their output file names say so)."""
    out = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True).stdout
    return sum(1 for line in out.splitlines() if "StdOut=" in line and "dask-worker-" in line
               and not any(f"JobState={s}" in line for s in ("COMPLETED", "CANCELLED", "FAILED")))


def _until(pred, timeout: float, step: float = 0.05) -> float | None:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if pred():
            return time.perf_counter() - t0
        time.sleep(step)
    return None


def bench_startup(kw) -> tuple[float, float]:
    t0 = time.perf_counter()
    with CasaGatewayCluster(**kw, adapt=(1, 1)) as c:
        running = time.perf_counter() - t0
        with c.get_client(set_as_default=False) as client:
            client.wait_for_workers(1, timeout=120)
            first = time.perf_counter() - t0
    return running, first


def bench_elastic(kw, tasks: int = 120, task_seconds: float = 0.5, idle: float = 10.0):
    with CasaGatewayCluster(**kw, adapt=(0, 4), idle_worker_timeout=idle) as c, \
            c.get_client(set_as_default=False) as client:
        first, four, futs, t0 = time_to_workers(client, tasks, task_seconds)
        client.gather(futs)
        done = time.perf_counter()
        del futs
        gone = _until(lambda: worker_jobs() == 0, 120, 0.2)
        cluster_jobs = len(squeue_jobs())  # the scheduler job stays until idle_timeout
    return first, four, done - t0, gone, cluster_jobs


def bench_zmumu(kw, files, repeat: int, chunksize: int):
    fs = {"zmumu": [str(f) for f in files]}
    ref, _ = casa_compute.run(DimuonProcessor(), fs, chunksize=chunksize, progress=False)
    times: dict[str, list[float]] = {"gateway, 2 SLURM workers": [], "casa LocalCluster, 2 workers": []}
    with CasaGatewayCluster(**kw, adapt=(2, 2)) as g, g.get_client(set_as_default=False) as gc, \
            casa_compute.cluster("local", n_workers=2, threads_per_worker=1) as lc:
        from distributed import Client

        gc.wait_for_workers(2, timeout=120)
        with Client(lc, security=lc.security, set_as_default=False) as cl:
            clients = {"gateway, 2 SLURM workers": gc, "casa LocalCluster, 2 workers": cl}
            for client in clients.values():  # warm-up and correctness
                with client.as_current():  # the runner waits through the current client
                    out, _ = casa_compute.run(DimuonProcessor(), fs, cluster=client, chunksize=chunksize,
                                              progress=False)
                np.testing.assert_array_equal(out["zmumu"]["mass"].values(), ref["zmumu"]["mass"].values())
            for _ in range(repeat):
                for name, client in clients.items():
                    with client.as_current():
                        t0 = time.perf_counter()
                        casa_compute.run(DimuonProcessor(), fs, cluster=client, chunksize=chunksize,
                                         progress=False)
                        times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--events-per-file", type=int, default=200_000)
    ap.add_argument("--chunksize", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true", help="smoke run; prints, leaves RESULTS.md alone")
    args = ap.parse_args()
    if args.quick:
        args.repeat, args.files, args.events_per_file = 1, 4, 50_000
    if not SOURCE.exists():
        sys.exit(f"missing {SOURCE}: the benchmark needs ../shared/data beside the repository")
    load0 = os.getloadavg()[0]
    base = Path(tempfile.mkdtemp(prefix="casa-bench-gateway-", dir="/tmp"))
    os.chmod(base, 0o755)
    try:
        med, times, total, running, first, efirst, four, done, gone = _measure(base, args)
    finally:
        import shutil

        shutil.rmtree(base, ignore_errors=True)
    _report(args, load0, med, times, total, running, first, efirst, four, gone)


def _measure(base: Path, args):
    issuer = TestIssuer()
    with SlurmService(base / "slurm") as _slurm, \
            GatewayService(base / "gateway", issuer=issuer, backend="slurm") as gw:
        tok = write_token_file(base / "token", issuer.mint("storage.read:/ compute.create", sub="bench"))
        kw = {"address": gw.address, "proxy_address": gw.proxy_address, "ca": str(gw.ca_file),
              "token": str(tok)}
        running, first = bench_startup(kw)
        print(f"startup: running {running:.2f} s, first worker {first:.2f} s", flush=True)
        efirst, four, done, gone, left = bench_elastic(kw, tasks=40 if args.quick else 120)
        print(f"elastic: first {efirst:.2f} s, 4 workers {four:.2f} s, done {done:.2f} s, "
              f"worker jobs gone {gone} s after the last task", flush=True)
        files = replicate(base / "data", args.files, args.events_per_file)
        total = args.files * args.events_per_file
        med, times = bench_zmumu(kw, files, args.repeat, args.chunksize)
        print(med, flush=True)
    return med, times, total, running, first, efirst, four, done, gone


def _report(args, load0, med, times, total, running, first, efirst, four, gone) -> None:
    import dask

    load1 = os.getloadavg()[0]
    environ = dask.config.get("casa-compute.local.worker-environ", None) or {}
    local_env = ("with `MALLOC_TRIM_THRESHOLD_` unset (`casa-compute.local.worker-environ`)"
                 if "MALLOC_TRIM_THRESHOLD_" in environ and environ["MALLOC_TRIM_THRESHOLD_"] is None
                 else "which exports distributed's `MALLOC_TRIM_THRESHOLD_=65536`")
    g, lc = med["gateway, 2 SLURM workers"], med["casa LocalCluster, 2 workers"]
    rows = "\n".join(f"| {k} | {med[k]:.2f} | {min(v):.2f}–{max(v):.2f} | {total / med[k] / 1e6:.2f} |"
                     for k, v in times.items())
    body = f"""## Dask Gateway on SLURM (`bench_gateway.py`)

Real one-node SLURM 22.05 on loopback, `dask-gateway-server` 2026.3 with the SLURM backend as
`casa facility up` runs it (TLS everywhere, the facility's WLCG token), one job per scheduler and
per worker, workers without a nanny.

| step | seconds | target |
|---|---|---|
| `new_cluster()` to cluster running (scheduler job up) | {running:.2f} | |
| `new_cluster()` to first connected worker | {first:.2f} | |
| `adapt(0, 4)`, {40 if args.quick else 120} queued tasks of 0.5 s: first worker | {efirst:.2f} | |
| `adapt(0, 4)` under that queue: **4 workers connected** | **{four:.2f}** | < 10 |
| last task's end to **all worker jobs gone from squeue** (idle-worker timeout 10 s) | **{gone:.2f}** | < 30 |

**Z->mumu, {total:,} real events** (the AGC example file replicated into {args.files} files,
chunks of {args.chunksize:,}), histograms checked equal to an in-process run, median of
{args.repeat} alternating runs on warm workers:

| cluster | median wall s | range s | M events/s |
|---|---|---|---|
{rows}

**gateway / LocalCluster throughput: {lc / g:.2f}x** (target >= 0.9x). Worker set-ups: gateway
workers are SLURM jobs without a nanny (so no `MALLOC_TRIM_THRESHOLD_`; glibc keeps its dynamic
mmap threshold, see the notes) and with distributed's profiler on; casa's LocalCluster workers run
under a nanny, {local_env}.
Load average {load0:.1f} at start, {load1:.1f} at end (2 cores shared with other users)."""
    print(body)
    if not args.quick:
        write_section("bench_gateway", body)


if __name__ == "__main__":
    main()
