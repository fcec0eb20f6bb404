"""Erasure run: 10,000 requests against 1M contacts and 10M interactions, verification included.

Data (seeded, generated straight into the tables with bulk.insert_frame; cached under bench-data/):
contacts with names, email, phone, company; two identifiers each (email, phone); one source record
each (JSON payload with the raw row); interactions spread over the contacts (a third carry text,
one in ten an email address in ``details``); 1 product-usage event per 10 contacts. Requests are
recorded directly (keyed hashes, as ``erasure request`` stores them); the timed part is one
``python -m crmctl erasure run`` subprocess, which takes the lock, runs every step and verifies.

    python -m benchmarks erasure --scale full                      # SQLite
    python -c "from benchmarks import bench_erasure as b; print(b.run('medium'))"  # 200k / 2M / 2,000
    CRMCTL_BENCH_PG=postgresql://postgres@127.0.0.1:5432/test python -m benchmarks erasure --scale full
"""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
from sqlalchemy import text

from benchmarks._child import crmctl_argv, measure
from crmctl.db import migrate
from crmctl.db.bulk import insert_frame
from crmctl.db.engine import open_database
from crmctl.erasure.keys import require_key
from crmctl.erasure.subjects import identity_hashes

SCALES = {
    "small": {"contacts": 20_000, "interactions": 200_000, "requests": 500},
    "medium": {"contacts": 200_000, "interactions": 2_000_000, "requests": 2_000},
    "full": {"contacts": 1_000_000, "interactions": 10_000_000, "requests": 10_000},
}
KEY = "benchmark-erasure-key-not-secret-0123456789"
TENANT = "default"
SEED = 8
CHUNK = 1_000_000
ROOT = Path(__file__).resolve().parent.parent / "bench-data"
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _contacts(n: int) -> pl.DataFrame:
    i = pl.int_range(1, n + 1, eager=True).alias("id")
    frame = pl.DataFrame(i)
    return frame.with_columns(
        pl.lit(TENANT).alias("tenant_id"),
        ((pl.col("id") % 50_000) + 1).alias("account_id"),
        pl.format("First{}", pl.col("id") % 5000).alias("first_name"),
        pl.format("Last{}", pl.col("id")).alias("last_name"),
        pl.format("First{} Last{}", pl.col("id") % 5000, pl.col("id")).alias("full_name"),
        pl.format("first{}", pl.col("id") % 5000).alias("first_name_norm"),
        pl.format("last{}", pl.col("id")).alias("last_name_norm"),
        pl.format("First.Last{}@Company{}.example", pl.col("id"), pl.col("id") % 50_000).alias("email"),
        pl.format("first.last{}@company{}.example", pl.col("id"), pl.col("id") % 50_000).alias("email_norm"),
        pl.format("+44 20 {}", (70_000_000 + pl.col("id")).cast(pl.String)).alias("phone"),
        pl.format("+4420{}", 70_000_000 + pl.col("id")).alias("phone_e164"),
        pl.format("Company{}", pl.col("id") % 50_000).alias("company"),
        pl.lit("lead").alias("lifecycle_stage"),
        pl.lit("legitimate_interest").alias("lawful_basis"),
        pl.lit(T0).alias("created_at"),
        pl.lit(T0).alias("updated_at"),
    )


def _accounts() -> pl.DataFrame:
    return pl.DataFrame({"id": pl.int_range(1, 50_001, eager=True)}).with_columns(
        pl.lit(TENANT).alias("tenant_id"),
        pl.format("Company{}", pl.col("id") % 50_000).alias("name"),
        pl.lit(T0).alias("created_at"),
        pl.lit(T0).alias("updated_at"),
    )


def _identifiers(contacts: pl.DataFrame) -> pl.DataFrame:
    base = contacts.select(
        pl.lit(TENANT).alias("tenant_id"), pl.col("id").alias("contact_id"), "email_norm", "phone_e164"
    )
    return pl.concat(
        [
            base.select(
                "tenant_id", "contact_id", pl.lit("email").alias("kind"), pl.col("email_norm").alias("value")
            ),
            base.select(
                "tenant_id", "contact_id", pl.lit("phone").alias("kind"), pl.col("phone_e164").alias("value")
            ),
        ]
    ).with_columns(pl.lit(T0).alias("created_at"))


def _source_records(contacts: pl.DataFrame) -> pl.DataFrame:
    return contacts.select(
        pl.lit(TENANT).alias("tenant_id"),
        pl.lit("web").alias("source"),
        pl.col("id").cast(pl.String).alias("source_record_id"),
        pl.concat_str(
            pl.lit('{"Email": "'),
            "email",
            pl.lit('", "Phone": "'),
            "phone",
            pl.lit('", "Name": "'),
            "full_name",
            pl.lit('"}'),
        ).alias("payload"),
        "email_norm",
        "phone_e164",
        pl.col("id").alias("contact_id"),
        pl.lit("created").alias("action"),
        pl.lit(T0).alias("created_at"),
    )


