"""casa_compute.pipeline (``casa run pipeline.yaml``) on real ../shared/data files.

The shipped examples (Z->mumu, AGC-style ttbar) run through two delivery paths (local files and S3
on a real SeaweedFS; for Z->mumu also ROOT vs Parquet) and must give identical histograms, equal
to an independent computation with uproot + awkward + numpy (no coffea). Invalid specs give
errors located at file:line:column; the cache answers at once and ``--force`` recomputes.
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import shutil
import tempfile
import time
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
import yaml

import casa_data
from casa_compute.pipeline import EXAMPLES, PipelineError, load_spec, plan, run_pipeline
from casa_data.config import reset_config

pytestmark = [pytest.mark.shared_data, pytest.mark.filterwarnings("ignore::RuntimeWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning")]

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT / "tests" / "catalogs" / "pipelines.yaml"
ZMUMU, TTBAR = EXAMPLES / "zmumu.yaml", EXAMPLES / "ttbar_agc.yaml"
PATHS = ("local", "xcache", "s3", "skyhook", "servicex")
ZMUMU_PATHS = ("local", "skyhook", "servicex")  # (+ Parquet); 100k events: the others run on ttbar only
FILES = {  # catalog name -> file under ../shared/data
    "cms/zmumu-2012": "agc/open-data-example.root",
    "cms/dy-nano": "coffea/nano_dy.root",
    "cms/ttbar-nano-v12": "coffea/nano_tt_v12.root",
    "cms/ttbar-nano-2015": "skhep/nanoAOD_2015_CMS_Open_Data_ttbar.root",
}


# -- the independent computation ---------------------------------------------------------------------
def flow_hist(values, edges, weights=None) -> np.ndarray:
    """Bin contents including under/overflow, with hist's convention ([a, b), stop -> overflow)."""
    idx = np.searchsorted(np.asarray(edges, dtype=float), np.asarray(values, dtype=float), side="right")
    return np.bincount(idx, weights=weights, minlength=len(edges) + 1).astype(float)


def p4(pt, eta, phi, m):
    pt, eta, phi, m = (np.asarray(x, dtype=np.float64) for x in (pt, eta, phi, m))
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    return np.stack([px, py, pz, np.sqrt(px**2 + py**2 + pz**2 + m**2)], axis=-1)


def mass_pt(v):
    return np.sqrt(np.maximum(v[..., 3] ** 2 - (v[..., :3] ** 2).sum(-1), 0)), np.hypot(v[..., 0], v[..., 1])


def zmumu_oracle(path: Path, weighted: bool, xsec_lumi: float = 1.0) -> dict[str, np.ndarray]:
    cols = ["Muon_pt", "Muon_eta", "Muon_phi", "Muon_mass", "Muon_charge"] + (["genWeight"] if weighted else [])
    a = uproot.open(path)["Events"].arrays(cols)
    good = (a.Muon_pt > 20) & (abs(a.Muon_eta) < 2.4)
    mu = {f: a[f"Muon_{f}"][good] for f in ("pt", "eta", "phi", "mass", "charge")}
    two = ak.num(mu["pt"]) >= 2
    lead = {f: ak.to_numpy(v[two][:, :2]) for f, v in mu.items()}
    os_ = lead["charge"][:, 0] != lead["charge"][:, 1]
    v = p4(lead["pt"], lead["eta"], lead["phi"], lead["mass"])[os_].sum(axis=1)
    mll, ptll = mass_pt(v)
    w = np.ones(len(mll))
    if weighted:
        gw = ak.to_numpy(a.genWeight).astype(np.float64)
        w = gw[ak.to_numpy(two)][os_] * xsec_lumi / gw.sum()
    z = (mll > 76) & (mll < 106)
    return {"mll": flow_hist(mll, np.linspace(60, 120, 61), w),
            "ptll_z": flow_hist(ptll[z], [0, 5, 10, 20, 30, 50, 80, 120, 200], w[z]),
            "lead_mu_pt": flow_hist(lead["pt"][os_, 0], np.linspace(0, 200, 41), w),
            "n_two": int(ak.sum(two)), "n_os": int(os_.sum())}


