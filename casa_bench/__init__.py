"""``casa bench``: compare delivery paths (local disk, S3 via s3fs, S3 via Arrow, plug-ins) on one dataset,
and sweep them over concurrent readers (:func:`sweep`, :mod:`casa_bench.sweep`).

>>> from casa_bench import bench                                  # doctest: +SKIP
>>> doc = bench(["../shared/data/agc/open-data-example.root"], embedded=True, quick=True)

Methods come from a small registry (:mod:`casa_bench.methods`): add one with
:func:`register_method` or the ``casa.bench`` entry-point group.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from casa_bench.methods import (
    BenchContext,
    BenchFile,
    BenchMethod,
    Unsupported,
    available_methods,
    get_method,
    needs_s3,
    register_method,
)
from casa_bench.runner import DEFAULT_METHODS, bench_files, markdown_table, run_bench, write_outputs

__all__ = ["bench", "sweep", "BenchMethod", "BenchFile", "BenchContext", "Unsupported", "register_method",
           "available_methods", "get_method", "run_bench", "bench_files", "markdown_table", "write_outputs",
           "local_files"]

QUICK = {"reps": 2, "nranges": 40}


def local_files(dataset: Sequence[str], catalog: Any = None) -> list[str]:
    """Local paths of a catalog dataset (one name) or the given paths."""
    if len(dataset) == 1 and not os.path.exists(dataset[0]) and "/" in dataset[0] and "://" not in dataset[0]:
        from casa_data.dataset import open as open_dataset

        if dataset[0].startswith("demo/"):  # the built-in demo data: generate it if needed
            from casa_data.demo import generate

            generate()
        ds = open_dataset(dataset[0], via="local", catalog=catalog)
        return [c.path.reader_url(c.url) for c in (f.candidates[0] for f in ds.resolved)]
    return [os.fspath(p) for p in dataset]


def _slug(files: list[BenchFile]) -> str:
    return re.sub(r"[^a-z0-9.-]+", "-", files[0].local.stem.lower())[:40] + (f"-{len(files)}" if len(files) > 1 else "")


def bench(dataset: Sequence[str], methods: Sequence[str] = DEFAULT_METHODS, *, catalog: Any = None,
          s3: str | None = None, embedded: bool | None = None, server: str = "seaweedfs", quick: bool = False,
          reps: int | None = None, nranges: int | None = None, columns: list[str] | None = None,
          out_dir: str | os.PathLike | None = None, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Benchmark ``dataset`` (a catalog name or local files) over ``methods``.

    Parameters
    ----------
    s3 : where the S3 copies live (``s3://bucket/prefix``); uploaded (checksummed) if missing.
        Default ``s3://casa-bench/<file name>``.
    embedded : start an S3 server for this run (default: when no S3 endpoint is configured).
    server : which one: ``"seaweedfs"`` (pip) or ``"ceph-rgw"`` (Debian packages, ~25 s to boot).
    quick : 2 repetitions, 40 ranges, the first file only (for CI).
    out_dir : write ``bench-<time>.json`` and ``.png`` there; their paths are in ``doc["outputs"]``.
    """
    files = bench_files(local_files(dataset, catalog))
    if quick:
        files = files[:1]
    reps = reps or (QUICK["reps"] if quick else 5)
    nranges = nranges or (QUICK["nranges"] if quick else 200)
    with _s3_for(files, methods, s3, embedded, server, log) as (s3_base, s3_options, _, started, uploads):
        doc = run_bench(files, methods, columns=columns, reps=reps, nranges=nranges, s3_base=s3_base,
                        s3_options=s3_options, log=log)
    doc["meta"]["quick"] = quick
    if uploads is not None:
        doc["meta"]["uploads"] = uploads
    doc["meta"]["embedded_server"] = started
    if out_dir is not None:
        j, p = write_outputs(doc, out_dir)
        doc["outputs"] = {"json": str(j), "png": str(p)}
    return doc


