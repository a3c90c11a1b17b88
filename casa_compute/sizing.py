"""The chunk size ``casa_compute.run`` picks when none is given (``chunksize=None``).

From the first readable file of the input (opened once, through its delivery path) and the
number of workers::

    bytes/event   = file size / entries                       (compressed, every branch)
    read fraction = min(1, READ_BRANCHES / branches)          (an analysis reads tens of branches)
    memory/event  = bytes/event * read fraction * EXPANSION   (decompressed, plus awkward temporaries)
    by memory     = TARGET_BYTES / memory/event               (a chunk stays ~256 MiB in a worker)
    by balance    = total entries / (CHUNKS_PER_WORKER * workers)   (every worker gets several)
    chunksize     = min(by memory, by balance), clamped to [MIN_CHUNK, MAX_CHUNK], rounded up to 1,000

Per-chunk costs (building NanoEvents, a task round trip, opening a file on a worker) are paid once
per chunk, so chunks are as large as memory and load balance allow; a chunk never spans files, so
files smaller than the chunk size are one chunk each. The dimuon benchmark files (6 branches,
36 B/event) get 250,000 for 1M events in-process (125,000 on 2 workers); a full NanoAOD file
(1,500 branches, ~2 kB/event: ~170 B of memory per event read) gets the 500,000 cap unless the
balance rule asks for less (20 files of 1M events on 16 workers: 313,000).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["auto_chunksize", "workers_of", "file_shape"]

READ_BRANCHES = 32
EXPANSION = 4.0
TARGET_BYTES = 256 * 2**20
CHUNKS_PER_WORKER = 4
MIN_CHUNK = 10_000
MAX_CHUNK = 500_000


def file_shape(item: Any) -> tuple[int, int, int] | None:
    """``(file bytes, entries, branches)`` of a runner ``FileItem`` (ROOT TTree or Parquet), or
    None if it cannot be read."""
    from .chunks import open_and_count, open_parquet

    try:
        if item.format == "parquet":
            pf, _ = open_parquet(*item.replicas[0])
            with pf:
                md = pf.metadata
                size = sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))
                return int(size), int(md.num_rows), int(md.num_columns)
        count, url, via, handle = open_and_count(item, keep_open=True)
    except Exception:  # noqa: BLE001 - no size estimate; the run reports the file itself
        return None
    try:
        tree = handle[item.tree]
        size = getattr(handle.file.source, "num_bytes", None) or 0
        branches = len(tree.keys(recursive=True)) if hasattr(tree, "keys") else 1
        return int(size), int(count), max(1, branches)
    except Exception:  # noqa: BLE001
        return None
    finally:
        handle.close()


def auto_chunksize(items: list[Any], workers: int = 1, shape: tuple[int, int, int] | None = None
                   ) -> int:
    """A chunk size for ``items`` on ``workers`` workers (see the module docstring).

    ``shape``: ``(file bytes, entries, branches)`` of a typical file; read from the first file
    that opens when not given."""
    workers = max(1, int(workers))
    if shape is None:
        for item in items[:3]:
            shape = file_shape(item)
            if shape is not None:
                break
    if shape is None or shape[1] <= 0:
        return 100_000  # nothing readable: the run reports the files; the historical default
    size, entries, branches = shape
    per_event = max(size / entries, 1.0) * min(1.0, READ_BRANCHES / branches) * EXPANSION
    by_memory = TARGET_BYTES / per_event
    known = [i.nevents for i in items if getattr(i, "nevents", None)]
    total = sum(known) + entries * (len(items) - len(known))
    by_balance = math.ceil(total / (CHUNKS_PER_WORKER * workers))
    size_ = min(by_memory, by_balance)
    size_ = min(MAX_CHUNK, max(MIN_CHUNK, size_))
    return int(math.ceil(size_ / 1000) * 1000)


def workers_of(cluster: Any) -> int:
    """How many workers a run on ``cluster`` will have (1 in-process)."""
    if cluster is None:
        return 1
    try:
        from distributed import Client

        if isinstance(cluster, Client):
            return max(1, sum(w.get("nthreads", 1) for w in cluster.scheduler_info()["workers"].values()))
        if isinstance(cluster, str):
            from .clusters.base import setting

            if cluster == "local":
                return int(setting("n-workers", "local", 1)) * int(setting("threads-per-worker", "local", 1))
            return int(setting("run-workers", cluster, 4))
        spec = getattr(cluster, "worker_spec", None)
        if spec:
            return len(spec)
        workers = getattr(cluster, "workers", None)
        if workers:
            return len(workers)
    except Exception:  # noqa: BLE001 - a guess only
        pass
    return 4
