"""What each migration importer reads: its fields, their types and header aliases, and how a batch
of raw strings becomes typed columns (vectorised; a bad cell rejects its row with a reason that names
the column, never the value)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from crmctl.importers.reader import REJECT_SCHEMA, ROW_COLUMN, rejects_for

TEXT, INT, FLOAT, MONEY, DATE, DATETIME, BOOL, JSON = (
    "text",
    "int",
    "float",
    "money",
    "date",
    "datetime",
    "bool",
    "json",
)


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str = TEXT
    required: bool = False
    aliases: tuple[str, ...] = ()


def f(name: str, type_: str = TEXT, *aliases: str, required: bool = False) -> FieldSpec:
    return FieldSpec(name=name, type=type_, required=required, aliases=aliases)


# References shared by several kinds (how a row names its account, contact or deal).
ACCOUNT_REF = (
    f("account_external_id", TEXT, "account id", "company id", "organization id", "org id"),
    f("account_domain", TEXT, "company domain", "account website", "company website"),
    f("account_name", TEXT, "account", "company", "account name", "company name", "organization"),
)
CONTACT_REF = (
    f("contact_external_id", TEXT, "contact id", "person id"),
    f("contact_email", TEXT, "email", "contact email", "email address", "person email"),
)

FIELDS: dict[str, tuple[FieldSpec, ...]] = {
    "accounts": (
        f("external_id", TEXT, "id", "account id", "company id", "record id", required=True),
        f("name", TEXT, "account name", "company name", "company", "organization name", required=True),
        f("domain", TEXT, "company domain", "domain name"),
        f("website", TEXT, "website url", "url", "web site"),
        f("industry", TEXT),
        f("segment", TEXT, "customer segment", "tier"),
        f("arr_tier", TEXT),
        f("plan", TEXT),
        f("country", TEXT, "country code", "billing country"),
        f("employees", INT, "number of employees", "employee count", "headcount"),
        f("owner", TEXT, "account owner", "company owner"),
        f("parent_external_id", TEXT, "parent id", "parent account id", "parent company id"),
    ),
    "contacts": (
        f("external_id", TEXT, "id", "contact id", "person id", "record id", required=True),
        f("first_name", TEXT, "first name", "firstname", "given name"),
        f("last_name", TEXT, "last name", "lastname", "surname", "family name"),
        f("full_name", TEXT, "name", "full name", "contact name"),
        f("email", TEXT, "email address", "e-mail", "work email"),
        f("phone", TEXT, "phone number", "telephone", "work phone", "mobile"),
        f("title", TEXT, "job title", "position"),
        f("company", TEXT, "company name", "organization"),
        f("country", TEXT, "country code"),
        f("lifecycle_stage", TEXT, "lifecycle stage", "stage"),
        f("owner", TEXT, "contact owner"),
        f("lawful_basis", TEXT, "legal basis"),
        f("consent_evidence", TEXT),
        f("consent_at", DATETIME, "consent date"),
        f("source", TEXT, "lead source"),
        f("created_at", DATETIME, "create date", "created", "created date"),
        *ACCOUNT_REF,
    ),
    "deals": (
        f("external_id", TEXT, "id", "deal id", "opportunity id", "record id", required=True),
        f("name", TEXT, "deal name", "opportunity name", "title"),
        f("pipeline", TEXT, "pipeline name"),
        f("stage", TEXT, "deal stage", "stage name", required=True),
        f("probability", FLOAT, "deal probability", "win probability"),
        f("amount", MONEY, "value", "deal amount", "deal value"),
        f("currency", TEXT, "currency code"),
        f("close_date", DATE, "close date", "expected close date"),
        f("owner", TEXT, "deal owner"),
        f("forecast_category", TEXT, "forecast category"),
        f("source", TEXT, "lead source", "deal source"),
        f("created_at", DATETIME, "create date", "created", "created date"),
        f("closed_at", DATETIME, "closed date", "won time", "lost time"),
        *ACCOUNT_REF,
        *CONTACT_REF,
    ),
    "stage-changes": (
        f("external_id", TEXT, "id", "history id", "change id"),
        f("deal_external_id", TEXT, "deal id", "opportunity id", required=True),
        f("changed_at", DATETIME, "changed", "change date", "created date", "date", required=True),
        f("from_stage", TEXT, "previous stage", "old stage"),
        f("to_stage", TEXT, "stage", "stage name", "new stage", required=True),
        f("amount", MONEY, "value"),
        f("currency", TEXT, "currency code"),
        f("close_date", DATE, "close date"),
        f("actor", TEXT, "changed by", "user"),
    ),
    "interactions": (
        f("external_id", TEXT, "id", "activity id", "engagement id"),
        f("kind", TEXT, "type", "activity type", "interaction type", required=True),
        f("occurred_at", DATETIME, "timestamp", "date", "activity date", "occurred", required=True),
        f("channel", TEXT),
        f("direction", TEXT),
        f("subject", TEXT, "title"),
        f("body", TEXT, "notes", "description"),
        f("score", FLOAT, "rating", "nps score", "csat score"),
        f("actor", TEXT, "owner", "user", "rep"),
        *CONTACT_REF,
        *ACCOUNT_REF[:2],
    ),
    "product-usage": (
        f("external_id", TEXT, "id", "event id"),
        f("occurred_at", DATETIME, "timestamp", "date", "day", required=True),
        f("event", TEXT, "event name", "metric", required=True),
        f("feature", TEXT),
        f("quantity", FLOAT, "count", "value"),
        *ACCOUNT_REF[:2],
        *CONTACT_REF,
    ),
    "contracts": (
        f("external_id", TEXT, "id", "contract id", "subscription id", required=True),
        f("start_date", DATE, "start", "contract start date", "start date", required=True),
        f("end_date", DATE, "end", "contract end date", "end date", required=True),
        f("arr", MONEY, "annual recurring revenue", "arr amount", "annual value", required=True),
        f("currency", TEXT, "currency code"),
        f("auto_renew", BOOL, "auto renew", "autorenew", "auto-renew"),
        f("contract_type", TEXT, "type", "term"),
        f("entitlements", JSON),
        f("seats", INT, "licenses", "licences"),
        f("features", TEXT),
        f("status", TEXT),
        *ACCOUNT_REF[:2],
    ),
    "tickets": (
        f("external_id", TEXT, "id", "ticket id", required=True),
        f("subject", TEXT, "title"),
        f("description", TEXT, "body"),
        f("status", TEXT),
        f("priority", TEXT),
        f("sentiment", FLOAT, "sentiment score"),
        f("is_escalated", BOOL, "escalated"),
        f("csat", FLOAT, "satisfaction", "satisfaction score", "csat score"),
        f("opened_at", DATETIME, "created", "created at", "opened", "created date", required=True),
        f("closed_at", DATETIME, "closed", "solved at", "closed date"),
        *CONTACT_REF,
        *ACCOUNT_REF[:2],
    ),
}

KINDS = tuple(FIELDS)


def aliases_for(kind: str) -> dict[str, list[str]]:
    return {spec.name: list(spec.aliases) for spec in FIELDS[kind]}


# ---------------------------------------------------------------------------------------------
# Parsing a batch
# ---------------------------------------------------------------------------------------------

_DATETIME_FORMATS = (
    # ISO 8601 in UTC with a literal "Z", what most exports write: the same instants as the next
    # format gives them, parsed about four times faster (a cell it misses falls through).
    "%Y-%m-%dT%H:%M:%SZ",
    "%Y-%m-%dT%H:%M:%S%#z",
    "%Y-%m-%dT%H:%M:%S%.f%#z",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %I:%M %p",
    "%m/%d/%Y",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y",
)
_DATE_FORMATS = ("%Y-%m-%d", "%m/%d/%Y", "%d.%m.%Y", "%Y/%m/%d")
_TRUE = ("true", "t", "yes", "y", "1", "on")
_FALSE = ("false", "f", "no", "n", "0", "off")
TYPE_REASONS = {
    INT: "not a whole number",
    FLOAT: "not a number",
    MONEY: "not an amount",
    DATE: "not a date (use YYYY-MM-DD)",
    DATETIME: "not a date and time (use ISO 8601, e.g. 2024-05-01T09:30:00Z)",
    BOOL: "not true/false",
    JSON: "not a JSON object or a list of features",
}


def _first_parse(raw: pl.Series, formats: Sequence[str], parse: str) -> pl.Series:
    """Try formats in order, each only on the values still unparsed (usually one pass)."""
    out: pl.Series | None = None
    for fmt in formats:
        if parse == DATE:
            attempt = raw.str.to_date(fmt, strict=False)
        else:
            attempt = raw.str.to_datetime(fmt, strict=False, time_zone="UTC", time_unit="us")
        out = attempt if out is None else out.fill_null(attempt)
        if (out.is_null() & raw.is_not_null()).sum() == 0:
            break
    assert out is not None
    return out


def parse_column(raw: pl.Series, type_: str) -> pl.Series:
    """A typed Series (null where the raw value is missing or does not parse)."""
    if type_ == TEXT:
        return raw
    if type_ == INT:
        number = raw.str.replace_all(r"[,_\s]", "").cast(pl.Float64, strict=False)
        return pl.select(
            pl.when(number == number.round(0)).then(number).otherwise(None).cast(pl.Int64)
        ).to_series()
    if type_ == FLOAT:
        return raw.str.replace_all(r"[_\s]", "").str.strip_suffix("%").cast(pl.Float64, strict=False)
    if type_ == MONEY:
        cleaned = raw.str.replace_all(r"[\s,_]|^[A-Z]{3}|[A-Z]{3}$|[$€£¥]", "")
        number = cleaned.cast(pl.Float64, strict=False)
        return (number * 100).round(0).cast(pl.Int64)
    if type_ == DATE:
        # Timestamps are accepted where a date is wanted: their first ten characters.
        head = raw.str.slice(0, 10).str.strip_chars()
        return _first_parse(pl.Series(raw.name, head), _DATE_FORMATS, DATE)
    if type_ == DATETIME:
        return _first_parse(raw.str.replace(r"(\+\d\d)$", "${1}:00"), _DATETIME_FORMATS, DATETIME)
    if type_ == BOOL:
        low = raw.str.to_lowercase()
        return pl.select(
            pl.when(low.is_in(_TRUE)).then(True).when(low.is_in(_FALSE)).then(False).otherwise(None)
        ).to_series()
    if type_ == JSON:
        return raw.map_elements(_json_object, return_dtype=pl.String, skip_nulls=True)
    raise ValueError(f"unknown field type {type_}")


def _json_object(value: str) -> str | None:
    text = value.strip()
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            return None
        return json.dumps(parsed, sort_keys=True) if isinstance(parsed, dict) else None
    features = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    return json.dumps({"features": features}) if features else None


def typed_batch(
    batch: pl.DataFrame, kind: str, mapping: Mapping[str, str]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rename the mapped headers to field names, type every field, and reject rows with bad cells
    or missing required values. Returns (typed frame with every field of the kind, rejects)."""
    columns: dict[str, pl.Series] = {ROW_COLUMN: batch[ROW_COLUMN]}
    rejects: list[pl.DataFrame] = []
    for spec in FIELDS[kind]:
        header = mapping.get(spec.name)
        if header is None:
            columns[spec.name] = pl.Series(spec.name, [None] * batch.height, dtype=_dtype(spec.type))
            continue
        stripped = batch[header].str.strip_chars()
        raw = pl.select(pl.when(stripped.str.len_chars() > 0).then(stripped)).to_series().alias(header)
        parsed = parse_column(raw, spec.type).alias(spec.name)
        bad = raw.is_not_null() & parsed.is_null()
        if bad.any():
            rejects.append(rejects_for(batch.filter(bad)[ROW_COLUMN], header, TYPE_REASONS[spec.type]))
        columns[spec.name] = parsed
    frame = pl.DataFrame(columns)
    bad_rows = (
        pl.concat(rejects)[ROW_COLUMN].implode() if rejects else pl.Series([], dtype=pl.Int64).implode()
    )
    for spec in FIELDS[kind]:
        if spec.required:
            missing = frame.filter(pl.col(spec.name).is_null() & ~pl.col(ROW_COLUMN).is_in(bad_rows))
            if missing.height:
                label = mapping.get(spec.name, spec.name)
                rejects.append(rejects_for(missing[ROW_COLUMN], label, "required value missing"))
    rejected = pl.concat(rejects) if rejects else pl.DataFrame(schema=REJECT_SCHEMA)
    if rejected.height:
        frame = frame.filter(~pl.col(ROW_COLUMN).is_in(rejected[ROW_COLUMN].unique().implode()))
    return frame, rejected


def _dtype(type_: str) -> pl.DataType:
    return {
        TEXT: pl.String(),
        INT: pl.Int64(),
        FLOAT: pl.Float64(),
        MONEY: pl.Int64(),
        DATE: pl.Date(),
        DATETIME: pl.Datetime("us", "UTC"),
        BOOL: pl.Boolean(),
        JSON: pl.String(),
    }[type_]
