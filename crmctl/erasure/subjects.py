"""Who a request is about: the contacts it names, their whole merge tree, and their identifiers.

A person is every contact row that holds their data: the contact a request names (or the contacts
whose email / phone matches it), every contact merged into those, and every contact they were merged
into. Contacts that merely share an email or phone with the person are *not* pulled in (a shared
mailbox must not erase a colleague); verification then finds the shared value and fails loudly.
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl
from sqlmodel import Session

from crmctl.db.sql import execute, frame, in_list, list_param, tenant_unindexed, unindexed
from crmctl.erasure.identifiers import phone_digit_forms
from crmctl.erasure.keys import keyed_hash
from crmctl.identity.normalize import email_keys, phone_keys

MAX_MERGE_DEPTH = 50


def contacts_matching(session: Session, *, email: str | None, phone: str | None) -> list[int]:
    """Contacts whose normalised email / E.164 phone (on the contact or as an identifier) matches."""
    found: set[int] = set()
    for kind, value, column in (("email", email, "email_norm"), ("phone", phone, "phone_e164")):
        if value is None:
            continue
        rows = execute(
            session,
            f"SELECT id FROM contact WHERE tenant_id = :tenant AND {column} = :value "
            "UNION SELECT contact_id FROM contact_identifier "
            "WHERE tenant_id = :tenant AND kind = :kind AND value = :value",
            value=value,
            kind=kind,
        )
        found.update(r[0] for r in rows)
    return sorted(found)


def merge_tree(session: Session, contact_ids: Iterable[int]) -> set[int]:
    """``contact_ids`` plus every contact merged into them or that they were merged into."""
    known = set(contact_ids)
    frontier = set(known)
    for _ in range(MAX_MERGE_DEPTH):
        if not frontier:
            break
        ids = list_param(session, sorted(frontier))
        by_id, by_parent = in_list(session, "id", "ids"), in_list(session, "merged_into_id", "ids")
        rows = execute(
            session,
            f"SELECT merged_into_id FROM contact WHERE {tenant_unindexed(session)} AND {by_id} "
            "AND merged_into_id IS NOT NULL "
            f"UNION SELECT id FROM contact WHERE tenant_id = :tenant AND {by_parent}",
            ids=ids,
        )
        frontier = {r[0] for r in rows} - known
        known |= frontier
    return known


def identifier_values(session: Session, contact_ids: list[int], default_region: str | None) -> pl.DataFrame:
    """Every normalised email and phone the contacts hold (kind, value, contact_id), read from the
    contact rows, their identifiers and their source records. In memory only, never stored."""
    schema = {"contact_id": pl.Int64, "kind": pl.String, "value": pl.String}
    if not contact_ids:
        return pl.DataFrame(schema=schema)
    ids = list_param(session, contact_ids)
    contacts = frame(
        session,
        "SELECT id AS contact_id, email, phone, email_norm, phone_e164 FROM contact "
        f"WHERE {tenant_unindexed(session)} AND {in_list(session, 'id', 'ids')}",
        {
            "contact_id": pl.Int64,
            "email": pl.String,
            "phone": pl.String,
            "email_norm": pl.String,
            "phone_e164": pl.String,
        },
        ids=ids,
    )
    linked = frame(
        session,
        f"""
        SELECT contact_id, kind, value FROM contact_identifier
        WHERE tenant_id = :tenant AND {in_list(session, "contact_id", "ids")}
          AND {unindexed(session, "kind")} IN ('email', 'phone')
        UNION ALL
        SELECT contact_id, 'email', email_norm FROM source_record
        WHERE tenant_id = :tenant AND {in_list(session, "contact_id", "ids")} AND email_norm IS NOT NULL
        UNION ALL
        SELECT contact_id, 'phone', phone_e164 FROM source_record
        WHERE tenant_id = :tenant AND {in_list(session, "contact_id", "ids")} AND phone_e164 IS NOT NULL
        """,
        schema,
        ids=ids,
    )
    # the phone as given needs parsing unless it is plainly written as its stored E.164 form (then
    # parsing gives that form or nothing, and the stored form is kept anyway)
    plain = pl.col("phone").str.contains(r"^\+[0-9 ().\-/]*$") & (
        pl.lit("+") + pl.col("phone").str.replace_all(r"[^0-9]", "") == pl.col("phone_e164")
    )
    given_phones = contacts.filter(pl.col("phone").is_not_null() & ~plain.fill_null(False))
    parts = [
        contacts.select(
            "contact_id", pl.lit("email").alias("kind"), email_keys(contacts["email"]).alias("value")
        ),
        given_phones.select(
            "contact_id",
            pl.lit("phone").alias("kind"),
            phone_keys(given_phones["phone"], default_region)["phone_e164"].alias("value"),
        ),
        contacts.select("contact_id", pl.lit("email").alias("kind"), pl.col("email_norm").alias("value")),
        contacts.select("contact_id", pl.lit("phone").alias("kind"), pl.col("phone_e164").alias("value")),
        linked,
    ]
    return pl.concat(parts).drop_nulls().unique()


def identity_values(emails: Iterable[str], phones: Iterable[str]) -> dict[str, set[str]]:
    """The normalised values a request's keyed hashes are taken of, per kind (emails, E.164 phones
    and the digit forms phones are written in). In memory only, never stored."""
    email_set = {e for e in emails if e}
    phone_set = {p for p in phones if p}
    return {"email": email_set, "phone": phone_set, "phone_digits": phone_digit_forms(phone_set)}


def identity_hashes(key: bytes, emails: Iterable[str], phones: Iterable[str]) -> dict[str, list[str]]:
    """Keyed hashes a request keeps: emails, E.164 phones and the digit forms phones are written in."""
    return {
        kind: sorted(keyed_hash(key, kind, v) for v in values)
        for kind, values in identity_values(emails, phones).items()
    }


def merge_hashes(*parts: dict[str, list[str]] | None) -> dict[str, list[str]]:
    out: dict[str, set[str]] = {}
    for part in parts:
        for kind, hashes in (part or {}).items():
            out.setdefault(kind, set()).update(hashes)
    return {kind: sorted(hashes) for kind, hashes in sorted(out.items())}