def ttbar_oracle(path: Path, scale: float) -> dict[str, np.ndarray]:
    t = uproot.open(path)["Events"]
    btag = "Jet_btagCSVV2" if "Jet_btagCSVV2" in t.keys() else "Jet_btagDeepFlavB"
    a = t.arrays(["Electron_pt", "Electron_eta", "Electron_cutBased", "Electron_sip3d", "Muon_pt", "Muon_eta",
                  "Muon_tightId", "Muon_sip3d", "Muon_pfRelIso04_all", "Jet_pt", "Jet_eta", "Jet_phi",
                  "Jet_mass", "Jet_jetId", btag])
    ne = ak.sum((a.Electron_pt > 30) & (abs(a.Electron_eta) < 2.1) & (a.Electron_cutBased == 4)
                & (a.Electron_sip3d < 4), axis=1)
    nm = ak.sum((a.Muon_pt > 30) & (abs(a.Muon_eta) < 2.1) & a.Muon_tightId & (a.Muon_sip3d < 4)
                & (a.Muon_pfRelIso04_all < 0.15), axis=1)
    jmask = (a.Jet_pt > 30) & (abs(a.Jet_eta) < 2.4) & (a.Jet_jetId == 6)
    jets = {f: a[f][jmask] for f in ("Jet_pt", "Jet_eta", "Jet_phi", "Jet_mass", btag)}
    nb = ak.sum(jets[btag] > 0.5, axis=1)
    sel = ak.to_numpy((ne + nm == 1) & (ak.num(jets["Jet_pt"]) >= 4) & (nb >= 1))
    ht, mbjj = [], []
    for i in np.flatnonzero(sel):
        pt, eta, phi, m, b = (ak.to_numpy(jets[f][i]) for f in ("Jet_pt", "Jet_eta", "Jet_phi", "Jet_mass", btag))
        if nb[i] == 1:
            ht.append(float(np.sum(pt.astype(np.float64))))
        else:  # the highest-pT trijet among those with a b-tagged jet (plain Python loop)
            best = None
            for c in itertools.combinations(range(len(pt)), 3):
                if max(b[list(c)]) <= 0.5:
                    continue
                v = p4(pt[list(c)], eta[list(c)], phi[list(c)], m[list(c)]).sum(axis=0)
                mass, tpt = mass_pt(v)
                if best is None or tpt > best[0]:
                    best = (tpt, mass)
            mbjj.append(best[1])
    edges = np.linspace(50, 550, 26)
    return {"HT_4j1b": flow_hist(ht, edges, np.full(len(ht), scale)),
            "m_bjj_4j2b": flow_hist(mbjj, edges, np.full(len(mbjj), scale)), "selected": int(sel.sum())}


# -- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def catalog_all(shared_data, tmp_path_factory):
    """The example inputs behind every delivery path, for real: an XRootD origin with a
    token-protected XCache, a SeaweedFS bucket, a Skyhook service (and, started on first use by
    casa_data, a ServiceX endpoint). The catalog lists each file as ``/store/<path>`` (the site
    rule sends it to the XCache) with local, S3 and Skyhook replicas; ``via=`` picks one."""
    from casa_facility.services.pki import write_token_file
    from casa_facility.services.s3 import SeaweedFS
    from casa_facility.services.skyhook import SkyhookService
    from casa_facility.services.xrootd import XRootDStack

    base = Path(tempfile.mkdtemp(prefix="casa-pipeline-paths-"))  # xrootd's user must reach it
    data = base / "store"
    for rel in FILES.values():
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shared_data / rel, data / rel)
    for p in [base, *data.rglob("*")]:  # the xrootd daemons read it
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    keys = ("CASA_CONFIG", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "BEARER_TOKEN", "BEARER_TOKEN_FILE")
    saved = {k: os.environ.get(k) for k in keys}
    xrd = XRootDStack(data, workdir=base / "xrootd")
    xrd.start()
    token = xrd.issuer.mint("storage.read:/")  # one token for XCache and Skyhook
    try:
        with SeaweedFS(base / "seaweedfs") as s3, SkyhookService(shared_data, base / "skyhook", token=token) as sky:
            s3.create_bucket("casa-pipelines")
            client = s3.client()
            for rel in FILES.values():
                client.put_object(Bucket="casa-pipelines", Key=rel, Body=(shared_data / rel).read_bytes())
            cfg = xrd.casa_config()
            cfg["paths"]["s3"] = {"endpoint_url": s3.endpoint_url}
            (base / "casa.yaml").write_text(yaml.safe_dump(cfg))
            os.environ.pop("BEARER_TOKEN", None)
            os.environ.update(CASA_CONFIG=str(base / "casa.yaml"), AWS_ACCESS_KEY_ID=s3.access_key,
                              AWS_SECRET_ACCESS_KEY=s3.secret_key,
                              BEARER_TOKEN_FILE=str(write_token_file(base / "token", token)))
            reset_config()
            cat = base / "catalog.yaml"
            cat.write_text(yaml.safe_dump({"datasets": [
                {"name": name, "files": [{"lfn": f"/store/{rel}", "replicas": [
                    str(shared_data / rel), f"s3://casa-pipelines/{rel}", {"url": sky.url(rel), "via": "skyhook"}]}]}
                for name, rel in FILES.items()]}))
            yield cat
    finally:
        xrd.stop()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        reset_config()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def parquet_catalog(shared_data, tmp_path_factory) -> Path:
    """cms/dy-nano as Parquet (the same 40 events as the ROOT file)."""
    cat = tmp_path_factory.mktemp("pipeline-parquet") / "catalog.yaml"
    cat.write_text(yaml.safe_dump({"datasets": [
        {"name": "cms/dy-nano", "format": "parquet", "files": [str(shared_data / "coffea/nano_dy.parquet")]}]}))
    return cat


