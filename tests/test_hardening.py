"""Hostile input: each test reproduces one finding of the hardening review and checks its fix.

Real files, real YAML, real Skyhook servers (as tests/test_skyhook.py); no mocks. The fuzz tests
(hypothesis) are bounded: each example has a deadline and the whole module stays well under 90 s.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import hist
import pytest
import yaml

import casa_data
from casa_compute.pipeline import PipelineError, load_spec
from casa_data.errors import CasaError, CatalogError

ROOT = Path(__file__).resolve().parents[1]


# -- pipeline specs: histogram names and bins --------------------------------------------------------
SPEC = """\
name: t
datasets:
  dy: {dataset: cms/dy-nano}
histograms:
  mll:
    axes:
      - {name: mll, bins: 10, start: 60, stop: 120}
"""


def _spec(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "spec.yaml"
    p.write_text(text)
    return p


def _line_of(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".hidden", "/abs"])
def test_histogram_name_cannot_leave_the_output_directory(tmp_path, casa_env, name):
    text = SPEC.replace("  mll:\n", f"  {json.dumps(name)}:\n")
    with pytest.raises(PipelineError) as err:
        load_spec(_spec(tmp_path, text))
    msg = str(err.value)
    assert f"spec.yaml:{_line_of(text, json.dumps(name))}:" in msg and repr(name) in msg and "not allowed" in msg


def test_histogram_png_is_never_written_outside(tmp_path):
    from casa_compute.pipeline.outputs import write_outputs

    out = tmp_path / "a" / "b" / "out"
    h = hist.Hist.new.Reg(4, 0, 4, name="x").Double().fill([1, 2])
    with pytest.raises(PipelineError, match="not a plain file name"):
        write_outputs(out, {"../../x": h}, {"name": "t"}, ["png"])
    assert not list(tmp_path.rglob("*.png"))
    # a link planted in the output directory does not redirect the PNG either
    out.mkdir(parents=True, exist_ok=True)
    (out / "y.png").symlink_to(tmp_path / "elsewhere.png")
    with pytest.raises(PipelineError, match="not a plain file name"):
        write_outputs(out, {"y": h}, {"name": "t"}, ["png"])
    assert not (tmp_path / "elsewhere.png").exists()
    assert write_outputs(out, {"fine": h}, {"name": "t"}, ["png"]) == ["fine.png"]


@pytest.mark.parametrize("axis,fragment", [
    ("{name: mll, bins: 1e12, start: 60, stop: 120}", "bins"),
    ("{name: mll, bins: 1000000000000, start: 60, stop: 120}", "less than or equal to 1000000"),
    ("{name: mll, start: 0, stop: 1e12}", "more than 1000000 bins"),
])
def test_huge_bins_are_a_located_validation_error(tmp_path, casa_env, axis, fragment):
    text = SPEC.replace("{name: mll, bins: 10, start: 60, stop: 120}", axis)
    with pytest.raises(PipelineError) as err:
        load_spec(_spec(tmp_path, text))
    msg = str(err.value)
    assert f"spec.yaml:{_line_of(text, axis)}:" in msg and "histograms.mll.axes.0" in msg and fragment in msg


def test_total_histogram_cells_are_bounded(tmp_path, casa_env):
    axes = "".join(f"      - {{name: a{i}, bins: 1000, start: 0, stop: 1}}\n" for i in range(3))
    text = SPEC.replace("      - {name: mll, bins: 10, start: 60, stop: 120}\n", axes)
    with pytest.raises(PipelineError) as err:
        load_spec(_spec(tmp_path, text))
    msg = str(err.value)
    assert f"spec.yaml:{_line_of(text, 'axes:')}:" in msg and "histograms.mll" in msg and "more than 10,000,000" in msg
    load_spec(_spec(tmp_path, SPEC))  # the ordinary spec still loads


# -- the pipeline result cache -----------------------------------------------------------------------
class _Boom:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_planted_cache_file_is_never_unpickled(tmp_path, casa_env):
    from casa_compute.pipeline import cache

    out = tmp_path / "out"
    out.mkdir()
    marker = tmp_path / "pwned"
    # the old format: a bare pickle with the right key
    (out / cache.CACHE_FILE).write_bytes(pickle.dumps({"key": "k", "x": _Boom(marker)}))
    assert cache.load_cached(out, "k") is None and not marker.exists()
    # the new header with a MAC under another key (or none at all)
    cache.store(out, "k", {"hists": {}, "files": []})  # creates this user's key
    body = pickle.dumps({"key": "k", "x": _Boom(marker)})
    (out / cache.CACHE_FILE).write_bytes(cache.MAGIC + b"0" * 64 + b"\n" + body)
    assert cache.load_cached(out, "k") is None and not marker.exists()
    # a genuine entry still hits; its key file is private
    cache.store(out, "k", {"hists": {"h": 1}, "files": []})
    assert cache.load_cached(out, "k")["hists"] == {"h": 1}
    keyfile = casa_env / "config" / "casa" / cache.KEY_FILE
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    # a key file others can read is not trusted
    keyfile.chmod(0o644)
    assert cache.load_cached(out, "k") is None
    keyfile.chmod(0o600)
    assert cache.load_cached(out, "k") is not None


# -- catalogs ------------------------------------------------------------------------------------------
BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
"""


