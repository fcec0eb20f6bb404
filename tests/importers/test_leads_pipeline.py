"""Lead batch N+1 is resolved while batch N is still being written (``_import_pipelined``: on
PostgreSQL, and on SQLite for a file of several batches): the next batch reads a snapshot that may
lack batch N and lays batch N's writes over it. Whatever the timing, the result must be the one
of batches read and written one after another (SQLite's in-line path)."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import crmctl.importers.leads as leads
from crmctl.db import batch_writer as batch_writer_module
from crmctl.db import migrate
from crmctl.db.batch_writer import ProcessBatchWriter, ThreadBatchWriter
from crmctl.db.engine import Database, open_database
from crmctl.demo.leads import write_lead_files
from crmctl.identity.history import source_links

BATCH_ROWS = 137  # many batches per file, and the same person in several of them


def _outcome(db: Database, files: list[Any]) -> dict[str, Any]:
    counts = [
        leads.import_leads(db, f.import_options(default_region="US", batch_rows=BATCH_ROWS)).counts
        for f in files
    ]
    with db.session() as session:
        links = source_links(session)
        conn = session.connection()
        decisions = Counter(
            (rule, kind, loser is None)
            for rule, kind, loser in conn.exec_driver_sql(
                "SELECT rule, kind, loser_contact_id FROM merge_decision"
            )
        )
        # what undo restores: the contacts' fields as each batch found them
        befores = Counter(
            json.dumps(before if isinstance(before, dict) else json.loads(before), sort_keys=True)
            for (before,) in conn.exec_driver_sql(
                "SELECT before FROM merge_decision WHERE before IS NOT NULL"
            )
        )  # JSON on PostgreSQL, text on SQLite
        reviews = conn.exec_driver_sql("SELECT count(*) FROM review_item").scalar()
        identifiers = conn.exec_driver_sql("SELECT count(*) FROM contact_identifier").scalar()
        contacts = conn.exec_driver_sql("SELECT count(*) FROM contact WHERE merged_into_id IS NULL").scalar()
    people: dict[int, list[str]] = {}
    for source, record, contact in links.iter_rows():
        people.setdefault(contact, []).append(f"{source}:{record}")
    return {
        "people": sorted(sorted(records) for records in people.values()),
        "counts": counts,
        "decisions": decisions,
        "befores": befores,
        "reviews": reviews,
        "identifiers": identifiers,
        "contacts": contacts,
    }


def _serial_reference(files: list[Any], tmp_path: Path) -> dict[str, Any]:
    """The same batches on SQLite, each read and written in one transaction, one after another."""
    url = f"sqlite:///{tmp_path / 'reference.db'}"
    migrate.upgrade(url)
    reference = open_database(url, "default")
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(leads, "several_batches", lambda *_args: False)  # the in-line path
            return _outcome(reference, files)
    finally:
        reference.dispose()


def test_batches_resolved_while_the_previous_one_writes_match_one_after_another(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = write_lead_files(tmp_path / "files", people=400, seed=7)
    expected = _serial_reference(files, tmp_path)

    # Hold each batch's writes until the next batch has been resolved: submit() keeps them, and
    # sends (and waits for) those it kept before, so they commit after the next batch's read; the
    # writer's last wait() sends the last batch. Every next batch then reads without the previous
    # one, whose writes must come from the delta laid over that read (threads on PostgreSQL, the
    # writer process on SQLite).
    overlapped: list[bool] = []
    original_resolve = leads._resolve_batch

    def resolve_and_count(*args: Any, **kwargs: Any) -> Any:
        overlapped.append(kwargs.get("delta") is not None)
        return original_resolve(*args, **kwargs)

    for writer in (ThreadBatchWriter, ProcessBatchWriter):
        submit, wait = writer.submit, writer.wait

        def send_held(self: Any, submit: Any = submit, wait: Any = wait) -> None:
            held = self.__dict__.pop("held", None)
            if held is not None:
                submit(self, held)
                wait(self)

        def hold(self: Any, ops: list[Any], send_held: Any = send_held) -> None:
            send_held(self)
            self.__dict__["held"] = ops

        def wait_sending_last(self: Any, keep: int = 0, send_held: Any = send_held, wait: Any = wait) -> None:
            if keep == 0:
                send_held(self)
            wait(self, keep)

        monkeypatch.setattr(writer, "submit", hold)
        monkeypatch.setattr(writer, "wait", wait_sending_last)
    monkeypatch.setattr(leads, "_resolve_batch", resolve_and_count)
    got = _outcome(db, files)
    assert sum(overlapped) > 10  # batches did resolve while the previous one was unwritten
    assert got == expected
    assert len(got["people"]) < sum(len(p) for p in got["people"])  # records were merged


def test_batches_written_two_at_a_time_match_one_after_another(
    db: Database, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unheld: on PostgreSQL a batch's inserts start while the one before commits, and later
    batches fill and merge the contacts earlier ones wrote; the outcome is still the serial one."""
    files = write_lead_files(tmp_path / "files", people=400, seed=7)
    expected = _serial_reference(files, tmp_path)
    started_behind_one: list[bool] = []
    write = batch_writer_module._write

    def note_overlap(db: Any, ops: Any, checkpoints: Any, previous: Any, overlapped: bool) -> None:
        started_behind_one.append(previous is not None and not previous.done())
        write(db, ops, checkpoints, previous, overlapped)

    update_existing = leads._update_existing

    def slow_update_existing(*args: Any) -> None:  # each batch's writes outlast the next one's read
        time.sleep(0.1)
        update_existing(*args)

    monkeypatch.setattr(batch_writer_module, "_write", note_overlap)
    if backend == "postgresql":
        monkeypatch.setattr(leads, "_update_existing", slow_update_existing)
    got = _outcome(db, files)
    assert got == expected
    if backend == "postgresql":
        assert any(started_behind_one)  # a batch started while the one before was still in flight


def test_a_batch_with_nothing_to_write_between_two_keeps_them_linked(db: Database, tmp_path: Path) -> None:
    """The middle batch is all rejects: it writes nothing, and the third batch still finds the
    first one's contacts (committed by then, or laid over from its delta)."""
    path = tmp_path / "leads.csv"
    path.write_text(
        "id,Email,First Name,Last Name\n"
        "1,ann.lee@example.org,Ann,Lee\n2,bo.chan@example.org,Bo,Chan\n"
        "3,,Nobody,Here\n4,not-an-email,No,One\n"
        "5,ANN.LEE@example.org,Ann,Lee\n6,cy.diaz@example.org,Cy,Diaz\n"
    )
    options = leads.LeadImportOptions(paths=[path], source="web", id_column="id", batch_rows=2)
    result = leads.import_leads(db, options)
    counts = result.counts
    assert (counts["rejected"], counts["new_contacts"], counts["merged_into_existing"]) == (2, 3, 1)
    with db.session() as session:
        links = {record: contact for _source, record, contact in source_links(session).iter_rows()}
    assert links["1"] == links["5"] and len({links["1"], links["2"], links["6"]}) == 3
