"""PostgreSQL: an erasure run and a lead import at once (they take different job locks).

The import locks the existing contacts a batch writes to: an erasure that starts during the batch
waits for it and then scrubs what it wrote; a contact erased between the batch's read and its lock
stops the batch with one sentence and nothing written. Either way no personal data of the erased
person comes back. (SQLite: a batch holds the database's write lock from its first read.)"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import crmctl.importers.leads as leads
from crmctl.db.engine import Database, open_database
from crmctl.erasure.run import pseudonymise_contacts
from crmctl.errors import CrmctlError

WEB = "id,Email,First Name,Last Name\nW1,karen.robinson@aol.com,Karen,\n"
DIALLER = "id,Full Name,Phone,E-mail\nD1,Karen Robinson,(212) 555-0144,karen.robinson@aol.com\n"
KEY = b"k" * 32


def _options(path: Path, source: str) -> leads.LeadImportOptions:
    return leads.LeadImportOptions(paths=[path], source=source, id_column="id", default_region="US")


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


@pytest.fixture
def imported(db: Database, backend: str, tmp_path: Path) -> tuple[Database, Path]:
    if backend != "postgresql":
        pytest.skip("SQLite: a batch holds the write lock from its first read; no erasure can interleave")
    web = tmp_path / "web.csv"
    web.write_text(WEB)
    leads.import_leads(db, _options(web, "web_form"))
    dialler = tmp_path / "dialler.csv"
    dialler.write_text(DIALLER)
    return db, dialler


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

    def erase_first(session: object, contact_ids: object) -> None:
        _erase_all(db)
        original(session, contact_ids)  # type: ignore[arg-type]

    monkeypatch.setattr(leads, "_hold_existing", erase_first)
    with pytest.raises(CrmctlError, match="was erased while the batch ran"):
        leads.import_leads(db, _options(dialler, "dialler"))
    assert _personal(db) == []
    with db.session() as session:
        assert session.connection().exec_driver_sql("SELECT count(*) FROM source_record").scalar() == 1
