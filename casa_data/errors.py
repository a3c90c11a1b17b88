"""Errors raised by casa_data.

Every error names its culprit (dataset, file, column, token source, YAML line) and, where it can,
says what to do. No error message ever contains a secret.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

__all__ = [
    "CasaError",
    "CatalogError",
    "DatasetNotFoundError",
    "ColumnNotFoundError",
    "FilterError",
    "ReplicaError",
    "FileReadError",
    "MissingFileError",
    "SchemaMismatchError",
    "PartialResultError",
    "ServiceError",
    "TokenError",
    "QueryError",
    "TransformError",
    "AccessDeniedError",
    "BucketNotFoundError",
    "ObjectNotFoundError",
    "close_matches",
]


def close_matches(word: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """The candidates closest to ``word`` (substring hits first, then difflib's ratio)."""
    candidates = list(candidates)
    low = word.lower()
    subs = [c for c in candidates if low and low in c.lower()]
    fuzzy = difflib.get_close_matches(word, candidates, n=n, cutoff=0.5)
    out: list[str] = []
    for c in subs + fuzzy:
        if c not in out:
            out.append(c)
    return out[:n]


class CasaError(Exception):
    """Base class of every casa error."""


class CatalogError(CasaError):
    """A catalog file is malformed, or two catalogs define the same dataset."""


class DatasetNotFoundError(CasaError, KeyError):
    """No catalog defines the requested dataset."""

    def __init__(self, name: str, known: Iterable[str], searched: Iterable[str] = ()):
        self.name = name
        self.suggestions = close_matches(name, known)
        self.searched = list(searched)
        msg = f"unknown dataset {name!r}"
        if self.suggestions:
            msg += f"; did you mean {', '.join(repr(s) for s in self.suggestions)}?"
        if self.searched:
            msg += f" (catalogs searched: {', '.join(self.searched)})"
        else:
            msg += " (no catalog found: set $CASA_CATALOG or pass catalog=...)"
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ColumnNotFoundError(CasaError, KeyError):
    """A requested column is not in a file."""

    def __init__(self, column: str, available: Iterable[str], where: str = ""):
        self.column = column
        self.suggestions = close_matches(column, available)
        msg = f"column {column!r} not found"
        if where:
            msg += f" in {where}"
        if self.suggestions:
            msg += f"; close matches: {', '.join(self.suggestions)}"
        super().__init__(msg)

    def __str__(self) -> str:
        return str(self.args[0])


class FilterError(CasaError, ValueError):
    """A filter expression cannot be parsed or is not allowed."""


class ReplicaError(CasaError, OSError):
    """Every replica of a file failed; lists each replica and why."""

    def __init__(self, what: str, failures: list[tuple[str, BaseException | str]]):
        self.what = what
        self.failures = failures
        lines = [f"all {len(failures)} replica(s) of {what} failed:"]
        for url, err in failures:
            lines.append(f"  - {url}: {_short(err)}")
        if not failures:
            lines = [f"{what} has no replica to read from"]
        super().__init__("\n".join(lines))

    def __str__(self) -> str:
        return str(self.args[0])


class FileReadError(CasaError, OSError):
    """A file exists but cannot be read (truncated, corrupt, wrong format)."""

    def __init__(self, url: str, reason: BaseException | str):
        self.url = url
        self.reason = reason
        super().__init__(f"cannot read {url}: {_short(reason)}")

    def __str__(self) -> str:
        return str(self.args[0])


class MissingFileError(FileReadError, FileNotFoundError):
    """A replica points at a file (object, LFN) that does not exist there."""


class SchemaMismatchError(FileReadError):
    """A file of a dataset has a column of another type than the dataset's first file."""

    def __init__(self, url: str, column: str, got: str, want: str):
        self.column, self.got, self.want = column, got, want
        super().__init__(url, f"column {column!r} is {got} here but {want} in the dataset's first file")


class PartialResultError(CasaError):
    """Some files failed; what was read is kept in ``.partial``, what failed in ``.failures``."""

    def __init__(self, dataset: str, partial: Any, failures: dict[str, BaseException]):
        self.dataset = dataset
        self.partial = partial
        self.failures = failures
        lines = [f"{len(failures)} file(s) of {dataset} failed (the rest was read and is in .partial):"]
        lines += [f"  - {url}: {_short(err)}" for url, err in failures.items()]
        lines.append("pass errors='skip' to continue without them")
        super().__init__("\n".join(lines))


class ServiceError(CasaError):
    """A service (XRootD, S3, ServiceX, Skyhook, ...) could not be started or reached."""


class AccessDeniedError(ServiceError, PermissionError):
    """A storage service rejected the credentials (or has none) for a URL."""


class BucketNotFoundError(ServiceError, FileNotFoundError):
    """An object store has no such bucket."""


class ObjectNotFoundError(MissingFileError, ServiceError):
    """A bucket (or a server) has no object at that key: a missing file, like :class:`MissingFileError`."""

    def __init__(self, message: str, url: str = ""):
        self.url, self.reason = url, message
        CasaError.__init__(self, message)


class QueryError(CasaError, ValueError):
    """A ServiceX query (func_adl, UprootRaw, python function) is malformed or cannot be translated."""


class TransformError(CasaError):
    """A ServiceX transform failed on one file (the message is the transformer's)."""


class TokenError(AccessDeniedError):
    """A bearer token is missing, expired or not good for the request; ``source`` says where it came from.

    Access denied like any other credential problem, so every delivery path's "wrong credentials"
    is an :class:`AccessDeniedError`.
    """

    def __init__(self, message: str, source: str | None = None):
        self.source = source
        super().__init__(message)


def _short(err: BaseException | str, limit: int = 300) -> str:
    text = err if isinstance(err, str) else f"{type(err).__name__}: {err}"
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
