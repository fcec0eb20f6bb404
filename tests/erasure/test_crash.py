"""Crash safety: SIGKILL a real `python -m crmctl erasure run` mid-run, then run again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import text

from crmctl.db.engine import Database
from crmctl.erasure.requests import create_request
from tests.conftest import Cli
from tests.erasure.people import ENV, KEY, build, people, snapshot, text_of

PERSONS = 24
ERASED = 18


def _statuses(db: Database) -> dict[int, str]:
    with db.session() as s:
        return dict(s.connection().execute(text("SELECT id, status FROM erasure_request")).all())


def _steps(db: Database) -> int:
    with db.session() as s:
        return s.connection().execute(text("SELECT count(*) FROM erasure_step")).scalar() or 0


@pytest.mark.slow
def test_killed_run_resumes_and_never_completes_with_data_left(
    cli: Cli, db: Database, database_url: str
) -> None:
    persons = people(PERSONS)
    build(db, persons)
    erased, kept = persons[:ERASED], persons[ERASED:]
    before = snapshot(db)
    with db.session(write=True) as session:
        for p in erased:
            create_request(session, key=KEY, requestor="dpo", reason="crash test", email=p.email)

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "crmctl",
            "--db",
            database_url,
            "--quiet",
            "erasure",
            "run",
            "--batch-size",
            "4",
        ],
        env={**os.environ, **ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while _steps(db) < 6 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    statuses = _statuses(db)
    assert set(statuses.values()) - {"completed"}, "the kill should land mid-run"
    after_kill = text_of(snapshot(db))
    by_email = {p.email: p for p in erased}
    for request_id, status in statuses.items():
        if status == "completed":
            person = by_email[erased[request_id - 1].email]
            assert not any(secret in after_kill for secret in person.secrets)

    cli("erasure", "run", "--batch-size", "4", "--verbose", env=ENV)
    assert set(_statuses(db).values()) == {"completed"}
    after = snapshot(db)
    everything = text_of(after)
    for p in erased:
        assert not any(secret in everything for secret in p.secrets)
    # the people nobody asked to erase: every row of theirs byte-for-byte unchanged
    kept_ids = {c for p in kept for c in p.contact_ids}
    erased_ids = {c for p in erased for c in p.contact_ids}
    for table, rows in before.items():
        if table in {"erasure_request", "erasure_step", "suppression", "audit_event"}:
            continue
        for row_id, row in rows.items():
            text_row = repr(row)
            if any(secret in text_row for p in erased for secret in p.secrets) or _links(
                table, row, erased_ids
            ):
                continue
            assert after[table].get(row_id) == row, (table, row_id)
    assert kept_ids  # sanity: the kept people exist and were compared above


def _links(table: str, row: tuple, contact_ids: set[int]) -> bool:
    from tests.commands.test_erasure import LINKS, _columns

    cols = _columns(table)
    return any(row[cols.index(link)] in contact_ids for link in LINKS.get(table, ()))
