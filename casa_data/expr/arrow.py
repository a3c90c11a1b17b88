"""Translation of a checked expression tree to a ``pyarrow.compute`` expression.

Exactly the evaluator's semantics (:mod:`.evaluate`), given the columns' Arrow types: integer
columns are widened to int64 and float ones to float64 (a bare column compared to constants stays
as it is where Arrow compares it exactly, so Parquet row-group statistics still apply); int/float
mixes are cast to float64 explicitly; ``/`` and ``**`` compute in float64; ``+ - *`` are the
unchecked kernels (wrap-around, as numpy); ``and or not & | ~`` are Kleene logic over bools; chains
of ``and`` are balanced trees (a long filter never becomes a deep expression). What numpy computes
differently (logic on numbers, arithmetic on bools) and what has no Arrow form (reductions, ``//``,
``%``) raise :class:`NoArrow`: the caller evaluates after reading instead.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

__all__ = ["NoArrow", "to_arrow"]

_CMP = {ast.Eq: "equal", ast.NotEq: "not_equal", ast.Lt: "less", ast.LtE: "less_equal",
        ast.Gt: "greater", ast.GtE: "greater_equal"}
_ARITH = {ast.Add: "add", ast.Sub: "subtract", ast.Mult: "multiply"}
_FLOAT = {ast.Div: "divide", ast.Pow: "power"}
_MATH = {"sqrt": "sqrt", "exp": "exp", "log": "ln", "sin": "sin", "cos": "cos", "tan": "tan",
         "sinh": "sinh", "cosh": "cosh", "tanh": "tanh"}


class NoArrow(Exception):
    """The expression has a part Arrow cannot compute (a reduction, ``//``, ``%``, a field)."""


def to_arrow(node: ast.AST, types: Mapping[str, Any] | None = None) -> Any:
    """The ``pyarrow.compute.Expression`` of ``node``; raises :class:`NoArrow`.

    ``types`` (column -> ``pyarrow.DataType``, e.g. a schema) makes the result exact; without it,
    columns are used with their own types.
    """
    return _Translator(types).go(node)[0]


class _Translator:
    """Each part translates to (expression, kind): kind "int" (int64), "float" (float64), "bool",
    or None (no schema: the column's own type). Mixed int/float operands are cast to float64
    explicitly: Arrow's implicit casts may narrow a literal and cast the column down to it."""

    def __init__(self, types: Any):
        import pyarrow as pa
        import pyarrow.compute as pc

        self.pa, self.pc = pa, pc
        self.types: Mapping[str, Any] | None = (
            {n: types.field(n).type for n in types.names} if hasattr(types, "names") else types)

    def go(self, node: ast.AST) -> tuple[Any, str | None]:
        pc = self.pc
        if isinstance(node, ast.Constant):
            v = node.value
            return pc.scalar(v), "bool" if isinstance(v, bool) else "int" if isinstance(v, int) else "float"
        if isinstance(node, ast.Name):
            return self.column(node.id)
        if isinstance(node, ast.BoolOp):
            fn = "and_kleene" if isinstance(node.op, ast.And) else "or_kleene"
            return _balanced(fn, [self.logic(v) for v in node.values]), "bool"
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, (ast.Not, ast.Invert)):
                return pc.invert(self.logic(node.operand)), "bool"
            v, k = self.number(node.operand)
            return (pc.negate(v) if isinstance(node.op, ast.USub) else v), k
        if isinstance(node, ast.Compare):
            return self.compare(node), "bool"
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, (ast.BitAnd, ast.BitOr)):
                fn = "and_kleene" if isinstance(node.op, ast.BitAnd) else "or_kleene"
                return getattr(pc, fn)(self.logic(node.left), self.logic(node.right)), "bool"
            if type(node.op) in _FLOAT:
                return getattr(pc, _FLOAT[type(node.op)])(self.f64(node.left), self.f64(node.right)), "float"
            if type(node.op) in _ARITH:
                (a, ka), (b, kb) = self.number(node.left), self.number(node.right)
                (a, b), k = self.common((node.left, a, ka), (node.right, b, kb))
                return getattr(pc, _ARITH[type(node.op)])(a, b), k
            raise NoArrow(type(node.op).__name__)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            f = node.func.id
            if f == "abs":
                v, k = self.number(node.args[0])
                return pc.abs(v), k
            if f in _MATH and hasattr(pc, _MATH[f]):
                return getattr(pc, _MATH[f])(self.f64(node.args[0])), "float"
        raise NoArrow(type(node).__name__)

    def compare(self, node: ast.Compare) -> Any:
        pc, nodes = self.pc, [node.left, *node.comparators]
        consts = sum(isinstance(n, ast.Constant) for n in nodes)
        parts = [self.bare(n) if consts == len(nodes) - 1 else self.go(n) for n in nodes]
        out = []
        for op, (na, (a, ka)), (nb, (b, kb)) in zip(node.ops, zip(nodes, parts), zip(nodes[1:], parts[1:])):
            if "bool" in (ka, kb) and ka != kb and None not in (ka, kb):
                raise NoArrow("bool compared to a number")
            (a, b), _ = self.common((na, a, ka), (nb, b, kb))
            out.append(getattr(pc, _CMP[type(op)])(a, b))
        return _balanced("and_kleene", out)

    def common(self, *sides: tuple[ast.AST, Any, str | None]) -> tuple[list[Any], str | None]:
        """The operands in one kind: float64 if any is a float, else as they are."""
        kinds = {k for _, _, k in sides}
        if kinds == {"int", "float"}:
            return [self.f64(n, (v, k)) for n, v, k in sides], "float"
        return [v for _, v, _ in sides], (kinds.pop() if len(kinds) == 1 else None)

    def column(self, name: str) -> tuple[Any, str | None]:
        """A column widened to int64 / float64, as the evaluator reads it."""
        pa, field = self.pa, self.pc.field(name)
        t = self.types.get(name) if self.types is not None else None
        if t is None:
            return field, None
        if pa.types.is_boolean(t):
            return field, "bool"
        if pa.types.is_integer(t):
            return (field if t == pa.int64() else field.cast(pa.int64(), safe=False)), "int"  # wraps as numpy
        if pa.types.is_floating(t):
            return (field if t == pa.float64() else field.cast(pa.float64(), safe=False)), "float"
        raise NoArrow(f"column {name} of type {t}")

    def bare(self, node: ast.AST) -> tuple[Any, str | None]:
        """A comparison operand among constants: a column Arrow compares exactly stays uncast (so
        Parquet statistics apply): integers (not uint64) and floats; a float column's constants
        are given as floats (an int literal is narrowed to the column's type, and may not fit)."""
        if isinstance(node, ast.Name) and self.types is not None and node.id in self.types:
            t, pa = self.types[node.id], self.pa
            if pa.types.is_integer(t) and t != pa.uint64():
                return self.pc.field(node.id), "int"
            if pa.types.is_floating(t):
                return self.pc.field(node.id), "float"
        return self.go(node)

    def logic(self, node: ast.AST) -> Any:
        v, k = self.go(node)
        if k not in ("bool", None):
            raise NoArrow("logic on numbers")  # numpy's truthiness: evaluated after reading
        return v

    def number(self, node: ast.AST) -> tuple[Any, str | None]:
        v, k = self.go(node)
        if k == "bool":
            raise NoArrow("arithmetic on bools")
        return v, k

    def f64(self, node: ast.AST, done: tuple[Any, str | None] | None = None) -> Any:
        """``node`` in float64 (a constant directly, anything else cast unless it is a float)."""
        if isinstance(node, ast.Constant):
            value: Any = node.value
            return self.pc.scalar(float(value))
        v, k = done if done is not None else self.go(node)
        return v if k == "float" else v.cast(self.pa.float64(), safe=False)  # rounds as numpy


def _balanced(fn: str, items: list[Any]) -> Any:
    """``fn`` over ``items`` as a balanced binary tree (depth log2 n, not n)."""
    import pyarrow.compute as pc

    while len(items) > 1:
        pairs = [getattr(pc, fn)(a, b) for a, b in zip(items[::2], items[1::2])]
        items = pairs + ([items[-1]] if len(items) % 2 else [])
    return items[0]
