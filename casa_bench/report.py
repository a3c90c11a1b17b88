"""A sweep's outputs: a Markdown table, JSON, CSV (one row per method, pattern and level), PNG
plots (throughput vs concurrency with the saturation point, latency CDF, bytes amplification) and
one HTML report with the plots embedded."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import time
from pathlib import Path
from typing import Any

from casa_bench.figures import FIGURES

__all__ = ["rows", "sweep_table", "write_sweep", "plot_sweep"]

CSV_FIELDS = ["method", "pattern", "workers", "concurrency", "mb_s", "gbps", "ops_s", "ttfb_ms", "p50_ms", "p90_ms",
              "p99_ms", "p999_ms", "client_cpu_s_per_gb", "server_cpu_s_per_gb", "client_cores", "server_cores",
              "errors", "retries", "bytes", "ops", "wall_s", "wire_bytes", "requested_bytes", "amplification",
              "saturation", "unsupported"]


def rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per (method, pattern, level); a pattern a method lacks is one ``n/a`` row."""
    out = []
    for method, pats in doc["results"].items():
        for pat, r in pats.items():
            b = r.get("bytes") or {}
            common = {"method": method, "pattern": pat, "wire_bytes": b.get("wire"),
                      "requested_bytes": b.get("requested"), "amplification": b.get("amplification"),
                      "saturation": r.get("saturation"), "unsupported": r.get("unsupported") or r.get("error")}
            if not r["levels"]:
                out.append(common)
            for lv in r["levels"]:
                row = {**common, **{k: lv.get(k) for k in CSV_FIELDS if k in lv}}
                row["workers"] = lv.get("workers")
                row["server_cores"] = ";".join(f"{k}={v:.2f}" for k, v in lv["server_cores"].items()) or None
                out.append(row)
    return out


def _f(v: Any, spec: str = ".1f") -> str:
    if v is None:
        return "n/a"
    return format(v, spec) if isinstance(v, (int, float)) else str(v)


