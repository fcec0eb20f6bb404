"""crmctl export contact: one person's access-request bundle, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

from sqlmodel import select

from crmctl.db.engine import Database, open_database
from crmctl.db.models import AuditEvent, Contact
from tests.conftest import Cli
from tests.exporters.helpers import FORMULA_NAME, TRICKY_BODY, seed, seed_other_tenant


def test_bundle_by_id_holds_everything_about_the_person_and_nothing_else(
    cli: Cli, db: Database, database_url: str
) -> None:
    ids = seed(db)
    seed_other_tenant(database_url)
    result = cli("export", "contact", str(ids["ada"]))
    doc = json.loads(result.stdout)

    assert doc["contact_id"] == ids["ada"] and doc["tenant"] == "default"
    assert doc["contact"]["first_name"] == FORMULA_NAME  # JSON is not a spreadsheet: values as stored
    assert doc["contact"]["field_provenance"] == {"email": {"source": "web", "row": 3}}
    assert doc["contact"]["consent_at"] == "2026-03-01T09:30:15.250000+00:00"
    assert [c["id"] for c in doc["merged_contacts"]] == [ids["bob"]]
    # the merged-away record's interactions belong to the same person
    assert sorted(i["idempotency_key"] for i in doc["interactions"]) == ["seed-1", "seed-2"]
    assert [i["body"] for i in doc["interactions"] if i["idempotency_key"] == "seed-1"] == [TRICKY_BODY]
    assert [d["name"] for d in doc["deals"]] == ["Deal 0"]
    assert doc["counts"] == {
        "merged_contacts": 1,
        "contact_identifiers": 1,
        "source_records": 1,
        "interactions": 2,
        "support_tickets": 1,
        "deals": 1,
        "health_signals": 1,
        "product_usage": 0,
        "merge_decisions": 1,
        "review_items": 0,
        "erasure_requests": 0,
    }
    assert "Olga" not in result.stdout and "other.example" not in result.stdout
    assert "Lovelace" not in result.stderr


def test_bundle_by_email_uses_the_normalised_key_and_follows_merges(cli: Cli, db: Database) -> None:
    ids = seed(db)
    by_case = json.loads(cli("export", "contact", "--email", "  ADA.Lovelace@ACME.example ").stdout)
    assert by_case["contact_id"] == ids["ada"]
    # bob was merged into ada: his address leads to the surviving contact
    by_merged = json.loads(cli("export", "contact", "--email", "bob@acme.example").stdout)
    assert by_merged["contact_id"] == ids["ada"]
    with db.session() as session:
        event = session.exec(select(AuditEvent).where(AuditEvent.command == "export contact")).first()
    assert event is not None and event.options is not None
    assert event.options["email"] == "<redacted>"
    assert "acme" not in json.dumps(event.options).lower()


def test_bundle_lookup_errors_are_one_sentence_without_the_address(
    cli: Cli, db: Database, database_url: str
) -> None:
    seed(db)
    missing = cli("export", "contact", "--email", "nobody@nowhere.example", expect=2)
    assert "error: No contact in this tenant matches that email." in missing.stderr
    assert "nobody" not in missing.stderr + missing.stdout
    invalid = cli("export", "contact", "--email", "not-an-address", expect=2)
    assert (
        "The email given is not a valid address." in invalid.stderr and "not-an-address" not in invalid.stderr
    )
    assert "No contact with id 999999 in this tenant." in cli("export", "contact", "999999", expect=2).stderr
    assert "Give either a contact ID or --email." in cli("export", "contact", expect=2).stderr
    both = cli("export", "contact", "1", "--email", "a@b.example", expect=2)
    assert "Give either a contact ID or --email." in both.stderr

    seed_other_tenant(database_url)
    other = open_database(database_url, "other")
    try:
        with other.session() as session:
            olga = session.exec(select(Contact).where(Contact.tenant_id == "other")).one()
    finally:
        other.dispose()
    assert (
        f"No contact with id {olga.id} in this tenant."
        in cli("export", "contact", str(olga.id), expect=2).stderr
    )


def test_ambiguous_email_names_the_ids(cli: Cli, db: Database) -> None:
    seed(db)
    with db.session(write=True) as session:
        twin = Contact(tenant_id="default", first_name="Twin", email="ada.lovelace@acme.example")
        session.add(twin)
    result = cli("export", "contact", "--email", "ada.lovelace@acme.example", expect=2)
    assert "That email matches 2 contacts (ids " in result.stderr
    assert "Pass one contact ID instead." in result.stderr


def test_bundle_folder_is_verifiable(cli: Cli, db: Database, tmp_path: Path) -> None:
    ids = seed(db)
    out = tmp_path / "request-42"
    result = cli("export", "contact", str(ids["ada"]), "--out", str(out))
    assert result.stdout == ""
    assert f"Wrote contact {ids['ada']}: 12 files" in result.stderr
    assert json.loads((out / "contact.json").read_text())["id"] == ids["ada"]
    assert len(json.loads((out / "interactions.json").read_text())) == 2
    cli("export", "verify", str(out))
    cli("export", "contact", str(ids["ada"]), "--out", str(out), expect=2)  # exists: refused
    cli("export", "contact", str(ids["ada"]), "--out", str(out), "--force")
