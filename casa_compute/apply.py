"""``casa_compute.apply``: coffea 2025's dask-awkward workflow on casa's clusters.

The workflow of ``coffea.dataset_tools`` -- preprocess, ``apply_to_fileset``, compute -- for a
function of (dask-awkward) NanoEvents or a ``ProcessorABC``, with what casa adds:

* every format: ROOT TTrees, RNTuple and Parquet (coffea's ``apply_to_fileset`` reads ROOT
  TTrees only); partitions are the fileset's ``steps`` (preprocessed filesets and
  ``DataGroupSpec`` are honoured), else ranges of at most ``step_size`` entries
  (Parquet: within row groups);
* every partition is read where it runs through the file's replicas in order, with each
  delivery path's options and credentials looked up there (:mod:`casa_data.dask_events`); the
  bearer token reaches the workers as in :func:`casa_compute.run` (a worker plugin, never the
  task graph);
* one graph per file: a file that fails is named (``report.failures``), the others are kept
  and merged (``coffea.processor.accumulate``); a progress bar counts files.

>>> out, report = casa_compute.apply(lambda ev: hist.dask.Hist.new.Reg(60, 0, 120).Double()
...                                  .fill(ak.flatten(ev.Muon.pt)), ds, cluster="local")
"""

from __future__ import annotations

import contextlib
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .chunks import files_of, limit, plan_chunks
from .report import RunError, RunResult

if TYPE_CHECKING:
    from .types import ClusterLike

__all__ = ["apply", "ApplyReport"]


@dataclass
class ApplyReport:
    """What :func:`apply` did: files and partitions per dataset, failed files, time."""

    files: dict[str, list[str]] = field(default_factory=dict)  # dataset -> files read
    partitions: int = 0
    failures: dict[str, str] = field(default_factory=dict)      # file -> error
    seconds: float = 0.0
    dashboard: str | None = None

    def describe_failures(self) -> str:
        lines = [f"{len(self.failures)} file(s) failed (the others were kept):"]
        lines += [f"  {f}: {e}" for f, e in self.failures.items()]
        return "\n".join(lines)


def _call(fn: Any, events: Any) -> Any:
    if hasattr(fn, "process") and not isinstance(fn, types.FunctionType):
        return fn.process(events)
    if callable(fn):
        return fn(events)
    raise TypeError(f"apply() needs a function of events or a coffea ProcessorABC, not {type(fn).__name__}")


def apply(fn: Callable[[Any], Any] | Any, data: Any, cluster: ClusterLike | None = None, *,
          schema: type[Any] | None = None, step_size: int = 100_000, max_chunks: int | None = None,
          max_files: int | None = None, progress: bool = True, token: Any = "auto",
          skip_bad_files: bool = False) -> RunResult:
    """Apply ``fn`` (a function of dask-awkward NanoEvents, or a ``ProcessorABC``) to every
    dataset of ``data`` and compute the result.

    Parameters
    ----------
    data
        A ``casa_data.Dataset``, a list of them, or a coffea fileset (dict, plain or
        preprocessed, or a ``DataGroupSpec``; ``casa://`` URLs fail over between replicas).
    cluster
        None: in this process (threads). Else as for :func:`casa_compute.run`: a Client, a
        cluster object, a kind (``"local"``, ...) or ``"facility"``.
    step_size
        Entries per partition of files without ``steps``.
    max_chunks, max_files
        A quick test: the first partitions of each file, the first files of each dataset.
    skip_bad_files
        Return without the failed files (named in ``report.failures``); else raise
        :class:`~casa_compute.report.RunError` naming them, ``.partial`` holding the rest.

    Returns
    -------
    RunResult
        ``.output``: ``{dataset: computed output}``; ``.report``: an :class:`ApplyReport`.
    """
    from coffea.processor import accumulate

    from casa_data.dask_events import EventSource, dask_events

    from .schemas import LenientNanoAODSchema

    t0 = time.perf_counter()
    schema = schema or LenientNanoAODSchema
    report = ApplyReport()
    items = limit(files_of(data), max_files)
    chunks, bad = plan_chunks(items, step_size, max_chunks=max_chunks)  # the preprocessing step
    for item, err in bad.items():
        report.failures[item.url] = err
    steps: dict[Any, list[tuple[int, int]]] = {}
    for c in chunks:
        steps.setdefault(c.file, []).append((c.start, c.stop))
    graphs: list[tuple[str, str, Any]] = []  # (dataset, file, output collection)
    for item, ranges in steps.items():
        src = EventSource(item.replicas, item.tree, item.format, tuple(ranges),
                          {**item.metadata, "dataset": item.dataset})
        report.files.setdefault(item.dataset, []).append(item.url)
        report.partitions += len(ranges)
        try:
            graphs.append((item.dataset, item.url, _call(fn, dask_events([src], schema))))
        except Exception as err:  # noqa: BLE001 - the file's form could not be read
            report.failures[item.url] = f"{type(err).__name__}: {err}"
    results = _compute(graphs, cluster, progress, token, report)
    output: dict[str, Any] = {}
    for (name, url, _), (ok, value) in zip(graphs, results):
        if not ok:
            report.failures[url] = value
            continue
        output[name] = value if name not in output else accumulate([output[name], value])
    if hasattr(fn, "postprocess") and not isinstance(fn, types.FunctionType):
        for name, value in output.items():
            post = fn.postprocess(value)
            output[name] = value if post is None else post
    report.seconds = time.perf_counter() - t0
    result = RunResult(output, report)  # type: ignore[arg-type]
    if report.failures and not skip_bad_files:
        raise RunError(report.describe_failures(), partial=result)
    return result


