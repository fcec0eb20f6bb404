"""Deal state, live or reconstructed at a moment from the append-only stage history, as SQL.

Every report is an aggregate over one relation ``st`` with one row per deal:

    deal_id, pipeline_id, stage_id, amount_cents, currency, close_date,
    first_at    when the deal entered the pipeline (its first history row; else deal.created_at)
    entered_at  when it entered its current stage (its last stage move; else first_at)
    owner, source, account_id, forecast_category, name

*Live* takes stage, amount, currency and close date from ``deal``. *As of T* takes them from the
deal's last ``stage_change`` at or before T (order: changed_at, then id), whose row holds the values
after that change; a deal with no history at or before T did not exist yet. Owner, source, account,
name and forecast category are not versioned: both modes read them from ``deal``. A report as of now
therefore equals the live one whenever the history ends in the deal's current values.

A *stage move* is a history row whose from_stage_id is empty or differs from to_stage_id; other rows
only change amount or close date.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlmodel import Session

from crmctl.db.engine import dialect_of, tenant_of

SQLITE_TIMESTAMP = "%Y-%m-%d %H:%M:%S.%f"
DEAL_COLUMNS = "d.owner, d.source, d.account_id, d.forecast_category, d.name"


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
        return value if self.is_pg else value.replace(tzinfo=None).strftime(SQLITE_TIMESTAMP)

    def day(self, value: date) -> Any:
        return value if self.is_pg else value.isoformat()

    def days_between(self, later: str, earlier: str) -> str:
        """Fractional days from ``earlier`` to ``later`` (timestamp expressions)."""
        if self.is_pg:
            return f"(EXTRACT(EPOCH FROM ({later} - {earlier})) / 86400.0)"
        return f"(julianday({later}) - julianday({earlier}))"

    def month(self, column: str) -> str:
        return f"to_char({column}, 'YYYY-MM')" if self.is_pg else f"substr({column}, 1, 7)"

    def ts_param(self, name: str) -> str:
        return f"CAST(:{name} AS timestamptz)" if self.is_pg else f":{name}"

    def day_param(self, name: str) -> str:
        return f"CAST(:{name} AS date)" if self.is_pg else f":{name}"


def _timing(sql: Sql, at_param: str | None) -> str:
    bound = f" AND changed_at <= {sql.ts_param(at_param)}" if at_param else ""
    return (
        "SELECT deal_id, MIN(changed_at) AS first_at, "
        "MAX(CASE WHEN from_stage_id IS NULL OR from_stage_id <> to_stage_id THEN changed_at END) "
        f"AS entered_at FROM stage_change WHERE tenant_id = :tenant{bound} GROUP BY deal_id"
    )


def _last_rows(sql: Sql, at_param: str) -> str:
    """The last history row of each deal at or before :at_param (ties on changed_at: highest id)."""
    bound = f"changed_at <= {sql.ts_param(at_param)}"
    if sql.is_pg:
        # Deal descending too: that is the covering index read backwards, so DISTINCT ON needs no
        # sort (ascending deal order made the planner sort the whole history, spilling to disk).
        return (
            "SELECT DISTINCT ON (deal_id) deal_id, to_stage_id AS stage_id, amount_cents, currency, "
            f"close_date FROM stage_change WHERE tenant_id = :tenant AND {bound} "
            "ORDER BY deal_id DESC, changed_at DESC, id DESC"
        )
    # SQLite's documented bare-column rule: with one MAX() the other columns come from its row. The
    # key (fixed-width timestamp text, then the id as 13 fixed digits) makes that row unique; the
    # integer offset pads the id ~18% cheaper per row than printf('%012d') (ids stay below 9e12).
    return (
        "SELECT deal_id, to_stage_id AS stage_id, amount_cents, currency, close_date, "
        "MAX(changed_at || (id + 1000000000000)) AS last_key "
        f"FROM stage_change WHERE tenant_id = :tenant AND {bound} GROUP BY deal_id"
    )


def state_sql(
    sql: Sql, pipeline_ids: list[int], *, at_param: str | None, timing: bool = True, seek: bool = False
) -> str:
    """SQL for the ``st`` relation (see the module docstring); ``at_param`` None = live.

    ``seek``: the report keeps few deals and reads their timing once each, so on SQLite (live) look
    timing up per deal instead of aggregating the whole history.
    """
    in_pipelines = ", ".join(str(int(i)) for i in pipeline_ids) or "NULL"
    if at_param is None and timing and seek and not sql.is_pg:
        # SQLite, live: two seeks per deal in the covering index (only for the deals the report's
        # filter keeps) beat aggregating the whole history; PostgreSQL's hash join is faster there.
        # The subqueries run once per reference, hence opt-in for reports that read timing once.
        per_deal = "FROM stage_change s WHERE s.tenant_id = :tenant AND s.deal_id = d.id"
        first = f"COALESCE((SELECT MIN(s.changed_at) {per_deal}), d.created_at)"
        move = "(s.from_stage_id IS NULL OR s.from_stage_id <> s.to_stage_id)"
        entered = f"COALESCE((SELECT MAX(s.changed_at) {per_deal} AND {move}), {first})"
        return (
            f"SELECT d.id AS deal_id, d.pipeline_id, d.stage_id, d.amount_cents, d.currency, d.close_date, "
            f"{first} AS first_at, {entered} AS entered_at, {DEAL_COLUMNS} "
            f"FROM deal d WHERE d.tenant_id = :tenant AND d.pipeline_id IN ({in_pipelines})"
        )
    if at_param is None:
        timing_join = f"LEFT JOIN ({_timing(sql, None)}) h ON h.deal_id = d.id" if timing else ""
        first = "COALESCE(h.first_at, d.created_at)" if timing else "d.created_at"
        entered = f"COALESCE(h.entered_at, {first})" if timing else "d.created_at"
        return (
            f"SELECT d.id AS deal_id, d.pipeline_id, d.stage_id, d.amount_cents, d.currency, d.close_date, "
            f"{first} AS first_at, {entered} AS entered_at, {DEAL_COLUMNS} "
            f"FROM deal d {timing_join} "
            f"WHERE d.tenant_id = :tenant AND d.pipeline_id IN ({in_pipelines})"
        )
    timing_join = f"JOIN ({_timing(sql, at_param)}) h ON h.deal_id = l.deal_id" if timing else ""
    first = "h.first_at" if timing else "NULL"
    entered = "COALESCE(h.entered_at, h.first_at)" if timing else "NULL"
    return (
        f"SELECT l.deal_id, d.pipeline_id, l.stage_id, l.amount_cents, l.currency, l.close_date, "
        f"{first} AS first_at, {entered} AS entered_at, {DEAL_COLUMNS} "
        f"FROM ({_last_rows(sql, at_param)}) l {timing_join} "
        f"JOIN deal d ON d.tenant_id = :tenant AND d.id = l.deal_id "
        f"WHERE d.pipeline_id IN ({in_pipelines})"
    )
