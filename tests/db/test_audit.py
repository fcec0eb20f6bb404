import pytest
from sqlmodel import select

from crmctl.db.audit import audited
from crmctl.db.engine import Database
from crmctl.db.models import AuditEvent


def test_audit_records_outcome_counts_and_redacts_personal_options(db: Database) -> None:
    with audited(db, actor="ann", command="erasure request", options={"email": "x@y.z", "limit": 5}) as rec:
        rec.counts["requests"] = 1
    with pytest.raises(ValueError), audited(db, actor="ann", command="boom", options={}):
        raise ValueError("has data in it")
    with db.session() as session:
        events = session.exec(select(AuditEvent).order_by(AuditEvent.id)).all()
    assert [(e.command, e.outcome, e.error) for e in events] == [
        ("erasure request", "ok", None),
        ("boom", "failed", "ValueError"),
    ]
    assert events[0].options == {"email": "<redacted>", "limit": 5}
    assert events[0].counts == {"requests": 1}
    assert events[0].finished_at is not None and events[0].tenant_id == "default"
