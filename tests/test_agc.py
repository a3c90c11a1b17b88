"""The Analysis Grand Challenge ttbar analysis: ``examples/agc_ttbar.yaml`` against an independent
coffea processor in the AGC's own style (``casa_compute.testing.AGCReference``: it shares no code with
the pipeline), through
local files, S3 and XCache; ``casa validate``; reproducible smearing; located errors; I/O mode.

The inputs are slim copies (only the branches the analysis reads) of two real files, replicated
into the AGC's nine samples by a test catalog: ttbar-like samples on the ttbar NanoAOD v12 file
(btagDeepFlavB, real ttbar events), the others on the AGC 2015-layout file (btagCSVV2).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
import yaml

from casa_compute.pipeline import PipelineError, load_spec, plan, run_pipeline
from casa_compute.pipeline.validate import compare, read_histograms
from casa_compute.testing import AGCReference
from casa_data.config import reset_config

pytestmark = [pytest.mark.shared_data, pytest.mark.filterwarnings("ignore::RuntimeWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning")]

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "agc_ttbar.yaml"
LUMI = 3378.0
SAMPLES = {  # catalog name -> (process, variation, xsec, slim file)
    "agc/ttbar__nominal": ("ttbar", "nominal", 729.84, "tt.root"),
    "agc/ttbar__ME_var": ("ttbar", "ME_var", 729.84, "tt.root"),
    "agc/ttbar__PS_var": ("ttbar", "PS_var", 729.84, "tt.root"),
    "agc/ttbar__scaleup": ("ttbar", "scaleup", 729.84, "agc2015.root"),
    "agc/ttbar__scaledown": ("ttbar", "scaledown", 729.84, "tt.root"),
    "agc/single_top_s_chan__nominal": ("single_top_s_chan", "nominal", 3.2944, "agc2015.root"),
    "agc/single_top_t_chan__nominal": ("single_top_t_chan", "nominal", 234.7936507936508, "agc2015.root"),
    "agc/single_top_tW__nominal": ("single_top_tW", "nominal", 75.842, "tt.root"),
    "agc/wjets__nominal": ("wjets", "nominal", 15487.164, "tt.root"),
}
BRANCHES = {"Electron": ["pt", "eta", "phi", "mass", "charge", "cutBased", "sip3d"],
            "Muon": ["pt", "eta", "phi", "mass", "charge", "tightId", "sip3d", "pfRelIso04_all"],
            "Jet": ["pt", "eta", "phi", "mass", "jetId", "btagCSVV2", "btagDeepFlavB"]}


def slim(src: Path, dst: Path, stop: int | None = None) -> None:
    """Only the branches the analysis reads (a TTree: mktree + extend), so opening is quick."""
    t = uproot.open(src)["Events"]
    keys = set(t.keys())
    data = {f: t[f].array(entry_stop=stop) for f in ("run", "luminosityBlock", "event")}
    for coll, fields in BRANCHES.items():
        data[coll] = ak.zip({f: t[f"{coll}_{f}"].array(entry_stop=stop) for f in fields if f"{coll}_{f}" in keys})
    with uproot.recreate(dst) as f:
        f.mktree("Events", {k: v.type for k, v in data.items()})
        f["Events"].extend(data)


# -- the independent implementation: casa_compute.testing.AGCReference, a plain coffea processor in the
# AGC's style, with the documented smearing generator in plain Python ints -----------------------------
M64 = (1 << 64) - 1


def _mix(x: int) -> int:
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def smear_factors(run, lumi, event, njets) -> list[list[float]]:
    """The documented smearing generator (casa_compute/pipeline/README.md), in plain Python ints."""
    h = hashlib.blake2b(b"0/pt_res_up/variations.pt_res_up.shape.Jet.pt/1:5", digest_size=8).digest()
    s = int.from_bytes(h, "little")
    out = []
    for r, lb, ev, n in zip(run, lumi, event, njets):
        key = _mix(s)
        for x in (int(r), int(lb), int(ev)):
            key = _mix(key ^ x)
        row = []
        for i in range(int(n)):
            k = _mix((key + (i + 1) * 0x9E3779B97F4A7C15) & M64)
            u1 = (_mix(k) >> 11) * 2.0 ** -53
            u2 = (_mix(k ^ 0xD1B54A32D192ED03) >> 11) * 2.0 ** -53
            row.append(1.0 + 0.05 * (np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)))
        out.append(row)
    return out


def oracle_histograms(files: dict[str, Path]) -> dict[str, np.ndarray]:
    """The oracle through coffea's own Runner, as {"4j1b_ttbar_pt_scale_up": contents with flow}."""
    from coffea import processor
    from coffea.nanoevents import NanoAODSchema

    fileset = {}
    for proc, var, xsec, fname in SAMPLES.values():
        n = uproot.open(files[fname])["Events"].num_entries
        fileset[f"{proc}__{var}"] = {"files": {str(files[fname]): "Events"},
                                     "metadata": {"process": proc, "variation": var, "xsec": xsec, "nevts": n}}
    run = processor.Runner(executor=processor.IterativeExecutor(), schema=NanoAODSchema, chunksize=1000)
    h = run(fileset, processor_instance=AGCReference(smear_factors, lumi=LUMI))["hist"]
    out = {}
    procs = dict.fromkeys(p for p, _, _, _ in SAMPLES.values())
    systs = ["nominal", "pt_scale_up", "pt_res_up"] + [f"btag_var_{i}_{d}" for i in range(4) for d in ("up", "down")]
    for region in ("4j1b", "4j2b"):
        for proc in procs:
            names = systs + (["ME_var", "PS_var", "scaleup", "scaledown"] if proc == "ttbar" else []) + \
                (["scale_var_up", "scale_var_down"] if proc == "wjets" else [])
            for var in names:  # a cell nothing filled (no selected event) is empty
                key = f"{region}_{proc}" + ("" if var == "nominal" else f"_{var}")
                filled = proc in h.axes["process"] and var in h.axes["variation"]
                out[key] = h[{"region": region, "process": proc, "variation": var}].view(flow=True).value.copy() \
                    if filled else np.zeros(27)
        out[f"{region}_pseudodata"] = (out[f"{region}_ttbar_ME_var"] + out[f"{region}_ttbar_PS_var"]) / 2 \
            + out[f"{region}_wjets"]
    return out


