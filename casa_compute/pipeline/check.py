"""Static checks of a pipeline against one dataset's columns: names, fields, types, column list.

A type is ``(kind, depth, src)``: ``kind`` "value" or "record"; ``depth`` 0 per event, 1 per
object, 2 per member of a combination, -1 for a constant; ``src`` the NanoAOD collection a record
comes from (``"p4"`` for a four-momentum sum, ``"combo:Jet"`` for combinations of jets). Every
error is located in the spec. The same pass collects the exact branches the pipeline reads and the
per-dataset resolution of aliases; :mod:`.pushdown` turns the event cuts it can express into
casa's flat filter language (a looser but exact pre-filter).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

from casa_data.errors import close_matches
from casa_data.expr.core import MATH, REDUCERS

from .expr import Expr
from .spec import Pipeline

__all__ = ["T", "Schema", "Checker", "P4_FIELDS"]

P4 = ("pt", "eta", "phi", "mass")
P4_FIELDS = P4 + ("energy", "px", "py", "pz", "p")
_MATH = set(MATH)
_REDUCE = set(REDUCERS)


@dataclass(frozen=True)
class T:
    kind: str          # "value" | "record"
    depth: int         # -1 constant, 0 per event, 1 per object, 2 per combination member
    src: str = ""      # record: collection name, "p4" or "combo:<collection>"

    def __str__(self) -> str:
        per = {-1: "a constant", 0: "one per event", 1: "one per object", 2: "one per combination member"}
        what = f"{self.src} objects" if self.kind == "record" else "values"
        return f"{what} ({per.get(self.depth, f'depth {self.depth}')})"


VALUE0 = T("value", 0)


@dataclass
class Schema:
    """NanoAOD layout from flat column names: ``nX`` + ``X_*`` are collections, ``X_*`` alone records."""

    collections: dict[str, set[str]] = field(default_factory=dict)
    singletons: dict[str, set[str]] = field(default_factory=dict)
    flat: set[str] = field(default_factory=set)

    @classmethod
    def from_columns(cls, columns) -> Schema:
        cols = set(columns)
        s = cls()
        for c in cols:
            prefix, sep, rest = c.partition("_")
            if sep and rest:
                (s.collections if f"n{prefix}" in cols else s.singletons).setdefault(prefix, set()).add(rest)
            else:
                s.flat.add(c)
        return s


class Checker:
    """Types every expression of ``pipe`` against ``schema``; collects columns and alias choices."""

    def __init__(self, pipe: Pipeline, schema: Schema, label: str = "", dataset: str = ""):
        self.pipe, self.schema, self.dataset, self.dataset_label = pipe, schema, dataset, label
        self.spec = pipe.spec
        self.columns: set[str] = set()
        # (expr key, line, col) -> field read (aliases resolved, context fields); + "d" -> list depth
        self.notes: dict[tuple, Any] = {}
        self.env: dict[str, T] = {}
        self.chains: dict[str, tuple[str, list[Expr]]] = {}  # object -> (collection, cuts in order)
        self.varied: set[str] = set()  # branches a shape variation changes (Jet_pt)
        self._corr = None

    def corrections(self):
        if self._corr is None:
            from .variations import Corrections

            self._corr = Corrections(self.pipe.corrections)
        return self._corr

    def shapes(self) -> None:
        """Shape variations: ``Collection.field: expression`` over the collection's own fields."""
        for vname, v in self.spec.variations.items():
            for key in v.shape or {}:
                e = self.pipe.exprs[("variations", vname, "shape", key)]
                coll, _, fld = key.partition(".")
                if coll not in self.schema.collections:
                    hint = close_matches(coll, list(self.schema.collections))
                    raise e.where.error(f"{coll!r} is not a collection of {self.dataset or 'the input'}"
                                        + (f"; did you mean {', '.join(map(repr, hint))}?" if hint else ""))
                bt = T("record", 1, coll)
                actual = self.alias(bt, fld) or fld
                if actual not in self.schema.collections[coll]:
                    hint = close_matches(fld, sorted(self.schema.collections[coll]))
                    raise e.where.error(f"{coll} has no field {fld!r} in {self.dataset or 'the input'}"
                                        + (f"; did you mean {', '.join(map(repr, hint))}?" if hint else ""))
                self.columns.update({f"n{coll}", f"{coll}_{actual}"})
                t = self.check(e, e.tree, bt)
                if t.kind != "value" or t.depth > 1:
                    raise e.fail(None, f"a shape variation of {key} must give one number per {coll} object, "
                                       f"but this gives {t}")
                self.varied.add(f"{coll}_{actual}")
                self.notes[("shape", vname, key)] = actual

    def weights(self) -> None:
        """Weight variations: one number per selected event (after the variables)."""
        for vname, v in self.spec.variations.items():
            if v.datasets is not None and self.dataset_label and self.dataset_label not in v.datasets:
                continue
            for key in ("weight", "up", "down"):
                x = getattr(v, key)
                if isinstance(x, str):
                    e = self.pipe.exprs[("variations", vname, key)]
                    t = self.check(e, e.tree)
                    if t.kind != "value" or t.depth > 0:
                        self.expect(e, t, 0, "a weight", "one number per event, e.g. 1 + 0.075 * Jet[0].pt / 50")
                elif x is not None:
                    self.columns.update(x.columns)

    # -- the whole pipeline -----------------------------------------------------------------------
    def run(self) -> Checker:
        p, spec = self.pipe, self.spec
        self.shapes()
        for name, base, cut in p.objects():
            d = spec.selection.objects[name]
            where = ("selection", "objects", name) if isinstance(d, str) else ("selection", "objects", name, "from")
            bt = self.env.get(base) or (T("record", 1, base) if base in self.schema.collections else None)
            if bt is None or bt.kind != "record" or bt.depth != 1:
                known = list(self.env) + list(self.schema.collections)
                hint = close_matches(base, known)
                raise p.error(where, f"{base!r} is not a collection of this input ({self.dataset})"
                              + (f"; did you mean {', '.join(map(repr, hint))}?" if hint else ""))
            self.columns.add(f"n{bt.src}")
            if cut is not None:
                self.expect(cut, self.check(cut, cut.tree, bt), bt.depth, "an object cut",
                            f"one true/false per {base} object, e.g. pt > 20")
            chain = self.chains.get(base, (bt.src, []))
            self.chains[name] = (chain[0], chain[1] + ([cut] if cut is not None else []))
            self.env[name] = bt
        for name in spec.selection.events:
            e = p.exprs[("selection", "events", name)]
            self.expect(e, self.check(e, e.tree), 0, "an event cut",
                        "one true/false per event, e.g. count(Muon) >= 2")
        for label, d in spec.datasets.items():
            if d.weight is not None and label == self.dataset_label:
                e = p.exprs[("datasets", label, "weight")]
                self.expect(e, self.check(e, e.tree), 0, "a weight", "one number per event, e.g. genWeight")
        for name, var in spec.variables.items():
            if not isinstance(var, str):  # user code: one number per event, reads its columns
                self.columns.update(var.columns)
                self.env[name] = VALUE0
                continue
            e = p.exprs[("variables", name)]
            t = self.check(e, e.tree)
            if t.depth < 0:
                raise e.fail(None, "a variable must depend on the events (use parameters for constants)")
            self.env[name] = t
        self.weights()
        for name in spec.regions:
            e = p.exprs[("regions", name)]
            self.expect(e, self.check(e, e.tree), 0, "a region", "one true/false per event")
        for hname, h in spec.histograms.items():
            if h.weight is not None:
                e = p.exprs[("histograms", hname, "weight")]
                self.expect(e, self.check(e, e.tree), 0, "a weight", "one number per event")
            for i, ax in enumerate(h.axes):
                e = p.exprs[("histograms", hname, "axes", i, "expr" if ax.expr is not None else "name")]
                t = self.check(e, e.tree)
                if t.kind != "value" or t.depth not in (0, 1):
                    raise e.fail(None, f"an axis is filled with numbers, one per event or per object; "
                                       f"this gives {t}")
        # NanoEvents builds candidates from pt, eta, phi, mass, charge: a reduced copy of the
        # data (Skyhook, ServiceX) must keep them for every collection the pipeline touches.
        for name, fields in self.schema.collections.items():
            if f"n{name}" in self.columns:
                self.columns.update(f"{name}_{f}" for f in P4 + ("charge",) if f in fields)
        return self

    def expect(self, e: Expr, t: T, depth: int, what: str, hint: str) -> None:
        if t.kind != "value" or t.depth != depth:
            extra = ""
            if t.kind == "value" and t.depth > depth:
                extra = "; reduce it with any(...), all(...), count(...), or pick one with [0]"
            if t.depth < 0:
                extra = "; it does not depend on the events"
            raise e.fail(None, f"{what} must give {hint}, but this gives {t}{extra}")

    # -- one node ---------------------------------------------------------------------------------
    def check(self, e: Expr, node: ast.AST, ctx: T | None = None) -> T:
        """The type of ``node``; ``ctx`` is the record type whose fields bare names refer to."""
        if isinstance(node, ast.Constant):
            return T("value", -1)
        if isinstance(node, ast.Name):
            return self.name(e, node, ctx)
        if isinstance(node, ast.Attribute):
            return self.attr(e, node, self.check(e, node.value, ctx), node.attr)
        if isinstance(node, (ast.BoolOp, ast.Compare)):
            parts = node.values if isinstance(node, ast.BoolOp) else [node.left, *node.comparators]
            return T("value", max(self.value(e, p, ctx).depth for p in parts))
        if isinstance(node, ast.UnaryOp):
            return self.value(e, node.operand, ctx)
        if isinstance(node, ast.BinOp):
            a, b = self.check(e, node.left, ctx), self.check(e, node.right, ctx)
            if a.kind == b.kind == "record" and isinstance(node.op, ast.Add):
                self.p4(e, node.left, a)
                self.p4(e, node.right, b)
                return T("record", max(a.depth, b.depth), "p4")
            for side, t in ((node.left, a), (node.right, b)):
                if t.kind == "record":
                    raise e.fail(side, f"arithmetic needs numbers, but this is {t}; pick a field "
                                       "(e.g. .pt) or add two objects with + for their four-momentum sum")
            return T("value", max(a.depth, b.depth))
        if isinstance(node, ast.Subscript):
            return self.subscript(e, node, ctx)
        if isinstance(node, ast.Call):
            return self.call(e, node, ctx)
        raise e.fail(node, f"{type(node).__name__} is not allowed")  # the grammar rejected it already

    def value(self, e: Expr, node: ast.AST, ctx: T | None) -> T:
        t = self.check(e, node, ctx)
        if t.kind == "record":
            raise e.fail(node, f"expected numbers or true/false, but this is {t}; pick a field, e.g. .pt")
        return t

    def name(self, e: Expr, node: ast.Name, ctx: T | None) -> T:
        n = node.id
        if n in ("True", "False"):
            return T("value", -1)
        if ctx is not None and ctx.kind == "record":
            if n in self.fields(ctx) or self.alias(ctx, n) is not None:
                self.notes[_key(e, node)] = n  # a field of the context
                return self.attr(e, node, ctx, n)
        if n in self.env:
            return self.env[n]
        if n in self.spec.parameters:
            return T("value", -1)
        if n in self.schema.collections:
            self.columns.add(f"n{n}")
            return T("record", 1, n)
        if n in self.schema.singletons:
            return T("record", 0, n)
        if n in self.schema.flat:
            self.columns.add(n)
            return VALUE0
        if n in self.spec.variables:
            raise e.fail(node, f"variable {n!r} is computed after the event selection (or after this "
                               "variable): use it in a later variable, a region or a histogram")
        known = list(self.env) + list(self.spec.parameters) + list(self.schema.collections) + \
            list(self.schema.singletons) + sorted(self.schema.flat)
        if ctx is not None and ctx.kind == "record":
            known = sorted(self.fields(ctx)) + known
        hint = close_matches(n, known)
        where = f" nor a field of {ctx.src}" if ctx is not None and ctx.kind == "record" else ""
        raise e.fail(node, f"unknown name {n!r}: not a collection, column, object, variable or "
                           f"parameter of {self.dataset or 'the input'}{where}"
                           + (f"; did you mean {', '.join(map(repr, hint))}?" if hint else ""))

    # -- records ----------------------------------------------------------------------------------
    def base(self, t: T) -> str:
        return t.src[6:] if t.src.startswith("combo:") else t.src

    def fields(self, t: T) -> set[str]:
        if t.src == "p4":
            return set(P4_FIELDS)
        if t.src.startswith("combo:"):
            return set(P4_FIELDS) | {"members"}
        own = self.schema.collections.get(t.src) or self.schema.singletons.get(t.src) or set()
        return own | (set(P4_FIELDS) if set(P4) <= own else set())

    def alias(self, t: T, name: str) -> str | None:
        cands = self.spec.aliases.get(f"{t.src}.{name}")
        if cands is None or t.src == "p4" or t.src.startswith("combo:"):
            return None
        own = self.schema.collections.get(t.src) or self.schema.singletons.get(t.src) or set()
        return next((c for c in cands if c in own), "")

    def attr(self, e: Expr, node: ast.AST, t: T, name: str) -> T:
        if t.kind != "record":
            raise e.fail(node, f"{name!r}: only objects have fields, this is {t}")
        actual = self.alias(t, name)
        if actual == "":
            raise e.fail(node, f"alias {t.src}.{name} = {self.spec.aliases[f'{t.src}.{name}']}: none of "
                               f"these fields is in {self.dataset or 'the input'}; add the one it has")
        if actual:
            self.notes[_key(e, node)] = actual
            name = actual
        if name not in self.fields(t):
            hint = close_matches(name, sorted(self.fields(t)))
            raise e.fail(node, f"{t.src} has no field {name!r} in {self.dataset or 'the input'}"
                               + (f"; did you mean {', '.join(map(repr, hint))}?" if hint else ""))
        if t.src.startswith("combo:") and name == "members":
            return T("record", t.depth + 1, self.base(t))
        if t.src not in ("p4",) and not t.src.startswith("combo:"):
            if name in P4_FIELDS[4:]:
                self.p4(e, node, t)
            else:
                self.columns.add(f"{t.src}_{name}")
        return T("value", t.depth)

    def p4(self, e: Expr, node: ast.AST, t: T) -> None:
        """``t`` is used as a four-momentum: it needs pt, eta, phi, mass."""
        if t.src == "p4":
            return
        src = self.base(t)
        own = self.schema.collections.get(src) or self.schema.singletons.get(src) or set()
        if not set(P4) <= own:
            raise e.fail(node, f"{src} objects have no four-momentum (pt, eta, phi, mass) in "
                               f"{self.dataset or 'the input'}")
        self.columns.update(f"{src}_{f}" for f in P4)

    def subscript(self, e: Expr, node: ast.Subscript, ctx: T | None) -> T:
        t = self.check(e, node.value, ctx)
        if t.depth < 1:
            raise e.fail(node, f"[...] picks from a list per event, but this is {t}")
        self.notes[(*_key(e, node), "d")] = t.depth
        s = node.slice
        if isinstance(s, ast.Slice):
            return t
        if isinstance(s, ast.Constant) and type(s.value) is int:
            if s.value < 0:
                raise e.fail(s, "indices count from 0 (the leading object); negative ones are not allowed")
            return T(t.kind, t.depth - 1, t.src)
        inner = t if t.kind == "record" else None
        c = self.value(e, s, inner)
        if c.depth != t.depth:
            raise e.fail(s, f"the cut inside [...] must give one true/false per element ({T('value', t.depth)}), "
                            f"but gives {c}")
        return t

    def call(self, e: Expr, node: ast.Call, ctx: T | None) -> T:
        f = node.func.id  # type: ignore[attr-defined]
        args = node.args
        if f in _MATH:
            return T("value", self.value(e, args[0], ctx).depth)
        if f == "where":
            return T("value", max(self.value(e, a, ctx).depth for a in args))
        if f in _REDUCE:
            t = self.check(e, args[0], ctx)
            if t.depth < 1:
                raise e.fail(node, f"{f}() reduces a list per event (e.g. {f}(Jet.pt > 30)), "
                                   f"but its argument is {t}")
            if t.kind == "record" and f != "count":
                raise e.fail(args[0], f"{f}() needs numbers, e.g. {f}(Jet.pt); this is {t}")
            self.notes[(*_key(e, node), "d")] = t.depth
            return T("value", t.depth - 1)
        if f == "combinations":
            t = self.check(e, args[0], ctx)
            if t.kind != "record" or t.depth != 1 or t.src in ("p4",) or t.src.startswith("combo:"):
                raise e.fail(args[0], f"combinations() needs a collection (e.g. Jet), got {t}")
            self.p4(e, args[0], t)
            return T("record", 1, f"combo:{t.src}")
        if f == "best":
            t = self.check(e, args[0], ctx)
            if t.kind != "record" or t.depth < 1:
                raise e.fail(args[0], f"best() picks from a collection, got {t}")
            k = self.value(e, args[1], t)
            if k.depth != t.depth:
                raise e.fail(args[1], f"best()'s key must give one number per object, got {k}")
            self.notes[(*_key(e, node), "d")] = t.depth
            return T("record", t.depth - 1, t.src)
        if f == "delta_r":
            ts = [self.check(e, a, ctx) for a in args]
            for a, t in zip(args, ts):
                if t.kind != "record":
                    raise e.fail(a, f"delta_r() needs objects, got {t}")
                self.p4(e, a, t)
            return T("value", max(t.depth for t in ts))
        if f == "normal":
            for a in args:
                self.value(e, a, ctx)
            self.columns.update(c for c in ("run", "luminosityBlock", "event") if c in self.schema.flat)
            return T("value", ctx.depth if ctx is not None and ctx.kind == "record" else 0)
        if f == "corr":
            name = e.text_of(args[0])
            ins = self.corrections().inputs(name) if name is not None else None
            if ins is None:
                known = sorted(self.corrections().by_name()) if self.pipe.corrections else []
                raise e.fail(args[0], f"unknown correction {name!r}; " + (
                    f"corrections: {', '.join(known)}" if known else "declare its file under corrections:"))
            if len(args) - 1 != len(ins):
                raise e.fail(node, f"correction {name!r} takes {len(ins)} input(s) "
                                   f"({', '.join(n for n, _ in ins)}), got {len(args) - 1}")
            depth = -1
            for a, (iname, itype) in zip(args[1:], ins):
                is_text = e.text_of(a) is not None
                if (itype == "string") != is_text:
                    raise e.fail(a, f"input {iname!r} of {name!r} is {'text' if itype == 'string' else 'a number'}")
                if not is_text:
                    depth = max(depth, self.value(e, a, ctx).depth)
            return T("value", depth)
        raise e.fail(node, f"unknown function {f!r}")  # pragma: no cover - grammar rejected it


def _key(e: Expr, node: ast.AST) -> tuple:
    """Where a note about ``node`` is kept: the expression and the node's exact span."""
    return (e.key, node.lineno, node.col_offset, node.end_col_offset)  # type: ignore[attr-defined]
