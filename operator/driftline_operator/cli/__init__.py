"""The `driftline` command: reference profiles (`profiles`) and the demo (`demo/`)."""
