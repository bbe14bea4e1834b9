"""The sidecars' admin token: one per ModelMonitor, derived, never stored.

The operator sends each monitor's token as the bearer token of its config
pushes (the sidecar router); the sidecars get only its SHA-256, in their
ConfigMap (`manifests.config_map`), and check a presented token against it.
So the operator needs no access to Secrets at all: the token is an HMAC of
the monitor's identity under the operator's key, computed again after a
restart instead of fetched, and the hash gives nothing to whoever reads it.

The key is derived from the webhook's TLS private key, the one secret an
operator always has mounted (the chart keeps it across upgrades). Without
one (local runs, where the certificate is made at start-up) the key is
random per process: a restarted operator then rewrites the ConfigMaps, and
running sidecars accept the new token once they are restarted.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

_PURPOSE = b"driftline sidecar admin token v1"


def operator_key(keyfile: Path | None) -> bytes:
    """The key tokens are derived under (never the TLS key itself)."""
    material = keyfile.read_bytes() if keyfile is not None else secrets.token_bytes(32)
    return hmac.new(material, _PURPOSE, hashlib.sha256).digest()


def admin_token(key: bytes, *, namespace: str, name: str, uid: str) -> str:
    """The bearer token of one ModelMonitor's sidecars (the uid makes a
    re-created monitor's token a new one)."""
    identity = f"{namespace}/{name}/{uid}".encode()
    return hmac.new(key, identity, hashlib.sha256).hexdigest()


def token_sha256(token: str) -> str:
    """What a sidecar's config holds instead of the token (hex SHA-256)."""
    return hashlib.sha256(token.encode()).hexdigest()
