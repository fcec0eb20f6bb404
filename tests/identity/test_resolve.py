"""Clustering rules: name comparison levels and the guards the issue asks for."""

from __future__ import annotations

import polars as pl

from crmctl.identity.resolve import resolve
from crmctl.identity.rules import ResolutionRules


def _clusters(names: list[tuple[str | None, str | None]], keys: list[tuple[int, str, str]]) -> list[int]:
    nodes = pl.DataFrame(
        {"node": range(len(names)), "first": [f for f, _ in names], "last": [la for _, la in names]},
        schema={"node": pl.Int64, "first": pl.String, "last": pl.String},
    )
    frame = pl.DataFrame(keys, schema={"node": pl.Int64, "kind": pl.String, "value": pl.String}, orient="row")
    return resolve(nodes, frame, ResolutionRules()).clusters.sort("node")["cluster"].to_list()


def test_a_typo_of_a_nickname_matches_the_formal_name() -> None:
    # 'Betty' is stored as 'elizabeth'; 'Bety' (a typo of the nickname) is close to 'betty'
    email = "betty.gordon@acme.com"
    assert _clusters(
        [("elizabeth", "gordon"), ("bety", None)], [(0, "email", email), (1, "email", email)]
    ) == [
        0,
        0,
    ]
    # 'Sandra' is stored as 'alexandra'; 'Sndra' is a typo of 'sandra'
    email = "sandra.perez@acme.com"
    assert _clusters(
        [("alexandra", "perez"), ("sndra", "perez")], [(0, "email", email), (1, "email", email)]
    ) == [
        0,
        0,
    ]
    # an initial matches a nickname's first letter too ('S. Perez' beside 'Sandra Perez')
    phone = "+12125550144"
    assert _clusters(
        [("alexandra", "perez"), ("s", "perez")], [(0, "phone", phone), (1, "phone", phone)]
    ) == [
        0,
        0,
    ]


def test_a_shared_phone_alone_never_merges_different_names() -> None:
    phone = "+12125550144"
    keys = [(0, "phone", phone), (1, "phone", phone)]
    assert _clusters([("robert", "lee"), ("susan", "lee")], keys) == [0, 1]
    # nicknames do not open the door either: Kate and Liz share no form
    assert _clusters([("katherine", "lee"), ("elizabeth", "lee")], keys) == [0, 1]


def test_a_chain_of_clearly_different_people_is_refused() -> None:
    # A and C share nothing but each shares an email with B, who has no name
    keys = [
        (0, "email", "x@a.com"),
        (1, "email", "x@a.com"),
        (1, "email", "y@b.com"),
        (2, "email", "y@b.com"),
    ]
    clusters = _clusters([("robert", "lee"), (None, None), ("susan", "okafor")], keys)
    assert clusters[0] != clusters[2]
