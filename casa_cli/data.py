"""``casa data ...``: the data layer's commands (a thin layer over the library)."""

from __future__ import annotations

import typer

data_app = typer.Typer(help="Datasets: list, describe, generate the demo data.", no_args_is_help=True)


@data_app.command("list")
def list_datasets(
    catalog: list[str] | None = typer.Option(None, "--catalog", "-c", help="extra catalog file or directory"),
) -> None:
    """List the datasets every catalog on the search path defines."""
    from rich.console import Console
    from rich.table import Table

    from casa_data.catalog import get_catalog

    cat = get_catalog(catalog)
    table = Table("name", "format", "files", "events", "description", "catalog")
    for name in cat.names():
        spec = cat.get(name)
        table.add_row(name, spec.format, str(len(spec.files)), _fmt(spec.nevents_known()),
                      spec.description, str(cat.origin(name)))
    Console().print(table)


@data_app.command("describe")
def describe(
    dataset: str,
    via: str | None = typer.Option(None, help="delivery path (local, xcache, s3, ...)"),
    catalog: list[str] | None = typer.Option(None, "--catalog", "-c"),
) -> None:
    """Resolve a dataset and show its files, replicas and columns."""
    from casa_data.dataset import open as open_dataset

    print(open_dataset(dataset, via=via, catalog=catalog).describe())


@data_app.command("demo")
def demo_data(
    seed: int = typer.Option(42),
    force: bool = typer.Option(False, help="regenerate even if the files exist"),
) -> None:
    """Generate the built-in demo dataset (demo/zmumu, demo/zmumu-parquet)."""
    from casa_data.demo import generate

    for path in generate(seed=seed, force=force):
        print(path)


@data_app.command("ingest")
def ingest_cmd(
    dataset: str = typer.Argument(..., help="catalog name of the dataset to copy"),
    dest: str = typer.Argument(..., help="s3://bucket/prefix"),
    to: str | None = typer.Option(None, "--to", help="convert on the way: 'parquet' (ROOT TTrees only)"),
    as_name: str | None = typer.Option(None, "--as", help="record the copy as this dataset"),
    catalog: list[str] | None = typer.Option(None, "--catalog", "-c"),
    catalog_out: str | None = typer.Option(None, help="catalog file for a new dataset entry"),
    part_size_mb: int = typer.Option(16, "--part-size", help="multipart part size, MiB (>= 5)"),
    row_group_events: int | None = typer.Option(None, help="Parquet row group size (default: ~64 MiB)"),
    verify: bool = typer.Option(True, help="re-read each object and compare its SHA-256"),
) -> None:
    """Copy a dataset into an S3 bucket (checksummed, resumable) and record the replicas."""
    from casa_data.errors import CasaError
    from casa_data.ingest import ingest

    try:
        res = ingest(dataset, dest, to=to, name=as_name, catalog=catalog, catalog_out=catalog_out,
                     part_size=part_size_mb << 20, row_group_events=row_group_events, verify=verify,
                     progress=True)
    except CasaError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    for f in res.files:
        typer.echo(f"{f.status:9s} {f.url}  {f.size:,} B  sha256 {f.sha256[:16]}")
    typer.echo(f"{len(res.files)} file(s), {res.bytes:,} bytes -> {res.dataset!r} in {res.catalog_file}")


@data_app.command("prefetch")
def prefetch_cmd(
    dataset: str = typer.Argument(..., help="catalog name of the dataset to warm"),
    catalog: list[str] | None = typer.Option(None, "--catalog", "-c"),
) -> None:
    """Read a dataset through the XCache so later reads are warm (progress bar)."""
    _cache_cmd("prefetch", dataset, catalog)


@data_app.command("cache-status")
def cache_status_cmd(
    dataset: str = typer.Argument(..., help="catalog name of the dataset"),
    catalog: list[str] | None = typer.Option(None, "--catalog", "-c"),
) -> None:
    """Per file: whether and how much of it the XCache holds."""
    _cache_cmd("cache_status", dataset, catalog)


def _cache_cmd(which: str, dataset: str, catalog: list[str] | None) -> None:
    from casa_data import cache
    from casa_data.errors import CasaError

    try:
        status = getattr(cache, which)(dataset, catalog=catalog)
    except CasaError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    for f in status:
        typer.echo(str(f))


def _fmt(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


def _add_servicex() -> None:
    from casa_cli.servicex import servicex_app

    data_app.add_typer(servicex_app, name="servicex")


_add_servicex()
