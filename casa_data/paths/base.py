"""The one small interface every delivery path implements.

A delivery path is how the bytes of a file arrive: from local disk, through XCache, from an S3
bucket, as ServiceX output or from a Skyhook scan. Each lives in its own module under
``casa_data.paths`` and is found by name through :mod:`casa_data.paths` (a lazy registry plus the
``casa.paths`` entry-point group).

To implement a path:

1. Subclass :class:`DeliveryPath`; set ``name`` (what users pass as ``via=``) and ``schemes``
   (the URL schemes it serves, e.g. ``("s3",)``).
2. Implement :meth:`filesystem` (an fsspec filesystem for a URL: open, read, list all go through it).
3. Implement :meth:`check` (a fast health check of the service behind a URL; raise
   :class:`~casa_data.errors.ServiceError` saying what is wrong and what to do).
4. Optionally override :meth:`to_url` (LFN -> URL, default: prefix substitution from a site rule),
   :meth:`storage_options` (what uproot needs to read the URL; :meth:`uproot_options` if uproot
   needs more than fsspec), :meth:`reader_url` and
   :meth:`arrow_filesystem` (what pyarrow reads through).
5. Declare what it can do in ``capabilities`` (see :class:`Capability`): a file path keeps the
   default (``FILESYSTEM``, ``BYTE_RANGES``); a path that scans on a server subclasses
   :class:`ScanPath` (``SCAN``, maybe ``HISTOGRAM``); a path that delivers the result of a query
   subclasses :class:`QueryPath` (``QUERY``). Readers, the pipeline and ``casa bench`` ask these,
   never a path's name, so a third-party path works everywhere.
6. Register it in :mod:`casa_data.paths` (the built-in table, :func:`register_path`) or in the
   ``casa.paths`` entry points.

Paths are built from the ``paths: {name: {...}}`` section of the configuration, so options
(endpoints, tuning) come from one place. Instances must pickle (they travel to Dask workers): keep
live connections out of ``__dict__`` or drop them in ``__getstate__``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import fsspec

__all__ = ["DeliveryPath", "ScanPath", "QueryPath", "Capability", "Delivery"]


class Capability:
    """What a delivery path can do (members of ``DeliveryPath.capabilities``)."""

    #: fsspec filesystem: open, list, read whole files (uproot / pyarrow read through it)
    FILESYSTEM = "filesystem"
    #: random byte ranges of a file (what uproot's and Parquet's column reads need)
    BYTE_RANGES = "byte_ranges"
    #: server-side scan with columns and a filter, Arrow back (:class:`ScanPath`)
    SCAN = "scan"
    #: server-side histograms, only the bins travel (``ScanPath.histogram``)
    HISTOGRAM = "histogram"
    #: delivers the result of a query as new files (:class:`QueryPath`)
    QUERY = "query"


class DeliveryPath(ABC):
    """How files arrive. See the module docstring for what to implement."""

    name: ClassVar[str]
    schemes: ClassVar[tuple[str, ...]]
    capabilities: ClassVar[frozenset[str]] = frozenset({Capability.FILESYSTEM, Capability.BYTE_RANGES})

    def __init__(self, **options: Any):
        self.options = options

    @classmethod
    def can(cls, capability: str) -> bool:
        """Whether this path declares ``capability`` (a :class:`Capability` member)."""
        return capability in cls.capabilities

    # -- to implement -----------------------------------------------------------------------
    @abstractmethod
    def filesystem(self, url: str) -> fsspec.AbstractFileSystem:
        """An fsspec filesystem that reads ``url`` (and lists its directory)."""

    @abstractmethod
    def check(self, url: str, timeout: float = 5.0) -> None:
        """Raise ServiceError quickly (within ``timeout``) if ``url`` cannot be served now."""

    # -- optional hooks ---------------------------------------------------------------------
    def to_url(self, lfn: str, base: str, prefix: str) -> str:
        """Rewrite ``lfn`` (which starts with ``prefix``) onto ``base``."""
        rest = lfn[len(prefix):].lstrip("/")
        return base.rstrip("/") + "/" + rest

    def storage_options(self, url: str) -> dict[str, Any]:
        """Keyword arguments uproot / pyarrow-through-fsspec need to read ``url``."""
        return {}

    def uproot_options(self, url: str) -> dict[str, Any]:
        """Keyword arguments for ``uproot.open(reader_url(url), ...)`` (default: :meth:`storage_options`)."""
        return self.storage_options(url)

    def reader_url(self, url: str) -> str:
        """The string handed to uproot / pyarrow (e.g. a plain path for local files)."""
        return url

    def explain_error(self, url: str, err: BaseException) -> BaseException:
        """A clearer error for ``err`` raised while opening ``url`` (default: ``err`` itself)."""
        return err

    def arrow_filesystem(self, url: str) -> tuple[Any, str]:
        """``(pyarrow.fs.FileSystem, path)`` for pyarrow readers (default: wraps :meth:`filesystem`)."""
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        fs = self.filesystem(url)
        return PyFileSystem(FSSpecHandler(fs)), str(fs._strip_protocol(url))

    # -- provided ---------------------------------------------------------------------------
    def open(self, url: str, mode: str = "rb", **kwargs: Any) -> Any:
        """Open ``url`` through this path's filesystem."""
        return self.filesystem(url).open(url, mode, **kwargs)

    def ls(self, url: str, detail: bool = False) -> list[Any]:
        """List a directory URL."""
        return list(self.filesystem(url).ls(url, detail=detail))

    def size(self, url: str) -> int:
        return int(self.filesystem(url).size(url))

    def cat_ranges(self, url: str, starts: list[int], ends: list[int]) -> list[bytes]:
        fs = self.filesystem(url)
        return list(fs.cat_ranges([url] * len(starts), starts, ends))

    def __repr__(self) -> str:
        # Options may hold secrets (keys, tokens): show only their names.
        return f"<{type(self).__name__} via={self.name!r} options={sorted(self.options)}>"


