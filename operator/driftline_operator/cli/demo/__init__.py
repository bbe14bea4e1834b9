"""``driftline demo``: Driftline's main job on one machine, no cluster needed.

- ``driftline demo [--scenario healthy|latency|errors|drift|quality|reliance] ...``:
  a canary rollout judged and driven by the operator's own code (``demo.story``);
- ``driftline demo --serve ...``: one model server behind its sidecar, left
  running so you can look at its metrics, snapshot and config (``demo.serve``).
  Its own flags (``--port``, ``--requests``, …) imply ``--serve``, so the
  commands written before the rollout demo existed still do what they did.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

SERVE_FLAG = "--serve"
SERVE_ONLY_FLAGS = ("--port", "--admin-port", "--model-port", "--requests", "--no-wait")


def wants_serve(args: Sequence[str]) -> bool:
    return any(a == SERVE_FLAG or a.split("=", 1)[0] in SERVE_ONLY_FLAGS for a in args)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if wants_serve(args):
        from driftline_operator.cli.demo import serve

        return serve.main([a for a in args if a != SERVE_FLAG])
    from driftline_operator.cli.demo import story

    return story.main(args)
