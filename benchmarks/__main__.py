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
import tempfile
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


CALIBRATION_ROWS = 200_000
CALIBRATION_FRAME_ROWS = 50_000


def calibration_workload_seconds() -> float:
    """Seconds for a fixed piece of import-shaped work: indexed SQLite inserts of generated keys,
    then a polars join and group-by over strings. One evening the pure loop said 0.8-1.46 s while the
    lead import took 1.8 times the CPU it had taken hours earlier (loop 0.92-1.10), so the loop alone
    does not tell a slow hour from slower code; this times the kind of work the import does. It is
    as unsteady as the machine (1.06-1.94 s within its first hour): compare ranges. Same work every
    run, and small: the database is a file with SQLite's default 2 MB cache and the frame has 50k
    rows, so the peak that benchmarks without a child of their own report grows by ~26 MB
    (measured), most of it polars starting its threads, which every benchmark does anyway."""
    rng = random.Random(7)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="crmctl-calibration-") as tmp:
        _sqlite_inserts(Path(tmp) / "calibration.db", rng)
    keys = pl.int_range(CALIBRATION_FRAME_ROWS, eager=True).hash(7).cast(pl.String)
    frame = pl.DataFrame({"k": keys, "g": pl.int_range(CALIBRATION_FRAME_ROWS, eager=True) % 997})
    frame.join(frame.sample(fraction=0.5, seed=7), on="k").group_by("g").agg(pl.col("k").n_unique())
    return round(time.perf_counter() - started, 2)


def _sqlite_inserts(path: Path, rng: random.Random) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=OFF")  # no sync: the figure is the CPU's, not the disk's
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT, g INTEGER)")
    conn.execute("CREATE INDEX t_k ON t (k)")
    conn.executemany(
        "INSERT INTO t (k, g) VALUES (?, ?)",
        ((f"{rng.getrandbits(40):x}@example.com", i % 997) for i in range(CALIBRATION_ROWS)),
    )
    conn.commit()
    conn.close()


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
