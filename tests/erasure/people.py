"""A small customer graph with a person's data in every table that can hold it (both backends)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import JSON, text

from crmctl.db.engine import Database
from crmctl.db.models import (
    TENANT_TABLES,
    Account,
    Contact,
    ContactIdentifier,
    Deal,
    HealthModel,
    HealthSignal,
    HealthSnapshot,
    ImportRun,
    Interaction,
    MergeDecision,
    Pipeline,
    ProductUsage,
    ReviewItem,
    SourceRecord,
    Stage,
    SupportTicket,
)

KEY = "erasure-test-key-0123456789abcdef"
ENV = {"CRMCTL_ERASURE_KEY": KEY}
T0 = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)


@dataclass
class Person:
    first: str
    last: str
    email: str
    phone: str  # E.164
    contact_ids: list[int] = field(default_factory=list)

    @property
    def secrets(self) -> list[str]:
        """What must not survive an erasure anywhere (names are checked on the linked rows)."""
        return [self.email, self.phone, "0" + self.phone.removeprefix("+44")]


def add_person(
    db: Database,
    person: Person,
    *,
    seq: int,
    account_id: int,
    stage_id: int,
    pipeline_id: int,
    duplicate: bool = False,
    interactions: int = 3,
) -> None:
    """A contact (plus a merged-away duplicate) with identifiers, source records, a merge decision,
    interactions, usage, signals, a ticket and a deal."""
    with db.session(write=True) as s:
        run = ImportRun(tenant_id=db.tenant, kind="leads", source="web", file_name=f"leads-{seq}.csv")
        s.add(run)
        s.flush()
        main = Contact(
            tenant_id=db.tenant,
            account_id=account_id,
            first_name=person.first,
            last_name=person.last,
            full_name=f"{person.first} {person.last}",
            first_name_norm=person.first.lower(),
            last_name_norm=person.last.lower(),
            email=person.email.title(),
            email_norm=person.email,
            phone=person.phone,
            phone_e164=person.phone,
            title="Buyer",
            company="Acme",
            company_norm="acme",
            lawful_basis="consent",
            consent_evidence=f"form 7 by {person.email}",
            field_provenance={"email": {"source": "web"}},
            external_source="hubspot",
            external_id=f"hs-{seq}",
            last_interaction_at=T0,
        )
        s.add(main)
        s.flush()
        person.contact_ids.append(main.id)
        ids = [main.id]
        if duplicate:
            dup = Contact(
                tenant_id=db.tenant,
                first_name=person.first[:3],
                last_name=person.last,
                email=f"{person.first.lower()}@home.example",
                email_norm=f"{person.first.lower()}@home.example",
                merged_into_id=main.id,
            )
            s.add(dup)
            s.flush()
            person.contact_ids.append(dup.id)
            ids.append(dup.id)
            s.add(
                MergeDecision(
                    tenant_id=db.tenant,
                    import_run_id=run.id,
                    kind="contact",
                    rule="email",
                    score=0.97,
                    winner_contact_id=main.id,
                    loser_contact_id=dup.id,
                    levels={"email": "exact"},
                    candidates=[{"email": person.email, "first_name": person.first}, {"email": dup.email}],
                    before={"email": person.email},
                )
            )
        records = []
        for n, cid in enumerate(ids):
            rec = SourceRecord(
                tenant_id=db.tenant,
                source="web",
                source_record_id=f"{seq}-{n}",
                import_run_id=run.id,
                row_number=n + 2,
                payload={"Email": person.email, "Phone": person.phone, "Name": person.first},
                content_hash=f"h{seq}{n}",
                email_norm=person.email,
                phone_e164=person.phone,
                name_key=person.last.lower(),
                company_key="acme",
                contact_id=cid,
                action="created",
            )
            s.add(rec)
            records.append(rec)
        s.flush()
        for cid in ids:
            s.add(
                ContactIdentifier(
                    tenant_id=db.tenant,
                    contact_id=cid,
                    kind="email",
                    value=person.email,
                    source_record_id=records[0].id,
                )
            )
        s.add(ContactIdentifier(tenant_id=db.tenant, contact_id=main.id, kind="phone", value=person.phone))
        for i in range(interactions):
            s.add(
                Interaction(
                    tenant_id=db.tenant,
                    contact_id=ids[i % len(ids)],
                    account_id=account_id,
                    kind="email" if i % 2 else "call",
                    occurred_at=T0 - timedelta(days=i),
                    subject=f"Hello {person.first}",
                    body=f"Reply to {person.email} or call {person.phone}",
                    details={"to": person.email},
                    idempotency_key=f"i-{seq}-{i}",
                )
            )
        s.add(
            ProductUsage(
                tenant_id=db.tenant,
                account_id=account_id,
                contact_id=main.id,
                occurred_at=T0,
                event="login",
                idempotency_key=f"u-{seq}",
            )
        )
        snapshot = HealthSnapshot(
            tenant_id=db.tenant,
            account_id=account_id,
            as_of=date(2026, 1, 1) + timedelta(days=seq),
            model_version="v1",
            composite=70.0,
            band="green",
        )
        s.add(snapshot)
        s.flush()
        s.add(
            HealthSignal(
                tenant_id=db.tenant,
                snapshot_id=snapshot.id,
                account_id=account_id,
                contact_id=main.id,
                signal="nps",
                raw_value=9,
                weight=0.2,
                contribution=14.0,
            )
        )
        s.add(
            SupportTicket(
                tenant_id=db.tenant,
                account_id=account_id,
                contact_id=main.id,
                subject=f"Login problem for {person.email}",
                description=f"Call me on {person.phone}",
                opened_at=T0,
                external_source="zendesk",
                external_id=f"z-{seq}",
                csat=4.0,
            )
        )
        s.add(
            Deal(
                tenant_id=db.tenant,
                name="Acme renewal",
                account_id=account_id,
                contact_id=main.id,
                pipeline_id=pipeline_id,
                stage_id=stage_id,
                amount_cents=100_000,
            )
        )


def base(db: Database) -> tuple[int, int, int]:
    with db.session(write=True) as s:
        account = Account(tenant_id=db.tenant, name="Acme Ltd", domain="acme.example")
        pipeline = Pipeline(tenant_id=db.tenant, name="Sales", is_default=True)
        s.add_all([account, pipeline])
        s.add(HealthModel(tenant_id=db.tenant, name="default", version="v1", body="[weights]"))
        s.flush()
        stage = Stage(
            tenant_id=db.tenant, pipeline_id=pipeline.id, name="Qualify", position=1, probability=0.2
        )
        s.add(stage)
        s.flush()
        return account.id, stage.id, pipeline.id


def people(n: int, start: int = 0) -> list[Person]:
    return [
        Person(f"Name{i}", f"Surname{i}", f"person{i}.x@example.com", f"+44207946{i:04d}")
        for i in range(start, start + n)
    ]


def build(db: Database, persons: list[Person], *, duplicates: bool = True) -> None:
    account_id, stage_id, pipeline_id = base(db)
    for seq, person in enumerate(persons):
        add_person(
            db,
            person,
            seq=seq,
            account_id=account_id,
            stage_id=stage_id,
            pipeline_id=pipeline_id,
            duplicate=duplicates and seq % 2 == 0,
        )
    # an open review pair between the first two people
    if len(persons) >= 2:
        with db.session(write=True) as s:
            s.add(
                ReviewItem(
                    tenant_id=db.tenant,
                    left_contact_id=persons[0].contact_ids[0],
                    right_contact_id=persons[1].contact_ids[0],
                    rule="name",
                    score=0.8,
                    candidates=[{"email": persons[0].email}, {"email": persons[1].email}],
                )
            )


Snapshot = dict[str, dict[int, tuple[Any, ...]]]


def snapshot(db: Database) -> Snapshot:
    """Every row of every tenant table, as stored (JSON normalised to sorted text)."""
    out: Snapshot = {}
    with db.session() as s:
        for model in TENANT_TABLES:
            table = model.__table__
            json_cols = {c.name for c in table.columns if isinstance(c.type, JSON)}
            cols = [c.name for c in table.columns]
            rows = s.connection().execute(text(f'SELECT {", ".join(cols)} FROM "{table.name}" ORDER BY id'))
            id_index = cols.index("id")
            out[table.name] = {
                r[id_index]: tuple(
                    json.dumps(json.loads(v) if isinstance(v, str) else v, sort_keys=True)
                    if c in json_cols
                    else v
                    for c, v in zip(cols, r, strict=True)
                )
                for r in rows
            }
    return out


def text_of(snap: Snapshot) -> str:
    return "\n".join(repr(row) for rows in snap.values() for row in rows.values())
