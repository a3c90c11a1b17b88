"""The ``casa`` command: every sub-app of :mod:`casa_cli` under one typer app."""

from __future__ import annotations

import typer

from casa_cli.bench import bench_command
from casa_cli.compute import compute_app
from casa_cli.data import data_app
from casa_cli.facility import facility_app
from casa_cli.run import run_command
from casa_cli.validate import validate_command

app = typer.Typer(help="casa: data delivery first, compute second.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.command("bench")(bench_command)
app.add_typer(facility_app, name="facility")
app.add_typer(compute_app, name="compute")
app.command("run")(run_command)
app.command("validate")(validate_command)


@app.command()
def demo(
    output: str = typer.Option("casa-output", help="directory for the plots"),
    facility: bool = typer.Option(True, help="run on the facility in a box (started and stopped here)"),
) -> None:
    """The main job: facility up, the Z->mumu pipeline through XCache and ServiceX, plots, facility down."""
    from casa_facility.demo import run_demo

    run_demo(output=output, facility=facility)


def main() -> None:
    """Run ``casa``; a casa error is one line on stderr and exit code 2, never a traceback."""
    import sys

    from casa_data.errors import CasaError

    try:
        app()
    except CasaError as err:
        print(f"casa: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
