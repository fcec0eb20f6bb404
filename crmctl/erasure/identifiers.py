"""Normalised identifiers of a person and the digit forms a phone number is written in.

Hashes must match what the importers store, so normalisation is the identity engineer's
``email_key`` / ``phone_key`` (crmctl.identity.normalize).
"""

from __future__ import annotations

from collections.abc import Iterable

import phonenumbers
import polars as pl

from crmctl.identity.normalize import PLUS_TAG_DOMAINS, email_key, phone_key

__all__ = ["REWRITTEN_DOMAINS", "email_key", "email_keys_of_tokens", "phone_digit_forms", "phone_key"]

# Domains where email_key does more than lower-case a well-formed address (plus tags, Gmail dots).
REWRITTEN_DOMAINS = PLUS_TAG_DOMAINS | {"googlemail.com"}


def email_keys_of_tokens(tokens: pl.Series) -> pl.Series:
    """``email_key`` of address-shaped tokens found in text, vectorised for the common case.

    For a token outside the rewritten domains, ``email_key`` is its lower-case form or None; a
    lower-cased token that is not a valid key cannot equal any stored key, so lower-casing is
    enough to *match* keys. Only tokens at rewriting providers go through ``email_key`` itself."""
    lower = tokens.str.to_lowercase()
    rewritten = lower.str.split("@").list.last().is_in(list(REWRITTEN_DOMAINS))
    if not rewritten.any():
        return lower
    exact = tokens.filter(rewritten).map_elements(email_key, return_dtype=pl.String, skip_nulls=True)
    return lower.scatter(rewritten.arg_true(), exact)


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
