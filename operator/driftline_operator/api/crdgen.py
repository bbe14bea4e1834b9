"""Generate the ModelMonitor CustomResourceDefinition from the pydantic models.

    python -m driftline_operator.api.crdgen > crds/modelmonitors.driftline.io.yaml

pydantic writes JSON Schema (2020-12); Kubernetes wants a *structural*
OpenAPI v3 schema: every node typed, no `$ref`, no types inside `anyOf`,
`nullable` instead of a null branch, boolean `exclusiveMinimum`, no
`additionalProperties: false` (the apiserver prunes or, with strict field
validation, rejects unknown fields instead). This module does that
translation and fails loudly on any construct it does not know, so a new
field in `spec.py` or `status.py` cannot silently produce a schema the apiserver refuses.

Defaults of None or "" are left out: absence means the same to pydantic, and
the v1.20 apiserver reads `default: ""` as null and refuses the CRD.

Two unions need a choice:
- `str | int` (a port name or number) is Kubernetes' int-or-string:
  `x-kubernetes-int-or-string: true` with the one `anyOf` the rules allow.
- `str | float` (an SLO bound: `200ms`, `0.3` or `99.9%`) has no structural
  spelling: a typed `anyOf` is forbidden and int-or-string refuses `0.3`. Such
  a node keeps any scalar (`x-kubernetes-preserve-unknown-fields: true`, no
  type); the operator's pydantic validation judges it and reports a bad value
  in the ModelMonitor's Ready condition.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from driftline_operator.api.names import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION
from driftline_operator.api.spec import ModelMonitorSpec
from driftline_operator.api.status import ModelMonitorStatus

Schema = dict[str, Any]

# Keys copied through unchanged, in the order they are written out (the rest
# of a node — type, description, nested schemas — is placed around them).
_KEPT = (
    "format",
    "enum",
    "default",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "example",
)
_DROPPED = ("title", "additionalProperties", "$defs")
_HANDLED = {"type", "description", "properties", "required", "items", "anyOf", "allOf", "$ref"}
_HANDLED |= {"const", "additionalProperties", *_KEPT, *_DROPPED}

_PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Req/s", "type": "number", "jsonPath": ".status.requestsPerSecond"},
    {"name": "P95 ms", "type": "number", "jsonPath": ".status.p95Ms"},
    {"name": "Error %", "type": "number", "jsonPath": ".status.errorPercent"},
    {"name": "Drifted", "type": "integer", "jsonPath": ".status.drift.drifted"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


class SchemaError(ValueError):
    """A pydantic schema construct with no structural OpenAPI translation."""


def structural(node: Schema, defs: dict[str, Schema], *, where: str = "") -> Schema:
    """One pydantic JSON Schema node as a structural OpenAPI v3 node."""
    unknown = set(node) - _HANDLED
    if unknown:
        raise SchemaError(f"{where or '<root>'}: no structural translation for {sorted(unknown)}")

    branch = _single_branch(node, defs, where=where)
    if branch is not None:
        return branch

    out: Schema = {}
    if "type" in node:
        out["type"] = node["type"]
    if "description" in node:
        out["description"] = node["description"]
    if "const" in node:
        out["enum"] = [node["const"]]
    for key in _KEPT:
        if key in node and not (key == "default" and node[key] in (None, "")):
            out[key] = node[key]
    # JSON Schema 2020-12 bounds are numbers; OpenAPI v3.0's are flags on minimum/maximum.
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(exclusive), int | float) and not isinstance(out[exclusive], bool):
            out[bound] = out.pop(exclusive)
            out[exclusive] = True
    if "properties" in node:
        out["properties"] = {
            name: structural(child, defs, where=f"{where}.{name}")
            for name, child in node["properties"].items()
        }
    if node.get("required"):
        out["required"] = list(node["required"])
    if "items" in node:
        out["items"] = structural(node["items"], defs, where=f"{where}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = structural(
            node["additionalProperties"], defs, where=f"{where}.*"
        )
    if "type" not in out:
        raise SchemaError(f"{where or '<root>'}: a structural schema needs a type here")
    return out


def _single_branch(node: Schema, defs: dict[str, Schema], *, where: str) -> Schema | None:
    """Resolve `$ref`, one-element `allOf` and `anyOf` unions; None for plain nodes.

    The node's own keys (description, default) win over the referenced schema's.
    """
    outer = {k: v for k, v in node.items() if k not in ("$ref", "allOf", "anyOf")}
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        return structural({**target, **outer}, defs, where=where)
    if "allOf" in node:
        if len(node["allOf"]) != 1:
            raise SchemaError(f"{where}: allOf with several schemas has no structural form")
        return structural({**node["allOf"][0], **outer}, defs, where=where)
    if "anyOf" not in node:
        return None

    branches = [b for b in node["anyOf"] if b != {"type": "null"}]
    nullable = len(branches) < len(node["anyOf"])
    types = {b.get("type") for b in branches}
    if len(branches) == 1:
        merged = structural({**branches[0], **outer}, defs, where=where)
    elif types == {"string", "integer"} and all(set(b) == {"type"} for b in branches):
        merged = _describe(
            {
                "x-kubernetes-int-or-string": True,
                "anyOf": [{"type": "integer"}, {"type": "string"}],
            },
            outer,
        )
    elif types == {"string", "number"} and all(set(b) == {"type"} for b in branches):
        merged = _describe({"x-kubernetes-preserve-unknown-fields": True}, outer)
    else:
        raise SchemaError(f"{where}: the union {node['anyOf']} has no structural form")
    if nullable:
        merged["nullable"] = True
    return merged


def _describe(schema: Schema, outer: Schema) -> Schema:
    """An untyped node (int-or-string, any scalar) with the field's description and default."""
    described = {"description": outer["description"]} if "description" in outer else {}
    if outer.get("default") not in (None, ""):
        described["default"] = outer["default"]
    return {**described, **schema}


def _model_schema(model: type[Any], description: str) -> Schema:
    raw = model.model_json_schema(by_alias=True)
    schema = structural(raw, raw.get("$defs", {}), where=model.__name__)
    return {"type": "object", "description": description, **schema}


def openapi_schema() -> Schema:
    """The ModelMonitor's structural OpenAPI v3 schema (root of the resource)."""
    return {
        "type": "object",
        "description": (
            "ModelMonitor watches a model's pods through an injected sidecar, judges latency, "
            "errors, drift and SLOs, and can roll a new model version out safely."
        ),
        "properties": {
            "apiVersion": {"type": "string", "description": "The resource's API version."},
            "kind": {"type": "string", "description": "The resource's kind."},
            "metadata": {"type": "object"},
            "spec": _model_schema(ModelMonitorSpec, "What to watch and how to judge it."),
            "status": _model_schema(
                ModelMonitorStatus, "What the operator saw in the last analysis window."
            ),
        },
        "required": ["spec"],
    }


def crd_manifest() -> dict[str, Any]:
    """The apiextensions.k8s.io/v1 CustomResourceDefinition for ModelMonitor."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "driftline"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["driftline"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


HEADER = (
    "# Generated from operator/driftline_operator/api/spec.py and api/status.py; do not edit by hand.\n"
    "# Regenerate: python -m driftline_operator.api.crdgen > crds/modelmonitors.driftline.io.yaml\n"
)


def render_yaml() -> str:
    """The CRD as the YAML document committed in crds/."""
    body = yaml.safe_dump(crd_manifest(), sort_keys=False, width=100, allow_unicode=True)
    return HEADER + body


def main() -> None:
    sys.stdout.write(render_yaml())


if __name__ == "__main__":
    main()