def sweep_table(doc: dict[str, Any]) -> str:
    """The sweep as a Markdown table (one row per method, pattern and level)."""
    head = ["method", "pattern", "readers", "MB/s", "Gbps", "ops/s", "TTFB ms", "p50", "p90", "p99", "p99.9",
            "client CPU s/GB", "server CPU s/GB", "wire/requested", "errors", "retries"]
    if doc["meta"].get("workers"):
        head.insert(2, "workers")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows(doc):
        sat = r.get("saturation")
        readers = _f(r.get("concurrency"), "d") + (" (sat.)" if sat is not None and sat == r.get("concurrency") else "")
        cells = [r["method"], r["pattern"], readers, _f(r.get("mb_s")), _f(r.get("gbps"), ".3f"),
                 _f(r.get("ops_s"), ".0f"),
                 _f(r.get("ttfb_ms"), ".2f"), _f(r.get("p50_ms"), ".2f"), _f(r.get("p90_ms"), ".2f"),
                 _f(r.get("p99_ms"), ".2f"), _f(r.get("p999_ms"), ".2f"), _f(r.get("client_cpu_s_per_gb"), ".2f"),
                 _f(r.get("server_cpu_s_per_gb"), ".2f"), _f(r.get("amplification"), ".3f"),
                 _f(r.get("errors"), "d"), _f(r.get("retries"), "d")]
        if doc["meta"].get("workers"):
            cells.insert(2, _f(r.get("workers"), "d"))
        if r.get("unsupported") and r.get("concurrency") is None:
            cells = cells[:2] + ["n/a"] * (len(cells) - 2)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _series(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{m} {p}", r) for m, pats in doc["results"].items() for p, r in pats.items() if r["levels"]]


def plot_sweep(doc: dict[str, Any]) -> dict[str, bytes]:
    """PNG bytes of three plots: ``throughput``, ``latency_cdf``, ``amplification``."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}
    series = _series(doc)
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, r in series:
        lv = sorted(r["levels"], key=lambda x: x["concurrency"])
        xs, ys = [x["concurrency"] for x in lv], [x["mb_s"] for x in lv]
        (line,) = ax.plot(xs, ys, marker="o", label=label)
        sat = r.get("saturation")
        if sat in xs:
            ax.plot([sat], [ys[xs.index(sat)]], marker="*", markersize=16, color=line.get_color(),
                    markeredgecolor="black", linestyle="none")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    rates = [lv["mb_s"] for _, r in series for lv in r["levels"] if lv["mb_s"] > 0]
    if rates and max(rates) > 20 * min(rates):  # local disk next to a network path: a log scale shows both
        ax.set_yscale("log")
    ax.set_xlabel("concurrent readers" + (" (all workers)" if doc["meta"].get("workers") else ""))
    ax.set_ylabel("aggregate MB/s")
    ax.set_title("throughput vs concurrency (★ saturation: 90 % of the best)")
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(fontsize=7)
    out["throughput"] = _png(fig, plt)

    fig, ax = plt.subplots(figsize=(8, 5))
    for label, r in series:
        top = max(r["levels"], key=lambda x: x["concurrency"])
        s = top["latency_sample_ms"]
        if s:
            ax.plot(s, [(i + 1) / len(s) for i in range(len(s))], label=f"{label} x{top['concurrency']}")
    ax.set_xscale("log")
    ax.set_xlabel("operation latency, ms")
    ax.set_ylabel("fraction of operations")
    ax.set_title("latency CDF at the highest concurrency")
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(fontsize=7)
    out["latency_cdf"] = _png(fig, plt)

    fig, ax = plt.subplots(figsize=(8, 5))
    amp = [(label, r["bytes"]["amplification"]) for label, r in series if (r.get("bytes") or {}).get("amplification")]
    ax.barh([a for a, _ in amp], [v for _, v in amp], color="tab:orange")
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_xlabel("bytes on the wire / bytes requested")
    ax.set_title("bytes amplification")
    fig.tight_layout()
    out["amplification"] = _png(fig, plt)
    return out


def _png(fig: Any, plt: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _html(doc: dict[str, Any], pngs: dict[str, bytes]) -> str:
    meta = doc["meta"]
    imgs = "\n".join(f'<h2>{html.escape(k.replace("_", " "))}</h2><img src="data:image/png;base64,'
                     f'{base64.b64encode(v).decode()}" alt="{k}">' for k, v in pngs.items())
    head = CSV_FIELDS[:14]
    def cell(v: Any) -> str:
        return html.escape(_f(v, ".3g") if isinstance(v, float) else _f(v))

    trs = "\n".join("<tr>" + "".join(f"<td>{cell(r.get(k))}</td>" for k in head) + "</tr>" for r in rows(doc))
    info = html.escape(json.dumps({k: meta[k] for k in ("files", "patterns", "concurrency", "mode", "duration_s",
                                                        "max_bytes", "workers", "machine", "time") if k in meta},
                                  indent=1, default=str))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>casa bench sweep</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
            "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style></head><body>"
            f"<h1>casa bench sweep, {html.escape(meta['time'])}</h1><pre>{info}</pre>"
            f"<table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{trs}</table>{imgs}</body></html>")


def write_sweep(doc: dict[str, Any], out_dir: str | os.PathLike, stem: str | None = None) -> dict[str, str]:
    """``<stem>.json``, ``.csv``, ``-throughput.png`` (and the other plots) and ``.html``; their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or "sweep-" + time.strftime("%Y%m%d-%H%M%S")
    paths = {"json": out / f"{stem}.json", "csv": out / f"{stem}.csv", "html": out / f"{stem}.html"}
    with paths["csv"].open("w", newline="") as fh:
        w = csv.DictWriter(fh, CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows(doc))
    pngs = plot_sweep(doc)
    for k, v in pngs.items():
        paths[f"png_{k}"] = out / f"{stem}-{k}.png"
        paths[f"png_{k}"].write_bytes(v)
    paths["html"].write_text(_html(doc, pngs))
    doc["outputs"] = {k: str(v) for k, v in paths.items()}
    paths["json"].write_text(json.dumps(doc, indent=1, default=str))
    return doc["outputs"]


assert set(FIGURES) <= set(CSV_FIELDS)
