"""The Skyhook service: an Arrow Flight server that scans files next to the storage.

``GetFlightInfo`` takes a request (see :mod:`.protocol`) naming a file or a directory under the
server root and answers one endpoint per file, so clients fetch files in parallel. ``DoGet``
scans one file (:mod:`.store`) with the same readers the client-side path uses
(:mod:`casa_data.readers`: pyarrow.dataset with row-group pruning for Parquet, uproot for ROOT
TTrees; pyarrow.dataset for Arrow IPC) and streams the matching rows and columns as
LZ4/ZSTD-compressed Arrow batches. A request with ``hist`` fills the histogram here and returns
only its bins.

The root is a local directory or ``s3://bucket/prefix`` (read with the S3 delivery path, with
credentials from the standard AWS variables). Bearer tokens are checked on every call (static
tokens, or WLCG JWTs whose ``storage.read`` scopes limit the paths: :mod:`.auth`); TLS is
optional. Limits (:mod:`.limits`): concurrent scans (others wait ``queue_timeout`` then get
"busy"), the process's resident memory, request size. Every failure is a Flight error carrying a
JSON ``extra_info`` the client turns back into the casa error; the service stays up.

Run: ``python -m casa_facility.skyhook.server --root DIR --port 0 [--token-file F] [--issuer URL
--jwks FILE] [--tls-cert C --tls-key K]``; it prints ``casa-skyhook listening on ...`` once
serving. Authentication is never off by accident: without ``--token-file`` or ``--issuer`` it
trusts the running facility's token issuer, or refuses to start; ``--insecure-no-auth`` serves
anyone and is refused on a non-loopback address. Each scan has a CPU-time budget
(``--max-scan-cpu``), checked between batches, so one client's long scan ends with a clear error
instead of holding a slot; health probes and other clients' scans keep being answered meanwhile.
Known limits: a client that stops reading keeps its scan slot until gRPC gives up on it; one
single operation that holds the GIL (a pathological constant in a filter) cannot be interrupted
between batches — the expression parser bounds those.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

from casa_data import readers
from casa_data.errors import CasaError, ObjectNotFoundError
from casa_data.skyhook.protocol import Request, decode, error_info, file_format
from casa_facility.skyhook.auth import BearerAuth, WLCGVerifier, authorize
from casa_facility.skyhook.limits import COUNT_SECONDS, MAX_COUNT, MAX_LIST, MAX_READ, ScanBudgetExceeded, _Budget, _rss
from casa_facility.skyhook.store import Store

__all__ = ["ScanBudgetExceeded", "SkyhookServer", "Store", "main"]

log = logging.getLogger("casa_data.skyhook")


# -- the server ----------------------------------------------------------------------------------
def _flight_errors(fn):
    """Turn any exception into a Flight error with a JSON ``extra_info``; the server stays up."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except flight.FlightError:
            raise
        except Exception as err:  # noqa: BLE001 - reported to the client, never fatal
            raise _as_flight(err) from None

    return wrapper


def _as_flight(err: BaseException) -> flight.FlightError:
    """A Flight error carrying the message and JSON kind; never the server's traceback."""
    if isinstance(err, (CasaError, OSError, ValueError, LookupError)):
        log.info("request failed: %s: %s", type(err).__name__, err)
    else:  # unexpected here: the traceback goes to the server log, only the message to the client
        log.warning("request failed unexpectedly", exc_info=err)
    msg = f"{type(err).__name__}: {err}"
    return flight.FlightServerError(msg[:4096], json.dumps(error_info(err)).encode())


