"""The transform sandbox: every transform is untrusted code, run as an unprivileged user.

A transform (a ``python`` function, a func_adl query, an uproot-raw query) runs in a *fork* of a
*worker*. A worker is started by the endpoint with a scrubbed environment (no S3 keys, no token,
no refresh token), imports the heavy modules, then drops privileges once, for good: to the
dedicated system user ``casa-transform`` (created with ``useradd`` if missing; no supplementary
groups). It then forks one child per input file, so nothing one transform does (monkeypatching,
threads, files in its temporary directory) is seen by the next; a fork of the warm worker costs
milliseconds. Each child:

* gets its input as an open file descriptor (``/proc/self/fd/N``) sent by the endpoint, which
  opened or staged the file: the child never walks a path of the facility;
* writes its output to a private job directory (owned by ``casa-transform``, mode 0700, in a
  root-only directory) that the endpoint then uploads, opening it with ``O_NOFOLLOW``;
* has no network (its own network namespace) and sees an empty ``/tmp``;
* runs with ``RLIMIT_AS``, ``RLIMIT_CPU``, ``RLIMIT_FSIZE`` and ``RLIMIT_CORE=0`` (``RLIMIT_NPROC``
  on the worker), ``PR_SET_PDEATHSIG`` and a wall-clock limit (killed with its process group);
* talks back in JSON only (the endpoint never unpickles what a sandboxed process sends).

Without root, the uid cannot change: the endpoint refuses to start unless told that transforms
may run as its own user (``same_user=True``: the client's own per-process endpoint, whose only
user is the one who started it); the environment is scrubbed and the limits apply either way.

Run as ``python -m casa_facility.servicex.sandbox FD`` by :class:`Worker` only.
"""

from __future__ import annotations

import errno
import json
import os
import pwd
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["SANDBOX_USER", "Limits", "SandboxError", "Worker", "ensure_user", "make_base"]

SANDBOX_USER = "casa-transform"
GiB = 1 << 30


class SandboxError(RuntimeError):
    """The sandbox cannot be set up; the message says what to do."""


@dataclass
class Limits:
    """Per-file limits of a transform (seconds, bytes)."""

    wall: float = 600.0            # wall clock per file
    cpu: int = 1200                # CPU seconds per file (RLIMIT_CPU)
    memory: int = 16 * GiB         # address space (RLIMIT_AS) of one transform
    output: int = 8 * GiB          # largest file a transform may write (RLIMIT_FSIZE)
    nproc: int = 512               # processes + threads of the sandbox user (RLIMIT_NPROC)


