"""The erasure run: pending requests through recorded, idempotent, crash-safe steps, in batches.

Every step of a batch is one transaction that does the work for all requests of the batch lacking
that step *and* records an ``erasure_step`` row per request (rows affected). A crash rolls back the
step in progress; the next run picks up requests left ``running`` first and skips the steps they
already have. Steps are set-based: rows are found through the contact-id indexes for the whole
batch at once and changed by id lists, never one query per person. A batch's requests are read
once, when it is marked running; the steps work on those states (identify updates them as it
records them). Verification is one pass per table for the whole batch (``crmctl.erasure.verify``);
a request is ``completed`` only in the transaction that records a clean verification.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import polars as pl
from sqlalchemy import text
from sqlmodel import Session

from crmctl.db.bulk import insert_frame
from crmctl.db.engine import Database, tenant_of
from crmctl.db.models import utcnow
from crmctl.db.sql import chunks, execute, frame, in_list, list_param, tenant_unindexed
from crmctl.erasure.keys import keyed_hash, pseudonym, require_key
from crmctl.erasure.subjects import identifier_values, identity_values, merge_hashes, merge_tree
from crmctl.erasure.suppression import add_suppressions
from crmctl.erasure.verify import find_identifiers

BATCH_SIZE = 10_000
ERASED_PAYLOAD = '{"erased": true}'
STEP_NAMES = (
    "identify",
    "pseudonymise",
    "delete_activity",
    "delete_signals",
    "scrub_records",
    "scrub_tickets",
    "rebuild_projections",
    "suppress",
    "verify",
)
OPEN_STATUSES = ("running", "pending")

# keyed hash -> (kind, normalised value) for the identifiers this process read in the identify
# step: lets verification match text against values instead of hashing every token it finds.
# Held in memory for the run only, never stored; a resumed run verifies by hashes alone.
KnownValues = dict[str, tuple[str, str]]


@dataclass(frozen=True)
class Target:
    """Rows of ``table`` linked to a person through ``links`` (contact-id columns): deleted when
    ``change`` is None, else updated with it; ``remaining`` says a row still holds their data."""

    table: str
    links: tuple[str, ...]
    change: str | None
    remaining: str = "1 = 1"


TARGETS: dict[str, tuple[Target, ...]] = {
    "pseudonymise": (Target("contact_identifier", ("contact_id",), None),),
    "delete_activity": (Target("interaction", ("contact_id",), None),),
    "delete_signals": (
        Target("health_signal", ("contact_id",), None),
        Target("product_usage", ("contact_id",), None),
    ),
    "scrub_records": (
        Target(
            "source_record",
            ("contact_id",),
            f"payload = '{ERASED_PAYLOAD}', email_norm = NULL, phone_e164 = NULL, name_key = NULL, "
            "company_key = NULL, content_hash = NULL",
            "email_norm IS NOT NULL OR phone_e164 IS NOT NULL OR name_key IS NOT NULL "
            "OR company_key IS NOT NULL OR content_hash IS NOT NULL",
        ),
        Target(
            "merge_decision",
            ("winner_contact_id", "loser_contact_id"),
            "candidates = NULL, before = NULL",
            "candidates IS NOT NULL OR before IS NOT NULL",
        ),
        Target(
            "review_item",
            ("left_contact_id", "right_contact_id"),
            "candidates = NULL, status = CASE WHEN status = 'open' THEN 'rejected' ELSE status END, "
            "decided_by = COALESCE(decided_by, 'erasure')",
            "candidates IS NOT NULL OR status = 'open'",
        ),
    ),
    "scrub_tickets": (
        Target(
            "support_ticket",
            ("contact_id",),
            "subject = NULL, description = NULL",
            "subject IS NOT NULL OR description IS NOT NULL",
        ),
    ),
}


@dataclass(frozen=True)
class ErasureOptions:
    erasure_key: str | None
    backup_retention_days: int = 35
    default_region: str | None = None


@dataclass
class RequestState:
    id: int
    status: str
    contact_id: int | None
    hashes: dict[str, list[str]]
    evidence: dict[str, Any]

    @property
    def subjects(self) -> list[int]:
        return list(self.evidence.get("contact_ids", []))


@dataclass
class RequestOutcome:
    request_id: int
    status: str
    contacts: int
    rows_changed: int
    remaining: dict[str, int] = field(default_factory=dict)


@dataclass
class RunResult:
    outcomes: list[RequestOutcome] = field(default_factory=list)
    preview: list[dict[str, Any]] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)


# ---------------------------------------------------------------------------------------------
# Loading and small helpers
# ---------------------------------------------------------------------------------------------


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def load_states(session: Session, ids: list[int]) -> list[RequestState]:
    rows = execute(
        session,
        "SELECT id, status, contact_id, identity_hashes, evidence FROM erasure_request "
        f"WHERE {tenant_unindexed(session)} AND {in_list(session, 'id', 'ids')} ORDER BY id",
        ids=list_param(session, ids),
    )
    return [RequestState(r[0], r[1], r[2], _json(r[3]) or {}, _json(r[4]) or {}) for r in rows.fetchall()]


def _owners(states: Iterable[RequestState]) -> pl.DataFrame:
    """contact_id -> the request that owns its counts (the lowest id when requests overlap)."""
    pairs = [(c, s.id) for s in states for c in s.subjects]
    return (
        pl.DataFrame(pairs, schema={"contact_id": pl.Int64, "request_id": pl.Int64}, orient="row")
        .sort("request_id")
        .unique("contact_id", keep="first")
    )


def _linked(session: Session, target: Target, contacts: list[int], where: str = "1 = 1") -> pl.DataFrame:
    """(id, contact_id) of the rows of ``target`` linked to ``contacts`` (index probes)."""
    schema = {"id": pl.Int64, "contact_id": pl.Int64}
    if not contacts:
        return pl.DataFrame(schema=schema)
    selects = " UNION ALL ".join(
        f'SELECT id, {link} AS contact_id FROM "{target.table}" '
        f"WHERE {tenant_unindexed(session) if link == 'id' else 'tenant_id = :tenant'} "
        f"AND {in_list(session, link, 'contacts')} AND ({where})"
        for link in target.links
    )
    found = frame(session, selects, schema, contacts=list_param(session, contacts))
    return found.unique("id", keep="first")


def _per_request(linked: pl.DataFrame, owners: pl.DataFrame) -> dict[int, int]:
    counts = linked.join(owners, on="contact_id").group_by("request_id").agg(pl.len())
    return dict(counts.iter_rows())


def _add(total: dict[int, int], more: dict[int, int]) -> dict[int, int]:
    for request_id, n in more.items():
        total[request_id] = total.get(request_id, 0) + n
    return total


def _by_ids(session: Session, sql_head: str, table_ids: list[int]) -> None:
    # in id order: the table's pages are visited once each, front to back
    for part in chunks(sorted(table_ids), 200_000):
        execute(
            session,
            f"{sql_head} WHERE {tenant_unindexed(session)} AND {in_list(session, 'id', 'ids')}",
            ids=list_param(session, list(part)),
        )


# ---------------------------------------------------------------------------------------------
# Steps: each takes the session and the requests lacking it, returns rows affected per request
# ---------------------------------------------------------------------------------------------


def _identify(
    session: Session,
    todo: list[RequestState],
    key: bytes,
    options: ErasureOptions,
    known: KnownValues | None = None,
) -> dict[int, int]:
    """Resolve each request to its contacts (merge trees) and keep the keyed hashes of every email
    and phone they hold, before anything is changed (so a resumed run can still verify); ``known``
    receives each hash's value, for this process only."""
    bases = {s.id: set(s.evidence.get("matched_contact_ids", [])) | ({s.contact_id} - {None}) for s in todo}
    closure = sorted(merge_tree(session, set().union(*bases.values())) if bases else set())
    parent = {c: c for c in closure}

    def root(c: int) -> int:
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    if closure:
        edges = frame(
            session,
            f"SELECT id, merged_into_id FROM contact WHERE {tenant_unindexed(session)} "
            f"AND {in_list(session, 'id', 'ids')} AND merged_into_id IS NOT NULL",
            {"id": pl.Int64, "merged_into_id": pl.Int64},
            ids=list_param(session, closure),
        )
        for child, into in edges.iter_rows():
            if into in parent:
                parent[root(child)] = root(into)
    members: dict[int, list[int]] = {}
    for c in closure:
        members.setdefault(root(c), []).append(c)
    values = identifier_values(session, closure, options.default_region)
    by_contact: dict[int, list[tuple[str, str]]] = {}
    for contact_id, kind, value in values.iter_rows():
        by_contact.setdefault(contact_id, []).append((kind, value))
    counts, updates = {}, []
    for state in todo:
        subjects = sorted({m for b in bases[state.id] for m in members.get(root(b), [b])})
        held = [kv for c in subjects for kv in by_contact.get(c, [])]
        values = identity_values([v for k, v in held if k == "email"], [v for k, v in held if k == "phone"])
        found: dict[str, list[str]] = {}
        for kind, kind_values in values.items():
            hashed = {keyed_hash(key, kind, v): v for v in kind_values}
            found[kind] = sorted(hashed)
            if known is not None:
                known.update((h, (kind, v)) for h, v in hashed.items())
        state.hashes = merge_hashes(state.hashes, found)
        state.evidence = {**state.evidence, "contact_ids": subjects}
        counts[state.id] = len(subjects)
        updates.append(
            {"id": state.id, "hashes": json.dumps(state.hashes), "evidence": json.dumps(state.evidence)}
        )
    if updates:
        session.connection().execute(
            text(
                "UPDATE erasure_request SET identity_hashes = :hashes, evidence = :evidence "
                f"WHERE {tenant_unindexed(session)} AND id = :id"
            ),
            [{**u, "tenant": tenant_of(session)} for u in updates],
        )
    return counts


