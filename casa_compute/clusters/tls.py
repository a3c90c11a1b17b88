"""TLS material for a cluster: the facility's files, or a per-cluster CA generated on the spot.

A generated CA signs three leaf certificates (scheduler, worker, client) and its private key is
dropped right after signing, so nobody can mint more certificates for this cluster. Files are
written 0600 into a private temporary directory that :meth:`ClusterTLS.cleanup` removes.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ClusterTLS", "generate_ca_and_leaves"]

ROLES = ("scheduler", "worker", "client")


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def generate_ca_and_leaves(directory: Path, hosts: list[str] | None = None,
                           days: int = 7) -> dict[str, Path]:
    """Write ``ca.pem`` and ``<role>.pem``/``<role>-key.pem`` for each role into ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = _dt.datetime.now(_dt.UTC)
    start, end = now - _dt.timedelta(minutes=5), now + _dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "casa per-cluster CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                       critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.DNSName(socket.gethostname())]
    for h in ["127.0.0.1", *(hosts or [])]:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    out = {"ca": directory / "ca.pem"}
    _write(out["ca"], ca_cert.public_bytes(serialization.Encoding.PEM))
    for role in ROLES:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"casa-{role}")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(list(dict.fromkeys(names))), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        out[role] = directory / f"{role}.pem"
        out[f"{role}-key"] = directory / f"{role}-key.pem"
        _write(out[role], cert.public_bytes(serialization.Encoding.PEM))
        _write(out[f"{role}-key"], key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
    return out


@dataclass
class ClusterTLS:
    """CA and certificate files for one cluster; ``generated`` ones are deleted by cleanup()."""

    files: dict[str, Path]
    generated: bool
    directory: Path | None = None
    _security: object = field(default=None, repr=False)

    @classmethod
    def create(cls, tls_directory: str | os.PathLike | None = None,
               hosts: list[str] | None = None, workdir: str | os.PathLike | None = None
               ) -> ClusterTLS:
        """Use ``tls_directory``'s ca.pem/hostcert.pem/hostkey.pem if all exist, else generate."""
        if tls_directory:
            d = Path(os.path.expanduser(str(tls_directory)))
            ca, cert, key = d / "ca.pem", d / "hostcert.pem", d / "hostkey.pem"
            if ca.is_file() and cert.is_file():
                key = key if key.is_file() else cert  # facility bundles may hold key and cert
                files = {"ca": ca}
                for role in ROLES:
                    files[role], files[f"{role}-key"] = cert, key
                return cls(files=files, generated=False)
        directory = Path(tempfile.mkdtemp(prefix="casa-tls-", dir=workdir))
        try:
            files = generate_ca_and_leaves(directory, hosts)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return cls(files=files, generated=True, directory=directory)

    def security(self):
        """A ``distributed.Security`` requiring encryption, with a cert for every role."""
        if self._security is None:
            from distributed.security import Security

            kw = {"tls_ca_file": str(self.files["ca"]), "require_encryption": True}
            for role in ROLES:
                kw[f"tls_{role}_cert"] = str(self.files[role])
                kw[f"tls_{role}_key"] = str(self.files[f"{role}-key"])
            self._security = Security(**kw)
        return self._security

    def cleanup(self) -> None:
        """Remove generated files (facility files are left alone)."""
        if self.generated and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
