"""Writing a pipeline's results: hist pickle, ROOT (uproot), a PNG per histogram, a JSON summary."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import hist

__all__ = ["write_outputs", "root_name", "output_file"]


def output_file(outdir: Path, fname: str) -> Path:
    """``outdir / fname``, refusing a name that would land outside ``outdir`` (``../x``, ``/x``, links).

    Spec validation already refuses such histogram names; this is the check at write time.
    """
    from .expr import PipelineError

    base = Path(outdir).resolve()
    target = (base / fname).resolve()
    if "/" in fname or "\\" in fname or fname in ("", ".", "..") or target.parent != base:
        raise PipelineError(f"output file name {fname!r} is not a plain file name in {base}; "
                            "histogram names may use letters, digits and _ . + - only")
    return target


def root_name(hist_name: str, label: str | None) -> str:
    """The ROOT key of one histogram of one dataset: ``<histogram>__<dataset>``."""
    return hist_name if label is None else f"{hist_name}__{label}"


def _per_dataset(name: str, h: hist.Hist, combos=None) -> dict[str, hist.Hist]:
    if "process" in h.axes.name and "variation" in h.axes.name:  # the AGC's names: 4j1b_ttbar_pt_scale_up
        from .validate import agc_key

        procs, variations = list(h.axes["process"]), list(h.axes["variation"])
        cells = combos or [(p, v) for p in procs for v in variations]
        return {agc_key(name, p, v): h[{"process": p, "variation": v}] for p, v in cells
                if p in procs and v in variations}
    if "process" in h.axes.name:
        return {root_name(name, lab): h[{"process": lab}] for lab in h.axes["process"]}
    if "dataset" in h.axes.name:
        return {root_name(name, lab): h[{"dataset": lab}] for lab in h.axes["dataset"]}
    return {name: h}


def write_outputs(outdir: Path, hists: dict[str, hist.Hist], summary: dict[str, Any],
                  formats: list[str], titles: dict[str, str] | None = None) -> list[str]:
    """Write the requested formats into ``outdir``; returns the file names written.

    ``summary`` gains ``outputs`` (the files) and ``output_notes`` (what could not be written).
    """
    outdir.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    notes: list[str] = []
    if "pickle" in formats:
        with (outdir / "histograms.pkl").open("wb") as f:
            pickle.dump(hists, f)
        written.append("histograms.pkl")
    if "root" in formats:
        import uproot

        with uproot.recreate(outdir / "histograms.root") as f:
            for name, h in hists.items():
                for key, part in _per_dataset(name, h, summary.get("combos")).items():
                    if any(isinstance(a, (hist.axis.IntCategory, hist.axis.StrCategory)) for a in part.axes) \
                            or part.ndim > 3:
                        notes.append(f"{key}: not written to ROOT (category axes or more than 3 axes)")
                        continue
                    f[key] = part
        written.append("histograms.root")
    if "png" in formats:
        for name in hists:
            output_file(outdir, f"{name}.png")  # every name checked before anything is drawn
        for name, h in hists.items():
            png = _plot(outdir, name, h, summary, notes, (titles or {}).get(name) or name)
            if png:
                written.append(png)
    if "json" in formats:
        from .validate import AGC_JSON, to_agc

        agc = to_agc(hists, [tuple(c) for c in summary["combos"]] if summary.get("combos") else None)
        if agc:
            (outdir / AGC_JSON).write_text(json.dumps(agc) + "\n")
            written.append(AGC_JSON)
        written.append("summary.json")
    summary["outputs"], summary["output_notes"] = list(written), notes
    if "json" in formats:
        (outdir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return written


def _plot(outdir: Path, name: str, h: hist.Hist, summary: dict, notes: list[str], title: str) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep

    plt.style.use(mplhep.style.CMS)
    if "variation" in h.axes.name:  # the nominal histograms
        h = h[{"variation": "nominal"}]
    cat = "process" if "process" in h.axes.name else "dataset"
    by_ds = cat in h.axes.name
    dims = h.ndim - (1 if by_ds else 0)
    fig, ax = plt.subplots(figsize=(9, 7))
    try:
        if dims == 1:
            parts = list(_per_dataset(name, h).values())
            labels = list(h.axes[cat]) if by_ds else [summary.get("name", name)]
            info = summary.get("datasets", {})
            for part, label in zip(parts, labels):
                if by_ds and label in info and info[label].get("normalisation") is None:  # data: points
                    mplhep.histplot(part, ax=ax, label=label, histtype="errorbar", color="black")
                else:  # simulation: a line (its error bars would hide the data at low statistics)
                    mplhep.histplot(part, ax=ax, label=label, histtype="step", yerr=False)
            ax.legend()
            ax.set_ylabel("events" if summary.get("weighted") else "entries")
        elif dims == 2:
            flat = h[{cat: sum}] if by_ds else h
            mplhep.hist2dplot(flat, ax=ax)
        else:
            notes.append(f"{name}: no PNG (more than 2 axes)")
            return None
        ax.set_title(title, fontsize=14, loc="right")
        fname = f"{name}.png"
        fig.savefig(output_file(outdir, fname), dpi=80, bbox_inches="tight")
        return fname
    finally:
        plt.close(fig)
