"""The dataset catalog: YAML files describing datasets, their files and replicas.

A catalog file holds ``datasets:``, a list of entries such as::

    datasets:
      - name: cms/dimuon-2012
        description: CMS 2012 DoubleMuParked, dimuon columns
        tree: Events
        format: root                   # root | parquet | rntuple
        metadata: {process: data, year: 2012}
        files:
          - lfn: /store/data/Run2012B/DoubleMuParked/dimuon.root
            size: 12345678
            nevents: 100000
            replicas:                  # physical URLs in preference order
              - root://xcache.example.org//store/data/Run2012B/DoubleMuParked/dimuon.root
              - ../data/dimuon.root     # relative paths are relative to this YAML file
          - glob: /data/more/*.root    # expanded when the dataset is opened

A file given as a plain string is an LFN (or a path/URL, or a glob if it has ``*?[``).

Search path (all are read; a name defined twice is an error naming both files): the ``catalog``
argument, ``$CASA_CATALOG`` (colon-separated), ``catalogs:`` in the configuration,
``~/.config/casa/catalogs/`` and the built-in catalog of the package (the demo datasets).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from .config import get_config, user_config_dir
from .errors import CatalogError, DatasetNotFoundError
from .yamlspec import load_yaml, locate, validate_yaml

__all__ = ["Replica", "FileEntry", "DatasetSpec", "Catalog", "get_catalog", "catalog_search_path"]

BUILTIN = Path(__file__).with_name("catalogs")
GLOB_CHARS = set("*?[")


def _absolutize(url: str, base: Path | None) -> str:
    """Relative local paths become absolute against the catalog file's directory."""
    if base is None or "://" in url or url.startswith(("/", "~", "$")):
        return url
    return str((base / url).resolve())


