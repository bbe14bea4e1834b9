"""Fault injection at a rollout's step boundaries: off unless asked for.

A rollout decision that changes the cluster goes through boundaries, in
order: its state is recorded in status (`recorded`), each of its actions is
taken (`StartCanary`, `SetWeight`, ...), and the tick's status write confirms
it (`written`). `boundary()` is called right after each of them.

With ``DRIFTLINE_FAULT_KILL_AT=N`` in its environment the operator SIGKILLs
itself at the Nth boundary it crosses (counting from its start), as an OOM
kill or a lost node would stop it there: nothing is flushed, no finalizer or
cleanup runs. The crash-safety tests use it to stop the operator at each
boundary in turn and check that the restarted one finishes the rollout as if
nothing had happened. Reasserting a weight and holding a step are not
boundaries: they change nothing. Unset (the default), `boundary()` does
nothing but return.
"""

from __future__ import annotations

import os
import signal
import sys

KILL_AT_ENV = "DRIFTLINE_FAULT_KILL_AT"

# Process-wide on purpose: the count is of everything this process crossed.
_crossed = 0


def boundary(name: str) -> None:
    """The rollout just crossed boundary `name` (e.g. "StepAdvanced SetWeight")."""
    global _crossed
    kill_at = os.environ.get(KILL_AT_ENV)
    if not kill_at:
        return
    _crossed += 1
    # One write, so that a log line from another thread cannot land mid-line.
    sys.stderr.write(f"driftline fault injection: boundary {_crossed}: {name}\n")
    sys.stderr.flush()
    if _crossed == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)
