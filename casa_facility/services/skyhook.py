"""The Skyhook Flight service on 127.0.0.1, next to a directory or an S3 bucket.

>>> with SkyhookService("/data") as sky:                       # doctest: +SKIP
...     casa_data.skyhook.SkyhookDataset(sky.url("agc"), token=sky.token).to_table(["nMuon"])

By default it requires a bearer token (a random one, readable through :attr:`token` and written
to a 0600 file the server reads; never on its command line) and serves plain gRPC; with
``token=None`` it needs an ``issuer`` (WLCG tokens) or an explicit ``insecure_no_auth=True``; ``tls=True``
makes a throw-away CA and server certificate (``ca_file`` for clients). For an ``s3://`` root,
``s3_options`` (``endpoint_url``, ``key``, ``secret``) reach the server as the standard AWS
variables.
"""

from __future__ import annotations

import os
import secrets
import sys
from typing import Any

from casa_facility.services.base import LOOPBACK, Service, free_port

__all__ = ["SkyhookService"]


class SkyhookService(Service):
    """``python -m casa_facility.skyhook.server`` as a managed process.

    Parameters
    ----------
    root : directory or ``s3://bucket/prefix`` to serve.
    token : the accepted static bearer token; ``"random"`` (default) makes one; None: none.
    issuer : trust WLCG JWTs from this issuer (an object with ``issuer``, ``audience`` and
        ``jwks()``, e.g. :class:`~casa_facility.services.pki.TestIssuer`); scopes limit the paths.
    insecure_no_auth : serve anyone without a token (127.0.0.1 only); needs ``token=None`` and no issuer.
    tls : serve TLS with a test certificate (see :attr:`ca_file`).
    max_scans, max_memory_mb, queue_timeout, max_scan_cpu : the server's limits.
    s3_options : ``endpoint_url``, ``key``, ``secret`` for an ``s3://`` root.
    """

    name = "skyhook"
    startup_timeout = 60.0

    def __init__(self, root: str | os.PathLike, workdir: str | os.PathLike | None = None, *,
                 token: str | None = "random", tls: bool = False, max_scans: int = 4,
                 max_memory_mb: int = 4096, queue_timeout: float = 30.0, issuer: Any = None,
                 s3_options: dict[str, Any] | None = None, insecure_no_auth: bool = False,
                 max_scan_cpu: float = 600.0):
        if token is None and issuer is None and not insecure_no_auth:
            raise ValueError("SkyhookService without a token or an issuer serves anyone: pass "
                             "insecure_no_auth=True to mean it (or keep the default token='random')")
        if insecure_no_auth and (token is not None or issuer is not None):
            raise ValueError("insecure_no_auth=True needs token=None and no issuer")
        super().__init__(workdir)
        self.insecure_no_auth, self.max_scan_cpu = insecure_no_auth, max_scan_cpu
        self.workdir = self.workdir.resolve()  # the server runs with cwd=workdir
        root = os.fspath(root)
        self.root = root if "://" in root else os.path.abspath(root)
        self._token = secrets.token_urlsafe(32) if token == "random" else token
        self.tls, self.max_scans, self.max_memory_mb = tls, max_scans, max_memory_mb
        self.queue_timeout = queue_timeout
        self.issuer = issuer  # a TestIssuer-like object: .issuer, .audience, .jwks()
        self._s3 = dict(s3_options or {})
        self.port = 0
        self.ca_file: str | None = None
        self._pki = None

    @property
    def token(self) -> str | None:
        """The accepted token (a secret: for clients, never for logs)."""
        return self._token

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def url(self, path: str = "") -> str:
        """``skyhook://127.0.0.1:PORT/path``."""
        return f"skyhook://{self.address}/{path.lstrip('/')}"

    def path_options(self) -> dict[str, Any]:
        """Options for ``paths: {skyhook: ...}`` (no token: clients discover theirs)."""
        return {"ca_file": self.ca_file} if self.ca_file else {}

    def client(self, **kw: Any):
        from casa_data.skyhook.client import SkyhookClient

        kw.setdefault("token", self._token)
        return SkyhookClient(self.address, ca_file=self.ca_file, timeout=kw.pop("timeout", 5.0), **kw)

    def prepare(self) -> None:
        self.port = free_port()
        if self._token:
            tok = self.workdir / "tokens"
            tok.touch(mode=0o600)
            tok.write_text(self._token + "\n")
        if self.issuer is not None:
            import json

            (self.workdir / "jwks.json").write_text(json.dumps(self.issuer.jwks()))
            # what a server started by hand next to this one trusts by default (public keys only)
            (self.workdir / "issuer.json").write_text(json.dumps({
                "issuer": self.issuer.issuer, "audience": getattr(self.issuer, "audience", None),
                "jwks": self.issuer.jwks()}))
        if self.tls:
            from casa_facility.services.pki import make_test_pki

            self._pki = make_test_pki(self.workdir / "pki", hostname="localhost")
            self.ca_file = str(self._pki.ca_cert)

    def command(self) -> list[str]:
        argv = [sys.executable, "-m", "casa_facility.skyhook.server", "--root", self.root,
                "--host", LOOPBACK, "--port", str(self.port), "--max-scans", str(self.max_scans),
                "--max-memory-mb", str(self.max_memory_mb), "--queue-timeout", str(self.queue_timeout),
                "--max-scan-cpu", str(self.max_scan_cpu)]
        if self.insecure_no_auth:
            argv.append("--insecure-no-auth")
        if self._token:
            argv += ["--token-file", str(self.workdir / "tokens")]
        if self.issuer is not None:
            argv += ["--issuer", self.issuer.issuer, "--jwks", str(self.workdir / "jwks.json")]
            if getattr(self.issuer, "audience", None):
                argv += ["--audience", self.issuer.audience]
        if self._pki is not None:
            argv += ["--tls-cert", str(self._pki.server_cert), "--tls-key", str(self._pki.server_key)]
        if self._s3.get("endpoint_url"):
            argv += ["--s3-endpoint", self._s3["endpoint_url"]]
        return argv

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self._s3.get("key"):
            env["AWS_ACCESS_KEY_ID"] = self._s3["key"]
        if self._s3.get("secret"):
            env["AWS_SECRET_ACCESS_KEY"] = self._s3["secret"]
        return env

    def is_ready(self) -> bool:
        from casa_data.errors import TokenError

        try:
            return self.client(timeout=2.0).health()["status"] == "ok"
        except TokenError:  # JWT-only auth refused our token-less probe: it answers, so it is up
            return True

    def __getstate__(self) -> dict:
        raise TypeError("a running Skyhook launcher does not pickle; pass its url() and token instead")
