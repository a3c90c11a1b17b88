"""``casa bench --concurrency`` at scale, on real servers: a SeaweedFS and an XRootD origin
(started by the bench), Dask workers of a LocalCluster, forked readers, and ``compare``."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from casa_bench import sweep
from casa_bench.compare import compare, compare_table
from casa_bench.figures import percentile, saturation
from casa_bench.workload import parse_pattern, parse_size, record_reads
from casa_data.config import reset_config

ROOT = Path(__file__).resolve().parents[1]
PCTL = ("p50_ms", "p90_ms", "p99_ms", "p999_ms")


@pytest.fixture(scope="module")
def quick_sweep(shared_data, tmp_path_factory) -> dict:
    """``casa bench --quick --concurrency 1,2`` over s3-arrow (embedded SeaweedFS) and xrootd (origin)."""
    tmp = tmp_path_factory.mktemp("sweep")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CONFIG_HOME": str(tmp / "xdg")}
    for var in ("CASA_CONFIG", "CASA_CATALOG", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        env.pop(var, None)
    agc = shared_data / "agc" / "open-data-example.root"
    proc = subprocess.run([sys.executable, "-m", "casa_cli.main", "bench", str(agc), "--quick", "--concurrency", "1,2",
                           "--methods", "s3-arrow,xrootd", "--pattern", "whole,ranges:64k", "--object-size", "1M",
                           "--duration", "0.5", "--out", str(tmp / "out")],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout
    [jpath] = (tmp / "out").glob("sweep-*.json")
    return {"doc": json.loads(jpath.read_text()), "stdout": proc.stdout, "dir": tmp / "out", "json": jpath}


def test_quick_sweep_writes_json_csv_png_html_with_sane_numbers(quick_sweep):
    doc, out = quick_sweep["doc"], quick_sweep["dir"]
    assert "| s3-arrow | ranges:64k |" in quick_sweep["stdout"] and "| xrootd | whole |" in quick_sweep["stdout"]
    for kind in ("csv", "html", "png_throughput", "png_latency_cdf", "png_amplification"):
        p = Path(doc["outputs"][kind])
        assert p.parent == out and p.stat().st_size > 500, kind
        if kind.startswith("png"):
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000
    html = Path(doc["outputs"]["html"]).read_text()
    assert html.count('src="data:image/png;base64,') == 3 and "s3-arrow" in html
    assert doc["meta"]["embedded_server"] == "seaweedfs" and doc["meta"]["concurrency"] == [1, 2]
    res = doc["results"]
    for method in ("s3-arrow", "xrootd"):
        for pat in ("whole", "ranges:64k"):
            r = res[method][pat]
            assert r["unsupported"] is None and [lv["concurrency"] for lv in r["levels"]] == [1, 2]
            b = r["bytes"]
            assert b["requested"] > 0 and b["wire"] >= b["requested"], (method, pat, b)
            assert b["wire"] <= 1.1 * b["requested"] + 64 * 2048, (method, pat, b)  # headers, not read-ahead
            assert r["saturation"] in (1, 2)
            for lv in r["levels"]:
                vals = [lv[k] for k in PCTL]
                assert vals == sorted(vals) and vals[0] > 0, (method, pat, vals)
                assert lv["mb_s"] > 0 and lv["ops_s"] > 0 and lv["errors"] == 0 and lv["ttfb_ms"] > 0
                assert lv["gbps"] == pytest.approx(lv["mb_s"] * 8 / 1000)
                assert len(lv["per_reader_bytes"]) == lv["concurrency"] and all(lv["per_reader_bytes"])
                assert lv["client_cpu_s_per_gb"] > 0 and lv["server_cpu_s_per_gb"] > 0  # our servers' /proc
                # a level lasts its 0.5 s, or less when its readers used up the byte budget first
                # (256 MiB for --quick: a fast machine reads that in a third of a second)
                budget = doc["meta"].get("max_bytes", 256 << 20) // lv["concurrency"]
                assert 0 < lv["wall_s"] < 10
                assert lv["wall_s"] > 0.4 or min(lv["per_reader_bytes"]) >= budget, (method, pat, lv["wall_s"])
    assert set(res["xrootd"]["ranges:64k"]["levels"][0]["server_cpu_s"]) == {"xrootd-origin"}
    assert set(res["s3-arrow"]["whole"]["levels"][0]["server_cpu_s"]) == {"seaweedfs"}
    put = res["s3-arrow"]["put:1M"]  # writes: PUT throughput, bytes sent up
    assert put["levels"][0]["mb_s"] > 0 and put["bytes"]["wire"] >= put["bytes"]["requested"] > 0
    assert "no object writes" in res["xrootd"]["put:1M"]["unsupported"]
    with open(doc["outputs"]["csv"]) as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 2 * 2 * 2 + 2 + 1  # 2 methods x 2 patterns x 2 levels, s3 writes x 2, xrootd writes n/a
    assert {r["method"] for r in table} == {"s3-arrow", "xrootd"}
    assert all(float(r["mb_s"]) > 0 for r in table if r["concurrency"])


def test_compare_prints_ratios(quick_sweep, tmp_path):
    a = quick_sweep["doc"]
    b = json.loads(json.dumps(a))
    for pats in b["results"].values():
        for r in pats.values():
            for lv in r["levels"]:
                lv["mb_s"] *= 2
                lv["p99_ms"] *= 4
    bpath = tmp_path / "b.json"
    bpath.write_text(json.dumps(b))
    entries = compare(a, b)
    assert len(entries) == 10
    for e in entries:
        assert e["figures"]["mb_s"]["ratio"] == pytest.approx(2.0) and e["figures"]["mb_s"]["better"] is True
        assert e["figures"]["p99_ms"]["ratio"] == pytest.approx(4.0) and e["figures"]["p99_ms"]["better"] is False
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "casa_cli.main", "bench", "compare", str(quick_sweep["json"]),
                           str(bpath)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| xrootd | whole | - | 2 |"))
    assert "| 2.00 + |" in row and "| 4.00 - |" in row
    assert "2.00 +" in compare_table(a, b)


def test_workers_report_figures_that_add_up(shared_data, casa_env):
    """Two Dask workers of a LocalCluster, one reader each: their bytes, ops and MB/s sum to the aggregate."""
    agc = shared_data / "agc" / "open-data-example.root"
    doc = sweep([str(agc)], ["local", "xrootd"], concurrency=[1], workers=[2], patterns=["ranges:64k"],
                duration=0.5, max_bytes=64 << 20)
    [lv] = doc["results"]["local"]["ranges:64k"]["levels"]
    assert lv["workers"] == 2 and lv["concurrency"] == 2 and len(lv["per_worker"]) == 2
    ws = lv["per_worker"]
    pids = {w["pid"] for w in ws}
    assert len({w["worker"] for w in ws}) == 2 and len(pids) == 2 and os.getpid() not in pids
    assert all(w["bytes"] > 0 and w["ops"] > 0 and w["p50_ms"] <= w["p99_ms"] for w in ws)
    assert sum(w["bytes"] for w in ws) == lv["bytes"] and sum(w["ops"] for w in ws) == lv["ops"]
    assert sum(w["mb_s"] for w in ws) == pytest.approx(lv["mb_s"])
    assert doc["meta"]["mode"] == "dask" and doc["meta"]["workers"] == [2]
    assert "not on Dask workers" in doc["results"]["xrootd"]["ranges:64k"]["unsupported"]


def test_processes_replay_and_columns(shared_data, casa_env, tmp_path):
    """Forked readers measure their own CPU; replay repeats uproot's recorded NanoAOD requests."""
    nano = shared_data / "skhep" / "nanoAOD_2015_CMS_Open_Data_ttbar.root"  # the AGC's NanoAOD, 947 branches
    cols = ["Jet_pt", "Jet_eta", "Muon_pt", "Electron_pt"]
    from casa_bench import bench_files

    [f] = bench_files([nano])
    reads = record_reads(f, cols)
    assert len(reads) >= 3 and all(n > 0 for _, n in reads) and max(o + n for o, n in reads) <= f.size
    # Forked readers run in a fresh interpreter: this pytest process has loaded the XRootD client (and
    # its threads) in earlier tests, and forking a process that holds them can abort the child.
    result = tmp_path / "sweep.json"
    code = (f"import json; from casa_bench import sweep; doc = sweep([{str(nano)!r}], ['local'], "
            f"concurrency=[1, 2], patterns=['replay', 'columns'], mode='processes', duration=0.4, columns={cols!r}); "
            f"open({str(result)!r}, 'w').write(json.dumps(doc, default=str))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, env=os.environ.copy())
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(result.read_text())
    rep = doc["results"]["local"]["replay"]
    assert doc["meta"]["replay"][nano.name] == {"requests": len(reads), "bytes": sum(n for _, n in reads)}
    for lv in rep["levels"] + doc["results"]["local"]["columns"]["levels"]:
        assert lv["ops"] > 0 and lv["client_cpu_s"] > 0 and lv["errors"] == 0
    assert rep["bytes"]["amplification"] == 1.0


def test_units():
    assert parse_size("64k") == 65536 and parse_size("4M") == 4 << 20 and parse_size("100") == 100
    assert parse_pattern("ranges:1M").label == "ranges:1M" and parse_pattern("put:16M").writes
    with pytest.raises(Exception, match="unknown pattern"):
        parse_pattern("sideways")
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([], 50) is None
    lv = [{"concurrency": c, "mb_s": m} for c, m in ((1, 100), (2, 190), (4, 200), (8, 150))]
    assert saturation(lv) == 2
    reset_config()
