"""Verification finds a person's identifiers the same way whether the run still knows their values
(matched by value) or holds only keyed hashes (a resumed run: every token hashed)."""

from __future__ import annotations

import polars as pl
import pytest
from sqlalchemy import text

from crmctl.db.engine import Database
from crmctl.erasure import verify
from crmctl.erasure.keys import keyed_hash, require_key
from crmctl.erasure.subjects import identity_values
from crmctl.erasure.verify import _rows, find_identifiers
from tests.erasure.people import KEY, build, people


def _lookup(key: bytes, request_id: int, email: str, phone: str, *, with_values: bool) -> pl.DataFrame:
    values = identity_values([email], [phone])
    rows = [
        (kind, keyed_hash(key, kind, v), v if with_values else None, request_id)
        for kind in ("email", "phone_digits")
        for v in sorted(values[kind])
    ]
    return pl.DataFrame(
        rows,
        schema={"kind": pl.String, "hash": pl.String, "value": pl.String, "request_id": pl.Int64},
        orient="row",
    )


def test_matching_by_value_finds_exactly_what_matching_by_hash_finds(db: Database) -> None:
    persons = people(3)
    build(db, persons, duplicates=False)
    target, other, _ = persons
    national = "0" + target.phone.removeprefix("+44")  # 020… as written in a UK note
    spaced = f"{national[:3]} {national[3:7]} {national[7:]}"
    with db.session(write=True) as s:  # someone else's rows quoting the person, in other spellings
        s.connection().execute(
            text("UPDATE interaction SET body = :b WHERE contact_id = :c"),
            {"b": f"cc {target.email.upper()} / call {spaced}", "c": other.contact_ids[0]},
        )
        s.connection().execute(
            text("UPDATE support_ticket SET description = :d WHERE contact_id = :c"),
            {"d": f"phone {target.phone}", "c": other.contact_ids[0]},
        )
    key = require_key(KEY)
    by_value = find_identifiers(db, key, _lookup(key, 7, target.email, target.phone, with_values=True))
    by_hash = find_identifiers(db, key, _lookup(key, 7, target.email, target.phone, with_values=False))
    mixed = pl.concat(
        [
            _lookup(key, 7, target.email, target.phone, with_values=True).head(1),
            _lookup(key, 7, target.email, target.phone, with_values=False).slice(1),
        ]
    )
    assert by_value.equals(by_hash)
    assert find_identifiers(db, key, mixed).equals(by_hash)
    found = dict(zip(by_value["table"], by_value["rows"], strict=True))
    assert found["interaction"] >= 3 and found["support_ticket"] >= 1 and found["contact"] >= 1
    assert set(by_value["request_id"]) == {7}
    # an identifier nobody holds is found nowhere, by either method
    for with_values in (True, False):
        absent = _lookup(key, 8, "nobody@example.org", "+442079469999", with_values=with_values)
        assert find_identifiers(db, key, absent).height == 0


def test_values_holding_the_row_and_key_separators_are_still_searched(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A value holding the characters the scan joins rows and columns with (the range is then read
    row by row) is searched all the same, and counted once per row."""
    persons = people(2)
    build(db, persons, duplicates=False)
    target, other = persons
    with db.session(write=True) as s:
        s.connection().execute(
            text(
                "UPDATE interaction SET body = :b, idempotency_key = idempotency_key || :k "
                "WHERE contact_id = :c"
            ),
            {"b": f"a\x1eb\x1dc {target.phone} \x1f", "k": "k\x1d\x1e", "c": other.contact_ids[0]},
        )
    read_by_row = []
    monkeypatch.setattr(verify, "_rows", lambda *a: read_by_row.append(a[0]) or _rows(*a))
    key = require_key(KEY)
    found = find_identifiers(db, key, _lookup(key, 7, "nobody@example.org", target.phone, with_values=True))
    assert dict(zip(found["table"], found["rows"], strict=True))["interaction"] == 3 + 3
    assert read_by_row  # the range with those values was read row by row
