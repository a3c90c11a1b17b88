"""Registry of delivery paths: lazy, by name, extensible through the ``casa.paths`` entry points.

>>> from casa_data.paths import get_path
>>> get_path("local")
<LocalPath via='local' options=[]>
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import urlsplit

from ..errors import CasaError
from .base import DeliveryPath

__all__ = ["DeliveryPath", "get_path", "path_for_url", "available_paths", "register_path"]

# name -> "module:Class"; modules are imported only when a path is first used.
_BUILTIN: dict[str, str] = {
    "local": "casa_data.paths.local:LocalPath",
    "xrootd": "casa_data.paths.xrootd:XRootDPath",
    "xcache": "casa_data.paths.xrootd:XCachePath",
    "s3": "casa_data.paths.s3:S3Path",
    "skyhook": "casa_data.paths.skyhook:SkyhookPath",
}
_EXTRA: dict[str, str | type[DeliveryPath]] = {}


def register_path(name: str, target: str | type[DeliveryPath]) -> None:
    """Register a delivery path class (or "module:Class" string) under ``name``."""
    _EXTRA[name] = target
    _path_class.cache_clear()


def available_paths() -> list[str]:
    names = set(_BUILTIN) | set(_EXTRA)
    names |= {ep.name for ep in entry_points(group="casa.paths")}
    return sorted(names)


@lru_cache(maxsize=None)
def _path_class(name: str) -> type[DeliveryPath]:
    target: Any = _EXTRA.get(name) or _BUILTIN.get(name)
    if target is None:
        for ep in entry_points(group="casa.paths"):
            if ep.name == name:
                target = ep.value
                break
    if target is None:
        raise CasaError(f"unknown delivery path {name!r}; available: {', '.join(available_paths())}")
    if isinstance(target, str):
        module, _, cls = target.partition(":")
        try:
            target = getattr(importlib.import_module(module), cls)
        except ImportError as err:
            raise CasaError(
                f"delivery path {name!r} needs {err.name!r}, which is not installed: "
                "pip install 'casa-sdk' with its dependencies"
            ) from err
    return target


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
