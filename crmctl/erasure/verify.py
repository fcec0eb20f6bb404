"""Verification: search every text column of every tenant table for a batch's identifiers.

One pass per table for all requests of a run together. Each table is read once, narrowed in SQL to
rows whose text could hold an email ('@') or a phone number (runs of digits); the email- and
phone-shaped tokens of those rows are normalised and joined against the batch's identifiers: by
value where the run read the values itself in its identify step (the usual case: no hashing), by
keyed hash otherwise (a run resumed after a crash holds only the hashes; every distinct token of a
chunk is then hashed). Raw values never leave this function; what it returns is counts per request
and table.

Not searched for phone-shaped digits (still searched for emails): machine columns that hold keys and
hashes (``MACHINE_COLUMNS``). Names are not searched: a name does not identify one person, so
verification is by email and phone; names are handled by the steps (pseudonymised, scrubbed).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import polars as pl
from sqlalchemy import JSON, String, TypeDecorator
from sqlmodel import Session

from crmctl.db.engine import Database, dialect_of
from crmctl.db.models import TENANT_TABLES
from crmctl.erasure.identifiers import email_keys_of_tokens
from crmctl.erasure.keys import hash_series
from crmctl.erasure.sql import execute, tenant_unindexed

MACHINE_COLUMNS = frozenset(
    {"idempotency_key", "content_hash", "value_hash", "file_sha256", "version", "model_version"}
)
SKIPPED_COLUMNS = frozenset({"tenant_id", "identity_hashes"})  # the tenant name; the hashes themselves
EMAIL_PATTERN = r"[A-Za-z0-9._%+'\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
PHONE_PATTERN = r"\+?\d(?:[ ().\-/]{0,2}\d){5,16}"
FETCH_ROWS = 100_000
RANGE_ROWS = 500_000  # ids per unit of work on SQLite
WORKERS = 2
SEPARATOR = "\x1f"


@dataclass(frozen=True)
class ScanTarget:
    table: str
    text_columns: tuple[str, ...]  # searched for emails and phones
    key_columns: tuple[str, ...]  # searched for emails only


def scan_targets() -> list[ScanTarget]:
    """Every string and JSON column of every tenant table (from the schema, so new columns count)."""
    targets = []
    for model in TENANT_TABLES:
        table = model.__table__  # type: ignore[attr-defined]
        text_cols, key_cols = [], []
        for column in table.columns:
            if column.name in SKIPPED_COLUMNS or not _is_text(column.type):
                continue
            (key_cols if column.name in MACHINE_COLUMNS else text_cols).append(column.name)
        if text_cols or key_cols:
            targets.append(ScanTarget(table.name, tuple(text_cols), tuple(key_cols)))
    return targets


def _is_text(column_type: Any) -> bool:
    if isinstance(column_type, TypeDecorator):  # sqlmodel's AutoString wraps String
        column_type = column_type.impl_instance
    return isinstance(column_type, String | JSON)


def _sql(session: Session, target: ScanTarget) -> str:
    pg = dialect_of(session) == "postgresql"

    def expr(column: str) -> str:
        return f'"{column}"::text' if pg else f'"{column}"'

    def joined(columns: tuple[str, ...]) -> str:
        if not columns:
            return "NULL"
        if pg:
            return f"concat_ws(chr(31), {', '.join(expr(c) for c in columns)})"
        return " || char(31) || ".join(f"coalesce({expr(c)}, '')" for c in columns)

    text_value, key_value = joined(target.text_columns), joined(target.key_columns)
    # A cheap superset in SQL ('@' or a digit); the exact token patterns run in polars.
    if pg:  # one regex over the joined text
        predicates = [f"{text_value} ~ '[0-9@]'"] if target.text_columns else []
        predicates += [f"strpos({key_value}, '@') > 0"] if target.key_columns else []
    else:  # SQLite: per column (joining strings costs more than testing them)
        predicates = [f"{expr(c)} GLOB '*[0-9@]*'" for c in target.text_columns]
        predicates += [f"instr({expr(c)}, '@') > 0" for c in target.key_columns]
    keys_at = (
        f"CASE WHEN instr({key_value}, '@') > 0 THEN {key_value} END"
        if not pg
        else (f"CASE WHEN strpos({key_value}, '@') > 0 THEN {key_value} END")
    )
    return (
        f"SELECT {text_value} AS text_value, {keys_at if target.key_columns else 'NULL'} AS key_value "
        f'FROM "{target.table}" WHERE {tenant_unindexed(session)} AND ({" OR ".join(predicates)})'
    )


def _chunks(session: Session, target: ScanTarget, id_range: tuple[int, int] | None) -> Iterator[pl.DataFrame]:
    sql = _sql(session, target)
    if id_range is not None:
        sql += " AND id > :low AND id <= :high"
    low, high = id_range or (0, 0)
    result = execute(session, sql, low=low, high=high)
    cursor = result.cursor  # the DBAPI cursor: plain tuples, without building a Row per row
    while rows := cursor.fetchmany(FETCH_ROWS):
        yield pl.DataFrame(
            rows, schema={"text_value": pl.String, "key_value": pl.String}, orient="row"
        ).with_row_index("row")


@dataclass(frozen=True)
class Lookup:
    """A batch's identifiers per kind (``email``, ``phone_digits``): ``values`` (kind, value,
    request_id) where the run knows the normalised value, ``hashes`` (kind, hash, request_id) where
    it holds only the keyed hash. Tokens are hashed only when ``hashes`` has rows of their kind."""

    values: pl.DataFrame
    hashes: pl.DataFrame

    def of(self, kind: str) -> tuple[pl.DataFrame, pl.DataFrame]:
        return self.values.filter(pl.col("kind") == kind), self.hashes.filter(pl.col("kind") == kind)


def _matches(tokens: pl.DataFrame, column: str, key: bytes, kind: str, lookup: Lookup) -> list[pl.DataFrame]:
    """(row, request_id) of ``tokens`` whose normalised ``column`` is one of the batch's ``kind``."""
    by_value, by_hash = lookup.of(kind)
    found = []
    if by_value.height:
        found.append(tokens.join(by_value.select(pl.col("value").alias(column), "request_id"), on=column))
    if by_hash.height:
        distinct = tokens.select(pl.col(column).unique())
        distinct = distinct.with_columns(hash_series(key, kind, distinct[column]).alias("hash"))
        found.append(tokens.join(distinct, on=column).join(by_hash.select("hash", "request_id"), on="hash"))
    return [f.select("row", "request_id") for f in found]


