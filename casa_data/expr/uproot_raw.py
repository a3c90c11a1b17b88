"""Cut strings of ServiceX ``uproot-raw`` queries, evaluated by casa's safe expression core.

The upstream uproot-raw transformer hands ``cut`` to uproot, which evaluates it with Python's
``eval`` and a table of awkward functions (``count_nonzero``, ``num``, ``sum``, ``any``, ...).
Here the same strings are parsed by :func:`~casa_data.expr.core.parse` (every limit, the
grammar of :data:`RAW_CUT`) and evaluated by an :class:`~casa_data.expr.evaluate.Evaluator`:
never ``eval``.

Differences kept small and explicit: reductions take ``axis=1`` or ``axis=-1`` (the per-event
list; the default when omitted), nothing else; ``count`` counts entries (awkward's ``ak.count``),
``count_nonzero`` counts true/non-zero values, ``num`` counts list entries.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from typing import Any

from ..errors import FilterError
from .core import MATH, ExprError, Language, parse
from .evaluate import Evaluator

__all__ = ["RawCut", "RAW_CUT", "RAW_REDUCERS"]

#: the reductions of the upstream transformer's function table that give one value per event
RAW_REDUCERS = ("count_nonzero", "num", "count", "sum", "nansum", "prod", "nanprod", "any", "all",
                "min", "nanmin", "max", "nanmax", "mean", "nanmean", "std", "nanstd", "var", "nanvar")
#: the cut language: columns, numbers, comparisons, arithmetic, & | ~ and/or/not, elementwise math
RAW_CUT = Language("an uproot-raw cut", {**{f: (1, 1) for f in MATH}, **{f: (1, 1) for f in RAW_REDUCERS}},
                   hint="branches, numbers, comparisons, arithmetic, & | ~, and the reductions "
                        + ", ".join(RAW_REDUCERS))
_AXIS = re.compile(r",\s*axis\s*=\s*([+-]?\s*\w+)\s*(?=\))")


class RawCut:
    """A parsed uproot-raw cut; :meth:`mask` gives one boolean per event."""

    def __init__(self, text: str):
        if not isinstance(text, str) or not text.strip():
            raise FilterError(f"a cut must be a non-empty string, not {text!r}")
        self.text = text.strip()
        bare = self.text
        for m in _AXIS.finditer(self.text):
            if m.group(1).replace(" ", "") not in ("1", "-1"):
                raise FilterError(f"cut {self.text!r}: axis={m.group(1)} is not supported (per-event "
                                  "reductions take axis=1 or axis=-1, the default)")
        bare = _AXIS.sub("", bare)
        try:
            self.tree = parse(bare, RAW_CUT)
        except ExprError as err:
            raise FilterError(f"cut {self.text!r}: {err.msg}") from None
        funcs = {id(n.func) for n in ast.walk(self.tree) if isinstance(n, ast.Call)}
        self.columns = {n.id for n in ast.walk(self.tree) if isinstance(n, ast.Name) and id(n) not in funcs}

    def mask(self, columns: Mapping[str, Any]) -> Any:
        import awkward as ak

        try:
            out = _RawEvaluator(columns).run(self.tree)
        except FilterError:
            raise
        except Exception as err:  # noqa: BLE001 - the cut's fault (types, shapes)
            raise FilterError(f"cut {self.text!r} cannot be evaluated: {type(err).__name__}: {err}") from err
        arr = ak.Array(out) if not isinstance(out, ak.Array) else out
        if arr.ndim != 1:
            raise FilterError(f"cut {self.text!r} gives one value per object, not per event: reduce the "
                              "jagged part, e.g. count_nonzero(Jet_pt > 25) >= 4")
        return ak.values_astype(ak.fill_none(arr, False), bool)

    def __repr__(self) -> str:
        return f"RawCut({self.text!r})"


class _RawEvaluator(Evaluator):
    def __init__(self, columns: Mapping[str, Any]):
        self.columns = columns

    def name(self, node: ast.Name, ctx: Any) -> Any:
        return self.columns[node.id]

    def call(self, node: ast.Call, ctx: Any) -> Any:
        import awkward as ak

        f = node.func.id  # type: ignore[attr-defined]
        if f not in RAW_REDUCERS:
            return super().call(node, ctx)
        x = self.eval(node.args[0], ctx)
        if getattr(x, "ndim", 1) < 2:
            raise FilterError(f"{f}() needs a jagged (per-object) branch, e.g. {f}(Jet_pt > 25)")
        if f == "num":
            return ak.num(x, axis=1)
        if f == "count_nonzero":
            return ak.count_nonzero(x, axis=-1)
        if f == "count":
            return ak.count(x, axis=-1)
        return getattr(ak, f)(x, axis=-1)