def pseudonymise_contacts(session: Session, key: bytes, contact_ids: list[int]) -> int:
    """Replace every personal field of the contacts by a keyed hash of the contact id, set
    ``erased_at``; the row stays so foreign keys and aggregates hold. Returns contacts changed."""
    if not contact_ids:
        return 0
    now = utcnow()
    session.connection().execute(
        text(
            "UPDATE contact SET first_name = CAST(:p_ AS VARCHAR), last_name = CAST(:p_ AS VARCHAR), "
            "full_name = CAST(:p_ AS VARCHAR), email = CAST(:p_ AS VARCHAR), "
            "phone = CASE WHEN phone IS NULL THEN NULL ELSE CAST(:p_ AS VARCHAR) END, "
            "first_name_norm = NULL, last_name_norm = NULL, email_norm = NULL, phone_e164 = NULL, "
            "phone_ext = NULL, title = NULL, consent_evidence = NULL, field_provenance = NULL, "
            "external_id = CASE WHEN external_id IS NULL THEN NULL ELSE CAST(:p_ AS VARCHAR) END, "
            "erased_at = COALESCE(erased_at, :now), updated_at = :now "
            f"WHERE {tenant_unindexed(session)} AND id = :id"
        ),
        [{"p_": pseudonym(key, c), "now": now, "id": c, "tenant": tenant_of(session)} for c in contact_ids],
    )
    return len(contact_ids)


