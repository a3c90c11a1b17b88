"""Settings of casa's ServiceX endpoint: state directory, workers, outputs, auth (secrets from the env only)."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

__all__ = ["Settings"]


class Settings:
    """Endpoint settings: state dir, workers, where outputs go, auth (secrets from the env only)."""

    def __init__(self, state: str | os.PathLike, workers: int = 2, s3_endpoint: str | None = None,
                 public_host: str = "127.0.0.1", port: int = 0):
        self.state = Path(state)
        self.workers = workers
        self.s3_endpoint = s3_endpoint
        self.s3_key = os.environ.get("CASA_SX_S3_KEY", "")
        self._s3_secret = os.environ.get("CASA_SX_S3_SECRET", "")
        self._refresh = os.environ.get("CASA_SX_REFRESH_TOKEN", "")
        self.public = f"{public_host}:{port}"
        # The access key of this app's S3 subset, handed out in the status as ServiceX does with its
        # MinIO keys; random, kept in the state dir so a client survives a restart of the endpoint.
        self.state.mkdir(parents=True, exist_ok=True)
        key_file = self.state / "s3-access-key"
        if not key_file.exists():
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write("casa" + secrets.token_hex(10))
        self.local_key = key_file.read_text().strip()
        self._admin = None
        # Derived from the refresh token, so access tokens survive a restart of the endpoint.
        self._jwt_key = hashlib.sha256(b"casa-servicex-jwt\0" + self._refresh.encode()).digest()


# -- JWT (HS256), stdlib only ---------------------------------------------------------------------
