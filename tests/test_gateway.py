"""Dask Gateway on a real one-node SLURM, authenticated by the facility's WLCG tokens: two users'
isolation, TLS, option limits, the user's code on workers, a cancelled worker job, idle release.
No mocks. (`casa facility down` with a gateway cluster running: tests/test_facility.py.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest
from compute_support import AGC, need, same_output

import casa_compute
from casa_compute.clusters.gateway import CasaGateway, CasaGatewayCluster, GatewayRefused
from casa_compute.processors import DimuonProcessor
from casa_compute.testing import SlowDimuon
from casa_facility.gateway import GatewayService
from casa_facility.services.pki import TestIssuer, write_token_file
from casa_facility.services.slurm import SlurmService

pytestmark = [pytest.mark.shared_data, pytest.mark.filterwarnings("ignore::RuntimeWarning"),
              pytest.mark.timeout(240)]

COMPUTE = "storage.read:/ compute.create compute.read compute.modify compute.cancel"
LIMITS = {"worker_cores": 2, "worker_memory": 4.0, "max_workers": 3, "idle_timeout": 3600.0}


@pytest.fixture(scope="module")
def base():
    d = Path(tempfile.mkdtemp(prefix="casa-gateway-test-", dir="/tmp"))  # munged: world-x parents
    os.chmod(d, 0o755)
    yield d
    import shutil

    if not os.environ.get("CASA_KEEP_TEST_DIRS"):
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def issuer():
    return TestIssuer()


@pytest.fixture(scope="module")
def gateway(base, issuer):
    with SlurmService(base / "slurm") as slurm:
        gw = GatewayService(base / "gateway-run", issuer=issuer, backend="slurm", limits=LIMITS)
        gw.slurm = slurm
        with gw:
            yield gw
    # Nothing of the gateway's clusters outlives it (a job's process re-parented to init would).
    from casa_facility.gateway import kill_strays

    assert not kill_strays(gw.workdir), "scheduler or worker processes outlived their SLURM jobs"


@pytest.fixture(scope="module")
def tokens(base, issuer):
    other = TestIssuer(issuer="https://127.0.0.1/another-issuer")
    return {
        "alice": write_token_file(base / "alice", issuer.mint(COMPUTE, sub="alice")),
        "bob": write_token_file(base / "bob", issuer.mint(COMPUTE, sub="bob")),
        "data-only": write_token_file(base / "data-only", issuer.mint("storage.read:/", sub="carol")),
        "foreign": write_token_file(base / "foreign", other.mint(COMPUTE, sub="alice")),
        "expired": write_token_file(base / "expired", issuer.mint(COMPUTE, sub="alice", expired=True)),
    }


def _where(gw: GatewayService) -> dict:
    return {"address": gw.address, "proxy_address": gw.proxy_address, "ca": str(gw.ca_file)}


def new_cluster(gw, token, **kw) -> CasaGatewayCluster:
    return CasaGatewayCluster(**_where(gw), token=str(token), **kw)


def gateway_for(gw, token) -> CasaGateway:
    return CasaGateway(**_where(gw), token=str(token))


def _wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def worker_jobs(cluster_name: str | None = None) -> dict[str, str]:
    """{job id: 'scheduler'|'worker'} of gateway jobs (of one cluster), from scontrol."""
    out = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True).stdout
    jobs = {}
    for line in out.splitlines():
        if not line.startswith("JobId="):  # "No jobs in the system"
            continue
        state = re.search(r"JobState=(\S+)", line).group(1)
        stdout = re.search(r"StdOut=(\S+)", line).group(1)
        if state in ("COMPLETED", "CANCELLED", "FAILED") or (cluster_name and cluster_name not in line):
            continue
        jobs[re.search(r"JobId=(\d+)", line).group(1)] = "worker" if "dask-worker-" in stdout else "scheduler"
    return jobs


def test_users_see_scale_connect_and_stop_only_their_own(gateway, tokens, base):
    with new_cluster(gateway, tokens["alice"], adapt=None) as mine:
        with gateway_for(gateway, tokens["bob"]) as bob, gateway_for(gateway, tokens["alice"]) as alice:
            assert mine.name in [c.name for c in alice.list_clusters()]
            assert mine.name not in [c.name for c in bob.list_clusters()]
            for call in (lambda: bob.connect(mine.name), lambda: bob.scale_cluster(mine.name, 1),
                         lambda: bob.stop_cluster(mine.name)):
                with pytest.raises(GatewayRefused, match="403.*bob lacks permissions"):
                    call()
        # The same token is user alice in another process: the CLI lists, connects (running a
        # task on a worker it scales up) and stops her cluster by name.
        cfg = base / "alice-config"
        (cfg / "casa").mkdir(parents=True, exist_ok=True)
        import yaml

        (cfg / "casa" / "facility.yaml").write_text(yaml.safe_dump({"compute": {"gateway": _where(gateway)}}))
        env = {**os.environ, "XDG_CONFIG_HOME": str(cfg), "BEARER_TOKEN_FILE": str(tokens["alice"])}
        casa = [sys.executable, "-m", "casa_cli.main", "compute", "clusters"]
        listed = subprocess.run([*casa, "list"], env=env, capture_output=True, text=True, timeout=60)
        assert mine.name in listed.stdout, listed.stderr
        script = textwrap.dedent(f"""
            from casa_compute.clusters.gateway import CasaGateway
            with CasaGateway() as gw:
                c = gw.connect({mine.name!r})
                c.scale(1)
                with c.get_client() as client:
                    print("answer", client.submit(lambda x: x + 1, 41).result(timeout=60))
                c.close()
        """)
        other = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                               timeout=120)
        assert "answer 42" in other.stdout, other.stderr[-3000:]
        connected = subprocess.run([*casa, "connect", mine.name], env=env, capture_output=True, text=True,
                                   timeout=60)
        assert "1 worker(s)" in connected.stdout and "dashboard https://127.0.0.1:" in connected.stdout, \
            connected.stderr
        bob_env = {**env, "BEARER_TOKEN_FILE": str(tokens["bob"])}
        refused = subprocess.run([*casa, "stop", mine.name], env=bob_env, capture_output=True, text=True,
                                 timeout=60)
        assert refused.returncode == 1 and "lacks permissions" in refused.stderr
        stopped = subprocess.run([*casa, "stop", mine.name], env=env, capture_output=True, text=True, timeout=60)
        assert stopped.returncode == 0, stopped.stderr
        _wait(lambda: not worker_jobs(mine.name), 30, "the stopped cluster's jobs to leave the queue")


@pytest.mark.parametrize("which, why", [
    ("data-only", "403.*no compute scope"), ("foreign", "401.*issuer"), ("expired", "401.*expired")])
def test_tokens_without_compute_rights_are_refused(gateway, tokens, which, why):
    with gateway_for(gateway, tokens[which]) as gw, pytest.raises(GatewayRefused, match=why):
        gw.list_clusters()


def test_tls_everywhere_and_refused_without_the_clusters_credentials(gateway, tokens):
    import ssl
    import urllib.request

    from distributed import Client

    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):  # HTTPS, our own CA
        urllib.request.urlopen(f"{gateway.address}/api/health", timeout=5)
    with pytest.raises(OSError):  # plain HTTP to the HTTPS port: 400
        urllib.request.urlopen(gateway.address.replace("https", "http") + "/api/health", timeout=5)
    with new_cluster(gateway, tokens["alice"], adapt=None) as a, \
            new_cluster(gateway, tokens["bob"], adapt=None) as b:
        with Client(a, security=a.security, set_as_default=False) as ok:
            direct = ok.scheduler_info()["address"]
        assert direct.startswith("tls://127.0.0.1:")
        for addr, sec in [(a.scheduler_address, b.security), (direct, b.security), (direct, None),
                          (direct.replace("tls://", "tcp://"), None)]:
            # TLS handshake refused; plain TCP to a TLS listener; no credentials at all (TypeError)
            with pytest.raises((OSError, TypeError)):
                Client(addr, security=sec, timeout=3, set_as_default=False)
        assert isinstance(a.security.get_connection_args("client")["ssl_context"], ssl.SSLContext)


def test_options_over_the_limits_are_refused(gateway, tokens):
    before = set(worker_jobs())  # clusters of earlier tests may still be leaving the queue
    for opts, why in [({"worker_cores": 8}, r"worker_cores=8 is over this facility's limit of 2"),
                      ({"worker_memory": 64}, r"worker_memory=64 GiB is over this facility's limit of 4 GiB"),
                      ({"max_workers": 100}, r"max_workers=100 is over this facility's limit of 3"),
                      ({"idle_timeout": 1e6}, r"idle_timeout=1e\+06 s is over this facility's limit"),
                      ({"environment": {"PATH": "/x"}}, r"PATH is set by the facility"),
                      ({"image": "nope"}, r"'nope' is not a valid option for image"),
                      ({"no_such_option": 1}, r"Unknown fields \['no_such_option'\]")]:
        with pytest.raises(GatewayRefused, match=why):
            new_cluster(gateway, tokens["alice"], adapt=None, **opts)
    assert set(worker_jobs()) <= before, "a refused request must not submit anything"
    with new_cluster(gateway, tokens["alice"], max_workers=2) as c:  # default adapt(0, 4): the limit, quietly
        with pytest.raises(GatewayRefused, match="exceed resource limit of 2 workers"):
            c.adapt(minimum=0, maximum=5)
        with pytest.raises(GatewayRefused, match="exceed resource limit of 2 workers"):
            c.scale(3)


def test_users_module_pip_package_and_environment_on_gateway_workers(gateway, tokens, tmp_path):
    need(AGC)
    mod = f"casa_user_analysis_{os.getpid()}"
    d = tmp_path / "my-analysis"
    d.mkdir()
    (d / f"{mod}.py").write_text(textwrap.dedent("""
        import os
        from casa_compute.processors import DimuonProcessor

        class UserProcessor(DimuonProcessor):
            def process(self, events):
                import inflection  # from pip=[...]: only on the cluster

                assert os.environ.get("CASA_USER_FLAG") == "on-worker", "the environment option"
                assert inflection.underscore("CasaGateway") == "casa_gateway"
                return super().process(events)
    """))
    sys.path.insert(0, str(d))
    try:
        user = __import__(mod)
        fs = {"agc": [str(AGC)]}
        expected, _ = casa_compute.run(DimuonProcessor(), fs, chunksize=25_000, progress=False)
        import importlib.util

        assert importlib.util.find_spec("inflection") is None, "the test needs a package casa lacks"
        with new_cluster(gateway, tokens["alice"], upload=[d / f"{mod}.py"], pip=["inflection==0.5.1"],
                         environment={"CASA_USER_FLAG": "on-worker"}, adapt=(0, 2)) as c:
            out, report = casa_compute.run(user.UserProcessor(), fs, cluster=c, chunksize=25_000,
                                           progress=False)
            assert {s.host for s in report.stats}, report
            # The dashboard, through the gateway's HTTPS proxy (bokeh runs on the scheduler job).
            import urllib.request

            with urllib.request.urlopen(c.dashboard_link, timeout=30, context=gateway.ssl_context()) as r:
                assert r.status == 200 and b"Dask" in r.read()
        same_output(out, expected)
        assert report.ok and report.events == 100_000
        assert report.dashboard.startswith(f"{gateway.address}/clusters/")
    finally:
        sys.path.remove(str(d))
        sys.modules.pop(mod, None)


def test_scancelled_worker_job_gives_identical_histogram(gateway, tokens):
    need(AGC)
    fs = {"agc": [str(AGC)]}
    expected, _ = casa_compute.run(DimuonProcessor(), fs, chunksize=10_000, progress=False)
    with new_cluster(gateway, tokens["alice"], adapt=(2, 2)) as c, c.get_client() as client:
        client.wait_for_workers(2, timeout=60)
        result = []
        t = threading.Thread(target=lambda: result.append(casa_compute.run(
            SlowDimuon(0.6), fs, cluster=client, chunksize=10_000, progress=False)))
        t.start()
        time.sleep(1.5)  # both workers are mid-chunk
        victim = next(j for j, kind in worker_jobs(c.name).items() if kind == "worker")
        subprocess.run(["scancel", victim], check=True)
        t.join(timeout=120)
        assert result, "the run did not finish after a worker job was cancelled"
        out, report = result[0]
        same_output(out, expected)
        assert report.ok and report.events == 100_000
        assert victim not in worker_jobs()


def test_idle_workers_then_idle_cluster_are_released(gateway, tokens):
    with new_cluster(gateway, tokens["alice"], idle_worker_timeout=3, idle_timeout=8, adapt=(0, 2)) as c, \
            c.get_client(set_as_default=False) as client:
        assert set(worker_jobs(c.name).values()) == {"scheduler"}, "adapt(0, ...) starts no worker"
        assert sum(client.gather(client.map(lambda i: time.sleep(1) or i, range(6)))) == 15
        # The bearer token is forwarded to every worker (0600, $BEARER_TOKEN_FILE), as for run().
        seen = client.run(lambda: (Path(os.environ["BEARER_TOKEN_FILE"]).read_text(),
                                   oct(os.stat(os.environ["BEARER_TOKEN_FILE"]).st_mode & 0o777)))
        assert seen and all(v == (tokens["alice"].read_text(), "0o600") for v in seen.values()), seen
        done = time.monotonic()
        _wait(lambda: set(worker_jobs(c.name).values()) == {"scheduler"}, 20, "idle workers to be released")
        released = time.monotonic() - done
        _wait(lambda: not worker_jobs(c.name), 30, "the idle cluster to stop itself")
        assert released < 15, released


def test_local_process_backend_without_slurm(base, issuer, tokens):
    """Where there is no SLURM, the same gateway runs schedulers and workers as local processes."""
    with GatewayService(base / "gateway-local", issuer=issuer, backend="local") as gw, \
            new_cluster(gw, tokens["alice"], adapt=(1, 1)) as c, c.get_client(set_as_default=False) as client:
        assert client.submit(lambda x: x + 1, 41).result(timeout=60) == 42
        assert all(a.startswith("tls://127.0.0.1:") for a in client.scheduler_info()["workers"])
        with gateway_for(gw, tokens["bob"]) as bob:
            assert c.name not in [r.name for r in bob.list_clusters()]
