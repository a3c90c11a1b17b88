"""``casa_compute.run``: a coffea processor over a dataset, chunk by chunk, in-process or on Dask.

Each chunk builds NanoEvents (NanoAOD schema by default) where it runs, calls
``processor.process`` and returns its output with statistics; a failing chunk is retried in place
(replicas in order) and, if it keeps failing, comes back as a failure record naming the file and
entry range. Outputs are merged with ``coffea.processor.accumulate`` in a fixed tree over chunk
order, so the result does not depend on which worker finished first, nor on workers that died
(the scheduler recomputes what they held).

On Dask workers, each worker thread keeps the ROOT file it last read open for the rest of the run
(:class:`_Handles`): the next chunk of the same file skips re-reading the file's metadata, which
costs ~0.3 s for a full NanoAOD file of 1,500 branches.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from .chunks import Chunk, arrow_chunks, chunks_of, files_of, is_arrow, iter_chunks, limit, open_and_count, open_parquet, open_root
from .events import root_events
from .report import ChunkFailure, ChunkStat, Report, RunError, RunResult, TokenPlugin

if TYPE_CHECKING:
    from rich.console import Console

    from .types import ClusterLike, DatasetLike, Processor

__all__ = ["run", "RunResult", "Report", "RunError"]


def _schema(schema):
    if schema is None:
        from .schemas import LenientNanoAODSchema

        return LenientNanoAODSchema
    return schema


@dataclass
class _Partial:
    """What a chunk or a merge returns: output plus the bookkeeping of the chunks inside."""

    output: Any = None
    stats: list[ChunkStat] = field(default_factory=list)
    failures: list[ChunkFailure] = field(default_factory=list)


def _events(chunk: Chunk, url: str, via: str | None, schema: Any, handle: Any,
            run_id: str | None = None) -> Any:
    from coffea.nanoevents import NanoEventsFactory

    meta = {**chunk.file.metadata, "dataset": chunk.file.dataset, "filename": url,
            "treename": chunk.file.tree, "entrystart": chunk.start, "entrystop": chunk.stop}
    if chunk.file.format == "parquet":
        return NanoEventsFactory.from_parquet(
            handle, entry_start=chunk.start, entry_stop=chunk.stop, schemaclass=schema,
            metadata=meta, mode="virtual").events()
    return root_events(handle, chunk.file.tree, chunk.start, chunk.stop, schema, meta, learn=run_id)


_SECRET_QUERY = re.compile(r"((?:authz|access_token|token|X-Amz-Signature|X-Amz-Credential)=)[^&\s'\"]+",
                           re.I)


def scrub(text: str) -> str:
    """Hide tokens in error text: URL query credentials, bearer headers, the worker's token."""
    text = _SECRET_QUERY.sub(r"\1***", text)
    text = re.sub(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", r"\1***", text)
    path = os.environ.get("BEARER_TOKEN_FILE")
    if path:
        try:
            tok = open(path).read().strip()
        except OSError:
            tok = ""
        if len(tok) >= 8:
            text = text.replace(tok, "***")
    return text


def _arrow_events(chunk, schema):
    """NanoEvents over an Arrow table (through an in-memory Parquet buffer coffea can read)."""
    import io

    import pyarrow.parquet as pq
    from coffea.nanoevents import NanoEventsFactory

    buf = io.BytesIO()
    pq.write_table(chunk.table, buf)
    buf.seek(0)
    meta = {**chunk.file.metadata, "dataset": chunk.file.dataset, "filename": chunk.file.url,
            "entrystart": chunk.start, "entrystop": chunk.stop}
    return NanoEventsFactory.from_parquet(pq.ParquetFile(buf), schemaclass=schema, metadata=meta,
                                          mode="virtual").events()


class _Handles(threading.local):
    """The ROOT file a worker thread read last, kept open for the next chunk of the same run.

    Per thread (uproot handles are not shared between threads), one file at a time, keyed by the
    run so that a later run never sees a file as it was; dropped after a failed read.
    """

    key: tuple[Any, ...] | None = None
    handle: Any = None
    opened: dict[str, int] = {}  # url -> times opened, all threads of this process (for tests)

    def get(self, run_id: str, url: str, via: str | None) -> Any:
        key = (run_id, url, via)
        if self.key != key:
            self.drop()
            self.handle = open_root(url, via)
            self.key = key
            with _OPENED_LOCK:
                _Handles.opened[url] = _Handles.opened.get(url, 0) + 1
        return self.handle

    def drop(self) -> None:
        handle, self.key, self.handle = self.handle, None, None
        if handle is not None:
            with contextlib.suppress(Exception):
                handle.close()


_HANDLES = _Handles()
_OPENED_LOCK = threading.Lock()


def _process_once(processor: Any, chunk: Chunk, url: str, via: str | None, schema: Any, opened: Any = None,
                  run_id: str | None = None, learn: str | None = None) -> tuple[Any, int]:
    """One attempt on one replica: (output, bytes read). ``opened``: (url, ROOT handle) to reuse;
    ``run_id``: keep this thread's handle open for the next chunk of the same file and read the
    branches earlier chunks of the run touched in one request (``learn``, see ``root_events``)."""
    if chunk.file.format == "arrow":
        return processor.process(_arrow_events(chunk, schema)), int(chunk.table.nbytes)  # type: ignore[attr-defined]
    if opened is None and run_id is not None and chunk.file.format == "root":
        try:
            opened = (url, _HANDLES.get(run_id, url, via))
            return _process_once(processor, chunk, url, via, schema, opened, learn=learn or run_id)
        except BaseException:
            _HANDLES.drop()  # a handle that failed once is not trusted again
            raise
    if opened is not None and opened[0] == url and chunk.file.format != "parquet":
        f = opened[1]
        before = getattr(f, "_casa_bytes_counted", 0)
        try:
            out = processor.process(_events(chunk, url, via, schema, f, learn))
        finally:
            if f.file.array_cache is not None:
                f.file.array_cache.clear()  # this chunk's arrays: not needed by the next one
        after = f.file.source.num_requested_bytes
        f._casa_bytes_counted = after
        return out, after - before
    if chunk.file.format == "parquet":
        pf, counted = open_parquet(url, via)
        with pf:
            return processor.process(_events(chunk, url, via, schema, pf)), counted.bytes_read
    with open_root(url, via) as f:
        out = processor.process(_events(chunk, url, via, schema, f))
        return out, f.file.source.num_requested_bytes


def process_chunk(processor: Any, chunk: Chunk, schema: Any = None, retries: int = 2,
                  retry_wait: float = 0.2, opened: Any = None, run_id: str | None = None,
                  learn: str | None = None) -> _Partial:
    """Run ``processor`` on one chunk; never raises for data errors (returns a failure).

    ``opened``: ``(url, open ROOT file)`` to use on the first attempt; ``run_id``: reuse this
    thread's open file across chunks of one run (see :class:`_Handles`); ``learn`` (default
    ``run_id``): read the branches earlier chunks of this run touched in one request."""
    from casa_data.access import Replicas

    from .chunks import candidates

    schema = _schema(schema)
    started, t0, c0 = time.time(), time.perf_counter(), time.process_time()
    vias = dict(chunk.file.replicas)
    error, last_tb = "", ""
    for attempt in range(retries + 1):
        def once(cand, attempt=attempt):
            via = vias.get(cand.url)
            first = attempt == 0
            out = _process_once(processor, chunk, cand.url, via, schema, opened if first else None,
                                run_id if first else None, (learn or run_id) if first else None)
            return out, cand.url
        try:
            # Failover (order, health marks) by casa_data.access; a processor's own exception
            # stays as it was raised (translate_errors=False) so the report shows it.
            if chunk.file.format == "arrow":  # the data travel with the chunk: no replica to try
                output, nbytes = _process_once(processor, chunk, chunk.file.url, None, schema)
                url = chunk.file.url
            else:
                (output, nbytes), url = Replicas(chunk.file.url, candidates(chunk.file),
                                                 label=chunk.file.dataset).call(once, translate_errors=False)
        except Exception as e:  # noqa: BLE001 - reported with file and entry range
            error = scrub(f"{type(e).__name__}: {e}")
            last_tb = scrub(traceback.format_exc(limit=6))
            if attempt < retries:
                time.sleep(retry_wait * 2 ** attempt)
            continue
        stat = ChunkStat(index=chunk.index, dataset=chunk.file.dataset, file=url,
                         start=chunk.start, stop=chunk.stop, events=chunk.entries,
                         bytes_read=int(nbytes), seconds=time.perf_counter() - t0,
                         attempts=attempt + 1, cpu_seconds=time.process_time() - c0,
                         host=socket.gethostname(), pid=os.getpid(), started=started)
        return _Partial(output, [stat], [])
    return _Partial(None, [], [ChunkFailure(
        index=chunk.index, dataset=chunk.file.dataset, file=chunk.file.url, start=chunk.start,
        stop=chunk.stop, error=error, attempts=retries + 1, traceback=last_tb)])


def merge(*parts: _Partial) -> _Partial:
    """Accumulate outputs (hist, dicts, coffea accumulators) in the given order."""
    from coffea.processor import accumulate

    out = _Partial()
    out.output = accumulate(p.output for p in parts)
    for p in parts:
        out.stats += p.stats
        out.failures += p.failures
    return out


def _progress(enabled: bool, total: int, description: str) -> Any:
    if not enabled:
        return contextlib.nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("chunks"), TimeElapsedColumn(), TimeRemainingColumn(),
                    transient=False)


