"""``casa bench --workers N``: the sweep's readers on the Dask workers of a casa cluster.

Each worker sets up its own copy of a *portable* method (one whose ``setup`` starts no server:
local files, S3, capability-driven paths) once, then runs its share of each level's readers as
threads, all starting at one wall-clock instant, and reports its own figures. The aggregate
counts every worker's bytes over the level's wall time (first start to last end), so the
workers' ``mb_s`` (bytes over that same wall time) add up to it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from casa_bench.base import BenchContext
from casa_bench.figures import latency_summary, level_figures, proc_cpu
from casa_bench.workload import Pattern

__all__ = ["DistributedRunner"]

_ON_WORKER: dict[str, Any] = {}  # method name -> the set-up method, in each worker process


def _prepare(name: str, ctx: BenchContext) -> str:
    from casa_bench.methods import get_method
    from casa_bench.reader import warm

    if name not in _ON_WORKER:
        m = get_method(name)
        m.setup(ctx)
        _ON_WORKER[name] = warm(m, ctx.files[0])
    return name


def _teardown() -> None:
    for m in _ON_WORKER.values():
        m.teardown()
    _ON_WORKER.clear()


def _worker_level(name: str, pat: Pattern, ctx: BenchContext, replay: dict, first: int, n: int, total: int,
                  start_at: float, duration: float, budget: int) -> dict[str, Any]:
    """Readers ``first .. first+n-1`` (of ``total``) on this worker, from ``start_at`` for ``duration``."""
    from casa_bench.reader import reader_loop, ttfb_call
    from casa_bench.workload import operations

    m = _ON_WORKER.get(name) or _ON_WORKER[_prepare(name, ctx)]
    out: list[dict[str, Any]] = [{}] * n

    def run(j: int) -> None:
        i = first + j
        ops = operations(m, pat, ctx.files, ctx.columns, replay, i, total)
        time.sleep(max(0.0, start_at - time.time()))
        out[j] = reader_loop(ops, start_at + duration, budget, ttfb=ttfb_call(m, pat, ctx.files[i % len(ctx.files)]))

    t = os.times()
    threads = [threading.Thread(target=run, args=(j,)) for j in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    t1 = os.times()
    return {"readers": out, "cpu_s": (t1.user - t.user) + (t1.system - t.system), "pid": os.getpid()}


class DistributedRunner:
    """A casa cluster (``kind``) of ``n`` workers and a client to it, for the sweep's levels."""

    def __init__(self, n: int, kind: str = "local", log: Callable[[str], None] = lambda s: None) -> None:
        from distributed import Client

        import casa_compute

        log(f"starting a {kind} cluster of {n} workers")
        kw: dict[str, Any] = {"n_workers": n, "threads_per_worker": 1} if kind == "local" else {}
        self.cluster = casa_compute.cluster(kind, **kw)
        if kind != "local":
            self.cluster.scale(n)
        self.client = Client(self.cluster)
        self.client.wait_for_workers(n, timeout=300)
        self.workers = sorted(self.client.scheduler_info()["workers"])[:n]
        self._prepared: set[str] = set()

    def level(self, name: str, pat: Pattern, ctx: BenchContext, replay: dict, w: int, c: int, *,
              duration: float, max_bytes: int) -> dict[str, Any]:
        """``c`` readers on each of the first ``w`` workers; the aggregate and each worker's figures."""
        from casa_bench.methods import needs_s3

        addrs = self.workers[:w]
        if name not in self._prepared:
            self.client.run(_teardown, workers=self.workers)  # one method set up per worker at a time
            self.client.run(_prepare, name, ctx, workers=self.workers)
            self._prepared = {name}
        total = w * c
        budget = max(1, max_bytes // total)
        pids = dict(ctx.s3_pids) if needs_s3(name) else {}  # the workers' methods cannot report ours
        srv0 = {k: proc_cpu(v) for k, v in pids.items()}
        start_at = time.time() + 0.5
        futs = [self.client.submit(_worker_level, name, pat, ctx, replay, k * c, c, total, start_at, duration,
                                   budget, workers=[a], allow_other_workers=False, pure=False)
                for k, a in enumerate(addrs)]
        reports = self.client.gather(futs)
        srv = {k: proc_cpu(v) - srv0[k] for k, v in pids.items()}
        readers = [r for rep in reports for r in rep["readers"]]
        figs = level_figures(readers, sum(rep["cpu_s"] for rep in reports), srv, start_at)
        figs.update(concurrency=total, workers=w, readers_per_worker=c)
        figs["per_worker"] = [_worker_figures(a, rep, start_at, figs["wall_s"]) for a, rep in zip(addrs, reports)]
        return figs

    def close(self) -> None:
        try:
            self.client.run(_teardown)
        finally:
            self.client.close()
            self.cluster.close()


def _worker_figures(addr: str, rep: dict[str, Any], start_at: float, wall: float) -> dict[str, Any]:
    rs = rep["readers"]
    nbytes, ops = sum(r["bytes"] for r in rs), sum(r["ops"] for r in rs)
    own = max(max(r["end"] for r in rs) - start_at, 1e-9)
    lat = [x for r in rs for x in r["latencies_ms"]]
    return {"worker": addr, "pid": rep["pid"], "readers": len(rs), "bytes": nbytes, "ops": ops,
            "mb_s": nbytes / wall / 1e6, "own_mb_s": nbytes / own / 1e6, "ops_s": ops / wall,
            "cpu_s": rep["cpu_s"], "errors": sum(r["errors"] for r in rs), **latency_summary(lat)}
