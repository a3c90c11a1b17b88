"""A ServiceX-compatible endpoint (FastAPI): what the unmodified servicex 3.3 client calls.

Run it with ``python -m casa_facility.servicex.app --port P --state DIR`` (or
:class:`casa_facility.services.servicex.ServiceXEndpoint`). Secrets come from the environment, never
argv: ``CASA_SX_S3_KEY`` / ``CASA_SX_S3_SECRET`` (outputs to S3 at ``--s3-endpoint``),
``CASA_SX_REFRESH_TOKEN``.

Security (see :mod:`.settings`, :mod:`.sandbox`):

* Auth is on by default: ``/token/refresh`` trades the refresh token, or a WLCG token of the
  trusted issuer (``--issuer``/``--jwks``), for a short HS256 access token; WLCG tokens are also
  accepted directly. Every call but ``GET /servicex`` needs one. A request belongs to the token's
  subject: another user's token cannot see, read, cancel or delete it (404). ``--insecure-no-auth``
  turns this off, on a loopback address only.
* Transforms run in the sandbox as ``casa-transform`` (never as the endpoint's user), with limits.
* Outputs are read through a SigV4-checked S3 subset with a key per user (signature, expiry, key).
* Limits: files and bytes per request, unfinished requests per user, body size; file lists only
  name the catalog's replicas and files under ``--data-root``; every malformed request is a 4xx
  naming the field.

Outputs go to a bucket per request on the facility S3 server, or to ``DIR/outputs/<request>/``.
Either way clients read them through this app's read-only S3 subset (HEAD/GET with Range,
ListObjectsV2, only the buckets of its requests) on the same port, so the facility's S3 keys,
which ServiceX would put in every status reply, never leave the endpoint. Status, files and
per-file errors are in ``DIR/state.sqlite``; on start, unfinished
requests resume where they stopped. ``GET .../{id}/errors`` lists failed files and why.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import re
import shutil
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import escape

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from casa_data.servicex.query import CODEGENS, QueryError, compile_query, object_name
from casa_facility.servicex.scheduler import Scheduler
from casa_facility.servicex.settings import LOOPBACK_HOSTS, Settings
from casa_facility.servicex.settings import s3_admin as _s3_admin
from casa_facility.servicex.signing import SigV4Error, access_subject, access_token, verify_sigv4
from casa_facility.servicex.store import DONE, Store

__all__ = ["create_app", "main"]

log = logging.getLogger("casa_data.servicex")
APP_VERSION = "casa-servicex-1.0"
CAPABILITIES = ["poll_local_transformation_results", "long_sample_titles_1024", "casa_file_errors",
                "casa_datasets"]
FORMATS = {"parquet": "parquet", "root-file": "root-file", "root-ttree": "root-file",
           "root-rntuple": "root-rntuple"}


# -- the app --------------------------------------------------------------------------------------
def create_app(settings: Settings) -> FastAPI:
    store = Store(settings.state / "state.sqlite")
    sched = Scheduler(settings, store)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        sched.shutdown()

    app = FastAPI(title="casa ServiceX endpoint", version=APP_VERSION, lifespan=lifespan)
    app.state.store, app.state.sched = store, sched
    sched.resume()

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # The servicex client shows "message" (ServiceX's key); FastAPI's "detail" kept too.
        return JSONResponse({"message": exc.detail, "detail": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors()[:3]:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("path", "query", "body"))
            parts.append(f"{loc or 'request'}: {e.get('msg')}")
        msg = "; ".join(parts) or "malformed request"
        return JSONResponse({"message": msg, "detail": msg}, status_code=400)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"message": "internal error", "detail": "internal error"}, status_code=500)

    def user(request: Request) -> str:
        """The caller's identity (the owner of what it submits); 401 without a valid token."""
        if settings.insecure_no_auth:
            return ""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(401, "this endpoint needs a bearer token: configure your ServiceX refresh "
                                     "token (servicex.yaml token:) or send a WLCG token")
        sub = access_subject(settings._jwt_key, token)
        if sub is not None:
            return sub
        if settings.verifier is not None and token.count(".") == 2:
            from casa_facility.skyhook.auth import AuthFailed

            try:
                claims = settings.verifier.verify(token)
            except AuthFailed as err:
                raise HTTPException(401, str(err)) from None
            return _wlcg_owner(settings, claims)
        raise HTTPException(401, "the access token is not valid (or has expired): refresh it with /token/refresh")

    def owned(request_id: str, who: str) -> dict[str, Any]:
        req = store.request(request_id)
        if req is None or (req.get("owner") or "") != who:  # another user's request does not exist for you
            raise HTTPException(404, f"no transform request {request_id}")
        return req

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"ok": True, "workers": settings.workers, "workers_ready": sched.ready,
                "worker_pids": sched.worker_pids()}

    @app.get("/servicex")
    def info() -> dict[str, Any]:
        return {"app-version": APP_VERSION, "code-gen-image": CODEGENS, "capabilities": CAPABILITIES}

    @app.post("/token/refresh")
    def refresh(request: Request) -> dict[str, Any]:
        if settings.insecure_no_auth:
            return {"access_token": "authentication_disabled", "auth_disabled": True}
        given = request.headers.get("authorization", "").partition(" ")[2].strip()
        if settings._refresh and given and hmac.compare_digest(given.encode(), settings._refresh.encode()):
            sub, exp = "casa", int(time.time()) + 3600
        elif settings.verifier is not None and given.count(".") == 2:
            from casa_facility.skyhook.auth import AuthFailed

            try:
                claims = settings.verifier.verify(given)
            except AuthFailed as err:
                raise HTTPException(401, str(err)) from None
            sub, exp = _wlcg_owner(settings, claims), min(int(claims["exp"]), int(time.time()) + 3600)
        else:
            raise HTTPException(401, "the refresh token is not valid for this endpoint")
        return {"access_token": access_token(settings._jwt_key, {"sub": sub, "exp": exp, "typ": "casa-servicex-access"})}

    @app.post("/servicex/transformation")
    async def submit(request: Request, who: str = Depends(user)) -> dict[str, str]:
        if request.query_params:
            raise HTTPException(400, f"unexpected query parameter(s): {', '.join(sorted(request.query_params))}")
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > settings.max_body:
                raise HTTPException(413, f"the request body is larger than {settings.max_body} bytes")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise HTTPException(400, "the request body is not JSON") from None
        except RecursionError:
            raise HTTPException(400, "the request body is nested too deeply") from None
        return {"request_id": _submit(settings, store, sched, body, who)}

    @app.get("/servicex/transformation")
    def list_requests(who: str = Depends(user)) -> dict[str, Any]:
        return {"requests": [_status(settings, r) for r in (store.request(x) for x in store.requests())
                             if r is not None and (r.get("owner") or "") == who]}

    @app.get("/servicex/transformation/{request_id}")
    def status(request_id: str, who: str = Depends(user)) -> dict[str, Any]:
        return _status(settings, owned(request_id, who))

    @app.get("/servicex/transformation/{request_id}/results")
    def results(request_id: str, later_than: str | None = None, status: str = "success",
                who: str = Depends(user)) -> dict[str, Any]:
        owned(request_id, who)
        if status not in ("success", "failure", "pending", "running"):
            raise HTTPException(400, "status: one of success, failure, pending, running")
        since = None
        if later_than:
            try:
                since = dt.datetime.fromisoformat(later_than)
                if since.tzinfo is not None:
                    since = since.astimezone(dt.UTC).replace(tzinfo=None)
            except (ValueError, OverflowError):
                raise HTTPException(400, f"later_than: {later_than[:100]!r} is not an ISO 8601 time") from None
        rows = store.files(request_id, status=status, later_than=since.isoformat(timespec="microseconds") if since else None)
        return {"results": [{"s3-object-name": f["object"] if f["status"] == "success" else "",
                             "file-path": f["lfn"], "total-bytes": f["size"] or 0, "total-events": f["events"] or 0,
                             "created_at": f["created_at"], "transform_status": f["status"],
                             "error": f["error"]} for f in rows]}

    @app.get("/servicex/transformation/{request_id}/errors")
    def errors(request_id: str, who: str = Depends(user)) -> dict[str, Any]:
        owned(request_id, who)
        return {"errors": [{"file": f["lfn"], "error": f["error"]} for f in store.files(request_id, "failure")]}

    @app.api_route("/servicex/transformation/{request_id}/cancel", methods=["GET", "POST"])
    def cancel(request_id: str, who: str = Depends(user)) -> dict[str, str]:
        req = owned(request_id, who)
        if req["status"] in DONE:
            raise HTTPException(400, f"request {request_id} is already {req['status']}")
        store.set_status(request_id, "Canceled")
        sched.cancel(request_id)
        return {"message": f"request {request_id} canceled"}

    @app.delete("/servicex/transformation/{request_id}")
    def delete(request_id: str, who: str = Depends(user)) -> dict[str, str]:
        req = owned(request_id, who)
        if req["status"] not in DONE:
            raise HTTPException(400, f"request {request_id} is {req['status']}: cancel it first")
        _delete_outputs(settings, req)
        store.delete_request(request_id)
        return {"message": f"request {request_id} deleted"}

    @app.get("/servicex/datasets", dependencies=[Depends(user)])
    def datasets(request: Request) -> dict[str, Any]:
        finder = request.query_params.get("did-finder")
        deleted = request.query_params.get("show-deleted", "false").lower() == "true"
        return {"datasets": [_dataset(d) for d in store.datasets(finder, deleted)]}

    @app.get("/servicex/datasets/{ds_id}", dependencies=[Depends(user)])
    def dataset(ds_id: int) -> dict[str, Any]:
        d = store.get_dataset(ds_id) if abs(ds_id) < 1 << 62 else None
        if d is None:
            raise HTTPException(404, f"no dataset {ds_id}")
        return _dataset(d, with_files=True)

    @app.delete("/servicex/datasets/{ds_id}", dependencies=[Depends(user)])
    def delete_dataset(ds_id: int) -> dict[str, bool]:
        if abs(ds_id) >= 1 << 62 or not store.mark_dataset_stale(ds_id):
            raise HTTPException(404, f"no dataset {ds_id}")
        return {"stale": True}

    # -- the read-only S3 subset: SigV4 checked, each user's key reads that user's buckets -----------
    def s3_owner(request: Request) -> str:
        owners = {settings.s3_keys(o)[0]: o for o in store.owners()}
        owners.setdefault(settings.s3_keys("")[0], "")
        try:
            return verify_sigv4(request, lambda key: settings.s3_keys(owners[key])[1] if key in owners else None,
                                owners)
        except SigV4Error as err:
            raise HTTPException(403, str(err)) from None

    def s3_dir(bucket: str, who: str) -> Path:
        d = settings.state / "outputs" / bucket
        req = store.request(bucket)
        # Only the buckets of this endpoint's requests, and only the caller's: never a proxy to
        # other facility buckets or to another user's outputs.
        if req is None or (req.get("owner") or "") != who or (not settings.s3_endpoint and not d.is_dir()):
            raise HTTPException(404, "NoSuchBucket")
        return d

    @app.api_route("/{bucket}/{key:path}", methods=["GET", "HEAD"])
    def s3_object(bucket: str, key: str, request: Request) -> Response:
        d = s3_dir(bucket, s3_owner(request))
        if not key or "/" in key or key.startswith("."):
            raise HTTPException(404, "NoSuchKey")
        if settings.s3_endpoint:
            return _proxy_object(settings, bucket, key, request)
        if not (d / key).is_file():
            raise HTTPException(404, "NoSuchKey")
        return FileResponse(d / key, media_type="application/octet-stream")

    @app.get("/{bucket}")
    def s3_list(bucket: str, request: Request) -> Response:
        d = s3_dir(bucket, s3_owner(request))
        if settings.s3_endpoint:
            pages = _s3_admin(settings).get_paginator("list_objects_v2").paginate(Bucket=bucket)
            objs = [(o["Key"], o["Size"]) for page in pages for o in page.get("Contents", [])]
        else:
            objs = [(p.name, p.stat().st_size) for p in sorted(d.iterdir())
                    if p.is_file() and not p.name.endswith(".tmp") and not p.name.startswith(".")]
        items = "".join(f"<Contents><Key>{escape(k)}</Key><Size>{n}</Size></Contents>" for k, n in objs)
        n = items.count("<Contents>")
        xml = (f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>{escape(bucket)}</Name>'
               f"<KeyCount>{n}</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>{items}</ListBucketResult>")
        return Response(xml, media_type="application/xml")

    return app