def facility_client():
    """A TLS client of the facility-in-a-box's Dask scheduler (``casa facility up``)."""
    from distributed import Client
    from distributed.security import Security

    from casa_data.config import get_config

    comp = get_config().compute
    if not comp.get("scheduler"):
        from .clusters.base import ClusterError

        raise ClusterError("no facility scheduler is configured: run `casa facility up` first "
                           "(or pass cluster='local')")
    tls = comp.get("tls") or {}
    sec = Security(tls_ca_file=tls["ca"], tls_client_cert=tls["cert"], tls_client_key=tls["key"],
                   require_encryption=True) if tls else None
    return Client(comp["scheduler"], security=sec, timeout=30)


def _facility_gateway() -> bool:
    """The facility runs Dask Gateway (``cluster="facility"`` is then a gateway cluster)."""
    from casa_data.config import get_config

    return bool(get_config().compute.get("gateway"))


def _client_for(cluster):
    """(client, owned objects to close) for a Client, a cluster, a cluster kind or None."""
    from distributed import Client

    if isinstance(cluster, Client):
        return cluster, []
    owned = []
    if cluster == "facility" and not _facility_gateway():  # a facility without Dask Gateway
        client = facility_client()
        return client, [client]
    if isinstance(cluster, str):
        from .clusters import cluster as make_cluster
        from .clusters.base import setting

        kind = cluster
        cluster = make_cluster(cluster)
        owned.append(cluster)
        if not getattr(cluster, "worker_spec", True):  # batch clusters start empty: grow with the work
            cluster.adapt(minimum=0, maximum=int(setting("run-workers", kind, 4)))
    client = Client(cluster, security=getattr(cluster, "security", None))
    return client, [client, *owned[::-1]]


