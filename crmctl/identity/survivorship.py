"""Survivorship for contact-to-contact merges (``crmctl resolve``, ``review accept``).

The surviving contact keeps its own values and takes a merged contact's for the fields it lacks
(the name only whole, and only when it has none: a name is one value). Each merge decision keeps
what the survivor held just before it, so that ``merges undo`` puts back exactly what it filled.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import text
from sqlmodel import Session

from crmctl.db import sql
from crmctl.db.engine import dialect_of, tenant_of
from crmctl.importers.leads import FILL_FIELDS, NAME_FIELDS

_VALUE_FIELDS = tuple(f for f in FILL_FIELDS if f not in NAME_FIELDS)


def _contacts(session: Session, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    frame = sql.frame(
        session,
        f"SELECT id, erased_at, {', '.join(FILL_FIELDS)} FROM contact "
        f"WHERE tenant_id = :tenant AND {sql.in_list(session, 'id', 'ids')}",
        ids=sql.list_param(session, sorted(set(ids))),
    )
    return {row["id"]: row for row in frame.iter_rows(named=True)}


def _fills(held: dict[str, Any], merged: dict[str, Any]) -> dict[str, Any]:
    fills = {f: merged[f] for f in _VALUE_FIELDS if held[f] is None and merged[f] is not None}
    if all(held[f] is None for f in NAME_FIELDS) and any(merged[f] is not None for f in NAME_FIELDS):
        fills.update({f: merged[f] for f in NAME_FIELDS})
    return fills


def fill_survivors(session: Session, merges: list[tuple[int, int, int]], now: Any) -> int:
    """For each merge (decision id, winner, loser), in order: the winner takes the loser's values
    for the fields it lacks, and the decision keeps the winner's fields as they were before it
    (erased contacts neither give nor take). Returns the number of decisions that filled a field."""
    if not merges:
        return 0
    rows = _contacts(session, [c for _, winner, loser in merges for c in (winner, loser)])
    befores: list[dict[str, Any]] = []
    changed: dict[int, dict[str, Any]] = {}
    for decision_id, winner, loser in merges:
        held, merged = rows.get(winner), rows.get(loser)
        if held is None or merged is None or held["erased_at"] is not None or merged["erased_at"] is not None:
            continue
        fills = _fills(held, merged)
        if not fills:
            continue
        before = {f: held[f] for f in FILL_FIELDS if held[f] is not None}
        befores.append({"id": decision_id, "before": json.dumps(before)})
        held.update(fills)
        changed.setdefault(winner, {}).update(fills)
    conn = session.connection()
    tenant = tenant_of(session)
    for winner, fills in changed.items():
        conn.execute(
            text(
                f"UPDATE contact SET {', '.join(f'{f} = :{f}' for f in fills)}, updated_at = :now "
                "WHERE tenant_id = :t AND id = :id"
            ),
            {**fills, "now": now, "t": tenant, "id": winner},
        )
    if befores:
        cast = "CAST(:before AS json)" if dialect_of(session) == "postgresql" else ":before"
        conn.execute(
            text(f"UPDATE merge_decision SET before = {cast} WHERE tenant_id = :t AND id = :id"),
            [{**row, "t": tenant} for row in befores],
        )
    return len(befores)


def unfill_survivor(session: Session, before: dict[str, Any], winner: int, loser: int, now: Any) -> list[str]:
    """Put back what :func:`fill_survivors` filled on ``winner`` (its fields ``before`` the merge)
    where the winner still holds the merged contact's value: a value changed since stays."""
    rows = _contacts(session, [winner, loser])
    held, merged = rows.get(winner), rows.get(loser)
    if held is None or merged is None or held["erased_at"] is not None:
        return []
    back: dict[str, Any] = {
        f: None
        for f in _VALUE_FIELDS
        if before.get(f) is None and held[f] is not None and held[f] == merged[f]
    }
    names_filled = all(before.get(f) is None for f in NAME_FIELDS)
    if names_filled and all(held[f] == merged[f] for f in NAME_FIELDS):
        back.update(dict.fromkeys((f for f in NAME_FIELDS if held[f] is not None), None))
    if not back:
        return []
    session.connection().execute(
        text(
            f"UPDATE contact SET {', '.join(f'{f} = :{f}' for f in back)}, updated_at = :now "
            "WHERE tenant_id = :t AND id = :id"
        ),
        {**back, "now": now, "t": tenant_of(session), "id": winner},
    )
    return sorted(back)
