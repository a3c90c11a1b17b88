"""Cluster factory, CoffeaCasaCluster submit descriptions (parsed by htcondor2), lifecycle
without a pool, loopback binds and TLS refusal."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import dask
import pytest

import casa_compute
from casa_compute.clusters import detect_kind
from casa_compute.clusters.base import ClusterError
from casa_compute.clusters.coffea_casa import CoffeaCasaCluster

try:  # never skip: the [test] extra pins htcondor
    import classad2
    import htcondor2
except ImportError as e:  # pragma: no cover
    raise ImportError(f"{e}: install the test extra (pip install -e '.[test]', it pins htcondor)") from e


def _header(script: str) -> dict[str, str]:
    out = {}
    for line in script.splitlines():
        if " = " in line:
            k, v = line.split(" = ", 1)
            out[k.strip()] = v.strip()
    return out


@pytest.fixture
def token(tmp_path):
    p = tmp_path / "bt_u0"
    p.write_text("SECRET-TOKEN-VALUE-123")
    p.chmod(0o600)
    return p


@pytest.fixture
def condor(token):
    c = CoffeaCasaCluster(scheduler_port=0, dashboard_port=0, token=str(token))
    yield c
    c.close()


def test_submit_description_parses_and_ships_secrets_encrypted(condor, token):
    script = condor.job_script()
    sub = htcondor2.Submit(script.split("\n", 1)[1])  # drop the shebang
    h = _header(script)
    shipped = [s.strip() for s in h["transfer_input_files"].split(",")]
    assert [Path(s).name for s in shipped] == ["ca.pem", "worker.pem", "worker-key.pem", "access_token"]
    assert h["encrypt_input_files"] == h["transfer_input_files"]
    assert sub["encrypt_input_files"] == h["transfer_input_files"]
    assert sub["should_transfer_files"] == "YES"
    for p in shipped:
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert "SECRET-TOKEN-VALUE" not in script and "SECRET-TOKEN-VALUE" not in repr(condor)
    assert h["MY.CasaClusterId"] == f'"{condor.cluster_id}"'
    assert h["batch_name"] == f"casa-{condor.cluster_id[:12]}"
    args = sub["Arguments"]
    for piece in ("--protocol tls://", "--tls-ca-file ca.pem", "--tls-cert worker.pem",
                  "--tls-key worker-key.pem", "--lifetime 2h", "--dashboard-address 127.0.0.1:0",
                  "BEARER_TOKEN_FILE=$_CONDOR_SCRATCH_DIR/access_token"):
        assert piece in args, piece
    assert condor.scheduler_address.startswith("tls://127.0.0.1:")
    assert "127.0.0.1" in condor.dashboard_link


def test_classad_expressions_evaluate(condor):
    h = _header(condor.job_script())
    ad = classad2.ClassAd()
    for k in ("DaskWorkerCores", "DaskWorkerMemory", "DaskWorkerDisk"):
        ad[k] = classad2.ExprTree(h[f"MY.{k}"])
    for k, want in (("RequestCpus", 1), ("RequestMemory", 4096), ("RequestDisk", 2 * 1024 * 1024)):
        ad[k] = classad2.ExprTree(h[k])
        assert ad.eval(k) == want, k
    assert classad2.ExprTree(h["MY.DaskWorkerName"]).eval() == "htcondor--$F(MY.JobId)--"


def test_container_mode_forwards_fixed_ports(token):
    c = CoffeaCasaCluster(scheduler_port=0, dashboard_port=0, token=str(token),
                          worker_image="example.org/casa/worker:1", nanny_port=8001, worker_port=8788)
    try:
        sub = htcondor2.Submit(c.job_script().split("\n", 1)[1])
        assert sub["universe"] == "docker" and sub["docker_image"] == "example.org/casa/worker:1"
        # no nanny in a container: it could only advertise an address the scheduler cannot reach
        assert sub["container_service_names"] == "dask" and "nanny_container_port" not in sub
        assert sub["dask_container_port"] == "8788"
        assert "--worker-port 8788 --contact-address" in sub["Arguments"].replace("${CASA_PORT:+", "")
        assert "--no-nanny" in sub["Arguments"] and "--nanny-port" not in sub["Arguments"]
        assert "; python3 -m distributed.cli.dask_worker" in sub["Arguments"]
    finally:
        c.close()
    c = CoffeaCasaCluster(scheduler_port=0, dashboard_port=0, token=str(token), nanny=True,
                          worker_image="example.org/casa/worker:1", nanny_port=8001, worker_port=8788)
    try:  # asked for explicitly (a container on the host network): both ports forwarded
        sub = htcondor2.Submit(c.job_script().split("\n", 1)[1])
        assert sub["container_service_names"] == "dask,nanny"
        assert (sub["dask_container_port"], sub["nanny_container_port"]) == ("8788", "8001")
        assert "--worker-port 8788 --nanny-port 8001" in sub["Arguments"]
        assert "--nanny " in sub["Arguments"] + " "
    finally:
        c.close()


def test_directives_cannot_drop_encryption(token):
    with pytest.raises(ValueError, match="encrypt_input_files would ship the ca file ca.pem unencrypted"):
        CoffeaCasaCluster(scheduler_port=0, dashboard_port=0, token=str(token),
                          job_extra_directives={"encrypt_input_files": ""})
    # The upstream defect: YAML defaults emptying encrypt_input_files must not win silently.
    with dask.config.set({"jobqueue.coffea-casa.job-extra-directives": {"encrypt_input_files": ""}}):
        with pytest.raises(ValueError, match="unencrypted"):
            CoffeaCasaCluster(scheduler_port=0, dashboard_port=0, token=str(token))
    # Other YAML directives merge over the code's, explicit ones over both.
    with dask.config.set({"jobqueue.coffea-casa.job-extra-directives": {"+AccountingGroup": '"a"', "priority": 5}}):
        c = CoffeaCasaCluster(scheduler_port=0, dashboard_port=0, token=None,
                              job_extra_directives={"priority": 7})
        try:
            h = _header(c.job_script())
            assert h["+AccountingGroup"] == '"a"' and h["priority"] == "7"
            assert h["encrypt_input_files"] == h["transfer_input_files"]
        finally:
            c.close()


def test_no_condor_submit_clear_error_clean_close(monkeypatch, token):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    before = {k: dask.config.get(k, None) for k in (
        "distributed.dashboard.link", "distributed.comm.require-encryption",
        "distributed.comm.tls.worker.cert", "distributed.deploy.lost-worker-timeout")}
    c = CoffeaCasaCluster(scheduler_port=0, dashboard_port=0, token=str(token))
    tmp = c._casa_tmp
    assert tmp.is_dir() and c.tls_files["ca"].is_file()
    with pytest.raises(ClusterError, match="'condor_submit' is not on PATH"):
        c.scale(2)
    with pytest.raises(ClusterError, match="condor_submit"):
        c.adapt(minimum=0, maximum=2)
    c.close()  # no AssertionError: Status.created
    assert not tmp.exists(), "per-cluster CA and token copy must be removed at close"
    after = {k: dask.config.get(k, None) for k in before}
    assert before == after, "global dask config must not change"


def test_failing_condor_submit_is_logged_and_close_is_clean(tmp_path, monkeypatch, token, caplog):
    shim = tmp_path / "bin" / "condor_submit"
    shim.parent.mkdir()
    shim.write_text("#!/bin/sh\necho 'ERROR: Can not find address of local schedd' >&2\nexit 1\n")
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim.parent}:/usr/bin:/bin")
    c = CoffeaCasaCluster(scheduler_port=0, dashboard_port=0, token=str(token), asynchronous=False)
    c.scale(1)
    c.sync(asyncio.sleep, 1.0)
    assert all(w.status.name == "failed" for w in c.workers.values()), c.workers
    c.close()


def test_factory_kinds_and_config(monkeypatch):
    monkeypatch.delenv("SLURM_CONF", raising=False)
    assert detect_kind() in ("local", "slurm")
    if not Path("/etc/slurm/slurm.conf").exists():
        assert detect_kind() == "local"  # a laptop
    with pytest.raises(ClusterError, match="unknown cluster kind 'pbs'"):
        casa_compute.cluster("pbs")
    with dask.config.set({"casa-compute.kind": "htcondor"}):
        c = casa_compute.cluster(scheduler_port=0, dashboard_port=0, token=None)
        try:
            assert isinstance(c, CoffeaCasaCluster)
        finally:
            c.close()


def test_local_cluster_loopback_and_tls_refusals(tmp_path):
    from distributed import Client
    from distributed.comm.core import CommClosedError
    from distributed.security import Security

    from casa_compute.clusters.tls import ClusterTLS

    c = casa_compute.cluster("local", n_workers=1)
    other = ClusterTLS.create(None)
    try:
        addr = c.scheduler_address
        assert addr.startswith("tls://127.0.0.1:")
        with Client(c, security=c.security) as client:
            assert client.submit(sum, [1, 2]).result() == 3
            info = client.scheduler_info()["workers"]
            assert all(a.startswith("tls://127.0.0.1:") for a in info)
        plain = addr.replace("tls://", "tcp://")
        with pytest.raises((OSError, CommClosedError, TimeoutError)):
            Client(plain, timeout="3s")
        foreign = Security(tls_ca_file=str(other.files["ca"]), tls_client_cert=str(other.files["client"]),
                           tls_client_key=str(other.files["client-key"]), require_encryption=True)
        with pytest.raises((OSError, CommClosedError, TimeoutError)):
            Client(addr, security=foreign, timeout="3s")
    finally:
        other.cleanup()
        c.close()


def test_listening_sockets_are_loopback():
    """Every TCP listener of the cluster's processes (scheduler, nannies, workers) is 127.0.0.1."""
    import psutil

    def listeners() -> set:
        me = psutil.Process()
        pids = {me.pid, *(p.pid for p in me.children(recursive=True))}
        return {s for s in psutil.net_connections("tcp") if s.status == "LISTEN" and s.pid in pids}

    before = listeners()  # servers earlier tests started for the session are not the cluster's
    c = casa_compute.cluster("local", n_workers=1, tls=False)
    try:
        listen = listeners() - before
        assert listen
        assert all(s.laddr.ip == "127.0.0.1" for s in listen), listen
    finally:
        c.close()


