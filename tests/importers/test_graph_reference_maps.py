"""ReferenceMaps (whole-table key maps of a large import) answer exactly like per-batch lookups,
and read the table again once another connection has committed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest
from sqlalchemy import text

from crmctl.db.engine import Database, open_database
from crmctl.importers import graph_sql
from crmctl.importers.graph import ImportOptions, _mapped_references, import_file
from crmctl.importers.graph_sql import MAX_RELOADS, ReferenceMaps, lookup

CONTACTS = """external_id,first_name,last_name,email
C1,Ann,Lee,ann@example.com
C2,Bob,Ray,shared@example.com
C3,Cy,Ray,shared@example.com
C4,Dee,Fox,dee@example.com
"""
LIVE = "merged_into_id IS NULL AND erased_at IS NULL"


@pytest.fixture
def contacts(db: Database, tmp_path: Path) -> Database:
    path = tmp_path / "contacts.csv"
    path.write_text(CONTACTS)
    import_file(db, "contacts", path, ImportOptions(source="crm"))
    with db.session(write=True) as session:  # C4 merged into C1: no longer a live email match
        session.execute(
            text(
                "UPDATE contact SET merged_into_id = (SELECT id FROM contact WHERE external_id = 'C1') "
                "WHERE external_id = 'C4'"
            )
        )
    return db


def _sorted(frame: pl.DataFrame) -> list[tuple[object, ...]]:
    return sorted(frame.rows(), key=repr)


@pytest.mark.parametrize(
    ("column", "keys", "where", "params"),
    [
        ("external_id", ["C1", "C3", "C9", None, "C1"], "external_source = :src", {"src": "crm"}),
        ("external_id", ["C1", "C2"], "external_source = :src", {"src": "other"}),
        ("email_norm", ["ann@example.com", "shared@example.com", "dee@example.com", "x@y.z"], LIVE, {}),
    ],
)
def test_maps_answer_like_lookups(
    contacts: Database, column: str, keys: list[str | None], where: str, params: dict[str, str]
) -> None:
    maps = ReferenceMaps(["contact"])
    series = pl.Series("k", keys, dtype=pl.String)
    with contacts.session() as session:
        expected = lookup(
            session, "contact", column, series, select=("id", "account_id"), where=where, **params
        )
        mapped = maps.lookup(
            session, "contact", column, series, select=("id", "account_id"), where=where, **params
        )
    assert _sorted(mapped) == _sorted(expected)
    if column == "email_norm":  # the ambiguous email is there twice, the merged contact's not at all
        assert sorted(mapped["key"].to_list()) == [
            "ann@example.com",
            "shared@example.com",
            "shared@example.com",
        ]


def test_maps_read_again_after_another_connection_commits(contacts: Database) -> None:
    maps = ReferenceMaps(["contact"])
    wanted = pl.Series("k", ["new@example.com"])

    def found() -> int:
        with contacts.session() as session:
            return maps.lookup(session, "contact", "email_norm", wanted, where=LIVE).height

    assert found() == 0
    other = open_database(contacts.url, contacts.tenant, app_role=None)
    try:
        with other.session(write=True) as session:
            session.execute(
                text("UPDATE contact SET email_norm = 'new@example.com' WHERE external_id = 'C1'")
            )
    finally:
        other.dispose()
    assert found() == 1


def test_large_import_reads_references_through_maps_and_rejects_the_same(
    contacts: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = ["external_id,contact_external_id,contact_email,kind,occurred_at"]
    for i in range(300):
        ref = ("C1,", ",shared@example.com", "C9,", ",dee@example.com", "C2,")[i % 5]
        rows.append(f"I{i:04d},{ref},call,2026-01-0{1 + i % 9}T10:00:00Z")
    path = tmp_path / "interactions.csv"
    path.write_text("\n".join(rows) + "\n")
    # SQLite reads the contacts as a map (the file's rows outnumber them); PostgreSQL looks them up.
    expected_maps = [] if contacts.is_postgresql else ["contact"]
    assert _mapped_references(contacts, "interactions", path) == expected_maps
    probes: list[str] = []
    real_lookup = graph_sql.lookup

    def counted(session: Any, table: str, *args: Any, **kwargs: Any) -> pl.DataFrame:
        probes.append(table)
        return real_lookup(session, table, *args, **kwargs)

    monkeypatch.setattr(graph_sql, "lookup", counted)
    result = import_file(contacts, "interactions", path, ImportOptions(source="crm", batch_rows=50))
    assert result.tables["interaction"].created == 120  # C1 and C2 resolve
    # six batches: per-batch contact probes only where the contacts are not mapped
    assert probes.count("contact") == (12 if contacts.is_postgresql else 0)
    reasons = {reason: n for (_, reason), n in result.reasons.items()}
    assert reasons == {
        "matches several contacts by email": 60,
        "no contact with this external id in source 'crm'": 60,
        "no contact with this email": 60,
    }


def test_maps_give_way_to_lookups_when_other_writers_keep_committing(contacts: Database) -> None:
    maps = ReferenceMaps(["contact"])
    other = open_database(contacts.url, contacts.tenant, app_role=None)
    try:
        for round_ in range(MAX_RELOADS + 3):
            email = f"round{round_}@example.com"
            with other.session(write=True) as session:
                session.execute(
                    text("UPDATE contact SET email_norm = :e WHERE external_id = 'C1'"), {"e": email}
                )
            with contacts.session() as session:
                found = maps.lookup(session, "contact", "email_norm", pl.Series([email]), where=LIVE)
            assert found.height == 1  # always the current answer, map or lookup
    finally:
        other.dispose()
    assert maps.tables == (frozenset() if not contacts.is_postgresql else frozenset({"contact"}))
