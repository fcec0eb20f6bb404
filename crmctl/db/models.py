"""The customer graph: one schema for SQLite and PostgreSQL.

Conventions (keep them when adding tables):
- every table has ``tenant_id`` and every index that a tenant-scoped query uses starts with it;
  on PostgreSQL each such table gets a row-level-security policy (``crmctl.db.rls``); SQLite
  puts it last in every index and unique constraint (``crmctl.db.sqlite_ddl``);
- timestamps are timezone-aware UTC (``utcnow()``; timestamptz on PostgreSQL, ISO text on SQLite,
  read back as aware UTC), dates are calendar dates;
- money is stored as integer cents (``*_cents``) with an ISO currency code beside it, so sums are
  exact and mixed currencies are never added raw;
- ``interaction``, ``stage_change``, ``product_usage``, ``audit_event`` and ``erasure_step`` are
  append-only logs: rows are inserted, never updated (erasure deletes a person's rows outright);
  the one exception are derived projection columns (``stage_change.valid_until`` and the
  ``entered_*_at`` columns, rebuilt by ``crmctl.pipeline.history.refresh``), never facts;
- JSON columns hold structured detail (payloads, options, counts, candidate values); ``json`` on
  PostgreSQL, not ``jsonb``: crmctl stores and reads them whole and never queries inside them, and
  ``jsonb`` parses, sorts the keys of and rebuilds every value written (a sixth of the server's CPU
  in a lead import: source payloads, candidate values, provenance), where ``json`` only checks it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from crmctl.db import sqlite_ddl  # noqa: F401  (SQLite's index column order, for every DDL path)

JSONType = JSON()
# Ids of the high-volume logs: 64-bit on PostgreSQL (a nightly health run alone writes over a
# million signal rows); SQLite's INTEGER PRIMARY KEY is already 64-bit and must stay INTEGER to
# remain the rowid.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """Aware UTC now: the one timestamp convention of the schema."""
    return datetime.now(UTC)


def _json(nullable: bool = True) -> Any:
    return Field(default=None, sa_type=JSONType, nullable=nullable)


def _only_set(name: str, column: str) -> Index:
    """An index on (tenant_id, ``column``) over the rows where ``column`` is not null, for a column
    most rows leave empty; queries filtering it with IS NOT NULL, = or IN use it on both backends."""
    where = text(f"{column} IS NOT NULL")
    return Index(name, "tenant_id", column, postgresql_where=where, sqlite_where=where)


# SQLite reuses the largest rowid once its row is deleted (``imports undo`` deletes contacts, records
# and decisions): AUTOINCREMENT keeps an id for the one row that ever had it, so an audit trail that
# names an undone run's rows never points at a later row (PostgreSQL's sequences never reuse).
NEVER_REUSED_IDS: dict[str, Any] = {"sqlite_autoincrement": True}


class TenantTable(SQLModel):
    tenant_id: str = Field(max_length=64, nullable=False)


# --------------------------------------------------------------------------------------------
# Accounts and people
# --------------------------------------------------------------------------------------------


class Account(TenantTable, table=True):
    __tablename__ = "account"
    __table_args__ = (
        UniqueConstraint("tenant_id", "external_source", "external_id", name="uq_account_external"),
        Index("ix_account_tenant_domain", "tenant_id", "domain"),
        Index("ix_account_tenant_name_norm", "tenant_id", "name_norm"),
        Index("ix_account_tenant_parent", "tenant_id", "parent_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str
    name_norm: str | None = None  # legal suffixes and punctuation removed, lower case
    domain: str | None = None  # registered domain, e.g. "acme.co.uk"
    industry: str | None = None
    segment: str | None = None  # enterprise | mid-market | smb
    arr_tier: str | None = None
    plan: str | None = None
    country: str | None = None  # ISO 3166-1 alpha-2
    employees: int | None = None
    parent_id: int | None = Field(default=None, foreign_key="account.id")
    owner: str | None = None
    external_source: str | None = None  # e.g. "hubspot", "salesforce", "crmctl"
    external_id: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Contact(TenantTable, table=True):
    """A person. Merged-away contacts keep their row with ``merged_into_id`` set (undo needs it)."""

    __tablename__ = "contact"
    __table_args__ = (
        UniqueConstraint("tenant_id", "external_source", "external_id", name="uq_contact_external"),
        Index("ix_contact_tenant_email_norm", "tenant_id", "email_norm"),
        Index("ix_contact_tenant_phone_e164", "tenant_id", "phone_e164"),
        Index("ix_contact_tenant_account", "tenant_id", "account_id"),
        # partial: only merged-away contacts have an entry (a lead import inserts and rewrites
        # contacts by the hundred thousand, and every query here asks for a merged_into_id that is
        # not null: IS NOT NULL, = or IN)
        _only_set("ix_contact_tenant_merged_into", "merged_into_id"),
        NEVER_REUSED_IDS,
    )

    id: int | None = Field(default=None, primary_key=True)
    account_id: int | None = Field(default=None, foreign_key="account.id")
    first_name: str | None = None
    last_name: str | None = None
    full_name: str | None = None
    first_name_norm: str | None = None  # case/accents folded, nickname-canonical ("bob" -> "robert")
    last_name_norm: str | None = None
    email: str | None = None  # as given
    email_norm: str | None = None  # lower-cased; gmail dots and +tags removed
    phone: str | None = None  # as given
    phone_e164: str | None = None
    phone_ext: str | None = None
    title: str | None = None
    company: str | None = None
    company_norm: str | None = None
    company_domain: str | None = None  # registered domain of a work email / website; never free-mail
    country: str | None = None
    lifecycle_stage: str = "lead"  # lead | mql | sql | opportunity | customer | churned
    owner: str | None = None
    lawful_basis: str | None = None  # contract | legitimate_interest | consent
    consent_evidence: str | None = None  # where/how consent was given (form id, timestamp, text version)
    consent_at: datetime | None = None
    consent_withdrawn_at: datetime | None = None
    retention_policy: str | None = None  # name of a retention policy, e.g. "li-24m"
    field_provenance: dict[str, Any] | None = _json()  # field -> {source, source_record_id, at}
    source: str | None = None  # first source the contact came from
    external_source: str | None = None
    external_id: str | None = None
    merged_into_id: int | None = Field(default=None, foreign_key="contact.id")
    last_interaction_at: datetime | None = None  # projection of the interaction log
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    erased_at: datetime | None = None


class ContactIdentifier(TenantTable, table=True):
    """Every normalised key a contact can be found by (it may have several emails and phones).

    ``kind``: email | phone | helpdesk_id | name_company | name_domain | external. Identity
    resolution looks candidates up here by (tenant_id, kind, value): an index probe, never a rescan.
    """

    __tablename__ = "contact_identifier"
    __table_args__ = (
        UniqueConstraint("tenant_id", "kind", "value", "contact_id", name="uq_contact_identifier"),
        Index("ix_contact_identifier_contact", "tenant_id", "contact_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    contact_id: int  # contact.id, no foreign key: see UNKEYED_REFERENCES
    kind: str = Field(max_length=32)
    value: str
    source_record_id: int | None = None  # source_record.id, no foreign key: see UNKEYED_REFERENCES
    created_at: datetime = Field(default_factory=utcnow)


# UNKEYED_REFERENCES: the columns below name rows of another table without a foreign key. They are
# the lead importer's provenance and audit rows, hundreds of thousands per import, and PostgreSQL
# checks a foreign key once per inserted row (a query that finds the referenced row and locks it FOR
# KEY SHARE). Measured in a lead import of 100k people, the checks were a third of each bulk insert:
# on import runs 5.3 s and on the identifiers' source records 2.4 s of the server's 34.5 CPU s; on
# contacts 0.7-1.4 s per 100k rows of each of source_record, contact_identifier and merge_decision.
# (SQLite imports never ran them: a lead batch turns foreign keys off, see ``batch_session``.)
# The integrity the keys gave is kept by the only code that writes or deletes these rows:
# - import runs are never deleted (undo marks them ``undone``), and every row naming a run is
#   written after the run's row is committed;
# - contacts are deleted only by ``imports undo``, which deletes the source records, identifiers and
#   merge decisions naming them first, in the same transaction, and refuses while a later import
#   run's records, contact merges or review items name them; erasure scrubs contacts in place.
#   Undo and every writer of these rows (lead import, resolve, review, merges undo, the migration
#   importer) hold the tenant's "import" job lock, so none runs between undo's check and its deletes;
# - a lead batch locks the existing contacts it writes to (``_hold_existing``) and creates the rest.
# ``crmctl db check`` reports any row whose reference dangles (someone deleted rows by hand).
UNKEYED_REFERENCES: tuple[tuple[str, str, str], ...] = (
    ("import_reject", "import_run_id", "import_run"),
    ("source_record", "import_run_id", "import_run"),
    ("source_record", "contact_id", "contact"),
    ("contact_identifier", "contact_id", "contact"),
    ("contact_identifier", "source_record_id", "source_record"),
    ("merge_decision", "import_run_id", "import_run"),
    ("merge_decision", "winner_contact_id", "contact"),
    ("merge_decision", "loser_contact_id", "contact"),
    ("review_item", "import_run_id", "import_run"),
)


class ImportRun(TenantTable, table=True):
    __tablename__ = "import_run"
    __table_args__ = (Index("ix_import_run_tenant_sha", "tenant_id", "file_sha256"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str  # leads | accounts | contacts | deals | stage-changes | interactions | ...
    source: str | None = None
    file_name: str | None = None
    file_sha256: str | None = None
    options: dict[str, Any] | None = _json()  # no personal data
    counts: dict[str, Any] | None = _json()
    status: str = "running"  # running | completed | failed | undone
    actor: str | None = None
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    undone_at: datetime | None = None


class ImportReject(TenantTable, table=True):
    """A row an import did not take, and why: its place in the file, never its values (those stay
    in the reject file the user asked for), so that a run's results can list it."""

    __tablename__ = "import_reject"
    __table_args__ = (Index("ix_import_reject_tenant_run", "tenant_id", "import_run_id"),)

    id: int | None = Field(default=None, primary_key=True)
    import_run_id: int  # import_run.id, no foreign key: see UNKEYED_REFERENCES
    row_number: int
    column_name: str  # the header the reason is about ("" for the whole row)
    reason: str


