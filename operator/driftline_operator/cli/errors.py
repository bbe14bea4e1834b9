"""What a ``driftline`` command raises for a user error: `main` prints the
message as one line and exits with status 2, never a traceback."""


class UsageError(Exception):
    """Input the command cannot use; the message names it and says why."""
