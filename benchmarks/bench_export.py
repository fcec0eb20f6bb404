"""Snapshot export at the issue's size: 1M contacts and 10M interactions on PostgreSQL.

The data is generated once (polars, seeded, deterministic, written with ``bulk.insert_frame`` =
COPY) into the PostgreSQL database ``crmctl_bench_export_<scale>`` and reused while its marker file
exists. Then, for the same rows:

- ``psql -c "\\copy (SELECT … WHERE tenant_id = 'bench') TO … WITH CSV HEADER"`` per table (the
  baseline the issue names), and
- ``crmctl export snapshot`` as a child process: CSV (formula neutralisation on, the default, and
  off) and Parquet (zstd), each timed with its own peak RSS (``os.wait4``).

    python -m benchmarks export --scale full
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from sqlmodel import SQLModel

from benchmarks._child import measure
from crmctl.db import bulk, migrate
from crmctl.db.engine import open_database
from crmctl.db.models import Contact, Interaction

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench-data"
TENANT = "bench"
SEED = 7_2026
PG_ADMIN_URL = os.environ.get("CRMCTL_BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
SIZES = {
    "small": {"accounts": 1_000, "contacts": 20_000, "interactions": 200_000},
    "full": {"accounts": 50_000, "contacts": 1_000_000, "interactions": 10_000_000},
    # a tenth of full, for a quicker run: python -c "from benchmarks.bench_export import run; run('tenth')"
    "tenth": {"accounts": 5_000, "contacts": 100_000, "interactions": 1_000_000},
}
CHUNK_ROWS = 1_000_000
TABLES = ("contact", "interaction")
KINDS = ["email", "call", "meeting", "note", "ticket_event", "product_event", "nps"]


def _uniform(index: pl.Expr, seed: int) -> pl.Expr:
    """A uniform float in [0, 1) per row, a pure function of (row index, seed)."""
    return (index.hash(seed) // (1 << 11)).cast(pl.Float64) / float(1 << 53)


def _int(index: pl.Expr, seed: int, upper: int) -> pl.Expr:
    return (_uniform(index, seed) * upper).cast(pl.Int64)


def _pick(index: pl.Expr, seed: int, values: list[str]) -> pl.Expr:
    return pl.lit(pl.Series(values)).get(_int(index, seed, len(values)))


def _accounts(n: int) -> pl.DataFrame:
    i = pl.int_range(1, n + 1, eager=True).alias("id")
    return pl.DataFrame(i).with_columns(
        tenant_id=pl.lit(TENANT),
        name=pl.format("Account {}", pl.col("id")),
        domain=pl.format("account{}.example", pl.col("id")),
        external_source=pl.lit("bench"),
        external_id=pl.col("id").cast(pl.String),
        created_at=pl.lit(datetime(2024, 1, 1, tzinfo=UTC)),
        updated_at=pl.lit(datetime(2024, 1, 1, tzinfo=UTC)),
    )


def _contacts(start: int, n: int, accounts: int) -> pl.DataFrame:
    idx = pl.col("id")
    first = ["Ada", "Bob", "Chen", "Dana", "Émile", "Farah", "Gus", "Hana", "Ivo", "Jun"]
    last = ["Smith", "Okafor", "Müller", "García", "Tanaka", "O'Neil", "=cmd|calc", "Nguyen"]
    return (
        pl.DataFrame(pl.int_range(start, start + n, eager=True).alias("id"))
        .with_columns(
            tenant_id=pl.lit(TENANT),
            account_id=_int(idx, SEED + 1, accounts) + 1,
            first_name=_pick(idx, SEED + 2, first),
            last_name=_pick(idx, SEED + 3, last),
        )
        .with_columns(
            full_name=pl.concat_str("first_name", "last_name", separator=" "),
            first_name_norm=pl.col("first_name").str.to_lowercase(),
            last_name_norm=pl.col("last_name").str.to_lowercase(),
            email=pl.format("person{}@account{}.example", idx, pl.col("account_id")),
            phone=pl.format("+44 20 7{}", (idx % 10_000_000).cast(pl.String).str.zfill(7)),
            title=_pick(idx, SEED + 4, ["CTO", "VP Sales", "-Engineer", "Analyst", "@ops"]),
            company=pl.format("Account {}", pl.col("account_id")),
            country=_pick(idx, SEED + 5, ["GB", "US", "DE", "FR", "JP"]),
            lifecycle_stage=_pick(idx, SEED + 6, ["lead", "mql", "sql", "customer"]),
            source=pl.lit("bench"),
            external_source=pl.lit("bench"),
            external_id=idx.cast(pl.String),
            field_provenance=pl.format('{{"email": {{"source": "bench", "row": {}}}}}', idx),
            created_at=pl.datetime(2025, 1, 1, time_zone="UTC") + pl.duration(seconds=idx),
        )
        .with_columns(
            email_norm=pl.col("email"),
            phone_e164=pl.col("phone").str.replace_all(" ", ""),
            company_norm=pl.col("company").str.to_lowercase(),
            updated_at=pl.col("created_at"),
        )
    )


def _interactions(start: int, n: int, contacts: int, accounts: int) -> pl.DataFrame:
    idx = pl.col("id")
    return pl.DataFrame(pl.int_range(start, start + n, eager=True).alias("id")).with_columns(
        tenant_id=pl.lit(TENANT),
        contact_id=_int(idx, SEED + 11, contacts) + 1,
        account_id=_int(idx, SEED + 12, accounts) + 1,
        kind=_pick(idx, SEED + 13, KINDS),
        occurred_at=pl.datetime(2025, 1, 1, time_zone="UTC")
        + pl.duration(seconds=_int(idx, SEED + 14, 365 * 86_400)),
        channel=_pick(idx, SEED + 15, ["email", "phone", "zoom", "in_app"]),
        direction=_pick(idx, SEED + 16, ["inbound", "outbound"]),
        subject=pl.format("Re: order {}", _int(idx, SEED + 17, 1_000_000)),
        body=pl.format(
            "Thanks for the call about renewal {}; next steps agreed, see notes in the shared doc.",
            idx,
        ),
        score=pl.when(_uniform(idx, SEED + 18) < 0.1)
        .then(_int(idx, SEED + 19, 11).cast(pl.Float64))
        .otherwise(None),
        actor=_pick(idx, SEED + 20, ["csm-1", "csm-2", "rep-7", "+rep-9"]),
        details=pl.format('{{"thread": {}}}', idx % 100_000),
        external_source=pl.lit("bench"),
        idempotency_key=pl.format("bench-{}", idx),
    )


def generate(url: str, scale: str) -> dict[str, int]:
    size = SIZES[scale]
    # as the owner: PostgreSQL refuses COPY FROM into a table under row-level security
    db = open_database(url, TENANT, app_role=None)
    try:
        with db.session(write=True) as session:
            bulk.insert_frame(session, "account", _accounts(size["accounts"]))
        for table, make, total in (
            ("contact", lambda s, n: _contacts(s, n, size["accounts"]), size["contacts"]),
            (
                "interaction",
                lambda s, n: _interactions(s, n, size["contacts"], size["accounts"]),
                size["interactions"],
            ),
        ):
            # secondary indexes on random keys make a bulk load crawl: drop them, load, rebuild
            indexes = list(SQLModel.metadata.tables[table].indexes)
            with db.engine.begin() as conn:
                for index in indexes:
                    index.drop(conn)
            for start in range(1, total + 1, CHUNK_ROWS):
                with db.session(write=True) as session:
                    bulk.insert_frame(session, table, make(start, min(CHUNK_ROWS, total - start + 1)))
            with db.engine.begin() as conn:
                for index in indexes:
                    index.create(conn)
    finally:
        db.dispose()
    return dict(size)


def _pg_url(scale: str) -> str:
    import psycopg

    name = f"crmctl_bench_export_{scale}"
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    BENCH_DIR.mkdir(exist_ok=True)
    marker = BENCH_DIR / f"export-{scale}-pg.json"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists and marker.exists():
            return url
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    migrate.upgrade(url)
    started = time.perf_counter()
    figures = generate(url, scale)
    figures["generate_seconds"] = round(time.perf_counter() - started, 1)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    marker.write_text(json.dumps(figures))
    return url


def _timed(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, the child's own peak RSS in MB); fails loudly on a non-zero exit."""
    measured = measure(argv)
    return measured.seconds, measured.peak_rss_mb


