"""Client of the Skyhook service: scans and histograms pushed to the storage side.

>>> ds = SkyhookDataset("skyhook://127.0.0.1:8815/agc")          # doctest: +SKIP
>>> ds.to_table(columns=["Muon_pt"], filter="nMuon >= 2")        # a pyarrow.Table
>>> ds.histogram("Muon_pt", bins=60, range=(0, 120), filter="nMuon >= 2")   # a hist.Hist

The bearer token is found like every casa token (:func:`casa_data.tokens.find_token`: the
WLCG discovery order) unless one is given. Every Flight call goes through :meth:`SkyhookClient._call`,
which translates Flight errors into casa errors (the same classes a client-side read raises).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa

from .. import readers
from ..access import Candidate, Replicas
from ..errors import (
    CasaError,
    ColumnNotFoundError,
    FileReadError,
    FilterError,
    ObjectNotFoundError,
    ServiceError,
    TokenError,
)
from ..expr import Filter
from ..tokens import BearerToken, find_token
from .protocol import HistSpec, Request, fill_values

__all__ = ["SkyhookClient", "SkyhookDataset", "SkyhookUnavailable", "parse_url"]

log = logging.getLogger("casa_data.skyhook")


class SkyhookUnavailable(ServiceError):
    """No Skyhook service answers at the address (a client-side fallback may take over)."""


def parse_url(url: str) -> tuple[str, str]:
    """``skyhook://host:port/a/b`` -> ``("host:port", "a/b")``."""
    parts = urlsplit(url)
    if parts.scheme != "skyhook" or not parts.port:
        raise CasaError(f"not a skyhook://host:port/path URL: {url}")
    return parts.netloc, parts.path.strip("/")


