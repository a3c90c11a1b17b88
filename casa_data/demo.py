"""The built-in demo dataset: NanoAOD-schema Z->mumu-like events, reproducible from a seed.

Most events hold a Z decaying to two opposite-charge muons (Breit-Wigner mass at 91.19 GeV with a
detector-like resolution), the rest soft background muons; every event has some jets, MET and the
NanoAOD event IDs. Written as ROOT TTrees (uproot ``mktree``/``extend``) and as Parquet, into the
configured ``data_dir`` under ``demo/`` -- where the built-in catalog's site rule points
``/store/demo/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import numpy as np

from .config import get_config

__all__ = ["generate", "demo_dir", "make_events", "DEMO_FILES", "DEMO_EVENTS_PER_FILE"]

MZ, GZ, MMU = 91.1876, 2.4952, 0.105658
DEMO_FILES = 4
DEMO_EVENTS_PER_FILE = 50_000


def demo_dir() -> Path:
    return get_config().data_path / "demo"


def _decay(rng: np.random.Generator, n: int):
    """Two muons from a Z of random mass, pT and rapidity (lab-frame pt, eta, phi)."""
    # Breit-Wigner truncated to 50-150 GeV, sampled through its inverse CDF (no pile-up at the edges).
    lo, hi = (np.arctan((x - MZ) / (GZ / 2)) for x in (50.0, 150.0))
    m = MZ + GZ / 2 * np.tan(rng.uniform(lo, hi, n))
    pt = rng.exponential(12.0, n)
    y = rng.normal(0.0, 1.6, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    mt = np.sqrt(m**2 + pt**2)
    E, pz = mt * np.cosh(y), mt * np.sinh(y)
    px, py = pt * np.cos(phi), pt * np.sin(phi)
    # Isotropic decay in the rest frame, then boost to the lab.
    p_star = np.sqrt((m / 2) ** 2 - MMU**2)
    cos_t, phi_s = rng.uniform(-1, 1, n), rng.uniform(-np.pi, np.pi, n)
    sin_t = np.sqrt(1 - cos_t**2)
    d = np.stack([sin_t * np.cos(phi_s), sin_t * np.sin(phi_s), cos_t]) * p_star
    b = np.stack([px, py, pz]) / E
    gamma = E / m
    out = []
    for sign in (+1, -1):
        p = sign * d
        e_star = m / 2
        bp = (b * p).sum(0)
        b2 = (b * b).sum(0)
        coef = np.where(b2 > 0, (gamma - 1) * bp / np.where(b2 > 0, b2, 1), 0) + gamma * e_star
        plab = p + coef * b
        ptl = np.hypot(plab[0], plab[1])
        out.append((ptl, np.arcsinh(plab[2] / ptl), np.arctan2(plab[1], plab[0])))
    return out


def make_events(n: int, seed: int) -> ak.Array:
    """``n`` NanoAOD-like events as an awkward record array with Muon, Jet, MET fields."""
    rng = np.random.default_rng(seed)
    is_z = rng.random(n) < 0.85
    nz = int(is_z.sum())
    (pt1, eta1, phi1), (pt2, eta2, phi2) = _decay(rng, nz)
    n_extra = rng.poisson(0.3, n)
    n_extra[~is_z] += rng.integers(0, 3, (~is_z).sum())
    nmu = n_extra + 2 * is_z
    total = int(nmu.sum())
    mu_pt = np.empty(total, np.float32)
    mu_eta = np.empty(total, np.float32)
    mu_phi = np.empty(total, np.float32)
    mu_q = np.empty(total, np.int32)
    starts = np.concatenate([[0], np.cumsum(nmu)[:-1]])
    zs = starts[is_z]
    res = 1 + 0.015 * rng.standard_normal((2, nz))  # pT resolution
    mu_pt[zs], mu_pt[zs + 1] = pt1 * res[0], pt2 * res[1]
    mu_eta[zs], mu_eta[zs + 1] = eta1, eta2
    mu_phi[zs], mu_phi[zs + 1] = phi1, phi2
    q = rng.choice([-1, 1], nz)
    mu_q[zs], mu_q[zs + 1] = q, -q
    extra = np.ones(total, bool)
    extra[zs] = extra[zs + 1] = False
    ne = int(extra.sum())
    mu_pt[extra] = 3 + rng.exponential(8.0, ne)
    mu_eta[extra] = rng.uniform(-2.4, 2.4, ne)
    mu_phi[extra] = rng.uniform(-np.pi, np.pi, ne)
    mu_q[extra] = rng.choice([-1, 1], ne)
    counts = nmu.astype(np.int64)

    def jag(x: np.ndarray, c: np.ndarray) -> ak.Array:
        return ak.unflatten(x, c)

    njet = rng.poisson(2.5, n)
    nj = int(njet.sum())
    jets = ak.zip({
        "pt": jag((20 + rng.exponential(30.0, nj)).astype(np.float32), njet),
        "eta": jag(rng.uniform(-4.7, 4.7, nj).astype(np.float32), njet),
        "phi": jag(rng.uniform(-np.pi, np.pi, nj).astype(np.float32), njet),
        "mass": jag(rng.uniform(2, 20, nj).astype(np.float32), njet),
        "btagDeepFlavB": jag(rng.beta(0.5, 3.0, nj).astype(np.float32), njet),
    })
    muons = ak.zip({
        "pt": jag(mu_pt, counts), "eta": jag(mu_eta, counts), "phi": jag(mu_phi, counts),
        "mass": jag(np.full(total, MMU, np.float32), counts), "charge": jag(mu_q, counts),
    })
    return ak.Array({
        "run": np.full(n, 1, np.uint32),
        "luminosityBlock": (np.arange(n) // 1000 + 1).astype(np.uint32),
        "event": (np.arange(n, dtype=np.uint64) + 1 + seed * 10_000_000).astype(np.uint64),
        "Muon": muons,
        "Jet": jets,
        "MET_pt": rng.rayleigh(18.0, n).astype(np.float32),
        "MET_phi": rng.uniform(-np.pi, np.pi, n).astype(np.float32),
    })


def _flat(events: ak.Array) -> dict[str, ak.Array]:
    """NanoAOD's flat column layout: nMuon, Muon_pt, ..."""
    out: dict[str, ak.Array] = {}
    for field in events.fields:
        col = events[field]
        if col.fields:
            out[f"n{field}"] = ak.values_astype(ak.num(col), np.uint32)
            for sub in col.fields:
                out[f"{field}_{sub}"] = col[sub]
        else:
            out[field] = col
    return out