def _interactions(start: int, n: int, contacts: int) -> pl.DataFrame:
    ids = pl.int_range(start + 1, start + n + 1, eager=True).alias("id")
    frame = pl.DataFrame(ids).with_columns(((pl.col("id") * 7919) % contacts + 1).alias("contact_id"))
    kinds = ["email", "call", "meeting", "note", "product_event"]
    subjects = ["Renewal", "Demo follow-up", "Quarterly review", "Onboarding", "Pricing question"]
    return frame.with_columns(
        pl.lit(TENANT).alias("tenant_id"),
        ((pl.col("contact_id") % 50_000) + 1).alias("account_id"),
        pl.col("id").mod(5).replace_strict(list(range(5)), kinds).alias("kind"),
        (pl.lit(T0) + pl.duration(minutes=pl.col("id") % 500_000)).alias("occurred_at"),
        pl.when(pl.col("id") % 3 == 0)
        .then(pl.col("id").mod(5).replace_strict(list(range(5)), subjects))
        .alias("subject"),
        pl.when(pl.col("id") % 6 == 0)
        .then(pl.lit("Spoke about the roadmap; next step agreed."))
        .alias("body"),
        pl.when(pl.col("id") % 10 == 0)
        .then(
            pl.concat_str(
                pl.lit('{"to": "'),
                pl.format(
                    "first.last{}@company{}.example", pl.col("contact_id"), pl.col("contact_id") % 50_000
                ),
                pl.lit('"}'),
            )
        )
        .alias("details"),
        pl.format("bench-{}", pl.col("id")).alias("idempotency_key"),
    )


def _interactions_sqlite(conn: Any, start: int, n: int, contacts: int) -> None:
    """The same rows as ``_interactions``, generated inside SQLite: Python's executemany of 10M
    rows takes most of an hour on a busy 2-core machine; a recursive CTE takes minutes."""
    kinds = (
        "CASE x % 5 WHEN 0 THEN 'email' WHEN 1 THEN 'call' WHEN 2 THEN 'meeting' WHEN 3 THEN 'note' "
        "ELSE 'product_event' END"
    )
    subjects = (
        "CASE x % 5 WHEN 0 THEN 'Renewal' WHEN 1 THEN 'Demo follow-up' WHEN 2 THEN 'Quarterly review' "
        "WHEN 3 THEN 'Onboarding' ELSE 'Pricing question' END"
    )
    conn.exec_driver_sql(
        f"""
        WITH RECURSIVE ids(x) AS (SELECT {start + 1} UNION ALL SELECT x + 1 FROM ids WHERE x < {start + n}),
        rows AS (SELECT x, (x * 7919) % {contacts} + 1 AS c FROM ids)
        INSERT INTO interaction (id, contact_id, tenant_id, account_id, kind, occurred_at, subject, body,
                                 details, idempotency_key)
        SELECT x, c, '{TENANT}', (c % 50000) + 1, {kinds},
               strftime('%Y-%m-%d %H:%M:%S', '{T0:%Y-%m-%d}', '+' || (x % 500000) || ' minutes') || '.000000',
               CASE WHEN x % 3 = 0 THEN {subjects} END,
               CASE WHEN x % 6 = 0 THEN 'Spoke about the roadmap; next step agreed.' END,
               CASE WHEN x % 10 = 0
                    THEN '{{"to": "first.last' || c || '@company' || (c % 50000) || '.example"}}' END,
               'bench-' || x
        FROM rows
        """
    )


