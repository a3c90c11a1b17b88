"""``servicex.deliver`` (3.3, unmodified) with its gaps closed: the ServiceX delivery path's engine.

``casa_data.open(name, query=...)`` (or ``via="servicex"``) asks the registered ``servicex`` path
(:class:`casa_data.paths.servicex.ServiceXPath`), which calls :func:`deliver_query` here; the
Dataset over the outputs is built by :func:`casa_data.dataset.open_query`.

What this adds around the client, and why (see ../shared/notes/servicex.md):

1. **Health check first**: ``GET /servicex`` with a 3 s timeout (the client retries ~97 s against a
   dead endpoint); the codegen must be offered.
2. **Validation before submit**: the query is rendered and, for casa's codegens, translated here
   (func_adl_uproot), so a bad query fails in milliseconds naming the offending part.
3. **Cache repair**: a ``SUBMITTED`` record of a request the endpoint no longer has, or that ended
   with failures, is dropped (the client would silently re-attach to it); a completed record whose
   files were deleted from disk is dropped too (the client would return missing paths).
4. **No lost failures**: the client logs per-file failures in an asyncio callback and returns the
   good files as if all was well. After every delivery we read the request's status; failed files
   (and, from casa's endpoint, each file's error) raise :class:`~casa_data.errors.PartialResultError`
   whose ``.partial`` is a Dataset over the files that did succeed (``errors="skip"`` returns it).
5. **Fast local delivery**: the client sleeps 5 s between polls and ``deliver`` has no knob. For a
   loopback endpoint (or ``paths.servicex.poll_interval``) the two polling defaults of
   ``servicex.query_core.Query.__init__`` are set to 0.1 s for the duration of the call (under a
   lock, restored after; concurrent local deliveries in threads therefore take turns). Remote
   endpoints keep the client's 5 s.
6. **An endpoint that dies mid-request**: the client retries status calls for minutes. A watchdog
   probes ``/servicex`` every second; after ``paths.servicex.down_timeout`` s (default 30) without
   an answer the delivery is cancelled and a ServiceError names the endpoint and the request. An
   endpoint back within that time resumes the request (its state is in SQLite) and the call
   completes.

The endpoint is ``endpoint=``, else ``paths: {servicex: {endpoint: URL, token_file: PATH}}``, else
a casa endpoint started for this process (outputs under ``data_dir/servicex-endpoint``).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import sys
import threading
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..catalog import DatasetSpec, get_catalog
from ..config import get_config
from ..errors import AccessDeniedError, QueryError, ServiceError
from ..paths.local import looks_like_path

__all__ = ["deliver_query", "check_endpoint", "local_endpoint", "endpoint_url"]

log = logging.getLogger("casa_data.servicex")
_POLL_LOCK = threading.Lock()
_LOCAL: dict[str, Any] = {}


# -- endpoint ------------------------------------------------------------------------------------
def local_endpoint():
    """casa's endpoint for this process (started on first use, stopped at exit)."""
    from ..registry import Registry

    ServiceXEndpoint = Registry("local service", "casa.local_services", {}).load("servicex")
    if "sx" not in _LOCAL or not _LOCAL["sx"].running:
        opts = get_config().path_options("servicex")
        # Authenticated (a random refresh token only this process knows); its only user is this
        # process, so file lists may name any file or URL this user can read (not the state dir).
        sx = ServiceXEndpoint(get_config().data_path / "servicex-endpoint", workers=int(opts.get("workers", 2)),
                              data_roots=["/", "root://", "s3://", "http://", "https://"])
        log.info("starting a local ServiceX endpoint in %s", sx.workdir)
        _LOCAL["sx"] = sx.start()
        atexit.register(sx.stop)
    return _LOCAL["sx"]


def check_endpoint(url: str, timeout: float = 3.0) -> dict[str, Any]:
    """``GET /servicex`` within ``timeout``; raises :class:`ServiceError` saying what to do."""
    import httpx

    hint = ("start one with `casa data servicex serve`, or set paths.servicex.endpoint in your casa "
            "config (or pass endpoint=)")
    if "http" not in _LOCAL:  # one client: its TLS context costs ~35 ms to build
        _LOCAL["http"] = httpx.Client()
    try:
        r = _LOCAL["http"].get(url.rstrip("/") + "/servicex", timeout=timeout)
    except httpx.HTTPError as err:
        raise ServiceError(f"the ServiceX endpoint {url} does not answer ({type(err).__name__}: {err}); {hint}") from None
    if r.status_code != 200:
        raise ServiceError(f"the ServiceX endpoint {url} answered HTTP {r.status_code} to GET /servicex; {hint}")
    try:
        return r.json()
    except ValueError:
        raise ServiceError(f"{url} answered GET /servicex with something that is not ServiceX JSON; {hint}") from None


