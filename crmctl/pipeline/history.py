"""Projections of the append-only stage history that let reports range-scan it instead of
aggregating it.

Each ``stage_change`` row carries, derived from its deal's whole history (order: changed_at, then
id):

    valid_until          changed_at of the deal's next history row; NULL on its latest row
    entered_stage_at     when the deal last moved into a stage, as of this row (NULL before any move)
    entered_pipeline_at  changed_at of the deal's first history row

and ``deal`` carries ``entered_stage_at`` / ``entered_pipeline_at`` of its latest row. The state as of
T is then the rows with ``changed_at <= T`` and ``valid_until`` NULL or after T: one index range, no
GROUP BY over five million rows. A *stage move* is a row whose from_stage_id is empty or differs
from to_stage_id.

The stage-changes import projects rows that arrive after their deal's stored history itself
(:func:`latest_rows` + :func:`project_appended`) and leaves the others NULL for
:func:`refresh_pending`, which recomputes those deals' whole history; any other writer leaves its
rows NULL or calls :func:`refresh`. ``entered_pipeline_at`` is never NULL once
refreshed, so NULL marks pending rows: a killed import leaves them, and :func:`ensure_fresh` (run by
every report) finishes the job.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import polars as pl
from sqlalchemy import text
from sqlmodel import Session

from crmctl.db.bulk import as_utc, read_frame
from crmctl.db.engine import Database, dialect_of, tenant_of
from crmctl.db.sql import in_list, list_param, lock_rows

MOVE = "(from_stage_id IS NULL OR from_stage_id <> to_stage_id)"


def refresh(session: Session, deal_ids: Iterable[int] | None = None) -> int:
    """Recompute the projections for ``deal_ids`` (None: every deal of the tenant).

    Returns the number of history rows whose projection changed."""
    is_pg = dialect_of(session) == "postgresql"
    params: dict[str, Any] = {"t": tenant_of(session)}
    scope = deal_scope = ""
    if deal_ids is not None:
        ids = sorted({int(i) for i in deal_ids})
        if not ids:
            return 0
        lock_deals(session, ids)
        params["ids"] = list_param(session, ids)
        scope = f" AND {in_list(session, 'deal_id', 'ids')}"
        deal_scope = f" AND {in_list(session, 'deal.id', 'ids')}"
    differs = "IS DISTINCT FROM" if is_pg else "IS NOT"
    changed = session.execute(
        text(
            "UPDATE stage_change SET valid_until = h.nxt, entered_stage_at = h.entered, "
            "entered_pipeline_at = h.first FROM ("
            "SELECT id, LEAD(changed_at) OVER w AS nxt, "
            f"MAX(CASE WHEN {MOVE} THEN changed_at END) OVER w AS entered, "
            "MIN(changed_at) OVER (PARTITION BY deal_id) AS first "
            f"FROM stage_change WHERE tenant_id = :t{scope} "
            "WINDOW w AS (PARTITION BY deal_id ORDER BY changed_at, id)) h "
            "WHERE stage_change.id = h.id AND stage_change.tenant_id = :t AND ("
            f"stage_change.valid_until {differs} h.nxt OR stage_change.entered_stage_at {differs} h.entered "
            f"OR stage_change.entered_pipeline_at {differs} h.first)"
        ),
        params,
    ).rowcount
    session.execute(
        text(
            "UPDATE deal SET entered_stage_at = s.entered_stage_at, "
            "entered_pipeline_at = s.entered_pipeline_at FROM stage_change s "
            "WHERE s.tenant_id = :t AND s.deal_id = deal.id AND s.valid_until IS NULL "
            f"AND deal.tenant_id = :t{deal_scope} AND (deal.entered_stage_at {differs} s.entered_stage_at "
            f"OR deal.entered_pipeline_at {differs} s.entered_pipeline_at)"
        ),
        params,
    )
    return changed


PENDING = "FROM stage_change WHERE tenant_id = :t AND entered_pipeline_at IS NULL"


def refresh_pending(session: Session) -> int:
    """Refresh every deal that has history rows not yet projected."""
    ids = (
        session.execute(text(f"SELECT DISTINCT deal_id {PENDING}"), {"t": tenant_of(session)}).scalars().all()
    )
    return refresh(session, ids) if ids else 0


def ensure_fresh(db: Database) -> int:
    """Finish pending projections (one index probe when there are none)."""
    with db.session() as session:
        pending = session.execute(
            text(f"SELECT 1 {PENDING} LIMIT 1"),
            {"t": tenant_of(session)},
        ).first()
    if pending is None:
        return 0
    with db.session(write=True) as session:
        return refresh_pending(session)


def lock_deals(session: Session, deal_ids: list[int]) -> None:
    """PostgreSQL: hold these deals until commit, so two writers of one deal's history cannot
    both project from the same latest row (READ COMMITTED would let the second overwrite the
    first). SQLite needs nothing: a write transaction already holds the database's write lock."""
    lock_rows(session, "deal", deal_ids)


