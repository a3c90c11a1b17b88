"""ServiceX delivery: the unmodified servicex 3.3 client over real HTTP to casa's endpoint.

Outputs go to a real SeaweedFS (a bucket per request) for the main endpoint; the restart/auth
endpoint writes to its local output dir served by its S3 subset. No mocks, no skips.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import awkward as ak
import httpx
import numpy as np
import pytest
import uproot
import yaml

import casa_data
from casa_data.config import reset_config
from casa_data.errors import PartialResultError, QueryError, ServiceError
from casa_facility.services.base import free_port
from casa_facility.services.servicex import OutputSeaweedFS, ServiceXEndpoint

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
AGC = SHARED / "agc" / "open-data-example.root"
DY = SHARED / "coffea" / "nano_dy.root"
DIMUON = SHARED / "coffea" / "nano_dimuon.root"
CATALOG = ROOT / "tests" / "catalogs" / "shared.yaml"


def _q():
    from servicex.query import FuncADL_Uproot

    return FuncADL_Uproot().FromTree("Events")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with OutputSeaweedFS(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="module")
def sx(s3, tmp_path_factory):
    """The endpoint (auth on, by default), writing outputs to SeaweedFS; it resolves casa:// names
    with the shared catalog; file lists may name the shared data and the tests' temporary files."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CASA_CATALOG", str(CATALOG))
        with ServiceXEndpoint(tmp_path_factory.mktemp("sx"), s3=s3,
                              data_roots=[SHARED, tmp_path_factory.getbasetemp()]) as ep:
            yield ep


def auth(ep: ServiceXEndpoint) -> dict[str, str]:
    """Headers with an access token of ``ep`` (traded for its refresh token, as the client does)."""
    r = httpx.post(ep.url + "/token/refresh", headers={"Authorization": f"Bearer {ep.refresh_token}"})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.fixture()
def env(sx, casa_env, monkeypatch):
    assert AGC.exists(), f"{AGC} is missing: the tests need ../shared/data (see its README)"
    cfg = casa_env / "casa.yaml"
    tok = casa_env / "sx-token"
    tok.write_text(sx.refresh_token)
    cfg.write_text(yaml.safe_dump({"paths": {"servicex": {"endpoint": sx.url, "token_file": str(tok)}}}))
    monkeypatch.setenv("CASA_CONFIG", str(cfg))
    monkeypatch.setenv("CASA_CATALOG", str(CATALOG))
    reset_config()
    return casa_env


def _direct(path: Path, branches: list[str], cut) -> ak.Array:
    arr = uproot.open(path)["Events"].arrays(branches)
    return arr[cut(arr)]


def _same(a: ak.Array, b: ak.Array) -> None:
    assert len(a) == len(b)
    for fa, fb in zip(ak.fields(a), ak.fields(b)):
        x, y = a[fa], b[fb]
        assert ak.all(ak.num(x, axis=-1) == ak.num(y, axis=-1)) if x.ndim > 1 else True
        np.testing.assert_array_equal(ak.to_numpy(ak.flatten(x, axis=None)), ak.to_numpy(ak.flatten(y, axis=None)))


# -- correctness ----------------------------------------------------------------------------------
def test_muon_selection_by_catalog_name_to_s3_parquet(env, s3, sx):
    q = _q().Where(lambda e: e.nMuon >= 2).Select(
        lambda e: {"pt": e.Muon_pt, "eta": e.Muon_eta, "charge": e.Muon_charge, "n": e.nMuon})
    ds = casa_data.open("cms/dimuon-2012", query=q, progress=False)
    assert ds.format == "parquet" and len(ds.files) == 1
    rid = ds.metadata["servicex"]["request_id"]
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=rid)["Contents"]]
    assert keys == [Path(ds.files[0]).name]  # the output really went to the S3 bucket of the request
    got = ds.to_awkward()
    want = _direct(AGC, ["nMuon", "Muon_pt", "Muon_eta", "Muon_charge"], lambda a: a.nMuon >= 2)
    _same(got[["pt", "eta", "charge"]], want[["Muon_pt", "Muon_eta", "Muon_charge"]])
    assert len(got) == 83343
    # The status carries no facility S3 key: clients read outputs through the endpoint.
    st = httpx.get(f"{ds.metadata['servicex']['endpoint']}/servicex/transformation/{rid}", headers=auth(sx)).json()
    assert s3.secret_key not in str(st) and s3.access_key not in str(st)
    assert st["minio-endpoint"] == ds.metadata["servicex"]["endpoint"].removeprefix("http://")
    # The Dataset offers the core reads too: a filter over the delivered columns.
    assert len(ds.to_awkward(["pt"], filter="n >= 3")) == int(np.sum(want.nMuon >= 3))


