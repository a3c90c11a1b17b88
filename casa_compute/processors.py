"""Example processors used by the tests, benchmarks and demo (importable on every worker)."""

from __future__ import annotations

import awkward as ak
import hist
import numpy as np
from coffea import processor

__all__ = ["DimuonProcessor", "TtbarProcessor", "BusyProcessor", "dimuon_mass_axis"]


def dimuon_mass_axis():
    return hist.axis.Regular(120, 0.0, 120.0, name="mass", label=r"$m_{\mu\mu}$ [GeV]")


class DimuonProcessor(processor.ProcessorABC):
    """Opposite-sign muon pairs in events with exactly two muons: their invariant mass."""

    def process(self, events):
        ds = events.metadata["dataset"]
        mu = events.Muon
        # mu["pt"] reads the field as stored; mu.pt would go through vector's behaviour first
        # (same numbers, ~2% more time in a loop this light).
        two = mu[(ak.num(mu) == 2) & (ak.sum(mu["charge"], axis=1) == 0)]
        pt, eta, phi = two["pt"], two["eta"], two["phi"]
        # m^2 = 2 pt1 pt2 (cosh(deta) - cos(dphi)) for massless muons (as the oracle does)
        m = np.sqrt(2 * pt[:, 0] * pt[:, 1]
                    * (np.cosh(eta[:, 0] - eta[:, 1]) - np.cos(phi[:, 0] - phi[:, 1])))
        h = hist.Hist(dimuon_mass_axis(), storage=hist.storage.Int64())
        h.fill(mass=ak.to_numpy(m))
        return {ds: {"entries": len(events), "pairs": len(m), "mass": h}}

    def postprocess(self, accumulator):
        return accumulator


class TtbarProcessor(processor.ProcessorABC):
    """A ttbar-style selection: >= 4 jets (pT > 25 GeV, |eta| < 2.4), >= 2 b-tagged; HT and
    leading-jet pT per b-tag multiplicity."""

    def __init__(self, btag_cut: float = 0.2783):
        self.btag_cut = btag_cut

    def process(self, events):
        ds = events.metadata["dataset"]
        jets = events.Jet[(events.Jet.pt > 25) & (abs(events.Jet.eta) < 2.4)]
        nb = ak.sum(jets.btagDeepFlavB > self.btag_cut, axis=1)
        sel = (ak.num(jets) >= 4) & (nb >= 2)
        j = jets[sel]
        h = (hist.Hist.new.Reg(50, 0, 1500, name="ht", label="HT [GeV]")
             .IntCat([2, 3, 4], name="nb", growth=True).Double())
        h.fill(ht=ak.to_numpy(ak.sum(j.pt, axis=1)), nb=ak.to_numpy(nb[sel]))
        lead = hist.Hist.new.Reg(40, 0, 800, name="pt", label="leading jet pT [GeV]").Double()
        lead.fill(pt=ak.to_numpy(j.pt[:, 0]))
        return {ds: {"entries": len(events), "selected": int(ak.sum(sel)), "ht": h, "lead_pt": lead}}

    def postprocess(self, accumulator):
        return accumulator


class BusyProcessor(processor.ProcessorABC):
    """Compute-bound: ``work`` rounds of trigonometry per muon (for scaling benchmarks)."""

    def __init__(self, work: int = 20):
        self.work = work

    def process(self, events):
        pt = ak.to_numpy(ak.flatten(events.Muon.pt))
        x = pt.astype(np.float64)
        for _ in range(self.work):
            x = np.sqrt(np.abs(np.sin(x) * np.cos(x) + 1.0)) * pt
        h = hist.Hist.new.Reg(50, 0, 200, name="x").Double()
        h.fill(x=x)
        return {"x": h, "muons": len(pt)}

    def postprocess(self, accumulator):
        return accumulator