# -- fixtures ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def agc(shared_data):
    """Slim inputs served by an XRootD origin with a token-protected XCache and a SeaweedFS bucket; a
    catalog naming the AGC's samples with local and S3 replicas (their LFNs go to the XCache)."""
    from casa_facility.services.pki import write_token_file
    from casa_facility.services.s3 import SeaweedFS
    from casa_facility.services.xrootd import XRootDStack

    base = Path(tempfile.mkdtemp(prefix="casa-agc-", dir="/tmp"))
    data = base / "store" / "agc"
    data.mkdir(parents=True)
    slim(shared_data / "coffea/nano_tt_v12.root", data / "tt.root")
    slim(shared_data / "skhep/nanoAOD_2015_CMS_Open_Data_ttbar.root", data / "agc2015.root")
    slim(shared_data / "coffea/nano_tt_v12.root", data / "tt60.root", 60)  # for chunks of 7
    for p in [base, *(base / "store").rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    keys = ("CASA_CONFIG", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "BEARER_TOKEN", "BEARER_TOKEN_FILE")
    saved = {k: os.environ.get(k) for k in keys}
    xrd = XRootDStack(base / "store", workdir=base / "xrootd")
    xrd.start()
    try:
        with SeaweedFS(base / "seaweedfs") as s3:
            s3.create_bucket("casa-agc")
            for f in data.iterdir():
                s3.client().put_object(Bucket="casa-agc", Key=f"agc/{f.name}", Body=f.read_bytes())
            cfg = xrd.casa_config()
            cfg["paths"]["s3"] = {"endpoint_url": s3.endpoint_url}
            (base / "casa.yaml").write_text(yaml.safe_dump(cfg))
            os.environ.pop("BEARER_TOKEN", None)
            os.environ.update(CASA_CONFIG=str(base / "casa.yaml"), AWS_ACCESS_KEY_ID=s3.access_key,
                              AWS_SECRET_ACCESS_KEY=s3.secret_key, BEARER_TOKEN_FILE=str(
                                  write_token_file(base / "token", xrd.issuer.mint("storage.read:/"))))
            reset_config()
            cat = base / "catalog.yaml"
            cat.write_text(yaml.safe_dump({"datasets": [
                {"name": name, "files": [{"lfn": f"/store/agc/{fname}", "replicas": [
                    str(data / fname), f"s3://casa-agc/agc/{fname}"]}]}
                for name, (_, _, _, fname) in [*SAMPLES.items(), ("agc/ttbar__small", (0, 0, 0, "tt60.root"))]]}))
            yield {"catalog": cat, "files": {f.name: f for f in data.iterdir()}, "base": base}
    finally:
        xrd.stop()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        reset_config()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def runs(agc, tmp_path_factory):
    return {via: run_pipeline(SPEC, via=via, catalog=agc["catalog"], output=tmp_path_factory.mktemp(f"agc-{via}"),
                              force=True) for via in ("local", "s3", "xcache")}


@pytest.fixture(scope="module")
def oracle(agc):
    return oracle_histograms(agc["files"])


# -- the analysis ------------------------------------------------------------------------------------------
def test_example_equals_the_independent_coffea_processor(runs, oracle):
    ours = read_histograms(runs["local"].outdir)
    assert set(ours) == set(oracle)
    reference = read_histograms(Path(os.environ.get("CASA_SHARED_DATA", ROOT.parent / "shared" / "data"))
                                / "agc/reference/histos_1_file_per_process.json")
    assert set(ours) == set(reference)  # the AGC's 124 histograms, named as the reference names them
    filled = 0
    for key, want in oracle.items():
        got = np.asarray(ours[key]["contents"])
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=0, err_msg=key)
        np.testing.assert_allclose(ours[key]["edges"], np.linspace(50, 550, 26), rtol=1e-15)
        filled += want.sum() > 0
    assert filled >= 40  # real entries in both regions, nominal and varied (ttbar, tW, wjets samples)
    # shape variations move events: pT up gives more selected events than nominal
    cf = runs["local"].summary["datasets"]["ttbar"]
    assert cf["cutflow_variations"]["pt_scale_up"]["at least 4 jets"] > cf["cutflow"]["at least 4 jets"]
    assert "pt_res_up" in cf["cutflow_variations"]
    h = runs["local"].hists["4j1b"]
    assert list(h.axes.name) == ["process", "variation", "HT"] and list(h.axes["variation"])[0] == "nominal"


