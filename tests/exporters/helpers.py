"""Seed data and export readers shared by the export tests."""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa

from crmctl.db.engine import Database, open_database
from crmctl.db.models import (
    Account,
    Contact,
    ContactIdentifier,
    Deal,
    HealthSignal,
    HealthSnapshot,
    Interaction,
    MergeDecision,
    Pipeline,
    SourceRecord,
    Stage,
    SupportTicket,
)

T0 = datetime(2026, 3, 1, 9, 30, 15, 250_000, tzinfo=UTC)
# text a spreadsheet would run as a formula, and text with CSV's special characters
FORMULA_NAME = '=HYPERLINK("http://x")'
TRICKY_BODY = 'line one\nline "two", with commas\r\nand ünïcödé'


def seed(db: Database, *, deals: int = 4, amount_cents: int = 2_500) -> dict[str, int]:
    """A small graph for tenant ``db.tenant``: ids of the rows the tests look at."""
    with db.session(write=True) as s:
        t = db.tenant
        account = Account(tenant_id=t, name="Acme Ltd", domain="acme.example", employees=50)
        s.add(account)
        s.flush()
        contacts = [
            Contact(
                tenant_id=t,
                account_id=account.id,
                first_name=FORMULA_NAME,
                last_name="Lovelace",
                email="Ada.Lovelace@Acme.example",
                email_norm="ada.lovelace@acme.example",
                phone="+44 20 7946 0000",
                title="-Chief",
                company="@acme",
                field_provenance={"email": {"source": "web", "row": 3}},
                consent_at=T0,
            ),
            Contact(tenant_id=t, account_id=account.id, first_name="Bob", email="bob@acme.example"),
            Contact(tenant_id=t, first_name="Tab", title="\tindent"),
        ]
        s.add_all(contacts)
        s.flush()
        ada, bob = contacts[0], contacts[1]
        bob.merged_into_id = ada.id
        pipeline = Pipeline(tenant_id=t, name="Sales", is_default=True)
        s.add(pipeline)
        s.flush()
        stage = Stage(tenant_id=t, pipeline_id=pipeline.id or 0, name="Qualify", position=1, probability=0.2)
        s.add(stage)
        s.flush()
        deal_rows = [
            Deal(
                tenant_id=t,
                name=f"Deal {i}",
                account_id=account.id,
                contact_id=ada.id if i == 0 else None,
                pipeline_id=pipeline.id or 0,
                stage_id=stage.id or 0,
                amount_cents=amount_cents,
                close_date=date(2026, 6, 30),
            )
            for i in range(deals)
        ]
        s.add_all(deal_rows)
        s.add_all(
            [
                Interaction(
                    tenant_id=t,
                    contact_id=ada.id,
                    account_id=account.id,
                    kind="email",
                    occurred_at=T0,
                    subject="+1 call me",
                    body=TRICKY_BODY,
                    score=9.5,
                    details={"thread": [1, 2]},
                    idempotency_key="seed-1",
                ),
                Interaction(
                    tenant_id=t,
                    contact_id=bob.id,
                    kind="call",
                    occurred_at=T0,
                    body="",
                    idempotency_key="seed-2",
                ),
                Interaction(tenant_id=t, kind="note", occurred_at=T0, idempotency_key="seed-3"),
            ]
        )
        record = SourceRecord(
            tenant_id=t, source="web", source_record_id="r1", payload={"email": "x"}, contact_id=ada.id
        )
        s.add(record)
        s.add(
            ContactIdentifier(
                tenant_id=t, contact_id=ada.id or 0, kind="email", value="ada.lovelace@acme.example"
            )
        )
        s.add(SupportTicket(tenant_id=t, contact_id=ada.id, subject="Help", opened_at=T0))
        s.add(
            MergeDecision(
                tenant_id=t, rule="email", score=1.0, winner_contact_id=ada.id or 0, loser_contact_id=bob.id
            )
        )
        snap = HealthSnapshot(
            tenant_id=t,
            account_id=account.id or 0,
            as_of=date(2026, 3, 1),
            model_version="m1",
            composite=71.5,
            band="green",
        )
        s.add(snap)
        s.flush()
        s.add(
            HealthSignal(
                tenant_id=t,
                snapshot_id=snap.id or 0,
                account_id=account.id or 0,
                contact_id=ada.id,
                signal="nps",
                weight=0.2,
                contribution=1.9,
            )
        )
        s.flush()
        return {
            "account": account.id or 0,
            "ada": ada.id or 0,
            "bob": bob.id or 0,
            "tab": contacts[2].id or 0,
        }


def seed_other_tenant(database_url: str) -> None:
    """Rows of another tenant that no export of 'default' may contain."""
    other = open_database(database_url, "other")
    try:
        with other.session(write=True) as s:
            s.add(Account(tenant_id="other", name="Other Co"))
            s.add(Contact(tenant_id="other", first_name="Olga", email="olga@other.example"))
            s.add(Interaction(tenant_id="other", kind="note", occurred_at=T0, idempotency_key="other-1"))
    finally:
        other.dispose()


def _decompressed(path: Path) -> bytes:
    codec = {".gz": "gzip", ".zst": "zstd"}.get(path.suffix)
    if codec is None:
        return path.read_bytes()
    with pa.CompressedInputStream(pa.OSFile(str(path), "rb"), codec) as stream:
        return stream.read()


def read_table(folder: Path, table: str) -> pl.DataFrame:
    """One exported table as a frame, whatever the format (CSV cells stay text)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    (entry,) = [f for f in manifest["files"] if f["table"] == table]
    path = folder / entry["path"]
    if path.name.endswith(".parquet"):
        return pl.read_parquet(path)
    data = _decompressed(path)
    if ".csv" in path.name:
        return pl.read_csv(io.BytesIO(data), infer_schema=False)
    records = [json.loads(line) for line in data.decode().splitlines()]
    return (
        pl.DataFrame(records, schema=entry["columns"], orient="row") if not records else pl.DataFrame(records)
    )
