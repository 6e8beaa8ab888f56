"""`python -m bench [--quick] [--database postgresql] [--proposed]` runs every benchmark, each
in its own process (its own services and configuration) with those options;
`python -m bench NAME [options]` runs one (`python -m bench NAME --help` lists its options)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

from bench import BENCHMARKS


def main(argv: list[str]) -> int:
    if argv and argv[0] in BENCHMARKS:
        if "--quick" in argv:
            # Figures at that size mean nothing, and each gunicorn worker costs a second of CPU
            # importing the app: two are enough to run every part (the smoke test runs ten).
            os.environ.setdefault("WEB_CONCURRENCY", "2")
        module = importlib.import_module(f"bench.{argv[0]}")
        return module.main(argv[1:])
    if argv and (argv[0] in ("-h", "--help") or not argv[0].startswith("-")):
        print(__doc__, f"\nbenchmarks: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 0 if argv[0] in ("-h", "--help") else 2
    failed = []
    for name in BENCHMARKS:
        print(f"\n== {name}", flush=True)
        if subprocess.call([sys.executable, "-m", "bench", name, *argv]):
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
