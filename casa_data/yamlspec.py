"""Load YAML into pydantic models with errors that point at file, line and column."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .errors import CatalogError

__all__ = ["load_yaml", "validate_yaml", "locate"]

M = TypeVar("M", bound=BaseModel)


MAX_ALIAS_NODES = 10_000   # nodes added by expanding YAML aliases (billion-laughs bombs are refused)
MAX_DEPTH = 200            # nesting of mappings and sequences

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: one fast parse


def _where(path: Path, mark: Any) -> str:
    return f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)


def _check_tree(root: yaml.Node, path: Path, error: type[Exception]) -> None:
    """Refuse duplicate mapping keys, alias bombs and excessive nesting, walking each node once."""
    size: dict[int, int] = {}  # id(node) -> nodes once every alias below it is expanded
    # iterative post-order walk (no recursion limit), each distinct node visited once
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    distinct = 0
    while stack:
        node, depth, done = stack.pop()
        if done:
            kids = ([k for pair in node.value for k in pair] if isinstance(node, yaml.MappingNode)
                    else node.value if isinstance(node, yaml.SequenceNode) else [])
            size[id(node)] = 1 + sum(size[id(k)] for k in kids)
            continue
        if id(node) in size:
            continue
        size[id(node)] = 0  # in progress (YAML aliases cannot form cycles in the composed tree)
        distinct += 1
        if depth > MAX_DEPTH:
            raise error(f"{_where(path, node.start_mark)}: YAML nested more than {MAX_DEPTH} levels deep")
        stack.append((node, depth, True))
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple, yaml.Node] = {}
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                    ident = (k.tag, k.value)
                    if ident in seen:
                        first = seen[ident]
                        raise error(f"{_where(path, k.start_mark)}: duplicate key {k.value!r}: already at line "
                                    f"{first.start_mark.line + 1} of {path.name} (YAML keeps only the last one; "
                                    "remove or rename one of them)")
                    seen[ident] = k
                for child in (v, k):
                    if id(child) not in size:
                        stack.append((child, depth + 1, False))
        elif isinstance(node, yaml.SequenceNode):
            for child in reversed(node.value):
                if id(child) not in size:
                    stack.append((child, depth + 1, False))
    expanded = size[id(root)]
    if expanded - distinct > MAX_ALIAS_NODES:
        raise error(f"{path}: YAML aliases (*name) expand to {expanded:,} nodes from {distinct:,} written; "
                    f"at most {MAX_ALIAS_NODES:,} nodes may come from aliases (write the content out)")


def load_yaml(path: Path, error: type[Exception] = CatalogError) -> tuple[Any, yaml.Node | None]:
    """Parse ``path`` once; return the data and the node tree (for line numbers).

    Every problem is ``error`` with ``file:line:column``: malformed YAML, invalid UTF-8, duplicate
    keys (YAML would silently keep the last), alias bombs, nesting deeper than :data:`MAX_DEPTH`.
    """
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        col = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise error(f"{path}:{line}:{col}: not valid UTF-8 (byte {raw[err.start:err.start + 1]!r} at offset "
                    f"{err.start}); save the file as UTF-8") from None
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            problem = getattr(err, "problem", None) or str(err)
            raise error(f"{_where(path, mark)}: malformed YAML: {problem}") from None
        if node is None:
            return None, None
        _check_tree(node, path, error)
        try:
            data = loader.construct_document(node)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
            problem = getattr(err, "problem", None) or str(err)
            raise error(f"{_where(path, mark)}: malformed YAML: {problem}") from None
        except (ValueError, TypeError, OverflowError, RecursionError) as err:  # e.g. a date 2024-13-45
            raise error(f"{path}: a value cannot be read: {type(err).__name__}: {err}") from None
    finally:
        loader.dispose()
    return data, node


def locate(node: yaml.Node | None, loc: tuple) -> tuple[int, int] | None:
    """(line, column), 1-based, of the element at pydantic location ``loc`` (nearest found)."""
    best = None
    for key in loc:
        if node is None:
            break
        best = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if k.value == str(key):
                    best = (k.start_mark.line + 1, k.start_mark.column + 1)
                    nxt = v
                    break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            node = None
    if node is not None:
        best = (node.start_mark.line + 1, node.start_mark.column + 1)
    return best


def format_validation_error(err: ValidationError, path: Path, node: yaml.Node | None, prefix: tuple = ()) -> str:
    lines = []
    for e in err.errors():
        loc = prefix + tuple(e["loc"])
        pos = locate(node, loc)
        where = f"{path}:{pos[0]}:{pos[1]}" if pos else str(path)
        field = ".".join(str(x) for x in loc) or "(top)"
        lines.append(f"{where}: {field}: {e['msg']}")
    return "\n".join(lines)


def validate_yaml(model: type[M], data: Any, path: Path, node: yaml.Node | None,
                  prefix: tuple = (), error: type[Exception] = CatalogError, context: dict | None = None) -> M:
    """``model.model_validate(data)``, re-raising errors as ``error`` with file:line:column."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as err:
        raise error(format_validation_error(err, path, node, prefix)) from None
