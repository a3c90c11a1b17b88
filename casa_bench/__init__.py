"""``casa bench``: compare delivery paths (local disk, S3 via s3fs, S3 via Arrow, plug-ins) on one dataset.

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
from typing import Any, Callable, Sequence

from casa_bench.methods import (BenchContext, BenchFile, BenchMethod, Unsupported, available_methods, get_method,
                               needs_s3, register_method)
from casa_bench.runner import DEFAULT_METHODS, bench_files, markdown_table, run_bench, write_outputs

__all__ = ["bench", "BenchMethod", "BenchFile", "BenchContext", "Unsupported", "register_method", "available_methods",
           "get_method", "run_bench", "bench_files", "markdown_table", "write_outputs", "local_files"]

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
    from casa_data.config import get_config

    files = bench_files(local_files(dataset, catalog))
    if quick:
        files = files[:1]
    reps = reps or (QUICK["reps"] if quick else 5)
    nranges = nranges or (QUICK["nranges"] if quick else 200)
    need_s3 = any(needs_s3(m) for m in methods)
    started: str | None = None
    with contextlib.ExitStack() as stack:
        s3_options: dict[str, Any] = {}
        if need_s3:
            configured = get_config().path_options("s3").get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL_S3")
            if embedded or (embedded is None and not configured):
                log(f"starting an embedded {server}")
                launcher = stack.enter_context(_launcher(server))
                launcher.create_bucket("casa-bench")
                s3_options, started = launcher.path_options(), server
            s3 = s3 or f"s3://casa-bench/{_slug(files)}"
            uploads = _upload(files, s3, s3_options, log)
        doc = run_bench(files, methods, columns=columns, reps=reps, nranges=nranges, s3_base=s3,
                        s3_options=s3_options, log=log)
    doc["meta"]["quick"] = quick
    if need_s3:
        doc["meta"]["uploads"] = uploads
    doc["meta"]["embedded_server"] = started
    if out_dir is not None:
        j, p = write_outputs(doc, out_dir)
        doc["outputs"] = {"json": str(j), "png": str(p)}
    return doc


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
