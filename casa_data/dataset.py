"""``casa_data.open()`` and :class:`Dataset`: a resolved dataset you can read in many shapes."""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal, TypeVar

import awkward as ak

from . import readers
from .access import USER_ERRORS, Candidate, Health, Replicas, fatal, translate
from .catalog import DatasetSpec, get_catalog
from .errors import CasaError, ColumnNotFoundError, FileReadError, PartialResultError, ReplicaError, SchemaMismatchError
from .expr import Filter
from .paths.local import looks_like_path as _looks_like_path
from .resolver import ResolvedFile, resolve

__all__ = ["open", "open_query", "Dataset"]

log = logging.getLogger("casa_data")
T = TypeVar("T")
Errors = Literal["raise", "skip"]

_USER_ERRORS = USER_ERRORS  # the caller's errors, not a replica's: never fail over on them


def open(
    dataset: str | os.PathLike[str] | DatasetSpec | Sequence[str | os.PathLike[str]],
    columns: Sequence[str] | None = None,
    filter: str | Filter | None = None,
    via: str | None = None,
    *,
    catalog: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    tree: str = "Events",
    errors: Errors = "raise",
    query: Any = None,
    **servicex: Any,
) -> Dataset:
    """Resolve a dataset to files, by the best delivery path.

    Parameters
    ----------
    dataset
        A catalog name (``"cms/dimuon-2012"``), a :class:`~casa_data.catalog.DatasetSpec`, a path
        or URL, a glob (``"/data/*.root"``) or a list of paths/URLs.
    columns, filter
        Defaults for every read of the returned dataset: the columns to read and a filter
        expression such as ``"nMuon >= 2"`` (see :mod:`casa_data.expr`).
    via
        Deliver only through this path (``"local"``, ``"xcache"``, ``"s3"``, ...); by default the
        site's rules and the catalog's replicas are tried in order. A path that delivers query
        results (``Capability.QUERY``, e.g. ``"servicex"``) gets ``columns`` as its default query.
    catalog
        Extra catalog file(s) or directories, searched first.
    tree
        Tree name for ad-hoc paths (catalog entries carry their own).
    errors
        ``"raise"`` (default): a file that cannot be read raises
        :class:`~casa_data.errors.PartialResultError` carrying what was read; ``"skip"``: such
        files are logged, left out and listed in ``Dataset.failures``.
    query
        A query for a query-delivery path (ServiceX: func_adl, UprootRaw dict, python function):
        the dataset is transformed and the returned Dataset reads its outputs; extra keywords
        (``endpoint=``, ``format=``, ...) go to the path (see :func:`open_query`).
    """
    if query is not None or (via is not None and _delivers_queries(via)):
        return open_query(dataset, query, columns, filter, via=via or "servicex", catalog=catalog, tree=tree,
                          errors=errors, **servicex)
    if servicex:
        raise TypeError(f"open() got unexpected keyword(s) {sorted(servicex)} (they need query=)")
    spec = _spec(dataset, catalog, tree)
    flt = Filter(filter) if filter is not None else None
    return Dataset(spec, resolve(spec, via=via), columns=columns, filter=flt, via=via, errors=errors)


def _spec(dataset: Any, catalog: Any, tree: str) -> DatasetSpec:
    if isinstance(dataset, DatasetSpec):
        return dataset
    if isinstance(dataset, (str, os.PathLike)) and not _looks_like_path(os.fspath(dataset)):
        return get_catalog(catalog).get(os.fspath(dataset))
    if isinstance(dataset, (str, os.PathLike)):
        return DatasetSpec.from_paths([os.fspath(dataset)], tree=tree)
    return DatasetSpec.from_paths(list(dataset), tree=tree)


def _delivers_queries(via: str) -> bool:
    from .paths import Capability, path_class

    return path_class(via).can(Capability.QUERY)


