"""The endpoint's transform scheduler: a spawn process pool, one job per input file.

Results go to the :class:`~casa_facility.servicex.store.Store`; a request ends ``Complete`` (some file
succeeded) or ``Fatal``. A killed worker breaks the pool: its files stay pending, the pool is
rebuilt and they run again (twice at most); during shutdown they wait for the next start.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import TYPE_CHECKING, Any

from casa_facility.servicex.store import DONE, Store
from casa_facility.servicex.transform import run_file, warm

if TYPE_CHECKING:
    from casa_facility.servicex.settings import Settings

__all__ = ["Scheduler"]

log = logging.getLogger("casa_data.servicex")

class Scheduler:
    """A spawn process pool running one job per input file; results go to the store."""

    def __init__(self, settings: Settings, store: Store):
        self.settings, self.store = settings, store
        # spawn, not fork: forked workers would inherit uvicorn's socket and signal handlers.
        self.pool = ProcessPoolExecutor(settings.workers, mp_context=get_context("spawn"))
        self.futures: dict[tuple[str, int], Future] = {}
        self._lock = threading.Lock()
        self._deaths: dict[tuple[str, int], int] = {}
        self._closing = self._rebuilding = False
        self.warm = [self.pool.submit(warm) for _ in range(settings.workers)]

    @property
    def ready(self) -> bool:
        return all(f.done() for f in self.warm)

    def worker_pids(self) -> list[int]:
        return sorted(getattr(self.pool, "_processes", None) or {})

    def output(self, request_id: str) -> dict[str, Any]:
        s = self.settings
        if s.s3_endpoint:
            return {"kind": "s3", "endpoint_url": s.s3_endpoint, "bucket": request_id}
        d = s.state / "outputs" / request_id
        d.mkdir(parents=True, exist_ok=True)
        return {"kind": "local", "dir": str(d)}

    def _job_output(self, out: dict[str, Any]) -> dict[str, Any]:
        if out["kind"] == "s3":  # keys travel to the worker in memory, never in the database
            return dict(out, key=self.settings.s3_key, secret=self.settings._s3_secret)
        return out

    def dispatch(self, request_id: str) -> None:
        req = self.store.request(request_id)
        if req is None:
            return
        out = self._job_output(req["output"])
        for f in self.store.files(request_id):
            if f["status"] not in ("pending", "running"):
                continue
            job = {"candidates": f["candidates"], "codegen": req["codegen"], "code": req["code"],
                   "tree": req["tree"], "result_format": req["result_format"], "object": f["object"],
                   "output": out}
            key = (request_id, f["file_id"])
            with self._lock:
                if key in self.futures:
                    continue
                try:
                    fut = self.pool.submit(run_file, job)
                except BrokenProcessPool:  # a worker died while idle: nothing else noticed
                    log.warning("a transform worker died while idle; restarting the pool")
                    self.pool.shutdown(wait=False, cancel_futures=True)
                    self.pool = ProcessPoolExecutor(self.settings.workers, mp_context=get_context("spawn"))
                    fut = self.pool.submit(run_file, job)
                self.futures[key] = fut
            fut.add_done_callback(lambda fut, key=key, lfn=f["lfn"]: self._done(key, lfn, fut))
        self._maybe_finish(request_id)

    def _done(self, key: tuple[str, int], lfn: str, fut: Future) -> None:
        with self._lock:
            self.futures.pop(key, None)
        if fut.cancelled():
            return
        try:
            result = fut.result()
        except BrokenProcessPool:  # a worker was killed: retry on a new pool, or resume after restart
            if not self._worker_died(key):
                return
            result = {"ok": False, "error": "the transform worker died twice on this file (killed, or out of memory?)"}
        except Exception as err:  # noqa: BLE001 - e.g. the job could not be pickled
            result = {"ok": False, "error": f"the transform could not run: {type(err).__name__}: {err}"}
        if not result["ok"]:
            log.warning("request %s: %s failed: %s", key[0], lfn, result["error"])
        self.store.file_done(key[0], key[1], result)
        self._maybe_finish(key[0])

    def _maybe_finish(self, request_id: str) -> None:
        req = self.store.request(request_id)
        if req is None or req["status"] in DONE or self.store.remaining(request_id):
            return
        ok = req["files_completed"] > 0 or req["files"] == 0
        self.store.set_status(request_id, "Complete" if ok else "Fatal")

    def _worker_died(self, key: tuple[str, int]) -> bool:
        """Leave the file pending and rebuild the pool; True once it killed two workers."""
        with self._lock:
            if self._closing:  # shutting down (SIGTERM reaches workers too): resume on restart
                return False
            self._deaths[key] = self._deaths.get(key, 0) + 1
            if self._deaths[key] > 2:
                return True
            if not self._rebuilding:
                self._rebuilding = True
                t = threading.Timer(0.5, self._rebuild)
                t.daemon = True
                t.start()
        return False

    def _rebuild(self) -> None:
        with self._lock:
            if self._closing:
                return
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = ProcessPoolExecutor(self.settings.workers, mp_context=get_context("spawn"))
            self._rebuilding = False
        log.warning("a transform worker died; restarted the pool and re-queued unfinished files")
        self.resume()

    def cancel(self, request_id: str) -> None:
        with self._lock:
            mine = [f for k, f in self.futures.items() if k[0] == request_id]
        for f in mine:
            f.cancel()

    def resume(self) -> None:
        """Re-queue every file of unfinished requests (after a restart)."""
        for rid in self.store.unfinished():
            log.info("resuming request %s", rid)
            self.dispatch(rid)

    def shutdown(self) -> None:
        with self._lock:
            self._closing = True
        procs = list((getattr(self.pool, "_processes", None) or {}).values())
        self.pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:  # a running transform would otherwise outlive the endpoint
            p.terminate()
