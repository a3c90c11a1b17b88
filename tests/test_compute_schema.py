"""casa's NanoAOD schema: the same events as coffea's, one branch fewer per collection read."""

from __future__ import annotations

import awkward as ak
import pytest
import uproot
from coffea.nanoevents import NanoAODSchema, NanoEventsFactory
from compute_support import AGC, NANO_DY, NANO_TT, need

from casa_compute.schemas import LenientNanoAODSchema


class Upstream(NanoAODSchema):
    """coffea's schema, tolerant of the AGC file's missing event IDs."""

    error_missing_event_ids = False


def _events(path, schema, start, stop, log=None):
    return NanoEventsFactory.from_root({str(path): "Events"}, schemaclass=schema, mode="virtual",
                                       entry_start=start, entry_stop=stop, access_log=log).events()


@pytest.mark.parametrize("path,start,stop", [(AGC, 12_345, 56_789), (NANO_TT, 7, 33)])
def test_collections_equal_upstream_schema(path, start, stop):
    need(path)
    ours, theirs = _events(path, LenientNanoAODSchema, start, stop), _events(path, Upstream, start, stop)
    checked = 0
    for name in ours.fields:
        if name.startswith("n") or ours[name].ndim < 2 or not ours[name].fields:
            continue
        # every field of every jagged collection, with its offsets, as upstream builds them
        for field in ours[name].fields:
            if field.endswith(("Idx", "IdxG")) or field.startswith("matched"):
                continue
            a, b = ours[name][field], theirs[name][field]
            assert ak.to_list(ak.num(a)) == ak.to_list(ak.num(b)), (name, field)
            assert ak.almost_equal(a, b, dtype_exact=False, check_parameters=False), (name, field)
            checked += 1
    assert checked >= 5


def test_offsets_come_from_the_collection_not_the_counts_branch():
    need(AGC)
    log: list = []
    ev = _events(AGC, LenientNanoAODSchema, 100, 5_000, log)
    n, total = ak.sum(ak.num(ev.Muon.eta)), ak.sum(ev.Muon.eta)
    assert {a.branch for a in log} == {"Muon_pt", "Muon_eta"}  # Muon_pt carries the offsets
    assert n == uproot.open(AGC)["Events"]["nMuon"].array(entry_start=100, entry_stop=5_000, library="np").sum()

    class FromCounts(LenientNanoAODSchema):
        offsets_from_counts = True

    log.clear()
    ev = _events(AGC, FromCounts, 100, 5_000, log)
    assert ak.sum(ak.num(ev.Muon.eta)) == n and ak.sum(ev.Muon.eta) == total
    assert {a.branch for a in log} == {"nMuon", "Muon_eta"}


@pytest.mark.parametrize("path", [AGC, NANO_TT, NANO_DY])
def test_runner_events_equal_from_root(path):
    """casa's chunk events (schema cached per file layout) = coffea's from_root, chunk after chunk."""
    from casa_compute.events import root_events

    need(path)
    with uproot.open(path) as f:
        n = f["Events"].num_entries
        for start, stop in [(0, n // 2), (n // 2, n), (1, n - 1)]:  # the 2nd and 3rd use the cache
            meta = {"dataset": "x", "entrystart": start, "entrystop": stop}
            ours = root_events(f, "Events", start, stop, LenientNanoAODSchema, dict(meta))
            theirs = NanoEventsFactory.from_root(f, treepath="Events", entry_start=start, entry_stop=stop,
                                                 schemaclass=LenientNanoAODSchema, metadata=dict(meta),
                                                 mode="virtual").events()
            assert ours.layout.form == theirs.layout.form
            assert ours.metadata == theirs.metadata and ours.metadata["entrystart"] == start
            assert len(ours) == stop - start
            for name in ("Muon", "Jet"):
                if name in ours.fields:
                    assert ak.array_equal(ours[name].pt, theirs[name].pt)
                    assert ak.array_equal(ak.num(ours[name]), ak.num(theirs[name]))


def test_branches_touched_by_earlier_chunks_are_read_in_one_request():
    """With ``learn=`` a run's later chunks read what the first touched in one request, same values."""
    from casa_compute.events import root_events

    need(AGC)

    def dimuon(ev):
        mu = ev.Muon[ak.num(ev.Muon) == 2]
        return ak.to_list(mu.pt + mu.eta), ak.to_list(mu.phi * mu.charge)

    ranges = [(0, 10_000), (10_000, 30_000), (30_000, 31_000)]
    for learn in (None, "run-a"):
        with uproot.open(AGC) as f:
            requests, values = [], []
            for start, stop in ranges:
                before = f.file.source.num_requests
                values.append(dimuon(root_events(f, "Events", start, stop, LenientNanoAODSchema, {},
                                                 learn=learn)))
                requests.append(f.file.source.num_requests - before)
        if learn is None:
            plain, first = values, requests[0]  # the first also reads what opening the tree needs
            assert requests[1:] == [4, 4]  # Muon_pt (with the offsets), eta, phi, charge: one each
        else:
            assert values == plain
            assert requests == [first, 1, 1]
