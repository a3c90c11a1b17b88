"""``casa compute``: run a processor on a dataset; print a cluster's job script (dry run)."""

from __future__ import annotations

import importlib

import typer

compute_app = typer.Typer(help="Run coffea processors on clusters with facility defaults.",
                          no_args_is_help=True)


def _load(spec: str):
    module, _, name = spec.partition(":")
    if not name:
        raise typer.BadParameter(f"{spec!r}: use module:Class, e.g. casa_compute.processors:DimuonProcessor")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise typer.BadParameter(f"cannot load {spec!r}: {e}") from e


@compute_app.command("run")
def run_cmd(
    processor: str = typer.Argument(..., help="module:Class of a coffea ProcessorABC"),
    dataset: list[str] = typer.Argument(..., help="catalog name, paths, URLs or a glob"),
    cluster: str | None = typer.Option(None, help="local, slurm, htcondor, auto; default in-process"),
    chunksize: int = typer.Option(100_000, help="entries per chunk"),
    retries: int = typer.Option(2, help="extra attempts per failing chunk"),
    skip_bad_files: bool = typer.Option(False, help="finish without failing files, list them"),
) -> None:
    """Run PROCESSOR over DATASET and print the report."""
    import casa_compute
    import casa_data

    ds = casa_data.open(dataset[0] if len(dataset) == 1 else dataset)
    try:
        result = casa_compute.run(_load(processor)(), ds, cluster=cluster, chunksize=chunksize,
                                  retries=retries, skip_bad_files=skip_bad_files)
    except casa_compute.RunError as e:
        typer.echo(f"error: {e}", err=True)
        typer.echo(e.partial.report.summary())
        raise typer.Exit(1) from None
    typer.echo(result.report.summary())


@compute_app.command("jobscript")
def jobscript_cmd(kind: str = typer.Option("htcondor", help="htcondor or slurm")) -> None:
    """Print the job script a cluster of KIND would submit (nothing is submitted)."""
    import casa_compute

    c = casa_compute.cluster(kind, scheduler_port=0, dashboard_port=0)
    try:
        typer.echo(c.job_script())
    finally:
        c.close()