def write_root(path: Path, events: ak.Array) -> None:
    import uproot

    branches = {f: events[f] for f in events.fields}
    tmp = path.with_suffix(".tmp")
    with uproot.recreate(tmp, compression=uproot.ZLIB(1)) as f:
        # mktree + extend writes a TTree (f[name] = ... writes an RNTuple in uproot >= 5.7).
        tree = f.mktree("Events", {k: v.type for k, v in branches.items()})
        tree.extend(branches)
    tmp.replace(path)


def write_parquet(path: Path, events: ak.Array) -> None:
    tmp = path.with_suffix(".tmp")
    ak.to_parquet(ak.zip(_flat(events), depth_limit=1), tmp, row_group_size=25_000, compression="zstd")
    tmp.replace(path)


def generate(total_events: int = DEMO_FILES * DEMO_EVENTS_PER_FILE, seed: int = 42, force: bool = False,
             n_files: int = DEMO_FILES, directory: Path | None = None) -> list[Path]:
    """Write the demo files (ROOT and Parquet) unless they exist with the same settings."""
    out = Path(directory) if directory else demo_dir()
    (out / "zmumu").mkdir(parents=True, exist_ok=True)
    (out / "zmumu-parquet").mkdir(parents=True, exist_ok=True)
    stamp = out / "settings.json"
    settings = {"total_events": total_events, "seed": seed, "n_files": n_files, "version": 1}
    paths = [out / "zmumu" / f"zmumu_{i}.root" for i in range(n_files)]
    paths += [out / "zmumu-parquet" / f"zmumu_{i}.parquet" for i in range(n_files)]
    if not force and stamp.exists() and json.loads(stamp.read_text()) == settings and all(p.exists() for p in paths):
        return paths
    per_file = np.full(n_files, total_events // n_files)
    per_file[: total_events % n_files] += 1
    for i, n in enumerate(per_file):
        events = make_events(int(n), seed + i)
        write_root(paths[i], events)
        write_parquet(paths[n_files + i], events)
    stamp.write_text(json.dumps(settings))
    return paths
