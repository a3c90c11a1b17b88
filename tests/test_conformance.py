"""Conformance: every registered delivery path passes the same tests, against its real service.

One parametrised set of tests runs over every path in the registry (``available_paths()``: the
built-in ones and any ``casa.paths`` entry point), each through a small per-path case class that
says how the conformance file (``coffea/nano_dy.root``) is reached on that path and how to break
it. A registered path without a case class fails the suite: a new path gets the suite by
registering one here (``@case``). Same arrays for the same columns and filter; the same error
class for a missing file, wrong credentials, an unknown column and a dead endpoint. No mocks: the
services are the real ones (``conftest.py``); one that cannot start fails the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import awkward as ak
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import uproot
import yaml

import casa_data
from casa_data.config import reset_config
from casa_data.errors import (
    AccessDeniedError,
    CasaError,
    ColumnNotFoundError,
    MissingFileError,
    PartialResultError,
    SchemaMismatchError,
    ServiceError,
)
from casa_data.paths import available_paths, get_path

ROOT = Path(__file__).resolve().parents[1]
FILE = "coffea/nano_dy.root"
COLUMNS = ["nMuon", "Muon_pt"]
FILTER = "nMuon >= 1"
BUCKET = "casa-conformance"
DEAD = "127.0.0.1:9"  # the discard port: nothing listens


# -- per-path cases ---------------------------------------------------------------------------------
CASES: dict[str, type[Case]] = {}


def case(cls: type[Case]) -> type[Case]:
    CASES[cls.name] = cls
    return cls


class Case:
    """How the conformance file is reached on one delivery path, and how to break it.

    ``setup`` starts (or reuses) the service and returns the casa config's ``paths`` section and
    environment variables; ``good`` / ``missing`` give what to pass to ``casa_data.open`` (opened
    with ``via=name``); ``wrong_credentials`` / ``dead`` change the config or environment and
    return what to open, or None when the path has no such thing (local files).
    """

    name: ClassVar[str]

    def __init__(self, request: pytest.FixtureRequest, tmp: Path, shared: Path):
        self.request, self.tmp, self.shared = request, tmp, shared

    def setup(self) -> tuple[dict[str, Any], dict[str, str]]:
        return {}, {}

    def good(self) -> list[str]:
        raise NotImplementedError

    def missing(self) -> list[str]:
        raise NotImplementedError

    def wrong_credentials(self, mp: pytest.MonkeyPatch, config: dict) -> list[str] | None:
        return None

    def dead(self, mp: pytest.MonkeyPatch, config: dict) -> list[str] | None:
        return None

    def secrets(self) -> list[str]:
        """Values that must never appear in an error message."""
        return []


@case
class LocalCase(Case):
    name = "local"

    def good(self):
        return [str(self.shared / FILE)]

    def missing(self):
        return [str(self.tmp / "nope.root")]


class _XRootDCase(Case):
    def setup(self):
        self.st = self.request.getfixturevalue("xrootd_stack")
        paths = self.st.casa_config()["paths"]
        paths["xrootd"] = {"ca_dir": paths["xcache"]["ca_dir"]}
        return paths, {"BEARER_TOKEN_FILE": str(self.st.token_file)}

    def server(self) -> str:
        raise NotImplementedError

    def good(self):
        return [f"{self.server()}//store/conf/nano_dy.root"]

    def missing(self):
        return [f"{self.server()}//store/conf/nope.root"]

    def wrong_credentials(self, mp, config):
        from casa_facility.services.pki import TestIssuer

        other = TestIssuer("https://127.0.0.1/not-trusted-here")  # a token no server here trusts
        self.bad = other.mint("storage.read:/")
        mp.delenv("BEARER_TOKEN_FILE")
        mp.setenv("BEARER_TOKEN", self.bad)
        return self.good()

    def dead(self, mp, config):
        return [f"root://{DEAD}//store/conf/nano_dy.root"]

    def secrets(self):
        return [getattr(self, "bad", "")]


@case
class XRootDCase(_XRootDCase):
    name = "xrootd"

    def server(self):
        return self.st.origin_url


@case
class XCacheCase(_XRootDCase):
    name = "xcache"

    def server(self):
        return self.st.xcache_url


@case
class S3Case(Case):
    name = "s3"

    def setup(self):
        self.s3 = self.request.getfixturevalue("seaweed")
        self.s3.client().put_object(Bucket=BUCKET, Key="conf/nano_dy.root", Body=(self.shared / FILE).read_bytes())
        return ({"s3": {"endpoint_url": self.s3.endpoint_url}},
                {"AWS_ACCESS_KEY_ID": self.s3.access_key, "AWS_SECRET_ACCESS_KEY": self.s3.secret_key})

    def good(self):
        return [f"s3://{BUCKET}/conf/nano_dy.root"]

    def missing(self):
        return [f"s3://{BUCKET}/conf/nope.root"]

    def wrong_credentials(self, mp, config):
        mp.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-4567")
        return self.good()

    def dead(self, mp, config):
        config["s3"]["endpoint_url"] = f"http://{DEAD}"
        return self.good()

    def secrets(self):
        return ["wrong-secret-4567", self.s3.secret_key]


@case
class SkyhookCase(Case):
    name = "skyhook"

    def setup(self):
        self.sky = self.request.getfixturevalue("skyhook_server")
        return {"skyhook": {"token": self.sky.token, "timeout": 30}}, {}

    def good(self):
        return [self.sky.url(FILE)]

    def missing(self):
        return [self.sky.url("coffea/nope.root")]

    def wrong_credentials(self, mp, config):
        config["skyhook"]["token"] = "not-the-token-8910"
        return self.good()

    def dead(self, mp, config):
        return [f"skyhook://{DEAD}/{FILE}"]

    def secrets(self):
        return ["not-the-token-8910", self.sky.token]


@case
class ServiceXCase(Case):
    name = "servicex"

    def setup(self):
        self.sx = self.request.getfixturevalue("servicex_server")
        tok = self.tmp / "sx-token"
        tok.write_text(self.sx.refresh_token)
        return {"servicex": {"endpoint": self.sx.url, "token_file": str(tok)}}, {}

    def good(self):
        return [str(self.shared / FILE)]

    def missing(self):
        return [str(self.shared / "coffea" / "nope.root")]

    def wrong_credentials(self, mp, config):
        bad = self.tmp / "sx-bad-token"
        bad.write_text("not-the-refresh-token-1112")
        config["servicex"]["token_file"] = str(bad)
        return self.good()

    def dead(self, mp, config):
        config["servicex"]["endpoint"] = f"http://{DEAD}"
        return self.good()

    def secrets(self):
        return ["not-the-refresh-token-1112", self.sx.refresh_token]


@case
class CasaURLCase(S3Case):
    """``casa://`` over S3 replicas: the replica's errors come through unchanged."""

    name = "casa"

    def setup(self):
        paths, env = super().setup()
        cat = self.tmp / "conformance-catalog.yaml"
        cat.write_text(yaml.safe_dump({"datasets": [
            {"name": "conf/dy", "files": [{"lfn": "/store/conf/nano_dy.root", "replicas": super().good()}]},
            {"name": "conf/gone", "files": [{"lfn": "/store/conf/nope.root", "replicas": super().missing()}]},
        ]}))
        return paths, {**env, "CASA_CATALOG": str(cat)}

    def good(self):
        return ["casa://conf/dy//store/conf/nano_dy.root"]

    def missing(self):
        return ["casa://conf/gone//store/conf/nope.root"]