def delete_identifiers(session: Session, contact_ids: list[int]) -> pl.DataFrame:
    """Delete every identifier (email, phone, helpdesk id, …) of the contacts; returns the rows
    deleted as (id, contact_id)."""
    (target,) = TARGETS["pseudonymise"]
    linked = _linked(session, target, contact_ids)
    if linked.height:
        _by_ids(session, f'DELETE FROM "{target.table}"', linked["id"].to_list())
    return linked


def _pseudonymise(
    session: Session, todo: list[RequestState], key: bytes, options: ErasureOptions
) -> dict[int, int]:
    owners = _owners(todo)
    contacts = owners["contact_id"].to_list()
    pseudonymise_contacts(session, key, contacts)
    counts = _per_request(owners.select(pl.col("contact_id").alias("id"), "contact_id"), owners)
    return _add(counts, _per_request(delete_identifiers(session, contacts), owners))


def _apply_targets(session: Session, step: str, todo: list[RequestState]) -> dict[int, int]:
    owners = _owners(todo)
    contacts = owners["contact_id"].to_list()
    counts: dict[int, int] = {}
    for target in TARGETS[step]:
        linked = _linked(session, target, contacts)
        ids = linked["id"].to_list()
        if ids:
            head = (
                f'DELETE FROM "{target.table}"'
                if target.change is None
                else (f'UPDATE "{target.table}" SET {target.change}')
            )
            _by_ids(session, head, ids)
        _add(counts, _per_request(linked, owners))
    return counts


