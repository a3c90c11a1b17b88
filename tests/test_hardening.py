"""Hostile input: each test reproduces one finding of the hardening review and checks its fix.

Real files, real YAML, real Skyhook servers (as tests/test_skyhook.py); no mocks. The fuzz tests
(hypothesis) are bounded: each example has a deadline and the whole module stays well under 90 s.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
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


# -- Skyhook: real servers ----------------------------------------------------------------------------------
import pyarrow.flight as fl  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from casa_data.errors import ServiceError, TokenError  # noqa: E402
from casa_data.skyhook import Request, SkyhookClient, SkyhookDataset  # noqa: E402
from casa_facility.services.skyhook import SkyhookService  # noqa: E402
from casa_facility.skyhook.server import SkyhookServer  # noqa: E402

AGC = "agc/open-data-example.root"
DY = "coffea/nano_dy.parquet"
LONG = Request(path=AGC, filter="any(Muon_pt * Muon_eta + sqrt(Muon_pt) > 0)", batch_size=200, compression=None)


@pytest.fixture(scope="module")
def sky(shared_data, tmp_path_factory):
    with SkyhookService(shared_data, tmp_path_factory.mktemp("hard-sky"), max_scans=3) as s:
        yield s


def _flight(sky, token: str | None = "ok"):
    client = fl.FlightClient(f"grpc+tcp://{sky.address}")
    tok = sky.token if token == "ok" else token
    return client, fl.FlightCallOptions(headers=[(b"authorization", f"Bearer {tok}".encode())] if tok else [],
                                        timeout=30)


def _no_traceback(err: BaseException) -> str:
    text = f"{err!s} {getattr(err, 'extra_info', b'')!r}"
    assert "Traceback" not in text and 'File "' not in text and ".py\", line" not in text, text
    return text


def test_flight_methods_answer_without_tracebacks(sky, shared_data):
    client, opts = _flight(sky)
    # FlightInfo: the real schema and record count (Parquet metadata, ROOT num_entries)
    info = client.get_flight_info(fl.FlightDescriptor.for_command(Request(path=DY).encode()), opts)
    assert info.schema.equals(pq.read_schema(shared_data / DY)) and info.total_records == 40
    info = client.get_flight_info(fl.FlightDescriptor.for_path(*AGC.split("/")), opts)  # was a TypeError
    assert info.total_records == 100_000 and len(info.endpoints) == 1
    info = client.get_flight_info(fl.FlightDescriptor.for_command(
        Request(path=AGC, columns=["nMuon", "Muon_pt"]).encode()), opts)
    assert info.schema.names == ["nMuon", "Muon_pt"] and info.total_records == 100_000
    got = client.do_get(info.endpoints[0].ticket, opts).read_all()
    assert got.schema.equals(info.schema) and got.num_rows == 100_000
    info = client.get_flight_info(fl.FlightDescriptor.for_command(
        Request(path=AGC, filter="nMuon >= 2").encode()), opts)
    assert info.total_records == -1  # not known before the scan
    # GetSchema and ListFlights
    assert client.get_schema(fl.FlightDescriptor.for_path(*DY.split("/")), opts).schema.equals(
        pq.read_schema(shared_data / DY))
    flights = {"/".join(p.decode() for p in f.descriptor.path): f for f in client.list_flights(b"coffea", opts)}
    assert DY in flights and flights[DY].total_records == 40
    assert AGC in {"/".join(p.decode() for p in f.descriptor.path) for f in client.list_flights(options=opts)}
    # what the server does not do: clear errors, never its traceback
    calls = [
        lambda: client.do_put(fl.FlightDescriptor.for_path("x"), pq.read_schema(shared_data / DY), opts)[0].close(),
        lambda: client.do_exchange(fl.FlightDescriptor.for_command(b"{}"), opts)[0].close(),
        lambda: client.get_schema(fl.FlightDescriptor.for_command(b"\xff{"), opts),
        lambda: client.get_schema(fl.FlightDescriptor.for_path("nope"), opts),
        lambda: list(client.list_flights(b"../..", opts)),
        lambda: client.get_flight_info(fl.FlightDescriptor.for_command(b""), opts),
        lambda: client.do_get(fl.Ticket(b"[1, 2]"), opts).read_all(),
        lambda: list(client.do_action(fl.Action("count", b"\x00"), opts)),
    ]
    for i, call in enumerate(calls):
        # GetSchema errors arrive as a plain ArrowException: pyarrow's GetSchema handler does not map
        # Flight errors (the others do); the server still sends no traceback.
        with pytest.raises(fl.FlightError if i not in (2, 3) else Exception) as err:
            call()
        _no_traceback(err.value)
    with pytest.raises(fl.FlightUnavailableError, match="read-only"):
        calls[0]()
    for bad in ("a.b.c", "e30.e30.e30", "x" * 3000):  # malformed JWT-like tokens: refused, no traceback
        c2, o2 = _flight(sky, bad)
        with pytest.raises(fl.FlightUnauthenticatedError) as err:
            c2.get_flight_info(fl.FlightDescriptor.for_path(*DY.split("/")), o2)
        _no_traceback(err.value)
    assert sky.client(token=sky.token).health()["status"] == "ok"


def test_pathological_filter_is_refused_quickly(sky):
    """``nMuon > 9**9**9`` (20 characters) froze the server for more than 80 s."""
    client, opts = _flight(sky)
    t0 = time.perf_counter()
    with pytest.raises(fl.FlightServerError, match="FilterError") as err:
        client.get_flight_info(fl.FlightDescriptor.for_command(
            json.dumps({"path": AGC, "filter": "nMuon > 9**9**9"}).encode()), opts)
    _no_traceback(err.value)
    assert time.perf_counter() - t0 < 10
    assert sky.client(token=sky.token).health()["status"] == "ok"


def test_histogram_request_with_infinite_range_is_refused(sky):
    client, opts = _flight(sky)
    raw = b'{"path": "%s", "hist": {"expr": "Muon_pt", "bins": 10, "range": [0, Infinity]}}' % AGC.encode()
    with pytest.raises(fl.FlightServerError, match="finite number") as err:
        client.get_flight_info(fl.FlightDescriptor.for_command(raw), opts)
    _no_traceback(err.value)


def test_long_scan_does_not_stall_other_clients(sky):
    long_client = sky.client(token=sky.token, timeout=120)
    (rel, ticket), = long_client.endpoints(LONG)
    done: dict = {}

    def long_scan():
        t0 = time.perf_counter()
        done["rows"] = long_client.read_file(rel, ticket).num_rows
        done["seconds"] = time.perf_counter() - t0

    t = threading.Thread(target=long_scan)
    t.start()
    other = sky.client(token=sky.token, timeout=20)
    probes = []
    deadline = time.perf_counter() + 60
    while other.health()["scans"] == 0 and time.perf_counter() < deadline:
        time.sleep(0.02)  # until the long scan runs
    while t.is_alive() and len(probes) < 5:
        t0 = time.perf_counter()
        assert other.health()["status"] == "ok"
        small = other.read(Request(path=DY, columns=["nMuon"], filter="nMuon >= 1"))
        probes.append(time.perf_counter() - t0)
        assert small.num_rows > 0
    t.join(120)
    assert probes and max(probes) < 5, probes
    assert done["rows"] > 50_000
    assert len(probes) >= 2 or done["seconds"] < 3  # the probes ran while the long scan did


def test_scan_cpu_budget_stops_a_long_scan(shared_data, tmp_path):
    with SkyhookService(shared_data, tmp_path / "budget", max_scan_cpu=0.3) as s:
        c = s.client(token=s.token, timeout=60)
        (rel, ticket), = c.endpoints(LONG)
        with pytest.raises(ServiceError, match=r"CPU time.*per-scan limit of 0.3 s") as err:
            c.read_file(rel, ticket)
        _no_traceback(err.value)
        assert c.read(Request(path=DY, columns=["nMuon"])).num_rows == 40  # small scans fit
        h = c.health()
        assert h["status"] == "ok" and h["scans"] == 0


def test_scopes_are_checked_on_the_real_path(shared_data, tmp_path):
    from casa_facility.services.pki import TestIssuer

    root = tmp_path / "root"
    (root / "coffea").mkdir(parents=True)
    (root / "agc").mkdir()
    shutil.copy(shared_data / DY, root / DY)
    shutil.copy(shared_data / AGC, root / AGC)
    (root / "coffea" / "link.root").symlink_to("../agc/open-data-example.root")
    (root / "coffea" / "agcdir").symlink_to("../agc")
    issuer = TestIssuer(audience="casa-skyhook")
    with SkyhookService(root, tmp_path / "sky", token=None, issuer=issuer) as s:
        coffea = issuer.mint("storage.read:/coffea")
        ds = lambda rel: SkyhookDataset(s.url(rel), token=coffea, timeout=20)  # noqa: E731
        assert ds(DY).to_table(["nMuon"]).num_rows == 40
        for rel in ("coffea/link.root", "coffea/agcdir/open-data-example.root"):
            with pytest.raises(TokenError, match="may not read /agc/open-data-example.root"):
                ds(rel).to_table(["nMuon"])
            c = SkyhookClient(s.address, token=coffea, timeout=10)
            with pytest.raises(TokenError, match="may not read /agc"):  # a forged ticket too
                c.read_file(rel, fl.Ticket(Request(path=rel).encode()))
            with pytest.raises((TokenError, ServiceError)):
                c.action("read", {"path": rel, "start": 0, "end": 10})
        c = SkyhookClient(s.address, token=coffea, timeout=10)
        assert c.list("coffea") == [DY]  # the links are not listed for this token
        assert ds("coffea").to_table(["nMuon"]).num_rows == 40
        full = issuer.mint("storage.read:/")
        assert SkyhookDataset(s.url("coffea/link.root"), token=full, timeout=20).to_table(["nMuon"]).num_rows == 100_000


def _server_cmd(root, *extra: str) -> list[str]:
    return [sys.executable, "-m", "casa_facility.skyhook.server", "--root", str(root), "--port", "0", *extra]


def _start(cmd: list[str], env: dict) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    line = ""
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stdout.readline()
        if "listening on" in line or not line:
            break
    return proc, line


def test_standalone_server_requires_auth(shared_data, tmp_path):
    env = {**os.environ, "CASA_FACILITY_DIR": str(tmp_path / "no-facility")}
    r = subprocess.run(_server_cmd(shared_data), capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode != 0 and "no authentication configured" in r.stderr and "--insecure-no-auth" in r.stderr
    r = subprocess.run(_server_cmd(shared_data, "--insecure-no-auth", "--host", "0.0.0.0"),
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode != 0 and "refused on 0.0.0.0" in r.stderr
    with pytest.raises(CasaError, match="without authentication"):
        SkyhookServer(str(shared_data), host="0.0.0.0")
    with pytest.raises(ValueError, match="insecure_no_auth=True"):
        SkyhookService(shared_data, tmp_path / "svc", token=None)
    # the explicit flag on loopback: serves, and says it is insecure
    proc, line = _start(_server_cmd(shared_data, "--insecure-no-auth"), env)
    try:
        assert "INSECURE" in line, line
        port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
        assert SkyhookClient(f"127.0.0.1:{port}", token=None, timeout=10).health()["status"] == "ok"
    finally:
        proc.terminate()
        proc.wait(20)


def test_standalone_server_trusts_the_facility_issuer_by_default(shared_data, tmp_path):
    from casa_facility.services.pki import TestIssuer

    fac = tmp_path / "facility"
    (fac / "skyhook").mkdir(parents=True)
    issuer = TestIssuer(audience="casa-skyhook")
    (fac / "skyhook" / "issuer.json").write_text(json.dumps(
        {"issuer": issuer.issuer, "audience": issuer.audience, "jwks": issuer.jwks()}))
    env = {**os.environ, "CASA_FACILITY_DIR": str(fac)}
    proc, line = _start(_server_cmd(shared_data), env)
    try:
        assert "auth on" in line and issuer.issuer in line, line
        port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
        with pytest.raises(TokenError, match="carried none"):
            SkyhookDataset(f"skyhook://127.0.0.1:{port}/{DY}", token=None, timeout=10).to_table(["nMuon"])
        tok = issuer.mint("storage.read:/")
        assert SkyhookDataset(f"skyhook://127.0.0.1:{port}/{DY}", token=tok, timeout=10).to_table(
            ["nMuon"]).num_rows == 40
    finally:
        proc.terminate()
        proc.wait(20)
    # a trust file others could have written is not used
    os.chmod(fac / "skyhook", 0o777)
    r = subprocess.run(_server_cmd(shared_data), capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode != 0 and "no authentication configured" in r.stderr


# -- fuzz (bounded) -------------------------------------------------------------------------------------------
import tempfile  # noqa: E402
import uuid  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ_DIR = Path(tempfile.mkdtemp(prefix="casa-fuzz-"))
FUZZ = settings(deadline=5000, max_examples=120, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

CATALOG_DOC = """\
datasets:
  - name: x/a
    description: a dataset
    tree: Events
    format: root
    metadata: {process: data, year: 2012}
    files:
      - lfn: /store/x/a.root
        size: 10
        nevents: 5
        replicas: [root://h.example//store/x/a.root, rel/a.root]
      - glob: /data/more/*.root
  - name: x/b
    format: parquet
    files: [b.parquet]
"""
TOKENS = ["&a ", "*a", "<<: *a", "!!python/object/apply:os.system ['true']", "!!binary", "{", "}", "[", "]",
          "- ", ": ", "\t", "\n  ", "'", '"', "%YAML 1.1\n", "---\n", "...\n", "? ", "|\n", ">-\n", "#",
          "name: x/a\n", "\\xff", "~", "null", "1e999", "2024-13-45", "0x", "-1", "\u2028", "\x00", "&b [*a,*a]"]


@st.composite
def mutated(draw, base: str) -> bytes:
    text = base
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(text)))
        j = min(len(text), i + draw(st.integers(0, 12)))
        piece = draw(st.one_of(st.sampled_from(TOKENS), st.text(max_size=8)))
        text = text[:i] + piece + text[j:]
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()) and data:  # sometimes a raw byte (invalid UTF-8)
        k = draw(st.integers(0, len(data) - 1))
        data = data[:k] + bytes([draw(st.integers(0x80, 0xff))]) + data[k + 1:]
    return data


yaml_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True), st.text(max_size=20)),
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=8), kids, max_size=4)),
    max_leaves=20)


def _fuzz_file(data: bytes, suffix: str = ".yaml") -> Path:
    p = FUZZ_DIR / f"{uuid.uuid4().hex}{suffix}"
    p.write_bytes(data)
    return p


@pytest.mark.timeout(80)
@FUZZ
@given(st.one_of(mutated(CATALOG_DOC),
                 yaml_values.map(lambda v: yaml.safe_dump(v if isinstance(v, dict) else {"datasets": [v]}).encode()),
                 yaml_values.map(lambda v: yaml.safe_dump({"datasets": [{"name": "x/r", "files": ["/a.root"],
                                                                          "metadata": v}]}).encode())))
def test_fuzz_catalog_yaml(data):
    from casa_data.catalog import Catalog

    path = _fuzz_file(data)
    try:
        cat = Catalog([path])
        for name in cat.names():
            spec = cat.get(name)
            spec.nevents_known()
            repr(spec)
    except CasaError:
        pass
    finally:
        path.unlink()


@pytest.mark.timeout(80)
@FUZZ
@given(mutated(SPEC.replace("dataset: cms/dy-nano}", "dataset: cms/dy-nano, xsec: 1.5, weight: genWeight}")
               + "lumi: 10\nselection:\n  objects:\n    Muon: pt > 20\n  events:\n    two: count(Muon) >= 2\n"
               "variables:\n  m: Muon[0].pt\nregions: {z: m > 76}\noutputs: {formats: [json]}\n"))
def test_fuzz_pipeline_yaml(data):
    path = _fuzz_file(data)
    try:
        load_spec(path)
    except CasaError:  # PipelineError is a CasaError
        pass
    finally:
        path.unlink()


request_json = st.dictionaries(
    st.sampled_from(["v", "path", "columns", "filter", "tree", "batch_size", "compression", "hist", "x"]),
    st.one_of(st.sampled_from([AGC, DY, "", "..", "/etc/passwd", "nMuon >= 2", "lz4", 1, 0, -1, 10**30, None,
                               ["nMuon"], {"expr": "nMuon", "bins": 10**9, "range": [0, 1]}]), yaml_values),
    max_size=5).map(lambda d: json.dumps(d).encode())


@pytest.mark.timeout(80)
@settings(FUZZ, max_examples=100)
@given(st.one_of(st.binary(max_size=200), request_json))
def test_fuzz_skyhook_tickets(sky, raw):
    client, opts = _flight(sky)
    try:
        client.do_get(fl.Ticket(raw), opts).read_all()
    except fl.FlightError as err:
        _no_traceback(err)
    assert client.do_action(fl.Action("health", b""), opts)  # still answering
