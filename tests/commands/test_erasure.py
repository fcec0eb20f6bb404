"""crmctl erasure: request, run (cascade, verification, evidence), status, report, dry run."""

from __future__ import annotations

import json

import polars as pl
from sqlalchemy import text

from crmctl.db.engine import Database
from crmctl.erasure.suppression import find_suppressed
from tests.conftest import Cli
from tests.erasure.people import ENV, KEY, build, people, snapshot, text_of

LINKS = {  # table -> contact-id columns that tie a row to a person
    "contact": ("id",),
    "contact_identifier": ("contact_id",),
    "source_record": ("contact_id",),
    "merge_decision": ("winner_contact_id", "loser_contact_id"),
    "review_item": ("left_contact_id", "right_contact_id"),
    "interaction": ("contact_id",),
    "product_usage": ("contact_id",),
    "health_signal": ("contact_id",),
    "support_ticket": ("contact_id",),
}
LOGS = {"erasure_request", "erasure_step", "suppression", "audit_event"}


def _columns(table: str) -> list[str]:
    from crmctl.db.models import TENANT_TABLES

    return next([c.name for c in m.__table__.columns] for m in TENANT_TABLES if m.__tablename__ == table)


def _linked_rows(db: Database, before: dict, contact_ids: set[int]) -> set[tuple[str, int]]:
    touched = set()
    for table, links in LINKS.items():
        cols = _columns(table)
        for row_id, row in before[table].items():
            if any(row[cols.index(link)] in contact_ids for link in links):
                touched.add((table, row_id))
    return touched


def test_erasure_by_email_erases_the_person_everywhere_and_nobody_else(cli: Cli, db: Database) -> None:
    persons = people(4)
    build(db, persons)
    target = persons[0]
    before = snapshot(db)

    created = cli(
        "erasure",
        "request",
        "--email",
        target.email.upper(),
        "--requestor",
        "dpo",
        "--reason",
        "Art. 17",
        "--format",
        "json",
        env=ENV,
    )
    request = json.loads(created.stdout)
    requested = snapshot(db)
    assert request == {
        "request_id": 1,
        "status": "pending",
        "contact_id": target.contact_ids[0],
        "matched_contacts": 2,
    }

    preview = json.loads(cli("erasure", "run", "--dry-run", "--format", "json", env=ENV).stdout)
    counts = {(r["table"], r["action"]): r["rows"] for r in preview}
    assert counts[("contact", "pseudonymise")] == 2  # the contact and its merged-away duplicate
    assert counts[("interaction", "delete")] == 3
    assert counts[("source_record", "scrub")] == 2
    assert counts[("merge_decision", "scrub")] == 1
    assert counts[("review_item", "scrub")] == 1
    assert snapshot(db) == {**requested, "audit_event": snapshot(db)["audit_event"]}  # dry run wrote nothing

    result = cli("erasure", "run", "--format", "json", "--verbose", env=ENV)
    (outcome,) = json.loads(result.stdout)
    assert outcome["status"] == "completed" and outcome["contacts"] == 2 and outcome["remaining"] == ""

    after = snapshot(db)
    subjects = set(target.contact_ids)
    touched = _linked_rows(db, before, subjects)
    # every other row of every table is byte-for-byte the same
    for table, rows in before.items():
        if table in LOGS:
            continue
        for row_id, row in rows.items():
            if (table, row_id) not in touched:
                assert after[table].get(row_id) == row, (table, row_id)
    # the person's rows are gone or hold nothing of theirs
    person_text = text_of({t: {i: r for i, r in after[t].items() if (t, i) in touched} for t in after})
    for secret in [*target.secrets, target.first, target.last]:
        assert secret not in text_of(after), secret
        assert secret.lower() not in person_text.lower()
    for table in ("interaction", "product_usage", "health_signal", "contact_identifier"):
        assert not [i for (t, i) in touched if t == table and i in after[table]]
    contact_cols = _columns("contact")
    for cid in subjects:
        row = dict(zip(contact_cols, after["contact"][cid], strict=True))
        assert row["erased_at"] is not None and row["email"].startswith("erased-")
        assert row["account_id"] == dict(zip(contact_cols, before["contact"][cid], strict=True))["account_id"]
    # the deal still counts (aggregates hold)
    assert len(after["deal"]) == len(before["deal"])

    # the evidence: counts per step, verification, rotation date; no values
    report = json.loads(cli("erasure", "report", "--format", "json").stdout)
    (item,) = report["rows"]
    steps = {s["name"]: s["rows"] for s in item["steps"]}
    assert steps["identify"] == 2 and steps["delete_activity"] == 3 and steps["delete_signals"] == 2
    assert steps["suppress"] == 3 and steps["verify"] == 0
    assert item["verified"] is True and item["backups_rotate_out_by"] is not None
    everything = (
        cli("erasure", "status", "1", "--format", "json").stdout
        + json.dumps(report)
        + text_of({t: after[t] for t in LOGS})
    )
    for secret in [*target.secrets, target.first, target.last, target.email.upper()]:
        assert secret not in everything

    # the suppression list now rejects the person on import
    emails = pl.Series([target.email, persons[1].email])
    phones = pl.Series([None, None], dtype=pl.String)
    with db.session() as session:
        assert find_suppressed(session, key=KEY, emails=emails, phones=phones).to_list() == [True, False]

    # a second run has nothing to do
    assert json.loads(cli("erasure", "run", "--format", "json", env=ENV).stdout) == []


