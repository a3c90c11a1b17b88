"""The pipeline expression language: a whitelisted subset of Python syntax over NanoAOD collections.

Never evaluated as Python: the text is parsed with :mod:`ast`, every node is checked against the
grammar below, then :mod:`.check` types it against the input's columns and
:mod:`.processor` walks the tree with awkward operations.

Grammar (Python syntax, a small subset):

* numbers, ``True``/``False``, names (collections, fields, variables, parameters);
* ``x.field``, ``C[0]`` (the first object, missing if there is none), ``C[1:3]`` (a slice),
  ``C[pt > 30]`` (the objects passing a cut; names inside resolve to fields of ``C`` first);
* ``+ - * / // % **``, comparisons (chains allowed), ``and or not`` (also ``& | ~``);
  ``a + b`` of two objects is their four-momentum sum (``(Muon[0] + Muon[1]).mass``);
* functions (:data:`FUNCTIONS`): elementwise ``abs sqrt exp log sin cos tan sinh cosh tanh
  where(cond, a, b)``; reductions over the innermost list ``count sum any all min max``;
  ``combinations(C, n)`` (n-object combinations with ``pt eta phi mass`` of their sum and their
  ``members``); ``best(C, key)`` (the object with the largest ``key``); ``delta_r(a, b)``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from casa_data.errors import CasaError

__all__ = ["PipelineError", "Where", "Expr", "FUNCTIONS"]

#: name -> (min args, max args)
FUNCTIONS: dict[str, tuple[int, int]] = {
    **{f: (1, 1) for f in ("abs", "sqrt", "exp", "log", "sin", "cos", "tan", "sinh", "cosh", "tanh")},
    **{f: (1, 1) for f in ("count", "sum", "any", "all", "min", "max")},
    "where": (3, 3), "combinations": (2, 2), "best": (2, 2), "delta_r": (2, 2),
}
_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.BitAnd, ast.BitOr)
_CMPOPS = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)


class PipelineError(CasaError, ValueError):
    """A pipeline spec is invalid or cannot run; the message starts with ``file:line:col``."""


@dataclass(frozen=True)
class Where:
    """Where an expression's text sits in its YAML file (for located errors)."""

    path: Path | None = None
    line: int = 1            # 1-based line of the scalar's first character
    col: int = 1             # 1-based column of the scalar's first character
    style: str | None = None  # YAML scalar style: None (plain), "'", '"', "|", ">"
    field: str = ""          # dotted spec location, e.g. "selection.events.two muons"

    def at(self, lineno: int = 1, col_offset: int = 0) -> tuple[int, int]:
        """File (line, column) of ``col_offset`` on line ``lineno`` of the expression text."""
        if self.style == "|":  # literal block: the text starts on the next line, indented
            indent = _indent(self.path, self.line + 1) if self.path else 0  # the block's indentation
            return self.line + lineno, indent + col_offset + 1
        if lineno > 1 or self.style == ">":  # folded text: only the start is known exactly
            return self.line, self.col
        return self.line, self.col + col_offset + (1 if self.style in ("'", '"') else 0)

    def error(self, message: str, lineno: int = 1, col_offset: int = 0) -> PipelineError:
        line, col = self.at(lineno, col_offset)
        return PipelineError(located(self.path, line, col, message, self.field))


def _indent(path: Path, line: int) -> int:
    try:
        text = path.read_text().splitlines()[line - 1]
    except (OSError, IndexError):
        return 0
    return len(text) - len(text.lstrip())


def located(path: Path | None, line: int | None, col: int | None, message: str, field: str = "") -> str:
    """``file:line:col: field: message`` plus the source line and a caret under the column."""
    where = f"{path}:{line}:{col}" if path and line else str(path or "<spec>")
    head = f"{where}: {field + ': ' if field else ''}{message}"
    if path and line:
        try:
            src = Path(path).read_text().splitlines()[line - 1]
        except (OSError, IndexError):
            return head
        return f"{head}\n  {src}\n  {' ' * ((col or 1) - 1)}^"
    return head


