"""``casa bench``: the command (thin: options in, :func:`casa_bench.bench` / :func:`casa_bench.sweep` out,
a table printed). ``casa bench compare A.json B.json`` compares two sweeps."""

from __future__ import annotations

from typing import Any

import typer

__all__ = ["bench_command"]


class _RichProgress:
    """Live progress of a sweep level: elapsed of ``--duration``, bytes, MB/s, operations."""

    def __init__(self, console: Any) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._p = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[rate]}"),
                           TimeElapsedColumn(), console=console, transient=True)
        self._task: Any = None

    def start(self, label: str, seconds: float) -> None:
        self._p.start()
        self._task = self._p.add_task(label, total=seconds, rate="")

    def update(self, nbytes: int, ops: int, elapsed: float) -> None:
        rate = f"{nbytes / 1e6:8.1f} MB  {nbytes / max(elapsed, 1e-9) / 1e6:7.1f} MB/s  {ops:6d} ops"
        self._p.update(self._task, completed=elapsed, rate=rate)

    def stop(self) -> None:
        if self._task is not None:
            self._p.remove_task(self._task)
            self._task = None
        self._p.stop()


def _ints(text: str | None) -> list[int] | None:
    return [int(x) for x in text.split(",") if x.strip()] if text else None


def bench_command(
    dataset: list[str] | None = typer.Argument(
        None, help="catalog dataset name or local files (default demo/zmumu); or: compare A.json B.json"),
    methods: str = typer.Option("local,s3fs,s3-arrow", help="comma-separated access methods (see --list): local, "
                                "s3fs, s3fs-default, s3-arrow, xrootd, xcache-cold, xcache-warm, skyhook, servicex"),
    s3: str | None = typer.Option(None, help="s3://bucket/prefix for the S3 copies (uploaded if missing)"),
    embedded: bool | None = typer.Option(
        None, "--embedded/--no-embedded", help="start a SeaweedFS for the run (default: if no endpoint is configured)"),
    server: str = typer.Option("seaweedfs", help="embedded S3 server: seaweedfs or ceph-rgw"),
    quick: bool = typer.Option(False, help="2 repetitions, 40 ranges, first file only (CI); "
                               "with --concurrency: 1 s per level, 1,2,4 readers unless given"),
    reps: int | None = typer.Option(None, help="repetitions (default 5)"),
    ranges: int | None = typer.Option(None, help="random 64 KiB ranges per repetition (default 200)"),
    columns: str | None = typer.Option(None, help="comma-separated columns (default: 3 Muon_ columns)"),
    catalog: list[str] | None = typer.Option(None, "--catalog", "-c"),
    out: str = typer.Option("casa-bench", help="directory for the JSON and PNG (sweeps: also CSV and HTML)"),
    list_methods: bool = typer.Option(False, "--list", help="list the registered methods and exit"),
    concurrency: str | None = typer.Option(
        None, help="sweep: concurrent readers per level, e.g. 1,2,4,8,16,32 (with --workers: per worker)"),
    pattern: str = typer.Option("whole,ranges:64k", help="sweep: comma-separated access patterns: whole, columns, "
                                "ranges:SIZE, replay (uproot's recorded requests), put:SIZE (S3 writes)"),
    object_size: str | None = typer.Option(None, help="sweep: also write objects of these sizes (adds put:SIZE)"),
    mode: str = typer.Option("threads", help="sweep: readers as threads or processes (forked; own CPU each)"),
    duration: float | None = typer.Option(None, help="sweep: seconds per level (default 3, --quick 1)"),
    max_bytes: str | None = typer.Option(None, help="sweep: bytes per level at most, e.g. 2G (default 4G)"),
    workers: str | None = typer.Option(None, help="sweep on Dask workers: worker counts, e.g. 2 or 1,2,4"),
    cluster: str = typer.Option("local", help="sweep with --workers: casa cluster kind (local, slurm, facility)"),
) -> None:
    """Compare access paths (local disk, S3 via s3fs, S3 via Arrow, XRootD, Skyhook, ServiceX, plug-ins) on one dataset.

    With --concurrency (or --workers): a sweep of concurrent readers per method (aggregate MB/s,
    ops/s, latency percentiles, CPU per GB, bytes on the wire), written as JSON, CSV, PNG and HTML.
    A method without some access (ServiceX delivers columns, not byte ranges) shows n/a there.
    """
    from rich.console import Console

    from casa_data.errors import CasaError

    console = Console(stderr=True)
    if dataset and dataset[0] == "compare":
        if len(dataset) != 3:
            typer.echo("usage: casa bench compare A.json B.json", err=True)
            raise typer.Exit(2)
        from casa_bench.compare import compare_table

        typer.echo(compare_table(dataset[1], dataset[2]))
        return
    from casa_bench import available_methods, bench, markdown_table

    if list_methods:
        for name in available_methods():
            typer.echo(name)
        return
    names = [m.strip() for m in methods.split(",") if m.strip()]
    cols = columns.split(",") if columns else None
    try:
        if concurrency or workers:
            _sweep(dataset, names, concurrency, pattern, object_size, mode, duration, max_bytes, workers, cluster,
                   catalog, s3, embedded, server, quick, cols, out, console)
            return
        doc = bench(dataset or ["demo/zmumu"], names, catalog=catalog, s3=s3, embedded=embedded, server=server,
                    quick=quick, reps=reps, nranges=ranges, columns=cols, out_dir=out, log=lambda s: console.log(s))
    except CasaError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(markdown_table(doc))
    typer.echo(f"\nJSON: {doc['outputs']['json']}\nPNG:  {doc['outputs']['png']}")


def _sweep(dataset: list[str] | None, names: list[str], concurrency: str | None, pattern: str,
           object_size: str | None, mode: str, duration: float | None, max_bytes: str | None, workers: str | None,
           cluster: str, catalog: Any, s3: str | None, embedded: bool | None, server: str, quick: bool,
           cols: list[str] | None, out: str, console: Any) -> None:
    from casa_bench import sweep
    from casa_bench.report import sweep_table
    from casa_bench.workload import parse_size

    patterns = [p.strip() for p in pattern.split(",") if p.strip()]
    patterns += [f"put:{s.strip()}" for s in (object_size or "").split(",") if s.strip()]
    if mode not in ("threads", "processes"):
        typer.echo("error: --mode is threads or processes", err=True)
        raise typer.Exit(2)
    doc = sweep(dataset or ["demo/zmumu"], names, concurrency=_ints(concurrency) or (None if quick else [1]),
                patterns=patterns, mode=mode, duration=duration,
                max_bytes=parse_size(max_bytes) if max_bytes else None, workers=_ints(workers), cluster=cluster,
                catalog=catalog, s3=s3, embedded=embedded, server=server, quick=quick, columns=cols, out_dir=out,
                progress=_RichProgress(console), log=lambda s: console.log(s))
    typer.echo(sweep_table(doc))
    for kind, path in doc["outputs"].items():
        typer.echo(f"{kind}: {path}")
