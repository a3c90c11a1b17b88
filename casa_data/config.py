"""casa configuration, merged in one place.

Order (later wins): the packaged ``defaults.yaml`` < ``~/.config/casa/config.yaml`` <
``~/.config/casa/facility.yaml`` (written by ``casa facility up``) < each file in ``$CASA_CONFIG``
(colon-separated) < ``CASA_*`` environment
variables < explicit arguments to :func:`get_config`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import CatalogError

__all__ = ["SiteRule", "Site", "CasaConfig", "get_config", "reset_config", "user_config_dir"]

DEFAULTS = Path(__file__).with_name("defaults.yaml")


def user_config_dir() -> Path:
    """``$XDG_CONFIG_HOME/casa`` (``~/.config/casa`` by default)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "casa"


class SiteRule(BaseModel):
    """Rewrite LFNs starting with ``prefix`` to ``url + rest``, delivered by path ``via``."""

    model_config = ConfigDict(extra="forbid")
    prefix: str
    url: str
    via: str | None = None


class Site(BaseModel):
    """A site: its LFN rewriting rules and which delivery paths it prefers."""

    model_config = ConfigDict(extra="forbid")
    prefer: list[str] = Field(default_factory=lambda: ["local"])
    rules: list[SiteRule] = Field(default_factory=list)


class CasaConfig(BaseModel):
    """The merged configuration. See ``defaults.yaml`` for the meaning of each field."""

    model_config = ConfigDict(extra="forbid")
    site: str = "local"
    data_dir: Path = Path("~/.cache/casa/data")
    catalogs: list[str] = Field(default_factory=list)
    sites: dict[str, Site] = Field(default_factory=dict)
    paths: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # Read by casa_compute (e.g. the facility's Dask scheduler address and TLS files).
    compute: dict[str, Any] = Field(default_factory=dict)

    @property
    def data_path(self) -> Path:
        return Path(os.path.expandvars(str(self.data_dir))).expanduser()

    @property
    def current_site(self) -> Site:
        try:
            return self.sites[self.site]
        except KeyError:
            raise CatalogError(
                f"site {self.site!r} is not configured; known sites: {sorted(self.sites)}"
            ) from None

    def rules(self) -> list[SiteRule]:
        """The current site's rules with ``{data_dir}`` filled in, longest prefix first."""
        out = []
        for r in self.current_site.rules:
            url = r.url.replace("{data_dir}", str(self.data_path))
            out.append(r.model_copy(update={"url": url}))
        return sorted(out, key=lambda r: -len(r.prefix))

    def path_options(self, name: str) -> dict[str, Any]:
        return dict(self.paths.get(name, {}))


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise CatalogError(f"malformed config file {where}: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise CatalogError(f"config file {path} must hold a mapping, not {type(data).__name__}")
    return data


def _env_overrides() -> dict[str, Any]:
    env: dict[str, Any] = {}
    if os.environ.get("CASA_SITE"):
        env["site"] = os.environ["CASA_SITE"]
    if os.environ.get("CASA_DATA_DIR"):
        env["data_dir"] = os.environ["CASA_DATA_DIR"]
    return env


def config_files() -> list[Path]:
    """The config files that exist, in merge order (packaged defaults first).

    ``facility.yaml`` in the user config directory is written by ``casa facility up`` and
    removed by ``casa facility down``.
    """
    files = [DEFAULTS, user_config_dir() / "config.yaml", user_config_dir() / "facility.yaml"]
    files += [Path(p).expanduser() for p in os.environ.get("CASA_CONFIG", "").split(":") if p]
    return [f for f in files if f.is_file()]


def _build(overrides: dict[str, Any]) -> CasaConfig:
    merged: dict[str, Any] = {}
    for f in config_files():
        merged = _merge(merged, _read_yaml(f))
    merged = _merge(merged, _env_overrides())
    merged = _merge(merged, overrides)
    try:
        return CasaConfig.model_validate(merged)
    except ValidationError as err:
        raise CatalogError(f"invalid casa configuration (files: {config_files()}):\n{err}") from None


_cached: CasaConfig | None = None


def get_config(**overrides: Any) -> CasaConfig:
    """The merged configuration; keyword arguments win over every file and variable."""
    global _cached
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides:
        return _build(overrides)
    if _cached is None:
        _cached = _build({})
    return _cached


def reset_config() -> None:
    """Forget the cached configuration (after changing files or environment variables)."""
    global _cached
    _cached = None
