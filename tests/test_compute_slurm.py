"""A real one-node Slurm (munged, slurmctld, slurmd on loopback): scale, adapt up and down,
a worker job cancelled mid-computation, and results equal to in-process runs."""

from __future__ import annotations

import subprocess
import threading
import time

import numpy as np
import pytest
from compute_support import AGC, NANO_TT, assert_dimuon, dimuon_fileset, need, same_output, ttbar_oracle

import casa_compute
from casa_compute.processors import DimuonProcessor, TtbarProcessor
from casa_compute.testing import SlowDimuon
from casa_facility.services.slurm import SlurmService

pytestmark = [pytest.mark.shared_data, pytest.mark.filterwarnings("ignore::RuntimeWarning"),
              pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def slurm():
    s = SlurmService()  # its own dir under /tmp: munged needs world-executable parents
    s.start()  # fails with the reason (missing packages, hostname, daemon log) if it cannot
    yield s
    s.stop()


def _cluster(slurm, tmp_path):
    return casa_compute.cluster("slurm", cores=1, memory="1GB", queue=slurm.partition,
                                log_directory=str(tmp_path / "logs"))


def _client(cluster):
    from distributed import Client

    return Client(cluster, security=cluster.security)


def _wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def test_scale_runs_equal_oracle(slurm, tmp_path):
    need(NANO_TT)
    with _cluster(slurm, tmp_path) as cluster, _client(cluster) as client:
        assert "--protocol tls://" in cluster.job_script()
        cluster.scale(2)
        client.wait_for_workers(2, timeout=60)
        assert len(slurm.jobs()) == 2
        assert all(a.startswith("tls://127.0.0.1:") for a in client.scheduler_info()["workers"])
        out, report = casa_compute.run(DimuonProcessor(), dimuon_fileset(), cluster=client,
                                       chunksize=40_000, progress=False)
        assert_dimuon(out)
        assert report.ok and report.events == 100_080
        tt, _ = casa_compute.run(TtbarProcessor(), {"tt": [str(NANO_TT)]}, cluster=client,
                                 chunksize=100, progress=False)
        sel, ht, lead = ttbar_oracle(NANO_TT)
        assert tt["tt"]["selected"] == sel
        np.testing.assert_array_equal(tt["tt"]["ht"].project("ht").values(), ht)
        np.testing.assert_array_equal(tt["tt"]["lead_pt"].values(), lead)
        cluster.scale(0)
        _wait(lambda: not slurm.jobs(), 20, "scale(0) to empty the queue")


def test_adapt_grows_under_load_and_shrinks_when_idle(slurm, tmp_path):
    need(AGC)
    fs = {"agc": [str(AGC)]}
    with _cluster(slurm, tmp_path) as cluster, _client(cluster) as client:
        cluster.adapt(minimum=0, maximum=3, interval="500ms", wait_count=3, target_duration="2s")
        time.sleep(1.5)
        assert slurm.jobs() == [], "an idle adaptive cluster submits nothing"
        peak = []
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                peak.append(len(client.scheduler_info()["workers"]))
                time.sleep(0.2)

        t = threading.Thread(target=watch)
        t.start()
        try:
            out, report = casa_compute.run(SlowDimuon(1.0), fs, cluster=client, chunksize=5_000,
                                           progress=False)
        finally:
            stop.set()
            t.join()
        assert max(peak) >= 2, f"adapt never grew beyond {max(peak)} worker(s)"
        assert report.ok and out["agc"]["entries"] == 100_000
        _wait(lambda: not slurm.jobs() and not client.scheduler_info()["workers"], 30,
              "adapt to shrink to zero jobs when idle")


def test_cancelled_worker_job_does_not_change_result(slurm, tmp_path):
    need(AGC)
    fs = {"agc": [str(AGC)]}
    expected, _ = casa_compute.run(DimuonProcessor(), fs, chunksize=10_000, progress=False)
    with _cluster(slurm, tmp_path) as cluster, _client(cluster) as client:
        cluster.adapt(minimum=2, maximum=2, interval="500ms")
        client.wait_for_workers(2, timeout=60)
        result = []
        t = threading.Thread(target=lambda: result.append(casa_compute.run(
            SlowDimuon(0.7), fs, cluster=client, chunksize=10_000, progress=False)))
        t.start()
        time.sleep(2.0)  # both workers are mid-chunk
        victim = next(j.job_id for j in cluster.workers.values() if j.job_id)
        subprocess.run(["scancel", victim], check=True)
        t.join(timeout=120)
        assert result, "run did not finish after a worker job was cancelled"
        out, report = result[0]
        same_output(out, expected)
        assert report.ok and report.events == 100_000
        assert victim not in slurm.jobs()


def test_fixed_scale_replaces_a_cancelled_job(slurm, tmp_path):
    """Upstream a fixed-size cluster never resubmits a dead job; casa clusters do."""
    with _cluster(slurm, tmp_path) as cluster, _client(cluster) as client:
        cluster.scale(2)
        client.wait_for_workers(2, timeout=60)
        before = set(slurm.jobs())
        subprocess.run(["scancel", sorted(before)[0]], check=True)
        _wait(lambda: len(set(slurm.jobs()) - before) == 1, 30, "a replacement job")
        client.wait_for_workers(2, timeout=60)
        assert len(slurm.jobs()) == 2


def test_run_with_cluster_kind_creates_adapts_and_closes(slurm):
    need(AGC)
    out, report = casa_compute.run(DimuonProcessor(), {"agc": [str(AGC)]}, cluster="slurm",
                                   chunksize=50_000, progress=False)
    assert_dimuon(out, names=("agc",))
    assert report.ok and report.dashboard.startswith("http://127.0.0.1:")
    _wait(lambda: not slurm.jobs(), 20, "the run's own cluster to release its jobs")