def test_request_matching_no_contact_is_recorded_and_reported(cli: Cli, db: Database) -> None:
    build(db, people(2))
    result = cli(
        "erasure", "request", "--phone", "+44 20 7946 0999", "--requestor", "dpo", "--reason", "x", env=ENV
    )
    assert "matches no contact" in result.stderr
    outcome = json.loads(cli("erasure", "run", "--format", "json", env=ENV).stdout)
    assert [o["status"] for o in outcome] == ["no_match"]
    status = json.loads(cli("erasure", "status", "1", "--format", "json").stdout)
    assert status["status"] == "no_match" and status["verified"] is True and status["contacts"] == 0
    assert "79460999" not in json.dumps(status)
    with db.session() as session:
        stored = session.connection().execute(text("SELECT identity_hashes FROM erasure_request")).scalar()
        suppressed = session.connection().execute(text("SELECT count(*) FROM suppression")).scalar()
    assert "79460999" not in json.dumps(stored) and suppressed == 1


def test_verification_fails_loudly_when_data_remains_then_retry_completes(cli: Cli, db: Database) -> None:
    persons = people(2)
    build(db, persons)
    target, other = persons
    # someone else's note quotes the person's email: not theirs to delete, so verification must catch it
    with db.session(write=True) as s:
        s.connection().execute(
            text("UPDATE interaction SET body = :b WHERE contact_id = :c"),
            {"b": f"cc {target.email.upper()}", "c": other.contact_ids[0]},
        )
    cli(
        "erasure",
        "request",
        "--contact",
        str(target.contact_ids[0]),
        "--requestor",
        "dpo",
        "--reason",
        "x",
        env=ENV,
    )
    failed = cli("erasure", "run", env=ENV, expect=1)
    assert "1 erasure request(s) failed verification (ids 1): the person's data is still in interaction." in (
        failed.stderr.replace("\n", " ")
    )
    assert target.email not in failed.stdout + failed.stderr
    status = json.loads(cli("erasure", "status", "1", "--format", "json").stdout)
    assert status["status"] == "failed" and status["remaining"] == {"interaction": 3}
    assert status["backups_rotate_out_by"] is None

    with db.session(write=True) as s:
        s.connection().execute(
            text("UPDATE interaction SET body = NULL WHERE contact_id = :c"), {"c": other.contact_ids[0]}
        )
    assert json.loads(cli("erasure", "run", "--format", "json", env=ENV).stdout) == []  # failed: not retried
    retried = json.loads(cli("erasure", "run", "--retry-failed", "--format", "json", env=ENV).stdout)
    assert [o["status"] for o in retried] == ["completed"]


def test_erasure_refuses_without_a_key(cli: Cli, db: Database) -> None:
    result = cli(
        "erasure",
        "request",
        "--contact",
        "1",
        "--requestor",
        "a",
        "--reason",
        "b",
        env={"CRMCTL_ERASURE_KEY": ""},
        expect=2,
    )
    assert "No erasure key is configured for this tenant." in result.stderr
    result = cli("erasure", "run", env={"CRMCTL_ERASURE_KEY": "short"}, expect=2)
    assert "shorter than 16 characters" in result.stderr