def _wlcg_owner(settings: Settings, claims: dict[str, Any]) -> str:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise HTTPException(401, "the WLCG token has no subject (sub)")
    return sub


def _field(body: dict[str, Any], name: str, kinds: tuple, default: Any = None, limit: int = 1 << 20) -> Any:
    value = body.get(name, default)
    if value is not None and not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
        want = " or ".join(k.__name__.replace("str", "a string").replace("list", "a list") for k in kinds)
        raise HTTPException(400, f"{name}: must be {want}, not {type(value).__name__}")
    if isinstance(value, str) and len(value) > limit:
        raise HTTPException(400, f"{name}: longer than {limit} characters")
    return value


def _submit(settings: Settings, store: Store, sched: Scheduler, body: Any, owner: str) -> str:
    if not isinstance(body, dict):
        raise HTTPException(400, f"the request body must be a JSON object, not {type(body).__name__}")
    fmt_name = _field(body, "result-format", (str,), "parquet", 64)
    fmt = FORMATS.get(fmt_name)
    if fmt is None:
        raise HTTPException(400, f"result-format: {fmt_name[:64]!r} is not supported here; use parquet or root-file")
    if _field(body, "result-destination", (str,), "object-store", 64) not in ("object-store", "volume"):
        raise HTTPException(400, "result-destination: must be object-store or volume")
    title = _field(body, "title", (str,), None, 4096)
    did = _field(body, "did", (str,), None, 4096)
    file_list = _field(body, "file-list", (list,), None)
    if bool(did) == bool(file_list):
        raise HTTPException(400, "did, file-list: give exactly one of them")
    if file_list and not all(isinstance(p, str) and p and len(p) <= 4096 and "\0" not in p for p in file_list):
        raise HTTPException(400, "file-list: must be a list of non-empty path strings")
    codegen = _field(body, "codegen", (str,), "", 64)
    if codegen not in CODEGENS:
        raise HTTPException(400, f"codegen: unknown codegen {codegen[:64]!r}; this endpoint has: {', '.join(CODEGENS)}")
    selection = _field(body, "selection", (str,), "", 4 << 20)
    try:
        code, tree = compile_query(codegen, selection or "", fmt)
        if codegen == "uproot-raw":
            _check_raw(code)
    except QueryError as err:
        raise HTTPException(400, str(err) if "selection" in str(err) else f"selection: {err}") from None
    except (RecursionError, MemoryError, ValueError, TypeError, SyntaxError) as err:
        raise HTTPException(400, f"selection: cannot be translated ({type(err).__name__})") from None
    if len(store.active(owner)) >= settings.max_active:
        raise HTTPException(429, f"you have {settings.max_active} unfinished requests (the limit per user): wait "
                                 "for one to end, or cancel one")
    did, files = _lookup(settings, did, file_list)
    rid = str(uuid.uuid4())
    ds_id = store.dataset(did, "casa" if did.startswith("casa://") else "user", [f[0] for f in files])
    out = sched.output(rid)
    if out["kind"] == "s3":
        _s3_admin(settings).create_bucket(Bucket=rid)
    store.add_request({"request_id": rid, "title": title, "did": did, "did_id": ds_id,
                       "selection": selection, "codegen": codegen, "code": code, "tree": tree,
                       "result_format": fmt, "output": out, "owner": owner},
                      [(lfn, cands, object_name(lfn, fmt)) for lfn, cands in files])
    sched.dispatch(rid)
    return rid


