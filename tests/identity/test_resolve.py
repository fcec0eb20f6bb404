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


def _company_of_strangers(extra_keys: list[tuple[int, str, str]]) -> list[int]:
    """Ngozi Okafor twice at Acme among 40 colleagues with other names (a rare name there)."""
    names: list[tuple[str | None, str | None]] = [("ngozi", "okafor"), ("ngozi", "okafor")]
    keys = [(0, "name_company", "ngozi|okafor|acme"), (1, "name_company", "ngozi|okafor|acme")]
    for i in range(40):
        first, last = f"first{i}", f"last{i}"
        names.append((first, last))
        keys.append((i + 2, "name_company", f"{first}|{last}|acme"))
        keys.append((i + 2, "email", f"{first}.{last}@acme.com"))
    return _clusters(names, keys + extra_keys)[:2]


def test_a_rare_name_at_one_company_joins_a_work_and_a_personal_identity() -> None:
    joined = _company_of_strangers([(0, "email", "ngozi.okafor@acme.com"), (1, "email", "ngozi77@gmail.com")])
    assert joined == [0, 0]


def test_two_identities_of_one_kind_in_a_name_block_are_two_people() -> None:
    # each has a user id at the same help desk (or a phone) of their own: namesakes, not one person
    for kind, a, b in (
        ("helpdesk_id", "support:HD-1", "support:HD-2"),
        ("phone", "+12125550144", "+12125550177"),
    ):
        assert _company_of_strangers([(0, kind, a), (1, kind, b)]) == [0, 1], kind
    # ids at two different help desks say nothing
    assert _company_of_strangers([(0, "helpdesk_id", "support:HD-1"), (1, "helpdesk_id", "zendesk:7")]) == [
        0,
        0,
    ]


def test_a_shared_phone_with_two_different_addresses_waits_for_a_person() -> None:
    # Bill and William Smith of one household: one line, one formal name, each their own address
    phone = "+17025550143"
    keys = [(0, "phone", phone), (0, "email", "billsmith39@gmail.com")]
    keys += [(1, "phone", phone), (1, "email", "williamsmith4@gmail.com")]
    nodes = pl.DataFrame(
        {"node": [0, 1], "first": ["william", "william"], "last": ["smith", "smith"]},
        schema={"node": pl.Int64, "first": pl.String, "last": pl.String},
    )
    frame = pl.DataFrame(keys, schema={"node": pl.Int64, "kind": pl.String, "value": pl.String}, orient="row")
    resolution = resolve(nodes, frame, ResolutionRules())
    assert resolution.clusters["cluster"].to_list() == [0, 1]
    assert resolution.reviews.select("rule", "level").rows() == [("phone", "other_email")]
    # the same line and name with one address missing (a dialler row without email) is one person
    assert _clusters([("william", "smith"), ("william", "smith")], keys[:3]) == [0, 0]
