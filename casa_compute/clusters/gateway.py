"""``CasaGatewayCluster``: a ``dask_gateway.GatewayCluster`` with casa's defaults.

* The gateway is found in casa's configuration (``compute: {gateway: {address, proxy_address,
  ca}}``, which ``casa facility up`` writes) or dask config ``gateway.*``; HTTPS is verified
  against that CA.
* Authentication is the WLCG bearer token casa finds for data access (:class:`BearerAuth`): one
  token for data and compute. The token is forwarded to the workers (:class:`TokenPlugin`).
* Elastic by default: ``adapt(minimum=0, maximum=N)`` right after the cluster starts.
* The user's environment on the workers, before the first task: ``pip=[...]`` (installed as
  distributed's ``PipInstall`` does, but with ``--target`` into the cluster's own directory, so the
  shared environment never changes) and ``upload=[paths]`` (local modules or directories, put on
  ``sys.path``); both also on the scheduler, which unpickles the task graph.

>>> import casa_compute
>>> with casa_compute.cluster("gateway", worker_cores=1, upload=["mymodule.py"]) as c:
...     client = c.get_client()
"""

from __future__ import annotations

import hashlib
import io
import os
import ssl
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from dask_gateway import Gateway, GatewayCluster
from dask_gateway.auth import GatewayAuth
from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

from .base import ClusterError, ensure_config, find_token, setting

__all__ = ["CasaGatewayCluster", "CasaGateway", "BearerAuth", "UploadPlugin", "GatewayRefused",
           "gateway_settings", "list_clusters"]


class GatewayRefused(ClusterError, ValueError):
    """The gateway refused a request (an option over a limit, another user's cluster, a bad
    token); the message is the gateway's. A ValueError too, as dask-gateway raises."""


def gateway_settings() -> dict[str, Any]:
    """``address``, ``proxy_address``, ``ca``: casa config ``compute.gateway``, else dask config
    ``gateway.address``/``gateway.proxy-address`` and ``casa-compute.gateway.ca``."""
    import dask

    from casa_data.config import get_config

    ensure_config()
    out = dict(get_config().compute.get("gateway") or {})
    out.setdefault("address", dask.config.get("gateway.address", None))
    out.setdefault("proxy_address", dask.config.get("gateway.proxy-address", None))
    out.setdefault("ca", setting("ca", "gateway"))
    if not out.get("address"):
        raise ClusterError("no Dask Gateway is configured: run `casa facility up`, or set "
                           "compute.gateway.address in casa's config (or gateway.address in dask's)")
    return out


class BearerAuth(GatewayAuth):
    """``Authorization: Bearer <token>`` with the WLCG token casa finds (``token="auto"``: the
    discovery of data access) or the token in the file ``token``. The token is read at each
    request, so a renewed token file is picked up; it never appears in a repr."""

    def __init__(self, token: str | os.PathLike[str] | None = "auto", **kwargs: Any):
        self._path = token

    def _value(self) -> str:
        if self._path == "auto":
            from casa_data.tokens import require_token

            return require_token("the Dask Gateway").value()
        tok = find_token(self._path)
        if tok is None:
            raise ClusterError("the Dask Gateway needs a bearer token and none was given")
        return tok.read_text().strip()

    def pre_request(self, resp: Any) -> tuple[dict[str, str], None]:
        return {"Authorization": f"Bearer {self._value()}"}, None

    def __repr__(self) -> str:
        return "<BearerAuth token=***>"


