"""NanoEvents schemas the runner uses by default."""

from __future__ import annotations

import warnings

from coffea.nanoevents import NanoAODSchema

__all__ = ["LenientNanoAODSchema"]


class LenientNanoAODSchema(NanoAODSchema):
    """NanoAOD for full and slimmed files: missing run/luminosityBlock/event branches and
    cross-references to collections a slimmed file dropped are accepted silently (upstream
    raises, resp. warns once per chunk on every worker)."""

    error_missing_event_ids = False

    def __init__(self, base_form, *args, **kwargs):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Missing cross-reference index")
            warnings.filterwarnings("ignore", message="Missing event_ids")
            super().__init__(base_form, *args, **kwargs)
