"""The Dask Gateway authenticator of the facility: the same WLCG tokens as data access.

A request carries ``Authorization: Bearer <JWT>`` from the facility's token issuer (the one the
XCache, Skyhook and ServiceX trust). The token is verified offline (signature against the
issuer's JWKS, issuer, audience, ``nbf``/``exp``: :class:`~casa_facility.skyhook.auth.WLCGVerifier`)
and must carry a ``compute.*`` scope (WLCG's ``compute.create``, ``compute.read``,
``compute.modify``, ``compute.cancel``). The user is the token's subject: dask-gateway then
shows, scales and connects each user to their own clusters only.

Configured in the gateway's config file (``casa_facility.gateway`` writes it)::

    c.DaskGateway.authenticator_class = "casa_facility.gateway_auth.WLCGAuthenticator"
    c.WLCGAuthenticator.issuer = "https://..."
    c.WLCGAuthenticator.jwks_file = "/path/jwks.json"
"""

from __future__ import annotations

import json
import re

from aiohttp import web
from dask_gateway_server.auth import Authenticator
from dask_gateway_server.models import User
from traitlets import List, Unicode

__all__ = ["WLCGAuthenticator", "username_for"]

COMPUTE_SCOPES = ("compute.create", "compute.read", "compute.modify", "compute.cancel")


def username_for(sub: str) -> str:
    """A gateway user name for a token subject (printable, no separators, <= 64 characters)."""
    name = re.sub(r"[^A-Za-z0-9_.@-]", "_", sub)[:64]
    return name or "_"


def _refuse(status: type[web.HTTPException], why: str) -> web.HTTPException:
    # dask-gateway turns ``reason`` into the JSON error the client raises; no token in it.
    headers = {"WWW-Authenticate": 'Bearer realm="casa-gateway"'} if status is web.HTTPUnauthorized else None
    return status(reason=why, headers=headers)


class WLCGAuthenticator(Authenticator):
    """Bearer WLCG tokens of one issuer; the user is ``sub``; a ``compute.*`` scope is required."""

    issuer = Unicode(help="The trusted token issuer (the 'iss' claim).", config=True)
    jwks_file = Unicode(help="A JSON file with the issuer's public keys (JWKS).", config=True)
    audience = Unicode("", help="Required audience ('' accepts any).", config=True)
    required_scopes = List(Unicode(), list(COMPUTE_SCOPES),
                           help="The token needs at least one of these scopes ([] for none).", config=True)

    _verifier = None

    def _verify(self, token: str) -> dict:
        from casa_facility.skyhook.auth import WLCGVerifier

        if self._verifier is None:
            with open(self.jwks_file) as f:
                self._verifier = WLCGVerifier(self.issuer, json.load(f), audience=self.audience or None)
        return self._verifier.verify(token)

    async def authenticate(self, request: web.Request) -> User:
        from casa_facility.skyhook.auth import AuthFailed

        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _refuse(web.HTTPUnauthorized, "this gateway takes the facility's WLCG bearer token "
                                                "(Authorization: Bearer <token>) and the request had none")
        try:
            claims = self._verify(token.strip())
        except AuthFailed as err:
            raise _refuse(web.HTTPUnauthorized, str(err)) from None
        except Exception:  # noqa: BLE001 - a malformed token is refused, never a traceback
            raise _refuse(web.HTTPUnauthorized, "the bearer token is not a well-formed WLCG token") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise _refuse(web.HTTPUnauthorized, "the token has no subject ('sub'): no user to run clusters for")
        scopes = claims.get("scope", "")
        scopes = scopes.split() if isinstance(scopes, str) else []
        if self.required_scopes and not set(scopes) & set(self.required_scopes):
            raise _refuse(web.HTTPForbidden, f"the token (sub={sub}) has no compute scope (it has "
                                             f"{' '.join(scopes) or 'none'}); Dask clusters need one of "
                                             f"{', '.join(self.required_scopes)}")
        return User(username_for(sub), groups=[f"scope:{s}" for s in scopes if s.startswith("compute.")])