@pytest.fixture(scope="module")
def runs(catalog_all, parquet_catalog, tmp_path_factory):
    """Every example through every delivery path (computed once per module)."""
    out = {}
    for ex, spec in (("zmumu", ZMUMU), ("ttbar", TTBAR)):
        for via in PATHS if ex == "ttbar" else ZMUMU_PATHS:
            d = tmp_path_factory.mktemp(f"{ex}-{via}")
            out[ex, via] = run_pipeline(spec, via=via, catalog=catalog_all, output=d, force=True)
    dy_only = tmp_path_factory.mktemp("pq") / "zmumu-dy.yaml"  # the DY part: the Parquet copy's events
    dy_only.write_text(ZMUMU.read_text().replace("  data:\n    dataset: cms/zmumu-2012\n", ""))
    out["zmumu", "parquet"] = run_pipeline(dy_only, catalog=parquet_catalog, output=dy_only.parent / "out",
                                           force=True)
    return out


def _view(h):
    v = h.view(flow=True)
    return (np.asarray(v.value), np.asarray(v.variance)) if v.dtype.names else (np.asarray(v), None)


def assert_same_hists(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].axes == b[name].axes, name
        for x, y in zip(_view(a[name]), _view(b[name])):
            if x is not None:
                np.testing.assert_array_equal(x, y, err_msg=name)


# -- examples: oracle and delivery paths -------------------------------------------------------------
def test_zmumu_equals_handwritten(runs, shared_data):
    res = runs["zmumu", "local"]
    spec = load_spec(ZMUMU).spec
    for label, weighted in (("data", False), ("dy", True)):
        path = shared_data / FILES[spec.datasets[label].dataset]
        want = zmumu_oracle(path, weighted, 6077.22 * 11.6)
        cf = res.summary["datasets"][label]["cutflow"]
        assert (cf["two muons"], cf["opposite charge"]) == (want["n_two"], want["n_os"])
        for name in ("mll", "ptll_z", "lead_mu_pt"):
            got = res.hists[name][{"dataset": label}].values(flow=True)
            if weighted:
                np.testing.assert_allclose(got, want[name], rtol=1e-9, atol=1e-9, err_msg=name)
            else:
                np.testing.assert_array_equal(got, want[name], err_msg=name)
    data = res.summary["datasets"]["data"]
    assert data["events_in"] == 100_000 and data["events_out"] == want_n(res) > 10_000
    assert res.hists["mll"][{"dataset": "data"}].values().argmax() in range(29, 33)  # the Z peak, ~91 GeV


def want_n(res):
    return res.summary["datasets"]["data"]["cutflow"]["opposite charge"]


def test_ttbar_equals_handwritten(runs, shared_data):
    res = runs["ttbar", "local"]
    spec = load_spec(TTBAR).spec
    for label in ("ttbar", "ttbar_2015"):
        want = ttbar_oracle(shared_data / FILES[spec.datasets[label].dataset], 729.84 * 3378 / 200)
        assert res.summary["datasets"][label]["cutflow"]["one b-tag"] == want["selected"]
        for name in ("HT_4j1b", "m_bjj_4j2b"):
            got = res.hists[name][{"dataset": label}].values(flow=True)
            np.testing.assert_allclose(got, want[name], rtol=1e-12, err_msg=f"{label} {name}")
    np.testing.assert_allclose(res.hists["HT_4j1b"].axes[1].edges, np.linspace(50, 550, 26))
    tt = res.summary["datasets"]["ttbar"]
    assert tt["cutflow"]["region 4j1b"] > 0 and tt["cutflow"]["region 4j2b"] > 0
    # the alias: btagCSVV2 where present (2015 layout), btagDeepFlavB in v12
    assert "Jet_btagDeepFlavB" in tt["columns"] and "Jet_btagCSVV2" not in tt["columns"]
    assert "Jet_btagCSVV2" in res.summary["datasets"]["ttbar_2015"]["columns"]


@pytest.mark.parametrize("example,other", [("ttbar", p) for p in PATHS[1:]] + [("zmumu", p) for p in ZMUMU_PATHS[1:]]
                         + [("zmumu", "parquet")])
