"""Seeded people: names, countries, phone numbers, job titles (no emails: those depend on the
company a person works for, see ``graph``). Shared by the graph generator and the lead files, so the
demo's leads can be the same people as its contacts."""

from __future__ import annotations

import polars as pl

from crmctl.demo.rng import integer, pick, uniform, weighted, words

FIRST_NAMES = words(
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara Richard "
    "Susan Joseph Jessica Thomas Sarah Charles Karen Christopher Lisa Daniel Nancy Matthew Betty "
    "Anthony Margaret Mark Sandra Steven Ashley Andrew Kimberly Joshua Emily Kenneth Donna Kevin "
    "Michelle Brian Carol George Amanda Timothy Melissa Ronald Deborah Jason Stephanie Edward Rebecca "
    "Jeffrey Sharon Ryan Laura Jacob Cynthia Gary Amy Nicholas Kathleen Eric Angela Jonathan Shirley "
    "Stephen Anna Larry Brenda Justin Pamela Scott Emma Brandon Nicole Benjamin Helen Samuel Samantha "
    "Zoë René Chloé Jürgen Søren François Björn Ana María José Lukas Sofia Mateo Amélie Noah Léa"
)
LAST_NAMES = words(
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez "
    "Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark "
    "Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams "
    "Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Müller Schmidt Schneider Fischer Weber "
    "Dubois Lefèvre Moreau O'Brien O'Connor MacDonald Kowalski Nowak Novák Jensen Nielsen Hansen Rossi "
    "Russo Ferrari Esposito Bianchi Silva Santos Oliveira Pereira Costa Tanaka Suzuki Kim Park Chen"
)
TITLES = (
    "CEO",
    "CTO",
    "VP Sales",
    "Head of Operations",
    "Marketing Manager",
    "Data Analyst",
    "Software Engineer",
    "Procurement Lead",
    "Customer Success Manager",
    "IT Director",
    "Finance Manager",
    "Product Manager",
)
COUNTRIES = (("US", 45.0), ("GB", 20.0), ("DE", 15.0), ("FR", 10.0), ("CA", 10.0))
_US_AREA_CODES = ("212", "415", "617", "312", "206", "512", "303", "404", "646", "213")


def phone_expr(country: pl.Expr, u1: pl.Expr, u2: pl.Expr) -> pl.Expr:
    """A plausible, valid-looking number for the country, in that country's usual display format."""
    line4 = integer(u2, 0, 9999).cast(pl.String).str.zfill(4)
    exch = integer(u1, 200, 998).cast(pl.String)
    area = pick(u2, _US_AREA_CODES)
    digits7 = integer(u1, 2_000_000, 9_999_999).cast(pl.String)
    return (
        pl.when(country == "GB")
        .then(pl.format("+44 20 3{} {}", integer(u1, 100, 999).cast(pl.String), line4))
        .when(country == "DE")
        .then(pl.format("+49 30 {}", digits7))
        .when(country == "FR")
        .then(
            pl.format(
                "+33 1 {} {} {} {}",
                digits7.str.slice(0, 2),
                digits7.str.slice(2, 2),
                digits7.str.slice(4, 2),
                line4.str.slice(0, 2),
            )
        )
        .otherwise(pl.format("({}) {}-{}", area, exch.str.replace("555", "556"), line4))
    )


def people_frame(count: int, seed: int, *, salt: int = 0) -> pl.DataFrame:
    """``count`` people with ``person`` (0-based index) and their personal attributes."""
    base = pl.DataFrame({"person": pl.int_range(0, count, dtype=pl.Int64, eager=True)})
    idx = pl.col("person")
    return base.with_columns(
        pick(uniform(seed, salt + 1, idx), FIRST_NAMES).alias("first_name"),
        pick(uniform(seed, salt + 2, idx), LAST_NAMES).alias("last_name"),
        weighted(uniform(seed, salt + 3, idx), COUNTRIES).alias("country"),
        pick(uniform(seed, salt + 4, idx), TITLES).alias("title"),
    ).with_columns(
        phone_expr(pl.col("country"), uniform(seed, salt + 5, idx), uniform(seed, salt + 6, idx)).alias(
            "phone"
        ),
        # Not every person gives a phone number.
        (uniform(seed, salt + 7, idx) < 0.7).alias("has_phone"),
    )


def email_local_expr(first: pl.Expr, last: pl.Expr, style: pl.Expr) -> pl.Expr:
    """'jane.doe', 'jdoe' or 'jane' by ``style`` (0, 1, 2), ASCII-folded and lower-cased."""
    f = _ascii_lower(first)
    last_folded = _ascii_lower(last)
    return (
        pl.when(style == 0)
        .then(pl.format("{}.{}", f, last_folded))
        .when(style == 1)
        .then(pl.format("{}{}", f.str.slice(0, 1), last_folded))
        .otherwise(pl.format("{}_{}", f, last_folded.str.slice(0, 3)))
    )


_FOLD = {"ë": "e", "é": "e", "è": "e", "ü": "u", "ø": "o", "ç": "c", "ö": "o", "í": "i", "á": "a", "'": ""}


def _ascii_lower(name: pl.Expr) -> pl.Expr:
    out = name.str.to_lowercase()
    for src, dst in _FOLD.items():
        out = out.str.replace_all(src, dst, literal=True)
    return out.str.replace_all(r"[^a-z0-9]", "")
