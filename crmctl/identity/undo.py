"""Taking a lead import or a contact merge back, and settling review items.

What "depends on" means here (see :func:`undo_merge`): a contact merge that came *later* than
another (higher decision id), is still active, and joined a contact of the *same cluster* (the
contacts that now share a surviving contact) may have matched through the contacts the earlier
merge brought in (issue 3's chain: contact 3 joined contact 1 only through contact 2's phone). Which
evidence a merge used is not recorded per contact, so every such merge counts as dependent, and
undo refuses, naming them, until they are undone (newest first). Records that later imports joined
to the cluster are not merges of contacts: they stay with the surviving contact.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import polars as pl
from sqlalchemy import text, update
from sqlmodel import Session, SQLModel, select

from crmctl.db import bulk
from crmctl.db.engine import tenant_of
from crmctl.db.models import ImportRun, MergeDecision, ReviewItem, utcnow
from crmctl.errors import NotFoundError, UsageError
from crmctl.identity.records import normalise_records
from crmctl.identity.survivorship import fill_survivors, unfill_survivor
from crmctl.importers.leads import FILL_FIELDS, NAME_FIELDS

CHUNK = 1000


@dataclass
class RunUndone:
    run_id: int
    source_records_removed: int
    contacts_removed: int
    contacts_restored: int
    contact_merges_undone: int
    review_items_removed: int = 0


def _ids(session: Session, sql: str, **params: Any) -> list[int]:
    return [r[0] for r in session.connection().execute(text(sql), params).all()]


def _chunks(ids: Iterable[int]) -> Iterator[tuple[str, dict[str, int]]]:
    """``ids`` as (":c0, :c1, …", params) pieces of at most CHUNK, for ``IN (…)``."""
    values = sorted(set(ids))
    for start in range(0, len(values), CHUNK):
        chunk = values[start : start + CHUNK]
        yield ", ".join(f":c{i}" for i in range(len(chunk))), {f"c{i}": c for i, c in enumerate(chunk)}


def _as_dict(value: Any) -> dict[str, Any]:
    if not value:
        return {}
    return value if isinstance(value, dict) else json.loads(value)


def _listed(ids: Iterable[int]) -> str:
    """Newest first: the order in which they are to be undone."""
    return ", ".join(str(i) for i in sorted(set(ids), reverse=True))


def _roots(session: Session, tenant: str, ids: Iterable[int]) -> dict[int, int]:
    """contact id -> the contact it is (transitively) merged into now, itself when it stands alone.
    Reads only the chains above ``ids`` (a few hops), never the whole table."""
    parent: dict[int, int | None] = {}
    todo = set(ids)
    while todo:
        for holders, values in _chunks(todo):
            rows = session.connection().execute(
                text(f"SELECT id, merged_into_id FROM contact WHERE tenant_id = :t AND id IN ({holders})"),
                {"t": tenant, **values},
            )
            parent.update({row[0]: row[1] for row in rows})
        parent.update({i: None for i in todo if i not in parent})  # gone: ends its chain
        todo = {p for p in parent.values() if p is not None and p not in parent}
    out: dict[int, int] = {}
    for start in parent:
        node, hops = start, 0
        while parent.get(node) is not None and hops < 1000:
            node, hops = parent[node], hops + 1  # type: ignore[assignment]
        out[start] = node
    return out


def _later_dependent_merges(
    session: Session, tenant: str, merges: list[MergeDecision], *, exclude_run: int | None = None
) -> list[int]:
    """Ids of the active contact merges that depend on ``merges`` (module docstring): decided after
    one of them and now in the same cluster as its winner. ``exclude_run``'s own merges are not
    counted (they are undone together)."""
    if not merges:
        return []
    own = {m.id for m in merges}
    later = [
        row
        for row in session.connection().execute(
            text(
                "SELECT id, winner_contact_id, loser_contact_id, import_run_id FROM merge_decision "
                "WHERE tenant_id = :t AND kind = 'contact' AND undone_at IS NULL AND id > :first"
            ),
            {"t": tenant, "first": min(m.id for m in merges if m.id is not None)},
        )
        if row[0] not in own and (exclude_run is None or row[3] != exclude_run)
    ]
    if not later:
        return []
    roots = _roots(
        session,
        tenant,
        {m.winner_contact_id for m in merges} | {r[1] for r in later} | {r[2] for r in later if r[2]},
    )
    by_root: dict[int, list[int]] = defaultdict(list)
    for decision_id, winner, loser, _ in later:
        for contact in (winner, loser):
            if contact is not None:
                by_root[roots[contact]].append(decision_id)
    return sorted(
        {later_id for m in merges for later_id in by_root[roots[m.winner_contact_id]] if later_id > m.id}  # type: ignore[operator]
    )


def undo_run(session: Session, run_id: int, *, actor: str) -> RunUndone:
    """Remove everything import run ``run_id`` added and restore what it changed.

    Refused (nothing changed) when a later, not undone, run added rows to contacts this run created,
    when a contact merge that is not the run's own (``resolve``, ``review accept``) still joins a
    contact it created, when a later contact merge depends on one of its merges (module docstring),
    or when other rows (deals, tickets, …) name a contact it created: undo those first."""
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
    decisions = session.exec(
        select(MergeDecision)
        .where(MergeDecision.tenant_id == tenant, MergeDecision.import_run_id == run_id)
        .order_by(MergeDecision.id.desc())  # type: ignore[union-attr]
    ).all()
    merges = [d for d in decisions if d.kind == "contact" and d.loser_contact_id is not None]
    _refuse_while_referenced(session, tenant, run_id, created, merges)
    created_set = set(created)
    now = utcnow()
    conn = session.connection()
    merges_undone = 0
    for decision in merges:
        # only a loser still merged into this winner: a merge already undone stays as it is
        merges_undone += conn.execute(
            text(
                "UPDATE contact SET merged_into_id = NULL, updated_at = :now "
                "WHERE tenant_id = :t AND id = :l AND merged_into_id = :w"
            ),
            {"now": now, "t": tenant, "l": decision.loser_contact_id, "w": decision.winner_contact_id},
        ).rowcount
    fills = [d for d in decisions if _as_dict(d.before) and d.winner_contact_id not in created_set]
    restored = _restore_fills(session, run, fills, now)
    own_items = conn.execute(
        text("DELETE FROM review_item WHERE tenant_id = :t AND import_run_id = :r"), params
    ).rowcount
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
    items_removed = own_items
    # every reference to a created contact goes before the contacts (foreign keys): the questions
    # and answers about them (resolve's review items, pairs kept apart), the (undone) merges naming
    # them, and the links between two of them (a chunk may delete the winner before its loser)
    naming = [
        decision_id
        for decision_id, winner, loser in conn.execute(
            text(
                "SELECT id, winner_contact_id, loser_contact_id FROM merge_decision "
                "WHERE tenant_id = :t AND kind = 'contact'"
            ),
            {"t": tenant},
        )
        if winner in created_set or loser in created_set
    ]
    for holders, values in _chunks(naming):
        conn.execute(
            text(
                "UPDATE review_item SET merge_decision_id = NULL "
                f"WHERE tenant_id = :t AND merge_decision_id IN ({holders})"
            ),
            {"t": tenant, **values},
        )
        conn.execute(
            text(f"DELETE FROM merge_decision WHERE tenant_id = :t AND id IN ({holders})"),
            {"t": tenant, **values},
        )
    for holders, values in _chunks(created):
        bound = {"t": tenant, **values}
        conn.execute(
            text(
                "UPDATE review_item SET merge_decision_id = NULL WHERE tenant_id = :t "
                "AND merge_decision_id IN (SELECT id FROM merge_decision "
                f"WHERE tenant_id = :t AND winner_contact_id IN ({holders}))"
            ),
            bound,
        )
        items_removed += conn.execute(
            text(
                "DELETE FROM review_item WHERE tenant_id = :t AND "
                f"(left_contact_id IN ({holders}) OR right_contact_id IN ({holders}))"
            ),
            bound,
        ).rowcount
        conn.execute(
            text(f"DELETE FROM merge_decision WHERE tenant_id = :t AND winner_contact_id IN ({holders})"),
            bound,
        )
        conn.execute(
            text(f"DELETE FROM contact_identifier WHERE tenant_id = :t AND contact_id IN ({holders})"), bound
        )
        conn.execute(
            text(
                "UPDATE contact SET merged_into_id = NULL WHERE tenant_id = :t "
                f"AND id IN ({holders}) AND merged_into_id IS NOT NULL"
            ),
            bound,
        )
    for holders, values in _chunks(created):
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
        review_items_removed=items_removed,
    )


def _refuse_while_referenced(
    session: Session, tenant: str, run_id: int, created: list[int], merges: list[MergeDecision]
) -> None:
    """Raise, naming what to undo first, when taking the run back would leave a merge standing on a
    contact it deletes, break a later merge that depends on one of its merges, or leave rows
    pointing at a deleted contact (the database would refuse with an IntegrityError)."""
    conn = session.connection()
    created_set = set(created)
    # one pass over the contact merges (the loser column has no index)
    blocking = {
        decision_id
        for decision_id, winner, loser, run in conn.execute(
            text(
                "SELECT id, winner_contact_id, loser_contact_id, import_run_id FROM merge_decision "
                "WHERE tenant_id = :t AND kind = 'contact' AND undone_at IS NULL"
            ),
            {"t": tenant},
        )
        if run != run_id and (winner in created_set or loser in created_set)
    }
    strays: set[int] = set()
    for holders, values in _chunks(created):
        # a contact merged into one of them without a merge decision (written by another tool)
        strays.update(
            r[0]
            for r in conn.execute(
                text(
                    f"SELECT id FROM contact WHERE tenant_id = :t AND merged_into_id IN ({holders}) "
                    f"AND id NOT IN ({holders})"
                ),
                {"t": tenant, **values},
            )
        )
    blocking.update(_later_dependent_merges(session, tenant, merges, exclude_run=run_id))
    if blocking:
        raise UsageError(
            f"Import run {run_id} cannot be undone while merge decision(s) {_listed(blocking)} stand on "
            "contacts it created or merged.",
            hint="Undo them first, newest first: crmctl merges undo ID.",
        )
    if strays:
        raise UsageError(
            f"Import run {run_id} cannot be undone: contact(s) {_listed(strays)} are merged into "
            "contacts it created."
        )
    counts = _other_references(session, tenant, created)
    if counts:
        listed = ", ".join(f"{n} {table} row(s)" for table, n in counts.items())
        raise UsageError(f"Import run {run_id} cannot be undone: {listed} name contacts it created.")


def _other_references(session: Session, tenant: str, created: list[int]) -> dict[str, int]:
    """Rows of other tables (deals, interactions, tickets, …) whose foreign key names one of
    ``created``; contact and review_item are handled by the undo itself."""
    counts: dict[str, int] = {}
    for table in SQLModel.metadata.sorted_tables:
        if table.name in ("contact", "review_item"):
            continue
        for fk in table.foreign_keys:
            if fk.column.table.name != "contact":
                continue
            column = fk.parent.name
            for holders, values in _chunks(created):
                n = (
                    session.connection()
                    .execute(
                        text(
                            f"SELECT count(*) FROM {table.name} "
                            f"WHERE tenant_id = :t AND {column} IN ({holders})"
                        ),
                        {"t": tenant, **values},
                    )
                    .scalar_one()
                )
                if n:
                    counts[table.name] = counts.get(table.name, 0) + n
    return counts


def _restore_fills(session: Session, run: ImportRun, fills: list[MergeDecision], now: Any) -> int:
    """Put back the fields ``fills`` (the run's decisions with a ``before``) filled, where the
    contact still holds the value the run put there. Returns the number of contacts changed.

    A decision's ``before`` is the contact before that batch; the contact as the run left it is
    the next later decision's ``before`` on it, else the contact now. A field the run filled is
    null before and set after (a name: different after; a name is one value, put back whole), and
    its value after must be one the run's own records carry (else someone else set it). A field
    changed since is left alone. Later decisions' snapshots holding a value put back are rebased on
    the value restored, so undoing them later does not bring the undone run's values back."""
    tenant = tenant_of(session)
    by_contact: dict[int, list[MergeDecision]] = defaultdict(list)
    for decision in fills:
        by_contact[decision.winner_contact_id].append(decision)
    conn = session.connection()
    first = min(d.id or 0 for d in fills) if fills else 0
    restored = 0
    for holders, values in _chunks(by_contact):
        chunk = list(values.values())
        current = {
            row["id"]: row
            for row in bulk.read_frame(
                session,
                f"SELECT id, erased_at, {', '.join(FILL_FIELDS)} FROM contact "
                f"WHERE tenant_id = :t AND id IN ({holders})",
                {"t": tenant, **values},
            ).iter_rows(named=True)
        }
        later: dict[int, list[MergeDecision]] = defaultdict(list)
        for decision in session.exec(
            select(MergeDecision)
            .where(
                MergeDecision.tenant_id == tenant,
                MergeDecision.id > first,  # type: ignore[operator]
                MergeDecision.winner_contact_id.in_(chunk),  # type: ignore[attr-defined]
            )
            .order_by(MergeDecision.id)  # type: ignore[arg-type]
        ):
            later[decision.winner_contact_id].append(decision)
        brought = _record_values(
            session, run, {c: {r for d in by_contact[c] for r in d.source_record_ids or []} for c in chunk}
        )
        for contact_id in chunk:
            held = current.get(contact_id)
            if held is None or held["erased_at"] is not None:
                continue  # gone, or erased: nothing of the person comes back
            own = sorted(by_contact[contact_id], key=lambda d: d.id or 0)
            last = own[-1].id or 0
            after_runs = [d for d in later[contact_id] if (d.id or 0) > last and _as_dict(d.before)]
            after = _as_dict(after_runs[0].before) if after_runs else held
            changes = _fields_to_restore(_as_dict(own[0].before), after, held, brought.get(contact_id))
            if not changes:
                continue
            sets = ", ".join(f"{f} = :{f}" for f in changes)
            conn.execute(
                text(f"UPDATE contact SET {sets}, updated_at = :now WHERE tenant_id = :t AND id = :id"),
                {**changes, "now": now, "t": tenant, "id": contact_id},
            )
            restored += 1
            for decision in after_runs:
                snapshot = _as_dict(decision.before)
                rebased = {
                    **snapshot,
                    **{f: v for f, v in changes.items() if snapshot.get(f) == after.get(f)},
                }
                rebased = {f: v for f, v in rebased.items() if v is not None}  # as the import writes it
                if rebased != snapshot:
                    session.execute(
                        update(MergeDecision).where(MergeDecision.id == decision.id).values(before=rebased)  # type: ignore[arg-type]
                    )
    return restored


def _record_values(
    session: Session, run: ImportRun, records: dict[int, set[int]]
) -> dict[int, dict[str, set[Any]]]:
    """contact id -> field -> the values the run's records ``records`` (contact id -> record ids)
    carry for it, normalised as the import normalised them (from each record's stored row through
    the run's column mapping). A contact whose records are gone or scrubbed gets no entry."""
    options = run.options or {}
    mapping: dict[str, str] = options.get("mapping") or {}
    owner = {r: c for c, ids in records.items() for r in ids}
    rows: list[dict[str, Any]] = []
    for holders, values in _chunks(owner):
        for record_id, payload in session.connection().execute(
            text(f"SELECT id, payload FROM source_record WHERE tenant_id = :t AND id IN ({holders})"),
            {"t": tenant_of(session), **values},
        ):
            row = _as_dict(payload)
            if row:
                fields = {f: row.get(h) for f, h in mapping.items()}
                rows.append(
                    {
                        "_contact": owner[record_id],
                        **{f: None if v is None else str(v) for f, v in fields.items()},
                    }
                )
    if not rows or not mapping:
        return {}
    frame = pl.DataFrame(rows, schema={"_contact": pl.Int64, **dict.fromkeys(mapping, pl.String)})
    normalised = normalise_records(
        frame, source=run.source or "", default_region=options.get("default_region")
    )
    normalised = normalised.with_columns(
        pl.concat_str(["first_raw", "last_raw"], separator=" ", ignore_nulls=True)
        .replace("", None)
        .alias("full_name"),
        pl.col("first_raw").alias("first_name"),
        pl.col("last_raw").alias("last_name"),
        pl.col("country_code").alias("country"),
        pl.col("first_c").alias("first_name_norm"),  # stored nickname-canonical, as the import does
    )
    out: dict[int, dict[str, set[Any]]] = defaultdict(lambda: defaultdict(set))
    for row in normalised.select("_contact", *FILL_FIELDS).iter_rows(named=True):
        held = out[row["_contact"]]
        for f in FILL_FIELDS:
            if row[f] is not None:
                held[f].add(row[f])
        held["_names"].add((row["first_name"], row["last_name"]))
    return out


def _fields_to_restore(
    before: dict[str, Any], after: dict[str, Any], held: dict[str, Any], brought: dict[str, set[Any]] | None
) -> dict[str, Any]:
    """field -> value to put back: the fields the run filled (``before`` -> ``after``, with a value
    its records ``brought``; unchecked when they are gone) that the contact (``held``) still holds
    as the run left them."""

    def from_run(f: str, value: Any) -> bool:
        return brought is None or value in brought.get(f, ())

    changes: dict[str, Any] = {}
    for f in FILL_FIELDS:
        if f in NAME_FIELDS:
            continue
        a = after.get(f)
        if before.get(f) is None and a is not None and held.get(f) == a and from_run(f, a):
            changes[f] = None
    names_after = (after.get("first_name"), after.get("last_name"))
    if (
        any(before.get(f) != after.get(f) for f in NAME_FIELDS)
        and all(held.get(f) == after.get(f) for f in NAME_FIELDS)
        and from_run("_names", names_after)
    ):
        changes.update({f: before.get(f) for f in NAME_FIELDS})
    return changes


def decide_review(session: Session, item_id: int, *, accept: bool, actor: str) -> dict[str, Any]:
    """Accept or reject a review item.

    Accepting merges the two contacts' surviving contacts (the younger into the older), with a merge
    decision; when both already share one (another decision joined them), the item is accepted
    with no new merge. An already merged contact is never moved to another."""
    tenant = tenant_of(session)
    item = session.exec(
        select(ReviewItem).where(ReviewItem.tenant_id == tenant, ReviewItem.id == item_id)
    ).first()
    if item is None:
        raise NotFoundError(f"There is no review item {item_id} in this tenant.")
    if item.status != "open":
        raise UsageError(f"Review item {item_id} is already {item.status}.")
    roots = _roots(session, tenant, (item.left_contact_id, item.right_contact_id))
    if not accept and roots[item.left_contact_id] == roots[item.right_contact_id]:
        raise UsageError(
            f"Review item {item_id} cannot be rejected: its two contacts are already one contact "
            f"({roots[item.left_contact_id]}), through another merge.",
            hint="Take that merge back first (crmctl merges list; crmctl merges undo ID).",
        )
    now = utcnow()
    item.status = "accepted" if accept else "rejected"
    item.decided_at = now
    item.decided_by = actor
    merged = False
    contact_id: int | None = None
    if accept:
        winner, loser = sorted((roots[item.left_contact_id], roots[item.right_contact_id]))
        contact_id = winner
        if winner != loser:
            rows = bulk.read_frame(
                session,
                "SELECT id, email, phone, first_name, last_name, company FROM contact "
                "WHERE tenant_id = :t AND id IN (:a, :b)",
                {"t": tenant, "a": winner, "b": loser},
            )
            decision = MergeDecision(
                tenant_id=tenant,
                import_run_id=None,  # a person's, not the run's: imports undo refuses while it stands
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
                    "UPDATE contact SET merged_into_id = :w, updated_at = :now "
                    "WHERE tenant_id = :t AND id = :l AND merged_into_id IS NULL"
                ),
                {"w": winner, "l": loser, "now": now, "t": tenant},
            )
            assert decision.id is not None
            fill_survivors(session, [(decision.id, winner, loser)], now)
            merged = True
    session.add(item)
    out: dict[str, Any] = {"id": item_id, "status": item.status, "merge_decision_id": item.merge_decision_id}
    if accept:
        out.update({"merged": merged, "contact_id": contact_id})
        if not merged:
            out["note"] = "The two contacts were already one contact; nothing was merged."
    return out


