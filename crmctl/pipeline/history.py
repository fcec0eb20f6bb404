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

Whatever writes ``stage_change`` leaves the new rows' projections NULL and calls
:func:`refresh_pending` (or :func:`refresh` for the deals it touched); rows arriving out of order are
handled because the deal's whole history is recomputed. ``entered_pipeline_at`` is never NULL once
refreshed, so NULL marks pending rows: a killed import leaves them, and :func:`ensure_fresh` (run by
every report) finishes the job.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from sqlalchemy import text
from sqlmodel import Session

from crmctl.db.engine import Database, dialect_of, tenant_of

MOVE = "(from_stage_id IS NULL OR from_stage_id <> to_stage_id)"


def refresh(session: Session, deal_ids: Iterable[int] | None = None) -> int:
    """Recompute the projections for ``deal_ids`` (None: every deal of the tenant).

    Returns the number of history rows whose projection changed."""
    is_pg = dialect_of(session) == "postgresql"
    params: dict[str, object] = {"t": tenant_of(session)}
    if deal_ids is None:
        scope = ""
    else:
        ids = sorted({int(i) for i in deal_ids})
        if not ids:
            return 0
        # One parameter however many deals: an array on PostgreSQL, a JSON list on SQLite.
        if is_pg:
            scope, params["ids"] = " AND deal_id = ANY(CAST(:ids AS bigint[]))", ids
        else:
            scope, params["ids"] = " AND deal_id IN (SELECT value FROM json_each(:ids))", json.dumps(ids)
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
    deal_scope = scope.replace("deal_id", "deal.id")
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


PENDING = "SELECT DISTINCT deal_id FROM stage_change WHERE tenant_id = :t AND entered_pipeline_at IS NULL"


def refresh_pending(session: Session) -> int:
    """Refresh every deal that has history rows not yet projected."""
    ids = session.execute(text(PENDING), {"t": tenant_of(session)}).scalars().all()
    return refresh(session, ids) if ids else 0


def ensure_fresh(db: Database) -> int:
    """Finish pending projections (one index probe when there are none)."""
    with db.session() as session:
        pending = session.execute(
            text("SELECT 1 FROM stage_change WHERE tenant_id = :t AND entered_pipeline_at IS NULL LIMIT 1"),
            {"t": tenant_of(session)},
        ).first()
    if pending is None:
        return 0
    with db.session(write=True) as session:
        return refresh_pending(session)
