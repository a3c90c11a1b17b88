"""coffea 2025+ workflows on casa: ``Dataset.fileset()`` for ``coffea.dataset_tools``
(preprocess, apply_to_fileset, max_chunks), ``casa_compute.apply`` / ``run`` with preprocessed
filesets, ``ds.events(mode="dask")``, ``hist.dask`` -- for ROOT TTree, RNTuple and Parquet, read
with the first replica dead, from S3 (SeaweedFS) and through the token-protected XCache.

Real services (conftest's ``seaweed`` and ``xrootd_stack``), real files; every histogram is
compared with plain uproot + awkward + hist on the same events.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import awkward as ak
import cloudpickle
import dask
import hist
import hist.dask as hda
import numpy as np
import pytest
import uproot
import yaml

import casa_compute
import casa_data
from casa_data.config import reset_config
from casa_data.demo import _flat, make_events, write_parquet, write_root

FORMATS = ("root", "rntuple", "parquet")
MODES = ("dead-first", "s3", "xcache")
N = (3000, 2000)   # events per file (two files per dataset)
STEP = 1000
EXT = {"root": "root", "rntuple": "root", "parquet": "parquet"}

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning", "ignore::RuntimeWarning",
                                        "ignore::DeprecationWarning")


def _ref_hist(arrays) -> hist.Hist:
    h = hist.Hist.new.Reg(60, 0, 120, name="pt").Double()
    for a in arrays:
        h.fill(pt=ak.to_numpy(ak.flatten(a.Muon_pt[a.nMuon >= 2])))
    return h


def analysis(events):
    """The user's dask-awkward analysis: muon pT of events with two or more muons (hist.dask)."""
    mu = events.Muon[ak.num(events.Muon, axis=1) >= 2]
    return {"pt": hda.Hist.new.Reg(60, 0, 120, name="pt").Double().fill(pt=ak.flatten(mu.pt)),
            "n": ak.num(events, axis=0)}


class CountProcessor:
    """A coffea-style processor for ``casa_compute.run``: events seen and the same histogram."""

    def process(self, events):
        mu = events.Muon[ak.num(events.Muon) >= 2]
        h = hist.Hist.new.Reg(60, 0, 120, name="pt").Double().fill(pt=ak.to_numpy(ak.flatten(mu.pt)))
        return {"n": len(events), "pt": h}