def test_delivery_paths_give_identical_histograms(runs, example, other):
    a, b = runs[example, "local"], runs[example, other]
    if other == "parquet":  # DY only: compare its slice
        assert list(b.summary["datasets"]) == ["dy"]
        assert_same_hists({k: h[{"dataset": "dy"}] for k, h in a.hists.items()},
                          {k: h[{"dataset": "dy"}] for k, h in b.hists.items()})
    else:
        assert_same_hists(a.hists, b.hists)
    for label, got in b.summary["datasets"].items():
        d = a.summary["datasets"][label]
        assert (got["events_in"], got["events_out"]) == (d["events_in"], d["events_out"])
        if other in ("s3", "parquet"):
            assert got["cutflow"] == d["cutflow"] and got["bytes_read"] > 0
    assert {d["via"] for d in a.summary["datasets"].values()} == {"local"}
    if other != "parquet":
        assert {d["via"] for d in b.summary["datasets"].values()} == {other}
    prefix = {"s3": "s3://casa-pipelines/", "xcache": "root://127.0.0.1:", "skyhook": "skyhook://127.0.0.1:"}
    if other in prefix:
        assert all(f.startswith(prefix[other]) for d in b.summary["datasets"].values() for f in d["files"])


def test_skyhook_and_servicex_get_the_pushdown(runs):
    """Skyhook scans with the exact pre-filter; ServiceX gets the looser count cut; both the columns."""
    sky = runs["zmumu", "skyhook"].summary["datasets"]
    local = runs["zmumu", "local"].summary["datasets"]
    assert sky["data"]["delivery"]["pushed_filter"] == local["data"]["prefilter"]
    assert sky["data"]["delivery"]["pushed_columns"] == local["data"]["columns"]
    assert sky["data"]["delivery"]["delivered_events"] == local["data"]["cutflow"]["two muons"] == 12_665
    assert sky["data"]["cutflow"]["delivered by skyhook"] == 12_665
    # normalised by the sum of genWeight: every event must arrive, so only the columns are pushed
    assert sky["dy"]["delivery"]["pushed_filter"] is None and sky["dy"]["delivery"]["delivered_events"] == 40
    sx = runs["zmumu", "servicex"].summary["datasets"]
    assert sx["data"]["delivery"]["pushed_cut"] == "(nMuon >= 2)"
    assert sx["data"]["delivery"]["delivered_events"] == 83_343  # events with two muons before cuts
    assert sx["data"]["delivery"]["servicex"]["request_id"]
    tt = runs["ttbar", "servicex"].summary["datasets"]["ttbar"]["delivery"]
    assert tt["pushed_cut"] == "(nElectron + nMuon >= 1) & (nJet >= 4) & (nJet >= 1)"
    tsky = runs["ttbar", "skyhook"].summary["datasets"]["ttbar"]
    assert tsky["delivery"]["delivered_events"] == 39 and tsky["bytes_read"] < \
        runs["ttbar", "local"].summary["datasets"]["ttbar"]["bytes_read"]


