"""The reference profile a ModelMonitor points at, read from its ConfigMap and
checked: one reader for `reconcile` (which keeps a monitor with a bad reference
from becoming Ready) and for the analysis loop (which judges drift with it).
Pure: the caller reads the ConfigMap."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from driftline_operator.api.spec import ConfigMapKeyRef
from driftline_operator.api.status import INVALID_REFERENCE, REFERENCE_NOT_FOUND
from driftline_operator.controller.status import field_path
from driftline_sidecar.contract.profile import ReferenceProfile

_REBUILD = "rebuild it with `driftline profile build` and `driftline profile configmap`"


class ReferenceProblem(Exception):
    """Why a monitor has no usable reference: `reason` is the Ready condition's
    reason (ReferenceNotFound or InvalidReference); the message names the
    ConfigMap, the key and the fix."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class LoadedReference:
    profile: ReferenceProfile
    sha256: str  # of the document, as the sidecar hashes it


def parse_reference(text: str) -> tuple[ReferenceProfile, str]:
    """The profile and the sha256 of the document (raises pydantic.ValidationError)."""
    return ReferenceProfile.model_validate_json(text), hashlib.sha256(text.encode()).hexdigest()


def load_reference(
    config_map: Mapping[str, Any] | None, ref: ConfigMapKeyRef, *, namespace: str
) -> LoadedReference:
    """The profile under `ref.key` of `config_map` (None: not found), or a
    ReferenceProblem saying what is wrong with it."""
    where = f"spec.reference.configMapRef: ConfigMap {namespace}/{ref.name}"
    if config_map is None:
        raise ReferenceProblem(
            REFERENCE_NOT_FOUND,
            f"{where} not found; create it with `driftline profile configmap` "
            "or point configMapRef at an existing one",
        )
    data = config_map.get("data") or {}
    binary = config_map.get("binaryData") or {}
    if ref.key not in data and ref.key not in binary:
        present = ", ".join(sorted(set(data) | set(binary))) or "none"
        raise ReferenceProblem(
            REFERENCE_NOT_FOUND,
            f"{where} has no key {ref.key!r} (keys: {present}); set configMapRef.key",
        )
    where = f"{where} key {ref.key!r}"
    if ref.key in data:
        text = str(data[ref.key])
    else:
        try:
            text = base64.b64decode(binary[ref.key], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as error:
            raise ReferenceProblem(
                INVALID_REFERENCE, f"{where} is not UTF-8 text: {error}; {_REBUILD}"
            ) from error
    try:
        profile, sha = parse_reference(text)
    except ValidationError as error:
        raise ReferenceProblem(
            INVALID_REFERENCE, f"{where} {_describe(error)}; {_REBUILD}"
        ) from None
    return LoadedReference(profile, sha)


def _describe(error: ValidationError) -> str:
    problems = error.errors(include_url=False)
    first = problems[0]
    if first["type"] == "json_invalid":
        return f"is not JSON: {first['msg'].removeprefix('Invalid JSON: ')}"
    where = field_path(first["loc"], root="profile") if first["loc"] else "the document"
    more = f" ({len(problems) - 1} more problems)" if len(problems) > 1 else ""
    return f"is not a reference profile: {where}: {first['msg']}{more}"
