"""``crmctl export contact``: one person's data for an access request (GDPR art. 15), as one document.

The bundle is read in one snapshot (PostgreSQL ``REPEATABLE READ``, SQLite one read transaction)
so its sections agree with each other. It covers the contact, the contacts merged into it (the
same person under other records), and every row that points at any of them: identifiers, source
records as received, interactions, tickets, deals it is on, health signals it drove, product
usage, merge decisions and review items that touched it, and erasure requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Table, func, or_, select
from sqlmodel import Session

from crmctl import __version__
from crmctl.db.engine import Database, tenant_of
from crmctl.db.models import (
    Contact,
    ContactIdentifier,
    Deal,
    ErasureRequest,
    HealthSignal,
    Interaction,
    MergeDecision,
    ProductUsage,
    ReviewItem,
    SourceRecord,
    SupportTicket,
)
from crmctl.errors import NotFoundError, UsageError
from crmctl.exporters.folder import staged_folder
from crmctl.exporters.manifest import Manifest, write_manifest
from crmctl.exporters.sinks import HashingFile, WrittenFile
from crmctl.identity.normalize import email_key
from crmctl.output import dumps

# section name -> (table, the columns that point at the person)
SECTIONS: dict[str, tuple[Table, tuple[str, ...]]] = {
    "contact_identifiers": (ContactIdentifier.__table__, ("contact_id",)),  # type: ignore[attr-defined]
    "source_records": (SourceRecord.__table__, ("contact_id",)),  # type: ignore[attr-defined]
    "interactions": (Interaction.__table__, ("contact_id",)),  # type: ignore[attr-defined]
    "support_tickets": (SupportTicket.__table__, ("contact_id",)),  # type: ignore[attr-defined]
    "deals": (Deal.__table__, ("contact_id",)),  # type: ignore[attr-defined]
    "health_signals": (HealthSignal.__table__, ("contact_id",)),  # type: ignore[attr-defined]
    "product_usage": (ProductUsage.__table__, ("contact_id",)),  # type: ignore[attr-defined]
    "merge_decisions": (MergeDecision.__table__, ("winner_contact_id", "loser_contact_id")),  # type: ignore[attr-defined]
    "review_items": (ReviewItem.__table__, ("left_contact_id", "right_contact_id")),  # type: ignore[attr-defined]
    "erasure_requests": (ErasureRequest.__table__, ("contact_id",)),  # type: ignore[attr-defined]
}
CONTACT_TABLE: Table = Contact.__table__  # type: ignore[attr-defined]


@dataclass
class ContactBundle:
    contact_id: int
    tenant: str
    generated_at: datetime
    contact: dict[str, Any]
    merged_contacts: list[dict[str, Any]]
    sections: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        return {"merged_contacts": len(self.merged_contacts)} | {k: len(v) for k, v in self.sections.items()}

    def document(self) -> dict[str, Any]:
        return {
            "kind": "crmctl.contact_bundle",
            "tool_version": __version__,
            "tenant": self.tenant,
            "generated_at": self.generated_at.isoformat(),
            "contact_id": self.contact_id,
            "contact": self.contact,
            "merged_contacts": self.merged_contacts,
            **self.sections,
            "counts": self.counts,
        }


@contextmanager
def snapshot_session(db: Database) -> Iterator[Session]:
    """A read-only session whose every query sees the same snapshot."""
    bind = db.engine.execution_options(isolation_level="REPEATABLE READ") if db.is_postgresql else db.engine
    with Session(bind) as session:
        session.info["tenant"] = db.tenant
        session.info["dialect"] = db.dialect
        try:
            yield session
        finally:
            session.rollback()


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):  # SQLite hands back naive UTC
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def _rows(session: Session, statement: Any) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in row.items()} for row in session.execute(statement).mappings()]


def find_contact_by_email(session: Session, email: str) -> int:
    """The one contact an email belongs to, by its normalised key (merged records lead to the
    contact they were merged into). Messages never repeat the address."""
    tenant = tenant_of(session)
    key = email_key(email)
    if key is None:
        raise UsageError("The email given is not a valid address.")
    c = CONTACT_TABLE.c
    by_identifier = select(ContactIdentifier.__table__.c.contact_id).where(  # type: ignore[attr-defined]
        ContactIdentifier.__table__.c.tenant_id == tenant,  # type: ignore[attr-defined]
        ContactIdentifier.__table__.c.kind == "email",  # type: ignore[attr-defined]
        ContactIdentifier.__table__.c.value == key,  # type: ignore[attr-defined]
    )
    rows = session.execute(
        select(c.id, c.merged_into_id).where(
            c.tenant_id == tenant,
            or_(
                c.email_norm == key,
                func.lower(func.trim(c.email)) == email.strip().lower(),
                c.id.in_(by_identifier),
            ),
        )
    ).all()
    survivors: set[int] = set()
    pending = {int(i): into for i, into in rows}
    for _ in range(100):  # follow merges to the surviving contact, one query per hop
        targets = {int(into) for into in pending.values() if into is not None}
        survivors |= {i for i, into in pending.items() if into is None}
        if not targets:
            break
        hop = select(c.id, c.merged_into_id).where(c.tenant_id == tenant, c.id.in_(targets))
        pending = {int(i): into for i, into in session.execute(hop).all()}
    if not survivors:
        raise NotFoundError("No contact in this tenant matches that email.")
    if len(survivors) > 1:
        ids = ", ".join(str(i) for i in sorted(survivors))
        raise UsageError(
            f"That email matches {len(survivors)} contacts (ids {ids}).", hint="Pass one contact ID instead."
        )
    return survivors.pop()


def _merged_into(session: Session, contact_id: int) -> list[dict[str, Any]]:
    """Contacts merged into this one, directly or through a chain of merges."""
    tenant = tenant_of(session)
    c = CONTACT_TABLE.c
    found: list[dict[str, Any]] = []
    frontier, seen = {contact_id}, {contact_id}
    while frontier:
        rows = _rows(
            session, select(CONTACT_TABLE).where(c.tenant_id == tenant, c.merged_into_id.in_(frontier))
        )
        rows = [r for r in rows if r["id"] not in seen]
        found += rows
        frontier = {r["id"] for r in rows}
        seen |= frontier
    return sorted(found, key=lambda r: r["id"])


def contact_bundle(session: Session, contact_id: int) -> ContactBundle:
    tenant = tenant_of(session)
    c = CONTACT_TABLE.c
    contact = _rows(session, select(CONTACT_TABLE).where(c.tenant_id == tenant, c.id == contact_id))
    if not contact:
        raise NotFoundError(f"No contact with id {contact_id} in this tenant.")
    merged = _merged_into(session, contact_id)
    person_ids = [contact_id, *(r["id"] for r in merged)]
    bundle = ContactBundle(contact_id, tenant, datetime.now(UTC), contact[0], merged)
    for name, (table, columns) in SECTIONS.items():
        statement = (
            select(table)
            .where(table.c.tenant_id == tenant, or_(*(table.c[col].in_(person_ids) for col in columns)))
            .order_by(table.c.id)
        )
        bundle.sections[name] = _rows(session, statement)
    return bundle


def export_contact(db: Database, *, contact_id: int | None = None, email: str | None = None) -> ContactBundle:
    """Read one person's bundle, by contact id or by email, in one snapshot."""
    if (contact_id is None) == (email is None):
        raise UsageError("Give either a contact ID or --email.")
    with snapshot_session(db) as session:
        if contact_id is None:
            assert email is not None
            contact_id = find_contact_by_email(session, email)
        return contact_bundle(session, contact_id)


def write_bundle(db: Database, bundle: ContactBundle, out: Path, *, force: bool = False) -> Manifest:
    """The bundle as a folder: one JSON file per section and a manifest (``export verify`` checks it)."""
    document = bundle.document()
    parts: dict[str, Any] = {"contact": bundle.contact, "merged_contacts": bundle.merged_contacts}
    parts |= bundle.sections
    with staged_folder(out, force=force) as staging:
        files = []
        for name, content in parts.items():
            handle = HashingFile(staging / f"{name}.json")
            try:
                handle.write(dumps(content).encode() + b"\n")
            finally:
                handle.close()
            rows = len(content) if isinstance(content, list) else 1
            columns = sorted(content) if isinstance(content, dict) else []
            files.append(
                WrittenFile(name, f"{name}.json", rows, handle.size, handle.sha256.hexdigest(), columns)
            )
        manifest = Manifest(
            kind="contact",
            tool_version=__version__,
            schema_version=None,
            backend=db.dialect,
            tenant=bundle.tenant,
            snapshot_at=document["generated_at"],
            snapshot_id=None,
            isolation="one read transaction",
            format="json",
            compression="none",
            neutralised_formulas=False,
            files=files,
        )
        write_manifest(staging, manifest)
    return manifest
