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
   :meth:`storage_options` (what uproot needs to read the URL), :meth:`reader_url` and
   :meth:`arrow_filesystem` (what pyarrow reads through).
5. Register it in :mod:`casa_data.paths` (the built-in table, :func:`register_path`) or in the
   ``casa.paths`` entry points.

Paths are built from the ``paths: {name: {...}}`` section of the configuration, so options
(endpoints, tuning) come from one place. Instances must pickle (they travel to Dask workers): keep
live connections out of ``__dict__`` or drop them in ``__getstate__``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import fsspec

__all__ = ["DeliveryPath"]


class DeliveryPath(ABC):
    """How files arrive. See the module docstring for what to implement."""

    name: ClassVar[str]
    schemes: ClassVar[tuple[str, ...]]

    def __init__(self, **options: Any):
        self.options = options

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

    def reader_url(self, url: str) -> str:
        """The string handed to uproot / pyarrow (e.g. a plain path for local files)."""
        return url

    def explain_error(self, url: str, err: BaseException) -> BaseException:
        """A clearer error for ``err`` raised while opening ``url`` (default: ``err`` itself)."""
        return err

    def arrow_filesystem(self, url: str):
        """``(pyarrow.fs.FileSystem, path)`` for pyarrow readers (default: wraps :meth:`filesystem`)."""
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        fs = self.filesystem(url)
        return PyFileSystem(FSSpecHandler(fs)), fs._strip_protocol(url)

    # -- provided ---------------------------------------------------------------------------
    def open(self, url: str, mode: str = "rb", **kwargs: Any):
        """Open ``url`` through this path's filesystem."""
        return self.filesystem(url).open(url, mode, **kwargs)

    def ls(self, url: str, detail: bool = False):
        """List a directory URL."""
        return self.filesystem(url).ls(url, detail=detail)

    def size(self, url: str) -> int:
        return int(self.filesystem(url).size(url))

    def cat_ranges(self, url: str, starts: list[int], ends: list[int]) -> list[bytes]:
        fs = self.filesystem(url)
        return fs.cat_ranges([url] * len(starts), starts, ends)

    def __repr__(self) -> str:
        # Options may hold secrets (keys, tokens): show only their names.
        return f"<{type(self).__name__} via={self.name!r} options={sorted(self.options)}>"
