"""Run every ``benchmarks/bench_*.py`` in turn (``make bench``), then say which failed.

    .venv/bin/python benchmarks/run_all.py [--quick] [--timeout SECONDS] [--list] [NAME ...]

Each benchmark writes its own section of ``benchmarks/RESULTS.md`` (see ``_results.py``), as when
it is run alone. A benchmark that fails (non-zero exit, a crash, ``--timeout``) does not stop the
others; the summary lists it and the exit code is 1. ``--quick`` is passed to the benchmarks that
offer it (a smoke run of a minute or two that prints its tables and leaves RESULTS.md as it is);
the others run in full. ``NAME`` selects benchmarks by name (``open`` or ``bench_open``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass
class Outcome:
    name: str
    status: str  # "ok", "failed (exit N)", "timed out", "interrupted"
    seconds: float
    quick: bool

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def benchmarks(names: list[str]) -> list[Path]:
    """The bench scripts, in name order; ``names`` keeps those matching (errors on an unknown one)."""
    found = sorted(HERE.glob("bench_*.py"))
    if not names:
        return found
    by_name = {p.stem: p for p in found} | {p.stem.removeprefix("bench_"): p for p in found}
    unknown = [n for n in names if n.removesuffix(".py") not in by_name]
    if unknown:
        sys.exit(f"unknown benchmark(s) {', '.join(unknown)}; choose from "
                 f"{', '.join(p.stem.removeprefix('bench_') for p in found)}")
    return sorted({by_name[n.removesuffix(".py")] for n in names})


def supports_quick(script: Path) -> bool:
    """Whether the script declares a ``--quick`` option (read, not imported: imports are slow)."""
    return '"--quick"' in script.read_text()


def run_one(script: Path, quick: bool, timeout: float | None) -> Outcome:
    use_quick = quick and supports_quick(script)
    argv = [sys.executable, str(script), *(["--quick"] if use_quick else [])]
    mode = "--quick" if use_quick else ("full run: no --quick" if quick else "full run")
    print(f"\n=== {script.stem} ({mode}) ===", flush=True)
    t0 = time.monotonic()
    try:
        code = subprocess.run(argv, cwd=HERE.parent, timeout=timeout).returncode
        status = "ok" if code == 0 else f"failed (exit {code})"
    except subprocess.TimeoutExpired:
        status = f"timed out after {timeout:.0f} s"
    except KeyboardInterrupt:
        status = "interrupted"
    return Outcome(script.stem, status, time.monotonic() - t0, use_quick)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Results: benchmarks/RESULTS.md (one section per benchmark).")
    ap.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    ap.add_argument("--quick", action="store_true",
                    help="pass --quick to the benchmarks that offer it (a smoke run; RESULTS.md unchanged)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per benchmark before it is stopped and counted as failed")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and whether they offer --quick")
    args = ap.parse_args(argv)
    scripts = benchmarks(args.names)
    if args.list:
        for s in scripts:
            print(f"{s.stem:<16} {'--quick' if supports_quick(s) else ''}")
        return 0
    outcomes: list[Outcome] = []
    for script in scripts:
        outcomes.append(run_one(script, args.quick, args.timeout))
        if outcomes[-1].status == "interrupted":
            break
    print("\n=== summary ===")
    for o in outcomes:
        print(f"{o.name:<16} {o.status:<24} {o.seconds:8.1f} s{'  (quick)' if o.quick else ''}")
    skipped = [s.stem for s in scripts[len(outcomes):]]
    if skipped:
        print(f"not run: {', '.join(skipped)}")
    failed = [o.name for o in outcomes if not o.ok]
    if failed or skipped:
        print(f"FAILED: {', '.join(failed + skipped)}")
        return 1
    written = [o.name for o in outcomes if not o.quick]
    print(f"all {len(outcomes)} benchmarks passed"
          + (f"; {', '.join(written)} wrote their sections of {HERE / 'RESULTS.md'}" if written else
             " (quick runs: RESULTS.md unchanged)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