class CasaGateway(Gateway):
    """A gateway client that verifies the gateway's HTTPS certificate against ``ca``."""

    def __init__(self, address: str | None = None, proxy_address: str | None = None,
                 public_address: str | None = None, auth: Any = None, asynchronous: bool = False,
                 loop: Any = None, ca: str | None = None, token: str | os.PathLike[str] | None = "auto"):
        if address is None:
            cfg = gateway_settings()
            address, proxy_address = cfg["address"], proxy_address or cfg.get("proxy_address")
            ca = ca or cfg.get("ca")
        super().__init__(address=address, proxy_address=proxy_address, public_address=public_address,
                         auth=auth or BearerAuth(token), asynchronous=asynchronous, loop=loop)
        self.ca = ca
        if ca and address.startswith("https"):
            self._request_kwargs["ssl"] = ssl.create_default_context(cafile=str(ca))

    async def _request(self, method: str, url: str, json: Any = None) -> Any:
        # Upstream's, except: the bearer token goes with the first request (no 401 round trip),
        # and every refusal is a GatewayRefused with the gateway's own message.
        import aiohttp
        from dask_gateway.client import GatewayClusterError, GatewayServerError

        if self._session is None:
            self._session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        headers = self.auth.pre_request(None)[0] if isinstance(self.auth, BearerAuth) else None
        resp = await self._session.request(method, url, json=json, headers=headers, **self._request_kwargs)
        if resp.status == 401 and headers is None:
            headers, context = self.auth.pre_request(resp)
            resp = await self._session.request(method, url, json=json, headers=headers, **self._request_kwargs)
            self.auth.post_response(resp, context)
        if resp.status < 400:
            return resp
        try:
            msg = (await resp.json())["error"]
        except Exception:  # noqa: BLE001 - not the gateway's JSON: keep the text
            msg = (await resp.text()).strip() or resp.reason
        where = url.split("/api/", 1)[-1].split("?")[0]
        if resp.status == 409:
            raise GatewayClusterError(msg)
        if resp.status >= 500:
            raise GatewayServerError(msg)
        raise GatewayRefused(f"the gateway refused {method} {where}: {resp.status} {msg}")

    def close(self) -> Any:
        if getattr(self, "_casa_closed", False):  # upstream's second close (from __del__) raises
            return None
        self._casa_closed = True
        return super().close()

    def connect(self, cluster_name: str, shutdown_on_close: bool = False) -> CasaGatewayCluster:
        """The running cluster ``cluster_name`` (of this token's user), from any process."""
        return CasaGatewayCluster.from_name(cluster_name, shutdown_on_close=shutdown_on_close,
                                            address=self.address, proxy_address=self.proxy_address,
                                            public_address=self._public_address, auth=self.auth,
                                            asynchronous=self.asynchronous, loop=self.loop, ca=self.ca)


