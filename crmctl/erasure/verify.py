"""Verification: search every text column of every tenant table for a batch's identifiers.

One pass per table for all requests of a run together. Each table is read once, in id ranges, and
narrowed in SQL to rows whose text could hold an email ('@') or a phone number (a digit in a value
of at least six characters: the shortest email or phone token). A range comes back as one string
(``group_concat`` / ``string_agg`` of one piece per row), so no Python object is built per row.

The rows of a range are then narrowed in polars with a multi-string search (Aho-Corasick) for the
batch's identifiers: emails in the lower-cased text, phone digit forms in the text with phone
separators removed. This is a superset test: every row the exact match below would find contains
one of these strings (a phone token's digits are a contiguous run of the separator-free text; an
email token lower-cased is its key, except at providers whose keys drop dots or +tags, which are
searched by their domain). Only the rows it flags are tokenised: their email- and phone-shaped
tokens are normalised and joined against the batch's identifiers, by value where the run read the
values itself in its identify step (the usual case: no hashing), by keyed hash otherwise (a run
resumed after a crash holds only the hashes; then every row is tokenised and every distinct token
of a chunk hashed). Raw values never leave this module; what it returns is counts per request and
table.

Not searched for phone-shaped digits (still searched for emails): machine columns that hold keys and
hashes (``MACHINE_COLUMNS``). Names are not searched: a name does not identify one person, so
verification is by email and phone; names are handled by the steps (pseudonymised, scrubbed).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import polars as pl
from sqlalchemy import JSON, String, TypeDecorator
from sqlmodel import Session

from crmctl.db.engine import Database, dialect_of
from crmctl.db.models import TENANT_TABLES
from crmctl.db.sql import execute, tenant_unindexed
from crmctl.erasure.identifiers import REWRITTEN_DOMAINS, email_keys_of_tokens
from crmctl.erasure.keys import hash_series

MACHINE_COLUMNS = frozenset(
    {"idempotency_key", "content_hash", "value_hash", "file_sha256", "version", "model_version"}
)
SKIPPED_COLUMNS = frozenset({"tenant_id", "identity_hashes"})  # the tenant name; the hashes themselves
EMAIL_PATTERN = r"[A-Za-z0-9._%+'\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
PHONE_PATTERN = r"\+?\d(?:[ ().\-/]{0,2}\d){5,16}"
PHONE_SEPARATORS = r"[ ().\-/]"  # what PHONE_PATTERN allows between digits
MIN_TOKEN_CHARS = 6  # 'a@b.cd'; a phone token has at least six digits
UNIT_IDS = 2_000_000  # ids per unit of work: units run on ``WORKERS`` connections at once
FIRST_QUERY_IDS = 50_000  # ids per query at first; later queries are sized to QUERY_CHARS
QUERY_CHARS = 16_000_000  # text per query (one string): bounds memory
FALLBACK_ROWS = 100_000
SCAN_CACHE_KIB = -8_000  # SQLite page cache while scanning (negative: KiB)
WORKERS = 2
SEPARATOR = "\x1f"  # between the columns of a row
KEY_END = "\x1d"  # between a row's machine columns and its text
ROW_END = "\x1e"  # between rows


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


@dataclass(frozen=True)
class ScanSql:
    """The queries for one table: ``ranged`` returns (rows, all pieces joined by ROW_END) for an id
    range, ``rows`` the same rows one by one (text_value, key_value) when a value holds ROW_END."""

    ranged: str
    rows: str


def _scan_sql(session: Session, target: ScanTarget) -> ScanSql:
    if dialect_of(session) == "postgresql":
        # a regex per column (testing a value costs less than joining a row's columns, which only
        # the rows that pass need)
        text_value, keys = _concat_ws(target.text_columns), _concat_ws(target.key_columns)
        key_value = f"CASE WHEN strpos({keys}, '@') > 0 THEN {keys} ELSE '' END"
        predicates = [f"{_q(c)}::text ~ '[0-9@]'" for c in target.text_columns]
        predicates += [f"strpos({_q(c)}::text, '@') > 0" for c in target.key_columns]
        return _assemble(session, target, text_value, key_value, predicates, "string_agg", "chr")
    # SQLite: one printf per row (a chain of || copies the row once per column); the filter per
    # column, values shorter than a token skipped before the pattern test
    key_value = (
        f"CASE WHEN {' OR '.join(f'instr({_q(c)}, {_AT}) > 0' for c in target.key_columns)} "
        f"THEN {_printf(target.key_columns)} ELSE '' END"
    )
    predicates = [
        f"(length({_q(c)}) >= {MIN_TOKEN_CHARS} AND {_q(c)} GLOB '*[0-9@]*')" for c in target.text_columns
    ]
    predicates += [f"instr({_q(c)}, {_AT}) > 0" for c in target.key_columns]
    return _assemble(
        session, target, _printf(target.text_columns), key_value, predicates, "group_concat", "char"
    )


def _assemble(
    session: Session,
    target: ScanTarget,
    text_value: str,
    key_value: str,
    predicates: list[str],
    aggregate: str,
    char: str,
) -> ScanSql:
    """The rows passing ``predicates`` (a cheap superset in SQL: an '@' or a digit; the exact token
    patterns run in polars) as pieces ``[key_value KEY_END] text_value``."""
    piece = f"{key_value} || {char}(29) || {text_value}" if target.key_columns else text_value
    where = (
        f'FROM "{target.table}" WHERE {tenant_unindexed(session)} AND id > :low AND id <= :high '
        f"AND ({' OR '.join(predicates)})"
    )
    return ScanSql(
        ranged=f"SELECT count(*), {aggregate}({piece}, {char}(30)) {where}",
        rows=f"SELECT {text_value} AS text_value, "
        f"{key_value if target.key_columns else 'NULL'} AS key_value {where}",
    )


def _concat_ws(columns: tuple[str, ...]) -> str:
    return f"concat_ws(chr(31), {', '.join(f'{_q(c)}::text' for c in columns)})" if columns else "''"


_AT = "'@'"


def _q(column: str) -> str:
    return f'"{column}"'


def _printf(columns: tuple[str, ...]) -> str:
    if not columns:
        return "''"
    return f"printf('{SEPARATOR.join(['%s'] * len(columns))}', {', '.join(_q(c) for c in columns)})"


def _pieces(count: int, joined: str | None) -> pl.Series | None:
    """One piece per row, or None when a value held ROW_END (the pieces would not line up with the
    rows: the caller reads that range row by row)."""
    if not count:
        return pl.Series("piece", [], dtype=pl.String)
    pieces = pl.Series("piece", [joined or ""], dtype=pl.String).str.split(ROW_END).explode()
    return pieces if pieces.len() == count else None


def _rows(session: Session, sql: str, low: int, high: int, has_keys: bool) -> Iterator[pl.Series]:
    """The pieces of a range built from its rows one by one (the rare fallback of ``_chunks``)."""
    result = execute(session, sql, low=low, high=high)
    cursor = result.cursor  # the DBAPI cursor: plain tuples, without building a Row per row
    while rows := cursor.fetchmany(FALLBACK_ROWS):
        frame = pl.DataFrame(rows, schema={"text_value": pl.String, "key_value": pl.String}, orient="row")
        text = pl.col("text_value").fill_null("")
        parts = [pl.col("key_value").fill_null(""), pl.lit(KEY_END), text] if has_keys else [text]
        yield frame.select(pl.concat_str(parts).alias("piece")).to_series()


def _chunks(session: Session, target: ScanTarget, id_range: tuple[int, int]) -> Iterator[pl.Series]:
    """The range's candidate rows as pieces (``[key_value KEY_END] text_value``), one query per
    sub-range of ids sized so that its string stays near QUERY_CHARS."""
    sql = _scan_sql(session, target)
    low, high = id_range
    step = FIRST_QUERY_IDS
    while low < high:
        upper = min(low + step, high)
        count, joined = execute(session, sql.ranged, low=low, high=upper).one()
        pieces = _pieces(count, joined)
        if pieces is None:
            yield from _rows(session, sql.rows, low, upper, bool(target.key_columns))
        elif pieces.len():
            yield pieces
        chars = len(joined or "")
        step = step * 8 if chars == 0 else max(1_000, min(step * 8, step * QUERY_CHARS // chars))
        low = upper


def _split(pieces: pl.Series, has_keys: bool) -> pl.DataFrame:
    """(text_value, key_value) of each piece. A piece is split at its first KEY_END: a machine
    value holding that character only moves text into the searched-for-phones part."""
    if not has_keys:
        return pl.DataFrame({"text_value": pieces, "key_value": None}, schema=TEXT_SCHEMA)
    parts = pieces.str.splitn(KEY_END, 2).struct.rename_fields(["key_value", "text_value"]).struct.unnest()
    return parts.select(pl.col("text_value").fill_null(""), "key_value")


TEXT_SCHEMA = {"text_value": pl.String, "key_value": pl.String}


@dataclass(frozen=True)
class Lookup:
    """A batch's identifiers per kind (``email``, ``phone_digits``): ``values`` (kind, value,
    request_id) where the run knows the normalised value, ``hashes`` (kind, hash, request_id) where
    it holds only the keyed hash. Tokens are hashed only when ``hashes`` has rows of their kind.
    ``strings``: one of them is in the ``_stripped`` form of every row holding one of ``values``."""

    values: pl.DataFrame
    hashes: pl.DataFrame
    strings: pl.Series

    @classmethod
    def of_frame(cls, lookup: pl.DataFrame) -> Lookup:
        known = pl.col("value").is_not_null()
        values = lookup.filter(known).select("kind", "value", "request_id")
        emails = values.filter(pl.col("kind") == "email")["value"].str.to_lowercase().unique()
        domains = emails.str.split("@").list.last()
        rewritten = domains.is_in(list(REWRITTEN_DOMAINS))
        # keys at providers that drop dots / +tags are not substrings of the text: their domains are
        strings = set(emails.filter(~rewritten).to_list())
        for domain in domains.filter(rewritten).unique().to_list():
            strings |= {f"@{domain}", *(["@googlemail.com"] if domain == "gmail.com" else [])}
        strings |= set(values.filter(pl.col("kind") == "phone_digits")["value"].to_list())
        return cls(
            values=values,
            hashes=lookup.filter(~known).select("kind", "hash", "request_id"),
            strings=_minimal(_stripped(pl.Series("string", sorted(strings), dtype=pl.String))),
        )

    def of(self, kind: str) -> tuple[pl.DataFrame, pl.DataFrame]:
        return self.values.filter(pl.col("kind") == kind), self.hashes.filter(pl.col("kind") == kind)


def _minimal(strings: pl.Series) -> pl.Series:
    """The strings that hold none of the others (a text holding a longer one holds the shorter):
    a phone's international and trunk forms hold its national number. Fewer strings to search for."""
    distinct = strings.filter(strings.str.len_bytes() > 0).unique().sort()
    held = distinct.str.extract_many(distinct.implode(), overlapping=True).list.len()
    return distinct.filter(held <= 1)