_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def _check_raw(code: str) -> None:
    """uproot-raw runs no Python: expressions are branch names, cuts go through casa's expression
    core (the upstream transformer's cut functions: :mod:`casa_data.expr.uproot_raw`)."""
    from casa_data.errors import FilterError
    from casa_data.expr.uproot_raw import RawCut

    for i, q in enumerate(json.loads(code)):
        for key in ("filter_name", "filter_typename"):
            v = q.get(key)
            if v is not None and not (isinstance(v, str) or isinstance(v, list) and all(isinstance(x, str) for x in v)):
                raise QueryError(f"uproot-raw entry {i}: {key} is a name pattern or a list of them")
        exprs = q.get("expressions")
        for e in [exprs] if isinstance(exprs, str) else (exprs or []):
            if not isinstance(e, str) or not _PLAIN.match(e):
                raise QueryError(f"uproot-raw entry {i}: expressions are branch names here (got {str(e)[:100]!r}); "
                                 "select with filter_name and filter with cut")
        if q.get("aliases"):
            raise QueryError(f"uproot-raw entry {i}: aliases are not supported by this endpoint")
        cut = q.get("cut")
        if cut is not None:
            if not isinstance(cut, str):
                raise QueryError(f"uproot-raw entry {i}: cut must be a string")
            try:
                RawCut(cut)
            except FilterError as err:
                raise QueryError(f"uproot-raw entry {i}: cut {cut[:200]!r}: {str(err).splitlines()[0]}") from None


