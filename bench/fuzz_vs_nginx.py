"""The differential fuzz run at size: the sidecar and nginx in front of the same model.

Run: ``.venv/bin/python bench/fuzz_vs_nginx.py [--cases 20000] [--seed 1]``
(about a minute for 20,000 cases; needs ``/usr/sbin/nginx``). With
``--sidecar-src DIR`` the sidecar comes from another source tree (e.g.
``git archive <commit> sidecar | tar -x -C DIR``), to measure before and after.

Prints, per kind of disagreement (the sidecar forwards what nginx refuses; the
sidecar refuses what nginx forwards), how many cases and which mutations, and
a few examples of each. Cases in ``httpfuzz.ACCEPTED`` are listed with the
reason they are accepted. Exits 1 when a case forwarded by the sidecar and
refused by nginx is not accepted, as the test does.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import httpfuzz


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--examples", type=int, default=3, help="printed per mutation")
    parser.add_argument("--sidecar-src", type=Path, help="another tree's sidecar/ to run")
    args = parser.parse_args(argv)
    if not httpfuzz.nginx_available():
        raise SystemExit(f"no {httpfuzz.NGINX}: install the Debian package nginx")
    began = time.perf_counter()
    report = httpfuzz.fuzz(args.seed, args.cases, sidecar_src=args.sidecar_src)
    seconds = time.perf_counter() - began
    forwarded = {
        name: sum(1 for o in report.outcomes if o.forwarded[name]) for name in ("sidecar", "nginx")
    }
    print(f"{args.cases} cases, seed {args.seed}, {seconds:.0f} s")
    print(f"cases forwarded: sidecar {forwarded['sidecar']}, nginx {forwarded['nginx']}")
    print(f"requests without a case number at the model: {report.unattributed}")
    for kind in (httpfuzz.SIDECAR_FORWARDS, httpfuzz.SIDECAR_REJECTS):
        outcomes = report.disagreements(kind)
        print(f"\n{kind}: {len(outcomes)}")
        for mutations, count in report.by_mutation(kind).most_common():
            print(f"  {count:6}  {mutations}")
        shown: dict[str, int] = {}
        for outcome in outcomes:
            key = "+".join(outcome.case.mutations)
            if shown.get(key, 0) < args.examples:
                shown[key] = shown.get(key, 0) + 1
                exception = httpfuzz.accepted(outcome.case)
                note = f"  [accepted: {exception.name}]" if exception else ""
                print(f"    {outcome.describe()[:300]}{note}")
    failures = report.failures()
    undecided = report.undecided()
    print(f"\nundecided (nginx still waiting when the case ended): {len(undecided)}")
    for outcome in undecided[: args.examples]:
        print(f"    {outcome.describe()[:300]}")
    print(f"not accepted ({httpfuzz.SIDECAR_FORWARDS}): {len(failures)}")
    for exception in httpfuzz.ACCEPTED:
        print(f"accepted: {exception.name}: {exception.reason}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
