"""A small pipeline with hand-computed answers, written straight into the test database.

Pipeline "sales" (USD, default): Lead 0.1 (stall 10 days), Demo 0.5 (stall 20), Contract 0.8,
Won, Lost. Rates: 1 EUR = 1.10 USD from 2025-01-01, 1.20 USD from 2025-03-01. All times 00:00 UTC.

    deal owner source cur  history (stage, amount, close date after each change)
    1    ann   web    USD  01-05 Lead 10000 03-31 | 02-01 Demo | 02-15 amount 12000 (no move)
    2    bob   event  EUR  01-10 Lead 5000 02-28   | 02-10 Contract (skips Demo), close 04-15
    3    ann   web    USD  01-20 Demo 20000 03-15  | 03-10 Won, close 03-10
    4    bob   event  USD  02-05 Lead 8000 03-20   | 03-05 Lost, close 03-05
    5    ann   web    USD  02-20 Lead 3000 05-30   | 03-01 close 03-25 (no move); forecast = commit
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from crmctl.db import bulk
from crmctl.db.engine import Database
from tests.conftest import Cli

PIPELINE_TOML = """
[[pipeline]]
name = "sales"
default = true
currency = "USD"

[[pipeline.stage]]
name = "Lead"
probability = 0.1
stall_days = 10

[[pipeline.stage]]
name = "Demo"
probability = 0.5
stall_days = 20

[[pipeline.stage]]
name = "Contract"
probability = 0.8

[[pipeline.stage]]
name = "Won"
probability = 1.0
won = true

[[pipeline.stage]]
name = "Lost"
probability = 0.0
lost = true
"""

# (deal, day, from stage, to stage, amount in major units, currency, close date)
HISTORY = [
    (1, "2025-01-05", None, "Lead", 10000, "USD", "2025-03-31"),
    (1, "2025-02-01", "Lead", "Demo", 10000, "USD", "2025-03-31"),
    (1, "2025-02-15", "Demo", "Demo", 12000, "USD", "2025-03-31"),
    (2, "2025-01-10", None, "Lead", 5000, "EUR", "2025-02-28"),
    (2, "2025-02-10", "Lead", "Contract", 5000, "EUR", "2025-04-15"),
    (3, "2025-01-20", None, "Demo", 20000, "USD", "2025-03-15"),
    (3, "2025-03-10", "Demo", "Won", 20000, "USD", "2025-03-10"),
    (4, "2025-02-05", None, "Lead", 8000, "USD", "2025-03-20"),
    (4, "2025-03-05", "Lead", "Lost", 8000, "USD", "2025-03-05"),
    (5, "2025-02-20", None, "Lead", 3000, "USD", "2025-05-30"),
    (5, "2025-03-01", "Lead", "Lead", 3000, "USD", "2025-03-25"),
]
DEALS = {1: ("ann", "web", None), 2: ("bob", "event", None), 3: ("ann", "web", None)}
DEALS |= {4: ("bob", "event", None), 5: ("ann", "web", "commit")}


def at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


def load(cli: Cli, db: Database, tmp_path: Path) -> dict[str, int]:
    """Configure the pipeline through the CLI, then write deals, history and rates."""
    toml = tmp_path / "pipelines.toml"
    toml.write_text(PIPELINE_TOML)
    cli("pipeline", "set", str(toml))
    with db.session() as session:
        rows = bulk.read_frame(session, "SELECT id, name, pipeline_id FROM stage WHERE tenant_id = 'default'")
    stage = dict(zip(rows["name"], rows["id"], strict=True))
    pipeline_id = int(rows["pipeline_id"][0])
    last = {}
    for row in HISTORY:
        last[row[0]] = row
    with db.session(write=True) as session:
        bulk.insert_rows(
            session,
            "deal",
            [
                {
                    "id": deal_id,
                    "tenant_id": "default",
                    "name": f"deal {deal_id}",
                    "pipeline_id": pipeline_id,
                    "stage_id": stage[last[deal_id][3]],
                    "amount_cents": last[deal_id][4] * 100,
                    "currency": last[deal_id][5],
                    "close_date": date.fromisoformat(last[deal_id][6]),
                    "owner": owner,
                    "source": source,
                    "forecast_category": category,
                    "created_at": at("2025-06-01"),  # import time, not the deal's history
                    "updated_at": at("2025-06-01"),
                }
                for deal_id, (owner, source, category) in DEALS.items()
            ],
        )
        bulk.insert_rows(
            session,
            "stage_change",
            [
                {
                    "tenant_id": "default",
                    "deal_id": deal_id,
                    "changed_at": at(day),
                    "from_stage_id": stage[src] if src else None,
                    "to_stage_id": stage[dst],
                    "amount_cents": amount * 100,
                    "currency": cur,
                    "close_date": date.fromisoformat(close),
                    "idempotency_key": f"k{i}",
                }
                for i, (deal_id, day, src, dst, amount, cur, close) in enumerate(HISTORY)
            ],
        )
        bulk.insert_rows(
            session,
            "exchange_rate",
            [
                {
                    "tenant_id": "default",
                    "base": "USD",
                    "currency": "EUR",
                    "day": date(2025, 1, 1),
                    "rate": 1.10,
                },
                {
                    "tenant_id": "default",
                    "base": "USD",
                    "currency": "EUR",
                    "day": date(2025, 3, 1),
                    "rate": 1.20,
                },
            ],
        )
    return stage