def _allowed(settings: Settings, path: str, replicas: set[str]) -> bool:
    if path in replicas:
        return True
    state = os.path.realpath(settings.state)
    if "://" in path:
        return any(path.startswith(r.rstrip("/") + "/") for r in settings.data_roots if "://" in r)
    real = os.path.realpath(path)
    if real == state or real.startswith(state + os.sep):
        return False
    return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in settings.data_roots if "://" not in r)


def _catalog_replicas() -> set[str]:
    from casa_data.catalog import get_catalog

    out: set[str] = set()
    try:
        cat = get_catalog()
        for name in cat.names():
            spec = cat.get(name)
            for f in spec.files:
                out.update(str(r.url) if hasattr(r, "url") else str(r) for r in (getattr(f, "replicas", None) or []))
    except Exception as err:  # noqa: BLE001 - no catalog: only the data roots
        log.debug("catalog replicas unavailable: %s", err)
    return out


def _lookup(settings: Settings, did: str | None, file_list: list | None) -> tuple[str, list[tuple[str, list]]]:
    """``(did, [(lfn, [[url, via], ...]), ...])`` for a file list or a ``casa://`` catalog name."""
    if file_list:
        if not all(isinstance(p, str) and p and len(p) <= 4096 and "\0" not in p for p in file_list):
            raise HTTPException(400, "file-list: must be a list of non-empty path strings")
        if len(file_list) > settings.max_files:
            raise HTTPException(400, f"file-list: {len(file_list)} files; at most {settings.max_files} per request")
        replicas = _catalog_replicas()
        bad = [p for p in file_list if not _allowed(settings, p, replicas)]
        if bad:
            raise HTTPException(403, f"file-list: {bad[0][:300]!r} is outside the data this endpoint serves "
                                     f"(its catalog's replicas and its data roots){f' (and {len(bad) - 1} more)' if len(bad) > 1 else ''}")
        total = 0
        for p in file_list:
            if "://" not in p:
                with contextlib.suppress(OSError):
                    total += os.stat(p).st_size
        if total > settings.max_bytes:
            raise HTTPException(400, f"file-list: {total} bytes of input; at most {settings.max_bytes} per request")
        return "file-list:" + hashlib.sha1("\n".join(sorted(file_list)).encode()).hexdigest()[:12], \
            [(p, [[p, None]]) for p in file_list]
    parts = urlsplit(did)
    if parts.scheme != "casa":
        raise HTTPException(400, f"did: {did[:300]!r}: this endpoint resolves file lists and casa:// catalog "
                                 "names only (GenericDataSet('casa', 'cms/dimuon-2012'))")
    name = (parts.netloc + parts.path).strip("/")
    nfiles = None
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key != "files":
            raise HTTPException(400, f"did: unknown option {key[:50]!r} (only files=N)")
        if not value.isdigit() or len(value) > 9:
            raise HTTPException(400, f"did: files={value[:50]!r} is not a whole number")
        nfiles = int(value)
    from casa_data.catalog import get_catalog
    from casa_data.errors import CasaError
    from casa_data.resolver import resolve

    try:
        spec = get_catalog().get(name)
        resolved = resolve(spec)
    except CasaError as err:
        raise HTTPException(400, f"did: {did[:300]!r}: {err}") from None
    if nfiles:
        resolved = resolved[:nfiles]
    if len(resolved) > settings.max_files:
        raise HTTPException(400, f"did: {len(resolved)} files; at most {settings.max_files} per request (use files=N)")
    return f"casa://{name}", [(f.lfn, [[c.url, c.via] for c in f.candidates]) for f in resolved]