def test_jet_selection_file_list_root_output(env):
    q = _q().Where(lambda e: e.nJet >= 2).Select(lambda e: {
        "jet_pt": e.Jet_pt.Where(lambda pt: pt > 30), "jet_eta": e.Jet_eta, "n30": e.Jet_pt.Where(lambda pt: pt > 30).Count()})
    ds = casa_data.open([DY, DIMUON], query=q, format="root", progress=False)
    assert ds.format == "root" and ds.tree == "servicex" and len(ds.files) == 2
    by_input = {Path(f).name.split("-")[0]: f for f in ds.files}
    for path in (DY, DIMUON):
        got = uproot.open(by_input[path.stem.split("-")[0]])["servicex"].arrays(["jet_pt", "jet_eta", "n30"])
        want = _direct(path, ["nJet", "Jet_pt", "Jet_eta"], lambda a: a.nJet >= 2)
        _same(got[["jet_pt", "jet_eta"]], ak.zip({"p": want.Jet_pt[want.Jet_pt > 30], "e": want.Jet_eta}, depth_limit=1))
        np.testing.assert_array_equal(got.n30.to_numpy(), ak.num(want.Jet_pt[want.Jet_pt > 30]).to_numpy())


def test_muon_selection_to_rntuple(env):
    q = _q().Where(lambda e: e.nMuon >= 2).Select(lambda e: {"pt": e.Muon_pt, "n": e.nMuon})
    ds = casa_data.open([AGC], query=q, format="rntuple", progress=False)
    assert ds.format == "rntuple" and ds.tree == "servicex" and len(ds.files) == 1
    assert type(uproot.open(ds.files[0])["servicex"]).__name__ == "Model_ROOT_3a3a_RNTuple"
    got, want = ds.to_awkward(), _direct(AGC, ["nMuon", "Muon_pt"], lambda a: a.nMuon >= 2)
    _same(got[["pt", "n"]], want[["Muon_pt", "nMuon"]])


def test_uproot_raw_and_python_function(env):
    raw = {"treename": "Events", "filter_name": ["Muon_pt", "nMuon"], "cut": "nMuon >= 3"}
    ds = casa_data.open([AGC], query=raw, progress=False)
    want = _direct(AGC, ["nMuon", "Muon_pt"], lambda a: a.nMuon >= 3)
    _same(ds.to_awkward(["Muon_pt"]), want[["Muon_pt"]])

    def leading_pt(path):
        import awkward as ak
        import uproot

        a = uproot.open({path: "Events"}).arrays(["Muon_pt"])
        return ak.Array({"lead": ak.max(a.Muon_pt, axis=1)})

    got = casa_data.open([AGC], query=leading_pt, format="root", progress=False).to_awkward()
    want = ak.max(uproot.open(AGC)["Events"]["Muon_pt"].array(), axis=1)  # None for no muon -> NaN in ROOT
    np.testing.assert_allclose(got.lead.to_numpy(), ak.to_numpy(ak.fill_none(want, np.nan)))


def _big(path):
    import awkward as ak
    import numpy as np
    import uproot

    n = uproot.open({path: "Events"}).num_entries
    return ak.Array({"x": np.random.default_rng(n).random(15 * n)})  # ~12 MB: incompressible


def test_large_output_multipart_download_through_the_endpoint(env):
    """> 8 MB: the client downloads in ranged parts, proxied by the endpoint from SeaweedFS."""
    ds = casa_data.open([AGC], query=_big, progress=False)
    assert Path(ds.files[0]).stat().st_size > 8 << 20
    want = np.random.default_rng(100_000).random(1_500_000)
    np.testing.assert_array_equal(ds.to_awkward().x.to_numpy(), want)


