"""The seeded customer graph as CSV files in crmctl's own column names, ready for `crmctl import`.

Accounts across segments (enterprise, mid-market, SMB), industries and parent/child groups;
contacts at those accounts; 18 months of deals with their stage histories on the default pipeline;
interactions (email, call, meeting, note, NPS and CSAT responses); weekly product usage whose trend
follows each account's pattern (healthy, declining, churning); contracts (whose renewals the
importer creates) and support tickets with priorities and sentiment.

Everything is a polars expression over the row index (``crmctl.demo.rng``), so the files are the
same for the same seed and as-of date, and the big tables are written in chunks with bounded memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import polars as pl

from crmctl.demo.people import email_local_expr, people_frame
from crmctl.demo.rng import integer, pick, uniform, weighted, words
from crmctl.importers.graph import DEFAULT_PIPELINE, DEFAULT_STAGES

DEMO_SOURCE = "demo"
CHUNK_ROWS = 500_000
HISTORY_DAYS = 540  # 18 months

WON, LOST = 4, 5

PREFIXES = words(
    "Northwind Contoso Globex Initech Umbrella Stark Wayne Acme Hooli Vandelay Soylent Cyberdyne Tyrell "
    "Wonka Aperture Massive Bluewater Redrock Silverlake Ironbridge Greenfield Brightpath Clearview "
    "Summit Pinnacle Horizon Evergreen Keystone Lighthouse Meridian Nimbus Orbit Pioneer Quantum "
    "Riverside Sterling Trident Vertex Willow Zenith"
)
SUFFIXES = words(
    "Analytics Logistics Health Labs Systems Foods Energy Robotics Media Capital Software Retail Motors "
    "Bio Networks Studios Foundry Works Dynamics Solutions Partners Industries Holdings Pharma Security "
    "Cloud Finance Travel Learning Insurance"
)
LEGAL_FORMS = {"US": "Inc", "CA": "Inc", "GB": "Ltd", "DE": "GmbH", "FR": "SAS"}
TLDS = {"US": ".com", "CA": ".ca", "GB": ".co.uk", "DE": ".de", "FR": ".fr"}
CURRENCIES = {"US": "USD", "CA": "USD", "GB": "GBP", "DE": "EUR", "FR": "EUR"}
INDUSTRIES = (
    "Software",
    "Financial Services",
    "Healthcare",
    "Manufacturing",
    "Retail",
    "Education",
    "Logistics",
    "Media",
    "Energy",
    "Professional Services",
)
REPS = ("Alex Morgan", "Sam Patel", "Jordan Lee", "Casey Nguyen", "Riley Schmidt", "Taylor Brooks")
FREE_MAIL = ("gmail.com", "outlook.com", "yahoo.com")
FEATURES = ("reports", "dashboards", "api", "sso", "automations", "integrations", "exports")
ENTITLEMENT_FEATURES = {
    "smb": '["reports", "dashboards"]',
    "mid-market": '["reports", "dashboards", "api"]',
    "enterprise": '["reports", "dashboards", "api", "sso", "automations"]',
}
SUBJECTS = {
    "email": ("Following up", "Pricing question", "Renewal timeline", "Quick question", "Intro"),
    "call": ("Discovery call", "Check-in call", "Escalation call", "QBR prep"),
    "meeting": ("Quarterly business review", "Onboarding session", "Demo", "Roadmap review"),
    "note": ("Account note", "Champion changed role", "Budget confirmed", "Risk flagged"),
    "nps": ("NPS survey",),
    "csat": ("CSAT survey",),
}
TICKET_SUBJECTS = (
    "Cannot log in",
    "Export is slow",
    "Billing question",
    "API returns 500",
    "Feature request",
    "SSO misconfigured",
    "Data import failed",
    "Dashboard not loading",
)


@dataclass(frozen=True)
class GraphSizes:
    """How many rows of each kind to generate (stage changes and usage are approximate targets)."""

    accounts: int
    contacts: int
    deals: int
    stage_changes: int
    interactions: int
    tickets: int
    usage_weeks: int = 26

    @classmethod
    def for_people(cls, people: int) -> GraphSizes:
        """The demo's proportions for ``people`` contacts."""
        people = max(people, 20)
        accounts = max(10, people // 5)
        deals = accounts * 3
        return cls(
            accounts=accounts,
            contacts=people,
            deals=deals,
            stage_changes=deals * 3,
            interactions=people * 8,
            tickets=people // 2,
        )


@dataclass
class GraphFiles:
    """The files written, in import order (kind -> path), and their row counts."""

    directory: Path
    paths: dict[str, Path] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)