def test_outputs_summary_root_png(runs):
    res = runs["zmumu", "local"]
    out = res.outdir
    summary = json.loads((out / "summary.json").read_text())
    assert summary["datasets"]["data"]["events_in"] == 100_000
    assert summary["bytes_read"] == sum(d["bytes_read"] for d in summary["datasets"].values()) > 0
    assert summary["run_seconds"] > 0 and summary["cached"] is False
    assert set(summary["outputs"]) >= {"histograms.pkl", "histograms.root", "summary.json", "mll.png",
                                       "ptll_z.png", "lead_mu_pt.png"}
    for png in ("mll.png", "ptll_z.png", "lead_mu_pt.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with (out / "histograms.pkl").open("rb") as f:
        assert_same_hists(pickle.load(f), res.hists)
    with uproot.open(out / "histograms.root") as f:
        assert {k.split(";")[0] for k in f.keys()} == {f"{h}__{d}" for h in res.hists for d in ("data", "dy")}
        np.testing.assert_array_equal(f["mll__data"].values(flow=True),
                                      res.hists["mll"][{"dataset": "data"}].values(flow=True))


def test_pushdown_columns_and_filter_are_exact(runs):
    """The pre-filter given to casa_data.open keeps exactly the events of the cuts it expresses."""
    z = runs["zmumu", "local"].summary["datasets"]["data"]
    assert z["columns"] == ["Muon_charge", "Muon_eta", "Muon_mass", "Muon_phi", "Muon_pt", "nMuon"]
    assert z["prefilter"] == "(count((Muon_pt > 20) and (abs(Muon_eta) < 2.4)) >= 2)"
    arr = casa_data.open("cms/zmumu-2012", catalog=CATALOG).to_awkward(z["columns"], filter=z["prefilter"])
    assert len(arr) == z["cutflow"]["two muons"]
    t = runs["ttbar", "local"].summary["datasets"]["ttbar"]
    assert "Jet_btagDeepFlavB > 0.5" in t["prefilter"] and "Electron_cutBased == 4" in t["prefilter"]
    arr = casa_data.open("cms/ttbar-nano-v12", catalog=CATALOG).to_awkward(t["columns"], filter=t["prefilter"])
    assert len(arr) == t["cutflow"]["one b-tag"] == 39


# -- cache -------------------------------------------------------------------------------------------
SMALL = """\
name: small
lumi: 10
datasets:
  dy:
    dataset: test/dy
    xsec: 100
delivery:
  catalog: catalog.yaml
selection:
  objects:
    Muon: pt > 20 and abs(eta) < 2.4
  events:
    two muons: count(Muon) >= 2
variables:
  mll: (Muon[0] + Muon[1]).mass
histograms:
  mll:
    axes:
      - {name: mll, bins: 10, start: 60, stop: 120}
"""


def test_cache_hit_force_and_invalidation(shared_data, tmp_path, casa_env):
    shutil.copy(shared_data / "coffea/nano_dy.root", tmp_path / "dy.root")
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump({"datasets": [{"name": "test/dy", "files": ["dy.root"]}]}))
    spec = tmp_path / "small.yaml"
    spec.write_text(SMALL)
    out = tmp_path / "out"
    first = run_pipeline(spec, output=out)
    assert not first.cached and first.summary["datasets"]["dy"]["events_in"] == 40
    t0 = time.perf_counter()
    again = run_pipeline(spec, output=out)
    assert again.cached and time.perf_counter() - t0 < 2.0
    assert_same_hists(again.hists, first.hists)
    assert again.summary["cache_key"] == first.summary["cache_key"]
    assert not run_pipeline(spec, output=out, force=True).cached
    assert run_pipeline(spec, output=out).cached
    # the input changes (same bytes, new mtime): recomputed
    st = (tmp_path / "dy.root").stat()
    os.utime(tmp_path / "dy.root", (st.st_atime, st.st_mtime + 10))
    changed = run_pipeline(spec, output=out)
    assert not changed.cached and changed.summary["cache_key"] != first.summary["cache_key"]
    # the spec changes: recomputed, with the new binning
    spec.write_text(SMALL.replace("bins: 10", "bins: 12"))
    rebinned = run_pipeline(spec, output=out)
    assert not rebinned.cached and rebinned.hists["mll"].axes["mll"].size == 12
    # deleted outputs are a miss too
    (out / "summary.json").unlink()
    assert not run_pipeline(spec, output=out).cached


def test_cli_run_and_errors(shared_data, tmp_path, casa_env):
    from typer.testing import CliRunner

    from casa_cli.main import app

    cli = CliRunner()
    args = ["run", str(TTBAR), "-c", str(CATALOG), "-o", str(tmp_path / "o"), "--no-progress"]
    r = cli.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "ttbar_2015" in r.output and "m_bjj_4j2b.png" in r.output
    r = cli.invoke(app, args)
    assert r.exit_code == 0 and "cached result" in r.output
    r = cli.invoke(app, args + ["--force"])
    assert r.exit_code == 0 and "cached result" not in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(TTBAR.read_text().replace("count(Jet) >= 4", "count(Jet) >= 4 and foo(Jet)"))
    r = cli.invoke(app, ["run", str(bad), "-c", str(CATALOG), "-o", str(tmp_path / "b")])
    line = next(i for i, ln in enumerate(bad.read_text().splitlines(), 1) if "foo(Jet)" in ln)
    col = bad.read_text().splitlines()[line - 1].index("foo(") + 1
    assert r.exit_code == 2 and f"bad.yaml:{line}:{col}: selection.events.four jets: unknown function 'foo'" \
        in " ".join(r.output.split()).replace(f"{tmp_path}/", "")
    r = cli.invoke(app, ["run", str(ZMUMU), "-c", str(CATALOG), "--dry-run"])
    assert r.exit_code == 0 and "pre-filter: (count((Muon_pt > 20) and" in r.output


# -- located errors ----------------------------------------------------------------------------------
BASE = """\
name: t
lumi: 10
datasets:
  dy:
    dataset: cms/dy-nano
    xsec: 100
selection:
  objects:
    Muon: pt > 20 and abs(eta) < 2.4
  events:
    two: count(Muon) >= 2
variables:
  mll: (Muon[0] + Muon[1]).mass
regions:
  z: mll > 76
histograms:
  mll:
    axes:
      - {name: mll, bins: 10, start: 60, stop: 120}
"""

