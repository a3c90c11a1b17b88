"""The coffea processor built from a pipeline spec: selection, variables, regions, histograms.

Per chunk: object cuts (in order), event cuts (each a cutflow step), then on the selected events
the variables, regions and histogram fills. Expressions are walked node by node by the core
evaluator of :mod:`casa_data.expr`, extended here (:class:`Evaluator`), using the per-dataset notes
of :class:`~.check.Checker` (alias choices, which names are fields, list depths). A failure inside
an expression is re-raised as a :class:`~.expr.PipelineError` located in the spec.
"""

from __future__ import annotations

import ast
from typing import Any

import awkward as ak
import hist
import numpy as np
from coffea import processor

from casa_data.expr import Evaluator as CoreEvaluator
from casa_data.expr import ExprError
from casa_data.expr.evaluate import is_bool, is_record

from .check import _key
from .expr import Expr, PipelineError
from .spec import Histogram, Pipeline
from .variations import Corrections, call_function, normal, salt

__all__ = ["PipelineProcessor", "Evaluator", "make_histogram"]

CUTFLOW_ALL = "all events"


def _pick(x, depth: int, sl: slice):
    return x[(slice(None),) * depth + (sl,)]


class Evaluator(CoreEvaluator):
    """Evaluates expressions on one chunk of NanoEvents; ``env`` holds objects and variables.

    The core evaluator (:class:`casa_data.expr.Evaluator`: arithmetic, logic, math, reductions)
    extended by names (objects, variables, parameters, fields of the current collection), fields,
    subscripts, reductions over the checker's list depth and ``where combinations best delta_r``.
    """

    def __init__(self, events, notes: dict, parameters: dict, corrections=None, variation: str = "nominal"):
        self.events, self.notes, self.parameters = events, notes, parameters
        self.corrections, self.variation = corrections, variation
        self.env: dict[str, Any] = {}
        self.expr: Expr | None = None

    def __call__(self, e: Expr, ctx=None):
        outer, self.expr = self.expr, e
        try:
            return self.run(e.tree, ctx)
        except PipelineError:
            raise
        except ExprError as err:
            raise e.where.error(err.msg, err.lineno, err.col) from None
        except Exception as err:  # noqa: BLE001 - located in the spec, cause kept
            raise e.fail(None, f"cannot evaluate {e.text!r}: {type(err).__name__}: {err}") from err
        finally:
            self.expr = outer

    def select(self, mask: np.ndarray) -> None:
        """Keep only the events in ``mask`` (for everything computed so far)."""
        self.events = self.events[mask]
        self.env = {k: v[mask] for k, v in self.env.items()}

    def key(self, node: ast.AST) -> tuple:
        return _key(self.expr, node)

    def name(self, node: ast.Name, ctx):
        n = node.id
        field = self.notes.get(self.key(node))
        if field is not None and ctx is not None:
            return self.field(ctx, field)
        if n in self.env:
            return self.env[n]
        if n in self.parameters:
            return self.parameters[n]
        return self.events[n]

    def attribute(self, node: ast.Attribute, ctx):
        return self.field(self.eval(node.value, ctx), self.notes.get(self.key(node), node.attr))

    def subscript(self, node: ast.Subscript, ctx):
        x = self.eval(node.value, ctx)
        d = self.notes[(*self.key(node), "d")]
        s = node.slice
        if isinstance(s, ast.Slice):
            return _pick(x, d, slice(s.lower and s.lower.value, s.upper and s.upper.value))  # type: ignore[attr-defined]
        if isinstance(s, ast.Constant):
            return ak.firsts(_pick(x, d, slice(s.value, s.value + 1)), axis=d)
        return x[ak.fill_none(self.eval(s, x if is_record(x) else None), False)]

    @staticmethod
    def field(x, name: str):
        return x[name] if name in ak.fields(x) else getattr(x, name)

    def axis(self, node: ast.Call, x) -> int:
        return self.notes[(*self.key(node), "d")]

    def call(self, node: ast.Call, ctx):
        f = node.func.id  # type: ignore[attr-defined]
        if f == "where":
            return ak.where(*(self.eval(a, ctx) for a in node.args))
        if f == "combinations":
            return combinations(self.eval(node.args[0], ctx), node.args[1].value)  # type: ignore[attr-defined]
        if f == "delta_r":
            a, b = (self.eval(x, ctx) for x in node.args)
            return a.delta_r(b)
        if f == "best":
            d = self.axis(node, None)
            x = self.eval(node.args[0], ctx)
            key = self.eval(node.args[1], x)
            return ak.firsts(x[ak.argmax(key, axis=d, keepdims=True)], axis=d)
        if f == "count":  # NanoEvents' parameters (__doc__) hide a bool type from the core's check
            x = self.eval(node.args[0], ctx)
            d = self.axis(node, x)
            if not is_record(x) and _bool_type(x):
                return ak.sum(ak.values_astype(x, np.int64), axis=d)
            return ak.num(x, axis=d)
        if f == "normal":
            mean, sigma = (self.eval(a, ctx) for a in node.args)
            s = salt(self.parameters.get("seed", 0), self.variation, self.expr.key if self.expr else "",
                     node.lineno, node.col_offset)
            return normal(self.events, ctx if is_record(ctx) else None, mean, sigma, s)
        if f == "corr":
            e = self.expr
            args = [e.text_of(a) if e.text_of(a) is not None else self.eval(a, ctx) for a in node.args]
            return self.corrections.evaluate(args[0], args[1:])
        return super().call(node, ctx)


