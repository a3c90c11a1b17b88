"""XRootD delivery: ``root://`` URLs read straight from a server (``xrootd``) or through an XCache
(``xcache``) with a bearer token, via fsspec-xrootd and uproot.

Options (``paths: {xcache: {...}, xrootd: {...}}`` in the casa config):

``ca_dir``
    CA directory for the TLS that token logins (ztn) use; exported as ``X509_CERT_DIR``.
``cache_dir``
    The XCache's local root, when it is on this machine: lets :func:`casa_data.cache_status`
    say how many bytes of each file are cached.
``token``
    ``"required"`` (xcache default): fail early, naming the sources, when no token is found;
    ``"optional"`` (xrootd default) sends one when found.
``connection_retry`` / ``connection_window`` / ``request_timeout`` / ``stream_error_window``
    XRootD client settings; the defaults (1, 5 s, 60 s, 0 s) make a down server fail in seconds
    instead of the client's ~9 minute retry loop, and a restarted one usable at once.

Each token gets its own client connection: the URL handed to uproot carries a non-secret token
fingerprint as the XRootD user name (the client reuses connections per user@host, and a
connection keeps the token it logged in with).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import fsspec

from ..errors import MissingFileError, ServiceError, TokenError
from ..tokens import WHAT_TO_DO, BearerToken, find_token, require_token, token_sources
from .base import DeliveryPath

__all__ = ["XRootDPath", "XCachePath", "configure_client", "explain_xrootd_error"]

# StreamErrorWindow: after a broken connection XrdCl fails every request to that server for this
# long (default 1800 s!), so a restarted XCache would stay "down" for half an hour.
_DEFAULTS = {"connection_retry": 1, "connection_window": 5, "request_timeout": 60, "stream_error_window": 0}
_configured: dict[str, Any] = {}


def configure_client(options: dict[str, Any] | None = None) -> None:
    """Set the XRootD client's CA directory and fail-fast retries (before its first connection)."""
    opts = {**_DEFAULTS, **(options or {})}
    if opts.get("ca_dir"):
        os.environ["X509_CERT_DIR"] = str(opts["ca_dir"])
    env = {"XRD_CONNECTIONRETRY": opts["connection_retry"], "XRD_CONNECTIONWINDOW": opts["connection_window"],
           "XRD_REQUESTTIMEOUT": opts["request_timeout"], "XRD_STREAMERRORWINDOW": opts["stream_error_window"]}
    key = repr(sorted(env.items()))
    if _configured.get("key") == key:
        return
    for k, v in env.items():
        os.environ[k] = str(v)
    try:  # the environment counts only before the client library starts; this works after too
        from XRootD.client import EnvPutInt

        EnvPutInt("ConnectionRetry", int(opts["connection_retry"]))
        EnvPutInt("ConnectionWindow", int(opts["connection_window"]))
        EnvPutInt("RequestTimeout", int(opts["request_timeout"]))
        EnvPutInt("StreamErrorWindow", int(opts["stream_error_window"]))
    except ImportError as err:
        raise ServiceError("root:// needs the XRootD client bindings: pip install xrootd fsspec-xrootd") from err
    _configured["key"] = key


def _loose(path: os.PathLike) -> bool:
    try:
        return bool(os.stat(path).st_mode & 0o077)
    except OSError:
        return False


def _lfn_of(url: str) -> str:
    path = urlsplit(url).path
    return "/" + path.lstrip("/")


def _endpoint(url: str) -> str:
    return urlsplit(url).netloc.rpartition("@")[2]


def explain_xrootd_error(url: str, err: BaseException, token: BearerToken | None,
                         via: str = "xrootd") -> BaseException:
    """Turn the XRootD client's terse errors into ones that name the culprit and the fix."""
    text = str(err)
    where = f"{via} {_endpoint(url)}"
    uid = os.getuid()
    if "Auth failed" in text or "No protocols left" in text:
        if token is None:
            looked = ", ".join(label for label, _ in token_sources())
            return TokenError(f"{where} requires a bearer token and none was found (looked at {looked}); "
                              + WHAT_TO_DO.format(uid=uid))
        if token.expired():
            why = "it has expired"
        elif token.path is not None and _loose(token.path):
            why = f"the file is readable by others, so the client will not send it: chmod 600 {token.path}"
        elif not token.is_jwt:
            why = "it is not a JWT"
        else:
            why = "it is not signed by an issuer this server trusts, or is not valid yet"
        return TokenError(f"{where} rejected the token {token.describe()}: {why}; "
                          + WHAT_TO_DO.format(uid=uid), source=token.source)
    if "[3010]" in text or "permission denied" in text.lower():
        if token is not None:
            return TokenError(f"{where} refused {_lfn_of(url)}: the token {token.describe()} does not grant "
                              f"read access to it (scope or audience); get a token with storage.read "
                              f"covering this path", source=token.source)
        return TokenError(f"{where} refused {_lfn_of(url)} (permission denied) and no token was sent; "
                          + WHAT_TO_DO.format(uid=uid))
    if "[3011]" in text or "no such file" in text.lower():
        return MissingFileError(url, f"{_lfn_of(url)} does not exist at {where} (nor at its origin)")
    if ("Connection error" in text or "connection refused" in text.lower() or "[3005]" in text
            or "closed file" in text):
        return ServiceError(f"{where} is not reachable for {_lfn_of(url)} ({text.strip()[:120]}); "
                            "is the server (or the XCache's origin) running?")
    return err


