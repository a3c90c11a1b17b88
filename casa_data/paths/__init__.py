"""Registry of delivery paths: lazy, by name, extensible through the ``casa.paths`` entry points.

>>> from casa_data.paths import get_path
>>> get_path("local")
<LocalPath via='local' options=[]>
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..errors import CasaError
from ..registry import Registry
from .base import Capability, Delivery, DeliveryPath, QueryPath, ScanPath

__all__ = ["DeliveryPath", "ScanPath", "QueryPath", "Capability", "Delivery", "get_path", "path_class",
           "path_for_url", "available_paths", "register_path", "paths_that"]

# name -> "module:Class"; modules are imported only when a path is first used.
_REGISTRY: Registry[DeliveryPath] = Registry("delivery path", "casa.paths", {
    "local": "casa_data.paths.local:LocalPath",
    "xrootd": "casa_data.paths.xrootd:XRootDPath",
    "xcache": "casa_data.paths.xrootd:XCachePath",
    "s3": "casa_data.paths.s3:S3Path",
    "skyhook": "casa_data.paths.skyhook:SkyhookPath",
    "servicex": "casa_data.paths.servicex:ServiceXPath",
    "casa": "casa_data.paths.casa:CasaPath",
})


def register_path(name: str, target: str | type[DeliveryPath]) -> None:
    """Register a delivery path class (or "module:Class" string) under ``name``."""
    _REGISTRY.register(name, target)


def available_paths() -> list[str]:
    return sorted(_REGISTRY.names())


def path_class(name: str) -> type[DeliveryPath]:
    """The class registered as ``name`` (CasaError naming the available ones if unknown)."""
    return _REGISTRY.load(name)


_path_class = path_class


def paths_that(capability: str) -> list[str]:
    """Names of the registered paths declaring ``capability`` (those that load)."""
    out = []
    for name in available_paths():
        try:
            if path_class(name).can(capability):
                out.append(name)
        except CasaError:
            continue
    return out


def get_path(name: str, **options: Any) -> DeliveryPath:
    """An instance of the path ``name`` with options from the config, then ``options``."""
    from ..config import get_config

    merged = {**get_config().path_options(name), **options}
    return _path_class(name)(**merged)


def path_for_url(url: str, prefer: list[str] | None = None) -> DeliveryPath:
    """The delivery path serving ``url``'s scheme (first of ``prefer`` that does, if given)."""
    scheme = urlsplit(url).scheme or "file"
    if len(scheme) == 1:  # a Windows drive letter
        scheme = "file"
    for name in list(prefer or []) + available_paths():
        try:
            cls = _path_class(name)
        except CasaError:
            continue
        if scheme in cls.schemes:
            return get_path(name)
    raise CasaError(f"no delivery path serves {scheme}:// URLs (for {url}); available: {available_paths()}")
