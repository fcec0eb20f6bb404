"""The suppression list: keyed hashes of erased emails and phones, so imports cannot resurrect
an erased person.

Importers call :func:`find_suppressed` with already-normalised emails (``email_key``) and phones
(``phone_key``, E.164) and reject the rows it marks with reason ``suppressed``.

No erasure key configured: if the tenant's suppression list is empty there is nothing to compare
against and every row passes (a tenant that never erased anyone needs no key to import); if the
list has entries, the check refuses to run (``MissingErasureKey``) rather than let an import bring
an erased person back unchecked.
"""

from __future__ import annotations

import polars as pl
from sqlalchemy import text
from sqlmodel import Session

from crmctl.db.bulk import insert_frame
from crmctl.db.engine import tenant_of
from crmctl.db.models import utcnow
from crmctl.erasure.keys import MissingErasureKey, hash_series, keyed_hash, require_key

__all__ = ["MissingErasureKey", "add_suppressions", "find_suppressed", "keyed_hash", "suppression_hashes"]

KINDS = ("email", "phone")


def suppression_hashes(session: Session) -> dict[str, set[str]]:
    """The tenant's suppression list: kind -> set of keyed hashes."""
    rows = session.connection().execute(
        text("SELECT kind, value_hash FROM suppression WHERE tenant_id = :tenant"),
        {"tenant": tenant_of(session)},
    )
    out: dict[str, set[str]] = {kind: set() for kind in KINDS}
    for kind, value_hash in rows:
        out.setdefault(kind, set()).add(value_hash)
    return out


def find_suppressed(session: Session, *, key: str | None, emails: pl.Series, phones: pl.Series) -> pl.Series:
    """A boolean mask, True where the normalised email or E.164 phone is on the suppression list.

    ``emails`` and ``phones`` have one entry per row (null where the row has none)."""
    if emails.len() != phones.len():
        raise ValueError("emails and phones must have one entry per row")
    listed = suppression_hashes(session)
    if not any(listed.values()):
        return pl.Series("suppressed", [False] * emails.len(), dtype=pl.Boolean)
    key_bytes = require_key(key)
    email_hit = hash_series(key_bytes, "email", emails.cast(pl.String)).is_in(list(listed["email"]))
    phone_hit = hash_series(key_bytes, "phone", phones.cast(pl.String)).is_in(list(listed["phone"]))
    return (email_hit.fill_null(False) | phone_hit.fill_null(False)).alias("suppressed")


def add_suppressions(session: Session, entries: pl.DataFrame) -> pl.DataFrame:
    """Add ``entries`` (kind, value_hash, request_id) to the list, skipping hashes already listed
    (the first request to list a hash owns it). Returns the rows added."""
    listed = suppression_hashes(session)
    known = pl.DataFrame(
        [(kind, h) for kind, hashes in listed.items() for h in hashes],
        schema={"kind": pl.String, "value_hash": pl.String},
        orient="row",
    )
    new = (
        entries.select("kind", "value_hash", pl.col("request_id").cast(pl.Int64))
        .sort("request_id")
        .unique(subset=["kind", "value_hash"], keep="first", maintain_order=True)
        .join(known, on=["kind", "value_hash"], how="anti")
    )
    insert_frame(
        session,
        "suppression",
        new.with_columns(pl.lit(tenant_of(session)).alias("tenant_id"), pl.lit(utcnow()).alias("created_at")),
    )
    return new
