"""Run the benchmarks: ``python -m benchmarks [NAME ...] [--scale small|full]``.

Every module ``benchmarks/bench_NAME.py`` defines ``run(scale: str) -> dict`` of figures; it is
found automatically. ``small`` is a quick smoke run; ``full`` is the size the issues ask for.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import random
import resource
import sqlite3
import sys
import time
from pathlib import Path

import polars as pl


def discover() -> list[str]:
    here = Path(__file__).parent
    return sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules([str(here)])
        if m.name.startswith("bench_")
    )


CALIBRATION_LOOPS = 20_000_000


def calibration_seconds() -> float:
    """Seconds for a fixed pure-Python loop: this machine's single-core speed at the time of the run.

    The same code's figures differ from day to day on a shared machine (the lead import of 1M rows
    took 55.4 CPU s one day and 97.1 the next); this figure says how fast the machine was."""
    started = time.perf_counter()
    total = 0
    for i in range(CALIBRATION_LOOPS):
        total += i
    return round(time.perf_counter() - started, 2)


CALIBRATION_ROWS = 300_000


def calibration_workload_seconds() -> float:
    """Seconds for a fixed piece of import-shaped work: indexed SQLite inserts, a polars join and
    group-by over strings, Python tuples. On a day the pure loop said 0.8-1.38 s, the lead import
    ran 1.8 times the CPU of a day it said 0.92-1.10: the loop misses what slows memory-bound C
    code, and this figure is there to catch it. Same seed, same work, every run."""
    rng = random.Random(7)
    keys = [f"{rng.getrandbits(40):x}@example.com" for _ in range(CALIBRATION_ROWS)]
    started = time.perf_counter()
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT, g INTEGER)")
    conn.execute("CREATE INDEX t_k ON t (k)")
    conn.executemany("INSERT INTO t (k, g) VALUES (?, ?)", ((k, i % 997) for i, k in enumerate(keys)))
    conn.commit()
    conn.close()
    frame = pl.DataFrame({"k": keys, "g": [i % 997 for i in range(CALIBRATION_ROWS)]})
    joined = frame.join(frame.sample(fraction=0.5, seed=7), on="k").group_by("g").agg(pl.col("k").n_unique())
    assert joined.height > 0
    return round(time.perf_counter() - started, 2)


def main() -> None:
    known = discover()
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("names", nargs="*", help=f"which to run (default all): {', '.join(known)}")
    parser.add_argument(
        "--scale", default="small", choices=["small", "full"], help="full = the issues' sizes"
    )
    args = parser.parse_args()
    calibration = calibration_seconds()
    workload = calibration_workload_seconds()
    for name in args.names or known:
        if name not in known:
            sys.exit(f"unknown benchmark {name!r}; known: {', '.join(known)}")
        module = importlib.import_module(f"benchmarks.bench_{name}")
        started = time.perf_counter()
        figures = module.run(args.scale)
        figures["wall_seconds"] = round(time.perf_counter() - started, 2)
        # ru_maxrss is the peak of this process (kB on Linux); benchmarks that fork report their own.
        figures.setdefault("peak_rss_mb", round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
        figures["calibration_loop_seconds"] = calibration
        figures["calibration_workload_seconds"] = workload
        print(json.dumps({"benchmark": name, "scale": args.scale, **figures}), flush=True)


if __name__ == "__main__":
    main()
