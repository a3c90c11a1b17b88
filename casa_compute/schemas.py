"""NanoEvents schemas the runner uses by default."""

from __future__ import annotations

from coffea.nanoevents import NanoAODSchema

__all__ = ["LenientNanoAODSchema"]


class LenientNanoAODSchema(NanoAODSchema):
    """NanoAOD; slimmed files without run/luminosityBlock/event warn instead of failing."""

    error_missing_event_ids = False
