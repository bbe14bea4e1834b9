"""A self-signed certificate for the admission webhook in local and test runs.

Kopf can generate one itself, but only with `certbuilder`, which is not a
dependency; `cryptography` is (through aiohttp's and kubernetes' own needs).
In a cluster the chart mounts a real Secret and none of this runs.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_NAME = "tls.crt"
KEY_NAME = "tls.key"


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def write_self_signed(
    directory: Path,
    *,
    hostnames: Sequence[str] = ("localhost", "127.0.0.1"),
    days: int = 365,
) -> tuple[Path, Path]:
    """Write tls.crt and tls.key (PEM) into `directory`; return both paths.

    The certificate is its own CA (basicConstraints CA:true), so a client can
    verify the server with the certificate file alone, as an apiserver does
    with a webhook's caBundle.
    """
    if not hostnames:
        raise ValueError("a certificate needs at least one hostname or IP address")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate clock skew
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_san(n) for n in hostnames]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    certfile, keyfile = directory / CERT_NAME, directory / KEY_NAME
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.touch(mode=0o600)
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile
