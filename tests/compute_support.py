"""Shared helpers for tests/test_compute_*.py: data paths, independent oracles, fixtures."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import hist
import numpy as np
import pytest
import uproot

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not DATA.is_dir():
    DATA = Path("/work/shared/data")

NANO_DY = DATA / "coffea" / "nano_dy.root"
NANO_DIMUON = DATA / "coffea" / "nano_dimuon.root"
NANO_TT = DATA / "coffea" / "nano_tt_v12.root"
NANO_DY_PARQUET = DATA / "coffea" / "nano_dy.parquet"
AGC = DATA / "agc" / "open-data-example.root"


def need(*paths: Path) -> None:
    """Fail (never skip) when shared data is missing."""
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        pytest.fail(f"shared test data missing: {missing} (see ../shared/data/README.md)")


def dimuon_fileset() -> dict:
    need(NANO_DY, NANO_DIMUON, AGC)
    return {"dy": {"files": {str(NANO_DY): "Events"}},
            "dimuon": {"files": {str(NANO_DIMUON): "Events"}},
            "agc": {"files": {str(AGC): "Events"}}}


def dimuon_oracle(path: Path) -> tuple[int, int, np.ndarray]:
    """(entries, pairs, mass histogram counts) with plain uproot + awkward + hist."""
    with uproot.open(path) as f:
        a = f["Events"].arrays(["Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge"])
    sel = (ak.num(a.Muon_pt) == 2) & (ak.sum(a.Muon_charge, axis=1) == 0)
    pt, eta, phi = a.Muon_pt[sel], a.Muon_eta[sel], a.Muon_phi[sel]
    m = np.sqrt(2 * pt[:, 0] * pt[:, 1] * (np.cosh(eta[:, 0] - eta[:, 1]) - np.cos(phi[:, 0] - phi[:, 1])))
    h = hist.Hist(hist.axis.Regular(120, 0.0, 120.0), storage=hist.storage.Int64())
    h.fill(ak.to_numpy(m))
    return len(a), int(ak.sum(sel)), h.values()


def ttbar_oracle(path: Path, cut: float = 0.2783) -> tuple[int, np.ndarray, np.ndarray]:
    """(selected events, HT counts summed over b-tag bins, leading-jet pT counts)."""
    with uproot.open(path) as f:
        a = f["Events"].arrays(["Jet_pt", "Jet_eta", "Jet_btagDeepFlavB"])
    good = (a.Jet_pt > 25) & (abs(a.Jet_eta) < 2.4)
    pt, b = a.Jet_pt[good], a.Jet_btagDeepFlavB[good]
    nb = ak.sum(b > cut, axis=1)
    sel = (ak.num(pt) >= 4) & (nb >= 2)
    ht = hist.Hist.new.Reg(50, 0, 1500).Double().fill(ak.to_numpy(ak.sum(pt[sel], axis=1)))
    lead = hist.Hist.new.Reg(40, 0, 800).Double().fill(ak.to_numpy(pt[sel][:, 0]))
    return int(ak.sum(sel)), ht.values(), lead.values()


def assert_dimuon(out: dict, names=("dy", "dimuon", "agc")) -> None:
    paths = {"dy": NANO_DY, "dimuon": NANO_DIMUON, "agc": AGC}
    for name in names:
        n, pairs, counts = dimuon_oracle(paths[name])
        assert out[name]["entries"] == n, name
        assert out[name]["pairs"] == pairs, name
        np.testing.assert_array_equal(out[name]["mass"].values(), counts, err_msg=name)


def same_output(a: dict, b: dict) -> None:
    """Two dimuon outputs are identical (counts and histograms)."""
    assert a.keys() == b.keys()
    for k in a:
        assert a[k]["entries"] == b[k]["entries"] and a[k]["pairs"] == b[k]["pairs"], k
        np.testing.assert_array_equal(a[k]["mass"].values(), b[k]["mass"].values())
