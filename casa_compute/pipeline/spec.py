"""The pipeline spec: a YAML file validated by pydantic, errors located at file:line:column.

Schema (every section but ``name``, ``datasets`` and ``histograms`` is optional)::

    name: zmumu                        # output directory name; letters, digits, - _ .
    description: ...
    lumi: 11.6                         # /pb, for datasets with a cross-section
    datasets:                          # label (the histogram category) -> catalog dataset
      dy: {dataset: cms/nano-dy, xsec: 6077.22, weight: genWeight, normalize: weights}
      data: {dataset: cms/dimuon-2012}
    delivery: {via: auto, cluster: null, chunksize: 100000, catalog: [more.yaml]}
    aliases:                           # a field name standing for the first one present
      Jet.btag: [btagCSVV2, btagDeepFlavB]
    parameters: {btag_cut: 0.5}        # constants usable in expressions
    selection:
      objects:                         # in order; a name is the filtered collection afterwards
        Muon: pt > 20 and abs(eta) < 2.4
        BJet: {from: Jet, cut: btag > btag_cut}
      events:                          # in order; each is a step of the cutflow
        two muons: count(Muon) >= 2
    variables:                         # computed on the selected events, in order
      mll: (Muon[0] + Muon[1]).mass
    regions: {4j1b: count(BJet) == 1}  # event masks after the selection
    histograms:
      mll:
        region: null                   # or a region name
        weight: null                   # an extra per-event weight expression
        axes: [{name: mll, bins: 60, start: 60, stop: 120, label: "m [GeV]"}]
    outputs: {directory: casa-output/zmumu, formats: [pickle, root, png, json]}

Axis types: ``regular`` (bins, start, stop), ``variable`` (edges), ``integer`` (start, stop),
``category`` (integer categories); the type is inferred from the fields given. ``expr`` (default: the
axis name) is the expression filled. Each histogram gets a first ``dataset`` category axis
unless ``by_dataset: false``. Normalisation: ``xsec * lumi / nevents`` (``nevents`` defaults to
the events of the whole dataset; with ``normalize: weights`` the sum of the dataset's weight
expression over all its events), applied to the merged histograms; data (no ``xsec``) is not scaled.
The dataset ``weight`` is computed on all events after the object cuts (it may use objects, not
variables).

Systematic variations (see :mod:`.variations`)::

    corrections: [corrections.json]    # correctionlib files, relative to the spec: corr("name", ...)
    datasets:
      ttbar_me: {dataset: ..., process: ttbar, variation: ME_var}   # a sample variation
    variations:
      pt_scale_up: {shape: {Jet.pt: pt * 1.03}}              # re-runs cuts, selection, variables
      pt_res_up: {shape: {Jet.pt: pt * normal(1, 0.05)}}     # seeded by the event identity
      btag_var_0: {up: 1 + 0.075 * Jet[0].pt / 50, down: 1 - 0.075 * Jet[0].pt / 50}
      scale_var: {up: corr("event_systematics", "scale_var", "up", Jet[0].pt), down: ..., datasets: [wjets]}
    pseudodata: [{process: ttbar, variation: ME_var, factor: 0.5}, {process: wjets}]

With variations (or processes) declared, every histogram has a ``process`` and a ``variation``
category axis (``nominal`` first) unless ``by_variation: false``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from casa_data.errors import close_matches
from casa_data.yamlspec import load_yaml, locate

from .expr import Expr, PipelineError, Where, located
from .varspec import FunctionRef, PseudoTerm, Variation

__all__ = ["PipelineSpec", "Pipeline", "load_spec", "DatasetEntry", "Histogram", "Axis"]

_IDENT = r"^[A-Za-z][A-Za-z0-9_]*$"
# Histogram names become file names (``<name>.png``) in the output directory: no path separators.
HIST_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"
MAX_BINS = 1_000_000          # per axis
MAX_CELLS = 10_000_000        # per histogram (all axes, flow bins included, before the dataset axis)


def _registered_path(v: str) -> str:
    """``v`` if it is ``auto`` or a registered delivery path (built-in, registered, entry point)."""
    from casa_data.paths import available_paths

    names = available_paths()
    if v != "auto" and v not in names:
        raise ValueError(f"Input should be 'auto' or a registered delivery path ({', '.join(names)}); "
                         f"got {v!r}")
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DatasetEntry(_Strict):
    """One input: a catalog dataset and its normalisation."""

    dataset: str = Field(min_length=1)
    xsec: float | None = Field(None, gt=0, description="cross-section in pb")
    lumi: float | None = Field(None, gt=0, description="luminosity in /pb (default: the top-level lumi)")
    nevents: int | None = Field(None, gt=0, description="normalisation denominator (default: all events)")
    weight: str | None = Field(None, description="per-event weight expression, e.g. genWeight")
    normalize: Literal["events", "weights"] = Field(
        "events", description="divide xsec * lumi by the events (or the sum of weights) of the dataset")
    via: str | None = Field(None, description="delivery path for this dataset only")
    process: str | None = Field(None, pattern=_IDENT, description="the process it stands for (default: the label)")
    variation: str | None = Field(None, pattern=_IDENT, description="a sample variation of its process "
                                  "(e.g. ME_var); default: the nominal sample")

    @field_validator("via")
    @classmethod
    def _registered(cls, v: str | None) -> str | None:
        return None if v is None else _registered_path(v)


class Delivery(_Strict):
    via: str = Field("auto", min_length=1, description="auto, or a registered delivery path (checked "
                     "against its capabilities when the pipeline runs)")

    @field_validator("via")
    @classmethod
    def _registered(cls, v: str) -> str:
        return _registered_path(v)

    cluster: str | None = Field(None, description="None: in-process; or a casa_compute cluster kind")
    chunksize: int = Field(100_000, gt=0)
    catalog: list[str] = Field(default_factory=list, description="extra catalogs, relative to the spec")

    @field_validator("catalog", mode="before")
    @classmethod
    def _one(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class ObjectDef(_Strict):
    from_: str = Field(alias="from", pattern=_IDENT)
    cut: str | None = None


class Selection(_Strict):
    objects: dict[str, str | ObjectDef] = Field(default_factory=dict)
    events: dict[str, str] = Field(default_factory=dict)


class Axis(_Strict):
    name: str = Field(pattern=_IDENT)
    expr: str | None = None
    type: Literal["regular", "variable", "integer", "category"] | None = None
    bins: int | None = Field(None, gt=0, le=MAX_BINS)
    start: float | None = Field(None, allow_inf_nan=False)
    stop: float | None = Field(None, allow_inf_nan=False)
    edges: list[float] | None = Field(None, min_length=2, max_length=MAX_BINS + 1)
    categories: list[StrictInt] | None = Field(None, min_length=1, max_length=MAX_BINS)
    label: str | None = None
    flow: bool = True

    @model_validator(mode="after")
    def _kind(self) -> Axis:
        if self.type is None:
            self.type = ("variable" if self.edges is not None else "category" if self.categories is not None
                         else "regular" if self.bins is not None else "integer")
        need = {"regular": ("bins", "start", "stop"), "variable": ("edges",), "integer": ("start", "stop"),
                "category": ("categories",)}[self.type]
        missing = [f for f in need if getattr(self, f) is None]
        if missing:
            raise ValueError(f"a {self.type} axis needs {', '.join(need)} (missing: {', '.join(missing)})")
        if self.start is not None and self.stop is not None and not self.start < self.stop:
            raise ValueError(f"start ({self.start}) must be below stop ({self.stop})")
        if self.edges is not None and any(b <= a for a, b in zip(self.edges, self.edges[1:])):
            raise ValueError("edges must increase strictly")
        if self.type == "integer" and self.ncells() > MAX_BINS + 2:
            raise ValueError(f"an integer axis from {self.start} to {self.stop} has more than {MAX_BINS} bins")
        return self

    def ncells(self) -> int:
        """Bins of this axis, flow bins included (the memory a histogram needs along it)."""
        flow = 2 if self.flow else 0
        if self.type == "regular":
            return int(self.bins or 0) + flow
        if self.type == "variable":
            return len(self.edges or ()) - 1 + flow
        if self.type == "integer":
            return int(self.stop or 0) - int(self.start or 0) + flow
        return len(self.categories or ()) + 1


class Histogram(_Strict):
    axes: list[Axis] = Field(min_length=1)
    region: str | None = None
    weight: str | None = None
    by_dataset: bool = True
    by_variation: bool = True
    title: str | None = None

    @model_validator(mode="after")
    def _size(self) -> Histogram:
        cells = 1
        for a in self.axes:
            cells *= max(a.ncells(), 1)
            if cells > MAX_CELLS:
                raise ValueError(f"the axes make more than {MAX_CELLS:,} bins (at most {MAX_BINS:,} per axis); "
                                 "use fewer bins")
        return self


class Outputs(_Strict):
    directory: str | None = None
    formats: list[Literal["pickle", "root", "png", "json"]] = Field(
        default_factory=lambda: ["pickle", "root", "png", "json"])


class PipelineSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    lumi: float | None = Field(None, gt=0)
    datasets: dict[str, DatasetEntry] = Field(min_length=1)
    delivery: Delivery = Field(default_factory=Delivery)
    aliases: dict[str, list[str]] = Field(default_factory=dict)
    parameters: dict[str, StrictBool | StrictInt | StrictFloat] = Field(default_factory=dict)
    selection: Selection = Field(default_factory=Selection)
    variables: dict[str, str | FunctionRef] = Field(default_factory=dict)
    regions: dict[str, str] = Field(default_factory=dict)
    histograms: dict[str, Histogram] = Field(min_length=1)
    outputs: Outputs = Field(default_factory=Outputs)
    corrections: list[str] = Field(default_factory=list, description="correctionlib JSON files")
    variations: dict[str, Variation] = Field(default_factory=dict)
    pseudodata: list[PseudoTerm] | Literal["nominal"] | None = None

    @field_validator("corrections", mode="before")
    @classmethod
    def _one_file(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


@dataclass
class Pipeline:
    """A loaded spec: the model, its parsed expressions (by spec location) and where it came from."""

    spec: PipelineSpec
    path: Path
    node: yaml.Node | None
    exprs: dict[tuple, Expr] = field(default_factory=dict)
    funcs: dict[tuple, Where] = field(default_factory=dict)         # user functions: where in the spec
    corrections: dict[str, str] = field(default_factory=dict)       # correctionlib file -> its JSON text

    def error(self, loc: tuple, message: str) -> PipelineError:
        """A :class:`PipelineError` located at the spec element ``loc``."""
        pos = locate(self.node, loc)
        return PipelineError(located(self.path, *(pos or (None, None)), message,
                                     ".".join(str(x) for x in loc)))

    @property
    def hash(self) -> str:
        """A stable hash of the validated spec (key order kept: order is meaningful)."""
        text = json.dumps(self.spec.model_dump(mode="json", by_alias=True), sort_keys=False)
        return hashlib.sha256(text.encode()).hexdigest()

    def __getstate__(self) -> dict:  # workers need the expressions, not the YAML node tree
        return {**self.__dict__, "node": None}

    def catalogs(self) -> list[str]:
        return [os.fspath((self.path.parent / c).resolve()) for c in self.spec.delivery.catalog]

    @property
    def varied(self) -> bool:
        """Histograms get process and variation axes (variations or sample variations declared)."""
        s = self.spec
        return bool(s.variations) or any(d.process or d.variation for d in s.datasets.values())

    def process_of(self, label: str) -> str:
        return self.spec.datasets[label].process or label

    def processes(self) -> list[str]:
        out = list(dict.fromkeys(self.process_of(lab) for lab in self.spec.datasets))
        return out + (["pseudodata"] if self.spec.pseudodata is not None else [])

    def variation_names(self) -> list[str]:
        """The variation axis: nominal, the declared variations, then the sample variations."""
        out = ["nominal"]
        for name, v in self.spec.variations.items():
            out += v.names(name)
        out += [d.variation for d in self.spec.datasets.values() if d.variation]
        return list(dict.fromkeys(out))

    def variations_for(self, label: str) -> list[tuple[str, Any]]:
        """``(name, Variation)`` run on dataset ``label`` (none for a sample variation)."""
        if self.spec.datasets[label].variation:
            return []
        return [(n, v) for n, v in self.spec.variations.items() if v.datasets is None or label in v.datasets]

    def objects(self) -> list[tuple[str, str, Expr | None]]:
        """``(name, from, cut)`` of every object definition, in order."""
        out = []
        for name, d in self.spec.selection.objects.items():
            base = name if isinstance(d, str) else d.from_
            out.append((name, base, self.exprs.get(("selection", "objects", name)
                                                   if isinstance(d, str) else ("selection", "objects", name, "cut"))))
        return out


def _node_at(node: yaml.Node | None, loc: tuple) -> yaml.Node | None:
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == str(key)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            return None
    return node


def _where(pipe: Pipeline, loc: tuple) -> Where:
    node = _node_at(pipe.node, loc)
    name = ".".join(str(x) for x in loc)
    if node is None:
        return Where(pipe.path, field=name)
    return Where(pipe.path, node.start_mark.line + 1, node.start_mark.column + 1, node.style or None, name)


def _expr(pipe: Pipeline, loc: tuple, text: str) -> None:
    pipe.exprs[loc] = Expr(text, _where(pipe, loc))


def load_spec(path: str | os.PathLike) -> Pipeline:
    """Read and validate a pipeline spec; every error names ``file:line:col`` and the field."""
    path = Path(path).resolve()
    if not path.is_file():
        raise PipelineError(f"{path}: no such pipeline spec")
    data, node = load_yaml(path, error=PipelineError)
    if not isinstance(data, dict):
        raise PipelineError(f"{path}:1:1: a pipeline spec is a mapping with name, datasets, histograms, ...")
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as err:
        msgs = []
        for e in err.errors():
            pos = locate(node, tuple(e["loc"])) or (None, None)
            parent = _node_at(node, tuple(e["loc"])[:-1])
            if e["type"] == "extra_forbidden" and isinstance(parent, yaml.MappingNode):
                key = next((k for k, _ in parent.value if k.value == str(e["loc"][-1])), None)
                pos = (key.start_mark.line + 1, key.start_mark.column + 1) if key is not None else pos
            msgs.append(located(path, *pos, e["msg"], ".".join(str(x) for x in e["loc"])))
        raise PipelineError("\n".join(msgs)) from None
    pipe = Pipeline(spec, path, node)
    _check_names(pipe)
    for label, d in spec.datasets.items():
        if d.weight is not None:
            _expr(pipe, ("datasets", label, "weight"), d.weight)
    for name, d in spec.selection.objects.items():
        if isinstance(d, str):
            _expr(pipe, ("selection", "objects", name), d)
        elif d.cut is not None:
            _expr(pipe, ("selection", "objects", name, "cut"), d.cut)
    for name, text in spec.selection.events.items():
        _expr(pipe, ("selection", "events", name), text)
    for name, text in spec.variables.items():
        if isinstance(text, str):
            _expr(pipe, ("variables", name), text)
        else:
            pipe.funcs[("variables", name)] = _where(pipe, ("variables", name, "function"))
    for name, v in spec.variations.items():
        for key, text in (v.shape or {}).items():
            _expr(pipe, ("variations", name, "shape", key), text)
        for key in ("weight", "up", "down"):
            if isinstance(getattr(v, key), str):
                _expr(pipe, ("variations", name, key), getattr(v, key))
            elif getattr(v, key) is not None:
                pipe.funcs[("variations", name, key)] = _where(pipe, ("variations", name, key, "function"))
    for i, f in enumerate(spec.corrections):
        try:
            pipe.corrections[f] = (path.parent / f).read_text()
        except OSError as err:
            raise pipe.error(("corrections", i), f"cannot read the correction file: {err}") from None
    for name, text in spec.regions.items():
        _expr(pipe, ("regions", name), text)
    for hname, h in spec.histograms.items():
        if h.weight is not None:
            _expr(pipe, ("histograms", hname, "weight"), h.weight)
        for i, ax in enumerate(h.axes):
            loc = ("histograms", hname, "axes", i, "expr" if ax.expr is not None else "name")
            _expr(pipe, loc, ax.expr if ax.expr is not None else ax.name)
    return pipe


def _check_names(pipe: Pipeline) -> None:
    """Cross-references that need no data: regions, names, normalisation, aliases."""
    spec = pipe.spec
    seen: dict[str, str] = {}
    for label, d in spec.datasets.items():
        if d.dataset in seen:
            raise pipe.error(("datasets", label, "dataset"),
                             f"dataset {d.dataset!r} is already used by {seen[d.dataset]!r}; list it once")
        seen[d.dataset] = label
        if d.normalize == "weights" and d.weight is None:
            raise pipe.error(("datasets", label, "normalize"),
                             "normalize: weights needs a weight expression (e.g. weight: genWeight)")
        if d.xsec is not None and d.lumi is None and spec.lumi is None:
            raise pipe.error(("datasets", label, "xsec"),
                             "a cross-section needs a luminosity: set lumi (in /pb) here or at the top level")
    for key in spec.aliases:
        if key.count(".") != 1 or not all(part.isidentifier() for part in key.split(".")):
            raise pipe.error(("aliases", key), f"an alias is written Collection.field, not {key!r}")
    groups = [("parameters", spec.parameters), ("selection.objects", spec.selection.objects),
              ("variables", spec.variables)]
    owner: dict[str, str] = {}
    for section, names in groups:
        for name in names:
            loc = tuple(section.split(".")) + (name,)
            if not name.isidentifier() or name.startswith("_"):
                raise pipe.error(loc, f"{name!r} is not a valid name (letters, digits, _; not starting with _)")
            if name in owner and not (section == "selection.objects" and owner[name] == section):
                raise pipe.error(loc, f"{name!r} is already defined in {owner[name]}; pick another name")
            owner[name] = section
    _check_variations(pipe)
    for hname, h in spec.histograms.items():
        if not re.match(HIST_NAME, hname) or ".." in hname:
            top = _node_at(pipe.node, ("histograms",))
            key = next((k for k, _ in top.value if k.value == hname), None) if isinstance(top, yaml.MappingNode) \
                else None
            pos = (key.start_mark.line + 1, key.start_mark.column + 1) if key is not None else (None, None)
            raise PipelineError(located(pipe.path, *pos, f"histogram name {hname!r} is not allowed: it names "
                                        "the output files, so letters, digits and _ . + - only (no '/', no '..')",
                                        f"histograms.{hname}"))
        if h.region is not None and h.region not in spec.regions:
            hint = close_matches(h.region, spec.regions)
            raise pipe.error(("histograms", hname, "region"), f"unknown region {h.region!r}; "
                             + (f"did you mean {', '.join(map(repr, hint))}?" if hint else
                                f"regions defined: {', '.join(spec.regions) or 'none'}"))
        names = [a.name for a in h.axes]
        if h.by_dataset and "dataset" in names:
            raise pipe.error(("histograms", hname, "axes"), "the axis name 'dataset' is taken by the "
                             "dataset category axis (set by_dataset: false or rename the axis)")
        if len(set(names)) != len(names):
            raise pipe.error(("histograms", hname, "axes"), "axis names must be unique")


def _check_variations(pipe: Pipeline) -> None:
    spec = pipe.spec
    samples = {d.variation: lab for lab, d in spec.datasets.items() if d.variation}
    for name, v in spec.variations.items():
        if not re.match(_IDENT, name) or name == "nominal":
            raise pipe.error(("variations", name), f"{name!r} is not a valid variation name (letters, digits, _; "
                             "not 'nominal')")
        for out in v.names(name):
            if out in samples:
                raise pipe.error(("variations", name), f"variation {out!r} is also the sample variation of "
                                 f"dataset {samples[out]!r}; pick another name")
        for key in v.shape or {}:
            coll, _, fld = key.partition(".")
            if not (coll.isidentifier() and fld.isidentifier()):
                raise pipe.error(("variations", name, "shape", key),
                                 f"a shape variation changes Collection.field (e.g. Jet.pt), not {key!r}")
        for i, lab in enumerate(v.datasets or []):
            if lab not in spec.datasets:
                hint = close_matches(lab, spec.datasets)
                raise pipe.error(("variations", name, "datasets", i), f"unknown dataset {lab!r}"
                                 + (f"; did you mean {', '.join(map(repr, hint))}?" if hint else ""))
    if isinstance(spec.pseudodata, list):
        procs, names = pipe.processes(), pipe.variation_names()
        for i, t in enumerate(spec.pseudodata):
            if t.process not in procs:
                raise pipe.error(("pseudodata", i, "process"), f"unknown process {t.process!r} "
                                 f"(processes: {', '.join(procs)})")
            if t.variation not in names:
                raise pipe.error(("pseudodata", i, "variation"), f"unknown variation {t.variation!r}")
    for lab, d in spec.datasets.items():
        if d.variation and pipe.process_of(lab) == lab:
            raise pipe.error(("datasets", lab, "variation"), "a sample variation names its process "
                             "(process: ttbar)")
