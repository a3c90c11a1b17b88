"""The endpoint's transform scheduler: sandbox workers, one job per input file, fair across requests.

Each worker slot is a thread of the endpoint driving one sandbox worker
(:mod:`casa_facility.servicex.sandbox`). For a file it opens the input (a local file it may read,
or a copy staged from a catalog replica with the facility's credentials, which never reach the
sandbox), hands the worker the descriptor and a private job directory, then uploads the output
itself (to the request's S3 bucket or ``DIR/outputs/<request>/``).

Fairness: pending files wait in one queue per request, and a free slot takes the next file
round-robin over users, then over that user's requests, so a 10,000-file request cannot starve a
1-file one. A request ends ``Complete`` (some file succeeded) or ``Fatal``. A worker that dies
(killed, out of memory) is replaced and its file runs again (twice at most).
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from casa_facility.servicex.sandbox import (
    Limits,
    Worker,
    WorkerDied,
    _clean_stale,
    ensure_user,
    make_base,
    owner_file,
    private_dir,
)
from casa_facility.servicex.settings import s3_admin
from casa_facility.servicex.store import DONE, Store

if TYPE_CHECKING:
    from casa_facility.servicex.settings import Settings

__all__ = ["Scheduler"]

log = logging.getLogger("casa_data.servicex")


class _Queue:
    """Pending files: one FIFO per request, served round-robin over owners, then requests."""

    def __init__(self):
        self._cv = threading.Condition()
        self._owners: OrderedDict[str, OrderedDict[str, deque]] = OrderedDict()
        self._closed = False

    def put(self, owner: str, rid: str, job: dict[str, Any]) -> None:
        with self._cv:
            self._owners.setdefault(owner, OrderedDict()).setdefault(rid, deque()).append(job)
            self._cv.notify()

    def get(self) -> dict[str, Any] | None:
        with self._cv:
            while not self._closed:
                for owner in list(self._owners):
                    reqs = self._owners.pop(owner)
                    rid, q = reqs.popitem(last=False)
                    job = q.popleft()
                    if q:
                        reqs[rid] = q  # to the back of this owner's requests
                    if reqs:
                        self._owners[owner] = reqs  # to the back of the owners
                    return job
                self._cv.wait()
            return None

    def drop(self, rid: str) -> None:
        with self._cv:
            for owner in list(self._owners):
                self._owners[owner].pop(rid, None)
                if not self._owners[owner]:
                    del self._owners[owner]

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()


class Scheduler:
    """Sandbox workers running one job per input file; results go to the store."""

    def __init__(self, settings: Settings, store: Store):
        self.settings, self.store = settings, store
        if settings.same_user:
            self.uid = self.gid = None
        else:
            if os.geteuid() != 0:
                from casa_facility.servicex.sandbox import SandboxError

                raise SandboxError("transforms run as the unprivileged user casa-transform, which needs the "
                                   "endpoint to start as root; as another user, pass same_user=True "
                                   "(--sandbox-same-user) only for an endpoint that serves just that user")
            self.uid, self.gid = ensure_user(settings.sandbox_user)
        self.limits: Limits = settings.limits
        self.base = make_base(self.uid)
        _clean_stale("casa-sx-staging-")
        self.staging = Path(tempfile.mkdtemp(prefix="casa-sx-staging-"))
        os.chmod(self.staging, 0o700)
        owner_file(self.staging)
        self.queue = _Queue()
        self._lock = threading.Lock()
        self._queued: set[tuple[str, int]] = set()
        self._deaths: dict[tuple[str, int], int] = {}
        self._closing = False
        self.workers: list[Worker | None] = [None] * settings.workers
        self._started = threading.Event()
        self._threads = [threading.Thread(target=self._slot, args=(i,), name=f"casa-sx-slot{i}", daemon=True)
                         for i in range(settings.workers)]
        for t in self._threads:
            t.start()

    # -- state -----------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return all(w is not None and w.ready for w in self.workers)

    def worker_pids(self) -> list[int]:
        return sorted(w.pid for w in self.workers if w is not None and w.alive())

    def output(self, request_id: str) -> dict[str, Any]:
        s = self.settings
        if s.s3_endpoint:
            return {"kind": "s3", "endpoint_url": s.s3_endpoint, "bucket": request_id}
        d = s.state / "outputs" / request_id
        d.mkdir(parents=True, exist_ok=True)
        return {"kind": "local", "dir": str(d)}

    # -- queueing --------------------------------------------------------------------------------
    def dispatch(self, request_id: str) -> None:
        req = self.store.request(request_id)
        if req is None:
            return
        for f in self.store.files(request_id):
            if f["status"] not in ("pending", "running"):
                continue
            key = (request_id, f["file_id"])
            with self._lock:
                if key in self._queued:
                    continue
                self._queued.add(key)
            self.queue.put(req.get("owner") or "", request_id,
                           {"key": key, "lfn": f["lfn"], "candidates": f["candidates"], "object": f["object"]})
        self._maybe_finish(request_id)

    def cancel(self, request_id: str) -> None:
        self.queue.drop(request_id)
        with self._lock:
            self._queued = {k for k in self._queued if k[0] != request_id}

    def resume(self) -> None:
        """Re-queue every file of unfinished requests (after a restart)."""
        for rid in self.store.unfinished():
            log.info("resuming request %s", rid)
            self.dispatch(rid)

    # -- a slot ----------------------------------------------------------------------------------
    def _spawn(self, i: int) -> Worker:
        w = Worker(self.base, i, self.uid, self.gid, self.limits)
        self.workers[i] = w
        w.wait_ready(180)
        return w

    def _api_up(self, timeout: float = 15.0) -> None:
        """Wait (a little) for the API to listen: the workers' heavy imports must not slow its start
        (a client waits on it after a restart)."""
        import socket

        deadline = time.monotonic() + timeout
        while self.settings.port and time.monotonic() < deadline and not self._closing:
            try:
                socket.create_connection(("127.0.0.1", self.settings.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)

    def _slot(self, i: int) -> None:
        self._api_up()
        while not self._closing:
            try:
                w = self._spawn(i)
                break
            except Exception as err:  # noqa: BLE001
                log.error("the sandbox worker %d could not start: %s", i, err)
                if self.workers[i] is not None:
                    self.workers[i].kill()
                time.sleep(2)
        while not self._closing:
            job = self.queue.get()
            if job is None:
                return
            rid, fid = job["key"]
            req = self.store.request(rid)
            if req is None or req["status"] in DONE:
                with self._lock:
                    self._queued.discard(job["key"])
                continue
            self.store.file_running(rid, fid)
            try:
                result = self._run(w, req, job)
            except WorkerDied as err:
                if self._closing:
                    return
                log.warning("a transform worker died (%s); restarting it", err)
                w.kill()
                try:
                    w = self._spawn(i)
                except Exception as err2:  # noqa: BLE001
                    log.error("the sandbox worker %d could not restart: %s", i, err2)
                    time.sleep(2)
                    continue
                with self._lock:
                    n = self._deaths[job["key"]] = self._deaths.get(job["key"], 0) + 1
                if n <= 2:
                    self.queue.put(req.get("owner") or "", rid, job)  # runs again
                    continue
                result = {"ok": False, "error": "the transform worker died twice on this file (killed, or out of memory?)"}
            with self._lock:
                self._queued.discard(job["key"])
            if not result["ok"]:
                log.warning("request %s: %s failed: %s", rid, job["lfn"], result["error"])
            self.store.file_done(rid, fid, result)
            self._maybe_finish(rid)

    def _run(self, w: Worker, req: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
        """Open the input, run the transform in the sandbox, store its output (in the endpoint)."""
        t0 = time.monotonic()
        try:
            fd, staged = self._open_input(job)
        except Exception as err:  # noqa: BLE001
            return {"ok": False, "error": f"{job['lfn']}: {_one_line(err)}"}
        jobdir = private_dir(self.base / f"job-{os.urandom(12).hex()}", self.uid, self.gid)
        try:
            dfd = os.open(jobdir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                result = w.run({"codegen": req["codegen"], "code": req["code"], "tree": req["tree"],
                                "result_format": req["result_format"], "object": job["object"],
                                "lfn": job["lfn"]}, fd, jobdir)
                if not isinstance(result.get("ok"), bool):
                    result = {"ok": False, "error": "the transform sent no valid result"}
                if result["ok"]:
                    size = self._upload(req, job["object"], dfd)
                    result = {"ok": True, "size": size, "events": int(result.get("events") or 0),
                              "seconds": time.monotonic() - t0}
                else:
                    result = {"ok": False, "error": str(result.get("error"))[:2000]}
            except WorkerDied:
                raise
            except Exception as err:  # noqa: BLE001
                result = {"ok": False, "error": f"storing the output failed: {_one_line(err)}"}
            finally:
                os.close(dfd)
        finally:
            os.close(fd)
            if staged:
                staged.unlink(missing_ok=True)
            shutil.rmtree(jobdir, ignore_errors=True)
        return result

    def _open_input(self, job: dict[str, Any]) -> tuple[int, Path | None]:
        """A read-only descriptor on the input, and the staged copy to remove (or None).

        A local file readable by anyone is passed as is; anything else (a remote replica, read with
        the facility's settings; a file only the endpoint may read) is copied to a file owned by
        the sandbox user first. The sandbox only ever gets the descriptor.
        """
        errors = []
        for url, via in job["candidates"]:
            try:
                local = url[len("file://"):] if url.startswith("file://") else url if "://" not in url else None
                if local is not None and via in (None, "local"):  # a local replica: no copy if readable
                    fd = os.open(local, os.O_RDONLY | os.O_NOCTTY)
                    st = os.fstat(fd)
                    if not stat.S_ISREG(st.st_mode):
                        os.close(fd)
                        raise OSError(f"{local} is not a regular file")
                    if st.st_mode & stat.S_IROTH or self.uid is None:
                        return fd, None
                    with os.fdopen(fd, "rb") as src:
                        return self._stage(src)
                import fsspec

                reader, opts = url, {}
                if via:
                    from casa_data.paths import get_path

                    path = get_path(via)
                    reader, opts = path.reader_url(url), path.storage_options(url)
                with fsspec.open(reader, "rb", **opts) as src:
                    return self._stage(src)
            except Exception as err:  # noqa: BLE001
                errors.append(f"{url}: {_one_line(err)}")
        raise OSError("; ".join(errors) or "no replica to read")

    def _stage(self, src) -> tuple[int, Path]:
        path = self.staging / f"in-{os.urandom(12).hex()}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, 4 << 20)
        if self.uid is not None:
            os.chown(path, self.uid, self.gid)
        os.chmod(path, 0o400)
        return os.open(path, os.O_RDONLY), path

    def _upload(self, req: dict[str, Any], obj: str, dfd: int) -> int:
        out = req["output"]
        fd = os.open(obj, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise OSError("the output is not a regular file")
            if out["kind"] == "local":
                d = Path(out["dir"])
                tmp = d / f".{obj}.{os.urandom(4).hex()}.tmp"
                with open(tmp, "wb") as dst:
                    shutil.copyfileobj(f, dst, 4 << 20)
                os.replace(tmp, d / obj)  # atomic: a listed object is always complete
            else:
                s3_admin(self.settings).upload_fileobj(f, out["bucket"], obj)
        return st.st_size

    # -- ending ----------------------------------------------------------------------------------
    def _maybe_finish(self, request_id: str) -> None:
        req = self.store.request(request_id)
        if req is None or req["status"] in DONE or self.store.remaining(request_id):
            return
        ok = req["files_completed"] > 0 or req["files"] == 0
        self.store.set_status(request_id, "Complete" if ok else "Fatal")

    def shutdown(self) -> None:
        self._closing = True
        self.queue.close()
        for w in self.workers:
            if w is not None:
                w.kill()
        shutil.rmtree(self.base, ignore_errors=True)
        shutil.rmtree(self.staging, ignore_errors=True)


def _one_line(err: BaseException, limit: int = 400) -> str:
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
