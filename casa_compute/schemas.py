"""NanoEvents schemas the runner uses by default."""

from __future__ import annotations

import warnings

from coffea.nanoevents import NanoAODSchema
from coffea.nanoevents.util import concat

__all__ = ["LenientNanoAODSchema"]


class LenientNanoAODSchema(NanoAODSchema):
    """NanoAOD for full and slimmed files, reading one branch less per collection.

    * Missing run/luminosityBlock/event branches and cross-references to collections a slimmed
      file dropped are accepted silently (upstream raises, resp. warns once per chunk on every
      worker).
    * A collection's offsets come from one of its own jagged branches (``Muon_pt`` if present)
      instead of decompressing the ``nMuon`` counts branch as well: in NanoAOD every ``Muon_*``
      branch is ``[nMuon]``, so the offsets are the same, and a processor that reads ``Muon.pt``
      no longer pays for a second branch (about 10% of the decompression in a dimuon analysis;
      uproot caches the branch, so the offsets and the values share one read). Set
      ``offsets_from_counts = True`` on a subclass for upstream behaviour.
    """

    error_missing_event_ids = False
    offsets_from_counts = False

    def __init__(self, base_form, *args, **kwargs):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Missing cross-reference index")
            warnings.filterwarnings("ignore", message="Missing event_ids")
            super().__init__(base_form, *args, **kwargs)

    def _build_collections(self, field_names, input_contents):
        fields, contents = super()._build_collections(field_names, input_contents)
        if self.offsets_from_counts:
            return fields, contents
        branches = dict(zip(field_names, input_contents))
        for name, form in zip(fields, contents):
            counts = branches.get("n" + name)
            if counts is None or form.get("class") != "ListOffsetArray":
                continue
            if form.get("form_key") != concat(counts["form_key"], "!counts2offsets", "!skip"):
                continue  # not built from the counts branch: leave it alone
            jagged = _own_jagged_branch(name, branches)
            if jagged is not None:
                form["form_key"] = concat(jagged["form_key"], "!offsets", "!skip")
        return fields, contents


def _own_jagged_branch(name: str, branches: dict) -> dict | None:
    """The form of a ``{name}_*`` branch that is a plain jagged array (``{name}_pt`` first)."""
    names = [f"{name}_pt"] + sorted(k for k in branches if k.startswith(name + "_"))
    for key in names:
        form = branches.get(key)
        if (form is not None and form.get("class") == "ListOffsetArray" and form.get("offsets") == "i64"
                and form.get("content", {}).get("class") == "NumpyArray"):
            return form
    return None
