"""Histograms in the Analysis Grand Challenge's JSON layout, and comparing two sets of them.

The AGC's reference files (``histos_<N>_file_per_process.json``) map ``<region>_<process>`` (the
nominal sample) and ``<region>_<process>_<variation>`` to ``{"contents": [...], "edges": [...]}``,
contents with the under- and overflow bins (``len(edges) + 1`` numbers). casa writes its varied
histograms the same way (``histograms_agc.json``: the histogram name is the region), so the same
code compares ours to the reference, or to a previous casa output.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["to_agc", "read_histograms", "compare", "Difference", "AGC_JSON"]

AGC_JSON = "histograms_agc.json"


def agc_key(hist_name: str, process: str, variation: str) -> str:
    return f"{hist_name}_{process}" + ("" if variation == "nominal" else f"_{variation}")


def to_agc(hists: dict, combos: list | None) -> dict[str, dict[str, list[float]]]:
    """Every 1-D slice (process, variation) of the varied histograms in the AGC's layout."""
    out: dict[str, dict[str, list[float]]] = {}
    for name, h in hists.items():
        names = list(h.axes.name)
        if "process" not in names or "variation" not in names or h.ndim != 3:
            continue
        procs, variations = list(h.axes["process"]), list(h.axes["variation"])
        cells = combos if combos is not None else [(p, v) for p in procs for v in variations]
        for p, v in cells:
            if p not in procs or v not in variations:
                continue
            part = h[{"process": p, "variation": v}]
            view = part.view(flow=True)
            values = view.value if view.dtype.names else view
            out[agc_key(name, p, v)] = {"contents": [float(x) for x in np.asarray(values)],
                                        "edges": [float(x) for x in part.axes[0].edges]}
    return out


def read_histograms(path: str | Path) -> dict[str, dict[str, list[float]]]:
    """A JSON file in the AGC layout, or a casa output directory (its ``histograms_agc.json``,
    else its ``histograms.pkl`` converted with the combos of its ``summary.json``)."""
    from .expr import PipelineError

    path = Path(path)
    if path.is_dir():
        if (path / AGC_JSON).is_file():
            path = path / AGC_JSON
        elif (path / "histograms.pkl").is_file():
            summary = json.loads((path / "summary.json").read_text()) if (path / "summary.json").is_file() else {}
            with (path / "histograms.pkl").open("rb") as f:
                hists = pickle.load(f)  # noqa: S301 - casa's own output directory
            combos = summary.get("combos")
            return to_agc(hists, [tuple(c) for c in combos] if combos else None)
        else:
            raise PipelineError(f"{path}: no {AGC_JSON} or histograms.pkl here (not a casa output directory)")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise PipelineError(f"{path}: cannot read histograms: {err}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) and "contents" in v for v in data.values()):
        raise PipelineError(f"{path}: not in the AGC layout ({{name: {{contents, edges}}}})")
    return data


@dataclass
class Difference:
    name: str
    what: str            # "missing in ours", "missing in the reference", "edges", "bin"
    bin: int | None = None
    ours: float | None = None
    reference: float | None = None

    def row(self) -> list[str]:
        def f(x: float | None) -> str:
            return "" if x is None else f"{x:.6g}"

        return [self.name, self.what, "" if self.bin is None else str(self.bin), f(self.ours), f(self.reference),
                "" if self.ours is None or self.reference is None else f"{self.ours - self.reference:+.6g}"]


def compare(ours: dict[str, Any], reference: dict[str, Any], *, atol: float = 0.0, rtol: float = 0.0,
            skip: tuple[str, ...] = ()) -> list[Difference]:
    """Every difference: histograms missing on either side, other edges, bins beyond tolerance
    (``|ours - ref| > atol + rtol * |ref|``). Bin 0 is the underflow. Names containing one of
    ``skip`` are left out (the AGC's validation skips ``pt_res_up``, random by design)."""
    out: list[Difference] = []
    for name in sorted(set(ours) | set(reference)):
        if any(s in name for s in skip):
            continue
        if name not in ours:
            out.append(Difference(name, "missing in ours"))
            continue
        if name not in reference:
            out.append(Difference(name, "missing in the reference"))
            continue
        a, b = ours[name], reference[name]
        ea, eb = np.asarray(a.get("edges", []), float), np.asarray(b.get("edges", []), float)
        if ea.shape != eb.shape or not np.allclose(ea, eb):
            out.append(Difference(name, "edges"))
            continue
        ca, cb = np.asarray(a["contents"], float), np.asarray(b["contents"], float)
        if ca.shape != cb.shape:
            out.append(Difference(name, f"bins: {len(ca)} vs {len(cb)}"))
            continue
        bad = np.flatnonzero(~(np.abs(ca - cb) <= atol + rtol * np.abs(cb)))
        out.extend(Difference(name, "bin", int(i), float(ca[i]), float(cb[i])) for i in bad)
    return out