class SkyhookServer(flight.FlightServerBase):
    """Scans under ``root`` for Flight clients. See the module docstring."""

    def __init__(self, root: str, host: str = "127.0.0.1", port: int = 0, *, tokens: list[str] = (),
                 verifier: WLCGVerifier | None = None,
                 tls: tuple[bytes, bytes] | None = None, max_scans: int = 4,
                 max_memory: int = 4 << 30, queue_timeout: float = 30.0,
                 s3_options: dict[str, Any] | None = None, max_scan_cpu: float | None = 600.0):
        scheme = "grpc+tls" if tls else "grpc+tcp"
        auth = bool(tokens) or verifier is not None
        if not auth and not _loopback(host):
            raise CasaError(f"refusing to serve {host} without authentication: give tokens or a WLCG verifier, "
                            "or bind to 127.0.0.1")
        middleware = {"auth": BearerAuth(list(tokens), verifier)} if auth else {}
        certs = [flight.CertKeyPair(cert=tls[0], key=tls[1])] if tls else []
        super().__init__(f"{scheme}://{host}:{port}", middleware=middleware, tls_certificates=certs)
        self.store = Store(root, s3_options)
        self.location = flight.Location(f"{scheme}://{host}:{self.port}")
        self.max_scans, self.max_memory, self.queue_timeout = max_scans, max_memory, queue_timeout
        self.max_scan_cpu = max_scan_cpu
        self._slots = threading.BoundedSemaphore(max_scans)
        self._running = 0
        self._lock = threading.Lock()

    # -- Flight methods ----------------------------------------------------------------------
    def _request(self, descriptor) -> Request:
        """The request of a descriptor: a JSON command, or a path (``FlightDescriptor.for_path``)."""
        if descriptor.descriptor_type == flight.DescriptorType.PATH:
            parts = [p.decode("utf-8", "replace") if isinstance(p, bytes) else str(p) for p in descriptor.path or []]
            return Request(path="/".join(parts)[:4096])
        return decode(descriptor.command or b"")

    def _authorize(self, context, rel: str) -> None:
        authorize(context, self.store.real(rel))  # the real file: a link cannot widen a scope

    def _files(self, context, req: Request, check_top: bool = True) -> list[str]:
        """The data files of ``req.path`` this call may read (each checked on its real path)."""
        if check_top:
            self._authorize(context, req.path)
        listed = self.store.list(req.path)
        if not listed:
            raise ObjectNotFoundError(f"no Parquet, Arrow or ROOT file under {req.path or '/'}")
        files = [f for f in listed if _allowed(context, self.store.real(f))]
        if not files:  # a link below the directory may point where the token may not read
            self._authorize(context, listed[0])  # raises, saying which scope is missing
        return files

    @_flight_errors
    def get_flight_info(self, context, descriptor):
        req = self._request(descriptor)
        return self._info(req, descriptor, self._files(context, req))

    @_flight_errors
    def get_schema(self, context, descriptor):
        req = self._request(descriptor)
        files = self._files(context, req)
        return flight.SchemaResult(self.store.schema(req, files[0]))

    @_flight_errors
    def list_flights(self, context, criteria):
        """One FlightInfo per data file under the root (or under the path ``criteria`` names).

        Record counts come from Parquet/Arrow metadata, and for ROOT files already counted by a
        GetFlightInfo (-1 otherwise: opening every NanoAOD file would take seconds each)."""
        rel = (criteria or b"").decode("utf-8", "replace").strip()
        if rel.startswith("{"):
            rel = decode(criteria).path
        req = Request(path=rel[:4096])
        infos = []
        for f in self._files(context, req, check_top=False)[:MAX_LIST]:
            infos.append(self._info(req.for_file(f), flight.FlightDescriptor.for_path(*f.split("/")), [f],
                                    root_counts=False))
        return iter(infos)

    @_flight_errors
    def do_put(self, context, descriptor, reader, writer):
        raise flight.FlightUnavailableError("this Skyhook server is read-only: DoPut is not supported")

    @_flight_errors
    def do_exchange(self, context, descriptor, reader, writer):
        raise flight.FlightUnavailableError("this Skyhook server does not support DoExchange; use DoGet")

    @_flight_errors
    def do_get(self, context, ticket):
        req = decode(ticket.ticket)
        self._authorize(context, req.path)  # tickets are client-supplied: check again
        self._acquire()
        budget = _Budget(self.max_scan_cpu)
        budget.start()
        try:
            schema, batches = self.store.scan(req, budget)
            budget.stop()
            budget.check()
        except BaseException:
            self._release()
            raise
        options = pa.ipc.IpcWriteOptions(compression=req.compression)
        return flight.GeneratorStream(schema, self._guarded(batches, budget), options=options)

    # -- FlightInfo: the real schema and, when known, the record count --------------------------
    def _info(self, req: Request, descriptor, files: list[str], root_counts: bool = True) -> flight.FlightInfo:
        endpoints = [flight.FlightEndpoint(req.for_file(rel).encode(), [self.location]) for rel in files]
        try:
            schema = self.store.schema(req, files[0])
        except Exception:  # noqa: BLE001 - the scan will say what is wrong; the info stays useful
            log.debug("no schema for %s", files[0], exc_info=True)
            schema = pa.schema([])
        records = -1
        if req.hist is not None:
            records = len(endpoints) * (req.hist.axis().size + 2)
        elif req.filter is None and len(files) <= MAX_COUNT:
            deadline = time.monotonic() + COUNT_SECONDS  # counting must not make the answer slow
            try:
                records = 0
                for f in files:
                    if (n := self.store.rows(f, req.tree, root=root_counts)) is None or time.monotonic() > deadline:
                        records = -1
                        break
                    records += n
            except Exception:  # noqa: BLE001 - unknown is -1
                records = -1
        size = -1
        try:
            size = sum(self.store.size(f) for f in files) if len(files) <= MAX_COUNT else -1
        except Exception:  # noqa: BLE001
            size = -1
        return flight.FlightInfo(schema, descriptor, endpoints, records, size)

    def list_actions(self, context):
        return [("health", "status, running scans and memory"), ("list", "data files under a path"),
                ("count", "events under a path"), ("columns", "columns of the first file"),
                ("read", "raw bytes of a file (no pushdown)")]

    def do_action(self, context, action):
        body = action.body.to_pybytes() if action.body is not None else b""
        return [flight.Result(self._action(context, action.type, body))]

    @_flight_errors
    def _action(self, context, kind: str, raw: bytes) -> bytes:
        if kind == "health":
            return json.dumps({"status": "ok", "scans": self._running, "max_scans": self.max_scans,
                               "rss": _rss(), "max_memory": self.max_memory}).encode()
        if kind == "read":  # raw bytes, for the fsspec face (no pushdown)
            try:
                rng = json.loads(raw)
                rel, start, end = str(rng["path"]), int(rng["start"]), int(rng["end"])
            except (ValueError, KeyError, TypeError):
                raise CasaError('the read action takes JSON {"path": ..., "start": ..., "end": ...}') from None
            if not 0 <= start <= end or end - start > MAX_READ:
                raise CasaError(f"byte range {start}-{end} invalid or above {MAX_READ >> 20} MB")
            self._authorize(context, rel)
            afs, path = self.store.path.arrow_filesystem(self.store.url(rel))
            with afs.open_input_file(path) as f:
                return f.read_at(end - start, start)
        if kind not in ("list", "count", "columns"):
            raise CasaError(f"unknown action {kind!r}; known: health, list, count, columns, read")
        req = decode(raw or b"{}")
        self._authorize(context, req.path)
        files = self.store.list(req.path)
        files = [f for f in files if _allowed(context, self.store.real(f))]
        if kind == "list":
            body: dict[str, Any] = {"files": files, "sizes": [self.store.size(f) for f in files]}
        elif kind == "count":
            body = {"events": sum(readers.count_events(self.store.candidate(f), file_format(f) or "", req.tree)
                                  for f in files)}
        else:
            if not files:
                raise ObjectNotFoundError(f"no data file under {req.path or '/'}")
            body = {"columns": readers.available_columns(self.store.candidate(files[0]),
                                                         file_format(files[0]) or "", req.tree)}
        return json.dumps(body).encode()

    # -- limits ------------------------------------------------------------------------------
    def _acquire(self) -> None:
        if self.max_memory and _rss() > self.max_memory:
            raise flight.FlightUnavailableError(
                f"Skyhook server is above its memory limit ({_rss() >> 20} MB > {self.max_memory >> 20} MB); "
                "retry later or start it with a larger --max-memory-mb")
        if not self._slots.acquire(timeout=self.queue_timeout):
            raise flight.FlightUnavailableError(
                f"Skyhook server busy: {self.max_scans} scans running for {self.queue_timeout:.0f} s; "
                "retry later or start it with a larger --max-scans")
        with self._lock:
            self._running += 1

    def _release(self) -> None:
        with self._lock:
            self._running -= 1
        self._slots.release()

    def _guarded(self, batches: Iterator[pa.RecordBatch], budget: _Budget) -> Iterator[pa.RecordBatch]:
        try:
            while True:
                budget.start()
                try:
                    b = next(batches, None)
                finally:
                    budget.stop()
                if b is None:
                    return
                budget.check()
                if self.max_memory and _rss() > self.max_memory:
                    raise flight.FlightUnavailableError(
                        f"scan aborted: Skyhook server memory above {self.max_memory >> 20} MB; "
                        "use a smaller batch_size or retry later")
                yield b
        except flight.FlightError:
            raise
        except Exception as err:  # noqa: BLE001
            raise _as_flight(err) from None
        finally:
            self._release()

