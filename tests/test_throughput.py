"""Issue 19 (throughput), correctness only: the stored-kinematics shortcut gives the arrays
vector gives, the automatic chunk size, and casa's local Dask workers (no MALLOC_TRIM_THRESHOLD_,
no profiler) computing the same histograms as in-process. Timing lives in benchmarks/."""

from __future__ import annotations

import os
import warnings

import awkward as ak
import hist
import numpy as np
import pytest
from coffea import processor
from coffea.nanoevents import NanoAODSchema, NanoEventsFactory
from compute_support import AGC, NANO_DY, dimuon_oracle, need

import casa_compute
from casa_compute.chunks import files_of
from casa_compute.processors import DimuonProcessor
from casa_compute.schemas import LenientNanoAODSchema, stored_kinematics_behavior
from casa_compute.sizing import MAX_CHUNK, MIN_CHUNK, auto_chunksize, file_shape, workers_of


class UserDimuon(processor.ProcessorABC):
    """Written the way users write it: ``mu.pt`` through the vector behaviour."""

    def process(self, events):
        mu = events.Muon
        two = mu[(ak.num(mu) == 2) & (ak.sum(mu.charge, axis=1) == 0)]
        m = np.sqrt(2 * two.pt[:, 0] * two.pt[:, 1]
                    * (np.cosh(two.eta[:, 0] - two.eta[:, 1]) - np.cos(two.phi[:, 0] - two.phi[:, 1])))
        h = hist.Hist(hist.axis.Regular(120, 0.0, 120.0), storage=hist.storage.Int64())
        h.fill(ak.to_numpy(m))
        return {"entries": len(events), "pairs": len(m), "mass": h}

    def postprocess(self, accumulator):
        return accumulator


class _Upstream(NanoAODSchema):
    error_missing_event_ids = False


def _events(path, schema):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return NanoEventsFactory.from_root({str(path): "Events"}, schemaclass=schema,
                                           mode="eager").events()


@pytest.mark.parametrize("path, collections", [(AGC, ["Muon"]), (NANO_DY, ["Muon", "Electron", "Jet"])])
def test_stored_kinematics_are_vectors_results(path, collections):
    need(path)
    fast, slow = _events(path, LenientNanoAODSchema), _events(path, _Upstream)
    for name in collections:
        a, b = fast[name], slow[name]
        assert isinstance(a, type(b)) and type(a) is not type(b)  # a subclass of upstream's class
        for field in ("pt", "eta", "phi", "mass", "energy", "px", "rho", "t"):
            x, y = getattr(a, field), getattr(b, field)
            assert str(x.type) == str(y.type), (name, field)
            assert ak.all(x == y), (name, field)
        if len(a) and ak.any(ak.num(a) > 0):
            i = int(np.argmax(ak.to_numpy(ak.num(a)) > 0))
            assert a[i, 0].pt == b[i, 0].pt  # single records too
        # the classes pickle by reference (they are module attributes of casa_compute.schemas)
        import pickle

        assert pickle.loads(pickle.dumps(type(a))) is type(a)


def test_stored_kinematics_falls_back_without_the_field():
    beh = stored_kinematics_behavior()
    v = ak.zip({"pt": [[10.0]], "eta": [[0.5]], "phi": [[0.1]], "mass": [[0.105]], "charge": [[1]]},
               with_name="PtEtaPhiMCandidate", behavior=beh)
    assert v.pt.tolist() == [[10.0]] and v.mass.tolist() == [[0.105]]
    assert np.isclose(v.energy[0, 0], np.sqrt((10 * np.cosh(0.5)) ** 2 + 0.105 ** 2))
    assert beh is stored_kinematics_behavior()  # built once


def test_user_style_processor_in_process_matches_oracle():
    need(AGC)
    entries, pairs, counts = dimuon_oracle(AGC)
    out, rep = casa_compute.run(UserDimuon(), {"agc": [str(AGC)]}, progress=False)
    assert out["entries"] == entries and out["pairs"] == pairs
    np.testing.assert_array_equal(out["mass"].values(), counts)


