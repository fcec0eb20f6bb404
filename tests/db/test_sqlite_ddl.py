"""SQLite lists tenant_id last in its indexes; PostgreSQL keeps the declared order (crmctl.db.sqlite_ddl)."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import text

from crmctl.db import models
from crmctl.db.engine import Database
from crmctl.db.sqlite_ddl import sqlite_columns


def test_sqlite_columns_moves_only_a_leading_tenant() -> None:
    assert sqlite_columns(["tenant_id", "deal_id", "changed_at"]) == ["deal_id", "changed_at", "tenant_id"]
    assert sqlite_columns(["deal_id", "tenant_id"]) is None
    assert sqlite_columns(["tenant_id"]) is None
    assert sqlite_columns(["tenant_id", None]) is None  # an expression: left as declared


def _declared() -> dict[str, tuple[str, list[str]]]:
    """Every index and unique constraint the models declare over a leading tenant_id: name ->
    (table, columns)."""
    out: dict[str, tuple[str, list[str]]] = {}
    for table in models.SQLModel.metadata.tables.values():
        for index in table.indexes:
            out[str(index.name)] = (table.name, [c.name for c in index.columns])
        for constraint in table.constraints:
            if constraint.name and constraint.name.startswith("uq_"):
                out[str(constraint.name)] = (table.name, [c.name for c in constraint.columns])  # type: ignore[attr-defined]
    return {name: (t, cols) for name, (t, cols) in out.items() if cols[0] == "tenant_id" and len(cols) > 1}


def test_each_backend_orders_index_columns_as_it_should(db: Database) -> None:
    declared = _declared()
    with db.engine.connect() as conn:
        if db.is_postgresql:
            rows = conn.execute(
                text(
                    "SELECT i.relname, array_agg(a.attname ORDER BY k.n) FROM pg_index x "
                    "JOIN pg_class i ON i.oid = x.indexrelid "
                    "JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, n) ON true "
                    "JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum "
                    "GROUP BY i.relname"
                )
            ).all()
            stored = {name: list(cols) for name, cols in rows}
            expected = {name: cols for name, (_table, cols) in declared.items()}
        else:
            raw = conn.connection.driver_connection
            assert isinstance(raw, sqlite3.Connection)
            stored = {}
            for table in models.SQLModel.metadata.tables:
                for _seq, name, _unique, origin, _partial in raw.execute(f'PRAGMA index_list("{table}")'):
                    cols = [row[2] for row in raw.execute(f'PRAGMA index_info("{name}")')]
                    if origin == "u":  # a UNIQUE constraint: SQLite names it sqlite_autoindex_*
                        name = next(
                            n
                            for n, (t, c) in declared.items()
                            if t == table and n.startswith("uq_") and set(c) == set(cols)
                        )
                    stored[name] = cols
            expected = {name: sqlite_columns(cols) for name, (_table, cols) in declared.items()}
    missing = {name: cols for name, cols in expected.items() if stored.get(name) != cols}
    assert not missing, f"indexes not in the expected column order: {missing}"


def test_sqlite_stage_history_lookup_seeks_by_deal(db: Database) -> None:
    """The reason unique constraints move too: with uq_stage_change_key led by tenant_id, the
    planner scanned the tenant through it instead of seeking each deal in the history index."""
    if db.is_postgresql:
        pytest.skip("SQLite's planner")
    with db.engine.connect() as conn:
        conn.exec_driver_sql("DROP INDEX ix_stage_change_tenant_valid")  # as during a bulk load
        plan = conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT id FROM stage_change WHERE tenant_id = 'default' "
            "AND deal_id IN (SELECT value FROM json_each('[1,2]')) AND valid_until IS NULL"
        ).all()
    detail = " ".join(str(row[-1]) for row in plan)
    assert "ix_stage_change_tenant_deal_at (deal_id=?)" in detail, detail