def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _allowed(context, rel: str) -> bool:
    try:
        authorize(context, rel)
        return True
    except flight.FlightUnauthorizedError:
        return False


# -- command line ------------------------------------------------------------------------------------
TRUST_FILE = "issuer.json"  # {issuer, audience, jwks} the launcher writes next to the server


class _LogFormat(logging.Formatter):
    def formatException(self, ei) -> str:  # explicit limit: sys.tracebacklimit is 0 in the server
        import traceback

        return "".join(traceback.format_exception(*ei, limit=200)).rstrip()


def facility_trust() -> tuple[dict, Path] | None:
    """The WLCG issuer a running facility's Skyhook trusts (written by its launcher), if safe to use.

    Only files owned by this user, in directories no one else may write, are used: the facility
    directory is under the shared temporary directory, where another user could plant one.
    """
    from casa_facility.lifecycle import facility_dir

    path = facility_dir() / "skyhook" / TRUST_FILE
    try:
        for p in (path.parent.parent, path.parent, path):
            st = p.lstat()
            if st.st_uid != os.getuid() or st.st_mode & 0o022 or (p == path and not path.is_file()):
                return None
        return json.loads(path.read_text()), path
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="casa-skyhook", description=__doc__.split("\n\n")[0],
                                epilog="Authentication is required: --token-file, --issuer with --jwks, or "
                                       "(by default) the WLCG issuer of the facility `casa facility up` started. "
                                       "--insecure-no-auth serves anyone and only on a loopback address.")
    p.add_argument("--root", required=True, help="directory or s3://bucket/prefix to serve")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--token-file", help="accepted static bearer tokens, one per line")
    p.add_argument("--issuer", help="trusted WLCG token issuer (with --jwks): storage.read scopes apply")
    p.add_argument("--jwks", help="JSON Web Key Set file of the --issuer (read once, offline)")
    p.add_argument("--audience", help="required token audience (default: not checked)")
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="INSECURE: serve anyone without a token (refused unless --host is a loopback address)")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--max-scans", type=int, default=4)
    p.add_argument("--max-memory-mb", type=int, default=4096)
    p.add_argument("--queue-timeout", type=float, default=30.0)
    p.add_argument("--max-scan-cpu", type=float, default=600.0,
                   help="CPU seconds one scan may use before it is stopped (0: no limit)")
    p.add_argument("--s3-endpoint", help="S3 endpoint URL for an s3:// root (keys from AWS_* variables)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_LogFormat("%(asctime)s %(levelname)s %(message)s"))
    # pyarrow formats a Python exception leaving a handler with traceback.format_exception() and
    # sends that to the client; GetSchema (pyarrow <= 2x) does so even for Flight errors. No frames,
    # then: clients see the message only. The server log keeps full tracebacks (_LogFormat).
    sys.tracebacklimit = 0
    tokens = []
    if a.token_file:
        with open(a.token_file) as f:
            tokens = [line.strip() for line in f if line.strip()]
        if not tokens:
            p.error(f"--token-file {a.token_file} holds no token")
    tls = None
    if a.tls_cert or a.tls_key:
        if not (a.tls_cert and a.tls_key):
            p.error("TLS needs both --tls-cert and --tls-key")
        with open(a.tls_cert, "rb") as c, open(a.tls_key, "rb") as k:
            tls = (c.read(), k.read())
    s3 = {"endpoint_url": a.s3_endpoint} if a.s3_endpoint else {}
    verifier = None
    if a.issuer or a.jwks:
        if not (a.issuer and a.jwks):
            p.error("WLCG tokens need both --issuer and --jwks")
        with open(a.jwks) as f:
            verifier = WLCGVerifier(a.issuer, json.load(f), a.audience)
    auth_note = ""
    if a.insecure_no_auth:
        if tokens or verifier:
            p.error("--insecure-no-auth cannot be combined with --token-file or --issuer")
        if not _loopback(a.host):
            p.error(f"--insecure-no-auth is refused on {a.host}: without authentication serve on 127.0.0.1 only")
        auth_note = " INSECURE: no authentication, anyone on this machine may read"
    elif not (tokens or verifier):
        trust = facility_trust()
        if trust is None:
            p.error("no authentication configured: give --token-file, or --issuer with --jwks (WLCG tokens), "
                    "or start the facility (`casa facility up`) whose token issuer is then trusted; "
                    "--insecure-no-auth serves anyone (loopback only)")
        doc, where = trust
        try:
            verifier = WLCGVerifier(doc["issuer"], doc["jwks"], doc.get("audience"))
        except (KeyError, TypeError, ValueError) as err:
            p.error(f"the facility's Skyhook trust file {where} is unusable: {err}")
        auth_note = f" (WLCG tokens of the facility's issuer {doc['issuer']})"
    try:
        server = SkyhookServer(a.root, a.host, a.port, tokens=tokens, verifier=verifier, tls=tls,
                               max_scans=a.max_scans, max_memory=a.max_memory_mb << 20,
                               queue_timeout=a.queue_timeout, s3_options=s3, max_scan_cpu=a.max_scan_cpu or None)
    except CasaError as err:
        p.error(str(err))
    print(f"casa-skyhook listening on {server.location.uri.decode()} (root {a.root}, "
          f"auth {'on' if tokens or verifier else 'off'}{auth_note}, tls {'on' if tls else 'off'})", flush=True)
    server.serve()


if __name__ == "__main__":
    sys.exit(main())
