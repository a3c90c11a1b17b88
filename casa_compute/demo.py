"""``casa demo`` / ``make demo``: the main job on the built-in demo dataset.

Generates the demo data if needed, opens ``demo/zmumu`` with :func:`casa_data.open`, fills a
dimuon-mass histogram, saves a PNG and prints a short summary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import awkward as ak
import hist
import numpy as np

import casa_data

__all__ = ["dimuon_mass", "run_demo", "DemoResult"]

MUON_COLUMNS = ["Muon_pt", "Muon_eta", "Muon_phi", "Muon_mass", "Muon_charge"]


def dimuon_mass(arr: ak.Array) -> np.ndarray:
    """Invariant mass of opposite-charge pairs in events with exactly two muons (GeV)."""
    two = arr[ak.num(arr.Muon_pt) == 2]
    pt, eta, phi, m, q = (ak.to_numpy(two[c]).astype(np.float64) for c in MUON_COLUMNS)
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    e = np.sqrt(px**2 + py**2 + pz**2 + m**2)
    m2 = e.sum(1) ** 2 - px.sum(1) ** 2 - py.sum(1) ** 2 - pz.sum(1) ** 2
    return np.sqrt(np.maximum(m2, 0))[q[:, 0] != q[:, 1]]


def mass_histogram() -> hist.Hist:
    return hist.Hist.new.Reg(120, 0, 120, name="mass", label=r"$m_{\mu\mu}$ [GeV]").Double()


@dataclass
class DemoResult:
    histogram: hist.Hist
    events: int
    pairs: int
    peak: float
    seconds: float
    plot: Path


def plot_mass(h: hist.Hist, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep

    plt.style.use(mplhep.style.CMS)
    fig, ax = plt.subplots(figsize=(9, 7))
    mplhep.histplot(h, ax=ax, histtype="fill", alpha=0.6, label=title)
    ax.set_yscale("log")
    ax.set_ylabel("pairs / GeV")
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def run_demo(dataset: str = "demo/zmumu", output: str | Path = "casa-output") -> DemoResult:
    """Run the demo job and print its summary."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console()
    if dataset.startswith("demo/"):
        from casa_data.demo import generate

        with console.status("generating the demo data (once)..."):
            generate()
    start = time.perf_counter()
    ds = casa_data.open(dataset, columns=MUON_COLUMNS, filter="nMuon == 2")
    console.print(ds.describe())
    h = mass_histogram()
    events = 0
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"reading {ds.name}", total=len(ds.resolved))
        for i in range(len(ds.resolved)):
            # One file at a time (with its replicas): the compute layer fans these out to workers.
            part = ds.subset([i])
            events += part.nevents
            h.fill(dimuon_mass(part.to_awkward()))
            progress.advance(task)
    seconds = time.perf_counter() - start
    centers, values = h.axes[0].centers, h.values()
    window = (centers > 60) & (centers < 120)
    peak = float(centers[window][np.argmax(values[window])])
    plot = plot_mass(h, Path(output) / "dimuon_mass.png", ds.name)
    console.print(
        f"[bold]{ds.name}[/]: {events:,} events read, {int(h.sum()):,} opposite-charge pairs, "
        f"peak at {peak:.1f} GeV, {seconds:.2f} s ({events / seconds / 1e6:.2f} M events/s)\n"
        f"plot: {plot}",
        soft_wrap=True,
    )
    return DemoResult(h, events, int(h.sum()), peak, seconds, plot)