def _progress(enabled: bool, total: int):
    if not enabled or not total:
        return contextlib.nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]casa apply"), BarColumn(), MofNCompleteColumn(), TextColumn("files"),
                    TimeElapsedColumn(), transient=False)


def _compute(graphs, cluster, progress: bool, token, report: ApplyReport) -> list[tuple[bool, Any]]:
    """``(True, value)`` or ``(False, error text)`` per graph, in order."""
    import dask

    from .runner import scrub

    if cluster is None:
        out = []
        with _progress(progress, len(graphs)) as bar:
            task = bar.add_task("files", total=len(graphs)) if bar is not None else None
            for _, _, g in graphs:
                try:
                    (value,) = dask.compute(g, scheduler="threads")
                    out.append((True, value))
                except Exception as err:  # noqa: BLE001 - the file is named, the rest goes on
                    out.append((False, scrub(f"{type(err).__name__}: {err}")))
                if bar is not None:
                    bar.advance(task)
        return out
    from dask.base import unpack_collections
    from distributed import wait

    from .clusters.base import find_token
    from .report import TokenPlugin
    from .runner import _client_for

    client, owned = _client_for(cluster)
    futs: list = []
    try:
        report.dashboard = client.dashboard_link
        tok = find_token(token)
        if tok is not None:
            client.register_plugin(TokenPlugin.from_file(tok), name="casa-bearer-token")
        # Per file: its collections, optimised as dask.compute would (the read fuses with the
        # analysis, so no partition of lazily-read events is ever stored or moved), then repacked.
        per_file = []
        for _, _, g in graphs:
            colls, repack = unpack_collections(g)
            per_file.append((client.compute(list(colls), optimize_graph=True), repack))
            futs += per_file[-1][0]
        with _progress(progress, len(per_file)) as bar:
            task = bar.add_task("files", total=len(per_file)) if bar is not None else None
            for fs, _ in per_file:
                wait(fs)
                if bar is not None:
                    bar.advance(task)
        out = []
        for fs, repack in per_file:
            bad = next((f for f in fs if f.status != "finished"), None)
            if bad is None:
                out.append((True, repack([f.result() for f in fs])[0]))
            else:
                err = bad.exception()
                out.append((False, scrub(f"{type(err).__name__}: {err}")))
        return out
    finally:
        with contextlib.suppress(Exception):
            if futs:
                client.cancel(futs)
        for obj in owned:
            obj.close()


class _CallableModule(types.ModuleType):
    """``casa_compute.apply(...)`` works even after ``import casa_compute.apply`` made the package
    attribute this module."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return apply(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
