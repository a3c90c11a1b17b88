"""Access methods ``casa bench`` compares, and the registry other packages add theirs to.

The base classes are in :mod:`casa_bench.base`.

To add a method (XRootD, XCache cold/warm, ServiceX, Skyhook, ...):

1. Subclass :class:`BenchMethod`; set ``name`` and ``description``.
2. Implement :meth:`~BenchMethod.read_whole`, :meth:`~BenchMethod.read_columns` and
   :meth:`~BenchMethod.read_range` for a :class:`BenchFile` (and, if the path has a vector
   read, :meth:`~BenchMethod.read_ranges`).
3. Optionally override :meth:`~BenchMethod.setup` (copy the files where the method reads them,
   start a service) and :meth:`~BenchMethod.teardown`, and :meth:`~BenchMethod.counting`, a
   context manager for one untimed pass that counts the bytes the method transfers (by default
   the bytes its reads return).
4. A read the path does not have (a query service delivers columns, not a file's bytes) raises
   :class:`Unsupported` with the reason: the runner probes each read once, skips the unsupported
   ones and reports them as ``None`` / ``n/a`` with the reason under ``"unsupported"``.
5. Register it with :func:`register_method` or in the ``casa.bench`` entry-point group.

Any registered delivery path without a method of its own is benchmarked by its declared
capabilities (:mod:`casa_bench.paths`): ``casa bench --methods <path>`` works for third-party paths.
"""

from __future__ import annotations

from casa_bench.base import BenchContext, BenchFile, BenchMethod, Unsupported, file_size
from casa_data.registry import Registry

__all__ = ["BenchFile", "BenchContext", "BenchMethod", "Unsupported", "register_method", "get_method",
           "available_methods", "file_size", "needs_s3"]


# -- registry ------------------------------------------------------------------------------------
_REGISTRY: Registry[BenchMethod] = Registry("bench method", "casa.bench", {
    "local": "casa_bench.builtin:LocalMethod",
    "s3fs": "casa_bench.builtin:S3fsMethod",
    "s3fs-default": "casa_bench.builtin:S3fsDefaultMethod",
    "s3-arrow": "casa_bench.builtin:ArrowS3Method",
    "xrootd": "casa_bench.xrootd:XRootDMethod",
    "xcache-cold": "casa_bench.xrootd:XCacheColdMethod",
    "xcache-warm": "casa_bench.xrootd:XCacheWarmMethod",
    "skyhook": "casa_bench.skyhook:SkyhookMethod",
    "servicex": "casa_bench.servicex:ServiceXMethod",
})


def register_method(name: str, target: str | type[BenchMethod]) -> None:
    """Register a :class:`BenchMethod` class (or ``"module:Class"``) under ``name``."""
    _REGISTRY.register(name, target)


def available_methods() -> list[str]:
    return _REGISTRY.names()


def needs_s3(name: str) -> bool:
    """Whether method ``name`` reads S3 copies of the files (a delivery path: if it serves ``s3``)."""
    if name not in _REGISTRY.names():
        from casa_data.paths import available_paths, path_class

        if name in available_paths():
            return "s3" in path_class(name).schemes
    return bool(getattr(_REGISTRY.load(name), "needs_s3", False))


def get_method(name: str) -> BenchMethod:
    """The bench method ``name``; a delivery path without one of its own is benchmarked by its
    declared capabilities (:class:`casa_bench.paths.PathMethod`)."""
    if name not in _REGISTRY.names():
        from casa_data.paths import available_paths

        if name in available_paths():
            from casa_bench.paths import PathMethod

            return PathMethod(name)
    return _REGISTRY.load(name)()
