"""``casa data ...``: the data layer's commands (a thin layer over the library)."""

from __future__ import annotations

from typing import Optional

import typer

data_app = typer.Typer(help="Datasets: list, describe, generate the demo data.", no_args_is_help=True)


@data_app.command("list")
def list_datasets(
    catalog: Optional[list[str]] = typer.Option(None, "--catalog", "-c", help="extra catalog file or directory"),
) -> None:
    """List the datasets every catalog on the search path defines."""
    from rich.console import Console
    from rich.table import Table

    from .catalog import get_catalog

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
    via: Optional[str] = typer.Option(None, help="delivery path (local, xcache, s3, ...)"),
    catalog: Optional[list[str]] = typer.Option(None, "--catalog", "-c"),
) -> None:
    """Resolve a dataset and show its files, replicas and columns."""
    from .dataset import open as open_dataset

    print(open_dataset(dataset, via=via, catalog=catalog).describe())


@data_app.command("demo")
def demo_data(
    seed: int = typer.Option(42),
    force: bool = typer.Option(False, help="regenerate even if the files exist"),
) -> None:
    """Generate the built-in demo dataset (demo/zmumu, demo/zmumu-parquet)."""
    from .demo import generate

    for path in generate(seed=seed, force=force):
        print(path)


def _fmt(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"
