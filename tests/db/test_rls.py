"""Tenant isolation: with tenant A set, no query returns tenant B's rows, from any table."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import Boolean, Date, DateTime, Float, Integer, Table, func, insert, select, text
from sqlalchemy.exc import DBAPIError
from sqlmodel import SQLModel
from sqlmodel import select as sqlmodel_select

import crmctl.db.models  # noqa: F401
from crmctl.db import migrate
from crmctl.db.engine import make_engine, open_database
from tests.conftest import run_cli


def _value(column: Any, tenant: str, ids: dict[str, int]) -> Any:
    if column.name == "tenant_id":
        return tenant
    for fk in column.foreign_keys:
        return ids.get(fk.column.table.name)
    if column.nullable or column.primary_key:
        return None
    kind = getattr(column.type, "impl", column.type)
    if isinstance(kind, Boolean):
        return False
    if isinstance(kind, Integer):
        return 1
    if isinstance(kind, Float):
        return 1.0
    if isinstance(kind, DateTime):
        return dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    if isinstance(kind, Date):
        return dt.date(2024, 1, 1)
    return f"{tenant}-{column.name}"


def _fill_every_table(url: str, tenant: str) -> None:
    """One row per table for ``tenant``, foreign keys pointing at that tenant's rows (as owner)."""
    engine = make_engine(url)
    ids: dict[str, int] = {}
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT set_config('app.tenant_id', :t, true)"), {"t": tenant})
        for table in SQLModel.metadata.sorted_tables:
            row = {c.name: _value(c, tenant, ids) for c in table.columns}
            row = {k: v for k, v in row.items() if v is not None}
            ids[table.name] = conn.execute(insert(table).values(row).returning(table.c.id)).scalar_one()
    engine.dispose()


def test_rls_isolates_every_table(database_url: str, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("row-level security is a PostgreSQL feature; SQLite filters in every query")
    _fill_every_table(database_url, "tenant-a")
    _fill_every_table(database_url, "tenant-b")
    tables: list[Table] = list(SQLModel.metadata.sorted_tables)
    assert len(tables) >= 25
    db_a = open_database(database_url, "tenant-a")
    try:
        with db_a.session() as session:
            assert session.execute(text("SELECT current_user")).scalar() == "crmctl_app"
            for table in tables:
                # no WHERE clause at all: the policy alone must hide tenant-b
                tenants = set(session.execute(select(table.c.tenant_id)).scalars())
                assert tenants == {"tenant-a"}, f"{table.name} leaks {tenants}"
        with pytest.raises(DBAPIError), db_a.session() as session:
            session.execute(
                text(
                    "INSERT INTO pipeline (tenant_id, name, is_default, currency, created_at) "
                    "VALUES ('tenant-b', 'x', false, 'USD', now())"
                )
            )
    finally:
        db_a.dispose()
    # no tenant set at all: nothing visible
    db_none = open_database(database_url, "")
    try:
        with db_none.session() as session:
            assert session.execute(select(func.count()).select_from(tables[0])).scalar() == 0
    finally:
        db_none.dispose()


def test_orm_queries_are_tenant_bound_on_every_backend(database_url: str) -> None:
    """Even an ORM query without a tenant filter sees only the session's tenant (SQLite included)."""
    _fill_every_table(database_url, "tenant-a")
    _fill_every_table(database_url, "tenant-b")
    models = [
        m
        for cls in SQLModel.__subclasses__()
        for m in [cls, *cls.__subclasses__()]
        if hasattr(m, "__table__")
    ]
    assert len({m.__table__.name for m in models}) >= 25
    db_b = open_database(database_url, "tenant-b")
    try:
        with db_b.session() as session:
            for model in models:
                rows = session.exec(sqlmodel_select(model)).all()
                assert {r.tenant_id for r in rows} == {"tenant-b"}, model.__name__
    finally:
        db_b.dispose()


def test_db_check_fails_when_a_policy_is_missing(database_url: str, backend: str) -> None:
    run_cli("--db", database_url, "db", "check")
    if backend != "postgresql":
        return
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP POLICY tenant_isolation ON contact")
    engine.dispose()
    assert any("contact" in p for p in migrate.check(database_url))
    result = run_cli("--db", database_url, "db", "check", expect=1)
    assert "table contact has no tenant_isolation policy" in result.stderr
