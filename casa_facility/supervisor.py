"""The facility supervisor: starts the services, writes state and config, stops all on SIGTERM.

Services: XRootD origin + XCache (token auth), SeaweedFS (S3) with the demo data in a bucket, the
ServiceX-compatible endpoint (outputs to that S3), the Skyhook Flight service over the origin's
files (trusting the facility's token issuer) and a Dask LocalCluster over TLS.

Run by :func:`casa_facility.lifecycle.up` as ``python -m casa_facility.supervisor DIR``.
Each part below starts one service through the launchers in ``casa_facility.services`` and
``casa_compute.clusters`` and returns what clients need (URLs, ports, config).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger("casa_facility.lifecycle")

BUCKET = "casa-facility"
# One token for data and compute: storage.read for XCache/Skyhook/ServiceX, compute.* for the gateway.
FACILITY_SCOPES = "storage.read:/ compute.create compute.read compute.modify compute.cancel"
TOKEN_DAYS = 7  # lifetime of the user token `up` writes (`casa facility status` warns before it ends)


def _secret(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def token_path() -> Path:
    """Where the facility puts its token: the last WLCG discovery location, ``/tmp/bt_u<uid>``."""
    from casa_data.tokens import token_sources

    return token_sources({})[-1][1]


def remove_client_files(state: dict[str, Any]) -> None:
    """Remove the facility config and the token the facility wrote (not a user's own token)."""
    from casa_data.config import user_config_dir

    cfg = Path(state.get("config_file") or user_config_dir() / "facility.yaml")
    cfg.unlink(missing_ok=True)
    tok = state.get("token_file")
    if tok and state.get("token_owned"):
        Path(tok).unlink(missing_ok=True)


class Facility:
    """The running services of one facility and the config they add up to."""

    def __init__(self, state_dir: Path, workers: int):
        self.dir = state_dir
        self.secrets = state_dir / "secrets"
        self.secrets.mkdir(exist_ok=True)
        os.chmod(self.secrets, 0o700)
        self.workers = workers
        self.stoppers: list[Any] = []
        self.services: dict[str, dict[str, Any]] = {}
        self.config: dict[str, Any] = {"site": "facility", "paths": {}, "compute": {},
                                       "sites": {"facility": {"prefer": [], "rules": []}}}
        self.state: dict[str, Any] = {"pid": os.getpid(), "state_dir": str(state_dir), "status": "starting"}

    def rule(self, prefix: str, url: str, via: str) -> None:
        self.config["sites"]["facility"]["rules"].append({"prefix": prefix, "url": url, "via": via})
        if via not in self.config["sites"]["facility"]["prefer"]:
            self.config["sites"]["facility"]["prefer"].append(via)

    def write_state(self, **extra: Any) -> None:
        self.state.update(extra, services=self.services)
        tmp = self.dir / "state.json.tmp"
        tmp.write_text(json.dumps(self.state, indent=1))
        tmp.replace(self.dir / "state.json")

    # -- parts ----------------------------------------------------------------------------------
    def demo_files(self) -> Path:
        """The demo dataset, copied into the origin's export directory (store/demo/...)."""
        from casa_data.demo import generate

        paths = generate()
        store = self.dir / "store"
        for p in paths:
            dest = store / "demo" / p.parent.name / p.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists() or dest.stat().st_size != p.stat().st_size:
                shutil.copy(p, dest)
            os.chmod(dest, 0o644)
        for d in [store, *store.rglob("*")]:
            if d.is_dir():
                os.chmod(d, 0o755)
        return store

    def start_xrootd(self, store: Path) -> None:
        from casa_facility.services.xrootd import XRootDStack

        stack = XRootDStack(data_dir=store, workdir=self.dir / "xrootd")
        stack.start()
        self.stoppers.append(stack.stop)
        self.issuer = stack.issuer
        tok = token_path()
        owned = not tok.exists() or self._owns_token(tok)
        if owned:
            _secret(tok, stack.issuer.mint(FACILITY_SCOPES, lifetime=TOKEN_DAYS * 86400))
        _secret(self.secrets / "token", stack.issuer.mint(FACILITY_SCOPES, lifetime=TOKEN_DAYS * 86400))
        self.state.update(token_file=str(tok), token_owned=owned,
                          token_expires=time.time() + TOKEN_DAYS * 86400)
        cfg = stack.casa_config()
        self.config["paths"].update(cfg["paths"])
        self.rule("/store/", f"{stack.xcache_url}//store/", "xcache")
        self.config["paths"].setdefault("xrootd", {})
        self.services["xcache"] = {"url": stack.xcache_url, "ports": [stack.xcache.port],
                                   "pids": [stack.xcache.proc.pid],
                                   "token_expires": stack.xcache.origin_token_expires}
        self.services["xrootd-origin"] = {"url": stack.origin_url, "ports": [stack.origin.port],
                                          "pids": [stack.origin.proc.pid]}

    def _owns_token(self, tok: Path) -> bool:
        old = json.loads((self.dir / "owned-token.json").read_text()) if (self.dir / "owned-token.json").exists() else {}
        return old.get("path") == str(tok)

    def start_s3(self, store: Path) -> None:
        from casa_facility.services.s3 import SeaweedFS

        s3 = SeaweedFS(self.dir / "s3", volume_size_mb=64)  # a bucket per ServiceX request
        s3.start()
        self.stoppers.append(s3.stop)
        self.s3 = s3
        s3.create_bucket(BUCKET)
        client = s3.client()
        for f in sorted(store.rglob("*")):
            if f.is_file():
                client.upload_file(str(f), BUCKET, f"store/{f.relative_to(store)}")
        self.config["paths"]["s3"] = s3.path_options()
        self.rule("/store/", f"s3://{BUCKET}/store/", "s3")
        self.services["s3"] = {"url": s3.endpoint_url, "ports": [s3.ports["s3"]], "pids": [s3.proc.pid],
                               "bucket": BUCKET}

    def start_servicex(self) -> None:
        from casa_facility.services.servicex import ServiceXEndpoint

        # Authenticated by the facility's token issuer: the user token from `up` is the client's
        # (refresh) token; requests belong to its subject. File lists: the facility's store only.
        sx = ServiceXEndpoint(self.dir / "servicex", workers=1, s3=self.s3, issuer=self.issuer,
                              data_roots=[str(self.dir / "store")])
        sx.start()
        self.stoppers.append(sx.stop)
        tok = self.state["token_file"] if self.state.get("token_owned") else str(self.secrets / "token")
        self.config["paths"]["servicex"] = {"endpoint": sx.url, "token_file": tok}
        self.services["servicex"] = {"url": sx.url, "ports": [sx.port], "pids": [sx.proc.pid]}

    def start_skyhook(self, store: Path) -> None:
        from casa_facility.services.skyhook import SkyhookService

        # Trusts the facility's token issuer: the token from `up` works here as for the XCache.
        sky = SkyhookService(store, self.dir / "skyhook", token=None, issuer=self.issuer)
        sky.start()
        self.stoppers.append(sky.stop)
        self.config["paths"]["skyhook"] = sky.path_options()
        self.rule("/store/", sky.url(""), "skyhook")
        self.services["skyhook"] = {"url": sky.url(""), "ports": [sky.port], "pids": [sky.proc.pid]}

    def start_dask(self) -> None:
        from casa_facility.gateway import start_for_facility

        # Dask Gateway (TLS, the facility's tokens) on a one-node SLURM, or local processes
        # where SLURM is not installed: casa_facility.gateway.
        start_for_facility(self)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        from casa_data.config import get_config, user_config_dir

        store = self.demo_files()
        self.start_xrootd(store)
        self.start_s3(store)
        self.start_servicex()
        self.start_skyhook(store)
        self.start_dask()
        # The local demo copy stays reachable with via="local".
        self.rule("/store/demo/", f"{get_config().data_path / 'demo'}/", "local")
        cfg_file = user_config_dir() / "facility.yaml"
        cfg_file.parent.mkdir(parents=True, exist_ok=True)
        _secret(cfg_file, "# written by `casa facility up`; removed by `casa facility down`\n"
                + yaml.safe_dump(self.config, sort_keys=False))
        if self.state.get("token_owned"):
            (self.dir / "owned-token.json").write_text(json.dumps({"path": self.state["token_file"]}))
        self.write_state(status="up", config_file=str(cfg_file))

    def stop(self) -> None:
        for stop in reversed(self.stoppers):
            try:
                stop()
            except Exception:  # noqa: BLE001 - stop the rest regardless
                log.exception("stopping a facility service failed")
        self.stoppers.clear()
        remove_client_files(self.state)
        if self.state.get("token_owned"):
            (self.dir / "owned-token.json").unlink(missing_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(description="casa facility supervisor")
    ap.add_argument("state_dir", type=Path)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    fac = Facility(args.state_dir, args.workers)
    try:
        fac.start()
        log.info("facility up: %s", {k: v["url"] for k, v in fac.services.items()})
    except BaseException as err:  # noqa: BLE001
        log.error("facility failed to start:\n%s", traceback.format_exc())
        fac.stop()
        fac.write_state(status="failed", error=f"{type(err).__name__}: {err}")
        raise SystemExit(1) from None
    stop.wait()
    fac.write_state(status="stopping")
    fac.stop()
    fac.write_state(status="stopped")
    log.info("facility down")


if __name__ == "__main__":
    main()
