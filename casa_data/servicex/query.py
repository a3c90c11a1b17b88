"""Query translation for ServiceX requests: what a request's selection means, checked before it runs.

Three code generators, as on a real ServiceX:

* ``uproot``: func_adl qastle -> ``func_adl_uproot.generate_python_source`` (the same code the
  ServiceX uproot transformer runs).
* ``uproot-raw``: a JSON list of ``{treename, expressions, cut, filter_name, filter_typename,
  aliases}`` (``treename``: a name, a list or ``{input: output}``) or ``{copy_histograms}``; each
  tree entry is ``tree.arrays(...)`` of that tree, its cut evaluated by casa's expression core.
* ``python``: base64 source of a function taking the input file name (ServiceX's ``PythonFunction``).

Used by the client (to fail fast, before submitting) and by casa's endpoint (a bad query is a 400,
never a failed transform). Running a query is the endpoint's job (``casa_facility.servicex.transform``).
"""


from __future__ import annotations

import ast
import base64
import binascii
import hashlib
import json
from pathlib import PurePosixPath
from typing import Any

__all__ = ["CODEGENS", "QueryError", "compile_query", "object_name"]

CODEGENS = {"uproot": "casa/func-adl-uproot", "uproot-raw": "casa/uproot-raw", "python": "casa/python"}
_RAW_KEYS = {"treename", "expressions", "cut", "filter_name", "filter_typename", "aliases",
             "fail_on_missing_trees", "use_standard_awkward_axis", "copy_histograms"}


class QueryError(ValueError):
    """A query that cannot be compiled; the message points at the offending part."""


def compile_query(codegen: str, selection: str, result_format: str) -> tuple[str, str | None]:
    """``(generated code, tree name or None)`` for a request; raises :class:`QueryError`."""
    if codegen == "uproot":
        return _compile_func_adl(selection)
    if codegen == "uproot-raw":
        return _compile_raw(selection, result_format)
    if codegen == "python":
        return _compile_python(selection)
    raise QueryError(f"unknown codegen {codegen!r}; this endpoint has: {', '.join(CODEGENS)}")


def _compile_func_adl(selection: str) -> tuple[str, str | None]:
    import qastle
    from func_adl_uproot import generate_python_source

    try:
        tree_ast = qastle.text_ast_to_python_ast(selection)
    except Exception as err:  # lark raises many kinds: all mean "not qastle"
        raise QueryError(f"the selection is not valid qastle: {_one_line(err)}") from None
    tree = _event_dataset_tree(tree_ast)
    try:
        source = generate_python_source(selection)
        compile(source, "<func_adl_uproot>", "exec")
    except Exception as err:
        raise QueryError(f"func_adl_uproot cannot translate the query: {_one_line(err)}") from None
    return source, tree


def _event_dataset_tree(tree_ast: ast.AST) -> str | None:
    for node in ast.walk(tree_ast):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "EventDataset":
            args = [a.value for a in node.args if isinstance(a, ast.Constant)]
            return args[1] if len(args) > 1 else None
    raise QueryError("the query has no EventDataset: start it with FuncADL_Uproot().FromTree('Events')")


def raw_trees(q: dict[str, Any]) -> dict[str, str]:
    """An uproot-raw entry's ``treename`` as ``{input tree: output tree}`` (a string, a list of
    names or a mapping, as the upstream transformer takes it); ``{}`` for a histogram-only entry."""
    trees = q.get("treename")
    if trees is None:
        return {}
    if isinstance(trees, str):
        return {trees: trees}
    if isinstance(trees, list):
        return {t: t for t in trees}
    return dict(trees)


def _names(value: Any) -> bool:
    """A name pattern: a string or a list of strings."""
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


