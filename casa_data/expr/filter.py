"""Filters: the flat expression language of ``casa_data.open(..., filter=...)``."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from functools import cached_property
from typing import Any

import numpy as np

from ..errors import FilterError
from .arrow import to_arrow
from .core import MATH, REDUCERS, ExprError, Language, parse, position
from .evaluate import Evaluator

__all__ = ["Filter", "FILTER"]

#: the filter language: flat columns, numbers, arithmetic, logic, elementwise math and reductions
FILTER = Language("a filter", {f: (1, 1) for f in (*MATH, *REDUCERS)})


class Filter:
    """A parsed, validated filter expression.

    >>> f = Filter("nMuon >= 2 and abs(MET_pt - 40) < 10")
    >>> sorted(f.columns)
    ['MET_pt', 'nMuon']
    """

    text: str
    tree: ast.expr
    columns: set[str]

    def __init__(self, text: str | Filter):
        if isinstance(text, Filter):
            text = text.text
        if not isinstance(text, str) or not text.strip():
            raise FilterError(f"a filter must be a non-empty string, not {text!r}")
        self.text = text.strip()
        try:
            self.tree = parse(self.text, FILTER)
        except ExprError as err:
            raise FilterError(self._at(err.col + 1, err.msg, err.lineno)) from None
        funcs = {id(n.func) for n in ast.walk(self.tree) if isinstance(n, ast.Call)}
        self.columns = {n.id for n in ast.walk(self.tree) if isinstance(n, ast.Name) and id(n) not in funcs}

    def _at(self, col: int, msg: str, line: int = 1) -> str:
        lines = self.text.splitlines() or [""]
        src = lines[min(max(1, line), len(lines)) - 1]
        where = f"at column {max(1, col)}" if len(lines) == 1 else f"at line {line}, column {max(1, col)}"
        shown = self.text if len(self.text) <= 200 else self.text[:197] + "..."
        if len(src) > 200:  # long text: the caret's neighbourhood
            start = max(0, col - 100)
            src, col = src[start:start + 200], col - start
        return f"filter {shown!r}: {msg} ({where})\n  {src}\n  {' ' * (max(1, col) - 1)}^"

    def _fail(self, node: ast.AST, msg: str) -> FilterError:
        line, col = position(node)
        return FilterError(self._at(col + 1, msg, line))

    # -- evaluation on awkward / numpy ----------------------------------------------------------
    def mask(self, columns: Mapping[str, Any]) -> Any:
        """One boolean per event; ``columns`` maps names to awkward or numpy arrays."""
        import awkward as ak

        out = self.evaluate(columns)
        if isinstance(out, (bool, np.bool_, int, float, np.number)):
            raise FilterError(f"filter {self.text!r} does not depend on any column")
        arr = ak.Array(out) if not isinstance(out, ak.Array) else out
        if arr.ndim != 1:
            raise FilterError(
                f"filter {self.text!r} gives one value per object, not per event: wrap the jagged "
                "part in any(...), all(...) or count(...), e.g. any(Muon_pt > 20)"
            )
        return ak.values_astype(ak.fill_none(arr, False), bool)

    def evaluate(self, columns: Mapping[str, Any]) -> Any:
        """The expression's value (any shape: per event or per object), e.g. for a histogram.

        Anything that goes wrong is a :class:`FilterError` about the filter, never about a file.
        """
        try:
            return _FilterEvaluator(self, columns).run(self.tree)
        except (FilterError, MemoryError):
            raise
        except Exception as err:  # noqa: BLE001 - the filter's fault (types, shapes): say so
            raise FilterError(self._at(1, f"cannot evaluate: {type(err).__name__}: {err}")) from err

    # -- pyarrow pushdown -------------------------------------------------------------------------
    def to_arrow(self, schema: Any = None) -> Any:
        """A ``pyarrow.compute.Expression`` computing exactly what :meth:`mask` does for columns of
        ``schema`` (a ``pyarrow.Schema``); None if Arrow cannot compute it (e.g. reductions)."""
        if not self.columns:
            return None  # constant: evaluated (and rejected) like any filter
        try:
            return to_arrow(self.tree, schema)
        except Exception:  # noqa: BLE001 - NoArrow, or a kernel this pyarrow lacks
            return None

    @cached_property
    def arrow(self) -> Any:
        """:meth:`to_arrow` without a schema (columns keep their own types)."""
        return self.to_arrow()

    def __reduce__(self) -> tuple[type[Filter], tuple[str]]:
        return Filter, (self.text,)

    def __repr__(self) -> str:
        return f"Filter({self.text!r})"

    def __str__(self) -> str:
        return self.text


class _FilterEvaluator(Evaluator):
    def __init__(self, flt: Filter, columns: Mapping[str, Any]):
        self.flt, self.columns = flt, columns

    def name(self, node: ast.Name, ctx: Any) -> Any:
        return self.columns[node.id]

    def axis(self, node: ast.Call, x: Any) -> int:
        if getattr(x, "ndim", 1) < 2:
            f = node.func.id  # type: ignore[attr-defined]
            raise self.flt._fail(node, f"{f}() needs a jagged (per-object) column, e.g. {f}(Muon_pt > 20)")
        return 1
