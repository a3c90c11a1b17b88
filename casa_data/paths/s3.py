"""S3 object stores: ``s3://bucket/key`` through s3fs, and pyarrow's native S3 for Parquet.

Options (``paths: {s3: {...}}`` in the casa config, or keyword arguments):

``endpoint_url``
    The S3 endpoint (default: ``$AWS_ENDPOINT_URL_S3``, ``$AWS_ENDPOINT_URL``, else AWS).
``profile``, ``key``, ``secret``, ``token``, ``anon``
    Credentials. Default: the standard AWS chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
    ``AWS_PROFILE``, ``~/.aws/credentials`` and ``~/.aws/config``, ``AWS_SHARED_CREDENTIALS_FILE``).
``region``
    Region name (default: ``$AWS_DEFAULT_REGION`` or ``us-east-1``).
``cache_type``, ``block_size``
    s3fs file caching. Default ``"none"`` and 1 MiB: each read asks for exactly its bytes. s3fs's
    own default (50 MiB read-ahead blocks) pulls tens of times the bytes a column read needs.
``connect_timeout``, ``read_timeout``, ``max_attempts``
    Fail fast when the endpoint is down (defaults 3 s, 60 s, 2 attempts).
``sites: {site: {...}}``, ``buckets: {bucket: {...}}``
    Overrides for the current site (``site:`` in the config) and per bucket, so each site (and
    each bucket) can name its own endpoint and profile.

Errors are translated in one place (:func:`s3_errors`) into casa errors naming the URL and the
endpoint, never a secret.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import fsspec

from ..errors import (
    AccessDeniedError,
    BucketNotFoundError,
    CasaError,
    ObjectNotFoundError,
    ServiceError,
)
from .base import DeliveryPath

__all__ = ["S3Path", "split_s3_url", "s3_errors"]

_SECRET_OPTIONS = ("secret", "token", "key")
_AUTH_CODES = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "InvalidToken",
               "ExpiredToken", "403", "Forbidden", "AuthorizationHeaderMalformed"}
# What s3fs and pyarrow's C++ client put in the text of an OSError (no response code to read).
_AUTH_TEXT = ("SignatureDoesNotMatch", "signature we calculated does not match", "InvalidAccessKeyId",
              "ACCESS_DENIED", "AccessDenied", "Access Denied", "Forbidden", "INVALID_ACCESS_KEY_ID")
_BUCKET_TEXT = ("NoSuchBucket", "NO_SUCH_BUCKET", "bucket does not exist")
_KEY_TEXT = ("NoSuchKey", "NO_SUCH_KEY", "Path does not exist", "RESOURCE_NOT_FOUND")


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``."""
    parts = urlsplit(url)
    if parts.scheme not in ("s3", "s3a"):
        raise CasaError(f"not an s3:// URL: {url}")
    return parts.netloc, parts.path.lstrip("/")


