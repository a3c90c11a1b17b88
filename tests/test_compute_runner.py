"""casa_compute.run: results equal to plain uproot+awkward+hist in-process and on a LocalCluster;
casa_data datasets, Parquet, retries, bad files, partial results, token forwarding."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
from compute_support import (
    AGC,
    NANO_DY,
    NANO_DY_PARQUET,
    NANO_TT,
    assert_dimuon,
    dimuon_fileset,
    dimuon_oracle,
    need,
    same_output,
    ttbar_oracle,
)

import casa_compute
from casa_compute.processors import DimuonProcessor, TtbarProcessor
from casa_compute.testing import BrokenRangeDimuon, FlakyDimuon, TokenProbe

pytestmark = [pytest.mark.shared_data, pytest.mark.filterwarnings("ignore::RuntimeWarning")]


@pytest.fixture(scope="module")
def local():
    c = casa_compute.cluster("local", n_workers=2)
    yield c
    c.close()


@pytest.fixture(scope="module")
def inprocess():
    return casa_compute.run(DimuonProcessor(), dimuon_fileset(), chunksize=40_000, progress=False)


def test_inprocess_equals_oracle(inprocess):
    out, report = inprocess
    assert_dimuon(out)
    assert out["dy"]["pairs"] == 6 and out["dimuon"]["pairs"] == 14  # the notes' oracle
    assert report.events == 100_080 and report.ok
    assert len(report.stats) == 5  # agc: 3 chunks of <= 40k; dy, dimuon: 1 each
    assert [(s.start, s.stop) for s in report.stats if s.dataset == "agc"] == [
        (0, 33333), (33333, 66667), (66667, 100000)]
    assert report.bytes_read > 0 and all(s.seconds > 0 for s in report.stats)


def test_local_cluster_equals_inprocess(local, inprocess, capsys):
    out, report = casa_compute.run(DimuonProcessor(), dimuon_fileset(), cluster=local,
                                   chunksize=40_000)
    same_output(out, inprocess.output)
    assert report.events == 100_080 and report.ok
    # in-process reads each file's metadata once; chunks on workers reopen their file
    assert 0 < inprocess.report.bytes_read <= report.bytes_read
    assert len({s.pid for s in report.stats}) >= 1
    err = capsys.readouterr().err
    assert "dashboard http://127.0.0.1:" in err


def test_workers_keep_a_file_open_across_its_chunks(local):
    """10 chunks of one file on the workers: each worker thread opens the file once per run."""
    from distributed import Client

    need(AGC)
    fileset = {"agc": {"files": {str(AGC): "Events"}}}
    ref = casa_compute.run(DimuonProcessor(), fileset, chunksize=10_000, progress=False)
    with Client(local) as client:
        client.run(lambda: __import__("casa_compute.runner").runner._Handles.opened.clear())
        threads = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())
        for _ in range(2):  # a second run opens the file again (a run never sees an older file)
            out, report = casa_compute.run(DimuonProcessor(), fileset, cluster=client, chunksize=10_000,
                                           progress=False)
            same_output(out, ref.output)
            assert len(report.stats) == 10 and report.ok
        opened = client.run(lambda: dict(__import__("casa_compute.runner").runner._Handles.opened))
    per_worker = [o.get(str(AGC), 0) for o in opened.values()]
    assert 2 <= sum(per_worker) <= 2 * threads < 20, (per_worker, threads)


def test_ttbar_all_modes_equal_oracle(local):
    need(NANO_TT)
    sel, ht, lead = ttbar_oracle(NANO_TT)
    fs = {"tt": {"files": {str(NANO_TT): "Events"}}}
    for cluster in (None, local):
        out, report = casa_compute.run(TtbarProcessor(), fs, cluster=cluster, chunksize=100,
                                       progress=False)
        assert report.events == 200 and len(report.stats) == 2
        assert out["tt"]["selected"] == sel > 0
        np.testing.assert_array_equal(out["tt"]["ht"].project("ht").values(), ht)
        np.testing.assert_array_equal(out["tt"]["lead_pt"].values(), lead)


def test_casa_data_dataset_and_parquet():
    import casa_data

    need(NANO_DY, NANO_DY_PARQUET)
    ds = casa_data.open([str(NANO_DY)])
    out, report = casa_compute.run(DimuonProcessor(), ds, progress=False)
    name = ds.name
    n, pairs, counts = dimuon_oracle(NANO_DY)
    assert out[name]["pairs"] == pairs and report.events == n
    np.testing.assert_array_equal(out[name]["mass"].values(), counts)
    pq = casa_data.open([str(NANO_DY_PARQUET)])
    assert pq.format == "parquet"
    out2, report2 = casa_compute.run(DimuonProcessor(), pq, chunksize=20, progress=False)
    assert [(s.start, s.stop) for s in report2.stats] == [(0, 20), (20, 40)]  # 1 row group, cut
    np.testing.assert_array_equal(out2[pq.name]["mass"].values(), counts)
    assert report2.bytes_read > 0


def test_parquet_row_groups_are_cut(tmp_path):
    import pyarrow.parquet as pq

    need(NANO_DY_PARQUET)
    t = pq.read_table(NANO_DY_PARQUET)
    path = tmp_path / "dy_rg.parquet"
    pq.write_table(t, path, row_group_size=16)  # row groups 16, 16, 8
    out, report = casa_compute.run(DimuonProcessor(), {"dy": [str(path)]}, chunksize=10,
                                   progress=False)
    assert [(s.start, s.stop) for s in report.stats] == [(0, 8), (8, 16), (16, 24), (24, 32), (32, 40)]
    np.testing.assert_array_equal(out["dy"]["mass"].values(), dimuon_oracle(NANO_DY)[2])


def test_failing_chunk_is_retried(tmp_path, local, inprocess):
    out, report = casa_compute.run(FlakyDimuon(str(tmp_path)), dimuon_fileset(), cluster=local,
                                   chunksize=40_000, retries=1, progress=False)
    same_output(out, inprocess.output)
    assert report.ok and all(s.attempts == 2 for s in report.stats)


def test_chunk_that_keeps_failing_named_with_partial_result(local, inprocess):
    proc = BrokenRangeDimuon(AGC.name, 33333)
    with pytest.raises(casa_compute.RunError) as e:
        casa_compute.run(proc, dimuon_fileset(), cluster=local, chunksize=40_000, retries=1,
                         progress=False)
    msg = str(e.value)
    assert str(AGC) in msg and "entries [33333, 66667)" in msg and "corrupt basket" in msg
    partial = e.value.partial
    (fail,) = partial.report.failures
    assert (fail.file, fail.start, fail.stop, fail.attempts) == (str(AGC), 33333, 66667, 2)
    assert partial.report.events == 100_080 - 33_334
    same_output({k: v for k, v in partial.output.items() if k != "agc"},
                {k: v for k, v in inprocess.output.items() if k != "agc"})
    # skip_bad_files: completes, the report lists the missing range
    out, report = casa_compute.run(proc, {"agc": [str(AGC)]}, chunksize=40_000, retries=0,
                                   skip_bad_files=True, progress=False)
    assert not report.ok and len(report.missing) == 1 and "[33333, 66667)" in report.missing[0]
    assert out["agc"]["entries"] == 100_000 - 33_334


def test_bad_file_skipped_or_named(tmp_path, inprocess):
    bad = tmp_path / "truncated.root"
    with open(NANO_DY, "rb") as src:
        bad.write_bytes(src.read()[:5000])
    need(AGC)
    fs = {"agc": {"files": {str(AGC): "Events", str(bad): "Events"}}}
    good = {"agc": inprocess.output["agc"]}
    out, report = casa_compute.run(DimuonProcessor(), fs, chunksize=50_000, skip_bad_files=True,
                                   progress=False)
    same_output(out, good)
    assert list(report.bad_files) == [str(bad)] and str(bad) in report.missing[0]
    with pytest.raises(casa_compute.RunError, match="truncated.root") as e:
        casa_compute.run(DimuonProcessor(), fs, chunksize=50_000, progress=False)
    same_output(e.value.partial.output, good)


def test_replica_failover(tmp_path):
    """A casa_data-style file with a dead first replica is read from the second."""
    from casa_compute.chunks import FileItem, plan_chunks
    from casa_compute.runner import process_chunk

    need(NANO_DY)
    item = FileItem("dy", ((str(tmp_path / "gone.root"), None), (str(NANO_DY), None)))
    chunks, bad = plan_chunks([item], 100)
    assert not bad and len(chunks) == 1
    part = process_chunk(DimuonProcessor(), chunks[0], retries=0)
    assert part.output["dy"]["pairs"] == 6 and part.stats[0].file == str(NANO_DY)


def test_token_forwarded_not_printed(tmp_path, local, monkeypatch, capsys):
    secret = "casa-test-token-" + "x" * 20
    tok = tmp_path / "token"
    tok.write_text(secret)
    monkeypatch.setenv("BEARER_TOKEN_FILE", str(tok))
    need(NANO_DY)
    shutil.copy(NANO_DY, tmp_path / "a.root")
    fs = {"t": {"files": {str(tmp_path / "a.root"): "Events"}}}
    result = casa_compute.run(TokenProbe(hashlib.sha256(secret.encode()).hexdigest()), fs,
                              cluster=local, chunksize=10)
    assert result.output["ok"] == result.output["chunks"] == 4
    assert result.output["modes"] == {"0o600"}
    captured = capsys.readouterr()
    assert secret not in captured.out + captured.err + repr(result) + str(result.report)


def test_rntuple_equals_ttree():
    from compute_support import DATA

    rnt = DATA / "coffea" / "nano_dy_rntuple.root"
    need(rnt, NANO_DY)
    out, report = casa_compute.run(DimuonProcessor(), {"dy": [str(rnt)]}, chunksize=20,
                                   progress=False)
    n, pairs, counts = dimuon_oracle(NANO_DY)
    assert report.events == n and len(report.stats) == 2 and report.bytes_read > 0
    assert out["dy"]["pairs"] == pairs
    np.testing.assert_array_equal(out["dy"]["mass"].values(), counts)


MUON_COLUMNS = ["nMuon", "Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge", "Muon_mass"]


def test_arrow_batches_in_process_and_on_cluster(local):
    """Arrow input (what the ServiceX and Skyhook paths deliver): a Table and a batch stream."""
    import pyarrow.parquet as pq

    import casa_data

    need(NANO_DY, NANO_DY_PARQUET)
    n, pairs, counts = dimuon_oracle(NANO_DY)
    table = pq.read_table(NANO_DY_PARQUET, columns=MUON_COLUMNS)
    out, report = casa_compute.run(DimuonProcessor(), table, chunksize=15, dataset_name="dy",
                                   progress=False)
    assert [(s.start, s.stop) for s in report.stats] == [(0, 15), (15, 30), (30, 40)]
    np.testing.assert_array_equal(out["dy"]["mass"].values(), counts)
    batches = casa_data.open([str(NANO_DY)]).iter_batches(MUON_COLUMNS, batch_size=25)
    out2, report2 = casa_compute.run(DimuonProcessor(), batches, cluster=local, dataset_name="dy",
                                     progress=False)
    assert report2.events == n and len(report2.stats) == 2 and out2["dy"]["pairs"] == pairs
    np.testing.assert_array_equal(out2["dy"]["mass"].values(), counts)


def test_errors_never_carry_the_token(tmp_path, monkeypatch):
    from casa_compute.testing import LeakyDimuon

    secret = "tok-" + "s3cr3t" * 5
    (tmp_path / "t").write_text(secret)
    monkeypatch.setenv("BEARER_TOKEN_FILE", str(tmp_path / "t"))
    need(NANO_DY)
    with pytest.raises(casa_compute.RunError) as e:
        casa_compute.run(LeakyDimuon(), {"dy": [str(NANO_DY)]}, retries=0, progress=False)
    (fail,) = e.value.partial.report.failures
    assert "authz=***" in fail.error
    for text in (str(e.value), fail.error, fail.traceback, repr(e.value.partial)):
        assert secret not in text


def test_chunk_that_kills_its_worker_is_reported(local, inprocess):
    """A chunk that kills every worker it lands on ends as KilledWorker: reported with its file
    and range, the rest of the result intact (other chunks recomputed if their worker died)."""
    from casa_compute.testing import WorkerKiller

    with pytest.raises(casa_compute.RunError) as e:  # after allowed-failures (3) + 1 deaths
        casa_compute.run(WorkerKiller(AGC.name, 0), {"agc": [str(AGC)]}, cluster=local,
                         chunksize=40_000, progress=False)
    (fail,) = e.value.partial.report.failures
    assert (fail.file, fail.start, fail.stop) == (str(AGC), 0, 33333)
    assert "KilledWorker" in fail.error
    assert e.value.partial.output["agc"]["entries"] == 100_000 - 33_333


def test_cluster_without_workers_does_not_hang():
    need(NANO_DY)
    with casa_compute.cluster("local", n_workers=0) as c:
        with pytest.raises(casa_compute.RunError, match="no Dask worker for 3 s") as e:
            casa_compute.run(DimuonProcessor(), {"dy": [str(NANO_DY)]}, cluster=c,
                             no_workers_timeout=3, progress=False)
    assert e.value.partial.report.failures[0].file == str(NANO_DY)


def test_chunk_plan_follows_a_rewritten_file(tmp_path):
    """Entry counts of local files are remembered between runs, but a file written anew (other
    size or modification time) is counted again: the plan never uses a stale count."""
    import awkward as ak
    import uproot

    from casa_compute.chunks import FileItem, plan_chunks

    path = tmp_path / "grow.root"

    def write(n):
        with uproot.recreate(path) as f:
            f["Events"] = {"x": ak.Array(np.arange(n, dtype="i8"))}

    write(100)
    item = FileItem("grow", ((str(path), None),))
    assert [c.entries for c in plan_chunks([item], 60)[0]] == [50, 50]
    assert [c.entries for c in plan_chunks([item], 60)[0]] == [50, 50]  # from the remembered count
    write(150)
    assert sum(c.entries for c in plan_chunks([item], 60)[0]) == 150
