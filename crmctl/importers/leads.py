"""Lead import: read files in batches, normalise, resolve against the batch and the database, write.

Every batch is one transaction: its source records, the contacts they created, the identifiers,
merge decisions and review items commit together or not at all. ``source_record`` is unique on
(tenant, source, source_record_id), and rows already imported are skipped before resolution, so a
re-run after a crash (or of the same file) continues where the committed batches stopped and
changes nothing that is already there. A dry run does the same work in one transaction that is
rolled back at the end.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy import text
from sqlmodel import Session

from crmctl.db import bulk, sql
from crmctl.db.batch_writer import AFTER_PREVIOUS_BATCH, WriteOp, batch_writer
from crmctl.db.checkpoints import BackgroundCheckpoints, background_checkpoints, batch_session
from crmctl.db.engine import Database, dialect_of, tenant_of
from crmctl.db.models import ImportRun, utcnow
from crmctl.db.sql import lock_rows
from crmctl.errors import CrmctlError, InputError
from crmctl.identity.history import kept_apart
from crmctl.identity.normalize import NICKNAME_TO_CANONICAL
from crmctl.identity.records import FIELD_ALIASES, FIELDS, normalise_records, record_keys
from crmctl.identity.resolve import keep_apart, resolve
from crmctl.identity.rules import ResolutionRules
from crmctl.importers.bulk_load import bulk_load_indexes, deferred_indexes, several_batches, worth_deferring
from crmctl.importers.reader import (
    DEFAULT_BATCH_ROWS,
    ROW_COLUMN,
    RejectWriter,
    load_mapping,
    open_table,
    overlong_fields,
    read_ahead,
    rejects_for,
    resolve_columns,
)

# values per probe statement (one bound array each)
PROBE_CHUNK = {"sqlite": 20_000, "postgresql": 20_000}
# fields of an existing contact that a merged record may fill when they are empty
FILL_FIELDS = (
    "first_name", "last_name", "full_name", "email", "phone", "title", "company", "country",
    "first_name_norm", "last_name_norm", "email_norm", "phone_e164", "company_norm", "company_domain",
)  # fmt: skip
CONTACT_FIELDS = (
    "first_name",
    "last_name",
    "full_name",
    "email",
    "phone",
    "phone_ext",
    "title",
    "company",
    "country",
)


@dataclass
class LeadImportOptions:
    paths: list[Path]
    source: str
    id_column: str | None = None
    mapping_path: Path | None = None
    default_region: str | None = None
    rules: ResolutionRules = field(default_factory=ResolutionRules)
    dry_run: bool = False
    rejects_path: Path | None = None
    encoding: str | None = None
    allow_suppressed: bool = False
    erasure_key: str | None = None
    actor: str = "unknown"
    batch_rows: int = DEFAULT_BATCH_ROWS


@dataclass
class LeadImportResult:
    run_ids: list[int]
    counts: dict[str, Any]
    mappings: dict[str, dict[str, str]]
    seconds: float
    dry_run: bool


class _DryRun(Exception):
    """Raised to roll the dry run's transaction back after its counts are known."""


class _Writes:
    """A batch's writes, in order: run at once on ``session``, or (``deferred``) kept for
    :mod:`crmctl.db.batch_writer` to run in the batch's own transaction (on a thread, or on
    SQLite in a process). Each is a module-level function and its arguments (frames and plain
    values), so a writer process can be sent them."""

    def __init__(self, session: Session, *, deferred: bool = False) -> None:
        self._session = session
        self.ops: list[WriteOp] | None = [] if deferred else None

    @property
    def deferred(self) -> bool:
        return self.ops is not None

    def run(self, func: Callable[..., Any], *args: Any) -> None:
        """``func(session, *args)`` now, or in the writer's transaction."""
        if self.ops is None:
            func(self._session, *args)
        else:
            self.ops.append((func, args))

    def insert(self, table: str, frame: pl.DataFrame) -> None:
        self.run(bulk.insert_frame, table, frame)

    def after_previous_batch(self) -> None:
        """The writes before this insert the batch's own new rows only (see
        :data:`~crmctl.db.batch_writer.AFTER_PREVIOUS_BATCH`)."""
        if self.ops is not None:
            self.ops.append(AFTER_PREVIOUS_BATCH)


@dataclass
class _Delta:
    """What one batch changes that the next batch's probe reads, known before it commits: its new
    contacts (as probed rows), the fill of existing contacts, the contacts it merges away, and the
    identifiers it adds. The next batch reads the database while this one may still be writing,
    and lays this over what it read (see :func:`_overlay_info`)."""

    new_contacts: pl.DataFrame  # contact_id, merged_into_id, FILL_FIELDS
    fill: pl.DataFrame  # winner, FILL_FIELDS
    losers: pl.DataFrame  # loser, winner
    identifiers: pl.DataFrame  # contact_id, kind, value
    next_ids: dict[str, int]  # table -> the first id after those this batch drew (SQLite's draw)


def _empty_counts() -> dict[str, Any]:
    return {
        "rows_read": 0,
        "new_contacts": 0,
        "merged_into_existing": 0,
        "merged_within_file": 0,
        "sent_to_review": 0,
        "rejected": 0,
        "already_imported": 0,
        "contacts_merged": 0,
        "rules": {},
    }


# A large SQLite lead import builds these once at the end (see bulk_load): it reads contacts by id
# and candidates through contact_identifier, never through them; the index of identifiers by
# contact it does read. It also keeps the indexes its rows enter at the end (one run id or a null
# and a rising id: each entry goes next to the previous one, about free), which a rebuild would
# scan the whole table for (200k people: 2.9 s of the end's builds).
APPENDED_INDEXES = [
    "ix_source_record_tenant_run",
    "ix_merge_decision_tenant_run",
    "ix_merge_decision_tenant_loser",
    "ix_contact_tenant_account",
    "ix_contact_tenant_merged_into",
]
BULK_LOAD_INDEXES = bulk_load_indexes(
    ["contact", "contact_identifier", "source_record", "merge_decision", "review_item"],
    keep=["ix_contact_identifier_contact", *APPENDED_INDEXES],
)


def import_leads(db: Database, options: LeadImportOptions) -> LeadImportResult:
    """Import every file in ``options.paths`` (checked first, all of them, before writing)."""
    started = time.perf_counter()
    override = load_mapping(options.mapping_path) if options.mapping_path else None
    tables = []
    mappings: dict[str, dict[str, str]] = {}
    for path in options.paths:
        table = open_table(path, encoding=options.encoding, batch_rows=options.batch_rows)
        mapping = resolve_columns(table.columns, FIELD_ALIASES, override, known_fields=FIELDS)
        if options.id_column is not None and options.id_column not in table.columns:
            raise InputError(
                f"The file {path.name} has no column '{options.id_column}' (given with --id-column).",
                hint=f"Its columns are: {', '.join(table.columns)}.",
            )
        if not {"email", "phone", "helpdesk_id"} & set(mapping):
            raise InputError(
                f"The file {path.name} has no email, phone or helpdesk id column, so no row can be matched.",
                hint='Name the columns with --mapping (e.g. email = "Contact mail").',
            )
        tables.append(table)
        mappings[path.name] = mapping
    counts = _empty_counts()
    rejects = RejectWriter(options.rejects_path)
    run_ids: list[int] = []
    try:
        if options.dry_run:
            try:
                with db.session(write=True) as session:
                    for table in tables:
                        run_id = _start_run(session, options, table, mappings[table.path.name])
                        run_ids.append(run_id)
                        _import_table(
                            db, session, table, mappings[table.path.name], run_id, options, counts, rejects
                        )
                    raise _DryRun
            except _DryRun:
                pass
        else:
            size = sum(table.path.stat().st_size for table in tables)
            # rows against rows: every input row becomes one source record (about three make one
            # contact). Measured against contacts, each of the four source files of 1M rows
            # deferred, and the four rebuilds (one scan of the whole, wide table per index) cost
            # more than keeping the indexes up to date row by row for the later two files
            deferring = worth_deferring(db, "source_record", size)
            with (
                background_checkpoints(db, enabled=several_batches(size, options.batch_rows)) as checkpoints,
                deferred_indexes(db, BULK_LOAD_INDEXES, enabled=deferring),
            ):
                for table in tables:
                    with db.session(write=True) as session:
                        run_id = _start_run(session, options, table, mappings[table.path.name])
                    run_ids.append(run_id)
                    file_counts = _empty_counts()
                    file_rejects = len(rejects.batches)
                    status = "failed"  # the batches written before the error stay (each is whole)
                    try:
                        _import_table(
                            db,
                            None,
                            table,
                            mappings[table.path.name],
                            run_id,
                            options,
                            file_counts,
                            rejects,
                            checkpoints,
                        )
                        status = "completed"
                    finally:
                        _finish_run(db, run_id, file_counts, status, rejects.batches[file_rejects:])
                    _add_counts(counts, file_counts)
    finally:
        rejects.close()
    return LeadImportResult(
        run_ids=run_ids,
        counts=counts,
        mappings=mappings,
        seconds=round(time.perf_counter() - started, 2),
        dry_run=options.dry_run,
    )


