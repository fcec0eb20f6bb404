"""Recording an erasure request: the audit anchor, holding only keyed hashes of identifiers."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from crmctl.db.engine import tenant_of
from crmctl.db.models import Contact, ErasureRequest
from crmctl.erasure.identifiers import email_key, phone_key
from crmctl.erasure.keys import require_key
from crmctl.erasure.subjects import contacts_matching, identity_hashes
from crmctl.errors import NotFoundError, UsageError


@dataclass(frozen=True)
class RequestCreated:
    request_id: int
    matched_contacts: int
    contact_id: int | None
    status: str


def create_request(
    session: Session,
    *,
    key: str | None,
    requestor: str,
    reason: str,
    contact_id: int | None = None,
    email: str | None = None,
    phone: str | None = None,
    default_region: str | None = None,
) -> RequestCreated:
    """Record a request for exactly one of contact / email / phone. The raw email or phone is hashed
    here and never stored; the contacts it matches now are kept by id."""
    key_bytes = require_key(key)
    given = [v for v in (contact_id, email, phone) if v is not None]
    if len(given) != 1:
        raise UsageError("Give exactly one of --contact, --email or --phone.")
    if not requestor.strip() or not reason.strip():
        raise UsageError("--requestor and --reason must not be empty.")
    emails: list[str] = []
    phones: list[str] = []
    if contact_id is not None:
        contact = session.get(Contact, contact_id)
        if contact is None or contact.tenant_id != tenant_of(session):
            raise NotFoundError(f"There is no contact {contact_id} in this tenant.")
        matched = [contact_id]
    else:
        email_norm = email_key(email) if email is not None else None
        phone_e164 = phone_key(phone, default_region) if phone is not None else None
        if email is not None and email_norm is None:
            raise UsageError("The email address given is not a valid address.")
        if phone is not None and phone_e164 is None:
            raise UsageError(
                "The phone number given is not a valid number.",
                hint="Write it in international form (+44 …) or configure default_region.",
            )
        emails = [email_norm] if email_norm else []
        phones = [phone_e164] if phone_e164 else []
        matched = contacts_matching(session, email=email_norm, phone=phone_e164)
    request = ErasureRequest(
        tenant_id=tenant_of(session),
        contact_id=matched[0] if matched else None,
        identity_hashes=identity_hashes(key_bytes, emails, phones),
        requestor=requestor.strip(),
        reason=reason.strip(),
        status="pending",
        evidence={"matched_contact_ids": matched},
    )
    session.add(request)
    session.flush()
    assert request.id is not None
    return RequestCreated(request.id, len(matched), request.contact_id, request.status)
