"""Safe expressions over columns: filters such as ``"nMuon >= 2 and MET_pt > 20"``, and the core
the pipeline language (:mod:`casa_compute.pipeline.expr`) is built on.

The text is parsed with Python's ``ast`` into a small whitelist (comparisons, arithmetic,
``and``/``or``/``not``, numbers, column names and a few functions); nothing is ever evaluated as
Python. Modules: :mod:`.core` (the one parser: limits, grammar, constant folding),
:mod:`.evaluate` (the awkward/numpy evaluator), :mod:`.arrow` (the ``pyarrow.compute``
translation), :mod:`.filter` (:class:`Filter`).

Filter functions: ``abs sqrt exp log sin cos tan sinh cosh tanh`` (elementwise) and
``any all count sum min max`` (per event, over a jagged column: ``any(Muon_pt > 20)``,
``count(Jet_pt > 30) >= 4``). A filter that only uses flat columns and arithmetic also becomes a
``pyarrow.compute`` expression, so Parquet scans skip row groups and Skyhook filters at the storage.
"""

from .arrow import NoArrow, to_arrow
from .core import MAX_CHARS, MAX_DEPTH, MAX_NODES, ExprError, Language, parse
from .evaluate import Evaluator
from .filter import FILTER, Filter

__all__ = ["Filter", "FILTER", "Language", "ExprError", "parse", "Evaluator", "to_arrow", "NoArrow",
           "MAX_CHARS", "MAX_DEPTH", "MAX_NODES"]