def _status(settings: Settings, r: dict[str, Any]) -> dict[str, Any]:
    keys = settings.s3_keys(r.get("owner") or "")  # the owner's key: reads only the owner's buckets
    return {
        "request_id": r["request_id"], "did": r["did"] or "", "did_id": r["did_id"] or 0, "title": r["title"],
        "selection": r["selection"], "tree-name": r["tree"], "image": CODEGENS[r["codegen"]],
        "result-destination": "object-store", "result-format": r["result_format"],
        "generated-code-cm": f"{r['request_id']}-generated-source", "status": r["status"],
        "app-version": APP_VERSION, "files": r["files"], "files-completed": r["files_completed"],
        "files-failed": r["files_failed"],
        "files-remaining": r["files"] - r["files_completed"] - r["files_failed"],
        "submit-time": r["submit_time"], "finish-time": r["finish_time"],
        # ServiceX hands its MinIO keys to every client here. casa never does: outputs are read
        # through this app's S3 subset (a proxy to the facility S3), with a key good only for the
        # buckets of this request's owner.
        "minio-endpoint": settings.public, "minio-secured": False,
        "minio-access-key": keys[0], "minio-secret-key": keys[1],
        "log-url": None,
    }


def _dataset(d: dict[str, Any], with_files: bool = False) -> dict[str, Any]:
    out = {k: d[k] for k in ("id", "name", "did_finder", "n_files", "size", "events", "last_used",
                             "last_updated", "lookup_status")}
    out["is_stale"] = bool(d["is_stale"])
    out["files"] = [{"id": i, "adler32": None, "file_size": 0, "file_events": 0, "paths": p}
                    for i, p in enumerate(json.loads(d["files"] or "[]"))] if with_files else []
    return out


