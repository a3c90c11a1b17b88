"""The ``casa`` command: ``casa data``, ``casa demo`` and the commands later layers add."""

from __future__ import annotations

import typer

from casa_data.bench.cli import bench_command
from casa_data.cli import data_app

from .compute_cli import compute_app
from .facility.cli import facility_app

app = typer.Typer(help="casa: data delivery first, compute second.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.command("bench")(bench_command)
app.add_typer(facility_app, name="facility")
app.add_typer(compute_app, name="compute")


@app.command()
def demo(
    output: str = typer.Option("casa-output", help="directory for the plot"),
    dataset: str = typer.Option("demo/zmumu", help="dataset to run on"),
) -> None:
    """Generate the demo data if needed, open it and plot the dimuon mass."""
    from .demo import run_demo

    run_demo(dataset=dataset, output=output)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
