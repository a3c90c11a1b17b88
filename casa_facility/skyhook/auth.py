"""Bearer-token checks for the Skyhook server: static tokens and WLCG JWTs with path scopes.

A static token (``--token-file``) grants everything. A WLCG token (a JWT signed by a trusted
issuer, ES256 or RS256, keys from a JWKS file: offline, as the XCache set-up does) is checked for
signature, issuer, audience, ``nbf``/``exp``; its ``storage.read:/path`` scopes then limit what
it may scan (``storage.read:/`` = everything, ``storage.read:/coffea`` = that directory).
Messages never contain the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pyarrow.flight as flight

__all__ = ["WLCGVerifier", "BearerAuth", "authorize", "AuthFailed"]

ANY_AUDIENCE = "https://wlcg.cern.ch/jwt/v1/any"


class AuthFailed(Exception):
    """A token is not acceptable; the message says why (without the token)."""


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _int(part: str) -> int:
    return int.from_bytes(_b64(part), "big")


class WLCGVerifier:
    """Verify WLCG JWTs from one issuer whose public keys are in ``jwks``."""

    def __init__(self, issuer: str, jwks: dict, audience: str | None = None, leeway: float = 30.0):
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        self.issuer, self.audience, self.leeway = issuer, audience, leeway
        self._keys: dict[str | None, Any] = {}
        for k in jwks.get("keys", []):
            if k.get("kty") == "EC" and k.get("crv") == "P-256":
                key = ec.EllipticCurvePublicNumbers(_int(k["x"]), _int(k["y"]), ec.SECP256R1()).public_key()
            elif k.get("kty") == "RSA":
                key = rsa.RSAPublicNumbers(_int(k["e"]), _int(k["n"])).public_key()
            else:
                continue
            self._keys[k.get("kid")] = key
        if not self._keys:
            raise ValueError(f"the JWKS for {issuer} holds no usable EC P-256 or RSA key")

    def verify(self, token: str) -> dict:
        """The token's claims, or :class:`AuthFailed` saying what is wrong."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, padding
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

        try:
            h64, p64, s64 = token.split(".")
            header, claims, sig = json.loads(_b64(h64)), json.loads(_b64(p64)), _b64(s64)
        except ValueError:
            raise AuthFailed("the bearer token is neither an accepted token nor a JWT") from None
        if claims.get("iss") != self.issuer:
            raise AuthFailed(f"the token's issuer {claims.get('iss')!r} is not trusted here (trusted: {self.issuer})")
        key = self._keys.get(header.get("kid")) or (next(iter(self._keys.values())) if len(self._keys) == 1 else None)
        if key is None:
            raise AuthFailed(f"the token's key id {header.get('kid')!r} is not one of issuer {self.issuer}'s")
        data = f"{h64}.{p64}".encode()
        try:
            if header.get("alg") == "ES256" and isinstance(key, ec.EllipticCurvePublicKey) and len(sig) == 64:
                der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
                key.verify(der, data, ec.ECDSA(hashes.SHA256()))
            elif header.get("alg") == "RS256" and not isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
            else:
                raise AuthFailed(f"token algorithm {header.get('alg')!r} is not accepted (ES256, RS256)")
        except InvalidSignature:
            raise AuthFailed(f"the token's signature does not verify against issuer {self.issuer}'s keys") from None
        now = time.time()
        if not isinstance(claims.get("exp"), (int, float)) or claims["exp"] < now - self.leeway:
            raise AuthFailed(f"the token (sub={claims.get('sub')}) has expired; get a fresh one")
        if isinstance(claims.get("nbf"), (int, float)) and claims["nbf"] > now + self.leeway:
            raise AuthFailed("the token is not valid yet (nbf is in the future)")
        if self.audience:
            aud = claims.get("aud")
            auds = aud if isinstance(aud, list) else [aud]
            if self.audience not in auds and ANY_AUDIENCE not in auds:
                raise AuthFailed(f"the token's audience {aud!r} is not this server's ({self.audience!r})")
        return claims


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.strip().encode()).digest()


class _Claims(flight.ServerMiddleware):
    """Carries a verified JWT's claims to the handlers (``context.get_middleware("auth")``)."""

    def __init__(self, claims: dict):
        self.claims = claims


class BearerAuth(flight.ServerMiddlewareFactory):
    """Accept ``authorization: Bearer <token>`` if static or a valid WLCG JWT."""

    def __init__(self, tokens: list[str], verifier: WLCGVerifier | None = None):
        self._digests = [_digest(t) for t in tokens if t.strip()]
        self.verifier = verifier

    def start_call(self, info, headers):
        values = headers.get("authorization", [])
        if not values:
            raise flight.FlightUnauthenticatedError(
                "this Skyhook server needs a bearer token and the request carried none")
        why = "the bearer token was not accepted by this Skyhook server"
        for v in values:
            v = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
            scheme, _, tok = v.partition(" ")
            if scheme.lower() != "bearer":
                continue
            d = _digest(tok)
            if any(hmac.compare_digest(d, ok) for ok in self._digests):
                return None  # a static token: everything
            if self.verifier is not None and tok.count(".") == 2:
                try:
                    return _Claims(self.verifier.verify(tok.strip()))
                except AuthFailed as err:
                    why = str(err)
                except Exception:  # noqa: BLE001 - a malformed token: refused, never a traceback
                    why = "the bearer token is not a well-formed WLCG token"
        raise flight.FlightUnauthenticatedError(why)


def authorize(context, rel: str) -> None:
    """Refuse ``rel`` unless the call's JWT (if any) has a ``storage.read`` scope covering it."""
    mw = context.get_middleware("auth") if context is not None else None
    if not isinstance(mw, _Claims):
        return
    scope = mw.claims.get("scope", "")
    scopes = scope.split() if isinstance(scope, str) else []
    path = "/" + rel.strip("/")
    for s in scopes:
        if s.startswith("storage.read:"):
            allowed = "/" + s[len("storage.read:"):].strip("/")
            if allowed == "/" or path == allowed or path.startswith(allowed + "/"):
                return
    raise flight.FlightUnauthorizedError(
        f"the token (sub={mw.claims.get('sub')}) may not read {path}: its scopes are {scopes or 'none'}; "
        f"it needs storage.read:{path} or a parent directory")
