"""``casa facility up|down|status``."""

from __future__ import annotations

import typer

facility_app = typer.Typer(help="The facility in a box: every service on 127.0.0.1.", no_args_is_help=True)


def _print_status(st: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("service", "health", "where")
    for name, svc in st["services"].items():
        table.add_row(name, "[green]ok[/]" if svc["ok"] else "[red]down[/]", svc["detail"])
    Console().print(table)
    if "token" in st:  # the user token expires soon or has expired
        Console().print(("[yellow]" if st["token"]["ok"] else "[red]") + st["token"]["detail"] + "[/]")


@facility_app.command("up")
def up_cmd(workers: int = typer.Option(2, help="Dask workers per user cluster by default (its max_workers option)")) -> None:
    """Start every service (safe to run twice) and write the facility config."""
    from rich.console import Console

    from casa_facility.lifecycle import status, up

    with Console().status("starting the facility (XRootD + XCache, S3, ServiceX, Skyhook, Dask over TLS)..."):
        state = up(workers=workers)
    print(f"facility up (state in {state['state_dir']}, config {state['config_file']})")
    _print_status(status())


@facility_app.command("status")
def status_cmd() -> None:
    """Check every service's health; exit code 1 if any is down."""
    from casa_facility.lifecycle import status

    st = status()
    if not st["services"]:
        print(st.get("detail", "no facility"))
        raise typer.Exit(1)
    _print_status(st)
    raise typer.Exit(0 if st["up"] else 1)


@facility_app.command("down")
def down_cmd() -> None:
    """Stop every service and remove the facility config."""
    from casa_facility.lifecycle import down

    print("facility stopped" if down() else "no facility was running")
