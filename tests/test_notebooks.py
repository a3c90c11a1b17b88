"""The notebooks in notebooks/ run top to bottom (nbclient) against the facility in a box."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import casa_data
from casa_facility import lifecycle as facility

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def running_facility():
    state_dir = Path(tempfile.mkdtemp(prefix="casa-facility-nb-"))
    os.environ["CASA_FACILITY_DIR"] = str(state_dir)
    try:
        yield facility.up(state_dir)
    finally:
        facility.down(state_dir)
        os.environ.pop("CASA_FACILITY_DIR", None)
        casa_data.reset_config()
        shutil.rmtree(state_dir, ignore_errors=True)


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 2


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, running_facility, tmp_path):
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "outputs must be stripped in git"
    work = tmp_path / "run"
    work.mkdir()
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