@pytest.fixture(scope="module")
def world(tmp_path_factory, seaweed, xrootd_stack, shared_data):
    """Two files per format, placed locally, on SeaweedFS and on the XCache's origin; a catalog
    ``c16/<mode>/<format>`` per access mode; a casa config with the S3 keys and the XCache."""
    base = tmp_path_factory.mktemp("coffea2025")
    events = [make_events(n, seed=100 + i) for i, n in enumerate(N)]
    origin = xrootd_stack.origin.data_dir / "c16"
    local: dict[str, list[Path]] = {}
    for fmt in FORMATS:
        (base / fmt).mkdir()
        paths = []
        for i, ev in enumerate(events):
            p = base / fmt / f"ev{i}.{EXT[fmt]}"
            if fmt == "root":
                write_root(p, ev)
            elif fmt == "parquet":
                write_parquet(p, ev)
            else:
                with uproot.recreate(p) as f:
                    f["Events"] = _flat(ev)  # uproot >= 5.7: a dict becomes an RNTuple
            paths.append(p)
            dest = origin / fmt / p.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, dest)
            seaweed.client().put_object(Bucket="casa-conformance", Key=f"c16/{fmt}/{p.name}",
                                        Body=p.read_bytes())
        local[fmt] = paths
    for p in [origin, *origin.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    assert type(uproot.open(local["rntuple"][0])["Events"]).__name__.endswith("RNTuple")

    def entry(mode, fmt, i, p):
        lfn = f"/c16/{mode}/{fmt}/{p.name}"
        reps = {"dead-first": [str(base / "gone" / p.name), str(p)],
                "s3": [f"s3://casa-conformance/c16/{fmt}/{p.name}"],
                "xcache": [{"url": f"{xrootd_stack.xcache_url}//store/c16/{fmt}/{p.name}", "via": "xcache"}]}
        return {"lfn": lfn, "nevents": N[i], "replicas": reps[mode]}

    cat = base / "catalog.yaml"
    cat.write_text(yaml.safe_dump({"datasets": [
        {"name": f"c16/{mode}/{fmt}", "tree": "Events", "format": fmt, "metadata": {"mode": mode},
         "files": [entry(mode, fmt, i, p) for i, p in enumerate(local[fmt])]}
        for mode in MODES for fmt in FORMATS]}))
    cfg = base / "casa.yaml"
    xc = xrootd_stack.casa_config()["paths"]
    cfg.write_text(yaml.safe_dump({"paths": {"s3": seaweed.path_options(), "xcache": xc["xcache"],
                                             "xrootd": {}}}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CASA_CONFIG", str(cfg))
        mp.setenv("CASA_CATALOG", str(cat))
        mp.setenv("BEARER_TOKEN_FILE", str(xrootd_stack.token_file))
        mp.delenv("BEARER_TOKEN", raising=False)
        for k, v in xrootd_stack.client_env().items():
            mp.setenv(k, v)
        for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_ENDPOINT_URL",
                    "AWS_ENDPOINT_URL_S3"):
            mp.delenv(var, raising=False)  # the keys come from the casa config only
        reset_config()
        arrays = [uproot.open(p)["Events"].arrays(["nMuon", "Muon_pt"]) for p in local["root"]]
        yield {"base": base, "local": local, "arrays": arrays, "ref": _ref_hist(arrays),
               "secret": seaweed.path_options()["secret"], "token": Path(xrootd_stack.token_file).read_text().strip()}
    reset_config()


def _same(h, ref) -> None:
    np.testing.assert_array_equal(h.values(), ref.values())
    assert ref.sum() > 1000


# -- fileset() ------------------------------------------------------------------------------------
def test_fileset_is_coffeas_current_format(world):
    from coffea.dataset_tools import DataGroupSpec

    for fmt in FORMATS:
        ds = casa_data.open(f"c16/dead-first/{fmt}")
        fs = ds.fileset()
        (name,) = fs
        files = fs[name]["files"]
        assert list(files) == [f"casa://c16/dead-first/{fmt}//c16/dead-first/{fmt}/ev{i}.{EXT[fmt]}"
                               for i in range(2)]
        for info, n in zip(files.values(), N):
            assert info["object_path"] == (None if fmt == "parquet" else "Events")
            assert info["format"] == ("parquet" if fmt == "parquet" else "root")
            assert info["num_entries"] == n and "steps" not in info
        DataGroupSpec.model_validate(fs)  # coffea's own validation accepts it
        phys = ds.fileset(urls="physical")
        assert list(phys[name]["files"]) == [str(world["base"] / "gone" / f"ev{i}.{EXT[fmt]}") for i in range(2)]
        stepped = ds.fileset(step_size=STEP)[name]["files"]
        assert [v["steps"] for v in stepped.values()] == [[[0, 1000], [1000, 2000], [2000, 3000]],
                                                          [[0, 1000], [1000, 2000]]]
    # steps and uuid the catalog knows are passed on
    spec = casa_data.open("c16/dead-first/root").spec
    spec.files[0].steps, spec.files[0].uuid = [(0, 3000)], "0123abcd"
    from casa_data.dataset import Dataset
    from casa_data.resolver import resolve

    info = next(iter(Dataset(spec, resolve(spec)).fileset(urls="physical")[spec.name]["files"].values()))
    assert info["steps"] == [[0, 3000]] and info["uuid"] == "0123abcd"


def test_graph_carries_no_secret(world):
    """The task graphs hold casa:// URLs and path names: no token, no S3 key."""
    from coffea.dataset_tools import apply_to_fileset, preprocess
    from coffea.nanoevents import NanoAODSchema

    graphs = []
    for mode in ("s3", "xcache"):
        ds = casa_data.open(f"c16/{mode}/root")
        pre, _ = preprocess(ds.fileset(), step_size=STEP)
        out = apply_to_fileset(analysis, pre, schemaclass=NanoAODSchema)
        graphs += [dict(o.__dask_graph__()) for o in out[ds.name].values()]
        graphs.append(dict(ds.events(mode="dask", step_size=STEP).__dask_graph__()))
    blob = cloudpickle.dumps(graphs)
    assert world["secret"].encode() not in blob
    assert world["token"].encode() not in blob and world["token"].split(".")[-1].encode() not in blob
    assert b"casa://c16/s3/root" in blob


# -- preprocess + apply_to_fileset / casa_compute.apply, every format and access ------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_dataset_tools_workflow_equals_uproot(world, mode, fmt):
    from coffea.dataset_tools import apply_to_fileset, max_chunks_per_file, preprocess
    from coffea.nanoevents import NanoAODSchema

    ds = casa_data.open(f"c16/{mode}/{fmt}")
    fileset = ds.fileset()
    if fmt == "rntuple":  # coffea's preprocess cannot read RNTuple: the catalog's counts give steps
        pre = ds.fileset(step_size=STEP)
    else:
        pre, _ = preprocess(fileset, step_size=STEP)
    if fmt == "root":  # coffea's own apply_to_fileset (it reads ROOT TTrees only)
        (out,) = dask.compute(apply_to_fileset(analysis, pre, schemaclass=NanoAODSchema))
        _same(out[ds.name]["pt"], world["ref"])
        assert out[ds.name]["n"] == sum(N)
    # casa_compute.apply: the same workflow for every format
    res = casa_compute.apply(analysis, pre, progress=False)
    _same(res.output[ds.name]["pt"], world["ref"])
    assert res.output[ds.name]["n"] == sum(N) and res.report.partitions == 5
    if mode == "dead-first":  # ds.events(mode="dask"), partitioned by steps (same reader as apply)
        ev = ds.events(mode="dask", step_size=STEP)
        assert ev.npartitions == 5
        (h,) = dask.compute(analysis(ev)["pt"])
        _same(h, world["ref"])
    # max_chunks then run: exactly the first chunk of each file
    first = max_chunks_per_file(pre, 1)
    out, report = casa_compute.run(CountProcessor(), first, progress=False)
    assert sorted((s.start, s.stop) for s in report.stats) == [(0, STEP), (0, STEP)]
    assert out["n"] == 2 * STEP
    _same(out["pt"], _ref_hist([a[:STEP] for a in world["arrays"]]))


def test_run_max_chunks_and_max_files(world):
    ds = casa_data.open("c16/dead-first/parquet")
    out, report = casa_compute.run(CountProcessor(), ds, chunksize=500, max_chunks=2, progress=False)
    assert out["n"] == 2 * 2 * 500 and len(report.stats) == 4
    out, report = casa_compute.run(CountProcessor(), ds, max_files=1, progress=False)
    assert out["n"] == N[0] and {s.file for s in report.stats} == {str(world["local"]["parquet"][0])}
    res = casa_compute.apply(analysis, ds, step_size=STEP, max_chunks=1, max_files=1, progress=False)
    assert res.output[ds.name]["n"] == STEP


def test_dataspec_and_failed_files_named(world, tmp_path):
    from coffea.dataset_tools import DataGroupSpec

    ds = casa_data.open("c16/dead-first/root")
    spec = DataGroupSpec.model_validate(ds.fileset(step_size=STEP))
    out, report = casa_compute.run(CountProcessor(), spec, progress=False)
    assert out["n"] == sum(N) and len(report.stats) == 5
    # one file whose every replica is gone: named, the other file kept
    fs = ds.fileset(urls="physical")
    files = fs[ds.name]["files"]
    files[str(world["local"]["root"][1])] = files.pop(next(iter(files)))  # a readable file
    files[str(tmp_path / "missing.root")] = {"object_path": "Events", "format": "root"}
    with pytest.raises(casa_compute.RunError) as info:
        casa_compute.apply(analysis, fs, progress=False)
    assert "missing.root" in str(info.value)
    assert info.value.partial.output[ds.name]["n"] == N[1]


def test_apply_on_a_cluster_forwards_the_token(world, monkeypatch):
    """Workers started without any token: the XCache reads work because apply() forwards it."""
    from distributed import Client, LocalCluster

    token = os.environ["BEARER_TOKEN_FILE"]
    monkeypatch.delenv("BEARER_TOKEN_FILE")
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None,
                      worker_dashboard_address=None, host="127.0.0.1") as cluster, Client(cluster) as client:
        monkeypatch.setenv("BEARER_TOKEN_FILE", token)
        assert client.run(lambda: os.environ.get("BEARER_TOKEN_FILE")) == {w: None for w in client.run(os.getpid)}
        ds = casa_data.open("c16/xcache/root")
        res = casa_compute.apply(analysis, ds.fileset(step_size=STEP), cluster=client, progress=False)
        _same(res.output[ds.name]["pt"], world["ref"])


# -- ServiceX uproot-raw: the forms ServiceX users send, through the unmodified client -------------
TT = Path(__file__).resolve().parents[2] / "shared" / "data" / "coffea" / "nano_tt_v12.root"
AGC_CUT = ("(count_nonzero(Jet_pt > 25, axis=1) >= 4) & (count_nonzero(Jet_btagCSVV2 >= 0.5, axis=1) >= 1)"
           " & ((count_nonzero(Electron_pt > 30, axis=1) + count_nonzero(Muon_pt > 30, axis=1)) == 1)")
AGC_BRANCHES = ["Jet_pt", "Jet_eta", "Jet_phi", "Jet_mass", "Jet_btagCSVV2", "Electron_pt", "Electron_eta",
                "Electron_phi", "Electron_mass", "Muon_pt", "Muon_eta", "Muon_phi", "Muon_mass"]


@pytest.fixture(scope="module")
def agc_input(tmp_path_factory, shared_data) -> Path:
    """A CMS-open-data-shaped ttbar file (AGC branch names, Jet_btagCSVV2) with two histograms."""
    a = uproot.open(shared_data / "coffea" / "nano_tt_v12.root")["Events"].arrays(
        [b.replace("btagCSVV2", "btagDeepFlavB") for b in AGC_BRANCHES])
    objs = {obj: ak.zip({k.split("_", 1)[1].replace("btagDeepFlavB", "btagCSVV2"): a[k] for k in a.fields
                         if k.startswith(obj + "_")}) for obj in ("Jet", "Electron", "Muon")}
    path = tmp_path_factory.mktemp("agc-sx") / "ttbar__nominal.root"
    with uproot.recreate(path) as f:
        f.mktree("Events", {k: v.type for k, v in objs.items()}).extend(objs)
        f["cutflow"] = (np.array([200.0, 120.0, 40.0]), np.array([0.0, 1.0, 2.0, 3.0]))
        f["pileup"] = (np.array([1.0, 2.0]), np.array([0.0, 1.0, 2.0]))
    return path


@pytest.fixture()
def sx_env(servicex_server, tmp_path, monkeypatch):
    tok = tmp_path / "sx-token"
    tok.write_text(servicex_server.refresh_token)
    cfg = tmp_path / "casa.yaml"
    cfg.write_text(yaml.safe_dump({"paths": {"servicex": {"endpoint": servicex_server.url, "token_file": str(tok)}}}))
    monkeypatch.setenv("CASA_CONFIG", str(cfg))
    # the plain servicex client takes $BEARER_TOKEN_FILE as its access token: not the XCache's
    monkeypatch.delenv("BEARER_TOKEN_FILE", raising=False)
    reset_config()
    yield servicex_server
    reset_config()


def _agc_expected(path: Path) -> ak.Array:
    a = uproot.open(path)["Events"].arrays(AGC_BRANCHES)
    sel = ((ak.count_nonzero(a.Jet_pt > 25, axis=1) >= 4) & (ak.count_nonzero(a.Jet_btagCSVV2 >= 0.5, axis=1) >= 1)
           & ((ak.count_nonzero(a.Electron_pt > 30, axis=1) + ak.count_nonzero(a.Muon_pt > 30, axis=1)) == 1))
    return a[sel]


def test_agc_servicex_query_through_the_unmodified_client(sx_env, agc_input, tmp_path):
    """The AGC ttbar ServiceX variant's uproot-raw request: a tree-name mapping, filter_name, a
    cut with count_nonzero(..., axis=1), and copy_histograms -- equals uproot."""
    from servicex import ServiceXSpec, dataset, deliver
    from servicex.query import UprootRaw

    from casa_data.servicex.client import _polling

    query = [{"treename": {"Events": "servicex"}, "filter_name": AGC_BRANCHES, "cut": AGC_CUT},
             {"copy_histograms": ["cutflow*"]}]
    spec = ServiceXSpec(Sample=[{"Name": "ttbar__nominal", "Dataset": dataset.FileList([str(agc_input)]),
                                 "Query": UprootRaw(query)}])
    with _polling(0.1):
        out = deliver(spec, config_path=sx_env.servicex_config(tmp_path / "servicex.yaml"), progress_bar="none")
    (path,) = list(out["ttbar__nominal"])
    f = uproot.open(path)
    got, want = f["servicex"].arrays(AGC_BRANCHES), _agc_expected(agc_input)
    assert 0 < len(got) == len(want) < 200
    for b in AGC_BRANCHES:
        assert ak.all(ak.flatten(got[b]) == ak.flatten(want[b])) and ak.all(ak.num(got[b]) == ak.num(want[b]))
    assert "Events" not in f and "pileup" not in f
    np.testing.assert_array_equal(f["cutflow"].values(), [200.0, 120.0, 40.0])


def test_uproot_raw_forms_and_safe_cuts(sx_env, agc_input):
    from casa_data.errors import QueryError

    want = _agc_expected(agc_input)
    # a list of tree names, use_standard_awkward_axis, num()/any() in the cut, parquet output
    q = {"treename": ["Events"], "filter_name": ["Jet_pt", "Muon_pt"], "use_standard_awkward_axis": True,
         "cut": "(num(Jet_pt) >= 4) & any(Muon_pt > 30) & ~(sum(Jet_pt) < 100)"}
    got = casa_data.open([agc_input], query=q, progress=False).to_awkward()
    a = uproot.open(agc_input)["Events"].arrays(["Jet_pt", "Muon_pt"])
    sel = (ak.num(a.Jet_pt) >= 4) & ak.any(a.Muon_pt > 30, axis=1) & ~(ak.sum(a.Jet_pt, axis=1) < 100)
    assert 0 < len(got) == int(ak.sum(sel))
    assert ak.all(ak.flatten(got.Jet_pt) == ak.flatten(a.Jet_pt[sel]))
    # the AGC cut alone, as casa_data.open sends it
    got = casa_data.open([agc_input], query={"treename": "Events", "filter_name": AGC_BRANCHES, "cut": AGC_CUT},
                         progress=False).to_awkward()
    assert len(got) == len(want)
    # never eval: anything outside the cut language is refused before it runs
    for bad in ("__import__('os').system('id')", "Jet_pt.__class__", "count_nonzero(Jet_pt > 1, axis=0) > 1",
                "lambda: 1", "open('/etc/passwd')"):
        with pytest.raises(QueryError):
            casa_data.open([agc_input], query={"treename": "Events", "cut": bad}, progress=False)
    with pytest.raises(QueryError, match="treename"):
        casa_data.open([agc_input], query={"treename": {"Events": 3}}, progress=False)


def test_casa_run_max_chunks_and_max_files(world, tmp_path):
    """``casa run --max-chunks/--max-files``: a quick test of a pipeline, never cached as the full result."""
    from typer.testing import CliRunner

    from casa_cli.main import app

    spec = tmp_path / "quick.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "c16-quick", "datasets": {"mu": {"dataset": "c16/dead-first/root"}},
        "delivery": {"via": "auto", "chunksize": STEP},
        "selection": {"objects": {"Muon": "pt > 0"}, "events": {"two muons": "count(Muon) >= 2"}},
        "variables": {"lead": "Muon[0].pt"},
        "histograms": {"lead": {"axes": [{"name": "lead", "bins": 60, "start": 0, "stop": 120}]}}}))
    out = tmp_path / "o"
    args = ["run", str(spec), "-o", str(out), "--no-progress"]
    r = CliRunner().invoke(app, args + ["--max-chunks", "1", "--max-files", "1"])
    assert r.exit_code == 0, r.output
    assert yaml.safe_load((out / "summary.json").read_text())["datasets"]["mu"]["events_in"] == STEP
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0 and "cached result" not in r.output, r.output
    assert yaml.safe_load((out / "summary.json").read_text())["datasets"]["mu"]["events_in"] == sum(N)