def test_cache_hit_and_stale_cache_repair(env):
    q = _q().Where(lambda e: e.nMuon == 1).Select(lambda e: {"pt": e.Muon_pt})
    first = casa_data.open([AGC], query=q, progress=False)
    t0 = time.monotonic()
    again = casa_data.open([AGC], query=q, progress=False)
    hit = time.monotonic() - t0
    assert again.metadata["servicex"]["cache_hit"] and again.files == first.files and hit < 1.5
    Path(first.files[0]).unlink()  # the client would hand back a path that no longer exists
    fixed = casa_data.open([AGC], query=q, progress=False)
    assert not fixed.metadata["servicex"]["cache_hit"] and Path(fixed.files[0]).is_file()


def test_sticky_submitted_record_is_repaired(env, sx):
    """A SUBMITTED cache record of a request the endpoint no longer has: resubmit, don't fail."""
    from servicex.configuration import Configuration
    from servicex.query_cache import QueryCache

    from casa_data.servicex.client import _client_config

    q = _q().Where(lambda e: e.nMuon == 3).Select(lambda e: {"pt": e.Muon_pt})
    first = casa_data.open([AGC], query=q, progress=False)
    cache = QueryCache(Configuration.read(str(_client_config(sx.url, "", None))))
    (rec,) = [r for r in cache.cached_queries() if r.request_id == Path(first.files[0]).parent.name]
    cache.delete_record_by_hash(rec.hash)
    cache.update_transform_status(rec.hash, "SUBMITTED")
    cache.update_transform_request_id(rec.hash, "00000000-0000-0000-0000-000000000000")
    assert cache.is_transform_request_submitted(rec.hash)
    cache.close()
    again = casa_data.open([AGC], query=q, progress=False)
    rid = again.metadata["servicex"]["request_id"]
    assert rid not in (None, "00000000-0000-0000-0000-000000000000") and len(again.to_awkward()) == len(first.to_awkward())


# -- errors ---------------------------------------------------------------------------------------
def test_bad_queries_fail_fast_naming_the_problem(env, sx):
    t0 = time.monotonic()
    with pytest.raises(QueryError, match="FromTree"):
        casa_data.open([AGC], query=__import__("servicex.query", fromlist=["x"]).FuncADL_Uproot().Select(lambda e: e.x))
    with pytest.raises(QueryError, match="cut 'nMuon >>= 2'"):
        casa_data.open([AGC], query={"treename": "Events", "cut": "nMuon >>= 2"})
    with pytest.raises(QueryError, match="not valid qastle"):
        casa_data.open([AGC], query="(call Select", codegen="uproot")
    assert time.monotonic() - t0 < 3
    # The endpoint rejects it too (400) when a plain client skips casa's checks.
    from servicex import dataset, deliver

    cfg = sx.servicex_config(env / "servicex.yaml")
    out = deliver({"Sample": [{"Name": "bad", "Dataset": dataset.FileList([str(AGC)]), "Query": "(call Select",
                               "Codegen": "uproot"}]}, config_path=cfg, progress_bar="none")
    assert not out["bad"].valid()
    with pytest.raises(Exception, match="Invalid transform request: the selection is not valid qastle") as err:
        out["bad"][0]
    assert isinstance(err.value._exc, ValueError)  # the client's ReturnValueException wraps it


def test_unknown_codegen(env, sx):
    with pytest.raises(QueryError, match="'atlasr22' is not offered.*python, uproot, uproot-raw"):
        casa_data.open([AGC], query="(call EventDataset)", codegen="atlasr22")
    from servicex import dataset, deliver

    out = deliver({"Sample": [{"Name": "cg", "Dataset": dataset.FileList([str(AGC)]), "Query": "x",
                               "Codegen": "atlasr22"}]}, config_path=sx.servicex_config(env / "sx.yaml"),
                  progress_bar="none")
    with pytest.raises(Exception, match="atlasr22 code generator not supported") as err:
        out["cg"][0]
    assert isinstance(err.value._exc, NameError)