class SourceRecord(TenantTable, table=True):
    """Every row ever imported, as received, with its normalised keys and the contact it became."""

    __tablename__ = "source_record"
    __table_args__ = (
        UniqueConstraint("tenant_id", "source", "source_record_id", name="uq_source_record"),
        Index("ix_source_record_tenant_contact", "tenant_id", "contact_id"),
        Index("ix_source_record_tenant_run", "tenant_id", "import_run_id"),
        NEVER_REUSED_IDS,
    )

    id: int | None = Field(default=None, primary_key=True)
    source: str
    source_record_id: str
    import_run_id: int | None = None  # import_run.id, no foreign key: see UNKEYED_REFERENCES
    row_number: int | None = None
    payload: dict[str, Any] | None = _json()  # the row as received (scrubbed on erasure)
    content_hash: str | None = None
    email_norm: str | None = None
    phone_e164: str | None = None
    name_key: str | None = None
    company_key: str | None = None
    contact_id: int | None = None  # contact.id, no foreign key: see UNKEYED_REFERENCES
    action: str | None = None  # created | merged | review | rejected
    campaign: str | None = None
    medium: str | None = None
    received_at: datetime | None = None  # the source's own timestamp, when it has one
    created_at: datetime = Field(default_factory=utcnow)


class MergeDecision(TenantTable, table=True):
    """Why records/contacts were joined: rule, score, per-field levels and every candidate's values."""

    __tablename__ = "merge_decision"
    __table_args__ = (
        Index("ix_merge_decision_tenant_winner", "tenant_id", "winner_contact_id"),
        _only_set("ix_merge_decision_tenant_loser", "loser_contact_id"),  # only contact merges have one
        Index("ix_merge_decision_tenant_run", "tenant_id", "import_run_id"),
        NEVER_REUSED_IDS,
    )

    id: int | None = Field(default=None, primary_key=True)
    import_run_id: int | None = None  # import_run.id, no foreign key: see UNKEYED_REFERENCES
    kind: str = "record"  # record (a source record joined a contact) | contact (two contacts merged)
    rule: str
    score: float
    winner_contact_id: int  # contact.id, no foreign key: see UNKEYED_REFERENCES
    loser_contact_id: int | None = None  # contact.id, no foreign key: see UNKEYED_REFERENCES
    source_record_ids: list[int] | None = _json()
    levels: dict[str, Any] | None = _json()  # field -> comparison level label and similarity
    candidates: list[dict[str, Any]] | None = _json()  # the values each candidate held (audit)
    before: dict[str, Any] | None = _json()  # winner's fields before the merge (for undo)
    actor: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    undone_at: datetime | None = None
    undone_by: str | None = None


