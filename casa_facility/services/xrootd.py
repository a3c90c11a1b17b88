"""An XRootD origin and an XCache (proxy file cache) in front of it, on 127.0.0.1 only.

>>> from casa_facility.services.xrootd import XRootDStack
>>> with XRootDStack(data_dir="/path/to/files") as stack:     # served as /store/...
...     token = stack.issuer.mint("storage.read:/")
...     stack.xcache_url                                     # root://127.0.0.1:<port>
...     stack.client_env()                                   # X509_CERT_DIR, XRD_* for clients

* xrootd 5.5 binds every interface and has no listen-address directive, so each server runs with
  a tiny ``LD_PRELOAD`` shim (compiled once with gcc, cached) that rewrites wildcard binds to
  127.0.0.1 / ::ffff:127.0.0.1.
* The XCache accepts only ztn logins (token over TLS) with tokens the stack's :class:`TestIssuer`
  signed; the issuer's keys are pre-seeded into the scitokens key cache (no network).
* The origin takes tokens too, from the same issuer, for its own audience (``casa-origin``) and
  for the XCache's: users fail over to it with their token, and the XCache logs in to it with a
  service token of its own (audience ``casa-origin``, in its work directory). Nothing reads it
  without a token.
* As root, servers run as the ``xrootd`` user (``-R``), which owns the run, cache and key dirs.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from casa_data.errors import ServiceError
from casa_facility.services.base import LOOPBACK, Part, Service, free_port, port_open
from casa_facility.services.pki import PKI, TestIssuer, make_test_pki

__all__ = ["XRootDOrigin", "XCache", "XRootDStack", "bind_shim", "shared_pki", "XROOTD_INSTALL_HINT"]

XROOTD_INSTALL_HINT = (
    "apt-get install --no-install-recommends xrootd-server xrootd-server-plugins "
    "xrootd-client xrootd-client-plugins xrootd-scitokens-plugins"
)
RUN_AS = "xrootd"  # the system user the Debian package creates
ORIGIN_TOKEN_DAYS = 30  # lifetime of the XCache's service token for the origin (renewed at each start)

_SHIM_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
/* casa: rewrite wildcard binds to loopback so servers are reachable from this host only. */
typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);
int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static bind_fn real = 0;
    if (!real) real = (bind_fn)dlsym(RTLD_NEXT, "bind");
    if (addr && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in a; memcpy(&a, addr, sizeof a);
        if (a.sin_addr.s_addr == htonl(INADDR_ANY)) {
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return real(fd, (const struct sockaddr *)&a, sizeof a);
        }
    } else if (addr && addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 a; memcpy(&a, addr, sizeof a);
        if (IN6_IS_ADDR_UNSPECIFIED(&a.sin6_addr)) {
            inet_pton(AF_INET6, "::ffff:127.0.0.1", &a.sin6_addr);
            return real(fd, (const struct sockaddr *)&a, sizeof a);
        }
    }
    return real(fd, addr, len);
}
"""


