"""Deal state, live or as of a moment from the append-only stage history, as SQL.

Every report is an aggregate over one relation ``st`` with one row per deal:

    deal_id, stage_id, amount_cents, currency, close_date,
    first_at    when the deal entered the pipeline (its first history row; else deal.created_at)
    entered_at  when it entered its current stage (its last stage move; else first_at)
    owner, source, account_id, forecast_category, name   (from ``deal``)

*Live* takes stage, amount, currency and close date from ``deal`` (and the timing from its history
projections). *As of T* takes them from the deal's last ``stage_change`` at or before T (order:
changed_at, then id), whose row holds the values after that change; a deal with no history at or
before T did not exist yet. Owner, source, account, name and forecast category are not versioned:
both modes read them from ``deal``. A report as of now therefore equals the live one whenever the
history ends in the deal's current values.

The as-of row is found without aggregating the history: each history row knows when the next one
superseded it (``valid_until``, see :mod:`crmctl.pipeline.history`), so the rows valid at T are one
index range. Live reports keep ``pipeline_id`` in their GROUP BY so SQLite reads the covering
index of ``deal`` in order and streams the aggregate instead of sorting.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlmodel import Session

from crmctl.db.bulk import sqlite_text
from crmctl.db.engine import dialect_of, tenant_of

DEAL_COLUMNS = "d.owner, d.source, d.account_id, d.forecast_category, d.name"
LIVE_FIRST = "COALESCE(d.entered_pipeline_at, d.created_at)"
LIVE_ENTERED = "COALESCE(d.entered_stage_at, d.entered_pipeline_at, d.created_at)"


def end_of_day(day: date) -> datetime:
    """As of a date means at the end of that day (UTC): the last instant before the next day."""
    return datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC) - timedelta(microseconds=1)


@dataclass(frozen=True)
class Sql:
    """Dialect-aware fragments and parameter encoders."""

    dialect: str
    tenant: str

    @classmethod
    def of(cls, session: Session) -> Sql:
        return cls(dialect_of(session), tenant_of(session))

    @property
    def is_pg(self) -> bool:
        return self.dialect == "postgresql"

    def ts(self, value: datetime) -> Any:
        value = value.astimezone(UTC)
        return value if self.is_pg else sqlite_text(value)

    def day(self, value: date) -> Any:
        return value if self.is_pg else value.isoformat()

    def day_number(self, column: str) -> str:
        """A timestamp as fractional days since 1970-01-01 (sum these, subtract in Python)."""
        if self.is_pg:
            return f"(EXTRACT(EPOCH FROM {column}) / 86400.0)"
        return f"(julianday({column}) - 2440587.5)"

    def month(self, column: str) -> str:
        return f"to_char({column}, 'YYYY-MM')" if self.is_pg else f"substr({column}, 1, 7)"

    def ts_param(self, name: str) -> str:
        return f"CAST(:{name} AS timestamptz)" if self.is_pg else f":{name}"

    def day_param(self, name: str) -> str:
        return f"CAST(:{name} AS date)" if self.is_pg else f":{name}"


def day_number(value: datetime) -> float:
    """``value`` as fractional days since 1970-01-01, as :meth:`Sql.day_number` computes in SQL."""
    return value.timestamp() / 86_400


def valid_at(sql: Sql, alias: str, at_param: str) -> str:
    """The history rows of ``alias`` that hold their deal's state at :at_param."""
    at = sql.ts_param(at_param)
    return f"{alias}.changed_at <= {at} AND ({alias}.valid_until IS NULL OR {alias}.valid_until > {at})"


def valid_rows(sql: Sql, select: str, at_param: str, where: str = "") -> str:
    """``SELECT select`` over the history rows (alias ``s``) that hold their deal's state at :at_param.

    Two index ranges (the latest rows, and rows superseded after the moment) joined by UNION ALL
    rather than one OR, so PostgreSQL reads them index-only like SQLite does."""
    at = sql.ts_param(at_param)
    base = f"SELECT {select} FROM stage_change s WHERE s.tenant_id = :tenant AND s.changed_at <= {at}{where}"
    return f"{base} AND s.valid_until IS NULL UNION ALL {base} AND s.valid_until > {at}"


def _in(ids: list[int]) -> str:
    return ", ".join(str(int(i)) for i in ids) or "NULL"


def state_sql(
    sql: Sql, pipeline_ids: list[int], stage_ids: list[int], *, at_param: str | None, deal: bool = True
) -> str:
    """SQL for the ``st`` relation (see the module docstring); ``at_param`` None = live.

    As of a moment, ``deal=False`` leaves out the deal's own columns (owner, source, account_id,
    forecast_category, name) and so the join to ``deal``; the history's stage ids say which
    pipelines a deal was in then."""
    if at_param is None:
        return (
            "SELECT d.id AS deal_id, d.pipeline_id, d.stage_id, d.amount_cents, d.currency, d.close_date, "
            f"{LIVE_FIRST} AS first_at, {LIVE_ENTERED} AS entered_at, {DEAL_COLUMNS} "
            f"FROM deal d WHERE d.tenant_id = :tenant AND d.pipeline_id IN ({_in(pipeline_ids)})"
        )
    rows = valid_rows(
        sql,
        "s.deal_id, s.to_stage_id AS stage_id, s.amount_cents, s.currency, s.close_date, "
        "s.entered_pipeline_at AS first_at, "
        "COALESCE(s.entered_stage_at, s.entered_pipeline_at) AS entered_at",
        at_param,
        f" AND s.to_stage_id IN ({_in(stage_ids)})",
    )
    if not deal:
        return rows
    join = "JOIN deal d ON d.tenant_id = :tenant AND d.id = v.deal_id"
    return f"SELECT v.*, {DEAL_COLUMNS} FROM ({rows}) v {join}"
