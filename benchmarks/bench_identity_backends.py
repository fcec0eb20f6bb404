"""Lead import on PostgreSQL against SQLite, as issue 3 asks (PostgreSQL within 1.5x of SQLite).

One command for the ratio, measured the only way this shared machine allows: back-to-back pairs
over the same generated files, alternating which backend goes first (the machine's speed drifts
within minutes), several pairs, with the ratio of each pair, their median and the ratio of the
sums. Each import goes into a fresh database; both backends must put the records into the same
people, which is checked (the partition's hash), so a faster backend cannot be a wrong one.

``small``: 2,000 people (~10k rows), one pair; ``full``: 200,000 people (~1M rows), three pairs.
Environment: BENCH_PAIRS (the number of pairs); BENCH_PG_ADMIN_URL (default
postgresql://postgres@127.0.0.1:5432/test), where a database is created and dropped per run.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import polars as pl
import psycopg

from crmctl.db import migrate
from crmctl.db.engine import open_database
from crmctl.demo.leads import LeadFile, write_lead_files
from crmctl.identity.history import source_links
from crmctl.importers.leads import import_leads

SCALES = {"small": (2_000, 1), "full": (200_000, 3)}
DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


def run(scale: str) -> dict[str, Any]:
    people, pairs = SCALES[scale]
    people = int(os.environ.get("BENCH_IDENTITY_PEOPLE", people))
    pairs = int(os.environ.get("BENCH_PAIRS", pairs))
    admin = os.environ.get("BENCH_PG_ADMIN_URL", DEFAULT_PG_ADMIN_URL)
    seconds: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    partitions: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="bench-identity-backends-") as tmp:
        out = Path(tmp)
        files = write_lead_files(out / "leads", people=people, seed=11)
        for pair in range(pairs):
            order = ["sqlite", "postgresql"] if pair % 2 == 0 else ["postgresql", "sqlite"]
            for backend in order:
                took, partition = _timed_import(backend, files, out, admin)
                seconds[backend].append(took)
                partitions.add(partition)
    ratios = [pg / lite for pg, lite in zip(seconds["postgresql"], seconds["sqlite"], strict=True)]
    return {
        "people": people,
        "pairs": pairs,
        "sqlite_seconds": seconds["sqlite"],
        "postgresql_seconds": seconds["postgresql"],
        "ratios": [round(r, 2) for r in ratios],
        "median_ratio": round(statistics.median(ratios), 2),
        "ratio_of_sums": round(sum(seconds["postgresql"]) / sum(seconds["sqlite"]), 2),
        "same_partition_every_run": len(partitions) == 1,
    }


def _timed_import(backend: str, files: list[LeadFile], out: Path, admin: str) -> tuple[float, str]:
    """Import every file into a fresh database of ``backend``: the seconds it took and the hash of
    the partition of records into contacts."""
    if backend == "sqlite":
        path = out / f"bench-{uuid.uuid4().hex[:8]}.db"
        url = f"sqlite:///{path}"
    else:
        name = f"crmctl_bench_backends_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"{admin.rsplit('/', 1)[0]}/{name}"
    try:
        migrate.upgrade(url)
        db = open_database(url, "default")
        started = time.perf_counter()
        for lead_file in files:
            import_leads(db, lead_file.import_options(default_region="US"))
        took = round(time.perf_counter() - started, 1)
        with db.session() as session:
            partition = _partition_hash(source_links(session))
        db.dispose()
    finally:
        if backend == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        else:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return took, partition


def _partition_hash(links: pl.DataFrame) -> str:
    """The same for two imports exactly when they put the same records together (contact ids,
    which differ between backends, do not enter it)."""
    members = (
        links.group_by("contact_id")
        .agg(pl.concat_str("source", "source_record_id", separator=":").sort().str.join(","))
        .get_column("source")
        .sort()
    )
    return hashlib.sha256("\n".join(members.to_list()).encode()).hexdigest()[:16]
