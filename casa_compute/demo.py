"""``casa demo`` / ``make demo``: the main job, end to end, on the built-in demo dataset.

1. Start the facility in a box (XRootD origin + token-protected XCache, S3, Dask over TLS), unless
   one is running already or ``facility=False``.
2. Open ``demo/zmumu`` through the XCache and run the dimuon processor with
   :func:`casa_compute.run` on the facility's Dask workers; the same through the S3 bucket.
3. Check both give the same histogram, save a PNG, print a summary; stop the facility.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import casa_data

__all__ = ["run_demo", "DemoResult", "plot_mass"]


@dataclass
class DemoResult:
    histograms: dict
    events: int
    pairs: int
    peak: float
    seconds: float
    plot: Path


def plot_mass(hists: dict, path: Path, title: str) -> Path:
    """One PNG: the dimuon mass per delivery path, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep

    plt.style.use(mplhep.style.CMS)
    fig, ax = plt.subplots(figsize=(9, 7))
    for i, (label, h) in enumerate(hists.items()):
        mplhep.histplot(h, ax=ax, histtype="fill" if i == 0 else "step", alpha=0.6 if i == 0 else 1,
                        label=label)
    ax.set_yscale("log")
    ax.set_ylabel("pairs / GeV")
    ax.set_title(title, fontsize=16)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def run_demo(dataset: str = "demo/zmumu", output: str | Path = "casa-output", facility: bool = True,
             paths: tuple[str, ...] = ("xcache", "s3")) -> DemoResult:
    """Run the demo job and print its summary (see the module docstring)."""
    from rich.console import Console

    import casa_compute
    from casa_compute.processors import DimuonProcessor

    from . import facility as fac

    console = Console()
    if dataset.startswith("demo/"):
        from casa_data.demo import generate

        with console.status("generating the demo data (once)..."):
            generate()
    started = False
    if facility and not fac.status()["up"]:
        with console.status("starting the facility in a box..."):
            fac.up()
        started = True
        casa_data.reset_config()
    t0 = time.perf_counter()
    hists, events, pairs = {}, 0, 0
    try:
        cluster = "facility" if facility else None
        for via in (paths if facility else ("local",)):
            ds = casa_data.open(dataset, via=via)
            console.print(f"[bold]{ds.name}[/] via [bold]{via}[/]: {len(ds.files)} files, e.g. {ds.files[0]}")
            out, report = casa_compute.run(DimuonProcessor(), ds, cluster=cluster)
            res = out[ds.name]
            hists[f"{ds.name} via {via}"] = res["mass"]
            events, pairs = res["entries"], res["pairs"]
            console.print(f"  {report.summary() if hasattr(report, 'summary') else report}", soft_wrap=True)
    finally:
        if started:
            with console.status("stopping the facility..."):
                fac.down()
            casa_data.reset_config()
    seconds = time.perf_counter() - t0
    first = next(iter(hists.values()))
    for label, h in hists.items():
        if not np.array_equal(h.values(), first.values()):
            raise RuntimeError(f"{label} gives a different histogram than {next(iter(hists))}")
    centers, values = first.axes[0].centers, first.values()
    window = (centers > 60) & (centers < 120)
    peak = float(centers[window][np.argmax(values[window])])
    plot = plot_mass(hists, Path(output) / "dimuon_mass.png", f"casa demo: {dataset}")
    console.print(
        f"[bold]{dataset}[/]: {events:,} events read, {pairs:,} opposite-charge pairs, "
        f"peak at {peak:.1f} GeV; identical through {', '.join(hists)}; {seconds:.1f} s\nplot: {plot}",
        soft_wrap=True,
    )
    return DemoResult(hists, events, pairs, peak, seconds, plot)