def open_query(dataset: Any, query: Any = None, columns: Sequence[str] | None = None, filter: Any = None, *,
               via: str = "servicex", catalog: Any = None, tree: str = "Events", errors: Errors = "raise",
               **options: Any) -> Dataset:
    """Deliver ``query`` over ``dataset`` through the query path ``via``; a Dataset of the outputs.

    ``query`` None: the path's default query for ``columns`` (and the filter's columns; the
    filter itself is applied to the delivered files). Failed files raise
    :class:`~casa_data.errors.PartialResultError` (``.partial``: a Dataset of the good files, or
    None); ``errors="skip"`` returns that Dataset with the failures in ``.failures``. ServiceX
    options: ``endpoint``, ``format`` (parquet | root | rntuple), ``codegen``, ``nfiles``,
    ``ignore_cache``, ``progress``.
    """
    from .paths import Capability, QueryPath, get_path

    path = get_path(via)
    if not isinstance(path, QueryPath) or not path.can(Capability.QUERY):
        raise CasaError(f"delivery path {via!r} does not deliver query results (query= needs one that "
                        "declares Capability.QUERY, e.g. 'servicex')")
    flt = Filter(filter) if filter is not None else None
    if query is None:
        need = None if columns is None else list(columns) + sorted(set(flt.columns if flt else ()) - set(columns))
        query = path.default_query(_spec(dataset, catalog, tree).tree, need)
    d = path.deliver(dataset, query, inputs=lambda spec: [f.url for f in resolve(spec)], catalog=catalog,
                     tree=tree, **options)
    ds = None
    if d.files:
        spec = DatasetSpec.from_paths(sorted(d.files), name=d.name, tree=d.tree, format=d.format)
        spec.metadata.update(d.metadata)
        ds = Dataset(spec, resolve(spec), columns=columns, filter=flt, errors=errors)
    if d.failures and (errors == "raise" or ds is None):
        raise PartialResultError(d.label or d.name, ds, dict(d.failures))
    if d.failures and ds is not None:
        log.warning("%d file(s) of %s failed in %s and are left out: %s", len(d.failures), d.name, via,
                    "; ".join(f"{k}: {v}" for k, v in d.failures.items())[:1000])
        ds.failures.update(d.failures)
    assert ds is not None
    return ds