class CasaGatewayCluster(GatewayCluster):
    """A gateway cluster with casa's defaults (see the module docstring).

    Parameters
    ----------
    adapt : tuple of (minimum, maximum) or None
        Adaptive bounds applied at start (default ``(0, casa-compute.gateway.max-workers)``);
        None leaves the cluster at zero workers until ``scale``/``adapt``.
    pip : list of str
        Packages installed on every worker (and the scheduler) before its first task, into the
        cluster's own directory (``pip install --target``); the package index must be reachable.
    upload : list of paths
        Local ``.py`` files, packages or directories copied to every worker and put on its
        ``sys.path`` before its first task.
    token : path or "auto"
        The bearer token for the gateway and the workers.
    **options
        Cluster options of the gateway (``worker_cores``, ``worker_memory`` in GiB,
        ``environment``, ``image``, ``idle_timeout``, ``idle_worker_timeout``, ``max_workers``);
        defaults from ``casa-compute.gateway.options``. The gateway refuses values over the
        facility's limits with an error naming the option and the limit.
    """

    def __init__(self, *, address: str | None = None, proxy_address: str | None = None,
                 ca: str | None = None, token: str | os.PathLike[str] | None = "auto",
                 adapt: tuple[int, int] | None | str = "default", pip: list[str] | None = None,
                 upload: list[str | os.PathLike[str]] | None = None, shutdown_on_close: bool = True,
                 asynchronous: bool = False, loop: Any = None, **options: Any):
        ensure_config()
        opts = {**(setting("options", "gateway") or {}), **options}
        self._casa_token = token
        self._casa_plugins = _plugins(pip, upload)
        self._casa_ca = ca
        super().__init__(address=address, proxy_address=proxy_address, auth=None,
                         cluster_options=None, shutdown_on_close=shutdown_on_close,
                         asynchronous=asynchronous, loop=loop, **opts)
        try:
            if not asynchronous:
                # On the scheduler, so every worker (also those adapt adds later, and workers of
                # clients in other processes) gets them before its first task. Through the
                # cluster's own scheduler connection: a Client would cost a second or two.
                self.gateway.sync(self._casa_register, self._casa_plugins + _token_plugins(token))
            if adapt == "default" and not asynchronous:
                # Elastic by default; a facility whose limit is lower gets its limit (no error).
                import warnings

                from dask_gateway.client import GatewayWarning

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", GatewayWarning)
                    GatewayCluster.adapt(self, minimum=0, maximum=int(setting("max-workers", "gateway") or 4))
            elif adapt is not None and not asynchronous:
                self.adapt(minimum=adapt[0], maximum=adapt[1])
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_name(cls, cluster_name: str, shutdown_on_close: bool = False, address: str | None = None,
                  proxy_address: str | None = None, public_address: str | None = None, auth: Any = None,
                  asynchronous: bool = False, loop: Any = None, ca: str | None = None,
                  token: str | os.PathLike[str] | None = "auto") -> CasaGatewayCluster:
        """Connect to the running cluster ``cluster_name`` (of this token's user)."""
        self = object.__new__(cls)
        self._casa_token, self._casa_plugins, self._casa_ca = token, [], ca
        self._init_internal(address=address, proxy_address=proxy_address, public_address=public_address,
                            auth=auth, asynchronous=asynchronous, loop=loop,
                            shutdown_on_close=shutdown_on_close, name=cluster_name)
        return self

    def _init_internal(self, address=None, proxy_address=None, public_address=None, auth=None,
                       cluster_options=None, cluster_kwargs=None, shutdown_on_close=None,
                       asynchronous=False, loop=None, name=None):
        # Upstream builds a plain Gateway here; casa's verifies HTTPS against the facility CA
        # and sends the bearer token. The rest is upstream's _init_internal.
        import weakref

        self.status = "created"
        self.shutdown_on_close = shutdown_on_close
        self._instances.add(self)
        self.gateway = CasaGateway(address=address, proxy_address=proxy_address,
                                   public_address=public_address, auth=auth, asynchronous=asynchronous,
                                   loop=loop, ca=self._casa_ca, token=self._casa_token)
        self.scheduler_info = {}
        self.scheduler_comm = None
        self._watch_worker_status_task = None
        self._clients = weakref.WeakSet()
        self._cluster_options = cluster_options
        self._cluster_kwargs = cluster_kwargs or {}
        self._start_task = None
        self._stop_task = None
        self.name = name
        self.scheduler_address = None
        self.dashboard_link = None
        self.security = None
        if name is not None:
            self.status = "starting"
        if not self.asynchronous:
            try:
                self.gateway.sync(self._start_internal)
            except BaseException:
                self.status = "closed"  # nothing left to close later (nor in __del__)
                self.gateway.close()
                raise

    async def _casa_register(self, plugins: list[Any]) -> None:
        from distributed.diagnostics.plugin import _get_plugin_name
        from distributed.protocol.pickle import dumps

        for p in plugins:
            name = getattr(p, "name", None) or _get_plugin_name(p)
            if isinstance(p, SchedulerPlugin):
                await self.scheduler_comm.register_scheduler_plugin(plugin=dumps(p), name=name,
                                                                    idempotent=False)
            else:
                out = await self.scheduler_comm.register_worker_plugin(
                    plugin=dumps(p), name=name, idempotent=bool(getattr(p, "idempotent", False)))
                bad = [r for r in out.values() if r.get("status") == "error"]
                if bad:
                    raise ClusterError(f"worker plugin {name} failed on {len(bad)} worker(s)")

    def adapt(self, minimum: int | None = None, maximum: int | None = None, active: bool = True,
              **kwargs: Any) -> Any:
        """Adaptive scaling between ``minimum`` and ``maximum`` workers (over the cluster's
        ``max_workers`` option: :class:`ClusterError`, naming the limit; the gateway then uses
        the limit)."""
        return self._checked(super().adapt, minimum=minimum, maximum=maximum, active=active, **kwargs)

    def scale(self, n: int, **kwargs: Any) -> Any:
        """Scale to ``n`` workers (over the cluster's ``max_workers``: :class:`ClusterError`)."""
        return self._checked(super().scale, n, **kwargs)

    @staticmethod
    def _checked(call: Any, *args: Any, **kwargs: Any) -> Any:
        import warnings

        from dask_gateway.client import GatewayWarning

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", GatewayWarning)
            out = call(*args, **kwargs)
        for w in caught:
            if issubclass(w.category, GatewayWarning):
                raise GatewayRefused(f"refused by the gateway's limit: {w.message}")
        return out

    def __repr__(self) -> str:
        return (f"<CasaGatewayCluster {getattr(self, 'name', None)} status={getattr(self, 'status', None)} "
                f"dashboard={getattr(self, 'dashboard_link', None)}>")


def list_clusters(**kwargs: Any) -> list[Any]:
    """The running clusters of this token's user (``ClusterReport`` objects)."""
    with CasaGateway(**kwargs) as gw:
        return list(gw.list_clusters())


# -- worker plugins -------------------------------------------------------------------------------
def _pack(paths: list[str | os.PathLike[str]]) -> tuple[bytes, list[str]]:
    """A zip of ``paths`` and the entries to put on ``sys.path`` once it is unpacked."""
    buf = io.BytesIO()
    entries: list[str] = []
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for p in (Path(q).expanduser().resolve() for q in paths):
            if not p.exists():
                raise ClusterError(f"upload: {p} does not exist")
            if p.is_file():
                z.write(p, f"files/{p.name}")
                entries.append("files")
                continue
            package = (p / "__init__.py").is_file()
            root = f"pkgs/{p.name}" if package else f"dirs/{p.name}"
            for f in sorted(p.rglob("*")):
                if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc":
                    z.write(f, f"{root}/{f.relative_to(p)}")
            entries.append("pkgs" if package else root)
    return buf.getvalue(), list(dict.fromkeys(entries))