def run(processor: Processor, dataset: DatasetLike, cluster: ClusterLike | None = None, *,
        chunksize: int | None = None, schema: type[Any] | None = None, retries: int = 2,
        skip_bad_files: bool = False, progress: bool = True,
        token: str | os.PathLike[str] | None = "auto", fanin: int = 8, dataset_name: str | None = None,
        no_workers_timeout: float = 600.0, console: Console | None = None,
        max_chunks: int | None = None, max_files: int | None = None) -> RunResult:
    """Run a coffea processor over a dataset.

    Parameters
    ----------
    processor : coffea.processor.ProcessorABC
        ``process(events)`` is called per chunk; ``postprocess`` once on the merged output.
    dataset
        A ``casa_data.Dataset``, a list of them, a coffea fileset (a dict, plain or preprocessed,
        or a ``DataGroupSpec``: preprocessed ``steps`` are the chunks), or Arrow data (a
        ``pyarrow.Table``/``RecordBatch`` or an iterator of them, e.g. ``ds.iter_batches(...)``
        from the ServiceX and Skyhook paths; named ``dataset_name``).
    cluster
        None: in this process. A ``distributed.Client``, a cluster object (e.g. from
        :func:`casa_compute.cluster`), a kind (``"local"``, ``"slurm"``, ...), created and
        closed here, or ``"facility"``: the scheduler of ``casa facility up``.
    chunksize
        Maximum entries per chunk (Parquet chunks never span row groups). None (default): chosen
        from the first file's size, entries and branch count and the number of workers
        (:func:`casa_compute.sizing.auto_chunksize`: ~256 MiB of memory per chunk, at least 4
        chunks per worker, between 10,000 and 500,000); Arrow input keeps its batches.
    schema
        NanoEvents schema class; default NanoAOD (missing event-id branches only warn).
    retries
        Extra attempts for a failing chunk (each tries every replica).
    skip_bad_files
        Finish without what failed and list it in the report; otherwise raise
        :class:`RunError` (naming the file and entry range) with ``.partial`` holding the rest.
    token
        Bearer-token file forwarded to Dask workers ("auto": discovery as for clusters).
    no_workers_timeout
        Give up (:class:`RunError` with the partial result) when the cluster has had no worker
        for this many seconds.

    max_chunks, max_files
        A quick test: only the first ``max_chunks`` chunks of each file, the first ``max_files``
        files of each dataset (as coffea's ``max_chunks``/``max_files``).

    Returns
    -------
    RunResult
        ``.output`` and ``.report``; unpacks as ``output, report = run(...)``.
    """
    from rich.console import Console

    console = console or Console(stderr=True)
    t0 = time.perf_counter()
    report = Report()
    if is_arrow(dataset):
        chunks = arrow_chunks(dataset, dataset_name or "arrow", chunksize)
        if cluster is None:
            part = merge(*(process_chunk(processor, c, schema, retries) for c in chunks))
        else:
            part = _run_dask(processor, chunks, cluster, schema, retries, progress, token, fanin,
                             console, report, no_workers_timeout)
        report.chunks_planned = len(part.stats) + len(part.failures)
        return _finish(processor, part, report, t0, skip_bad_files)
    if max_chunks is not None and max_chunks < 1:
        raise ValueError(f"max_chunks must be >= 1, got {max_chunks}")
    items = limit(files_of(dataset), max_files)
    if chunksize is None:
        from .sizing import auto_chunksize, workers_of

        chunksize = (100_000 if all(i.steps is not None for i in items)  # the steps are the chunks
                     else auto_chunksize(items, workers_of(cluster)))
    if cluster is None:
        part = _run_local(processor, items, chunksize, schema, retries, progress, report, max_chunks)
    else:
        # Chunks are submitted as the client counts each file's entries: the workers start on
        # the first file instead of waiting for every file to be opened here.
        bad_files: dict[Any, str] = {}
        part = _run_dask(processor, iter_chunks(items, chunksize, bad_files, max_chunks=max_chunks),
                         cluster, schema, retries, progress, token, fanin, console, report,
                         no_workers_timeout)
        report.bad_files = {f.url: err for f, err in bad_files.items()}
    return _finish(processor, part, report, t0, skip_bad_files)


