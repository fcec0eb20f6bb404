"""Replaying erasures after a restore, so a backup never brings an erased person back.

The request log (``erasure report --format json``, kept outside the database backups) holds, for
every completed request, the contact ids it covered and the keyed hashes of the person's
identifiers: enough to erase them again from a database restored from a backup taken before the
erasure. Each replay is a new request (requestor ``replay``) that goes through every step and
verification again; the original request is named in its evidence (``replay_of``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from crmctl.db.bulk import insert_frame
from crmctl.db.engine import Database
from crmctl.db.models import utcnow
from crmctl.db.sql import execute
from crmctl.erasure.keys import require_key
from crmctl.erasure.run import ErasureOptions, RunResult, run_erasures
from crmctl.errors import InputError


@dataclass(frozen=True)
class ReplayItem:
    original_request_id: int
    contact_ids: list[int]
    identity_hashes: dict[str, list[str]]


def read_log(path: Path) -> list[ReplayItem]:
    """Completed requests from a saved ``erasure report --format json``."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"Cannot read the erasure log {path}: {exc.strerror}.") from exc
    except ValueError as exc:
        raise InputError(f"The erasure log {path} is not JSON from 'crmctl erasure report'.") from exc
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise InputError(
            f"The erasure log {path} is not JSON from 'crmctl erasure report'.",
            hint="Save it with: crmctl erasure report --format json > erasure-log.json",
        )
    items = []
    for n, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or "identity_hashes" not in row or "contact_ids" not in row:
            raise InputError(f"Entry {n} of the erasure log lacks contact_ids / identity_hashes.")
        if row.get("status") == "completed" and not row.get("replay_of"):
            items.append(ReplayItem(int(row["request_id"]), list(row["contact_ids"]), row["identity_hashes"]))
    return items


def completed_in_database(db: Database) -> list[ReplayItem]:
    with db.session() as session:
        rows = execute(
            session,
            "SELECT id, identity_hashes, evidence FROM erasure_request "
            "WHERE tenant_id = :tenant AND status = 'completed' ORDER BY id",
        ).fetchall()
    items = []
    for request_id, hashes, evidence in rows:
        hashes = json.loads(hashes) if isinstance(hashes, str) else hashes
        evidence = json.loads(evidence) if isinstance(evidence, str) else evidence
        if (evidence or {}).get("replay_of"):
            continue
        items.append(ReplayItem(request_id, list((evidence or {}).get("contact_ids", [])), hashes or {}))
    return items


def replay_erasures(
    db: Database, options: ErasureOptions, items: list[ReplayItem], *, dry_run: bool = False
) -> tuple[list[dict[str, Any]], RunResult]:
    """Record one replay request per item and run them (all steps, verification)."""
    require_key(options.erasure_key)
    planned = [{"replay_of": i.original_request_id, "contacts": len(i.contact_ids)} for i in items]
    if dry_run or not items:
        return planned, RunResult()
    now = utcnow()
    with db.session(write=True) as session:
        first = execute(session, "SELECT COALESCE(MAX(id), 0) FROM erasure_request").scalar() or 0
        rows = pl.DataFrame(
            {
                "tenant_id": [db.tenant] * len(items),
                "contact_id": [i.contact_ids[0] if i.contact_ids else None for i in items],
                "identity_hashes": [json.dumps(i.identity_hashes) for i in items],
                "requestor": ["replay"] * len(items),
                "reason": [
                    f"replay of erasure request {i.original_request_id} after a restore" for i in items
                ],
                "status": ["pending"] * len(items),
                "requested_at": [now] * len(items),
                "evidence": [
                    json.dumps({"replay_of": i.original_request_id, "matched_contact_ids": i.contact_ids})
                    for i in items
                ],
            },
            schema_overrides={"contact_id": pl.Int64},
        )
        insert_frame(session, "erasure_request", rows)
        ids = [
            r[0]
            for r in execute(
                session,
                "SELECT id FROM erasure_request WHERE tenant_id = :tenant AND id > :first "
                "AND requestor = 'replay' AND status = 'pending' ORDER BY id",
                first=first,
            )
        ]
    for item, new_id in zip(planned, ids, strict=True):
        item["request_id"] = new_id
    return planned, run_erasures(db, options, request_ids=ids)
