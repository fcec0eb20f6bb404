"""Reading stored scores back: one account's breakdown, its history, and band transitions."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

import polars as pl
from sqlalchemy import text
from sqlmodel import Session

from crmctl.db import bulk
from crmctl.db.bulk import sqlite_text
from crmctl.db.engine import tenant_of
from crmctl.errors import ConfigError, NotFoundError, UsageError
from crmctl.health.model import Band, load_model, parse_model
from crmctl.health.scoring import TRANSITION_KIND

SPARK_BLOCKS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class AccountRef:
    id: int
    name: str


def resolve_account(session: Session, ref: str) -> AccountRef:
    """An account by id, external id or exact name (one match, or a clear error)."""
    tenant = tenant_of(session)
    if ref.isdigit():
        row = session.execute(
            text("SELECT id, name FROM account WHERE tenant_id = :t AND id = :id"),
            {"t": tenant, "id": int(ref)},
        ).first()
        if row is not None:
            return AccountRef(row[0], row[1])
    rows = session.execute(
        text(
            "SELECT id, name FROM account WHERE tenant_id = :t AND (external_id = :r OR name = :r) "
            "ORDER BY id LIMIT 5"
        ),
        {"t": tenant, "r": ref},
    ).all()
    if not rows:
        raise NotFoundError("No account matches that id, external id or name in this tenant.")
    if len(rows) > 1:
        raise UsageError(
            f"{len(rows)} accounts match that external id or name.", hint="Give the account id instead."
        )
    return AccountRef(rows[0][0], rows[0][1])


@dataclass
class Breakdown:
    account: AccountRef
    as_of: date
    model_version: str
    segment: str | None
    composite: float
    band: str
    bands: tuple[Band, ...]
    signals: list[dict[str, Any]]  # signal, raw_value, normalised_value, weight, contribution, band
    previous: dict[str, Any] | None = None  # as_of, composite, band, model_version
    changes: list[dict[str, Any]] = field(default_factory=list)  # driver first


def _bands(session: Session, version: str) -> tuple[Band, ...]:
    body = session.execute(
        text("SELECT body FROM health_model WHERE tenant_id = :t AND version = :v"),
        {"t": tenant_of(session), "v": version},
    ).scalar()
    try:
        return parse_model(body).bands if body else load_model().bands
    except ConfigError:  # a stored model is valid by construction; be lenient when reading
        return load_model().bands


def band_of(bands: tuple[Band, ...], value: float | None) -> str | None:
    if value is None:
        return None
    name = bands[0].name
    for b in bands:
        if value >= b.min:
            name = b.name
    return name


def _snapshot(
    session: Session, account_id: int, before: date | None, strictly: bool
) -> dict[str, Any] | None:
    condition = ""
    params: dict[str, Any] = {"t": tenant_of(session), "a": account_id}
    if before is not None:
        condition = f"AND as_of {'<' if strictly else '<='} :d"
        params["d"] = before
    row = session.execute(
        text(
            "SELECT id, as_of, model_version, segment, composite, band FROM health_snapshot "
            f"WHERE tenant_id = :t AND account_id = :a {condition} ORDER BY as_of DESC, id DESC LIMIT 1"
        ),
        params,
    ).first()
    if row is None:
        return None
    as_of = row[1] if isinstance(row[1], date) else date.fromisoformat(str(row[1]))
    return {
        "id": row[0],
        "as_of": as_of,
        "model_version": row[2],
        "segment": row[3],
        "composite": row[4],
        "band": row[5],
    }


def _signal_rows(session: Session, snapshot_id: int) -> list[dict[str, Any]]:
    rows = session.execute(
        text(
            "SELECT signal, raw_value, normalised_value, weight, contribution FROM health_signal "
            "WHERE tenant_id = :t AND snapshot_id = :s ORDER BY signal"
        ),
        {"t": tenant_of(session), "s": snapshot_id},
    ).all()
    return [
        {"signal": r[0], "raw_value": r[1], "normalised_value": r[2], "weight": r[3], "contribution": r[4]}
        for r in rows
    ]


def breakdown(session: Session, ref: str, as_of: date | None = None) -> Breakdown:
    """The account's latest snapshot (on or before ``as_of``), signal by signal, and what changed
    since the one before it (the signal that moved the composite most first)."""
    account = resolve_account(session, ref)
    current = _snapshot(session, account.id, as_of, strictly=False)
    if current is None:
        raise NotFoundError(
            "That account has no health snapshot yet.", hint="Run 'crmctl health score' first."
        )
    bands = _bands(session, current["model_version"])
    signals = _signal_rows(session, current["id"])
    for s in signals:
        s["band"] = band_of(bands, s["normalised_value"])
    result = Breakdown(
        account=account,
        as_of=current["as_of"],
        model_version=current["model_version"],
        segment=current["segment"],
        composite=current["composite"],
        band=current["band"],
        bands=bands,
        signals=signals,
    )
    previous = _snapshot(session, account.id, current["as_of"], strictly=True)
    if previous is not None:
        result.previous = {k: previous[k] for k in ("as_of", "composite", "band", "model_version")}
        before = {s["signal"]: s for s in _signal_rows(session, previous["id"])}
        now = {s["signal"]: s for s in signals}
        changes = []
        for name in sorted(set(before) | set(now)):
            old, new = before.get(name, {}), now.get(name, {})
            change = (new.get("contribution") or 0.0) - (old.get("contribution") or 0.0)
            changes.append(
                {
                    "signal": name,
                    "raw_before": old.get("raw_value"),
                    "raw_now": new.get("raw_value"),
                    "contribution_before": old.get("contribution"),
                    "contribution_now": new.get("contribution"),
                    "change": change,
                }
            )
        changes.sort(key=lambda c: (-abs(c["change"]), c["signal"]))
        result.changes = changes
    return result


def history(session: Session, ref: str) -> tuple[AccountRef, pl.DataFrame]:
    """Every snapshot of the account, oldest first."""
    account = resolve_account(session, ref)
    frame = bulk.read_frame(
        session,
        "SELECT as_of, composite, band, segment, model_version FROM health_snapshot "
        "WHERE tenant_id = :t AND account_id = :a ORDER BY as_of, id",
        {"t": tenant_of(session), "a": account.id},
    )
    return account, frame


def sparkline(values: list[float], low: float = 0.0, high: float = 100.0) -> str:
    """One block per value on a fixed 0..100 scale, so sparklines of different accounts compare."""
    span = high - low
    out = []
    for v in values:
        level = int((min(max(v, low), high) - low) / span * (len(SPARK_BLOCKS) - 1) + 0.5)
        out.append(SPARK_BLOCKS[level])
    return "".join(out)


def changes(session: Session, since: date | None, to_band: str | None) -> list[dict[str, Any]]:
    """Band transitions from the interaction timeline, newest first, with their driving signals."""
    params: dict[str, Any] = {"t": tenant_of(session), "k": TRANSITION_KIND}
    condition = ""
    if since is not None:
        start = datetime.combine(since, time.min, tzinfo=UTC)
        params["since"] = sqlite_text(start) if _sqlite(session) else start
        condition = "AND i.occurred_at >= :since"
    rows = session.execute(
        text(
            "SELECT i.account_id, a.name, CAST(i.details AS TEXT), i.id FROM interaction i "
            "JOIN account a ON a.id = i.account_id AND a.tenant_id = i.tenant_id "
            f"WHERE i.tenant_id = :t AND i.kind = :k {condition} ORDER BY i.occurred_at DESC, i.id DESC"
        ),
        params,
    ).all()
    out: list[dict[str, Any]] = []
    for account_id, name, details_text, _ in rows:
        details = json.loads(details_text) if details_text else {}
        if to_band is not None and details.get("to") != to_band:
            continue
        out.append(
            {
                "account_id": account_id,
                "account": name,
                "as_of": details.get("as_of"),
                "from": details.get("from"),
                "to": details.get("to"),
                "composite": details.get("composite"),
                "previous_composite": details.get("previous_composite"),
                "drivers": details.get("drivers", []),
                "model_version": details.get("model_version"),
            }
        )
    return out


def _sqlite(session: Session) -> bool:
    return session.get_bind().dialect.name == "sqlite"