def _add_counts(total: dict[str, Any], part: dict[str, Any]) -> None:
    for key, value in part.items():
        if key == "rules":
            rules = Counter(total["rules"])
            rules.update(value)
            total["rules"] = dict(rules)
        else:
            total[key] += value


def _start_run(session: Session, options: LeadImportOptions, table: Any, mapping: dict[str, str]) -> int:
    run = ImportRun(
        tenant_id=tenant_of(session),
        kind="leads",
        source=options.source,
        file_name=table.path.name,
        file_sha256=table.sha256,
        options={
            "id_column": options.id_column,
            "default_region": options.default_region,
            "dry_run": options.dry_run,
            "rules": options.rules.as_dict(),
            # field -> header: `merges show` reads a decision's records' values from their payload
            "mapping": mapping,
        },
        actor=options.actor,
    )
    session.add(run)
    session.flush()
    assert run.id is not None
    return run.id


def _finish_run(
    db: Database, run_id: int, counts: dict[str, Any], status: str, rejected: list[pl.DataFrame]
) -> None:
    """Close the run with its counts and its rejected rows (row, column, reason: what ``imports show
    --results`` lists; a killed run has none, and its re-run rejects the same rows again)."""
    with db.session(write=True) as session:
        run = session.get(ImportRun, run_id)
        assert run is not None
        run.counts = counts
        run.status = status
        run.finished_at = utcnow()
        if rejected:
            bulk.insert_frame(
                session,
                "import_reject",
                pl.concat(rejected).select(
                    pl.lit(tenant_of(session)).alias("tenant_id"),
                    pl.lit(run_id).alias("import_run_id"),
                    pl.col(ROW_COLUMN).alias("row_number"),
                    pl.col("column").alias("column_name"),
                    "reason",
                ),
            )


def _import_table(
    db: Database,
    session: Session | None,
    table: Any,
    mapping: dict[str, str],
    run_id: int,
    options: LeadImportOptions,
    counts: dict[str, Any],
    rejects: RejectWriter,
    checkpoints: BackgroundCheckpoints | None = None,
) -> None:
    seen_ids: set[str] = set()  # touched by _prepare only, on the read-ahead thread
    # A source with no record yet needs no probe for rows already imported: the file's own
    # duplicate ids are rejected by _prepare, and imports into a tenant are serialised (the unique
    # key on source records still stands behind both). 1M rows: 1.4 s of probes.
    if session is not None:
        first_import = not _has_records(session, options.source)
    else:
        with db.session() as probe:
            first_import = not _has_records(probe, options.source)

    def prepare(batch: pl.DataFrame) -> tuple[int, pl.DataFrame, pl.DataFrame]:
        return batch.height, *_prepare(batch, mapping, options, seen_ids)

    # Batch N+1 is read and normalised while batch N resolves and writes.
    batches = read_ahead(table.batches(), prepare)
    if session is not None:  # the dry run's one transaction
        for height, rows, batch_rejects in batches:
            counts["rows_read"] += height
            _resolve_batch(session, rows, run_id, options, counts, rejects, batch_rejects, first_import)
    elif db.is_postgresql or checkpoints is not None:  # checkpoints: a SQLite file, several batches
        _import_pipelined(db, batches, run_id, options, counts, rejects, first_import, checkpoints)
    else:
        # One batch (or an in-memory database): a writer process would cost more than it saves.
        # No foreign key probes: every reference a batch writes is to a row it created or read
        # inside the same write transaction (the run, new contacts, the existing contacts it
        # found), and that transaction holds SQLite's write lock, so none can go away meanwhile.
        for height, rows, batch_rejects in batches:
            counts["rows_read"] += height
            with batch_session(db, None, foreign_keys=False) as batch:
                _resolve_batch(batch, rows, run_id, options, counts, rejects, batch_rejects, first_import)


def _import_pipelined(
    db: Database,
    batches: Iterator[tuple[int, pl.DataFrame, pl.DataFrame]],
    run_id: int,
    options: LeadImportOptions,
    counts: dict[str, Any],
    rejects: RejectWriter,
    first_import: bool,
    checkpoints: BackgroundCheckpoints | None,
) -> None:
    """Batch N+1 is probed and resolved while batch N is written and committed.

    Written in line, the client sat idle while PostgreSQL inserted a batch and the server sat idle
    while the client resolved the next (100k people: the client waited ~20 s of ~55 s for its
    inserts); on SQLite one core did everything. Here each batch's writes, in its own transaction as
    before, run on a writer (:mod:`crmctl.db.batch_writer`: threads on PostgreSQL, where the next
    batch's inserts start while one commits, a process on SQLite); the next batch reads in one
    snapshot (REPEATABLE READ on PostgreSQL, a read transaction on SQLite's WAL) and lays the writes
    of the batch still in flight over what it read (:class:`_Delta`); every batch before that one
    has committed. Batches still commit in order, each whole, so a killed import leaves whole
    batches, as before. What the next batch read is checked again in the writer's transaction
    (:func:`_hold_existing`, :func:`_ids_still_free`), so an erasure or another writer that ran
    meanwhile stops the batch; with the existing contacts it references checked there, SQLite's
    writer still skips the per-row foreign key probes (every other reference is to a row of the same
    batch, or of one that committed before it, or to the run)."""
    postgres = db.is_postgresql
    delta: _Delta | None = None
    with batch_writer(db, checkpoints, process=not postgres, preload=(__name__,)) as writer:
        for height, rows, batch_rejects in batches:
            counts["rows_read"] += height
            # every batch but the last one submitted has committed (or its error is raised here):
            # the read sees them, and ``delta`` is that last one
            writer.wait(keep=1)
            with db.session() as reader:
                if postgres:
                    reader.connection(execution_options={"isolation_level": "REPEATABLE READ"})
                planned = _resolve_batch(
                    reader, rows, run_id, options, counts, rejects, batch_rejects, first_import,
                    deferred=True, delta=delta,
                )  # fmt: skip
            if planned is not None:
                writes, delta = planned
                assert writes.ops is not None
                writer.submit(writes.ops)
                planned = writes = None  # the writer holds them (a process: has them already)


def _has_records(session: Session, source: str) -> bool:
    return (
        session.connection()
        .execute(
            text("SELECT 1 FROM source_record WHERE tenant_id = :t AND source = :s LIMIT 1"),
            {"t": tenant_of(session), "s": source},
        )
        .first()
        is not None
    )


