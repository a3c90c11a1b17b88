"""Write one benchmark's section of benchmarks/RESULTS.md without touching the others."""

from __future__ import annotations

import platform
import re
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = """# casa benchmark results

Each section is written by one script in `benchmarks/` and compares against a baseline measured in
the same run: read the ratios, not the seconds (the machines are small and noisy). Re-run a script
to refresh its section.
"""


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_section(name: str, body: str) -> Path:
    """Replace (or append) the section between ``<!-- name -->`` markers."""
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    block = f"<!-- {name} -->\n{body.rstrip()}\n\n_{stamp}, {machine()}_\n<!-- /{name} -->"
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)
    return RESULTS


def time_to_workers(client, tasks: int, task_seconds: float, want: int = 4, limit: float = 120.0):
    """Queue ``tasks`` sleeps of ``task_seconds`` on an adapting cluster; (seconds to the first
    worker, seconds to ``want`` workers or None if the queue drained or ``limit`` passed first, the
    queued futures, the start time)."""
    import time

    t0 = time.perf_counter()
    futs = client.map(time.sleep, [task_seconds] * tasks, pure=False)
    first = enough = None
    while enough is None and time.perf_counter() - t0 < limit and not all(f.done() for f in futs):
        n = len(client.scheduler_info()["workers"])
        if n and first is None:
            first = time.perf_counter() - t0
        if n >= want:
            enough = time.perf_counter() - t0
        time.sleep(0.05)
    return first, enough, futs, t0