def _forget_handles(endpoint: str) -> None:
    """Drop fsspec-xrootd's cached open-file handles to ``endpoint`` after a connection broke.

    fsspec-xrootd 0.5 keeps read handles open for minutes; once the server restarted they fail
    with "I/O operation on closed file" on every read, so the next read must reopen. Every
    filesystem instance (uproot makes its own, with its options) is searched.
    """
    items = []
    try:
        cls = type(fsspec.filesystem("root", hostid=endpoint))
        for fs in list(getattr(cls, "_cache", {}).values()):
            if str(getattr(fs, "hostid", "")).rpartition("@")[2] != endpoint:
                continue
            cache = getattr(fs, "_readonly_filehandle_cache", None)
            handles = getattr(cache, "_cache", None)
            if isinstance(handles, dict):
                items += handles.values()
                handles.clear()
    except Exception:  # noqa: BLE001 - a different fsspec-xrootd: nothing cached to drop
        return
    for item in items:
        try:
            item.handle.close(callback=lambda *a: None)
        except Exception:  # noqa: BLE001 - the connection is gone anyway
            pass


class XRootDPath(DeliveryPath):
    """``root://host:port//path`` read directly from an XRootD server."""

    name = "xrootd"
    schemes = ("root",)
    token_default = "optional"

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.token_mode = options.get("token", self.token_default)
        configure_client(options)

    def token(self) -> BearerToken | None:
        """The token this path sends (TokenError if required and missing or expired)."""
        if self.token_mode == "required":
            return require_token(f"the {self.name} path")
        return find_token()

    def reader_url(self, url: str) -> str:
        """``url`` with the token fingerprint as user, so a new token gets a new connection."""
        if self.token_mode == "required":  # fail here, naming the sources, not at the server
            tok: BearerToken | None = require_token(f"reading {_lfn_of(url)} via {self.name} {_endpoint(url)}")
        else:
            tok = find_token() if self.token_mode != "off" else None
        parts = urlsplit(url)
        if tok is None or "@" in parts.netloc:
            return url
        return urlunsplit(parts._replace(netloc=f"c{tok.fingerprint}@{parts.netloc}"))

    def filesystem(self, url: str) -> fsspec.AbstractFileSystem:
        configure_client(self.options)
        hostid = urlsplit(self.reader_url(url)).netloc
        return fsspec.filesystem("root", hostid=hostid)

    def explain_error(self, url: str, err: BaseException) -> BaseException:
        """A clear casa error for a client error on ``url`` (see :func:`explain_xrootd_error`)."""
        if isinstance(err, (TokenError, ServiceError)):
            return err
        better = explain_xrootd_error(url, err, find_token(check_permissions=False), self.name)
        if isinstance(better, ServiceError):
            _forget_handles(_endpoint(url))
        return better

    def check(self, url: str, timeout: float = 5.0) -> None:
        """Stat ``url`` on the server; raise ServiceError / TokenError / FileReadError if it fails.

        A down server fails in well under ``timeout`` (one connection attempt, see the options).
        """
        if self.token_mode == "required":
            self.token()
        fs = self.filesystem(url)
        try:
            fs.info(_lfn_of(url))
        except OSError as err:
            raise self.explain_error(url, err) from None

    def storage_options(self, url: str) -> dict[str, Any]:
        configure_client(self.options)
        return {"timeout": int(self.options.get("request_timeout", _DEFAULTS["request_timeout"]))}

    def open(self, url: str, mode: str = "rb", **kwargs: Any):
        return self.filesystem(url).open(_lfn_of(url), mode, **kwargs)

    def size(self, url: str) -> int:
        try:
            return int(self.filesystem(url).info(_lfn_of(url))["size"])
        except OSError as err:
            raise self.explain_error(url, err) from None

    def cat(self, url: str) -> bytes:
        """The whole file (fsspec-xrootd's ``cat_file`` needs explicit start/end)."""
        try:
            return self.filesystem(url).cat_file(_lfn_of(url), None, None)
        except OSError as err:
            raise self.explain_error(url, err) from None


class XCachePath(XRootDPath):
    """``root://`` through an XCache; a token is required (``token: optional`` to relax)."""

    name = "xcache"
    token_default = "required"

    def cache_file(self, url: str) -> str | None:
        """Where the cache keeps ``url``'s bytes locally (needs the ``cache_dir`` option)."""
        cache_dir = self.options.get("cache_dir")
        if not cache_dir:
            return None
        return os.path.join(cache_dir, _lfn_of(url).lstrip("/"))


