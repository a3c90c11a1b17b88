"""``casa compute``: run a processor on a dataset; print a cluster's job script (dry run);
list, connect to and stop your Dask Gateway clusters (``casa compute clusters ...``)."""

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
    cluster: str | None = typer.Option(None, help="local, slurm, htcondor, gateway, facility, auto; "
                                       "default in-process"),
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


clusters_app = typer.Typer(help="Your clusters on the facility's Dask Gateway (the token's user).",
                           no_args_is_help=True)
compute_app.add_typer(clusters_app, name="clusters")


def _gateway_call(fn):
    from casa_compute.clusters.base import ClusterError
    from casa_data.errors import TokenError

    try:
        return fn()
    except (ClusterError, TokenError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None


@clusters_app.command("list")
def clusters_list() -> None:
    """List your running clusters: name, status, workers' options, dashboard."""
    from casa_compute.clusters.gateway import list_clusters

    reports = _gateway_call(list_clusters)
    if not reports:
        typer.echo("no running clusters")
    for r in reports:
        opts = ", ".join(f"{k}={v}" for k, v in sorted((r.options or {}).items()) if k != "environment")
        typer.echo(f"{r.name}  {r.status.name.lower()}  started {r.start_time:%Y-%m-%d %H:%M:%S}  "
                   f"{opts}\n    dashboard {r.dashboard_link}")


@clusters_app.command("connect")
def clusters_connect(name: str = typer.Argument(..., help="the cluster's name (casa compute clusters list)")
                     ) -> None:
    """Connect to the running cluster NAME and print its scheduler, workers and dashboard."""
    from casa_compute.clusters.gateway import CasaGateway

    def connect():
        with CasaGateway() as gw:
            c = gw.connect(name)
            try:
                with c.get_client(set_as_default=False) as client:
                    n = len(client.scheduler_info()["workers"])
                typer.echo(f"{c.name}: scheduler {c.scheduler_address}, {n} worker(s), "
                           f"dashboard {c.dashboard_link}")
            finally:
                c.close(shutdown=False)

    _gateway_call(connect)


@clusters_app.command("stop")
def clusters_stop(name: str = typer.Argument(..., help="the cluster's name")) -> None:
    """Stop the cluster NAME (its scheduler and worker jobs)."""
    from casa_compute.clusters.gateway import CasaGateway

    def stop():
        with CasaGateway() as gw:
            gw.stop_cluster(name)
        typer.echo(f"stopped {name}")

    _gateway_call(stop)
