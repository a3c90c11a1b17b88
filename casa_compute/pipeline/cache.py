"""Result caching: a key from the spec's hash and the input files' identities (path, size, mtime/etag).

The cache lives in the output directory (``.casa-cache.pkl`` next to ``summary.json``): a re-run
whose key matches returns the stored histograms at once; ``force=True`` recomputes.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

__all__ = ["file_identity", "input_identity", "cache_key", "load_cached", "store"]

CACHE_FILE = ".casa-cache.pkl"
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
    """The identity of a resolved file: that of its first replica that answers (as reads fail over)."""
    errors = []
    for cand in resolved.candidates:
        try:
            return file_identity(cand)
        except Exception as err:  # noqa: BLE001 - the next replica may answer
            errors.append(f"{cand.url}: {type(err).__name__}: {err}")
    from casa_data.errors import ReplicaError

    raise ReplicaError(resolved.lfn, [(e.split(": ", 1)[0], e.split(": ", 1)[1]) for e in errors])


def cache_key(spec_hash: str, inputs: dict[str, list[dict]], extra: dict | None = None) -> str:
    """sha256 over the spec hash, every input file identity (by dataset label) and ``extra``."""
    blob = json.dumps({"v": FORMAT_VERSION, "spec": spec_hash, "inputs": inputs, "extra": extra or {}},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def load_cached(outdir: Path, key: str) -> dict | None:
    """The stored result for ``key``, or None (missing, other key, unreadable, outputs deleted)."""
    f = outdir / CACHE_FILE
    if not f.is_file():
        return None
    try:
        with f.open("rb") as fh:
            payload = pickle.load(fh)
    except Exception:  # noqa: BLE001 - a broken cache is just a miss
        return None
    if payload.get("key") != key:
        return None
    if not all((outdir / name).exists() for name in payload.get("files", [])):
        return None
    return payload


def store(outdir: Path, key: str, payload: dict) -> None:
    tmp = outdir / (CACHE_FILE + ".tmp")
    with tmp.open("wb") as fh:
        pickle.dump({**payload, "key": key}, fh)
    tmp.replace(outdir / CACHE_FILE)
