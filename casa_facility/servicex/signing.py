"""What the ServiceX endpoint checks before it answers: its own HS256 access tokens and the AWS
signatures (V4 headers or presigned URLs, V2 presigned URLs) of its read-only S3 subset."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import parse_qsl, quote

from fastapi import Request

__all__ = ["SigV4Error", "access_token", "access_subject", "verify_sigv4"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def access_token(key: bytes, claims: dict[str, Any]) -> str:
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + _b64(json.dumps(claims).encode())
    return head + "." + _b64(hmac.new(key, head.encode(), hashlib.sha256).digest())


def access_subject(key: bytes, token: str) -> str | None:
    """The subject of one of our access tokens (HS256, unexpired), else None."""
    try:
        head, payload, sig = token.split(".")
        good = _b64(hmac.new(key, f"{head}.{payload}".encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(good.encode(), sig.encode()):
            return None
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, TypeError, UnicodeError):
        return None
    if not isinstance(claims, dict) or claims.get("typ") != "casa-servicex-access":
        return None
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or exp <= time.time() or not isinstance(claims.get("sub"), str):
        return None
    return claims["sub"]


# -- SigV4 (the S3 subset) ------------------------------------------------------------------------
class SigV4Error(Exception):
    pass


_SIGV4_SKEW = 900  # seconds of clock skew accepted for header-signed requests


def _q(text: str) -> str:
    return quote(text, safe="-_.~")


def verify_sigv4(request: Request, secret_for, owners: dict[str, str]) -> str:
    """Check an AWS Signature V4 (header or presigned URL); the owner of the access key used."""
    raw_query = request.scope.get("query_string", b"").decode("latin-1")
    pairs = parse_qsl(raw_query, keep_blank_values=True)
    params = dict(pairs)
    now = time.time()
    if "Signature" in params and "AWSAccessKeyId" in params:
        return _verify_sigv2_query(request, params, secret_for, owners, now)
    if "X-Amz-Signature" in params:
        if params.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
            raise SigV4Error("only AWS4-HMAC-SHA256 signatures are accepted")
        cred, signed, sig = params.get("X-Amz-Credential", ""), params.get("X-Amz-SignedHeaders", ""), params["X-Amz-Signature"]
        amz_date = params.get("X-Amz-Date", "")
        try:
            expires = int(params.get("X-Amz-Expires", ""))
        except ValueError:
            raise SigV4Error("X-Amz-Expires is missing or not a number") from None
        payload = "UNSIGNED-PAYLOAD"
        pairs = [(k, v) for k, v in pairs if k != "X-Amz-Signature"]
    else:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("AWS4-HMAC-SHA256 "):
            raise SigV4Error("a request signed with AWS Signature V4 is required (unknown access key)")
        fields = {}
        for part in auth[len("AWS4-HMAC-SHA256 "):].split(","):
            k, _, v = part.strip().partition("=")
            fields[k] = v
        cred, signed, sig = fields.get("Credential", ""), fields.get("SignedHeaders", ""), fields.get("Signature", "")
        amz_date = request.headers.get("x-amz-date", "")
        expires = None
        payload = request.headers.get("x-amz-content-sha256") or hashlib.sha256(b"").hexdigest()
    try:
        key, date, region, service, term = cred.split("/")
    except ValueError:
        raise SigV4Error("malformed credential scope") from None
    if term != "aws4_request" or service != "s3":
        raise SigV4Error("malformed credential scope")
    secret = secret_for(key)
    if secret is None:
        raise SigV4Error("unknown access key")
    try:
        t = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        raise SigV4Error("X-Amz-Date is missing or malformed") from None
    if not amz_date.startswith(date):
        raise SigV4Error("the credential date does not match X-Amz-Date")
    if expires is not None:
        if expires < 1 or t > now + _SIGV4_SKEW or now > t + expires:
            raise SigV4Error("the presigned URL has expired (or is not valid yet)")
    elif abs(now - t) > _SIGV4_SKEW:
        raise SigV4Error("the request time is too far from the server's (RequestTimeTooSkewed)")
    names = [h for h in signed.split(";") if h]
    if "host" not in names or names != sorted(names):
        raise SigV4Error("the signed headers must include host")
    headers = "".join(f"{h}:{' '.join(request.headers.get(h, '').split())}\n" for h in names)
    query = "&".join(f"{k}={v}" for k, v in sorted((_q(k), _q(v)) for k, v in pairs))
    path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
    canonical = "\n".join([request.method, path, query, headers, signed, payload])
    scope = f"{date}/{region}/{service}/{term}"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    k = ("AWS4" + secret).encode()
    for part in (date, region, service, term):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    good = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(good.encode(), sig.encode("latin-1", "replace")):
        raise SigV4Error("SignatureDoesNotMatch: the request signature does not match")
    return owners[key]


def _verify_sigv2_query(request: Request, params: dict[str, str], secret_for, owners: dict[str, str],
                        now: float) -> str:
    """A presigned URL in the query-string form of Signature V2 (what botocore makes for S3 by default)."""
    key = params["AWSAccessKeyId"]
    secret = secret_for(key)
    if secret is None:
        raise SigV4Error("unknown access key")
    try:
        expires = int(params.get("Expires", ""))
    except ValueError:
        raise SigV4Error("Expires is missing or not a number") from None
    if now > expires:
        raise SigV4Error("the presigned URL has expired")
    amz = "".join(f"{k}:{v.strip()}\n" for k, v in sorted(request.headers.items()) if k.startswith("x-amz-"))
    path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
    to_sign = "\n".join([request.method, request.headers.get("content-md5", ""), request.headers.get("content-type", ""),
                         str(expires), amz + path])
    good = base64.b64encode(hmac.new(secret.encode(), to_sign.encode(), hashlib.sha1).digest()).decode()
    if not hmac.compare_digest(good.encode(), params["Signature"].encode("latin-1", "replace")):
        raise SigV4Error("SignatureDoesNotMatch: the request signature does not match")
    return owners[key]
