"""ServiceX endpoint under hostile input: auth and ownership, the transform sandbox, SigV4-checked
result URLs, request limits and validation, fair scheduling, and a bounded fuzz of the HTTP API.

Everything goes over real HTTP to a real endpoint (uvicorn, sandbox workers as casa-transform,
SeaweedFS for outputs), through httpx and the unmodified servicex client. No mocks, no skips.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from casa_facility.services.pki import TestIssuer
from casa_facility.services.servicex import OutputSeaweedFS, ServiceXEndpoint
from casa_facility.servicex.sandbox import Limits

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
AGC = SHARED / "agc" / "open-data-example.root"
BEARER = "casa-test-bearer-" + uuid.uuid4().hex  # in the endpoint's environment: must never leak


@pytest.fixture(scope="module")
def issuer():
    return TestIssuer(audience="casa-servicex")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with OutputSeaweedFS(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="module")
def ep(s3, issuer, tmp_path_factory):
    """Auth by the issuer's WLCG tokens (and a refresh token), outputs to S3, tight limits."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BEARER_TOKEN", BEARER)
        mp.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
        with ServiceXEndpoint(tmp_path_factory.mktemp("sx-sec"), s3=s3, issuer=issuer, workers=2,
                              data_roots=[SHARED], limits=Limits(wall=6.0, cpu=60),
                              max_files=50, max_active=3) as server:
            yield server


@pytest.fixture(scope="module")
def alice(issuer):
    return issuer.mint("storage.read:/", sub="alice")


@pytest.fixture(scope="module")
def bob(issuer):
    return issuer.mint("storage.read:/", sub="bob")


def h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def submit(ep, token, body=None, **kw) -> httpx.Response:
    b = {"title": "t", "file-list": [str(AGC)], "codegen": "uproot-raw", "result-format": "parquet",
         "selection": json.dumps([{"treename": "Events", "filter_name": ["nMuon"], "cut": "nMuon >= 3"}])}
    b.update(kw)
    return httpx.post(ep.url + "/servicex/transformation", headers=h(token), json=b if body is None else body,
                      timeout=30)


def wait(ep, token, rid, timeout=60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = httpx.get(f"{ep.url}/servicex/transformation/{rid}", headers=h(token), timeout=10).json()
        if st["status"] not in ("Running", "Submitted") or time.monotonic() > deadline:
            return st
        time.sleep(0.1)


def errors_of(ep, token, rid) -> list[str]:
    r = httpx.get(f"{ep.url}/servicex/transformation/{rid}/errors", headers=h(token), timeout=10)
    return [e["error"] for e in r.json()["errors"]]


def py(fn) -> str:
    from servicex.query import PythonFunction

    return PythonFunction().with_uproot_function(fn).generate_selection_string()


def s3_client(ep, status: dict, signature: str | None = None):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=f"http://{status['minio-endpoint']}", region_name="us-east-1",
                        aws_access_key_id=status["minio-access-key"], aws_secret_access_key=status["minio-secret-key"],
                        config=Config(signature_version=signature) if signature else None)


def _status_of(ep, token, local_file: str) -> dict:
    rid = local_file.split("/")[-2]  # the client downloads to <cache>/<request id>/<object>
    return httpx.get(f"{ep.url}/servicex/transformation/{rid}", headers=h(token)).json()


# -- authentication and ownership ----------------------------------------------------------------
def test_auth_is_on_by_default_everywhere(ep, alice, issuer, tmp_path):
    assert ServiceXEndpoint(tmp_path / "x").refresh_token  # the launcher's default: a token is needed
    assert httpx.get(ep.url + "/servicex").status_code == 200  # the only open call (capabilities)
    r = httpx.post(ep.url + "/servicex/transformation", json={"did": "casa://x", "codegen": "uproot", "selection": ""})
    assert r.status_code == 401 and "token" in r.json()["message"]
    for path in ("/servicex/transformation", "/servicex/datasets", f"/servicex/transformation/{uuid.uuid4()}"):
        assert httpx.get(ep.url + path).status_code == 401
    other = TestIssuer(issuer="https://evil.example/issuer", audience="casa-servicex").mint(sub="alice")
    for bad in ("nonsense", other, issuer.mint(sub="alice", expired=True), issuer.mint(sub="alice", audience="x"),
                alice[:-4] + "AAAA"):
        r = httpx.get(ep.url + "/servicex/transformation", headers=h(bad))
        assert r.status_code == 401, (bad, r.text)
        assert bad not in r.text
    assert httpx.get(ep.url + "/servicex/transformation", headers=h(alice)).status_code == 200
    # /token/refresh trades the WLCG token (or the refresh token) for an access token; junk is refused.
    assert httpx.post(ep.url + "/token/refresh", headers=h("nonsense")).status_code == 401
    tok = httpx.post(ep.url + "/token/refresh", headers=h(alice)).json()["access_token"]
    assert httpx.get(ep.url + "/servicex/transformation", headers=h(tok)).status_code == 200
    tok = httpx.post(ep.url + "/token/refresh", headers=h(ep.refresh_token)).json()["access_token"]
    assert httpx.get(ep.url + "/servicex/transformation", headers=h(tok)).status_code == 200


