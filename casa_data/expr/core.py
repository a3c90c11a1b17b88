"""The expression core: one parser with every limit, the shared grammar check, constant folding.

:func:`parse` turns text into a checked :mod:`ast` tree (never evaluated as Python):

1. cheap checks on the text first (length, bracket nesting, a token estimate of the tree depth),
   so :func:`ast.parse`, which recurses, never sees text that could exhaust its stack;
2. ``ast.parse`` (multi-line text is parsed parenthesised; line numbers stay the text's own);
3. the tree's size and depth (:data:`MAX_NODES`, :data:`MAX_DEPTH`);
4. the grammar of a :class:`Language` (the filter language and the pipeline language, a superset);
5. bounded constant folding: constants become int64-sized ints or finite floats, arithmetic on
   constants is computed without big integers (``10**10**10`` is rejected, never computed).

Every rejection is an :class:`ExprError` (a :class:`~casa_data.errors.FilterError`) that carries
the line and column it is about; the filter and the pipeline re-word it into their own located
errors.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..errors import FilterError

__all__ = ["ExprError", "Language", "parse", "position", "MAX_CHARS", "MAX_DEPTH", "MAX_NODES",
           "MATH", "REDUCERS", "BINOPS", "CMPOPS"]

MAX_CHARS = 10_000   #: characters of text
MAX_DEPTH = 64       #: nesting of the syntax tree (also of brackets)
MAX_NODES = 2_000    #: nodes of the syntax tree
_PRE_DEPTH = 4 * MAX_DEPTH  # the token estimate over-counts (precedence), so it gets more room
_INT_MAX = 2**63 - 1         # integer constants beyond int64 become floats

#: elementwise functions and per-list reductions (one argument each)
MATH = ("abs", "sqrt", "exp", "log", "sin", "cos", "tan", "sinh", "cosh", "tanh")
REDUCERS = ("count", "sum", "any", "all", "min", "max")
BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.BitAnd, ast.BitOr)
CMPOPS = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_UNARY = (ast.Not, ast.USub, ast.UAdd, ast.Invert)


class ExprError(FilterError):
    """An expression is rejected; ``lineno`` (1-based) and ``col`` (0-based) say where."""

    def __init__(self, msg: str, lineno: int = 1, col: int = 0):
        super().__init__(msg)
        self.msg, self.lineno, self.col = msg, lineno, col


def position(node: ast.AST) -> tuple[int, int]:
    """(line, column offset) an error about ``node`` points at (a field: its name)."""
    line, col = getattr(node, "lineno", 1), getattr(node, "col_offset", 0)
    if isinstance(node, ast.Attribute) and node.end_lineno == node.lineno and node.end_col_offset is not None:
        col = node.end_col_offset - len(node.attr)
    return line, col


def reject(node: ast.AST, msg: str) -> ExprError:
    return ExprError(msg, *position(node))


@dataclass(frozen=True)
class Language:
    """What a language allows; :meth:`check_call` is the hook for a superset's extra rules."""

    what: str                                     # "a filter", "an expression": for messages
    functions: Mapping[str, tuple[int, int]]      # name -> (min args, max args)
    hint: str = "columns, numbers, comparisons, arithmetic, and/or/not"
    objects: bool = False                         # x.field, C[0], C[0:2], C[cut]
    private_names: bool = True                    # names starting with "_" are allowed

    def check_call(self, node: ast.Call) -> None:
        """Extra checks of a call whose name and argument count are valid."""


# -- 1. text limits, before ast.parse -------------------------------------------------------------
_TOKEN = re.compile(r"""
  (?P<skip>\s+|\\\n|\#[^\n]*)
| (?P<num>0[xXoObB][0-9a-fA-F_]*|(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][+-]?\d[\d_]*)?[jJ]?)
| (?P<name>[^\W\d]\w*)
| (?P<open>[(\[{])
| (?P<close>[)\]}])
| (?P<flat>==|!=|<=|>=|:=|<|>|,|:|;)
| (?P<deep>\*\*|//|<<|>>|[-+*/%@&|^~.=!])
| (?P<other>.)
""", re.VERBOSE | re.DOTALL)
_FLAT_WORDS = {"and", "or", "in", "is"}
_DEEP_WORDS = {"not", "if", "else", "lambda", "for", "await", "yield"}


