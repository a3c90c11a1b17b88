"""One reader of a ``casa bench`` sweep: run operations until a deadline or a byte budget, timed.

Shared by the in-process sweep (:mod:`casa_bench.sweep`) and Dask workers
(:mod:`casa_bench.distributed`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from casa_bench.base import BenchFile, BenchMethod, Unsupported
from casa_bench.workload import Op, Pattern

__all__ = ["reader_loop", "ttfb_call", "warm"]


def reader_loop(ops: Iterator[Op], deadline: float, budget: int, *, ttfb: Callable[[], int] | None = None,
                counters: Any = None, slot: int = 0, max_ops: int | None = None) -> dict[str, Any]:
    """Run ``ops`` until ``deadline`` (``time.time()``), ``budget`` bytes or ``max_ops``; one
    retry per failed operation. ``counters[2*slot]``/``[2*slot+1]`` get bytes/ops as they go."""
    lat: list[float] = []
    nbytes = nops = errors = retries = 0
    first_error: str | None = None
    start = time.time()
    ttfb_ms = None
    if ttfb is not None:
        t = time.perf_counter()
        try:
            ttfb()
            ttfb_ms = (time.perf_counter() - t) * 1e3
        except Unsupported:
            pass
    for call, requested, want in ops:
        if nops and (time.time() >= deadline or nbytes >= budget or (max_ops and nops >= max_ops)):
            break
        t = time.perf_counter()
        for attempt in (0, 1):
            try:
                got = call()
                if want is not None and got != want:
                    raise RuntimeError(f"returned {got:,}, expected {want:,}")
                break
            except Unsupported:
                raise
            except Exception as err:  # noqa: BLE001 - counted and reported, never fatal
                if attempt == 0:
                    retries += 1
                    continue
                errors += 1
                first_error = first_error or f"{type(err).__name__}: {err}"[:300]
                got = None
        if got is None:
            if errors >= 20 and not nbytes:  # a broken method: stop hammering it
                break
            continue
        dt = (time.perf_counter() - t) * 1e3
        lat.append(dt)
        if ttfb_ms is None:
            ttfb_ms = dt
        nbytes += requested
        nops += 1
        if counters is not None:
            counters[2 * slot] = nbytes
            counters[2 * slot + 1] = nops
    return {"bytes": nbytes, "ops": nops, "latencies_ms": lat, "ttfb_ms": ttfb_ms, "errors": errors,
            "retries": retries, "first_error": first_error, "start": start, "end": time.time(), "cpu_s": None}


def ttfb_call(method: BenchMethod, pattern: Pattern, f: BenchFile) -> Callable[[], int] | None:
    """The first 4 KiB of the reader's first file (a write pattern: its first operation is it)."""
    if pattern.writes:
        return None
    return lambda: method.read_range(f, 0, min(4096, f.size))


def warm(m: BenchMethod, f: BenchFile) -> BenchMethod:
    """Connect (and load the client's libraries) before the clock starts: a fresh copy of a method
    in a forked child or on a Dask worker reads one byte first."""
    try:
        m.read_range(f, 0, 1)
    except Exception:  # noqa: BLE001 - a method without ranges warms up in its first operation
        pass
    return m
