"""Result caching: a key from the spec's hash and the input files' identities (path, size, mtime/etag).

The cache lives in the output directory (``.casa-cache.pkl`` next to ``summary.json``): a re-run
whose key matches returns the stored histograms at once; ``force=True`` recomputes.

The file is a pickle, and unpickling runs code, while an output directory may be shared or
writable by others. So the file carries an HMAC-SHA256 of its bytes under a per-user secret key
(``cache-hmac.key``, mode 0600, in the user's config directory ``$XDG_CONFIG_HOME/casa``) and the
HMAC is checked *before* anything is unpickled: a file not written by this user is a miss and is
never loaded.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import pickle
import secrets
from pathlib import Path
from typing import Any

__all__ = ["file_identity", "input_identity", "cache_key", "load_cached", "store"]

CACHE_FILE = ".casa-cache.pkl"
KEY_FILE = "cache-hmac.key"
MAGIC = b"CASA-CACHE-HMAC-SHA256 1\n"
log = logging.getLogger("casa_compute.pipeline")
# Bump when the processor's semantics change, so old caches are not reused.
FORMAT_VERSION = 1


def file_identity(candidate) -> dict[str, Any]:
    """``{url, size, mtime | etag}`` of one replica, via its delivery path's filesystem."""
    url = candidate.url
    path = candidate.path
    fs = path.filesystem(url)
    try:
        info = fs.info(url)
    except OSError:  # filesystems bound to one server (XRootD) want the path alone
        info = fs.info(fs._strip_protocol(url))
    ident: dict[str, Any] = {"url": url, "via": candidate.via, "size": info.get("size")}
    for k in ("mtime", "ETag", "etag", "LastModified", "last_modified", "modify"):
        if info.get(k) is not None:
            ident[k.lower()] = str(info[k])
    return ident


def input_identity(resolved) -> dict[str, Any]:
    """The identity of a resolved file: that of its first replica that answers, in the order and
    with the errors of every other read (:class:`casa_data.access.Replicas`)."""
    from casa_data.access import Replicas

    return Replicas(resolved.lfn, resolved.candidates, label=resolved.lfn).call(file_identity)


def cache_key(spec_hash: str, inputs: dict[str, list[dict]], extra: dict | None = None) -> str:
    """sha256 over the spec hash, every input file identity (by dataset label) and ``extra``."""
    blob = json.dumps({"v": FORMAT_VERSION, "spec": spec_hash, "inputs": inputs, "extra": extra or {}},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _secret_key(create: bool) -> bytes | None:
    """The per-user HMAC key (created 0600 on first use); None if absent or not private to this user."""
    from casa_data.config import user_config_dir

    path = user_config_dir() / KEY_FILE
    if not path.exists():
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except FileExistsError:  # another process made it meanwhile
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    with os.fdopen(fd) as f:
        st = os.fstat(f.fileno())
        if (hasattr(os, "getuid") and st.st_uid != os.getuid()) or st.st_mode & 0o077:
            log.warning("not using the pipeline cache: %s must be owned by you with mode 0600", path)
            return None
        key = f.read().strip()
    return key.encode() if len(key) >= 32 else None


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).hexdigest().encode()


def load_cached(outdir: Path, key: str) -> dict | None:
    """The stored result for ``key``, or None (missing, other key, unreadable, not ours, outputs deleted).

    Nothing is unpickled unless the file's HMAC under this user's secret key matches.
    """
    f = outdir / CACHE_FILE
    if not f.is_file():
        return None
    secret = _secret_key(create=False)
    if secret is None:
        return None
    try:
        raw = f.read_bytes()
    except OSError:
        return None
    if not raw.startswith(MAGIC):
        return None
    mac, sep, body = raw[len(MAGIC):].partition(b"\n")
    if not sep or not hmac.compare_digest(mac, _mac(secret, body)):
        log.warning("ignoring %s: not written by this user's casa (bad or missing HMAC)", f)
        return None
    try:
        payload = pickle.loads(body)  # authenticated: written by store() with this user's key
    except Exception:  # noqa: BLE001 - a broken cache is just a miss
        return None
    if not isinstance(payload, dict) or payload.get("key") != key:
        return None
    if not all((outdir / name).exists() for name in payload.get("files", [])):
        return None
    return payload


def store(outdir: Path, key: str, payload: dict) -> None:
    secret = _secret_key(create=True)
    if secret is None:
        return
    body = pickle.dumps({**payload, "key": key})
    tmp = outdir / (CACHE_FILE + ".tmp")
    tmp.unlink(missing_ok=True)
    with tmp.open("xb") as fh:
        fh.write(MAGIC + _mac(secret, body) + b"\n" + body)
    tmp.replace(outdir / CACHE_FILE)
