"""A ServiceX-compatible endpoint (FastAPI): what the unmodified servicex 3.3 client calls.

Run it with ``python -m casa_facility.servicex.app --port P --state DIR`` (or
:class:`casa_facility.services.servicex.ServiceXEndpoint`). Secrets come from the environment, never
argv: ``CASA_SX_S3_KEY`` / ``CASA_SX_S3_SECRET`` (outputs to S3 at ``--s3-endpoint``),
``CASA_SX_REFRESH_TOKEN`` (turns auth on: ``/token/refresh`` trades it for a short HS256 JWT that
every ``/servicex/transformation*`` call needs).

Outputs go to a bucket per request on the facility S3 server, or to ``DIR/outputs/<request>/``.
Either way clients read them through this app's read-only S3 subset (HEAD/GET with Range,
ListObjectsV2, only the buckets of its requests) on the same port, so the facility's S3 keys,
which ServiceX would put in every status reply, never leave the endpoint. Status, files and per-file errors are in ``DIR/state.sqlite``; on start, unfinished
requests resume where they stopped. ``GET .../{id}/errors`` lists failed files and why.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import secrets
import shutil
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from casa_facility.servicex.scheduler import Scheduler
from casa_facility.servicex.settings import Settings
from casa_facility.servicex.store import DONE, Store
from casa_data.servicex.query import CODEGENS, QueryError, compile_query, object_name

__all__ = ["create_app", "main"]

log = logging.getLogger("casa_data.servicex")
APP_VERSION = "casa-servicex-1.0"
CAPABILITIES = ["poll_local_transformation_results", "long_sample_titles_1024", "casa_file_errors",
                "casa_datasets"]
FORMATS = {"parquet": "parquet", "root-file": "root-file", "root-ttree": "root-file",
           "root-rntuple": "root-rntuple"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(key: bytes, claims: dict[str, Any]) -> str:
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + _b64(json.dumps(claims).encode())
    return head + "." + _b64(hmac.new(key, head.encode(), hashlib.sha256).digest())


def _jwt_ok(key: bytes, token: str) -> bool:
    try:
        head, payload, sig = token.split(".")
        good = _b64(hmac.new(key, f"{head}.{payload}".encode(), hashlib.sha256).digest())
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return hmac.compare_digest(good, sig) and claims.get("exp", 0) > time.time()
    except (ValueError, json.JSONDecodeError):
        return False


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

    def auth(request: Request) -> None:
        if not settings._refresh:
            return
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not _jwt_ok(settings._jwt_key, token):
            raise HTTPException(401, "a valid access token is required: refresh it with /token/refresh")

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"ok": True, "workers": settings.workers, "workers_ready": sched.ready,
                "worker_pids": sched.worker_pids()}

    @app.get("/servicex")
    def info() -> dict[str, Any]:
        return {"app-version": APP_VERSION, "code-gen-image": CODEGENS, "capabilities": CAPABILITIES}

    @app.post("/token/refresh")
    def refresh(request: Request) -> dict[str, Any]:
        if not settings._refresh:
            return {"access_token": "authentication_disabled", "auth_disabled": True}
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given, settings._refresh):
            raise HTTPException(401, "the refresh token is not valid for this endpoint")
        return {"access_token": _jwt(settings._jwt_key, {"sub": "casa", "exp": int(time.time()) + 3600})}

    @app.post("/servicex/transformation", dependencies=[Depends(auth)])
    async def submit(request: Request) -> dict[str, str]:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            raise HTTPException(400, "the request body is not JSON") from None
        return {"request_id": _submit(settings, store, sched, body)}

    @app.get("/servicex/transformation", dependencies=[Depends(auth)])
    def list_requests() -> dict[str, Any]:
        return {"requests": [_status(settings, store.request(r)) for r in store.requests()]}

    def _get(request_id: str) -> dict[str, Any]:
        req = store.request(request_id)
        if req is None:
            raise HTTPException(404, f"no transform request {request_id}")
        return req

    @app.get("/servicex/transformation/{request_id}", dependencies=[Depends(auth)])
    def status(request_id: str) -> dict[str, Any]:
        return _status(settings, _get(request_id))

    @app.get("/servicex/transformation/{request_id}/results", dependencies=[Depends(auth)])
    def results(request_id: str, later_than: str | None = None, status: str = "success") -> dict[str, Any]:
        _get(request_id)
        since = None
        if later_than:
            since = dt.datetime.fromisoformat(later_than).astimezone(dt.timezone.utc).replace(tzinfo=None)
        rows = store.files(request_id, status=status, later_than=since.isoformat(timespec="microseconds") if since else None)
        return {"results": [{"s3-object-name": f["object"] if f["status"] == "success" else "",
                             "file-path": f["lfn"], "total-bytes": f["size"] or 0, "total-events": f["events"] or 0,
                             "created_at": f["created_at"], "transform_status": f["status"],
                             "error": f["error"]} for f in rows]}

    @app.get("/servicex/transformation/{request_id}/errors", dependencies=[Depends(auth)])
    def errors(request_id: str) -> dict[str, Any]:
        _get(request_id)
        return {"errors": [{"file": f["lfn"], "error": f["error"]} for f in store.files(request_id, "failure")]}

    @app.api_route("/servicex/transformation/{request_id}/cancel", methods=["GET", "POST"],
                   dependencies=[Depends(auth)])
    def cancel(request_id: str) -> dict[str, str]:
        req = _get(request_id)
        if req["status"] in DONE:
            raise HTTPException(400, f"request {request_id} is already {req['status']}")
        store.set_status(request_id, "Canceled")
        sched.cancel(request_id)
        return {"message": f"request {request_id} canceled"}

    @app.delete("/servicex/transformation/{request_id}", dependencies=[Depends(auth)])
    def delete(request_id: str) -> dict[str, str]:
        req = _get(request_id)
        if req["status"] not in DONE:
            raise HTTPException(400, f"request {request_id} is {req['status']}: cancel it first")
        _delete_outputs(settings, req)
        store.delete_request(request_id)
        return {"message": f"request {request_id} deleted"}

    @app.get("/servicex/datasets", dependencies=[Depends(auth)])
    def datasets(request: Request) -> dict[str, Any]:
        finder = request.query_params.get("did-finder")
        deleted = request.query_params.get("show-deleted", "false").lower() == "true"
        return {"datasets": [_dataset(d) for d in store.datasets(finder, deleted)]}

    @app.get("/servicex/datasets/{ds_id}", dependencies=[Depends(auth)])
    def dataset(ds_id: int) -> dict[str, Any]:
        d = store.get_dataset(ds_id)
        if d is None:
            raise HTTPException(404, f"no dataset {ds_id}")
        return _dataset(d, with_files=True)

    @app.delete("/servicex/datasets/{ds_id}", dependencies=[Depends(auth)])
    def delete_dataset(ds_id: int) -> dict[str, bool]:
        if not store.mark_dataset_stale(ds_id):
            raise HTTPException(404, f"no dataset {ds_id}")
        return {"stale": True}

    # -- the read-only S3 subset over DIR/outputs (only when outputs are local) ---------------------
    def s3_auth(request: Request) -> None:
        cred = request.headers.get("authorization", "") + " " + request.query_params.get("X-Amz-Credential", "")
        if f"{settings.local_key}/" not in cred and f"Credential={settings.local_key}/" not in cred:
            raise HTTPException(403, "unknown access key")

    def s3_dir(bucket: str) -> Path:
        d = settings.state / "outputs" / bucket
        # Only the buckets of this endpoint's requests: never a proxy to other facility buckets.
        if store.request(bucket) is None or (not settings.s3_endpoint and not d.is_dir()):
            raise HTTPException(404, "NoSuchBucket")
        return d

    @app.api_route("/{bucket}/{key:path}", methods=["GET", "HEAD"], dependencies=[Depends(s3_auth)])
    def s3_object(bucket: str, key: str, request: Request) -> Response:
        d = s3_dir(bucket)
        if not key or "/" in key or key.startswith("."):
            raise HTTPException(404, "NoSuchKey")
        if settings.s3_endpoint:
            return _proxy_object(settings, bucket, key, request)
        if not (d / key).is_file():
            raise HTTPException(404, "NoSuchKey")
        return FileResponse(d / key, media_type="application/octet-stream")

    @app.get("/{bucket}", dependencies=[Depends(s3_auth)])
    def s3_list(bucket: str) -> Response:
        d = s3_dir(bucket)
        if settings.s3_endpoint:
            pages = _s3_admin(settings).get_paginator("list_objects_v2").paginate(Bucket=bucket)
            objs = [(o["Key"], o["Size"]) for page in pages for o in page.get("Contents", [])]
        else:
            objs = [(p.name, p.stat().st_size) for p in sorted(d.iterdir())
                    if p.is_file() and not p.name.endswith(".tmp")]
        items = "".join(f"<Contents><Key>{escape(k)}</Key><Size>{n}</Size></Contents>" for k, n in objs)
        n = items.count("<Contents>")
        xml = (f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>{escape(bucket)}</Name>'
               f"<KeyCount>{n}</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>{items}</ListBucketResult>")
        return Response(xml, media_type="application/xml")

    return app


def _submit(settings: Settings, store: Store, sched: Scheduler, body: dict[str, Any]) -> str:
    fmt = FORMATS.get(body.get("result-format", "parquet"))
    if fmt is None:
        raise HTTPException(400, f"result-format {body.get('result-format')!r} is not supported here; "
                                 "use parquet or root-file")
    if body.get("result-destination", "object-store") not in ("object-store", "volume"):
        raise HTTPException(400, "result-destination must be object-store or volume")
    if bool(body.get("did")) == bool(body.get("file-list")):
        raise HTTPException(400, "give exactly one of did and file-list")
    codegen = body.get("codegen", "")
    if codegen not in CODEGENS:
        raise HTTPException(400, f"unknown codegen {codegen!r}; this endpoint has: {', '.join(CODEGENS)}")
    try:
        code, tree = compile_query(codegen, body.get("selection") or "", fmt)
    except QueryError as err:
        raise HTTPException(400, str(err)) from None
    did, files = _lookup(body)
    rid = str(uuid.uuid4())
    ds_id = store.dataset(did, "casa" if did.startswith("casa://") else "user", [f[0] for f in files])
    out = sched.output(rid)
    if out["kind"] == "s3":
        _s3_admin(settings).create_bucket(Bucket=rid)
    store.add_request({"request_id": rid, "title": body.get("title"), "did": did, "did_id": ds_id,
                       "selection": body.get("selection"), "codegen": codegen, "code": code, "tree": tree,
                       "result_format": fmt, "output": out},
                      [(lfn, cands, object_name(lfn, fmt)) for lfn, cands in files])
    sched.dispatch(rid)
    return rid


def _lookup(body: dict[str, Any]) -> tuple[str, list[tuple[str, list]]]:
    """``(did, [(lfn, [[url, via], ...]), ...])`` for a file list or a ``casa://`` catalog name."""
    if body.get("file-list"):
        paths = [str(p) for p in body["file-list"]]
        return "file-list:" + hashlib.sha1("\n".join(sorted(paths)).encode()).hexdigest()[:12], \
            [(p, [[p, None]]) for p in paths]
    did = str(body["did"])
    parts = urlsplit(did)
    if parts.scheme != "casa":
        raise HTTPException(400, f"dataset {did!r}: this endpoint resolves file lists and casa:// catalog "
                                 "names only (GenericDataSet('casa', 'cms/dimuon-2012'))")
    name = (parts.netloc + parts.path).strip("/")
    nfiles = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p).get("files")
    from casa_data.catalog import get_catalog
    from casa_data.errors import CasaError
    from casa_data.resolver import resolve

    try:
        spec = get_catalog().get(name)
        resolved = resolve(spec)
    except CasaError as err:
        raise HTTPException(400, f"dataset {did!r}: {err}") from None
    if nfiles and int(nfiles) > 0:
        resolved = resolved[: int(nfiles)]
    return f"casa://{name}", [(f.lfn, [[c.url, c.via] for c in f.candidates]) for f in resolved]


