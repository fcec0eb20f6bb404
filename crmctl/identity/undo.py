"""Taking a lead import back, and settling review items."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlmodel import Session, select

from crmctl.db import bulk
from crmctl.db.engine import tenant_of
from crmctl.db.models import ImportRun, MergeDecision, ReviewItem, utcnow
from crmctl.errors import NotFoundError, UsageError
from crmctl.importers.leads import FILL_FIELDS


@dataclass
class RunUndone:
    run_id: int
    source_records_removed: int
    contacts_removed: int
    contacts_restored: int
    contact_merges_undone: int


def _ids(session: Session, sql: str, **params: Any) -> list[int]:
    return [r[0] for r in session.connection().execute(text(sql), params).all()]


def undo_run(session: Session, run_id: int, *, actor: str) -> RunUndone:
    """Remove everything import run ``run_id`` added and restore what it changed.

    Refused (nothing changed) when a later, not undone, run added rows to contacts this run created:
    undo that run first."""
    tenant = tenant_of(session)
    run = session.exec(select(ImportRun).where(ImportRun.tenant_id == tenant, ImportRun.id == run_id)).first()
    if run is None or run.kind != "leads":
        raise NotFoundError(f"There is no lead import run {run_id} in this tenant.")
    if run.status == "undone":
        raise UsageError(f"Import run {run_id} is already undone.")
    params = {"t": tenant, "r": run_id}
    # contacts this run created: every record pointing at them came from this run or later ones
    created = _ids(
        session,
        "SELECT contact_id FROM source_record WHERE tenant_id = :t AND contact_id IS NOT NULL "
        "GROUP BY contact_id HAVING MIN(import_run_id) = :r",
        **params,
    )
    later = _ids(
        session,
        "SELECT DISTINCT s.import_run_id FROM source_record s "
        "WHERE s.tenant_id = :t AND s.import_run_id > :r AND s.contact_id IN "
        "(SELECT contact_id FROM source_record WHERE tenant_id = :t GROUP BY contact_id "
        " HAVING MIN(import_run_id) = :r)",
        **params,
    )
    later += _ids(
        session,
        "SELECT DISTINCT d.import_run_id FROM merge_decision d "
        "WHERE d.tenant_id = :t AND d.import_run_id > :r AND d.undone_at IS NULL "
        "AND d.kind = 'contact' AND d.loser_contact_id IN "
        "(SELECT contact_id FROM source_record WHERE tenant_id = :t GROUP BY contact_id "
        " HAVING MIN(import_run_id) = :r)",
        **params,
    )
    later += _ids(
        session,
        "SELECT DISTINCT r.import_run_id FROM review_item r WHERE r.tenant_id = :t AND r.import_run_id > :r "
        "AND (r.left_contact_id IN (SELECT contact_id FROM source_record WHERE tenant_id = :t "
        "GROUP BY contact_id HAVING MIN(import_run_id) = :r) OR r.right_contact_id IN "
        "(SELECT contact_id FROM source_record WHERE tenant_id = :t GROUP BY contact_id "
        " HAVING MIN(import_run_id) = :r))",
        **params,
    )
    if later:
        runs = ", ".join(str(r) for r in sorted(set(later)))
        raise UsageError(
            f"Import run {run_id} cannot be undone: later run(s) {runs} matched rows to contacts it created.",
            hint="Undo those runs first (newest first).",
        )
    # newest first: a contact several batches of the run filled ends with the oldest "before",
    # the fields as they were before the run
    decisions = session.exec(
        select(MergeDecision)
        .where(MergeDecision.tenant_id == tenant, MergeDecision.import_run_id == run_id)
        .order_by(MergeDecision.id.desc())  # type: ignore[union-attr]
    ).all()
    now = utcnow()
    conn = session.connection()
    merges_undone = restored = 0
    for decision in decisions:
        if decision.kind == "contact" and decision.loser_contact_id is not None:
            conn.execute(
                text(
                    "UPDATE contact SET merged_into_id = NULL, updated_at = :now "
                    "WHERE tenant_id = :t AND id = :l"
                ),
                {"now": now, "t": tenant, "l": decision.loser_contact_id},
            )
            merges_undone += 1
        elif decision.before and decision.winner_contact_id not in created:
            before = decision.before if isinstance(decision.before, dict) else json.loads(decision.before)
            sets = ", ".join(f"{f} = :{f}" for f in FILL_FIELDS)
            conn.execute(
                text(f"UPDATE contact SET {sets}, updated_at = :now WHERE tenant_id = :t AND id = :id"),
                {
                    **{f: before.get(f) for f in FILL_FIELDS},
                    "now": now,
                    "t": tenant,
                    "id": decision.winner_contact_id,
                },
            )
            restored += 1
    conn.execute(text("DELETE FROM review_item WHERE tenant_id = :t AND import_run_id = :r"), params)
    conn.execute(
        text(
            "DELETE FROM contact_identifier WHERE tenant_id = :t AND source_record_id IN "
            "(SELECT id FROM source_record WHERE tenant_id = :t AND import_run_id = :r)"
        ),
        params,
    )
    # decisions about contacts that disappear go with them; the others stay, marked undone
    conn.execute(
        text(
            "UPDATE merge_decision SET undone_at = :now, undone_by = :actor "
            "WHERE tenant_id = :t AND import_run_id = :r"
        ),
        {**params, "now": now, "actor": actor},
    )
    removed = conn.execute(
        text("DELETE FROM source_record WHERE tenant_id = :t AND import_run_id = :r"), params
    ).rowcount
    for start in range(0, len(created), 1000):
        chunk = created[start : start + 1000]
        holders = ", ".join(f":c{i}" for i in range(len(chunk)))
        values = {f"c{i}": c for i, c in enumerate(chunk)}
        conn.execute(
            text(f"DELETE FROM merge_decision WHERE tenant_id = :t AND winner_contact_id IN ({holders})"),
            {"t": tenant, **values},
        )
        conn.execute(
            text(f"DELETE FROM contact_identifier WHERE tenant_id = :t AND contact_id IN ({holders})"),
            {"t": tenant, **values},
        )
        conn.execute(
            text(f"DELETE FROM contact WHERE tenant_id = :t AND id IN ({holders})"), {"t": tenant, **values}
        )
    run.status = "undone"
    run.undone_at = now
    session.add(run)
    return RunUndone(
        run_id=run_id,
        source_records_removed=removed,
        contacts_removed=len(created),
        contacts_restored=restored,
        contact_merges_undone=merges_undone,
    )


def decide_review(session: Session, item_id: int, *, accept: bool, actor: str) -> dict[str, Any]:
    """Accept (merge the right contact into the left, with a merge decision) or reject a review item."""
    tenant = tenant_of(session)
    item = session.exec(
        select(ReviewItem).where(ReviewItem.tenant_id == tenant, ReviewItem.id == item_id)
    ).first()
    if item is None:
        raise NotFoundError(f"There is no review item {item_id} in this tenant.")
    if item.status != "open":
        raise UsageError(f"Review item {item_id} is already {item.status}.")
    now = utcnow()
    item.status = "accepted" if accept else "rejected"
    item.decided_at = now
    item.decided_by = actor
    if accept:
        winner, loser = sorted((item.left_contact_id, item.right_contact_id))
        rows = bulk.read_frame(
            session,
            "SELECT id, email, phone, first_name, last_name, company FROM contact "
            "WHERE tenant_id = :t AND id IN (:a, :b)",
            {"t": tenant, "a": winner, "b": loser},
        )
        decision = MergeDecision(
            tenant_id=tenant,
            import_run_id=item.import_run_id,
            kind="contact",
            rule=f"review:{item.rule}",
            score=item.score,
            winner_contact_id=winner,
            loser_contact_id=loser,
            levels=item.levels,
            candidates=rows.to_dicts(),
            actor=actor,
        )
        session.add(decision)
        session.flush()
        item.merge_decision_id = decision.id
        session.connection().execute(
            text(
                "UPDATE contact SET merged_into_id = :w, updated_at = :now WHERE tenant_id = :t AND id = :l"
            ),
            {"w": winner, "l": loser, "now": now, "t": tenant},
        )
    session.add(item)
    return {"id": item_id, "status": item.status, "merge_decision_id": item.merge_decision_id}


def undo_merge(session: Session, decision_id: int, *, actor: str) -> dict[str, Any]:
    """Take back a contact-to-contact merge: the younger contact stands on its own again."""
    tenant = tenant_of(session)
    decision = session.exec(
        select(MergeDecision).where(MergeDecision.tenant_id == tenant, MergeDecision.id == decision_id)
    ).first()
    if decision is None:
        raise NotFoundError(f"There is no merge decision {decision_id} in this tenant.")
    if decision.undone_at is not None:
        raise UsageError(f"Merge decision {decision_id} is already undone.")
    if decision.kind != "contact" or decision.loser_contact_id is None:
        raise UsageError(
            f"Merge decision {decision_id} joined imported records to a contact.",
            hint=f"Take it back with 'crmctl imports undo {decision.import_run_id}'."
            if decision.import_run_id
            else None,
        )
    now = utcnow()
    session.connection().execute(
        text(
            "UPDATE contact SET merged_into_id = NULL, updated_at = :now "
            "WHERE tenant_id = :t AND id = :l AND merged_into_id = :w"
        ),
        {"now": now, "t": tenant, "l": decision.loser_contact_id, "w": decision.winner_contact_id},
    )
    decision.undone_at = now
    decision.undone_by = actor
    session.add(decision)
    return {"id": decision_id, "restored_contact_id": decision.loser_contact_id, "undone": True}