def _bool_type(x: Any) -> bool:
    return is_bool(x)


def combinations(c, n: int):
    """n-object combinations of a per-event collection: pt, eta, phi, mass of the sum + members."""
    names = [str(i) for i in range(n)]
    combos = ak.combinations(c, n, fields=names)
    p4 = combos[names[0]]
    for k in names[1:]:
        p4 = p4 + combos[k]
    members = ak.concatenate([combos[k][:, :, None] for k in names], axis=2)
    return ak.zip({"pt": p4.pt, "eta": p4.eta, "phi": p4.phi, "mass": p4.mass, "members": members},
                  depth_limit=2, with_name="PtEtaPhiMLorentzVector", behavior=c.behavior)


def _mask(v, n: int) -> np.ndarray:
    if np.isscalar(v):
        return np.full(n, bool(v))
    return ak.to_numpy(ak.fill_none(v, False)).astype(bool)


def make_histogram(h: Histogram, labels: list[str], weighted: bool, variations: list[str] | None = None,
                   first: str = "dataset") -> hist.Hist:
    """An empty histogram for spec ``h``, with a first ``dataset`` (or ``process``) category axis
    and, given ``variations``, a ``variation`` category axis."""
    axes = [hist.axis.StrCategory(labels, name=first, label=first)]
    if variations:
        axes.append(hist.axis.StrCategory(variations, name="variation", label="systematic variation"))
    for a in h.axes:
        label = a.label or a.name
        if a.type == "regular":
            axes.append(hist.axis.Regular(a.bins, a.start, a.stop, name=a.name, label=label, flow=a.flow))
        elif a.type == "variable":
            axes.append(hist.axis.Variable(a.edges, name=a.name, label=label, flow=a.flow))
        elif a.type == "integer":
            axes.append(hist.axis.Integer(int(a.start), int(a.stop), name=a.name, label=label, flow=a.flow))
        else:
            axes.append(hist.axis.IntCategory(a.categories, name=a.name, label=label))
    return hist.Hist(*axes, storage=hist.storage.Weight() if weighted else hist.storage.Double())