def _without_eta(path: Path) -> Path:
    """The first 2000 AGC events with every muon branch but Muon_eta (a real "missing branch")."""
    src = uproot.open(AGC)["Events"].arrays(["nMuon", "Muon_pt", "Muon_phi"], entry_stop=2000)
    with uproot.recreate(path) as f:
        t = f.mktree("Events", {"nMuon": src.nMuon.type, "Muon": ak.zip({"pt": src.Muon_pt, "phi": src.Muon_phi}).type})
        t.extend({"nMuon": src.nMuon, "Muon": ak.zip({"pt": src.Muon_pt, "phi": src.Muon_phi})})
    return path


def test_partial_failures_name_each_file_and_keep_the_good_ones(env):
    q = _q().Where(lambda e: e.nMuon >= 2).Select(lambda e: {"eta": e.Muon_eta, "pt": e.Muon_pt})
    files = [AGC, _without_eta(env / "no_eta.root"), SHARED / "agc" / "no-such-file.root"]
    for _attempt in range(2):  # the second run must not re-attach silently to the failed request
        with pytest.raises(PartialResultError) as err:
            casa_data.open(files, query=q, progress=False)
        msg = str(err.value)
        assert "2 file(s)" in msg and "no_eta.root" in msg and "Muon_eta not in fields" in msg, msg
        assert "no-such-file.root" in msg and "No such file" in msg
        good = err.value.partial
        assert good is not None and len(good.files) == 1
        _same(good.to_awkward()[["eta"]], _direct(AGC, ["nMuon", "Muon_eta"], lambda a: a.nMuon >= 2)[["Muon_eta"]])
    ds = casa_data.open(files, query=q, progress=False, errors="skip")
    assert len(ds.files) == 1 and len(ds.failures) == 2
    # Every file failing: the client marks the GuardList invalid or returns [] "valid"; both raise here.
    with pytest.raises(PartialResultError, match="1 file") as err:
        casa_data.open(files[1:2], query=q, progress=False)
    assert err.value.partial is None


def test_unknown_catalog_name_suggests(env):
    with pytest.raises(Exception, match="did you mean 'cms/dimuon-2012'"):
        casa_data.open("cms/dimuon-2013", query=_q().Select(lambda e: {"n": e.nMuon}))


def test_endpoint_down_fails_fast(env):
    t0 = time.monotonic()
    with pytest.raises(ServiceError, match=r"127\.0\.0\.1:\d+ does not answer.*casa data servicex serve"):
        casa_data.open([AGC], query=_q().Select(lambda e: {"n": e.nMuon}), endpoint=f"http://127.0.0.1:{free_port()}")
    assert time.monotonic() - t0 < 5


# -- restart, auth, cancel, local outputs ---------------------------------------------------------
def _slow(path):
    import time

    import awkward as ak
    import uproot

    time.sleep(1.5)
    return ak.Array({"n": uproot.open({path: "Events"})["nMuon"].array()})


def test_restart_mid_request_completes_with_auth_and_local_outputs(casa_env, monkeypatch, tmp_path):
    inputs = [DY, DIMUON, AGC]
    ep = ServiceXEndpoint(tmp_path / "ep", workers=1, auth=True, data_roots=[SHARED])
    with ep:
        tok = tmp_path / "token"
        tok.write_text(ep.refresh_token)
        cfg = casa_env / "casa.yaml"
        cfg.write_text(yaml.safe_dump({"paths": {"servicex": {"endpoint": ep.url, "token_file": str(tok),
                                                              "down_timeout": 8}}}))  # a restart within 8 s (2 cores, shared)
        monkeypatch.setenv("CASA_CONFIG", str(cfg))
        reset_config()
        assert httpx.get(ep.url + "/servicex/transformation").status_code == 401  # auth is on
        result: dict = {}

        def run():
            try:
                result["ds"] = casa_data.open(inputs, query=_slow, progress=False, ignore_cache=True)
            except BaseException as err:  # noqa: BLE001 - reported by the assertion below
                result["err"] = err

        th = threading.Thread(target=run)
        th.start()
        db = ep.workdir / "state" / "state.sqlite"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _done_files(db):
            time.sleep(0.1)
        assert _done_files(db) >= 1, "no file finished before the restart"
        ep.stop()  # mid-request: at least one file done, the others not
        assert _done_files(db) < 3
        ep.start()  # same port, same state: the request resumes
        th.join(90)
        assert not th.is_alive() and "err" not in result, result.get("err")
        got = result["ds"].to_awkward()
        assert len(result["ds"].files) == 3
        assert len(got) == sum(uproot.open(p)["Events"].num_entries for p in inputs)
        assert ep.refresh_token not in repr(ep) and ep.refresh_token not in ep.log_tail(200)

        # Stopped and not restarted: a clear error after down_timeout, not minutes of client retries.
        th = threading.Thread(target=run)
        result.clear()
        th.start()
        before = _done_files(db)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _done_files(db) == before:
            time.sleep(0.1)
        ep.stop()
        t0 = time.monotonic()
        th.join(60)
        assert not th.is_alive() and isinstance(result.get("err"), ServiceError), result
        msg = str(result["err"])
        assert ep.url in msg and "stopped answering" in msg and "while request" in msg, msg
        assert time.monotonic() - t0 < 15


