"""casa's ServiceX-compatible endpoint as a loopback service (see :mod:`casa_facility.servicex.app`).

>>> with ServiceXEndpoint() as sx:                                  # doctest: +SKIP
...     casa_data.open("cms/dimuon-2012", query=q, endpoint=sx.url)

Outputs go to ``s3=`` (a :class:`~casa_facility.services.s3.SeaweedFS` or ``{endpoint_url, key,
secret}``: a bucket per request; see :func:`OutputSeaweedFS`) or, by default, to
``<workdir>/state/outputs``; clients read them through the endpoint's own S3 subset either way.
Ready means: ``/servicex`` answers and every transform worker has
imported func_adl_uproot, uproot and dask (so the first request does not pay ~2 s of imports).
The state dir survives :meth:`stop`; ``start()`` again on the same workdir resumes requests.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import urllib.request
from typing import Any

from casa_facility.services.base import LOOPBACK, Service, free_port

__all__ = ["ServiceXEndpoint", "OutputSeaweedFS"]

PRIVATE_ROOTS = ["/", "root://", "s3://", "http://", "https://"]


class ServiceXEndpoint(Service):
    """A uvicorn process serving the endpoint on 127.0.0.1.

    Parameters
    ----------
    workdir : state and logs (a temporary directory by default).
    workers : transform processes (default 2).
    s3 : where outputs go; a SeaweedFS launcher or a mapping with ``endpoint_url``, ``key``, ``secret``.
    auth : require tokens (default): a random refresh token is made (:attr:`refresh_token`).
    issuer : also trust WLCG tokens of this issuer (``.issuer``, ``.audience``, ``.jwks()``, e.g. a
        :class:`~casa_facility.services.pki.TestIssuer`); requests belong to the token's ``sub``.
    insecure_no_auth : serve without any token (loopback only); ``auth=False`` means the same.
    data_roots : directories (or URL prefixes) file lists may name, besides the catalog's replicas.
        Default: with ``issuer`` (other users' tokens work), none; without, the endpoint is private
        to the process that starts it (only it knows the random refresh token), so any file or URL
        that process could read itself (never the endpoint's state dir).
    same_user : run transforms as this user instead of ``casa-transform`` (an endpoint serving only
        the user who starts it, e.g. the client's own; needed when not root).
    limits : per-file sandbox limits (:class:`~casa_facility.servicex.sandbox.Limits`);
        ``max_files``, ``max_bytes``, ``max_active``: per request / per user.
    port : fixed port (default: a free one, kept across restarts of this launcher).
    """

    name = "servicex"
    startup_timeout = 60.0

    def __init__(self, workdir: str | os.PathLike | None = None, *, workers: int = 2,
                 s3: Any = None, auth: bool = True, port: int | None = None, issuer: Any = None,
                 insecure_no_auth: bool = False, data_roots: list[str | os.PathLike] | None = None,
                 same_user: bool | None = None, limits: Any = None, max_files: int | None = None,
                 max_bytes: int | None = None, max_active: int | None = None):
        super().__init__(workdir)
        self.workers = workers
        if s3 is not None and not isinstance(s3, dict):
            s3 = {"endpoint_url": s3.endpoint_url, "key": s3.access_key, "secret": s3.secret_key}
        self._s3 = s3
        self.insecure_no_auth = insecure_no_auth or not auth
        self._refresh = "" if self.insecure_no_auth else secrets.token_urlsafe(24)
        self.issuer = issuer
        if data_roots is None:
            data_roots = [] if issuer is not None or insecure_no_auth or not auth else PRIVATE_ROOTS
        self.data_roots = [os.fspath(r) for r in data_roots]
        self.same_user = (os.geteuid() != 0) if same_user is None else same_user
        self.limits, self.max_files, self.max_bytes, self.max_active = limits, max_files, max_bytes, max_active
        self.port = port or 0

    @property
    def refresh_token(self) -> str:
        return self._refresh

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def prepare(self) -> None:
        if not self.port:
            self.port = free_port()
        (self.workdir / "state").mkdir(exist_ok=True)

    def command(self) -> list[str]:
        argv = [sys.executable, "-m", "casa_facility.servicex.app", "--port", str(self.port),
                "--state", str(self.workdir / "state"), "--workers", str(self.workers)]
        if self._s3:
            argv += ["--s3-endpoint", self._s3["endpoint_url"]]
        if self.insecure_no_auth:
            argv += ["--insecure-no-auth"]
        if self.issuer is not None:
            jwks = self.workdir / "jwks.json"
            jwks.write_text(json.dumps(self.issuer.jwks()))
            argv += ["--issuer", self.issuer.issuer, "--jwks", str(jwks)]
            if getattr(self.issuer, "audience", None):
                argv += ["--audience", self.issuer.audience]
        for root in self.data_roots:
            argv += ["--data-root", root]
        if self.same_user:
            argv += ["--sandbox-same-user"]
        if self.limits is not None:
            argv += ["--file-timeout", str(self.limits.wall), "--file-memory-gb", str(self.limits.memory / (1 << 30))]
        for opt, v in (("--max-files", self.max_files), ("--max-bytes", self.max_bytes), ("--max-active", self.max_active)):
            if v is not None:
                argv += [opt, str(v)]
        return argv

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        for var in ("CASA_SX_S3_KEY", "CASA_SX_S3_SECRET", "CASA_SX_REFRESH_TOKEN"):
            env.pop(var, None)
        # (transforms never see this environment: the sandbox starts its workers with a clean one)
        if self._s3:
            env["CASA_SX_S3_KEY"], env["CASA_SX_S3_SECRET"] = self._s3["key"], self._s3["secret"]
        if self._refresh:
            env["CASA_SX_REFRESH_TOKEN"] = self._refresh
        return env

    def start(self):
        out = super().start()
        if self._refresh:  # casa_data.open(..., endpoint=self.url) in this process finds its token
            from casa_data.servicex.client import remember_token

            remember_token(self.url, self._refresh)
        return out

    def is_ready(self) -> bool:
        with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
            return bool(json.load(r)["workers_ready"])

    def servicex_config(self, path: str | os.PathLike) -> str:
        """Write a ``servicex.yaml`` for the plain servicex client (token = the refresh token)."""
        import yaml

        cfg = {"api_endpoints": [{"name": "casa", "endpoint": self.url, "token": self._refresh}],
               "default_endpoint": "casa", "cache_path": str(self.workdir / "client-cache")}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(cfg, f)
        return str(path)

    def __getstate__(self) -> dict:
        raise TypeError("a running ServiceXEndpoint does not pickle; pass its url instead")

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        auth = "none (insecure)" if self.insecure_no_auth else "wlcg+token" if self.issuer else "token"
        return f"<ServiceXEndpoint {self.url} {state} s3={'yes' if self._s3 else 'local'} auth={auth}>"


def OutputSeaweedFS(workdir: str | os.PathLike | None = None, **kw: Any):
    """A :class:`~casa_facility.services.s3.SeaweedFS` sized for ServiceX outputs.

    ServiceX needs a bucket per request (the client reads bucket = request id). SeaweedFS stores
    each bucket as a collection and grows 7 volumes for it; with the launcher's 1 GiB volume
    limit and ``-volume.max=0`` (slots = free disk / limit) the 11th bucket on a 75 GB disk fails
    with "No writable volumes and no free volumes left". 64 MiB volumes give ~16x the buckets.
    """
    from casa_facility.services.s3 import SeaweedFS

    kw.setdefault("volume_size_mb", 64)
    return SeaweedFS(workdir, **kw)

