"""Fixtures shared by every test: one database per test, on SQLite and on PostgreSQL.

PostgreSQL: a throwaway database per test, cloned from a template migrated once per test process
(uuid-named, dropped at the end). Without a reachable server the PostgreSQL half is skipped on a
developer's machine and FAILS under CI=true: CI must never silently skip it.
Admin URL: CRMCTL_TEST_PG_ADMIN_URL (default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, create_engine
from typer.testing import CliRunner, Result

from crmctl.db import migrate
from crmctl.db.checkpoints import BackgroundCheckpoints
from crmctl.db.engine import Database, open_database, parse_database_url
from crmctl.main import app

PG_ADMIN_URL = os.environ.get("CRMCTL_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
BACKENDS = ["sqlite", "postgresql"]


def _pg_url(dbname: str) -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{dbname}"


def _admin() -> psycopg.Connection:
    return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str | None]:
    """A migrated template database for this test process, or None when PostgreSQL is absent."""
    try:
        conn = _admin()
    except psycopg.OperationalError as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL} and CI=true: {exc}")
        yield None
        return
    name = f"crmctl_tpl_{uuid.uuid4().hex[:12]}"
    conn.execute(f'CREATE DATABASE "{name}"')
    try:
        migrate.upgrade(_pg_url(name))
        yield name
    finally:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def database_url(
    backend: str, tmp_path: Path, sqlite_template: Path, pg_template: str | None
) -> Iterator[str]:
    """A fresh, migrated database for this test."""
    if backend == "sqlite":
        path = tmp_path / "crm.db"
        shutil.copyfile(sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    if pg_template is None:
        pytest.skip("PostgreSQL is not reachable (this would fail under CI=true)")
    name = f"crmctl_t_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    try:
        yield _pg_url(name)
    finally:
        with _admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_database_url(backend: str, tmp_path: Path, pg_template: str | None) -> Iterator[str]:
    """A database with no schema at all (for migration tests)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    if pg_template is None:
        pytest.skip("PostgreSQL is not reachable (this would fail under CI=true)")
    name = f"crmctl_e_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_url(name)
    finally:
        with _admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """The test database opened for tenant 'default' (as the app role on PostgreSQL)."""
    database = open_database(database_url, "default")
    yield database
    database.dispose()


def owner_engine(db: Database) -> Engine:
    """PostgreSQL: an engine connecting as the database's owner (the URL's user, not the app role
    crmctl switches to), for what the app role may not do: create or alter tables."""
    return create_engine(parse_database_url(db.url))


def create_scratch_table(db: Database, name: str, columns: str) -> None:
    """A table of the test's own, ``CREATE TABLE name (columns)``: on PostgreSQL made by the owner
    and granted to the app role, which creates none."""
    ddl = f"CREATE TABLE {name} ({columns})"
    if db.is_postgresql:
        owner = owner_engine(db)
        with owner.begin() as conn:
            conn.exec_driver_sql(ddl)
            conn.exec_driver_sql(f"GRANT ALL ON {name} TO crmctl_app")
        owner.dispose()
        return
    with db.session(write=True) as session:
        session.connection().exec_driver_sql(ddl)


@pytest.fixture
def checkpoint_commits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per commit reported to a WAL checkpoint thread (``BackgroundCheckpoints.committed``),
    which still does its work."""
    commits: list[int] = []
    original = BackgroundCheckpoints.committed

    def spy(self: BackgroundCheckpoints) -> None:
        commits.append(1)
        original(self)

    monkeypatch.setattr(BackgroundCheckpoints, "committed", spy)
    return commits


@dataclass
class Cli:
    """Runs the real CLI in-process against the test database."""

    database_url: str
    tenant: str = "default"

    def __call__(
        self, *args: str, expect: int | None = 0, input: str | None = None, env: dict[str, str] | None = None
    ) -> Result:
        full = ["--db", self.database_url, "--tenant", self.tenant, "--actor", "tester", *args]
        result = CliRunner().invoke(app, full, input=input, env=env)
        if expect is not None and result.exit_code != expect:
            detail = result.stderr if result.stderr else ""
            exc = f"\nexception: {result.exception!r}" if result.exception else ""
            raise AssertionError(
                f"crmctl {' '.join(args)} exited {result.exit_code}, expected {expect}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{detail}{exc}"
            )
        return result


@pytest.fixture
def cli(database_url: str) -> Cli:
    return Cli(database_url)


def run_cli(*args: str, expect: int | None = 0, env: dict[str, str] | None = None) -> Result:
    """The CLI without a database fixture (for --help, --version, usage errors)."""
    result = CliRunner().invoke(app, list(args), env=env)
    if expect is not None and result.exit_code != expect:
        raise AssertionError(
            f"crmctl {' '.join(args)} exited {result.exit_code}, expected {expect}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}\nexception: {result.exception!r}"
        )
    return result


def lines(text: str) -> Sequence[str]:
    return [line for line in text.splitlines() if line.strip()]
