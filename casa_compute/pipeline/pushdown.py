"""Push-down from a checked pipeline: an exact, looser pre-filter in casa's filter language and a
count pre-selection in uproot's language (see :mod:`.check` for the typing pass it reads).

A cut that reads a field some shape variation changes is never pushed: the varied selection may
keep events the nominal one drops, so the pre-filter must not drop them.
"""

from __future__ import annotations

import ast

from casa_data.errors import FilterError
from casa_data.expr import Filter

from .check import Checker, _key
from .expr import Expr

__all__ = ["pushdown_filter", "loose_count_cut"]


_FLAT_FUNCS = {"abs", "sqrt", "exp", "log", "sin", "cos"}
_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**", ast.FloorDiv: "//",
        ast.Mod: "%", ast.Eq: "==", ast.NotEq: "!=",
        ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}


def _flat(ch: Checker, e: Expr, node: ast.AST, src: str | None) -> str | None:
    """``node`` in casa's flat filter language, or None; ``src``: the collection of an object cut."""
    def go(n):
        return _flat(ch, e, n, src)

    if isinstance(node, ast.Constant) and not isinstance(node.value, bool):
        return repr(node.value)
    if isinstance(node, ast.Name):
        if src is not None and (node.id in ch.schema.collections.get(src, ()) or
                                f"{src}.{node.id}" in ch.spec.aliases):
            return f"{src}_{ch.notes.get(_key(e, node), node.id)}"
        if node.id in ch.spec.parameters:
            v = ch.spec.parameters[node.id]
            return None if isinstance(v, bool) else repr(v)
        if src is None and node.id in ch.schema.flat and node.id not in ch.env:
            return node.id
        return None
    if isinstance(node, ast.Attribute) and src is None and isinstance(node.value, ast.Name):
        s = node.value.id
        if s in ch.schema.singletons and s not in ch.env and node.attr in ch.schema.singletons[s]:
            return f"{s}_{node.attr}"
        return None
    if isinstance(node, ast.BoolOp):
        parts = [go(v) for v in node.values]
        return None if None in parts else "(" + (" and " if isinstance(node.op, ast.And) else " or ").join(parts) + ")"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        inner = go(node.operand)
        return None if inner is None else (f"(not {inner})" if isinstance(node.op, ast.Not) else f"(-{inner})")
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        a, b = go(node.left), go(node.right)
        return None if a is None or b is None else f"({a} {_OPS[type(node.op)]} {b})"
    if isinstance(node, ast.Compare) and all(type(o) in _OPS for o in node.ops):
        parts = [go(node.left)] + [go(c) for c in node.comparators]
        if None in parts:
            return None
        text = parts[0]
        for op, p in zip(node.ops, parts[1:]):
            text += f" {_OPS[type(op)]} {p}"
        return f"({text})"
    if isinstance(node, ast.Call) and node.func.id in _FLAT_FUNCS and src is not None:  # type: ignore[attr-defined]
        inner = go(node.args[0])
        return None if inner is None else f"{node.func.id}({inner})"  # type: ignore[attr-defined]
    if (isinstance(node, ast.Call) and node.func.id == "count" and src is None  # type: ignore[attr-defined]
            and _chain(ch, node.args[0]) is not None):
        coll, cuts = _chain(ch, node.args[0])
        parts = [_flat(ch, c, c.tree, coll) for c in cuts]
        if None in parts:
            return None
        return f"count({_unwrap(' and '.join(parts))})" if parts else f"n{coll}"
    return None


def _unwrap(text: str) -> str:
    """``(a and b)`` -> ``a and b`` when the outer parentheses enclose everything."""
    if not (text.startswith("(") and text.endswith(")")):
        return text
    depth = 0
    for i, c in enumerate(text):
        depth += (c == "(") - (c == ")")
        if depth == 0 and i < len(text) - 1:
            return text
    return text[1:-1]


def _chain(ch: Checker, node: ast.AST) -> tuple[str, list[Expr]] | None:
    """(NanoAOD collection, object cuts in order) behind a collection name, or None."""
    if not isinstance(node, ast.Name):
        return None
    if node.id in ch.chains:
        return ch.chains[node.id]
    if node.id in ch.schema.collections and node.id not in ch.env:
        return node.id, []
    return None


def _conjuncts(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And):
        return [c for v in node.values for c in _conjuncts(v)]
    return [node]


def pushdown_filter(ch: Checker) -> str | None:
    """The event cuts (and their conjuncts) expressible over flat columns, joined with ``and``.

    Each translated part is exactly the processor's cut, and dropped parts only loosen it, so the
    result selects a superset of the events the processor keeps: safe to apply upstream.
    """
    parts: list[str] = []
    for name in ch.spec.selection.events:
        e = ch.pipe.exprs[("selection", "events", name)]
        for c in _conjuncts(e.tree):
            text = _flat(ch, e, c, None)
            if text is not None and _varies(ch, text):
                continue  # a shape variation changes what it reads: the variation may keep other events
            if text is not None and _fits(parts + [text]):
                parts.append(text)
    return " and ".join(parts) or None


def _varies(ch: Checker, text: str) -> bool:
    """Whether a translated cut reads a column some shape variation changes."""
    if not ch.varied:
        return False
    try:
        cols = Filter(text).columns
    except FilterError:
        return True
    return bool(cols & ch.varied)


def _fits(parts: list[str]) -> bool:
    """The conjunction is a valid filter (within its size limits); else the last part is left out."""
    try:
        Filter(" and ".join(parts))
    except FilterError:
        return False
    return True


def _count_sum(ch: Checker, node: ast.AST) -> list[str] | None:
    """``count(A) + count(B)`` over objects of NanoAOD collections -> ``["nA", "nB"]``, else None."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        a, b = _count_sum(ch, node.left), _count_sum(ch, node.right)
        return None if a is None or b is None else a + b
    if isinstance(node, ast.Call) and node.func.id == "count" and _chain(ch, node.args[0]):  # type: ignore[attr-defined]
        return [f"n{_chain(ch, node.args[0])[0]}"]
    return None


def loose_count_cut(ch: Checker) -> str | None:
    """A looser pre-selection in uproot's expression language (no per-event reductions there).

    ``count(C) >= k`` (also ``> k``, ``== k``, and sums of counts) needs at least k objects before
    the object cuts, so it becomes ``nC >= k``: every event the processor keeps passes it. Single
    comparisons of per-event columns (``MET.pt > 20``) are kept as they are.
    """
    parts = []
    for name in ch.spec.selection.events:
        e = ch.pipe.exprs[("selection", "events", name)]
        for c in _conjuncts(e.tree):
            if not (isinstance(c, ast.Compare) and len(c.ops) == 1):
                continue
            flat = _flat(ch, e, c, None)
            if flat is not None and _varies(ch, flat) and "count(" not in flat:
                continue
            if flat is not None and "count(" not in flat and not any(w in flat for w in (" and ", " or ", "not ")):
                parts.append(flat)  # a comparison of per-event columns: exact, and uproot can say it
                continue
            if not isinstance(c.ops[0], (ast.GtE, ast.Gt, ast.Eq)):
                continue
            counters, k = _count_sum(ch, c.left), c.comparators[0]
            if counters is None or not (isinstance(k, ast.Constant) and type(k.value) is int):
                continue
            need = k.value + 1 if isinstance(c.ops[0], ast.Gt) else k.value
            if need > 0:
                parts.append(f"({' + '.join(counters)} >= {need})")
    return " & ".join(parts) or None