# (old text, new text, the text the error points at, message fragment)
CASES = {
    "unknown field": ("xsec: 100", "xsex: 100", "xsex", "Extra inputs are not permitted"),
    "unknown top-level field": ("lumi: 10", "lumii: 10", "lumii", "Extra inputs are not permitted"),
    "type error (pydantic)": ("bins: 10", "bins: ten", "ten", "valid integer"),
    "type error (number)": ("lumi: 10", "lumi: lots", "lots", "valid number"),
    "axis without range": ("bins: 10, start: 60, stop: 120", "bins: 10", "{name", "needs bins, start, stop"),
    "syntax error": ("count(Muon) >= 2", "count(Muon >= 2", "(Muon >= 2", "was never closed"),
    "unknown function": ("count(Muon) >= 2", "count(Muon) >= 2 and foo(Muon)", "foo(Muon)", "unknown function 'foo'"),
    "no dunder": ("count(Muon) >= 2", "__import__('os')", "__import__", "unknown function '__import__'"),
    "no comprehension": ("count(Muon) >= 2", "'[m for m in Muon]'", "[m for", "ListComp is not allowed"),
    "no private field": ("(Muon[0] + Muon[1]).mass", "Muon.pt.__class__", "__class__", "'_' are not allowed"),
    "expression type": ("count(Muon) >= 2", "Muon.pt > 20", "Muon.pt > 20", "one true/false per event"),
    "reduce a number": ("count(Muon) >= 2", "count(3) >= 2", "count(3)", "reduces a list per event"),
    "add numbers to objects": ("(Muon[0] + Muon[1]).mass", "Muon[0] + 3", "Muon[0] + 3", "arithmetic needs numbers"),
    "unknown object field": ("(Muon[0] + Muon[1]).mass", "Muon[0].ptt", "ptt", "has no field 'ptt'"),
    "unknown name in cut": ("pt > 20 and", "ptt > 20 and", "ptt", "unknown name 'ptt'"),
    "variable in event cut": ("count(Muon) >= 2", "mll > 60", "mll > 60", "computed after the event selection"),
    "unknown dataset": ("cms/dy-nano", "cms/dy-nanoo", "cms/dy-nanoo", "did you mean 'cms/dy-nano'"),
    "unknown region": ("    axes:\n", "    region: zz\n    axes:\n", "zz", "did you mean 'z'"),
    "not a delivery path": ("lumi: 10", "lumi: 10\ndelivery: {via: ftp}", "ftp", "Input should be"),
    "no replica on that path": ("lumi: 10", "lumi: 10\ndelivery: {via: xcache}", "xcache",
                                "no replica deliverable via 'xcache'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_invalid_spec_errors_are_located(case, tmp_path, casa_env):
    old, new, at, fragment = CASES[case]
    text = BASE.replace(old, new, 1)
    assert text != BASE
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    with pytest.raises(PipelineError) as err:
        plan(load_spec(spec), catalog=CATALOG)
    lines = text.splitlines()
    line = next(i for i, ln in enumerate(lines, 1) if at in ln)
    col = lines[line - 1].index(at) + 1
    msg = str(err.value)
    assert msg.startswith(f"{spec}:{line}:{col}: "), msg
    assert fragment in msg, msg
    assert lines[line - 1] in msg and "^" in msg  # the source line and a caret


def test_pipeline_processor_pickles_for_workers():
    """A spec's processor travels to Dask workers: it must pickle with its parsed expressions."""
    from casa_compute.pipeline.processor import PipelineProcessor

    pipe = load_spec(ZMUMU)
    proc = PipelineProcessor(pipe, {"cms/dy-nano": "dy"}, {"dy": {}}, {"dy": (1.0, None)})
    back = pickle.loads(pickle.dumps(proc))
    assert back.pipe.exprs.keys() == pipe.exprs.keys()
    assert [e.text for e in back.pipe.exprs.values()] == [e.text for e in pipe.exprs.values()]


# -- the rest of the language and the histogram kinds ---------------------------------------------------
FEATURES = """\
name: features
datasets:
  dy: {dataset: cms/dy-nano}
  tt: {dataset: cms/ttbar-nano-v12, via: local}
delivery: {catalog: %s}
selection:
  objects:
    Muon: pt > 5
    Jet: pt > 20
    HardJet: {from: Jet, cut: pt > 50}
  events:
    one muon: count(Muon) >= 1
variables:
  njet: count(Jet)
  mu_pt: Muon.pt                       # one value per muon: filled once per muon
  dr: delta_r(Muon[0], Jet[0])         # missing without a jet: not filled
  q: where(Muon[0].charge > 0, 1, -1)
  ht2: sum(Jet[0:2].pt)
  hardest: best(HardJet, abs(eta)).pt
histograms:
  mu_pt:
    by_dataset: false
    axes: [{name: mu_pt, bins: 20, start: 0, stop: 100}]
  njet_q:
    axes: [{name: njet, start: 0, stop: 10}, {name: q, categories: [-1, 1]}]
  njet_ht2:
    axes: [{name: njet, start: 0, stop: 10}, {name: ht2, bins: 10, start: 0, stop: 500}]
  dr:
    weight: 2 * abs(q)
    axes: [{name: dr, bins: 10, start: 0, stop: 5}]
  hardest:
    axes: [{name: hardest, bins: 10, start: 0, stop: 500}]
"""


def features_oracle(path: Path) -> dict:
    a = uproot.open(path)["Events"].arrays(["Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge", "Jet_pt",
                                            "Jet_eta", "Jet_phi"])
    mu = {f: a[f"Muon_{f}"][a.Muon_pt > 5] for f in ("pt", "eta", "phi", "charge")}
    jet = {f: a[f"Jet_{f}"][a.Jet_pt > 20] for f in ("pt", "eta", "phi")}
    sel = ak.num(mu["pt"]) >= 1
    mu, jet = {k: v[sel] for k, v in mu.items()}, {k: v[sel] for k, v in jet.items()}
    njet = ak.to_numpy(ak.num(jet["pt"]))
    q = np.where(ak.to_numpy(mu["charge"][:, 0]) > 0, 1, -1)
    ht2 = np.array([float(np.sum(np.asarray(p[:2], dtype=np.float64))) for p in jet["pt"].tolist()])
    dr = []
    for i in range(len(njet)):
        if njet[i]:
            dphi = (mu["phi"][i][0] - jet["phi"][i][0] + np.pi) % (2 * np.pi) - np.pi
            dr.append(np.hypot(mu["eta"][i][0] - jet["eta"][i][0], dphi))
    hardest = []
    for pt, eta in zip(jet["pt"].tolist(), jet["eta"].tolist()):
        hard = [(abs(e), p) for p, e in zip(pt, eta) if p > 50]
        if hard:
            hardest.append(max(hard)[1])
    return {"mu_pt": ak.to_numpy(ak.flatten(mu["pt"])), "njet": njet, "q": q, "ht2": ht2, "dr": np.array(dr),
            "hardest": np.array(hardest)}


def test_language_features_and_histogram_kinds(shared_data, tmp_path, casa_env):
    spec = tmp_path / "features.yaml"
    spec.write_text(FEATURES % CATALOG)
    res = run_pipeline(spec, output=tmp_path / "out")
    h = res.hists
    want = {lab: features_oracle(shared_data / FILES[name])
            for lab, name in (("dy", "cms/dy-nano"), ("tt", "cms/ttbar-nano-v12"))}
    # per-object values, datasets summed (by_dataset: false)
    assert h["mu_pt"].axes.name == ("mu_pt",)
    np.testing.assert_array_equal(h["mu_pt"].values(flow=True), flow_hist(
        np.concatenate([w["mu_pt"] for w in want.values()]), np.linspace(0, 100, 21)))
    for lab, w in want.items():
        # integer x category axes
        got = h["njet_q"][{"dataset": lab}].values()
        np.testing.assert_array_equal(got, np.histogram2d(w["njet"], w["q"], bins=[np.arange(11) - 0.5, [-1.5, 0, 1.5]])[0])
        # integer x regular, 2D
        np.testing.assert_array_equal(h["njet_ht2"][{"dataset": lab}].values(), np.histogram2d(
            w["njet"], w["ht2"], bins=[np.arange(11) - 0.5, np.linspace(0, 500, 11)])[0])
        # a histogram weight (2 * |q| = 2), missing values (no jet) not filled
        np.testing.assert_allclose(h["dr"][{"dataset": lab}].values(flow=True),
                                   2 * flow_hist(w["dr"], np.linspace(0, 5, 11)))
        np.testing.assert_array_equal(h["hardest"][{"dataset": lab}].values(flow=True),
                                      flow_hist(w["hardest"], np.linspace(0, 500, 11)))
    assert len(want["tt"]["hardest"]) > 10 and len(want["dy"]["dr"]) > 0
    assert res.summary["datasets"]["tt"]["via"] == "local"  # a per-dataset delivery path
    notes = res.summary["output_notes"]
    assert any(n.startswith("njet_q__dy: not written to ROOT") for n in notes)
    with uproot.open(res.outdir / "histograms.root") as f:
        assert "njet_ht2__tt" in f and "mu_pt" in f and "njet_q__tt" not in f
    assert (res.outdir / "njet_ht2.png").is_file() and (res.outdir / "njet_q.png").is_file()


@pytest.fixture(scope="module")
def dask_cluster():
    import casa_compute

    c = casa_compute.cluster("local", n_workers=2)
    yield c
    c.close()


def test_runs_on_a_dask_cluster(shared_data, tmp_path, casa_env, dask_cluster):
    """The processor built from the spec travels to Dask workers; results equal in-process ones."""
    spec = tmp_path / "features.yaml"
    spec.write_text(FEATURES % CATALOG)
    here = run_pipeline(spec, output=tmp_path / "here")
    there = run_pipeline(spec, output=tmp_path / "there", cluster=dask_cluster)
    assert_same_hists(here.hists, there.hists)
    assert there.summary["datasets"]["tt"]["cutflow"] == here.summary["datasets"]["tt"]["cutflow"]


def test_reduced_streams_run_on_a_dask_cluster(runs, catalog_all, tmp_path, dask_cluster):
    """Skyhook's reduced events travel to the workers inside the chunks (no shared disk needed)."""
    res = run_pipeline(TTBAR, via="skyhook", catalog=catalog_all, output=tmp_path / "o", cluster=dask_cluster)
    assert_same_hists(res.hists, runs["ttbar", "local"].hists)
    assert res.summary["datasets"]["ttbar"]["delivery"]["delivered_events"] == 39


def test_block_scalar_and_malformed_yaml_are_located(tmp_path, casa_env):
    spec = tmp_path / "spec.yaml"
    text = BASE.replace("two: count(Muon) >= 2", "two: |\n      count(Muon) >= 2\n        and foo(Muon)")
    spec.write_text(text)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "and foo(Muon)" in ln)
    with pytest.raises(PipelineError, match=f"^{spec}:{line}:13: selection.events.two: unknown function 'foo'"):
        load_spec(spec)
    spec.write_text("name: t\nlumi: [10\n")
    with pytest.raises(PipelineError, match=f"^{spec}:3:1: malformed YAML"):
        load_spec(spec)


def test_runtime_error_is_located(tmp_path, casa_env):
    """An expression that types but cannot be computed (lists of different lengths) names its place."""
    from casa_compute.pipeline.run import PipelineRunError

    spec = tmp_path / "spec.yaml"
    text = BASE.replace("(Muon[0] + Muon[1]).mass", "sum(Muon.pt + Jet.pt)")
    spec.write_text(text)
    with pytest.raises(PipelineRunError) as err:
        run_pipeline(spec, catalog=CATALOG, output=tmp_path / "out")
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "sum(Muon.pt + Jet.pt)" in ln)
    col = text.splitlines()[line - 1].index("sum(") + 1
    assert f"{spec}:{line}:{col}: variables.mll: cannot evaluate 'sum(Muon.pt + Jet.pt)'" in str(err.value)
    assert "nano_dy.root entries [0, 40)" in str(err.value)
    assert err.value.partial is not None


