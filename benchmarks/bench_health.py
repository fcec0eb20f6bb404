"""Health scoring at the issue's size: 100k accounts, 20M usage events, 1M interactions, 200k tickets.

The data is generated once (polars, seeded, deterministic) into ``bench-data/health-<scale>.db`` and
a PostgreSQL database ``crmctl_bench_health_<scale>``, then reused. Scoring runs as a child process
(``python -m crmctl health score``) so its wall time and peak RSS are its own, not the generator's.

    python -m benchmarks health --scale full
"""

from __future__ import annotations

import json
import os
import random
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from benchmarks._child import crmctl_argv, measure
from crmctl.db import bulk, migrate
from crmctl.db.engine import Database, open_database

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench-data"
TENANT = "bench"
AS_OF = date(2026, 6, 30)
SEED = 20260630
PG_ADMIN_URL = os.environ.get("CRMCTL_BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")

SIZES = {
    "small": {"accounts": 2_000, "usage": 200_000, "interactions": 20_000, "tickets": 4_000},
    "full": {"accounts": 100_000, "usage": 20_000_000, "interactions": 1_000_000, "tickets": 200_000},
    # a tenth of full, for a quicker PostgreSQL figure: python -c "from benchmarks.bench_health import
    # run_backend; print(run_backend('postgresql', 'tenth'))"
    "tenth": {"accounts": 10_000, "usage": 2_000_000, "interactions": 100_000, "tickets": 20_000},
}
CHUNK_ROWS = 2_000_000
USAGE_DAYS = 180
FEATURES = [f"feature-{i:02d}" for i in range(20)]
INTEGRATIONS = ["salesforce", "slack", "hubspot", "zendesk", "jira", "snowflake", "okta", "teams"]


# -- deterministic pseudo-random columns (no numpy: polars' seeded hash of a row index) ------------