def bind_shim() -> Path:
    """Path of the loopback bind shim, compiled with gcc on first use and cached by source hash."""
    digest = hashlib.sha256(_SHIM_C.encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "casa"
    so = cache / f"bindlo-{digest}.so"
    if so.is_file():
        return so
    gcc = shutil.which("gcc") or shutil.which("cc")
    if not gcc:
        raise ServiceError(
            "the loopback bind shim for xrootd needs a C compiler; install it with: "
            "apt-get install gcc libc6-dev (make test installs it)"
        )
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "bindlo.c"
        src.write_text(_SHIM_C)
        out = Path(tmp) / "bindlo.so"
        res = subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-o", str(out), str(src), "-ldl"],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise ServiceError(f"compiling the bind shim failed (is libc6-dev installed?):\n{res.stderr}")
        os.chmod(out, 0o755)
        shutil.move(str(out), so)  # atomic enough: same content for concurrent builders
    return so


def _give_to_server(*paths: Path) -> None:
    """Make ``paths`` owned by the run-as user when we are root (xrootd refuses to run as root)."""
    if os.geteuid() != 0:
        return
    pw = pwd.getpwnam(RUN_AS)
    for p in paths:
        names = [str(p)]
        for root, dirs, files in os.walk(p):
            names += [os.path.join(root, n) for n in dirs + files]
        for name in names:
            try:
                os.lchown(name, pw.pw_uid, pw.pw_gid)
            except FileNotFoundError:  # a server's runtime entry vanished meanwhile
                pass


def _check_reachable(path: Path, what: str) -> None:
    """Fail clearly when the run-as user cannot reach ``path`` (a 0700 parent such as pytest's)."""
    if os.geteuid() != 0:
        return
    for parent in [*reversed(path.resolve().parents), path.resolve()]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            raise ServiceError(
                f"xrootd runs as user {RUN_AS!r} and cannot reach the {what} {path}: {parent} has mode "
                f"{mode & 0o7777:04o}; use a directory under a world-traversable one (e.g. /tmp), "
                f"or chmod o+x {parent}")


def _workdir_base() -> str:
    """Where to create work directories: $TMPDIR if the run-as user can traverse it, else /tmp."""
    base = tempfile.gettempdir()
    try:
        _check_reachable(Path(base), "temporary directory")
        return base
    except ServiceError:
        return "/tmp"


class _XRootDServer(Service):
    """Common parts: config file, ``-R xrootd`` when root, loopback shim, TCP readiness."""

    binary = "xrootd"
    install_hint = XROOTD_INSTALL_HINT
    startup_timeout = 20.0

    def __init__(self, workdir: str | os.PathLike, port: int | None = None):
        super().__init__(workdir)
        self.port = port or 0
        self.extra_env: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"root://{LOOPBACK}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / f"{self.name}.cfg"

    def config(self) -> str:  # pragma: no cover - subclasses
        raise NotImplementedError

    def prepare(self) -> None:
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(RUN_AS)
            except KeyError:
                raise ServiceError(f"user {RUN_AS!r} is missing; install it with: {XROOTD_INSTALL_HINT}") from None
        if not self.port or port_open(self.port):
            self.port = free_port()
        (self.workdir / "run").mkdir(exist_ok=True)
        self.config_path.write_text(self.config())
        os.chmod(self.workdir, 0o755)
        _check_reachable(self.workdir, "work directory")
        _give_to_server(self.workdir)  # run dir, cache, keys; also xrootd's home dir <workdir>/<name>

    def command(self) -> list[str]:
        argv = [self.check_binary(), "-c", str(self.config_path), "-n", self.name]
        if os.geteuid() == 0:
            argv += ["-R", RUN_AS]
        return argv

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["LD_PRELOAD"] = str(bind_shim())
        env.update(self.extra_env)
        return env

    def is_ready(self) -> bool:
        return port_open(self.port)

    def _prepare_tokens(self, issuer: TestIssuer, pki: PKI, audiences: list[str], base_path: str) -> None:
        """Offline issuer keys and the scitokens config, readable by the run-as user."""
        xdg = self.workdir / "xdg-cache"
        issuer.seed_keycache(xdg)
        self.extra_env["XDG_CACHE_HOME"] = str(xdg)
        (self.workdir / "scitokens.cfg").write_text(
            f"[Global]\naudience = {', '.join(audiences)}\n\n"
            f"[Issuer casa-test]\nissuer = {issuer.issuer}\n"
            f"base_path = {base_path}\ndefault_user = {RUN_AS}\n"
        )
        _give_to_server(xdg, pki.server_key, pki.server_cert)

    def _token_auth(self, pki: PKI) -> str:
        """Config lines: ztn logins over TLS, SciTokens authorization."""
        return (
            f"xrd.tls {pki.server_cert} {pki.server_key}\n"
            f"xrd.tlsca certdir {pki.ca_dir}\n"
            "xrootd.seclib libXrdSec.so\nsec.protocol ztn\nsec.protbind * only ztn\n"
            "ofs.authorize 1\n"
            f"ofs.authlib libXrdAccSciTokens.so config={self.workdir / 'scitokens.cfg'}\n"
        )

    def _common(self) -> str:
        run = self.workdir / "run"
        return (f"xrd.port {self.port}\nall.adminpath {run}\nall.pidpath {run}\n"
                "xrootd.trace emsg login stall redirect\nxrd.trace conn\n")


ORIGIN_AUDIENCE = "casa-origin"


class XRootDOrigin(_XRootDServer):
    """An XRootD server exporting ``data_dir`` as ``export`` (``/store`` by default).

    With an ``issuer`` and a ``pki`` it accepts only ztn logins with that issuer's tokens for one
    of ``audiences``; without, it is open (loopback only; for benchmarks of the cache alone).
    """

    name = "xrootd-origin"

    def __init__(self, data_dir: str | os.PathLike, workdir: str | os.PathLike, port: int | None = None,
                 export: str = "/store", issuer: TestIssuer | None = None, pki: PKI | None = None,
                 audiences: list[str] | None = None):
        super().__init__(workdir, port)
        self.data_dir = Path(data_dir).resolve()
        self.export = "/" + export.strip("/")
        self.issuer, self.pki = issuer, pki
        self.audiences = audiences or [ORIGIN_AUDIENCE]
        if (issuer is None) != (pki is None):
            raise ServiceError("an origin with token auth needs both an issuer and a PKI")

    def prepare(self) -> None:
        if not self.data_dir.is_dir():
            raise ServiceError(f"origin data directory {self.data_dir} does not exist")
        _check_reachable(self.data_dir, "data directory")
        # The export lives under localroot; a symlink serves data_dir without copying it.
        link = self.workdir / "localroot" / self.export.lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(self.data_dir, target_is_directory=True)
        if self.issuer is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._prepare_tokens(self.issuer, self.pki, self.audiences, self.export)
        super().prepare()

    def config(self) -> str:
        cfg = self._common() + f"all.export {self.export}\noss.localroot {self.workdir / 'localroot'}\n"
        return cfg + (self._token_auth(self.pki) if self.issuer is not None else "")


class XCache(_XRootDServer):
    """An XCache (pss + pfc) in front of ``origin`` that requires ztn tokens from ``issuer``.

    ``tuning`` overrides pfc settings (``blocksize``, ``prefetch``, ``ram``); ``auth=False`` serves
    without tokens (for benchmarks that measure the cache alone).
    """

    name = "xcache"

    def __init__(self, origin: XRootDOrigin, workdir: str | os.PathLike, issuer: TestIssuer | None = None,
                 pki: PKI | None = None, port: int | None = None, auth: bool = True, **tuning: Any):
        super().__init__(workdir, port)
        self.origin = origin
        self.issuer = issuer
        self.pki = pki
        self.auth = auth
        self.tuning = {"ram": "1g", "blocksize": "1M", "prefetch": 10, **tuning}
        self.origin_token_expires: float | None = None  # when the service token for the origin ends
        if auth and (issuer is None or pki is None):
            raise ServiceError("an XCache with token auth needs an issuer and a PKI")

    @property
    def cache_dir(self) -> Path:
        """The cache's local root: cached files appear at ``<cache_dir>/<lfn>`` (+ ``.cinfo``)."""
        return self.workdir / "cache"

    def prepare(self) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        if self.auth:
            self._prepare_tokens(self.issuer, self.pki, [self.issuer.audience], self.origin.export)
        if self.origin.issuer is not None:  # log in to the origin with a service token of our own
            token = self.workdir / "origin-token"
            token.write_text(self.origin.issuer.mint("storage.read:/", lifetime=ORIGIN_TOKEN_DAYS * 86400,
                                                     sub="casa-xcache", audience=ORIGIN_AUDIENCE))
            self.origin_token_expires = time.time() + ORIGIN_TOKEN_DAYS * 86400
            os.chmod(token, 0o600)
            _give_to_server(token)
            self.extra_env.update(BEARER_TOKEN_FILE=str(token), X509_CERT_DIR=str(self.origin.pki.ca_dir))
        super().prepare()
        _give_to_server(self.cache_dir)

    def env(self) -> dict[str, str]:
        env = super().env()
        if "BEARER_TOKEN_FILE" in self.extra_env:  # the service token, never a user's
            env.pop("BEARER_TOKEN", None)
        return env

    def config(self) -> str:
        t = self.tuning
        cfg = self._common() + (
            f"all.export {self.origin.export}\n"
            "ofs.osslib libXrdPss.so\npss.cachelib libXrdPfc.so\n"
            f"pss.origin {LOOPBACK}:{self.origin.port}\n"
            f"oss.localroot {self.cache_dir}\n"
            f"pfc.ram {t['ram']}\npfc.blocksize {t['blocksize']}\npfc.prefetch {t['prefetch']}\n"
            "pfc.diskusage 0.90 0.95\npfc.trace info\n"
            # Default retries make a cold read hang ~9 minutes when the origin is down.
            "pss.setopt ConnectionRetry 1\npss.setopt RequestTimeout 30\n"
        )
        if self.auth:
            cfg += self._token_auth(self.pki)
        return cfg


def _pki_at(d: Path) -> PKI:
    return PKI(d / "ca.pem", d / "cadir", d / "server.pem", d / "server.key")


def _usable(d: Path) -> bool:
    """``d`` holds our PKI: owned by us, not writable by others, certificates valid for 2+ days."""
    import datetime as dt

    from cryptography import x509

    try:
        st = d.stat()
        if st.st_uid != os.getuid() or st.st_mode & 0o022:
            return False
        pki = _pki_at(d)
        cert = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
        left = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
        return left > dt.timedelta(days=2) and pki.server_key.is_file() and any(pki.ca_dir.glob("*.0"))
    except (OSError, ValueError):
        return False


def shared_pki() -> PKI:
    """The test CA and localhost certificate every stack of this user shares, made on first use.

    One CA for all stacks (tests, benchmarks, the facility) because an XRootD client reads its CA
    directory once per process: a second CA in the same process would fail TLS. It lives in
    ``<tmp>/casa-xrootd-pki-<uid>`` (the ``xrootd`` user must read the server key) and is renewed
    when it expires within 2 days.
    """
    d = Path(_workdir_base()) / f"casa-xrootd-pki-{os.getuid()}"
    if _usable(d):
        return _pki_at(d)
    tmp = Path(tempfile.mkdtemp(prefix=d.name + ".", dir=d.parent))
    os.chmod(tmp, 0o755)
    make_test_pki(tmp)
    _give_to_server(tmp / "server.key", tmp / "server.pem")
    if d.exists() or d.is_symlink():
        if _usable(d):  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
            return _pki_at(d)
        if d.is_symlink() or d.stat().st_uid != os.getuid():
            raise ServiceError(f"{d} exists and is not ours; remove it (it should hold casa's test CA)")
        shutil.rmtree(d)
    try:
        os.rename(tmp, d)
    except OSError:  # lost a race: use the winner's
        shutil.rmtree(tmp, ignore_errors=True)
    return _pki_at(d)


class XRootDStack(Service):
    """Origin + XCache, both token-protected, + test issuer and PKI, in one 0755 work directory.

    ``auth=False``: neither takes tokens; ``origin_auth=False``: only the XCache does (the origin
    is then open on loopback and the XCache reads it without TLS).

    A :class:`Service` whose two parts are the servers' own launchers: ``start()`` brings both up
    (origin first; a failure stops what started) and ``stop()`` stops both; each server can also be
    stopped and restarted alone (``stack.origin.stop()``, ``stack.xcache.start()``) for fault tests.

    Stacks share one test CA (:func:`shared_pki`) unless given ``pki``: the XRootD client reads its
    CA directory once per process, so a second CA would fail TLS.
    """

    name = "xrootd-stack"

    def __init__(self, data_dir: str | os.PathLike[str], workdir: str | os.PathLike[str] | None = None,
                 auth: bool = True, audience: str = "casa-xcache", pki: PKI | None = None,
                 origin_auth: bool | None = None, **tuning: Any):
        super().__init__(workdir or tempfile.mkdtemp(prefix="casa-xrootd-", dir=_workdir_base()))
        self._own_workdir = workdir is None
        os.chmod(self.workdir, 0o755)  # mkdtemp's 0700 would lock the xrootd user out
        self.issuer = TestIssuer(audience=audience)
        self.pki = pki or shared_pki()
        origin_auth = auth if origin_auth is None else origin_auth
        self.origin = XRootDOrigin(data_dir, self.workdir / "origin", issuer=self.issuer if origin_auth else None,
                                   pki=self.pki if origin_auth else None, audiences=[ORIGIN_AUDIENCE, audience])
        self.xcache = XCache(self.origin, self.workdir / "xcache", self.issuer if auth else None,
                             self.pki if auth else None, auth=auth, **tuning)

    @property
    def origin_url(self) -> str:
        return self.origin.url

    @property
    def xcache_url(self) -> str:
        return self.xcache.url

    @property
    def cache_dir(self) -> Path:
        return self.xcache.cache_dir

    def client_env(self) -> dict[str, str]:
        """Environment a client needs: the CA directory and fail-fast connection settings."""
        return {"X509_CERT_DIR": str(self.pki.ca_dir), "XRD_CONNECTIONRETRY": "1",
                "XRD_CONNECTIONWINDOW": "5", "XRD_STREAMERRORWINDOW": "0"}

    def casa_config(self) -> dict:
        """A casa config mapping: ``/store/`` via this XCache, with its cache dir and CA dir."""
        return {
            "site": "casa-xrootd-stack",
            "sites": {"casa-xrootd-stack": {
                "prefer": ["xcache", "xrootd", "local"],
                "rules": [{"prefix": "/store/", "url": f"{self.xcache_url}//store/", "via": "xcache"}],
            }},
            "paths": {"xcache": {"ca_dir": str(self.pki.ca_dir), "cache_dir": str(self.cache_dir),
                                 "endpoint": self.xcache_url},
                      "xrootd": {}},
        }

    def daemons(self) -> list[Part]:
        return [self.origin, self.xcache]

    def cleanup(self) -> None:
        """Stop and remove the work directory (if this stack created it)."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"<XRootDStack origin={self.origin_url} xcache={self.xcache_url} workdir={self.workdir}>"