def test_alias_bomb_catalog_is_refused_quickly(tmp_path, casa_env):
    cat = tmp_path / "bomb.yaml"
    cat.write_text("datasets:\n  - name: x/bomb\n    files: [/data/a.root]\n    metadata:\n"
                   + "".join("      " + line + "\n" for line in BOMB.splitlines()))
    t0 = time.perf_counter()
    with pytest.raises(CatalogError, match="aliases .* expand to"):
        casa_data.open("x/bomb", catalog=cat).describe()
    from typer.testing import CliRunner

    from casa_cli.main import app

    r = CliRunner().invoke(app, ["data", "describe", "x/bomb", "-c", str(cat)])
    assert r.exit_code != 0 and isinstance(r.exception, CatalogError) and "aliases" in str(r.exception)
    assert time.perf_counter() - t0 < 10


def test_catalog_parsed_once_per_file_version(tmp_path, casa_env):
    from casa_data.catalog import get_catalog

    cat = tmp_path / "big.yaml"
    datasets = [{"name": f"x/ds{i}", "files": [{"lfn": f"/store/x/ds{i}/f{j}.root", "nevents": 10,
                                                  "replicas": [f"root://a.example//store/x/ds{i}/f{j}.root"]}
                                                 for j in range(100)]} for i in range(40)]
    cat.write_text(yaml.safe_dump({"datasets": datasets}))
    t0 = time.perf_counter()
    first = get_catalog(cat)
    parse = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(5):
        again = get_catalog(cat)
    cached = (time.perf_counter() - t0) / 5
    assert "x/ds7" in again and cached < max(parse / 5, 0.05), (parse, cached)
    spec = again.get("x/ds7")
    spec.files.clear()  # a copy: the next catalog is unchanged
    assert len(get_catalog(cat).get("x/ds7").files) == 100 == len(first.get("x/ds7").files)
    # an edit (new size/mtime) is seen at once
    cat.write_text(yaml.safe_dump({"datasets": datasets[:3]}))
    assert len(get_catalog(cat)) == 3 + len(get_catalog([]))


def test_invalid_utf8_is_a_located_catalog_error(tmp_path, casa_env):
    cat = tmp_path / "latin1.yaml"
    cat.write_bytes(b"datasets:\n  - name: x/a\n    description: caf\xe9\n    files: [/data/a.root]\n")
    with pytest.raises(CatalogError, match=r"latin1.yaml:3:21: not valid UTF-8"):
        casa_data.open("x/a", catalog=cat)


def test_duplicate_keys_name_both_lines(tmp_path, casa_env):
    cat = tmp_path / "dup.yaml"
    cat.write_text("datasets:\n  - name: x/a\n    files: [/data/a.root]\n    name: x/b\n")
    with pytest.raises(CatalogError, match=r"dup.yaml:4:5: duplicate key 'name': already at line 2"):
        casa_data.open("x/a", catalog=cat)
    cat.write_text("datasets:\n  - name: x/a\n    files: [/data/a.root]\n  - name: x/a\n    files: [/data/b.root]\n")
    with pytest.raises(CatalogError, match=r"'x/a' is defined twice in dup.yaml: at lines 2 and 4"):
        casa_data.open("x/a", catalog=cat)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC + "name: u\n")
    with pytest.raises(PipelineError, match=r"spec.yaml:8:1: duplicate key 'name': already at line 1"):
        load_spec(spec)
