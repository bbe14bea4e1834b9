"""The demo starts a model server and a sidecar, sends traffic and says where to look."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_and_prints_where_to_look() -> None:
    code = "import sys; from driftline_operator.demo import main; "
    code += "sys.exit(main(['--no-wait', '--requests', '5', '--port', '0', '--admin-port', '0', "
    code += "'--model-port', '0']))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "/v1/snapshot" in result.stdout and "/metrics" in result.stdout
    assert "Sent 5 requests" in result.stdout
