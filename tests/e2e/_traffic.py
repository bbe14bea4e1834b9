"""Inference traffic from inside the cluster: run in a pod by `python -c`.

Standard library only (it runs in the sidecar image, which has nothing else
the tests may rely on). POSTs the fraud model's four features, drawn from
N(shift, 1), to URL at about RATE requests per second for SECONDS, then prints
the status codes it got as one JSON line.

    python -c "$(cat _traffic.py)" URL RATE SECONDS [SHIFT]
"""

import json
import random
import sys
import time
import urllib.error
import urllib.request


def main(url: str, rate: float, seconds: float, shift: float = 0.0) -> None:
    rng = random.Random(7)
    codes: dict[str, int] = {}
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < seconds:
        body = json.dumps({f"f{i}": rng.gauss(shift, 1.0) for i in range(4)}).encode()
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                code = str(response.status)
                response.read()
        except urllib.error.HTTPError as error:
            code = str(error.code)
        except OSError as error:  # refused, reset, timed out: say which
            code = type(error).__name__
        codes[code] = codes.get(code, 0) + 1
        sent += 1
        time.sleep(max(0.0, start + sent / rate - time.monotonic()))
    print(json.dumps(codes), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), *map(float, sys.argv[4:5]))