def _compile_raw(selection: str, result_format: str) -> tuple[str, str | None]:
    """The request forms the upstream uproot-raw transformer takes: entries with ``treename`` (a
    string, a list, or ``{input: output}``), ``filter_name``/``filter_typename``, ``expressions``
    (branch names), ``cut`` (checked by casa's safe expression core, never ``eval``: see
    :mod:`casa_data.expr.uproot_raw`), ``aliases``; entries with ``copy_histograms`` (name
    patterns) copy histograms; ``use_standard_awkward_axis`` is accepted (the output's shape is
    the same either way)."""
    from casa_data.errors import FilterError
    from casa_data.expr.uproot_raw import RawCut

    try:
        queries = json.loads(selection)
    except json.JSONDecodeError as err:
        raise QueryError(f"the uproot-raw selection is not JSON: {err}") from None
    if isinstance(queries, dict):
        queries = [queries]
    if not isinstance(queries, list) or not queries or not all(isinstance(q, dict) for q in queries):
        raise QueryError("an uproot-raw selection is a non-empty list of {treename, ...} dicts")
    outputs: list[str] = []
    for i, q in enumerate(queries):
        unknown = sorted(set(q) - _RAW_KEYS)
        if unknown:
            raise QueryError(f"uproot-raw entry {i}: unknown key(s) {unknown}; allowed: {sorted(_RAW_KEYS)}")
        trees = q.get("treename")
        if trees is None:
            if "copy_histograms" not in q:
                raise QueryError(f"uproot-raw entry {i}: 'treename' (a name, a list of names or "
                                 "{input: output}) or 'copy_histograms' is required")
            if not _names(q["copy_histograms"]):
                raise QueryError(f"uproot-raw entry {i}: 'copy_histograms' is a name pattern or a list of them")
            continue
        valid = (_names(trees) and trees != []) or (
            isinstance(trees, dict) and trees and all(isinstance(k, str) and isinstance(v, str) and v
                                                      for k, v in trees.items()))
        if not valid:
            raise QueryError(f"uproot-raw entry {i}: 'treename' must be a tree name, a list of names or "
                             f"{{input tree: output tree}}, not {trees!r}")
        for key in ("filter_name", "filter_typename"):
            if q.get(key) is not None and not _names(q[key]):
                raise QueryError(f"uproot-raw entry {i}: {key!r} is a name pattern or a list of them")
        exprs = q.get("expressions")
        for expr in [exprs] if isinstance(exprs, str) else (exprs or []):
            if not isinstance(expr, str) or not expr.replace("_", "a").replace(".", "a").replace("/", "a").isalnum():
                raise QueryError(f"uproot-raw entry {i}: expressions {expr!r}: this endpoint takes branch "
                                 "names in 'expressions' (compute new values in 'cut' or with a python query)")
        if q.get("cut") is not None:
            try:
                RawCut(q["cut"])
            except FilterError as err:
                raise QueryError(f"uproot-raw entry {i}: {err}") from None
        outputs += list(raw_trees(q).values())
    if not outputs and result_format == "parquet":
        raise QueryError("the uproot-raw query reads no tree (only copy_histograms): ask for root-ttree output")
    if result_format == "parquet" and len(set(outputs)) > 1:
        raise QueryError(f"parquet output holds one tree but the query writes {sorted(set(outputs))}; "
                         "ask for root-ttree output or send one query per tree")
    return json.dumps(queries), (outputs[0] if outputs else None)


def _compile_python(selection: str) -> tuple[str, str | None]:
    try:
        source = base64.b64decode(selection, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise QueryError("a python selection is base64-encoded source (PythonFunction does this)") from None
    try:
        module = ast.parse(source)
    except SyntaxError as err:
        raise QueryError(f"the python function does not parse: line {err.lineno}: {err.msg}") from None
    if not any(isinstance(n, ast.FunctionDef) for n in module.body):
        raise QueryError("the python selection defines no function to call")
    return source, None


def object_name(path: str, result_format: str) -> str:
    """Output object for an input: ``<stem>-<hash8>.parquet|.root`` (unique, no ``:`` or ``/``).

    ServiceX names objects after the whole input path with ``/`` -> ``:``; a short hash keeps names
    unique without colons (uproot reads ``a:b`` as ``file:object``), and parquet names carry no
    ``.root`` (servicex-analysis-utils opens anything containing ``.root`` as ROOT).
    """
    stem = PurePosixPath(path.split("?")[0]).name
    for ext in (".root", ".parquet", ".parq"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
    digest = hashlib.sha1(path.encode()).hexdigest()[:8]
    return f"{stem[:100]}-{digest}.{'parquet' if result_format == 'parquet' else 'root'}"


def _one_line(err: BaseException, limit: int = 400) -> str:
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
