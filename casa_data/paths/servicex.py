"""ServiceX: a delivery path that runs a query over a dataset's files and delivers new files.

A :class:`~casa_data.paths.base.QueryPath` (``Capability.QUERY``): ``casa_data.open(name,
query=...)`` or ``casa_data.open(name, via="servicex", columns=...)`` (the default query: an
UprootRaw selection of those columns) deliver through :func:`casa_data.servicex.client.deliver_query`,
which wraps the unmodified ``servicex`` client. Options: ``paths: {servicex: {endpoint,
token_file, poll_interval, down_timeout, workers}}`` (read by the client).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import MissingFileError, TransformError
from .base import Capability, Delivery, QueryPath

__all__ = ["ServiceXPath"]

_MISSING = re.compile(r"no such file|FileNotFoundError|does not exist", re.I)


def _failure(file: str, message: str) -> BaseException:
    """A transform's per-file failure as a casa error (a missing input: MissingFileError)."""
    return MissingFileError(file, message) if _MISSING.search(message) else TransformError(message)


class ServiceXPath(QueryPath):
    """Columnar results of a query (func_adl, UprootRaw, python) delivered by a ServiceX endpoint."""

    name = "servicex"
    schemes = ()
    capabilities = frozenset({Capability.QUERY})

    def check(self, url: str | None = None, timeout: float = 3.0) -> None:
        """``GET /servicex`` on the endpoint (``url``, else the configured or local one)."""
        from ..servicex.client import check_endpoint, endpoint_url

        check_endpoint(endpoint_url(url or self.options.get("endpoint")), timeout)

    def deliver(self, dataset: Any, query: Any, *, inputs: Callable[[Any], list[str]],
                **options: Any) -> Delivery:
        from ..servicex.client import deliver_query

        r = deliver_query(dataset, query, inputs=inputs, **options)
        info = {k: r[k] for k in ("request_id", "endpoint", "cache_hit")}
        return Delivery(r["name"], r["files"], r["format"], r["tree"],
                        {f: _failure(f, m) for f, m in r["failures"].items()}, {"servicex": info},
                        label=f"{r['name']} (ServiceX request {r['request_id']})")

    def default_query(self, tree: str, columns: Sequence[str] | None, cut: str | None = None) -> Any:
        """An UprootRaw query: ``filter_name`` = ``columns``, ``cut`` in uproot's language."""
        query: dict[str, Any] = {"treename": tree}
        if columns is not None:
            query["filter_name"] = list(columns)
        if cut:
            query["cut"] = cut
        return query
