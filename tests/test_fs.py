"""The casa:// fsspec filesystem: catalog names to bytes, with replica failover."""

from __future__ import annotations

import hashlib
import logging
import shutil

import fsspec
import pyarrow.parquet as pq
import pytest
import uproot

from casa_data.errors import DatasetNotFoundError, ReplicaError

LFN = "/store/mc/dy/nano_dy.root"


@pytest.fixture
def replica_catalog(shared_data, tmp_path):
    """dataset r/dy: a first replica (a copy we can break) and a second (the shared file)."""
    first = tmp_path / "site-a" / "nano_dy.root"
    first.parent.mkdir()
    shutil.copy(shared_data / "coffea/nano_dy.root", first)
    cat = tmp_path / "cat.yaml"
    cat.write_text(
        "datasets:\n"
        "  - name: r/dy\n"
        "    files:\n"
        f"      - lfn: {LFN}\n"
        f"        replicas: [{first}, {shared_data / 'coffea/nano_dy.root'}]\n"
        "  - name: r/dy-parquet\n"
        "    format: parquet\n"
        f"    files: [{shared_data / 'coffea/nano_dy.parquet'}]\n"
    )
    return cat, first


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_registered_through_entry_points():
    from casa_data.fs import CasaFileSystem

    assert fsspec.get_filesystem_class("casa") is CasaFileSystem


def test_fsspec_open_reads_the_file(shared_data, replica_catalog):
    cat, _ = replica_catalog
    with fsspec.open(f"casa://r/dy/{LFN}", catalog=str(cat)) as f:
        data = f.read()
    assert sha(data) == sha((shared_data / "coffea/nano_dy.root").read_bytes())


def test_uproot_and_pyarrow_read_casa_urls(shared_data, replica_catalog):
    cat, _ = replica_catalog
    t = uproot.open(f"casa://r/dy/{LFN}", catalog=str(cat))["Events"]
    assert t.num_entries == 40
    ref = uproot.open(shared_data / "coffea/nano_dy.root")["Events"]["Muon_pt"].array()
    assert t["Muon_pt"].array().tolist() == ref.tolist()
    fs = fsspec.filesystem("casa", catalog=str(cat))
    name = fs.ls("r/dy-parquet", detail=False)[0]
    assert pq.read_table(name, filesystem=fs).num_rows == 40


def test_listing(replica_catalog):
    cat, _ = replica_catalog
    fs = fsspec.filesystem("casa", catalog=str(cat), skip_instance_cache=True)
    assert f"r/dy/{LFN}" in fs.ls("r/dy", detail=False)
    assert fs.info(f"r/dy/{LFN}")["size"] > 0
    assert "r/dy" in fs.ls("", detail=False)


def test_dead_first_replica_on_open(shared_data, replica_catalog, caplog):
    cat, first = replica_catalog
    first.unlink()
    with caplog.at_level(logging.WARNING, logger="casa_data"):
        with fsspec.open(f"casa://r/dy/{LFN}", catalog=str(cat)) as f:
            data = f.read()
    assert sha(data) == sha((shared_data / "coffea/nano_dy.root").read_bytes())
    assert str(first) in caplog.text


def test_replica_failing_mid_read_moves_to_the_next(shared_data, replica_catalog):
    cat, first = replica_catalog
    fs = fsspec.filesystem("casa", catalog=str(cat), skip_instance_cache=True)
    with fs.open(f"r/dy/{LFN}", block_size=2**16) as f:
        head = f.read(2**16)
        first.write_bytes(b"")  # the first replica breaks after we started reading from it
        rest = f.read()
    assert sha(head + rest) == sha((shared_data / "coffea/nano_dy.root").read_bytes())


def test_every_replica_dead_lists_each(replica_catalog, shared_data, tmp_path):
    cat = tmp_path / "dead.yaml"
    cat.write_text(
        "datasets:\n  - name: r/dead\n    files:\n"
        f"      - lfn: {LFN}\n        replicas: [{tmp_path}/x.root, {tmp_path}/y.root]\n"
    )
    with pytest.raises(ReplicaError) as err:
        fsspec.open(f"casa://r/dead/{LFN}", catalog=str(cat)).open()
    assert f"{tmp_path}/x.root" in str(err.value) and f"{tmp_path}/y.root" in str(err.value)


def test_unknown_dataset_and_file(replica_catalog):
    cat, _ = replica_catalog
    fs = fsspec.filesystem("casa", catalog=str(cat), skip_instance_cache=True)
    with pytest.raises(DatasetNotFoundError):
        fs.open("r/nope//store/x.root")
    with pytest.raises(FileNotFoundError, match="has no file"):
        fs.open("r/dy//store/other.root")
