"""A throw-away test PKI and token issuer for the XRootD/XCache launchers.

* :func:`make_test_pki` writes a CA, a ``localhost`` server certificate and an OpenSSL hashed CA
  directory (what XRootD clients read through ``X509_CERT_DIR``).
* :class:`TestIssuer` is an offline SciToken/WLCG token issuer: an ES256 key pair, its JWKS (which
  the launcher pre-seeds into the scitokens-cpp key cache, so the issuer never has to run) and
  :meth:`TestIssuer.mint` for tokens with any scope, audience or lifetime.

Only ``cryptography`` is needed; ``openssl`` computes the CA directory's subject hash.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from casa_data.errors import ServiceError

__all__ = ["PKI", "make_test_pki", "TestIssuer", "write_token_file"]


@dataclass(frozen=True)
class PKI:
    """Paths of a test PKI: CA certificate, hashed CA directory, server key and certificate."""

    ca_cert: Path
    ca_dir: Path
    server_cert: Path
    server_key: Path


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_test_pki(directory: str | os.PathLike, hostname: str = "localhost") -> PKI:
    """Write a CA and a server certificate for ``hostname`` and 127.0.0.1 into ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    d = Path(directory)
    (d / "cadir").mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    later = now + dt.timedelta(days=30)

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "casa test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(later)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(later)
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pki = PKI(d / "ca.pem", d / "cadir", d / "server.pem", d / "server.key")
    pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.server_key.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    os.chmod(pki.server_key, 0o600)
    # OpenSSL looks CAs up by subject hash (<hash>.0); only the openssl tool computes it reliably.
    openssl = shutil.which("openssl")
    if not openssl:
        raise ServiceError("the test PKI needs the 'openssl' tool; install it with: apt-get install openssl")
    digest = subprocess.run([openssl, "x509", "-hash", "-noout", "-in", str(pki.ca_cert)],
                            capture_output=True, text=True, check=True).stdout.strip()
    shutil.copy(pki.ca_cert, pki.ca_dir / f"{digest}.0")
    return pki


class TestIssuer:
    """An offline token issuer: ES256 key, JWKS, and tokens minted on demand.

    The private key stays in memory; :meth:`jwks` is the public part the server trusts.
    """

    __test__ = False  # not a pytest class

    def __init__(self, issuer: str = "https://127.0.0.1/casa-test-issuer",
                 audience: str = "casa-xcache", kid: str = "casa-test-key"):
        from cryptography.hazmat.primitives.asymmetric import ec

        self.issuer = issuer
        self.audience = audience
        self.kid = kid
        self._key = ec.generate_private_key(ec.SECP256R1())

    def __repr__(self) -> str:
        return f"<TestIssuer {self.issuer} aud={self.audience!r} kid={self.kid!r}>"

    def __getstate__(self):  # the private key never leaves the process
        raise TypeError("TestIssuer holds a private key and does not pickle")

    def jwks(self) -> dict:
        """The issuer's public keys in JWKS form."""
        nums = self._key.public_key().public_numbers()
        return {"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
            "x": _b64url(nums.x.to_bytes(32, "big")), "y": _b64url(nums.y.to_bytes(32, "big")),
        }]}

    def mint(self, scope: str = "storage.read:/", lifetime: float = 3600.0, *, sub: str = "casa-user",
             audience: str | None = None, expired: bool = False, **claims) -> str:
        """A signed WLCG token (ES256 JWT). ``expired=True`` gives one that ended a minute ago."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        now = int(time.time())
        exp = now - 60 if expired else now + int(lifetime)
        payload = {
            "iss": self.issuer, "sub": sub, "aud": audience or self.audience, "scope": scope,
            "wlcg.ver": "1.0", "iat": min(now, exp - 1), "nbf": min(now, exp - 1) - 60, "exp": exp,
            "jti": str(uuid.uuid4()), **claims,
        }
        header = {"alg": "ES256", "typ": "JWT", "kid": self.kid}
        signing_input = (_b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                         + _b64url(json.dumps(payload, separators=(",", ":")).encode()))
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return signing_input + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def seed_keycache(self, xdg_cache_home: str | os.PathLike) -> Path:
        """Pre-seed scitokens-cpp's key cache so servers never fetch the issuer's keys online."""
        import sqlite3

        d = Path(xdg_cache_home) / "scitokens"
        d.mkdir(parents=True, exist_ok=True)
        db = d / "scitokens_cpp.sqllite"  # sic: the file name libscitokens 0.7 uses
        far = int(time.time()) + 10 * 365 * 86400
        with sqlite3.connect(db) as con:
            con.execute("CREATE TABLE IF NOT EXISTS keycache "
                        "(issuer text UNIQUE PRIMARY KEY NOT NULL, keys text NOT NULL)")
            con.execute("INSERT OR REPLACE INTO keycache VALUES (?, ?)", (
                self.issuer, json.dumps({"jwks": self.jwks(), "expires": far, "next_update": far})))
        con.close()
        return db


def write_token_file(path: str | os.PathLike, token: str) -> Path:
    """Write ``token`` to ``path`` readable by its owner only (as WLCG clients require)."""
    p = Path(path)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(p, 0o600)
    return p
