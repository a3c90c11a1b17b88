"""S3 through casa_data, against a real SeaweedFS started here (no mocks, no skips)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import casa_data
from casa_data.config import reset_config
from casa_data.errors import AccessDeniedError, BucketNotFoundError, CasaError, ObjectNotFoundError, ServiceError
from casa_data.ingest import ingest
from casa_data.paths import get_path
from casa_facility.services.s3 import SeaweedFS

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
AGC = SHARED / "agc" / "open-data-example.root"
DIMUON = SHARED / "coffea" / "nano_dimuon.root"
BINS = np.linspace(0, 120, 61)


def _need(path: Path) -> Path:
    assert path.exists(), f"{path} is missing: the tests need ../shared/data (see its README)"
    return path


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with SeaweedFS(tmp_path_factory.mktemp("seaweedfs")) as server:
        server.create_bucket("casa-test")
        yield server


@pytest.fixture()
def env(s3, tmp_path, monkeypatch):
    """Credentials from the standard AWS variables, the endpoint from a casa config file."""
    cfg = tmp_path / "casa.yaml"
    cfg.write_text(yaml.safe_dump({"paths": {"s3": {"endpoint_url": s3.endpoint_url}},
                                   "data_dir": str(tmp_path / "data")}))
    monkeypatch.setenv("CASA_CONFIG", str(cfg))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "CASA_CATALOG"):
        monkeypatch.delenv(var, raising=False)
    reset_config()
    yield tmp_path
    reset_config()


def _catalog(tmp_path: Path, name: str, files: list[Path], fmt: str = "root") -> Path:
    cat = tmp_path / "catalog.yaml"
    cat.write_text("# test catalog (this comment must survive ingest)\n" + yaml.safe_dump(
        {"datasets": [{"name": name, "tree": "Events", "format": fmt,
                       "files": [{"lfn": f"/store/test/{p.name}", "replicas": [str(p)]} for p in files]}]},
        sort_keys=False))
    return cat


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hist(ds) -> np.ndarray:
    arr = ds.to_awkward(["Muon_pt", "nMuon"], filter="nMuon >= 2")
    import awkward as ak

    return np.histogram(ak.to_numpy(ak.flatten(arr["Muon_pt"])), BINS)[0]


# -- errors --------------------------------------------------------------------------------------
def test_errors_name_the_url_never_the_secret(s3, env):
    good = get_path("s3")
    s3.client().put_object(Bucket="casa-test", Key="errors/x", Body=b"x")
    good.check("s3://casa-test/errors/x")

    wrong = get_path("s3", key=s3.access_key, secret="not-the-secret-123")
    with pytest.raises(AccessDeniedError) as err:
        wrong.check("s3://casa-test/errors/x")
    assert "s3://casa-test" in str(err.value) and "not-the-secret-123" not in str(err.value)
    assert s3.secret_key not in str(err.value)

    with pytest.raises(BucketNotFoundError, match="no-such-bucket"):
        good.check("s3://no-such-bucket/file.root")
    with pytest.raises(ObjectNotFoundError, match="s3://casa-test/errors/missing.root"):
        good.check("s3://casa-test/errors/missing.root")

    down = get_path("s3", endpoint_url="http://127.0.0.1:9")  # discard port: nothing listens
    t0 = time.monotonic()
    with pytest.raises(ServiceError, match="127.0.0.1:9") as err:
        down.check("s3://casa-test/errors/x", timeout=2)
    assert time.monotonic() - t0 < 5 and not isinstance(err.value, (AccessDeniedError, BucketNotFoundError))
    assert s3.secret_key not in repr(good) and s3.secret_key not in repr(s3)


def test_ingest_into_missing_bucket_fails_before_copying(env):
    cat = _catalog(env, "test/agc", [_need(AGC)])
    with pytest.raises(BucketNotFoundError, match="'nope-bucket'"):
        ingest("test/agc", "s3://nope-bucket/agc", catalog=cat)


def test_reading_with_wrong_credentials_names_the_url(s3, env, monkeypatch):
    s3.client().put_object(Bucket="casa-test", Key="wrong/agc.root", Body=_need(AGC).read_bytes())
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-456")
    with pytest.raises(CasaError) as err:
        casa_data.open(["s3://casa-test/wrong/agc.root"]).to_awkward(["nMuon"])
    text = str(err.value)
    assert "s3://casa-test/wrong/agc.root" in text and "wrong-secret-456" not in text
    assert s3.secret_key not in text


# -- ingest and reading back ----------------------------------------------------------------------
def test_ingest_root_then_same_histograms_via_s3(s3, env):
    files = [_need(AGC), _need(DIMUON)]
    cat = _catalog(env, "test/mixed", files)
    res = ingest("test/mixed", "s3://casa-test/mixed", catalog=cat)
    assert [f.status for f in res.files] == ["uploaded", "uploaded"]
    c = s3.client()
    for src, fr in zip(files, res.files):
        body = c.get_object(Bucket="casa-test", Key=fr.url.split("casa-test/", 1)[1])["Body"].read()
        assert len(body) == src.stat().st_size and _sha(body) == _sha(src.read_bytes()) == fr.sha256
    # the catalog now lists the s3 replicas, and its comment survived
    text = cat.read_text()
    assert "this comment must survive" in text and "s3://casa-test/mixed/open-data-example.root" in text

    agc_only = _catalog(env, "test/agc", [AGC])
    ingest("test/agc", "s3://casa-test/agc", catalog=agc_only)
    local = casa_data.open("test/agc", via="local", catalog=agc_only)
    remote = casa_data.open("test/agc", via="s3", catalog=agc_only)
    assert remote.files == ["s3://casa-test/agc/open-data-example.root"]
    assert remote.nevents == local.nevents == 100_000
    h_local, h_s3 = _hist(local), _hist(remote)
    assert h_local.sum() > 10_000 and np.array_equal(h_local, h_s3)

    again = ingest("test/agc", "s3://casa-test/agc", catalog=agc_only)  # idempotent
    assert [f.status for f in again.files] == ["skipped"]
    assert agc_only.read_text().count("s3://casa-test/agc/open-data-example.root") == 1


def test_ingest_to_parquet_same_histograms_and_checksums(s3, env):
    cat = _catalog(env, "test/agc", [_need(AGC)])
    env_vars = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "casa_cli.main", "data", "ingest", "test/agc",
                           "s3://casa-test/pq", "--to", "parquet", "--catalog", str(cat)],
                          capture_output=True, text=True, env=env_vars, cwd=ROOT, timeout=180)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert s3.secret_key not in proc.stdout + proc.stderr
    url = "s3://casa-test/pq/open-data-example.parquet"
    head = s3.client().head_object(Bucket="casa-test", Key="pq/open-data-example.parquet")
    body = s3.client().get_object(Bucket="casa-test", Key="pq/open-data-example.parquet")["Body"].read()
    assert _sha(body) == head["Metadata"]["casa-sha256"] and len(body) == head["ContentLength"]

    reset_config()
    remote = casa_data.open("test/agc-parquet", via="s3", catalog=cat)
    assert remote.format == "parquet" and remote.files == [url]
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(get_path("s3").native_filesystem(url).open_input_file(url[5:])).metadata
    assert meta.num_rows == 100_000 and meta.num_row_groups >= 1
    local = casa_data.open("test/agc", via="local", catalog=cat)
    assert np.array_equal(_hist(local), _hist(remote))
    again = ingest("test/agc", "s3://casa-test/pq", to="parquet", catalog=cat)  # same source: no work
    assert [(f.status, f.nevents) for f in again.files] == [("skipped", 100_000)]
    assert len(casa_data.get_catalog(cat).get("test/agc-parquet").files) == 1


def _big_root(tmp_path: Path, copies: int = 4) -> Path:
    """The AGC events ``copies`` times over (~14 MB): big enough for a multipart upload."""
    import awkward as ak
    import uproot

    with uproot.open(_need(AGC)) as f:
        arr = f["Events"].arrays(["Muon_pt", "Muon_eta", "Muon_phi", "Muon_mass", "Muon_charge"], library="ak")
    muons = ak.zip({k[5:]: arr[k] for k in arr.fields})
    out = tmp_path / "big.root"
    with uproot.recreate(out, compression=None) as f:
        f.mktree("Events", {"Muon": muons.type.content})
        for _ in range(copies):
            f["Events"].extend({"Muon": muons})
    return out


def test_interrupted_ingest_leaves_nothing_visible_and_resumes(s3, env):
    big = _big_root(env)
    cat = _catalog(env, "test/big", [big])
    part = 5 << 20
    assert big.stat().st_size > 2 * part

    def stop_after_first(key, n, nbytes):
        if n == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest("test/big", "s3://casa-test/big", catalog=cat, part_size=part, on_part=stop_after_first)
    path = get_path("s3")
    with pytest.raises(ObjectNotFoundError):
        path.check("s3://casa-test/big/big.root")
    assert not path.filesystem("s3://casa-test/big").exists("s3://casa-test/big/big.root")
    pending = s3.client().list_multipart_uploads(Bucket="casa-test", Prefix="big/").get("Uploads")
    assert len(pending) == 1
    assert "s3://casa-test/big" not in cat.read_text()

    res = ingest("test/big", "s3://casa-test/big", catalog=cat, part_size=part)
    fr = res.files[0]
    assert fr.status == "resumed" and fr.parts_reused == 1
    assert fr.sha256 == _sha(big.read_bytes())
    assert not s3.client().list_multipart_uploads(Bucket="casa-test", Prefix="big/").get("Uploads")
    remote = casa_data.open("test/big", via="s3", catalog=cat)
    assert remote.nevents == 4 * 100_000


def test_credentials_from_a_profile_and_endpoint_per_site_and_bucket(s3, env, monkeypatch, tmp_path):
    import pickle

    creds = tmp_path / "aws-credentials"
    creds.write_text(f"[facility]\naws_access_key_id = {s3.access_key}\naws_secret_access_key = {s3.secret_key}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    s3.client().put_object(Bucket="casa-test", Key="profile/agc.root", Body=_need(AGC).read_bytes())
    url = "s3://casa-test/profile/agc.root"
    # the base endpoint is wrong; the current site's override (site "local") is right
    path = get_path("s3", endpoint_url="http://127.0.0.1:9", profile="facility",
                    sites={"local": {"endpoint_url": s3.endpoint_url}})
    path.check(url)
    assert path.filesystem(url).cat_file(url, start=0, end=4) == b"root"
    fs, key = path.arrow_filesystem(url)
    assert fs.get_file_info(key).size == AGC.stat().st_size
    # a per-bucket endpoint wins over the site's
    other = get_path("s3", profile="facility", sites={"local": {"endpoint_url": "http://127.0.0.1:9"}},
                     buckets={"casa-test": {"endpoint_url": s3.endpoint_url}})
    other.check(url)
    # paths travel to workers: pickling drops the live filesystems, the copy still reads
    clone = pickle.loads(pickle.dumps(path))
    assert clone.filesystem(url).size(url) == AGC.stat().st_size
    assert s3.secret_key not in repr(path) and s3.secret_key.encode() not in pickle.dumps(path)


def test_ingest_keeps_plain_path_entries_readable_locally(s3, env):
    cat = env / "plain.yaml"
    cat.write_text(yaml.safe_dump({"datasets": [{"name": "test/plain", "files": [str(_need(DIMUON))]}]}))
    res = ingest("test/plain", "s3://casa-test/plain", catalog=cat, verify=False)
    assert res.files[0].url == "s3://casa-test/plain/nano_dimuon.root"
    local = casa_data.open("test/plain", via="local", catalog=cat)
    remote = casa_data.open("test/plain", via="s3", catalog=cat)
    assert local.files == [str(DIMUON)] and remote.files == [res.files[0].url]
    assert local.nevents == remote.nevents == 40


@pytest.mark.ceph
def test_ceph_rgw_ingest_and_same_histograms(env, monkeypatch, tmp_path):
    """The facility-like store: ingest into a single-node Ceph RGW and read back through casa."""
    from casa_facility.services.ceph import CephRGW

    with CephRGW(tmp_path / "ceph") as rgw:
        rgw.create_bucket("facility")
        cfg = tmp_path / "ceph.yaml"
        cfg.write_text(yaml.safe_dump({"paths": {"s3": {"endpoint_url": rgw.endpoint_url}},
                                       "data_dir": str(tmp_path / "data")}))
        monkeypatch.setenv("CASA_CONFIG", str(cfg))
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", rgw.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", rgw.secret_key)
        reset_config()
        cat = _catalog(tmp_path, "test/agc", [_need(AGC)])
        res = ingest("test/agc", "s3://facility/agc", catalog=cat, part_size=5 << 20)
        assert res.files[0].sha256 == _sha(AGC.read_bytes())
        remote = casa_data.open("test/agc", via="s3", catalog=cat)
        local = casa_data.open("test/agc", via="local", catalog=cat)
        assert np.array_equal(_hist(local), _hist(remote))
        with pytest.raises(BucketNotFoundError, match="no-such-bucket"):
            get_path("s3").check("s3://no-such-bucket/x")
        with pytest.raises(AccessDeniedError):
            get_path("s3", key=rgw.access_key, secret="wrong-secret-789").check("s3://facility/agc/open-data-example.root")