class Expr:
    """One parsed and grammar-checked expression; ``tree`` is its :mod:`ast` body."""

    def __init__(self, text: str, where: Where | None = None):
        self.where = where or Where()
        if isinstance(text, bool) or not isinstance(text, (str, int, float)):
            raise self.where.error(f"expected an expression (text), got {type(text).__name__} {text!r}")
        self.text = str(text).strip()
        if not self.text:
            raise self.where.error("empty expression")
        multi = "\n" in self.text
        # Multi-line text is parsed parenthesised on its own lines (line 2 is text line 1).
        source, shift = (f"(\n{self.text}\n)", 1) if multi else (self.text, 0)
        try:
            body = ast.parse(source, mode="eval").body
        except SyntaxError as err:
            lines = self.text.splitlines()
            lineno = min(max(1, (err.lineno or 1) - shift), len(lines))
            col = max(0, (err.offset or 1) - 1) if (err.lineno or 1) - shift >= 1 else 0
            raise self.where.error(f"syntax error: {err.msg}", lineno, min(col, len(lines[lineno - 1]))) from None
        if shift:
            for node in ast.walk(body):
                if hasattr(node, "lineno"):
                    node.lineno -= shift
                    node.end_lineno = (node.end_lineno or 1 + shift) - shift
        self.tree = body
        self._grammar(body)

    @property
    def key(self) -> str:
        return self.where.field

    def fail(self, node: ast.AST | None, message: str) -> PipelineError:
        """A located error about ``node`` (or the whole expression)."""
        if node is None or not hasattr(node, "lineno"):
            return self.where.error(message)
        col = node.col_offset
        if isinstance(node, ast.Attribute) and node.end_lineno == node.lineno:
            col = node.end_col_offset - len(node.attr)  # point at the field, not the object
        return self.where.error(message, node.lineno, col)

    def _grammar(self, node: ast.AST) -> None:
        if isinstance(node, ast.BoolOp):
            pass
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, (ast.Not, ast.USub, ast.UAdd, ast.Invert)):
                raise self.fail(node, f"operator {type(node.op).__name__} is not allowed")
        elif isinstance(node, ast.BinOp):
            if not isinstance(node.op, _BINOPS):
                raise self.fail(node, f"operator {type(node.op).__name__} is not allowed")
        elif isinstance(node, ast.Compare):
            if not all(isinstance(op, _CMPOPS) for op in node.ops):
                raise self.fail(node, "only == != < <= > >= comparisons are allowed")
        elif isinstance(node, ast.Name):
            if node.id.startswith("_"):
                raise self.fail(node, f"names starting with '_' are not allowed: {node.id!r}")
        elif isinstance(node, ast.Constant):
            if not isinstance(node.value, (int, float, bool)):
                raise self.fail(node, f"only numbers and True/False are allowed as constants, not {node.value!r}")
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("_"):
                raise self.fail(node, f"fields starting with '_' are not allowed: {node.attr!r}")
        elif isinstance(node, ast.Subscript):
            if isinstance(node.slice, ast.Slice) and node.slice.step is not None:
                raise self.fail(node.slice, "slices with a step are not allowed")
        elif isinstance(node, ast.Slice):
            for part in (node.lower, node.upper):
                if part is not None and not (isinstance(part, ast.Constant) and type(part.value) is int):
                    raise self.fail(part, "slice bounds must be integer constants from 0, e.g. Jet[0:4]")
        elif isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else None
            if name not in FUNCTIONS:
                raise self.fail(node, f"unknown function {ast.unparse(node.func)!r}; allowed: "
                                      f"{', '.join(sorted(FUNCTIONS))}")
            lo, hi = FUNCTIONS[name]
            if node.keywords or not lo <= len(node.args) <= hi:
                n = str(lo) if lo == hi else f"{lo} to {hi}"
                raise self.fail(node, f"{name}() takes {n} positional argument(s), got "
                                      f"{len(node.args) + len(node.keywords)}")
            n = node.args[1] if name == "combinations" else None
            if n is not None and not (isinstance(n, ast.Constant) and type(n.value) is int and 2 <= n.value <= 5):
                raise self.fail(node.args[1], "combinations(C, n) needs an integer n from 2 to 5")
            for arg in node.args:
                self._grammar(arg)
            return
        elif isinstance(node, (ast.expr_context, ast.boolop, ast.operator, ast.unaryop, ast.cmpop)):
            return
        else:
            raise self.fail(node, f"{type(node).__name__} is not allowed here (use collections, "
                                  "fields, numbers, comparisons, arithmetic, and/or/not, functions)")
        for child in ast.iter_child_nodes(node):
            self._grammar(child)

    def __repr__(self) -> str:
        return f"Expr({self.text!r})"

    def __str__(self) -> str:
        return self.text

    def __getstate__(self) -> dict:
        return {"text": self.text, "where": self.where, "tree": self.tree}