def _proxy_object(settings: Settings, bucket: str, key: str, request: Request) -> Response:
    """HEAD/GET (with Range) of an output on the facility S3, streamed: clients never get its keys."""
    from email.utils import format_datetime

    from botocore.exceptions import ClientError

    s3, kw = _s3_admin(settings), {"Bucket": bucket, "Key": key}
    try:
        if request.method == "HEAD":
            o = s3.head_object(**kw)
        else:
            if request.headers.get("range"):
                kw["Range"] = request.headers["range"]
            o = s3.get_object(**kw)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        raise HTTPException(404 if code in ("404", "NoSuchKey", "NotFound") else 502, code or "S3 error") from None
    headers = {"Content-Length": str(o["ContentLength"]), "ETag": o.get("ETag", ""), "Accept-Ranges": "bytes",
               "Last-Modified": format_datetime(o["LastModified"].astimezone(dt.UTC), usegmt=True)}
    if request.method == "HEAD":
        return Response(status_code=200, headers=headers, media_type="application/octet-stream")
    status = 200
    if o.get("ContentRange"):
        headers["Content-Range"], status = o["ContentRange"], 206
    return StreamingResponse(o["Body"].iter_chunks(1 << 20), status_code=status, headers=headers,
                             media_type="application/octet-stream")


