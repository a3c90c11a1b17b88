"""One PNG per bench run: throughput, event rate, range latency and bytes, per method."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot"]


def plot(doc: dict[str, Any], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = doc["results"]
    names = list(res)
    x = range(len(names))
    fig, axes = plt.subplots(1, 5, figsize=(20, 4))

    def bars(ax, key, scale, title):
        med = [res[n][key]["median"] * scale for n in names]
        lo = [m - res[n][key]["min"] * scale for m, n in zip(med, names)]
        hi = [res[n][key]["max"] * scale - m for m, n in zip(med, names)]
        ax.bar(x, med, yerr=[lo, hi], capsize=4, color="tab:blue")
        ax.set_title(title)

    bars(axes[0], "whole_mb_s", 1, "whole file, MB/s")
    bars(axes[1], "columns_events_s", 1e-3, "column subset, k events/s")
    p50 = [res[n]["range_latency_ms"]["p50"] for n in names]
    p99 = [res[n]["range_latency_ms"]["p99"] for n in names]
    axes[2].bar([i - 0.2 for i in x], p50, 0.4, label="p50")
    axes[2].bar([i + 0.2 for i in x], p99, 0.4, label="p99")
    axes[2].set_title(f"{doc['meta']['range_size'] >> 10} KiB range latency, ms")
    axes[2].legend(fontsize=8)
    bars(axes[3], "ranges_batched_ms", 1, f"{doc['meta']['nranges']} ranges as one vector read, ms")
    for i, what in enumerate(("whole", "columns", "ranges")):
        axes[4].bar([j + (i - 1) * 0.27 for j in x], [res[n]["bytes"].get(what, 0) / 1e6 for n in names],
                    0.27, label=what)
    axes[4].set_title("bytes transferred, MB")
    axes[4].legend(loc="lower center", fontsize=8)
    for ax in axes:
        ax.set_xticks(list(x), names, rotation=20)
    meta = doc["meta"]
    fig.suptitle(f"casa bench: {len(meta['files'])} file(s), {meta['total_bytes'] / 1e6:.1f} MB, "
                 f"{meta['total_events']:,} events, {meta['reps']} reps (bars: median, whiskers: min-max)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)
