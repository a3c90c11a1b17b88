"""The pipeline expression language: a whitelisted subset of Python syntax over NanoAOD collections.

Never evaluated as Python: a superset of casa's filter language, parsed by the one expression
core (:func:`casa_data.expr.parse`: its size and depth limits, grammar check and bounded constant
folding), then :mod:`.check` types it against the input's columns and :mod:`.processor` walks the
tree with the core's evaluator, extended by objects, fields and the functions below.

Grammar (Python syntax, a small subset):

* numbers, ``True``/``False``, names (collections, fields, variables, parameters);
* ``x.field``, ``C[0]`` (the first object, missing if there is none), ``C[1:3]`` (a slice),
  ``C[pt > 30]`` (the objects passing a cut; names inside resolve to fields of ``C`` first);
* ``+ - * / // % **``, comparisons (chains allowed), ``and or not`` (also ``& | ~``);
  ``a + b`` of two objects is their four-momentum sum (``(Muon[0] + Muon[1]).mass``);
* functions (:data:`FUNCTIONS`): elementwise ``abs sqrt exp log sin cos tan sinh cosh tanh
  where(cond, a, b)``; reductions over the innermost list ``count sum any all min max``;
  ``combinations(C, n)`` (n-object combinations with ``pt eta phi mass`` of their sum and their
  ``members``); ``best(C, key)`` (the object with the largest ``key``); ``delta_r(a, b)``;
* ``normal(mean, sigma)``: a Gaussian random number per object (inside an object context, e.g. a
  shape variation of ``Jet.pt``) or per event, from a counter-based stream seeded by the event's
  identity (``run``, ``luminosityBlock``, ``event``), the object's index, the variation's name and
  ``parameters.seed``: the same value whatever the chunking, worker or order (:mod:`.variations`);
* ``corr("name", x, ...)``: a correctionlib correction declared under ``corrections:``; text
  arguments (``"up"``) are allowed here only.
"""

from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass
from pathlib import Path

from casa_data.errors import CasaError
from casa_data.expr import ExprError, Language, parse
from casa_data.expr.core import MATH, REDUCERS, position, reject

__all__ = ["PipelineError", "Where", "Expr", "FUNCTIONS", "PIPELINE"]

#: name -> (min args, max args)
FUNCTIONS: dict[str, tuple[int, int]] = {
    **{f: (1, 1) for f in (*MATH, *REDUCERS)},
    "where": (3, 3), "combinations": (2, 2), "best": (2, 2), "delta_r": (2, 2),
    "normal": (2, 2), "corr": (1, 8),
}


@dataclass(frozen=True)
class _Pipeline(Language):
    def check_call(self, node: ast.Call) -> None:
        n = node.args[1] if node.func.id == "combinations" else None  # type: ignore[attr-defined]
        if n is not None and not (isinstance(n, ast.Constant) and type(n.value) is int and 2 <= n.value <= 5):
            raise reject(n, "combinations(C, n) needs an integer n from 2 to 5")


#: the pipeline language: the filter language plus objects, fields, subscripts and more functions
PIPELINE = _Pipeline("an expression", FUNCTIONS, objects=True, private_names=False,
                     hint="collections, fields, numbers, comparisons, arithmetic, and/or/not, functions")


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
        #: (line, col) of a text constant in ``self.text`` -> its value (only corr() takes text)
        self.strings: dict[tuple[int, int], str] = {}
        try:
            self.tree: ast.expr = parse(self._texts(), PIPELINE)
        except ExprError as err:
            raise self.where.error(err.msg, err.lineno, err.col) from None
        self._check_texts()

    def _texts(self) -> str:
        """The text with each string literal replaced by a number of the same width (the core
        grammar has numbers only); ``self.strings`` remembers where each was."""
        if '"' not in self.text and "'" not in self.text:
            return self.text
        lines = self.text.splitlines(keepends=True)
        try:
            toks = [t for t in tokenize.generate_tokens(io.StringIO(self.text).readline)
                    if t.type == tokenize.STRING]
        except (tokenize.TokenError, SyntaxError, IndentationError):
            return self.text  # the parser reports the error
        for t in reversed(toks):
            (r, c), (r2, c2) = t.start, t.end
            try:
                value = ast.literal_eval(t.string)
            except (ValueError, SyntaxError):
                continue
            if r != r2 or not isinstance(value, str) or len(t.string) < 2:
                continue
            self.strings[(r, c)] = value
            lines[r - 1] = lines[r - 1][:c] + "1" + "0" * (len(t.string) - 1) + lines[r - 1][c2:]
        return "".join(lines)

    def _check_texts(self) -> None:
        if not self.strings:
            return
        allowed = {(a.lineno, a.col_offset) for n in ast.walk(self.tree)
                   if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "corr" for a in n.args}
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Constant) and (node.lineno, node.col_offset) in self.strings \
                    and (node.lineno, node.col_offset) not in allowed:
                raise self.fail(node, "text constants are only allowed as arguments of corr()")
        first = [n.args[0] for n in ast.walk(self.tree)
                 if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "corr"]
        for a in first:
            if self.text_of(a) is None:
                raise self.fail(a, 'corr() takes the correction\'s name first, as text: corr("name", ...)')

    def text_of(self, node: ast.AST) -> str | None:
        """The text constant at ``node`` (an argument of corr()), or None."""
        if isinstance(node, ast.Constant):
            return self.strings.get((node.lineno, node.col_offset))
        return None

    @property
    def key(self) -> str:
        return self.where.field

    def fail(self, node: ast.AST | None, message: str) -> PipelineError:
        """A located error about ``node`` (or the whole expression)."""
        if node is None or not hasattr(node, "lineno"):
            return self.where.error(message)
        return self.where.error(message, *position(node))

    def __repr__(self) -> str:
        return f"Expr({self.text!r})"

    def __str__(self) -> str:
        return self.text

    def __getstate__(self) -> dict:
        return {"text": self.text, "where": self.where, "tree": self.tree, "strings": self.strings}