def _rebuild_projections(
    session: Session, todo: list[RequestState], key: bytes, options: ErasureOptions
) -> dict[int, int]:
    """contact.last_interaction_at is the projection of the interaction log: recompute it for the
    erased contacts (their events are gone). Account-level aggregates keep their numbers."""
    owners = _owners(todo)
    contacts = owners["contact_id"].to_list()
    if contacts:
        execute(
            session,
            "UPDATE contact SET last_interaction_at = (SELECT max(i.occurred_at) FROM interaction i "
            "WHERE i.tenant_id = contact.tenant_id AND i.contact_id = contact.id) "
            f"WHERE {tenant_unindexed(session)} AND {in_list(session, 'id', 'ids')}",
            ids=list_param(session, contacts),
        )
    return _per_request(owners.select(pl.col("contact_id").alias("id"), "contact_id"), owners)


def _suppress(
    session: Session, todo: list[RequestState], key: bytes, options: ErasureOptions
) -> dict[int, int]:
    entries = pl.DataFrame(
        [(kind, h, s.id) for s in todo for kind in ("email", "phone") for h in s.hashes.get(kind, [])],
        schema={"kind": pl.String, "value_hash": pl.String, "request_id": pl.Int64},
        orient="row",
    )
    added = add_suppressions(session, entries)
    return dict(added.group_by("request_id").agg(pl.len()).iter_rows())


def _target_step(step: str) -> Callable[[Session, list[RequestState], bytes, ErasureOptions], dict[int, int]]:
    return lambda session, todo, key, options: _apply_targets(session, step, todo)


STEPS: dict[str, Callable[[Session, list[RequestState], bytes, ErasureOptions], dict[int, int]]] = {
    "identify": _identify,
    "pseudonymise": _pseudonymise,
    "delete_activity": _target_step("delete_activity"),
    "delete_signals": _target_step("delete_signals"),
    "scrub_records": _target_step("scrub_records"),
    "scrub_tickets": _target_step("scrub_tickets"),
    "rebuild_projections": _rebuild_projections,
    "suppress": _suppress,
}


# ---------------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------------


def remaining_data(
    db: Database, session: Session, states: list[RequestState], key: bytes, known: KnownValues | None = None
) -> dict[int, dict[str, int]]:
    """Per request, table -> rows still holding the person's data: rows linked to their contacts
    (indexes) and rows anywhere holding their emails or phones (one pass per table, matched by value
    where ``known`` has the value of a hash, else by keyed hash)."""
    known = known or {}
    owners = _owners(states)
    contacts = owners["contact_id"].to_list()
    found: dict[int, dict[str, int]] = {s.id: {} for s in states}

    def note(table: str, counts: dict[int, int]) -> None:
        for request_id, n in counts.items():
            if n:
                found[request_id][table] = found[request_id].get(table, 0) + n

    unerased = Target(
        "contact", ("id",), None, "erased_at IS NULL OR email_norm IS NOT NULL OR phone_e164 IS NOT NULL"
    )
    for target in (unerased, *[t for targets in TARGETS.values() for t in targets]):
        note(target.table, _per_request(_linked(session, target, contacts, target.remaining), owners))
    lookup = pl.DataFrame(
        [
            (kind, h, known[h][1] if h in known and known[h][0] == kind else None, s.id)
            for s in states
            for kind in ("email", "phone_digits")
            for h in s.hashes.get(kind, [])
        ],
        schema={"kind": pl.String, "hash": pl.String, "value": pl.String, "request_id": pl.Int64},
        orient="row",
    )
    for request_id, table, rows in find_identifiers(db, key, lookup).iter_rows():
        note(table, {request_id: rows})
    return found