def _stripped(text: pl.Series) -> pl.Series:
    """Lower-cased, without the characters a phone number may be written with between its digits.
    Removing characters keeps a substring a substring: a token's key (an email lower-cased, a
    phone's digits) is in the stripped text once stripped itself."""
    # PHONE_PATTERN's \d also takes non-ASCII digits, which a token's key (its ASCII digits) drops:
    # drop them here too, or a phone written with one inside would escape the pre-search.
    return text.str.to_lowercase().str.replace_all(rf"{PHONE_SEPARATORS}|[\d&&[^0-9]]", "")


def candidates(pieces: pl.Series, lookup: Lookup) -> pl.Series:
    """True for the pieces that may hold one of ``lookup``'s identifiers: a superset of the rows
    ``_hits`` finds (every piece when the lookup holds hashes, which only tokenising can match)."""
    if lookup.hashes.height or not lookup.strings.len():
        return pl.Series("candidate", [lookup.hashes.height > 0] * pieces.len(), dtype=pl.Boolean)
    return _stripped(pieces).str.contains_any(lookup.strings.implode()).fill_null(False).alias("candidate")


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


def _tasks(db: Database) -> list[tuple[ScanTarget, tuple[int, int]]]:
    """Units of work: each table cut into id ranges, so both connections scan at once."""
    tasks: list[tuple[ScanTarget, tuple[int, int]]] = []
    with db.session() as session:
        for target in scan_targets():
            bounds = f'SELECT id FROM "{target.table}" WHERE {tenant_unindexed(session)} ORDER BY id'
            low = execute(session, f"{bounds} LIMIT 1").scalar()
            if low is None:
                continue
            high = execute(session, f"{bounds} DESC LIMIT 1").scalar()
            tasks += [
                (target, (start, min(start + UNIT_IDS, high))) for start in range(low - 1, high, UNIT_IDS)
            ]
    return tasks


