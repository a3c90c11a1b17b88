"""``casa data servicex ...``: run casa's ServiceX-compatible endpoint, inspect requests."""

from __future__ import annotations

from typing import Optional

import typer

servicex_app = typer.Typer(help="casa's ServiceX-compatible endpoint.", no_args_is_help=True)


@servicex_app.command("serve")
def serve(
    port: int = typer.Option(15000, help="port on 127.0.0.1"),
    state: Optional[str] = typer.Option(None, help="state + output dir (default: data_dir/servicex-endpoint/state)"),
    workers: int = typer.Option(2, help="transform processes"),
    s3_endpoint: Optional[str] = typer.Option(None, help="S3 server for outputs; keys from CASA_SX_S3_KEY/_SECRET"),
) -> None:
    """Serve in the foreground (Ctrl-C stops; requests resume on the next start)."""
    from casa_data.config import get_config
    from casa_facility.servicex.app import main

    state = state or str(get_config().data_path / "servicex-endpoint" / "state")
    typer.echo(f"ServiceX endpoint on http://127.0.0.1:{port} (state in {state}); casa config:\n"
               f"  paths: {{servicex: {{endpoint: 'http://127.0.0.1:{port}'}}}}", err=True)
    argv = ["--port", str(port), "--state", state, "--workers", str(workers)]
    main(argv + (["--s3-endpoint", s3_endpoint] if s3_endpoint else []))


@servicex_app.command("errors")
def errors(request_id: str, endpoint: str = typer.Option(..., help="endpoint URL")) -> None:
    """List the failed files of a request and why."""
    import httpx

    r = httpx.get(f"{endpoint.rstrip('/')}/servicex/transformation/{request_id}/errors", timeout=10)
    if r.status_code != 200:
        typer.echo(f"error: {endpoint} answered HTTP {r.status_code}: {r.text[:300]}", err=True)
        raise typer.Exit(1)
    for e in r.json()["errors"]:
        typer.echo(f"{e['file']}: {e['error']}")