def check_token(url: str, token: str, timeout: float = 5.0) -> None:
    """Trade the refresh token as the client will; a refusal is :class:`AccessDeniedError` (the
    client would retry it for minutes or fail with an HTTP error naming neither file nor fix)."""
    if not token:
        return
    import httpx

    try:
        r = _LOCAL["http"].post(url + "/token/refresh", headers={"Authorization": f"Bearer {token}"},
                                timeout=timeout)
    except httpx.HTTPError as err:
        raise ServiceError(f"the ServiceX endpoint {url} does not answer ({type(err).__name__})") from None
    if r.status_code in (401, 403):
        where = get_config().path_options("servicex").get("token_file") or "the configured token"
        raise AccessDeniedError(f"the ServiceX endpoint {url} refused the refresh token from {where} "
                                f"(HTTP {r.status_code}): write a current refresh token there")


def _client_config(url: str, token: str, poll: float | None) -> Path:
    """A servicex.yaml (mode 0600: it may hold a token) for this endpoint, in casa's data dir."""
    import yaml

    base = get_config().data_path / "servicex"
    base.mkdir(parents=True, exist_ok=True)
    path = base / f"servicex-{hashlib.sha1(url.encode()).hexdigest()[:10]}.yaml"
    cfg = {"api_endpoints": [{"name": "casa", "endpoint": url, "token": token}], "default_endpoint": "casa",
           "cache_path": str(base / "cache")}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(cfg, f)
    return path


def endpoint_url(endpoint: str | None = None) -> str:
    """The endpoint in use: ``endpoint``, else ``paths.servicex.endpoint``, else the local one."""
    return _endpoint(endpoint)[0]


def _endpoint(endpoint: str | None) -> tuple[str, str, float | None]:
    opts = get_config().path_options("servicex")
    url = endpoint or opts.get("endpoint")
    token = ""
    if not endpoint and opts.get("token_file"):
        tf = Path(os.path.expandvars(str(opts["token_file"]))).expanduser()
        try:
            token = tf.read_text().strip()
        except OSError as err:
            raise ServiceError(f"paths.servicex.token_file {tf} cannot be read ({err.strerror}); "
                               "write your ServiceX refresh token there") from None
    if not url:
        sx = local_endpoint()
        url, token = sx.url, sx.refresh_token
    token = token or _TOKENS.get(url.rstrip("/"), "")
    if token:
        _prefer_own_token(url)
    poll = opts.get("poll_interval")
    if poll is None and urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1"):
        poll = 0.1
    return url.rstrip("/"), token, (float(poll) if poll is not None else None)


_OWN_TOKEN: set[str] = set()
_TOKENS: dict[str, str] = {}


def remember_token(url: str, token: str) -> None:
    """The refresh token of an endpoint this process started (its launcher calls this), used when
    ``endpoint=url`` is passed with no token configured."""
    if token:
        _TOKENS[url.rstrip("/")] = token


def _prefer_own_token(url: str) -> None:
    """casa's token for ``url`` (``token_file``, or the local endpoint's) wins over $BEARER_TOKEN_FILE.

    The servicex client sends the content of $BEARER_TOKEN_FILE as is whenever it is set, and that
    is often a storage token (XCache) the endpoint does not accept; for an endpoint casa holds a
    token for, the client refreshes with that token instead (same logic as the client's own)."""
    import time

    from servicex.servicex_adapter import ServiceXAdapter as A

    _OWN_TOKEN.add(url.rstrip("/"))
    if getattr(A, "_casa_own_token", False):
        return
    plain = A._get_authorization

    async def _get_authorization(self, force_reauth: bool = False):
        if not (self.refresh_token and self.url.rstrip("/") in _OWN_TOKEN):
            return await plain(self, force_reauth)
        if not self.token or force_reauth or A._get_token_expiration(self.token) - time.time() < 60:
            await self._get_token()
        return {"Authorization": f"Bearer {self.token}"}

    A._get_authorization, A._casa_own_token = _get_authorization, True