def test_delivery_paths_give_identical_histograms(runs):
    local = read_histograms(runs["local"].outdir)
    for via in ("s3", "xcache"):
        assert runs[via].summary["datasets"]["ttbar"]["via"] == via
        other = read_histograms(runs[via].outdir)
        assert other == local, via


def test_pushdown_is_the_union_over_variations(agc):
    p = plan(load_spec(SPEC), via="local", catalog=agc["catalog"])
    d = p.datasets["ttbar"]
    # the jet cut reads Jet_pt, which pt_scale_up and pt_res_up change: it is not pushed
    assert d.prefilter is not None and "Jet_pt" not in d.prefilter and "Muon_pt" in d.prefilter
    assert {"run", "luminosityBlock", "event", "Jet_pt", "Jet_jetId", "Jet_btagDeepFlavB"} <= set(d.columns)
    nominal = tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=SPEC.resolve().parent, delete=False)
    try:
        spec = yaml.safe_load(SPEC.read_text())
        spec["variations"] = {}
        spec["datasets"] = {"ttbar": spec["datasets"]["ttbar"]}
        spec.pop("pseudodata")
        nominal.write(yaml.safe_dump(spec, sort_keys=False))
        nominal.close()
        pn = plan(load_spec(nominal.name), via="local", catalog=agc["catalog"]).datasets["ttbar"]
        assert "count((Jet_pt > 30)" in pn.prefilter  # without variations the jet cut is pushed
    finally:
        os.unlink(nominal.name)


def test_validate_command(runs, tmp_path, shared_data):
    from typer.testing import CliRunner

    from casa_cli.main import app

    out = runs["local"].outdir
    cli = CliRunner()
    r = cli.invoke(app, ["validate", str(out), str(runs["s3"].outdir)])
    assert r.exit_code == 0, r.output
    assert "124 histograms agree" in r.output
    changed = json.loads((out / "histograms_agc.json").read_text())
    changed["4j2b_ttbar_pt_scale_up"]["contents"][7] += 3.0
    (tmp_path / "changed.json").write_text(json.dumps(changed))
    r = cli.invoke(app, ["validate", str(tmp_path / "changed.json"), str(out), "--atol", "2"])
    assert r.exit_code == 1, r.output
    assert "4j2b_ttbar_pt_scale_up" in r.output and " 7 " in r.output
    ref = shared_data / "agc/reference/histos_1_file_per_process.json"
    r = cli.invoke(app, ["validate", str(ref), str(ref)])
    assert r.exit_code == 0 and "124 histograms agree" in r.output
    r = cli.invoke(app, ["validate", str(out), str(ref), "--atol", "2"])  # other inputs: it differs
    assert r.exit_code == 1 and "mismatch" in r.output
    diffs = compare(read_histograms(ref), read_histograms(shared_data / "agc/reference/histos_2_file_per_process.json"),
                    atol=2, skip=("pt_res_up",))
    assert diffs and all(d.what == "bin" for d in diffs)