def test_running_without_auth_needs_the_insecure_flag_and_loopback(tmp_path):
    from typer.testing import CliRunner

    from casa_cli.main import app

    r = CliRunner().invoke(app, ["data", "servicex", "serve", "--insecure-no-auth", "--host", "0.0.0.0",
                                 "--state", str(tmp_path / "s")])
    assert r.exit_code == 2 and "refused on 0.0.0.0" in r.output
    p = subprocess.run([sys.executable, "-m", "casa_facility.servicex.app", "--insecure-no-auth", "--host",
                        "10.1.2.3", "--state", str(tmp_path / "s2")], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "refused on 10.1.2.3" in p.stderr
    r = CliRunner().invoke(app, ["data", "servicex", "serve", "--help"])
    assert "--insecure-no-auth" in r.output
    with ServiceXEndpoint(tmp_path / "open", workers=1, insecure_no_auth=True, data_roots=[SHARED]) as open_ep:
        assert "insecure" in repr(open_ep)
        assert httpx.get(open_ep.url + "/servicex/transformation").status_code == 200


def test_outputs_belong_to_their_owner(ep, alice, bob):
    rid = submit(ep, alice).json()["request_id"]
    st = wait(ep, alice, rid)
    assert st["status"] == "Complete" and st["files-completed"] == 1
    # Bob sees nothing of it: not listed, not readable, not cancellable, not deletable.
    assert rid not in [r["request_id"] for r in httpx.get(ep.url + "/servicex/transformation", headers=h(bob)).json()["requests"]]
    for method, path in (("GET", ""), ("GET", "/results"), ("GET", "/errors"), ("GET", "/cancel"), ("DELETE", "")):
        r = httpx.request(method, f"{ep.url}/servicex/transformation/{rid}{path}", headers=h(bob))
        assert r.status_code == 404, (method, path, r.status_code)
    # Bob's S3 key (from his own request) cannot read Alice's bucket; Alice's can.
    rid_b = submit(ep, bob).json()["request_id"]
    st_b = wait(ep, bob, rid_b)
    assert st_b["minio-access-key"] != st["minio-access-key"]
    key = httpx.get(f"{ep.url}/servicex/transformation/{rid}/results", headers=h(alice)).json()["results"][0]["s3-object-name"]
    from botocore.exceptions import ClientError

    for call in (lambda c: c.get_object(Bucket=rid, Key=key), lambda c: c.list_objects_v2(Bucket=rid)):
        with pytest.raises(ClientError):
            call(s3_client(ep, st_b))
    assert s3_client(ep, st).get_object(Bucket=rid, Key=key)["Body"].read()[:4] == b"PAR1"
    assert httpx.delete(f"{ep.url}/servicex/transformation/{rid}", headers=h(alice)).status_code == 200
    assert httpx.delete(f"{ep.url}/servicex/transformation/{rid_b}", headers=h(bob)).status_code == 200


# -- the sandbox ---------------------------------------------------------------------------------
def src(*lines: str) -> str:
    """A python-codegen selection: ``def attack(path):`` with these lines (base64, as PythonFunction sends)."""
    code = "def attack(path):\n    import os\n" + "".join(f"    {line}\n" for line in lines)
    return base64.b64encode(code.encode()).decode()


def _environment(path):
    """What a transform can see: its environment, its uid, its own process' start-up memory."""
    import os

    import awkward as ak

    env = "\n".join(f"{k}={v}" for k, v in os.environ.items())
    try:
        env += open("/proc/self/environ").read()
    except OSError as err:
        env += f"proc-self-environ: {err}"
    return ak.Array({"uid": [os.getuid()], "env": [env]})


def test_transforms_cannot_reach_state_secrets_or_write_outside(ep, alice):
    """Each attack raises in the transform (nothing to read, nowhere to write: the endpoint's /tmp, where
    its state lives here, is not even visible to the sandbox): the file fails."""
    state = ep.workdir / "state"
    environ_hunt = ("for pid in [p for p in os.listdir('/proc') if p.isdigit()]:",
                    "    try: text = open(f'/proc/{pid}/environ').read()",
                    "    except OSError: continue",
                    "    if 'BEARER_TOKEN' in text or 'CASA_SX' in text or 'AWS_SECRET' in text: return text",
                    "raise PermissionError('no readable environment with secrets')")
    attacks = {
        "state database": (f"return open({str(state / 'state.sqlite')!r}, 'rb').read()",),
        "signing secret": (f"return open({str(state / 'endpoint-secret')!r}).read()",),
        "state listing": (f"return os.listdir({str(state)!r})",),
        "endpoint environment": ("return open(f'/proc/{os.getppid()}/environ').read()",),
        "any process environment with secrets": environ_hunt,
        "root's files": ("return open('/root/.bashrc').read()",),  # exists, hidden from the sandbox
        "root's ssh keys": ("return os.listdir('/root/.ssh')",),
        "write to /tmp": ("open('/tmp/casa-sx-escaped', 'w').write('x')",),
        "write to the repository": ("open('/work/main/casa-sx-escaped', 'w').write('x')",),
        "write to the state dir": (f"open({str(state / 'escaped')!r}, 'w').write('x')",),
        "become root": ("os.setuid(0)",),
        "reach the endpoint's API": ("import socket",
                                     f"socket.create_connection(('127.0.0.1', {ep.port}), timeout=2).close()"),
    }
    rids = {}
    for what, lines in attacks.items():
        r = submit(ep, alice, codegen="python", selection=src(*lines))
        assert r.status_code == 200, r.text
        rids[what] = r.json()["request_id"]
    for what, rid in rids.items():
        st = wait(ep, alice, rid)
        assert st["status"] == "Fatal" and st["files-failed"] == 1, (what, st)
        errs = errors_of(ep, alice, rid)
        assert any(x in e for e in errs for x in ("PermissionError", "Permission denied", "Operation not permitted",
                                                  "Read-only file system", "No such file", "no readable environment",
                                                  "Network is unreachable", "Connection refused")), (what, errs)
    assert not os.path.exists("/tmp/casa-sx-escaped") and not os.path.exists("/work/main/casa-sx-escaped")
    assert not (state / "escaped").exists()


def test_output_of_a_transform_holds_no_secret(ep, alice, s3, tmp_path):
    """The facility finding: a python transform returning os.environ showed the bearer token and S3 keys."""
    import awkward as ak

    rid = submit(ep, alice, codegen="python", selection=py(_environment)).json()["request_id"]
    st = wait(ep, alice, rid)
    assert st["status"] == "Complete", errors_of(ep, alice, rid)
    key = httpx.get(f"{ep.url}/servicex/transformation/{rid}/results", headers=h(alice)).json()["results"][0]["s3-object-name"]
    data = s3_client(ep, st).get_object(Bucket=rid, Key=key)["Body"].read()
    out = tmp_path / "out.parquet"
    out.write_bytes(data)
    got = ak.from_parquet(out)
    assert got.uid[0] != 0 and got.uid[0] == __import__("pwd").getpwnam("casa-transform").pw_uid
    text = got.env[0] + data.decode("latin-1")
    for secret in (BEARER, s3.secret_key, s3.access_key, ep.refresh_token):
        assert secret not in text
    assert "CASA_SX" not in text and "AWS_" not in text and "BEARER" not in text


def test_uproot_raw_never_evals_and_qastle_runs_sandboxed(ep, alice):
    escape = "().__class__.__base__.__subclasses__()[-1].__init__.__globals__['system']('id')"
    for q in ({"treename": "Events", "cut": escape}, {"treename": "Events", "expressions": [escape]},
              {"treename": "Events", "filter_name": ["nMuon"], "aliases": {"a": escape}},
              {"treename": "Events", "cut": "__import__('os').system('id') == 0"}):
        r = submit(ep, alice, selection=json.dumps([q]))
        assert r.status_code == 400 and "selection" in r.json()["message"], r.text
    # A legitimate cut still works, through casa's Filter (with and/or, functions).
    r = submit(ep, alice, selection=json.dumps([{"treename": "Events", "filter_name": ["nMuon", "Muon_pt"],
                                                 "cut": "nMuon >= 2 and any(Muon_pt > 20)"}]))
    assert r.status_code == 200 and wait(ep, alice, r.json()["request_id"])["status"] == "Complete"
    # qastle calling os.system: func_adl_uproot's code runs in the sandbox; nothing reaches the host.
    marker = f"/tmp/casa-sx-qastle-{uuid.uuid4().hex[:8]}"
    qastle = (f"(call (attr (call __import__ 'os') 'system') 'id -u > {marker}; cat {ep.workdir}/state/endpoint-secret "
              f"> {marker}.secret')")
    r = submit(ep, alice, codegen="uproot", selection=f"(call Select (call EventDataset 'x' 'Events') "
                                                      f"(lambda (list e) {qastle}))")
    if r.status_code == 200:
        st = wait(ep, alice, r.json()["request_id"])
        assert st["files-completed"] == 0, st
    else:
        assert r.status_code == 400
    assert not os.path.exists(marker) and not os.path.exists(marker + ".secret")


def _sleep_long(path):
    import time

    time.sleep(120)


def test_wall_clock_limit_per_file(ep, alice):
    t0 = time.monotonic()
    rid = submit(ep, alice, codegen="python", selection=py(_sleep_long)).json()["request_id"]
    st = wait(ep, alice, rid, 40)
    assert st["status"] == "Fatal" and time.monotonic() - t0 < 30
    assert any("wall-clock limit" in e for e in errors_of(ep, alice, rid))


# -- result URLs (SigV4) -------------------------------------------------------------------------
def test_result_urls_are_signature_checked_and_work_with_the_client(ep, alice, bob, tmp_path):
    from servicex import dataset, deliver
    from servicex.query import UprootRaw

    from casa_data.servicex.client import _polling

    cfg = tmp_path / "servicex.yaml"
    cfg.write_text(yaml.safe_dump({"api_endpoints": [{"name": "casa", "endpoint": ep.url, "token": alice}],
                                   "default_endpoint": "casa", "cache_path": str(tmp_path / "cache")}))
    q = UprootRaw([{"treename": "Events", "filter_name": ["nMuon"], "cut": "nMuon >= 4"}])
    spec = {"General": {"OutputFormat": "parquet", "Delivery": "URLs"},
            "Sample": [{"Name": "urls", "Dataset": dataset.FileList([str(AGC)]), "Query": q}]}
    with _polling(0.1):
        urls = list(deliver(spec, config_path=str(cfg), progress_bar="none")["urls"])
        spec["General"]["Delivery"] = "LocalCache"
        spec["Sample"][0]["Name"] = "local"
        local = list(deliver(spec, config_path=str(cfg), progress_bar="none", ignore_local_cache=True)["local"])
    assert len(urls) == 1 and len(local) == 1
    good = httpx.get(urls[0], timeout=30)
    assert good.status_code == 200 and good.content[:4] == b"PAR1"
    assert good.content == Path(local[0]).read_bytes()
    # botocore presigns S3 GETs with Signature V2 (query form) unless told s3v4: both are checked.
    v4 = s3_client(ep, _status_of(ep, alice, local[0]), "s3v4").generate_presigned_url(
        "get_object", Params={"Bucket": local[0].split("/")[-2], "Key": Path(local[0]).name})
    assert "X-Amz-Signature=" in v4 and "Signature=" in urls[0]
    assert httpx.get(v4).content == good.content
    for u, name, zero in ((urls[0], "Signature", "AAAAAAAAAAAAAAAAAAAAAAAAAAA%3D"), (v4, "X-Amz-Signature", "0" * 64)):
        sig = u.split(f"{name}=")[1].split("&")[0]
        r = httpx.get(u.replace(f"{name}={sig}", f"{name}={zero}"))      # forged: the all-zero signature
        assert r.status_code == 403 and "Signature" in r.text, r.text
        assert httpx.get(u.replace("Expires=", "Expires=9")).status_code == 403   # tampered expiry
        assert httpx.get(u.replace(f"{name}={sig}", "")).status_code == 403       # no signature
        assert httpx.get(u.split("?")[0]).status_code == 403                        # unsigned
    # Expired, and the right key of the wrong user: refused too.
    rid = local[0].split("/")[-2]
    st = httpx.get(f"{ep.url}/servicex/transformation/{rid}", headers=h(alice)).json()
    obj = Path(local[0]).name
    shorts = [s3_client(ep, st, v).generate_presigned_url("get_object", Params={"Bucket": rid, "Key": obj},
                                                          ExpiresIn=1) for v in (None, "s3v4")]
    time.sleep(2.1)
    for short in shorts:
        r = httpx.get(short)
        assert r.status_code == 403 and "expired" in r.text
    rid_b = submit(ep, bob).json()["request_id"]
    st_b = wait(ep, bob, rid_b)
    theirs = s3_client(ep, st_b).generate_presigned_url("get_object", Params={"Bucket": rid, "Key": obj})
    assert httpx.get(theirs).status_code in (403, 404)
    wrong_secret = dict(st, **{"minio-secret-key": "0" * 40})
    forged = s3_client(ep, wrong_secret).generate_presigned_url("get_object", Params={"Bucket": rid, "Key": obj})
    assert httpx.get(forged).status_code == 403


# -- limits and malformed requests ---------------------------------------------------------------
def test_malformed_requests_get_a_4xx_naming_the_field(ep, alice):
    url = ep.url + "/servicex/transformation"
    SEL = json.dumps([{"treename": "Events", "filter_name": ["nMuon"]}])
    cases = [
        ([1, 2, 3], "body"), ("just a string", "body"), (None, "body"),
        ({"file-list": "abc", "codegen": "uproot-raw", "selection": SEL}, "file-list"),
        ({"file-list": [1, 2], "codegen": "uproot-raw", "selection": SEL}, "file-list"),
        ({"file-list": [str(AGC)], "codegen": "uproot-raw", "selection": {"a": 1}}, "selection"),
        ({"file-list": [str(AGC)], "codegen": "uproot-raw", "selection": 7}, "selection"),
        ({"file-list": [str(AGC)], "codegen": ["uproot"], "selection": "x"}, "codegen"),
        ({"file-list": [str(AGC)], "codegen": "uproot-raw", "selection": SEL, "result-format": 3}, "result-format"),
        ({"did": "casa://cms/dimuon-2012?files=abc", "codegen": "uproot-raw", "selection": SEL}, "did"),
        ({"did": "casa://cms/dimuon-2012?evil=1", "codegen": "uproot-raw", "selection": SEL}, "did"),
        ({"did": 12, "codegen": "uproot-raw", "selection": SEL}, "did"),
        ({"did": "rucio://x", "file-list": ["/a"], "codegen": "uproot-raw", "selection": SEL}, "did, file-list"),
        ({"title": ["x"], "file-list": [str(AGC)], "codegen": "uproot-raw", "selection": SEL}, "title"),
    ]
    for body, field in cases:
        r = httpx.post(url, headers=h(alice), content=json.dumps(body), timeout=10)
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
        msg = r.json()["message"]
        assert field in msg, (body, msg)
    assert httpx.post(url, headers=h(alice), content=b"{not json").status_code == 400
    assert httpx.post(url + "?files=abc", headers=h(alice), json={}).status_code == 400
    r = httpx.get(f"{url}/{uuid.uuid4()}/results?later_than=yesterday", headers=h(alice))
    assert r.status_code == 404  # unknown request first; a known one:
    rid = submit(ep, alice).json()["request_id"]
    r = httpx.get(f"{url}/{rid}/results?later_than=yesterday", headers=h(alice))
    assert r.status_code == 400 and "later_than" in r.json()["message"]
    assert httpx.get(ep.url + "/servicex/datasets/abc", headers=h(alice)).status_code == 400
    assert httpx.post(url, headers=h(alice), content=b"[" * 100_000).status_code == 400
    wait(ep, alice, rid)


def test_file_lists_stay_inside_the_data_roots_and_the_limits(ep, alice):
    state = str(ep.workdir / "state" / "state.sqlite")
    for path in ("/etc/shadow", state, str(SHARED / ".." / ".." / "main" / "pyproject.toml"), "root://evil//x.root",
                 "s3://casa-facility/secret"):
        r = submit(ep, alice, **{"file-list": [path]})
        assert r.status_code == 403 and "file-list" in r.json()["message"], (path, r.text)
    r = submit(ep, alice, **{"file-list": [str(AGC)] * 51})  # max_files=50 here
    assert r.status_code == 400 and "at most 50" in r.json()["message"]
    t0 = time.monotonic()
    r = submit(ep, alice, **{"file-list": [f"/work/shared/data/x{i}.root" for i in range(100_000)]})
    assert r.status_code == 400 and time.monotonic() - t0 < 10


def _sleep_short(path):
    import time

    import awkward as ak

    time.sleep(0.4)
    return ak.Array({"x": [1]})


def test_a_big_request_does_not_starve_a_small_one_and_users_have_a_limit(ep, alice, bob):
    big = submit(ep, alice, codegen="python", selection=py(_sleep_short), **{"file-list": [str(AGC)] * 40})
    assert big.status_code == 200
    time.sleep(0.5)
    t0 = time.monotonic()
    small = submit(ep, bob).json()["request_id"]
    st = wait(ep, bob, small, 30)
    took = time.monotonic() - t0
    big_st = httpx.get(f"{ep.url}/servicex/transformation/{big.json()['request_id']}", headers=h(alice)).json()
    assert st["status"] == "Complete" and took < 5, (st["status"], took)
    assert big_st["status"] == "Running" and big_st["files-remaining"] > 10
    # max_active=3 unfinished requests per user: the 4th waits for its turn (429), others are unaffected.
    more = [submit(ep, alice, codegen="python", selection=py(_sleep_short)) for _ in range(3)]
    assert [r.status_code for r in more] == [200, 200, 429], [r.text for r in more]
    assert "unfinished requests" in more[-1].json()["message"]
    assert submit(ep, bob).status_code == 200
    httpx.get(f"{ep.url}/servicex/transformation/{big.json()['request_id']}/cancel", headers=h(alice))


# -- fuzz ----------------------------------------------------------------------------------------
def test_fuzz_the_http_api_never_5xx(ep, alice):
    """Random JSON bodies and query strings: always 2xx/4xx, never a 5xx or a hang (bounded)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                     st.text(max_size=30), st.sampled_from(["uproot", "uproot-raw", "python", "parquet", "root-file",
                                                            str(AGC), "casa://cms/dimuon-2012?files=1", "[]"]))
    values = st.recursive(leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
                          max_leaves=12)
    keys = st.sampled_from(["title", "did", "file-list", "selection", "codegen", "result-format",
                            "result-destination", "x"])
    bodies = st.one_of(values, st.dictionaries(keys, values, max_size=7))
    paths = st.sampled_from(["/servicex/transformation", f"/servicex/transformation/{uuid.uuid4()}",
                             f"/servicex/transformation/{uuid.uuid4()}/results", "/servicex/datasets",
                             "/servicex/datasets/1", "/token/refresh", "/servicex", "/healthz"])
    query = st.dictionaries(st.sampled_from(["later_than", "status", "did-finder", "show-deleted", "files",
                                             "X-Amz-Signature", "list-type"]), st.text(max_size=20), max_size=3)
    client = httpx.Client(timeout=10)
    t0 = time.monotonic()

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(body=bodies, path=paths, q=query, method=st.sampled_from(["GET", "POST", "DELETE"]),
           raw=st.one_of(st.none(), st.binary(max_size=64)), token=st.sampled_from([alice, "", "x.y.z"]))
    def check(body, path, q, method, raw, token):
        if time.monotonic() - t0 > 45:
            return
        content = raw if raw is not None else json.dumps(body, allow_nan=True).encode()
        hdr = h(token) if token else {}
        r = client.request(method, ep.url + path, params=q, content=content if method == "POST" else None,
                           headers=hdr)
        assert r.status_code < 500, (method, path, q, content[:200], r.status_code, r.text[:300])
        if method == "POST" and path == "/servicex/transformation" and r.status_code == 200:
            rid = r.json()["request_id"]  # a valid request slipped through: cancel it
            client.get(f"{ep.url}{path}/{rid}/cancel", headers=hdr)

    check()
    assert time.monotonic() - t0 < 60
    for r in client.get(ep.url + "/servicex/transformation", headers=h(alice)).json()["requests"]:
        if r["status"] == "Running":
            client.get(f"{ep.url}/servicex/transformation/{r['request_id']}/cancel", headers=h(alice))