def ensure_user(name: str = SANDBOX_USER) -> tuple[int, int]:
    """``(uid, gid)`` of the sandbox user, created (system user, no home, no shell) if missing."""
    try:
        pw = pwd.getpwnam(name)
        return pw.pw_uid, pw.pw_gid
    except KeyError:
        pass
    if os.geteuid() != 0:
        raise SandboxError(f"the transform sandbox user {name!r} does not exist and only root can create it "
                           f"(useradd --system --user-group --no-create-home --shell /usr/sbin/nologin {name})")
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    r = subprocess.run([useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", name], capture_output=True, text=True)
    try:  # exit 9: created meanwhile by another endpoint: fine
        pw = pwd.getpwnam(name)
    except KeyError:
        raise SandboxError(f"could not create the transform sandbox user {name!r} with useradd "
                           f"(exit {r.returncode}): {r.stderr.strip()}") from None
    return pw.pw_uid, pw.pw_gid


def make_base(uid: int | None) -> Path:
    """A fresh root-only (0711: not listable) directory for the workers' and jobs' directories."""
    import tempfile

    _clean_stale(prefix="casa-sx-sandbox-")
    base = Path(tempfile.mkdtemp(prefix="casa-sx-sandbox-", dir="/tmp" if os.path.isdir("/tmp") else None))
    os.chmod(base, 0o711 if uid is not None else 0o700)
    owner_file(base)
    return base


def owner_file(d: Path) -> None:
    """Mark ``d`` as this endpoint's (its pid), so a later endpoint removes it if this one was killed."""
    (d / ".owner").write_text(str(os.getpid()))
    os.chmod(d / ".owner", 0o600)


def _clean_stale(prefix: str) -> None:
    """Remove the sandbox and staging directories of endpoints that died without cleaning up."""
    import glob
    import tempfile

    for d in glob.glob(os.path.join(tempfile.gettempdir(), prefix + "*")):
        try:
            st = os.lstat(d)
            if st.st_uid != os.geteuid() or not os.path.isdir(d) or os.path.islink(d):
                continue
            pid = int(Path(d, ".owner").read_text())
            os.kill(pid, 0)  # alive: not stale
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except (OSError, ValueError):
            continue


def private_dir(path: Path, uid: int | None, gid: int | None) -> Path:
    path.mkdir(mode=0o700)
    if uid is not None and os.geteuid() == 0:
        os.chown(path, uid, gid)
    return path


# -- the endpoint side ---------------------------------------------------------------------------
class WorkerDied(Exception):
    pass


class Worker:
    """One sandbox worker process; :meth:`run` one job at a time (the caller serialises)."""

    def __init__(self, base: Path, index: int, uid: int | None, gid: int | None, limits: Limits):
        self.base, self.uid, self.gid, self.limits = base, uid, gid, limits
        self.home = base / f"w{index}-{os.urandom(6).hex()}"
        private_dir(self.home, uid, gid)
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(self.home), "TMPDIR": str(self.home),
               "LANG": "C.UTF-8", "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
        cfg = {"uid": uid, "gid": gid, "home": str(self.home), "base": str(base), "limits": asdict(limits),
               "parent": os.getpid()}
        self.proc = subprocess.Popen([sys.executable, "-m", "casa_facility.servicex.sandbox", str(child.fileno()),
                                      json.dumps(cfg)], env=env, cwd=str(self.home), pass_fds=(child.fileno(),),
                                     stdin=subprocess.DEVNULL, close_fds=True)
        child.close()
        self.sock = parent
        self.ready = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 120.0) -> None:
        msg = _recv(self.sock, timeout)
        if msg is None or not msg.get("ready"):
            raise WorkerDied(f"the sandbox worker did not start: {msg and msg.get('error')}")
        self.ready = True

    def run(self, job: dict[str, Any], fd: int, jobdir: Path) -> dict[str, Any]:
        """Send ``job`` and its input descriptor; the result dict (raises WorkerDied)."""
        job = dict(job, jobdir=str(jobdir))
        try:
            _send(self.sock, job)
            socket.send_fds(self.sock, [b"F"], [fd])
        except OSError as err:
            raise WorkerDied(f"sending the job failed: {err}") from None
        msg = _recv(self.sock, self.limits.wall + 30)  # the worker enforces the wall limit itself
        if msg is None:
            raise WorkerDied("the sandbox worker died or stopped answering")
        return msg

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.sock.close()
        shutil.rmtree(self.home, ignore_errors=True)


def _send(sock: socket.socket, obj: dict[str, Any]) -> None:
    data = json.dumps(obj).encode()
    sock.sendall(struct.pack("!I", len(data)) + data)


def _recv_exact(sock: socket.socket, n: int, deadline: float | None) -> bytes | None:
    buf = b""
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                return None
        try:
            chunk = sock.recv(n - len(buf))
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk
    return buf


def _recv(sock: socket.socket, timeout: float | None = None, limit: int = 1 << 20) -> dict[str, Any] | None:
    deadline = None if timeout is None else time.monotonic() + timeout
    head = _recv_exact(sock, 4, deadline)
    if head is None:
        return None
    (n,) = struct.unpack("!I", head)
    if n > limit:
        return None
    data = _recv_exact(sock, n, deadline)
    if data is None:
        return None
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


# -- the worker side -----------------------------------------------------------------------------
def _prctl_pdeathsig() -> None:
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _blocked(path: str) -> str | None:
    """The top-most directory on ``path`` that other users cannot traverse (e.g. ``/root``)."""
    parts = os.path.realpath(path).split(os.sep)[1:]
    cur = ""
    for part in parts[:-1] or parts:
        cur += os.sep + part
        try:
            if not os.stat(cur).st_mode & 0o001:
                return cur
        except OSError:
            return None
    return None


def _private_mounts(home: str, base: str) -> None:
    """A private mount and network namespace for the worker (and so its transforms): no network
    at all (inputs come as descriptors, outputs go back through the endpoint), and

    * ``/tmp``, ``/var/tmp``, ``/dev/shm``, ``/run/lock`` become empty read-only tmpfs (nothing
      to read there, nowhere to write but the job directory), keeping only the sandbox's own base;
    * when the interpreter or the venv lives under a directory the sandbox user cannot traverse (a
      pyenv Python under ``/root``), that directory becomes a tmpfs holding only bind mounts of
      what Python needs: nothing else of it is visible.
    """
    import ctypes

    def first_below(block: str, path: str) -> str:
        return os.sep.join(path.split(os.sep)[: len(block.rstrip(os.sep).split(os.sep)) + 1])

    need = sorted({os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, *sys.path)
                   if p and os.path.isabs(p) and os.path.isdir(p)})
    by_block: dict[str, list[str]] = {}
    for d in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock"):
        if os.path.isdir(d) and not os.path.islink(d):
            by_block[os.path.realpath(d)] = []
    for p in need + [os.path.realpath(base)]:
        b = _blocked(p)
        blocks = [x for x in by_block if p.startswith(x + os.sep)]
        if b and b != p:
            blocks.append(b)
        for blk in blocks:
            keep = first_below(blk, p)
            if keep not in by_block.setdefault(blk, []):
                by_block[blk].append(keep)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]

    def mount(src, dst, fstype, flags, data=None):
        if libc.mount(src and src.encode(), dst.encode(), fstype and fstype.encode(), flags,
                      data and data.encode()) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"mount {src} on {dst}: {os.strerror(e)}")

    MS_BIND, MS_REC, MS_PRIVATE, MS_RDONLY, MS_REMOUNT = 4096, 16384, 1 << 18, 1, 32
    if libc.unshare(0x00020000 | 0x40000000) != 0:  # CLONE_NEWNS | CLONE_NEWNET: no network either
        e = ctypes.get_errno()
        raise SandboxError(f"the sandbox needs a private mount namespace (to hide {', '.join(by_block)}) and "
                           f"unshare failed: {os.strerror(e)}")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    for block, keeps in by_block.items():
        # Keep a handle on each directory to keep, cover the block, bind them back from the handle.
        fds = [(keep, os.open(keep, os.O_PATH | os.O_DIRECTORY)) for keep in keeps]
        mount("tmpfs", block, "tmpfs", 0, "mode=755,size=64k")
        for keep, fd in fds:
            os.makedirs(keep, 0o755, exist_ok=True)
            mount(f"/proc/self/fd/{fd}", keep, None, MS_BIND | MS_REC)
            os.close(fd)
        mount(None, block, None, MS_REMOUNT | MS_RDONLY | MS_BIND)


