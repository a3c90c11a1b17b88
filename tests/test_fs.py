"""The casa:// fsspec filesystem: catalog names to bytes, with replica failover."""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import Any

import fsspec
import pyarrow.parquet as pq
import pytest
import uproot

from casa_data.errors import DatasetNotFoundError, ReplicaError
from casa_data.fs import CasaFileSystem

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
    name = fs.find("r/dy-parquet")[0]
    assert pq.read_table(name, filesystem=fs).num_rows == 40


def test_listing(replica_catalog):
    cat, _ = replica_catalog
    fs = fsspec.filesystem("casa", catalog=str(cat), skip_instance_cache=True)
    assert fs.ls("r/dy", detail=False) == ["r/dy//store"]  # a dataset is a directory of its LFN tree
    assert fs.find("r/dy") == [f"r/dy/{LFN}"]
    assert fs.info(f"r/dy/{LFN}")["size"] > 0
    assert "r" in fs.ls("", detail=False)  # the dataset namespace is a tree too
    assert fs.ls("r", detail=False) == ["r/dy", "r/dy-parquet"]


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


# -- the LFN tree answers as LocalFileSystem does over the same layout --------------------------------
DS = "cms/dimuon-2012"
TREE = [  # LFNs; each is also a real file under <tmp>/tree with a distinct size
    "/top.root",
    "/store/readme.txt",
    "/store/data/Run2012B/DoubleMu/a.root",
    "/store/data/Run2012B/DoubleMu/b.root",
    "/store/data/Run2012C/DoubleMu/c.root",
    "/store/data/Run2012C/x1.parquet",
    "/store/data2/Run2012B/DoubleMu/d.root",
    "/store/mc/dy/nano_dy.root",  # a real ROOT file
    "/store/mc/ttbar/f1.root",
    "/store/mc/ttbar/f2.root",
    "/store/mc/ttbar/f10.root",
]
PATHS = ["", "/", "/store", "/store/", "/store/data", "/store/data/Run2012B", "/store/data/Run2012B/DoubleMu",
         "/store/data/Run2012B/DoubleMu/a.root", "/top.root", "/store/mc/dy/nano_dy.root", "/store/dat",
         "/store/nope", "/nope.root", "/store/data/Run2012B/DoubleMu/a.root/x", "/store/mc/ttbar/f1.roo"]
GLOBS = ["/*", "/*/*", "/*/", "/*.root", "/store/*", "/store/*/", "/store/*/*/*.root", "/store/data/*/*/*.root",
         "/store/*/*/*/*.root", "/store/data/Run2012?/*", "/store/data/Run2012[BC]/**/*.root",
         "/store/data/Run2012[!B]/*", "/store/data?/*/*/*", "/store/mc/*/f?.root", "/store/mc/*/f[0-9]*.root",
         "/**", "/**/", "/**/*.root", "/**/DoubleMu", "/**/DoubleMu/*", "/store/**", "/store/**/",
         "/store/**/*.parquet", "/store/data/**/b.root", "/store/nope/*", "/store/nope/**",
         "/store/data/Run2012B/DoubleMu/a.root", "/store/data/Run2012B/DoubleMu/zz.root", "/store/data/",
         "/*/data/Run2012B", "/store/data/*/DoubleMu/"]


@pytest.fixture
def tree_catalog(casa_env, shared_data, tmp_path) -> tuple[Path, Path]:
    """A catalog whose dataset mirrors a real directory tree; odd files have a dead first replica."""
    root = tmp_path / "tree"
    lines = ["datasets:", f"  - name: {DS}", "    files:"]
    for i, lfn in enumerate(TREE):
        f = root / lfn.lstrip("/")
        f.parent.mkdir(parents=True, exist_ok=True)
        if lfn.endswith("nano_dy.root"):
            shutil.copy(shared_data / "coffea/nano_dy.root", f)
        else:
            f.write_bytes(bytes([i]) * (100 + 7 * i))
        replicas = ([str(tmp_path / "dead" / f.name)] if i % 2 else []) + [str(f)]
        lines += [f"      - lfn: {lfn}", f"        replicas: [{', '.join(replicas)}]"]
    lines += ["  - name: cms/other", "    files:", "      - lfn: /o/one.root",
              f"        replicas: [{root / 'top.root'}]"]
    cat = tmp_path / "tree.yaml"
    cat.write_text("\n".join(lines) + "\n")
    return cat, root


