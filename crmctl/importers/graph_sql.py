"""Set-based reads and writes for the migration importers, the same on SQLite and PostgreSQL.

Lookups probe an index with one query per batch (a JSON array on SQLite, an array on PostgreSQL);
inserts go through ``bulk.insert_frame`` (COPY on PostgreSQL); updates load the changed rows into a
temporary table with the same writer and apply them with one ``UPDATE … FROM``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl
from sqlmodel import Session

from crmctl.db.bulk import insert_frame
from crmctl.db.engine import dialect_of, tenant_of
from crmctl.db.sql import execute, frame, in_list, list_param

LOOKUP_CHUNK = 50_000
MAX_RELOADS = 3  # ReferenceMaps: after this many, back to per-batch lookups


def lookup(
    session: Session,
    table: str,
    column: str,
    keys: pl.Series,
    *,
    select: Sequence[str] = ("id",),
    where: str = "",
    schema: dict[str, Any] | None = None,
    **params: Any,
) -> pl.DataFrame:
    """Rows of ``table`` whose ``column`` is one of ``keys``: a frame of ``key`` + ``select``."""
    distinct = keys.drop_nulls().unique().to_list()
    out_schema = {"key": keys.dtype, **(schema or {name: pl.Int64 for name in select})}
    parts = [pl.DataFrame(schema=out_schema)]
    sql = _keyed_select(table, column, select, where, in_list(session, column, "keys"))
    sqlite = dialect_of(session) == "sqlite"
    for start in range(0, len(distinct), LOOKUP_CHUNK):
        chunk = distinct[start : start + LOOKUP_CHUNK]
        if sqlite:
            parts.append(_sqlite_frame(session, sql, out_schema, keys=list_param(session, chunk), **params))
        else:
            parts.append(frame(session, sql, out_schema, keys=list_param(session, chunk), **params))
    return pl.concat(parts)


def _keyed_select(table: str, column: str, select: Sequence[str], where: str, keys: str) -> str:
    """``key`` (= ``column``) and ``select`` of the tenant's rows of ``table`` matching ``where`` and
    the ``keys`` condition."""
    extra = f" AND {where}" if where else ""
    columns = ", ".join(select)
    return f"SELECT {column} AS key, {columns} FROM {table} WHERE tenant_id = :tenant{extra} AND {keys}"


class ReferenceMaps:
    """Whole-table key maps for the references of a large SQLite import.

    A file of millions of rows refers to the same hundred thousand accounts or contacts over and
    over; probing the index for every batch re-reads pages that the rows being written have pushed
    out of the cache (a 10M-row interactions file spent 70 s in lookups). A map of ``key -> id``
    for the whole referenced table, read once with the same query and joined in polars, answers
    the same question. It stays valid while nothing else commits to the database:
    ``PRAGMA data_version`` changes whenever another connection commits, and then the maps are
    read again. Only tables the import does not write itself are mapped (its own commits do not
    move ``data_version``)."""

    def __init__(self, tables: Sequence[str]) -> None:
        self.tables = frozenset(tables)
        self._maps: dict[tuple[Any, ...], pl.DataFrame] = {}
        # the connection the maps were read on (held, so its id cannot pass to a new one) and the
        # data_version it reported then
        self._connection: object | None = None
        self._version: int | None = None
        self._reloads = 0

    def lookup(
        self,
        session: Session,
        table: str,
        column: str,
        keys: pl.Series,
        *,
        select: Sequence[str] = ("id",),
        where: str = "",
        **params: Any,
    ) -> pl.DataFrame:
        """The same rows as :func:`lookup`, from the table's map when ``table`` is mapped."""
        if table not in self.tables or dialect_of(session) != "sqlite":
            return lookup(session, table, column, keys, select=select, where=where, **params)
        raw = session.connection().connection.driver_connection
        assert raw is not None
        version = int(raw.execute("PRAGMA data_version").fetchone()[0])
        if raw is not self._connection or version != self._version:
            if self._maps:
                self._reloads += 1
            self._maps.clear()
            self._connection, self._version = raw, version
            if self._reloads > MAX_RELOADS:
                # other writers commit between most batches (another tenant's import, say): whole
                # maps read again per batch would cost more than the probes they replace
                self.tables = frozenset()
                return lookup(session, table, column, keys, select=select, where=where, **params)
        name = (table, column, tuple(select), where, tuple(sorted(params.items())))
        mapped = self._maps.get(name)
        if mapped is None:
            mapped = _sqlite_frame(
                session,
                _keyed_select(table, column, select, where, f"{column} IS NOT NULL"),
                {"key": pl.String, **{c: pl.Int64 for c in select}},
                **params,
            )
            self._maps[name] = mapped
        wanted = pl.DataFrame({"key": keys.drop_nulls().unique().cast(pl.String)})
        return mapped.join(wanted, on="key", how="semi").with_columns(pl.col("key").cast(keys.dtype))


def _sqlite_frame(session: Session, sql: str, schema: dict[str, Any], **params: Any) -> pl.DataFrame:
    """``frame`` on the session's own SQLite connection (same transaction), without SQLAlchemy's
    row objects: a lookup returns one row per key, tens of thousands per batch, and building a
    ``Row`` for each cost about as much as the index probes. sqlite3 binds ``:name`` itself."""
    raw = session.connection().connection.driver_connection
    assert raw is not None
    rows = raw.execute(sql, {"tenant": tenant_of(session), **params}).fetchall()
    return pl.DataFrame(rows, schema=schema, orient="row")


def update_from_frame(
    session: Session,
    table: str,
    rows: pl.DataFrame,
    *,
    keep_existing_when_null: bool = True,
    keep_later: Sequence[str] = (),
) -> int:
    """Apply ``rows`` (an ``id`` column + the columns to set) to ``table`` in one statement.

    With ``keep_existing_when_null`` an empty cell leaves the stored value alone (a partial export
    does not wipe fields it did not carry). Columns in ``keep_later`` keep the later of the stored
    and the new value (a projection such as ``last_interaction_at``)."""
    if rows.height == 0:
        return 0
    columns = [c for c in rows.columns if c != "id"]
    temp = f"crmctl_update_{table}"
    postgres = dialect_of(session) == "postgresql"
    execute(session, f"DROP TABLE IF EXISTS {'pg_temp.' if postgres else 'temp.'}{temp}")
    select = ", ".join(["id", *columns])
    if postgres:
        execute(session, f"CREATE TEMP TABLE {temp} AS SELECT {select} FROM {table} WITH NO DATA")
    else:
        execute(session, f"CREATE TEMP TABLE {temp} AS SELECT {select} FROM {table} WHERE 0")
    insert_frame(session, temp, rows.select(["id", *columns]))

    def assign(c: str) -> str:
        if c in keep_later:
            later = "GREATEST" if postgres else "MAX"
            return f"{c} = {later}(COALESCE({table}.{c}, t.{c}), COALESCE(t.{c}, {table}.{c}))"
        return f"{c} = COALESCE(t.{c}, {table}.{c})" if keep_existing_when_null else f"{c} = t.{c}"

    assignments = ", ".join(assign(c) for c in columns)
    result = execute(
        session,
        f"UPDATE {table} SET {assignments} FROM {temp} AS t WHERE {table}.id = t.id "
        f"AND {table}.tenant_id = :tenant",
    )
    execute(session, f"DROP TABLE {temp}")
    return int(result.rowcount or 0)
