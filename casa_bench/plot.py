"""One PNG per bench run: throughput, event rate, range latency and bytes, per method.

A measurement a method does not support (``None`` in the results) gets no bar and an ``n/a``
label where the bar would be.
"""

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

    def na(ax, missing):
        for i in missing:
            ax.text(i, 0.02, "n/a", ha="center", va="bottom", fontsize=10, color="gray",
                    transform=ax.get_xaxis_transform())

    def bars(ax, key, scale, title):
        have = [i for i, n in enumerate(names) if res[n][key] is not None]
        med = [res[names[i]][key]["median"] * scale for i in have]
        lo = [m - res[names[i]][key]["min"] * scale for m, i in zip(med, have)]
        hi = [res[names[i]][key]["max"] * scale - m for m, i in zip(med, have)]
        ax.bar(have, med, yerr=[lo, hi], capsize=4, color="tab:blue")
        na(ax, [i for i in x if i not in have])
        ax.set_title(title)

    bars(axes[0], "whole_mb_s", 1, "whole file, MB/s")
    bars(axes[1], "columns_events_s", 1e-3, "column subset, k events/s")
    have = [i for i, n in enumerate(names) if res[n]["range_latency_ms"] is not None]
    p50 = [res[names[i]]["range_latency_ms"]["p50"] for i in have]
    p99 = [res[names[i]]["range_latency_ms"]["p99"] for i in have]
    axes[2].bar([i - 0.2 for i in have], p50, 0.4, label="p50")
    axes[2].bar([i + 0.2 for i in have], p99, 0.4, label="p99")
    na(axes[2], [i for i in x if i not in have])
    axes[2].set_title(f"{doc['meta']['range_size'] >> 10} KiB range latency, ms")
    axes[2].legend(fontsize=8)
    bars(axes[3], "ranges_batched_ms", 1, f"{doc['meta']['nranges']} ranges as one vector read, ms")
    for i, what in enumerate(("whole", "columns", "ranges")):
        have = [j for j, n in enumerate(names) if res[n]["bytes"].get(what, 0) is not None]
        axes[4].bar([j + (i - 1) * 0.27 for j in have], [res[names[j]]["bytes"].get(what, 0) / 1e6 for j in have],
                    0.27, label=what)
    axes[4].set_title("bytes transferred, MB")
    axes[4].legend(loc="lower center", fontsize=8)
    for ax in axes:
        ax.set_xticks(list(x), names, rotation=20)
        ax.set_xlim(-0.6, len(names) - 0.4)  # room for methods without a bar
    meta = doc["meta"]
    fig.suptitle(f"casa bench: {len(meta['files'])} file(s), {meta['total_bytes'] / 1e6:.1f} MB, "
                 f"{meta['total_events']:,} events, {meta['reps']} reps (bars: median, whiskers: min-max)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)
