"""The demo dataset and `casa demo` (what `make demo` runs)."""

from __future__ import annotations

import awkward as ak
import numpy as np
from typer.testing import CliRunner

import casa_data
from casa_cli.main import app
from casa_data.demo import make_events


def test_events_are_reproducible_from_the_seed():
    a, b, c = make_events(2000, seed=7), make_events(2000, seed=7), make_events(2000, seed=8)
    assert ak.all(ak.flatten(a.Muon.pt) == ak.flatten(b.Muon.pt))
    assert not ak.array_equal(a.Muon.pt, c.Muon.pt)


def test_muons_are_physical():
    ev = make_events(20_000, seed=1)
    assert ak.all(ev.Muon.pt > 0) and ak.all(abs(ev.Muon.eta) < 10)
    assert ak.all(abs(ev.Muon.charge) == 1)
    assert 1.5 < ak.mean(ak.num(ev.Muon)) < 2.5
    assert ak.all(ev.MET_pt >= 0)


def test_demo_catalog_root_and_parquet_agree(demo_data):
    root = casa_data.open("demo/zmumu")
    pq = casa_data.open("demo/zmumu-parquet")
    assert root.nevents == pq.nevents == 200_000
    a = root.to_awkward(["nMuon", "Muon_pt"], filter="nMuon >= 2 and MET_pt < 30")
    b = pq.to_awkward(["nMuon", "Muon_pt"], filter="nMuon >= 2 and MET_pt < 30")
    assert len(a) == len(b) > 0
    assert np.array_equal(ak.to_numpy(ak.flatten(a.Muon_pt)), ak.to_numpy(ak.flatten(b.Muon_pt)))


def test_casa_demo_command_runs_the_pipeline_through_xcache_and_servicex(demo_data, tmp_path):
    """What `make demo` runs: facility up, the Z->mumu pipeline via XCache and ServiceX, plots, down."""
    from casa_facility import lifecycle as facility

    result = CliRunner().invoke(app, ["demo", "--output", str(tmp_path)])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "demo/zmumu: 200,000 events" in result.output
    assert "identical histograms via xcache and servicex" in result.output
    for via in ("xcache", "servicex"):
        png = tmp_path / via / "mll.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    peak = float(result.output.split("Z peak at ")[1].split(" GeV")[0])
    assert 89.0 < peak < 93.0
    assert not facility.status()["up"]  # it stopped what it started


def test_demo_without_the_facility_runs_in_process(demo_data, tmp_path):
    from casa_facility.demo import run_demo

    res = run_demo(output=tmp_path, facility=False)
    assert res.events == 200_000 and 0 < res.selected < res.events
    assert 89.0 < res.peak < 93.0
    assert (tmp_path / "local" / "mll.png").exists()


def test_casa_data_list_and_describe(demo_data):
    runner = CliRunner()
    out = runner.invoke(app, ["data", "list"])
    assert out.exit_code == 0 and "demo/zmumu" in out.output
    out = runner.invoke(app, ["data", "describe", "demo/zmumu"])
    assert out.exit_code == 0 and "zmumu_3.root" in out.output
    out = runner.invoke(app, ["data", "describe", "demo/zmumuu"])
    assert out.exit_code != 0 and "did you mean" in str(out.exception)
