"""Raw signals from product usage: every window, bucket edge and aggregation against a plain
recomputation of the same events, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from crmctl.db.engine import Database
from crmctl.db.models import Account, Contract
from crmctl.health.model import parse_model
from crmctl.health.scoring import _accounts
from crmctl.health.signals import EARLIEST, Window, _Buckets, raw_signals
from tests.health.fixtures import AS_OF, TENANT, add, at, usage

MODEL = """\
name = "windows"
rollup = "average"

[bands]
red = { min = 0, max = 40 }
amber = { min = 40, max = 70 }
green = { min = 70, max = 100 }

[signals.ever_logins]
source = "product_usage"
events = ["login"]
aggregation = "count"
window_days = 0
weight = 1

[signals.week_volume]
source = "product_usage"
events = ["api_call", "data_volume_mb"]
aggregation = "sum"
window_days = 7
weight = 1

[signals.fortnight_trend]
source = "product_usage"
events = ["login", "api_call"]
aggregation = "trend"
window_days = 14
weight = 1

[signals.quarter_features]
source = "product_usage"
events = ["feature_used", "integration_connected"]
aggregation = "distinct_features"
window_days = 45
weight = 1

[signals.month_adoption]
source = "product_usage"
events = ["feature_used"]
aggregation = "entitled_feature_share"
window_days = 30
weight = 1

[segments.all]
otherwise = true
"""

# days before the end of the as-of day: on every cut (7, 14, 28, 30, 45) and just either side
DAYS = [
    0.25,
    6.99,
    7.0,
    7.01,
    13.99,
    14.0,
    14.01,
    20.0,
    27.99,
    28.0,
    28.01,
    30.0,
    30.01,
    44.99,
    45.0,
    45.01,
    400.0,
]
EVENTS = [
    ("login", None, 1.0),
    ("api_call", None, 3.0),
    ("data_volume_mb", None, 2.5),
    ("feature_used", "reports", 1.0),
    ("feature_used", "alerts", 1.0),
    ("integration_connected", "slack", 1.0),
    ("integration_connected", "crm, sales", 1.0),  # a comma in a name is not a list separator
]
ENTITLED = ["alerts", "api", "reports", "sso"]


def test_buckets_cut_the_time_axis_at_every_window() -> None:
    model = parse_model(MODEL)
    buckets = _Buckets.of(list(model.signals))
    assert buckets.days == (7, 14, 28, 30, 45) and buckets.all_history
    window = Window(as_of=AS_OF, end=at(0), sqlite=False)
    ranges = buckets.ranges(window)
    assert [k for k, _, _ in ranges] == [0, 1, 2, 3, 4, 5]
    assert ranges[0] == (0, at(7), at(0)) and ranges[-1] == (5, EARLIEST, at(45))
    assert all(ranges[i][1] == ranges[i + 1][2] for i in range(len(ranges) - 1))  # no gaps
    assert buckets.span(0) is None  # all history: every bucket
    assert buckets.span(7) == (0, 0)
    assert buckets.span(30) == (0, 3)
    assert buckets.span(28, after_days=14) == (2, 2)  # the trend's previous window
    no_history = _Buckets.of([s for s in model.signals if s.window_days])
    assert not no_history.all_history and no_history.span(45) is None


def _expected(events: pl.DataFrame, accounts: list[int]) -> pl.DataFrame:
    def window(days: float, after: float = 0.0) -> pl.Expr:
        inside = pl.col("days_before") > after
        return inside & (pl.col("days_before") <= days) if days else inside

    def is_event(*names: str) -> pl.Expr:
        return pl.col("event").is_in(list(names))

    now = pl.col("quantity").filter(window(14) & is_event("login", "api_call")).sum()
    before = pl.col("quantity").filter(window(28, 14) & is_event("login", "api_call")).sum()
    used = pl.col("feature").filter(window(30) & is_event("feature_used")).unique()
    grouped = events.group_by("account_id").agg(
        is_event("login").sum().cast(pl.Float64).alias("ever_logins"),
        pl.col("quantity")
        .filter(window(7) & is_event("api_call", "data_volume_mb"))
        .sum()
        .alias("week_volume"),
        pl.when(before > 0).then((now - before) / before).otherwise(None).alias("fortnight_trend"),
        pl.col("feature")
        .filter(window(45) & is_event("feature_used", "integration_connected"))
        .n_unique()
        .cast(pl.Float64)
        .alias("quarter_features"),
        (used.is_in(ENTITLED).sum() / len(ENTITLED)).alias("month_adoption"),
    )
    everyone = pl.DataFrame({"account_id": accounts})
    return (
        everyone.join(grouped, on="account_id", how="left")
        .with_columns(
            pl.col("ever_logins", "week_volume", "quarter_features").fill_null(0.0),
            pl.col("month_adoption").fill_null(0.0),
        )
        .with_columns(pl.exclude("account_id").cast(pl.Float64).round(6))
        .sort("account_id")
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_usage_signals_match_a_plain_recomputation(db: Database, seed: int) -> None:
    ids: list[int] = []
    with db.session(write=True) as session:
        for n in range(3):
            account = Account(tenant_id=TENANT, name=f"Windows {n}", segment="smb", external_id=f"W-{n}")
            session.add(account)
            session.flush()
            ids.append(account.id or 0)
            session.add(
                Contract(
                    tenant_id=TENANT,
                    account_id=account.id or 0,
                    start_date=AS_OF - timedelta(days=100),
                    end_date=AS_OF + timedelta(days=100),
                    arr_cents=100_000,
                    contract_type="annual",
                    entitlements={"features": ENTITLED},
                )
            )
    rows = []
    # account 0 and 1 get events on every edge (a different mix each), account 2 none at all
    for i, days in enumerate(DAYS):
        for j, (event, feature, quantity) in enumerate(EVENTS):
            for k, account_id in enumerate(ids[:2]):
                if (i + j + k + seed) % 3 == 0:
                    continue
                rows.append((account_id, days, event, feature, quantity * (1 + i % 4)))
    add(db, *(usage(a, e, q, d, f) for a, d, e, f, q in rows))
    events = pl.DataFrame(
        rows, schema=["account_id", "days_before", "event", "feature", "quantity"], orient="row"
    )
    model = parse_model(MODEL)
    with db.session() as session:
        window = Window.of(AS_OF, session)
        accounts = _accounts(session, window)
        raw = raw_signals(session, model, accounts, window)
    got = raw.select("account_id", *sorted(s.name for s in model.signals)).sort("account_id")
    want = _expected(events, ids).select(got.columns)
    assert got.to_dicts() == want.to_dicts()