class Replica(BaseModel):
    """One physical copy of a file: a URL and, optionally, the delivery path that serves it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str
    via: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, v: Any) -> Any:
        return {"url": v} if isinstance(v, str) else v

    @field_validator("url")
    @classmethod
    def _abs(cls, v: str, info: ValidationInfo) -> str:
        return _absolutize(v, (info.context or {}).get("base"))


class FileEntry(BaseModel):
    """A file of a dataset: an LFN with known replicas, or a glob expanded at open time."""

    model_config = ConfigDict(extra="forbid")
    lfn: str | None = None
    glob: str | None = None
    size: int | None = Field(None, ge=0)
    nevents: int | None = Field(None, ge=0)
    replicas: list[Replica] = Field(default_factory=list)
    #: coffea metadata, when known: the file's ROOT UUID and preprocessed entry ranges
    uuid: str | None = None
    steps: list[tuple[int, int]] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, v: Any) -> Any:
        if isinstance(v, str):
            return {"glob": v} if GLOB_CHARS & set(v) else {"lfn": v}
        return v

    @model_validator(mode="after")
    def _one_of(self) -> FileEntry:
        if (self.lfn is None) == (self.glob is None):
            raise ValueError("a file needs exactly one of 'lfn' or 'glob'")
        if self.glob is not None and self.replicas:
            raise ValueError("a glob entry cannot list replicas")
        return self

    @field_validator("glob", "lfn")
    @classmethod
    def _abs(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        base = (info.context or {}).get("base")
        # A relative name is a path next to the catalog file; /store/... LFNs stay as they are.
        return _absolutize(v, base)


class DatasetSpec(BaseModel):
    """A dataset as the catalog describes it."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    description: str = ""
    tree: str = "Events"
    format: Literal["root", "parquet", "rntuple"] = "root"
    files: list[FileEntry] = Field(min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if v != v.strip() or " " in v or v.startswith("/") or "//" in v:
            raise ValueError("a dataset name has no spaces, no leading '/' and no '//' (e.g. 'cms/dimuon-2012')")
        return v

    def nevents_known(self) -> int | None:
        """Sum of the files' event counts if every file has one, else None."""
        counts = [f.nevents for f in self.files]
        return None if any(c is None or f.glob for c, f in zip(counts, self.files)) else sum(counts)  # type: ignore[arg-type]

    @classmethod
    def from_paths(cls, paths: Iterable[str], name: str | None = None, tree: str = "Events",
                   format: str | None = None) -> DatasetSpec:
        """An ad-hoc dataset from paths, URLs or globs (format guessed from the extension)."""
        paths = [os.fspath(p) for p in paths]
        if not paths:
            raise CatalogError("no paths given")
        if format is None:
            ext = urlsplit(paths[0]).path.rsplit(".", 1)[-1].lower()
            format = "parquet" if ext in ("parquet", "parq", "pq") else "root"
        files = [p if "://" in p or p.startswith("/") else os.path.abspath(p) for p in paths]
        return cls(name=name or _adhoc_name(paths), tree=tree, format=format, files=files)  # type: ignore[arg-type]


def _adhoc_name(paths: list[str]) -> str:
    first = urlsplit(paths[0]).path.rsplit("/", 1)[-1] or "files"
    return first if len(paths) == 1 else f"{first}+{len(paths) - 1}"


class _CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    datasets: list[dict[str, Any]] = Field(default_factory=list)


def catalog_search_path(extra: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None = None) -> list[Path]:
    """The catalog files to read, in search order."""
    explicit: list[str | os.PathLike[str]] = []
    if extra is not None:
        explicit = [extra] if isinstance(extra, (str, os.PathLike)) else list(extra)
    entries = explicit + [p for p in os.environ.get("CASA_CATALOG", "").split(":") if p]
    entries += get_config().catalogs
    entries += [user_config_dir() / "catalogs", BUILTIN]
    files: list[Path] = []
    for i, entry in enumerate(entries):
        p = Path(os.path.expandvars(os.fspath(entry))).expanduser()
        if p.is_dir():
            found = sorted(list(p.glob("*.yaml")) + list(p.glob("*.yml")))
        elif p.is_file():
            found = [p]
        elif i < len(explicit):
            raise CatalogError(f"catalog {p} does not exist")
        else:
            found = []
        for f in found:
            f = f.resolve()
            if f not in files:
                files.append(f)
    return files


class Catalog:
    """Datasets from a list of catalog files; a name defined twice is an error."""

    def __init__(self, files: Iterable[Path]):
        self.files = [Path(f) for f in files]
        self._specs: dict[str, DatasetSpec] = {}
        self._origin: dict[str, Path] = {}
        for f in self.files:
            self._load(f)

    def _load(self, path: Path) -> None:
        for spec in _parse_file(path):
            if spec.name in self._specs:
                raise CatalogError(
                    f"dataset {spec.name!r} is defined twice: in {self._origin[spec.name]} and in {path}"
                )
            self._specs[spec.name] = spec
            self._origin[spec.name] = path

    def names(self) -> list[str]:
        return sorted(self._specs)

    def get(self, name: str) -> DatasetSpec:
        try:  # a copy: specs are shared through the parse cache, a caller may change its own
            return self._specs[name].model_copy(deep=True)
        except KeyError:
            raise DatasetNotFoundError(name, self._specs, [str(f) for f in self.files]) from None

    def origin(self, name: str) -> Path:
        """The file that defines dataset ``name``."""
        return self._origin[name]

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __len__(self) -> int:
        return len(self._specs)

    def __repr__(self) -> str:
        return f"<Catalog {len(self)} datasets from {len(self.files)} file(s)>"


# path -> ((mtime_ns, size, inode), datasets): a catalog file is parsed once per version of it.
_PARSED: dict[Path, tuple[tuple[int, int, int], list[DatasetSpec]]] = {}
_PARSED_LOCK = threading.Lock()


def _parse_file(path: Path) -> list[DatasetSpec]:
    """The datasets of one catalog file, parsed and validated once per (path, mtime, size, inode).

    The specs are shared between catalogs: :meth:`Catalog.get` hands out copies.
    """
    try:
        st = path.stat()
    except OSError as err:
        raise CatalogError(f"catalog {path} cannot be read: {err.strerror or err}") from None
    version = (st.st_mtime_ns, st.st_size, st.st_ino)
    hit = _PARSED.get(path)
    if hit is None or hit[0] != version:
        try:
            data, node = load_yaml(path)
        except OSError as err:
            raise CatalogError(f"catalog {path} cannot be read: {err.strerror or err}") from None
        specs: list[DatasetSpec] = []
        if data is not None:
            if not isinstance(data, dict):
                raise CatalogError(f"{path}:1:1: a catalog is a mapping with a 'datasets:' list")
            top = validate_yaml(_CatalogFile, data, path, node)
            seen: dict[str, int] = {}
            for i, entry in enumerate(top.datasets):
                spec = validate_yaml(DatasetSpec, entry, path, node, prefix=("datasets", i),
                                     context={"base": path.parent})
                if spec.name in seen:
                    a, b = (locate(node, ("datasets", j, "name")) for j in (seen[spec.name], i))
                    raise CatalogError(f"{path}:{b[0] if b else '?'}: dataset {spec.name!r} is defined twice in "
                                       f"{path.name}: at lines {a[0] if a else '?'} and {b[0] if b else '?'}")
                seen[spec.name] = i
                specs.append(spec)
        with _PARSED_LOCK:
            if len(_PARSED) > 256:
                _PARSED.clear()
            _PARSED[path] = (version, specs)
        hit = (version, specs)
    return hit[1]


def get_catalog(extra: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None = None) -> Catalog:
    """The catalog from the search path (each file parsed once per version: edits are seen at once)."""
    return Catalog(catalog_search_path(extra))
