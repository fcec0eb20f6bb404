"""Re-importing updates or skips what is stored, whatever order the database sorts keys in.

The importers narrow their lookups to the span of stored keys on SQLite (bytewise, like polars);
on PostgreSQL a database whose collation sorts 'a1' before 'B1' (ICU en-US) must still find every
stored key, so there every key is looked up."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import psycopg
import pytest

from crmctl.db import migrate
from crmctl.db.engine import Database, open_database
from crmctl.importers.graph import ImportOptions, _maybe_stored, import_file
from tests.conftest import IN_CI, _admin, _pg_url

ACCOUNTS = "external_id,name,domain\nB1,Bravo,bravo.example\na1,alpha,alpha.example\nZ9,Zulu,zulu.example\n"
INTERACTIONS = (
    "external_id,account_external_id,kind,occurred_at\n"
    "B-1,B1,call,2026-01-02T10:00:00Z\na-1,a1,email,2026-01-03T10:00:00Z\n"
)


@pytest.fixture(params=["sqlite", "postgresql-icu-en-us"])
def any_order_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'order.db'}"
        migrate.upgrade(url)
        db = open_database(url, "default")
        yield db
        db.dispose()
        return
    try:
        admin = _admin()
    except psycopg.OperationalError as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL is not reachable and CI=true: {exc}")
        pytest.skip("PostgreSQL is not reachable")
    name = f"crmctl_icu_{uuid.uuid4().hex[:10]}"
    admin.execute(
        f"CREATE DATABASE \"{name}\" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' "
        "LOCALE 'C.UTF-8'"
    )
    try:
        migrate.upgrade(_pg_url(name))
        db = open_database(_pg_url(name), "default")
        with db.session() as session:  # the premise: this database sorts 'a1' before 'B1'
            assert session.connection().exec_driver_sql("SELECT 'a1' < 'B1'").scalar() is True
        yield db
        db.dispose()
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_reimports_find_every_stored_key(any_order_db: Database, tmp_path: Path) -> None:
    accounts = tmp_path / "accounts.csv"
    accounts.write_text(ACCOUNTS)
    interactions = tmp_path / "interactions.csv"
    interactions.write_text(INTERACTIONS)
    options = ImportOptions(source="crm")
    first = import_file(any_order_db, "accounts", accounts, options)
    assert first.tables["account"].created == 3
    again = import_file(any_order_db, "accounts", accounts, options)
    assert (again.tables["account"].created, again.tables["account"].updated) == (0, 3)
    assert import_file(any_order_db, "interactions", interactions, options).tables["interaction"].created == 2
    repeat = import_file(any_order_db, "interactions", interactions, options).tables["interaction"]
    assert (repeat.created, repeat.skipped) == (0, 2)


def test_sqlite_looks_up_only_keys_inside_the_stored_span(any_order_db: Database, tmp_path: Path) -> None:
    accounts = tmp_path / "accounts.csv"
    accounts.write_text(ACCOUNTS)
    import_file(any_order_db, "accounts", accounts, ImportOptions(source="crm"))
    batch = pl.Series(["A0", "B1", "C5", "Z9", "z0", None])
    with any_order_db.session() as session:
        maybe = _maybe_stored(
            session, "account", batch, column="external_id", where="external_source = :src", src="crm"
        )
        nothing = _maybe_stored(
            session,
            "account",
            pl.Series(["b0", "b1"]),
            column="external_id",
            where="external_source = :src",
            src="crm",
        )
    if any_order_db.is_postgresql:  # no narrowing under the database's own collation
        assert maybe.to_list() == ["A0", "B1", "C5", "Z9", "z0"] and nothing.to_list() == ["b0", "b1"]
    else:  # stored B1..Z9 (bytewise; a1 sorts after Z9 and outside b0..b1)
        assert maybe.to_list() == ["B1", "C5", "Z9"] and nothing.to_list() == []