class ReviewItem(TenantTable, table=True):
    """A candidate pair too close to call, waiting for a person."""

    __tablename__ = "review_item"
    __table_args__ = (Index("ix_review_item_tenant_status", "tenant_id", "status"), NEVER_REUSED_IDS)

    id: int | None = Field(default=None, primary_key=True)
    import_run_id: int | None = None  # import_run.id, no foreign key: see UNKEYED_REFERENCES
    left_contact_id: int = Field(foreign_key="contact.id")
    right_contact_id: int = Field(foreign_key="contact.id")
    rule: str
    score: float
    levels: dict[str, Any] | None = _json()
    candidates: list[dict[str, Any]] | None = _json()
    status: str = "open"  # open | accepted | rejected
    decided_at: datetime | None = None
    decided_by: str | None = None
    merge_decision_id: int | None = Field(default=None, foreign_key="merge_decision.id")
    created_at: datetime = Field(default_factory=utcnow)


# --------------------------------------------------------------------------------------------
# Pipeline
# --------------------------------------------------------------------------------------------


class Pipeline(TenantTable, table=True):
    __tablename__ = "pipeline"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_pipeline_name"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str
    is_default: bool = False
    currency: str = "USD"  # reporting currency unless --currency says otherwise
    created_at: datetime = Field(default_factory=utcnow)


