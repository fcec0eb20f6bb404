"""An erasure run, or another writer, and a lead import at once (they take different job locks).

PostgreSQL: the import locks the existing contacts a batch writes to: an erasure that starts
during the batch waits for it and then scrubs what it wrote; a contact erased between the batch's
read and its lock stops the batch with one sentence and nothing written. Either way no personal
data of the erased person comes back. SQLite: a batch written in line holds the database's write
lock from its first read; one written by the writer process (a file of several batches) was read
outside it, and the writer checks again under the lock what the read relied on."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import crmctl.importers.leads as leads
from crmctl.db.batch_writer import ProcessBatchWriter
from crmctl.db.engine import Database, open_database
from crmctl.erasure.run import pseudonymise_contacts
from crmctl.errors import CrmctlError

WEB = "id,Email,First Name,Last Name\nW1,karen.robinson@aol.com,Karen,\n"
DIALLER = "id,Full Name,Phone,E-mail\nD1,Karen Robinson,(212) 555-0144,karen.robinson@aol.com\n"
KEY = b"k" * 32


def _options(path: Path, source: str, batch_rows: int = leads.DEFAULT_BATCH_ROWS) -> leads.LeadImportOptions:
    return leads.LeadImportOptions(
        paths=[path], source=source, id_column="id", default_region="US", batch_rows=batch_rows
    )


def _erase_all(db: Database) -> None:
    other = open_database(db.url, db.tenant)
    try:
        with other.session(write=True) as session:
            ids = [r[0] for r in session.connection().exec_driver_sql("SELECT id FROM contact")]
            pseudonymise_contacts(session, KEY, ids)
    finally:
        other.dispose()


def _personal(db: Database) -> list[str]:
    """The person's own values still held anywhere in contact (not the pseudonyms)."""
    with db.session() as session:
        rows = session.connection().exec_driver_sql(
            "SELECT first_name, last_name, first_name_norm, last_name_norm, email, email_norm, phone, "
            "phone_e164 FROM contact WHERE erased_at IS NOT NULL"
        )
        held = [str(value).lower() for row in rows for value in row if value is not None]
    return [v for v in held if any(p in v for p in ("karen", "robinson", "555", "aol.com"))]


def _web_imported(db: Database, tmp_path: Path, dialler_rows: str) -> tuple[Database, Path]:
    """The web form's Karen imported; the dialler's file written, not imported yet."""
    web = tmp_path / "web.csv"
    web.write_text(WEB)
    leads.import_leads(db, _options(web, "web_form"))
    dialler = tmp_path / "dialler.csv"
    dialler.write_text(dialler_rows)
    return db, dialler


@pytest.fixture
def imported(db: Database, backend: str, tmp_path: Path) -> tuple[Database, Path]:
    if backend != "postgresql":
        pytest.skip("SQLite: a batch holds the write lock from its first read; no erasure can interleave")
    return _web_imported(db, tmp_path, DIALLER)


def test_an_erasure_during_a_batch_waits_and_then_scrubs_it(
    imported: tuple[Database, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, dialler = imported
    started: list[threading.Thread] = []
    original = leads._update_existing

    def erase_meanwhile(*args: object, **kwargs: object) -> None:
        eraser = threading.Thread(target=_erase_all, args=(db,))
        eraser.start()
        eraser.join(timeout=1.0)
        assert eraser.is_alive(), "the erasure should wait for the batch's lock"
        started.append(eraser)
        original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(leads, "_update_existing", erase_meanwhile)
    leads.import_leads(db, _options(dialler, "dialler"))
    started[0].join(timeout=30)
    assert not started[0].is_alive()
    assert _personal(db) == []


def test_a_contact_erased_before_the_lock_stops_the_batch(
    imported: tuple[Database, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, dialler = imported
    original = leads._hold_existing

    def erase_first(session: object, contact_ids: object, read_elsewhere: bool) -> None:
        _erase_all(db)
        original(session, contact_ids, read_elsewhere)  # type: ignore[arg-type]

    monkeypatch.setattr(leads, "_hold_existing", erase_first)
    with pytest.raises(CrmctlError, match="was erased while the batch ran"):
        leads.import_leads(db, _options(dialler, "dialler"))
    assert _personal(db) == []
    with db.session() as session:
        assert session.connection().exec_driver_sql("SELECT count(*) FROM source_record").scalar() == 1


# Two batches of one row each make a file of several batches: SQLite writes them in a process.
DIALLER_TWO = DIALLER + "D2,Omar Haddad,(646) 555-0188,omar.haddad@aol.com\n"


@pytest.fixture
def imported_sqlite(db: Database, backend: str, tmp_path: Path) -> tuple[Database, Path]:
    if backend != "sqlite":
        pytest.skip("SQLite's writer process; PostgreSQL's locks are tested above")
    return _web_imported(db, tmp_path, DIALLER_TWO)


def _before_first_write(monkeypatch: pytest.MonkeyPatch, action: object) -> None:
    """Run ``action`` in the importer after the first batch was read, before it is written."""
    original = ProcessBatchWriter.submit
    done: list[bool] = []

    def submit(self: ProcessBatchWriter, ops: list[object]) -> None:
        if not done:
            done.append(True)
            action()  # type: ignore[operator]
        original(self, ops)  # type: ignore[arg-type]

    monkeypatch.setattr(ProcessBatchWriter, "submit", submit)


def test_sqlite_a_contact_erased_between_read_and_write_stops_the_batch(
    imported_sqlite: tuple[Database, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, dialler = imported_sqlite
    _before_first_write(monkeypatch, lambda: _erase_all(db))
    with pytest.raises(CrmctlError, match="was erased while the batch ran"):
        leads.import_leads(db, _options(dialler, "dialler", batch_rows=1))
    assert _personal(db) == []
    with db.session() as session:
        assert session.connection().exec_driver_sql("SELECT count(*) FROM source_record").scalar() == 1


def test_sqlite_another_writer_between_read_and_write_stops_the_batch_and_a_rerun_finishes(
    imported_sqlite: tuple[Database, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch drew its contact ids from what it read; a contact another program added meanwhile
    took one of them. The batch stops with a sentence (not a key violation), and a re-run imports
    the file whole."""
    db, dialler = imported_sqlite
    # the first batch is a new person: it draws a contact id
    header, karen, omar = DIALLER_TWO.splitlines()
    dialler.write_text(f"{header}\n{omar}\n{karen}\n")
    options = _options(dialler, "dialler", batch_rows=1)

    def add_contact() -> None:
        other = open_database(db.url, db.tenant)
        with other.session(write=True) as session:
            session.connection().exec_driver_sql(
                "INSERT INTO contact (tenant_id, lifecycle_stage, created_at, updated_at, field_provenance) "
                "VALUES ('default', 'lead', '2026-01-01', '2026-01-01', '{}')"
            )
        other.dispose()

    _before_first_write(monkeypatch, add_contact)
    with pytest.raises(CrmctlError, match="Another program wrote to the database"):
        leads.import_leads(db, options)
    monkeypatch.undo()
    result = leads.import_leads(db, options)
    assert result.counts["rows_read"] == 2 and result.counts["merged_into_existing"] == 1
    with db.session() as session:
        assert session.connection().exec_driver_sql("SELECT count(*) FROM source_record").scalar() == 3
