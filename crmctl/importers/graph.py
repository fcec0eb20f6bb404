"""Migration importers for the customer graph: accounts, contacts, deals, stage changes,
interactions, product usage, contracts and support tickets.

One pipeline for every kind: read the file in batches (``reader``), map headers to fields (a
``--mapping`` file, a CRM preset, or crmctl's own names), type the cells (``graph_fields``), resolve
references to rows already in the database by external id or natural key (a join against a narrow
lookup per batch, never a query per row), then write the batch in one transaction:

- accounts, contacts, deals, contracts and tickets are upserted on (source system, external id);
- stage changes, interactions and product usage are append-only: each row carries an idempotency
  key (``source:external id``, or a hash of its content) and a row whose key is stored is skipped,
  so re-importing a file, or re-running an import that was killed, adds nothing twice;
- contracts create or update their renewal.

A row that cannot be imported (bad cell, missing value, a reference that does not resolve) is
rejected with its row number, column and reason; the rest of the batch goes in. ``dry_run`` does
all of it inside one transaction that is rolled back.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy import Index
from sqlmodel import Session

from crmctl.db.bulk import allocate_ids, insert_frame
from crmctl.db.checkpoints import background_checkpoints, batch_session
from crmctl.db.engine import Database, dialect_of, tenant_of
from crmctl.db.models import ImportRun, utcnow
from crmctl.db.sql import frame as sql_frame
from crmctl.erasure.suppression import find_suppressed
from crmctl.errors import InputError, RejectRateExceeded
from crmctl.identity import normalize as nz
from crmctl.importers import graph_fields as gf
from crmctl.importers.bulk_load import (
    BULK_LOAD_BYTES,
    BULK_LOAD_BYTES_PER_ROW,
    bulk_load_indexes,
    deferred_indexes,
    several_batches,
    stored_rows,
    worth_deferring,
)
from crmctl.importers.graph_sql import ReferenceMaps, lookup, update_from_frame
from crmctl.importers.presets import preset_aliases
from crmctl.importers.reader import (
    DEFAULT_BATCH_ROWS,
    REJECT_SCHEMA,
    ROW_COLUMN,
    RejectWriter,
    open_table,
    overlong_fields,
    read_ahead,
    rejects_for,
    resolve_columns,
)
from crmctl.pipeline import history

KINDS = gf.KINDS
DEFAULT_SOURCE = "import"
DEFAULT_PIPELINE = "Sales"
# The stages a new default pipeline starts with: (name, probability, won, lost).
DEFAULT_STAGES: tuple[tuple[str, float, bool, bool], ...] = (
    ("Prospecting", 0.1, False, False),
    ("Qualification", 0.2, False, False),
    ("Proposal", 0.5, False, False),
    ("Negotiation", 0.8, False, False),
    ("Closed Won", 1.0, True, False),
    ("Closed Lost", 0.0, False, True),
)
TABLES = {
    "accounts": "account",
    "contacts": "contact",
    "deals": "deal",
    "stage-changes": "stage_change",
    "interactions": "interaction",
    "product-usage": "product_usage",
    "contracts": "contract",
    "tickets": "support_ticket",
}
# A large SQLite import builds the target table's non-unique indexes once at the end (see
# bulk_load). The importers' own lookups into the target table use its unique indexes, which stay,
# and the indexes below.
# Indexes a bulk load keeps: the stage-history projection reads each batch's deals' latest rows
# (history.latest_rows, by deal); without this index every batch walked the whole table, a cost
# that grew with the table. History files list a deal's rows together, so its entries go in near
# the end of the index, cheap to maintain as rows arrive.
BULK_LOAD_KEEP = {"stage_change": ("ix_stage_change_tenant_deal_at",)}
# Indexes of other tables a bulk load also defers: a stage-history load updates each deal's
# entered_* projections batch after batch, and the deals' covering report index holds them.
BULK_LOAD_ALSO = {"stage_change": ("ix_deal_tenant_pipeline_stage",)}
NO_REJECTS = pl.DataFrame(schema=REJECT_SCHEMA)
REFERENCED_TABLES = ("account", "contact", "deal")
REFERENCE_MAP_MAX_ROWS = 2_000_000  # ~150 MB of maps at most (see ReferenceMaps)
NORMALISED_MEMO_ROWS = 500_000  # raw -> normalised reference keys kept across batches, per normaliser
LAST_INTERACTION_FLUSH = 1_000_000  # contacts held before the projection is written out

Finder = Callable[[Session, pl.Series], pl.DataFrame]


@dataclass
class ImportOptions:
    source: str | None = None  # the source system; defaults to the preset name or "import"
    preset: str | None = None
    mapping: Mapping[str, str] | None = None  # field -> header, from --mapping
    dry_run: bool = False
    rejects_path: Path | None = None
    encoding: str | None = None
    batch_rows: int = DEFAULT_BATCH_ROWS
    max_reject_rate: float | None = None
    erasure_key: str | None = None
    default_region: str | None = None
    actor: str | None = None
    bulk_load_bytes: int = BULK_LOAD_BYTES

    @property
    def source_system(self) -> str:
        return (self.source or self.preset or DEFAULT_SOURCE).strip().lower()


@dataclass
class TableCounts:
    created: int = 0
    updated: int = 0
    skipped: int = 0  # already imported (append-only) or superseded by a later row of the file
    rejected: int = 0


@dataclass
class ImportResult:
    kind: str
    file: str
    source: str
    rows: int = 0
    tables: dict[str, TableCounts] = field(default_factory=dict)
    reasons: Counter[tuple[str, str]] = field(default_factory=Counter)
    rejects_path: Path | None = None
    preset_object: str | None = None
    dry_run: bool = False
    import_run_id: int | None = None

    def table(self, name: str) -> TableCounts:
        return self.tables.setdefault(name, TableCounts())

    @property
    def rejected_rows(self) -> int:
        counts = self.tables.get(TABLES[self.kind])
        return counts.rejected if counts else 0

    def summary_rows(self) -> list[dict[str, Any]]:
        return [
            {"file": self.file, "table": name, **vars(counts)}
            for name, counts in sorted(self.tables.items(), key=lambda item: item[0] != TABLES[self.kind])
        ]

    def counts(self) -> dict[str, Any]:
        return {name: dict(vars(counts)) for name, counts in self.tables.items()}


def import_file(db: Database, kind: str, path: Path, options: ImportOptions) -> ImportResult:
    """Import one file of ``kind``; raises InputError when the file as a whole cannot be used."""
    if kind not in TABLES:
        raise InputError(f"Unknown import kind '{kind}'.", hint=f"Use one of: {', '.join(KINDS)}.")
    table = open_table(path, encoding=options.encoding, batch_rows=options.batch_rows)
    aliases = gf.aliases_for(kind)
    preset_object = None
    if options.preset:
        preset_object, preset_map = preset_aliases(options.preset, kind, table.columns)
        aliases = {name: [*preset_map.get(name, []), name, *names] for name, names in aliases.items()}
    mapping = resolve_columns(table.columns, aliases, options.mapping, known_fields=list(aliases))
    missing = [spec.name for spec in gf.FIELDS[kind] if spec.required and spec.name not in mapping]
    if missing:
        raise InputError(
            f"The file {path.name} has no column for {', '.join(repr(m) for m in missing)} "
            f"(needed to import {kind}).",
            hint='Name the column in a --mapping file (field = "Header") or choose a --preset.',
        )
    result = ImportResult(
        kind=kind,
        file=path.name,
        source=options.source_system,
        rejects_path=options.rejects_path,
        preset_object=preset_object,
        dry_run=options.dry_run,
    )
    run = _Run(kind=kind, options=options, mapping=mapping, result=result)
    run.references = ReferenceMaps(_mapped_references(db, kind, path))
    result.table(TABLES[kind])
    if not options.dry_run:
        result.import_run_id = _start_run(db, kind, path, table.sha256, options, mapping)
    status = "failed"
    bulk = _bulk_load(db, TABLES[kind], path, options)
    try:
        with (
            RejectWriter(options.rejects_path) as writer,
            deferred_indexes(db, _deferrable(TABLES[kind]), enabled=bulk),
        ):
            if options.dry_run:
                # One transaction, rolled back: later batches see what earlier ones would have written.
                with db.session(write=True) as session:
                    for batch in read_ahead(table.batches(), run.typed):
                        run.batch(session, batch, writer)
                    run.finish(session, writer)
                    session.rollback()
            else:
                # One transaction per batch: a kill loses at most the batch in flight, and a re-run
                # skips or updates what is already there.
                several = several_batches(path.stat().st_size, options.batch_rows)
                with background_checkpoints(db, enabled=several) as checkpoints:
                    for batch in read_ahead(table.batches(), run.typed):
                        # no foreign key probes: the importer writes no reference it did not
                        # resolve (or create) itself inside the same write transaction, which holds
                        # SQLite's write lock, so no referenced row can go away in between; a
                        # reference that does not resolve is rejected before the insert
                        with batch_session(db, checkpoints, foreign_keys=False) as session:
                            run.batch(session, batch, writer)
                with db.session(write=True) as session:
                    run.finish(session, writer)
        if kind == "stage-changes" and not options.dry_run:
            # After the deferred indexes are back: the reports' projections of each touched deal's
            # history (a killed import leaves them pending; the next import or report finishes them).
            with db.session(write=True) as session:
                history.refresh_pending(session)
        status = "completed"
    finally:
        if result.import_run_id is not None:
            _finish_run(db, result.import_run_id, status, result)
    if result.rejected_rows == 0:
        result.rejects_path = None
    rate = result.rejected_rows / result.rows if result.rows else 0.0
    if options.max_reject_rate is not None and rate > options.max_reject_rate:
        raise RejectRateExceeded(
            f"{result.rejected_rows} of {result.rows} rows of {path.name} were rejected ({rate:.1%}, "
            f"above --max-reject-rate {options.max_reject_rate:.1%}); the other rows were imported."
        )
    return result


def _deferrable(table: str) -> list[Index]:
    return bulk_load_indexes([table], keep=BULK_LOAD_KEEP.get(table, ()), also=BULK_LOAD_ALSO.get(table, ()))


def _bulk_load(db: Database, table: str, path: Path, options: ImportOptions) -> bool:
    """Whether a SQLite import defers ``table``'s non-unique indexes (see ``bulk_load``)."""
    if options.dry_run:
        return False
    return worth_deferring(db, table, path.stat().st_size, min_bytes=options.bulk_load_bytes)


