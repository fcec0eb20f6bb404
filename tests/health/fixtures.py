"""A small customer base for health tests, written with the ORM (works under RLS on PostgreSQL).

Enterprise accounts log in far more than self-serve ones, so the same login count ranks low among
enterprise peers and high among self-serve peers. Account 'Parent Group' has two enterprise
children. Everything is dated relative to AS_OF.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from itertools import count

from sqlmodel import Session

from crmctl.db.engine import Database
from crmctl.db.models import Account, Contract, Interaction, ProductUsage, SupportTicket

AS_OF = date(2026, 6, 30)
TENANT = "default"
_keys = count(1)

# name -> (arr_tier, logins in the last 30 days, arr in dollars)
ACCOUNTS: dict[str, tuple[str, int, int]] = {
    "Ent One": ("enterprise", 20, 300_000),
    "Ent Two": ("enterprise", 40, 100_000),
    "Ent Three": ("enterprise", 60, 250_000),
    "Ent Four": ("enterprise", 80, 500_000),
    "Small One": ("smb", 20, 3_000),
    "Small Two": ("smb", 2, 2_000),
    "Small Three": ("smb", 4, 1_000),
    "Small Four": ("smb", 6, 4_000),
}


def at(days_before: float, *, as_of: date = AS_OF) -> datetime:
    """A moment ``days_before`` days before the end of the as-of day."""
    end = datetime.combine(as_of + timedelta(days=1), time.min, tzinfo=UTC)
    return end - timedelta(days=days_before)


def usage(
    account_id: int, event: str, quantity: float, days_before: float, feature: str | None = None
) -> ProductUsage:
    return ProductUsage(
        tenant_id=TENANT,
        account_id=account_id,
        occurred_at=at(days_before),
        event=event,
        feature=feature,
        quantity=quantity,
        idempotency_key=f"test-u-{next(_keys)}",
    )


def interaction(account_id: int, kind: str, days_before: float, score: float | None = None) -> Interaction:
    return Interaction(
        tenant_id=TENANT,
        account_id=account_id,
        kind=kind,
        occurred_at=at(days_before),
        score=score,
        idempotency_key=f"test-i-{next(_keys)}",
    )


def ticket(
    account_id: int, days_before: float, *, priority: str = "normal", escalated: bool = False
) -> SupportTicket:
    return SupportTicket(
        tenant_id=TENANT,
        account_id=account_id,
        status="open",
        priority=priority,
        sentiment=-0.8,
        is_escalated=escalated,
        opened_at=at(days_before),
    )


def seed(db: Database) -> dict[str, int]:
    """Write the base; returns account ids by name (plus 'Parent Group')."""
    ids: dict[str, int] = {}
    with db.session(write=True) as session:
        parent = Account(
            tenant_id=TENANT,
            name="Parent Group",
            arr_tier="enterprise",
            segment="enterprise",
            external_id="P-1",
        )
        session.add(parent)
        session.flush()
        ids["Parent Group"] = parent.id or 0
        for n, (name, (tier, logins, arr)) in enumerate(ACCOUNTS.items()):
            account = Account(
                tenant_id=TENANT,
                name=name,
                arr_tier=tier,
                segment=tier,
                plan="enterprise" if tier == "enterprise" else "self-serve",
                external_id=f"A-{n}",
                parent_id=ids["Parent Group"] if name in {"Ent One", "Ent Two"} else None,
            )
            session.add(account)
            session.flush()
            account_id = account.id or 0
            ids[name] = account_id
            session.add(
                Contract(
                    tenant_id=TENANT,
                    account_id=account_id,
                    start_date=AS_OF - timedelta(days=200),
                    end_date=AS_OF + timedelta(days=30 + 20 * n),
                    arr_cents=arr * 100,
                    contract_type="annual",
                    entitlements={"features": ["reports", "alerts", "sso", "api"]},
                )
            )
            # logins as two daily rollups inside the 30-day window, and a steady previous window
            session.add_all(
                [
                    usage(account_id, "login", logins / 2, 3),
                    usage(account_id, "login", logins / 2, 10),
                    usage(account_id, "login", 30, 45),
                    usage(account_id, "feature_used", 1, 5, "reports"),
                    usage(account_id, "data_volume_mb", 100.0 * (n + 1), 6),
                    interaction(account_id, "email", 5 + 7 * n),
                    interaction(account_id, "nps", 40, score=float(5 + n % 5)),
                ]
            )
            if n % 3 == 0:
                session.add(usage(account_id, "feature_used", 1, 6, "alerts"))
                session.add(usage(account_id, "integration_connected", 1, 20, "slack"))
    return ids


def add(db: Database, *rows: object) -> None:
    with db.session(write=True) as session:
        session.add_all(list(rows))


def one(session: Session, sql: str, **params: object) -> object:
    from sqlalchemy import text

    return session.execute(text(sql), params).scalar()
