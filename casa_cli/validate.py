"""``casa validate OUTPUT REFERENCE``: compare histograms in the AGC's JSON layout (or casa outputs)."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["validate_command"]


def validate_command(
    output: Path = typer.Argument(..., help="a casa output directory or a JSON file in the AGC layout"),
    reference: Path = typer.Argument(..., help="the reference: an AGC histos_*.json, or a previous casa output"),
    atol: float = typer.Option(0.0, "--atol", help="absolute tolerance per bin (the AGC's validation uses 2)"),
    rtol: float = typer.Option(0.0, "--rtol", help="relative tolerance per bin"),
    skip: list[str] = typer.Option([], "--skip", help="leave out histograms whose name contains this "
                                                       "(repeatable; e.g. pt_res_up)"),
    only_common: bool = typer.Option(False, "--only-common", help="compare only histograms both sides have"),
    limit: int = typer.Option(40, help="rows of the difference table to print"),
) -> None:
    """Compare histograms bin by bin; a table of the differences; exit code 1 on a mismatch."""
    from rich.console import Console
    from rich.table import Table

    from casa_compute.pipeline.validate import compare, read_histograms
    from casa_data.errors import CasaError

    console = Console()
    try:
        ours, ref = read_histograms(output), read_histograms(reference)
    except CasaError as err:
        Console(stderr=True).print(f"error: {err}", soft_wrap=True, highlight=False, markup=False)
        raise typer.Exit(2) from None
    diffs = compare(ours, ref, atol=atol, rtol=rtol, skip=tuple(skip))
    if only_common:
        diffs = [d for d in diffs if not d.what.startswith("missing")]
    common = len(set(ours) & set(ref))
    if not diffs:
        console.print(f"ok: {common} histograms agree (atol {atol}, rtol {rtol}); "
                      f"{len(ours)} in {output}, {len(ref)} in {reference}")
        return
    table = Table(title=f"{len(diffs)} difference(s)")
    for col in ("histogram", "what", "bin", "ours", "reference", "ours - reference"):
        table.add_column(col)
    for d in diffs[:limit]:
        table.add_row(*d.row())
    console.print(table)
    if len(diffs) > limit:
        console.print(f"... and {len(diffs) - limit} more")
    console.print(f"mismatch: {len({d.name for d in diffs})} of {len(set(ours) | set(ref))} histograms differ "
                  "(bin 0 is the underflow)")
    raise typer.Exit(1)