class Stage(TenantTable, table=True):
    __tablename__ = "stage"
    __table_args__ = (UniqueConstraint("tenant_id", "pipeline_id", "name", name="uq_stage_name"),)

    id: int | None = Field(default=None, primary_key=True)
    pipeline_id: int = Field(foreign_key="pipeline.id")
    name: str
    position: int
    probability: float  # 0..1
    is_won: bool = False
    is_lost: bool = False
    stall_days: int | None = None


class Deal(TenantTable, table=True):
    __tablename__ = "deal"
    __table_args__ = (
        UniqueConstraint("tenant_id", "external_source", "external_id", name="uq_deal_external"),
        # Covering for the live reports: they group by these raw columns in index order, so SQLite
        # streams the aggregate instead of sorting a million rows (issue 5).
        Index(
            "ix_deal_tenant_pipeline_stage",
            "tenant_id",
            "pipeline_id",
            "stage_id",
            "currency",
            "close_date",
            "forecast_category",
            "amount_cents",
            "entered_stage_at",
            "entered_pipeline_at",
            "created_at",
        ),
        Index("ix_deal_tenant_account", "tenant_id", "account_id"),
        Index("ix_deal_tenant_contact", "tenant_id", "contact_id"),
        Index("ix_deal_tenant_close_date", "tenant_id", "close_date"),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str | None = None
    account_id: int | None = Field(default=None, foreign_key="account.id")
    contact_id: int | None = Field(default=None, foreign_key="contact.id")
    pipeline_id: int = Field(foreign_key="pipeline.id")
    stage_id: int = Field(foreign_key="stage.id")
    amount_cents: int | None = Field(default=None, sa_type=BigInteger)
    currency: str = "USD"
    close_date: date | None = None
    owner: str | None = None
    forecast_category: str | None = None  # pipeline | best_case | commit | closed | omitted
    source: str | None = None  # lead source, for --by source
    external_source: str | None = None
    external_id: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    closed_at: datetime | None = None
    # Projections of the stage history (crmctl.pipeline.history): when the deal entered its current
    # stage and the pipeline; NULL while it has no history (reports fall back to created_at).
    entered_stage_at: datetime | None = None
    entered_pipeline_at: datetime | None = None


class StageChange(TenantTable, table=True):
    """Append-only history of a deal: stage moves and amount / close-date changes."""

    __tablename__ = "stage_change"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_stage_change_key"),
        # The as-of state: rows with changed_at <= T < valid_until are one range of this index, read
        # without touching the table (issue 5).
        Index(
            "ix_stage_change_tenant_valid",
            "tenant_id",
            "valid_until",
            "changed_at",
            "to_stage_id",
            "currency",
            "close_date",
            "amount_cents",
            "entered_stage_at",
            "entered_pipeline_at",
            "deal_id",
        ),
        # The funnel's cohort (deals that entered the pipeline in a period) and its stage entries.
        Index(
            "ix_stage_change_tenant_cohort",
            "tenant_id",
            "entered_pipeline_at",
            "deal_id",
            "to_stage_id",
            "changed_at",
        ),
        # A deal's history in order: projection refreshes partition by deal, and report changes
        # seeks each tracked deal's state here, index-only (covering columns).
        Index(
            "ix_stage_change_tenant_deal_at",
            "tenant_id",
            "deal_id",
            "changed_at",
            "id",
            "valid_until",
            "to_stage_id",
            "amount_cents",
            "currency",
            "close_date",
        ),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    deal_id: int = Field(foreign_key="deal.id")
    changed_at: datetime
    from_stage_id: int | None = Field(default=None, foreign_key="stage.id")
    to_stage_id: int = Field(foreign_key="stage.id")
    amount_cents: int | None = Field(default=None, sa_type=BigInteger)  # amount after the change
    currency: str | None = None
    close_date: date | None = None  # close date after the change
    actor: str | None = None
    idempotency_key: str
    # Projections over the deal's whole history (order: changed_at, then id), kept by
    # crmctl.pipeline.history.refresh: the next row's changed_at (NULL on the latest row), when the
    # deal last moved into to_stage_id as of this row, and its first row's changed_at.
    valid_until: datetime | None = None
    entered_stage_at: datetime | None = None
    entered_pipeline_at: datetime | None = None


class ExchangeRate(TenantTable, table=True):
    """1 unit of ``currency`` = ``rate`` units of ``base`` on ``day``."""

    __tablename__ = "exchange_rate"
    __table_args__ = (UniqueConstraint("tenant_id", "base", "currency", "day", name="uq_exchange_rate"),)

    id: int | None = Field(default=None, primary_key=True)
    base: str
    currency: str
    day: date
    rate: float


# --------------------------------------------------------------------------------------------
# Activity (append-only)
# --------------------------------------------------------------------------------------------


class Interaction(TenantTable, table=True):
    """Append-only event log: email, call, meeting, note, ticket event, product event, nps, csat,
    playbook step, health_transition. ``score`` carries NPS/CSAT values."""

    __tablename__ = "interaction"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_interaction_key"),
        Index("ix_interaction_tenant_contact_at", "tenant_id", "contact_id", "occurred_at"),
        # covering for health scoring's per-account pass (kind and score ride along): it reads an
        # account's interactions from the index alone instead of a table row for each (issue 6)
        Index("ix_interaction_tenant_account_at", "tenant_id", "account_id", "occurred_at", "kind", "score"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    contact_id: int | None = Field(default=None, foreign_key="contact.id")
    account_id: int | None = Field(default=None, foreign_key="account.id")
    kind: str = Field(max_length=32)
    occurred_at: datetime
    channel: str | None = None
    direction: str | None = None  # inbound | outbound
    subject: str | None = None
    body: str | None = None
    score: float | None = None
    actor: str | None = None  # the CSM / rep
    details: dict[str, Any] | None = _json()
    external_source: str | None = None
    idempotency_key: str


class ProductUsage(TenantTable, table=True):
    """Append-only usage events or daily rollups (``quantity`` > 1) per account and contact.

    ``event``: login | feature_used | api_call | data_volume_mb | integration_connected | ...
    """

    __tablename__ = "product_usage"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_product_usage_key"),
        # covering: health scoring aggregates an account's window from the index alone
        Index(
            "ix_product_usage_tenant_account_at",
            "tenant_id",
            "account_id",
            "occurred_at",
            "event",
            "quantity",
            "feature",
        ),
        Index("ix_product_usage_tenant_contact", "tenant_id", "contact_id"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    account_id: int = Field(foreign_key="account.id")
    contact_id: int | None = Field(default=None, foreign_key="contact.id")
    occurred_at: datetime
    event: str = Field(max_length=64)
    feature: str | None = None
    quantity: float = 1.0
    idempotency_key: str


# --------------------------------------------------------------------------------------------
# Contracts, renewals, support
# --------------------------------------------------------------------------------------------


class Contract(TenantTable, table=True):
    __tablename__ = "contract"
    __table_args__ = (
        UniqueConstraint("tenant_id", "external_source", "external_id", name="uq_contract_external"),
        Index("ix_contract_tenant_account", "tenant_id", "account_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id")
    start_date: date
    end_date: date
    arr_cents: int = Field(sa_type=BigInteger)
    currency: str = "USD"
    auto_renew: bool = False
    contract_type: str | None = None  # e.g. annual | multi-year | monthly | self-serve
    entitlements: dict[str, Any] | None = _json()  # e.g. {"features": [...], "seats": 50}
    status: str = "active"  # active | expired | cancelled
    external_source: str | None = None
    external_id: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Renewal(TenantTable, table=True):
    """A contract's renewal, with its own stage machine: upcoming -> in_progress -> renewed | churned."""

    __tablename__ = "renewal"
    __table_args__ = (
        UniqueConstraint("tenant_id", "contract_id", name="uq_renewal_contract"),
        Index("ix_renewal_tenant_due", "tenant_id", "due_date"),
    )

    id: int | None = Field(default=None, primary_key=True)
    contract_id: int = Field(foreign_key="contract.id")
    account_id: int = Field(foreign_key="account.id")
    due_date: date
    stage: str = "upcoming"
    arr_cents: int = Field(sa_type=BigInteger)
    currency: str = "USD"
    outcome: str | None = None
    updated_at: datetime = Field(default_factory=utcnow)


class SupportTicket(TenantTable, table=True):
    """Shadow of the helpdesk's ticket."""

    __tablename__ = "support_ticket"
    __table_args__ = (
        UniqueConstraint("tenant_id", "external_source", "external_id", name="uq_support_ticket_external"),
        Index("ix_support_ticket_tenant_account", "tenant_id", "account_id", "opened_at"),
        Index("ix_support_ticket_tenant_contact", "tenant_id", "contact_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    account_id: int | None = Field(default=None, foreign_key="account.id")
    contact_id: int | None = Field(default=None, foreign_key="contact.id")
    subject: str | None = None
    description: str | None = None
    status: str = "open"  # open | pending | solved | closed
    priority: str = "normal"  # low | normal | high | urgent
    sentiment: float | None = None  # -1 .. 1
    is_escalated: bool = False
    csat: float | None = None
    opened_at: datetime
    closed_at: datetime | None = None
    external_source: str | None = None
    external_id: str | None = None


# --------------------------------------------------------------------------------------------
# Health
# --------------------------------------------------------------------------------------------


class HealthModel(TenantTable, table=True):
    __tablename__ = "health_model"
    __table_args__ = (UniqueConstraint("tenant_id", "version", name="uq_health_model_version"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str
    version: str  # content hash of the model file
    body: str  # the model as TOML text
    created_at: datetime = Field(default_factory=utcnow)


class HealthSnapshot(TenantTable, table=True):
    __tablename__ = "health_snapshot"
    __table_args__ = (
        UniqueConstraint("tenant_id", "account_id", "as_of", "model_version", name="uq_health_snapshot"),
        Index("ix_health_snapshot_tenant_as_of", "tenant_id", "as_of"),
    )

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id")
    as_of: date
    model_version: str
    segment: str | None = None
    composite: float
    band: str  # green | amber | red
    created_at: datetime = Field(default_factory=utcnow)


class HealthSignal(TenantTable, table=True):
    __tablename__ = "health_signal"
    __table_args__ = (
        Index("ix_health_signal_tenant_snapshot", "tenant_id", "snapshot_id"),
        Index("ix_health_signal_tenant_contact", "tenant_id", "contact_id"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    snapshot_id: int = Field(foreign_key="health_snapshot.id")
    # The snapshot's account, copied for reading by account. No foreign key of its own: the
    # snapshot's already holds (scoring writes both in one transaction), and a second per-row check
    # on the 13 rows per account of every run was over a quarter of PostgreSQL's signal insert (issue 6).
    account_id: int
    contact_id: int | None = Field(default=None, foreign_key="contact.id")  # when a person drove it
    signal: str
    raw_value: float | None = None
    normalised_value: float | None = None
    weight: float
    contribution: float


class ManualSignal(TenantTable, table=True):
    """A CSM's judgement, used as a signal until it expires."""

    __tablename__ = "manual_signal"
    __table_args__ = (Index("ix_manual_signal_tenant_account", "tenant_id", "account_id"),)

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id")
    value: float  # 0..100
    note: str | None = None
    author: str
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None


# --------------------------------------------------------------------------------------------
# Compliance and audit
# --------------------------------------------------------------------------------------------


class ErasureRequest(TenantTable, table=True):
    """The compliance anchor. Holds no raw personal data: only keyed hashes of identifiers."""

    __tablename__ = "erasure_request"
    __table_args__ = (Index("ix_erasure_request_tenant_status", "tenant_id", "status"),)

    id: int | None = Field(default=None, primary_key=True)
    contact_id: int | None = Field(default=None, foreign_key="contact.id")
    identity_hashes: dict[str, Any] | None = _json()  # kind -> [keyed hash, ...]
    requestor: str
    reason: str
    status: str = "pending"  # pending | running | completed | failed | no_match
    requested_at: datetime = Field(default_factory=utcnow)
    completed_at: datetime | None = None
    backups_rotate_out_by: date | None = None
    evidence: dict[str, Any] | None = _json()  # counts per step, verification result


class ErasureStep(TenantTable, table=True):
    __tablename__ = "erasure_step"
    __table_args__ = (UniqueConstraint("tenant_id", "request_id", "name", name="uq_erasure_step"),)

    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="erasure_request.id")
    name: str
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    rows_affected: int | None = None
    outcome: str | None = None  # ok | failed


class Suppression(TenantTable, table=True):
    """Salted hashes of erased identities, so a re-import does not bring a person back."""

    __tablename__ = "suppression"
    __table_args__ = (UniqueConstraint("tenant_id", "kind", "value_hash", name="uq_suppression"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str  # email | phone
    value_hash: str
    request_id: int | None = Field(default=None, foreign_key="erasure_request.id")
    created_at: datetime = Field(default_factory=utcnow)


class AuditEvent(TenantTable, table=True):
    """Every writing command: who, what, with which options (no personal data), counts, outcome."""

    __tablename__ = "audit_event"
    __table_args__ = (Index("ix_audit_event_tenant_started", "tenant_id", "started_at"),)

    id: int | None = Field(default=None, primary_key=True)
    actor: str
    command: str
    options: dict[str, Any] | None = _json()
    counts: dict[str, Any] | None = _json()
    outcome: str = "running"  # running | ok | failed | dry_run
    error: str | None = None  # error class, never a message with data in it
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


TENANT_TABLES: tuple[type[SQLModel], ...] = (
    Account,
    Contact,
    ContactIdentifier,
    ImportRun,
    ImportReject,
    SourceRecord,
    MergeDecision,
    ReviewItem,
    Pipeline,
    Stage,
    Deal,
    StageChange,
    ExchangeRate,
    Interaction,
    ProductUsage,
    Contract,
    Renewal,
    SupportTicket,
    HealthModel,
    HealthSnapshot,
    HealthSignal,
    ManualSignal,
    ErasureRequest,
    ErasureStep,
    Suppression,
    AuditEvent,
)
