"""Deterministic randomness as polars expressions.

Every random column is a hash of the row index under a (seed, salt) pair, so a dataset is the same
for the same seed whatever its size or batch, and millions of rows cost one vectorised pass (no
Python loop, no numpy).
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

_MANTISSA = 1 << 53


def words(text: str) -> tuple[str, ...]:
    """A word list written as one string."""
    return tuple(text.split())


def uniform(seed: int, salt: int, index: pl.Expr | None = None) -> pl.Expr:
    """A float in [0, 1) per row, a pure function of (seed, salt, index)."""
    index = pl.int_range(pl.len(), dtype=pl.Int64) if index is None else index
    mixed = seed * 1_000_003 + salt * 7_919 + 17
    return (index.hash(seed=mixed) % _MANTISSA).cast(pl.Float64) / float(_MANTISSA)


def integer(u: pl.Expr, low: int, high: int) -> pl.Expr:
    """An integer in [low, high] from a uniform expression."""
    return (pl.lit(low) + (u * (high - low + 1)).floor()).cast(pl.Int64)


def pick(u: pl.Expr, options: Sequence[str]) -> pl.Expr:
    """One of ``options`` with equal chances."""
    idx = (u * len(options)).floor().cast(pl.Int64).clip(0, len(options) - 1)
    return idx.replace_strict(dict(enumerate(options)), return_dtype=pl.String)


def weighted(u: pl.Expr, options: Sequence[tuple[str, float]]) -> pl.Expr:
    """One of ``options`` with the given weights (they need not sum to one)."""
    total = sum(w for _, w in options)
    expr: pl.Expr | pl.When | pl.Then | None = None
    acc = 0.0
    for value, w in options[:-1]:
        acc += w / total
        expr = (
            pl.when(u < acc).then(pl.lit(value)) if expr is None else expr.when(u < acc).then(pl.lit(value))
        )
    last = pl.lit(options[-1][0])
    return last if expr is None else expr.otherwise(last)  # type: ignore[union-attr]