def _uniform(index: pl.Expr, seed: int) -> pl.Expr:
    """A uniform float in [0, 1) per row, a pure function of (row index, seed)."""
    return (index.hash(seed) // (1 << 11)).cast(pl.Float64) / float(1 << 53)


def _pick(u: pl.Expr, values: list[str], cumulative: list[float]) -> pl.Expr:
    expr = pl.lit(values[-1])
    for value, edge in reversed(list(zip(values[:-1], cumulative[:-1], strict=True))):
        expr = pl.when(u < edge).then(pl.lit(value)).otherwise(expr)
    return expr


def _accounts(n: int) -> pl.DataFrame:
    rng = random.Random(SEED)
    tiers = rng.choices(["enterprise", "mid-market", "smb"], weights=[10, 30, 60], k=n)
    plan = {"enterprise": "enterprise", "mid-market": "business", "smb": "self-serve"}
    industries = ["software", "retail", "finance", "health", "manufacturing", "education"]
    parents = max(1, n // 200)
    created = datetime(2024, 1, 1, tzinfo=UTC)
    return pl.DataFrame(
        {
            "id": list(range(1, n + 1)),
            "tenant_id": [TENANT] * n,
            "name": [f"Account {i}" for i in range(1, n + 1)],
            "segment": tiers,
            "arr_tier": tiers,
            "plan": [plan[t] for t in tiers],
            "industry": [rng.choice(industries) for _ in range(n)],
            # ~2% of the accounts are subsidiaries of one of the first `parents` accounts
            "parent_id": [
                rng.randint(1, parents) if i > parents and rng.random() < 0.02 else None
                for i in range(1, n + 1)
            ],
            "external_source": ["bench"] * n,
            "external_id": [str(i) for i in range(1, n + 1)],
            "created_at": [created] * n,
            "updated_at": [created] * n,
        },
        schema_overrides={"parent_id": pl.Int64},
    )


def _contracts(accounts: pl.DataFrame) -> pl.DataFrame:
    rng = random.Random(SEED + 1)
    rows = []
    for account_id, tier in accounts.select("id", "arr_tier").iter_rows():
        start = AS_OF - timedelta(days=rng.randint(0, 700))
        years = 2 if tier == "enterprise" and rng.random() < 0.4 else 1
        entitled = rng.sample(FEATURES, k={"enterprise": 16, "mid-market": 10, "smb": 5}[tier])
        rows.append(
            {
                "id": account_id,
                "tenant_id": TENANT,
                "account_id": account_id,
                "start_date": start,
                "end_date": start + timedelta(days=365 * years),
                "arr_cents": {"enterprise": 25_000_000, "mid-market": 3_000_000, "smb": 300_000}[tier]
                + rng.randint(0, 100_000),
                "currency": "USD",
                "auto_renew": rng.random() < 0.5,
                "contract_type": "multi-year" if years == 2 else "annual",
                "entitlements": json.dumps({"features": sorted(entitled)}),
                "status": "active",
                "external_source": "bench",
                "external_id": str(account_id),
                "created_at": datetime(2024, 1, 1, tzinfo=UTC),
                "updated_at": datetime(2024, 1, 1, tzinfo=UTC),
            }
        )
    return pl.DataFrame(rows)


def _usage_chunk(start: int, rows: int, total: int, accounts: int) -> pl.DataFrame:
    """Rows [start, start+rows) of a time-ordered event log spanning USAGE_DAYS up to AS_OF."""
    end = datetime.combine(AS_OF, datetime.min.time(), tzinfo=UTC) + timedelta(days=1)
    span_us = USAGE_DAYS * 86_400 * 1_000_000
    idx = pl.int_range(start, start + rows, dtype=pl.UInt64)
    u_account, u_event, u_feature, u_qty = (_uniform(idx, SEED + k) for k in range(4))
    frame = pl.select(
        idx.alias("i"),
        # activity is skewed: low account ids are busier (tiers are assigned independently of ids)
        (1 + (u_account.pow(1.6) * accounts).floor().cast(pl.Int64)).alias("account_id"),
        _pick(
            u_event,
            ["login", "feature_used", "api_call", "data_volume_mb", "integration_connected"],
            [0.40, 0.70, 0.90, 0.99, 1.0],
        ).alias("event"),
        u_feature.alias("u_feature"),
        u_qty.alias("u_qty"),
    )
    return (
        frame.with_columns(
            # time increases with the row index, so the table is in arrival order like a real log
            (
                pl.lit(end - timedelta(microseconds=span_us))
                + pl.duration(microseconds=(pl.col("i").cast(pl.Float64) / total * span_us).cast(pl.Int64))
            ).alias("occurred_at"),
            pl.when(pl.col("event") == "feature_used")
            .then(pl.lit(pl.Series(FEATURES)).get((pl.col("u_feature") * len(FEATURES)).cast(pl.Int64)))
            .when(pl.col("event") == "integration_connected")
            .then(
                pl.lit(pl.Series(INTEGRATIONS)).get((pl.col("u_feature") * len(INTEGRATIONS)).cast(pl.Int64))
            )
            .otherwise(None)
            .alias("feature"),
            pl.when(pl.col("event") == "api_call")
            .then((1 + pl.col("u_qty") * 100).floor())
            .when(pl.col("event") == "data_volume_mb")
            .then((pl.col("u_qty") * 500).round(2))
            .otherwise(1.0)
            .alias("quantity"),
            pl.format("u{}", pl.col("i").cast(pl.String).str.zfill(9)).alias("idempotency_key"),
            pl.lit(TENANT).alias("tenant_id"),
        )
        .with_columns((pl.col("i") + 1).cast(pl.Int64).alias("id"))
        .select(
            "id", "tenant_id", "account_id", "occurred_at", "event", "feature", "quantity", "idempotency_key"
        )
    )


def _interactions(n: int, accounts: int) -> pl.DataFrame:
    idx = pl.int_range(0, n, dtype=pl.UInt64)
    end = datetime.combine(AS_OF, datetime.min.time(), tzinfo=UTC) + timedelta(days=1)
    frame = pl.select(
        idx.alias("i"),
        (1 + (_uniform(idx, SEED + 11) * accounts).floor().cast(pl.Int64)).alias("account_id"),
        _pick(
            _uniform(idx, SEED + 12),
            ["email", "call", "meeting", "note", "nps", "csat"],
            [0.35, 0.50, 0.60, 0.80, 0.90, 1.0],
        ).alias("kind"),
        _uniform(idx, SEED + 13).alias("u_score"),
        (
            pl.lit(end - timedelta(days=365))
            + pl.duration(seconds=(_uniform(idx, SEED + 14) * 365 * 86_400).cast(pl.Int64))
        ).alias("occurred_at"),
    )
    return frame.with_columns(
        (pl.col("i") + 1).cast(pl.Int64).alias("id"),
        pl.lit(TENANT).alias("tenant_id"),
        pl.when(pl.col("kind") == "nps")
        .then((pl.col("u_score") * 11).floor())
        .when(pl.col("kind") == "csat")
        .then(1 + (pl.col("u_score") * 5).floor())
        .otherwise(None)
        .alias("score"),
        pl.lit("csm@example.com").alias("actor"),
        (pl.lit("x") + pl.col("i").cast(pl.String)).alias("idempotency_key"),
    ).select("id", "tenant_id", "account_id", "kind", "occurred_at", "score", "actor", "idempotency_key")


def _tickets(n: int, accounts: int) -> pl.DataFrame:
    idx = pl.int_range(0, n, dtype=pl.UInt64)
    end = datetime.combine(AS_OF, datetime.min.time(), tzinfo=UTC) + timedelta(days=1)
    frame = pl.select(
        idx.alias("i"),
        (1 + (_uniform(idx, SEED + 21) * accounts).floor().cast(pl.Int64)).alias("account_id"),
        _pick(_uniform(idx, SEED + 22), ["low", "normal", "high", "urgent"], [0.2, 0.7, 0.93, 1.0]).alias(
            "priority"
        ),
        ((_uniform(idx, SEED + 23) * 2 - 1).round(3)).alias("sentiment"),
        (_uniform(idx, SEED + 24) < 0.05).alias("is_escalated"),
        (
            pl.lit(end - timedelta(days=365))
            + pl.duration(seconds=(_uniform(idx, SEED + 25) * 365 * 86_400).cast(pl.Int64))
        ).alias("opened_at"),
        (_uniform(idx, SEED + 26) * 30 * 86_400).cast(pl.Int64).alias("open_seconds"),
        (1 + (_uniform(idx, SEED + 27) * 5).floor()).alias("csat"),
    )
    closed = pl.col("opened_at") + pl.duration(seconds=pl.col("open_seconds"))
    return (
        frame.with_columns(
            (pl.col("i") + 1).cast(pl.Int64).alias("id"),
            pl.lit(TENANT).alias("tenant_id"),
            pl.when(closed < pl.lit(end)).then(closed).otherwise(None).alias("closed_at"),
        )
        .with_columns(
            pl.when(pl.col("closed_at").is_null())
            .then(pl.lit("open"))
            .otherwise(pl.lit("closed"))
            .alias("status"),
            pl.lit("bench").alias("external_source"),
            pl.col("i").cast(pl.String).alias("external_id"),
        )
        .select(
            "id",
            "tenant_id",
            "account_id",
            "status",
            "priority",
            "sentiment",
            "is_escalated",
            "csat",
            "opened_at",
            "closed_at",
            "external_source",
            "external_id",
        )
    )


@contextmanager
def _indexes_deferred(db: Database, table: str) -> Iterator[None]:
    """Drop the table's secondary indexes (PostgreSQL: and unique constraints) for a bulk load and
    build them again afterwards, as a bulk loader would: the resulting schema is the migrated one."""
    if not db.is_postgresql:
        with db.engine.connect() as conn:
            indexes = conn.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master "
                "WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
                (table,),
            ).all()
            for name, _ in indexes:
                conn.exec_driver_sql(f'DROP INDEX "{name}"')
            conn.commit()
        yield
        with db.engine.connect() as conn:
            for _, definition in indexes:
                conn.exec_driver_sql(definition)
            conn.commit()
        return
    with db.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        constraints = conn.exec_driver_sql(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype = 'u'",
            (table,),
        ).all()
        indexes = conn.exec_driver_sql(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT IN "
            "(SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass)",
            (table, table),
        ).all()
        for name, _ in constraints:
            conn.exec_driver_sql(f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            conn.exec_driver_sql(f'DROP INDEX "{name}"')
    yield
    with db.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.exec_driver_sql("SET maintenance_work_mem = '1GB'")
        for _, definition in indexes:
            conn.exec_driver_sql(definition)
        for name, definition in constraints:
            conn.exec_driver_sql(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {definition}')


def generate(url: str, scale: str) -> dict[str, int]:
    """Fill a migrated, empty database with the scale's data (owner connection: bypasses RLS)."""
    size = SIZES[scale]
    db = open_database(url, TENANT, app_role=None)
    counts: dict[str, int] = {}
    try:
        accounts = _accounts(size["accounts"])
        with db.session(write=True) as session:
            counts["account"] = bulk.insert_frame(session, "account", accounts)
            counts["contract"] = bulk.insert_frame(session, "contract", _contracts(accounts))
            counts["interaction"] = bulk.insert_frame(
                session, "interaction", _interactions(size["interactions"], size["accounts"])
            )
            counts["support_ticket"] = bulk.insert_frame(
                session, "support_ticket", _tickets(size["tickets"], size["accounts"])
            )
        counts["product_usage"] = 0
        with _indexes_deferred(db, "product_usage"):
            for start in range(0, size["usage"], CHUNK_ROWS):
                rows = min(CHUNK_ROWS, size["usage"] - start)
                chunk = _usage_chunk(start, rows, size["usage"], size["accounts"])
                with db.session(write=True) as session:
                    counts["product_usage"] += bulk.insert_frame(session, "product_usage", chunk)
        with db.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql("VACUUM ANALYZE" if db.is_postgresql else "ANALYZE")
    finally:
        db.dispose()
    return counts


def _sqlite_url(scale: str) -> str:
    BENCH_DIR.mkdir(exist_ok=True)
    path = BENCH_DIR / f"health-{scale}.db"
    marker = path.with_suffix(".json")
    if not marker.exists():
        for stale in BENCH_DIR.glob(f"health-{scale}.db*"):
            stale.unlink()
        url = f"sqlite:///{path}"
        migrate.upgrade(url)
        marker.write_text(json.dumps(generate(url, scale)))
    return f"sqlite:///{path}"


def _pg_url(scale: str) -> str | None:
    import psycopg

    name = f"crmctl_bench_health_{scale}"
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    url = f"{base}/{name}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError:
        return None
    marker = BENCH_DIR / f"health-{scale}-pg.json"
    with admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists and marker.exists():
            return url
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    migrate.upgrade(url)
    marker.write_text(json.dumps(generate(url, scale)))
    return url


def _score(url: str) -> dict[str, Any]:
    """Run ``crmctl health score`` in a child process; its own wall time, CPU and peak RSS (CPU of
    the crmctl process only: a PostgreSQL backend's work is not in it), and the load beside them."""
    measured = measure(
        crmctl_argv(url, TENANT, "health", "score", "--as-of", AS_OF.isoformat(), "--format", "json")
    )
    summary = json.loads(measured.stdout)
    return {
        **measured.figures(),
        "phases": summary["seconds"],
        "accounts": summary["accounts"],
        "green": summary["green"],
        "amber": summary["amber"],
        "red": summary["red"],
        "transitions": summary["transitions"],
    }


def _clear_scores(url: str) -> None:
    """Remove the scores of earlier benchmark runs from the benchmark's own database (one tenant),
    so "first" is a first scoring of the as-of date every time (the nightly case) and "rerun"
    replaces it. Whole tables at once: deleting snapshot rows one by one would look each one's
    signals up by a column no index leads with."""
    db = open_database(url, TENANT, app_role=None)
    try:
        # one transaction (SQLite: without foreign key probes, see engine._configure_sqlite)
        with db.engine.execution_options(crmctl_foreign_keys=False).begin() as conn:
            if db.is_postgresql:
                conn.exec_driver_sql("TRUNCATE health_signal, health_snapshot")
            else:
                conn.exec_driver_sql("DELETE FROM health_signal")
                conn.exec_driver_sql("DELETE FROM health_snapshot")
            conn.exec_driver_sql(
                f"DELETE FROM interaction WHERE tenant_id = '{TENANT}' AND kind = 'health_transition'"
            )
    finally:
        db.dispose()


def run_backend(backend: str, scale: str) -> dict:
    """Generate (once) and score one backend at one scale: first run and same-day re-run."""
    started = time.perf_counter()
    url = _sqlite_url(scale) if backend == "sqlite" else _pg_url(scale)
    figures: dict = {"backend": backend, "sizes": SIZES[scale]}
    figures["generate_seconds"] = round(time.perf_counter() - started, 1)
    if url is None:
        return {**figures, "skipped": "PostgreSQL is not reachable"}
    _clear_scores(url)
    figures["first"] = _score(url)
    figures["rerun"] = _score(url)
    return figures


def run(scale: str) -> dict:
    figures: dict = {"sizes": SIZES[scale]}
    started = time.perf_counter()
    sqlite_url = _sqlite_url(scale)
    figures["sqlite_generate_seconds"] = round(time.perf_counter() - started, 1)
    # twice: a first scoring of the date (the nightly run), then a re-run that replaces it
    _clear_scores(sqlite_url)
    figures["sqlite_first"] = _score(sqlite_url)
    figures["sqlite_rerun"] = _score(sqlite_url)
    started = time.perf_counter()
    pg_url = _pg_url(scale)
    figures["pg_generate_seconds"] = round(time.perf_counter() - started, 1)
    if pg_url is not None:
        _clear_scores(pg_url)
        figures["postgresql_first"] = _score(pg_url)
        figures["postgresql_rerun"] = _score(pg_url)
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return figures


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "small")))
