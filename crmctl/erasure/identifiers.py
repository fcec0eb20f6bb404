"""Normalised identifiers of a person and the digit forms a phone number is written in.

Hashes must match what the importers store, so normalisation is the identity engineer's
``email_key`` / ``phone_key`` (crmctl.identity.normalize).
"""

from __future__ import annotations

from collections.abc import Iterable

import phonenumbers

try:
    from crmctl.identity.normalize import email_key, phone_key
except ImportError:  # pragma: no cover - temporary until crmctl.identity.normalize lands
    from crmctl.erasure._normalize_fallback import email_key, phone_key

__all__ = ["email_key", "phone_digit_forms", "phone_key"]


def phone_digit_forms(e164_numbers: Iterable[str]) -> set[str]:
    """The digit strings an E.164 number appears as in free text once separators are removed:
    international (``441632960961``), national significant (``1632960961``) and with the trunk
    prefix (``01632960961``). Verification joins phone-shaped text tokens against these."""
    forms: set[str] = set()
    for number in e164_numbers:
        digits = number.lstrip("+")
        if not digits.isdigit():
            continue
        forms.add(digits)
        try:
            parsed = phonenumbers.parse(number, None)
        except phonenumbers.NumberParseException:
            continue
        national = phonenumbers.national_significant_number(parsed)
        if len(national) >= 6:
            forms.add(national)
            trunk = _trunk_prefix(parsed.country_code)
            if trunk:
                forms.add(trunk + national)
    return forms


def _trunk_prefix(country_code: int) -> str:
    """The national dialling prefix of a country ("0" for most of Europe, "1" for NANP)."""
    region = phonenumbers.region_code_for_country_code(country_code)
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    return (metadata.national_prefix or "") if metadata else ""
