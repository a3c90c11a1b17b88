"""Systematic variations: reproducible random numbers, shape changes, corrections, user functions.

**Random numbers** (``normal(mean, sigma)``) come from a counter-based generator, never from a
stream consumed chunk by chunk, so a value depends only on the event and the object, not on the
chunk size, the worker or the order. For each value::

    key    = mix(mix(mix(mix(salt) ^ run) ^ luminosityBlock) ^ event)     # uint64, wrapping
    k      = mix(key + (index + 1) * 0x9E3779B97F4A7C15)                 # index: the object's position (0 per event)
    u1, u2 = (mix(k) >> 11) * 2**-53, (mix(k ^ 0xD1B54A32D192ED03) >> 11) * 2**-53
    value  = mean + sigma * sqrt(-2 log(1 - u1)) * cos(2 pi u2)           # Box-Muller

``mix`` is the splitmix64 finaliser; ``salt`` the first 8 bytes (little-endian) of
``blake2b(f"{seed}/{variation}/{field}/{line}:{col}", digest_size=8)``: ``seed`` is
``parameters.seed`` (0 by default), ``field`` the spec location of the expression and
``line:col`` the position of the call in it. Without ``run``/``luminosityBlock``/``event``
columns the entry number in the file stands for the event (``run = lumi = 0``).

**Corrections** are correctionlib JSON files (``corrections:``); their text travels with the
processor and each worker builds the :class:`correctionlib.CorrectionSet` once.

**User functions** (``function: package.module:callable``) are imported on the worker and called as
``callable(events, objects)`` (``objects``: the collections after the cuts and the variables so far).
"""

from __future__ import annotations

import hashlib
import importlib
from typing import Any

import awkward as ak
import numpy as np

__all__ = ["salt", "normal", "event_keys", "Corrections", "call_function", "GOLDEN"]

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_OTHER = np.uint64(0xD1B54A32D192ED03)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 (wrapping arithmetic)."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def salt(seed: Any, variation: str, field: str, line: int, col: int) -> np.uint64:
    h = hashlib.blake2b(f"{seed}/{variation}/{field}/{line}:{col}".encode(), digest_size=8).digest()
    return np.uint64(int.from_bytes(h, "little"))


def event_keys(events, s: np.uint64) -> np.ndarray:
    """One uint64 per event from its identity (run, luminosityBlock, event) and the salt."""
    fields = set(ak.fields(events))
    n = len(events)
    if {"run", "luminosityBlock", "event"} <= fields:
        ids = [ak.to_numpy(events[f]).astype(np.uint64) for f in ("run", "luminosityBlock", "event")]
    else:  # the entry number in the file
        start = int((getattr(events, "metadata", None) or {}).get("entrystart", 0) or 0)
        ids = [np.zeros(n, np.uint64), np.zeros(n, np.uint64), np.arange(start, start + n, dtype=np.uint64)]
    key = mix(np.full(n, s, dtype=np.uint64))
    for x in ids:
        key = mix(key ^ x)
    return key


def _uniform(k: np.ndarray) -> np.ndarray:
    return (k >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)


def gaussians(keys: np.ndarray, index: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        k = mix(keys + (index.astype(np.uint64) + np.uint64(1)) * GOLDEN)
    u1, u2 = _uniform(mix(k)), _uniform(mix(k ^ _OTHER))
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


def normal(events, like, mean, sigma, s: np.uint64):
    """Gaussian numbers shaped like ``like`` (a collection: one per object; None: one per event)."""
    keys = event_keys(events, s)
    if like is None:
        z = gaussians(keys, np.zeros(len(keys), np.uint64))
        return mean + sigma * z
    counts = ak.to_numpy(ak.num(like, axis=1))
    flat_keys = np.repeat(keys, counts)
    idx = ak.to_numpy(ak.flatten(ak.local_index(like, axis=1)))
    z = ak.unflatten(gaussians(flat_keys, idx), counts)
    return mean + sigma * z


# -- corrections -------------------------------------------------------------------------------------------
_CACHE: dict[str, Any] = {}


class Corrections:
    """The correctionlib corrections of a pipeline, built once per process from their JSON text."""

    def __init__(self, texts: dict[str, str]):
        self.texts = texts
        self._by_name: dict[str, Any] | None = None

    def __getstate__(self) -> dict:
        return {"texts": self.texts, "_by_name": None}

    def by_name(self) -> dict[str, Any]:
        if self._by_name is None:
            import correctionlib

            out = {}
            for text in self.texts.values():
                h = hashlib.sha256(text.encode()).hexdigest()
                if h not in _CACHE:
                    _CACHE[h] = correctionlib.CorrectionSet.from_string(text)
                cset = _CACHE[h]
                for name in cset:
                    out[name] = cset[name]
            self._by_name = out
        return self._by_name

    def inputs(self, name: str) -> list[tuple[str, str]] | None:
        """``[(input name, type)]`` of correction ``name`` or None if there is none."""
        c = self.by_name().get(name)
        if c is None:
            return None
        return [(i.name, i.type) for i in c.inputs]

    def evaluate(self, name: str, args: list):
        c = self.by_name()[name]
        arrays = [(i, a) for i, a in enumerate(args) if not isinstance(a, (str, int, float, np.number))]
        if not arrays:
            return c.evaluate(*args)
        jagged = [a for _, a in arrays if isinstance(a, ak.Array) and a.ndim > 1]
        base = ak.broadcast_arrays(*[a for _, a in arrays]) if len(arrays) > 1 else [arrays[0][1]]
        shape_like = base[0]
        counts = ak.num(shape_like, axis=1) if jagged else None
        missing = None
        cols = []
        for a in base:
            a = ak.flatten(a, axis=1) if jagged else a
            if isinstance(a, ak.Array):
                none = ak.to_numpy(ak.is_none(a))
                missing = none if missing is None else missing | none
                a = ak.to_numpy(ak.fill_none(a, 0.0))
            cols.append(np.asarray(a, dtype=np.float64))
        call = list(args)
        for (i, _), col in zip(arrays, cols):
            call[i] = col
        out = ak.Array(np.asarray(c.evaluate(*call), dtype=np.float64))
        if missing is not None and missing.any():
            out = ak.mask(out, ~missing)
        return ak.unflatten(out, counts) if counts is not None else out


# -- user functions ----------------------------------------------------------------------------------------
def load_function(ref: str):
    mod, _, name = ref.partition(":")
    return getattr(importlib.import_module(mod), name)


def call_function(ref: str, events, objects: dict, where) -> Any:
    """Run user code; any error is reported at its spec line (``where``)."""
    try:
        fn = load_function(ref)
    except (ImportError, AttributeError) as err:
        raise where.error(f"cannot load {ref!r}: {type(err).__name__}: {err}") from None
    try:
        return fn(events, objects)
    except Exception as err:  # noqa: BLE001 - located in the spec, cause kept
        raise where.error(f"{ref} failed: {type(err).__name__}: {err}") from err
