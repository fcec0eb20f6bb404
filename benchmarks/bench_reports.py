"""Pipeline reports over 1M deals with 5M stage changes (issue 5), on SQLite and PostgreSQL.

The data is generated with polars (seeded) and written with ``bulk.insert_frame`` straight into a
migrated SQLite file and a PostgreSQL database; then every report's library function (what the
command calls) is timed twice, the first run possibly from a cold cache, in wall and in this
process's CPU seconds (the database work of PostgreSQL is in the wall figure only); then each
report once more end to end through the CLI in a child process (``*_cli``: wall, the child's CPU,
peak RSS, load average). ``small`` = 20k deals / 100k changes.

Environment: CRMCTL_BENCH_PG_ADMIN_URL (default postgresql://postgres@127.0.0.1:5432/test);
CRMCTL_BENCH_DIR (default ./bench-data) holds the SQLite file. Data is reused when it is already
there with the right size (delete the file / database to regenerate).
"""

from __future__ import annotations

import os
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
from sqlalchemy import text

from benchmarks._child import crmctl_argv, measure
from crmctl.db import bulk, migrate
from crmctl.db.engine import Database, open_database
from crmctl.pipeline import config, history, reports

SCALES = {"small": 20_000, "full": 1_000_000}
CHANGES_PER_DEAL = 5
SEED = 5
TENANT = "default"
EPOCH = datetime(2023, 1, 1, tzinfo=UTC)
AS_OF = datetime(2026, 1, 1, tzinfo=UTC)
STAGES = [
    config.StageSpec("Qualify", 0.1, stall_days=14),
    config.StageSpec("Discovery", 0.2, stall_days=21),
    config.StageSpec("Proposal", 0.5, stall_days=30),
    config.StageSpec("Negotiation", 0.8, stall_days=30),
    config.StageSpec("Closed won", 1.0, is_won=True),
    config.StageSpec("Closed lost", 0.0, is_lost=True),
]


def _rand(salt: int, modulo: int) -> pl.Expr:
    """A seeded pseudo-random integer in [0, modulo) per row (polars hash of the row index)."""
    return (pl.int_range(pl.len(), dtype=pl.UInt64).hash(SEED * 1_000 + salt) % modulo).cast(pl.Int64)


def _pick(salt: int, values: list[Any], weights: list[int]) -> pl.Expr:
    """A seeded weighted choice among ``values`` (weights are whole numbers)."""
    roll = _rand(salt, sum(weights))
    expr: Any = None
    bound = 0
    for value, weight in zip(values, weights, strict=True):
        bound += weight
        expr = (pl.when(roll < bound) if expr is None else expr.when(roll < bound)).then(pl.lit(value))
    return expr


