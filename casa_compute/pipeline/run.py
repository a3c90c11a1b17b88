"""``run_pipeline``: spec -> plan (datasets, checks, push-down, cache key) -> casa_compute.run -> outputs."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import casa_data
from casa_data.errors import CasaError, DatasetNotFoundError

from . import cache
from .check import Checker, Schema
from .expr import PipelineError
from .pushdown import loose_count_cut, pushdown_filter
from .spec import Pipeline, load_spec

__all__ = ["run_pipeline", "plan", "Plan", "PipelineResult", "PipelineRunError"]


class PipelineRunError(PipelineError):
    """Chunks failed in the run; the message names them (file, entries, located spec error).
    ``partial`` is the runner's result without them."""

    def __init__(self, message: str, partial=None):
        super().__init__(message)
        self.partial = partial


def _kind(via: str | None) -> str:
    """How the pipeline reads through ``via``, from the path's declared capabilities: ``"files"``
    (the runner reads chunks of files), ``"scan"`` (a server scans) or ``"query"`` (a service
    delivers a query's result). Never from the path's name: a third-party path works too."""
    from casa_data.paths import Capability, path_class

    if via is None:
        return "files"
    cls = path_class(via)
    if cls.can(Capability.QUERY):
        return "query"
    if cls.can(Capability.SCAN):
        return "scan"
    if cls.can(Capability.FILESYSTEM) or cls.can(Capability.BYTE_RANGES):
        return "files"
    return "none"


def _usable() -> list[str]:
    from casa_data.paths import available_paths

    out = []
    for p in available_paths():
        try:
            if _kind(p) != "none":
                out.append(p)
        except CasaError:  # a plug-in that does not load: not usable here
            continue
    return out


@dataclass
class DatasetPlan:
    """One dataset, checked: what to read, what to push down, how to normalise."""

    label: str
    dataset: Any                 # casa_data.Dataset, opened with columns= and filter=
    via: str | None
    columns: list[str]
    prefilter: str | None
    notes: dict
    norm: tuple[float, float | None] | None   # (xsec * lumi, denominator; None: sum of weights)
    nevents: int = 0
    loose_cut: str | None = None              # the count pre-selection in uproot's language


@dataclass
class Plan:
    """The checked spec and every dataset's plan (see :func:`plan`)."""

    pipe: Pipeline
    datasets: dict[str, DatasetPlan]

    def describe(self) -> str:
        """The plan as text (``casa run --dry-run``): inputs, columns, what is pushed where."""
        lines = [f"pipeline {self.pipe.spec.name} ({self.pipe.path}), spec hash {self.pipe.hash[:12]}"]
        if self.pipe.varied:
            lines.append(f"  variations: {', '.join(self.pipe.variation_names())}")
        for lab, d in self.datasets.items():
            via = d.via or (d.dataset.resolved[0].candidates[0].via if d.dataset.resolved else "auto")
            norm = "not scaled" if d.norm is None else (
                f"scaled by {d.norm[0]:.6g} / " + (f"{d.norm[1]:,} events" if d.norm[1] else "sum of weights"))
            lines.append(f"  {lab}: {d.dataset.name} via {via}, {len(d.dataset.resolved)} file(s), "
                         f"{d.nevents:,} events, {norm}")
            lines.append(f"    columns ({len(d.columns)}): {', '.join(d.columns)}")
            lines.append(f"    pre-filter: {d.prefilter or '(none)'}")
            if d.via is not None and _kind(d.via) == "query":
                lines.append(f"    query cut ({d.via}): {d.loose_cut or '(none)'}")
        return "\n".join(lines)


@dataclass
class PipelineResult:
    """Histograms (by name), the summary dict, the output directory and whether it came from cache."""

    hists: dict
    summary: dict
    outdir: Path
    cached: bool


def _via(pipe: Pipeline, label: str, override: str | None) -> tuple[str | None, tuple]:
    d = pipe.spec.datasets[label]
    if override is not None:
        return (None if override == "auto" else override), ()
    if d.via is not None:
        return (None if d.via == "auto" else d.via), ("datasets", label, "via")
    v = pipe.spec.delivery.via
    return (None if v == "auto" else v), ("delivery", "via")


def _catalogs(pipe: Pipeline, catalog) -> list[str]:
    extra = [os.fspath(c) for c in catalog] if isinstance(catalog, (list, tuple)) else \
        [os.fspath(catalog)] if catalog else []
    return extra + pipe.catalogs()


