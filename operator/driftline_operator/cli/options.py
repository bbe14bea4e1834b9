"""Options more than one command takes, kept light: no heavy import, so a
command's parser costs nothing until the command runs."""

from __future__ import annotations

import argparse


def names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def class_columns(text: str) -> dict[str, str]:
    """``CLASS=COLUMN,...`` as {class: column}."""
    found: dict[str, str] = {}
    for pair in names(text):
        name, equals, column = pair.partition("=")
        if not equals or not name.strip() or not column.strip():
            raise argparse.ArgumentTypeError(f"{pair!r}: expected CLASS=COLUMN")
        found[name.strip()] = column.strip()
    return found


def add_profile_options(parser: argparse.ArgumentParser, title: str) -> None:
    """How a data file is profiled (``profile build``, and ``drift``/``report`` REFERENCE)."""
    group = parser.add_argument_group(title)
    group.add_argument("--features", type=names, help="feature columns, comma-separated")
    group.add_argument(
        "--categorical", type=names, default=[], help="columns to treat as categories"
    )
    group.add_argument("--numeric", type=names, default=[], help="columns to treat as numbers")
    group.add_argument("--target", help="the label column (not a feature)")
    group.add_argument("--prediction", help="the prediction or score column (profiled apart)")
    group.add_argument(
        "--class-scores",
        type=class_columns,
        default={},
        help="a multiclass model's probability columns, CLASS=COLUMN comma-separated "
        "(with --target: calibrates the label-free accuracy estimate)",
    )
    group.add_argument("--bins", type=int, default=10, help="quantile bins per numeric feature")
    group.add_argument("--max-categories", type=int, default=20, help="categories kept per feature")
