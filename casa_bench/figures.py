"""The figures of a ``casa bench`` sweep level, from what its readers report.

A reader reports ``{"bytes", "ops", "latencies_ms", "ttfb_ms", "errors", "retries", "start", "end",
"cpu_s"}`` (``start``/``end`` wall-clock seconds, ``cpu_s`` its own CPU where it ran in its own
process). :func:`level_figures` sums them into aggregate MB/s, Gbps, operations/s, latency
percentiles, time to first byte, CPU seconds per GB (client and each server process).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

__all__ = ["percentile", "latency_summary", "level_figures", "proc_cpu", "saturation", "FIGURES"]

#: figure key -> (label, higher is better); what tables, CSV and ``compare`` show
FIGURES: dict[str, tuple[str, bool]] = {
    "mb_s": ("MB/s", True), "gbps": ("Gbps", True), "ops_s": ("ops/s", True),
    "ttfb_ms": ("TTFB ms", False), "p50_ms": ("p50 ms", False), "p90_ms": ("p90 ms", False),
    "p99_ms": ("p99 ms", False), "p999_ms": ("p99.9 ms", False),
    "client_cpu_s_per_gb": ("client CPU s/GB", False), "server_cpu_s_per_gb": ("server CPU s/GB", False),
    "errors": ("errors", False), "retries": ("retries", False),
}


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (linear interpolation); None without values."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def latency_summary(lat: list[float]) -> dict[str, float | None]:
    return {"p50_ms": percentile(lat, 50), "p90_ms": percentile(lat, 90), "p99_ms": percentile(lat, 99),
            "p999_ms": percentile(lat, 99.9)}


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _descendants(pids: list[int]) -> set[int]:
    """``pids`` and every process below them (from /proc/*/stat)."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, todo = set(), list(pids)
    while todo:
        p = todo.pop()
        if p not in out:
            out.add(p)
            todo += [c for c, pp in parent.items() if pp == p]
    return out


def proc_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system, with reaped children) of ``pids`` and their descendants."""
    total = 0
    for pid in _descendants(pids):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone
            continue
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / _TICK


def level_figures(readers: list[dict[str, Any]], client_cpu_s: float,
                  server_cpu_s: dict[str, float], t0: float | None = None) -> dict[str, Any]:
    """Aggregate figures of one concurrency level from its readers' reports."""
    start = t0 if t0 is not None else min(r["start"] for r in readers)
    wall = max(max(r["end"] for r in readers) - start, 1e-9)
    nbytes = sum(r["bytes"] for r in readers)
    ops = sum(r["ops"] for r in readers)
    lat = [x for r in readers for x in r["latencies_ms"]]
    ttfb = [r["ttfb_ms"] for r in readers if r["ttfb_ms"] is not None]
    gb = nbytes / 1e9
    server_total = sum(server_cpu_s.values())
    out: dict[str, Any] = {
        "readers": len(readers), "wall_s": wall, "bytes": nbytes, "ops": ops,
        "mb_s": nbytes / wall / 1e6, "gbps": nbytes * 8 / wall / 1e9, "ops_s": ops / wall,
        "ttfb_ms": percentile(ttfb, 50), "ttfb_max_ms": max(ttfb) if ttfb else None,
        **latency_summary(lat),
        "errors": sum(r["errors"] for r in readers), "retries": sum(r["retries"] for r in readers),
        "first_error": next((r["first_error"] for r in readers if r.get("first_error")), None),
        "client_cpu_s": client_cpu_s, "client_cores": client_cpu_s / wall,
        "client_cpu_s_per_gb": client_cpu_s / gb if gb else None,
        "server_cpu_s": dict(server_cpu_s),
        "server_cores": {k: v / wall for k, v in server_cpu_s.items()},
        "server_cpu_s_per_gb": server_total / gb if gb and server_cpu_s else None,
        "latency_sample_ms": _sample(lat, 400),
        "loadavg": os.getloadavg()[0],  # the machine's 1-minute load at the end of the level
    }
    return out


def _sample(values: list[float], n: int) -> list[float]:
    """At most ``n`` evenly spaced order statistics of ``values`` (enough for a CDF)."""
    s = sorted(values)
    if len(s) <= n:
        return s
    return [s[round(i * (len(s) - 1) / (n - 1))] for i in range(n)]


def saturation(levels: list[dict[str, Any]], within: float = 0.9) -> int | None:
    """The saturation point: the fewest readers whose MB/s is at least ``within`` × the best
    level's (more readers add less than 10 %); None without levels."""
    pts = sorted((int(lv["concurrency"]), float(lv["mb_s"])) for lv in levels if lv.get("mb_s"))
    if not pts:
        return None
    best = max(mb for _, mb in pts)
    return next(c for c, mb in pts if mb >= within * best)