class S3Path(DeliveryPath):
    """Objects in an S3 bucket (AWS, Ceph RGW, SeaweedFS, MinIO, ...)."""

    name = "s3"
    schemes = ("s3", "s3a")

    def __init__(self, **options: Any):
        super().__init__(**options)
        self._fs: dict[tuple, Any] = {}

    def __getstate__(self) -> dict:
        return {"options": self.options}

    def __setstate__(self, state: dict) -> None:
        self.options = state["options"]
        self._fs = {}

    # -- options ----------------------------------------------------------------------------
    def settings(self, url: str | None = None) -> dict[str, Any]:
        """The options in force for ``url``: base < current site < bucket."""
        opts = {k: v for k, v in self.options.items() if k not in ("sites", "buckets")}
        site_over = (self.options.get("sites") or {})
        if site_over:
            from ..config import get_config

            opts.update(site_over.get(get_config().site) or {})
        if url:
            bucket = split_s3_url(url)[0]
            opts.update((self.options.get("buckets") or {}).get(bucket) or {})
        if not opts.get("endpoint_url"):
            opts["endpoint_url"] = (os.environ.get("AWS_ENDPOINT_URL_S3")
                                    or os.environ.get("AWS_ENDPOINT_URL") or None)
        opts.setdefault("region", os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION"))
        return opts

    def endpoint(self, url: str | None = None) -> str:
        return self.settings(url).get("endpoint_url") or "AWS S3"

    def _secrets(self, url: str | None) -> list[str]:
        """Values to scrub from any message (configured or resolved through the AWS chain)."""
        s = self.settings(url)
        out = [str(s[k]) for k in ("secret", "token") if s.get(k)]
        try:
            creds = self.credentials(url)
        except CasaError:
            creds = {}
        return out + [str(v) for k, v in creds.items() if v and k != "access_key"]

    def storage_options(self, url: str) -> dict[str, Any]:
        """s3fs constructor arguments (what uproot's fsspec source and pandas take)."""
        s = self.settings(url)
        config: dict[str, Any] = {
            "connect_timeout": s.get("connect_timeout", 3),
            "read_timeout": s.get("read_timeout", 60),
            "retries": {"max_attempts": int(s.get("max_attempts", 2)), "mode": "standard"},
        }
        opts: dict[str, Any] = {
            "default_cache_type": s.get("cache_type", "none"),
            "default_block_size": int(s.get("block_size", 1 << 20)),
            "config_kwargs": config,
        }
        client: dict[str, Any] = {}
        if s.get("endpoint_url"):
            opts["endpoint_url"] = s["endpoint_url"]
        if s.get("region"):
            client["region_name"] = s["region"]
        if client:
            opts["client_kwargs"] = client
        if s.get("anon"):
            opts["anon"] = True
        else:
            # Resolved here, not by s3fs: fsspec caches filesystems by their arguments, so a
            # credential change (a new AWS_SECRET_ACCESS_KEY, another profile) must change them.
            try:
                creds = self.credentials(url)
            except AccessDeniedError:
                creds = {}  # let s3fs try (instance roles); its error is translated later
            for ours, theirs in (("access_key", "key"), ("secret_key", "secret"), ("session_token", "token")):
                if creds.get(ours):
                    opts[theirs] = creds[ours]
        return opts

    # -- filesystems ------------------------------------------------------------------------
    def filesystem(self, url: str) -> fsspec.AbstractFileSystem:
        import s3fs

        opts = self.storage_options(url)
        key = repr(sorted(opts.items()))
        fs = self._fs.get(("s3fs", key))
        if fs is None:
            fs = self._fs[("s3fs", key)] = s3fs.S3FileSystem(**opts)
        return fs

    def credentials(self, url: str | None = None) -> dict[str, str | None]:
        """Access key, secret and token: explicit options, else botocore's standard chain."""
        s = self.settings(url)
        if s.get("anon"):
            return {}
        if s.get("key") and s.get("secret"):
            return {"access_key": s["key"], "secret_key": s["secret"], "session_token": s.get("token")}
        creds = _chain_credentials(s.get("profile"))
        if creds is None:
            raise AccessDeniedError(
                f"no S3 credentials found for {url or 's3://'} (endpoint {self.endpoint(url)}): set "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws/credentials, or "
                "paths.s3.profile in the casa config"
            )
        return creds

    def arrow_filesystem(self, url: str):
        """``(pyarrow.fs.S3FileSystem, "bucket/key")``: native C++ reads, coalesced for Parquet."""
        bucket, key = split_s3_url(url)
        return self.native_filesystem(url), f"{bucket}/{key}".rstrip("/")

    def native_filesystem(self, url: str | None = None):
        """The ``pyarrow.fs.S3FileSystem`` for ``url`` (cached on this instance)."""
        from pyarrow import fs as pafs

        s = self.settings(url)
        key = ("arrow", repr(sorted((k, str(v)) for k, v in s.items())))
        got = self._fs.get(key)
        if got is not None:
            return got
        kw: dict[str, Any] = {"region": s.get("region") or "us-east-1",
                              "connect_timeout": float(s.get("connect_timeout", 3)),
                              "request_timeout": float(s.get("read_timeout", 60))}
        if s.get("anon"):
            kw["anonymous"] = True
        else:
            kw.update({k: v for k, v in self.credentials(url).items() if v})
        endpoint = s.get("endpoint_url")
        if endpoint:
            parts = urlsplit(endpoint)
            kw["endpoint_override"] = parts.netloc or endpoint
            kw["scheme"] = parts.scheme or "https"
        kw["retry_strategy"] = pafs.AwsStandardS3RetryStrategy(max_attempts=int(s.get("max_attempts", 2)))
        self._fs[key] = got = pafs.S3FileSystem(**kw)
        return got

    def client(self, url: str | None = None, timeout: float | None = None):
        """A boto3 S3 client (for bucket checks, multipart uploads and checksums)."""
        import boto3
        from botocore.config import Config

        s = self.settings(url)
        ct = timeout if timeout is not None else s.get("connect_timeout", 3)
        rt = timeout if timeout is not None else s.get("read_timeout", 60)
        attempts = 1 if timeout is not None else int(s.get("max_attempts", 2))
        kw: dict[str, Any] = {"endpoint_url": s.get("endpoint_url"), "region_name": s.get("region") or "us-east-1"}
        if not s.get("anon"):
            # Explicit, never boto3's default session: it keeps the first credentials it found.
            creds = self.credentials(url)
            kw.update(aws_access_key_id=creds.get("access_key"), aws_secret_access_key=creds.get("secret_key"),
                      aws_session_token=creds.get("session_token"))
        cfg = Config(connect_timeout=ct, read_timeout=rt,
                     retries={"max_attempts": attempts, "mode": "standard"})
        if s.get("anon"):
            from botocore import UNSIGNED

            cfg = cfg.merge(Config(signature_version=UNSIGNED))
        return boto3.session.Session().client("s3", config=cfg, **kw)

    def explain_error(self, url: str, err: BaseException) -> BaseException:
        """The casa error for an s3fs / pyarrow / botocore error on ``url`` (no secret in it)."""
        if isinstance(err, CasaError):
            return err
        return translate(err, url, self.endpoint(url), self._secrets(url))

    # -- health -----------------------------------------------------------------------------
    def check(self, url: str, timeout: float = 5.0) -> None:
        """Head the object (or the bucket, for ``s3://bucket`` and ``.../``) within ``timeout``."""
        bucket, key = split_s3_url(url)
        client = self.client(url, timeout=timeout)
        endpoint, secrets = self.endpoint(url), self._secrets(url)
        with s3_errors(f"s3://{bucket}", endpoint, secrets, head_bucket=True):
            client.head_bucket(Bucket=bucket)
        if key and not key.endswith("/"):
            with s3_errors(url, endpoint, secrets):
                client.head_object(Bucket=bucket, Key=key)

    def __repr__(self) -> str:
        return f"<S3Path via='s3' endpoint={self.endpoint()!r} options={sorted(self.options)}>"


_AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
             "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE")
