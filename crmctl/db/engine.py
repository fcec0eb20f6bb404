"""Engines and tenant-bound sessions for SQLite and PostgreSQL.

Only ``crmctl.db`` knows the dialect differences. A :class:`Database` is bound to one tenant: on
PostgreSQL every transaction starts with ``set_config('app.tenant_id', …, true)`` so row-level
security applies, and after connecting crmctl switches to the application role (``SET ROLE``) so
that RLS binds it even when it logged in as a superuser or the tables' owner. On SQLite every query
filters by ``tenant_id`` itself (library functions always do, on both backends).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import ORMExecuteState, with_loader_criteria
from sqlmodel import Session

from crmctl.errors import DatabaseError, UsageError

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_CACHE_KIB = 200_000  # page cache per connection
# Index builds after a bulk load (sqlite_index_build): the sorter spills to temporary files instead
# of memory, with a small in-memory run per sort thread. On a 10M-row table, measured on 2 cores:
# 2.4x less wall time (the multi-threaded merge runs on files only) and 202 MB peak instead of
# 1.28 GB (in memory every spilled run stayed resident, so memory grew with the table).
SQLITE_BUILD_CACHE_KIB = 32_000
SQLITE_BUILD_THREADS = 4
SQLITE_AUTOCHECKPOINT_PAGES = 1000  # SQLite's default
# Execution option read at BEGIN: False = this transaction leaves WAL checkpoints to a helper
# thread (see crmctl.db.checkpoints).
AUTOCHECKPOINT_OPTION = "crmctl_autocheckpoint"


def parse_database_url(url: str) -> URL:
    """Accept ``sqlite:///file.db``, ``postgresql://…`` (psycopg 3 is implied) and nothing else."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise UsageError(
            "The database URL is not valid.",
            hint="Use sqlite:///path/to/crm.db or postgresql://user@host:5432/dbname.",
        ) from exc
    backend = parsed.get_backend_name()
    if backend in {"postgresql", "postgres"}:
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if parsed.drivername not in {"sqlite", "sqlite+pysqlite"}:
            raise UsageError(f"Unsupported SQLite driver '{parsed.drivername}'; use sqlite:///path.")
        return parsed
    raise UsageError(
        f"Unsupported database '{backend}'.",
        hint="crmctl works with sqlite:///path/to/crm.db and postgresql://user@host/dbname.",
    )