def _columns(model: Any) -> str:
    return ", ".join(f'"{c.name}"' for c in model.__table__.columns)


def _psql(url: str, out: Path) -> float:
    total = 0.0
    for model in (Contact, Interaction):
        table = model.__tablename__
        sql = (
            f"\\copy (SELECT {_columns(model)} FROM \"{table}\" WHERE tenant_id = '{TENANT}') "
            f"TO '{out / (table + '.csv')}' WITH CSV HEADER"
        )
        seconds, _ = _timed(["psql", "-X", "-q", "-d", url, "-c", sql])
        total += seconds
    return total


def _crmctl(url: str, out: Path, *options: str) -> tuple[float, float, int]:
    argv = [
        sys.executable,
        "-m",
        "crmctl",
        "--db",
        url,
        "--tenant",
        TENANT,
        "--actor",
        "bench",
        "--quiet",
        "export",
        "snapshot",
        "--out",
        str(out),
        "--tables",
        ",".join(TABLES),
        "--force",
        *options,
    ]
    seconds, rss = _timed(argv)
    size = sum(p.stat().st_size for p in out.iterdir())
    shutil.rmtree(out)
    return seconds, rss, size


def run(scale: str) -> dict[str, Any]:
    url = _pg_url(scale)
    size = SIZES[scale]
    figures: dict[str, Any] = {"contacts": size["contacts"], "interactions": size["interactions"]}
    with tempfile.TemporaryDirectory(prefix="crmctl-bench-export-", dir=BENCH_DIR) as tmp:
        work = Path(tmp)
        if scale == "small":  # an untimed warm-up (at full size it would double the bench's time)
            _psql(url, work)
        psql_seconds = _psql(url, work)
        for stale in work.glob("*.csv"):
            stale.unlink()
        figures["psql_copy_csv_seconds"] = round(psql_seconds, 2)
        print(json.dumps(figures), file=sys.stderr, flush=True)
        runs = {  # the comparisons first; the variants after
            "csv": ("--format", "csv", "--compress", "none"),
            "parquet_zstd": ("--format", "parquet", "--compress", "zstd"),
            "csv_no_neutralise": ("--format", "csv", "--compress", "none", "--no-neutralise-formulas"),
            "parquet_zstd_jobs2": ("--format", "parquet", "--compress", "zstd", "--jobs", "2"),
        }
        for name, options in runs.items():
            seconds, rss, nbytes = _crmctl(url, work / name, *options)
            figures[f"{name}_seconds"] = round(seconds, 2)
            figures[f"{name}_peak_rss_mb"] = round(rss, 1)
            figures[f"{name}_mb"] = round(nbytes / 1e6, 1)
            print(json.dumps(figures), file=sys.stderr, flush=True)  # partial figures as they come
        figures["csv_vs_psql"] = round(figures["csv_seconds"] / psql_seconds, 2)
        figures["csv_no_neutralise_vs_psql"] = round(figures["csv_no_neutralise_seconds"] / psql_seconds, 2)
        figures["parquet_vs_csv"] = round(figures["parquet_zstd_seconds"] / figures["csv_seconds"], 2)
    return figures


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "small")))