def undo_merge(session: Session, decision_id: int, *, actor: str) -> dict[str, Any]:
    """Take back a contact-to-contact merge: the younger contact stands on its own again.

    Refused while a later merge depends on this one (module docstring: a later, still active
    contact merge into the same cluster), and when the loser is no longer merged into the winner.
    The pair is then kept apart like a rejected review pair, so ``crmctl resolve`` does not merge
    it again."""
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
    winner, loser = decision.winner_contact_id, decision.loser_contact_id
    dependents = _later_dependent_merges(session, tenant, [decision])
    if dependents:
        raise UsageError(
            f"Merge decision {decision_id} cannot be undone: later merge decision(s) "
            f"{_listed(dependents)} joined the same contact and may rely on it.",
            hint="Undo them first, newest first: crmctl merges undo ID.",
        )
    now = utcnow()
    changed = (
        session.connection()
        .execute(
            text(
                "UPDATE contact SET merged_into_id = NULL, updated_at = :now "
                "WHERE tenant_id = :t AND id = :l AND merged_into_id = :w"
            ),
            {"now": now, "t": tenant, "l": loser, "w": winner},
        )
        .rowcount
    )
    if changed != 1:
        now_into = _roots(session, tenant, [loser]).get(loser)
        where = "stands on its own" if now_into in (None, loser) else f"is merged into contact {now_into}"
        raise UsageError(
            f"Merge decision {decision_id} cannot be undone: contact {loser} is no longer merged into "
            f"contact {winner} (it {where})."
        )
    # the fields the merge filled on the survivor (resolve's and review accept's merges keep them)
    restored = (
        unfill_survivor(session, _as_dict(decision.before), winner, loser, now) if decision.before else []
    )
    decision.undone_at = now
    decision.undone_by = actor
    session.add(decision)
    # the review item whose accept made this merge now says what the person decided last
    session.connection().execute(
        text(
            "UPDATE review_item SET status = 'rejected', decided_at = :now, decided_by = :actor "
            "WHERE tenant_id = :t AND merge_decision_id = :d"
        ),
        {"now": now, "actor": actor, "t": tenant, "d": decision_id},
    )
    item_id = _remember_apart(session, tenant, decision, actor, now)
    return {
        "id": decision_id,
        "restored_contact_id": loser,
        "undone": True,
        "fields_restored": restored,
        "review_item_id": item_id,
    }


def _remember_apart(
    session: Session, tenant: str, decision: MergeDecision, actor: str, now: Any
) -> int | None:
    """Remember an undone merge as a rejected review pair (the existing item for the pair, else a
    new one): resolution does not merge or ask about a rejected pair again."""
    left, right = sorted((decision.winner_contact_id, decision.loser_contact_id or 0))
    item = session.exec(
        select(ReviewItem).where(
            ReviewItem.tenant_id == tenant,
            ReviewItem.left_contact_id.in_((left, right)),  # type: ignore[attr-defined]
            ReviewItem.right_contact_id.in_((left, right)),  # type: ignore[attr-defined]
            ReviewItem.left_contact_id != ReviewItem.right_contact_id,
        )
    ).first()
    if item is None:
        # no run: the pair outlives an undo of the run that merged it
        item = ReviewItem(
            tenant_id=tenant,
            left_contact_id=left,
            right_contact_id=right,
            rule=decision.rule,
            score=decision.score,
            levels=decision.levels,
            created_at=now,
        )
    item.status = "rejected"
    item.decided_at = now
    item.decided_by = actor
    session.add(item)
    session.flush()
    return item.id
