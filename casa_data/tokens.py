"""Bearer tokens for data access, found the way every WLCG client finds them.

Discovery order (WLCG Bearer Token Discovery): ``$BEARER_TOKEN``, the file ``$BEARER_TOKEN_FILE``,
``$XDG_RUNTIME_DIR/bt_u<uid>``, ``/tmp/bt_u<uid>`` (``$TMPDIR`` if set, like casa_compute). The XRootD client does the same lookup itself,
so the token casa reports is the one the client sends.

A :class:`BearerToken` never shows its value: not in ``repr``, ``str``, logs or errors. Its claims
(issuer, subject, scope, expiry) are decoded without verification to explain failures; the server
is the one that verifies.

>>> tok = find_token()
>>> tok                                   # <BearerToken from BEARER_TOKEN_FILE=... expires in 59 min>
>>> tok.env()                             # {"BEARER_TOKEN": ...} to forward to workers
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import stat
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import TokenError

__all__ = ["BearerToken", "find_token", "token_sources", "TokenPermissionWarning", "require_token"]

log = logging.getLogger("casa_data")

WHAT_TO_DO = (
    "get a token from your facility (e.g. htgettoken or oidc-token) and put it in $BEARER_TOKEN_FILE "
    "or /tmp/bt_u{uid} with mode 0600"
)


class TokenPermissionWarning(UserWarning):
    """A token file can be read by other users."""


class BearerToken:
    """A token and where it came from. The value is only available through :meth:`value`."""

    __slots__ = ("source", "path", "_value", "_claims")

    def __init__(self, value: str, source: str, path: Path | None = None):
        self._value = value.strip()
        self.source = source
        self.path = path
        self._claims: dict[str, Any] | None = None

    def value(self) -> str:
        """The secret itself (for a client library or a worker's environment; never log it)."""
        return self._value

    def env(self) -> dict[str, str]:
        """Environment to forward to a worker so its clients find the same token."""
        return {"BEARER_TOKEN": self._value}

    @property
    def fingerprint(self) -> str:
        """A short, non-secret digest that tells tokens apart."""
        return hashlib.sha256(self._value.encode()).hexdigest()[:7]

    @property
    def claims(self) -> dict[str, Any]:
        """The JWT payload, decoded but NOT verified ({} if the token is not a JWT)."""
        if self._claims is None:
            try:
                payload = self._value.split(".")[1]
                payload += "=" * (-len(payload) % 4)
                self._claims = json.loads(base64.urlsafe_b64decode(payload))
                if not isinstance(self._claims, dict):
                    self._claims = {}
            except (IndexError, ValueError):
                self._claims = {}
        return self._claims

    @property
    def is_jwt(self) -> bool:
        return bool(self.claims)

    @property
    def expires_at(self) -> float | None:
        exp = self.claims.get("exp")
        return float(exp) if isinstance(exp, (int, float)) else None

    def expired(self, leeway: float = 0.0) -> bool:
        return self.expires_at is not None and self.expires_at <= time.time() + leeway

    @property
    def scopes(self) -> list[str]:
        scope = self.claims.get("scope", "")
        return scope.split() if isinstance(scope, str) else []

    def describe(self) -> str:
        """Non-secret summary: source, subject, scope, audience, expiry."""
        parts = [f"from {self.source}"]
        if not self.is_jwt:
            parts.append("(not a JWT)")
            return " ".join(parts)
        c = self.claims
        if c.get("sub"):
            parts.append(f"sub={c['sub']}")
        if self.scopes:
            parts.append(f"scope={' '.join(self.scopes)!r}")
        if c.get("aud"):
            parts.append(f"aud={c['aud']}")
        if self.expires_at is not None:
            left = self.expires_at - time.time()
            parts.append(f"expired {_ago(-left)} ago" if left <= 0 else f"expires in {_ago(left)}")
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"<BearerToken {self.describe()}>"

    __str__ = __repr__

    def __reduce__(self):  # pickles (for workers) but still never prints
        return (BearerToken, (self._value, self.source, self.path))


def _ago(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def token_sources(environ: Mapping[str, str] | None = None, uid: int | None = None) -> list[tuple[str, Path | None]]:
    """The places looked at, in order: (label, file or None for the variable itself)."""
    env = os.environ if environ is None else environ
    uid = os.getuid() if uid is None else uid
    out: list[tuple[str, Path | None]] = [("$BEARER_TOKEN", None)]
    if env.get("BEARER_TOKEN_FILE"):
        out.append((f"$BEARER_TOKEN_FILE={env['BEARER_TOKEN_FILE']}", Path(env["BEARER_TOKEN_FILE"])))
    if env.get("XDG_RUNTIME_DIR"):
        p = Path(env["XDG_RUNTIME_DIR"]) / f"bt_u{uid}"
        out.append((f"$XDG_RUNTIME_DIR/bt_u{uid} ({p})", p))
    tmp = Path(tempfile.gettempdir()) / f"bt_u{uid}"  # /tmp unless $TMPDIR says otherwise
    out.append((str(tmp), tmp))
    return out


_warned: set[tuple[str, int]] = set()


def _check_permissions(path: Path, label: str) -> None:
    """Warn (once per file and mode) when others can read a token file."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO) and (str(path), mode) not in _warned:
        _warned.add((str(path), mode))
        msg = (f"token file {label} has mode {stat.S_IMODE(mode):04o}: other users can read it, and the "
               f"XRootD client refuses such files; run: chmod 600 {path}")
        warnings.warn(msg, TokenPermissionWarning, stacklevel=3)
        log.warning(msg)


def find_token(environ: Mapping[str, str] | None = None, uid: int | None = None,
               check_permissions: bool = True) -> BearerToken | None:
    """The first token in WLCG discovery order, or None. Warns about group/world-readable files."""
    env = os.environ if environ is None else environ
    if env.get("BEARER_TOKEN", "").strip():
        return BearerToken(env["BEARER_TOKEN"], "$BEARER_TOKEN")
    for label, path in token_sources(env, uid)[1:]:
        assert path is not None
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            if label.startswith("$BEARER_TOKEN_FILE"):  # explicitly set but missing: say so
                log.warning("token file %s does not exist; looking further", label)
            continue
        except OSError as err:
            log.warning("token file %s cannot be read (%s); looking further", label, err.strerror)
            continue
        if not text:
            log.warning("token file %s is empty; looking further", label)
            continue
        if check_permissions:
            _check_permissions(path, label)
        return BearerToken(text, label, path)
    return None


def require_token(what: str = "this request", environ: Mapping[str, str] | None = None) -> BearerToken:
    """The discovered token, or a :class:`TokenError` listing where casa looked and what to do."""
    tok = find_token(environ)
    if tok is None:
        looked = ", ".join(label for label, _ in token_sources(environ))
        raise TokenError(f"{what} needs a bearer token and none was found (looked at {looked}); "
                         + WHAT_TO_DO.format(uid=os.getuid()))
    if tok.expired():
        raise TokenError(f"the token {tok.describe()} has expired; {WHAT_TO_DO.format(uid=os.getuid())}",
                         source=tok.source)
    return tok