def _mapped_references(db: Database, kind: str, path: Path) -> list[str]:
    """The referenced tables a SQLite import reads as whole-table maps (``ReferenceMaps``): those
    the file likely refers to at least once per stored row, up to ``REFERENCE_MAP_MAX_ROWS`` (so the
    maps' memory has a ceiling), never the table the import writes."""
    if db.is_postgresql:
        return []
    file_rows = path.stat().st_size / BULK_LOAD_BYTES_PER_ROW
    mapped = []
    with db.session() as session:
        for table in REFERENCED_TABLES:
            if table == TABLES[kind]:
                continue
            if 0 < stored_rows(session, table) <= min(file_rows, REFERENCE_MAP_MAX_ROWS):
                mapped.append(table)
    return mapped


def _start_run(
    db: Database, kind: str, path: Path, sha256: str, options: ImportOptions, mapping: Mapping[str, str]
) -> int:
    with db.session(write=True) as session:
        run = ImportRun(
            tenant_id=db.tenant,
            kind=kind,
            source=options.source_system,
            file_name=path.name,
            file_sha256=sha256,
            options={"preset": options.preset, "fields": sorted(mapping), "batch_rows": options.batch_rows},
            actor=options.actor,
        )
        session.add(run)
        session.flush()
        return int(run.id or 0)


def _finish_run(db: Database, run_id: int, status: str, result: ImportResult) -> None:
    with db.session(write=True) as session:
        run = session.get(ImportRun, run_id)
        if run is not None:
            run.status = status
            run.counts = {"rows": result.rows, **result.counts()}
            run.finished_at = utcnow()


# ---------------------------------------------------------------------------------------------
# One run of one file
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TypedBatch:
    rows: int  # as read
    typed: pl.DataFrame
    rejects: pl.DataFrame  # cells that could not be typed, overlong fields


