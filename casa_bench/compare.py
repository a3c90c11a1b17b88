"""``casa bench compare A.json B.json``: two sweeps side by side, B / A per figure.

Rows are matched by method, pattern, workers and concurrency; a figure missing on either side is
``n/a``. The verdict per ratio reads the figure's direction (MB/s up is better, p99 up is worse).
"""

from __future__ import annotations

import json
import os
from typing import Any

from casa_bench.figures import FIGURES
from casa_bench.report import rows

__all__ = ["compare", "compare_table"]

_KEYS = ("method", "pattern", "workers", "concurrency")


def _load(doc: dict[str, Any] | str | os.PathLike) -> dict[str, Any]:
    if isinstance(doc, dict):
        return doc
    with open(doc) as fh:
        return json.load(fh)


def compare(a: dict[str, Any] | str | os.PathLike, b: dict[str, Any] | str | os.PathLike) -> list[dict[str, Any]]:
    """One entry per level in both runs:
    ``{method, pattern, workers, concurrency, figures: {key: {a, b, ratio, better}}}``."""
    ra = {tuple(r.get(k) for k in _KEYS): r for r in rows(_load(a)) if r.get("concurrency") is not None}
    rb = {tuple(r.get(k) for k in _KEYS): r for r in rows(_load(b)) if r.get("concurrency") is not None}
    out = []
    for key in [k for k in ra if k in rb]:
        figs = {}
        for f, (_, higher) in FIGURES.items():
            x, y = ra[key].get(f), rb[key].get(f)
            ratio = y / x if isinstance(x, (int, float)) and isinstance(y, (int, float)) and x else None
            better = None if ratio is None or ratio == 1 else (ratio > 1) == higher
            figs[f] = {"a": x, "b": y, "ratio": ratio, "better": better}
        out.append({**dict(zip(_KEYS, key)), "figures": figs})
    return out


def compare_table(a: dict[str, Any] | str | os.PathLike, b: dict[str, Any] | str | os.PathLike,
                  figures: tuple[str, ...] = ("mb_s", "ops_s", "ttfb_ms", "p50_ms", "p99_ms", "client_cpu_s_per_gb",
                                              "server_cpu_s_per_gb", "errors")) -> str:
    """Markdown: per level, B/A ratio of each figure (``+`` better, ``-`` worse)."""
    head = ["method", "pattern", "workers", "readers"] + [f"{FIGURES[f][0]} B/A" for f in figures]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in compare(a, b):
        cells = [str(e["method"]), str(e["pattern"]), str(e["workers"] or "-"), str(e["concurrency"])]
        for f in figures:
            c = e["figures"][f]
            if c["ratio"] is None:
                cells.append("n/a")
            else:
                mark = "" if c["better"] is None else (" +" if c["better"] else " -")
                cells.append(f"{c['ratio']:.2f}{mark}")
        lines.append("| " + " | ".join(cells) + " |")
    if len(lines) == 2:
        lines.append("| (no level in both runs) |")
    return "\n".join(lines)
