"""Currency conversion for reports: rates from the ``exchange_rate`` table or a CSV file.

Rule: an amount is converted with the latest rate dated on or before its *rate day*: the deal's
close date, or the report's as-of date when the close date is later or unknown. So history is never
converted at today's rate, and a report as of a past date uses only rates known then. Amounts are
aggregated per (currency, rate day) in the database first; only those sums are converted here.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from sqlmodel import Session

from crmctl.db import bulk
from crmctl.db.engine import tenant_of
from crmctl.errors import InputError

RATE_SCHEMA = {"base": pl.String, "currency": pl.String, "day": pl.Date, "rate": pl.Float64}


def read_rates(session: Session, target: str) -> pl.DataFrame:
    """The tenant's stored rates that involve ``target`` (either direction)."""
    frame = bulk.read_frame(
        session,
        "SELECT base, currency, day, rate FROM exchange_rate "
        "WHERE tenant_id = :t AND (base = :cur OR currency = :cur)",
        {"t": tenant_of(session), "cur": target},
    )
    return _typed(frame)


def load_rates_file(path: Path) -> pl.DataFrame:
    """A CSV with columns base,currency,day,rate (1 ``currency`` = ``rate`` ``base`` on ``day``)."""
    try:
        frame = pl.read_csv(path, infer_schema=False)
    except FileNotFoundError as exc:
        raise InputError(f"The rates file {path} does not exist.") from exc
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as exc:
        raise InputError(f"The rates file {path} is not a readable CSV file.") from exc
    missing = [c for c in RATE_SCHEMA if c not in frame.columns]
    if missing:
        raise InputError(f"The rates file {path} lacks the column(s): {', '.join(missing)}.")
    try:
        typed = frame.select(
            pl.col("base").str.to_uppercase(),
            pl.col("currency").str.to_uppercase(),
            pl.col("day").str.to_date("%Y-%m-%d"),
            pl.col("rate").cast(pl.Float64),
        )
    except pl.exceptions.InvalidOperationError as exc:
        raise InputError(
            f"The rates file {path} has a bad value: days must be YYYY-MM-DD and rates numbers."
        ) from exc
    bad = typed.with_row_index("row", offset=2).filter(
        pl.any_horizontal(pl.all().is_null()) | (pl.col("rate") <= 0)
    )
    if bad.height:
        raise InputError(f"The rates file {path} has an empty or non-positive value on row {bad['row'][0]}.")
    return typed


def _typed(frame: pl.DataFrame) -> pl.DataFrame:
    if frame.height == 0:
        return pl.DataFrame(schema=RATE_SCHEMA)
    return frame.with_columns(day=as_date(frame, "day"), rate=pl.col("rate").cast(pl.Float64))


def as_date(frame: pl.DataFrame, column: str) -> pl.Expr:
    """``column`` of ``frame`` as dates: SQLite hands them back as ISO text, PostgreSQL as dates."""
    if frame.schema[column] == pl.String:
        return pl.col(column).str.slice(0, 10).str.to_date("%Y-%m-%d")
    return pl.col(column).cast(pl.Date)


def factors(rates: pl.DataFrame, target: str) -> pl.DataFrame:
    """(currency, day, factor): multiply an amount in ``currency`` by factor to get ``target``.

    A direct quote (base = target) wins over the inverse of a reverse quote on the same day."""
    direct = rates.filter(pl.col("base") == target).select("currency", "day", factor="rate", pref=pl.lit(0))
    inverse = rates.filter(pl.col("currency") == target, pl.col("base") != target).select(
        currency="base", day="day", factor=1.0 / pl.col("rate"), pref=pl.lit(1)
    )
    return (
        pl.concat([direct, inverse])
        .sort("currency", "day", "pref")
        .unique(["currency", "day"], keep="first", maintain_order=True)
        .drop("pref")
        .sort("currency", "day")
    )


def convert(
    frame: pl.DataFrame,
    target: str,
    rates: pl.DataFrame,
    *,
    amounts: dict[str, str],
    currency: str = "currency",
    rate_day: str = "rate_day",
) -> pl.DataFrame:
    """Add converted integer-cent columns: ``amounts`` maps source column -> new column.

    Raises a one-sentence error naming the currency and day when a rate is missing."""
    if frame.height == 0:
        return frame.with_columns(pl.lit(0, pl.Int64).alias(new) for new in amounts.values())
    frame = frame.with_columns(
        as_date(frame, rate_day).alias(rate_day),
        pl.col(currency).fill_null(target),
    )
    foreign = frame.filter(pl.col(currency) != target).with_row_index("_row")
    table = factors(rates, target)
    if foreign.height:
        joined = foreign.sort(rate_day).join_asof(
            table,
            left_on=rate_day,
            right_on="day",
            by_left=currency,
            by_right="currency",
            strategy="backward",
            check_sortedness=False,
        )
        missing = joined.filter(pl.col("factor").is_null()).sort(currency, rate_day)
        if missing.height:
            raise InputError(
                f"There is no {missing[currency][0]} to {target} exchange rate on or before "
                f"{missing[rate_day][0].isoformat()}.",
                hint="Add rates to the exchange_rate table or pass --rates FILE (base,currency,day,rate).",
            )
        factor = joined.sort("_row")["factor"]
    else:
        factor = pl.Series("factor", [], dtype=pl.Float64)
    domestic = frame.filter(pl.col(currency) == target).with_columns(factor=pl.lit(1.0))
    foreign = foreign.drop("_row").with_columns(factor=factor)
    both = pl.concat([domestic, foreign], how="vertical_relaxed")
    return both.with_columns(
        (pl.col(src).fill_null(0).cast(pl.Float64) * pl.col("factor")).round(0).cast(pl.Int64).alias(new)
        for src, new in amounts.items()
    ).drop("factor")