PUSH = """\
name: push
datasets: {dy: {dataset: cms/dy-nano}}
selection:
  objects:
    Jet: pt > 30
  events:
    two muons: count(Muon) >= 2 and MET.pt > 10
    jets: count(Jet) > 1 and sum(Jet.pt) > 100 and 0 < MET.pt < 1000
histograms:
  h: {axes: [{name: x, expr: "Muon[0].pt", bins: 10, start: 0, stop: 100}]}
"""


def test_pushdown_translation_is_looser_and_exact_where_it_translates(shared_data, tmp_path, casa_env):
    spec = tmp_path / "push.yaml"
    spec.write_text(PUSH)
    d = plan(load_spec(spec), catalog=CATALOG).datasets["dy"]
    # sum(Jet.pt) has no flat form: left out (looser); the rest is the processor's cut exactly
    assert d.prefilter == "(nMuon >= 2) and (MET_pt > 10) and (count(Jet_pt > 30) > 1) and (0 < MET_pt < 1000)"
    # uproot's language (ServiceX): counts before object cuts, single comparisons as they are
    assert d.loose_cut == "(nMuon >= 2) & (MET_pt > 10) & (nJet >= 2)"
    res = run_pipeline(spec, catalog=CATALOG, output=tmp_path / "out")
    n_pre = len(casa_data.open("cms/dy-nano", catalog=CATALOG).to_awkward(d.columns, filter=d.prefilter))
    n_loose = len(uproot.open(shared_data / FILES["cms/dy-nano"])["Events"].arrays(["nMuon"], cut=d.loose_cut))
    cf = res.summary["datasets"]["dy"]["cutflow"]
    assert n_loose >= n_pre >= cf["jets"] and n_pre <= cf["two muons"]