class SkyhookClient:
    """A connection to one Skyhook server.

    Parameters
    ----------
    address : ``host:port``, ``skyhook://host:port`` or a Flight URI (``grpc://``, ``grpc+tls://``).
    token : a token string or :class:`~casa_data.tokens.BearerToken`; ``"auto"`` (default) finds
        one by WLCG discovery (none found: calls carry no token); ``None``: never send one.
    tls : use TLS; ``ca_file`` is the CA that signed the server certificate (implies TLS).
    timeout : seconds per call; ``workers`` : files fetched in parallel.
    """

    def __init__(self, address: str, *, token: str | BearerToken | None = "auto", tls: bool = False,
                 ca_file: str | Path | None = None, timeout: float = 120.0, workers: int = 4):
        if "://" in address:
            parts = urlsplit(address)
            tls = tls or parts.scheme.endswith("tls")
            address = parts.netloc
        self.address = address
        self.tls = bool(tls or ca_file)
        self.ca_file = str(ca_file) if ca_file else None
        self.timeout, self.workers = timeout, workers
        if token == "auto":
            token = find_token()
        self._token = BearerToken(token, "argument") if isinstance(token, str) else token
        self._client = None

    @property
    def uri(self) -> str:
        return f"{'grpc+tls' if self.tls else 'grpc+tcp'}://{self.address}"

    def __getstate__(self) -> dict:  # the gRPC channel does not pickle: reopen on the worker
        return {**self.__dict__, "_client": None}

    def __repr__(self) -> str:
        tok = self._token.describe() if self._token else "none"
        return f"<SkyhookClient {self.uri} token={tok}>"

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def flight(self):
        import pyarrow.flight as fl

        if self._client is None:
            kw: dict[str, Any] = {}
            if self.ca_file:
                kw["tls_root_certs"] = Path(self.ca_file).read_bytes()
            self._client = fl.FlightClient(self.uri, **kw)
        return self._client

    def _options(self):
        import pyarrow.flight as fl

        headers = []
        if self._token is not None:
            headers.append((b"authorization", f"Bearer {self._token.value()}".encode()))
        return fl.FlightCallOptions(headers=headers, timeout=self.timeout)

    def _call(self, what: str, fn, *args):
        """Run one Flight call; translate its errors (naming ``what``, never the token)."""
        import pyarrow.flight as fl

        try:
            return fn(*args)
        except fl.FlightUnauthenticatedError as err:
            have = f"the token {self._token.describe()}" if self._token else "no token (none was found)"
            raise TokenError(f"Skyhook server {self.address} refused {what}: {_message(err)}; casa sent "
                             f"{have}. Get a token the server accepts and put it in $BEARER_TOKEN_FILE",
                             source=self._token.source if self._token else None) from None
        except fl.FlightUnauthorizedError as err:
            raise TokenError(f"Skyhook server {self.address} refused {what}: {_message(err)}",
                             source=self._token.source if self._token else None) from None
        except fl.FlightServerError as err:
            raise _from_server(err, f"skyhook://{self.address}/{what.lstrip('/')}") from None
        except fl.FlightTimedOutError as err:
            raise ServiceError(f"Skyhook server {self.address} timed out on {what} after {self.timeout:.0f} s: "
                               f"{_message(err)}") from None
        except fl.FlightUnavailableError as err:
            msg = _message(err)
            if "Skyhook server" in msg or "scan aborted" in msg:  # busy / memory: the server said so
                raise ServiceError(f"{what}: {msg}") from None
            raise SkyhookUnavailable(
                f"no Skyhook service answers at {self.uri} ({msg[:200]}); start one with "
                "casa_facility.services.skyhook.SkyhookService, check the address, or allow a client-side "
                "scan with fallback=") from None
        except fl.FlightError as err:
            raise ServiceError(f"Skyhook server {self.address} failed on {what}: {_message(err)}") from None

    def action(self, name: str, body: dict | None = None, raw: bool = False) -> Any:
        """Run a server action; its JSON answer (or bytes with ``raw``)."""
        import pyarrow.flight as fl

        act = fl.Action(name, json.dumps(body or {}).encode())
        what = str((body or {}).get("path", f"action {name}"))
        results = self._call(what, lambda: list(self.flight.do_action(act, self._options())))
        data = results[0].body.to_pybytes()
        return data if raw else json.loads(data)

    def health(self) -> dict:
        """``{"status": "ok", "scans": ..., ...}`` or an error saying why not."""
        return self.action("health")

    def list(self, path: str = "") -> list[str]:
        """Data files under ``path`` on the server."""
        return self.action("list", {"path": path})["files"]

    # -- scans --------------------------------------------------------------------------------
    def endpoints(self, req: Request) -> list[tuple[str, Any]]:
        """``[(file, ticket)]`` for ``req``: one per file."""
        import pyarrow.flight as fl

        desc = fl.FlightDescriptor.for_command(req.encode())
        info = self._call(f"{req.path or '/'}", self.flight.get_flight_info, desc, self._options())
        return [(json.loads(ep.ticket.ticket)["path"], ep.ticket) for ep in info.endpoints]

    def _reader(self, rel: str, ticket):
        return self._call(rel, self.flight.do_get, ticket, self._options())

    def read_file(self, rel: str, ticket) -> pa.Table:
        reader = self._reader(rel, ticket)
        return self._call(rel, reader.read_all)

    def read(self, req: Request) -> pa.Table:
        """The scan as one table, files fetched in parallel and concatenated in file order."""
        eps = self.endpoints(req)
        if len(eps) == 1 or self.workers <= 1:
            tables = [self.read_file(rel, t) for rel, t in eps]
        else:
            with ThreadPoolExecutor(min(self.workers, len(eps))) as pool:
                tables = list(pool.map(lambda e: self.read_file(*e), eps))
        nonempty = [t for t in tables if t.num_rows] or tables[:1]
        return pa.concat_tables(nonempty, promote_options="permissive")

    def iter_batches(self, req: Request) -> Iterator[pa.RecordBatch]:
        """Record batches, file after file, as they stream in."""
        for rel, ticket in self.endpoints(req):
            reader = self._reader(rel, ticket)
            while True:
                try:
                    chunk = self._call(rel, reader.read_chunk)
                except StopIteration:
                    break
                if chunk.data.num_rows:
                    yield chunk.data

    def histogram(self, req: Request):
        """A ``hist.Hist`` (weight storage) summed over the files of ``req`` (which has ``hist``)."""
        import hist
        import numpy as np

        assert req.hist is not None
        eps = self.endpoints(req)
        with ThreadPoolExecutor(max(1, min(self.workers, len(eps)))) as pool:
            tables = list(pool.map(lambda e: self.read_file(*e), eps))
        spec = req.hist
        if spec.edges is not None:
            axis = hist.axis.Variable(spec.edges, name="x", label=spec.expr)
        else:
            axis = hist.axis.Regular(spec.bins, *spec.range, name="x", label=spec.expr)
        h = hist.Hist(axis, storage=hist.storage.Weight())
        view = h.view(flow=True)
        view["value"] = np.sum([t.column("value").to_numpy() for t in tables], axis=0)
        view["variance"] = np.sum([t.column("variance").to_numpy() for t in tables], axis=0)
        return h