def _done_files(db: Path) -> int:
    import sqlite3

    with sqlite3.connect(db) as c:
        return c.execute("SELECT COUNT(*) FROM files WHERE status='success'").fetchone()[0]


def test_killed_worker_is_replaced_and_the_file_reruns(env, sx):
    import signal

    result: dict = {}
    th = threading.Thread(target=lambda: result.update(ds=casa_data.open([DY, AGC], query=_slow, progress=False,
                                                                        ignore_cache=True)))
    th.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait for the request, then for both workers to be in _slow
        running = [r for r in httpx.get(sx.url + "/servicex/transformation", headers=auth(sx)).json()["requests"]
                   if r["status"] == "Running" and r["files"] == 2]
        if running:
            break
        time.sleep(0.05)
    assert running, "the request never started"
    time.sleep(0.7)
    victim = httpx.get(sx.url + "/healthz").json()["worker_pids"][0]
    os.kill(victim, signal.SIGKILL)
    th.join(60)
    assert "ds" in result and len(result["ds"].files) == 2
    assert victim not in httpx.get(sx.url + "/healthz").json()["worker_pids"]
    assert "a transform worker died" in sx.log_tail(50)


def test_default_endpoint_is_started_for_the_process(casa_env, monkeypatch):
    """No endpoint configured: casa starts its own (here with 1 worker) and stops it at exit."""
    from casa_data.servicex import client

    cfg = casa_env / "casa.yaml"
    cfg.write_text(yaml.safe_dump({"paths": {"servicex": {"workers": 1}}}))
    monkeypatch.setenv("CASA_CONFIG", str(cfg))
    reset_config()
    try:
        ds = casa_data.open([AGC], query={"treename": "Events", "filter_name": ["nMuon"]}, progress=False)
        assert len(ds.to_awkward()) == 100_000
        assert ds.metadata["servicex"]["endpoint"] == client._LOCAL["sx"].url
    finally:
        if "sx" in client._LOCAL:
            client._LOCAL.pop("sx").stop()


def test_cancel_delete_and_datasets_through_the_client(env, sx, s3):
    from servicex.servicex_client import ServiceXClient

    client = ServiceXClient(backend="casa", config_path=sx.servicex_config(env / "c.yaml"))
    from servicex import dataset
    from servicex.query import PythonFunction

    q = client.generic_query(dataset.FileList([str(DY), str(DIMUON), str(AGC), str(DY)]),
                             PythonFunction().with_uproot_function(_slow), title="to-cancel")
    rid = __import__("asyncio").run(client.servicex.submit_transform(q.transform_request))
    client.cancel_transform(rid)
    assert client.get_transform_status(rid).status.value == "Canceled"
    client.delete_transform(rid)
    with pytest.raises(ValueError):
        client.get_transform_status(rid)
    buckets = [b["Name"] for b in s3.client().list_buckets()["Buckets"]]
    assert rid not in buckets
    names = [d.name for d in client.get_datasets()]
    assert "casa://cms/dimuon-2012" in names


