"""Test-wide setup: an isolated casa configuration and the shared real-data folder.

Every test run gets its own data directory and user config directory, so nothing on the machine
(a user's ~/.config/casa, a previous run's demo data) changes the results. ``../shared/data`` is
required: tests that need it fail, never skip, when it is missing.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
SHARED_DATA = Path(os.environ.get("CASA_SHARED_DATA", ROOT.parent / "shared" / "data"))

_session_home = Path(tempfile.mkdtemp(prefix="casa-tests-"))
os.environ["CASA_DATA_DIR"] = str(_session_home / "data")
os.environ["XDG_CONFIG_HOME"] = str(_session_home / "config")
for _var in ("CASA_CATALOG", "CASA_CONFIG", "CASA_SITE"):
    os.environ.pop(_var, None)
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real NanoAOD/ROOT/Parquet files); fails the test when missing."""
    if not (SHARED_DATA / "MANIFEST.json").is_file():
        pytest.fail(
            f"the shared real-data folder is missing: expected {SHARED_DATA}/MANIFEST.json "
            "(a clone of this repository needs ../shared/data beside it, or set CASA_SHARED_DATA)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def manifest(shared_data: Path) -> dict[str, dict]:
    """MANIFEST.json of the shared data, by path."""
    return {e["path"]: e for e in json.loads((shared_data / "MANIFEST.json").read_text())}


@pytest.fixture(scope="session")
def shared_catalog(shared_data: Path) -> Path:
    """A catalog of the shared real data (cms/dimuon-2012 and friends); fails if it is missing."""
    return ROOT / "tests" / "catalogs" / "shared.yaml"


@pytest.fixture
def casa_env(monkeypatch, tmp_path):
    """A fresh configuration for one test: its own data and config dirs; resets caches."""
    from casa_data.config import reset_config

    monkeypatch.setenv("CASA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for var in ("CASA_CATALOG", "CASA_CONFIG", "CASA_SITE"):
        monkeypatch.delenv(var, raising=False)
    reset_config()
    yield tmp_path
    reset_config()


@pytest.fixture(scope="session")
def demo_data() -> Path:
    """The generated demo dataset (in this session's data dir)."""
    from casa_data.demo import generate

    paths = generate()
    return paths[0].parent.parent


# -- real services, one per session (shared by test_conformance and any test that asks) -----------
@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """A SeaweedFS S3 server with the bucket ``casa-conformance``."""
    from casa_facility.services.s3 import SeaweedFS

    with SeaweedFS(tmp_path_factory.mktemp("seaweedfs-session")) as server:
        server.create_bucket("casa-conformance")
        yield server


@pytest.fixture(scope="session")
def xrootd_stack(shared_data):
    """Origin + token-protected XCache serving ``/store/conf/nano_dy.root``; ``.token_file`` holds a
    token both accept (``storage.read:/``)."""
    import shutil

    from casa_facility.services.pki import write_token_file
    from casa_facility.services.xrootd import XRootDStack

    base = Path(tempfile.mkdtemp(prefix="casa-xrootd-session-", dir="/tmp"))
    data = base / "data"
    (data / "conf").mkdir(parents=True)
    shutil.copy(shared_data / "coffea/nano_dy.root", data / "conf" / "nano_dy.root")
    for p in [base, *data.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    st = XRootDStack(data, workdir=base / "servers")
    st.start()
    try:
        st.token_file = write_token_file(base / "token", st.issuer.mint("storage.read:/"))
        yield st
    finally:
        st.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def skyhook_server(shared_data, tmp_path_factory):
    """A token-protected Skyhook service over ``../shared/data``."""
    from casa_facility.services.skyhook import SkyhookService

    with SkyhookService(shared_data, tmp_path_factory.mktemp("skyhook-session")) as s:
        yield s


@pytest.fixture(scope="session")
def servicex_server(shared_data, tmp_path_factory):
    """casa's ServiceX endpoint with auth (refresh token ``.refresh_token``), outputs on local disk."""
    import inspect

    from casa_facility.services.servicex import ServiceXEndpoint

    kw = {}
    if "data_roots" in inspect.signature(ServiceXEndpoint).parameters:  # file lists confined to these
        kw["data_roots"] = [shared_data, tmp_path_factory.getbasetemp()]
    with ServiceXEndpoint(tmp_path_factory.mktemp("servicex-session"), workers=1, auth=True, **kw) as ep:
        yield ep
