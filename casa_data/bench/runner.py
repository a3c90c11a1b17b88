"""Run the access-path comparison: the same files through every method, repeated and checked.

Workloads per method (each repetition runs every method once, interleaved, so load changes hit
all methods alike):

* ``whole``: every byte of every file, sequentially (MB/s);
* ``columns``: a few columns of every event (events/s) through uproot or pyarrow;
* ``ranges``: many small random ranges, one request each (latency p50/p99, ms).

Then one untimed pass per method and workload counts the bytes transferred (wire bytes through a
counting relay for S3, bytes read for local files). Sizes and event counts are checked against
the files: a method that returns other numbers fails the run.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import CasaError
from .methods import BenchContext, BenchFile, BenchMethod, get_method

__all__ = ["bench_files", "run_bench", "summarize", "DEFAULT_METHODS"]

DEFAULT_METHODS = ["local", "s3fs", "s3-arrow"]


def _format(path: Path) -> str:
    return "parquet" if path.suffix.lower() in (".parquet", ".parq", ".pq") else "root"


def bench_files(paths: Sequence[str | os.PathLike], tree: str = "Events") -> list[BenchFile]:
    """Local files to benchmark, with their size, format and event count."""
    out = []
    for p in map(Path, paths):
        if not p.is_file():
            raise CasaError(f"bench input {p} is not a local file")
        fmt = _format(p)
        if fmt == "parquet":
            import pyarrow.parquet as pq

            nevents = pq.ParquetFile(p).metadata.num_rows
        else:
            import uproot

            with uproot.open(p) as f:
                nevents = int(f[tree].num_entries)
        out.append(BenchFile(p, p.stat().st_size, nevents, fmt, tree))
    return out


def default_columns(f: BenchFile, n: int = 3) -> list[str]:
    if f.format == "parquet":
        import pyarrow.parquet as pq

        names = pq.ParquetFile(f.local).schema_arrow.names
    else:
        import uproot

        with uproot.open(f.local) as fh:
            names = list(fh[f.tree].keys())
    muon = [c for c in names if c.startswith("Muon_")]
    return (muon or names)[:n]


def _stats(values: list[float]) -> dict[str, Any]:
    med = statistics.median(values)
    return {"median": med, "min": min(values), "max": max(values),
            "spread": (max(values) - min(values)) / med if med else 0.0, "runs": values}


def _percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


def _ranges(files: list[BenchFile], n: int, size: int, seed: int) -> list[tuple[BenchFile, int, int]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        f = files[rng.randrange(len(files))]
        length = min(size, f.size)
        out.append((f, rng.randrange(0, f.size - length + 1), length))
    return out


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def _check(method: str, what: str, got: int, want: int) -> None:
    if got != want:
        raise CasaError(f"bench method {method!r}, {what}: got {got:,}, expected {want:,}")


def run_bench(files: list[BenchFile], methods: Sequence[str] = DEFAULT_METHODS, *,
              columns: list[str] | None = None, reps: int = 5, nranges: int = 200,
              range_size: int = 64 << 10, s3_base: str | None = None,
              s3_options: dict[str, Any] | None = None, workdir: Path | None = None,
              seed: int = 1, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Measure every method on ``files``; returns the result document (see :func:`summarize`)."""
    if not files:
        raise CasaError("nothing to benchmark: no files")
    columns = columns or default_columns(files[0])
    ctx = BenchContext(files, columns, s3_base, dict(s3_options or {}), Path(workdir or "."))
    total_size = sum(f.size for f in files)
    total_events = sum(f.nevents for f in files)
    objs: dict[str, BenchMethod] = {}
    raw: dict[str, dict[str, list]] = {}
    try:
        for name in methods:
            m = get_method(name)
            m.setup(ctx)
            objs[name] = m
            raw[name] = {"whole_s": [], "columns_s": [], "latency_ms": [], "batch_s": []}
            # warm-up: connections, imports, the page cache for local reads
            m.read_whole(files[0])
            m.read_columns(files[0], columns)
            m.read_range(files[0], 0, min(range_size, files[0].size))
        for r in range(reps):
            plan = _ranges(files, nranges, range_size, seed + r)
            for name, m in objs.items():
                log(f"rep {r + 1}/{reps}: {name}")
                t, n = _timed(lambda: sum(m.read_whole(f) for f in files))
                _check(name, "whole-file bytes", n, total_size)
                raw[name]["whole_s"].append(t)
                t, n = _timed(lambda: sum(m.read_columns(f, columns) for f in files))
                _check(name, "column-subset events", n, total_events)
                raw[name]["columns_s"].append(t)
                for f, start, length in plan:
                    t, n = _timed(lambda: m.read_range(f, start, length))
                    _check(name, f"range {start}+{length} of {f.name}", n, length)
                    raw[name]["latency_ms"].append(t * 1e3)
                t, n = _timed(lambda: m.read_ranges(plan))
                _check(name, "vector read bytes", n, sum(length for _, _, length in plan))
                raw[name]["batch_s"].append(t)
        counted: dict[str, dict[str, int]] = {}
        plan = _ranges(files, nranges, range_size, seed)
        for name, m in objs.items():
            log(f"counting bytes: {name}")
            counted[name] = {}
            for what, fn in (("whole", lambda: [m.read_whole(f) for f in files]),
                             ("columns", lambda: [m.read_columns(f, columns) for f in files]),
                             ("ranges", lambda: [m.read_range(f, s, n) for f, s, n in plan])):
                with m.counting():
                    fn()
                counted[name][what] = m.counted
    finally:
        for m in objs.values():
            m.teardown()
    meta = {
        "files": [{"name": f.name, "size": f.size, "nevents": f.nevents, "format": f.format,
                   "urls": f.urls} for f in files],
        "total_bytes": total_size, "total_events": total_events, "columns": columns,
        "reps": reps, "nranges": nranges, "range_size": range_size, "s3_base": s3_base,
        "endpoint": _endpoint(s3_base, s3_options),
        "methods": {n: objs[n].description for n in objs},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "loadavg": os.getloadavg()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return summarize(meta, raw, counted)


def _endpoint(s3_base: str | None, s3_options: dict[str, Any] | None) -> str | None:
    if not s3_base:
        return None
    from ..paths import get_path

    return get_path("s3", **(s3_options or {})).endpoint(s3_base)


def summarize(meta: dict[str, Any], raw: dict[str, dict[str, list]], counted: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Medians, spreads, percentiles and ratios to the ``local`` method."""
    size, events = meta["total_bytes"], meta["total_events"]
    results: dict[str, Any] = {}
    for name, r in raw.items():
        lat = r["latency_ms"]
        results[name] = {
            "whole_mb_s": _stats([size / t / 1e6 for t in r["whole_s"]]),
            "columns_events_s": _stats([events / t for t in r["columns_s"]]),
            "range_latency_ms": {"p50": _percentile(lat, 50), "p99": _percentile(lat, 99), "n": len(lat)},
            "ranges_batched_ms": _stats([t * 1e3 for t in r["batch_s"]]),
            "bytes": counted.get(name, {}),
        }
    base = results.get("local")
    if base:
        for name, res in results.items():
            res["ratio_to_local"] = {
                "whole_mb_s": res["whole_mb_s"]["median"] / base["whole_mb_s"]["median"],
                "columns_events_s": res["columns_events_s"]["median"] / base["columns_events_s"]["median"],
                "range_p50": res["range_latency_ms"]["p50"] / base["range_latency_ms"]["p50"],
                "ranges_batched": res["ranges_batched_ms"]["median"] / base["ranges_batched_ms"]["median"],
                "bytes_columns": (res["bytes"].get("columns", 0) / base["bytes"]["columns"]
                                  if base["bytes"].get("columns") else None),
            }
    return {"meta": meta, "results": results}


def write_outputs(doc: dict[str, Any], out_dir: str | os.PathLike, stem: str | None = None) -> tuple[Path, Path]:
    """``<stem>.json`` and ``<stem>.png`` in ``out_dir``; returns both paths."""
    from .plot import plot

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or "bench-" + time.strftime("%Y%m%d-%H%M%S")
    jpath, ppath = out / f"{stem}.json", out / f"{stem}.png"
    jpath.write_text(json.dumps(doc, indent=2, default=str))
    plot(doc, ppath)
    return jpath, ppath


def markdown_table(doc: dict[str, Any]) -> str:
    """The results as a Markdown table (medians, spreads, ratios to local)."""
    n, kib = doc["meta"]["nranges"], doc["meta"]["range_size"] >> 10
    rows = ["| method | whole file MB/s (spread) | × local | columns k events/s (spread) | × local "
            f"| {kib} KiB range p50 / p99 ms | p50 × local | {n} ranges as one vector read, ms "
            "| bytes whole / columns / ranges |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, r in doc["results"].items():
        ratio = r.get("ratio_to_local", {})
        b = r["bytes"]
        rows.append(
            f"| {name} | {r['whole_mb_s']['median']:.1f} (±{r['whole_mb_s']['spread'] * 50:.0f} %) "
            f"| {ratio.get('whole_mb_s', float('nan')):.2f} "
            f"| {r['columns_events_s']['median'] / 1e3:.0f} (±{r['columns_events_s']['spread'] * 50:.0f} %) "
            f"| {ratio.get('columns_events_s', float('nan')):.2f} "
            f"| {r['range_latency_ms']['p50']:.2f} / {r['range_latency_ms']['p99']:.2f} "
            f"| {ratio.get('range_p50', float('nan')):.1f} "
            f"| {r['ranges_batched_ms']['median']:.1f} "
            f"| {b.get('whole', 0):,} / {b.get('columns', 0):,} / {b.get('ranges', 0):,} |"
        )
    return "\n".join(rows)


def _asdict(f: BenchFile) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(f).items()}
