"""The facility in a box: up / status / down against the real services, loopback only."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import awkward as ak
import pytest

import casa_data
from casa_facility import lifecycle as facility


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = {pid}, [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def listeners(pids: set[int]) -> list[tuple[str, int]]:
    """(local address, pid) of every listening TCP socket owned by ``pids``."""
    out = []
    for line in subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout.splitlines():
        fields = line.split()
        for pid in map(int, re.findall(r"pid=(\d+)", line)):
            if pid in pids:
                out.append((fields[3], pid))
    return out


@pytest.fixture(scope="module")
def running():
    # Not under pytest's 0700 tmp dir: the xrootd user must reach the servers' files.
    state_dir = Path(tempfile.mkdtemp(prefix="casa-facility-test-"))
    os.environ["CASA_FACILITY_DIR"] = str(state_dir)
    try:
        state = facility.up(state_dir)
        casa_data.reset_config()
        yield state
    finally:
        facility.down(state_dir)
        os.environ.pop("CASA_FACILITY_DIR", None)
        casa_data.reset_config()
        shutil.rmtree(state_dir, ignore_errors=True)


def test_status_reports_every_service_healthy(running):
    st = facility.status()
    assert st["up"], st
    assert set(st["services"]) == {"xcache", "xrootd-origin", "s3", "servicex", "skyhook", "slurm", "dask-gateway"}
    assert "token" not in st and "expire" not in st["services"]["xcache"]["detail"]  # fresh tokens


def test_up_twice_is_safe(running):
    again = facility.up()
    assert again["pid"] == running["pid"]


def test_every_listener_is_loopback_only(running):
    socks = listeners(descendants(running["pid"]))
    assert len(socks) >= 5, socks  # origin, xcache, s3 (+ its internals), slurm, gateway and its proxy
    bad = [(a, p) for a, p in socks if not re.match(r"^(127\.0\.0\.1|\[::ffff:127\.0\.0\.1\]):\d+$", a)]
    assert not bad, f"listeners on other interfaces: {bad}"


def test_secrets_are_private_files(running):
    cfg = running["config_file"]
    assert os.stat(cfg).st_mode & 0o077 == 0
    assert os.stat(running["token_file"]).st_mode & 0o077 == 0
    tls_dir = os.path.join(running["state_dir"], "gateway", "tls")
    tls = [os.path.join(tls_dir, f) for f in os.listdir(tls_dir)]
    assert tls and all(os.stat(f).st_mode & 0o077 == 0 for f in tls)


@pytest.mark.parametrize("via", ["xcache", "s3", "skyhook", None])
def test_demo_dataset_reads_through_the_facility(running, via):
    ds = casa_data.open("demo/zmumu", via=via)
    if via is None:
        assert ds.resolved[0].candidates[0].via == "xcache"  # the facility's first choice
    got = ds.to_awkward(["Muon_pt"], filter="nMuon == 2")
    ref = casa_data.open("demo/zmumu", via="local").to_awkward(["Muon_pt"], filter="nMuon == 2")
    assert len(got) == len(ref) > 100_000
    assert ak.all(ak.flatten(got.Muon_pt) == ak.flatten(ref.Muon_pt))


def test_servicex_query_through_the_facility_endpoint(running):
    from servicex.query import FuncADL_Uproot

    query = (FuncADL_Uproot().FromTree("Events").Where(lambda e: e.nMuon == 2)
             .Select(lambda e: {"pt": e.Muon_pt}))
    got = casa_data.open("demo/zmumu", query=query).to_awkward()
    ref = casa_data.open("demo/zmumu", via="local").to_awkward(["Muon_pt"], filter="nMuon == 2")
    assert len(got) == len(ref)
    assert ak.all(ak.flatten(got.pt) == ak.flatten(ref.Muon_pt))


def test_dask_gateway_cluster_with_the_facility_token(running):
    """cluster="facility" is a Dask Gateway cluster (TLS through the gateway's proxy) for the
    token's user; the gateway's HTTPS needs its CA (more in tests/test_gateway.py)."""
    import urllib.request

    import casa_compute

    gw = casa_data.get_config().compute["gateway"]
    assert gw["address"].startswith("https://127.0.0.1:") and gw["proxy_address"].startswith("gateway://")
    tok = os.path.join(running["state_dir"], "secrets", "token")
    with casa_compute.cluster("facility", token=tok, adapt=(1, 1)) as c, c.get_client() as client:
        assert client.submit(lambda x: x + 1, 41).result(timeout=60) == 42
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(gw["address"] + "/api/health", timeout=5)


def _under(state_dir: str) -> list[tuple[str, str]]:
    """Processes whose command line or working directory is in ``state_dir`` (SLURM job steps are
    re-parented to init, so they are no descendants of the supervisor)."""
    left = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                cmd = open(f"/proc/{d}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
                cwd = os.readlink(f"/proc/{d}/cwd")
            except OSError:
                continue
            if state_dir in cmd or cwd.startswith(state_dir):
                left.append((d, cmd[:120]))
    return left


def test_workers_option_is_the_clusters_default(running):
    """`casa facility up --workers N` (default 2): a user's cluster has N workers at most unless
    it asks for more; the limit stays at least the facility's default limit."""
    from casa_compute.clusters.gateway import CasaGateway

    tok = os.path.join(running["state_dir"], "secrets", "token")
    gw = CasaGateway(token=tok)
    try:
        opts = gw.cluster_options()
        assert opts.max_workers == 2
        opts.max_workers = 8  # within the limit: accepted by the form
        assert opts.max_workers == 8
    finally:
        gw.close()


def test_down_leaves_nothing_behind(running):
    import casa_compute

    # A user's gateway cluster with a worker job is still running when the facility goes down.
    tok = os.path.join(running["state_dir"], "secrets", "token")
    c = casa_compute.cluster("facility", token=tok, adapt=(1, 1))
    client = c.get_client(set_as_default=False)
    client.wait_for_workers(1, timeout=60)
    pids = descendants(running["pid"])
    ports = [p for svc in running["services"].values() for p in svc["ports"]]
    # The user's client goes first: a client left open while its scheduler goes away races dask's
    # reconnect in close() ("IOStream is not idle"), which is distributed's, not the facility's.
    # The cluster itself (scheduler and worker job) keeps running until `down`.
    client.close()
    assert facility.down()
    c.close(shutdown=False)
    assert not [p for p in pids if facility._alive(p)]
    assert not _under(running["state_dir"]), "processes (gateway, scheduler, worker jobs) left"
    from casa_facility.services.base import port_open

    assert not [p for p in ports if port_open(p)]
    assert not os.path.exists(running["config_file"])
    assert facility.status()["up"] is False
    assert facility.down() is False  # a second down is harmless


def test_status_warns_before_tokens_expire(tmp_path):
    """`status` reads the expiry times `up` records: an expired XCache service token marks the
    XCache down, a user token about to expire is reported, both saying what to do."""
    import json
    import time

    (tmp_path / "state.json").write_text(json.dumps({
        "pid": os.getpid(), "status": "up", "token_file": "/tmp/bt_u0", "token_expires": time.time() + 3600,
        "services": {"xcache": {"url": "root://127.0.0.1:1", "ports": [], "pids": [],
                                "token_expires": time.time() - 5},
                     "s3": {"url": "http://127.0.0.1:2", "ports": [], "pids": []}}}))
    st = facility.status(tmp_path)
    assert not st["up"] and st["services"]["s3"]["ok"]
    assert not st["services"]["xcache"]["ok"]
    assert "service token for the origin has expired" in st["services"]["xcache"]["detail"]
    assert st["token"]["ok"] and "expires in 1 h" in st["token"]["detail"]
    assert "casa facility up" in st["token"]["detail"]
