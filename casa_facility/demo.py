"""``casa demo`` / ``make demo``: the main job, end to end, on the built-in demo dataset.

1. Start the facility in a box (XRootD origin + token-protected XCache, S3, ServiceX, Skyhook,
   Dask over TLS), unless one is running already or ``facility=False``.
2. Run the Z->mumu pipeline (``pipeline/examples/zmumu_demo.yaml``) on the facility's Dask
   workers, once with the files delivered through the XCache and once through ServiceX.
3. Check both give the same histograms, write the plots, print a summary; stop the facility.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import casa_data

__all__ = ["run_demo", "DemoResult", "DEMO_PIPELINE"]

# The spec ships with casa_compute's pipeline examples (package data), not with casa_facility.
DEMO_PIPELINE = Path(__file__).resolve().parent.parent / "casa_compute" / "pipeline" / "examples" / "zmumu_demo.yaml"


@dataclass
class DemoResult:
    histograms: dict          # path -> {histogram name: hist.Hist}
    events: int
    selected: int
    peak: float
    seconds: float
    plots: list[Path]


def _peak(h, axis: str = "mll") -> float:
    """Centre of the fullest ``axis`` bin, summed over the other axes (e.g. the dataset axis)."""
    proj = h.project(axis)
    return float(proj.axes[0].centers[int(np.argmax(proj.values()))])


def run_demo(output: str | Path = "casa-output", facility: bool = True,
             paths: tuple[str, ...] = ("xcache", "servicex")) -> DemoResult:
    """Run the demo job and print its summary (see the module docstring)."""
    from rich.console import Console

    from casa_compute.pipeline import run_pipeline
    from casa_facility import lifecycle as fac

    console = Console()
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
    results = {}
    try:
        for via in (paths if facility else ("local",)):
            console.print(f"[bold]pipeline[/] {DEMO_PIPELINE.name} via [bold]{via}[/]"
                          + (" on the facility's Dask cluster" if facility else ""))
            res = run_pipeline(DEMO_PIPELINE, via=via, cluster="facility" if facility else None,
                               output=Path(output) / via, force=True)
            results[via] = res
            d = res.summary["datasets"]["dy"]
            console.print(f"  {d['events_in']:,} events in, {d['events_out']:,} selected; "
                          f"outputs in {res.outdir}", soft_wrap=True)
    finally:
        if started:
            with console.status("stopping the facility..."):
                fac.down()
            casa_data.reset_config()
    seconds = time.perf_counter() - t0
    first_via, first = next(iter(results.items()))
    for via, res in results.items():
        for name, h in res.hists.items():
            if not np.allclose(h.values(), first.hists[name].values()):
                raise RuntimeError(f"histogram {name!r} differs between {first_via} and {via}")
    d = first.summary["datasets"]["dy"]
    peak = _peak(first.hists["mll"])
    plots = sorted(Path(output).glob("*/*.png"))
    console.print(
        f"[bold]demo/zmumu[/]: {d['events_in']:,} events, {d['events_out']:,} selected, Z peak at "
        f"{peak:.1f} GeV; identical histograms via {' and '.join(results)}; {seconds:.1f} s\n"
        f"plots: {', '.join(str(p) for p in plots)}",
        soft_wrap=True,
    )
    return DemoResult({v: r.hists for v, r in results.items()}, d["events_in"], d["events_out"], peak,
                      seconds, plots)