IMPORT_ORDER = (
    "accounts",
    "contacts",
    "deals",
    "stage-changes",
    "interactions",
    "product-usage",
    "contracts",
    "tickets",
)


def write_graph_files(
    out_dir: Path, sizes: GraphSizes, *, seed: int, as_of: date, chunk_rows: int = CHUNK_ROWS
) -> GraphFiles:
    """Generate the graph and write one CSV per kind into ``out_dir`` (created if needed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = GraphFiles(directory=out_dir)
    anchor = datetime.combine(as_of, time(12, 0), tzinfo=UTC)

    accounts = _accounts(sizes.accounts, seed)
    _write(files, "accounts", accounts.select(ACCOUNT_COLUMNS))
    contacts = _contacts(sizes.contacts, accounts, seed, anchor)
    _write(files, "contacts", contacts.select(CONTACT_COLUMNS))
    deals = _deals(sizes.deals, contacts, seed, anchor)
    _write(files, "deals", deals.select(DEAL_COLUMNS))
    pad = max(0.0, sizes.stage_changes / max(sizes.deals, 1) - _mean_path(deals))
    _write_chunked(
        files,
        "stage-changes",
        deals.height,
        max(1, chunk_rows // 6),
        lambda start, n: _stage_changes(deals.slice(start, n), seed, pad),
    )
    people = contacts.select("contact", "external_id", "email", "account", "pattern", "owner", "via_email")
    _write_chunked(
        files,
        "interactions",
        sizes.interactions,
        chunk_rows,
        lambda start, n: _interactions(start, n, people, seed, anchor),
    )
    _write(files, "product-usage", _usage(accounts, seed, anchor, sizes.usage_weeks))
    _write(files, "contracts", _contracts(accounts, seed, as_of))
    _write(files, "tickets", _tickets(sizes.tickets, people, seed, anchor))
    return files


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _file_name(kind: str) -> str:
    return f"{kind.replace('-', '_')}.csv"


def _write(files: GraphFiles, kind: str, frame: pl.DataFrame) -> None:
    path = files.directory / _file_name(kind)
    _csv_ready(frame).write_csv(path)
    files.paths[kind] = path
    files.rows[kind] = frame.height


def _write_chunked(
    files: GraphFiles, kind: str, total: int, chunk: int, build: Callable[[int, int], pl.DataFrame]
) -> None:
    path = files.directory / _file_name(kind)
    rows = 0
    with path.open("wb") as fh:
        for start in range(0, max(total, 1), chunk):
            frame = build(start, min(chunk, total - start)) if total else build(0, 0)
            _csv_ready(frame).write_csv(fh, include_header=start == 0)
            rows += frame.height
    files.paths[kind] = path
    files.rows[kind] = rows


def _csv_ready(frame: pl.DataFrame) -> pl.DataFrame:
    """Timestamps as ISO 8601 with an explicit UTC offset; everything else as polars writes it."""
    exprs = [
        pl.col(name).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        for name, dtype in frame.schema.items()
        if isinstance(dtype, pl.Datetime)
    ]
    return frame.with_columns(exprs) if exprs else frame


def _days_before(anchor: datetime, days: pl.Expr) -> pl.Expr:
    return pl.lit(anchor) - pl.duration(seconds=(days * 86_400).cast(pl.Int64))


# ---------------------------------------------------------------------------------------------
# Accounts
# ---------------------------------------------------------------------------------------------

ACCOUNT_COLUMNS = (
    "external_id",
    "name",
    "domain",
    "industry",
    "segment",
    "plan",
    "country",
    "employees",
    "parent_external_id",
    "owner",
)


def _accounts(count: int, seed: int) -> pl.DataFrame:
    idx = pl.col("account")
    combos = len(PREFIXES) * len(SUFFIXES)
    n_parents = max(1, count // 50)
    # A bijection of the index onto name combinations, shuffled by the seed.
    perm = (idx * 7_919 + seed * 31) % combos
    generation = idx // combos
    frame = pl.DataFrame({"account": pl.int_range(0, count, dtype=pl.Int64, eager=True)})
    frame = frame.with_columns(
        pl.format(
            "{} {}",
            (perm % len(PREFIXES)).replace_strict(dict(enumerate(PREFIXES)), return_dtype=pl.String),
            (perm // len(PREFIXES)).replace_strict(dict(enumerate(SUFFIXES)), return_dtype=pl.String),
        ).alias("base_name"),
        generation.alias("generation"),
        weighted(uniform(seed, 101, idx), tuple(LEGAL_FORMS_WEIGHTS)).alias("country"),
        pl.when(idx < n_parents)
        .then(pl.lit("enterprise"))
        .otherwise(weighted(uniform(seed, 102, idx), (("enterprise", 8), ("mid-market", 30), ("smb", 62))))
        .alias("segment"),
        pick(uniform(seed, 103, idx), INDUSTRIES).alias("industry"),
        weighted(uniform(seed, 104, idx), (("healthy", 60), ("declining", 25), ("churning", 15))).alias(
            "pattern"
        ),
        (uniform(seed, 105, idx) < 0.7).alias("is_customer"),
        pick(uniform(seed, 106, idx), REPS).alias("owner"),
    )
    suffix = (
        pl.when(pl.col("generation") > 0)
        .then(pl.format(" {}", pl.col("generation") + 1))
        .otherwise(pl.lit(""))
    )
    slug = pl.col("base_name").str.to_lowercase().str.replace_all(" ", "")
    u_emp = uniform(seed, 107, idx)
    child = (idx >= n_parents) & (uniform(seed, 108, idx) < 0.06)
    return frame.with_columns(
        pl.format("A{}", idx.cast(pl.String).str.zfill(6)).alias("external_id"),
        pl.format(
            "{}{} {}", pl.col("base_name"), suffix, pl.col("country").replace_strict(LEGAL_FORMS)
        ).alias("name"),
        pl.format(
            "{}{}{}",
            slug,
            pl.when(pl.col("generation") > 0)
            .then(pl.col("generation").cast(pl.String))
            .otherwise(pl.lit("")),
            pl.col("country").replace_strict(TLDS),
        ).alias("domain"),
        pl.col("segment")
        .replace_strict({"enterprise": "enterprise", "mid-market": "business", "smb": "starter"})
        .alias("plan"),
        pl.when(pl.col("segment") == "enterprise")
        .then(integer(u_emp, 1_000, 50_000))
        .when(pl.col("segment") == "mid-market")
        .then(integer(u_emp, 100, 999))
        .otherwise(integer(u_emp, 5, 99))
        .alias("employees"),
        pl.when(child)
        .then(
            pl.format("A{}", integer(uniform(seed, 109, idx), 0, n_parents - 1).cast(pl.String).str.zfill(6))
        )
        .otherwise(None)
        .alias("parent_external_id"),
    )


LEGAL_FORMS_WEIGHTS = (("US", 45.0), ("GB", 20.0), ("DE", 15.0), ("FR", 10.0), ("CA", 10.0))


# ---------------------------------------------------------------------------------------------
# Contacts
# ---------------------------------------------------------------------------------------------

CONTACT_COLUMNS = (
    "external_id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "title",
    "company",
    "account_external_id",
    "account_domain",
    "country",
    "lifecycle_stage",
    "owner",
    "lawful_basis",
    "source",
    "created_at",
)


def _contacts(count: int, accounts: pl.DataFrame, seed: int, anchor: datetime) -> pl.DataFrame:
    people = people_frame(count, seed, salt=200).rename({"person": "contact"})
    idx = pl.col("contact")
    n_accounts = accounts.height
    people = people.with_columns(
        integer(uniform(seed, 210, idx), 0, n_accounts - 1).alias("account"),
        integer(uniform(seed, 211, idx), 0, 2).alias("style"),
        (uniform(seed, 212, idx) < 0.08).alias("free_mail"),
        pick(uniform(seed, 213, idx), FREE_MAIL).alias("free_domain"),
        (uniform(seed, 214, idx) < 0.2).alias("by_domain"),  # reference the account by domain only
        (uniform(seed, 215, idx) < 0.15).alias("via_email"),  # activity references the email only
        uniform(seed, 216, idx).alias("u_stage"),
        pick(uniform(seed, 217, idx), ("web", "event", "partner", "outbound", "referral")).alias("source"),
        (uniform(seed, 218, idx) * HISTORY_DAYS).alias("age_days"),
    )
    joined = people.join(
        accounts.select(
            pl.col("account"),
            pl.col("external_id").alias("acct_external_id"),
            pl.col("domain").alias("acct_domain"),
            pl.col("name").alias("company"),
            pl.col("pattern"),
            pl.col("is_customer"),
            pl.col("owner"),
        ),
        on="account",
        how="left",
    ).sort("contact")
    local = email_local_expr(pl.col("first_name"), pl.col("last_name"), pl.col("style"))
    email = pl.format(
        "{}@{}",
        local,
        pl.when(pl.col("free_mail")).then(pl.col("free_domain")).otherwise(pl.col("acct_domain")),
    )
    joined = joined.with_columns(email.alias("email0"))
    # Two people with the same name at the same company get distinct addresses (jane.doe2@…).
    dup = pl.col("email0").cum_count().over("email0") - 1
    joined = joined.with_columns(
        pl.when(dup > 0)
        .then(pl.col("email0").str.replace("@", pl.format("{}@", dup + 1), literal=True))
        .otherwise(pl.col("email0"))
        .alias("email")
    )
    return joined.with_columns(
        pl.format("C{}", idx.cast(pl.String).str.zfill(7)).alias("external_id"),
        pl.when(pl.col("has_phone")).then(pl.col("phone")).otherwise(None).alias("phone"),
        pl.when(pl.col("by_domain"))
        .then(None)
        .otherwise(pl.col("acct_external_id"))
        .alias("account_external_id"),
        pl.when(pl.col("by_domain")).then(pl.col("acct_domain")).otherwise(None).alias("account_domain"),
        pl.when(pl.col("is_customer"))
        .then(pl.lit("customer"))
        .otherwise(weighted(pl.col("u_stage"), (("lead", 50), ("mql", 20), ("sql", 15), ("opportunity", 15))))
        .alias("lifecycle_stage"),
        pl.when(pl.col("is_customer"))
        .then(pl.lit("contract"))
        .otherwise(pl.lit("legitimate_interest"))
        .alias("lawful_basis"),
        _days_before(anchor, pl.col("age_days") + 30).alias("created_at"),
    )


# ---------------------------------------------------------------------------------------------
# Deals and stage history
# ---------------------------------------------------------------------------------------------

DEAL_COLUMNS = (
    "external_id",
    "name",
    "account_external_id",
    "account_domain",
    "contact_external_id",
    "contact_email",
    "pipeline",
    "stage",
    "amount",
    "currency",
    "close_date",
    "owner",
    "forecast_category",
    "source",
    "created_at",
    "closed_at",
)
STAGE_NAMES = {i: s[0] for i, s in enumerate(DEFAULT_STAGES)}


def _deals(count: int, contacts: pl.DataFrame, seed: int, anchor: datetime) -> pl.DataFrame:
    idx = pl.col("deal")
    frame = pl.DataFrame({"deal": pl.int_range(0, count, dtype=pl.Int64, eager=True)}).with_columns(
        integer(uniform(seed, 301, idx), 0, contacts.height - 1).alias("contact"),
        (uniform(seed, 302, idx) * HISTORY_DAYS).alias("age_days"),
        uniform(seed, 303, idx).alias("u_outcome"),
        uniform(seed, 304, idx).alias("u_stage"),
        integer(uniform(seed, 305, idx), 14, 180).alias("cycle_days"),
        uniform(seed, 306, idx).alias("u_amount"),
        uniform(seed, 307, idx).alias("u_ref"),
        integer(uniform(seed, 308, idx), 7, 120).alias("close_in_days"),
        pick(uniform(seed, 309, idx), ("New business", "Expansion", "Renewal")).alias("deal_type"),
    )
    people = contacts.select(
        "contact",
        pl.col("external_id").alias("contact_ext"),
        pl.col("email").alias("contact_mail"),
        pl.col("acct_external_id"),
        pl.col("acct_domain"),
        pl.col("company"),
        pl.col("country"),
        pl.col("owner"),
        pl.col("source"),
    )
    frame = frame.join(people, on="contact", how="left").sort("deal")
    old = pl.col("age_days") > 120
    outcome = (
        pl.when(old)
        .then(weighted(pl.col("u_outcome"), (("won", 30), ("lost", 45), ("open", 25))))
        .otherwise(weighted(pl.col("u_outcome"), (("won", 12), ("lost", 18), ("open", 70))))
    )
    frame = frame.with_columns(
        outcome.alias("outcome"), integer(pl.col("u_stage") ** 1.5, 0, 3).alias("reached")
    )
    created = _days_before(anchor, pl.col("age_days"))
    closed_days = pl.min_horizontal(pl.col("cycle_days"), pl.col("age_days").floor().cast(pl.Int64))
    frame = frame.with_columns(
        created.alias("created_at"),
        pl.when(pl.col("outcome") == "won")
        .then(WON)
        .when(pl.col("outcome") == "lost")
        .then(LOST)
        .otherwise(pl.col("reached"))
        .alias("stage_index"),
        pl.when(pl.col("outcome") == "won")
        .then(5)
        .when(pl.col("outcome") == "lost")
        .then(pl.col("reached") + 2)
        .otherwise(pl.col("reached") + 1)
        .cast(pl.Int64)
        .alias("path_len"),
        pl.when(pl.col("outcome") == "open")
        .then(None)
        .otherwise(created + pl.duration(days=closed_days))
        .alias("closed_at"),
    )
    amount = ((pl.lit(10.0) + pl.col("u_amount") ** 2 * 1_500).round(0) * 100).cast(pl.Int64)
    return frame.with_columns(
        pl.format("D{}", idx.cast(pl.String).str.zfill(7)).alias("external_id"),
        pl.format("{} – {}", pl.col("company"), pl.col("deal_type")).alias("name"),
        pl.when(pl.col("u_ref") < 0.2)
        .then(None)
        .otherwise(pl.col("acct_external_id"))
        .alias("account_external_id"),
        pl.when(pl.col("u_ref") < 0.2).then(pl.col("acct_domain")).otherwise(None).alias("account_domain"),
        pl.when(pl.col("u_ref") < 0.7)
        .then(pl.col("contact_ext"))
        .otherwise(None)
        .alias("contact_external_id"),
        pl.when((pl.col("u_ref") >= 0.7) & (pl.col("u_ref") < 0.85))
        .then(pl.col("contact_mail"))
        .otherwise(None)
        .alias("contact_email"),
        pl.lit(DEFAULT_PIPELINE).alias("pipeline"),
        pl.col("stage_index").replace_strict(STAGE_NAMES, return_dtype=pl.String).alias("stage"),
        amount.alias("amount"),
        pl.col("country").replace_strict(CURRENCIES).alias("currency"),
        pl.when(pl.col("outcome") == "open")
        .then(pl.lit(anchor.date()) + pl.duration(days=pl.col("close_in_days")))
        .otherwise(pl.col("closed_at").dt.date())
        .alias("close_date"),
        pl.when(pl.col("outcome") == "won")
        .then(pl.lit("closed"))
        .when(pl.col("outcome") == "lost")
        .then(pl.lit("omitted"))
        .otherwise(
            pl.col("stage_index").replace_strict(
                {0: "pipeline", 1: "pipeline", 2: "best_case", 3: "commit"}, return_dtype=pl.String
            )
        )
        .alias("forecast_category"),
    )


def _mean_path(deals: pl.DataFrame) -> float:
    return float(deals["path_len"].mean() or 0.0) if deals.height else 0.0


def _stage_changes(deals: pl.DataFrame, seed: int, pad: float) -> pl.DataFrame:
    """Each deal's walk through the stages, plus amount updates (to reach a benchmark's volume)."""
    base = deals.select(
        "deal",
        "external_id",
        "created_at",
        "closed_at",
        "path_len",
        "outcome",
        "amount",
        "currency",
        "owner",
        "cycle_days",
    )
    steps = base.with_columns(pl.int_ranges(0, pl.col("path_len")).alias("step")).explode("step")
    last = pl.col("step") == pl.col("path_len") - 1
    span_seconds = pl.col("cycle_days") * 86_400
    spacing = (span_seconds / pl.max_horizontal(pl.col("path_len") - 1, 1)).cast(pl.Int64)
    moves = steps.with_columns(
        pl.format("{}-{}", pl.col("external_id"), pl.col("step")).alias("change_id"),
        pl.when(last & (pl.col("outcome") == "lost")).then(LOST).otherwise(pl.col("step")).alias("to_index"),
        pl.when(pl.col("step") == 0).then(None).otherwise(pl.col("step") - 1).alias("from_index"),
        pl.when(last & pl.col("closed_at").is_not_null())
        .then(pl.col("closed_at"))
        .otherwise(pl.col("created_at") + pl.duration(seconds=pl.col("step") * spacing))
        .alias("changed_at"),
        pl.col("amount").alias("new_amount"),
    )
    parts = [moves]
    if pad > 0:
        extra = (uniform(seed, 401, pl.col("deal")) * pad * 2).round().cast(pl.Int64)
        pads = (
            base.with_columns(extra.alias("n_extra"))
            .filter(pl.col("n_extra") > 0)
            .with_columns(pl.int_ranges(0, pl.col("n_extra")).alias("step"))
            .explode("step")
        )
        # Amount revisions while the deal is still in its first stage (an hour apart).
        parts.append(
            pads.with_columns(
                pl.format("{}-a{}", pl.col("external_id"), pl.col("step")).alias("change_id"),
                pl.lit(0, dtype=pl.Int64).alias("to_index"),
                pl.lit(0, dtype=pl.Int64).alias("from_index"),
                (pl.col("created_at") + pl.duration(hours=pl.col("step") + 1)).alias("changed_at"),
                ((pl.col("amount") * (1 + (pl.col("step") + 1) * 0.01)) // 100 * 100)
                .cast(pl.Int64)
                .alias("new_amount"),
            )
        )
    columns = [
        "change_id",
        "external_id",
        "changed_at",
        "from_index",
        "to_index",
        "new_amount",
        "currency",
        "owner",
    ]
    out = pl.concat([p.select(columns) for p in parts]).sort("external_id", "changed_at", maintain_order=True)
    return out.select(
        pl.col("change_id").alias("external_id"),
        pl.col("external_id").alias("deal_external_id"),
        "changed_at",
        pl.col("from_index")
        .replace_strict(STAGE_NAMES, return_dtype=pl.String, default=None)
        .alias("from_stage"),
        pl.col("to_index").replace_strict(STAGE_NAMES, return_dtype=pl.String).alias("to_stage"),
        pl.col("new_amount").alias("amount"),
        "currency",
        pl.col("owner").alias("actor"),
    )


# ---------------------------------------------------------------------------------------------
# Activity
# ---------------------------------------------------------------------------------------------


def _activity_days_ago(pattern: pl.Expr, u: pl.Expr) -> pl.Expr:
    """How long ago an event happened, by the account's pattern: healthy accounts are active all
    along, declining ones less and less, churning ones went quiet three months ago."""
    return (
        pl.when(pattern == "healthy")
        .then(u * HISTORY_DAYS)
        .when(pattern == "declining")
        .then(u.sqrt() * HISTORY_DAYS)
        .otherwise(90 + u * (HISTORY_DAYS - 90))
    )


def _interactions(start: int, count: int, people: pl.DataFrame, seed: int, anchor: datetime) -> pl.DataFrame:
    idx = pl.col("row")
    frame = pl.DataFrame(
        {"row": pl.int_range(start, start + count, dtype=pl.Int64, eager=True)}
    ).with_columns(
        integer(uniform(seed, 501, idx), 0, people.height - 1).alias("contact"),
        weighted(
            uniform(seed, 502, idx),
            (("email", 45), ("call", 15), ("meeting", 12), ("note", 10), ("csat", 5), ("nps", 3)),
        ).alias("kind"),
        uniform(seed, 503, idx).alias("u_when"),
        uniform(seed, 504, idx).alias("u_score"),
        uniform(seed, 505, idx).alias("u_dir"),
        uniform(seed, 506, idx).alias("u_subject"),
    )
    frame = frame.join(people, on="contact", how="left").sort("row")
    pattern = pl.col("pattern")
    nps = (
        pl.when(pattern == "healthy")
        .then(integer(pl.col("u_score"), 7, 10))
        .when(pattern == "declining")
        .then(integer(pl.col("u_score"), 4, 8))
        .otherwise(integer(pl.col("u_score"), 0, 6))
    )
    csat = (
        pl.when(pattern == "churning")
        .then(integer(pl.col("u_score"), 1, 3))
        .otherwise(integer(pl.col("u_score"), 3, 5))
    )
    subject = pl.when(pl.col("kind") == "email").then(pick(pl.col("u_subject"), SUBJECTS["email"]))
    for kind in ("call", "meeting", "note", "nps", "csat"):
        subject = subject.when(pl.col("kind") == kind).then(pick(pl.col("u_subject"), SUBJECTS[kind]))
    return frame.select(
        pl.format("I{}", idx.cast(pl.String).str.zfill(8)).alias("external_id"),
        pl.when(pl.col("via_email")).then(None).otherwise(pl.col("external_id")).alias("contact_external_id"),
        pl.when(pl.col("via_email")).then(pl.col("email")).otherwise(None).alias("contact_email"),
        "kind",
        _days_before(anchor, _activity_days_ago(pattern, pl.col("u_when"))).alias("occurred_at"),
        pl.col("kind")
        .replace_strict(
            {
                "email": "email",
                "call": "phone",
                "meeting": "video",
                "note": "crm",
                "nps": "survey",
                "csat": "survey",
            },
            return_dtype=pl.String,
        )
        .alias("channel"),
        pl.when(pl.col("kind").is_in(["nps", "csat"]))
        .then(pl.lit("inbound"))
        .when(pl.col("kind") == "note")
        .then(None)
        .otherwise(pl.when(pl.col("u_dir") < 0.6).then(pl.lit("outbound")).otherwise(pl.lit("inbound")))
        .alias("direction"),
        subject.alias("subject"),
        pl.when(pl.col("kind") == "nps")
        .then(nps)
        .when(pl.col("kind") == "csat")
        .then(csat)
        .otherwise(None)
        .alias("score"),
        pl.col("owner").alias("actor"),
    )


def _usage(accounts: pl.DataFrame, seed: int, anchor: datetime, weeks: int) -> pl.DataFrame:
    """Weekly rollups per customer account: logins, feature use and API calls that follow the
    account's pattern (flat or growing, fading, or stopping)."""
    events = pl.DataFrame({"event": ["login", "feature_used", "api_call"], "scale": [1.0, 2.5, 40.0]})
    weeks_frame = pl.DataFrame({"week": pl.int_range(0, weeks, dtype=pl.Int64, eager=True)})
    customers = accounts.filter(pl.col("is_customer")).select(
        "account", "external_id", "domain", "pattern", "employees"
    )
    grid = customers.join(weeks_frame, how="cross").join(events, how="cross")
    key = pl.col("account") * 10_000 + pl.col("week") * 10 + pl.col("scale").cast(pl.Int64) % 10
    progress = pl.col("week") / max(weeks - 1, 1)  # 0 = oldest week, 1 = this week
    trend = (
        pl.when(pl.col("pattern") == "healthy")
        .then(1.0 + 0.2 * progress)
        .when(pl.col("pattern") == "declining")
        .then(1.0 - 0.7 * progress)
        .otherwise(pl.max_horizontal(pl.lit(0.0), 1.0 - 1.6 * progress))
    )
    noise = 0.8 + 0.4 * uniform(seed, 601, key)
    seats = pl.col("employees").clip(5, 400).cast(pl.Float64)
    quantity = (seats * 0.6 * pl.col("scale") * trend * noise).round(0)
    week_start = pl.lit(anchor) - pl.duration(days=(weeks - pl.col("week")) * 7)
    return (
        grid.with_columns(quantity.alias("quantity"), week_start.alias("occurred_at"))
        .filter(pl.col("quantity") > 0)
        .sort("account", "week", "event")
        .select(
            pl.format("U{}-{}-{}", pl.col("external_id"), pl.col("week"), pl.col("event")).alias(
                "external_id"
            ),
            pl.col("external_id").alias("account_external_id"),
            "occurred_at",
            "event",
            pl.when(pl.col("event") == "feature_used")
            .then(pick(uniform(seed, 602, key), FEATURES))
            .otherwise(None)
            .alias("feature"),
            "quantity",
        )
    )