def _finish(processor: Processor, part: _Partial, report: Report, t0: float, skip_bad_files: bool
            ) -> RunResult:
    output = part.output
    if output is not None and hasattr(processor, "postprocess"):
        post = processor.postprocess(output)
        output = output if post is None else post
    report.add(part.stats, part.failures, time.perf_counter() - t0)
    result = RunResult(output, report)
    if report.stalled or ((report.failures or report.bad_files) and not skip_bad_files):
        raise RunError(report.describe_failures(), partial=result)
    return result


def _run_local(processor: Any, items: Any, chunksize: int, schema: Any, retries: int, progress: bool,
               report: Report, max_chunks: int | None = None) -> _Partial:
    """File by file: each file is opened once, for counting and for all of its chunks."""
    from coffea.processor import accumulate

    acc = _Partial()
    run_id = uuid.uuid4().hex[:10]
    with _progress(progress, len(items), "in-process") as bar:
        task = bar.add_task("in-process", total=len(items)) if bar is not None else None
        for item in items:
            try:
                count, url, via, handle = open_and_count(item, keep_open=True)
            except Exception as e:  # noqa: BLE001 - the file is reported, the rest goes on
                report.bad_files[item.url] = str(e)
                count, handle = None, None
            try:
                chunks = ([] if count is None
                          else chunks_of(item, count, chunksize, report.chunks_planned, max_chunks))
                report.chunks_planned += len(chunks)
                if bar is not None:  # the total was one per file until the file was opened
                    bar.update(task, total=bar.tasks[0].total - 1 + len(chunks))
                for chunk in chunks:
                    p = process_chunk(processor, chunk, schema, retries, learn=run_id,
                                      opened=(url, handle) if handle is not None else None)
                    acc.output = accumulate([acc.output, p.output])
                    acc.stats += p.stats
                    acc.failures += p.failures
                    if bar is not None:
                        bar.advance(task)
            finally:
                if handle is not None:
                    handle.close()
    return acc