def describe_url(url: str | URL) -> str:
    """The URL with any password hidden: safe for messages and logs."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        return "<invalid URL>"
    return parsed.render_as_string(hide_password=True)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        # Take transaction control away from pysqlite so BEGIN is ours (see the "begin" hook).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")
        _session_pragmas(cur)
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the write lock up front: a deferred transaction that reads first and then
        # writes cannot be retried by busy_timeout and fails with "database is locked".
        options = conn.get_execution_options()
        mode = "IMMEDIATE" if options.get("crmctl_write") else "DEFERRED"
        # foreign_keys only changes outside a transaction, so it is set before every BEGIN: on unless
        # a bulk loader that resolved every reference itself asks for crmctl_foreign_keys=False.
        conn.exec_driver_sql(
            f"PRAGMA foreign_keys={'OFF' if options.get('crmctl_foreign_keys') is False else 'ON'}"
        )
        # A bulk writer whose checkpoints run on a helper thread (crmctl.db.checkpoints) turns its
        # own off; every other transaction on the pooled connection has them back.
        autocheckpoint = options.get(AUTOCHECKPOINT_OPTION, True)
        info = conn.connection.info
        if info.get(AUTOCHECKPOINT_OPTION, True) != autocheckpoint:
            pages = SQLITE_AUTOCHECKPOINT_PAGES if autocheckpoint else 0
            conn.exec_driver_sql(f"PRAGMA wal_autocheckpoint={pages}")
            info[AUTOCHECKPOINT_OPTION] = autocheckpoint
        conn.exec_driver_sql(f"BEGIN {mode}")


def _session_pragmas(cur: sqlite3.Cursor) -> None:
    cur.execute("PRAGMA temp_store=MEMORY")
    cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    # Large sorts (big GROUP BY / ORDER BY) use helper threads: measured 20-30% less wall time for
    # a 5M-row sort on 2 busy cores.
    cur.execute(f"PRAGMA threads={min(4, os.cpu_count() or 1)}")


@contextmanager
def sqlite_index_build(engine: Engine) -> Iterator[Connection]:
    """A connection set up for building large indexes (see ``SQLITE_BUILD_CACHE_KIB``); the caller
    begins its own transaction. The settings are put back afterwards, as the pool hands this
    connection on. Changing temp_store drops the connection's temporary tables: only
    transaction-scoped ones may be in use around it (the importers create theirs per batch)."""
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert isinstance(raw, sqlite3.Connection)
        cur = raw.cursor()
        cur.execute("PRAGMA temp_store=FILE")
        cur.execute(f"PRAGMA cache_size=-{SQLITE_BUILD_CACHE_KIB}")
        cur.execute(f"PRAGMA threads={SQLITE_BUILD_THREADS}")
        try:
            yield conn
        finally:
            if conn.in_transaction():
                conn.rollback()
            _session_pragmas(cur)
            cur.close()


def _configure_postgresql(engine: Engine, tenant: str | None, app_role: str | None) -> None:
    if app_role:

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            with dbapi_conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (app_role,))
                if cur.fetchone() is None:
                    dbapi_conn.rollback()
                    raise DatabaseError(
                        f"The database has no role '{app_role}' yet.",
                        hint="Run 'crmctl db upgrade' first (it creates the role and the schema).",
                    )
                cur.execute(f'SET ROLE "{app_role}"')
            dbapi_conn.commit()

    if tenant is not None:

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("SELECT set_config('app.tenant_id', %s, true)", (tenant,))


def make_engine(url: str, *, tenant: str | None = None, app_role: str | None = None) -> Engine:
    """An engine for ``url``. ``tenant`` binds PostgreSQL transactions to it; ``app_role`` is the
    role to switch to (pass None for migrations, which need the owner's rights)."""
    parsed = parse_database_url(url)
    if parsed.get_backend_name() == "sqlite":
        db_path = parsed.database
        if db_path and db_path != ":memory:" and not db_path.startswith("file:"):
            parent = Path(db_path).expanduser().resolve().parent
            if not parent.is_dir():
                raise DatabaseError(f"The folder for the SQLite database does not exist: {parent}.")
        engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _configure_sqlite(engine)
    else:
        engine = create_engine(
            parsed,
            pool_pre_ping=True,
            connect_args={"connect_timeout": 10, "application_name": "crmctl"},
        )
        _configure_postgresql(engine, tenant, app_role)
    return engine


@dataclass
class Database:
    """An engine bound to one tenant; hands out sessions that carry the tenant in ``info``."""

    url: str
    tenant: str
    engine: Engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name  # "sqlite" | "postgresql"

    @property
    def is_postgresql(self) -> bool:
        return self.dialect == "postgresql"

    @contextmanager
    def session(self, *, write: bool = False) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on any error.

        ``write=True`` takes SQLite's write lock at BEGIN (see ``_configure_sqlite``)."""
        bind = self.engine.execution_options(crmctl_write=True) if write else self.engine
        with Session(bind, expire_on_commit=False) as session:
            session.info["tenant"] = self.tenant
            session.info["dialect"] = self.dialect
            event.listen(session, "do_orm_execute", _tenant_criteria(self.tenant))
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def dispose(self) -> None:
        self.engine.dispose()


def _tenant_criteria(tenant: str) -> Any:
    """Every ORM select/update/delete of a tenant table gets ``tenant_id = <tenant>`` added.

    The SQLite counterpart of row-level security (and a second wall on PostgreSQL): an ORM query
    that forgets its tenant filter still cannot see another tenant's rows."""
    from crmctl.db.models import TenantTable

    def _add_criteria(state: ORMExecuteState) -> None:
        if not (state.is_select or state.is_update or state.is_delete):
            return
        criteria = [
            with_loader_criteria(m.class_, m.class_.tenant_id == tenant, include_aliases=True)
            for m in state.all_mappers
            if issubclass(m.class_, TenantTable)
        ]
        if criteria:
            state.statement = state.statement.options(*criteria)

    return _add_criteria


def open_database(url: str, tenant: str, *, app_role: str | None = "crmctl_app") -> Database:
    engine = make_engine(url, tenant=tenant, app_role=app_role or None)
    return Database(url=url, tenant=tenant, engine=engine)


def tenant_of(session: Session) -> str:
    """The tenant a session is bound to (set by :meth:`Database.session`)."""
    try:
        return session.info["tenant"]
    except KeyError as exc:  # a programming error, not a user error
        raise RuntimeError("session is not bound to a tenant; use Database.session()") from exc


def dialect_of(session: Session) -> str:
    return session.info.get("dialect") or session.get_bind().dialect.name


def connection_error(exc: OperationalError, url: str) -> DatabaseError:
    """Turn a driver's connection failure into one sentence without credentials or data."""
    return DatabaseError(
        f"Cannot connect to the database at {describe_url(url)}.",
        hint="Check that the server is running and the URL, user and database name are right.",
    )
