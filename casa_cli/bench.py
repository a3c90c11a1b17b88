"""``casa bench``: the command (thin: options in, :func:`casa_bench.bench` out, a table printed)."""

from __future__ import annotations

import typer

__all__ = ["bench_command"]


def bench_command(
    dataset: list[str] | None = typer.Argument(None, help="catalog dataset name or local files (default demo/zmumu)"),
    methods: str = typer.Option("local,s3fs,s3-arrow", help="comma-separated access methods (see --list): local, "
                                "s3fs, s3fs-default, s3-arrow, xrootd, xcache-cold, xcache-warm, skyhook, servicex"),
    s3: str | None = typer.Option(None, help="s3://bucket/prefix for the S3 copies (uploaded if missing)"),
    embedded: bool | None = typer.Option(
        None, "--embedded/--no-embedded", help="start a SeaweedFS for the run (default: if no endpoint is configured)"),
    server: str = typer.Option("seaweedfs", help="embedded S3 server: seaweedfs or ceph-rgw"),
    quick: bool = typer.Option(False, help="2 repetitions, 40 ranges, first file only (CI)"),
    reps: int | None = typer.Option(None, help="repetitions (default 5)"),
    ranges: int | None = typer.Option(None, help="random 64 KiB ranges per repetition (default 200)"),
    columns: str | None = typer.Option(None, help="comma-separated columns (default: 3 Muon_ columns)"),
    catalog: list[str] | None = typer.Option(None, "--catalog", "-c"),
    out: str = typer.Option("casa-bench", help="directory for the JSON and PNG"),
    list_methods: bool = typer.Option(False, "--list", help="list the registered methods and exit"),
) -> None:
    """Compare access paths (local disk, S3 via s3fs, S3 via Arrow, XRootD, Skyhook, ServiceX, plug-ins) on one dataset.

    A method without some access (ServiceX delivers columns, not byte ranges) shows n/a there.
    """
    from rich.console import Console

    from casa_bench import available_methods, bench, markdown_table
    from casa_data.errors import CasaError

    console = Console(stderr=True)
    if list_methods:
        for name in available_methods():
            typer.echo(name)
        return
    try:
        doc = bench(dataset or ["demo/zmumu"], [m.strip() for m in methods.split(",") if m.strip()],
                    catalog=catalog, s3=s3, embedded=embedded, server=server, quick=quick, reps=reps, nranges=ranges,
                    columns=columns.split(",") if columns else None, out_dir=out,
                    log=lambda s: console.log(s))
    except CasaError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(markdown_table(doc))
    typer.echo(f"\nJSON: {doc['outputs']['json']}\nPNG:  {doc['outputs']['png']}")
