"""``casa bench`` against a real SeaweedFS: outputs written, measurements sane (not fast)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from casa_bench import BenchMethod, bench, bench_files, markdown_table, register_method, run_bench
from casa_bench.builtin import LocalMethod
from casa_data.config import reset_config
from casa_facility.services.s3 import SeaweedFS

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
AGC = SHARED / "agc" / "open-data-example.root"
PARQUET = SHARED / "coffea" / "nano_dimuon.parquet"
HEADERS = 2048  # generous HTTP overhead per request


def _need(p: Path) -> Path:
    assert p.exists(), f"{p} is missing: the tests need ../shared/data (see its README)"
    return p


@pytest.fixture()
def clean_env(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for var in ("CASA_CONFIG", "CASA_CATALOG", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    reset_config()
    yield tmp_path
    reset_config()


def _check_sane(doc: dict, size: int) -> None:
    res, meta = doc["results"], doc["meta"]
    assert set(res) == {"local", "s3fs", "s3-arrow"}
    nranges, rsize = meta["nranges"], meta["range_size"]
    assert res["local"]["bytes"]["whole"] == size
    assert res["local"]["bytes"]["ranges"] == nranges * rsize
    for name in ("s3fs", "s3-arrow"):
        b = res[name]["bytes"]
        assert size <= b["whole"] <= size + 16 * HEADERS, (name, b)
        assert nranges * rsize <= b["ranges"] <= nranges * (rsize + HEADERS) + 16 * HEADERS, (name, b)
        assert b["columns"] >= 0.95 * res["local"]["bytes"]["columns"], (name, b)
        assert res[name]["range_latency_ms"]["n"] == meta["reps"] * nranges
        assert len(res[name]["ranges_batched_ms"]["runs"]) == meta["reps"]
        for key in ("whole_mb_s", "columns_events_s"):
            s = res[name][key]
            assert len(s["runs"]) == meta["reps"] and s["min"] <= s["median"] <= s["max"] and s["median"] > 0
        assert res[name]["ratio_to_local"]["whole_mb_s"] > 0
    assert res["local"]["ratio_to_local"]["whole_mb_s"] == 1.0


def test_casa_bench_quick_writes_json_and_png(clean_env):
    out = clean_env / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "casa_cli.main", "bench", str(_need(AGC)), "--quick",
                           "--out", str(out)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout
    assert "| s3-arrow |" in proc.stdout
    [jpath] = out.glob("bench-*.json")
    [ppath] = out.glob("bench-*.png")
    assert ppath.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and ppath.stat().st_size > 10_000
    doc = json.loads(jpath.read_text())
    assert doc["meta"]["quick"] and doc["meta"]["embedded_server"] == "seaweedfs" and doc["meta"]["total_events"] == 100_000
    _check_sane(doc, AGC.stat().st_size)


def test_bench_parquet_on_configured_endpoint(clean_env, monkeypatch):
    with SeaweedFS(clean_env / "sw") as s3:
        s3.create_bucket("bench-pq")
        cfg = clean_env / "casa.yaml"
        cfg.write_text(yaml.safe_dump({"paths": {"s3": s3.path_options()}}))
        monkeypatch.setenv("CASA_CONFIG", str(cfg))
        reset_config()
        doc = bench([str(_need(PARQUET))], quick=True, s3="s3://bench-pq/nano", columns=["Muon_pt", "Muon_eta"],
                    out_dir=clean_env / "out")
        assert doc["meta"]["embedded_server"] is None and doc["meta"]["endpoint"] == s3.endpoint_url
        assert doc["meta"]["files"][0]["urls"]["s3"] == "s3://bench-pq/nano/nano_dimuon.parquet"
        assert Path(doc["outputs"]["png"]).exists()
        _check_sane(doc, PARQUET.stat().st_size)
        # no read-ahead: the S3 paths move about the bytes the reader asks for on local disk
        print({n: r["bytes"] for n, r in doc["results"].items()})
        local = doc["results"]["local"]["bytes"]["columns"]
        for name in ("s3fs", "s3-arrow"):
            assert doc["results"][name]["bytes"]["columns"] <= 1.1 * local + 16 * HEADERS, name


class _FsspecLocal(LocalMethod):
    """A plug-in: local files read through fsspec's file:// implementation."""

    name = "fsspec-local"
    description = "local disk through fsspec"

    def read_whole(self, f):
        import fsspec

        with fsspec.open(f"file://{f.local}", "rb") as fh:
            return self._add(len(fh.read()))


def test_plugin_registry_runs_extra_methods_without_s3():
    register_method("fsspec-local", _FsspecLocal)
    files = bench_files([_need(AGC)])
    doc = run_bench(files, ["local", "fsspec-local"], reps=2, nranges=10)
    r = doc["results"]["fsspec-local"]
    assert r["bytes"]["whole"] == AGC.stat().st_size and r["ratio_to_local"]["whole_mb_s"] > 0
    assert issubclass(_FsspecLocal, BenchMethod)


def test_servicex_method_delivers_columns_and_reports_the_rest_unsupported(shared_data, tmp_path):
    """ServiceX through the real client and endpoint: columns measured, whole file and ranges n/a."""
    from casa_bench.methods import Unsupported
    from casa_bench.servicex import ServiceXMethod

    agc = shared_data / "agc" / "open-data-example.root"
    doc = bench([str(agc)], ["local", "servicex"], quick=True, out_dir=tmp_path / "out")
    r, local = doc["results"]["servicex"], doc["results"]["local"]
    s = r["columns_events_s"]
    assert len(s["runs"]) == doc["meta"]["reps"] and s["median"] > 0 and r["ratio_to_local"]["columns_events_s"] > 0
    for key in ("whole_mb_s", "range_latency_ms", "ranges_batched_ms"):
        assert r[key] is None, key
    assert set(r["unsupported"]) == {"whole", "range", "ranges"}
    assert all("not a file's bytes" in why for why in r["unsupported"].values())
    assert r["ratio_to_local"]["whole_mb_s"] is None and r["ratio_to_local"]["range_p50"] is None
    assert r["bytes"]["whole"] is None and r["bytes"]["ranges"] is None
    assert 0 < r["bytes"]["columns"] < agc.stat().st_size  # the delivered Parquet of 3 columns
    assert "unsupported" not in local and local["whole_mb_s"]["median"] > 0  # others as before
    assert "servicex" in doc["meta"]["methods"]
    with pytest.raises(Unsupported, match="not a file's bytes"):
        ServiceXMethod().read_range(bench_files([agc])[0], 0, 1)
    row = next(line for line in markdown_table(doc).splitlines() if line.startswith("| servicex |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == cells[2] == cells[5] == cells[6] == cells[7] == "n/a" and cells[3] != "n/a", cells
    assert cells[8].startswith("n/a / ") and cells[8].endswith(" / n/a"), cells
    saved = json.loads(Path(doc["outputs"]["json"]).read_text())
    assert saved["results"]["servicex"]["whole_mb_s"] is None
    png = Path(doc["outputs"]["png"]).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
