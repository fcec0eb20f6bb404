"""SQLite's physical index layout: ``tenant_id`` goes last in every index and unique constraint.

The schema declares every tenant-scoped index with ``tenant_id`` first, which PostgreSQL needs: one
database there holds many tenants, and each tenant's rows are one range of the index. A SQLite file
holds one tenant in practice, so a leading ``tenant_id`` is the same value in every entry, and it
makes SQLite's sorter compare every pair of keys the slow way (its fast path decides on the first
column alone, and an equal first column falls through to unpacking both records). Building
``ix_interaction_tenant_account_at`` over 10M rows took 24.6-27.0 CPU s with ``tenant_id`` first
and 17.9 s with it last (12.5 s wall instead of 22.6-27.4 s). The indexes serve the same queries
either way: each query still filters ``tenant_id``, now from the index entry instead of by seeking
to it, and equality and range conditions on the other columns keep their order (a file holding
several tenants still works; a query then also reads other tenants' entries of its range).

Unique constraints move it too, so that no index offers ``tenant_id = ?`` alone as a prefix: the
planner, which has no statistics during a load, took such a one-column seek over a selective
index (a stage-history batch's lookup of its deals' latest rows went from an index seek per deal to
a scan of the tenant). Their uniqueness and ON CONFLICT targets do not depend on column order.
Indexes over expressions are left as declared; a partial index keeps its WHERE clause.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import CreateIndex, UniqueConstraint

TENANT_COLUMN = "tenant_id"


def sqlite_columns(names: list[str | None]) -> list[str] | None:
    """The column order SQLite uses for an index declared over ``names``, or None to keep it."""
    if len(names) < 2 or names[0] != TENANT_COLUMN or any(n is None for n in names):
        return None
    return [str(n) for n in names[1:]] + [TENANT_COLUMN]


@compiles(CreateIndex, "sqlite")
def _create_index(create: CreateIndex, compiler: Any, **kw: Any) -> str:
    index = create.element
    names = [getattr(expression, "name", None) for expression in index.expressions]
    columns = sqlite_columns(names)
    if columns is None:
        return compiler.visit_create_index(create, **kw)
    preparer = compiler.preparer
    create_index = f"CREATE {'UNIQUE ' if index.unique else ''}INDEX"
    exists = "IF NOT EXISTS " if create.if_not_exists else ""
    names_sql = ", ".join(preparer.quote(name) for name in columns)
    where = index.dialect_options["sqlite"]["where"]
    where_sql = (
        ""
        if where is None
        else " WHERE " + compiler.sql_compiler.process(where, include_table=False, literal_binds=True)
    )
    return (
        f"{create_index} {exists}{preparer.format_index(index)} "
        f"ON {preparer.format_table(index.table)} ({names_sql}){where_sql}"
    )


@compiles(UniqueConstraint, "sqlite")
def _unique_constraint(constraint: UniqueConstraint, compiler: Any, **kw: Any) -> str:
    columns = sqlite_columns([column.name for column in constraint.columns])
    if columns is None or constraint.deferrable is not None or constraint.initially is not None:
        return compiler.visit_unique_constraint(constraint, **kw)
    name = compiler.preparer.format_constraint(constraint) if constraint.name is not None else None
    prefix = f"CONSTRAINT {name} " if name else ""
    return f"{prefix}UNIQUE ({', '.join(compiler.preparer.quote(column) for column in columns)})"
