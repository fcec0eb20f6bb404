"""Manual signals: a CSM's 0..100 judgement of an account, with author and expiry.

The latest one that has not expired at the as-of instant is the account's ``manual`` signal.
``expires`` is the last day it counts: it is stored as the following midnight (UTC).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlmodel import Session, col, select

from crmctl.db.engine import tenant_of
from crmctl.db.models import ManualSignal, utcnow
from crmctl.errors import UsageError
from crmctl.health.history import AccountRef, resolve_account


@dataclass(frozen=True)
class ManualSignalRow:
    id: int
    account_id: int
    value: float
    author: str
    note: str | None
    created_at: datetime
    expires_at: datetime | None


def _row(s: ManualSignal) -> ManualSignalRow:
    return ManualSignalRow(
        id=s.id or 0,
        account_id=s.account_id,
        value=s.value,
        author=s.author,
        note=s.note,
        created_at=s.created_at,
        expires_at=s.expires_at,
    )


def set_signal(
    session: Session,
    ref: str,
    value: float,
    *,
    author: str,
    note: str | None = None,
    expires: date | None = None,
    today: date | None = None,
) -> tuple[AccountRef, ManualSignalRow]:
    if math.isnan(value) or not 0 <= value <= 100:
        raise UsageError("The value of a manual signal must be between 0 and 100.")
    today = today or utcnow().date()
    if expires is not None and expires < today:
        raise UsageError("--expires is in the past; give the last day the signal should count.")
    account = resolve_account(session, ref)
    signal = ManualSignal(
        tenant_id=tenant_of(session),
        account_id=account.id,
        value=float(value),
        note=note,
        author=author,
        expires_at=datetime.combine(expires + timedelta(days=1), time.min, tzinfo=UTC) if expires else None,
    )
    session.add(signal)
    session.flush()
    return account, _row(signal)


def list_signals(session: Session, ref: str) -> tuple[AccountRef, list[ManualSignalRow]]:
    account = resolve_account(session, ref)
    rows = session.exec(
        select(ManualSignal)
        .where(ManualSignal.tenant_id == tenant_of(session), ManualSignal.account_id == account.id)
        .order_by(col(ManualSignal.created_at).desc(), col(ManualSignal.id).desc())
    ).all()
    return account, [_row(r) for r in rows]