# -- the suite --------------------------------------------------------------------------------------
@pytest.fixture(params=available_paths())
def path(request, shared_data, tmp_path, monkeypatch):
    """A ready case for one registered path; yields (case, config, apply(config))."""
    name = request.param
    if name not in CASES:
        pytest.fail(f"delivery path {name!r} is registered but has no conformance case: add a Case "
                    "subclass with @case to tests/test_conformance.py")
    c = CASES[name](request, tmp_path, shared_data)
    paths, env = c.setup()
    for var in ("CASA_CATALOG", "BEARER_TOKEN", "BEARER_TOKEN_FILE", "AWS_PROFILE", "AWS_ENDPOINT_URL",
                "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)

    def apply(config: dict) -> None:
        cfg = tmp_path / "casa.yaml"
        cfg.write_text(yaml.safe_dump({"paths": config, "data_dir": str(tmp_path / "data")}))
        monkeypatch.setenv("CASA_CONFIG", str(cfg))
        reset_config()

    apply(paths)
    yield c, paths, apply
    reset_config()


def _open(c: Case, target: list[str], **kw: Any):
    return casa_data.open(target, via=c.name, progress=False, **kw) if c.name == "servicex" else \
        casa_data.open(target, via=c.name, **kw)


def _reference(shared: Path) -> ak.Array:
    """The answer, from uproot and awkward alone (no casa code)."""
    arr = uproot.open(shared / FILE)["Events"].arrays(COLUMNS)
    return arr[arr.nMuon >= 1]


def test_same_arrays_for_the_same_columns_and_filter(path, shared_data):
    c, _, _ = path
    got = _open(c, c.good()).to_awkward(COLUMNS, filter=FILTER)
    want = _reference(shared_data)
    assert len(got) == len(want) == 12
    for col in COLUMNS:
        assert ak.to_list(got[col]) == pytest.approx(ak.to_list(want[col])) if col == "nMuon" else \
            ak.to_list(ak.flatten(got[col])) == pytest.approx(ak.to_list(ak.flatten(want[col])))
    table = _open(c, c.good()).to_arrow(COLUMNS, filter=FILTER)
    assert table.num_rows == 12 and set(COLUMNS) <= set(table.column_names)


def test_missing_file_is_a_missing_file_error_naming_it(path):
    c, _, _ = path
    target = c.missing()
    with pytest.raises(PartialResultError) as err:
        _open(c, target).to_awkward(COLUMNS, filter=FILTER)
    (failure,) = err.value.failures.values()
    assert isinstance(failure, MissingFileError), repr(failure)
    assert "nope.root" in str(err.value)


def test_wrong_credentials_are_access_denied(path):
    c, config, apply = path
    with pytest.MonkeyPatch.context() as mp:
        target = c.wrong_credentials(mp, config)
        if target is None:
            pytest.skip(f"{c.name}: no credentials to get wrong")
        apply(config)
        with pytest.raises(AccessDeniedError) as err:
            _open(c, target).to_awkward(COLUMNS, filter=FILTER)
    text = str(err.value)
    for secret in c.secrets():
        assert not secret or secret not in text


def test_unknown_column_is_named_with_close_matches(path):
    c, _, _ = path
    with pytest.raises(ColumnNotFoundError) as err:
        _open(c, c.good()).to_awkward(["Muon_ptt"], filter=FILTER)
    assert "Muon_ptt" in str(err.value) and "Muon_pt" in err.value.suggestions


def test_dead_endpoint_is_a_service_error(path):
    c, config, apply = path
    with pytest.MonkeyPatch.context() as mp:
        target = c.dead(mp, config)
        if target is None:
            pytest.skip(f"{c.name}: no endpoint to be down")
        apply(config)
        t0 = time.monotonic()
        with pytest.raises(ServiceError) as err:
            _open(c, target).to_awkward(COLUMNS, filter=FILTER)
    assert not isinstance(err.value, (AccessDeniedError, MissingFileError)), repr(err.value)
    assert DEAD in str(err.value) and time.monotonic() - t0 < 30


# -- the S3 bug: reading and check() must agree ---------------------------------------------------
def test_s3_wrong_secret_read_and_check_both_access_denied(seaweed, shared_data, tmp_path, monkeypatch):
    seaweed.client().put_object(Bucket=BUCKET, Key="bug/dy.root", Body=(shared_data / FILE).read_bytes())
    cfg = tmp_path / "casa.yaml"
    cfg.write_text(yaml.safe_dump({"paths": {"s3": {"endpoint_url": seaweed.endpoint_url}}}))
    monkeypatch.setenv("CASA_CONFIG", str(cfg))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-1314")
    reset_config()
    url = f"s3://{BUCKET}/bug/dy.root"
    with pytest.raises(AccessDeniedError) as checked:
        get_path("s3").check(url)
    for read in (lambda ds: ds.to_awkward(COLUMNS), lambda ds: ds.to_arrow(COLUMNS), lambda ds: ds.nevents):
        with pytest.raises(AccessDeniedError) as err:
            read(casa_data.open([url]))
        assert url in str(err.value) and "wrong-secret-1314" not in str(err.value)
    assert "wrong-secret-1314" not in str(checked.value)
    reset_config()


# -- hostile input: a file of another schema in a multi-file dataset --------------------------------
def test_schema_mismatch_is_named_per_file_and_the_others_kept(tmp_path):
    good = pa.table({"nMuon": pa.array([1, 2, 3], pa.int32()), "MET_pt": pa.array([1.0, 2.0, 3.0])})
    files = [tmp_path / f"f{i}.parquet" for i in range(4)]
    pq.write_table(good, files[0])
    pq.write_table(good, files[1])
    pq.write_table(pa.table({"nMuon": pa.array(["a", "b"]), "MET_pt": pa.array([1.0, 2.0])}), files[2])  # retyped
    pq.write_table(pa.table({"other": pa.array([1, 2])}), files[3])  # another schema altogether
    ds = casa_data.open([str(f) for f in files])
    for read in (lambda: ds.to_awkward(["nMuon", "MET_pt"]), lambda: ds.to_arrow(["nMuon", "MET_pt"])):
        with pytest.raises(PartialResultError) as err:
            read()
        fails = err.value.failures
        assert set(fails) == {str(files[2]), str(files[3])}
        assert all(isinstance(e, SchemaMismatchError) for e in fails.values())
        assert fails[str(files[2])].column == "nMuon" and "f2.parquet" in str(fails[str(files[2])])
        assert fails[str(files[3])].column in ("nMuon", "MET_pt") and "f3.parquet" in str(err.value)
        assert len(err.value.partial) == 6  # the two good files are kept
        part = err.value.partial
        assert "union" not in str(part.schema if isinstance(part, pa.Table) else part.type)
    kept = casa_data.open([str(f) for f in files], errors="skip").to_awkward(["nMuon"])
    assert len(kept) == 6 and "int32" in str(kept.type) and "union" not in str(kept.type)


# -- a third-party path, through the casa.paths entry point: open, casa run, casa bench -------------
PLUGIN = '''
"""A third-party delivery path: ``tiny:///abs/path`` reads local files."""
from fsspec.implementations.local import LocalFileSystem
from casa_data.paths.base import DeliveryPath


class TinyFS(LocalFileSystem):
    protocol = "tiny"

    @classmethod
    def _strip_protocol(cls, path):
        path = str(path)
        return super()._strip_protocol(path[len("tiny://"):] if path.startswith("tiny://") else path)


class TinyPath(DeliveryPath):
    name = "tiny"
    schemes = ("tiny",)

    def filesystem(self, url):
        return TinyFS()

    def reader_url(self, url):
        return url[len("tiny://"):] if url.startswith("tiny://") else url

    def check(self, url, timeout=5.0):
        self.filesystem(url).info(self.reader_url(url))

    def arrow_filesystem(self, url):
        from pyarrow.fs import LocalFileSystem

        return LocalFileSystem(), self.reader_url(url)

    def open(self, url, mode="rb", **kw):
        return self.filesystem(url).open(self.reader_url(url), mode, **kw)

    def cat_ranges(self, url, starts, ends):
        path = self.reader_url(url)
        return self.filesystem(url).cat_ranges([path] * len(starts), starts, ends)
'''

SPEC = """\
name: tiny
lumi: 10
delivery: {{via: tiny, catalog: [{catalog}]}}
datasets:
  dy:
    dataset: conf/tiny
    xsec: 100
selection:
  objects:
    Muon: pt > 5
  events:
    one: count(Muon) >= 1
variables:
  lead_pt: Muon[0].pt
histograms:
  pt:
    axes:
      - {{name: lead_pt, bins: 10, start: 0, stop: 100}}
"""

DRIVER = '''
import json, sys
import casa_data
from casa_data.paths import available_paths, path_class
from casa_compute.pipeline import run_pipeline
from casa_bench import bench

url, spec, out = sys.argv[1:4]
assert "tiny" in available_paths(), available_paths()
assert path_class("tiny").__module__ == "tinypath"
ds = casa_data.open([url], via="tiny")
arr = ds.to_awkward(["nMuon", "Muon_pt"], filter="nMuon >= 1")
res = run_pipeline(spec, output=out, force=True)
doc = bench([url[len("tiny://"):]], methods=["tiny"], quick=True)
print(json.dumps({"events": len(arr), "via": ds.resolved[0].candidates[0].via,
                  "run_events_out": res.summary["events_out"], "run_via": res.summary["datasets"]["dy"]["via"],
                  "bench": doc["results"]["tiny"]}, default=str))
'''


def test_third_party_path_works_through_its_entry_point(shared_data, tmp_path):
    site = tmp_path / "site"
    (site / "tinypath-1.0.dist-info").mkdir(parents=True)
    (site / "tinypath.py").write_text(PLUGIN)
    dist = site / "tinypath-1.0.dist-info"
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tinypath\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[casa.paths]\ntiny = tinypath:TinyPath\n")
    url = f"tiny://{shared_data / FILE}"
    cat = tmp_path / "catalog.yaml"
    cat.write_text(yaml.safe_dump({"datasets": [{"name": "conf/tiny", "tree": "Events", "files": [
        {"lfn": "/store/conf/nano_dy.root", "replicas": [{"url": url, "via": "tiny"}]}]}]}))
    spec = tmp_path / "tiny.yaml"
    spec.write_text(SPEC.format(catalog=cat))
    (tmp_path / "driver.py").write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "CASA_DATA_DIR": str(tmp_path / "d")}
    r = subprocess.run([sys.executable, str(tmp_path / "driver.py"), url, str(spec), str(tmp_path / "out")],
                       capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    import json

    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["events"] == 12 and got["via"] == "tiny"
    assert got["run_via"] == "tiny" and got["run_events_out"] > 0
    bench = got["bench"]
    assert bench["whole_mb_s"]["median"] > 0 and bench["columns_events_s"]["median"] > 0, bench
    # casa run (the CLI) with the same spec: via: tiny from the YAML
    r = subprocess.run([sys.executable, "-m", "casa_cli.main", "run", str(spec), "-o", str(tmp_path / "cli"),
                        "--force"], capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert (tmp_path / "cli" / "summary.json").exists() or any((tmp_path / "cli").iterdir())


def test_paths_declare_capabilities():
    from casa_data.paths import Capability, path_class, paths_that

    assert set(paths_that(Capability.QUERY)) >= {"servicex"}
    assert set(paths_that(Capability.SCAN)) >= {"skyhook"}
    assert {"local", "xrootd", "xcache", "s3", "casa"} <= set(paths_that(Capability.BYTE_RANGES))
    assert not path_class("servicex").can(Capability.BYTE_RANGES)
    with pytest.raises(CasaError):
        get_path("servicex").filesystem("x")