def _check_text(text: str) -> None:
    """Reject text whose parse could exhaust ast.parse's stack: length, brackets, operator chains.

    The depth estimate is an upper bound of the tree's depth: per bracket level, the operators of
    the current operand run (up to ``and``/``or``/a comparison/a comma) plus its deepest bracket.
    """
    if len(text) > MAX_CHARS:
        raise ExprError(f"the text is too long: {len(text)} characters (at most {MAX_CHARS})")
    stack: list[list[int]] = [[0, 0, 0]]  # per bracket level: [operators, deepest group, best so far]
    for m in _TOKEN.finditer(text):
        kind, tok = m.lastgroup, m.group()
        if kind == "name":
            kind = "flat" if tok in _FLAT_WORDS else "deep" if tok in _DEEP_WORDS else "name"
        top = stack[-1]
        if kind == "open":
            top[0] += 1  # a call, subscript or group is one level more
            if len(stack) > MAX_DEPTH:
                raise ExprError(f"brackets nested too deeply (at most {MAX_DEPTH} levels)", *_where(text, m.start()))
            stack.append([0, 0, 0])
        elif kind == "close" and len(stack) > 1:
            inner = stack.pop()
            top = stack[-1]
            top[1] = max(top[1], max(inner[2], inner[0] + inner[1]) + 1)
        elif kind == "flat":
            top[2], top[0], top[1] = max(top[2], top[0] + top[1]), 0, 0
        elif kind == "deep":
            top[0] += 1
        if top[0] + top[1] + len(stack) > _PRE_DEPTH:
            raise ExprError(f"nested too deeply: too many operators in a row (the expression may be "
                            f"at most {MAX_DEPTH} levels deep)", *_where(text, m.start()))


def _where(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1)


# -- 2./3. parse, size and depth --------------------------------------------------------------------
def parse(text: str, lang: Language) -> ast.expr:
    """The checked, folded tree of ``text`` in ``lang``; raises :class:`ExprError`."""
    _check_text(text)
    multi = "\n" in text
    source, shift = (f"(\n{text}\n)", 1) if multi else (text, 0)
    try:
        body = ast.parse(source, mode="eval").body
    except SyntaxError as err:
        lines = text.splitlines() or [""]
        lineno = min(max(1, (err.lineno or 1) - shift), len(lines))
        col = max(0, (err.offset or 1) - 1) if (err.lineno or 1) - shift >= 1 else 0
        raise ExprError(f"syntax error: {err.msg}", lineno, min(col, len(lines[lineno - 1]))) from None
    except ValueError as err:  # e.g. a null byte
        raise ExprError(f"cannot parse: {err}") from None
    except (RecursionError, MemoryError) as err:  # a backstop: the text checks come first
        raise ExprError(f"the expression is too complex to parse ({type(err).__name__})") from None
    if shift:
        for node in ast.walk(body):
            if isinstance(node, (ast.expr, ast.keyword, ast.arg)):
                node.lineno -= shift
                node.end_lineno = (node.end_lineno or 1 + shift) - shift
    _check_size(body)
    _Grammar(lang).check(body)
    folded: ast.expr = _Folder().visit(body)
    return folded


def _check_size(body: ast.AST) -> None:
    """At most MAX_NODES nodes and MAX_DEPTH levels (walked without recursion)."""
    todo, n = [(body, 1)], 0
    while todo:
        node, depth = todo.pop()
        n += 1
        if n > MAX_NODES:
            raise ExprError(f"the expression is too large: more than {MAX_NODES} parts")
        if depth > MAX_DEPTH:
            raise reject(node, f"nested too deeply: more than {MAX_DEPTH} levels")
        todo.extend((c, depth + 1) for c in ast.iter_child_nodes(node)
                    if not isinstance(c, (ast.expr_context, ast.boolop, ast.operator, ast.unaryop, ast.cmpop)))