def sweep(dataset: Sequence[str], methods: Sequence[str] = DEFAULT_METHODS, *,
          concurrency: Sequence[int] | None = None, patterns: Sequence[str] = ("whole", "ranges:64k"),
          mode: str = "threads", duration: float | None = None, max_bytes: int | None = None,
          workers: Sequence[int] | None = None, cluster: str = "local", catalog: Any = None,
          s3: str | None = None, embedded: bool | None = None, server: str = "seaweedfs", quick: bool = False,
          columns: list[str] | None = None, out_dir: str | os.PathLike | None = None, progress: Any = None,
          log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Sweep ``methods`` over ``concurrency`` readers per ``patterns`` (see :mod:`casa_bench.sweep`).

    quick : concurrency 1, 2, 4, 1 s per level, 256 MiB per level at most, the first file only.
    workers : run the readers on Dask workers of a ``cluster`` (``casa_compute.cluster(kind)``),
        one sweep per worker count in ``workers``; ``concurrency`` is then readers per worker.
    out_dir : write JSON, CSV, PNG plots and an HTML report; their paths are in ``doc["outputs"]``.
    """
    from casa_bench.sweep import QUICK_SWEEP, run_sweep
    from casa_bench.workload import parse_pattern

    pats = [parse_pattern(p) for p in patterns]
    files = bench_files(local_files(dataset, catalog))
    if quick:
        files = files[:1]
    concurrency = list(concurrency or (QUICK_SWEEP["concurrency"] if quick else [1, 2, 4, 8, 16, 32]))
    duration = duration or (QUICK_SWEEP["duration"] if quick else 3.0)
    max_bytes = max_bytes or (QUICK_SWEEP["max_bytes"] if quick else 4 << 30)
    with _s3_for(files, methods, s3, embedded, server, log) as (s3_base, s3_options, pids, started, _):
        doc = run_sweep(files, methods, pats, concurrency, mode=mode, duration=duration, max_bytes=max_bytes,
                        columns=columns, s3_base=s3_base, s3_options=s3_options, s3_pids=pids, workers=workers,
                        cluster=cluster, progress=progress, log=log)
    doc["meta"].update(quick=quick, embedded_server=started, loadavg_after=os.getloadavg())
    if out_dir is not None:
        from casa_bench.report import write_sweep

        write_sweep(doc, out_dir)
    return doc


@contextlib.contextmanager
def _s3_for(files: list[BenchFile], methods: Sequence[str], s3: str | None, embedded: bool | None, server: str,
            log: Callable[[str], None]):
    """S3 copies of ``files`` when a method needs them: ``(base, options, server pids, started server,
    upload timings)``; all empty (None) when none does."""
    from casa_data.config import get_config

    if not any(needs_s3(m) for m in methods):
        yield None, {}, {}, None, None
        return
    with contextlib.ExitStack() as stack:
        options: dict[str, Any] = {}
        pids: dict[str, list[int]] = {}
        started = None
        configured = get_config().path_options("s3").get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL_S3")
        if embedded or (embedded is None and not configured):
            log(f"starting an embedded {server}")
            launcher = stack.enter_context(_launcher(server))
            launcher.create_bucket("casa-bench")
            options, started = launcher.path_options(), server
            pids = {server: [p.pid for p in launcher.procs.values()]}
        base = s3 or f"s3://casa-bench/{_slug(files)}"
        uploads = _upload(files, base, options, log)
        yield base, options, pids, started, uploads


def _launcher(server: str):
    if server == "seaweedfs":
        from casa_facility.services.s3 import SeaweedFS

        return SeaweedFS()
    if server in ("ceph", "ceph-rgw"):
        from casa_facility.services.ceph import CephRGW

        return CephRGW()
    from casa_data.errors import CasaError

    raise CasaError(f"unknown embedded S3 server {server!r}: use seaweedfs or ceph-rgw")


def _upload(files: list[BenchFile], base: str, s3_options: dict[str, Any], log) -> list[dict[str, Any]]:
    """Put each file at ``base`` (checksummed; skipped if already there); timings per file."""
    from casa_data.ingest import upload_file
    from casa_data.paths import get_path

    path = get_path("s3", **s3_options)
    path.check(base.rstrip("/") + "/")
    client = path.client(base)
    out = []
    for f in files:
        url = f"{base.rstrip('/')}/{f.name}"
        t0 = time.perf_counter()
        r = upload_file(client, f.local, url, endpoint=path.endpoint(url), secrets=path._secrets(url))
        dt = time.perf_counter() - t0
        log(f"{r.status} {url} ({f.size / dt / 1e6:.1f} MB/s)")
        f.urls["s3"] = url
        out.append({"url": url, "status": r.status, "seconds": dt, "mb_s": f.size / dt / 1e6})
    return out