class PipelineProcessor(processor.ProcessorABC):
    """Runs a :class:`~.spec.Pipeline` on NanoEvents.

    Parameters
    ----------
    pipe : the loaded spec.
    labels : catalog dataset name -> spec label (the category filled).
    notes : spec label -> the :class:`~.check.Checker` notes for that dataset's columns.
    norms : spec label -> ``(xsec * lumi, denominator)``; denominator None: the sum of weights
        seen in the run; no entry: not scaled (data).
    finalize : :meth:`postprocess` normalises (default); False leaves that to :meth:`finalize`,
        for outputs of several runs merged first.
    """

    def __init__(self, pipe: Pipeline, labels: dict[str, str], notes: dict[str, dict],
                 norms: dict[str, tuple[float, float | None]], finalize: bool = True, io_only: bool = False,
                 columns: dict[str, list[str]] | None = None):
        self.pipe, self.labels, self.notes, self.norms = pipe, labels, notes, norms
        self.auto_finalize, self.io_only, self.columns = finalize, io_only, columns or {}
        spec = pipe.spec
        self.weighted = bool(norms) or bool(spec.variations) or any(
            d.weight is not None for d in spec.datasets.values()) or any(
            h.weight is not None for h in spec.histograms.values())

    def hist_variations(self, h: Histogram) -> list[str] | None:
        return self.pipe.variation_names() if self.pipe.varied and h.by_variation else None

    def empty(self) -> dict[str, hist.Hist]:
        labels = list(self.pipe.spec.datasets)
        return {name: make_histogram(h, labels, self.weighted, self.hist_variations(h))
                for name, h in self.pipe.spec.histograms.items()}

    def process(self, events):
        pipe, spec = self.pipe, self.pipe.spec
        label = self.labels[events.metadata["dataset"]]
        if self.io_only:
            return self._io(events, label)
        corr = Corrections(pipe.corrections) if pipe.corrections else None
        hists = self.empty()
        cutflows, sumw = {}, 0.0
        mine = pipe.variations_for(label)
        sample = spec.datasets[label].variation
        for vname, var in [("nominal", None)] + [(n, v) for n, v in mine if v.shape]:
            ev = Evaluator(events, self.notes[label], spec.parameters, corr, vname)
            cutflow, w, regions = self._select(ev, events, label, vname, var)
            cutflows[vname] = cutflow
            weights = {sample or vname: w}
            if var is None:
                sumw = float(ev.sumw)
                for wname, wv in mine:
                    if wv.shape:
                        continue
                    keys = ("up", "down") if wv.up is not None else ("weight",)
                    for key, out in zip(keys, wv.names(wname)):
                        weights[out] = w * self._weight(ev, events, ("variations", wname, key), len(w))
            for hname, h in spec.histograms.items():
                if var is not None and not self.hist_variations(h):
                    continue
                sel = regions[h.region] if h.region is not None else np.ones(len(w), dtype=bool)
                extra = 1.0
                if h.weight is not None:
                    extra = _numbers(ev(pipe.exprs[("histograms", hname, "weight")]), len(w))
                values = [ev(pipe.exprs[("histograms", hname, "axes", i, "expr" if a.expr is not None else "name")])
                          for i, a in enumerate(h.axes)]
                for out, wv in weights.items():
                    if out != (sample or vname) and not self.hist_variations(h):
                        continue
                    var_fill = {"variation": out} if self.hist_variations(h) else {}
                    self._fill(hists[hname], h, label, values, wv * extra, sel, var_fill)
        out = {"hists": hists, "cutflow": {label: cutflows["nominal"]}, "sumw": {label: sumw}}
        if len(cutflows) > 1:
            out["cutflow_variations"] = {label: {k: v for k, v in cutflows.items() if k != "nominal"}}
        return out

    def _select(self, ev: Evaluator, events, label: str, vname: str, var) -> tuple[dict, np.ndarray, dict]:
        """Shape changes, object cuts, event cuts, variables, regions for one variation."""
        pipe, spec = self.pipe, self.pipe.spec
        n = len(events)
        cutflow = {CUTFLOW_ALL: n}
        if var is not None:  # only the changed fields are new arrays; the rest is shared
            changed: dict[str, Any] = {}
            for key in var.shape:
                coll, _, fld = key.partition(".")
                base = changed.get(coll, events[coll])
                new = ev(pipe.exprs[("variations", vname, "shape", key)], events[coll])
                actual = self.notes[label].get(("shape", vname, key), fld)
                changed[coll] = ak.with_field(base, new, actual)
            ev.env.update(changed)
        for name, base, cut in pipe.objects():
            coll = ev.env[base] if base in ev.env else events[base]
            ev.env[name] = coll if cut is None else coll[ak.fill_none(ev(cut, coll), False)]
        w_all = np.ones(n)
        if spec.datasets[label].weight is not None:
            w_all = _numbers(ev(pipe.exprs[("datasets", label, "weight")]), n)
        ev.sumw = w_all.sum()
        mask = np.ones(n, dtype=bool)
        for step in spec.selection.events:
            mask &= _mask(ev(pipe.exprs[("selection", "events", step)]), n)
            cutflow[step] = int(mask.sum())
        ev.select(mask)
        nsel = int(mask.sum())
        for name, v in spec.variables.items():
            if isinstance(v, str):
                ev.env[name] = ev(pipe.exprs[("variables", name)])
            else:
                ev.env[name] = call_function(v.function, ev.events, dict(ev.env), pipe.funcs[("variables", name)])
        regions = {name: _mask(ev(pipe.exprs[("regions", name)]), nsel) for name in spec.regions}
        for name, m in regions.items():
            cutflow[f"region {name}"] = int(m.sum())
        return cutflow, w_all[mask], regions

    def _weight(self, ev: Evaluator, events, loc: tuple, n: int) -> np.ndarray:
        if loc in self.pipe.exprs:
            return _numbers(ev(self.pipe.exprs[loc]), n)
        ref = getattr(self.pipe.spec.variations[loc[1]], loc[2])
        return _numbers(call_function(ref.function, ev.events, dict(ev.env), self.pipe.funcs[loc]), n)

    def _io(self, events, label: str):
        """I/O only (``casa run --io-only``): read every column the pipeline needs, process nothing."""
        from coffea.nanoevents.methods.base import NanoEventsArray  # noqa: F401 - NanoEvents present

        nbytes = 0
        for col in self.columns.get(label, []):
            head, _, rest = col.partition("_")
            try:
                x = events[head][rest] if rest and head in ak.fields(events) and \
                    rest in ak.fields(events[head]) else events[col]
            except Exception:  # noqa: BLE001 - a counter (nJet) is read with its collection
                continue
            nbytes += ak.materialize(x).nbytes if hasattr(ak, "materialize") else ak.to_packed(x).nbytes
        return {"hists": self.empty(), "cutflow": {label: {CUTFLOW_ALL: len(events)}}, "sumw": {label: 0.0},
                "io_bytes": {label: nbytes}}

    def _fill(self, out: hist.Hist, h: Histogram, label: str, values: list, w: np.ndarray, sel: np.ndarray,
              extra: dict | None = None):
        n = len(sel)
        arrays = [ak.Array(np.broadcast_to(np.asarray(v, dtype=float), n)) if np.isscalar(v) else v
                  for v in values]
        arrays = [a[sel] for a in arrays] + [ak.Array(np.broadcast_to(w, n)[sel])]
        if any(a.ndim > 1 for a in arrays):
            arrays = [ak.flatten(a, axis=1) for a in ak.broadcast_arrays(*arrays)]
        ok = np.ones(len(arrays[-1]), dtype=bool)
        for a in arrays[:-1]:
            ok &= ~ak.to_numpy(ak.is_none(a))
        cols = [ak.to_numpy(ak.fill_none(a, 0))[ok] for a in arrays]
        fill = {a.name: c for a, c in zip(h.axes, cols[:-1])}
        if self.weighted:
            fill["weight"] = cols[-1]
        out.fill(dataset=label, **(extra or {}), **fill)

    def scales(self, sumw: dict[str, float], cutflow: dict[str, dict]) -> dict[str, float]:
        """label -> factor applied to its histograms (1.0 for data)."""
        out = {}
        for label in self.pipe.spec.datasets:
            if label not in self.norms:
                out[label] = 1.0
                continue
            factor, denom = self.norms[label]
            denom = denom if denom is not None else sumw.get(label, 0.0)
            out[label] = factor / denom if denom else 0.0
        return out

    def postprocess(self, accumulator):
        return self.finalize(accumulator) if self.auto_finalize else accumulator

    def finalize(self, accumulator):
        """Normalise each dataset's slice; drop the dataset axis where ``by_dataset: false``."""
        scales = self.scales(accumulator.get("sumw", {}), accumulator.get("cutflow", {}))
        hists = {}
        for name, h in accumulator.get("hists", {}).items():
            view = h.view(flow=True)
            for label, s in scales.items():
                if s == 1.0:
                    continue
                i = h.axes["dataset"].index(label)
                if self.weighted:
                    view.value[i] *= s
                    view.variance[i] *= s * s
                else:
                    view[i] *= s
            if self.pipe.varied:
                h = self.by_process(name, h)
                first = "process"
            else:
                first = "dataset"
            hists[name] = h if self.pipe.spec.histograms[name].by_dataset else h[{first: sum}]
        out = {**accumulator, "hists": hists, "scales": scales}
        if self.pipe.varied:
            out["combos"] = self.combos()
        return out

    def combos(self) -> list[tuple[str, str]]:
        """The (process, variation) cells that something fills, in axis order (the AGC's histograms)."""
        pipe, cells = self.pipe, set()
        for label, d in pipe.spec.datasets.items():
            proc = pipe.process_of(label)
            if d.variation:
                cells.add((proc, d.variation))
                continue
            cells.add((proc, "nominal"))
            for n, v in pipe.variations_for(label):
                cells.update((proc, x) for x in v.names(n))
        if pipe.spec.pseudodata is not None:
            cells.add(("pseudodata", "nominal"))
        names = pipe.variation_names()
        return sorted(cells, key=lambda c: (pipe.processes().index(c[0]), names.index(c[1])))

    def by_process(self, name: str, h: hist.Hist) -> hist.Hist:
        """The dataset axis -> a process axis: a sample variation fills its process's variation."""
        pipe, spec = self.pipe, self.pipe.spec
        hs = spec.histograms[name]
        variations = self.hist_variations(hs)
        out = make_histogram(hs, pipe.processes(), self.weighted, variations, first="process")
        src, dst = h.view(flow=True), out.view(flow=True)
        fields = src.dtype.names or (None,)
        procs = list(out.axes["process"])
        for label, d in spec.datasets.items():
            i, j = h.axes["dataset"].index(label), procs.index(pipe.process_of(label))
            for f in fields:
                a, b = (src[f], dst[f]) if f else (src, dst)
                if variations is None:
                    b[j] += a[i]
                elif d.variation:
                    k = list(out.axes["variation"]).index(d.variation)
                    b[j, k] += a[i, k]
                else:
                    for v in pipe.variation_names():
                        if v in {x.variation for x in spec.datasets.values() if x.variation}:
                            continue
                        k = list(out.axes["variation"]).index(v)
                        b[j, k] += a[i, k]
        if spec.pseudodata is not None:
            terms = ([(p_, "nominal", 1.0) for p_ in procs if p_ != "pseudodata"] if spec.pseudodata == "nominal"
                     else [(t.process, t.variation, t.factor) for t in spec.pseudodata])
            j = procs.index("pseudodata")
            for f in fields:
                b = dst[f] if f else dst
                for proc, var, factor in terms:
                    i = procs.index(proc)
                    if variations is None:
                        b[j] += b[i] * (factor * factor if f == "variance" else factor)
                    else:
                        k, k0 = list(out.axes["variation"]).index(var), list(out.axes["variation"]).index("nominal")
                        b[j, k0] += b[i, k] * (factor * factor if f == "variance" else factor)
        return out


def _numbers(v, n: int) -> np.ndarray:
    if np.isscalar(v):
        return np.full(n, float(v))
    return ak.to_numpy(ak.fill_none(v, 0.0)).astype(np.float64)
