"""Concurrency sweep: 1..32 readers per access path, where each saturates on this machine and why.

    .venv/bin/python benchmarks/bench_concurrency.py [--quick] [--duration 1.5] [--out DIR]

Runs ``casa_bench.sweep`` (services started by the bench, all on 127.0.0.1) on the real 100k-event
CMS dimuon file (``../shared/data/agc/open-data-example.root``, 3.6 MB):

* whole files and random 64 KiB ranges through local disk, S3 on SeaweedFS (pyarrow's client),
  S3 on Ceph RGW (when ``radosgw`` is installed), the XRootD origin, XCache cold and warm;
* column reads (3 Muon columns of every event): local uproot vs a Skyhook projection pushdown.

Readers are threads of one process (``--mode threads``, the default of ``casa bench``). Per level:
aggregate MB/s, p99, the client's and each server process's CPU (from /proc/<pid>/stat, in
cores). The saturation point is the fewest readers within 10 % of the best level's MB/s;
the busiest process there is named, with the machine's load. Writes a section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("CASA_SHARED_DATA", ROOT.parent / "shared" / "data"))

from benchmarks._results import write_section  # noqa: E402

BYTES = ["local", "s3-arrow", "xrootd", "xcache-cold", "xcache-warm"]


def run(quick: bool, duration: float, out: Path) -> list[tuple[str, dict[str, Any]]]:
    from casa_bench import sweep

    agc = SHARED / "agc" / "open-data-example.root"
    if not agc.is_file():
        sys.exit(f"missing {agc}: the benchmark reads the shared real data (set CASA_SHARED_DATA)")
    conc = [1, 4, 16] if quick else [1, 2, 4, 8, 16, 32]
    kw = dict(concurrency=conc, duration=duration, max_bytes=2 << 30, out_dir=out, log=print)
    runs = [("seaweedfs", sweep([str(agc)], BYTES, patterns=["whole", "ranges:64k"], **kw)),
            ("skyhook", sweep([str(agc)], ["local", "skyhook"], patterns=["columns"], **kw))]
    if shutil.which("radosgw"):
        runs.append(("ceph-rgw", sweep([str(agc)], ["s3-arrow"], patterns=["whole", "ranges:64k"],
                                       server="ceph-rgw", embedded=True, **kw)))
    else:
        print("radosgw not installed: no Ceph RGW sweep")
    return runs


def _level(r: dict[str, Any], c: int | None) -> dict[str, Any] | None:
    return next((lv for lv in r["levels"] if lv["concurrency"] == c), None)


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def load_runs(directory: Path) -> list[tuple[str, dict[str, Any]]]:
    """The sweeps an earlier run wrote to ``directory`` (``--from``), in the order they ran."""
    runs = []
    for path in sorted(directory.glob("sweep-*.json")):
        doc = json.loads(path.read_text())
        server = "skyhook" if "skyhook" in doc["results"] else doc["meta"].get("embedded_server") or "s3"
        runs.append((server, doc))
    return runs


def _busiest(lv: dict[str, Any]) -> str:
    procs = {"client (bench process)": lv["client_cores"], **lv["server_cores"]}
    total = sum(procs.values())
    name, cores = max(procs.items(), key=lambda kv: kv[1])
    parts = ", ".join(f"{k} {v:.2f}" for k, v in procs.items())
    ncpu = os.cpu_count() or 1
    load = lv.get("loadavg", 0.0)
    if total >= 0.85 * ncpu:
        why = "the machine's CPUs"
    elif cores >= 0.85:
        why = f"{name} at ~one core (one GIL / event loop)"
    elif load > ncpu:
        why = f"CPU time, shared: load {load:.1f} on {ncpu} cores left ours {total:.2f}"
    else:
        why = "no process CPU-bound: latency per request"
    return f"{why} ({parts})"


def section(runs: list[tuple[str, dict[str, Any]]], quick: bool, load: tuple[list[float], list[float]]) -> str:
    flag = " --quick" if quick else ""
    lines = [f"## Concurrency sweep: 1..32 readers per access path (`bench_concurrency.py{flag}`)",
             "",
             "Threads in one client process; levels of "
             f"{runs[0][1]['meta']['duration_s']} s; the real 100k-event dimuon file (3.6 MB, page-cached). "
             "Saturation: the fewest readers within 10 % of the best level's MB/s. Cores: CPU seconds / "
             "wall seconds of the level, from /proc/<pid>/stat (client: this process; servers: ours). Column reads "
             "count the bytes uproot requests for those columns (recorded); wire/requested is what the path "
             "moved per such byte (through a counting relay, one untimed pass).",
             ""]
    b, a = load
    lines.append(f"**The machine was loaded** (shared with other engineers): load average {b[0]:.1f} / {b[1]:.1f} / "
                 f"{b[2]:.1f} before, {a[0]:.1f} / {a[1]:.1f} / {a[2]:.1f} after, on {os.cpu_count()} cores. "
                 "Absolute numbers are low and noisy; read the shapes and the ratios." if b[0] > 1.5 else
                 f"The machine was quiet: load average {b[0]:.1f} before the sweeps; {a[0]:.1f} after (that "
                 f"includes the sweeps' own client and servers), on {os.cpu_count()} cores.")
    lines += ["", "| S3 server | method | pattern | saturates at | MB/s there | best MB/s | p99 ms at 16 | "
              "CPU s/GB client / servers | wire/requested | what limits it at saturation (cores per process, measured) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    figures: dict[str, Any] = {}
    for server, doc in runs:
        for m, pats in doc["results"].items():
            for p, r in pats.items():
                if not r["levels"]:
                    lines.append(f"| {server} | {m} | {p} | n/a: {r.get('unsupported') or r.get('error')} | | | | | | |")
                    continue
                sat = r["saturation"]
                lv = _level(r, sat)
                best = max(x["mb_s"] for x in r["levels"])
                at16 = _level(r, 16)
                p99 = f"{at16['p99_ms']:.1f}" if at16 else "n/a"
                cpu = f"{_num(lv['client_cpu_s_per_gb'])} / {_num(lv['server_cpu_s_per_gb'])}"
                amp = (r.get("bytes") or {}).get("amplification")
                amp_s = "n/a" if amp is None else f"{amp:.3f}"
                lines.append(f"| {server} | {m} | {p} | {sat} | {lv['mb_s']:.1f} | {best:.1f} | {p99} | {cpu} "
                             f"| {amp_s} | {_busiest(lv)} |")
                figures[f"{server}/{m}/{p}"] = {"sat": sat, "mb_s": lv["mb_s"], "p99_16": at16 and at16["p99_ms"]}
    lines += ["", "MB/s per level (readers: MB/s):", ""]
    for server, doc in runs:
        for m, pats in doc["results"].items():
            for p, r in pats.items():
                if r["levels"]:
                    pts = ", ".join(f"{lv['concurrency']}: {lv['mb_s']:.0f}" for lv in r["levels"])
                    lines.append(f"- {server} {m} {p}: {pts}")
    lines += ["", *_headlines(runs, figures)]
    return "\n".join(lines)


def _headlines(runs: list[tuple[str, dict[str, Any]]], figs: dict[str, Any]) -> list[str]:
    out = []
    s3 = figs.get("seaweedfs/s3-arrow/ranges:64k")
    if s3 and s3["p99_16"] is not None:
        out.append(f"- S3 (SeaweedFS, pyarrow) 64 KiB ranged reads at 16 readers: p99 **{s3['p99_16']:.1f} ms**.")
    ceph = figs.get("ceph-rgw/s3-arrow/ranges:64k")
    if ceph and ceph["p99_16"] is not None:
        out.append(f"- S3 (Ceph RGW, pyarrow) 64 KiB ranged reads at 16 readers: p99 **{ceph['p99_16']:.1f} ms**.")
    doc = runs[0][1]["results"]
    for p in ("whole", "ranges:64k"):
        warm, local = doc["xcache-warm"][p], doc["local"][p]
        sat = warm["saturation"]
        lw, ll = _level(warm, sat), _level(local, sat)
        if lw and ll:
            out.append(f"- XCache warm / local, {p}, at XCache's saturation point ({sat} readers): "
                       f"**{lw['mb_s'] / ll['mb_s']:.3f}** ({lw['mb_s']:.0f} vs {ll['mb_s']:.0f} MB/s).")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1, 4, 16 readers, 0.5 s levels")
    ap.add_argument("--duration", type=float, default=None, help="seconds per level (default 1.5, quick 0.5)")
    ap.add_argument("--out", default="/tmp/casa-bench-concurrency", help="JSON/CSV/PNG/HTML of each sweep")
    ap.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    ap.add_argument("--from", dest="src", default=None, help="re-write the section from an earlier run's --out")
    args = ap.parse_args()
    duration = args.duration or (0.5 if args.quick else 1.5)
    t0 = time.time()
    if args.src:
        runs = load_runs(Path(args.src))
        meta = runs[0][1]["meta"]
        before, after = list(meta["machine"]["loadavg_before"]), list(runs[-1][1]["meta"]["loadavg_after"])
    else:
        before = list(os.getloadavg())
        runs = run(args.quick, duration, Path(args.out))
        after = list(os.getloadavg())
    body = section(runs, args.quick, (before, after))
    when = f"sweeps of {runs[0][1]['meta']['time']}" if args.src else f"{time.time() - t0:.0f} s wall"
    body += (f"\n\n({when}.) How to read it: client and servers share the machine's {os.cpu_count()} cores (and, "
             "under load, other work), so the saturation points say how far concurrency hides per-request latency "
             "on this box, not what the servers can do on their own hardware; the CPU s/GB columns (client process "
             "vs our servers, from /proc) are the load-independent part: where each path spends its CPU per byte. Full outputs: "
             "`casa bench --concurrency` JSON/CSV/PNG/HTML.")
    print(body)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "summary.json").write_text(json.dumps([[s, d["meta"]] for s, d in runs], default=str))
    if not args.no_write:
        print(write_section("bench_concurrency", body))


if __name__ == "__main__":
    main()