def _unpack(data: bytes, entries: list[str], directory: str | os.PathLike[str]) -> None:
    import importlib

    base = Path(directory) / "casa-upload"
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        z.extractall(base)
    for e in entries:
        if str(base / e) not in sys.path:
            sys.path.insert(0, str(base / e))
    importlib.invalidate_caches()


class UploadPlugin(WorkerPlugin):
    """Unpacks local files and directories into the worker's directory and puts them on
    ``sys.path`` (a ``.py`` file or a package: its parent; another directory: itself)."""

    idempotent = True

    def __init__(self, paths: list[str | os.PathLike[str]], packed: tuple[bytes, list[str]] | None = None):
        self.data, self.entries = packed or _pack(paths)
        self.name = "casa-upload-" + hashlib.sha256(self.data).hexdigest()[:16]

    def setup(self, worker: Any) -> None:
        _unpack(self.data, self.entries, getattr(worker, "local_directory", None) or tempfile.gettempdir())


class UploadSchedulerPlugin(SchedulerPlugin):
    """The same files on the scheduler: it unpickles task graphs, so it imports the user's
    modules too."""

    def __init__(self, packed: tuple[bytes, list[str]]):
        self.data, self.entries = packed
        self.name = "casa-upload-" + hashlib.sha256(self.data).hexdigest()[:16]

    async def start(self, scheduler: Any) -> None:
        self._dir = tempfile.mkdtemp(prefix="casa-upload-")
        _unpack(self.data, self.entries, self._dir)


def _pip_install(packages: list[str], directory: str | os.PathLike[str]) -> None:
    """``pip install --target <directory>/casa-pip`` (once per directory: a lock, a marker) and
    that directory first on ``sys.path``. As distributed's PipInstall, but into the cluster's own
    directory: the shared environment of the workers is never changed."""
    import fcntl
    import importlib
    import subprocess

    target = Path(directory) / "casa-pip"
    target.mkdir(parents=True, exist_ok=True)
    marker = target / (".installed-" + hashlib.sha256("\n".join(packages).encode()).hexdigest()[:16])
    with open(target / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                                   "--target", str(target), *packages], capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"pip install {' '.join(packages)} failed: {proc.stderr.strip()[-2000:]}")
            marker.touch()
    if str(target) not in sys.path:
        sys.path.insert(0, str(target))
    importlib.invalidate_caches()


class PipPlugin(WorkerPlugin):
    """Installs ``packages`` on each worker before its first task (see :func:`_pip_install`)."""

    idempotent = True

    def __init__(self, packages: list[str]):
        self.packages = list(packages)
        self.name = "casa-pip-" + hashlib.sha256("\n".join(self.packages).encode()).hexdigest()[:16]

    def setup(self, worker: Any) -> None:
        _pip_install(self.packages, getattr(worker, "local_directory", None) or tempfile.gettempdir())


class PipSchedulerPlugin(SchedulerPlugin):
    """The same packages on the scheduler, which unpickles task graphs."""

    def __init__(self, packages: list[str]):
        self.packages = list(packages)
        self.name = "casa-pip-" + hashlib.sha256("\n".join(self.packages).encode()).hexdigest()[:16]

    async def start(self, scheduler: Any) -> None:
        import asyncio

        self._dir = tempfile.mkdtemp(prefix="casa-pip-")
        await asyncio.get_running_loop().run_in_executor(None, _pip_install, self.packages, self._dir)


def _plugins(pip: list[str] | None, upload: list[str | os.PathLike[str]] | None) -> list[Any]:
    out: list[Any] = []
    if pip:
        out += [PipSchedulerPlugin(list(pip)), PipPlugin(list(pip))]
    if upload:
        packed = _pack(list(upload))
        out += [UploadSchedulerPlugin(packed), UploadPlugin([], packed)]
    return out


def _token_plugins(token: Any = "auto") -> list[Any]:
    """The bearer-token plugin (named as ``casa_compute.run`` names it), if there is a token."""
    from casa_compute.report import TokenPlugin

    tok = find_token(token)
    if tok is None:
        return []
    plugin = TokenPlugin.from_file(tok)
    plugin.name = "casa-bearer-token"
    return [plugin]
