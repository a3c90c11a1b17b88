"""Load YAML into pydantic models with errors that point at file, line and column."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .errors import CatalogError

__all__ = ["load_yaml", "validate_yaml", "locate"]

M = TypeVar("M", bound=BaseModel)


def load_yaml(path: Path, error: type[Exception] = CatalogError) -> tuple[Any, yaml.Node | None]:
    """Parse ``path``; return the data and the node tree (for line numbers)."""
    text = path.read_text()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err)
        raise error(f"{where}: malformed YAML: {problem}") from None
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
