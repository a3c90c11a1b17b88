"""Turn a dataset's files into ordered replica URLs, each with the delivery path that serves it.

For every file: the current site's rules whose LFN prefix matches come first (in the site's
``prefer`` order), then the catalog's own replicas in catalog order, then the LFN itself if it is
a URL or an existing path. ``via=`` keeps only candidates of that delivery path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .access import Candidate
from .catalog import DatasetSpec, FileEntry
from .config import CasaConfig, get_config
from .errors import CasaError, CatalogError
from .paths import DeliveryPath, get_path, path_for_url

__all__ = ["Candidate", "ResolvedFile", "resolve"]

log = logging.getLogger("casa_data")


@dataclass
class ResolvedFile:
    """A file of a dataset with its replicas in the order they will be tried."""

    lfn: str
    candidates: list[Candidate]
    nevents: int | None = None
    size: int | None = None
    failed: dict[str, str] = field(default_factory=dict)  # url -> why, filled while reading
    errors: dict[str, BaseException] = field(default_factory=dict, repr=False)  # url -> the error

    @property
    def url(self) -> str:
        """The preferred replica."""
        return self.candidates[0].url

    def __repr__(self) -> str:
        return f"<ResolvedFile {self.lfn} replicas={[c.url for c in self.candidates]}>"


def _scheme(url: str) -> str:
    s = urlsplit(url).scheme
    return "file" if len(s) <= 1 else s


class _Paths:
    """One instance per delivery path for a whole resolve() call, so files share connections."""

    def __init__(self, prefer: list[str]):
        self.prefer = prefer
        self._by_name: dict[str, DeliveryPath] = {}
        self._by_scheme: dict[str, str] = {}

    def named(self, name: str) -> DeliveryPath:
        if name not in self._by_name:
            self._by_name[name] = get_path(name)
        return self._by_name[name]

    def for_url(self, url: str) -> DeliveryPath:
        scheme = _scheme(url)
        if scheme not in self._by_scheme:
            self._by_scheme[scheme] = path_for_url(url, self.prefer).name
        return self.named(self._by_scheme[scheme])


def _candidates(entry: FileEntry, lfn: str, cfg: CasaConfig, paths: _Paths) -> list[Candidate]:
    out: list[Candidate] = []
    site = cfg.current_site
    rules = [r for r in cfg.rules() if lfn.startswith(r.prefix)]
    rank = {name: i for i, name in enumerate(site.prefer)}
    for rule in sorted(rules, key=lambda r: rank.get(r.via or "", len(rank))):
        path = paths.named(rule.via) if rule.via else paths.for_url(rule.url)
        out.append(Candidate(path.to_url(lfn, rule.url, rule.prefix), path))
    for rep in entry.replicas:
        path = paths.named(rep.via) if rep.via else paths.for_url(rep.url)
        out.append(Candidate(rep.url, path))
    if not out:  # the LFN is itself a path or URL
        out.append(Candidate(lfn, paths.for_url(lfn)))
    seen: set[tuple[str, str]] = set()
    unique = []
    for c in out:
        if (c.url, c.via) not in seen:
            seen.add((c.url, c.via))
            unique.append(c)
    return unique


def _expand_glob(pattern: str, paths: _Paths) -> list[str]:
    path = paths.for_url(pattern)
    fs = path.filesystem(pattern)
    matches = sorted(fs.glob(path.reader_url(pattern)))
    if _scheme(pattern) != "file":
        matches = [fs.unstrip_protocol(m) for m in matches]
    return matches


def resolve(spec: DatasetSpec, via: str | None = None, config: CasaConfig | None = None) -> list[ResolvedFile]:
    """Resolve every file of ``spec``; globs are expanded now."""
    cfg = config or get_config()
    paths = _Paths(cfg.current_site.prefer)
    files: list[ResolvedFile] = []
    for entry in spec.files:
        if entry.glob is not None:
            matches = _expand_glob(entry.glob, paths)
            if not matches:
                raise CatalogError(f"dataset {spec.name!r}: the pattern {entry.glob!r} matches no file")
            for m in matches:
                files.append(ResolvedFile(m, _candidates(FileEntry(lfn=m), m, cfg, paths)))
        else:
            assert entry.lfn is not None
            files.append(ResolvedFile(entry.lfn, _candidates(entry, entry.lfn, cfg, paths), entry.nevents,
                                      entry.size))
    if via is not None:
        for f in files:
            f.candidates = _only_via(f, via, paths, spec.name)
    return files


def _only_via(f: ResolvedFile, via: str, paths: _Paths, name: str) -> list[Candidate]:
    """``f``'s candidates of path ``via``; a URL of another path whose scheme ``via`` also serves
    (``root://`` for ``xrootd`` and ``xcache``) is read through ``via``."""
    keep = [c for c in f.candidates if c.via == via]
    if not keep:
        path = paths.named(via)
        keep = [Candidate(c.url, path) for c in f.candidates if _scheme(c.url) in path.schemes]
    if not keep:
        have = sorted({c.via for c in f.candidates})
        raise CasaError(
            f"dataset {name!r}: file {f.lfn} has no replica deliverable via {via!r} "
            f"(it has: {', '.join(have)}); add a site rule or a replica for {via!r}, or drop via="
        )
    return keep
