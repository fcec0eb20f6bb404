"""The audit log: one ``audit_event`` per writing command (no personal data in it)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from crmctl.db.engine import Database
from crmctl.db.models import AuditEvent, utcnow

# Option names whose values identify a person; they are recorded as "<redacted>".
PERSONAL_OPTION_NAMES = frozenset({"email", "phone", "name", "value", "identity", "reason"})


@dataclass
class AuditRecord:
    event_id: int
    counts: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False


def safe_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-safe options with personal values redacted."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key in PERSONAL_OPTION_NAMES and value is not None:
            out[key] = "<redacted>"
        elif value is None or isinstance(value, bool | int | float | str):
            out[key] = value
        elif isinstance(value, list | tuple):
            out[key] = [str(v) for v in value]
        else:
            out[key] = str(value)
    return out


@contextmanager
def audited(
    db: Database, *, actor: str, command: str, options: Mapping[str, Any], dry_run: bool = False
) -> Iterator[AuditRecord]:
    """Record the command as running, then ok / dry_run / failed with its counts.

    The event is written in transactions of its own, so it survives the command's rollback."""
    # write=True: on SQLite a deferred transaction that reads and then writes cannot wait for a
    # concurrent writer (busy_timeout does not apply to the lock upgrade) and fails at once.
    with db.session(write=True) as session:
        event = AuditEvent(tenant_id=db.tenant, actor=actor, command=command, options=safe_options(options))
        session.add(event)
        session.flush()
        record = AuditRecord(event_id=event.id or 0, dry_run=dry_run)
    outcome, error = "ok", None
    try:
        yield record
        if record.dry_run:
            outcome = "dry_run"
    except BaseException as exc:
        outcome, error = "failed", type(exc).__name__
        raise
    finally:
        with db.session(write=True) as session:
            stored = session.get(AuditEvent, record.event_id)
            if stored is not None:
                stored.outcome = outcome
                stored.error = error
                stored.counts = dict(record.counts)
                stored.finished_at = utcnow()
