"""Label selectors as Kubernetes evaluates them, and as a list query string."""

from __future__ import annotations

from collections.abc import Mapping

from driftline_operator.api.spec import LabelSelector


def selects(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Whether a label selector matches these labels, as Kubernetes decides it."""
    if any(labels.get(key) != value for key, value in selector.match_labels.items()):
        return False
    for requirement in selector.match_expressions:
        present = requirement.key in labels
        value = labels.get(requirement.key)
        match requirement.operator:
            case "In":
                ok = present and value in requirement.values
            case "NotIn":
                ok = not present or value not in requirement.values
            case "Exists":
                ok = present
            case "DoesNotExist":
                ok = not present
        if not ok:
            return False
    return True


def selector_query(selector: LabelSelector) -> str:
    """The selector in the API's query syntax (app=fraud,tier in (a,b),!legacy)."""
    terms = [f"{key}={value}" for key, value in sorted(selector.match_labels.items())]
    for requirement in selector.match_expressions:
        values = ",".join(requirement.values)
        terms.append(
            {
                "In": f"{requirement.key} in ({values})",
                "NotIn": f"{requirement.key} notin ({values})",
                "Exists": requirement.key,
                "DoesNotExist": f"!{requirement.key}",
            }[requirement.operator]
        )
    return ",".join(terms)