def generate(db: Database, deals: int) -> dict[str, int]:
    """Write one pipeline, accounts, ``deals`` deals with 5 stage changes each, and FX rates."""
    with db.session(write=True) as session:
        config.set_pipelines(session, [config.PipelineSpec("new-business", tuple(STAGES), True, "USD")])
        (pipeline,) = config.list_pipelines(session)
        stage_ids = pl.Series([s.id for s in pipeline.stages], dtype=pl.Int64)
        accounts = max(deals // 20, 10)
        account_frame = pl.DataFrame({"id": pl.int_range(1, accounts + 1, eager=True)}).with_columns(
            tenant_id=pl.lit(TENANT),
            name=pl.lit("account ") + pl.col("id").cast(pl.String),
            segment=_pick(1, ["enterprise", "mid-market", "smb"], [1, 2, 3]),
            created_at=pl.lit(EPOCH),
            updated_at=pl.lit(EPOCH),
        )
        bulk.insert_frame(session, "account", account_frame)
        deal_frame = pl.DataFrame({"id": pl.int_range(1, deals + 1, eager=True)}).with_columns(
            created_s=_rand(2, 3 * 365 * 86_400),
            outcome=_pick(3, [0, 1, 2], [4, 3, 3]),  # 0 open, 1 won, 2 lost
            furthest=_rand(4, 4),  # the furthest open stage reached (index)
            base_amount=(_rand(5, 199_000) + 1_000) * 100,
            currency=_pick(6, ["USD", "EUR", "GBP"], [7, 2, 1]),
        )
        # One row per change: step 0 creates the deal in the first stage, later steps move it on
        # (or change amount / close date only, once it sits in its furthest stage).
        changes = (
            deal_frame.with_columns(step=pl.lit(list(range(CHANGES_PER_DEAL)), dtype=pl.List(pl.Int64)))
            .explode("step")
            .with_columns(
                stage_idx=pl.when(pl.col("step") == CHANGES_PER_DEAL - 1, pl.col("outcome") > 0)
                .then(pl.col("outcome") + 3)
                .otherwise(
                    pl.min_horizontal("step", pl.when(pl.col("outcome") == 0).then("furthest").otherwise(3))
                ),
                gap_s=pl.when(pl.col("step") == 0).then(0).otherwise(_rand(7, 29 * 86_400) + 86_400),
                amount_cents=pl.col("base_amount") * (10 + _rand(8, 5) - 2) // 10,
                slip_days=_rand(9, 20),
            )
            .with_columns(
                from_idx=pl.col("stage_idx").shift(1).over("id"),
                at_s=pl.col("created_s") + pl.col("gap_s").cum_sum().over("id"),
                close_day=pl.col("created_s") // 86_400 + 60 + pl.col("slip_days").cum_sum().over("id"),
            )
            .select(
                tenant_id=pl.lit(TENANT),
                deal_id=pl.col("id"),
                changed_at=pl.lit(EPOCH) + pl.duration(seconds=pl.col("at_s")),
                from_stage_id=pl.col("from_idx").replace_strict(
                    list(range(len(stage_ids))), stage_ids, default=None
                ),
                to_stage_id=pl.col("stage_idx").replace_strict(list(range(len(stage_ids))), stage_ids),
                amount_cents="amount_cents",
                currency="currency",
                close_date=pl.lit(EPOCH.date()) + pl.duration(days=pl.col("close_day")),
                actor=pl.lit("bench"),
                idempotency_key=pl.int_range(pl.len()).cast(pl.String),
            )
            .with_columns(pl.col("close_date").cast(pl.Date))
        )
        last = changes.group_by("deal_id", maintain_order=True).last()
        first = changes.group_by("deal_id", maintain_order=True).first()
        deals_out = deal_frame.select(
            "id",
            tenant_id=pl.lit(TENANT),
            account_id=_rand(10, accounts) + 1,
            pipeline_id=pl.lit(pipeline.id),
            stage_id=last["to_stage_id"],
            amount_cents=last["amount_cents"],
            currency=last["currency"],
            close_date=last["close_date"],
            owner=pl.lit("rep") + _rand(11, 40).cast(pl.String),
            source=_pick(12, ["web", "event", "partner", "outbound", "referral"], [3, 1, 1, 2, 1]),
            forecast_category=_pick(13, ["commit", "best_case", "pipeline", None], [2, 2, 2, 4]),
            created_at=first["changed_at"],
            updated_at=last["changed_at"],
            closed_at=pl.when(pl.col("outcome") > 0).then(last["changed_at"]),
        )
        bulk.insert_frame(session, "deal", deals_out)
        # An append-only log arrives in time order, not grouped by deal.
        bulk.insert_frame(session, "stage_change", changes.sort("changed_at"))
        days = pl.date_range(date(2022, 12, 1), date(2027, 1, 1), "1d", eager=True)
        rates = pl.concat(
            [
                pl.DataFrame({"day": days}).select(
                    tenant_id=pl.lit(TENANT),
                    base=pl.lit("USD"),
                    currency=pl.lit(cur),
                    day="day",
                    rate=start + 0.05 * (pl.int_range(pl.len()) / 60).sin(),
                )
                for cur, start in (("EUR", 1.08), ("GBP", 1.27))
            ]
        )
        bulk.insert_frame(session, "exchange_rate", rates)
        history.refresh(session)
    return {"deals": deals, "stage_changes": changes.height}


def _existing_deals(db: Database) -> int:
    with db.session() as session:
        return session.execute(
            text("SELECT count(*) FROM deal WHERE tenant_id = :t"), {"t": TENANT}
        ).scalar_one()


REPORTS: dict[str, dict[str, Any]] = {
    "pipeline": {},
    "pipeline_as_of": {"as_of": AS_OF - timedelta(days=365)},
    "funnel": {"date_from": date(2025, 1, 1), "date_to": date(2025, 12, 31)},
    "velocity": {"date_from": date(2025, 1, 1), "date_to": date(2025, 12, 31)},
    "forecast": {},
    "stalled": {},
    "changes": {"date_from": date(2025, 7, 1), "date_to": date(2025, 10, 1)},
}


def time_reports(db: Database, repeats: int = 2) -> dict[str, list[float]]:
    """Wall and CPU seconds per report (``<name>`` and ``<name>_cpu``), run ``repeats`` times (the
    first run may read from a cold cache). On a shared machine compare CPU, not wall."""
    figures: dict[str, list[float]] = {}
    for name, kwargs in REPORTS.items():
        kind = name.removesuffix("_as_of")
        figures[name], figures[f"{name}_cpu"] = [], []
        for _ in range(repeats):
            started, started_cpu = time.perf_counter(), time.process_time()
            with db.session() as session:
                result = reports.run_report(session, kind, reports.ReportOptions(**kwargs))
            assert result.rows, name
            figures[name].append(round(time.perf_counter() - started, 2))
            figures[f"{name}_cpu"].append(round(time.process_time() - started_cpu, 2))
        print(f"{db.dialect} {name}: wall {figures[name]} cpu {figures[f'{name}_cpu']}", flush=True)
    return figures


CLI_OPTIONS = {"as_of": "--as-of", "date_from": "--from", "date_to": "--to"}


def time_cli(url: str) -> dict[str, dict[str, float]]:
    """Each report end to end, as a user runs it: ``crmctl report KIND ... --format json`` in a
    child process (interpreter start, imports, the report, JSON out)."""
    figures = {}
    for name, kwargs in REPORTS.items():
        options = []
        for key, value in kwargs.items():
            options += [
                CLI_OPTIONS[key],
                (value.date() if isinstance(value, datetime) else value).isoformat(),
            ]
        argv = crmctl_argv(url, TENANT, "report", name.removesuffix("_as_of"), *options, "--format", "json")
        figures[name] = measure(argv).figures()
        print(f"cli {name}: {figures[name]}", flush=True)
    return figures


def _prepare(url: str, deals: int) -> Database:
    migrate.upgrade(url)
    db = open_database(url, TENANT)
    if _existing_deals(db) != deals:
        started = time.perf_counter()
        generate(db, deals)
        if db.is_postgresql:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")
        else:
            with db.engine.connect() as conn:
                conn.exec_driver_sql("ANALYZE")
        print(f"generated {deals} deals in {time.perf_counter() - started:.1f}s ({db.dialect})", flush=True)
    return db


def run(scale: str) -> dict[str, Any]:
    deals = SCALES[scale]
    out_dir = Path(os.environ.get("CRMCTL_BENCH_DIR", "bench-data"))
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"deals": deals, "stage_changes": deals * CHANGES_PER_DEAL}
    sqlite_url = f"sqlite:///{out_dir / f'reports-{scale}.db'}"
    sqlite_db = _prepare(sqlite_url, deals)
    figures["sqlite_seconds"] = time_reports(sqlite_db)
    sqlite_db.dispose()
    figures["sqlite_cli"] = time_cli(sqlite_url)
    admin = os.environ.get("CRMCTL_BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
    name = f"crmctl_bench_reports_{scale}"
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')
    pg_url = f"{admin.rsplit('/', 1)[0]}/{name}"
    pg_db = _prepare(pg_url, deals)
    figures["postgresql_seconds"] = time_reports(pg_db)
    pg_db.dispose()
    figures["postgresql_cli"] = time_cli(pg_url)
    return figures
