"""Safe filter expressions over columns, e.g. ``"nMuon >= 2 and MET_pt > 20"``.

The text is parsed with Python's ``ast`` into a small whitelist (comparisons, arithmetic,
``and``/``or``/``not``, numbers, column names and a few functions); nothing is ever evaluated as
Python. One :class:`Filter` evaluates on awkward/numpy columns and, when it only uses flat
columns and arithmetic, also becomes a ``pyarrow.compute`` expression so Parquet scans can skip
row groups and Skyhook can push it to the storage.

Functions: ``abs sqrt exp log sin cos`` (elementwise) and ``any all count sum min max``
(per event, over a jagged column: ``any(Muon_pt > 20)``, ``count(Jet_pt > 30) >= 4``).
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Mapping
from functools import cached_property
from typing import Any

import numpy as np

from .errors import FilterError

__all__ = ["Filter"]

_CMP = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
        ast.Gt: operator.gt, ast.GtE: operator.ge}
_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
        ast.BitAnd: operator.and_, ast.BitOr: operator.or_}
_ELEMENTWISE = {"abs": np.abs, "sqrt": np.sqrt, "exp": np.exp, "log": np.log, "sin": np.sin, "cos": np.cos}
_REDUCERS = {"any", "all", "count", "sum", "min", "max"}
_ARROW_FUNCS = {"abs": "abs", "sqrt": "sqrt", "exp": "exp", "log": "ln", "sin": "sin", "cos": "cos"}


class Filter:
    """A parsed, validated filter expression.

    >>> f = Filter("nMuon >= 2 and abs(MET_pt - 40) < 10")
    >>> sorted(f.columns)
    ['MET_pt', 'nMuon']
    """

    def __init__(self, text: str):
        if isinstance(text, Filter):
            text = text.text
        if not isinstance(text, str) or not text.strip():
            raise FilterError(f"a filter must be a non-empty string, not {text!r}")
        self.text = text.strip()
        try:
            self.tree = ast.parse(self.text, mode="eval").body
        except SyntaxError as err:
            raise FilterError(self._at(err.offset or 1, f"syntax error: {err.msg}")) from None
        self.columns: set[str] = set()
        self._check(self.tree)

    # -- validation ---------------------------------------------------------------------------
    def _at(self, col: int, msg: str) -> str:
        col = max(1, col)
        return f"filter {self.text!r}: {msg} (at column {col})\n  {self.text}\n  {' ' * (col - 1)}^"

    def _fail(self, node: ast.AST, msg: str) -> None:
        raise FilterError(self._at(getattr(node, "col_offset", 0) + 1, msg))

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.BoolOp):
            for v in node.values:
                self._check(v)
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, (ast.Not, ast.USub, ast.UAdd, ast.Invert)):
                self._fail(node, f"operator {type(node.op).__name__} is not allowed")
            self._check(node.operand)
        elif isinstance(node, ast.Compare):
            for op in node.ops:
                if type(op) not in _CMP:
                    self._fail(node, f"comparison {type(op).__name__} is not allowed (use == != < <= > >=)")
            self._check(node.left)
            for c in node.comparators:
                self._check(c)
        elif isinstance(node, ast.BinOp):
            if type(node.op) not in _BIN:
                self._fail(node, f"operator {type(node.op).__name__} is not allowed")
            self._check(node.left)
            self._check(node.right)
        elif isinstance(node, ast.Name):
            if node.id in ("True", "False"):
                return
            self.columns.add(node.id)
        elif isinstance(node, ast.Constant):
            if not isinstance(node.value, (int, float, bool)):
                self._fail(node, f"only numbers are allowed as constants, not {node.value!r}")
        elif isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else None
            if name not in _ELEMENTWISE and name not in _REDUCERS:
                allowed = ", ".join(sorted(set(_ELEMENTWISE) | _REDUCERS))
                self._fail(node, f"function {ast.unparse(node.func)!r} is not allowed (allowed: {allowed})")
            if len(node.args) != 1 or node.keywords:
                self._fail(node, f"{name}() takes exactly one argument")
            self._check(node.args[0])
        else:
            self._fail(node, f"{type(node).__name__} is not allowed in a filter "
                             "(use columns, numbers, comparisons, arithmetic, and/or/not)")

    # -- evaluation on awkward / numpy ----------------------------------------------------------
    def mask(self, columns: Mapping[str, Any]) -> Any:
        """One boolean per event; ``columns`` maps names to awkward or numpy arrays."""
        import awkward as ak

        out = self._eval(self.tree, columns)
        if isinstance(out, (bool, np.bool_, int, float)):
            raise FilterError(f"filter {self.text!r} does not depend on any column")
        arr = ak.Array(out) if not isinstance(out, ak.Array) else out
        if arr.ndim != 1:
            raise FilterError(
                f"filter {self.text!r} gives one value per object, not per event: wrap the jagged "
                "part in any(...), all(...) or count(...), e.g. any(Muon_pt > 20)"
            )
        return ak.values_astype(ak.fill_none(arr, False), bool)

    def evaluate(self, columns: Mapping[str, Any]) -> Any:
        """The expression's value (any shape: per event or per object), e.g. for a histogram."""
        return self._eval(self.tree, columns)

    def _eval(self, node: ast.AST, cols: Mapping[str, Any]) -> Any:
        import awkward as ak

        if isinstance(node, ast.BoolOp):
            vals = [self._eval(v, cols) for v in node.values]
            op = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            out = vals[0]
            for v in vals[1:]:
                out = op(out, v)
            return out
        if isinstance(node, ast.UnaryOp):
            v = self._eval(node.operand, cols)
            if isinstance(node.op, (ast.Not, ast.Invert)):
                return np.logical_not(v)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, cols)
            out = None
            for op, comp in zip(node.ops, node.comparators):
                right = self._eval(comp, cols)
                r = _CMP[type(op)](left, right)
                out = r if out is None else np.logical_and(out, r)
                left = right
            return out
        if isinstance(node, ast.BinOp):
            left, right = self._eval(node.left, cols), self._eval(node.right, cols)
            if isinstance(node.op, (ast.BitAnd, ast.BitOr)):
                return (np.logical_and if isinstance(node.op, ast.BitAnd) else np.logical_or)(left, right)
            return _BIN[type(node.op)](left, right)
        if isinstance(node, ast.Name):
            if node.id in ("True", "False"):
                return node.id == "True"
            return cols[node.id]
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Call):
            name = node.func.id  # type: ignore[attr-defined]
            arg = self._eval(node.args[0], cols)
            if name in _ELEMENTWISE:
                return _ELEMENTWISE[name](arg)
            if getattr(arg, "ndim", 1) < 2:
                self._fail(node, f"{name}() needs a jagged (per-object) column, e.g. {name}(Muon_pt > 20)")
            if name == "count":
                return ak.sum(ak.values_astype(arg, np.int64), axis=1) if _is_bool(arg) else ak.num(arg, axis=1)
            return getattr(ak, name)(arg, axis=1)
        raise AssertionError(node)  # unreachable: _check rejected it

    # -- pyarrow pushdown -------------------------------------------------------------------------
    @cached_property
    def arrow(self):
        """A ``pyarrow.compute.Expression``, or None if the filter needs per-event reductions."""
        try:
            return self._arrow(self.tree)
        except _NoArrow:
            return None

    def _arrow(self, node: ast.AST):
        import pyarrow.compute as pc

        if isinstance(node, ast.BoolOp):
            vals = [self._arrow(v) for v in node.values]
            out = vals[0]
            for v in vals[1:]:
                out = (out & v) if isinstance(node.op, ast.And) else (out | v)
            return out
        if isinstance(node, ast.UnaryOp):
            v = self._arrow(node.operand)
            if isinstance(node.op, (ast.Not, ast.Invert)):
                return ~v
            return pc.negate(v) if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.Compare):
            left = self._arrow(node.left)
            out = None
            for op, comp in zip(node.ops, node.comparators):
                right = self._arrow(comp)
                r = _CMP[type(op)](left, right)
                out = r if out is None else (out & r)
                left = right
            return out
        if isinstance(node, ast.BinOp):
            left, right = self._arrow(node.left), self._arrow(node.right)
            if isinstance(node.op, ast.BitAnd):
                return left & right
            if isinstance(node.op, ast.BitOr):
                return left | right
            names = {ast.Add: "add", ast.Sub: "subtract", ast.Mult: "multiply", ast.Div: "divide",
                     ast.Pow: "power"}
            if type(node.op) not in names:
                raise _NoArrow
            if isinstance(node.op, ast.Div):
                left = pc.cast(left, "float64") if isinstance(left, pc.Expression) else float(left)
            return getattr(pc, names[type(node.op)])(left, right)
        if isinstance(node, ast.Name):
            if node.id in ("True", "False"):
                return pc.scalar(node.id == "True")
            return pc.field(node.id)
        if isinstance(node, ast.Constant):
            return pc.scalar(node.value)
        if isinstance(node, ast.Call) and node.func.id in _ARROW_FUNCS:  # type: ignore[attr-defined]
            return getattr(pc, _ARROW_FUNCS[node.func.id])(self._arrow(node.args[0]))  # type: ignore[attr-defined]
        raise _NoArrow

    def __repr__(self) -> str:
        return f"Filter({self.text!r})"

    def __str__(self) -> str:
        return self.text


class _NoArrow(Exception):
    pass


def _is_bool(arr: Any) -> bool:
    import awkward as ak

    return str(ak.type(arr)).rstrip().endswith("bool")
