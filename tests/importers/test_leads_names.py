"""Lead import: a contact's name is one value (first and last from the same record), so a person's
own records keep matching it, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from crmctl.db.engine import Database
from crmctl.identity.history import source_links
from crmctl.importers.leads import LeadImportOptions, import_leads


def _import(db: Database, path: Path, source: str, id_column: str) -> None:
    import_leads(db, LeadImportOptions(paths=[path], source=source, id_column=id_column, default_region="US"))


def _contacts(db: Database) -> dict[tuple[str, str], int]:
    with db.session() as session:
        links = source_links(session)
    return {(s, r): c for s, r, c in links.iter_rows()}


def _names(db: Database) -> set[tuple[str | None, str | None]]:
    with db.session() as session:
        rows = session.connection().exec_driver_sql(
            "SELECT first_name, last_name FROM contact WHERE merged_into_id IS NULL"
        )
        return {(first, last) for first, last in rows}


def test_a_swapped_name_does_not_become_first_name_twice(db: Database, tmp_path: Path) -> None:
    # a web form gives a first name only; the dialler writes the name swapped; the help desk in order
    web = tmp_path / "web.csv"
    web.write_text("id,Email,First Name\nW1,karen.robinson@aol.com,Karen\n", encoding="utf-8")
    dialler = tmp_path / "dialler.csv"
    dialler.write_text(
        "id,Full Name,Phone,E-mail\nD1,Robinson Karen,(212) 555-0144,karen.robinson@aol.com\n",
        encoding="utf-8",
    )
    support = tmp_path / "support.csv"
    support.write_text("id,Requester Name,Requester Email\nS1,Karen Robinson,karen.robinson@aol.com\n")
    for path, source in ((web, "web_form"), (dialler, "dialler"), (support, "support")):
        _import(db, path, source, "id")
    links = _contacts(db)
    assert len(set(links.values())) == 1, links
    (name,) = _names(db)
    assert sorted(name) == ["Karen", "Robinson"]  # not 'Karen Karen' (the old part-by-part fill)


def test_a_new_contact_takes_its_name_from_one_record(db: Database, tmp_path: Path) -> None:
    # the most recent record has a first name only; the complete (swapped) name is another record's
    dialler = tmp_path / "dialler.csv"
    dialler.write_text(
        "id,Full Name,E-mail,called_at\n"
        "D1,Robinson Karen,karen.robinson@aol.com,2026-01-01T10:00:00\n"
        "D2,Karen,karen.robinson@aol.com,2026-02-01T10:00:00\n",
        encoding="utf-8",
    )
    support = tmp_path / "support.csv"
    support.write_text("id,Requester Name,Requester Email\nS1,Karen Robinson,karen.robinson@aol.com\n")
    _import(db, dialler, "dialler", "id")
    assert {tuple(sorted(n)) for n in _names(db)} == {("Karen", "Robinson")}
    _import(db, support, "support", "id")
    assert len(set(_contacts(db).values())) == 1


def test_a_complete_name_is_kept(db: Database, tmp_path: Path) -> None:
    first = tmp_path / "a.csv"
    first.write_text("id,Email,First Name,Last Name\n1,ann.lee@acme.com,Ann,Lee\n", encoding="utf-8")
    second = tmp_path / "b.csv"
    second.write_text("id,Email,First Name,Last Name\n1,ann.lee@acme.com,ANN,LEE\n", encoding="utf-8")
    _import(db, first, "a", "id")
    _import(db, second, "b", "id")
    assert len(set(_contacts(db).values())) == 1
    assert _names(db) == {("Ann", "Lee")}
