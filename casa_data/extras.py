"""Optional parts of casa and the pip extra that installs each.

The client SDK (``casa_data``, ``casa_compute``) needs no server: the services a facility runs
(``casa_facility``: Skyhook server, ServiceX endpoint, launchers) and the benchmark harness
(``casa_bench``) come with ``pip install 'casa-sdk[facility]'``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import CasaError

__all__ = ["EXTRAS", "MissingExtraError", "import_extra", "extra_for"]

#: top-level package -> the extra that brings its dependencies
EXTRAS = {"casa_facility": "facility", "casa_bench": "facility"}


class MissingExtraError(CasaError, ImportError):
    """An optional part of casa is used without the extra that installs its dependencies."""


def extra_for(module: str) -> str | None:
    return EXTRAS.get(module.split(".")[0])


def import_extra(module: str) -> ModuleType:
    """Import ``module``; if a dependency is missing, say which ``casa-sdk[extra]`` brings it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name and (err.name == module or module.startswith(err.name + ".")) and not extra_for(module):
            raise
        extra = extra_for(module) or "facility"
        raise MissingExtraError(f"{module} needs {err.name!r}, which is not installed: "
                                f"pip install 'casa-sdk[{extra}]'") from err


def require_extra(extra: str, package: str, modules: list[str]) -> None:
    """Raise :class:`MissingExtraError` naming ``extra`` if any of ``modules`` is not installed."""
    import importlib.util

    def absent(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is None
        except (ImportError, ValueError):
            return True

    missing = [m for m in modules if absent(m)]
    if missing:
        raise MissingExtraError(f"{package} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                                f"not installed: pip install 'casa-sdk[{extra}]'")