def _hits(chunk: pl.DataFrame, key: bytes, lookup: Lookup) -> pl.DataFrame:
    """(row, request_id) for every row of the chunk holding a looked-up identifier."""
    emails = (
        chunk.select(
            "row",
            pl.concat_str("text_value", "key_value", separator=SEPARATOR, ignore_nulls=True)
            .str.extract_all(EMAIL_PATTERN)
            .alias("token"),
        )
        .explode("token")
        .drop_nulls("token")
    )
    distinct = emails.select(pl.col("token").unique())
    distinct = distinct.with_columns(email_keys_of_tokens(distinct["token"]).alias("norm"))
    found = _matches(emails.join(distinct, on="token"), "norm", key, "email", lookup)
    phones = (
        chunk.select("row", pl.col("text_value").str.extract_all(PHONE_PATTERN).alias("token"))
        .explode("token")
        .drop_nulls("token")
        .with_columns(pl.col("token").str.replace_all(r"[^0-9]", "").str.strip_prefix("00").alias("digits"))
        .filter(pl.col("digits").str.len_chars().is_between(6, 15))
    )
    if phones.height:
        found += _matches(phones, "digits", key, "phone_digits", lookup)
    schema = {"row": pl.UInt32, "request_id": pl.Int64}
    return pl.concat([pl.DataFrame(schema=schema), *(f.cast(schema) for f in found)]).unique()


def _tasks(db: Database) -> list[tuple[ScanTarget, tuple[int, int] | None]]:
    """Units of work: whole tables, and on SQLite large tables cut into id ranges so both cores
    scan (PostgreSQL parallelises a sequential scan by itself)."""
    tasks: list[tuple[ScanTarget, tuple[int, int] | None]] = []
    with db.session() as session:
        for target in scan_targets():
            if db.is_postgresql:
                tasks.append((target, None))
                continue
            low, high = execute(
                session, f'SELECT min(id), max(id) FROM "{target.table}" WHERE {tenant_unindexed(session)}'
            ).one()
            if low is None:
                continue
            tasks += [(target, (start, start + RANGE_ROWS)) for start in range(low - 1, high, RANGE_ROWS)]
    return tasks


def _scan(
    db: Database, target: ScanTarget, id_range: tuple[int, int] | None, key: bytes, lookup: Lookup
) -> pl.DataFrame:
    found = []
    with db.session() as session:
        for chunk in _chunks(session, target, id_range):
            hits = _hits(chunk, key, lookup)
            if hits.height:
                found.append(hits.group_by("request_id").agg(pl.len().alias("rows")))
    if not found:
        return _empty()
    return (
        pl.concat(found)
        .with_columns(pl.lit(target.table).alias("table"))
        .select("request_id", "table", pl.col("rows").cast(pl.Int64))
    )


def find_identifiers(
    db: Database, key: bytes, lookup: pl.DataFrame, *, workers: int = WORKERS
) -> pl.DataFrame:
    """Rows still holding a batch's identifiers: (request_id, table, rows).

    ``lookup``: (kind, hash, request_id) with kinds ``email`` and ``phone_digits``, and optionally
    ``value``: the normalised value of the hash when the run still knows it (then text is matched by
    value, no hashing). Reads committed data on connections of its own, ``workers`` at a time."""
    if "value" not in lookup.columns:
        lookup = lookup.with_columns(pl.lit(None, dtype=pl.String).alias("value"))
    lookup = lookup.select(
        "kind", "hash", pl.col("value").cast(pl.String), pl.col("request_id").cast(pl.Int64)
    )
    if lookup.height == 0:
        return _empty()
    known = pl.col("value").is_not_null()
    split = Lookup(
        values=lookup.filter(known).select("kind", "value", "request_id"),
        hashes=lookup.filter(~known).select("kind", "hash", "request_id"),
    )
    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = list(pool.map(lambda task: _scan(db, task[0], task[1], key, split), _tasks(db)))
    return (
        pl.concat([_empty(), *found])
        .group_by("request_id", "table")
        .agg(pl.col("rows").sum().cast(pl.Int64))
        .select("request_id", "table", "rows")
        .sort("request_id", "table")
    )


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema={"request_id": pl.Int64, "table": pl.String, "rows": pl.Int64})