def test_auto_chunksize_rules():
    items = files_of({"d": [str(AGC)]}) * 10
    dimuon = (3_568_384, 100_000, 6)  # the AGC example: 36 B/event, 6 branches
    assert auto_chunksize(items, 1, shape=dimuon) == 250_000  # >= 4 chunks per worker
    assert auto_chunksize(items, 2, shape=dimuon) == 125_000
    assert auto_chunksize(items * 100, 1, shape=dimuon) == MAX_CHUNK
    assert auto_chunksize(items, 1000, shape=dimuon) == MIN_CHUNK
    # memory bound: few branches of big events read as much as many branches of small ones
    heavy = (400_000_000, 100_000, 10)  # 4 kB/event, all of it read: 16 kB in memory
    assert auto_chunksize(items * 100, 1, shape=heavy) == 17_000
    assert auto_chunksize(items * 100, 1, shape=heavy) == auto_chunksize(items * 100, 8, shape=heavy)
    nano = (2_000_000_000, 1_000_000, 1500)  # full NanoAOD: the per-branch read fraction
    assert auto_chunksize(items * 100, 1, shape=nano) == MAX_CHUNK
    # the shape of a real file, and a dataset whose files cannot be read
    need(AGC)
    size, entries, branches = file_shape(files_of({"d": [str(AGC)]})[0])
    assert size == os.path.getsize(AGC) and entries == 100_000 and branches > 5
    assert auto_chunksize(files_of({"d": ["/nonexistent/x.root"]}), 1) == 100_000
    assert workers_of(None) == 1 and workers_of("local") == 2


def _copies(tmp_path, n):
    import shutil

    need(AGC)
    out = []
    for i in range(n):
        shutil.copyfile(AGC, tmp_path / f"agc_{i}.root")
        out.append(str(tmp_path / f"agc_{i}.root"))
    return out


def test_run_without_chunksize_uses_the_automatic_size(tmp_path):
    files = _copies(tmp_path, 3)
    out, rep = casa_compute.run(UserDimuon(), {"agc": files}, progress=False)
    # 300k events in-process: 4 chunks per worker -> 75,000 per chunk, 2 chunks per file
    assert rep.chunks_planned == 6 and {s.events for s in rep.stats} == {50_000}
    out2, _ = casa_compute.run(UserDimuon(), {"agc": files}, chunksize=100_000, progress=False)
    np.testing.assert_array_equal(out["mass"].values(), out2["mass"].values())
    # preprocessed steps are the chunks, whatever the size rule says
    fs = {"agc": {"files": {str(AGC): {"object_path": "Events", "steps": [[0, 30_000], [30_000, 100_000]]}}}}
    _, rep3 = casa_compute.run(UserDimuon(), fs, progress=False)
    assert [(s.start, s.stop) for s in rep3.stats] == [(0, 30_000), (30_000, 100_000)]


def _worker_state(dask_worker):
    return os.environ.get("MALLOC_TRIM_THRESHOLD_"), "profile" in dask_worker.periodic_callbacks


def test_local_workers_start_without_malloc_trim_threshold_and_profiler(tmp_path, monkeypatch):
    files = _copies(tmp_path, 2)
    # what a plain distributed.LocalCluster earlier in this process leaves behind
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    from distributed import Client

    with casa_compute.cluster("local", n_workers=2, threads_per_worker=1) as c, \
            Client(c, security=c.security) as client:
        assert set(client.run(_worker_state).values()) == {(None, False)}
        c.scale(3)  # a worker added later starts the same way
        client.wait_for_workers(3, timeout=60)
        assert set(client.run(_worker_state).values()) == {(None, False)}
        out, rep = casa_compute.run(DimuonProcessor(),
                                    {"agc": files}, cluster=client, progress=False)
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"  # this process's environment is left as it was
    entries, pairs, counts = dimuon_oracle(AGC)
    assert out["agc"]["entries"] == 2 * entries
    np.testing.assert_array_equal(out["agc"]["mass"].values(), 2 * counts)