def _message(err: BaseException) -> str:
    """The server's own message, without gRPC's detail suffix."""
    text = str(err)
    for cut in (". Detail:", ". gRPC client debug context:", "\nDetail:"):
        text = text.split(cut)[0]
    return text.strip()


def _from_server(err, what: str) -> CasaError:
    try:
        info = json.loads(err.extra_info or b"{}")
    except ValueError:
        info = {}
    kind, msg = info.get("kind", ""), _message(err)
    msg = msg.split(": ", 1)[1] if msg.startswith(f"{kind}: ") else msg
    if kind == "ColumnNotFoundError":
        return ColumnNotFoundError(info.get("column", "?"), info.get("suggestions", []), what)
    if kind == "FilterError":
        return FilterError(msg)
    if kind in ("ObjectNotFoundError", "FileNotFoundError"):
        return ObjectNotFoundError(f"{what}: {msg}")
    if kind in ("FileReadError", "OSError", "ValueError", "KeyError"):
        return FileReadError(what, msg)
    return ServiceError(f"Skyhook server failed on {what}: {msg}")


# -- the pyarrow-Dataset-like face ------------------------------------------------------------
class SkyhookDataset:
    """Files under a ``skyhook://host:port/path`` URL, read like a ``pyarrow.dataset.Dataset``.

    ``fallback`` (a directory, file or ``s3://`` URL holding the same files as ``path``) is
    scanned client-side, with the same results, when no Skyhook service answers.
    """

    def __init__(self, url: str, *, tree: str = "Events", client: SkyhookClient | None = None,
                 fallback: str | None = None, **client_options: Any):
        address, self.path = parse_url(url)
        self.url, self.tree, self.fallback = url, tree, fallback
        self.client = client or SkyhookClient(address, **client_options)

    def __repr__(self) -> str:
        return f"<SkyhookDataset {self.url}>"

    def _request(self, columns, filter, **extra) -> Request:
        if filter is not None and not isinstance(filter, (str, Filter)):
            raise FilterError(f"Skyhook filters are text such as 'nMuon >= 2' (casa_data.expr), not "
                              f"{type(filter).__name__}")
        text = str(Filter(filter)) if filter is not None else None  # fail early, client-side
        return Request(path=self.path, columns=list(columns) if columns is not None else None,
                       filter=text, tree=self.tree, **extra)

    @property
    def files(self) -> list[str]:
        return self.client.list(self.path)

    def to_table(self, columns: Sequence[str] | None = None, filter: str | Filter | None = None) -> pa.Table:
        """The rows passing ``filter`` (all by default), only ``columns`` (all by default)."""
        req = self._request(columns, filter)
        try:
            return self.client.read(req)
        except SkyhookUnavailable as err:
            return self._fallback(err).to_arrow(columns, filter)

    def to_batches(self, columns: Sequence[str] | None = None, filter: str | Filter | None = None,
                   batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        req = self._request(columns, filter, batch_size=batch_size)
        try:
            yield from self.client.iter_batches(req)
        except SkyhookUnavailable as err:
            yield from self._fallback(err).iter_batches(columns, batch_size, filter)

    def histogram(self, expr: str, bins: int | None = None, range: tuple[float, float] | None = None,
                  *, edges: Sequence[float] | None = None, weight: str | None = None,
                  filter: str | Filter | None = None):
        """A ``hist.Hist`` of ``expr`` filled server-side; only the bins travel."""
        spec = HistSpec(expr=expr, bins=bins, range=range, edges=list(edges) if edges is not None else None,
                        weight=weight)
        req = self._request(None, filter, hist=spec)
        try:
            return self.client.histogram(req)
        except SkyhookUnavailable as err:
            return client_histogram(self._fallback(err), spec, filter)

    def _fallback(self, err: SkyhookUnavailable) -> FallbackScan:
        if not self.fallback:
            raise err
        from .protocol import file_format

        log.warning("%s; scanning %s client-side instead", err, self.fallback)
        base = self.fallback.rstrip("/") + ("/" + self.path if self.path else "")
        path = _storage_path(base)
        if file_format(base):
            files = [base]
        else:
            fs = path.filesystem(base)
            found = sorted(f for f in fs.find(path.reader_url(base)) if file_format(f))
            files = [f if "://" not in base else fs.unstrip_protocol(f) for f in found]
        if not files:
            raise ObjectNotFoundError(f"fallback {base} holds no Parquet, Arrow or ROOT file") from err
        return FallbackScan([Candidate(f, path) for f in files], self.tree)


def _storage_path(url: str):
    """The delivery path of a fallback location: a local directory or an ``s3://`` URL."""
    from ..config import get_config

    if url.startswith(("s3://", "s3a://")):
        from ..paths.s3 import S3Path

        return S3Path(**get_config().path_options("s3"))
    from ..paths.local import LocalPath

    return LocalPath(**get_config().path_options("local"))


class FallbackScan:
    """Files scanned client-side (the same results as the server), through the access layer."""

    def __init__(self, files: list[Candidate], tree: str):
        self.files, self.tree = files, tree

    def _fmt(self, url: str) -> str:
        from .protocol import file_format

        return "parquet" if file_format(url) in ("parquet", "arrow") else "root"

    def _each(self, fn):
        return [Replicas(c.url, [c]).call(fn) for c in self.files]

    def to_arrow(self, columns=None, filter=None) -> pa.Table:
        flt = Filter(filter) if filter is not None else None
        tables = self._each(lambda c: readers.read_arrow(c, self._fmt(c.url), self.tree, columns, flt))
        nonempty = [t for t in tables if t.num_rows] or tables[:1]
        return pa.concat_tables(nonempty, promote_options="permissive")

    def to_awkward(self, columns=None, filter=None):
        import awkward as ak

        flt = Filter(filter) if filter is not None else None
        parts = self._each(lambda c: readers.read_awkward(c, self._fmt(c.url), self.tree, columns, flt))
        return parts[0] if len(parts) == 1 else ak.concatenate(parts)

    def iter_batches(self, columns=None, batch_size: int = 65_536, filter=None) -> Iterator[pa.RecordBatch]:
        flt = Filter(filter) if filter is not None else None
        for c in self.files:
            yield from Replicas(c.url, [c]).call(
                lambda c: list(readers.iter_arrow(c, self._fmt(c.url), self.tree, columns, flt, batch_size)))


def client_histogram(ds, spec: HistSpec, filter=None):
    """The same histogram filled client-side (from a Dataset or a :class:`FallbackScan`)."""
    import hist

    expr, weight = spec.filters()
    need = sorted(expr.columns | (weight.columns if weight else set()))
    axis = (hist.axis.Variable(spec.edges, name="x", label=spec.expr) if spec.edges is not None
            else hist.axis.Regular(spec.bins, *spec.range, name="x", label=spec.expr))
    h = hist.Hist(axis, storage=hist.storage.Weight())
    arr = ds.to_awkward(need, filter=filter)
    values, weights = fill_values(arr, expr, weight)
    h.fill(values, weight=weights)
    return h
