"""Retention policies: what each contact's ``retention_policy`` and consent say should happen.

- ``li-<N>m`` (legitimate interest): no interaction for N months (since ``last_interaction_at``,
  or ``created_at`` when there was none) → the contact is pseudonymised in place (personal fields
  replaced by a keyed hash of its id, identifiers deleted, ``erased_at`` set); its activity stays,
  no longer attached to anyone identifiable.
- consent withdrawn (``consent_withdrawn_at`` set on a contact whose lawful basis is consent) → an
  erasure request is recorded (requestor ``retention``) for the next ``erasure run``.
Contacts already erased, merged away, or with an open or completed request are left alone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from crmctl.db.bulk import as_utc, insert_frame
from crmctl.db.engine import Database
from crmctl.db.models import utcnow
from crmctl.db.sql import frame
from crmctl.erasure.keys import require_key
from crmctl.erasure.run import delete_identifiers, pseudonymise_contacts
from crmctl.erasure.subjects import identity_hashes

LEGITIMATE_INTEREST = re.compile(r"^li-(\d{1,3})m$")


@dataclass
class RetentionResult:
    actions: list[dict[str, Any]] = field(default_factory=list)
    unknown_policies: dict[str, int] = field(default_factory=dict)

    def count(self, action: str) -> int:
        return sum(1 for a in self.actions if a["action"] == action)


def _months_before(now: datetime, months: int) -> datetime:
    year, month = divmod(now.month - 1 - months, 12)
    return now.replace(year=now.year + year, month=month + 1, day=min(now.day, 28))


def plan_retention(db: Database, now: datetime | None = None) -> RetentionResult:
    now = now or utcnow()
    result = RetentionResult()
    with db.session() as session:
        contacts = frame(
            session,
            """
            SELECT c.id, c.retention_policy, c.lawful_basis, c.consent_withdrawn_at,
                   COALESCE(c.last_interaction_at, c.created_at) AS last_seen
            FROM contact c
            WHERE c.tenant_id = :tenant AND c.erased_at IS NULL AND c.merged_into_id IS NULL
              AND (c.retention_policy IS NOT NULL OR c.consent_withdrawn_at IS NOT NULL)
              AND NOT EXISTS (SELECT 1 FROM erasure_request r WHERE r.tenant_id = c.tenant_id
                              AND r.contact_id = c.id AND r.status IN ('pending', 'running', 'completed'))
            ORDER BY c.id
            """,
        )
    if contacts.height == 0:
        return result
    # Set-based: one cut-off per distinct N, then a polars filter (a nightly run may see 1M contacts).
    months = pl.col("retention_policy").str.extract(LEGITIMATE_INTEREST.pattern, 1).cast(pl.Int64)
    contacts = contacts.with_columns(months=months, last_seen=as_utc(contacts, "last_seen"))
    cutoffs = {m: _months_before(now, m) for m in contacts["months"].drop_nulls().unique().to_list()}
    withdrawn = pl.col("consent_withdrawn_at").is_not_null() & (pl.col("lawful_basis") == "consent")
    stale = pl.col("last_seen") < pl.col("months").replace_strict(
        cutoffs, default=None, return_dtype=pl.Datetime("us", "UTC")
    )
    legitimate = pl.col("lawful_basis").is_null() | (pl.col("lawful_basis") == "legitimate_interest")
    planned = contacts.with_columns(
        action=pl.when(withdrawn)
        .then(pl.lit("erasure request"))
        .when(pl.col("months").is_not_null() & legitimate & stale)
        .then(pl.lit("pseudonymise")),
        policy=pl.when(withdrawn).then(pl.lit("consent")).otherwise(pl.col("retention_policy")),
    )
    result.actions = (
        planned.filter(pl.col("action").is_not_null())
        .select(pl.col("id").alias("contact_id"), "policy", "action")
        .to_dicts()
    )
    unknown = planned.filter(~withdrawn, pl.col("retention_policy").is_not_null(), pl.col("months").is_null())
    result.unknown_policies = dict(
        unknown.group_by("retention_policy").len().sort("retention_policy").iter_rows()
    )
    return result


def apply_retention(
    db: Database, *, key: str | None, dry_run: bool, now: datetime | None = None
) -> RetentionResult:
    """Plan, and unless ``dry_run`` apply, every contact's retention policy."""
    key_bytes = require_key(key)
    result = plan_retention(db, now)
    if dry_run or not result.actions:
        return result
    pseudonymise = [a["contact_id"] for a in result.actions if a["action"] == "pseudonymise"]
    requests = [a["contact_id"] for a in result.actions if a["action"] == "erasure request"]
    with db.session(write=True) as session:
        pseudonymise_contacts(session, key_bytes, pseudonymise)
        delete_identifiers(session, pseudonymise)
        if requests:
            insert_frame(
                session,
                "erasure_request",
                pl.DataFrame(
                    {
                        "tenant_id": [db.tenant] * len(requests),
                        "contact_id": requests,
                        "identity_hashes": [json.dumps(identity_hashes(key_bytes, [], []))] * len(requests),
                        "requestor": ["retention"] * len(requests),
                        "reason": ["consent withdrawn"] * len(requests),
                        "status": ["pending"] * len(requests),
                        "requested_at": [utcnow()] * len(requests),
                        "evidence": [json.dumps({"matched_contact_ids": [c]}) for c in requests],
                    }
                ),
            )
    return result
