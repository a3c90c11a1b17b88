"""``casa data servicex ...``: run casa's ServiceX-compatible endpoint, inspect requests."""

from __future__ import annotations

import typer

servicex_app = typer.Typer(help="casa's ServiceX-compatible endpoint.", no_args_is_help=True)


@servicex_app.command("serve")
def serve(
    port: int = typer.Option(15000, help="port"),
    host: str = typer.Option("127.0.0.1", help="address to bind"),
    state: str | None = typer.Option(None, help="state + output dir (default: data_dir/servicex-endpoint/state)"),
    workers: int = typer.Option(2, help="transform processes"),
    s3_endpoint: str | None = typer.Option(None, help="S3 server for outputs; keys from CASA_SX_S3_KEY/_SECRET"),
    issuer: str | None = typer.Option(None, help="trust WLCG tokens of this issuer (with --jwks)"),
    jwks: str | None = typer.Option(None, help="the issuer's public keys (JWKS file)"),
    audience: str | None = typer.Option(None, help="the audience WLCG tokens must name"),
    data_root: list[str] = typer.Option([], help="a directory file lists may name (repeatable)"),
    max_files: int = typer.Option(10_000, help="input files per request"),
    max_active: int = typer.Option(8, help="unfinished requests per user"),
    file_timeout: float = typer.Option(600.0, help="wall-clock seconds per input file"),
    insecure_no_auth: bool = typer.Option(False, "--insecure-no-auth",
                                          help="INSECURE: serve without tokens (refused on a non-loopback address)"),
) -> None:
    """Serve in the foreground (Ctrl-C stops; requests resume on the next start).

    Auth is on: the refresh token for servicex.yaml is in STATE/refresh-token (or CASA_SX_REFRESH_TOKEN),
    and WLCG tokens of --issuer work too. Transforms run sandboxed as the user casa-transform."""
    from casa_data.config import get_config
    from casa_facility.servicex.app import main
    from casa_facility.servicex.settings import LOOPBACK_HOSTS

    if insecure_no_auth and host not in LOOPBACK_HOSTS:
        typer.echo(f"error: --insecure-no-auth is refused on {host}: only a loopback address may serve "
                   "without tokens", err=True)
        raise typer.Exit(2)
    state = state or str(get_config().data_path / "servicex-endpoint" / "state")
    auth = "NONE (--insecure-no-auth)" if insecure_no_auth else f"token (refresh token in {state}/refresh-token" + (
        f", WLCG tokens of {issuer})" if issuer else ")")
    typer.echo(f"ServiceX endpoint on http://{host}:{port} (state in {state}; auth: {auth}); casa config:\n"
               f"  paths: {{servicex: {{endpoint: 'http://{host}:{port}', token_file: <file with the token>}}}}",
               err=True)
    argv = ["--port", str(port), "--host", host, "--state", state, "--workers", str(workers),
            "--max-files", str(max_files), "--max-active", str(max_active), "--file-timeout", str(file_timeout)]
    for opt, v in (("--s3-endpoint", s3_endpoint), ("--issuer", issuer), ("--jwks", jwks), ("--audience", audience)):
        if v:
            argv += [opt, v]
    for root in data_root:
        argv += ["--data-root", root]
    if insecure_no_auth:
        argv += ["--insecure-no-auth"]
    main(argv)


@servicex_app.command("errors")
def errors(request_id: str, endpoint: str = typer.Option(..., help="endpoint URL"),
           token_file: str | None = typer.Option(None, help="file with the refresh (or WLCG) token")) -> None:
    """List the failed files of a request and why."""
    from pathlib import Path

    import httpx

    url = endpoint.rstrip("/")
    headers = {}
    if token_file:
        tok = Path(token_file).read_text().strip()
        r = httpx.post(url + "/token/refresh", headers={"Authorization": f"Bearer {tok}"}, timeout=10)
        if r.status_code != 200:
            typer.echo(f"error: {endpoint} refused the token: HTTP {r.status_code}: {r.text[:300]}", err=True)
            raise typer.Exit(1)
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
    r = httpx.get(f"{url}/servicex/transformation/{request_id}/errors", headers=headers, timeout=10)
    if r.status_code != 200:
        typer.echo(f"error: {endpoint} answered HTTP {r.status_code}: {r.text[:300]}", err=True)
        raise typer.Exit(1)
    for e in r.json()["errors"]:
        typer.echo(f"{e['file']}: {e['error']}")