# -- reproducible randomness -------------------------------------------------------------------------------
def _single(tmp: Path, chunksize: int, small: bool = False, **extra) -> Path:
    spec = yaml.safe_load(SPEC.read_text())
    spec["datasets"] = {"ttbar": spec["datasets"]["ttbar"]}
    if small:  # the first 60 events
        spec["datasets"]["ttbar"]["dataset"] = "agc/ttbar__small"
    spec.pop("pseudodata")
    spec["variations"].pop("scale_var")  # W+jets only
    spec["delivery"] = {"chunksize": chunksize}
    spec["corrections"] = [str(SPEC.resolve().parent / "agc_corrections.json")]
    spec.update(extra)
    p = tmp / f"agc-{chunksize}.yaml"
    p.write_text(yaml.safe_dump(spec, sort_keys=False))
    return p


def test_smearing_is_the_same_for_any_chunk_size(agc, tmp_path):
    res = {n: run_pipeline(_single(tmp_path, n, small=True), via="local", catalog=agc["catalog"],
                           output=tmp_path / f"o{n}", force=True) for n in (7, 10_000)}
    assert res[7].summary["chunks"] == 9 and res[10_000].summary["chunks"] == 1
    a, b = (read_histograms(r.outdir) for r in res.values())
    for key in a:
        if "btag_var" in key:  # non-integer weights: sums in another order may round differently
            np.testing.assert_allclose(a[key]["contents"], b[key]["contents"], rtol=1e-12, err_msg=key)
        else:
            assert a[key] == b[key], key  # bit for bit, pt_res_up included
    assert sum(a["4j2b_ttbar_pt_res_up"]["contents"]) > 0
    # and the numbers themselves: the same per event whatever the slicing
    from casa_compute.pipeline.variations import normal, salt

    ev = ak.zip({"run": np.array([1, 1, 2], np.uint64), "luminosityBlock": np.array([5, 5, 5], np.uint64),
                 "event": np.array([10, 11, 10], np.uint64)})
    jets = ak.Array([[1.0, 2.0], [], [3.0]])
    s = salt(0, "v", "f", 1, 0)
    whole = normal(ev, jets, 1.0, 0.05, s)
    parts = ak.concatenate([normal(ev[i:i + 1], jets[i:i + 1], 1.0, 0.05, s) for i in range(3)])
    assert whole.tolist() == parts.tolist()
    assert whole[0][0] != whole[2][0]  # another run, same event number: another value


# -- corrections, user code, errors, I/O mode ----------------------------------------------------------
def user_ht(events, objects):
    """A user function (``function: test_agc:user_ht``): HT of the selected jets."""
    return ak.sum(objects["Jet"].pt, axis=1)


def user_weight(events, objects):
    return 1.0 + ak.to_numpy(objects["Jet"][:, 0].pt).astype(np.float64) * 0.075 / 50


def test_corrections_and_user_functions(agc, tmp_path):
    import correctionlib.schemav2 as cs

    corr = cs.CorrectionSet(schema_version=2, corrections=[cs.Correction(
        name="lead", version=1, inputs=[cs.Variable(name="pt", type="real")],
        output=cs.Variable(name="w", type="real"),
        data=cs.Formula(nodetype="formula", parser="TFormula", variables=["pt"], expression="1.0 + (x*0.075 / 50)"))])
    (tmp_path / "small.json").write_text(corr.model_dump_json(exclude_unset=True))
    spec = yaml.safe_load(_single(tmp_path, 100_000).read_text())
    spec["corrections"] = ["small.json"]
    spec["variables"]["HT_user"] = {"function": "test_agc:user_ht"}
    spec["histograms"]["4j1b"]["axes"][0]["expr"] = "HT_user"
    spec["variations"] = {
        "w_corr": {"weight": 'corr("lead", Jet[0].pt)'},
        "w_expr": {"weight": "1 + Jet[0].pt * 0.075 / 50"},
        "w_user": {"weight": {"function": "test_agc:user_weight"}},
    }
    spec["pseudodata"] = "nominal"  # the sum of every process's nominal histogram
    spec["histograms"]["HT_all"] = {"by_variation": False, "axes": [{"name": "HT", "bins": 10, "start": 0, "stop": 1000}]}
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(spec, sort_keys=False))
    res = run_pipeline(p, via="local", catalog=agc["catalog"], output=tmp_path / "out", force=True)
    assert res.hists["HT_all"].axes.name == ("process", "HT")  # opted out of the variation axis
    h2 = res.hists["4j2b"]
    assert h2[{"process": "pseudodata", "variation": "nominal"}].values(flow=True).tolist() == \
        h2[{"process": "ttbar", "variation": "nominal"}].values(flow=True).tolist()
    h = read_histograms(res.outdir)
    for region in ("4j1b", "4j2b"):
        base = np.asarray(h[f"{region}_ttbar_w_corr"]["contents"])
        assert base.sum() > 0
        np.testing.assert_allclose(h[f"{region}_ttbar_w_expr"]["contents"], base, rtol=1e-12)
        np.testing.assert_allclose(h[f"{region}_ttbar_w_user"]["contents"], base, rtol=1e-12)


