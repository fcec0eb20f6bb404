"""Keyed hashes: the only form in which erasure keeps a person's identifiers.

A keyed hash (BLAKE2b in keyed mode, a MAC) of ``kind`` and a normalised value. Without the tenant's
secret a hash cannot be recomputed from a guessed email or phone, so the request log and the
suppression list hold nothing that re-identifies anyone. The same function serves the suppression
list, the identity hashes of a request, verification and the pseudonyms of erased contacts.

No key configured: erasure refuses to run (``require_key``); a built-in or derived default would be
guessable, which defeats the point. Keys shorter than ``MIN_KEY_LENGTH`` are refused for the same
reason. Never change a tenant's key once erasures exist: old hashes would no longer match.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import polars as pl

from crmctl.errors import ConfigError

MIN_KEY_LENGTH = 16
DIGEST_BYTES = 16  # 128-bit tags: collisions are not a practical concern at CRM sizes
KEY_HINT = (
    "Set erasure_key in the tenant's section of crmctl.toml (tenants.NAME) or CRMCTL_ERASURE_KEY, "
    "e.g. from: python -c 'import secrets; print(secrets.token_urlsafe(32))'."
)


class MissingErasureKey(ConfigError):
    """Erasure and suppression need the tenant's secret key and it is absent or too short."""


def require_key(key: str | None) -> bytes:
    """The MAC key bytes for ``key``; refuses a missing or guessable key."""
    if key is None or not key.strip():
        raise MissingErasureKey("No erasure key is configured for this tenant.", hint=KEY_HINT)
    if len(key.strip()) < MIN_KEY_LENGTH:
        raise MissingErasureKey(
            f"The erasure key is shorter than {MIN_KEY_LENGTH} characters and could be guessed.",
            hint=KEY_HINT,
        )
    # BLAKE2b takes keys up to 64 bytes: derive a fixed-size one from any length of secret.
    return hashlib.sha256(key.strip().encode()).digest()


def keyed_hash(key: bytes, kind: str, value: str) -> str:
    """Hex keyed hash of a normalised value of ``kind`` (email | phone | phone_digits | contact)."""
    return hashlib.blake2b(f"{kind}\x1f{value}".encode(), key=key, digest_size=DIGEST_BYTES).hexdigest()


def keyed_hashes(key: bytes, kind: str, values: Iterable[str]) -> list[str]:
    """``keyed_hash`` of many values: the keyed state is set up once and copied (twice as fast)."""
    keyed = hashlib.blake2b(f"{kind}\x1f".encode(), key=key, digest_size=DIGEST_BYTES)
    out = []
    for value in values:
        state = keyed.copy()
        state.update(value.encode())
        out.append(state.hexdigest())
    return out


def hash_series(key: bytes, kind: str, values: pl.Series) -> pl.Series:
    """Keyed hash of every non-null value (each distinct value hashed once); nulls stay null."""
    distinct = values.drop_nulls().unique()
    if distinct.len() == 0:
        return pl.Series(values.name, [None] * values.len(), dtype=pl.String)
    lookup = pl.DataFrame(
        {"value": distinct, "hash": keyed_hashes(key, kind, distinct.to_list())},
        schema={"value": pl.String, "hash": pl.String},
    )
    frame = pl.DataFrame({"value": values.cast(pl.String)})
    return frame.join(lookup, on="value", how="left", maintain_order="left")["hash"].alias(values.name)


def pseudonym(key: bytes, contact_id: int) -> str:
    """What replaces every personal field of an erased contact: a keyed hash of its id."""
    return "erased-" + keyed_hash(key, "contact", str(contact_id))[:24]
