"""The identifiers a request proves gone: every email and phone its contacts hold, normalised."""

from __future__ import annotations

from crmctl.db.engine import Database
from crmctl.db.models import Contact
from crmctl.erasure.subjects import identifier_values


def test_phones_as_given_are_normalised_whether_or_not_an_e164_form_is_stored(db: Database) -> None:
    with db.session(write=True) as s:
        written = [
            ("020 7946 0958", None),  # national, nothing stored: parsed with the default region
            ("+44 (20) 7946-0959", "+442079460959"),  # plainly the stored form
            ("+44 20 7946 0960 ext 12", "+442079460960"),  # an extension: parsed
            ("07400 123456", "+442079460961"),  # another number than the stored one: both kept
            ("not a phone", None),
        ]
        contacts = [
            Contact(tenant_id=db.tenant, first_name="A", email=f"P{i}@Example.com", phone=p, phone_e164=e)
            for i, (p, e) in enumerate(written)
        ]
        s.add_all(contacts)
        s.flush()
        ids = [c.id for c in contacts]
        values = identifier_values(s, ids, "GB")
    phones = {(r["contact_id"], r["value"]) for r in values.filter(kind="phone").iter_rows(named=True)}
    assert phones == {
        (ids[0], "+442079460958"),
        (ids[1], "+442079460959"),
        (ids[2], "+442079460960"),
        (ids[3], "+447400123456"),
        (ids[3], "+442079460961"),
    }
    emails = sorted(values.filter(kind="email")["value"].to_list())
    assert emails == [f"p{i}@example.com" for i in range(5)]