# -- the call ------------------------------------------------------------------------------------
@contextmanager
def _polling(seconds: float | None):
    """Temporarily set the client's two polling intervals (see the module docstring, point 5)."""
    if seconds is None:
        yield
        return
    import servicex.query_core as qc

    init = qc.Query.__init__
    names = init.__code__.co_varnames[init.__code__.co_argcount - len(init.__defaults__):init.__code__.co_argcount]
    if names[:2] != ("servicex_polling_interval", "minio_polling_interval"):
        log.warning("servicex changed Query.__init__; polling stays at the client's default")
        yield
        return
    with _POLL_LOCK:
        old = init.__defaults__
        init.__defaults__ = (seconds, seconds) + old[2:]
        try:
            yield
        finally:
            init.__defaults__ = old


_SSL_CONTEXTS: dict[tuple[Any, ...], Any] = {}
_SSL_LOCK = threading.Lock()
#: while deliveries run: how many, and the functions the shared ones stand in for
_SSL_PATCH: dict[str, Any] = {"users": 0, "httpx": None, "aiobotocore": None}


@contextmanager
def _shared_ssl():
    """Reuse TLS contexts while the client delivers.

    The client builds a new httpx client (and a retrying transport with two more) for nearly
    every call, and a new S3 client (aiobotocore) for every output it downloads; each loads the
    CA bundle into a new ``SSLContext``: ~36 ms of CPU apiece, 0.18 s of a 0.21 s cache hit and
    more than a tenth of a second per output file. While a delivery runs, contexts with default
    verification (no client certificate, no proxy) are built once per CA bundle and shared, as
    ``requests`` shares its pool's; anything else goes to the libraries unchanged. Concurrent
    deliveries (threads) share the one patch; the last one out restores both libraries.
    """
    try:
        import httpx._transports.default as transports
    except ImportError:  # httpx reorganised: nothing to share
        yield
        return
    session = _aiobotocore_session()
    with _SSL_LOCK:
        if _SSL_PATCH["users"] == 0:
            _SSL_PATCH["httpx"], transports.create_ssl_context = transports.create_ssl_context, _shared_context
            if session is not None:
                _SSL_PATCH["aiobotocore"], session._create_connector = session._create_connector, _shared_connector
        _SSL_PATCH["users"] += 1
    try:
        yield
    finally:
        with _SSL_LOCK:
            _SSL_PATCH["users"] -= 1
            if _SSL_PATCH["users"] == 0:
                transports.create_ssl_context = _SSL_PATCH["httpx"]
                if session is not None and _SSL_PATCH["aiobotocore"] is not None:
                    session._create_connector = _SSL_PATCH["aiobotocore"]
                _SSL_PATCH["httpx"] = _SSL_PATCH["aiobotocore"] = None


def _shared_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> Any:
    """httpx's ``create_ssl_context``, shared for default verification."""
    import httpx

    original = _SSL_PATCH["httpx"] or httpx.create_ssl_context
    if verify is not True or cert is not None:
        return original(verify=verify, cert=cert, trust_env=trust_env)
    key = ("httpx", trust_env, os.environ.get("SSL_CERT_FILE") if trust_env else None,
           os.environ.get("SSL_CERT_DIR") if trust_env else None)
    with _SSL_LOCK:
        if key not in _SSL_CONTEXTS:
            _SSL_CONTEXTS[key] = original(verify=True, cert=None, trust_env=trust_env)
        return _SSL_CONTEXTS[key]


def _aiobotocore_session() -> Any:
    """aiobotocore's HTTP session class, if it has the connector factory we stand in for."""
    try:
        from aiobotocore.httpsession import AIOHTTPSession
    except ImportError:
        return None
    return AIOHTTPSession if hasattr(AIOHTTPSession, "_create_connector") else None


def _shared_connector(self: Any, proxy_url: Any) -> Any:
    """aiobotocore's ``_create_connector`` with one TLS context per CA bundle."""
    original = _SSL_PATCH["aiobotocore"]
    if original is None or proxy_url or not self._verify or self._cert_file:
        return (original or type(self)._create_connector)(self, proxy_url)
    import aiohttp
    from botocore.httpsession import create_urllib3_context, get_cert_path

    ca = get_cert_path(self._verify)
    with _SSL_LOCK:
        ctx = _SSL_CONTEXTS.get(("aiobotocore", ca))
        if ctx is None:
            ctx = _SSL_CONTEXTS[("aiobotocore", ca)] = create_urllib3_context()
            if ca:
                ctx.load_verify_locations(ca, None, None)
    return aiohttp.TCPConnector(limit=self._max_pool_connections, ssl=ctx, **self._connector_args)