@pytest.mark.parametrize("variation, message", [
    ({"shape": {"Jet.ptt": "pt * 2"}}, "Jet has no field 'ptt'"),
    ({"shape": {"Jet.pt": "pt * normal(1)"}}, "normal() takes 2"),
    ({"up": "1.1"}, "needs down too"),
    ({"weight": 'corr("nope", Jet[0].pt)'}, "unknown correction 'nope'"),
    ({"weight": "Jet.pt"}, "a weight must give one number per event"),
    ({"weight": '"text" + 1'}, "only allowed as arguments of corr()"),
    ({"weight": "1.1", "datasets": ["ttbar_x"]}, "unknown dataset 'ttbar_x'"),
])
def test_malformed_variations_are_located(agc, tmp_path, variation, message):
    p = _single(tmp_path, 1000, variations={"bad": variation})
    with pytest.raises(PipelineError) as err:
        plan(load_spec(p), via="local", catalog=agc["catalog"])
    text = str(err.value)
    assert message in text, text
    assert f"{p}:" in text and "variations.bad" in text and "^" in text


def test_user_function_error_is_located(agc, tmp_path):
    spec = yaml.safe_load(_single(tmp_path, 1000).read_text())
    spec["variables"]["boom"] = {"function": "test_agc:no_such_function"}
    p = tmp_path / "f.yaml"
    p.write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.raises(PipelineError) as err:
        run_pipeline(p, via="local", catalog=agc["catalog"], output=tmp_path / "o", force=True)
    assert "cannot load 'test_agc:no_such_function'" in str(err.value) and f"{p}:" in str(err.value)


def test_io_only_reads_the_columns_and_skips_processing(agc, tmp_path):
    from typer.testing import CliRunner

    from casa_cli.main import app

    p = _single(tmp_path, 100_000)
    r = CliRunner().invoke(app, ["run", str(p), "-c", str(agc["catalog"]), "--via", "local", "--io-only",
                                 "-o", str(tmp_path / "io"), "--no-progress"])
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "io" / "summary.json").read_text())
    assert s["io_only"] and s["bytes_read"] > 0 and s["events_in"] == 200
    assert s["events_per_second_per_core"] > 0
    assert all(v["sum"] == 0 for v in s["histograms"].values())


def test_skyhook_scan_gives_the_local_result(agc, skyhook_server, shared_data, tmp_path, monkeypatch):
    """The server-side scan gets the union of the variations' columns and the loosened pre-filter."""
    cfg = yaml.safe_load(Path(os.environ["CASA_CONFIG"]).read_text())
    cfg["paths"]["skyhook"] = {"token": skyhook_server.token, "timeout": 120}
    (tmp_path / "casa.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("CASA_CONFIG", str(tmp_path / "casa.yaml"))
    reset_config()
    rel = "coffea/nano_tt_v12.root"
    cat = tmp_path / "catalog.yaml"
    replicas = [str(shared_data / rel), {"url": skyhook_server.url(rel), "via": "skyhook"}]
    cat.write_text(yaml.safe_dump({"datasets": [
        {"name": "agc/ttbar__nominal", "files": [{"lfn": "/x/tt.root", "replicas": replicas}]}]}))
    spec = _single(tmp_path, 100_000)
    try:
        local = run_pipeline(spec, via="local", catalog=cat, output=tmp_path / "local", force=True)
        sky = run_pipeline(spec, via="skyhook", catalog=cat, output=tmp_path / "sky", force=True)
    finally:
        reset_config()
    info = sky.summary["datasets"]["ttbar"]["delivery"]
    assert "Jet_pt" not in info["pushed_filter"] and "event" in info["pushed_columns"]
    assert info["delivered_events"] < 200  # the lepton cut ran on the server
    a, b = read_histograms(local.outdir), read_histograms(sky.outdir)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(b[key]["contents"], a[key]["contents"], rtol=1e-12, err_msg=key)
    assert sum(a["4j1b_ttbar_pt_res_up"]["contents"]) > 0