def _condor_args(raw: str) -> list[str]:
    """HTCondor's "new" Arguments syntax -> argv ("" is ", '' inside '...' is ')."""
    assert raw[0] == raw[-1] == '"', raw
    s, args, cur, quoted, have, i = raw[1:-1].replace('""', '"'), [], "", False, False, 0
    while i < len(s):
        ch = s[i]
        if quoted and ch == "'" and s[i + 1:i + 2] == "'":
            cur, i = cur + "'", i + 2
            continue
        if ch == "'":
            quoted, have = not quoted, True
        elif ch.isspace() and not quoted:
            if cur or have:
                args.append(cur)
            cur, have = "", False
        else:
            cur += ch
        i += 1
    if cur or have:
        args.append(cur)
    return args


def test_container_worker_advertises_forwarded_host_port(tmp_path):
    """The generated command, run by sh as HTCondor would, reads the forwarded port from the job
    ad and the host IP from the machine ad, and passes them as --contact-address."""
    import subprocess

    c = CoffeaCasaCluster(scheduler_port=0, dashboard_port=0, token=None,
                          worker_image="example.org/casa/worker:1", python="echo")
    try:
        argv = _condor_args(htcondor2.Submit(c.job_script().split("\n", 1)[1])["Arguments"])
    finally:
        c.close()
    assert argv[0] == "-c"
    (tmp_path / "job.ad").write_text('JobStatus = 2\ndask_HostPort = 31234\nnanny_HostPort = 31235\n')
    (tmp_path / "machine.ad").write_text('StartdIpAddr = "<10.1.2.3:9618?addrs=10.1.2.3-9618>"\n')
    env = {"PATH": "/usr/bin:/bin", "_CONDOR_JOB_AD": str(tmp_path / "job.ad"),
           "_CONDOR_MACHINE_AD": str(tmp_path / "machine.ad"), "_CONDOR_SCRATCH_DIR": str(tmp_path)}
    out = subprocess.run(["/bin/sh", *argv], capture_output=True, text=True, env=env, timeout=20)
    assert out.returncode == 0, out.stderr
    assert "--worker-port 8788 --contact-address tls://10.1.2.3:31234" in out.stdout
    assert "--no-nanny" in out.stdout
    assert out.stdout.startswith("-m distributed.cli.dask_worker tls://127.0.0.1:")