_chain_cache: dict[tuple, dict[str, str | None] | None] = {}


def _chain_credentials(profile: str | None) -> dict[str, str | None] | None:
    """botocore's credential chain, cached until the variables or the files it reads change."""
    files = [os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
             os.environ.get("AWS_CONFIG_FILE", "~/.aws/config")]
    mtimes = []
    for f in files:
        try:
            mtimes.append(os.stat(os.path.expanduser(f)).st_mtime_ns)
        except OSError:
            mtimes.append(None)
    key = (profile, tuple(os.environ.get(v) for v in _AWS_VARS), tuple(mtimes))
    if key not in _chain_cache:
        import botocore.session

        creds = botocore.session.Session(profile=profile).get_credentials()
        if creds is None:
            _chain_cache[key] = None
        else:
            f = creds.get_frozen_credentials()
            _chain_cache[key] = {"access_key": f.access_key, "secret_key": f.secret_key, "session_token": f.token}
    return _chain_cache[key]


def _code(err: BaseException) -> str:
    resp = getattr(err, "response", None) or {}
    return str((resp.get("Error") or {}).get("Code") or "")


@contextlib.contextmanager
def s3_errors(url: str, endpoint: str, secrets: list[str] = (), head_bucket: bool = False) -> Iterator[None]:
    """Translate boto/s3fs errors for ``url`` into casa errors (the cause stays chained).

    ``head_bucket``: the call was a HeadBucket, so a bare 404 means the bucket is missing.
    """
    try:
        yield
    except CasaError:
        raise
    except Exception as err:  # noqa: BLE001 - classified below, re-raised otherwise
        raise translate(err, url, endpoint, secrets, head_bucket) from err


def translate(err: BaseException, url: str, endpoint: str, secrets: list[str] = (),
              head_bucket: bool = False) -> BaseException:
    """The casa error for ``err`` raised while accessing ``url`` (or ``err`` itself)."""
    from botocore import exceptions as bx

    bucket = split_s3_url(url)[0] if url.startswith(("s3://", "s3a://")) else url
    code = _code(err)
    text = str(err)
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    where = f"{url} (endpoint {endpoint})"
    auth = code in _AUTH_CODES or any(t in text for t in _AUTH_TEXT)
    if isinstance(err, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ConnectionClosedError)) or (
        isinstance(err, (ConnectionError, OSError)) and "connect" in text.lower() and not code and not auth
    ):
        return ServiceError(f"cannot reach the S3 endpoint {endpoint} for {url}: is the server up? "
                            f"({type(err).__name__})")
    if code == "NoSuchBucket" or any(t in text for t in _BUCKET_TEXT) or (
            head_bucket and code in ("404", "NotFound")):
        return BucketNotFoundError(f"bucket {bucket!r} does not exist at {endpoint} (for {url}); "
                                   "create it or fix the URL")
    if auth or isinstance(err, (PermissionError, bx.NoCredentialsError)):
        return AccessDeniedError(
            f"access to {where} denied ({code or type(err).__name__}): check the credentials "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/credentials or "
            "paths.s3 in the casa config)"
        )
    if code in ("NoSuchKey", "404", "NotFound") or isinstance(err, FileNotFoundError) or any(
            t in text for t in _KEY_TEXT):
        return ObjectNotFoundError(f"no object at {where}", url)
    return err
