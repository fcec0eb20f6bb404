"""Temporary stand-in for crmctl.identity.normalize until it is committed (same names)."""

from __future__ import annotations

import phonenumbers

FREE_MAIL_DOT_INSENSITIVE = {"gmail.com", "googlemail.com"}


def email_key(raw: str | None) -> str | None:
    if raw is None:
        return None
    value = raw.strip().lower()
    if value.count("@") != 1:
        return None
    local, domain = value.split("@")
    if not local or "." not in domain:
        return None
    if domain in FREE_MAIL_DOT_INSENSITIVE:
        local = local.split("+", 1)[0].replace(".", "")
        domain = "gmail.com"
    return f"{local}@{domain}"


def phone_key(raw: str | None, default_region: str | None = None) -> str | None:
    if raw is None or not raw.strip():
        return None
    try:
        parsed = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
