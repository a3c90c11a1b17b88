"""NanoEvents schemas the runner uses by default."""

from __future__ import annotations

import warnings

from coffea.nanoevents import NanoAODSchema
from coffea.nanoevents.util import concat

__all__ = ["LenientNanoAODSchema", "stored_kinematics_behavior"]


class LenientNanoAODSchema(NanoAODSchema):
    """NanoAOD for full and slimmed files, reading one branch less per collection.

    * Missing run/luminosityBlock/event branches and cross-references to collections a slimmed
      file dropped are accepted silently (upstream raises, resp. warns once per chunk on every
      worker).
    * ``mu.pt``, ``.eta``, ``.phi`` and ``.mass`` (``.energy`` for E-vectors) of a collection that
      stores them read the stored field directly, as ``mu["pt"]`` does, instead of going through
      vector's coordinate dispatch first (same array, same type, same behaviour; a quarter of
      the Python overhead of a light dimuon processor). See :func:`stored_kinematics_behavior`.
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

    @classmethod
    def behavior(cls):
        """coffea's NanoAOD behaviours with stored kinematics read directly."""
        return stored_kinematics_behavior()

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


# -- stored kinematics ---------------------------------------------------------------------------
_FAST_FIELDS = {"PtEtaPhiMLorentzVector": ("pt", "eta", "phi", "mass"),
                "PtEtaPhiELorentzVector": ("pt", "eta", "phi", "energy")}
_BEHAVIOR: dict | None = None


def _stored(name: str, slow):
    """A property returning the stored field ``name`` when the record has it, else ``slow``."""
    def get(self):
        if name in self.fields:
            return self[name]
        return slow.__get__(self, type(self))

    get.__name__ = name
    get.__doc__ = getattr(slow, "__doc__", None)
    return property(get)


def stored_kinematics_behavior() -> dict:
    """coffea's ``nanoaod.behavior`` where every collection class that is a PtEtaPhiM (PtEtaPhiE)
    Lorentz vector reads ``pt``, ``eta``, ``phi``, ``mass`` (``energy``) from its stored field.

    vector computes ``mu.pt`` from the stored coordinates through its generic dispatch (building
    azimuthal/longitudinal coordinate objects, then the compute function ``rho(rho, phi) = rho``),
    which returns the stored array unchanged: the shortcut gives the identical array (values,
    dtype, parameters and behaviour; ``tests/test_throughput.py`` checks) without the detour. The
    subclasses keep the upstream names' classes as bases (``isinstance`` holds) and live in this
    module under ``<Name>Stored`` so that pickles find them.
    """
    global _BEHAVIOR
    if _BEHAVIOR is None:
        from coffea.nanoevents.methods import nanoaod, vector

        bases = {getattr(vector, k): v for k, v in _FAST_FIELDS.items()}
        made: dict[type, type] = {}

        def fast(cls):
            if not isinstance(cls, type):
                return cls
            fields = next((f for b, f in bases.items() if issubclass(cls, b)), None)
            if fields is None:
                return cls
            if cls not in made:
                slow = {f: getattr(cls, f) for f in fields}
                name = f"{cls.__name__}Stored"
                sub = type(name, (cls,), {f: _stored(f, slow[f]) for f in fields})
                sub.__module__, sub.__qualname__ = __name__, name
                globals()[name] = sub
                made[cls] = sub
            return made[cls]

        beh = dict(nanoaod.behavior)
        for key, value in list(beh.items()):
            if isinstance(key, str) or (isinstance(key, tuple) and len(key) == 2 and key[0] == "*"):
                beh[key] = fast(value)
        _BEHAVIOR = beh
    return _BEHAVIOR


stored_kinematics_behavior()  # built at import: pickled arrays name these classes
