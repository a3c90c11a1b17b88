"""The AGC ttbar pipeline: peak memory and time, nominal only vs every AGC variation, same input.

The input is the ttbar NanoAOD v12 file (real ttbar events) slimmed to the analysis's branches and
replicated to N events; one dataset; each configuration runs in a fresh process (in-process
runner), with tracemalloc tracing every numpy/awkward buffer from the start of the run:

* nominal: ``examples/agc_ttbar.yaml`` with ``variations: {}``;
* all variations: the example as it is (pt_scale_up and pt_res_up re-run the selection per chunk,
  8 b-tag weights); the W+jets-only scale_var is left out (one dataset, ttbar).

Also the AGC's metrics (events/s per core = entries / summed process time, bytes read) and the
I/O-only mode (``io_only=True``) on the same input.

    .venv/bin/python benchmarks/bench_agc.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SPEC = ROOT / "casa_compute" / "pipeline" / "examples" / "agc_ttbar.yaml"
SHARED = Path(os.environ.get("CASA_SHARED_DATA", ROOT.parent / "shared" / "data"))


def make_input(dst: Path, n_events: int) -> int:
    import awkward as ak
    import uproot

    t = uproot.open(SHARED / "coffea" / "nano_tt_v12.root")["Events"]
    keys = set(t.keys())
    fields = {"Electron": ["pt", "eta", "phi", "mass", "charge", "cutBased", "sip3d"],
              "Muon": ["pt", "eta", "phi", "mass", "charge", "tightId", "sip3d", "pfRelIso04_all"],
              "Jet": ["pt", "eta", "phi", "mass", "jetId", "btagDeepFlavB"]}
    base = {f: t[f].array() for f in ("run", "luminosityBlock", "event")}
    for c, fs in fields.items():
        base[c] = ak.zip({f: t[f"{c}_{f}"].array() for f in fs if f"{c}_{f}" in keys})
    reps = max(1, n_events // t.num_entries)
    with uproot.recreate(dst) as f:
        f.mktree("Events", {k: v.type for k, v in base.items()})
        for r in range(reps):  # other event numbers per copy: other smearing
            part = dict(base)
            part["event"] = base["event"] + r * 10_000_000
            f["Events"].extend(part)
    return reps * t.num_entries


def child(spec: str, catalog: str, out: str, io_only: bool) -> None:
    import tracemalloc
    import warnings

    warnings.filterwarnings("ignore")
    import correctionlib  # noqa: F401 - imports before tracing
    import hist  # noqa: F401
    from coffea.nanoevents import NanoAODSchema  # noqa: F401

    from casa_compute.pipeline import run_pipeline

    tracemalloc.start()
    t0 = time.perf_counter()
    res = run_pipeline(spec, via="local", catalog=catalog, output=out, force=True, io_only=io_only)
    wall = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    import resource

    s = res.summary
    print(json.dumps({"peak": peak, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "wall": wall,
                      "rate": s["events_per_second_per_core"], "bytes": s["bytes_read"], "events": s["events_in"],
                      "chunks": s["chunks"]}))


def measure(spec: Path, catalog: Path, out: Path, io_only: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", str(spec), str(catalog), str(out)] + (["--io-only"] if io_only else [])
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    import yaml

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="5,000 events, one repetition")
    ap.add_argument("--events", type=int, default=None)
    ap.add_argument("--chunksize", type=int, default=None)
    args = ap.parse_args()
    n = args.events or (5_000 if args.quick else 50_000)
    chunk = args.chunksize or (5_000 if args.quick else 25_000)
    reps = 1 if args.quick else 2
    with tempfile.TemporaryDirectory(prefix="casa-bench-agc-") as d:
        tmp = Path(d)
        events = make_input(tmp / "tt.root", n)
        cat = tmp / "catalog.yaml"
        cat.write_text(yaml.safe_dump({"datasets": [{"name": "agc/ttbar__nominal", "files": [str(tmp / "tt.root")]}]}))
        full = yaml.safe_load(SPEC.read_text())
        full["datasets"] = {"ttbar": full["datasets"]["ttbar"]}
        full.pop("pseudodata")
        full["variations"].pop("scale_var")
        full["corrections"] = [str(SPEC.parent / "agc_corrections.json")]
        full["delivery"] = {"chunksize": chunk}
        full["outputs"] = {"formats": ["pickle", "json"]}
        nominal = {**full, "variations": {}}
        specs = {}
        for name, s in (("nominal", nominal), ("all variations", full)):
            specs[name] = tmp / f"{name.replace(' ', '_')}.yaml"
            specs[name].write_text(yaml.safe_dump(s, sort_keys=False))
        results: dict[str, list[dict]] = {"nominal": [], "all variations": [], "I/O only": []}
        for i in range(reps):  # alternating
            for name in ("nominal", "all variations"):
                results[name].append(measure(specs[name], cat, tmp / f"out-{i}-{name[:3]}"))
            results["I/O only"].append(measure(specs["all variations"], cat, tmp / f"out-{i}-io", io_only=True))
    best = {k: min(v, key=lambda r: r["peak"]) for k, v in results.items()}
    ratio = best["all variations"]["peak"] / best["nominal"]["peak"]
    load = os.getloadavg()[0]
    rows = "\n".join(
        f"| {k} | {r['peak'] / 1e6:.1f} | {r['maxrss_kb'] / 1e3:.0f} | {min(x['wall'] for x in results[k]):.2f} | "
        f"{r['rate']:,.0f} | {r['bytes'] / 1e6:.2f} |" for k, r in best.items())
    body = f"""## AGC ttbar: variations, memory (`bench_agc.py{' --quick' if args.quick else ''}`)

`examples/agc_ttbar.yaml` on {events:,} real ttbar events (NanoAOD v12, slimmed, replicated), one
dataset, chunks of {chunk:,}, in-process; each row a fresh process, best of {reps}. Peak = the
largest traced Python/numpy/awkward allocation during the run (tracemalloc); RSS includes the
interpreter and libraries.

| run | peak traced MB | max RSS MB | wall s | events/s per core | MB read |
|---|---|---|---|---|---|
{rows}

**Peak memory, all AGC variations / nominal only: {ratio:.2f}x** (target < 2x): the variations run
one after the other inside each chunk; a shape variation copies only the field it changes
(`Jet.pt`), every other column is shared. Load average {load:.1f} (2 cores shared).
"""
    from _results import write_section

    print(body)
    write_section("bench_agc", body)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], "--io-only" in sys.argv)
    else:
        main()
