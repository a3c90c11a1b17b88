"""casa_data.open(...).to_awkward() against plain uproot.concatenate on the same files.

The dimuon columns of ../shared/data/agc/open-data-example.root (100k real events) are replicated
into 10 files of 200k events (2M in all), then both readers load the same columns, alternating,
several times. Target: casa >= 0.95x the events/s of plain uproot.

    python benchmarks/bench_open.py [--repeat 5] [--events-per-file 200000] [--files 10] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import awkward as ak
import uproot

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_section  # noqa: E402

import casa_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "agc" / "open-data-example.root"
COLUMNS = ["nMuon", "Muon_pt", "Muon_eta", "Muon_phi", "Muon_mass", "Muon_charge"]


def replicate(out: Path, n_files: int, per_file: int) -> list[Path]:
    src = uproot.open(SOURCE)["Events"].arrays(COLUMNS[1:])
    reps = -(-per_file // len(src))
    block = ak.concatenate([src] * reps)[:per_file]
    muon = ak.zip({c.split("_", 1)[1]: block[c] for c in COLUMNS[1:]})
    paths = []
    for i in range(n_files):
        p = out / f"dimuon_{i}.root"
        with uproot.recreate(p) as f:
            t = f.mktree("Events", {"Muon": muon.type})
            t.extend({"Muon": muon})
        paths.append(p)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--events-per-file", type=int, default=200_000)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run (2 files of 50k events, 2 repetitions); prints, leaves RESULTS.md as it is")
    args = ap.parse_args()
    if args.quick:
        args.repeat, args.files, args.events_per_file = 2, 2, 50_000
    if not SOURCE.exists():
        sys.exit(f"missing {SOURCE}: the benchmark needs ../shared/data beside the repository")
    with tempfile.TemporaryDirectory(prefix="casa-bench-open-") as tmp:
        files = replicate(Path(tmp), args.files, args.events_per_file)
        total = args.files * args.events_per_file
        ds = casa_data.open([str(f) for f in files])

        def casa():
            return ds.to_awkward(COLUMNS)

        def plain():
            return uproot.concatenate({str(f): "Events" for f in files}, COLUMNS, library="ak")

        assert len(casa()) == len(plain()) == total  # warm-up and correctness
        times: dict[str, list[float]] = {"casa": [], "uproot": []}
        for _ in range(args.repeat):
            for name, fn in (("uproot", plain), ("casa", casa)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["uproot"] / med["casa"]
    rows = "\n".join(
        f"| {k} | {med[k]:.3f} | {min(v):.3f}–{max(v):.3f} | {total / med[k] / 1e6:.2f} |" for k, v in times.items()
    )
    body = f"""## casa_data.open().to_awkward() vs uproot.concatenate (`bench_open.py`)

{total:,} real dimuon events (the AGC example file replicated into {args.files} files), 6 columns,
page cache warm, median of {args.repeat} alternating runs.

| reader | median s | range s | M events/s |
|---|---|---|---|
{rows}

**casa / plain uproot throughput: {ratio:.3f}x** (target >= 0.95x)."""
    print(body)
    if not args.quick:
        write_section("bench_open", body)


if __name__ == "__main__":
    main()
