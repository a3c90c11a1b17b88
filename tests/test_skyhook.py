"""Skyhook pushdown against the real Flight service (started here) on the real shared data.

Oracles: client-side casa reads of the same local files, plain uproot/pyarrow scans and
hist filled client-side. No mocks, no skips.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import awkward as ak
import hist
import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.flight as fl
import pyarrow.parquet as pq
import pytest
import uproot
import yaml

import casa_data
from casa_data.config import reset_config
from casa_data.errors import ColumnNotFoundError, FilterError, ObjectNotFoundError, ServiceError, TokenError
from casa_data.skyhook import SkyhookClient, SkyhookDataset, SkyhookUnavailable
from casa_facility.services.skyhook import SkyhookService
from casa_facility.skyhook.server import SkyhookServer

AGC = "agc/open-data-example.root"
DY = "coffea/nano_dy.parquet"
DIMUON = "coffea/nano_dimuon.parquet"


@pytest.fixture(scope="module")
def sky(shared_data, tmp_path_factory):
    """Token-protected service over ../shared/data."""
    with SkyhookService(shared_data, tmp_path_factory.mktemp("skyhook")) as s:
        yield s


@pytest.fixture(scope="module")
def sky_tls(shared_data, tmp_path_factory):
    """TLS service over a directory of several files (two Parquet, one Arrow IPC)."""
    d = tmp_path_factory.mktemp("skyhook-data")
    (d / "nano").mkdir()
    for name in (DY, DIMUON):
        shutil.copy(shared_data / name, d / "nano" / Path(name).name)
    table = pq.read_table(shared_data / DY, columns=["run", "event", "nMuon", "MET_pt", "Muon_pt"])
    pads.write_dataset(table, d / "ipc", format="ipc", basename_template="dy-{i}.arrow")
    with SkyhookService(d, tmp_path_factory.mktemp("skyhook-tls"), tls=True) as s:
        yield s, d


@pytest.fixture()
def env(casa_env, monkeypatch):
    monkeypatch.delenv("BEARER_TOKEN_FILE", raising=False)
    monkeypatch.delenv("BEARER_TOKEN", raising=False)
    return casa_env


def _local(path: Path, columns, flt):
    return casa_data.open(str(path)).to_arrow(columns, filter=flt)


def _same(got: pa.Table, want: pa.Table) -> bool:
    """Same schema and values; NaN equals NaN (NanoAOD has NaN fillers that Table.equals rejects)."""
    return (got.schema.equals(want.schema) and got.num_rows == want.num_rows
            and ak.array_equal(ak.from_arrow(got), ak.from_arrow(want), equal_nan=True))


def _sky(sky, rel: str, **kw) -> SkyhookDataset:
    kw.setdefault("token", sky.token)
    return SkyhookDataset(sky.url(rel), ca_file=sky.ca_file, **kw)


# -- results equal client-side scans ----------------------------------------------------------------
@pytest.mark.parametrize("rel", [DY, DIMUON])
@pytest.mark.parametrize("columns,flt", [
    (["nMuon", "Muon_pt"], None),
    (["MET_pt", "nJet"], "MET_pt > 20 and nJet >= 2"),       # Arrow pushdown (flat columns)
    (["Muon_pt", "Muon_eta"], "any(Muon_pt > 20)"),          # jagged: awkward on the server
    (None, "count(Jet_pt > 30) >= 2"),                        # every column
])
def test_parquet_equals_client_side(env, sky, shared_data, rel, columns, flt):
    got = _sky(sky, rel).to_table(columns, flt)
    want = _local(shared_data / rel, columns, flt)
    assert _same(got, want)


def test_parquet_equals_plain_pyarrow(env, sky, shared_data):
    got = _sky(sky, DY).to_table(["event", "MET_pt"], "MET_pt > 20 and nMuon >= 2")
    import pyarrow.compute as pc

    want = pads.dataset(shared_data / DY).to_table(
        ["event", "MET_pt"], filter=(pc.field("MET_pt") > 20) & (pc.field("nMuon") >= 2))
    assert got.to_pydict() == want.to_pydict() and got.num_rows > 0


@pytest.mark.parametrize("columns,flt", [
    (["nMuon", "Muon_pt", "Muon_charge"], "nMuon == 2 and sum(Muon_charge) == 0"),
    (["Muon_eta"], "any(Muon_pt > 50)"),
])
def test_root_equals_client_side_and_uproot(env, sky, shared_data, columns, flt):
    got = _sky(sky, AGC).to_table(columns, flt)
    assert got.equals(_local(shared_data / AGC, columns, flt))
    # An independent oracle: uproot + awkward, no casa code.
    arr = uproot.open(shared_data / AGC)["Events"].arrays(["nMuon", "Muon_pt", "Muon_eta", "Muon_charge"])
    mask = ((arr.nMuon == 2) & (ak.sum(arr.Muon_charge, axis=1) == 0)) if "sum" in flt else ak.any(arr.Muon_pt > 50, axis=1)
    back = ak.from_arrow(got)
    assert len(back) == int(ak.sum(mask)) > 1000
    for c in columns:
        assert ak.all(ak.flatten(back[c], axis=None) == ak.flatten(arr[c][mask], axis=None))


def test_directory_many_endpoints_tls_and_ipc(env, sky_tls, shared_data):
    s, d = sky_tls
    client = s.client(token=s.token, timeout=30)
    req = casa_data.skyhook.Request(path="nano", columns=["nMuon"])
    assert [rel for rel, _ in client.endpoints(req)] == ["nano/nano_dimuon.parquet", "nano/nano_dy.parquet"]
    got = _sky(s, "nano").to_table(["event", "nMuon"], "nMuon >= 1")
    want = casa_data.open([str(d / "nano" / "nano_dimuon.parquet"), str(d / "nano" / "nano_dy.parquet")]
                          ).to_arrow(["event", "nMuon"], filter="nMuon >= 1")
    assert got.equals(want)
    ipc = _sky(s, "ipc").to_table(["event", "MET_pt"], "MET_pt > 15")
    ref = pq.read_table(shared_data / DY, columns=["event", "MET_pt"]).to_pandas().query("MET_pt > 15")
    assert ipc.column("event").to_pylist() == ref["event"].tolist()
    jag = _sky(s, "ipc").to_table(["Muon_pt"], "any(Muon_pt > 30)")
    assert jag.num_rows == _local(shared_data / DY, ["Muon_pt"], "any(Muon_pt > 30)").num_rows
    with pytest.raises(ServiceError):  # a TLS server refuses plain-text clients
        SkyhookClient(s.address, token=s.token, timeout=5).health()


def test_batches_stream_and_compression(env, sky, shared_data):
    ds = _sky(sky, AGC)
    batches = list(ds.to_batches(["nMuon"], "nMuon >= 2", batch_size=20_000))
    assert len(batches) >= 5
    assert sum(b.num_rows for b in batches) == _local(shared_data / AGC, ["nMuon"], "nMuon >= 2").num_rows
    for comp in ("zstd", None):
        req = casa_data.skyhook.Request(path=AGC, columns=["nMuon"], filter="nMuon >= 2", compression=comp)
        assert ds.client.read(req).num_rows == sum(b.num_rows for b in batches)


# -- histogram pushdown -------------------------------------------------------------------------------
def test_histogram_equals_client_side(env, sky, shared_data):
    h = _sky(sky, AGC).histogram("Muon_pt", bins=60, range=(0, 120), filter="nMuon >= 2")
    arr = uproot.open(shared_data / AGC)["Events"].arrays(["nMuon", "Muon_pt"])
    ref = hist.Hist.new.Reg(60, 0, 120).Weight().fill(ak.flatten(arr.Muon_pt[arr.nMuon >= 2]))
    np.testing.assert_array_equal(h.values(flow=True), ref.values(flow=True))
    assert h.sum(flow=True).value == ak.sum(ak.num(arr.Muon_pt[arr.nMuon >= 2]))


def test_histogram_expression_weights_and_edges(env, sky, shared_data):
    edges = [0, 10, 20, 40, 80, 200]
    h = _sky(sky, AGC).histogram("sqrt(Muon_pt * Muon_pt)", edges=edges, weight="nMuon * 0.5",
                                 filter="count(Muon_pt > 10) >= 2")
    arr = uproot.open(shared_data / AGC)["Events"].arrays(["nMuon", "Muon_pt"])
    sel = arr[ak.sum(arr.Muon_pt > 10, axis=1) >= 2]
    w, v = ak.broadcast_arrays(sel.nMuon * 0.5, sel.Muon_pt)
    ref = hist.Hist.new.Var(edges).Weight().fill(ak.flatten(v), weight=ak.flatten(w))
    np.testing.assert_allclose(h.values(flow=True), ref.values(flow=True), rtol=1e-12)
    np.testing.assert_allclose(h.variances(flow=True), ref.variances(flow=True), rtol=1e-12)
    # Only the bins travel: one row per bin plus under/overflow.
    req = casa_data.skyhook.Request(path=AGC, hist={"expr": "Muon_pt", "bins": 7, "range": [0, 70]})
    client = _sky(sky, AGC).client
    (rel, ticket), = client.endpoints(req)
    assert client.read_file(rel, ticket).num_rows == 9


# -- casa_data.open, fsspec, fallback --------------------------------------------------------------------
def test_open_via_skyhook_site_rule(env, sky, shared_data, monkeypatch):
    cfg = env / "skyhook.yaml"
    cfg.write_text(yaml.safe_dump({"sites": {"local": {"prefer": ["skyhook", "local"], "rules": [
        {"prefix": "/store/agc/", "url": sky.url("agc/"), "via": "skyhook"}]}}}))
    monkeypatch.setenv("CASA_CONFIG", str(cfg))
    monkeypatch.setenv("BEARER_TOKEN", sky.token)  # the same discovery as the XCache path
    reset_config()
    ds = casa_data.open("/store/agc/open-data-example.root", columns=["Muon_pt"], filter="nMuon >= 2",
                        via="skyhook")
    assert ds.resolved[0].candidates[0].via == "skyhook"
    assert ds.to_arrow().equals(_local(shared_data / AGC, ["Muon_pt"], "nMuon >= 2"))
    assert ds.nevents == 100_000 and "Muon_pt" in ds.available_columns()
    assert len(ds.to_awkward()) == 83343


def test_fsspec_protocol(env, sky, shared_data, monkeypatch):
    import fsspec

    monkeypatch.setenv("BEARER_TOKEN", sky.token)
    fs = fsspec.filesystem("skyhook")
    assert f"{sky.address}/agc/open-data-example.root" in fs.ls(sky.url("agc"), detail=False)
    with fsspec.open(sky.url(DY)) as f:  # raw bytes, no pushdown
        assert f.read() == (shared_data / DY).read_bytes()
    t = uproot.open(sky.url("coffea/nano_dy.root"))["Events"]
    assert t.num_entries == 40
    got = fs.to_table(sky.url(DY), ["MET_pt"], "MET_pt > 20")
    assert got.equals(_local(shared_data / DY, ["MET_pt"], "MET_pt > 20"))


def test_unreachable_error_and_fallback(env, shared_data, caplog):
    from casa_facility.services.base import free_port

    url = f"skyhook://127.0.0.1:{free_port()}/agc/open-data-example.root"
    with pytest.raises(SkyhookUnavailable, match="no Skyhook service answers at .*fallback="):
        SkyhookDataset(url, token=None, timeout=5).to_table(["nMuon"])
    with caplog.at_level(logging.WARNING, logger="casa_data.skyhook"):
        got = SkyhookDataset(url, token=None, timeout=5, fallback=str(shared_data)).to_table(["nMuon"], "nMuon >= 2")
    assert got.equals(_local(shared_data / AGC, ["nMuon"], "nMuon >= 2"))
    assert "client-side" in caplog.text


# -- errors: clear, secret-free, service stays up ------------------------------------------------------------
def _raw(sky, body: dict | bytes, token: str | None = "ok"):
    client = fl.FlightClient(f"grpc+tcp://{sky.address}")
    tok = sky.token if token == "ok" else token
    opts = fl.FlightCallOptions(headers=[(b"authorization", f"Bearer {tok}".encode())] if tok else [])
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.get_flight_info(fl.FlightDescriptor.for_command(raw), opts)


@pytest.mark.parametrize("body,match", [
    ({"path": AGC, "filter": "__import__('os').system('true')"}, r"FilterError: .*function .*__import__.* is not allowed"),
    ({"path": AGC, "filter": "nMuon >"}, "syntax error"),
    ({"path": AGC, "filter": "Muon_pt.__class__ == 1"}, "Attribute is not allowed"),
    (b"{not json", "not JSON"),
    ({"path": AGC, "colums": ["x"]}, "colums: Extra inputs are not permitted"),
    ({"path": "../../etc"}, "'..' is not allowed"),
    ({"path": "nope/missing.root"}, "does not exist"),
    ({"path": AGC, "hist": {"expr": "Muon_pt"}}, "give bins= and range="),
])
def test_malformed_requests_clear_errors(env, sky, body, match):
    with pytest.raises(fl.FlightServerError, match=match):
        _raw(sky, body)
    assert sky.client(token=sky.token).health()["status"] == "ok"


def test_unknown_column_and_bad_filter_types(env, sky):
    ds = _sky(sky, AGC)
    with pytest.raises(ColumnNotFoundError, match="'Muon_PT' not found in skyhook://.*close matches: Muon_pt"):
        ds.to_table(["Muon_PT"])
    with pytest.raises(ColumnNotFoundError, match="nMuons"):
        ds.to_table(["nMuon"], "nMuons > 1")
    with pytest.raises(FilterError, match="not allowed"):
        ds.to_table(["nMuon"], "open('/etc/passwd')")
    with pytest.raises(ObjectNotFoundError):
        _sky(sky, "agc/missing.root").to_table(["nMuon"])
    assert ds.client.health()["scans"] == 0


def test_bad_token_and_no_token(env, sky):
    bad = "wrong-" + "x" * 20
    with pytest.raises(TokenError, match="not accepted") as err:
        _sky(sky, AGC, token=bad).to_table(["nMuon"])
    assert bad not in str(err.value) and sky.token not in str(err.value)
    with pytest.raises(TokenError, match="carried none"):
        _sky(sky, AGC, token=None).to_table(["nMuon"])
    with pytest.raises(fl.FlightUnauthenticatedError):
        _raw(sky, {"path": AGC}, token=bad)
    c = sky.client(token=sky.token)
    assert c.health()["status"] == "ok" and sky.token not in repr(c)
    assert sky.token not in sky.log_tail(500) and sky.token not in " ".join(sky.command())


# -- concurrency and limits -----------------------------------------------------------------------------------
def test_concurrent_clients(env, sky, shared_data):
    cases = [(AGC, ["nMuon"], "nMuon >= 2"), (AGC, ["Muon_pt"], "any(Muon_pt > 40)"),
             (DY, ["MET_pt"], "MET_pt > 10"), (DIMUON, ["nJet"], "nJet >= 1")] * 3
    want = {(r, tuple(c), f): _local(shared_data / r, c, f) for r, c, f in cases}

    def one(case):
        r, c, f = case
        return _sky(sky, r).to_table(c, f).equals(want[(r, tuple(c), f)])

    with ThreadPoolExecutor(6) as pool:
        assert all(pool.map(one, cases))
    assert sky.client(token=sky.token).health()["scans"] == 0


def test_scan_limit_busy_then_recovers(env, shared_data):
    server = SkyhookServer(str(shared_data), max_scans=1, queue_timeout=0.3)
    threading.Thread(target=server.serve, daemon=True).start()
    try:
        c = SkyhookClient(f"127.0.0.1:{server.port}", token=None, timeout=20)
        # Large enough (uncompressed, small batches) that gRPC's buffers cannot take it all.
        req = casa_data.skyhook.Request(path=AGC, batch_size=200, compression=None)
        (rel, ticket), = c.endpoints(req)
        held = c._reader(rel, ticket)
        held.read_chunk()  # the first scan holds the only slot
        with pytest.raises(ServiceError, match="busy: 1 scans running"):
            c.read_file(rel, ticket)
        held.cancel()
        del held
        for _ in range(50):
            if c.health()["scans"] == 0:
                break
            threading.Event().wait(0.1)
        assert c.read(req.model_copy(update={"columns": ["nMuon"]})).num_rows == 100_000
    finally:
        server.shutdown()


def test_memory_limit_refuses_scans(env, shared_data):
    server = SkyhookServer(str(shared_data), max_memory=1 << 20)  # 1 MB: below any Python process
    threading.Thread(target=server.serve, daemon=True).start()
    try:
        c = SkyhookClient(f"127.0.0.1:{server.port}", token=None, timeout=20)
        with pytest.raises(ServiceError, match="memory limit"):
            SkyhookDataset(f"skyhook://127.0.0.1:{server.port}/{DY}", client=c).to_table(["nMuon"])
        assert c.health()["status"] == "ok"
    finally:
        server.shutdown()


def test_open_fallback_from_config_and_pickle(env, sky, shared_data, monkeypatch):
    import pickle

    from casa_facility.services.base import free_port

    dead = f"127.0.0.1:{free_port()}"
    cfg = env / "fallback.yaml"
    cfg.write_text(yaml.safe_dump({"paths": {"skyhook": {"fallback": str(shared_data), "timeout": 5}}}))
    monkeypatch.setenv("CASA_CONFIG", str(cfg))
    reset_config()
    ds = casa_data.open(f"skyhook://{dead}/{AGC}", via="skyhook")
    assert ds.to_arrow(["nMuon"], filter="nMuon >= 3").equals(_local(shared_data / AGC, ["nMuon"], "nMuon >= 3"))
    path = pickle.loads(pickle.dumps(ds.resolved[0].candidates[0].path))  # travels to Dask workers
    assert path.options["fallback"] == str(shared_data)
    client = pickle.loads(pickle.dumps(sky.client(token=sky.token)))
    assert client.health()["status"] == "ok"


def test_casa_bench_method(env, sky, shared_data, tmp_path):
    from casa_bench import bench

    doc = bench([str(shared_data / DY)], ["local", "skyhook"], quick=True, out_dir=tmp_path)
    sky_bytes = doc["results"]["skyhook"]["bytes"]
    assert sky_bytes["whole"] >= (shared_data / DY).stat().st_size  # raw bytes: no pushdown
    assert 0 < sky_bytes["columns"] < doc["results"]["local"]["bytes"]["columns"]  # projection pushdown


def test_wlcg_tokens_with_path_scopes(env, shared_data, tmp_path_factory):
    from casa_facility.services.pki import TestIssuer

    issuer = TestIssuer(audience="casa-skyhook")
    with SkyhookService(shared_data, tmp_path_factory.mktemp("sky-jwt"), token=None, issuer=issuer) as s:
        full = issuer.mint("storage.read:/")
        assert _sky(s, AGC, token=full).to_table(["nMuon"], "nMuon >= 4").num_rows > 0
        coffea = issuer.mint("storage.read:/coffea")
        assert _sky(s, DY, token=coffea).to_table(["nMuon"]).num_rows == 40
        with pytest.raises(TokenError, match=r"may not read /agc/open-data-example.root.*storage.read:/coffea"):
            _sky(s, AGC, token=coffea).to_table(["nMuon"])
        with pytest.raises(TokenError, match="may not read /agc"):  # a forged ticket is checked too
            c = SkyhookClient(s.address, token=coffea, timeout=10)
            c.read_file(AGC, fl.Ticket(casa_data.skyhook.Request(path=AGC).encode()))
        for bad, why in [(issuer.mint(expired=True), "expired"),
                         (issuer.mint(audience="someone-else"), "audience"),
                         (TestIssuer(issuer=issuer.issuer, audience="casa-skyhook").mint(), "signature"),
                         (TestIssuer(issuer="https://evil.example", audience="casa-skyhook").mint(), "not trusted")]:
            with pytest.raises(TokenError, match=why) as err:
                _sky(s, DY, token=bad).to_table(["nMuon"])
            assert bad not in str(err.value)
        assert s.client(token=full).health()["status"] == "ok"


def test_action_errors_are_clear(env, sky):
    c = sky.client(token=sky.token)
    with pytest.raises(ServiceError, match="unknown action 'drop'"):
        c.action("drop")
    with pytest.raises(ServiceError, match="read action takes JSON"):
        c.action("read", {"path": AGC})
    with pytest.raises(ObjectNotFoundError, match="does not exist"):
        c.action("columns", {"path": "agc/nothing.root"})
    with pytest.raises(casa_data.errors.FileReadError, match="no tree 'Nope'"):
        c.action("count", {"path": AGC, "tree": "Nope"})
    assert c.action("count", {"path": AGC})["events"] == 100_000
    assert c.health()["status"] == "ok"


def test_s3_bucket_backend(env, shared_data, tmp_path_factory):
    """The service next to an S3 bucket (SeaweedFS): same rows and histogram as local scans."""
    from casa_facility.services.s3 import SeaweedFS

    with SeaweedFS(tmp_path_factory.mktemp("seaweed")) as s3:
        s3.create_bucket("sky")
        for rel in (AGC, DY):
            s3.client().upload_file(str(shared_data / rel), "sky", f"data/{rel}")
        with SkyhookService("s3://sky/data", tmp_path_factory.mktemp("sky-s3"), s3_options=s3.path_options()) as s:
            assert s.client(token=s.token).list("") == [AGC, DY]
            got = _sky(s, AGC).to_table(["Muon_pt"], "nMuon == 2 and sum(Muon_charge) == 0")
            assert _same(got, _local(shared_data / AGC, ["Muon_pt"], "nMuon == 2 and sum(Muon_charge) == 0"))
            got = _sky(s, DY).to_table(["event", "MET_pt"], "MET_pt > 20")
            assert _same(got, _local(shared_data / DY, ["event", "MET_pt"], "MET_pt > 20"))
            h = _sky(s, "agc").histogram("Muon_eta", bins=50, range=(-2.5, 2.5), filter="nMuon >= 2")
            arr = uproot.open(shared_data / AGC)["Events"].arrays(["nMuon", "Muon_eta"])
            ref = hist.Hist.new.Reg(50, -2.5, 2.5).Weight().fill(ak.flatten(arr.Muon_eta[arr.nMuon >= 2]))
            np.testing.assert_array_equal(h.values(flow=True), ref.values(flow=True))
            assert s3.secret_key not in " ".join(s.command()) and s3.secret_key not in s.log_tail(500)