# -- 4. grammar ----------------------------------------------------------------------------------------
class _Grammar:
    def __init__(self, lang: Language):
        self.lang = lang

    def check(self, node: ast.AST) -> None:
        lang = self.lang
        if isinstance(node, ast.BoolOp):
            pass
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, _UNARY):
                raise reject(node, f"operator {type(node.op).__name__} is not allowed")
        elif isinstance(node, ast.BinOp):
            if not isinstance(node.op, BINOPS):
                raise reject(node, f"operator {type(node.op).__name__} is not allowed")
        elif isinstance(node, ast.Compare):
            for op in node.ops:
                if not isinstance(op, CMPOPS):
                    raise reject(node, f"comparison {type(op).__name__} is not allowed; "
                                       "only == != < <= > >= comparisons are allowed")
        elif isinstance(node, ast.Name):
            if node.id.startswith("_") and not lang.private_names:
                raise reject(node, f"names starting with '_' are not allowed: {node.id!r}")
        elif isinstance(node, ast.Constant):
            v = node.value
            if not isinstance(v, (int, float)):  # bool is an int
                raise reject(node, f"only numbers and True/False are allowed as constants, not {v!r}")
        elif isinstance(node, ast.Call):
            self.call(node)
            return
        elif lang.objects and isinstance(node, ast.Attribute):
            if node.attr.startswith("_"):
                raise reject(node, f"fields starting with '_' are not allowed: {node.attr!r}")
        elif lang.objects and isinstance(node, ast.Subscript):
            if isinstance(node.slice, ast.Slice) and node.slice.step is not None:
                raise reject(node.slice, "slices with a step are not allowed")
        elif lang.objects and isinstance(node, ast.Slice):
            for part in (node.lower, node.upper):
                if part is not None and not (isinstance(part, ast.Constant) and type(part.value) is int):
                    raise reject(part, "slice bounds must be integer constants from 0, e.g. Jet[0:4]")
        else:
            raise reject(node, f"{type(node).__name__} is not allowed in {lang.what} (use {lang.hint})")
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, (ast.expr_context, ast.boolop, ast.operator, ast.unaryop, ast.cmpop)):
                self.check(child)

    def call(self, node: ast.Call) -> None:
        fns = self.lang.functions
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name is None or name not in fns:
            raise reject(node, f"unknown function {ast.unparse(node.func)!r} is not allowed; allowed: "
                               f"{', '.join(sorted(fns))}")
        lo, hi = fns[name]
        if node.keywords or not lo <= len(node.args) <= hi:
            n = str(lo) if lo == hi else f"{lo} to {hi}"
            raise reject(node, f"{name}() takes {n} positional argument(s), got "
                               f"{len(node.args) + len(node.keywords)}")
        self.lang.check_call(node)
        for arg in node.args:
            self.check(arg)


# -- 5. bounded constant folding -------------------------------------------------------------------
def _number(node: ast.AST) -> int | float | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    return None


def bounded(value: int | float, node: ast.AST) -> int | float:
    """``value`` as an int64-sized int or a finite float; beyond the float range is an error."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if -_INT_MAX <= value <= _INT_MAX:
            return value
        if value.bit_length() > 1024:
            raise reject(node, "number beyond the float range (about 1.8e308)")
        try:
            value = float(value)
        except OverflowError:
            raise reject(node, "number beyond the float range (about 1.8e308)") from None
    if not math.isfinite(value):
        raise reject(node, "number beyond the float range (about 1.8e308)" if not math.isnan(value)
                     else "the constant is not a number (nan)")
    return value


def _power(a: int | float, b: int | float, node: ast.AST) -> int | float:
    """``a ** b`` without big integers: exact while it fits int64, else a float (or an error)."""
    a, b = (int(x) if isinstance(x, bool) else x for x in (a, b))
    if isinstance(a, int) and isinstance(b, int) and b >= 0:
        if a in (0, 1):
            return a if b else 1
        if a == -1:
            return -1 if b % 2 else 1
        if b * math.log2(abs(a)) < 64:  # bounded() turns a result beyond int64 into a float
            exact: int = a ** b
            return exact
    if a == 0 and b < 0:
        raise reject(node, "0 to a negative power (division by zero)")
    if a < 0 and not float(b).is_integer():
        raise reject(node, "a negative number to a fractional power is not a real number")
    try:
        return bounded(math.pow(float(a), float(b)), node)
    except OverflowError:
        raise reject(node, "number beyond the float range (about 1.8e308)") from None


class _Folder(ast.NodeTransformer):
    """Computes arithmetic on constants; leaves logic (``not & |``) and bool-only parts alone."""

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            node.value = bounded(node.value, node)
        return node

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        v = _number(node.operand)
        if v is None or not isinstance(node.op, (ast.USub, ast.UAdd)):
            return node
        return self._const(node, -v if isinstance(node.op, ast.USub) else +v)

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        a, b = _number(node.left), _number(node.right)
        if a is None or b is None or isinstance(node.op, (ast.BitAnd, ast.BitOr)):
            return node
        if isinstance(node.op, ast.Pow):
            return self._const(node, _power(a, b, node))
        if b == 0 and isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)):
            raise reject(node, "division by zero")
        ops: dict[type, Callable[[], int | float]] = {
            ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
            ast.Div: lambda: a / b, ast.FloorDiv: lambda: a // b, ast.Mod: lambda: a % b}
        try:
            return self._const(node, ops[type(node.op)]())
        except OverflowError:
            raise reject(node, "number beyond the float range (about 1.8e308)") from None

    @staticmethod
    def _const(node: ast.AST, value: int | float) -> ast.Constant:
        out = ast.Constant(bounded(value, node))
        ast.copy_location(out, node)
        return out
