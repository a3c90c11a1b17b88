"""Declarative query-to-histogram pipelines: ``casa run pipeline.yaml``.

>>> from casa_compute.pipeline import run_pipeline
>>> res = run_pipeline("zmumu.yaml", via="local")          # doctest: +SKIP
>>> res.hists["mll"], res.summary["datasets"]["dy"]["cutflow"]

Modules: :mod:`.spec` (the YAML schema; :mod:`.varspec` its variation models), :mod:`.expr` (the
expression grammar), :mod:`.check` (types, columns), :mod:`.pushdown` (pre-filters),
:mod:`.processor` (the coffea processor), :mod:`.variations` (random numbers, corrections, user
code), :mod:`.validate` (the AGC's JSON layout, comparisons), :mod:`.outputs`, :mod:`.cache`,
:mod:`.materialize` (Skyhook/ServiceX reductions), :mod:`.run` (the command is `casa_cli.run`).
Examples: ``casa_compute/pipeline/examples/*.yaml``.
"""

from __future__ import annotations

from pathlib import Path

from .expr import PipelineError
from .run import PipelineResult, PipelineRunError, plan, run_pipeline
from .spec import Pipeline, load_spec

__all__ = ["run_pipeline", "plan", "load_spec", "Pipeline", "PipelineError", "PipelineRunError", "PipelineResult",
           "EXAMPLES"]

#: the shipped example specs
EXAMPLES = Path(__file__).with_name("examples")