def _asynchronous_commit(session: Session) -> None:
    """PostgreSQL: a batch's COMMIT does not wait for its WAL to reach the disk
    (``SET LOCAL synchronous_commit = off``, which any role may set, for this transaction only).

    A server crash can lose the last batches committed before it, never half of one and never
    consistency (the WAL still orders every write); the batch's rows are simply not there, like an
    import killed before that batch, and a re-run of the same file imports them (rows already
    imported are skipped, see the module docstring). The import run row and its final counts
    commit in their own, synchronous, transactions (whose flush also covers every batch before)."""
    if dialect_of(session) == "postgresql":
        session.connection().exec_driver_sql("SET LOCAL synchronous_commit = off")


def _prepare(
    batch: pl.DataFrame, mapping: dict[str, str], options: LeadImportOptions, seen_ids: set[str]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Mapped, normalised rows of one batch, and the rows rejected with their reasons."""
    data_columns = [c for c in batch.columns if c != ROW_COLUMN]
    too_long = overlong_fields(batch, data_columns)
    fields = batch.select(
        pl.col(ROW_COLUMN),
        *[pl.col(header).alias(target) for target, header in mapping.items()],
        (pl.col(options.id_column) if options.id_column else pl.col(ROW_COLUMN).cast(pl.String)).alias(
            "srid"
        ),
        pl.struct(data_columns).struct.json_encode().alias("payload"),
    )
    fields = fields.filter(~pl.col(ROW_COLUMN).is_in(too_long[ROW_COLUMN].implode()))
    records = normalise_records(fields, source=options.source, default_region=options.default_region)
    problems = [too_long]
    records = records.with_columns(pl.col("srid").str.strip_chars())
    missing_id = records.filter(pl.col("srid").is_null())
    problems.append(rejects_for(missing_id[ROW_COLUMN], options.id_column or "", "missing record id"))
    records = records.filter(pl.col("srid").is_not_null())
    duplicate = records.filter(pl.col("srid").is_duplicated() | pl.col("srid").is_in(list(seen_ids)))
    problems.append(rejects_for(duplicate[ROW_COLUMN], options.id_column or "", "duplicate record id"))
    records = records.filter(~pl.col(ROW_COLUMN).is_in(duplicate[ROW_COLUMN].implode()))
    seen_ids.update(records["srid"].to_list())
    no_key = records.filter(
        pl.col("email_norm").is_null() & pl.col("phone_e164").is_null() & pl.col("helpdesk_key").is_null()
    )
    reason = (
        pl.when(pl.col("email").is_not_null())
        .then(pl.lit("invalid email and no valid phone"))
        .when(pl.col("phone").is_not_null())
        .then(pl.lit("invalid phone and no email"))
        .otherwise(pl.lit("no email, phone or helpdesk id"))
    )
    column = (
        pl.when(pl.col("email").is_not_null())
        .then(pl.lit(mapping.get("email", "")))
        .otherwise(pl.lit(mapping.get("phone", mapping.get("email", ""))))
    )
    problems.append(no_key.select(pl.col(ROW_COLUMN), column.alias("column"), reason.alias("reason")))
    records = records.filter(~pl.col(ROW_COLUMN).is_in(no_key[ROW_COLUMN].implode()))
    return records, pl.concat(problems)


def _select_in(
    session: Session, sql: str, column: str, values: list[Any], params: dict[str, Any], schema: dict[str, Any]
) -> pl.DataFrame:
    """Run ``sql`` (``:name`` parameters and a ``{cond}`` placeholder) for chunks of ``values``.

    Give ``values`` sorted: each chunk then seeks one stretch of the index, near the last seek
    (SQLite, 100k emails against 1M rows' identifiers: 0.13 CPU s sorted, 0.22 s in hash order).

    Index probes with thousands of values, each chunk bound as one parameter: an array unnested
    into a LATERAL seek per value on PostgreSQL, ``IN (SELECT value FROM json_each(…))`` on
    SQLite (a JSON array: one bind instead of one per value, and the probes stay index seeks)."""
    conn = session.connection()
    postgres = dialect_of(session) == "postgresql"
    if postgres:
        sql = re.sub(r":(\w+)", r"%(\1)s", sql)
        cond = f"{column} = u.probe"
    else:
        cond = f"{column} IN (SELECT value FROM json_each(:v))"
    # without statistics SQLite would walk the tenant's whole unique index instead of this one
    by_contact = (
        "contact_identifier" if postgres else "contact_identifier INDEXED BY ix_contact_identifier_contact"
    )
    # contacts by id: the rowid, not a scan of the tenant's rows through some index (SQLite picks
    # one for `tenant_id = ?` when the ids come from a subquery)
    by_id = "contact" if postgres else "contact NOT INDEXED"
    statement = sql.format(cond=cond, by_contact=by_contact, by_id=by_id)
    names = [f"c{i}" for i in range(len(schema))]
    if postgres:
        # one index seek per value, whatever the statistics: a fresh database filled by this
        # import has none, and the planner then reads `tenant_id = ? AND id = ANY(…)` as a scan
        # of the tenant's rows per chunk. OFFSET 0 keeps the LATERAL subquery a subquery: pulled
        # up into a plain join, it was hashed with every identifier of the tenant of that kind
        # (172k rows per 20k-value chunk at 100k people), a cost that grows with the table
        array = "bigint[]" if values and isinstance(values[0], int) else "text[]"
        # the rows come back as one array per column: one result row instead of one per hit
        # (100k people: the rows, made into Python rows and then a frame, cost the client more
        # than the seeks cost the server; 45k hits: 0.25 s against 0.59 s)
        statement = (
            f"SELECT {', '.join(f'array_agg({n})' for n in names)} FROM "
            f"(SELECT x.* FROM unnest(%(v)s::{array}) AS u(probe) "
            f"CROSS JOIN LATERAL ({statement} OFFSET 0) AS x) "
            f"AS hits({', '.join(names)})"
        )
    else:
        # the hits come back as one JSON array per column, decoded by polars: a Python tuple per
        # hit, then a frame, cost more than SQLite's seeks (100k contacts' 16 columns: 0.72 s
        # against 0.30 s; 68k identifiers: 0.21 s against 0.13 s)
        statement = (
            f"WITH hits({', '.join(names)}) AS ({statement}) "
            f"SELECT {', '.join(f'json_group_array({n})' for n in names)} FROM hits"
        )
    parts = []
    raw = conn.connection.driver_connection
    size = PROBE_CHUNK["postgresql" if postgres else "sqlite"]
    for start in range(0, len(values), size):
        chunk = values[start : start + size]
        if postgres:
            columns = conn.exec_driver_sql(statement, {**params, "v": list(chunk)}).one()
            if columns[0] is not None:  # array_agg of no rows is NULL
                parts.append(pl.DataFrame(dict(zip(schema, columns, strict=True)), schema=schema))
            continue
        # the driver's own cursor: SQLAlchemy's Row for every hit cost a third of the fetch
        (first, *rest) = raw.execute(statement, {**params, "v": json.dumps(chunk)}).fetchone()
        if first != "[]":
            parts.append(
                pl.DataFrame(dict(zip(schema, [first, *rest], strict=True))).select(
                    pl.col(name).str.json_decode(pl.List(dtype)).explode() for name, dtype in schema.items()
                )
            )
    return pl.concat(parts) if parts else pl.DataFrame(schema=schema)


def _resolve_batch(
    session: Session,
    records: pl.DataFrame,
    run_id: int,
    options: LeadImportOptions,
    counts: dict[str, Any],
    rejects: RejectWriter,
    batch_rejects: pl.DataFrame,
    first_import: bool = False,
    *,
    deferred: bool = False,
    delta: _Delta | None = None,
) -> tuple[_Writes, _Delta | None] | None:
    """``first_import``: the source had no records when this file's import began (no probe for rows
    already imported). ``deferred``: ``session`` only reads, and the writes are returned for the
    batch writer (a thread or a process) with what they change; ``delta``: the previous batch's,
    if it may not have committed yet (see :func:`_import_pipelined`)."""
    tenant = tenant_of(session)
    # idempotency: rows of this source already imported are skipped
    existing = (
        pl.DataFrame(schema={"srid": pl.String})
        if first_import
        else _select_in(
            session,
            "SELECT source_record_id FROM source_record WHERE tenant_id = :t AND source = :s AND {cond}",
            "source_record_id",
            records["srid"].sort().to_list(),
            {"t": tenant, "s": options.source},
            {"srid": pl.String},
        )
    )
    if existing.height:
        counts["already_imported"] += existing.height
        records = records.filter(~pl.col("srid").is_in(existing["srid"].implode()))
    suppressed = _suppressed(session, records, options)
    if suppressed is not None:
        batch_rejects = pl.concat(
            [batch_rejects, rejects_for(records.filter(suppressed)[ROW_COLUMN], "", "suppressed")]
        )
        records = records.filter(~suppressed)
    rejects.add(batch_rejects)
    counts["rejected"] += batch_rejects[ROW_COLUMN].n_unique()
    if records.height == 0:
        return None
    records = records.with_row_index("node").with_columns(pl.col("node").cast(pl.Int64))
    keys = record_keys(records)
    contacts, contact_keys, stored = _candidates(session, keys, records.height, delta)
    nodes = pl.concat(
        [
            records.select("node", pl.col("first_c").alias("first"), pl.col("last_c").alias("last")),
            contacts.select("node", "first", "last"),
        ]
    )
    resolution = resolve(nodes, pl.concat([keys, contact_keys]), options.rules)
    if contacts.height > 1:  # a rejected pair of existing contacts is not merged by an import either
        resolution = keep_apart(
            resolution, kept_apart(session, dict(contacts.select("contact_id", "node").iter_rows()))
        )
    writes = _Writes(session, deferred=deferred)
    floors = delta.next_ids if delta is not None else {}
    written = _write(session, writes, records, contacts, stored, resolution, run_id, options, counts, floors)
    return writes, written


def _suppressed(session: Session, records: pl.DataFrame, options: LeadImportOptions) -> pl.Series | None:
    try:
        from crmctl.erasure.suppression import find_suppressed
    except ImportError:  # the erasure module is optional in a trimmed install
        return None
    mask = find_suppressed(
        session, key=options.erasure_key, emails=records["email_norm"], phones=records["phone_e164"]
    )
    if options.allow_suppressed:
        mask = mask & records["consent_evidence"].is_null()
    return mask if mask.any() else None


def _candidates(
    session: Session, keys: pl.DataFrame, offset: int, delta: _Delta | None = None
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Existing contacts sharing a key with the batch (index probes on contact_identifier).

    Returns the contacts as nodes (node, contact_id, first, last, and their FILL_FIELDS as they
    are before this batch), their keys (node, kind, value: also those of the contacts merged into
    them), and the identifiers as stored (winner, kind, value: under each contact's own id), which
    the write uses to add only new identifiers. ``delta``: the previous batch's writes, which the
    database may not hold yet (see :func:`_import_pipelined`), laid over what is read."""
    tenant = tenant_of(session)
    id_schema = {"contact_id": pl.Int64, "kind": pl.String, "value": pl.String}
    hits = []
    for kind, group in keys.group_by("kind"):
        values = group["value"].unique().sort().to_list()
        hits.append(
            _select_in(
                session,
                "SELECT contact_id, kind, value FROM contact_identifier "
                "WHERE tenant_id = :t AND kind = :k AND {cond}",
                "value",
                values,
                {"t": tenant, "k": kind[0]},
                id_schema,
            )
        )
    found = pl.concat(hits) if hits else pl.DataFrame(schema=id_schema)
    if delta is not None:
        added = keys.select("kind", "value").unique().join(delta.identifiers, on=["kind", "value"])
        found = pl.concat([found, added.select(found.columns)]).unique()
    # the fields a merge decision keeps as "before" are read here too, once
    contact_schema = {
        "contact_id": pl.Int64,
        "merged_into_id": pl.Int64,
        **dict.fromkeys(FILL_FIELDS, pl.String),
    }
    ids = found["contact_id"].unique().sort().to_list()
    # follow merges to the surviving contact
    roots: dict[int, int] = {}
    frontier = ids
    info_parts = []
    # The previous batch's new contacts are known whole from its delta: they are not read. (Its
    # insert may be running: planned while the committed table was small, a probe by id took a
    # tenant-wide index scan, then walked every uncommitted entry per value; 20k ids: 96 s.)
    unread = set(delta.new_contacts["contact_id"].to_list()) if delta is not None else set()
    while frontier:
        info = _select_in(
            session,
            f"SELECT id, merged_into_id, {', '.join(FILL_FIELDS)} FROM {{by_id}} "
            "WHERE tenant_id = :t AND erased_at IS NULL AND {cond}",
            "id",
            [i for i in frontier if i not in unread],
            {"t": tenant},
            contact_schema,
        )
        if delta is not None:
            info = _overlay_info(info, frontier, delta)
        info_parts.append(info)
        frontier = [
            p for p in info["merged_into_id"].drop_nulls().unique().sort().to_list() if p not in roots
        ]
        for cid, parent in info.select("contact_id", "merged_into_id").iter_rows():
            roots[cid] = parent if parent is not None else cid
    if not roots:
        empty_nodes = pl.DataFrame(
            schema={
                "node": pl.Int64,
                "contact_id": pl.Int64,
                "first": pl.String,
                "last": pl.String,
                **dict.fromkeys(FILL_FIELDS, pl.String),
            }
        )
        empty_keys = pl.DataFrame(schema={"node": pl.Int64, "kind": pl.String, "value": pl.String})
        return (
            empty_nodes,
            empty_keys,
            pl.DataFrame(schema={"winner": pl.Int64, "kind": pl.String, "value": pl.String}),
        )

    def root(cid: int) -> int:
        seen = 0
        while roots.get(cid, cid) != cid and seen < 100:
            cid = roots[cid]
            seen += 1
        return cid

    info = pl.concat(info_parts).unique("contact_id")
    survivors = sorted({root(c) for c in roots})
    contacts = (
        info.filter(pl.col("contact_id").is_in(survivors))
        .sort("contact_id")
        .with_row_index("node", offset=offset)
        .with_columns(
            pl.col("node").cast(pl.Int64),
            pl.col("first_name_norm").alias("first"),
            pl.col("last_name_norm").str.replace_all(" ", "").replace(NICKNAME_TO_CANONICAL).alias("last"),
        )
    )
    # every identifier of the surviving contacts and of the contacts merged into them
    root_of = {c: root(c) for c in roots}
    members = sorted(roots)
    stored = _select_in(
        session,
        "SELECT contact_id, kind, value FROM {by_contact} WHERE tenant_id = :t AND {cond}",
        "contact_id",
        [m for m in members if m not in unread],
        {"t": tenant},
        id_schema,
    )
    if delta is not None:
        ours = delta.identifiers.filter(pl.col("contact_id").is_in(members))
        stored = pl.concat([stored, ours]).unique().sort("contact_id", "kind", "value")
    all_keys = stored.with_columns(pl.col("contact_id").replace_strict(root_of, return_dtype=pl.Int64))
    contact_keys = all_keys.join(contacts.select("node", "contact_id"), on="contact_id").select(
        "node", "kind", "value"
    )
    return (
        contacts.select("node", "contact_id", "first", "last", *FILL_FIELDS),
        contact_keys,
        stored.rename({"contact_id": "winner"}),
    )


def _overlay_info(info: pl.DataFrame, ids: list[int], delta: _Delta) -> pl.DataFrame:
    """Contacts ``ids`` as read, with the previous batch's writes applied: its new contacts (never
    read, see :func:`_candidates`), its fill (the UPDATE's own COALESCE, see
    :func:`_update_existing`) and its merges. Applying a fill or merge the read already saw changes
    nothing, so the read may have come before or after that batch's commit."""
    new = delta.new_contacts.filter(pl.col("contact_id").is_in(ids))
    if new.height:
        info = pl.concat([info, new.select(info.columns)])
    if delta.fill.height:
        fill = delta.fill.rename({f: f"_fill_{f}" for f in FILL_FIELDS})
        info = (
            info.join(fill, left_on="contact_id", right_on="winner", how="left", maintain_order="left")
            .with_columns(
                (pl.coalesce(f"_fill_{f}", f) if f in NAME_FIELDS else pl.coalesce(f, f"_fill_{f}")).alias(f)
                for f in FILL_FIELDS
            )
            .drop([f"_fill_{f}" for f in FILL_FIELDS])
        )
    if delta.losers.height:
        info = (
            info.join(delta.losers, left_on="contact_id", right_on="loser", how="left", maintain_order="left")
            .with_columns(pl.coalesce("winner", "merged_into_id").alias("merged_into_id"))
            .drop("winner")
        )
    return info


def _hold_existing(session: Session, contact_ids: pl.Series, read_elsewhere: bool) -> None:
    """Make sure the existing contacts this batch writes to or merges are still there, unerased,
    until it commits.

    An erasure run may start while an import runs (they take different job locks). Unchecked, it
    could pseudonymise a contact between this batch's read and its writes, and the batch's fill,
    identifiers and source records would bring the person's data back. PostgreSQL locks them: the
    erasure waits for this batch and then scrubs what it wrote too. A contact erased before the
    lock stops the batch (nothing of it is written), and a re-run finishes the job. SQLite: a batch
    read in its own write transaction holds the database's write lock from its first read, so
    nothing can change under it; one read ``read_elsewhere`` (the writer process) counts them again
    under the write lock."""
    ids = contact_ids.drop_nulls().unique().sort().to_list()
    if not ids:
        return
    if dialect_of(session) == "postgresql":
        held = lock_rows(session, "contact", ids, mode="FOR NO KEY UPDATE", where="erased_at IS NULL")
    elif read_elsewhere:
        held = _select_in(
            session,
            "SELECT id FROM {by_id} WHERE tenant_id = :t AND erased_at IS NULL AND {cond}",
            "id",
            ids,
            {"t": tenant_of(session)},
            {"id": pl.Int64},
        ).height
    else:
        return
    if held != len(ids):
        raise CrmctlError(
            "A contact this import was merging into was erased while the batch ran; "
            "the batch was not written.",
            hint="Run the same import again: it skips what is imported and finishes the rest.",
        )


def _ids_still_free(session: Session, first_ids: dict[str, int]) -> None:
    """SQLite, a batch read outside its write transaction: the ids it drew (``MAX(id) + 1`` as it
    read, see :func:`bulk.allocate_ids`) must still be free under the write lock. Another program
    that inserted rows meanwhile stops the batch with a sentence, not a key violation."""
    for table, first in first_ids.items():
        if bulk.allocate_ids(session, table, 1)[0] > first:
            raise CrmctlError(
                "Another program wrote to the database while this import ran; the batch was not written.",
                hint="Run the same import again: it skips what is imported and finishes the rest.",
            )


def _write(
    session: Session,
    writes: _Writes,
    records: pl.DataFrame,
    contacts: pl.DataFrame,
    stored: pl.DataFrame,
    resolution: Any,
    run_id: int,
    options: LeadImportOptions,
    counts: dict[str, Any],
    floors: dict[str, int],
) -> _Delta | None:
    """Write the batch through ``writes`` (``session`` reads and draws ids); deferred writes return
    what they will change for the next batch's probe. ``floors``: per table, the first id the
    batch still in flight left free (SQLite draws ``MAX(id) + 1``, and its rows are not there yet)."""
    tenant = tenant_of(session)
    if writes.deferred:
        writes.run(_asynchronous_commit)
    drawn: dict[str, list[int]] = {}

    def draw(table: str, count: int) -> list[int]:
        drawn[table] = bulk.allocate_ids(session, table, count, at_least=floors.get(table, 1))
        return drawn[table]

    now = utcnow()
    n_records = records.height
    clusters = resolution.clusters
    # which existing contact (if any) each cluster lands in: the oldest one
    existing = clusters.join(contacts.select("node", "contact_id"), on="node")
    record_clusters = clusters.filter(pl.col("node") < n_records)
    # only clusters with incoming records: existing contacts are merged here only through them
    landing = (
        existing.filter(pl.col("cluster").is_in(record_clusters["cluster"].implode()))
        .group_by("cluster")
        .agg(pl.col("contact_id").min().alias("winner"), pl.col("contact_id").sort().alias("all_contacts"))
    )
    new_clusters = (
        record_clusters.select("cluster").unique().join(landing, on="cluster", how="anti").sort("cluster")
    )
    new_ids = draw("contact", new_clusters.height)
    new_clusters = new_clusters.with_columns(pl.Series("winner", new_ids, dtype=pl.Int64))
    target = pl.concat([landing.select("cluster", "winner"), new_clusters.select("cluster", "winner")])
    trust = options.rules.source_trust.get(options.source, 1)
    recs = (
        records.join(record_clusters, on="node")
        .join(target, on="cluster")
        .with_columns(pl.lit(trust).alias("trust"))
    )
    reviews = _review_pairs(session, resolution.reviews, clusters, target, contacts)
    review_nodes = set(reviews["a"].to_list()) | set(reviews["b"].to_list())
    is_new = pl.col("cluster").is_in(new_clusters["cluster"].implode())
    first_of_cluster = pl.col("node") == pl.col("node").min().over("cluster")
    recs = recs.with_columns(
        pl.when(pl.col("node").is_in(list(review_nodes)))
        .then(pl.lit("review"))
        .when(is_new & first_of_cluster)
        .then(pl.lit("created"))
        .otherwise(pl.lit("merged"))
        .alias("action")
    )
    sr_ids = draw("source_record", recs.height)
    # Decision ids: enough for a decision per cluster that joined anything and one per younger
    # existing contact merged; unused ids are gaps.
    cluster_edges = resolution.edges.join(clusters.rename({"node": "a"}), on="a")
    younger = int((landing["all_contacts"].list.len() - 1).sum() or 0)
    decision_ids = draw("merge_decision", cluster_edges["cluster"].n_unique() + younger)
    recs = recs.sort("node").with_columns(pl.Series("sr_id", sr_ids, dtype=pl.Int64))
    counts["new_contacts"] += new_clusters.height
    counts["merged_into_existing"] += recs.filter(~is_new).height
    counts["merged_within_file"] += recs.filter(is_new & ~first_of_cluster).height
    # rows, like the other counts (and the results file's "review" action), not pairs
    counts["sent_to_review"] += recs.filter(pl.col("action") == "review").height
    rule_counts = Counter(counts["rules"])
    rule_counts.update(dict(resolution.edges.group_by("rule").len().iter_rows()))
    counts["rules"] = dict(rule_counts)

    contact_values = _best_values(recs)
    new_contacts = contact_values.join(new_clusters.select("winner"), on="winner").with_columns(
        pl.lit(tenant).alias("tenant_id"),
        pl.lit("lead").alias("lifecycle_stage"),
        pl.lit(options.source).alias("source"),
        pl.lit(now).alias("created_at"),
        pl.lit(now).alias("updated_at"),
    )
    writes.insert(
        "contact",
        new_contacts.select(
            pl.col("winner").alias("id"),
            "tenant_id",
            *CONTACT_FIELDS,
            "first_name_norm",
            "last_name_norm",
            "email_norm",
            "phone_e164",
            "company_norm",
            "company_domain",
            "lifecycle_stage",
            "source",
            "field_provenance",
            "created_at",
            "updated_at",
        ),
    )
    writes.insert(
        "source_record",
        recs.select(
            pl.col("sr_id").alias("id"),
            pl.lit(tenant).alias("tenant_id"),
            pl.lit(options.source).alias("source"),
            pl.col("srid").alias("source_record_id"),
            pl.lit(run_id).alias("import_run_id"),
            pl.col(ROW_COLUMN).alias("row_number"),
            "payload",
            pl.col("payload").hash().cast(pl.String).alias("content_hash"),
            "email_norm",
            "phone_e164",
            pl.col("name_key"),
            pl.col("company_tok").alias("company_key"),
            pl.col("winner").alias("contact_id"),
            "action",
            "campaign",
            "medium",
            "received_at",
            pl.lit(now).alias("created_at"),
        ),
    )
    # identifiers the contacts did not have yet
    keys = (
        record_keys(recs)
        .join(recs.select("node", "winner", "sr_id"), on="node")
        .unique(["winner", "kind", "value"], keep="first", maintain_order=True)
    )
    if stored.height:
        keys = keys.join(stored, on=["winner", "kind", "value"], how="anti")
    # in the unique index's order, each insert next to the previous one (SQLite, 1M rows: 5.5 ->
    # 3.9 CPU s for the identifiers)
    ordered = keys.sort("kind", "value")
    writes.insert(
        "contact_identifier",
        ordered.select(
            pl.lit(tenant).alias("tenant_id"),
            pl.col("winner").alias("contact_id"),
            "kind",
            "value",
            pl.col("sr_id").alias("source_record_id"),
            pl.lit(now).alias("created_at"),
        ),
    )
    fill = _fill_rows(_name_in_place(contact_values, contacts), contacts, landing)
    # clusters holding two or more existing contacts: the younger ones merge into the oldest
    losers = (
        landing.select("winner", "all_contacts")
        .explode("all_contacts")
        .filter(pl.col("all_contacts") != pl.col("winner"))
        .select(pl.col("all_contacts").alias("loser"), "winner")
    )
    # decisions first: they keep the existing contacts' fields as they were before the fill (undo)
    _merge_decisions(
        session,
        writes,
        recs,
        contacts,
        clusters,
        landing,
        fill["winner"],
        cluster_edges,
        decision_ids,
        run_id,
        options,
        counts,
        now,
    )
    # the inserts above are all of the batch's own new rows; what follows locks, updates or (a
    # review item's foreign keys) references rows the batch before may have written
    writes.after_previous_batch()
    writes.run(_hold_existing, contacts["contact_id"], writes.deferred)
    _merge_losers(session, writes, losers, counts, now)
    writes.run(_update_existing, fill, now)
    _review_items(session, writes, reviews, run_id, now)
    if not writes.deferred:
        return None
    if dialect_of(session) == "sqlite":
        assert writes.ops is not None
        writes.ops.insert(0, (_ids_still_free, ({t: ids[0] for t, ids in drawn.items() if ids},)))
    return _Delta(
        new_contacts=new_contacts.select(
            pl.col("winner").alias("contact_id"),
            pl.lit(None, dtype=pl.Int64).alias("merged_into_id"),
            *[pl.col(f).cast(pl.String) for f in FILL_FIELDS],
        ),
        fill=fill.select("winner", *[pl.col(f).cast(pl.String) for f in FILL_FIELDS]),
        losers=losers,
        identifiers=ordered.select(pl.col("winner").alias("contact_id"), "kind", "value"),
        next_ids={t: max(floors.get(t, 1), ids[-1] + 1 if ids else 1) for t, ids in drawn.items()},
    )


def _best_values(recs: pl.DataFrame) -> pl.DataFrame:
    """Survivorship: per contact and field, the value from the most trusted, most recent record.

    A name is one value: first and last name (raw and normalised) come from the same record, the
    most complete one first. Taken part by part, 'Robinson Karen' (written swapped) beside
    'Karen Robinson' gave the contact 'Karen Karen', a name that then conflicted with the person's
    own records and blocked every later merge."""
    ordered = recs.with_columns(
        pl.concat_str([pl.col("first_raw"), pl.col("last_raw")], separator=" ", ignore_nulls=True)
        .replace("", None)
        .alias("full_name"),
        pl.col("first_raw").alias("first_name"),
        pl.col("last_raw").alias("last_name"),
        pl.col("country_code").alias("country"),
    ).sort(["trust", "received_at", "node"], descending=[True, True, False], nulls_last=True)
    name_fields = ("first_name", "last_name", "full_name")
    value_fields = [f for f in CONTACT_FIELDS if f not in name_fields]
    value_fields += ["email_norm", "phone_e164", "company_norm", "company_domain"]
    best = ordered.group_by("winner", maintain_order=True).agg(
        *[pl.col(f).drop_nulls().first().alias(f) for f in value_fields],
        *[
            pl.col("srid").filter(pl.col(f).is_not_null()).first().alias(f"_from_{f}")
            for f in CONTACT_FIELDS
            if f not in name_fields
        ],
    )
    parts = pl.col("first_raw").is_not_null().cast(pl.Int8) + pl.col("last_raw").is_not_null().cast(pl.Int8)
    names = (
        ordered.filter(parts > 0)
        .sort(parts, descending=True, maintain_order=True)
        .unique("winner", keep="first", maintain_order=True)
        .select(
            "winner",
            *name_fields,
            # first_name_norm is stored nickname-canonical (what matching compares)
            pl.col("first_c").alias("first_name_norm"),
            "last_name_norm",
            *[pl.when(pl.col(f).is_not_null()).then(pl.col("srid")).alias(f"_from_{f}") for f in name_fields],
        )
    )
    best = best.join(names, on="winner", how="left", maintain_order="left")
    provenance = pl.struct(
        [
            pl.when(pl.col(f"_from_{f}").is_not_null())
            .then(pl.struct(pl.col(f"_from_{f}").alias("source_record_id")))
            .alias(f)
            for f in CONTACT_FIELDS
        ]
    ).struct.json_encode()
    return best.with_columns(without_nulls(provenance).alias("field_provenance")).drop(
        [f"_from_{f}" for f in CONTACT_FIELDS]
    )


NAME_FIELDS = ("first_name", "last_name", "full_name", "first_name_norm", "last_name_norm")


def _name_in_place(values: pl.DataFrame, contacts: pl.DataFrame) -> pl.DataFrame:
    """The fill values with the name as the contact will hold it: a name is one value, so an
    existing contact holding part of a name (a web form's first name) takes the incoming complete
    name whole; filled part by part, 'Karen' + 'Robinson Karen' (written swapped) became
    'Karen Karen', and 'Tyler' + 'Howard Teler' became 'Tyler Teler'. A contact with a complete
    name keeps it."""
    if contacts.height == 0:
        return values
    held = contacts.select(
        pl.col("contact_id").alias("winner"), *[pl.col(f).alias(f"_held_{f}") for f in NAME_FIELDS]
    )
    partial = pl.col("_held_first_name_norm").is_null() | pl.col("_held_last_name_norm").is_null()
    complete = pl.col("first_name_norm").is_not_null() & pl.col("last_name_norm").is_not_null()
    replace = (partial & complete).fill_null(False)
    return (
        values.join(held, on="winner", how="left", maintain_order="left")
        .with_columns(
            *[
                pl.when(replace).then(pl.col(f)).otherwise(pl.coalesce(f"_held_{f}", f)).alias(f)
                for f in NAME_FIELDS
            ]
        )
        .drop([f"_held_{f}" for f in NAME_FIELDS])
    )


def _fill_rows(values: pl.DataFrame, contacts: pl.DataFrame, landing: pl.DataFrame) -> pl.DataFrame:
    """The existing contacts that records merged into and that gain a value, with their fill values.

    The UPDATE's own test (see :func:`_update_existing`), applied to the fields the batch read with
    its candidates (200k people: 166k of the 397k contacts records landed in). Only these contacts
    change, so only their merge decisions keep a "before" for undo."""
    fill = FILL_FIELDS
    if landing.height == 0:
        return values.clear().select("winner", *fill)
    held = contacts.select(
        pl.col("contact_id").alias("winner"), *[pl.col(f).alias(f"_held_{f}") for f in fill]
    )
    gains = pl.any_horizontal(
        pl.col(f).is_not_null() & (pl.col(f"_held_{f}").is_null() | (pl.col(f"_held_{f}") != pl.col(f)))
        if f in NAME_FIELDS
        else pl.col(f).is_not_null() & pl.col(f"_held_{f}").is_null()
        for f in fill
    ).fill_null(False)
    return (
        values.join(landing.select("winner"), on="winner")
        .join(held, on="winner", how="left")
        .filter(gains)
        .select("winner", *fill)
    )


def _update_existing(session: Session, rows: pl.DataFrame, now: Any) -> None:
    """Fill the empty fields of existing contacts that records merged into (provenance kept):
    ``rows`` from :func:`_fill_rows`. The UPDATE still tests the stored row."""
    fill = FILL_FIELDS
    if rows.height == 0:
        return
    tenant = tenant_of(session)
    # one bulk insert into a temporary table and one UPDATE … FROM, not one statement per contact
    conn = session.connection()
    if dialect_of(session) == "postgresql":
        conn.exec_driver_sql(
            "CREATE TEMPORARY TABLE IF NOT EXISTS lead_fill (winner bigint, "
            + ", ".join(f"{f} text" for f in fill)
            + ") ON COMMIT DROP"
        )
        conn.exec_driver_sql("TRUNCATE lead_fill")
    else:
        conn.exec_driver_sql(
            "CREATE TEMP TABLE IF NOT EXISTS lead_fill (winner INTEGER PRIMARY KEY, "
            + ", ".join(f"{f} TEXT" for f in fill)
            + ")"
        )
        conn.exec_driver_sql("DELETE FROM temp.lead_fill")
    if dialect_of(session) == "postgresql":
        bulk.copy_frame(session, "lead_fill", rows.select("winner", *fill))  # no RLS: straight in
    else:
        bulk.insert_frame(session, "lead_fill", rows.select("winner", *fill))
    # the name fields hold their final values already (see _name_in_place)
    sets = ", ".join(
        f"{f} = COALESCE(t.{f}, contact.{f})" if f in NAME_FIELDS else f"{f} = COALESCE(contact.{f}, t.{f})"
        for f in fill
    )
    # only contacts that gain a value are rewritten (most merged records bring nothing new)
    gains = " OR ".join(
        f"(t.{f} IS NOT NULL AND (contact.{f} IS NULL OR contact.{f} <> t.{f}))"
        if f in NAME_FIELDS
        else f"(contact.{f} IS NULL AND t.{f} IS NOT NULL)"
        for f in fill
    )
    # SQLite: seek each contact by rowid (left to itself it scans the tenant through an index)
    target, seek = (
        ("contact", "")
        if dialect_of(session) == "postgresql"
        else ("contact NOT INDEXED", " AND contact.id IN (SELECT winner FROM temp.lead_fill)")
    )
    conn.execute(
        text(
            f"UPDATE {target} SET {sets}, updated_at = :now FROM lead_fill t "
            f"WHERE contact.tenant_id = :t AND contact.id = t.winner{seek} AND contact.erased_at IS NULL "
            f"AND ({gains})"
        ),
        {"now": now, "t": tenant},
    )
    if dialect_of(session) != "postgresql":
        # The temporary table outlives the transaction on a pooled SQLite connection: leave no
        # personal data in it (PostgreSQL drops it on commit).
        conn.exec_driver_sql("DELETE FROM temp.lead_fill")


def _merge_decisions(
    session: Session,
    writes: _Writes,
    recs: pl.DataFrame,
    contacts: pl.DataFrame,
    clusters: pl.DataFrame,
    landing: pl.DataFrame,
    filled: pl.Series,
    cluster_edges: pl.DataFrame,
    decision_ids: list[int],
    run_id: int,
    options: LeadImportOptions,
    counts: dict[str, Any],
    now: Any,
) -> None:
    """One decision per cluster that joined anything: rule, score, levels, every candidate's values.

    Written compactly (about half a million decisions for 1M rows): the records' values stay in
    their source records (``source_record_ids`` names them; ``merges show`` reads them from the
    payload, see ``history.merge_decision``), so ``candidates`` holds the existing contacts' values
    only (they can change later; NULL when the cluster joined records only), and ``before``, the
    winner's fields for undo, only when this batch's fill changes that contact (``filled``).
    ``cluster_edges``: the resolution's edges with their cluster; ``decision_ids``: ids drawn for
    them, enough for every decision this writes."""
    tenant = tenant_of(session)
    summary = cluster_edges.group_by("cluster").agg(
        pl.col("rule").sort_by("score", descending=True).first().alias("rule"),
        pl.col("score").min().alias("score"),
        pl.concat_str("rule", "level", separator=":").unique().sort().alias("levels"),
    )
    if summary.height == 0:
        return
    contact_rows = contacts.select("contact_id", *FILL_FIELDS) if contacts.height else None
    # only the clusters that joined anything get a decision: the others' values are not needed
    deciding = summary.select("cluster")
    recs = recs.join(deciding, on="cluster", how="semi")
    by_cluster = pl.DataFrame(
        schema={"cluster": recs.schema["cluster"], "candidate": pl.List(pl.Struct({"type": pl.String}))}
    )
    if contact_rows is not None and contact_rows.height:
        by_cluster = (
            contact_rows.join(contacts.select("node", "contact_id"), on="contact_id")
            .join(clusters.join(deciding, on="cluster", how="semi"), on="node")
            .select(
                "cluster",
                pl.struct(
                    pl.lit("contact").alias("type"),
                    "contact_id",
                    "email",
                    "phone",
                    "first_name",
                    "last_name",
                    "company",
                ).alias("candidate"),
            )
            .group_by("cluster")
            .agg(pl.col("candidate"))
        )
    records_by_cluster = recs.group_by("cluster").agg(
        pl.col("sr_id").sort().alias("sr_ids"), pl.col("winner").first()
    )
    decisions = (
        summary.join(records_by_cluster, on="cluster")
        .join(by_cluster, on="cluster", how="left")
        .join(landing.select("cluster", "all_contacts"), on="cluster", how="left")
    )
    before_schema = {"winner": pl.Int64, "before": pl.String}
    before = (
        contact_rows.filter(pl.col("contact_id").is_in(filled.implode())).select(
            pl.col("contact_id").alias("winner"),
            without_nulls(pl.struct(*FILL_FIELDS).struct.json_encode()).alias("before"),
        )
        if contact_rows is not None and contact_rows.height
        else pl.DataFrame(schema=before_schema)
    )
    decisions = decisions.join(before, on="winner", how="left")
    frame = decisions.with_columns(pl.Series("id", decision_ids[: decisions.height], dtype=pl.Int64)).select(
        "id",
        pl.lit(tenant).alias("tenant_id"),
        pl.lit(run_id).alias("import_run_id"),
        pl.lit("record").alias("kind"),
        "rule",
        "score",
        pl.col("winner").alias("winner_contact_id"),
        json_list("sr_ids").alias("source_record_ids"),
        pl.struct(pl.col("levels").alias("edges")).struct.json_encode().alias("levels"),
        pl.when(pl.col("candidate").is_not_null())
        .then(without_nulls(json_list("candidate")))
        .alias("candidates"),
        "before",
        pl.lit(options.actor).alias("actor"),
        pl.lit(now).alias("created_at"),
    )
    writes.insert("merge_decision", frame)
    # clusters holding two or more existing contacts: one contact decision per younger contact
    merged = frame.join(
        decisions.select("winner", "all_contacts")
        .explode("all_contacts")
        .rename({"winner": "winner_contact_id"}),
        on="winner_contact_id",
    ).filter(pl.col("all_contacts").is_not_null() & (pl.col("all_contacts") != pl.col("winner_contact_id")))
    if merged.height:
        merged = merged.unique("all_contacts", keep="first", maintain_order=True)
        contact_ids = decision_ids[decisions.height : decisions.height + merged.height]
        writes.insert(
            "merge_decision",
            merged.with_columns(
                pl.Series("id", contact_ids, dtype=pl.Int64),
                pl.lit("contact").alias("kind"),
                pl.col("all_contacts").alias("loser_contact_id"),
                pl.lit(None, dtype=pl.String).alias("before"),
            ).drop("all_contacts"),
        )


def _merge_losers(
    session: Session, writes: _Writes, losers: pl.DataFrame, counts: dict[str, Any], now: Any
) -> None:
    """The younger existing contacts of a cluster merge into its oldest (``losers``: loser, winner)."""
    tenant = tenant_of(session)
    if losers.height:
        counts["contacts_merged"] += losers.height
        winners, loser_ids = losers["winner"].to_list(), losers["loser"].to_list()
        if dialect_of(session) == "postgresql":
            # one statement for all of them (executemany sent one UPDATE per contact)
            sql = (
                "UPDATE contact SET merged_into_id = u.w, updated_at = %(now)s "
                "FROM unnest(%(w)s::bigint[], %(l)s::bigint[]) AS u(w, l) "
                "WHERE contact.tenant_id = %(t)s AND contact.id = u.l"
            )
            params = {"w": winners, "l": loser_ids, "now": now, "t": tenant}
            writes.run(_execute_driver_sql, sql, params)
        else:
            sql = "UPDATE contact SET merged_into_id = :w, updated_at = :now WHERE tenant_id = :t AND id = :l"
            rows = [
                {"w": w, "l": x, "now": now, "t": tenant} for w, x in zip(winners, loser_ids, strict=True)
            ]
            writes.run(_execute_sql, sql, rows)


def _execute_driver_sql(session: Session, sql: str, params: Any) -> None:
    session.connection().exec_driver_sql(sql, params)


def _execute_sql(session: Session, sql: str, params: Any) -> None:
    session.connection().execute(text(sql), params)


def _review_pairs(
    session: Session,
    reviews: pl.DataFrame,
    clusters: pl.DataFrame,
    target: pl.DataFrame,
    contacts: pl.DataFrame,
) -> pl.DataFrame:
    """The resolution's review pairs (nodes ``a``, ``b``) as pairs of contacts, ``left`` < ``right``,
    one per pair of contacts, without those a person has already been asked about (open or
    decided: a "different people" stands). A node's contact is its cluster's winner or, for an
    existing contact in a cluster no record joined, itself (such pairs were once dropped)."""
    landed = clusters.join(target, on="cluster").select("node", "winner")
    node_contact = pl.concat(
        [
            landed,
            contacts.select("node", pl.col("contact_id").alias("winner")).join(landed, on="node", how="anti"),
        ]
    )
    pairs = (
        reviews.join(node_contact.rename({"node": "a", "winner": "one"}), on="a")
        .join(node_contact.rename({"node": "b", "winner": "other"}), on="b")
        .filter(pl.col("one") != pl.col("other"))
        .with_columns(
            pl.min_horizontal("one", "other").alias("left"), pl.max_horizontal("one", "other").alias("right")
        )
        .unique(["left", "right"], keep="first", maintain_order=True)
    )
    # only pairs of two existing contacts can have been asked about before
    existing = contacts["contact_id"].implode()
    pairs = pairs.with_columns(
        (pl.col("left").is_in(existing) & pl.col("right").is_in(existing)).alias("existing")
    )
    both_existing = pairs.filter("existing")
    if both_existing.height == 0:
        return pairs
    ids = sorted(set(both_existing["left"].to_list()) | set(both_existing["right"].to_list()))
    # review items are few and have no index by contact: one read of the tenant's, by a list
    asked = sql.frame(
        session,
        "SELECT left_contact_id AS one, right_contact_id AS other FROM review_item "
        f"WHERE tenant_id = :tenant AND {sql.in_list(session, 'left_contact_id', 'ids')}",
        {"one": pl.Int64, "other": pl.Int64},
        ids=sql.list_param(session, ids),
    )
    known = pl.concat(
        [
            asked.select(pl.col("one").alias("left"), pl.col("other").alias("right")),
            asked.select(pl.col("other").alias("left"), pl.col("one").alias("right")),
        ]
    )
    return pairs.join(known, on=["left", "right"], how="anti")


def _review_items(session: Session, writes: _Writes, pairs: pl.DataFrame, run_id: int, now: Any) -> None:
    """Queue ``pairs`` (from :func:`_review_pairs`) for a person to decide."""
    if pairs.height == 0:
        return
    writes.insert(
        "review_item",
        pairs.select(
            pl.lit(tenant_of(session)).alias("tenant_id"),
            pl.lit(run_id).alias("import_run_id"),
            pl.col("left").alias("left_contact_id"),
            pl.col("right").alias("right_contact_id"),
            "rule",
            "score",
            pl.struct("rule", "level").struct.json_encode().alias("levels"),
            pl.lit("open").alias("status"),
            pl.lit(now).alias("created_at"),
        ),
    )
    # a pair of existing contacts may also have been queued by the batch still in flight, which
    # the read could not see: the writer keeps the first
    lefts = pairs.filter("existing")["left"]
    if lefts.len():
        writes.run(_drop_repeated_review_pairs, run_id, sorted(set(lefts.to_list())))


def _drop_repeated_review_pairs(session: Session, run_id: int, lefts: list[int]) -> None:
    """Keep one review item per pair among this run's pairs whose left contact is in ``lefts``
    (this run stores every pair as left < right). Runs in the writer's transaction, where the
    batch before has committed."""
    within = (
        f"tenant_id = :tenant AND import_run_id = :r AND {sql.in_list(session, 'left_contact_id', 'lefts')}"
    )
    sql.execute(
        session,
        f"DELETE FROM review_item WHERE {within} AND id NOT IN "
        f"(SELECT MIN(id) FROM review_item WHERE {within} GROUP BY left_contact_id, right_contact_id)",
        r=run_id,
        lefts=sql.list_param(session, lefts),
    )


def json_list(column: str) -> pl.Expr:
    """A list column as JSON text, vectorised: encode {"x": [...]} and cut the wrapper off."""
    wrapped = pl.struct(pl.col(column).alias("x")).struct.json_encode()
    return wrapped.str.slice(5, wrapped.str.len_chars() - 6)


def without_nulls(encoded: pl.Expr) -> pl.Expr:
    """JSON text from ``struct.json_encode`` without its ``"name": null`` members (names of
    lower-case letters and underscores: crmctl's own fields), vectorised. Readers take a missing
    member as null (``dict.get``); a third of the bytes a lead import wrote were such members.

    Safe on any value: inside a JSON string a quote is always escaped, so a comma or brace
    directly before an unescaped quote followed by a name is always structure."""
    return encoded.str.replace_all(r',"[a-z_]+":null', "").str.replace_all(r'\{"[a-z_]+":null,?', "{")
