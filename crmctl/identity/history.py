"""What the lead imports did: source records, merge decisions, review items, import runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl
from sqlmodel import Session, select

from crmctl.db import bulk, sql
from crmctl.db.engine import tenant_of
from crmctl.db.models import ImportRun, MergeDecision, ReviewItem, SourceRecord
from crmctl.errors import NotFoundError
from crmctl.identity.normalize import split_full_name


def source_links(session: Session, source: str | None = None) -> pl.DataFrame:
    """source, source_record_id, contact_id (the surviving contact) for every imported row."""
    tenant = tenant_of(session)
    query = (
        "SELECT source, source_record_id, contact_id FROM source_record WHERE tenant_id = :t"
        + (" AND source = :s" if source else "")
        + " ORDER BY source, id"
    )
    links = bulk.read_frame(session, query, {"t": tenant, "s": source})
    if links.height == 0:
        return pl.DataFrame(
            schema={"source": pl.String, "source_record_id": pl.String, "contact_id": pl.Int64}
        )
    merged = bulk.read_frame(
        session,
        "SELECT id, merged_into_id FROM contact WHERE tenant_id = :t AND merged_into_id IS NOT NULL",
        {"t": tenant},
    )
    return links.with_columns(pl.col("contact_id").replace(surviving_contacts(merged)))


def surviving_contacts(merged: pl.DataFrame) -> dict[int, int]:
    """contact id -> the contact it was (transitively) merged into, from (id, merged_into_id)."""
    parent = dict(merged.select("id", "merged_into_id").iter_rows()) if merged.height else {}
    out: dict[int, int] = {}
    for start in parent:
        node, hops = start, 0
        while node in parent and hops < 1000:
            node, hops = parent[node], hops + 1
        out[start] = node
    return out


def merge_decisions(session: Session, *, run_id: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
    query = select(MergeDecision).where(MergeDecision.tenant_id == tenant_of(session))
    if run_id is not None:
        query = query.where(MergeDecision.import_run_id == run_id)
    rows = session.exec(query.order_by(MergeDecision.id.desc()).limit(limit)).all()  # type: ignore[union-attr]
    return [
        {
            "id": d.id,
            "run": d.import_run_id,
            "kind": d.kind,
            "rule": d.rule,
            "score": d.score,
            "winner_contact_id": d.winner_contact_id,
            "records": len(d.source_record_ids or []),
            "undone": d.undone_at is not None,
        }
        for d in rows
    ]


def merge_decision(session: Session, decision_id: int) -> dict[str, Any]:
    d = session.exec(
        select(MergeDecision).where(
            MergeDecision.tenant_id == tenant_of(session), MergeDecision.id == decision_id
        )
    ).first()
    if d is None:
        raise NotFoundError(f"There is no merge decision {decision_id} in this tenant.")
    shown = d.model_dump(exclude={"tenant_id"})
    stored = list(d.candidates or [])
    if d.source_record_ids and not any(c.get("type") == "record" for c in stored):
        # a lead import keeps its records' values in the records and leaves null values out of the
        # contacts' (see leads._merge_decisions)
        contacts = [{**c, **{f: c.get(f) for f in RECORD_FIELDS}} for c in stored]
        shown["candidates"] = _record_candidates(session, list(d.source_record_ids)) + contacts
    return shown


RECORD_FIELDS = ("email", "phone", "first_name", "last_name", "company")


def _record_candidates(session: Session, ids: list[int]) -> list[dict[str, Any]]:
    """The values the source records ``ids`` held, as the lead import read them: each row's payload
    through its run's column mapping, a full name split as matching split it. A record an undo
    removed shows its id only; an erased one, no values."""
    tenant = tenant_of(session)
    records = session.exec(
        select(SourceRecord).where(SourceRecord.tenant_id == tenant, SourceRecord.id.in_(ids))  # type: ignore[union-attr]
    ).all()
    found = {record.id: record for record in records}
    run_ids = {record.import_run_id for record in records if record.import_run_id is not None}
    runs = session.exec(
        select(ImportRun).where(ImportRun.tenant_id == tenant, ImportRun.id.in_(run_ids))  # type: ignore[union-attr]
    ).all()
    mappings = {run.id: (run.options or {}).get("mapping") or {} for run in runs}
    out = []
    for record_id in ids:
        record = found.get(record_id)
        candidate: dict[str, Any] = {"type": "record", "source_record_id": record_id}
        if record is None:
            out.append(candidate)
            continue
        values = record.payload or {}
        mapping = mappings.get(record.import_run_id, {})
        field = {f: values.get(h) if isinstance(values, dict) else None for f, h in mapping.items()}
        if field.get("full_name") and not (field.get("first_name") and field.get("last_name")):
            first, last = split_full_name(field["full_name"])
            field["first_name"] = field.get("first_name") or first
            field["last_name"] = field.get("last_name") or last
        candidate["source_id"] = record.source_record_id
        candidate.update({f: field.get(f) for f in RECORD_FIELDS})
        out.append(candidate)
    return out


def review_items(session: Session, *, status: str | None = "open", limit: int = 100) -> list[dict[str, Any]]:
    """Review items with what a person needs to judge them: each contact's name, email, phone and
    company as they stand now (the reviewer's own data, shown on request, never logged)."""
    query = select(ReviewItem).where(ReviewItem.tenant_id == tenant_of(session))
    if status:
        query = query.where(ReviewItem.status == status)
    rows = session.exec(query.order_by(ReviewItem.id).limit(limit)).all()  # type: ignore[arg-type]
    ids = sorted({r.left_contact_id for r in rows} | {r.right_contact_id for r in rows})
    contacts = sql.frame(
        session,
        "SELECT id, first_name, last_name, email, phone, company FROM contact "
        f"WHERE tenant_id = :tenant AND {sql.in_list(session, 'id', 'ids')}",
        ids=sql.list_param(session, ids),
    )
    shown: dict[int, str] = {}
    for cid, first, last, email, phone, company in contacts.iter_rows():
        name = " ".join(p for p in (first, last) if p)
        shown[cid] = " · ".join(p for p in (name, email, phone, company) if p)
    return [
        {
            "id": r.id,
            "left_contact_id": r.left_contact_id,
            "left": shown.get(r.left_contact_id, ""),
            "right_contact_id": r.right_contact_id,
            "right": shown.get(r.right_contact_id, ""),
            "rule": r.rule,
            "score": r.score,
            "levels": r.levels,
            "status": r.status,
        }
        for r in rows
    ]


def import_runs(session: Session, limit: int = 50) -> list[dict[str, Any]]:
    rows = session.exec(
        select(ImportRun)
        .where(ImportRun.tenant_id == tenant_of(session), ImportRun.kind == "leads")
        .order_by(ImportRun.id.desc())  # type: ignore[union-attr]
        .limit(limit)
    ).all()
    return [_run_row(r) for r in rows]


def _run_row(run: ImportRun) -> dict[str, Any]:
    counts = run.counts or {}
    return {
        "id": run.id,
        "source": run.source,
        "file": run.file_name,
        "status": run.status,
        "rows_read": counts.get("rows_read"),
        "new_contacts": counts.get("new_contacts"),
        "merged": (counts.get("merged_into_existing") or 0) + (counts.get("merged_within_file") or 0),
        "review": counts.get("sent_to_review"),
        "rejected": counts.get("rejected"),
        "started_at": run.started_at,
    }


def import_run(session: Session, run_id: int) -> tuple[dict[str, Any], pl.DataFrame]:
    """A run's summary and its results: row, source_record_id, contact_id, action (created,
    merged, review or rejected) and, for a rejected row, why (column and reason, no value)."""
    run = session.exec(
        select(ImportRun).where(ImportRun.tenant_id == tenant_of(session), ImportRun.id == run_id)
    ).first()
    if run is None:
        raise NotFoundError(f"There is no import run {run_id} in this tenant.")
    params = {"t": tenant_of(session), "r": run_id}
    taken = bulk.read_frame(
        session,
        "SELECT row_number AS row, source_record_id, contact_id, action FROM source_record "
        "WHERE tenant_id = :t AND import_run_id = :r",
        params,
    )
    # a rejected row has one line with its reasons (a row can fail on several columns)
    rejected = bulk.read_frame(
        session,
        "SELECT row_number AS row, column_name, reason FROM import_reject "
        "WHERE tenant_id = :t AND import_run_id = :r",
        params,
    )
    schema = {"row": pl.Int64, "source_record_id": pl.String, "contact_id": pl.Int64, "action": pl.String}
    taken = taken.cast(schema) if taken.height else pl.DataFrame(schema=schema)  # type: ignore[arg-type]
    if rejected.height:
        rejected = (
            rejected.with_columns(
                pl.when(pl.col("column_name") == "")
                .then(pl.col("reason"))
                .otherwise(pl.format("{}: {}", "column_name", "reason"))
                .alias("reason")
            )
            .group_by(pl.col("row").cast(pl.Int64))
            .agg(pl.col("reason").unique(maintain_order=True).str.join("; "))
            .with_columns(
                pl.lit(None, pl.String).alias("source_record_id"),
                pl.lit(None, pl.Int64).alias("contact_id"),
                pl.lit("rejected").alias("action"),
            )
        )
    else:
        rejected = pl.DataFrame(schema={**schema, "reason": pl.String})
    results = pl.concat(
        [taken.with_columns(pl.lit(None, pl.String).alias("reason")), rejected.select(*schema, "reason")]
    ).sort("row")
    summary = {
        **_run_row(run),
        "sha256": run.file_sha256,
        "counts": run.counts,
        "finished_at": run.finished_at,
    }
    return summary, results


def kept_apart(
    session: Session, node_of: Mapping[int, int], root_of: Mapping[int, int] | None = None
) -> list[tuple[int, int]]:
    """The pairs of contacts a person kept apart (rejected review pairs, which ``merges undo`` also
    leaves) as pairs of nodes: ``node_of`` maps a contact id to its node, ``root_of`` a merged
    contact to its survivor. Rejected pairs are few: all of the tenant's are read."""
    rejected = bulk.read_frame(
        session,
        "SELECT left_contact_id, right_contact_id FROM review_item "
        "WHERE tenant_id = :t AND status = 'rejected'",
        {"t": tenant_of(session)},
    )
    roots = root_of or {}
    pairs = set()
    for left, right in rejected.iter_rows():
        a, b = node_of.get(roots.get(left, left)), node_of.get(roots.get(right, right))
        if a is not None and b is not None and a != b:
            pairs.add((min(a, b), max(a, b)))
    return sorted(pairs)