class Dataset:
    """A dataset resolved to files, each with replicas tried in order.

    Reads: :meth:`to_awkward`, :meth:`to_arrow`, :meth:`iter_batches`, :meth:`events`; for coffea,
    :meth:`fileset`. Column and filter arguments default to those given to :func:`open`.
    """

    def __init__(self, spec: DatasetSpec, files: list[ResolvedFile], columns: Sequence[str] | None = None,
                 filter: Filter | None = None, via: str | None = None, errors: Errors = "raise"):
        self.spec = spec
        self.resolved = files
        self.columns = list(columns) if columns is not None else None
        self.filter = filter
        self.via = via
        self.errors: Errors = errors
        self.failures: dict[str, BaseException] = {}
        self._warned: set[str] = set()
        self._health = Health()  # servers found down while reading this dataset

    # -- identity -----------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def tree(self) -> str:
        return self.spec.tree

    @property
    def format(self) -> str:
        return self.spec.format

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self.spec.metadata)

    @property
    def files(self) -> list[str]:
        """The preferred replica URL of every file."""
        return [f.url for f in self.resolved]

    def fileset(self, urls: Literal["casa", "physical"] = "casa", step_size: int | None = None
                ) -> dict[str, dict[str, Any]]:
        """coffea's fileset: ``{name: {"files": {url: {"object_path", "format", ...}}, "metadata",
        "format"}}``, ready for ``coffea.dataset_tools.preprocess`` and ``apply_to_fileset``.

        ``object_path`` is the tree (TTree or RNTuple) or None for Parquet; ``num_entries``,
        ``steps`` and ``uuid`` are given when the catalog knows them (``steps`` also when
        ``step_size`` is given and the entries are known).

        ``urls="casa"`` (default, for catalog datasets): ``casa://<dataset>//<lfn>`` URLs, so
        whoever reads them (a Dask worker of ``apply_to_fileset``) resolves the replicas there,
        from its own casa configuration, fails over between them and uses casa's credentials
        (token, S3 keys) for each -- nothing secret travels in the fileset. ``"physical"``: each
        file's preferred replica URL as it is (no failover; the reader needs its own options).
        """
        if urls not in ("casa", "physical"):
            raise ValueError(f"urls must be 'casa' or 'physical', not {urls!r}")
        use_casa = urls == "casa" and self._in_catalog()
        entries = {e.lfn: e for e in self.spec.files if e.lfn is not None}
        fmt = "parquet" if self.format == "parquet" else "root"
        files: dict[str, dict[str, Any]] = {}
        for f in self.resolved:
            url = f"casa://{self.name}/{f.lfn}" if use_casa else f.url
            info: dict[str, Any] = {"object_path": None if fmt == "parquet" else self.tree, "format": fmt}
            entry = entries.get(f.lfn)
            if f.nevents is not None:
                info["num_entries"] = int(f.nevents)
            steps = [list(s) for s in entry.steps] if entry is not None and entry.steps else None
            if steps is None and step_size and f.nevents is not None:
                from .dask_events import even_steps

                steps = [list(s) for s in even_steps(int(f.nevents), step_size)]
            if steps:
                info["steps"] = steps
            if entry is not None and entry.uuid:
                info["uuid"] = entry.uuid
            files[url] = info
        meta = {**self.metadata, "casa_format": self.format}
        return {self.name: {"files": files, "metadata": meta, "format": fmt}}

    def _in_catalog(self) -> bool:
        """This dataset is the catalog's own (so a ``casa://`` URL resolves the same files anywhere
        the same configuration is)."""
        try:
            cat = get_catalog()
            if self.name not in cat:
                return False
            theirs = {e.lfn for e in cat.get(self.name).files if e.lfn is not None}
        except CasaError:
            return False
        return {f.lfn for f in self.resolved} <= theirs

    def _sources(self, picked: list[ResolvedFile], step_size: int | None) -> list[Any]:
        """:class:`~casa_data.dask_events.EventSource` per file (entries counted if unknown)."""
        from .dask_events import EventSource, even_steps

        entries = {e.lfn: e for e in self.spec.files if e.lfn is not None}
        out = []
        for f in picked:
            entry = entries.get(f.lfn)
            if entry is not None and entry.steps:
                steps = tuple((int(a), int(b)) for a, b in entry.steps)
            else:
                if f.nevents is None:
                    f.nevents = self._with_replicas(f, lambda c: readers.count_events(c, self.format, self.tree))
                steps = even_steps(int(f.nevents), step_size)
            out.append(EventSource(tuple((c.url, c.path.name) for c in f.candidates), self.tree, self.format,
                                   steps, {**self.metadata, "dataset": self.name}))
        return out

    @property
    def nevents(self) -> int:
        """Events in the dataset (before any filter): from the catalog, else counted."""
        total = 0
        for f in self.resolved:
            if f.nevents is None:
                f.nevents = self._with_replicas(f, lambda c: readers.count_events(c, self.format, self.tree))
            total += f.nevents
        return total

    def subset(self, files: Sequence[int]) -> Dataset:
        """The same dataset restricted to the files at these indices (replicas kept)."""
        return Dataset(self.spec, [self.resolved[i] for i in files], self.columns, self.filter,
                       self.via, self.errors)

    def available_columns(self) -> list[str]:
        """The columns of the first file."""
        return self._with_replicas(self.resolved[0], lambda c: readers.available_columns(c, self.format, self.tree))

    # -- failover -----------------------------------------------------------------------------------
    def _with_replicas(self, f: ResolvedFile, fn: Callable[[Candidate], T]) -> T:
        """Run ``fn`` on the first replica that works (:class:`casa_data.access.Replicas`)."""
        return Replicas(f.lfn, f.candidates, f.failed, self._warned, self.name, self._health, f.errors).call(fn)

    def _per_file(self, fn: Callable[[Candidate], T], errors: Errors | None,
                  check: Callable[[T, str], None] | None = None) -> list[T]:
        """``fn`` on every file; failed files raise PartialResultError or are skipped.

        A delivery path's own failure (credentials, endpoint down) is raised as it is: every
        file would fail the same way. ``check(part, url)`` may reject a file's result (a schema
        that differs from the first file's) with a per-file error.
        """
        errors = errors or self.errors
        out: list[T] = []
        failed: dict[str, BaseException] = {}
        for f in self.resolved:
            try:
                part = self._with_replicas(f, fn)
                if check is not None:
                    check(part, f.url)
                out.append(part)
            except ColumnNotFoundError as err:
                if not out:  # not in the first file read: the caller's error
                    raise
                failed[f.lfn] = SchemaMismatchError(f.url, err.column, "absent", "present")
            except (FileReadError, ReplicaError, CasaError) as err:
                if fatal(err) and not isinstance(err, ReplicaError):
                    raise
                if isinstance(err, _USER_ERRORS):
                    raise
                failed[f.lfn] = err
        if failed and errors == "skip":
            for lfn, exc in failed.items():
                log.warning("skipping %s of %s: %s", lfn, self.name, exc)
        self.failures.update(failed)
        if failed and errors == "raise":
            raise PartialResultError(self.name, out, failed)
        return out

    # -- reads --------------------------------------------------------------------------------------
    def _args(self, columns: Sequence[str] | None, filter: str | Filter | None) -> tuple[list[str] | None, Filter | None]:
        cols = list(columns) if columns is not None else self.columns
        flt = Filter(filter) if filter is not None else self.filter
        return cols, flt

    def to_awkward(self, columns: Sequence[str] | None = None, filter: str | Filter | None = None,
                   errors: Errors | None = None) -> ak.Array:
        """All files as one awkward array (only ``columns``, only events passing ``filter``)."""
        cols, flt = self._args(columns, filter)
        try:
            parts = self._per_file(lambda c: readers.read_awkward(c, self.format, self.tree, cols, flt), errors,
                                   _SameTypes(_awkward_types))
        except PartialResultError as err:
            err.partial = _concat(err.partial)
            raise
        return _concat(parts)

    def to_arrow(self, columns: Sequence[str] | None = None, filter: str | Filter | None = None,
                 errors: Errors | None = None) -> Any:
        """All files as one ``pyarrow.Table``."""
        import pyarrow as pa

        cols, flt = self._args(columns, filter)

        def read(c: Candidate) -> Any:
            return readers.read_arrow(c, self.format, self.tree, cols, flt)

        def concat(tables: list[Any]) -> Any:
            nonempty = [t for t in tables if t.num_rows] or tables[:1]
            return pa.concat_tables(nonempty, promote_options="permissive") if nonempty else pa.table({})

        try:
            return concat(self._per_file(read, errors, _SameTypes(_arrow_types)))
        except PartialResultError as err:
            err.partial = concat(err.partial)
            raise

    def iter_batches(self, columns: Sequence[str] | None = None, batch_size: int = 100_000,
                     filter: str | Filter | None = None, errors: Errors | None = None) -> Iterator[Any]:
        """Arrow record batches of at most ``batch_size`` events (before filtering), file by file.

        A replica that fails before its first batch is replaced by the next one; a failure after
        batches of that file were yielded raises :class:`~casa_data.errors.FileReadError`.
        """
        cols, flt = self._args(columns, filter)
        errors = errors or self.errors
        for f in self.resolved:
            started = False

            def first(c: Candidate) -> tuple[Any, Any, Candidate]:
                it = readers.iter_arrow(c, self.format, self.tree, cols, flt, batch_size)
                return it, next(it, None), c

            try:
                it, batch, cand = self._with_replicas(f, first)
            except (FileReadError, ReplicaError) as err:
                self.failures[f.lfn] = err
                if errors == "skip":
                    log.warning("skipping %s of %s: %s", f.lfn, self.name, err)
                    continue
                raise
            try:
                while batch is not None:
                    started = True
                    yield batch
                    batch = next(it, None)
            except _USER_ERRORS:
                raise
            except Exception as err:  # noqa: BLE001 - translated like every read (casa_data.access)
                wrapped = translate(cand, err)
                self.failures[f.lfn] = wrapped
                if errors == "skip" and not started:
                    continue
                if wrapped is err:
                    raise
                raise wrapped from err

    def events(self, file: int | None = None, entry_start: int | None = None, entry_stop: int | None = None,
               schema: Any = None, mode: str = "virtual", step_size: int | None = 100_000) -> Any:
        """coffea NanoEvents (NanoAOD schema by default).

        With one file, or ``file=i``, that file's events (``mode="virtual"``: columns load on
        access). For several files, ``mode="virtual"`` concatenates the files' events.

        ``mode="dask"``: one lazy dask-awkward array over the files, for every format (ROOT
        TTree, RNTuple, Parquet), one partition per step (the catalog's ``steps``, else ranges of
        at most ``step_size`` entries); each partition is read where it runs through the file's
        replicas in order, with each delivery path's options and credentials
        (:mod:`casa_data.dask_events`).
        """
        from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

        schema = schema or NanoAODSchema
        picked = self.resolved if file is None else [self.resolved[file]]
        if mode == "dask":
            from .dask_events import EventSource, dask_events

            sources = self._sources(picked, step_size)
            if entry_start is not None or entry_stop is not None:
                lo, hi = entry_start or 0, entry_stop
                sources = [EventSource(s.replicas, s.tree, s.format,
                                       tuple((max(a, lo), min(b, hi) if hi is not None else b) for a, b in s.steps
                                             if b > lo and (hi is None or a < hi)), s.metadata) for s in sources]
            return dask_events(sources, schema, label=f"casa-{self.name.replace('/', '-')}")

        def build(c: Candidate) -> Any:
            if self.format == "parquet":
                return NanoEventsFactory.from_parquet(
                    c.path.reader_url(c.url), schemaclass=schema, mode=mode, entry_start=entry_start,
                    entry_stop=entry_stop, storage_options=c.path.storage_options(c.url) or None,
                    metadata={"dataset": self.name},
                ).events()
            return NanoEventsFactory.from_root(
                {c.path.reader_url(c.url): self.tree}, schemaclass=schema, mode=mode,
                entry_start=entry_start, entry_stop=entry_stop, metadata={"dataset": self.name},
                uproot_options=c.path.uproot_options(c.url),
            ).events()

        # Fail over while finding a readable replica; schema errors then surface as they are.
        parts = [build(self._with_replicas(f, lambda c: (readers.count_events(c, self.format, self.tree), c)[1]))
                 for f in picked]
        return parts[0] if len(parts) == 1 else ak.concatenate(parts)

    # -- display ------------------------------------------------------------------------------------
    def describe(self) -> str:
        """A short text summary: files, replicas, events, columns."""
        lines = [f"Dataset {self.name} ({self.format}, tree {self.tree!r}, {len(self.resolved)} file(s))"]
        if self.spec.description:
            lines.append(f"  {self.spec.description}")
        if self.metadata:
            lines.append("  metadata: " + ", ".join(f"{k}={v}" for k, v in self.metadata.items()))
        known = [f.nevents for f in self.resolved]
        if all(n is not None for n in known):
            lines.append(f"  events: {sum(known):,}")  # type: ignore[arg-type]
        if self.columns is not None:
            lines.append(f"  columns: {', '.join(self.columns)}")
        if self.filter is not None:
            lines.append(f"  filter: {self.filter}")
        for f in self.resolved[:20]:
            reps = " | ".join(f"{c.via}:{c.url}" for c in f.candidates)
            n = f"{f.nevents:,} ev" if f.nevents is not None else "? ev"
            lines.append(f"  - {f.lfn} ({n}) -> {reps}")
        if len(self.resolved) > 20:
            lines.append(f"  ... and {len(self.resolved) - 20} more")
        if self.failures:
            lines.append(f"  failed: {', '.join(self.failures)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        via = f" via={self.via!r}" if self.via else ""
        return f"<Dataset {self.name!r} {self.format} files={len(self.resolved)}{via}>"

    def _repr_html_(self) -> str:
        e = html.escape
        rows = "".join(
            f"<tr><td>{e(f.lfn)}</td><td>{'' if f.nevents is None else f'{f.nevents:,}'}</td>"
            f"<td>{'<br>'.join(e(c.via + ': ' + c.url) for c in f.candidates)}</td></tr>"
            for f in self.resolved[:50]
        )
        more = f"<p>... and {len(self.resolved) - 50} more files</p>" if len(self.resolved) > 50 else ""
        meta = ", ".join(f"{e(str(k))}={e(str(v))}" for k, v in self.metadata.items())
        return (
            f"<div><b>Dataset {e(self.name)}</b> &mdash; {e(self.format)}, tree <code>{e(self.tree)}</code>, "
            f"{len(self.resolved)} file(s)<br><i>{e(self.spec.description)}</i><br>{meta}"
            f"<table><tr><th>file</th><th>events</th><th>replicas (in order)</th></tr>{rows}</table>{more}</div>"
        )


class _SameTypes:
    """Rejects a file whose columns have other types than the first file's (SchemaMismatchError)."""

    def __init__(self, types: Callable[[Any], dict[str, str]]):
        self.types = types
        self.first: dict[str, str] | None = None

    def __call__(self, part: Any, url: str) -> None:
        got = self.types(part)
        if not self.first:
            self.first = got
            return
        for col, want in self.first.items():
            if col in got and got[col] != want:
                raise SchemaMismatchError(url, col, got[col], want)


def _awkward_types(arr: ak.Array) -> dict[str, str]:
    if not len(arr):  # an empty file says little about types
        return {}
    return {f: str(arr[f].type.content).replace("?", "") for f in ak.fields(arr)}


def _arrow_types(table: Any) -> dict[str, str]:
    if not table.num_rows:
        return {}
    return {f.name: str(f.type).replace("not null", "").strip() for f in table.schema}


def _concat(parts: Iterable[ak.Array]) -> ak.Array:
    parts = [p for p in parts]
    if not parts:
        return ak.Array([])
    return parts[0] if len(parts) == 1 else ak.concatenate(parts)