def _drop(uid: int | None, gid: int | None) -> None:
    if uid is None:
        return
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise SystemExit("the sandbox could not drop privileges")  # pragma: no cover


def _limit(res: int, value: int) -> None:
    import resource

    soft, hard = resource.getrlimit(res)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(res, (value, value))


def worker_main(fd: int, cfg: dict[str, Any]) -> None:
    import resource

    sock = socket.socket(fileno=fd)
    limits = Limits(**cfg["limits"])
    try:
        # Imports first (the venv may not be readable after the drop); dask without threads, so
        # that forking the warm worker is safe.
        import awkward  # noqa: F401
        import dask
        import uproot  # noqa: F401

        dask.config.set(scheduler="synchronous")
        import dask_awkward  # noqa: F401
        import func_adl_uproot  # noqa: F401
        import pyarrow.parquet  # noqa: F401

        from casa_facility.servicex import transform

        if cfg["uid"] is not None:
            _private_mounts(cfg["home"], cfg["base"])
        _drop(cfg["uid"], cfg["gid"])
        _prctl_pdeathsig()  # after the drop: changing credentials clears it
        if os.getppid() != cfg["parent"]:
            os._exit(0)
        _limit(resource.RLIMIT_CORE, 0)
        if cfg["uid"] is not None:
            _limit(resource.RLIMIT_NPROC, limits.nproc)
        os.chdir(cfg["home"])
        transform.warm(cfg["home"])
    except BaseException as err:  # noqa: BLE001 - reported to the endpoint
        _send(sock, {"ready": False, "error": f"{type(err).__name__}: {err}"})
        raise
    _send(sock, {"ready": True, "pid": os.getpid(), "uid": os.getuid()})
    while True:
        job = _recv(sock)
        if job is None:
            os._exit(0)
        try:
            _, fds, _, _ = socket.recv_fds(sock, 1, 1)
        except OSError:
            os._exit(0)
        if not fds:
            os._exit(0)
        try:
            result = _run_forked(job, fds[0], limits)
        finally:
            os.close(fds[0])
        _send(sock, result)