def _usage(contacts: int) -> pl.DataFrame:
    frame = pl.DataFrame(pl.int_range(1, contacts // 10 + 1, eager=True).alias("id"))
    return frame.with_columns(
        pl.lit(TENANT).alias("tenant_id"),
        ((pl.col("id") * 10) % 50_000 + 1).alias("account_id"),
        (pl.col("id") * 10).alias("contact_id"),
        pl.lit(T0).alias("occurred_at"),
        pl.lit("login").alias("event"),
        pl.lit(1.0).alias("quantity"),
        pl.format("u-{}", pl.col("id")).alias("idempotency_key"),
    )


def _requests(contacts: pl.DataFrame, n: int) -> pl.DataFrame:
    picked = contacts.select("id", "email_norm", "phone_e164").sample(n, seed=SEED).sort("id")
    key = require_key(KEY)
    return pl.DataFrame(
        {
            "id": list(range(1, n + 1)),
            "tenant_id": [TENANT] * n,
            "contact_id": picked["id"],
            "identity_hashes": [
                json.dumps(identity_hashes(key, [e], [p]))
                for e, p in zip(picked["email_norm"], picked["phone_e164"], strict=True)
            ],
            "requestor": ["bench"] * n,
            "reason": ["benchmark"] * n,
            "status": ["pending"] * n,
            "requested_at": [T0] * n,
            "evidence": [json.dumps({"matched_contact_ids": [c]}) for c in picked["id"]],
        }
    )


def _populate(url: str, size: dict[str, int]) -> None:
    migrate.upgrade(url)
    db = open_database(url, TENANT, app_role=None)  # owner: COPY is refused under RLS for the app role
    contacts = _contacts(size["contacts"])
    with db.session(write=True) as s:
        insert_frame(s, "account", _accounts())
        for part in contacts.iter_slices(CHUNK):
            insert_frame(s, "contact", part)
        insert_frame(s, "contact_identifier", _identifiers(contacts))
        insert_frame(s, "source_record", _source_records(contacts))
        insert_frame(s, "product_usage", _usage(size["contacts"]))
        insert_frame(s, "erasure_request", _requests(contacts, size["requests"]))
    for start in range(0, size["interactions"], CHUNK):
        with db.session(write=True) as s:
            if not db.is_postgresql:
                _interactions_sqlite(
                    s.connection(), start, min(CHUNK, size["interactions"] - start), size["contacts"]
                )
                continue
            insert_frame(
                s,
                "interaction",
                _interactions(start, min(CHUNK, size["interactions"] - start), size["contacts"]),
            )
    with db.session(write=True) as s:
        if db.is_postgresql:
            for table in ("contact", "interaction", "contact_identifier", "source_record"):
                s.connection().exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f'(SELECT max(id) FROM "{table}"))'
                )
    if db.is_postgresql:
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    else:
        with db.session(write=True) as s:
            s.connection().exec_driver_sql("ANALYZE")
    db.dispose()


def _sqlite_copy(scale: str, size: dict[str, int]) -> str:
    ROOT.mkdir(exist_ok=True)
    cached = ROOT / f"erasure-{scale}.db"
    if not cached.exists():
        tmp = cached.with_suffix(".tmp.db")
        tmp.unlink(missing_ok=True)
        _populate(f"sqlite:///{tmp}", size)
        tmp.rename(cached)
    run = ROOT / f"erasure-{scale}-run.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{run}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(cached, run)
    return f"sqlite:///{run}"


def _pg_copy(admin_url: str, scale: str, size: dict[str, int]) -> tuple[str, str]:
    base = admin_url.rsplit("/", 1)[0]
    template, run = f"crmctl_bench_erasure_{scale}", f"crmctl_bench_erasure_{scale}_run"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (template,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{template}"')
            try:
                _populate(f"{base}/{template}", size)
            except BaseException:
                conn.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
                raise
        conn.execute(f'DROP DATABASE IF EXISTS "{run}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{run}" TEMPLATE "{template}"')
    return f"{base}/{run}", run


def run(scale: str) -> dict:
    size = SCALES[scale]
    pg_admin = os.environ.get("CRMCTL_BENCH_PG")
    started = time.perf_counter()
    url, pg_run = _pg_copy(pg_admin, scale, size) if pg_admin else (_sqlite_copy(scale, size), None)
    prepared = time.perf_counter() - started
    child = measure(
        crmctl_argv(url, TENANT, "--quiet", "erasure", "run", "--format", "json"),
        env={"CRMCTL_ERASURE_KEY": KEY},
    )
    outcomes = json.loads(child.stdout)
    statuses: dict[str, int] = {}
    for o in outcomes:
        statuses[o["status"]] = statuses.get(o["status"], 0) + 1
    figures = {
        "backend": "postgresql" if pg_admin else "sqlite",
        "contacts": size["contacts"],
        "interactions": size["interactions"],
        "requests": size["requests"],
        "statuses": statuses,
        "rows_changed": sum(o["rows_changed"] for o in outcomes),
        "erasure_run_seconds": round(child.seconds, 2),
        "requests_per_second": round(size["requests"] / child.seconds, 1),
        "run_cpu_seconds": round(child.cpu_seconds, 2),
        "peak_rss_mb": round(child.peak_rss_mb, 1),
        "load_average_at_start": round(child.load, 2),
        "prepare_seconds": round(prepared, 1),
    }
    figures.update(_phases(url))
    if pg_run:
        with psycopg.connect(pg_admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{pg_run}" WITH (FORCE)')
    return figures


def _phases(url: str) -> dict[str, float]:
    """Wall seconds of the steps before verification and of verification, from the step log."""
    db = open_database(url, TENANT, app_role=None)
    with db.session() as s:
        rows = s.connection().execute(
            text(
                "SELECT name = 'verify', min(started_at), max(finished_at) FROM erasure_step "
                "WHERE tenant_id = :tenant GROUP BY name = 'verify'"
            ),
            {"tenant": TENANT},
        )
        spans = {bool(verify): (first, last) for verify, first, last in rows}
    db.dispose()

    def seconds(span: tuple[Any, Any]) -> float:
        first, last = (datetime.fromisoformat(str(v)) for v in span)
        return round((last - first).total_seconds(), 1)

    return {"steps_seconds": seconds(spans[False]), "verify_seconds": seconds(spans[True])}
