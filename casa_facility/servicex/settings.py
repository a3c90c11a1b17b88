"""Settings of casa's ServiceX endpoint: state directory, workers, outputs, auth, sandbox, limits.

Secrets come from the environment only, and are removed from it once read (nothing the endpoint
starts inherits them): ``CASA_SX_S3_KEY`` / ``CASA_SX_S3_SECRET`` (outputs to S3),
``CASA_SX_REFRESH_TOKEN`` (a refresh token the servicex client trades at ``/token/refresh``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

from casa_facility.servicex.sandbox import SANDBOX_USER, Limits

__all__ = ["Settings", "LOOPBACK_HOSTS", "s3_admin"]

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
_SECRET_VARS = ("CASA_SX_S3_KEY", "CASA_SX_S3_SECRET", "CASA_SX_REFRESH_TOKEN")


class Settings:
    """Endpoint settings.

    Auth is on unless ``insecure_no_auth``: a caller needs a token, either an access token from
    ``/token/refresh`` (traded for the refresh token, or for a WLCG token of the trusted issuer) or
    a WLCG token of the trusted issuer itself (``issuer`` + ``jwks`` file, optional ``audience``).
    Requests belong to the token's subject. With neither a refresh token nor an issuer, no token
    can be valid: every call but ``/servicex`` is refused.
    """

    def __init__(self, state: str | os.PathLike, workers: int = 2, s3_endpoint: str | None = None,
                 public_host: str = "127.0.0.1", port: int = 0, *, insecure_no_auth: bool = False,
                 issuer: str | None = None, jwks: str | os.PathLike | None = None, audience: str | None = None,
                 data_roots: list[str] | None = None, same_user: bool = False,
                 sandbox_user: str = SANDBOX_USER, limits: Limits | None = None, max_files: int = 10_000,
                 max_bytes: int = 1 << 40, max_active: int = 8, max_body: int = 8 << 20):
        self.state = Path(state)
        self.workers = workers
        self.s3_endpoint = s3_endpoint
        self.s3_key = os.environ.pop("CASA_SX_S3_KEY", "")
        self._s3_secret = os.environ.pop("CASA_SX_S3_SECRET", "")
        self._refresh = os.environ.pop("CASA_SX_REFRESH_TOKEN", "")
        self.public = f"{public_host}:{port}"
        self.port = port
        self.insecure_no_auth = insecure_no_auth
        self.verifier = None
        if issuer:
            from casa_facility.skyhook.auth import WLCGVerifier

            self.verifier = WLCGVerifier(issuer, json.loads(Path(jwks).read_text()), audience)
        self.data_roots = [os.path.realpath(r) if "://" not in r else r for r in (data_roots or [])]
        self.same_user, self.sandbox_user = same_user, sandbox_user
        self.limits = limits or Limits()
        self.max_files, self.max_bytes, self.max_active, self.max_body = max_files, max_bytes, max_active, max_body
        self.state.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state, 0o700)
        # Signs access tokens and derives each user's key for the S3 subset; random, kept in the
        # state dir so tokens, keys and presigned URLs survive a restart of the endpoint.
        self._secret = self._keep("endpoint-secret", lambda: secrets.token_hex(32)).encode()
        self._jwt_key = hmac.new(self._secret, b"casa-servicex-jwt", hashlib.sha256).digest()
        self._admin = None

    def _keep(self, name: str, make) -> str:
        path = self.state / name
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(make())
        return path.read_text().strip()

    # -- per-user keys of the S3 subset ----------------------------------------------------------
    def s3_keys(self, owner: str) -> tuple[str, str]:
        """``(access key, secret key)`` of ``owner`` for the endpoint's S3 subset (derived, not stored)."""
        mac = hmac.new(self._secret, b"s3\0" + owner.encode(), hashlib.sha256).hexdigest()
        return "CASA" + mac[:16].upper(), hmac.new(self._secret, b"s3-secret\0" + owner.encode(),
                                                   hashlib.sha256).hexdigest()[:40]

    def describe(self) -> dict[str, Any]:
        return {"auth": "none (insecure)" if self.insecure_no_auth else
                ", ".join(x for x in ("refresh token" if self._refresh else "",
                                      f"WLCG tokens of {self.verifier.issuer}" if self.verifier else "") if x)
                or "no token can be valid (no refresh token, no issuer)"}


def s3_admin(settings: Settings):
    """A boto3 client for the facility S3 with the endpoint's keys (outputs; never given to clients)."""
    if settings._admin is None:
        import boto3

        settings._admin = boto3.client("s3", endpoint_url=settings.s3_endpoint, region_name="us-east-1",
                                       aws_access_key_id=settings.s3_key, aws_secret_access_key=settings._s3_secret)
    return settings._admin
