"""The Skyhook wire protocol: one JSON request, validated the same way by client and server.

A request travels as a Flight descriptor command (``GetFlightInfo``: a file or a directory) and
as a ticket (``DoGet``: one file). The filter travels as its *text* and is re-parsed on the
server by :class:`~casa_data.expr.Filter`, a whitelisted AST that is never evaluated as Python.
We chose the text over Substrait because the same ``Filter`` then runs on both sides (identical
results by construction) and because it expresses per-event reductions over jagged columns
(``any(Muon_pt > 20)``, ``count(...)``) that Arrow expressions, hence Substrait plans, cannot.
Tried and measured (pyarrow 26): binding a ``pyarrow.compute`` expression to a NanoAOD Parquet
schema for Substrait fails on its ``large_list`` columns, and even on flat ones ``nMuon >= 2``
fails ("only capable of representing unsafe casts") because uint32 vs int64 needs a cast.

Errors cross the wire as a Flight error whose ``extra_info`` is JSON ``{"kind": ..., ...}`` so
the client raises the same casa error class the client-side read would.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import CasaError, FilterError
from ..expr import Filter

__all__ = ["HistSpec", "Request", "decode", "MAX_REQUEST", "MAX_FILTER", "MAX_BINS", "fill_values"]

MAX_REQUEST = 256 * 1024     # bytes of one JSON request
MAX_FILTER = 4096            # characters of a filter or histogram expression
MAX_BINS = 1_000_000
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
FORMATS = {".parquet": "parquet", ".parq": "parquet", ".pq": "parquet", ".arrow": "ipc",
           ".feather": "ipc", ".ipc": "ipc", ".root": "root"}


class HistSpec(BaseModel):
    """A histogram to fill server-side: ``expr`` (a column or expression), regular or variable bins."""

    model_config = ConfigDict(extra="forbid")
    expr: str = Field(min_length=1, max_length=MAX_FILTER)
    bins: int | None = Field(None, ge=1, le=MAX_BINS)
    range: tuple[FiniteFloat, FiniteFloat] | None = None
    edges: list[FiniteFloat] | None = Field(None, min_length=2, max_length=MAX_BINS + 1)
    weight: str | None = Field(None, max_length=MAX_FILTER)

    @model_validator(mode="after")
    def _binning(self) -> HistSpec:
        if self.edges is None and (self.bins is None or self.range is None):
            raise ValueError("give bins= and range=(lo, hi), or edges=[...]")
        if self.edges is not None and (self.bins is not None or self.range is not None):
            raise ValueError("give either edges= or bins= with range=, not both")
        if self.range is not None and not self.range[0] < self.range[1]:
            raise ValueError(f"range {self.range} must be (lo, hi) with lo < hi")
        if self.edges is not None and any(b <= a for a, b in zip(self.edges, self.edges[1:])):
            raise ValueError("edges must increase strictly")
        return self

    def axis(self):
        import boost_histogram as bh

        if self.edges is not None:
            return bh.axis.Variable(self.edges)
        return bh.axis.Regular(self.bins, *self.range)

    def filters(self) -> tuple[Filter, Filter | None]:
        """``expr`` and ``weight`` parsed by the same safe parser as filters."""
        return Filter(self.expr), (Filter(self.weight) if self.weight else None)


class Request(BaseModel):
    """What to scan: ``path`` (file or directory under the server root), columns, filter, tree."""

    model_config = ConfigDict(extra="forbid")
    v: Literal[1] = 1
    path: str = Field("", max_length=4096)
    columns: list[str] | None = Field(None, max_length=100_000)
    filter: str | None = Field(None, max_length=MAX_FILTER)
    tree: str = Field("Events", max_length=1024)
    batch_size: int = Field(65_536, ge=1, le=1_000_000)
    compression: Literal["lz4", "zstd"] | None = "lz4"
    hist: HistSpec | None = None

    def parsed_filter(self) -> Filter | None:
        return Filter(self.filter) if self.filter else None

    def encode(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    def for_file(self, rel: str) -> Request:
        return self.model_copy(update={"path": rel})


def decode(raw: bytes) -> Request:
    """Parse and validate a request; FilterError / CasaError say what is wrong."""
    if len(raw) > MAX_REQUEST:
        raise CasaError(f"request of {len(raw)} bytes is larger than the limit of {MAX_REQUEST}")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise CasaError(f"the request is not JSON ({err}); use casa_data.skyhook.SkyhookClient") from None
    try:
        req = Request.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg']}" for e in err.errors())
        raise CasaError(f"invalid Skyhook request: {problems}") from None
    req.parsed_filter()  # raises FilterError early, before any file is opened
    if req.hist is not None:
        req.hist.filters()
    return req


def file_format(path: str) -> str | None:
    """``parquet``, ``ipc``, ``root`` from the file name, or None for other files."""
    for ext, fmt in FORMATS.items():
        if path.lower().endswith(ext):
            return fmt
    return None


def error_info(err: BaseException) -> dict[str, Any]:
    """The JSON ``extra_info`` of a Flight error for ``err`` (no secrets: messages only)."""
    from ..errors import ColumnNotFoundError

    info: dict[str, Any] = {"kind": type(err).__name__}
    if isinstance(err, ColumnNotFoundError):
        info.update(column=err.column, suggestions=err.suggestions)
    if isinstance(err, FilterError):
        info["kind"] = "FilterError"
    return info


def fill_values(arr, expr, weight=None):
    """Flat numpy values (and weights, broadcast per object) of ``expr`` over an awkward chunk."""
    import awkward as ak
    import numpy as np

    cols = {c: arr[c] for c in expr.columns | (weight.columns if weight else set())}
    v = expr.evaluate(cols)  # the same safe evaluator filters use
    w = weight.evaluate(cols) if weight is not None else None
    if w is not None and not isinstance(w, (ak.Array, np.ndarray)):
        w = np.full(len(arr), float(w))  # a constant weight
    if isinstance(v, ak.Array) and v.ndim > 1:
        if w is not None:
            w, v = ak.broadcast_arrays(w, v)
            w = ak.flatten(w, axis=None)
        v = ak.flatten(v, axis=None)
    v = np.asarray(ak.to_numpy(v) if isinstance(v, ak.Array) else v, dtype=np.float64)
    if w is not None:
        w = np.asarray(ak.to_numpy(w) if isinstance(w, ak.Array) else w, dtype=np.float64)
    return v, w