class _Quiet(logging.Filter):
    """Drop the client's callback traceback and error lines for failures we raise ourselves."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        return not any(s in msg for s in ("transform_complete", "completed with failures",
                                          "A list of failed files", "Transform Request id", "ServiceX Exception for"))


@contextmanager
def _quiet():
    f = _Quiet()
    loggers = [logging.getLogger("asyncio"), logging.getLogger("servicex.query_core")]
    for lg in loggers:
        lg.addFilter(f)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(f)


def _query(query: Any, codegen: str | None) -> tuple[Any, str, str]:
    """``(servicex query, codegen, selection string)``; raises QueryError."""
    from servicex.query import PythonFunction, UprootRaw
    from servicex.query_core import QueryStringGenerator

    try:
        if isinstance(query, dict):
            query = UprootRaw([query])
        elif isinstance(query, list):
            query = UprootRaw(query)
        elif callable(query) and not isinstance(query, QueryStringGenerator) and not hasattr(query, "generate_selection_string"):
            query = PythonFunction().with_uproot_function(query)
        if isinstance(query, str):
            if not codegen:
                raise QueryError("a query given as a string needs codegen= (e.g. 'uproot')")
            return query, codegen, query
        selection = query.generate_selection_string()
    except QueryError:
        raise
    except Exception as err:  # pydantic/func_adl/ast errors: all mean "this query is malformed"
        raise QueryError(f"the query cannot be rendered: {' '.join(str(err).split())[:500]}"
                         " (a func_adl query starts with FuncADL_Uproot().FromTree('Events'))") from None
    return query, codegen or query.default_codegen, selection


def _dataset(dataset: Any, catalog: Any, caps: list[str], tree: str, nfiles: int | None,
             inputs: Callable[[DatasetSpec], list[str]]):
    """``(servicex dataset identifier, name, input tree)``; a catalog name is validated here.

    ``inputs(spec)``: the input URLs (resolved by the caller: site rules, replicas)."""
    from servicex import dataset as sxd

    if isinstance(dataset, DatasetSpec):
        spec = dataset
    elif isinstance(dataset, (str, os.PathLike)) and not looks_like_path(os.fspath(dataset)):
        spec = get_catalog(catalog).get(os.fspath(dataset))  # DatasetNotFoundError with suggestions
        if "casa_datasets" in caps and catalog is None:
            return sxd.GenericDataSet("casa", spec.name, num_files=nfiles), spec.name, spec.tree
    else:
        paths = [dataset] if isinstance(dataset, (str, os.PathLike)) else list(dataset)
        spec = DatasetSpec.from_paths(paths, tree=tree)
    urls = inputs(spec)
    return sxd.FileList(urls[:nfiles] if nfiles else urls), spec.name, spec.tree


def deliver_query(dataset: Any, query: Any, *, inputs: Callable[[DatasetSpec], list[str]],
                  endpoint: str | None = None, format: str = "parquet",
                  codegen: str | None = None, nfiles: int | None = None, catalog: Any = None,
                  tree: str = "Events", ignore_cache: bool = False, progress: bool | None = None,
                  timeout: float = 3.0) -> dict[str, Any]:
    """Deliver ``query`` over ``dataset`` through ``servicex.deliver``; see
    :func:`casa_data.dataset.open_query`. ``inputs(spec)`` gives a dataset's input URLs.

    Returns ``{"files", "failures" (lfn -> message), "request_id", "cache_hit", "name", "tree",
    "format", "endpoint"}``.
    """
    fmt = {"parquet": "parquet", "root": "root-ttree", "root-ttree": "root-ttree",
           "rntuple": "root-rntuple", "root-rntuple": "root-rntuple"}.get(format)
    if fmt is None:
        raise QueryError(f"format={format!r}: use 'parquet', 'root' (a TTree) or 'rntuple'")
    url, token, poll = _endpoint(endpoint)
    info = check_endpoint(url, timeout)
    check_token(url, token)
    caps = info.get("capabilities", [])
    sx_query, codegen, selection = _query(query, codegen)
    offered = info.get("code-gen-image", {})
    if codegen not in offered:
        raise QueryError(f"codegen {codegen!r} is not offered by {url}; it has: {', '.join(sorted(offered))}")
    did, name, _ = _dataset(dataset, catalog, caps, tree, nfiles, inputs)
    title = f"{name} {uuid.uuid4().hex[:8]}"  # unique: finds the request later (not part of the cache key)

    from servicex.models import ResultFormat
    from servicex.servicex_client import ServiceXClient, deliver_async

    cfg = _client_config(url, token, poll)
    client = ServiceXClient(backend="casa", config_path=str(cfg))
    q = client.generic_query(did, sx_query, codegen=codegen, title=title,
                             result_format={"parquet": ResultFormat.parquet, "root-ttree": ResultFormat.root_ttree,
                                            "root-rntuple": ResultFormat.root_rntuple}[fmt])
    key = q.transform_request.compute_hash()
    attached = None if ignore_cache else _repair_cache(client, key)
    hit = not ignore_cache and client.query_cache.get_transform_by_hash(key) is not None
    client.query_cache.close()
    from .query import CODEGENS, compile_query
    from .query import QueryError as _BadQuery

    out_tree = "servicex"
    if codegen in CODEGENS and not hit:  # validate only what will be submitted (0.1 s of qastle)
        try:
            compile_query(codegen, selection, "parquet" if fmt == "parquet" else "root-file")
        except _BadQuery as err:
            raise QueryError(f"query rejected before submitting: {err}") from None
    if codegen == "uproot-raw":
        from .query import raw_trees

        outs = [t for q in json.loads(selection) if isinstance(q, dict) for t in raw_trees(q).values()]
        out_tree = outs[0] if outs else "servicex"
    spec = {"General": {"OutputFormat": fmt, "Delivery": "LocalCache"},
            "Sample": [{"Name": title, "Dataset": did, "Query": sx_query, "Codegen": codegen}]}
    bar = "compact" if (sys.stderr.isatty() if progress is None else progress) else "none"
    from make_it_sync import make_sync

    down_after = float(get_config().path_options("servicex").get("down_timeout", 30))
    try:
        with _polling(poll), _quiet(), _shared_ssl():
            out = make_sync(_guarded)(deliver_async(spec, config_path=str(cfg), servicex_name="casa",
                                                    progress_bar=bar, ignore_local_cache=ignore_cache),
                                      url, down_after)
    except _EndpointGone as gone:
        rid = attached or _submitted_request(cfg, key)
        raise ServiceError(
            f"the ServiceX endpoint {url} stopped answering {gone.args[0]:.0f} s ago"
            + (f" while request {rid} was running" if rid else "")
            + f" (gave up after paths.servicex.down_timeout = {down_after:.0f} s). Once it is back, call "
            "again: an unfinished request is re-attached, a lost one is submitted again") from None
    files = out[title]
    rid = attached or (None if hit else _request_of(files, title, client))
    status = None
    if not files.valid():  # every file failed (Fatal), canceled, bad dataset, endpoint gone, ...
        exc = files._data._exc
        if rid is not None and type(exc).__name__ == "ServiceXException":
            status = client.get_transform_status(rid)
        if status is None or status.status.value not in ("Complete", "Fatal"):
            raise _delivery_error(exc, url, rid)
    result = {"files": list(files) if files.valid() else [], "failures": {}, "request_id": rid,
              "cache_hit": hit and rid is None, "name": name, "tree": out_tree,
              "format": {"parquet": "parquet", "root-ttree": "root", "root-rntuple": "rntuple"}[fmt],
              "endpoint": url}
    if rid is not None:
        status = status or client.get_transform_status(rid)
        if status.files_failed or status.status.value != "Complete":
            result["failures"] = _failures(url, token, rid, status, "casa_file_errors" in caps)
            _forget(cfg, key)
    return result


class _EndpointGone(Exception):
    pass


async def _guarded(coro, url: str, down_after: float):
    """Run ``coro`` (a delivery); cancel it once the endpoint has not answered for ``down_after`` s.

    The client alone retries status calls for minutes against a dead endpoint.
    """
    import asyncio
    import time

    import httpx

    task = asyncio.ensure_future(coro)
    down_since = None
    async with httpx.AsyncClient() as http:
        while not task.done():
            await asyncio.wait({task}, timeout=1.0)
            if task.done():
                break
            try:
                await http.get(url + "/servicex", timeout=2)
                down_since = None
            except httpx.HTTPError:
                down_since = down_since or time.monotonic()
                if time.monotonic() - down_since > down_after:
                    # The client catches CancelledError and then waits on its own retrying status
                    # task, so cancel every task of this loop (make_sync's own), give them a moment
                    # to unwind, and leave nothing pending to be torn down at interpreter exit.
                    others = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
                    for _ in range(3):
                        for t in others:
                            t.cancel()
                        await asyncio.wait(others, timeout=1.0)
                        others = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()
                                  and not t.done()}
                        if not others:
                            break
                    raise _EndpointGone(time.monotonic() - down_since) from None
    return task.result()


def _submitted_request(cfg: Path, key: str) -> str | None:
    from servicex.configuration import Configuration
    from servicex.query_cache import QueryCache

    cache = QueryCache(Configuration.read(str(cfg)))
    try:
        return cache.get_transform_request_id(key) if cache.is_transform_request_submitted(key) else None
    finally:
        cache.close()


def _repair_cache(client, key: str) -> str | None:
    """Drop cache records that would mislead ``deliver``; return a live request to re-attach to."""
    cache = client.query_cache
    rec = cache.get_transform_by_hash(key)
    if rec is not None and not all(Path(f).is_file() for f in rec.file_list):
        log.info("cached ServiceX files of request %s are gone from disk; fetching again", rec.request_id)
        cache.delete_record_by_hash(key)
        return None
    if not cache.is_transform_request_submitted(key):
        return None
    rid = cache.get_transform_request_id(key)
    try:
        st = client.get_transform_status(rid)
    except ValueError:  # 404: the endpoint no longer knows it
        cache.delete_record_by_hash(key)
        return None
    if st.status.value in ("Complete", "Fatal", "Canceled", "Bad Dataset") and (
            st.files_failed or st.status.value != "Complete"):
        cache.delete_record_by_hash(key)
        return None
    return rid


def _forget(cfg: Path, key: str) -> None:
    from servicex.configuration import Configuration
    from servicex.query_cache import QueryCache

    cache = QueryCache(Configuration.read(str(cfg)))
    cache.delete_record_by_hash(key)
    cache.close()


def _request_of(files, title: str, client) -> str | None:
    """The request behind a delivery: the download dir is ``<cache>/<request_id>/``, else by title."""
    if files.valid() and len(files):
        return Path(files[0]).parent.name
    return _find_request(client, title)


def _find_request(client, title: str) -> str | None:
    try:
        return next((t.request_id for t in client.get_transforms() if t.title == title), None)
    except Exception as err:  # noqa: BLE001 - a listing problem must not hide the delivery result
        log.warning("could not list transforms to check for failed files: %s", err)
        return None


def _failures(url: str, token: str, rid: str, status, per_file: bool) -> dict[str, str]:
    if per_file:
        import httpx

        headers = {}
        if token:  # our endpoint with auth: trade the refresh token like the client does
            r = httpx.post(url + "/token/refresh", headers={"Authorization": f"Bearer {token}"}, timeout=10)
            headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = httpx.get(f"{url}/servicex/transformation/{rid}/errors", headers=headers, timeout=10)
        if r.status_code == 200:
            errs = {e["file"]: e["error"] for e in r.json()["errors"]}
            if errs or status.status.value == "Complete":
                return errs
    what = f"request {rid} ended {status.status.value}"
    return {f"{status.files_failed} of {status.files} file(s)": f"{what}; the endpoint does not list per-file errors"}


def _delivery_error(exc: BaseException, url: str, rid: str | None) -> Exception:
    text = " ".join(str(exc).split())[:600]
    if isinstance(exc, ValueError) and "Invalid transform request" in text:
        return QueryError(f"{url} rejected the request: {text.split('Invalid transform request:', 1)[-1].strip()}")
    if isinstance(exc, (NameError, ValueError)):
        return QueryError(f"{url}: {text}")
    where = f" while request {rid} was running" if rid else ""
    return ServiceError(f"ServiceX delivery from {url} failed{where}: {type(exc).__name__}: {text}. If the "
                        "endpoint restarted, call again: a finished request is fetched from its outputs, "
                        "an unfinished one is submitted again")
