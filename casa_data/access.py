"""The one replica-access layer: every read of a file's bytes goes through here.

A file has replicas (:class:`Candidate`: a URL and the delivery path that reads it). This module
owns, for every reader (``Dataset``, ``casa://``, the runner's chunks, prefetch, the Skyhook
fallback):

* the **order** replicas are tried in (catalog order, replicas of a server marked down last);
* **health marks**: a server that could not serve (down, unreachable; not a refused credential,
  which is the token's fault, not the server's) is marked for :data:`HEALTH_TTL` seconds, so the
  next file tries it last; a success clears the mark. Each failing server is said once;
* **failover**: :meth:`Replicas.call` runs a read on the first replica that works;
  :class:`RangeReader` reads byte ranges and moves to the next replica *mid-read*, at the same
  offset;
* **error translation** on every read (not only in ``check()``): :func:`translate` turns what
  uproot, pyarrow, s3fs, XRootD or Flight raised into casa's classes (:mod:`casa_data.errors`),
  asking the path first (``DeliveryPath.explain_error``), keeping the cause chained.

Errors of the caller (an unknown column, a bad filter) never fail over. Errors of a delivery path
(credentials refused, endpoint down) are :func:`fatal`: a dataset read raises them as they are
instead of trying the next file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .errors import (
    AccessDeniedError,
    CasaError,
    ColumnNotFoundError,
    FileReadError,
    FilterError,
    MissingFileError,
    ReplicaError,
    ServiceError,
)
from .paths.base import DeliveryPath

__all__ = ["Candidate", "Replicas", "RangeReader", "translate", "fatal", "open_root", "parquet_dataset",
           "arrow_input_file", "HEALTH_TTL", "HEALTH", "Health"]

log = logging.getLogger("casa_data")
T = TypeVar("T")

#: errors of the caller, not of a replica: never fail over on them
USER_ERRORS = (ColumnNotFoundError, FilterError)
#: seconds a server stays marked down after a service error
HEALTH_TTL = 10.0


@dataclass(frozen=True)
class Candidate:
    """A replica URL and the delivery path that reads it."""

    url: str
    path: DeliveryPath

    @property
    def via(self) -> str:
        return self.path.name

    @property
    def server(self) -> str:
        """``via host:port`` (the URL itself for local files): what health marks are kept for."""
        return f"{self.via} {urlsplit(self.url).netloc or self.url}"


# -- errors ---------------------------------------------------------------------------------------
def fatal(err: BaseException) -> bool:
    """A delivery path's problem (credentials, endpoint down), not one file's."""
    return isinstance(err, (AccessDeniedError, ServiceError)) and not isinstance(err, FileNotFoundError)


def unhealthy(err: BaseException) -> bool:
    """The server could not serve at all (down, unreachable, overloaded)."""
    return fatal(err) and not isinstance(err, AccessDeniedError)


def translate(cand: Candidate, err: BaseException) -> BaseException:
    """The casa error for ``err`` raised while reading ``cand`` (the path's own translation first)."""
    if isinstance(err, CasaError):
        return err
    better = cand.path.explain_error(cand.url, err)
    if better is not err:
        return better
    text = str(err)
    if isinstance(err, FileNotFoundError) or "no such file" in text.lower():
        return MissingFileError(cand.url, f"it does not exist ({type(err).__name__}: {text[:200]})")
    if isinstance(err, PermissionError):
        return AccessDeniedError(f"access to {cand.url} via {cand.via} denied ({type(err).__name__}: "
                                 f"{text[:200]}): check the credentials for this delivery path")
    if isinstance(err, (ConnectionError, TimeoutError)):
        return ServiceError(f"cannot reach the server of {cand.url} via {cand.via} ({type(err).__name__}: "
                            f"{text[:200]}); is it up?")
    return FileReadError(cand.url, err)


def _raise(cand: Candidate, err: BaseException) -> None:
    better = translate(cand, err)
    if better is err:
        raise err
    raise better from err


# -- health ---------------------------------------------------------------------------------------
class Health:
    """Servers marked down (process-wide), each for ``ttl`` seconds; the reason is kept."""

    def __init__(self, ttl: float = HEALTH_TTL):
        self.ttl = ttl
        self._down: dict[str, tuple[float, str]] = {}

    def mark_down(self, cand: Candidate, why: str) -> None:
        self._down[cand.server] = (time.monotonic() + self.ttl, why)

    def mark_up(self, cand: Candidate) -> None:
        self._down.pop(cand.server, None)

    def down(self, cand: Candidate) -> str | None:
        """Why ``cand``'s server is marked down, or None."""
        got = self._down.get(cand.server)
        if got is None or got[0] < time.monotonic():
            self._down.pop(cand.server, None)
            return None
        return got[1]

    def order(self, cands: Iterable[Candidate]) -> list[Candidate]:
        """``cands`` in their order, those on servers marked down last."""
        cands = list(cands)
        return [c for c in cands if not self.down(c)] + [c for c in cands if self.down(c)]


HEALTH = Health()  # process-wide marks (casa://, the runner's chunks, prefetch)


# -- failover -------------------------------------------------------------------------------------
class Replicas:
    """The replicas of one file (``what``: its LFN), tried in order.

    ``failed`` (url -> why) and ``errors`` (url -> error) remember replicas that failed for this
    file (a ``ResolvedFile`` shares its own); ``warned`` holds the servers already logged and
    ``health`` the marks (a Dataset keeps its own of both, so one read's outage does not reorder
    another's; by default: process-wide).
    """

    def __init__(self, what: str, candidates: Iterable[Candidate], failed: dict[str, str] | None = None,
                 warned: set[str] | None = None, label: str = "", health: Health | None = None,
                 errors: dict[str, BaseException] | None = None):
        self.what, self.candidates = what, list(candidates)
        self.failed = failed if failed is not None else {}
        self.errors = errors if errors is not None else {}  # url -> the (translated) error
        self.warned = warned if warned is not None else _WARNED
        self.label = label or what
        self.health = health if health is not None else HEALTH

    def order(self) -> list[Candidate]:
        """Replicas in the order to try: not failed for this file, healthy servers first."""
        return self.health.order(c for c in self.candidates if c.url not in self.failed)

    def record(self, cand: Candidate, err: BaseException) -> None:
        """Remember that ``cand`` failed with (translated) ``err``; mark its server; log once."""
        self.failed[cand.url] = f"{type(err).__name__}: {err}"
        self.errors[cand.url] = err
        if unhealthy(err):
            self.health.mark_down(cand, self.failed[cand.url])
        if cand.server not in self.warned and len(self.candidates) > 1:
            self.warned.add(cand.server)
            log.warning("replica %s of %s failed (%s); trying the next one", cand.url, self.label,
                        self.failed[cand.url][:200])

    def give_up(self, failures: list[tuple[str, BaseException | str]]) -> BaseException:
        """The error once every replica failed: the replica's own if only one, else a ReplicaError."""
        if len(failures) == 1 and isinstance(failures[0][1], BaseException):
            return failures[0][1]
        return ReplicaError(self.what, failures)

    def call(self, fn: Callable[[Candidate], T], translate_errors: bool = True) -> T:
        """``fn`` on the first replica that works. Errors are translated (``translate_errors``:
        else raised as ``fn`` raised them, e.g. a processor's own bug)."""
        failures: list[tuple[str, BaseException | str]] = [
            (c.url, self.errors.get(c.url) or FileReadError(c.url, self.failed[c.url]))
            for c in self.candidates if c.url in self.failed]
        for cand in self.order():
            try:
                out = fn(cand)
            except USER_ERRORS:
                raise
            except Exception as err:  # noqa: BLE001 - any access problem: the next replica
                better = translate(cand, err) if translate_errors else err
                if better is not err and better.__cause__ is None:
                    better.__cause__ = err
                failures.append((cand.url, better))
                self.record(cand, better if translate_errors else translate(cand, err))
                continue
            self.health.mark_up(cand)
            return out
        raise self.give_up(failures)


_WARNED: set[str] = set()


class RangeReader:
    """Byte ranges of one file, moving to the next replica when one fails, at the same offset."""

    def __init__(self, replicas: Replicas):
        self.replicas = replicas
        self._handles: dict[str, Any] = {}
        self.cand, self.size = replicas.call(lambda c: (c, c.path.size(c.url)))

    def _order(self) -> list[Candidate]:
        """The replica in use, the others by :meth:`Replicas.order`, then those that failed."""
        ok = [c for c in self.replicas.order() if c != self.cand]
        first = [self.cand] if self.cand.url not in self.replicas.failed else []
        return first + ok + [c for c in self.replicas.candidates if c.url in self.replicas.failed]

    def fetch(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` (clipped to the size)."""
        end = min(end, self.size)
        if start >= end:
            return b""
        failures: list[tuple[str, BaseException | str]] = []
        for cand in self._order():
            try:
                fh = self._handles.get(cand.url)
                if fh is None:
                    fh = self._handles[cand.url] = cand.path.open(cand.path.reader_url(cand.url), "rb")
                fh.seek(start)
                data = fh.read(end - start)
                if len(data) != end - start:
                    raise OSError(f"short read: got {len(data)} of {end - start} bytes")
            except Exception as err:  # noqa: BLE001 - translated, then the next replica
                better = translate(cand, err)
                failures.append((cand.url, better))
                self.replicas.record(cand, better)
                self._drop(cand.url)
                continue
            self.cand = cand
            return bytes(data)
        raise self.replicas.give_up(failures)

    def _drop(self, url: str) -> None:
        fh = self._handles.pop(url, None)
        if fh is not None:
            try:
                fh.close()
            except Exception:  # noqa: BLE001 - the handle is broken anyway
                pass

    def close(self) -> None:
        for url in list(self._handles):
            self._drop(url)


# -- opening one replica (errors translated) ------------------------------------------------------
def open_root(cand: Candidate) -> Any:
    """``uproot.open`` of ``cand`` through its delivery path (URL rewriting, options)."""
    import uproot

    try:
        return uproot.open(cand.path.reader_url(cand.url), **cand.path.uproot_options(cand.url))
    except Exception as err:  # noqa: BLE001 - translated: the path names the culprit
        _raise(cand, err)


def parquet_dataset(cand: Candidate) -> Any:
    """A ``pyarrow.dataset`` over ``cand`` through the path's Arrow filesystem."""
    import pyarrow.dataset as pads

    try:
        fs, path = cand.path.arrow_filesystem(cand.url)
        return pads.dataset(path, format="parquet", filesystem=fs)
    except Exception as err:  # noqa: BLE001
        _raise(cand, err)


def arrow_input_file(cand: Candidate) -> Any:
    """A random-access pyarrow input file over ``cand``."""
    try:
        fs, path = cand.path.arrow_filesystem(cand.url)
        return fs.open_input_file(path)
    except Exception as err:  # noqa: BLE001
        _raise(cand, err)