def _run_forked(job: dict[str, Any], fd: int, limits: Limits) -> dict[str, Any]:
    import resource

    r, w = os.pipe()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the transform: its own process group, limits, private job dir
        code = 0
        try:
            os.close(r)
            os.setpgid(0, 0)
            _prctl_pdeathsig()
            _limit(resource.RLIMIT_AS, limits.memory)
            _limit(resource.RLIMIT_CPU, limits.cpu)
            _limit(resource.RLIMIT_FSIZE, limits.output)
            os.environ["TMPDIR"] = os.environ["HOME"] = job["jobdir"]
            import tempfile

            tempfile.tempdir = job["jobdir"]
            os.chdir(job["jobdir"])
            from casa_facility.servicex.transform import run_file

            result = run_file(dict(job, input=f"/proc/self/fd/{fd}"))
        except BaseException as err:  # noqa: BLE001
            result = {"ok": False, "error": f"{type(err).__name__}: {err}"[:400]}
            code = 1
        try:
            data = json.dumps(result, default=str).encode()
            while data:
                data = data[os.write(w, data[:65536]):]
        finally:
            os._exit(code)
    os.close(w)
    chunks, deadline, timed_out = [], t0 + limits.wall, False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        if not select.select([r], [], [], left)[0]:
            continue
        chunk = os.read(r, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    try:
        os.killpg(pid, signal.SIGKILL)  # leftovers of the transform (threads, children)
    except OSError as err:
        if err.errno != errno.ESRCH:
            raise
    _, status = os.waitpid(pid, 0)
    if timed_out:
        return {"ok": False, "error": f"the transform took longer than {limits.wall:g} s (the wall-clock limit "
                                      "per file) and was stopped"}
    try:
        result = json.loads(b"".join(chunks))
        if isinstance(result, dict) and "ok" in result:
            return result
    except ValueError:
        pass
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        why = {signal.SIGXCPU: f"its CPU limit ({limits.cpu} s)", signal.SIGXFSZ: "its output size limit",
               signal.SIGKILL: "a kill (out of memory?)"}.get(sig, signal.Signals(sig).name)
        return {"ok": False, "error": f"the transform process was stopped by {why}"}
    return {"ok": False, "error": f"the transform process exited ({os.WEXITSTATUS(status)}) without a result"}


if __name__ == "__main__":
    worker_main(int(sys.argv[1]), json.loads(sys.argv[2]))