def open_datasets(pipe: Pipeline, *, via: str | None = None, catalog=None) -> dict[str, tuple[Any, str | None]]:
    """``{label: (casa_data.Dataset, via)}``: every dataset resolved (no file is opened)."""
    catalogs = _catalogs(pipe, catalog) or None
    out = {}
    usable = _usable()
    for label, d in pipe.spec.datasets.items():
        v, vloc = _via(pipe, label, via)
        if v is not None and v not in usable:
            msg = (f"delivery via {v!r} is not available to pipelines in this casa (usable: "
                   f"{', '.join(usable)}, or auto)")
            raise pipe.error(vloc, msg) if vloc else PipelineError(msg)
        try:
            # A query path reads the catalog's files itself: resolve them as usual (identity, columns).
            out[label] = (casa_data.open(d.dataset, via=None if _kind(v) == "query" else v, catalog=catalogs), v)
        except DatasetNotFoundError as err:
            raise pipe.error(("datasets", label, "dataset"), str(err)) from None
        except CasaError as err:
            raise (pipe.error(vloc, str(err)) if vloc else PipelineError(f"{label}: {err}")) from None
    return out


def plan(pipe: Pipeline, *, via: str | None = None, catalog=None, opened=None) -> Plan:
    """Check the spec against each dataset's columns; derive the column list and the pre-filter."""
    from casa_data.dataset import Dataset
    from casa_data.expr import Filter

    opened = opened or open_datasets(pipe, via=via, catalog=catalog)
    out: dict[str, DatasetPlan] = {}
    for label, (ds, v) in opened.items():
        d = pipe.spec.datasets[label]
        try:
            schema = Schema.from_columns(ds.available_columns())
            nevents = ds.nevents  # also spares the runner from counting again
        except CasaError as err:
            raise pipe.error(("datasets", label, "dataset"), f"cannot read {ds.name}: {err}") from None
        ch = Checker(pipe, schema, label, ds.name).run()
        pre = pushdown_filter(ch)
        cols = sorted(ch.columns | (Filter(pre).columns if pre else set()))
        # What casa_data.open(name, columns=cols, filter=pre) gives, on the files already resolved.
        ds = Dataset(ds.spec, ds.resolved, columns=cols, filter=Filter(pre) if pre else None, via=v,
                     errors=ds.errors)
        norm = None
        if d.xsec is not None:
            denom = None if d.normalize == "weights" else (d.nevents or nevents)
            norm = (d.xsec * (d.lumi or pipe.spec.lumi), denom)
        out[label] = DatasetPlan(label, ds, v, cols, pre, ch.notes, norm, nevents, loose_count_cut(ch))
    return Plan(pipe, out)


