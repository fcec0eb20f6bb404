"""crmctl erasure replay (after a restore) and crmctl retention run."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import make_url

from crmctl.db.engine import Database
from tests.conftest import PG_ADMIN_URL, Cli
from tests.erasure.people import ENV, build, people, snapshot, text_of


def _copy_database(db: Database, url: str, backup: bool, tmp_path: Path) -> None:
    """Back up (backup=True) or restore the test database: file copy or PostgreSQL template."""
    db.dispose()
    name = make_url(url).database or ""
    if url.startswith("sqlite"):
        saved = tmp_path / "backup.db"
        source, target = (Path(name), saved) if backup else (saved, Path(name))
        for suffix in ("-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(source, target)
        return
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        if backup:
            admin.execute(f'CREATE DATABASE "{name}_bak" TEMPLATE "{name}"')
        else:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{name}_bak"')
            admin.execute(f'DROP DATABASE "{name}_bak"')


def test_replay_from_the_log_erases_again_after_a_restore(
    cli: Cli, db: Database, database_url: str, tmp_path: Path
) -> None:
    persons = people(3)
    build(db, persons)
    target = persons[1]
    _copy_database(db, database_url, True, tmp_path)  # the nightly backup, taken before the erasure

    cli("erasure", "request", "--phone", target.phone, "--requestor", "dpo", "--reason", "x", env=ENV)
    cli("erasure", "run", env=ENV)
    log = tmp_path / "erasure-log.json"
    log.write_text(cli("erasure", "report", "--format", "json").stdout)
    assert not any(secret in log.read_text() for secret in target.secrets)

    _copy_database(db, database_url, False, tmp_path)  # disaster: restore the backup
    assert target.email in text_of(snapshot(db))  # the person is back

    preview = json.loads(
        cli("erasure", "replay", "--log", str(log), "--dry-run", "--format", "json", env=ENV).stdout
    )
    assert preview == [{"replay_of": 1, "request_id": None, "contacts": 1, "status": "planned"}]
    refused = cli("erasure", "replay", "--log", str(log), env=ENV, expect=2)
    assert "Refusing without confirmation" in refused.stderr
    replayed = json.loads(
        cli("erasure", "replay", "--log", str(log), "--yes", "--format", "json", env=ENV).stdout
    )
    assert replayed == [{"replay_of": 1, "request_id": 1, "contacts": 1, "status": "completed"}]
    everything = text_of(snapshot(db))
    assert not any(secret in everything for secret in target.secrets)
    assert persons[0].email in everything and persons[2].email in everything
    status = json.loads(cli("erasure", "status", "1", "--format", "json").stdout)
    assert status["requestor"] == "replay" and status["replay_of"] == 1 and status["verified"] is True


def test_replay_rejects_a_file_that_is_not_an_erasure_log(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text('{"hello": 1}')
    result = cli("erasure", "replay", "--log", str(bad), "--yes", env=ENV, expect=2)
    assert "is not JSON from 'crmctl erasure report'" in result.stderr


def test_retention_run_pseudonymises_expired_legitimate_interest_and_requests_erasure_on_withdrawal(
    cli: Cli, db: Database
) -> None:
    persons = people(4)
    build(db, persons, duplicates=False)
    old = datetime.now(UTC) - timedelta(days=3 * 365)
    ids = [p.contact_ids[0] for p in persons]
    with db.session(write=True) as s:
        conn = s.connection()
        conn.execute(
            text(
                "UPDATE contact SET retention_policy = 'li-24m', lawful_basis = 'legitimate_interest', "
                "last_interaction_at = :old WHERE id IN (:a, :b)"
            ),
            {"old": old, "a": ids[0], "b": ids[1]},
        )
        conn.execute(
            text("UPDATE contact SET last_interaction_at = :now WHERE id = :b"),
            {"now": datetime.now(UTC), "b": ids[1]},
        )
        conn.execute(
            text("UPDATE contact SET lawful_basis = 'consent', consent_withdrawn_at = :now WHERE id = :c"),
            {"now": datetime.now(UTC), "c": ids[2]},
        )
        conn.execute(text("UPDATE contact SET retention_policy = 'forever' WHERE id = :d"), {"d": ids[3]})
    before = snapshot(db)

    dry = cli("retention", "run", "--dry-run", "--format", "json", env=ENV)
    planned = json.loads(dry.stdout)
    assert planned == [
        {"contact_id": ids[0], "policy": "li-24m", "action": "pseudonymise"},
        {"contact_id": ids[2], "policy": "consent", "action": "erasure request"},
    ]
    assert "unknown retention policy 'forever'" in dry.stderr
    assert {t: r for t, r in snapshot(db).items() if t != "audit_event"} == {
        t: r for t, r in before.items() if t != "audit_event"
    }

    cli("retention", "run", env=ENV)
    after = snapshot(db)
    contact = dict(
        zip(
            [c.name for c in __import__("crmctl.db.models", fromlist=["Contact"]).Contact.__table__.columns],
            after["contact"][ids[0]],
            strict=True,
        )
    )
    assert contact["email"].startswith("erased-") and contact["erased_at"] is not None
    assert persons[0].email not in text_of(
        {"contact": after["contact"], "contact_identifier": after["contact_identifier"]}
    )
    assert after["contact"][ids[1]] == before["contact"][ids[1]]  # recent interaction: kept
    pending = json.loads(cli("erasure", "status", "--format", "json").stdout)
    assert [(r["contact_id"], r["status"], r["requestor"]) for r in pending] == [
        (ids[2], "pending", "retention")
    ]
    # a second retention run finds nothing new; the erasure run completes the request
    assert json.loads(cli("retention", "run", "--format", "json", env=ENV).stdout) == []
    assert [o["status"] for o in json.loads(cli("erasure", "run", "--format", "json", env=ENV).stdout)] == [
        "completed"
    ]
    assert not any(s in text_of(snapshot(db)) for s in persons[2].secrets)