def _verify_and_finish(
    db: Database,
    states: list[RequestState],
    key: bytes,
    options: ErasureOptions,
    known: KnownValues | None = None,
) -> list[RequestOutcome]:
    if not states:
        return []
    with db.session(write=True) as session:
        started = utcnow()
        remaining = remaining_data(db, session, states, key, known)
        finished = utcnow()
        step_counts = _step_counts(session, [s.id for s in states])
        today = finished.date()
        rotate_out_by = today + timedelta(days=options.backup_retention_days)
        outcomes, steps, updates = [], [], []
        for state in states:
            left = remaining[state.id]
            passed = not left
            status = ("completed" if state.subjects else "no_match") if passed else "failed"
            counts = step_counts.get(state.id, {})
            evidence = {
                **state.evidence,
                "steps": counts,
                "verification": {
                    "passed": passed,
                    "checked_at": finished.isoformat(),
                    "remaining": left,
                    "method": "contact-id links and keyed-hash search of every text column",
                },
                "backups_rotate_out_by": rotate_out_by.isoformat() if passed else None,
            }
            steps.append(
                {
                    "request_id": state.id,
                    "name": "verify",
                    "started_at": started,
                    "finished_at": finished,
                    "rows_affected": sum(left.values()),
                    "outcome": "ok" if passed else "failed",
                }
            )
            updates.append(
                {
                    "id": state.id,
                    "status": status,
                    "completed_at": finished if passed else None,
                    "rotate": rotate_out_by if passed else None,
                    "evidence": json.dumps(evidence),
                    "tenant": db.tenant,
                }
            )
            rows_changed = sum(v for k, v in counts.items() if k not in ("identify", "suppress", "verify"))
            outcomes.append(RequestOutcome(state.id, status, len(state.subjects), rows_changed, left))
        # the verify step is recorded once it passes (erasure_step is append-only); a failed
        # verification lives in the request's evidence until a retry passes
        _record_steps(session, [step for step in steps if step["outcome"] == "ok"])
        session.connection().execute(
            text(
                "UPDATE erasure_request SET status = :status, completed_at = :completed_at, "
                "backups_rotate_out_by = :rotate, evidence = :evidence "
                f"WHERE {tenant_unindexed(session)} AND id = :id"
            ),
            updates,
        )
        return outcomes


def _step_counts(session: Session, ids: list[int]) -> dict[int, dict[str, int]]:
    rows = execute(
        session,
        "SELECT request_id, name, rows_affected FROM erasure_step "
        f"WHERE tenant_id = :tenant AND {in_list(session, 'request_id', 'ids')} AND outcome = 'ok'",
        ids=list_param(session, ids),
    )
    out: dict[int, dict[str, int]] = {}
    for request_id, name, n in rows:
        out.setdefault(request_id, {})[name] = n or 0
    return {rid: {n: steps[n] for n in STEP_NAMES if n in steps} for rid, steps in out.items()}


def _record_steps(session: Session, steps: list[dict[str, Any]]) -> None:
    if steps:
        rows = pl.DataFrame(
            steps,
            schema={
                "request_id": pl.Int64,
                "name": pl.String,
                "started_at": pl.Datetime("us", "UTC"),
                "finished_at": pl.Datetime("us", "UTC"),
                "rows_affected": pl.Int64,
                "outcome": pl.String,
            },
        )
        tenant = pl.lit(tenant_of(session)).alias("tenant_id")
        insert_frame(session, "erasure_step", rows.with_columns(tenant))


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def _run_step(
    db: Database,
    name: str,
    states: list[RequestState],
    key: bytes,
    options: ErasureOptions,
    known: KnownValues,
) -> None:
    """One step for the ``states`` (running requests, loaded once per batch) lacking it."""
    if not states:
        return
    ids = [s.id for s in states]
    with db.session(write=True) as session:
        done = {
            r[0]
            for r in execute(
                session,
                "SELECT request_id FROM erasure_step WHERE tenant_id = :tenant AND name = :name "
                f"AND outcome = 'ok' AND {in_list(session, 'request_id', 'ids')}",
                name=name,
                ids=list_param(session, ids),
            )
        }
        todo = [s for s in states if s.id not in done]
        if not todo:
            return
        started = utcnow()
        if name == "identify":
            counts = _identify(session, todo, key, options, known)
        else:
            counts = STEPS[name](session, todo, key, options)
        finished = utcnow()
        _record_steps(
            session,
            [
                {
                    "request_id": s.id,
                    "name": name,
                    "started_at": started,
                    "finished_at": finished,
                    "rows_affected": counts.get(s.id, 0),
                    "outcome": "ok",
                }
                for s in todo
            ],
        )