def _status(settings: Settings, r: dict[str, Any]) -> dict[str, Any]:
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
        # through this app's S3 subset (a proxy to the facility S3), with a key good only for that.
        "minio-endpoint": settings.public, "minio-secured": False,
        "minio-access-key": settings.local_key, "minio-secret-key": "not-checked",
        "log-url": None,
    }


def _dataset(d: dict[str, Any], with_files: bool = False) -> dict[str, Any]:
    out = {k: d[k] for k in ("id", "name", "did_finder", "n_files", "size", "events", "last_used",
                             "last_updated", "lookup_status")}
    out["is_stale"] = bool(d["is_stale"])
    out["files"] = [{"id": i, "adler32": None, "file_size": 0, "file_events": 0, "paths": p}
                    for i, p in enumerate(json.loads(d["files"] or "[]"))] if with_files else []
    return out


def _s3_admin(settings: Settings):
    if settings._admin is None:
        import boto3

        settings._admin = boto3.client("s3", endpoint_url=settings.s3_endpoint, region_name="us-east-1",
                                       aws_access_key_id=settings.s3_key, aws_secret_access_key=settings._s3_secret)
    return settings._admin


def _proxy_object(settings: Settings, bucket: str, key: str, request: Request) -> Response:
    """HEAD/GET (with Range) of an output on the facility S3, streamed: clients never get its keys."""
    from botocore.exceptions import ClientError
    from email.utils import format_datetime

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
               "Last-Modified": format_datetime(o["LastModified"].astimezone(dt.timezone.utc), usegmt=True)}
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

    p = argparse.ArgumentParser(description="casa's ServiceX-compatible endpoint (binds 127.0.0.1)")
    p.add_argument("--port", type=int, default=15000)
    p.add_argument("--state", required=True, help="directory for state.sqlite and local outputs")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--s3-endpoint", help="S3 server for outputs (keys in CASA_SX_S3_KEY/_SECRET)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings(a.state, a.workers, a.s3_endpoint, port=a.port)
    uvicorn.run(create_app(settings), host="127.0.0.1", port=a.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
