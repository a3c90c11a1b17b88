"""Processors for tests and benchmarks (importable on every worker): some misbehave on purpose, for
fault tests; :class:`AGCReference` is an independent AGC implementation to check the pipeline against."""

from __future__ import annotations

import os
import time
from pathlib import Path

from coffea import processor

from .processors import DimuonProcessor

__all__ = ["FlakyDimuon", "BrokenRangeDimuon", "SlowDimuon", "TokenProbe", "LeakyDimuon",
           "WorkerKiller", "AGCReference"]


class FlakyDimuon(DimuonProcessor):
    """Fails the first attempt of every chunk (a marker file per chunk in ``state_dir``)."""

    def __init__(self, state_dir: str):
        self.state_dir = state_dir

    def process(self, events):
        m = events.metadata
        marker = Path(self.state_dir) / f"{Path(m['filename']).name}-{m['entrystart']}"
        if not marker.exists():
            marker.touch()
            raise OSError(f"transient read error (first attempt) at {m['entrystart']}")
        return super().process(events)


class BrokenRangeDimuon(DimuonProcessor):
    """Always fails on the chunk of ``filename`` that starts at ``start``."""

    def __init__(self, filename: str, start: int):
        self.filename, self.start = filename, start

    def process(self, events):
        m = events.metadata
        if Path(m["filename"]).name == self.filename and m["entrystart"] == self.start:
            raise ValueError("corrupt basket")
        return super().process(events)


class SlowDimuon(DimuonProcessor):
    """Sleeps ``seconds`` per chunk (to kill workers mid-computation)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def process(self, events):
        time.sleep(self.seconds)
        return super().process(events)


class TokenProbe(processor.ProcessorABC):
    """Returns whether the worker's $BEARER_TOKEN_FILE holds ``expected_sha``'s token."""

    def __init__(self, expected_sha: str):
        self.expected_sha = expected_sha

    def process(self, events):
        import hashlib

        path = os.environ.get("BEARER_TOKEN_FILE", "")
        ok = bool(path) and hashlib.sha256(Path(path).read_bytes()).hexdigest() == self.expected_sha
        mode = oct(os.stat(path).st_mode & 0o777) if path else ""
        return {"ok": int(ok), "chunks": 1, "modes": {mode}}

    def postprocess(self, accumulator):
        return accumulator


class LeakyDimuon(DimuonProcessor):
    """Raises an error whose text contains the bearer token and a credential URL."""

    def process(self, events):
        token = Path(os.environ["BEARER_TOKEN_FILE"]).read_text().strip()
        raise OSError(f"open root://cache//f.root?authz={token} failed (token {token})")


class WorkerKiller(DimuonProcessor):
    """Kills the worker process on the chunk of ``filename`` starting at ``start``, every time."""

    def __init__(self, filename: str, start: int):
        self.filename, self.start = filename, start

    def process(self, events):
        m = events.metadata
        if Path(m["filename"]).name == self.filename and m["entrystart"] == self.start:
            os._exit(17)
        return super().process(events)


class AGCReference(processor.ProcessorABC):
    """The AGC's TtbarAnalysis (selection, regions, variations), without ML, written the way the AGC
    writes it: a plain coffea processor that shares no code with ``casa_compute.pipeline``, so that
    the pipeline's AGC example can be checked against it (``tests/test_agc.py``) and timed against
    it (``benchmarks/bench_agc.py``).

    ``smear(run, lumi, event, njets)``: the jet-resolution factors of the ``pt_res_up`` variation
    (the documented generator of ``casa_compute/pipeline/README.md``; the test passes a plain-Python
    implementation, the benchmark a vectorised one). ``variations=False``: the nominal only.
    Event weights: ``xsec * lumi / nevts`` from the events' metadata.
    """

    def __init__(self, smear, variations: bool = True, lumi: float = 3378.0):
        import hist

        self.smear, self.variations, self.lumi = smear, variations, lumi
        self.hist = (hist.Hist.new.Reg(25, 50, 550, name="observable").StrCat(["4j1b", "4j2b"], name="region")
                     .StrCat([], name="process", growth=True).StrCat([], name="variation", growth=True).Weight())

    def process(self, events):
        import awkward as ak
        import numpy as np

        histogram = self.hist.copy()
        md = events.metadata
        process, variation = md["process"], md["variation"]
        xsec_weight = md["xsec"] * self.lumi / md["nevts"]
        jets0 = events.Jet
        btag = "btagCSVV2" if "btagCSVV2" in jets0.fields else "btagDeepFlavB"
        pt64 = ak.values_astype(jets0.pt, np.float64)
        systs = ["nominal"]
        event_systs = ([f"btag_var_{i}" for i in range(4)] + (["scale_var"] if process == "wjets" else [])
                       if self.variations else [])
        varied = {}
        if variation == "nominal" and self.variations:
            res = ak.Array(self.smear(events.run, events.luminosityBlock, events.event, ak.num(jets0)))
            varied = {"pt_scale_up": pt64 * 1.03, "pt_res_up": pt64 * res}
            systs += ["pt_scale_up", "pt_res_up"] + event_systs
        for syst in systs:
            jets = ak.with_field(jets0, varied.get(syst, pt64), "pt")
            el, mu = events.Electron, events.Muon
            el = el[(el.pt > 30) & (np.abs(el.eta) < 2.1) & (el.cutBased == 4) & (el.sip3d < 4)]
            mu = mu[(mu.pt > 30) & (np.abs(mu.eta) < 2.1) & mu.tightId & (mu.sip3d < 4) & (mu.pfRelIso04_all < 0.15)]
            jets = jets[(jets.pt > 30) & (np.abs(jets.eta) < 2.4) & ((jets.jetId & 4) == 4)]
            base = ((ak.num(el) + ak.num(mu)) == 1) & (ak.num(jets) >= 4)
            regions = {"4j1b": base & (ak.sum(jets[btag] >= 0.5, axis=1) == 1),
                       "4j2b": base & (ak.sum(jets[btag] > 0.5, axis=1) >= 2)}
            for region, sel in regions.items():
                rj = jets[sel]
                w = np.ones(len(rj)) * xsec_weight
                if region == "4j1b":
                    obs = ak.sum(rj.pt, axis=-1)
                else:
                    tri = ak.combinations(rj, 3, fields=["j1", "j2", "j3"])
                    p4 = tri.j1 + tri.j2 + tri.j3
                    maxb = np.maximum(tri.j1[btag], np.maximum(tri.j2[btag], tri.j3[btag]))
                    p4 = p4[maxb > 0.5]
                    obs = ak.flatten(p4[ak.argmax(p4.pt, axis=1, keepdims=True)].mass)
                if syst in event_systs:
                    for d in ("up", "down"):
                        if syst == "scale_var":
                            wv = np.full(len(rj), 1.03 if d == "up" else 0.97)
                        else:
                            x = ak.to_numpy(rj.pt[:, int(syst[-1])])
                            wv = 1.0 + (x * 0.075 / 50) if d == "up" else 1.0 - (x * 0.075 / 50)
                        histogram.fill(observable=obs, region=region, process=process, variation=f"{syst}_{d}",
                                       weight=w * wv)
                else:
                    name = variation if variation != "nominal" else syst
                    histogram.fill(observable=obs, region=region, process=process, variation=name, weight=w)
        return {"hist": histogram}

    def postprocess(self, accumulator):
        return accumulator
