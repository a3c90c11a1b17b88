"""Bad input: each case gives a clear error naming the culprit, and nothing read is lost."""

from __future__ import annotations

import logging
import shutil

import awkward as ak
import pytest

import casa_data
from casa_data.errors import ColumnNotFoundError, FileReadError, PartialResultError, ReplicaError


@pytest.fixture
def dy_copies(shared_data, tmp_path):
    """Three copies of nano_dy.root; the middle one truncated to a third of its size."""
    src = shared_data / "coffea/nano_dy.root"
    files = [tmp_path / f"dy_{i}.root" for i in range(3)]
    for f in files:
        shutil.copy(src, f)
    data = files[1].read_bytes()
    files[1].write_bytes(data[: len(data) // 3])
    return files


def test_missing_file_is_named(shared_data, tmp_path):
    missing = tmp_path / "not-there.root"
    with pytest.raises(PartialResultError) as err:
        casa_data.open([shared_data / "coffea/nano_dy.root", missing]).to_awkward(["nMuon"])
    assert str(missing) in str(err.value)
    assert len(err.value.partial) == 40  # the good file's events are kept
    assert isinstance(err.value.failures[str(missing)], FileReadError)


def test_truncated_file_is_named_and_the_others_stay_readable(dy_copies):
    ds = casa_data.open(dy_copies)
    with pytest.raises(PartialResultError) as err:
        ds.to_awkward(["nMuon", "Muon_pt"])
    assert list(err.value.failures) == [str(dy_copies[1])]
    assert str(dy_copies[1]) in str(err.value)
    assert len(err.value.partial) == 80
    skipped = casa_data.open(dy_copies, errors="skip").to_awkward(["nMuon"])
    assert len(skipped) == 80


def test_skip_records_failures_on_the_dataset(dy_copies, caplog):
    ds = casa_data.open(dy_copies, errors="skip")
    with caplog.at_level(logging.WARNING, logger="casa_data"):
        table = ds.to_arrow(["nMuon"])
    assert table.num_rows == 80
    assert list(ds.failures) == [str(dy_copies[1])]
    assert str(dy_copies[1]) in caplog.text
    assert sum(b.num_rows for b in ds.iter_batches(["nMuon"])) == 80


def test_not_a_root_file(tmp_path):
    bogus = tmp_path / "bogus.root"
    bogus.write_text("this is not ROOT")
    with pytest.raises(PartialResultError) as err:
        casa_data.open(bogus).to_awkward(["nMuon"])
    assert str(bogus) in str(err.value)


def test_unknown_column_lists_close_matches(shared_data):
    ds = casa_data.open(shared_data / "coffea/nano_dy.root")
    with pytest.raises(ColumnNotFoundError) as err:
        ds.to_awkward(["Muon_ptt"])
    assert "Muon_pt" in err.value.suggestions
    assert "nano_dy.root" in str(err.value)
    with pytest.raises(ColumnNotFoundError, match="Muon_pt"):
        ds.to_awkward(["nMuon"], filter="Muon_ptt > 3")
    pq = casa_data.open(shared_data / "coffea/nano_dy.parquet")
    with pytest.raises(ColumnNotFoundError, match="close matches: .*MET_pt"):
        pq.to_arrow(["MET_ptt"])


def test_unknown_tree_lists_the_trees(shared_data):
    with pytest.raises(PartialResultError, match="no tree 'Evnts'.*Events"):
        casa_data.open(shared_data / "coffea/nano_dy.root", tree="Evnts").to_awkward(["nMuon"])


def test_empty_tree_gives_zero_events(shared_data):
    ds = casa_data.open(shared_data / "coffea/nano_dy_empty.root")
    assert ds.nevents == 0
    arr = ds.to_awkward(["nMuon", "Muon_pt"], filter="nMuon >= 2")
    assert len(arr) == 0
    assert ds.to_arrow(["nMuon"]).num_rows == 0
    assert list(ds.iter_batches(["nMuon"])) == []


def test_dead_first_replica_the_next_serves(shared_data, tmp_path, caplog):
    good = shared_data / "coffea/nano_dy.root"
    cat = tmp_path / "cat.yaml"
    cat.write_text(
        "datasets:\n"
        "  - name: r/dead-first\n"
        "    files:\n"
        "      - lfn: /store/mc/dy.root\n"
        f"        replicas: [{tmp_path}/gone/dy.root, {good}]\n"
    )
    with caplog.at_level(logging.WARNING, logger="casa_data"):
        ds = casa_data.open("r/dead-first", catalog=cat)
        assert len(ds.to_awkward(["nMuon"])) == 40
        assert ds.nevents == 40
        assert len(ds.to_awkward(["nMuon"])) == 40
    said = [r for r in caplog.records if f"{tmp_path}/gone/dy.root" in r.getMessage()]
    assert len(said) == 1  # said once, not on every read


def test_all_replicas_dead_lists_each(tmp_path):
    cat = tmp_path / "cat.yaml"
    cat.write_text(
        "datasets:\n"
        "  - name: r/all-dead\n"
        "    files:\n"
        "      - lfn: /store/mc/dy.root\n"
        f"        replicas: [{tmp_path}/a/dy.root, {tmp_path}/b/dy.root]\n"
    )
    with pytest.raises(PartialResultError) as err:
        casa_data.open("r/all-dead", catalog=cat).to_awkward(["nMuon"])
    rep = err.value.failures["/store/mc/dy.root"]
    assert isinstance(rep, ReplicaError)
    assert f"{tmp_path}/a/dy.root" in str(rep) and f"{tmp_path}/b/dy.root" in str(rep)
    assert len(err.value.partial) == 0 and isinstance(err.value.partial, ak.Array)