def latest_rows(session: Session, deal_ids: list[int]) -> pl.DataFrame:
    """The stored rows of these deals that nothing supersedes (one per deal once projected).

    Locks the deals first (:func:`lock_deals`): the caller projects new rows from these."""
    lock_deals(session, deal_ids)
    frame = read_frame(
        session,
        "SELECT id, deal_id, changed_at, entered_stage_at, entered_pipeline_at FROM stage_change "
        f"WHERE tenant_id = :t AND {in_list(session, 'deal_id', 'ids')} AND valid_until IS NULL",
        {"t": tenant_of(session), "ids": list_param(session, deal_ids)},
    )
    return frame.with_columns(
        as_utc(frame, c) for c in ("changed_at", "entered_stage_at", "entered_pipeline_at")
    )


def project_appended(
    new: pl.DataFrame, latest: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The projections of history rows appended after their deals' stored rows, without a refresh.

    ``new``: deal_id, changed_at, from_stage_id, to_stage_id, in insertion order (their ids will
    follow it). ``latest``: :func:`latest_rows` of their deals. Returns ``new`` with valid_until,
    entered_stage_at and entered_pipeline_at, and (id, valid_until) for the stored rows the new
    ones supersede. A deal whose new rows do not all come at or after its stored history, or whose
    stored history is itself pending, gets NULLs: pending, for :func:`refresh_pending`."""
    at = pl.Datetime("us", "UTC")
    rows = new.with_row_index("_pos").with_columns(pl.col("changed_at").cast(at))
    stored = latest.select(
        pl.col("deal_id").cast(rows.schema["deal_id"]),
        _l_id=pl.col("id").cast(pl.Int64),
        _l_at=pl.col("changed_at").cast(at),
        _l_entered=pl.col("entered_stage_at").cast(at),
        _l_first=pl.col("entered_pipeline_at").cast(at),
        _l_count=pl.len().over("deal_id"),
    )
    first_new = rows.group_by("deal_id").agg(_min=pl.col("changed_at").min())
    pending = (
        stored.join(first_new, on="deal_id")
        .filter((pl.col("_l_count") > 1) | pl.col("_l_first").is_null() | (pl.col("_min") < pl.col("_l_at")))
        .select("deal_id")
        .unique()
    )
    move = pl.col("from_stage_id").is_null() | (pl.col("from_stage_id") != pl.col("to_stage_id"))
    ordered = (
        rows.sort("deal_id", "changed_at", "_pos")
        .join(stored.unique("deal_id"), on="deal_id", how="left")
        .with_columns(
            valid_until=pl.col("changed_at").shift(-1).over("deal_id"),
            # Ascending within the deal, so the last move so far is a forward fill of move times.
            entered_stage_at=pl.coalesce(
                pl.when(move).then(pl.col("changed_at")).forward_fill().over("deal_id"), "_l_entered"
            ),
            entered_pipeline_at=pl.coalesce("_l_first", pl.col("changed_at").first().over("deal_id")),
        )
    )
    keep = ~pl.col("deal_id").is_in(pending["deal_id"].implode())
    projected = ordered.with_columns(
        pl.when(keep).then(pl.col(c)).otherwise(None).alias(c)
        for c in ("valid_until", "entered_stage_at", "entered_pipeline_at")
    )
    superseded = (
        projected.filter(keep, pl.col("_l_id").is_not_null())
        .group_by("_l_id")
        .agg(valid_until=pl.col("changed_at").min())
        .rename({"_l_id": "id"})
    )
    deals = projected.filter(keep, pl.col("valid_until").is_null()).select(
        pl.col("deal_id").alias("id"), "entered_stage_at", "entered_pipeline_at"
    )
    columns = [*new.columns, "valid_until", "entered_stage_at", "entered_pipeline_at"]
    return projected.sort("_pos").select(columns), superseded, deals