# ---------------------------------------------------------------------------------------------
# Contracts and tickets
# ---------------------------------------------------------------------------------------------


def _contracts(accounts: pl.DataFrame, seed: int, as_of: date) -> pl.DataFrame:
    """One current contract per customer account, ending between two months ago and a year ahead
    (so renewals are due across the coming quarters); churning accounts rarely auto-renew."""
    idx = pl.col("account")
    customers = accounts.filter(pl.col("is_customer"))
    arr = (
        pl.when(pl.col("segment") == "enterprise")
        .then(integer(uniform(seed, 701, idx), 100, 500) * 1_000)
        .when(pl.col("segment") == "mid-market")
        .then(integer(uniform(seed, 701, idx), 20, 99) * 1_000)
        .otherwise(integer(uniform(seed, 701, idx), 20, 199) * 100)
    )
    years = pl.when(uniform(seed, 702, idx) < 0.2).then(2).otherwise(1)
    end = pl.lit(as_of) + pl.duration(days=integer(uniform(seed, 703, idx), -60, 365))
    seats = pl.col("employees").clip(5, 400)
    entitlements = pl.concat_str(
        pl.lit('{"features": '),
        pl.col("segment").replace_strict(ENTITLEMENT_FEATURES, return_dtype=pl.String),
        pl.lit(', "seats": '),
        seats.cast(pl.String),
        pl.lit("}"),
    )
    auto_renew = (
        pl.when(pl.col("pattern") == "churning")
        .then(uniform(seed, 704, idx) < 0.1)
        .otherwise(uniform(seed, 704, idx) < 0.6)
    )
    frame = customers.with_columns(end.alias("end_date"), years.alias("years"))
    return frame.select(
        pl.format("K{}", idx.cast(pl.String).str.zfill(6)).alias("external_id"),
        pl.col("external_id").alias("account_external_id"),
        (pl.col("end_date") - pl.duration(days=365 * pl.col("years"))).alias("start_date"),
        "end_date",
        arr.alias("arr"),
        pl.col("country").replace_strict(CURRENCIES).alias("currency"),
        auto_renew.alias("auto_renew"),
        pl.when(pl.col("years") == 2)
        .then(pl.lit("multi-year"))
        .otherwise(pl.lit("annual"))
        .alias("contract_type"),
        entitlements.alias("entitlements"),
        pl.when(pl.col("end_date") < pl.lit(as_of))
        .then(pl.lit("expired"))
        .otherwise(pl.lit("active"))
        .alias("status"),
    )


