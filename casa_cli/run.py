"""``casa run pipeline.yaml``: the thin command over :func:`casa_compute.pipeline.run_pipeline`."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["run_command"]


def run_command(
    spec: Path = typer.Argument(..., help="the pipeline YAML file", exists=False),
    via: str | None = typer.Option(None, help="delivery path for every dataset (local, xcache, s3, "
                                              "servicex, skyhook, auto); default: the spec's"),
    cluster: str | None = typer.Option(None, help="cluster kind (local, slurm, ...); default: the spec's"),
    output: Path | None = typer.Option(None, "--output", "-o", help="output directory"),
    catalog: list[str] = typer.Option([], "--catalog", "-c", help="extra catalog file (repeatable)"),
    force: bool = typer.Option(False, "--force", help="recompute even if the cached result is current"),
    dry_run: bool = typer.Option(False, "--dry-run", help="check the spec and show the plan; run nothing"),
    progress: bool = typer.Option(True, help="show a progress bar"),
    max_chunks: int | None = typer.Option(None, "--max-chunks", min=1,
                                          help="quick test: only the first N chunks of each file"),
    max_files: int | None = typer.Option(None, "--max-files", min=1,
                                         help="quick test: only the first N files of each dataset"),
    io_only: bool = typer.Option(False, "--io-only", help="read exactly the columns the pipeline needs and "
                                                          "skip the processing (the AGC's I/O mode)"),
) -> None:
    """Run a declarative pipeline: datasets -> selection -> histograms, PNGs, ROOT, JSON summary."""
    from rich.console import Console
    from rich.table import Table

    from casa_compute.pipeline import load_spec, plan, run_pipeline
    from casa_data.errors import CasaError

    console = Console(stderr=True)
    try:
        if dry_run:
            console.print(plan(load_spec(spec), via=via, catalog=catalog or None).describe(), soft_wrap=True)
            return
        res = run_pipeline(spec, via=via, cluster=cluster, output=output, force=force,
                           catalog=catalog or None, progress=progress, max_chunks=max_chunks, max_files=max_files, io_only=io_only)
    except CasaError as err:
        console.print("error:", style="bold red", end=" ")
        console.print(str(err), soft_wrap=True, highlight=False, markup=False)
        raise typer.Exit(2) from None
    s = res.summary
    table = Table(title=f"{s['name']}" + (" (cached)" if res.cached else ""))
    for col in ("dataset", "via", "events in", "events out", "MB read", "scale"):
        table.add_column(col, justify="left" if col in ("dataset", "via") else "right")
    for lab, d in s["datasets"].items():
        table.add_row(lab, d["via"], f"{d['events_in']:,}", f"{d['events_out']:,}",
                      f"{d['bytes_read'] / 1e6:.2f}", f"{d['scale']:.4g}")
    console.print(table)
    if s.get("events_per_second_per_core"):
        console.print(f"{s['events_per_second_per_core']:,.0f} events/s per core (entries / process time), "
                      f"{s['bytes_read'] / 1e6:.2f} MB read" + (" (I/O only)" if s.get("io_only") else ""))
    when = (f"cached result, answered in {s.get('seconds_to_answer', 0):.2f} s (use --force to recompute)"
            if res.cached else f"{s['seconds']:.2f} s")
    console.print(f"outputs in {res.outdir}: {', '.join(s.get('outputs', []))}; {when}", soft_wrap=True)