@dataclass
class _Run:
    kind: str
    options: ImportOptions
    mapping: Mapping[str, str]
    result: ImportResult
    pending_parents: list[pl.DataFrame] = field(default_factory=list)  # parent not seen yet
    last_interaction: pl.DataFrame | None = None  # contact_id -> latest occurred_at seen in the file
    # raw -> normalised reference keys already computed in this run, per normaliser (see by_normalised)
    normalised: dict[str, pl.DataFrame] = field(default_factory=dict)
    references: ReferenceMaps = field(default_factory=lambda: ReferenceMaps(()))

    @property
    def source(self) -> str:
        return self.options.source_system

    def header(self, name: str) -> str:
        return self.mapping.get(name, name)

    def provided(self, *fields: str) -> bool:
        return any(f in self.mapping for f in fields)

    def typed(self, batch: pl.DataFrame) -> _TypedBatch:
        """The batch's cells typed, and the rows rejected for their cells (no database needed:
        runs on the read-ahead thread)."""
        too_long = overlong_fields(batch, list(self.mapping.values()))
        typed, rejects = gf.typed_batch(batch, self.kind, self.mapping)
        # Exports list several associated ids in one cell ("123;456"): the first is the primary.
        refs = [c for c in typed.columns if c.endswith("_external_id") and c != "external_id"]
        typed = typed.with_columns(pl.col(c).str.split(";").list.first().str.strip_chars() for c in refs)
        if too_long.height:
            typed = typed.filter(~pl.col(ROW_COLUMN).is_in(too_long[ROW_COLUMN].implode()))
        return _TypedBatch(batch.height, typed, pl.concat([too_long, rejects]))

    def batch(self, session: Session, batch: _TypedBatch, writer: RejectWriter) -> None:
        self.result.rows += batch.rows
        more = _HANDLERS[self.kind](self, session, batch.typed) if batch.typed.height else NO_REJECTS
        self.reject(writer, pl.concat([batch.rejects, more]))

    def reject(self, writer: RejectWriter, rejects: pl.DataFrame) -> None:
        if rejects.height == 0:
            return
        rejects = rejects.sort(ROW_COLUMN, maintain_order=True)
        writer.add(rejects)
        self.result.table(TABLES[self.kind]).rejected += rejects[ROW_COLUMN].n_unique()
        for column, reason, n in rejects.group_by("column", "reason").len().iter_rows():
            self.result.reasons[(column, reason)] += n

    def finish(self, session: Session, writer: RejectWriter) -> None:
        if self.pending_parents:
            self.reject(writer, _link_parents(self, session, pl.concat(self.pending_parents), final=True))
        self.flush_last_interaction(session)

    def flush_last_interaction(self, session: Session) -> None:
        if self.last_interaction is not None and self.last_interaction.height:
            latest = self.last_interaction.rename({"contact_id": "id"})
            update_from_frame(session, "contact", latest, keep_later=("last_interaction_at",))
        self.last_interaction = None

    # -- references ---------------------------------------------------------------------------

    def resolve(
        self,
        session: Session,
        rows: pl.DataFrame,
        target: str,
        keys: Sequence[tuple[str, Finder]],
        *,
        what: str,
        extras: Sequence[tuple[str, str]] = (),
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Set ``target`` from the first key field that matches exactly one stored row (and each
        ``(found column, alias)`` of ``extras`` from that row).

        A row that names the record (any key field filled) but matches none, or several, is
        rejected with the column and the reason: a reference is never guessed."""
        rows = rows.with_columns(
            pl.lit(None, dtype=pl.Int64).alias(target),
            *[pl.lit(None, dtype=pl.Int64).alias(alias) for _, alias in extras],
            pl.lit(None, dtype=pl.String).alias("__reason__"),
            pl.lit(None, dtype=pl.String).alias("__column__"),
        )
        for field_name, find in keys:
            todo = pl.col(target).is_null() & pl.col(field_name).is_not_null()
            if rows.select(todo.any()).item() is not True:
                continue
            found = find(session, rows.filter(todo)[field_name])
            found = found.rename(
                {"key_raw": field_name, "id": "__id__", **{c: f"__{a}__" for c, a in extras}}
            )
            rows = rows.join(found, on=field_name, how="left", maintain_order="left")
            unique = todo & (pl.col("__n__") == 1).fill_null(False)
            several = todo & (pl.col("__n__") > 1).fill_null(False)
            none = todo & pl.col("__n__").is_null()
            key = _key_label(field_name)
            missing = f"no {what} with this {key}" + (
                f" in source '{self.source}'" if key == "external id" else ""
            )
            first = pl.col("__reason__").is_null()
            rows = rows.with_columns(
                pl.when(unique).then(pl.col("__id__")).otherwise(pl.col(target)).alias(target),
                *[pl.when(unique).then(pl.col(f"__{a}__")).otherwise(pl.col(a)).alias(a) for _, a in extras],
                pl.when(first & several)
                .then(pl.lit(f"matches several {what}s by {key}"))
                .when(first & none)
                .then(pl.lit(missing))
                .otherwise(pl.col("__reason__"))
                .alias("__reason__"),
                pl.when(first & (several | none))
                .then(pl.lit(self.header(field_name)))
                .otherwise(pl.col("__column__"))
                .alias("__column__"),
            ).drop("__id__", "__n__", *[f"__{a}__" for _, a in extras])
        failed = pl.col(target).is_null() & pl.col("__reason__").is_not_null()
        rejects = rows.filter(failed).select(
            ROW_COLUMN, pl.col("__column__").alias("column"), pl.col("__reason__").alias("reason")
        )
        return rows.filter(~failed).drop("__reason__", "__column__"), rejects

    def by_external_id(self, table: str, extras: Sequence[str] = ()) -> Finder:
        def find(session: Session, raw: pl.Series) -> pl.DataFrame:
            found = self.references.lookup(
                session,
                table,
                "external_id",
                raw,
                select=("id", *extras),
                where="external_source = :src",
                src=self.source,
            )
            return _counted(found.rename({"key": "key_raw"}))

        return find

    def by_normalised(
        self,
        table: str,
        column: str,
        normalise: Callable[[pl.Series], pl.Series],
        *,
        where: str = "",
        extras: Sequence[str] = (),
    ) -> Finder:
        def find(session: Session, raw: pl.Series) -> pl.DataFrame:
            pairs = self.normalise_keys(f"{table}.{column}", raw, normalise).drop_nulls("key")
            found = self.references.lookup(
                session, table, column, pairs["key"], select=("id", *extras), where=where
            )
            return _counted(pairs.join(found, on="key", how="inner").drop("key"))

        return find

    def normalise_keys(
        self, name: str, raw: pl.Series, normalise: Callable[[pl.Series], pl.Series]
    ) -> pl.DataFrame:
        """``key_raw, key`` for each distinct raw value. The normalisers are pure and run in Python
        per distinct value; later batches of a file repeat the same references (a contact's email
        on many interactions), so what an earlier batch computed is reused. At most
        ``NORMALISED_MEMO_ROWS`` pairs are kept per normaliser (memory stays bounded)."""
        wanted = pl.DataFrame({"key_raw": raw.unique()})
        known = self.normalised.get(name)
        if known is None:
            known = pl.DataFrame(schema={"key_raw": raw.dtype, "key": pl.String})
        reused = known.join(wanted, on="key_raw", how="semi", nulls_equal=True)
        todo = wanted.join(known, on="key_raw", how="anti", nulls_equal=True)
        fresh = todo.with_columns(normalise(todo["key_raw"]).cast(pl.String).alias("key"))
        if known.height + fresh.height <= NORMALISED_MEMO_ROWS:
            self.normalised[name] = pl.concat([known, fresh])
        return pl.concat([reused, fresh])

    def account_keys(self, *, by_name: bool = True) -> list[tuple[str, Finder]]:
        keys = [
            ("account_external_id", self.by_external_id("account")),
            ("account_domain", self.by_normalised("account", "domain", _domains)),
        ]
        if by_name:
            keys.append(("account_name", self.by_normalised("account", "name_norm", nz.company_norms)))
        return keys

    def contact_keys(self) -> list[tuple[str, Finder]]:
        live = "merged_into_id IS NULL AND erased_at IS NULL"
        return [
            ("contact_external_id", self.by_external_id("contact", ("account_id",))),
            (
                "contact_email",
                self.by_normalised(
                    "contact", "email_norm", nz.email_keys, where=live, extras=("account_id",)
                ),
            ),
        ]

    # -- writes -------------------------------------------------------------------------------

    def upsert(
        self,
        session: Session,
        table: str,
        rows: pl.DataFrame,
        *,
        columns: Sequence[str],
        derived: Mapping[str, Sequence[str]] | None = None,
        defaults: Mapping[str, Any] | None = None,
        never_update: Sequence[str] = (),
        timestamps: bool = True,
    ) -> pl.DataFrame:
        """Insert new rows and update stored ones, keyed on (source, external id).

        Only columns the file carries are updated (``derived`` names the fields a column comes from),
        and an empty cell keeps the stored value. Returns ``__row__, id, is_new`` and the columns."""
        counts = self.result.table(table)
        derived = derived or {}
        latest = rows.select(ROW_COLUMN, "external_id", *columns).unique(
            subset=["external_id"], keep="last", maintain_order=True
        )
        counts.skipped += rows.height - latest.height  # superseded by a later row of the same file
        where = "external_source = :src"
        maybe = _maybe_stored(
            session, table, latest["external_id"], column="external_id", where=where, src=self.source
        )
        found = lookup(session, table, "external_id", maybe, where=where, src=self.source)
        latest = latest.join(
            found.rename({"key": "external_id"}), on="external_id", how="left", maintain_order="left"
        )
        now = utcnow()
        new = latest.filter(pl.col("id").is_null()).drop("id")
        if new.height:
            new = new.with_columns(pl.Series("id", allocate_ids(session, table, new.height), dtype=pl.Int64))
            fills = {**(defaults or {}), **({"created_at": now, "updated_at": now} if timestamps else {})}
            ready = new.with_columns(
                *[
                    (pl.col(name).fill_null(value) if name in new.columns else pl.lit(value)).alias(name)
                    for name, value in fills.items()
                ],
                pl.lit(tenant_of(session)).alias("tenant_id"),
                pl.lit(self.source).alias("external_source"),
            )
            insert_frame(session, table, ready.drop(ROW_COLUMN))
            counts.created += new.height
        old = latest.filter(pl.col("id").is_not_null())
        if old.height:
            update = [c for c in columns if c not in never_update and self.provided(*derived.get(c, (c,)))]
            changes = old.select("id", *update)
            if timestamps:
                changes = changes.with_columns(pl.lit(now).alias("updated_at"))
            update_from_frame(session, table, changes)
            counts.updated += old.height
        return pl.concat(
            [new.with_columns(pl.lit(True).alias("is_new")), old.with_columns(pl.lit(False).alias("is_new"))],
            how="diagonal_relaxed",
        )

    def append(
        self,
        session: Session,
        table: str,
        rows: pl.DataFrame,
        prepare: Callable[[Session, pl.DataFrame], pl.DataFrame] | None = None,
    ) -> pl.DataFrame:
        """Insert the rows whose ``idempotency_key`` is not stored yet; returns those rows.

        ``prepare`` completes the fresh rows just before the insert (derived columns)."""
        counts = self.result.table(table)
        unique = rows.unique(subset=["idempotency_key"], keep="first", maintain_order=True)
        fresh = unique
        maybe = _maybe_stored(session, table, unique["idempotency_key"])
        if maybe.len():
            stored = lookup(session, table, "idempotency_key", maybe, select=("id",))
            fresh = unique.join(
                stored.select(pl.col("key").alias("idempotency_key")), on="idempotency_key", how="anti"
            )
        counts.skipped += rows.height - fresh.height
        if fresh.height:
            if prepare is not None:
                fresh = prepare(session, fresh)
            insert_frame(
                session,
                table,
                fresh.drop(ROW_COLUMN).with_columns(pl.lit(tenant_of(session)).alias("tenant_id")),
            )
            counts.created += fresh.height
        return fresh

    def idempotency_keys(self, rows: pl.DataFrame, content: Sequence[str]) -> pl.Expr:
        """``source:external id`` when the row has one, else ``source:h:<hash of its typed content>``
        (the same row in another export format gets the same key; no personal data in the key)."""
        by_id = pl.format("{}:{}", pl.lit(self.source), pl.col("external_id"))
        if rows["external_id"].null_count() == 0:
            return by_id
        joined = rows.select(
            pl.concat_str([pl.col(c).cast(pl.String).fill_null("") for c in content], separator="\x1f")
        ).to_series()
        digests = joined.map_elements(
            lambda s: hashlib.blake2b(s.encode(), digest_size=16).hexdigest(), return_dtype=pl.String
        )
        return (
            pl.when(pl.col("external_id").is_not_null())
            .then(by_id)
            .otherwise(pl.format("{}:h:{}", pl.lit(self.source), pl.lit(digests)))
        )


def _maybe_stored(
    session: Session,
    table: str,
    keys: pl.Series,
    *,
    column: str = "idempotency_key",
    where: str = "",
    **params: Any,
) -> pl.Series:
    """The keys of the batch that may be stored already, to look up one by one.

    SQLite compares text bytewise, like polars: only the keys between the smallest and largest
    stored key inside the batch's range can be stored (two probes of the unique index find that
    span), so a first import of ordered ids looks up nothing, and a batch that overlaps the
    previous one by a few keys (a deal's history split between two batches) looks up only those.
    PostgreSQL compares in the database's collation, where the batch's bytewise smallest key need
    not sort first (under en_US 'a1' < 'B1'): an empty range there proves nothing, so every key is
    looked up."""
    present = keys.drop_nulls()
    if present.is_empty() or dialect_of(session) != "sqlite":
        return present
    extra = f" AND {where}" if where else ""
    bounds = f"FROM {table} WHERE tenant_id = :tenant{extra} AND {column} BETWEEN :low AND :high"
    found = sql_frame(
        session,
        f"SELECT (SELECT MIN({column}) {bounds}) AS low, (SELECT MAX({column}) {bounds}) AS high",
        low=present.min(),
        high=present.max(),
        **params,
    )
    first, last = found.row(0)
    if first is None:
        return present.clear()
    return present.filter(present.is_between(str(first), str(last)))


def _counted(found: pl.DataFrame) -> pl.DataFrame:
    """One row per key with ``__n__``, how many stored rows share it (more than one = ambiguous)."""
    return found.with_columns(pl.len().over("key_raw").cast(pl.Int64).alias("__n__")).unique(
        subset=["key_raw"], keep="first"
    )


def _key_label(field_name: str) -> str:
    if field_name.endswith("external_id"):
        return "external id"
    return field_name.rsplit("_", 1)[-1]


def _domains(values: pl.Series) -> pl.Series:
    return nz.map_distinct(values.cast(pl.String), nz.registered_domain, pl.String())


def _country(col: pl.Expr) -> pl.Expr:
    return pl.when(col.str.len_chars() == 2).then(col.str.to_uppercase()).otherwise(col)


def _token(col: pl.Expr) -> pl.Expr:
    """'Closed Won' / 'closedwon' / 'CLOSED-WON' -> 'closedwon'."""
    return col.str.to_lowercase().str.replace_all(r"[^a-z0-9]", "")


def _snake(col: pl.Expr) -> pl.Expr:
    return col.str.to_lowercase().str.strip_chars().str.replace_all(r"[\s\-]+", "_")


# ---------------------------------------------------------------------------------------------
# Accounts
# ---------------------------------------------------------------------------------------------

_SEGMENTS = {
    "enterprise": "enterprise",
    "ent": "enterprise",
    "midmarket": "mid-market",
    "mm": "mid-market",
    "smb": "smb",
    "smallbusiness": "smb",
    "small": "smb",
}
ACCOUNT_COLUMNS = (
    "name",
    "name_norm",
    "domain",
    "industry",
    "segment",
    "arr_tier",
    "plan",
    "country",
    "employees",
    "owner",
)


def _accounts(run: _Run, session: Session, rows: pl.DataFrame) -> pl.DataFrame:
    segment = _token(pl.col("segment"))
    rows = rows.with_columns(
        _domains(rows.select(pl.coalesce("domain", "website")).to_series()).alias("domain"),
        nz.company_norms(rows["name"]).alias("name_norm"),
        segment.replace_strict(_SEGMENTS, default=_snake(pl.col("segment")), return_dtype=pl.String).alias(
            "segment"
        ),
        _country(pl.col("country")).alias("country"),
    )
    run.upsert(
        session,
        "account",
        rows,
        columns=ACCOUNT_COLUMNS,
        derived={"name_norm": ("name",), "domain": ("domain", "website")},
    )
    children = rows.filter(pl.col("parent_external_id").is_not_null()).select(
        ROW_COLUMN, "external_id", "parent_external_id"
    )
    if children.height:
        pending = _link_parents(run, session, children, final=False)
        if pending.height:
            run.pending_parents.append(pending)
    return NO_REJECTS


def _link_parents(run: _Run, session: Session, children: pl.DataFrame, *, final: bool) -> pl.DataFrame:
    """Set ``parent_id`` where the parent exists. Returns the children still waiting (a parent may
    come later in the file), or with ``final`` rejects saying they were imported without a parent."""
    find = run.by_external_id("account")
    parents = find(session, children["parent_external_id"]).select(
        pl.col("key_raw").alias("parent_external_id"), pl.col("id").alias("parent_id")
    )
    selves = find(session, children["external_id"]).select(pl.col("key_raw").alias("external_id"), "id")
    linked = children.join(parents, on="parent_external_id", how="left").join(
        selves, on="external_id", how="left"
    )
    ok = linked.filter(pl.col("parent_id").is_not_null() & (pl.col("parent_id") != pl.col("id")))
    if ok.height:
        update_from_frame(session, "account", ok.select("id", "parent_id"))
    rest = linked.filter(pl.col("parent_id").is_null()).select(
        ROW_COLUMN, "external_id", "parent_external_id"
    )
    if not final:
        return rest
    return rejects_for(
        rest[ROW_COLUMN],
        run.header("parent_external_id"),
        f"no parent account with this external id in source '{run.source}'; imported without a parent",
    )


# ---------------------------------------------------------------------------------------------
# Contacts
# ---------------------------------------------------------------------------------------------

# CRM lifecycle labels onto crmctl's stages (others are kept, lower-cased).
_LIFECYCLE = {
    "subscriber": "lead",
    "lead": "lead",
    "marketingqualifiedlead": "mql",
    "mql": "mql",
    "salesqualifiedlead": "sql",
    "sql": "sql",
    "opportunity": "opportunity",
    "customer": "customer",
    "evangelist": "customer",
    "churned": "churned",
    "formercustomer": "churned",
}
CONTACT_COLUMNS = (
    "account_id",
    "first_name",
    "last_name",
    "full_name",
    "first_name_norm",
    "last_name_norm",
    "email",
    "email_norm",
    "phone",
    "phone_e164",
    "phone_ext",
    "title",
    "company",
    "company_norm",
    "company_domain",
    "country",
    "lifecycle_stage",
    "owner",
    "lawful_basis",
    "consent_evidence",
    "consent_at",
    "source",
    "created_at",
)
CONTACT_DERIVED = {
    "account_id": ("account_external_id", "account_domain", "account_name"),
    "first_name": ("first_name", "full_name"),
    "last_name": ("last_name", "full_name"),
    "full_name": ("full_name", "first_name", "last_name"),
    "first_name_norm": ("first_name", "full_name"),
    "last_name_norm": ("last_name", "full_name"),
    "email_norm": ("email",),
    "company_domain": ("email",),
    "phone_e164": ("phone",),
    "phone_ext": ("phone",),
    "company_norm": ("company",),
}


def _split_names(full: pl.Series) -> pl.DataFrame:
    parts = nz.map_distinct(full, lambda v: list(nz.split_full_name(v)), pl.List(pl.String()))
    return pl.DataFrame(
        {"first": parts.list.get(0, null_on_oob=True), "last": parts.list.get(1, null_on_oob=True)}
    )


def normalise_people(rows: pl.DataFrame, default_region: str | None) -> pl.DataFrame:
    """The same keys the lead importer computes: email_norm, phone_e164 (+ extension), canonical
    first name, last name, company and company domain."""
    split = _split_names(rows["full_name"])
    rows = rows.with_columns(
        pl.coalesce(pl.col("first_name"), split["first"]).alias("first_name"),
        pl.coalesce(pl.col("last_name"), split["last"]).alias("last_name"),
    ).with_columns(
        pl.coalesce(
            pl.col("full_name"), pl.concat_str("first_name", "last_name", separator=" ", ignore_nulls=True)
        ).alias("full_name"),
        _country(pl.col("country")).alias("country"),
    )
    email_norm = nz.email_keys(rows["email"])
    regions = rows.select(pl.coalesce(pl.col("country"), pl.lit(default_region, dtype=pl.String))).to_series()
    if regions.null_count():
        regions = regions.fill_null(nz.map_distinct(email_norm, nz.region_of_email, pl.String()))
    phones = nz.phone_keys(rows["phone"], regions)
    first_norm = nz.name_norms(rows["first_name"])
    return rows.with_columns(
        email_norm.alias("email_norm"),
        phones["phone_e164"],
        phones["phone_ext"],
        nz.map_distinct(first_norm, nz.first_name_canonical, pl.String()).alias("first_name_norm"),
        nz.name_norms(rows["last_name"]).alias("last_name_norm"),
        nz.company_norms(rows["company"]).alias("company_norm"),
        # One public-suffix lookup per distinct domain, not per address.
        nz.company_domains(email_norm.str.split("@").list.last()).alias("company_domain"),
    )


def _contacts(run: _Run, session: Session, rows: pl.DataFrame) -> pl.DataFrame:
    rows, rejects = run.resolve(session, rows, "account_id", run.account_keys(), what="account")
    if rows.height == 0:
        return rejects
    rows = normalise_people(rows, run.options.default_region).with_columns(
        pl.coalesce(pl.col("source"), pl.lit(run.source)).alias("source"),
        _token(pl.col("lifecycle_stage"))
        .replace_strict(_LIFECYCLE, default=_snake(pl.col("lifecycle_stage")), return_dtype=pl.String)
        .alias("lifecycle_stage"),
        _snake(pl.col("lawful_basis")).alias("lawful_basis"),
    )
    suppressed = find_suppressed(
        session, key=run.options.erasure_key, emails=rows["email_norm"], phones=rows["phone_e164"]
    )
    if suppressed.any():
        erased = rejects_for(
            rows.filter(suppressed)[ROW_COLUMN],
            run.header("email"),
            "this person was erased and is on the suppression list",
        )
        rejects = pl.concat([rejects, erased])
        rows = rows.filter(~suppressed)
    if rows.height == 0:
        return rejects
    written = run.upsert(
        session,
        "contact",
        rows,
        columns=CONTACT_COLUMNS,
        derived=CONTACT_DERIVED,
        defaults={"lifecycle_stage": "lead"},
        never_update=("source", "created_at"),
    )
    _add_identifiers(session, written)
    return rejects


def _add_identifiers(session: Session, contacts: pl.DataFrame) -> None:
    """contact_identifier rows (email, phone) so identity resolution finds imported contacts."""
    keys = pl.concat(
        [
            contacts.select(
                pl.col("id").alias("contact_id"), pl.lit(kind).alias("kind"), pl.col(column).alias("value")
            )
            for kind, column in (("email", "email_norm"), ("phone", "phone_e164"))
        ]
    )
    keys = keys.drop_nulls("value").unique(maintain_order=True)
    existing = contacts.filter(~pl.col("is_new"))["id"]
    if existing.len() and keys.height:
        known = lookup(
            session,
            "contact_identifier",
            "contact_id",
            existing,
            select=("kind", "value"),
            schema={"kind": pl.String, "value": pl.String},
        ).rename({"key": "contact_id"})
        keys = keys.join(known, on=["contact_id", "kind", "value"], how="anti")
    if keys.height:
        # in the unique index's order: each insert lands next to the previous one, not at random
        insert_frame(
            session,
            "contact_identifier",
            keys.sort("kind", "value").with_columns(
                pl.lit(tenant_of(session)).alias("tenant_id"), pl.lit(utcnow()).alias("created_at")
            ),
        )


# ---------------------------------------------------------------------------------------------
# Pipelines, stages, deals, stage changes
# ---------------------------------------------------------------------------------------------


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _pipeline_ids(session: Session, names: pl.Series) -> pl.Series:
    """Pipeline ids for the names (null = the default pipeline); missing pipelines are created, and
    a missing default pipeline is created as "Sales" with the standard stages."""
    tenant = tenant_of(session)
    stored = sql_frame(
        session,
        "SELECT id, name, is_default FROM pipeline WHERE tenant_id = :tenant ORDER BY id",
        {"id": pl.Int64, "name": pl.String, "is_default": pl.Boolean},
    )
    by_key = {_key(name): pid for pid, name, _ in stored.iter_rows()}
    default = next((pid for pid, _, is_default in stored.iter_rows() if is_default), None)
    if default is None and names.null_count():
        default = by_key.get(_key(DEFAULT_PIPELINE)) or _create_pipeline(
            session, tenant, DEFAULT_PIPELINE, is_default=True
        )
        by_key[_key(DEFAULT_PIPELINE)] = default
    for name in names.drop_nulls().unique(maintain_order=True).to_list():
        if _key(name) not in by_key:
            by_key[_key(name)] = _create_pipeline(session, tenant, name, is_default=default is None)
            default = default or by_key[_key(name)]
    ids = nz.map_distinct(names, lambda n: by_key[_key(n)], pl.Int64())
    return ids.fill_null(default)


def _create_pipeline(session: Session, tenant: str, name: str, *, is_default: bool) -> int:
    pid = allocate_ids(session, "pipeline", 1)[0]
    insert_frame(
        session,
        "pipeline",
        pl.DataFrame(
            {
                "id": [pid],
                "tenant_id": [tenant],
                "name": [name],
                "is_default": [is_default],
                "currency": ["USD"],
                "created_at": [utcnow()],
            }
        ),
    )
    if _key(name) == _key(DEFAULT_PIPELINE):
        ids = allocate_ids(session, "stage", len(DEFAULT_STAGES))
        stages = pl.DataFrame(
            {
                "id": ids,
                "tenant_id": [tenant] * len(ids),
                "pipeline_id": [pid] * len(ids),
                "name": [s[0] for s in DEFAULT_STAGES],
                "position": list(range(len(ids))),
                "probability": [s[1] for s in DEFAULT_STAGES],
                "is_won": [s[2] for s in DEFAULT_STAGES],
                "is_lost": [s[3] for s in DEFAULT_STAGES],
            }
        )
        insert_frame(session, "stage", stages)
    return pid


_STAGE_SCHEMA = {
    "stage_id": pl.Int64,
    "pipeline_id": pl.Int64,
    "name": pl.String,
    "position": pl.Int64,
    "is_won": pl.Boolean,
    "is_lost": pl.Boolean,
}


def _stage_ids(session: Session, wanted: pl.DataFrame) -> pl.DataFrame:
    """Stage ids for ``pipeline_id, stage[, probability]``: a frame of pipeline_id, stage_key,
    stage_id, is_won, is_lost. Stages the pipeline lacks are appended to it (won / lost from the
    name, probability from the file when it has one, else 0.5)."""
    tenant = tenant_of(session)
    stored = sql_frame(
        session,
        "SELECT id AS stage_id, pipeline_id, name, position, is_won, is_lost FROM stage "
        "WHERE tenant_id = :tenant",
        _STAGE_SCHEMA,
    ).with_columns(_token(pl.col("name")).alias("stage_key"))
    if "probability" not in wanted.columns:
        wanted = wanted.with_columns(pl.lit(None, dtype=pl.Float64).alias("probability"))
    missing = (
        wanted.drop_nulls("stage")
        .with_columns(_token(pl.col("stage")).alias("stage_key"))
        .join(stored, on=["pipeline_id", "stage_key"], how="anti")
        .group_by("pipeline_id", "stage_key", maintain_order=True)
        .agg(pl.col("stage").first(), pl.col("probability").max())
    )
    if missing.height:
        last = stored.group_by("pipeline_id").agg(pl.col("position").max().alias("last"))
        won = pl.col("stage_key").str.contains("won")
        lost = pl.col("stage_key").str.contains("lost") & ~won
        probability = pl.col("probability")
        new = missing.join(last, on="pipeline_id", how="left").with_columns(
            pl.Series("stage_id", allocate_ids(session, "stage", missing.height), dtype=pl.Int64),
            (pl.col("last").fill_null(-1) + pl.int_range(1, pl.len() + 1).over("pipeline_id")).alias(
                "position"
            ),
            pl.when(won)
            .then(1.0)
            .when(lost)
            .then(0.0)
            .otherwise(pl.when(probability > 1).then(probability / 100).otherwise(probability).fill_null(0.5))
            .alias("probability"),
            won.alias("is_won"),
            lost.alias("is_lost"),
        )
        insert_frame(
            session,
            "stage",
            new.select(
                pl.col("stage_id").alias("id"),
                pl.lit(tenant).alias("tenant_id"),
                "pipeline_id",
                pl.col("stage").alias("name"),
                "position",
                "probability",
                "is_won",
                "is_lost",
            ),
        )
        stored = pl.concat(
            [
                stored,
                new.select(*_STAGE_SCHEMA.keys() - {"name"}, pl.col("stage").alias("name"), "stage_key"),
            ],
            how="diagonal_relaxed",
        )
    return stored.select("pipeline_id", "stage_key", "stage_id", "is_won", "is_lost")


DEAL_COLUMNS = (
    "name",
    "account_id",
    "contact_id",
    "pipeline_id",
    "stage_id",
    "amount_cents",
    "currency",
    "close_date",
    "owner",
    "forecast_category",
    "source",
    "created_at",
    "closed_at",
)
DEAL_DERIVED = {
    "account_id": (
        "account_external_id",
        "account_domain",
        "account_name",
        "contact_external_id",
        "contact_email",
    ),
    "contact_id": ("contact_external_id", "contact_email"),
    "pipeline_id": ("stage",),
    "stage_id": ("stage",),
    "amount_cents": ("amount",),
    "closed_at": ("stage", "closed_at"),
}


def _deals(run: _Run, session: Session, rows: pl.DataFrame) -> pl.DataFrame:
    rows, rejects = _people_and_accounts(run, session, rows, require=None, by_name=True)
    if rows.height == 0:
        return rejects
    rows = rows.with_columns(_pipeline_ids(session, rows["pipeline"]).alias("pipeline_id"))
    stages = _stage_ids(session, rows.select("pipeline_id", "stage", "probability"))
    rows = rows.with_columns(_token(pl.col("stage")).alias("stage_key")).join(
        stages, on=["pipeline_id", "stage_key"], how="left", maintain_order="left"
    )
    closed = pl.col("is_won") | pl.col("is_lost")
    close_day = pl.col("close_date").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    rows = rows.with_columns(
        pl.col("currency").str.to_uppercase(),
        pl.when(closed).then(pl.coalesce(pl.col("closed_at"), close_day)).alias("closed_at"),
        _snake(pl.col("forecast_category")).alias("forecast_category"),
        pl.col("amount").alias("amount_cents"),
    )
    run.upsert(
        session, "deal", rows, columns=DEAL_COLUMNS, derived=DEAL_DERIVED, defaults={"currency": "USD"}
    )
    return rejects


STAGE_CHANGE_CONTENT = (
    "deal_external_id",
    "changed_at",
    "from_stage",
    "to_stage",
    "amount",
    "currency",
    "close_date",
)


def _stage_changes(run: _Run, session: Session, rows: pl.DataFrame) -> pl.DataFrame:
    deal_keys = [("deal_external_id", run.by_external_id("deal", ("pipeline_id",)))]
    rows, rejects = run.resolve(
        session, rows, "deal_id", deal_keys, what="deal", extras=(("pipeline_id", "pipeline_id"),)
    )
    if rows.height == 0:
        return rejects
    wanted = pl.concat(
        [
            rows.select("pipeline_id", pl.col("to_stage").alias("stage")),
            rows.select("pipeline_id", pl.col("from_stage").alias("stage")),
        ]
    )
    stages = _stage_ids(session, wanted).select("pipeline_id", "stage_key", "stage_id")
    for side in ("to", "from"):
        rows = (
            rows.with_columns(_token(pl.col(f"{side}_stage")).alias("stage_key"))
            .join(stages, on=["pipeline_id", "stage_key"], how="left", maintain_order="left")
            .rename({"stage_id": f"{side}_stage_id"})
        )
    rows = rows.with_columns(
        run.idempotency_keys(rows, STAGE_CHANGE_CONTENT).alias("idempotency_key"),
        pl.col("amount").alias("amount_cents"),
        pl.col("currency").str.to_uppercase(),
    )
    run.append(
        session,
        "stage_change",
        prepare=_project_history,
        rows=rows.select(
            ROW_COLUMN,
            "idempotency_key",
            "deal_id",
            "changed_at",
            "from_stage_id",
            "to_stage_id",
            "amount_cents",
            "currency",
            "close_date",
            "actor",
        ),
    )
    return rejects


def _project_history(session: Session, rows: pl.DataFrame) -> pl.DataFrame:
    """Write the reports' projections with the rows (see crmctl.pipeline.history): history that
    arrives in order costs one update of each deal's previous latest row, not a refresh; deals
    whose rows arrive out of order stay pending until the refresh at the end of the import."""
    deal_ids = rows["deal_id"].unique().to_list()
    projected, superseded, deals = history.project_appended(rows, history.latest_rows(session, deal_ids))
    update_from_frame(session, "stage_change", superseded)
    update_from_frame(session, "deal", deals)
    return projected


# ---------------------------------------------------------------------------------------------
# Interactions and product usage
# ---------------------------------------------------------------------------------------------


def _people_and_accounts(
    run: _Run, session: Session, rows: pl.DataFrame, *, require: str | None, by_name: bool = False
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Resolve a row's contact and account references; the account defaults to the contact's.

    ``require``: "account" (the row must end up with an account), "either" (with a contact or an
    account) or None."""
    rows, rejects = run.resolve(
        session,
        rows,
        "contact_id",
        run.contact_keys(),
        what="contact",
        extras=(("account_id", "contact_account"),),
    )
    rows, more = run.resolve(session, rows, "account_id", run.account_keys(by_name=by_name), what="account")
    rejects = pl.concat([rejects, more])
    rows = rows.with_columns(pl.coalesce("account_id", "contact_account").alias("account_id"))
    if require is None:
        return rows, rejects
    orphan = pl.col("account_id").is_null()
    if require == "either":
        orphan = orphan & pl.col("contact_id").is_null()
    lost = rows.filter(orphan)
    if lost.height:
        what = "account" if require == "account" else "contact or account"
        column = run.header("account_external_id" if require == "account" else "contact_external_id")
        rejects = pl.concat([rejects, rejects_for(lost[ROW_COLUMN], column, f"no {what} given")])
        rows = rows.filter(~orphan)
    return rows, rejects


INTERACTION_CONTENT = (
    "contact_external_id",
    "contact_email",
    "account_external_id",
    "account_domain",
    "kind",
    "occurred_at",
    "channel",
    "direction",
    "subject",
    "score",
    "actor",
)


def _interactions(run: _Run, session: Session, rows: pl.DataFrame) -> pl.DataFrame:
    rows, rejects = _people_and_accounts(run, session, rows, require="either")
    if rows.height == 0:
        return rejects
    rows = rows.with_columns(
        run.idempotency_keys(rows, INTERACTION_CONTENT).alias("idempotency_key"),
        _snake(pl.col("kind")).alias("kind"),
        pl.col("direction").str.to_lowercase(),
        pl.lit(run.source).alias("external_source"),
    )
    run.append(
        session,
        "interaction",
        rows.select(
            ROW_COLUMN,
            "idempotency_key",
            "contact_id",
            "account_id",
            "kind",
            "occurred_at",
            "channel",
            "direction",
            "subject",
            "body",
            "score",
            "actor",
            "external_source",
        ),
    )
    # The contact's last_interaction_at projection, applied once at the end of the file (from every
    # resolved row, already imported or not, so a re-run after a kill still brings it up to date).
    latest = (
        rows.filter(pl.col("contact_id").is_not_null())
        .group_by("contact_id")
        .agg(pl.col("occurred_at").max().alias("last_interaction_at"))
    )
    run.last_interaction = (
        latest
        if run.last_interaction is None
        else pl.concat([run.last_interaction, latest])
        .group_by("contact_id")
        .agg(pl.col("last_interaction_at").max())
    )
    if run.last_interaction.height > LAST_INTERACTION_FLUSH:
        run.flush_last_interaction(session)
    return rejects


USAGE_CONTENT = (
    "account_external_id",
    "account_domain",
    "contact_external_id",
    "contact_email",
    "occurred_at",
    "event",
    "feature",
    "quantity",
)


def _product_usage(run: _Run, session: Session, rows: pl.DataFrame) -> pl.DataFrame:
    rows, rejects = _people_and_accounts(run, session, rows, require="account")
    if rows.height == 0:
        return rejects
    rows = rows.with_columns(
        run.idempotency_keys(rows, USAGE_CONTENT).alias("idempotency_key"),
        pl.col("quantity").fill_null(1.0),
    )
    run.append(
        session,
        "product_usage",
        rows.select(
            ROW_COLUMN,
            "idempotency_key",
            "account_id",
            "contact_id",
            "occurred_at",
            "event",
            "feature",
            "quantity",
        ),
    )
    return rejects


# ---------------------------------------------------------------------------------------------
# Contracts and renewals, tickets
# ---------------------------------------------------------------------------------------------

CONTRACT_COLUMNS = (
    "account_id",
    "start_date",
    "end_date",
    "arr_cents",
    "currency",
    "auto_renew",
    "contract_type",
    "entitlements",
    "status",
)
CONTRACT_DERIVED = {
    "account_id": ("account_external_id", "account_domain"),
    "arr_cents": ("arr",),
    "entitlements": ("entitlements", "seats", "features"),
    "status": ("status", "end_date"),
}


def _entitlements(rows: pl.DataFrame) -> pl.Series:
    """The entitlements JSON object, with ``features`` and ``seats`` columns folded in."""

    def merge(row: dict[str, Any]) -> str | None:
        body = json.loads(row["entitlements"]) if row["entitlements"] else {}
        if row["features"]:
            body["features"] = [p.strip() for p in row["features"].replace(";", ",").split(",") if p.strip()]
        if row["seats"] is not None:
            body["seats"] = row["seats"]
        return json.dumps(body, sort_keys=True) if body else None

    return pl.Series(
        "entitlements",
        [merge(r) for r in rows.select("entitlements", "features", "seats").iter_rows(named=True)],
        dtype=pl.String,
    )


def _contracts(run: _Run, session: Session, rows: pl.DataFrame) -> pl.DataFrame:
    rows, rejects = run.resolve(session, rows, "account_id", run.account_keys(by_name=False), what="account")
    orphan = rows.filter(pl.col("account_id").is_null())
    if orphan.height:
        rejects = pl.concat(
            [rejects, rejects_for(orphan[ROW_COLUMN], run.header("account_external_id"), "no account given")]
        )
        rows = rows.filter(pl.col("account_id").is_not_null())
    backwards = rows.filter(pl.col("end_date") < pl.col("start_date"))
    if backwards.height:
        rejects = pl.concat(
            [rejects, rejects_for(backwards[ROW_COLUMN], run.header("end_date"), "ends before it starts")]
        )
        rows = rows.filter(pl.col("end_date") >= pl.col("start_date"))
    if rows.height == 0:
        return rejects
    today = date.today()
    rows = rows.with_columns(
        pl.col("arr").alias("arr_cents"),
        pl.col("currency").str.to_uppercase(),
        _entitlements(rows),
        pl.coalesce(
            _snake(pl.col("status")),
            pl.when(pl.col("end_date") < pl.lit(today)).then(pl.lit("expired")).otherwise(pl.lit("active")),
        ).alias("status"),
    )
    written = run.upsert(
        session,
        "contract",
        rows,
        columns=CONTRACT_COLUMNS,
        derived=CONTRACT_DERIVED,
        defaults={"currency": "USD", "auto_renew": False},
    )
    _renewals(run, session, written)
    return rejects


def _renewals(run: _Run, session: Session, contracts: pl.DataFrame) -> None:
    """Each contract's renewal: due at the contract's end, for its ARR. A stored renewal keeps its
    stage and outcome (the renewal work in progress) and takes the new date and amount."""
    counts = run.result.table("renewal")
    wanted = contracts.select(
        pl.col("id").alias("contract_id"),
        "account_id",
        pl.col("end_date").alias("due_date"),
        "arr_cents",
        pl.col("currency").fill_null("USD"),
    )
    stored = lookup(session, "renewal", "contract_id", wanted["contract_id"], select=("id",))
    wanted = wanted.join(stored.rename({"key": "contract_id"}), on="contract_id", how="left")
    now = utcnow()
    new = wanted.filter(pl.col("id").is_null()).drop("id")
    if new.height:
        insert_frame(
            session,
            "renewal",
            new.with_columns(
                pl.lit(tenant_of(session)).alias("tenant_id"),
                pl.lit("upcoming").alias("stage"),
                pl.lit(now).alias("updated_at"),
            ),
        )
        counts.created += new.height
    old = wanted.filter(pl.col("id").is_not_null())
    if old.height:
        update_from_frame(
            session,
            "renewal",
            old.select("id", "account_id", "due_date", "arr_cents", "currency").with_columns(
                pl.lit(now).alias("updated_at")
            ),
        )
        counts.updated += old.height


_TICKET_STATUS = {
    "new": "open",
    "open": "open",
    "pending": "pending",
    "hold": "pending",
    "onhold": "pending",
    "solved": "solved",
    "resolved": "solved",
    "closed": "closed",
}
_TICKET_PRIORITY = {
    "low": "low",
    "normal": "normal",
    "medium": "normal",
    "high": "high",
    "urgent": "urgent",
    "critical": "urgent",
}
TICKET_COLUMNS = (
    "account_id",
    "contact_id",
    "subject",
    "description",
    "status",
    "priority",
    "sentiment",
    "is_escalated",
    "csat",
    "opened_at",
    "closed_at",
)
TICKET_DERIVED = {
    "account_id": ("account_external_id", "account_domain", "contact_external_id", "contact_email"),
    "contact_id": ("contact_external_id", "contact_email"),
}


def _tickets(run: _Run, session: Session, rows: pl.DataFrame) -> pl.DataFrame:
    rows, rejects = _people_and_accounts(run, session, rows, require=None)
    if rows.height == 0:
        return rejects
    rows = rows.with_columns(
        _token(pl.col("status"))
        .replace_strict(_TICKET_STATUS, default=_snake(pl.col("status")))
        .alias("status"),
        _token(pl.col("priority"))
        .replace_strict(_TICKET_PRIORITY, default=_snake(pl.col("priority")))
        .alias("priority"),
        pl.col("sentiment").clip(-1.0, 1.0),
    )
    run.upsert(
        session,
        "support_ticket",
        rows,
        columns=TICKET_COLUMNS,
        derived=TICKET_DERIVED,
        defaults={"status": "open", "priority": "normal", "is_escalated": False},
        timestamps=False,
    )
    return rejects


_HANDLERS: dict[str, Callable[[_Run, Session, pl.DataFrame], pl.DataFrame]] = {
    "accounts": _accounts,
    "contacts": _contacts,
    "deals": _deals,
    "stage-changes": _stage_changes,
    "interactions": _interactions,
    "product-usage": _product_usage,
    "contracts": _contracts,
    "tickets": _tickets,
}