def _tickets(count: int, people: pl.DataFrame, seed: int, anchor: datetime) -> pl.DataFrame:
    idx = pl.col("ticket")
    frame = pl.DataFrame({"ticket": pl.int_range(0, count, dtype=pl.Int64, eager=True)}).with_columns(
        integer(uniform(seed, 801, idx), 0, people.height - 1).alias("contact"),
        uniform(seed, 802, idx).alias("u_priority"),
        uniform(seed, 803, idx).alias("u_when"),
        uniform(seed, 804, idx).alias("u_sentiment"),
        integer(uniform(seed, 805, idx), 1, 14).alias("resolve_days"),
        uniform(seed, 806, idx).alias("u_csat"),
        pick(uniform(seed, 807, idx), TICKET_SUBJECTS).alias("subject"),
    )
    frame = frame.join(people, on="contact", how="left").sort("ticket")
    pattern = pl.col("pattern")
    churning = pattern == "churning"
    priority = (
        pl.when(churning)
        .then(weighted(pl.col("u_priority"), (("low", 15), ("normal", 35), ("high", 32), ("urgent", 18))))
        .otherwise(weighted(pl.col("u_priority"), (("low", 30), ("normal", 48), ("high", 16), ("urgent", 6))))
    )
    # Churning accounts' tickets keep coming while other activity stops: days ago uniform.
    days_ago = (
        pl.when(churning)
        .then(pl.col("u_when") * 200)
        .otherwise(_activity_days_ago(pattern, pl.col("u_when")))
    )
    sentiment = (
        pl.when(pattern == "healthy")
        .then(pl.col("u_sentiment") * 1.2 - 0.2)
        .when(pattern == "declining")
        .then(pl.col("u_sentiment") * 1.2 - 0.7)
        .otherwise(pl.col("u_sentiment") * 0.9 - 1.0)
        .clip(-1.0, 1.0)
        .round(2)
    )
    frame = frame.with_columns(
        priority.alias("priority"),
        days_ago.alias("days_ago"),
        _days_before(anchor, days_ago).alias("opened_at"),
    )
    recent = pl.col("days_ago") < 7
    status = (
        pl.when(recent)
        .then(pl.when(pl.col("u_csat") < 0.5).then(pl.lit("open")).otherwise(pl.lit("pending")))
        .otherwise(pl.when(pl.col("u_csat") < 0.7).then(pl.lit("closed")).otherwise(pl.lit("solved")))
    )
    frame = frame.with_columns(status.alias("status"))
    done = pl.col("status").is_in(["solved", "closed"])
    return frame.select(
        pl.format("T{}", idx.cast(pl.String).str.zfill(7)).alias("external_id"),
        pl.when(pl.col("via_email")).then(None).otherwise(pl.col("external_id")).alias("contact_external_id"),
        pl.when(pl.col("via_email")).then(pl.col("email")).otherwise(None).alias("contact_email"),
        "subject",
        "status",
        "priority",
        sentiment.alias("sentiment"),
        ((pl.col("priority") == "urgent") & (pl.col("u_sentiment") < 0.5)).alias("is_escalated"),
        pl.when(done & (pl.col("u_csat") < 0.6))
        .then(
            pl.when(churning)
            .then(integer(pl.col("u_sentiment"), 1, 3))
            .otherwise(integer(pl.col("u_sentiment"), 3, 5))
        )
        .otherwise(None)
        .alias("csat"),
        "opened_at",
        pl.when(done)
        .then(pl.col("opened_at") + pl.duration(days=pl.col("resolve_days")))
        .otherwise(None)
        .alias("closed_at"),
    )


# ---------------------------------------------------------------------------------------------
# Exchange rates
# ---------------------------------------------------------------------------------------------

# Roughly where these currencies traded against the dollar; the demo drifts them a little monthly.
RATES_TO_USD = {"EUR": 1.08, "GBP": 1.27}


def exchange_rates(as_of: date, *, months: int = 20) -> pl.DataFrame:
    """Monthly rates (1 unit of currency = rate USD) covering the demo's history, for reports in USD."""
    days = [as_of.replace(day=1)]
    for _ in range(months - 1):
        first = days[-1]
        days.append((first - timedelta(days=1)).replace(day=1))
    rows = [
        {"base": "USD", "currency": cur, "day": day, "rate": round(rate * (1 + 0.01 * ((i * 7) % 5 - 2)), 4)}
        for cur, rate in RATES_TO_USD.items()
        for i, day in enumerate(sorted(days))
    ]
    return pl.DataFrame(
        rows, schema={"base": pl.String, "currency": pl.String, "day": pl.Date, "rate": pl.Float64}
    )
