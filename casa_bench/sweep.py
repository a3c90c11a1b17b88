"""``casa bench --concurrency``: every method at 1, 2, 4 ... concurrent readers, bounded in time and bytes.

Per method and pattern (:mod:`casa_bench.workload`): one warm-up operation (an
:class:`~casa_bench.base.Unsupported` one makes the pair ``n/a`` with the reason), then one level
per concurrency, each reader running its own operations until ``duration`` seconds or its share of
``max_bytes``. Readers are threads of this process (``mode="threads"``) or forked processes
(``mode="processes"``; each measures its own CPU), or the threads of Dask workers
(:mod:`casa_bench.distributed`). Then one untimed pass through the method's ``counting()`` (a
byte-counting relay for S3, XRootD and Skyhook) gives bytes on the wire per byte requested.

Server CPU comes from ``/proc/<pid>/stat`` of the processes the method reports
(:meth:`~casa_bench.base.BenchMethod.server_processes`): ours only.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from casa_bench.base import BenchContext, BenchFile, BenchMethod, Unsupported
from casa_bench.figures import level_figures, proc_cpu, saturation
from casa_bench.methods import get_method
from casa_bench.reader import reader_loop, ttfb_call, warm
from casa_bench.workload import Pattern, operations, record_reads

__all__ = ["run_sweep", "run_level", "reader_loop", "count_wire", "warm", "Progress", "QUICK_SWEEP"]

QUICK_SWEEP = {"concurrency": [1, 2, 4], "duration": 1.0, "max_bytes": 256 << 20}


class Progress(Protocol):
    """Live progress: a level starts, its counters move, it ends (see ``casa_cli.bench``)."""

    def start(self, label: str, seconds: float) -> None: ...

    def update(self, nbytes: int, ops: int, elapsed: float) -> None: ...

    def stop(self) -> None: ...


class _NoProgress:
    def start(self, label: str, seconds: float) -> None:
        pass

    def update(self, nbytes: int, ops: int, elapsed: float) -> None:
        pass

    def stop(self) -> None:
        pass


def _cpu_self() -> float:
    t = os.times()
    return t.user + t.system


class _Monitor:
    """Polls the readers' counters into the progress display until stopped."""

    def __init__(self, counters: Any, progress: Progress, t0: float) -> None:
        self.counters, self.progress, self.t0 = counters, progress, t0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            c = list(self.counters)
            self.progress.update(sum(c[0::2]), sum(c[1::2]), time.time() - self.t0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _level_threads(job: Callable[[int, Any], dict[str, Any]], n: int, progress: Progress) -> tuple[list, float, float]:
    counters = [0] * (2 * n)
    results: list[dict[str, Any] | BaseException] = [None] * n  # type: ignore[list-item]
    gate = threading.Barrier(n + 1)

    def run(i: int) -> None:
        gate.wait()
        try:
            results[i] = job(i, counters)
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller
            results[i] = err

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    cpu0 = _cpu_self()
    gate.wait()
    t0 = time.time()
    mon = _Monitor(counters, progress, t0)
    for t in threads:
        t.join()
    mon.close()
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results, _cpu_self() - cpu0, t0


def _level_processes(job: Callable[..., dict[str, Any]], n: int, progress: Progress,
                     prepare: Callable[[], Any] | None = None) -> tuple[list, float, float]:
    import multiprocessing as mp
    import pickle
    import resource

    ctx = mp.get_context("fork")  # the children inherit the set-up method (servers, handles)
    counters = ctx.Array("q", 2 * n, lock=False)
    gate = ctx.Barrier(n + 1)
    pipes = [ctx.Pipe(duplex=False) for _ in range(n)]

    def child(i: int) -> None:
        try:
            m = prepare() if prepare is not None else None  # a fresh client: async ones are not fork-safe
        finally:
            gate.wait()
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        try:
            out: Any = job(i, counters) if m is None else job(i, counters, m)
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            out["cpu_s"] = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        except BaseException as err:  # noqa: BLE001 - sent to the parent
            out = err if _picklable(err) else RuntimeError(repr(err))
        pipes[i][1].send_bytes(pickle.dumps(out))

    procs = [ctx.Process(target=child, args=(i,), daemon=True) for i in range(n)]
    for p in procs:
        p.start()
    gate.wait(timeout=120)
    t0 = time.time()
    mon = _Monitor(counters, progress, t0)
    results = []
    try:
        for (recv, _), p in zip(pipes, procs):
            results.append(pickle.loads(recv.recv_bytes()))
            p.join(30)
    finally:
        mon.close()
        for p in procs:
            if p.is_alive():
                p.kill()
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results, sum(r["cpu_s"] or 0.0 for r in results), t0


def _picklable(obj: Any) -> bool:
    import pickle

    try:
        pickle.dumps(obj)
        return True
    except Exception:  # noqa: BLE001
        return False


def run_level(method: BenchMethod, pattern: Pattern, ctx: BenchContext, replay: dict, n: int, *,
              mode: str, duration: float, max_bytes: int, progress: Progress, seed: int = 1) -> dict[str, Any]:
    """One level: ``n`` readers of ``method``; its figures (:func:`~casa_bench.figures.level_figures`)."""
    files = ctx.files
    budget = max(1, max_bytes // n)
    pids = method.server_processes()

    def job(i: int, counters: Any, m: BenchMethod = method) -> dict[str, Any]:
        ops = operations(m, pattern, files, ctx.columns, replay, i, n, seed)
        return reader_loop(ops, time.time() + duration, budget, ttfb=ttfb_call(m, pattern, files[i % len(files)]),
                           counters=counters, slot=i)

    def fresh() -> BenchMethod:
        m = type(method)()
        m.setup(ctx)
        return warm(m, files[0])

    srv0 = {k: proc_cpu(v) for k, v in pids.items()}
    if mode == "threads":
        readers, client_cpu, t0 = _level_threads(job, n, progress)
    else:  # a portable method (no server of its own) is set up anew in each child
        readers, client_cpu, t0 = _level_processes(job, n, progress, fresh if method.portable else None)
    srv = {k: proc_cpu(v) - srv0[k] for k, v in pids.items()}
    figs = level_figures(readers, client_cpu, srv, t0)
    figs["concurrency"] = n
    figs["per_reader_bytes"] = [r["bytes"] for r in readers]
    return figs


def count_wire(method: BenchMethod, pattern: Pattern, ctx: BenchContext, replay: dict,
               max_ops: int = 12, max_bytes: int = 32 << 20, seconds: float = 2.0) -> dict[str, Any]:
    """One untimed reader through ``method.counting()`` (at least one operation, then at most
    ``max_ops``, ``max_bytes`` or ``seconds``): bytes on the wire vs bytes requested."""
    ops = operations(method, pattern, ctx.files, ctx.columns, replay, 0, 1, seed=99)
    with method.counting():
        r = reader_loop(ops, time.time() + seconds, max_bytes, max_ops=max_ops)
    wire = method.counted_up if pattern.writes else method.counted
    return {"requested": r["bytes"], "wire": wire, "amplification": wire / r["bytes"] if r["bytes"] else None,
            "ops": r["ops"], "errors": r["errors"]}


def run_sweep(files: list[BenchFile], methods: Sequence[str], patterns: Sequence[Pattern],
              concurrency: Sequence[int], *, mode: str = "threads", duration: float = 2.0,
              max_bytes: int = 1 << 30, columns: list[str] | None = None, s3_base: str | None = None,
              s3_options: dict[str, Any] | None = None, s3_pids: dict[str, list[int]] | None = None,
              workers: Sequence[int] | None = None, cluster: str = "local", count_bytes: bool = True,
              progress: Progress | None = None, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """The sweep document: ``{"meta": ..., "results": {method: {pattern: {...}}}}``."""
    from casa_bench.runner import default_columns

    if mode not in ("threads", "processes"):
        raise ValueError(f"mode must be threads or processes, not {mode!r}")
    progress = progress or _NoProgress()
    columns = columns or default_columns(files[0])
    ctx = BenchContext(files, columns, s3_base, dict(s3_options or {}), Path("."), dict(s3_pids or {}))
    replay = {f.name: record_reads(f, columns) for f in files}
    results: dict[str, dict[str, Any]] = {}
    descriptions: dict[str, str] = {}
    dist = None
    if workers:
        from casa_bench.distributed import DistributedRunner

        dist = DistributedRunner(max(workers), cluster, log)
    try:
        for name in methods:
            m = get_method(name)
            descriptions[name] = m.description
            results[name] = {}
            if dist is not None and not m.portable:
                why = "not on Dask workers: its setup starts a server next to the files (run it without --workers)"
                log(f"{name}: n/a ({why})")
                results[name] = {p.label: {"levels": [], "unsupported": why, "bytes": None, "saturation": None}
                                 for p in patterns}
                continue
            log(f"{name}: setting up")
            m.setup(ctx)
            try:
                for pat in patterns:
                    results[name][pat.label] = _method_pattern(m, name, pat, ctx, replay, concurrency, workers, dist,
                                                               mode, duration, max_bytes, count_bytes, progress, log)
            finally:
                m.teardown()
    finally:
        if dist is not None:
            dist.close()
    return {"meta": _meta(files, columns, patterns, concurrency, mode, duration, max_bytes, workers, cluster,
                          s3_base, descriptions, replay),
            "results": results}


def _method_pattern(m: BenchMethod, name: str, pat: Pattern, ctx: BenchContext, replay: dict,
                    concurrency: Sequence[int], workers: Sequence[int] | None, dist: Any, mode: str,
                    duration: float, max_bytes: int, count_bytes: bool, progress: Progress,
                    log: Callable[[str], None]) -> dict[str, Any]:
    out: dict[str, Any] = {"levels": [], "unsupported": None, "bytes": None, "saturation": None}
    try:  # warm-up: connections, page cache, cache fill; finds what the method cannot do
        call, _, want = next(operations(m, pat, ctx.files, ctx.columns, replay, 0, 1))
        got = call()
        if want is not None and got != want:
            raise RuntimeError(f"warm-up returned {got:,}, expected {want:,}")
    except Unsupported as err:
        out["unsupported"] = str(err) or "not supported by this method"
        log(f"{name} {pat.label}: n/a ({out['unsupported']})")
        return out
    except Exception as err:  # noqa: BLE001 - one broken method never sinks the sweep
        out["error"] = f"{type(err).__name__}: {err}"[:500]
        log(f"{name} {pat.label}: failed in warm-up: {out['error']}")
        return out
    plan = [(w, c) for w in workers for c in concurrency] if dist is not None else [(None, c) for c in concurrency]
    for w, c in plan:
        label = f"{name} {pat.label} x{c}" + (f" on {w} workers" if w else f" ({mode})")
        progress.start(label, duration)
        try:
            if dist is not None:
                lv = dist.level(name, pat, ctx, replay, w, c, duration=duration, max_bytes=max_bytes)
            else:
                lv = run_level(m, pat, ctx, replay, c, mode=mode, duration=duration, max_bytes=max_bytes,
                               progress=progress)
        finally:
            progress.stop()
        out["levels"].append(lv)
        log(f"{label}: {lv['mb_s']:.1f} MB/s, {lv['ops_s']:.0f} ops/s, p99 {_ms(lv['p99_ms'])} ms, "
            f"errors {lv['errors']}")
    if dist is None:
        out["saturation"] = saturation(out["levels"])
    else:
        for w in workers:
            out.setdefault("saturation_by_workers", {})[str(w)] = saturation(
                [lv for lv in out["levels"] if lv["workers"] == w])
    if count_bytes:
        try:
            out["bytes"] = count_wire(m, pat, ctx, replay)
        except Exception as err:  # noqa: BLE001 - the relay cannot count this method
            out["bytes"] = {"requested": None, "wire": None, "amplification": None, "error": str(err)[:300]}
    return out


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def _meta(files: list[BenchFile], columns: list[str], patterns: Sequence[Pattern], concurrency: Sequence[int],
          mode: str, duration: float, max_bytes: int, workers: Sequence[int] | None, cluster: str,
          s3_base: str | None, descriptions: dict[str, str], replay: dict) -> dict[str, Any]:
    import platform

    return {
        "kind": "sweep",
        "files": [{"name": f.name, "size": f.size, "nevents": f.nevents, "format": f.format} for f in files],
        "columns": columns, "patterns": [p.label for p in patterns], "concurrency": list(concurrency),
        "mode": "dask" if workers else mode, "reader_threads": mode, "duration_s": duration, "max_bytes": max_bytes,
        "workers": list(workers) if workers else None, "cluster": cluster if workers else None,
        "s3_base": s3_base, "methods": descriptions,
        "replay": {k: {"requests": len(v), "bytes": sum(n for _, n in v)} for k, v in replay.items()},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_before": os.getloadavg()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