def _run_dask(processor: Any, chunks: Any, cluster: Any, schema: Any, retries: int, progress: bool, token: Any,
              fanin: int, console: Any, report: Any, no_workers_timeout: float = 600.0) -> _Partial:
    from .clusters.base import find_token

    client, owned = _client_for(cluster)
    futs: list[Any] = []
    merges: list[Any] = []
    try:
        report.dashboard = client.dashboard_link
        console.print(f"[bold]casa[/bold]: running on {client.scheduler.address}; "
                      f"dashboard {client.dashboard_link}")
        tok = find_token(token)
        if tok is not None:
            client.register_plugin(TokenPlugin.from_file(tok), name="casa-bearer-token")
        run_id = uuid.uuid4().hex[:10]
        submitted = []
        for c in chunks:  # may be a stream (Arrow batches): submit as they arrive
            submitted.append(c)
            futs.append(client.submit(process_chunk, processor, c, schema, retries, run_id=run_id,
                                      pure=False, key=f"casa-chunk-{c.index}-{run_id}"))
        chunks = submitted
        report.chunks_planned = len(chunks)
        level, depth = list(futs), 0
        while len(level) > 1:
            depth += 1
            level = [client.submit(merge, *level[i:i + fanin], pure=False,
                                   key=f"casa-merge-{depth}-{i}-{run_id}")
                     for i in range(0, len(level), fanin)]
            merges += level
        with _progress(progress, len(chunks), "dask") as bar:
            task = bar.add_task(f"dask ({len(client.scheduler_info()['workers'])} workers)",
                                total=len(chunks)) if bar is not None else None
            stalled = _watch(client, futs, bar, task, no_workers_timeout)
        if stalled:
            report.stalled = stalled
            return _salvage(futs, chunks, retries, stalled, timeout=0)
        if not level:
            return _Partial()
        try:
            return cast(_Partial, level[0].result())
        except Exception:  # a chunk died with its workers too often (KilledWorker): salvage
            return _salvage(futs, chunks, retries, timeout=no_workers_timeout)
    finally:
        # Release every result on the cluster now, not whenever reference cycles are collected:
        # held data would keep adapt from scaling down to zero.
        with contextlib.suppress(Exception):
            if futs or merges:
                client.cancel(futs + merges)
        for obj in owned:
            obj.close()


def _watch(client: Any, futs: Any, bar: Any, task: Any, no_workers_timeout: float) -> str | None:
    """Advance the bar as chunks finish; a reason string if the cluster has had no worker for
    ``no_workers_timeout`` seconds (a half-dead cluster must not hang the run forever)."""
    from distributed import wait

    pending, empty_since = set(futs), None
    while pending:
        try:
            with client.as_current():  # wait() uses the current client, which need not be the default
                done, pending = wait(pending, timeout=2, return_when="FIRST_COMPLETED")
        except TimeoutError:  # nothing finished in 2 s
            done = set()
        if bar is not None and done:
            bar.advance(task, len(done))
        if done:
            empty_since = None
            continue
        if client.scheduler_info()["workers"]:
            empty_since = None
        elif empty_since is None:
            empty_since = time.monotonic()
        elif time.monotonic() - empty_since > no_workers_timeout:
            return f"no Dask worker for {no_workers_timeout:.0f} s (cluster lost all workers?)"
    return None


def _salvage(futs: Any, chunks: Any, retries: Any, reason: str | None = None, timeout: float = 0) -> _Partial:
    """Gather what finished; chunks whose task erred (e.g. KilledWorker) or never ran become
    failures."""
    from distributed import wait

    if timeout:
        try:
            client = next(iter(futs)).client if futs else None
            with client.as_current() if client is not None else contextlib.nullcontext():
                wait(futs, timeout=timeout)  # lost results are being recomputed: let them finish
        except TimeoutError:
            reason = reason or f"not finished {timeout:.0f} s after the run failed"
    parts = []
    for f, c in zip(futs, chunks):
        if f.status == "finished":
            parts.append(f.result())
        else:
            err = (f.exception() if f.status == "error"
                   else RuntimeError(reason or f"task {f.status}"))
            f.cancel()
            parts.append(_Partial(None, [], [ChunkFailure(
                index=c.index, dataset=c.file.dataset, file=c.file.url, start=c.start,
                stop=c.stop, error=f"{type(err).__name__}: {err}", attempts=retries + 1)]))
    return merge(*parts)