def run_pipeline(spec: str | os.PathLike | Pipeline, *, via: str | None = None, cluster: Any = None,
                 output: str | os.PathLike | None = None, force: bool = False, catalog=None,
                 progress: bool = False, max_chunks: int | None = None, max_files: int | None = None,
                 io_only: bool = False) -> PipelineResult:
    """Run a pipeline spec and write its outputs.

    Parameters
    ----------
    spec
        Path of the YAML spec (or a loaded :class:`~.spec.Pipeline`).
    via
        Override the delivery path of every dataset (``"local"``, ``"s3"``, ...; ``"auto"``).
    cluster
        Override ``delivery.cluster`` (None: the spec's; ``"local"``, a Client, ...).
    output
        Output directory (default: ``outputs.directory`` or ``casa-output/<name>``).
    force
        Recompute even if the cache holds a result for the same spec and input files.
    catalog
        Extra catalog file(s), searched first.
    max_chunks, max_files
        A quick test: the first chunks of each file, the first files of each dataset (never
        served from, nor stored as, the full result in the cache).
    io_only
        Read exactly the columns the pipeline needs and skip the processing (the AGC's I/O mode);
        the histograms stay empty, the summary has the bytes and the rate.

    Returns
    -------
    PipelineResult
    """
    t0 = time.perf_counter()
    pipe = spec if isinstance(spec, Pipeline) else load_spec(spec)
    s = pipe.spec
    opened = open_datasets(pipe, via=via, catalog=catalog)
    outdir = Path(output or s.outputs.directory or Path("casa-output") / s.name)
    inputs = {lab: [cache.input_identity(f) for f in ds.resolved] for lab, (ds, _) in opened.items()}
    key = cache.cache_key(pipe.hash, inputs, {"formats": s.outputs.formats,
                                              "via": {lab: v for lab, (_, v) in opened.items()},
                                              **({"io_only": True} if io_only else {})})
    if max_chunks is not None or max_files is not None:  # a quick test is not the full result
        key = f"{key}-quick-c{max_chunks}-f{max_files}"
    if not force:
        hit = cache.load_cached(outdir, key)
        if hit is not None:
            summary = {**hit["summary"], "cached": True, "seconds_to_answer": time.perf_counter() - t0}
            return PipelineResult(hit["hists"], summary, outdir, True)
    p = plan(pipe, opened=opened)

    from coffea.processor import accumulate

    from casa_compute.report import RunError
    from casa_compute.runner import run

    from .materialize import reduced_stream, reduces
    from .processor import CUTFLOW_ALL, PipelineProcessor

    proc = PipelineProcessor(pipe, {d.dataset.name: lab for lab, d in p.datasets.items()},
                             {lab: d.notes for lab, d in p.datasets.items()},
                             {lab: d.norm for lab, d in p.datasets.items() if d.norm is not None},
                             finalize=False,  # normalised once, after merging every run below
                             io_only=io_only, columns={lab: d.columns for lab, d in p.datasets.items()})
    files = [d.dataset for d in p.datasets.values() if not reduces(d.via)]
    reducing = [lab for lab, d in p.datasets.items() if reduces(d.via)]
    cl = cluster if cluster is not None else s.delivery.cluster
    owned = None
    if isinstance(cl, str) and bool(files) + len(reducing) > 1:  # one cluster for all the runs
        from casa_compute.clusters import cluster as make_cluster

        owned = cl = make_cluster(cl)
    kw = dict(cluster=cl, chunksize=s.delivery.chunksize, progress=progress)
    delivered: dict[str, dict] = {}
    results = []
    try:
        if files:
            results.append(run(proc, files, **kw, max_chunks=max_chunks, max_files=max_files))
        for lab, d in p.datasets.items():
            if lab in reducing:  # one run per reduced stream (the runner names it)
                assert d.via is not None
                stream, delivered[lab] = reduced_stream(
                    d.via, d.dataset, columns=d.columns, prefilter=d.prefilter, loose_cut=d.loose_cut,
                    catalogs=_catalogs(pipe, catalog) or None, batch_size=s.delivery.chunksize,
                    push_filter=s.datasets[lab].normalize != "weights")  # a sum of weights needs all
                results.append(run(proc, stream, dataset_name=d.dataset.name, **kw))
    except RunError as err:
        raise PipelineRunError(f"{pipe.path}: the run failed: {err}", err.partial) from err
    finally:
        if owned is not None:
            owned.close()
    outputs = [r.output for r in results if r.output is not None]
    output_ = proc.finalize(accumulate(outputs) if outputs else {"hists": proc.empty()})
    hists = output_["hists"]
    cutflows = output_.get("cutflow", {})
    stats = [st for r in results for st in r.report.stats]
    run_seconds = sum(r.report.wall_seconds for r in results)
    datasets = {}
    for lab, d in p.datasets.items():
        ds_stats = [st for st in stats if st.dataset == d.dataset.name]
        cf = cutflows.get(lab, {CUTFLOW_ALL: 0})
        if lab in delivered:  # the reducing path ran the first cut: show it as a step
            cf = {CUTFLOW_ALL: d.nevents, f"delivered by {d.via}": cf.get(CUTFLOW_ALL, 0),
                  **{k: v for k, v in cf.items() if k != CUTFLOW_ALL}}
        steps = [v for k, v in cf.items() if not k.startswith("region ")]  # events after each cut
        datasets[lab] = {
            "dataset": d.dataset.name, "files": d.dataset.files,
            "via": d.via if lab in reducing or not d.dataset.resolved else d.dataset.resolved[0].candidates[0].via,
            "events_in": d.nevents if lab in delivered else sum(st.events for st in ds_stats),
            "delivery": delivered.get(lab),
            "events_out": steps[-1],
            "cutflow": cf, "bytes_read": sum(st.bytes_read for st in ds_stats),
            "chunk_seconds": round(sum(st.seconds for st in ds_stats), 4),
            "scale": output_.get("scales", {}).get(lab, 1.0), "sum_weights": output_.get("sumw", {}).get(lab),
            "normalisation": None if d.norm is None else
            {"xsec_times_lumi": d.norm[0], "denominator": d.norm[1] if d.norm[1] is not None else "sum of weights"},
            "columns": d.columns, "prefilter": d.prefilter, "inputs": inputs[lab],
            "cutflow_variations": output_.get("cutflow_variations", {}).get(lab, {}),
        }
    summary = {
        "name": s.name, "spec": str(pipe.path), "spec_hash": pipe.hash, "cache_key": key,
        "cached": False, "weighted": proc.weighted, "datasets": datasets,
        "events_in": sum(v["events_in"] for v in datasets.values()),
        "events_out": sum(v["events_out"] for v in datasets.values()),
        "bytes_read": sum(st.bytes_read for st in stats), "run_seconds": round(run_seconds, 4),
        "chunks": len(stats), "histograms": {n: {"axes": list(h.axes.name), "sum": float(h.sum(flow=True).value
                                                    if hasattr(h.sum(flow=True), "value") else h.sum(flow=True))}
                                                 for n, h in hists.items()},
        "host": platform.node(),
        # the AGC's metrics: event rate per core = entries / summed process time; bytes read
        "events_per_second_per_core": round(sum(st.events for st in stats)
                                            / max(sum(st.seconds for st in stats), 1e-9), 1),
        "process_seconds": round(sum(st.seconds for st in stats), 4), "io_only": io_only,
        "combos": output_.get("combos"),
    }
    from .outputs import write_outputs

    summary["seconds"] = round(time.perf_counter() - t0, 4)
    files = write_outputs(outdir, hists, summary, s.outputs.formats,  # adds "outputs" to summary
                          {n: h.title for n, h in s.histograms.items() if h.title})
    cache.store(outdir, key, {"hists": hists, "summary": summary, "files": files})
    return PipelineResult(hists, summary, outdir, False)