class ScanPath(DeliveryPath):
    """A path whose server scans files: it takes columns and a filter, and answers in Arrow.

    Implement :meth:`scan` and :meth:`scan_batches` (and :meth:`count_events`,
    :meth:`columns`); with ``HISTOGRAM`` in ``capabilities``, also :meth:`histogram`. Errors are
    casa errors (a missing column: ColumnNotFoundError, a missing file: MissingFileError).
    """

    capabilities = frozenset({Capability.FILESYSTEM, Capability.SCAN})

    @abstractmethod
    def scan(self, url: str, tree: str, columns: Sequence[str] | None, flt: Any) -> Any:
        """The rows of ``url`` passing ``flt`` (a casa filter), only ``columns``: a pyarrow Table."""

    @abstractmethod
    def scan_batches(self, url: str, tree: str, columns: Sequence[str] | None, flt: Any,
                     step: int) -> Iterator[Any]:
        """The same as :meth:`scan`, as record batches of at most ``step`` rows."""

    @abstractmethod
    def count_events(self, url: str, tree: str) -> int:
        """Events in ``url`` (before any filter)."""

    @abstractmethod
    def columns(self, url: str, tree: str) -> list[str]:
        """The columns of ``url``."""

    def histogram(self, url: str, expr: str, bins: int, range: tuple[float, float], *,
                  tree: str = "Events", weight: str | None = None, flt: Any = None) -> Any:
        """A ``hist.Hist`` of ``expr`` filled on the server (needs ``HISTOGRAM``)."""
        raise NotImplementedError(f"delivery path {self.name!r} has no server-side histograms")


@dataclass
class Delivery:
    """What a :class:`QueryPath` delivered: output files (local paths or URLs) and per-file failures."""

    name: str
    files: list[str]
    format: str = "parquet"
    tree: str = "Events"
    failures: dict[str, BaseException] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    label: str = ""  # for messages, e.g. "name (ServiceX request 1234)"


class QueryPath(DeliveryPath):
    """A path that runs a query over a dataset's files and delivers new files (ServiceX).

    Implement :meth:`deliver`; :meth:`default_query` is the query for "these columns" (used when
    a dataset is opened ``via=`` this path without ``query=``). No byte access of its own.
    """

    capabilities = frozenset({Capability.QUERY})

    @abstractmethod
    def deliver(self, dataset: Any, query: Any, *, inputs: Callable[[Any], list[str]],
                **options: Any) -> Delivery:
        """Run ``query`` over ``dataset`` (a catalog name or DatasetSpec); ``inputs(spec)`` gives
        the input URLs where the service needs them."""

    def default_query(self, tree: str, columns: Sequence[str] | None, cut: str | None = None) -> Any:
        """The query that delivers ``columns`` of ``tree`` (events passing ``cut``, if given)."""
        raise NotImplementedError(f"delivery path {self.name!r} needs an explicit query=")

    def filesystem(self, url: str) -> fsspec.AbstractFileSystem:
        from ..errors import CasaError

        raise CasaError(f"delivery path {self.name!r} delivers query results, not files: it has no "
                        f"filesystem for {url}")