@contextmanager
def _small_page_cache(session: Session) -> Iterator[None]:
    """A one-pass scan gains nothing from SQLite's page cache (200 MB per connection): keep it
    small while scanning, then give the pooled connection its setting back."""
    if dialect_of(session) != "sqlite":
        yield
        return
    connection = session.connection()
    before = connection.exec_driver_sql("PRAGMA cache_size").scalar()
    connection.exec_driver_sql(f"PRAGMA cache_size={SCAN_CACHE_KIB}")
    try:
        yield
    finally:
        connection.exec_driver_sql("PRAGMA shrink_memory")
        connection.exec_driver_sql(f"PRAGMA cache_size={int(before)}")


def _scan(
    db: Database, target: ScanTarget, id_range: tuple[int, int], key: bytes, lookup: Lookup
) -> pl.DataFrame:
    found = []
    with db.session() as session, _small_page_cache(session):
        for pieces in _chunks(session, target, id_range):
            mask = candidates(pieces, lookup)
            if not mask.any():
                continue
            rows = _split(pieces, bool(target.key_columns)).with_row_index("row").filter(mask)
            hits = _hits(rows, key, lookup)
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
    split = Lookup.of_frame(lookup)
    tasks = sorted(_tasks(db), key=lambda task: -len(task[0].text_columns))  # wide tables first
    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = list(pool.map(lambda task: _scan(db, task[0], task[1], key, split), tasks))
    return (
        pl.concat([_empty(), *found])
        .group_by("request_id", "table")
        .agg(pl.col("rows").sum().cast(pl.Int64))
        .select("request_id", "table", "rows")
        .sort("request_id", "table")
    )


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema={"request_id": pl.Int64, "table": pl.String, "rows": pl.Int64})