def select_requests(db: Database, *, limit: int | None, retry_failed: bool = False) -> list[int]:
    """Requests to process: those left running by an interrupted run first, then pending ones."""
    statuses = (*OPEN_STATUSES, "failed") if retry_failed else OPEN_STATUSES
    with db.session() as session:
        rows = execute(
            session,
            "SELECT id, status FROM erasure_request WHERE tenant_id = :tenant "
            f"AND status IN ({', '.join(repr(s) for s in statuses)}) ORDER BY id",
        ).fetchall()
    ordered = [r[0] for r in rows if r[1] == "running"] + [r[0] for r in rows if r[1] != "running"]
    return ordered[:limit] if limit is not None else ordered


def run_erasures(
    db: Database,
    options: ErasureOptions,
    *,
    limit: int | None = None,
    retry_failed: bool = False,
    request_ids: list[int] | None = None,
    batch_size: int = BATCH_SIZE,
) -> RunResult:
    """Process open requests (or ``request_ids``) in batches of ``batch_size`` (one verification
    pass each); returns one outcome per request."""
    key = require_key(options.erasure_key)
    selected = (
        request_ids
        if request_ids is not None
        else select_requests(db, limit=limit, retry_failed=retry_failed)
    )
    result = RunResult()
    for batch in chunks(selected, batch_size):
        ids = list(batch)
        with db.session(write=True) as session:
            # failed ones are retried from verification: their earlier steps stand
            execute(
                session,
                f"UPDATE erasure_request SET status = 'running' WHERE {tenant_unindexed(session)} "
                f"AND status IN ('pending', 'failed') AND {in_list(session, 'id', 'ids')}",
                ids=list_param(session, ids),
            )
            # read once per batch: the steps update these states (identify) as they record them
            states = [s for s in load_states(session, ids) if s.status == "running"]
        known: KnownValues = {}
        for name in STEPS:
            _run_step(db, name, states, key, options, known)
        result.outcomes += _verify_and_finish(db, states, key, options, known)
    return result


def preview_erasures(db: Database, options: ErasureOptions, *, limit: int | None = None) -> RunResult:
    """What a run would change, per request and table: counts only, nothing written."""
    key = require_key(options.erasure_key)
    result = RunResult()
    for batch in chunks(select_requests(db, limit=limit), BATCH_SIZE):
        with db.session() as session:
            states = load_states(session, list(batch))
            fresh = [s for s in states if "contact_ids" not in s.evidence]
            if fresh:
                _identify_in_memory(session, fresh, key, options)
            owners = _owners(states)
            contacts = owners["contact_id"].to_list()
            per_table: list[tuple[str, str, dict[int, int]]] = [
                (
                    "contact",
                    "pseudonymise",
                    _per_request(owners.select(pl.col("contact_id").alias("id"), "contact_id"), owners),
                )
            ]
            for targets in TARGETS.values():
                for t in targets:
                    action = "delete" if t.change is None else "scrub"
                    per_table.append((t.table, action, _per_request(_linked(session, t, contacts), owners)))
            for state in states:
                if not state.subjects:
                    result.preview.append(
                        {
                            "request_id": state.id,
                            "table": "(none)",
                            "action": "no matching contact",
                            "rows": 0,
                        }
                    )
                    continue
                for table, action, counts in per_table:
                    result.preview.append(
                        {
                            "request_id": state.id,
                            "table": table,
                            "action": action,
                            "rows": counts.get(state.id, 0),
                        }
                    )
    return result


def _identify_in_memory(
    session: Session, states: list[RequestState], key: bytes, options: ErasureOptions
) -> None:
    """The identify step without writing (for --dry-run): fills ``evidence['contact_ids']``."""
    savepoint = session.begin_nested()
    try:
        _identify(session, states, key, options)
    finally:
        savepoint.rollback()