def _norm(x: Any, root: str | None = None) -> Any:
    """Comparable form of an fsspec answer; with ``root``, local paths are mapped onto casa ones."""
    if isinstance(x, str):
        if root is not None and (x == root or x.startswith(root + "/")):
            return DS + ("/" + x[len(root):] if x != root else "")
        return x
    if isinstance(x, dict) and "type" in x and "name" in x:
        return (_norm(x["name"], root), x["type"], x["size"] if x["type"] == "file" else None)
    if isinstance(x, dict):
        return {_norm(k, root): _norm(v, root) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(_norm(v, root) for v in x)
    return sorted((_norm(v, root) for v in x), key=repr)  # lists and generators: order-free


def _ask(fs: Any, method: str, path: str, root: str | None, **kw: Any) -> Any:
    try:
        out = getattr(fs, method)(path, **kw)
        return out if isinstance(out, (bool, int)) else _norm(out, root)
    except OSError:
        return "OSError"


CALLS: list[tuple[str, dict[str, Any]]] = [
    ("ls", {"detail": False}), ("ls", {"detail": True}), ("info", {}), ("isdir", {}), ("isfile", {}),
    ("exists", {}), ("find", {}), ("find", {"withdirs": True}), ("find", {"maxdepth": 1, "detail": True}),
    ("walk", {}), ("walk", {"maxdepth": 2, "detail": True}), ("walk", {"topdown": False}), ("du", {}),
]


def test_tree_answers_like_local_filesystem(tree_catalog):
    cat, root = tree_catalog
    casa = fsspec.filesystem("casa", catalog=str(cat), skip_instance_cache=True)
    local = fsspec.filesystem("file")
    checked = 0
    for rel in PATHS:
        for method, kw in CALLS:
            want = _ask(local, method, f"{root}{rel}", str(root), **kw)
            got = _ask(casa, method, f"casa://{DS}/{rel}" if rel else f"casa://{DS}", None, **kw)
            assert got == want, f"{method}({rel!r}, {kw})"
            checked += want != "OSError"
    for pattern in GLOBS:
        for kw in ({}, {"detail": True}, {"maxdepth": 2} if "**" in pattern else {"withdirs": False}):
            want = _ask(local, "glob", f"{root}{pattern}", str(root), **kw)
            got = _ask(casa, "glob", f"casa://{DS}/{pattern}", None, **kw)
            assert got == want, f"glob({pattern!r}, {kw})"
            checked += bool(want)
    assert checked > 200  # answers that are not an error


def test_listing_errors_and_namespace(tree_catalog):
    cat, root = tree_catalog
    fs = fsspec.filesystem("casa", catalog=str(cat), skip_instance_cache=True)
    assert fs.isdir(f"casa://{DS}") and fs.isdir(f"casa://{DS}/") and fs.isdir("casa://cms")
    assert fs.info(f"casa://{DS}") == {"name": DS, "size": 0, "type": "directory"}
    for missing in ("casa://cms/dimuon-2013", "casa://nope", "casa://cms/dimuon", f"casa://{DS}//nope"):
        assert not fs.isdir(missing) and not fs.exists(missing) and not fs.isfile(missing)
        with pytest.raises(FileNotFoundError):
            fs.ls(missing)
        with pytest.raises(FileNotFoundError):
            fs.info(missing)
    assert "cms" in fs.ls("casa://", detail=False) and "demo" in fs.ls("", detail=False)
    assert fs.ls("casa://cms", detail=False) == [DS, "cms/other"]
    everything = fs.find("casa://cms")
    assert everything == sorted([f"{DS}/{lfn}" for lfn in TREE] + ["cms/other//o/one.root"])
    assert fs.info(f"{DS}//store/mc/ttbar/f1.root")["size"] == (root / "store/mc/ttbar/f1.root").stat().st_size
    assert fs.cat(f"{DS}//store/readme.txt") == (root / "store/readme.txt").read_bytes()
    with pytest.raises(IsADirectoryError):
        fs.open(f"{DS}//store")


def test_open_files_with_wildcards(tree_catalog):
    cat, root = tree_catalog
    files = fsspec.open_files(f"casa://{DS}//store/*/*/*.root", catalog=str(cat))
    assert [f.path for f in files] == [f"{DS}//store/mc/dy/nano_dy.root", f"{DS}//store/mc/ttbar/f1.root",
                                       f"{DS}//store/mc/ttbar/f10.root", f"{DS}//store/mc/ttbar/f2.root"]
    for f in files:
        with f as fh:
            assert fh.read() == (root / f.path.split("//", 1)[1]).read_bytes()
    assert uproot.open(f"casa://{files[0].path}", catalog=str(cat))["Events"].num_entries == 40
    assert len(fsspec.open_files(f"casa://{DS}//**/DoubleMu/*.root", catalog=str(cat))) == 4
    assert isinstance(fsspec.filesystem("casa", catalog=str(cat)), CasaFileSystem)
