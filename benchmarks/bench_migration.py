"""Migration import throughput on SQLite: the whole customer graph through the real importers.

``full`` is the issue's size: 100k accounts, 500k contacts, 1M deals with ~5M stage changes and 10M
interactions. The files come from the demo generator (``crmctl.demo.graph``), written once per scale
into ``bench-data/`` by a child process (so its memory does not count); the import then runs in
this process with the default batch size, and ``peak_rss_mb`` is this process's peak.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import time
from datetime import date
from pathlib import Path
from typing import Any

from crmctl.db import migrate
from crmctl.db.engine import open_database
from crmctl.demo.graph import GraphSizes, write_graph_files
from crmctl.importers.graph import ImportOptions, import_file

SCALES = {
    "small": GraphSizes(
        accounts=2_000,
        contacts=10_000,
        deals=20_000,
        stage_changes=100_000,
        interactions=200_000,
        tickets=5_000,
        usage_weeks=4,
    ),
    # A tenth of the size, for a run that finishes on a busy machine.
    "tenth": GraphSizes(
        accounts=10_000,
        contacts=50_000,
        deals=100_000,
        stage_changes=500_000,
        interactions=1_000_000,
        tickets=0,
        usage_weeks=0,
    ),
    "full": GraphSizes(
        accounts=100_000,
        contacts=500_000,
        deals=1_000_000,
        stage_changes=5_000_000,
        interactions=10_000_000,
        tickets=0,
        usage_weeks=0,
    ),
}
KINDS = ("accounts", "contacts", "deals", "stage-changes", "interactions")
AS_OF = date(2026, 6, 30)
SEED = 7


def _generate(directory: str, scale: str) -> dict[str, Any]:
    files = write_graph_files(Path(directory), SCALES[scale], seed=SEED, as_of=AS_OF)
    return {kind: [str(path), files.rows[kind]] for kind, path in files.paths.items()}


def _files(scale: str) -> dict[str, Any]:
    directory = Path("bench-data") / f"migration-{scale}"
    manifest = directory / "manifest.json"
    if manifest.exists():
        return json.loads(manifest.read_text())
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        files = pool.apply(_generate, (str(directory), scale))
    files["_generate_seconds"] = round(time.perf_counter() - started, 1)
    manifest.write_text(json.dumps(files))
    return files


def run(scale: str) -> dict[str, Any]:
    """``small`` / ``full`` from ``python -m benchmarks``; ``tenth`` via
    ``python -c "from benchmarks.bench_migration import run; print(run('tenth'))"``."""
    files = _files(scale)
    db_path = Path("bench-data") / f"migration-{scale}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{db_path}"
    migrate.upgrade(url)
    db = open_database(url, "default", app_role=None)
    figures: dict[str, Any] = {"generate_seconds": files.get("_generate_seconds")}
    total_rows, total_seconds = 0, 0.0
    cpu_started = time.process_time()
    for kind in KINDS:
        path, rows = files[kind]
        started = time.perf_counter()
        cpu = time.process_time()
        result = import_file(db, kind, Path(path), ImportOptions(source="bench"))
        seconds = time.perf_counter() - started
        created = sum(t.created for t in result.tables.values())
        figures[kind] = {
            "rows": rows,
            "created": created,
            "rejected": result.rejected_rows,
            "seconds": round(seconds, 1),
            "cpu_seconds": round(time.process_time() - cpu, 1),
            "rows_per_second": round(rows / seconds),
        }
        total_rows += rows
        total_seconds += seconds
    db.dispose()
    figures["total_rows"] = total_rows
    figures["import_seconds"] = round(total_seconds, 1)
    figures["rows_per_second"] = round(total_rows / total_seconds)
    # CPU time of this process: on a shared machine wall time also counts waiting for a core.
    figures["cpu_seconds"] = round(time.process_time() - cpu_started, 1)
    figures["rows_per_cpu_second"] = round(total_rows / figures["cpu_seconds"])
    figures["load_average_1m"] = round(os.getloadavg()[0], 1)
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    figures["db_size_mb"] = round(db_path.stat().st_size / 1e6, 1)
    return figures