def _delete_outputs(settings: Settings, req: dict[str, Any]) -> None:
    out = req["output"]
    if out["kind"] == "local":
        shutil.rmtree(out["dir"], ignore_errors=True)
        return
    s3 = _s3_admin(settings)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=out["bucket"]):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=out["bucket"], Key=obj["Key"])
    s3.delete_bucket(Bucket=out["bucket"])


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from casa_facility.servicex.sandbox import Limits

    p = argparse.ArgumentParser(description="casa's ServiceX-compatible endpoint (binds 127.0.0.1)")
    p.add_argument("--port", type=int, default=15000)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--state", required=True, help="directory for state.sqlite and local outputs")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--s3-endpoint", help="S3 server for outputs (keys in CASA_SX_S3_KEY/_SECRET)")
    p.add_argument("--issuer", help="trust WLCG tokens of this issuer (with --jwks)")
    p.add_argument("--jwks", help="the issuer's public keys (JWKS file)")
    p.add_argument("--audience", help="the audience WLCG tokens must name")
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="INSECURE: answer without any token (refused on a non-loopback address)")
    p.add_argument("--data-root", action="append", default=[],
                   help="a directory (or URL prefix) file lists may name (repeatable); the catalog's replicas always")
    p.add_argument("--sandbox-same-user", action="store_true",
                   help="run transforms as the endpoint's own user (only for an endpoint serving just that user)")
    p.add_argument("--max-files", type=int, default=10_000, help="input files per request")
    p.add_argument("--max-bytes", type=int, default=1 << 40, help="input bytes per request")
    p.add_argument("--max-active", type=int, default=8, help="unfinished requests per user")
    p.add_argument("--file-timeout", type=float, default=600.0, help="wall-clock seconds per file")
    p.add_argument("--file-memory-gb", type=float, default=16.0, help="address space per transform (GiB)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if a.insecure_no_auth and a.host not in LOOPBACK_HOSTS:
        p.error(f"--insecure-no-auth is refused on {a.host}: only a loopback address may serve without tokens")
    if bool(a.issuer) != bool(a.jwks):
        p.error("--issuer and --jwks go together")
    if not a.insecure_no_auth and not a.issuer and not os.environ.get("CASA_SX_REFRESH_TOKEN"):
        # Auth by default: a refresh token kept in the state dir (0600), for the servicex.yaml token.
        os.makedirs(a.state, exist_ok=True)
        path = Path(a.state) / "refresh-token"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(__import__("secrets").token_urlsafe(32))
        os.environ["CASA_SX_REFRESH_TOKEN"] = path.read_text().strip()
        log.info("auth: the refresh token is in %s (servicex.yaml: token: <its content>)", path)
    limits = Limits(wall=a.file_timeout, cpu=int(max(a.file_timeout * 2, 60)), memory=int(a.file_memory_gb * (1 << 30)))
    settings = Settings(a.state, a.workers, a.s3_endpoint, public_host=a.host if a.host not in ("0.0.0.0", "::") else
                        "127.0.0.1", port=a.port, insecure_no_auth=a.insecure_no_auth, issuer=a.issuer, jwks=a.jwks,
                        audience=a.audience, data_roots=a.data_root, same_user=a.sandbox_same_user, limits=limits,
                        max_files=a.max_files, max_bytes=a.max_bytes, max_active=a.max_active)
    if a.insecure_no_auth:
        log.warning("INSECURE: serving without authentication on %s:%d", a.host, a.port)
    uvicorn.run(create_app(settings), host=a.host, port=a.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