def test_func_adl_reads_s3_replicas_through_the_facility_s3_settings(s3, casa_env, monkeypatch, tmp_path):
    """A catalog dataset whose replica is on the facility's S3 (custom endpoint, keys from casa's
    config, nothing in the AWS environment): the func_adl transform reads it with those settings."""
    s3.create_bucket("sx-inputs")
    s3.client().upload_file(str(AGC), "sx-inputs", "agc/open-data-example.root")
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(k, raising=False)
    cfg, cat = tmp_path / "casa.yaml", tmp_path / "catalog.yaml"
    cfg.write_text(yaml.safe_dump({"paths": {"s3": s3.path_options()}}))
    ep = ServiceXEndpoint(tmp_path / "sx", s3=s3, port=free_port())  # inherits CASA_CONFIG, CASA_CATALOG
    (tmp_path / "sx-token").write_text(ep.refresh_token)
    cfg.write_text(yaml.safe_dump({"paths": {"s3": s3.path_options(), "servicex": {
        "endpoint": ep.url, "token_file": str(tmp_path / "sx-token")}}}))
    cat.write_text(yaml.safe_dump({"datasets": [{"name": "test/agc-on-s3", "files": [
        {"lfn": "/store/agc.root", "replicas": [{"url": "s3://sx-inputs/agc/open-data-example.root",
                                                 "via": "s3"}]}]}]}))
    monkeypatch.setenv("CASA_CONFIG", str(cfg))
    monkeypatch.setenv("CASA_CATALOG", str(cat))
    reset_config()
    with ep:
        q = _q().Where(lambda e: e.nMuon >= 2).Select(lambda e: {"pt": e.Muon_pt, "eta": e.Muon_eta})
        got = casa_data.open("test/agc-on-s3", query=q, progress=False).to_awkward()
    want = _direct(AGC, ["nMuon", "Muon_pt", "Muon_eta"], lambda a: a.nMuon >= 2)
    _same(got[["pt", "eta"]], want[["Muon_pt", "Muon_eta"]])


def test_shared_tls_context_only_while_delivering():
    """The client's many httpx clients share one default TLS context during a delivery (each
    new context loads the CA bundle: ~36 ms); other verification settings are untouched, and
    httpx is itself again afterwards, also after nested (concurrent) deliveries."""
    import ssl

    import httpx
    import httpx._transports.default as transports

    from casa_data.servicex.client import _shared_ssl

    before = transports.create_ssl_context
    with _shared_ssl():
        a, b = httpx.AsyncClient(), httpx.AsyncClient()
        ctx_a = a._transport._pool._ssl_context
        assert ctx_a is b._transport._pool._ssl_context and isinstance(ctx_a, ssl.SSLContext)
        unverified = httpx.Client(verify=False)._transport._pool._ssl_context
        assert unverified is not ctx_a and unverified.verify_mode == ssl.CERT_NONE
        with _shared_ssl():  # a second delivery in another thread
            assert httpx.Client()._transport._pool._ssl_context is ctx_a
        assert transports.create_ssl_context is not before  # the first is still running
    assert transports.create_ssl_context is before
    assert httpx.Client()._transport._pool._ssl_context is not ctx_a


def test_shared_tls_context_for_the_clients_s3_downloads():
    """The client downloads each output with a new aiobotocore S3 client: during a delivery
    their connectors share one TLS context per CA bundle; afterwards aiobotocore is as it was."""
    import asyncio

    from aiobotocore.httpsession import AIOHTTPSession

    from casa_data.servicex.client import _shared_ssl

    async def contexts():
        a, b = AIOHTTPSession(), AIOHTTPSession()
        ca, cb = a._create_connector(None), b._create_connector(None)
        try:
            return ca._ssl, cb._ssl
        finally:
            await ca.close()
            await cb.close()

    before = AIOHTTPSession._create_connector
    with _shared_ssl():
        x, y = asyncio.run(contexts())
        assert x is y and x.verify_mode.name == "CERT_REQUIRED"
    assert AIOHTTPSession._create_connector is before
    x, y = asyncio.run(contexts())
    assert x is not y
