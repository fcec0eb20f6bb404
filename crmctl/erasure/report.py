"""The compliance artefact: every request, its steps and counts, verification, backup rotation."""

from __future__ import annotations

import json
from typing import Any

from sqlmodel import Session

from crmctl.db.sql import execute
from crmctl.erasure.run import STEP_NAMES
from crmctl.errors import NotFoundError

SUMMARY_COLUMNS = (
    "request_id",
    "status",
    "contact_id",
    "contacts",
    "requested_at",
    "requestor",
    "completed_at",
    "verified",
    "backups_rotate_out_by",
)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def erasure_report(session: Session, request_id: int | None = None) -> list[dict[str, Any]]:
    """Every request (or one) with its steps in order. Counts and dates only, never values."""
    where = "" if request_id is None else " AND id = :request_id"
    requests = execute(
        session,
        "SELECT id, status, contact_id, requested_at, requestor, reason, completed_at, "
        "backups_rotate_out_by, evidence, identity_hashes "
        f"FROM erasure_request WHERE tenant_id = :tenant{where} ORDER BY id",
        request_id=request_id,
    ).fetchall()
    if request_id is not None and not requests:
        raise NotFoundError(f"There is no erasure request {request_id} in this tenant.")
    step_where = "" if request_id is None else " AND request_id = :request_id"
    steps: dict[int, list[dict[str, Any]]] = {}
    for rid, name, started, finished, rows, outcome in execute(
        session,
        "SELECT request_id, name, started_at, finished_at, rows_affected, outcome FROM erasure_step "
        f"WHERE tenant_id = :tenant{step_where}",
        request_id=request_id,
    ):
        steps.setdefault(rid, []).append(
            {"name": name, "started_at": started, "finished_at": finished, "rows": rows, "outcome": outcome}
        )
    order = {name: i for i, name in enumerate(STEP_NAMES)}
    out = []
    for (
        rid,
        status,
        contact_id,
        requested,
        requestor,
        reason,
        completed,
        rotate,
        evidence,
        hashes,
    ) in requests:
        evidence = _json(evidence) or {}
        verification = evidence.get("verification") or {}
        out.append(
            {
                "request_id": rid,
                "status": status,
                "contact_id": contact_id,
                "contacts": len(evidence.get("contact_ids", evidence.get("matched_contact_ids", []))),
                "requested_at": requested,
                "requestor": requestor,
                "reason": reason,
                "completed_at": completed,
                "verified": verification.get("passed"),
                "remaining": verification.get("remaining", {}),
                "backups_rotate_out_by": rotate,
                "replay_of": evidence.get("replay_of"),
                # what 'erasure replay --log' needs: ids and keyed hashes, never values
                "contact_ids": evidence.get("contact_ids", evidence.get("matched_contact_ids", [])),
                "identity_hashes": _json(hashes) or {},
                "steps": sorted(steps.get(rid, []), key=lambda s: order.get(s["name"], 99)),
            }
        )
    return out
