"""Run the benchmarks: ``python -m benchmarks [NAME ...] [--scale small|full]``.

Each benchmark module in this package defines ``run(scale: str) -> dict`` and is registered below.
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import sys
import time

BENCHMARKS: dict[str, str] = {
    # name -> module (each has run(scale) -> dict of figures)
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("names", nargs="*", help=f"which to run (default all): {', '.join(BENCHMARKS)}")
    parser.add_argument(
        "--scale", default="small", choices=["small", "full"], help="full = the issues' sizes"
    )
    args = parser.parse_args()
    for name in args.names or list(BENCHMARKS):
        if name not in BENCHMARKS:
            sys.exit(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
        module = importlib.import_module(BENCHMARKS[name])
        started = time.perf_counter()
        figures = module.run(args.scale)
        figures["wall_seconds"] = round(time.perf_counter() - started, 2)
        figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        print(json.dumps({"benchmark": name, "scale": args.scale, **figures}))


if __name__ == "__main__":
    main()
