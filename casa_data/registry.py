"""A lazy, string-based plug-in registry (the fsspec way): ``name -> "module:Class"``.

Built-in entries, entries registered at run time and an entry-point group are searched in that
order; a module is imported only when its entry is first loaded.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from .errors import CasaError
from .extras import MissingExtraError, import_extra

__all__ = ["Registry"]

T = TypeVar("T")
_EP_CACHE: dict[tuple[str, tuple[str, ...]], list[tuple[str, str]]] = {}


def _entry_points(group: str) -> list[tuple[str, str]]:
    """``(name, "module:Class")`` of an entry-point group, scanned once per ``sys.path`` (a scan
    reads every installed package's metadata: ~25 ms, paid on every ``casa_data.open`` otherwise)."""
    key = (group, tuple(sys.path))
    if key not in _EP_CACHE:
        _EP_CACHE[key] = [(ep.name, ep.value) for ep in entry_points(group=group)]
    return _EP_CACHE[key]


class Registry(Generic[T]):
    """Plug-ins of one ``kind`` (for messages), found in ``builtin`` and entry-point ``group``."""

    def __init__(self, kind: str, group: str, builtin: dict[str, str]):
        self.kind, self.group, self.builtin = kind, group, builtin
        self.extra: dict[str, str | type[T]] = {}
        self._loaded: dict[str, type[T]] = {}

    def register(self, name: str, target: str | type[T]) -> None:
        """Add (or replace) ``name``: a class or ``"module:Class"``."""
        self.extra[name] = target
        self._loaded.pop(name, None)

    def names(self) -> list[str]:
        """Built-in names first (in their order), then registered ones, then entry points."""
        out = list(self.builtin) + [n for n in self.extra if n not in self.builtin]
        return out + [name for name, _ in _entry_points(self.group) if name not in out]

    def load(self, name: str) -> type[T]:
        """The class registered under ``name`` (imported on first use)."""
        if name in self._loaded:
            return self._loaded[name]
        target: Any = self.extra.get(name) or self.builtin.get(name)
        if target is None:
            target = next((value for ep_name, value in _entry_points(self.group) if ep_name == name), None)
        if target is None:
            raise CasaError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}")
        if isinstance(target, str):
            module, _, cls = target.partition(":")
            try:
                target = getattr(import_extra(module), cls)
            except MissingExtraError as err:
                raise MissingExtraError(f"{self.kind} {name!r}: {err}") from err
            except ImportError as err:
                raise CasaError(f"{self.kind} {name!r} needs {err.name!r}, which is not installed: "
                                "pip install 'casa-sdk' with its dependencies") from err
        self._loaded[name] = target
        return target
