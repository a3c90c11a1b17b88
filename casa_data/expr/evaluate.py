"""One evaluator of checked expression trees over awkward and numpy values.

The filter evaluates with it as it is; the pipeline's evaluator extends it (objects, fields,
subscripts, its extra functions). Arithmetic goes through numpy ufuncs (bounded numbers, never
Python big integers); ``**`` is always a float power (no error for negative integer exponents,
no overflow of integers). The language has two number types, int64 and float64 (and bools):
columns and fields are widened when read (:func:`widen`: ``nMuon - 3`` of a uint32 column is
negative, ``MET_pt`` of float32 compares in float64), exactly as the Arrow translation computes.
:meth:`Evaluator.run` silences numpy's floating-point warnings: a division by zero gives
``inf``/``nan`` as numpy does.
"""

from __future__ import annotations

import ast
import operator
from typing import Any

import numpy as np

from .core import MATH, REDUCERS, reject

__all__ = ["Evaluator", "binop", "reduce", "widen", "as_float", "is_bool", "is_record"]

_CMP = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
        ast.Gt: operator.gt, ast.GtE: operator.ge}
_ARITH = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.true_divide,
          ast.FloorDiv: np.floor_divide, ast.Mod: np.mod}
_MATH_FUNCS = {"abs": np.abs, "sqrt": np.sqrt, "exp": np.exp, "log": np.log, "sin": np.sin, "cos": np.cos,
               "tan": np.tan, "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh}
assert set(_MATH_FUNCS) == set(MATH)


class Evaluator:
    """Walks a tree from :func:`~.core.parse` with numpy/awkward operations.

    Subclasses say what names, fields and subscripts mean (:meth:`name`, :meth:`attribute`,
    :meth:`subscript`), add functions (:meth:`call`) and pick the axis of reductions
    (:meth:`axis`). ``ctx`` is passed down unchanged (the pipeline's current collection).
    """

    def run(self, tree: ast.AST, ctx: Any = None) -> Any:
        """The value of ``tree``, without numpy floating-point warnings."""
        with np.errstate(all="ignore"):
            return self.eval(tree, ctx)

    def eval(self, node: ast.AST, ctx: Any = None) -> Any:
        ev = self.eval
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return widen(self.name(node, ctx))
        if isinstance(node, ast.BoolOp):
            logic = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            out = ev(node.values[0], ctx)
            for v in node.values[1:]:
                out = logic(out, ev(v, ctx))
            return out
        if isinstance(node, ast.UnaryOp):
            v = ev(node.operand, ctx)
            if isinstance(node.op, (ast.Not, ast.Invert)):
                return np.logical_not(v)
            return np.negative(v) if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.Compare):
            left, out = ev(node.left, ctx), None
            for op, comp in zip(node.ops, node.comparators):
                right = ev(comp, ctx)
                r = _CMP[type(op)](left, right)
                out = r if out is None else np.logical_and(out, r)
                left = right
            return out
        if isinstance(node, ast.BinOp):
            return binop(node.op, ev(node.left, ctx), ev(node.right, ctx))
        if isinstance(node, ast.Attribute):
            return widen(self.attribute(node, ctx))
        if isinstance(node, ast.Subscript):
            return self.subscript(node, ctx)
        if isinstance(node, ast.Call):
            return self.call(node, ctx)
        raise reject(node, f"{type(node).__name__} is not allowed")  # the grammar rejected it already

    # -- hooks --------------------------------------------------------------------------------------
    def name(self, node: ast.Name, ctx: Any) -> Any:
        raise NotImplementedError

    def attribute(self, node: ast.Attribute, ctx: Any) -> Any:
        raise reject(node, "fields are not allowed here")

    def subscript(self, node: ast.Subscript, ctx: Any) -> Any:
        raise reject(node, "[...] is not allowed here")

    def axis(self, node: ast.Call, x: Any) -> int:
        """The axis a reduction ``node`` of ``x`` runs over (default: the innermost list)."""
        return -1

    def call(self, node: ast.Call, ctx: Any) -> Any:
        f = node.func.id  # type: ignore[attr-defined]
        if f in _MATH_FUNCS:
            return _MATH_FUNCS[f](self.eval(node.args[0], ctx))
        if f in REDUCERS:
            x = self.eval(node.args[0], ctx)
            return reduce(f, x, self.axis(node, x))
        raise reject(node, f"unknown function {f!r}")


def binop(op: ast.operator, a: Any, b: Any) -> Any:
    """``a op b``: ``& |`` are logical; ``**`` a float power; the rest numpy's arithmetic."""
    if isinstance(op, ast.BitAnd):
        return np.logical_and(a, b)
    if isinstance(op, ast.BitOr):
        return np.logical_or(a, b)
    if isinstance(op, ast.Pow):
        return np.power(as_float(a), as_float(b))
    return _ARITH[type(op)](a, b)


def reduce(f: str, x: Any, axis: int) -> Any:
    """``count sum any all min max`` of ``x`` over ``axis`` (count: true values, or objects)."""
    import awkward as ak

    if f == "count":
        if is_record(x) or not is_bool(x):
            return ak.num(x, axis=axis)
        return ak.sum(ak.values_astype(x, np.int64), axis=axis)
    return getattr(ak, f)(x, axis=axis)


def widen(x: Any) -> Any:
    """Numbers as int64 or float64 (awkward, numpy); bools, records and Python numbers unchanged."""
    import awkward as ak

    if isinstance(x, ak.Array):
        t = ak.type(x).content
        while isinstance(t, (ak.types.ListType, ak.types.RegularType, ak.types.OptionType)):
            t = t.content
        wide = _WIDE.get(t.primitive) if isinstance(t, ak.types.NumpyType) else None
        return ak.values_astype(x, wide) if wide is not None else x
    if isinstance(x, (np.ndarray, np.generic)):
        wide = _WIDE.get(x.dtype.name)
        return x.astype(wide) if wide is not None else x
    return x


_WIDE = {**{f"{u}int{n}": np.int64 for u in ("", "u") for n in (8, 16, 32, 64)}, "float16": np.float64,
         "float32": np.float64}
del _WIDE["int64"]


def as_float(x: Any) -> Any:
    """``x`` as float64 values (awkward, numpy or a scalar)."""
    import awkward as ak

    if isinstance(x, ak.Array):
        return ak.values_astype(x, np.float64)
    if isinstance(x, np.ndarray):
        return x.astype(np.float64)
    return np.float64(x)


def is_record(x: Any) -> bool:
    import awkward as ak

    return isinstance(x, ak.Array) and bool(ak.fields(x))


def is_bool(x: Any) -> bool:
    import awkward as ak

    if isinstance(x, (bool, np.bool_)):
        return True
    if isinstance(x, np.ndarray):
        return bool(x.dtype == np.bool_)
    if not isinstance(x, ak.Array):
        return False
    # Walk the type (parameters such as NanoEvents' __doc__ hide "bool" from the type's text).
    t: Any = x.type.content
    while t is not None and not isinstance(t, ak.types.NumpyType):
        if isinstance(t, (ak.types.RecordType, ak.types.UnionType)):
            return False
        t = getattr(t, "content", None)
    return t is not None and t.primitive == "bool"
