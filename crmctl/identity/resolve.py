"""Clustering: which nodes (incoming records and existing contacts) are the same person, and why.

Input is two frames: ``nodes`` (node, first, last: normalised, first nickname-canonical) and
``keys`` (node, kind, value) with kinds email | helpdesk_id | phone | name_company. Blocking is by
key value only (group-bys and joins in polars); comparison is by labelled levels (see
:mod:`crmctl.identity.rules`); string similarity (rapidfuzz) runs once per *distinct* name pair.

Clustering is transitive over merge edges, with two guards against chains joining clearly
different people:
- a cluster whose members hold conflicting full names is rebuilt edge by edge (strongest first),
  refusing any union that would put conflicting names together; refused pairs go to review;
- name + company evidence only counts when the company is not expected to hold a namesake by
  chance (see :func:`_expected_namesakes`) and the block is unambiguous (a block where two
  clusters each have their own work address, their own personal address, their own phone or
  their own user id at one help desk holds two people).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations

import polars as pl
from rapidfuzz.distance import JaroWinkler

from crmctl.identity.normalize import FREE_MAIL_DOMAINS, name_forms
from crmctl.identity.rules import ResolutionRules

STRONG_RULES = ("email", "helpdesk_id", "phone")
RULE_ORDER = {"email": 0, "helpdesk_id": 1, "phone": 2, "name_company": 3}
SIMILAR_NAME = 0.7
EDGE_SCHEMA = {"a": pl.Int64, "b": pl.Int64, "rule": pl.String, "level": pl.String, "score": pl.Float64}


@dataclass
class Resolution:
    clusters: pl.DataFrame  # node, cluster (the smallest node of the cluster)
    edges: pl.DataFrame  # accepted merge edges: a, b, rule, level, score
    reviews: pl.DataFrame  # pairs in the review band: a, b, rule, level, score


def resolve(nodes: pl.DataFrame, keys: pl.DataFrame, rules: ResolutionRules) -> Resolution:
    """Cluster ``nodes`` (0..n-1) by the evidence in ``keys``."""
    nodes = nodes.select(
        pl.col("node").cast(pl.Int64), pl.col("first").cast(pl.String), pl.col("last").cast(pl.String)
    ).sort("node")
    keys = keys.select(pl.col("node").cast(pl.Int64), "kind", "value").drop_nulls().unique()
    names = _NameComparer(nodes, rules)

    strong = keys.filter(pl.col("kind").is_in(STRONG_RULES))
    pairs = _pairs(strong, rules)
    scored = _other_email_on_phone(names.score_pairs(pairs, rules), keys, rules)
    merge_edges = scored.filter(pl.col("score") >= rules.merge)
    reviews = scored.filter((pl.col("score") >= rules.review) & (pl.col("score") < rules.merge))

    clusters = connected(nodes.height, merge_edges)
    clusters, merge_edges, refused = _guard_chains(clusters, merge_edges, names)

    company_edges, company_reviews = _name_company_edges(keys, clusters, rules)
    if company_edges.height:
        merge_edges = pl.concat([merge_edges, company_edges])
        clusters = connected(nodes.height, merge_edges)
        clusters, merge_edges, refused_again = _guard_chains(clusters, merge_edges, names)
        refused = pl.concat([refused, refused_again])
    reviews = pl.concat([reviews, refused, company_reviews])
    # a review pair that ended up in one cluster anyway (joined by other evidence) is settled
    reviews = (
        reviews.join(clusters.rename({"node": "a", "cluster": "ca"}), on="a")
        .join(clusters.rename({"node": "b", "cluster": "cb"}), on="b")
        .filter(pl.col("ca") != pl.col("cb"))
        .sort(["score", "a", "b"], descending=[True, False, False])
        .unique(["ca", "cb"], keep="first", maintain_order=True)
        .select(list(EDGE_SCHEMA))
    )
    return Resolution(clusters=clusters, edges=merge_edges, reviews=reviews)


def connected(n_nodes: int, edges: pl.DataFrame) -> pl.DataFrame:
    """Connected components (union-find, path halving); each labelled by its smallest node."""
    parent = list(range(n_nodes))
    for x, y in zip(edges["a"].to_list(), edges["b"].to_list(), strict=True):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        while parent[y] != y:
            parent[y] = parent[parent[y]]
            y = parent[y]
        if x < y:
            parent[y] = x
        elif y < x:
            parent[x] = y
    # roots are the smallest node of their tree, so one forward pass settles every label
    for node in range(n_nodes):
        parent[node] = parent[parent[node]]
    return pl.DataFrame(
        {"node": range(n_nodes), "cluster": parent}, schema={"node": pl.Int64, "cluster": pl.Int64}
    )


def keep_apart(result: Resolution, apart: list[tuple[int, int]]) -> Resolution:
    """``result`` with no cluster holding both nodes of an ``apart`` pair: each such cluster is
    rebuilt edge by edge, strongest first, refusing a union that would join a pair (like the
    resolver's own chain guard); the refused edges go to review (callers leave out the pairs a
    person already decided). ``apart``: pairs of nodes whose contacts a person kept apart (a
    rejected review item, which an undone merge also leaves)."""
    cluster_of = dict(result.clusters.iter_rows())
    broken = {cluster_of[a] for a, b in apart if cluster_of[a] == cluster_of[b]}
    if not broken:
        return result
    edges = result.edges.with_columns(pl.col("a").replace_strict(cluster_of).alias("_cluster"))
    rebuild = edges.filter(pl.col("_cluster").is_in(list(broken))).sort(
        ["score", "a", "b"], descending=[True, False, False]
    )
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    members: dict[int, set[int]] = {}
    partners: dict[int, set[int]] = {}
    for a, b in apart:
        partners.setdefault(a, set()).add(b)
        partners.setdefault(b, set()).add(a)
    kept, refused = [], []
    for edge in rebuild.iter_rows(named=True):
        x, y = find(edge["a"]), find(edge["b"])
        if x == y:
            kept.append(edge)
            continue
        mx, my = members.setdefault(x, {x}), members.setdefault(y, {y})
        if any(partners.get(n, set()) & my for n in mx):
            refused.append(edge)
            continue
        parent[y] = x
        members[x] = mx | my
        kept.append(edge)
    schema = edges.schema
    merge_edges = pl.concat(
        [edges.filter(~pl.col("_cluster").is_in(list(broken))), pl.DataFrame(kept, schema=schema)]
    ).drop("_cluster")
    refused_edges = pl.DataFrame(refused, schema=schema).select(result.reviews.columns)
    return Resolution(
        clusters=connected(result.clusters.height, merge_edges),
        edges=merge_edges,
        reviews=pl.concat([result.reviews, refused_edges]),
    )


def _pairs(keys: pl.DataFrame, rules: ResolutionRules) -> pl.DataFrame:
    """Candidate pairs sharing a key: all pairs inside small blocks, a star inside larger ones."""
    sized = keys.with_columns(pl.len().over("kind", "value").alias("size")).filter(pl.col("size") > 1)
    small = sized.filter(pl.col("size") <= 12)
    full = (
        small.join(small, on=["kind", "value"], suffix="_b")
        .filter(pl.col("node") < pl.col("node_b"))
        .select(pl.col("node").alias("a"), pl.col("node_b").alias("b"), pl.col("kind").alias("rule"))
    )
    # bigger blocks: every node against the block's first node (transitivity does the rest);
    # phone blocks beyond max_block_size are switchboards and prove nothing
    big = sized.filter(
        (pl.col("size") > 12) & ((pl.col("kind") != "phone") | (pl.col("size") <= rules.max_block_size))
    )
    star = (
        big.with_columns(pl.col("node").min().over("kind", "value").alias("head"))
        .filter(pl.col("node") != pl.col("head"))
        .select(pl.col("head").alias("a"), pl.col("node").alias("b"), pl.col("kind").alias("rule"))
    )
    return (
        pl.concat([full, star])
        .with_columns(pl.col("rule").replace_strict(RULE_ORDER, return_dtype=pl.Int8).alias("order"))
        .sort("order", "a", "b")
        .unique(["a", "b"], keep="first", maintain_order=True)
        .drop("order")
    )


def _other_email_on_phone(scored: pl.DataFrame, keys: pl.DataFrame, rules: ResolutionRules) -> pl.DataFrame:
    """A shared phone between two records that each carry an email address, none in common, is a
    line two people share (a household with namesakes, Bill and William Smith): level
    ``other_email``, whose score caps the name's."""
    phone = scored.filter(pl.col("rule") == "phone")
    if phone.height == 0:
        return scored
    emails = keys.filter(pl.col("kind") == "email").group_by("node").agg(pl.col("value").alias("emails"))
    cap = rules.score("phone", "other_email")
    checked = (
        phone.join(emails.rename({"node": "a", "emails": "ea"}), on="a", how="left")
        .join(emails.rename({"node": "b", "emails": "eb"}), on="b", how="left")
        .with_columns(
            (
                pl.col("ea").is_not_null()
                & pl.col("eb").is_not_null()
                & (pl.col("ea").list.set_intersection("eb").list.len() == 0)
                & (pl.col("score") > cap)
            ).alias("other")
        )
        .select(
            "a",
            "b",
            "rule",
            pl.when(pl.col("other")).then(pl.lit("other_email")).otherwise(pl.col("level")).alias("level"),
            pl.when(pl.col("other")).then(pl.lit(cap)).otherwise(pl.col("score")).alias("score"),
        )
    )
    return pl.concat([scored.filter(pl.col("rule") != "phone"), checked])


class _NameComparer:
    """Name comparison levels, computed once per distinct pair of names."""

    def __init__(self, nodes: pl.DataFrame, rules: ResolutionRules) -> None:
        self.nodes = nodes
        self.similarity = rules.name_similarity
        self.first = nodes["first"].to_list()
        self.last = nodes["last"].to_list()
        self._levels: dict[tuple[str | None, ...], str] = {}  # the chain guard asks the same pairs again

    def score_pairs(self, pairs: pl.DataFrame, rules: ResolutionRules) -> pl.DataFrame:
        if pairs.height == 0:
            return pl.DataFrame(schema=EDGE_SCHEMA)
        named = pairs.join(self.nodes.rename({"node": "a", "first": "fa", "last": "la"}), on="a").join(
            self.nodes.rename({"node": "b", "first": "fb", "last": "lb"}), on="b"
        )
        distinct = named.select("fa", "la", "fb", "lb").unique()
        levels = distinct.with_columns(
            pl.Series("level", [self.level(*row) for row in distinct.iter_rows()], dtype=pl.String)
        )
        table = pl.DataFrame(
            [(rule, level, score) for rule, lv in rules.rules.items() for level, score in lv.items()],
            schema={"rule": pl.String, "level": pl.String, "score": pl.Float64},
            orient="row",
        )
        return (
            named.join(levels, on=["fa", "la", "fb", "lb"], nulls_equal=True)
            .join(table, on=["rule", "level"])
            .select(list(EDGE_SCHEMA))
        )

    def level(self, fa: str | None, la: str | None, fb: str | None, lb: str | None) -> str:
        """exact | compatible | similar | unknown | conflict for two (first, last) names.

        compatible: equal after nicknames, an initial, a typo (Jaro-Winkler >= name_similarity) or
        written swapped; similar: close but not that close (Jaro-Winkler >= 0.7 on each part,
        e.g. 'Jaak' / 'Jack'), enough beside an email, not beside a shared phone."""
        key = (fa, la, fb, lb)
        found = self._levels.get(key)
        if found is None:
            found = self._levels[key] = self._level(fa, la, fb, lb)
        return found

    def _level(self, fa: str | None, la: str | None, fb: str | None, lb: str | None) -> str:
        if (fa is None and la is None) or (fb is None and lb is None):
            return "unknown"
        if fa and la and fb and lb:
            if fa == fb and la == lb:
                return "exact"
            straight = min(self._sim(fa, fb), self._sim(la, lb))
            swapped = min(self._sim(fa, lb), self._sim(la, fb))
            return self._grade(max(straight, swapped))
        # a side with one part only (web forms: a first name): it may sit in either place
        if not (fa and la):
            x, ys = (fa or la), [y for y in (fb, lb) if y]
        else:
            x, ys = (fb or lb), [y for y in (fa, la) if y]
        assert x is not None
        return self._grade(max(self._sim(x, y) for y in ys if y is not None))

    def _grade(self, similarity: float) -> str:
        if similarity >= self.similarity:
            return "compatible"
        if similarity >= SIMILAR_NAME:
            return "similar"
        return "conflict"

    def conflicts(self, a: int, b: int) -> bool:
        return self.level(self.first[a], self.last[a], self.first[b], self.last[b]) == "conflict"

    @staticmethod
    @lru_cache(maxsize=500_000)
    def _sim(x: str, y: str) -> float:
        """Similarity of two name parts, nickname-canonical: the best over the forms each stands
        for, so a typo of a nickname ('Bety', 'Sndra') still matches its formal name."""
        if x == y:
            return 1.0
        xs, ys = name_forms(x), name_forms(y)
        if len(x) == 1 or len(y) == 1:  # an initial
            initial, forms = (x, ys) if len(x) == 1 else (y, xs)
            return 1.0 if any(f.startswith(initial) for f in forms) else 0.0
        return max(JaroWinkler.similarity(a, b) for a in xs for b in ys)


def _guard_chains(
    clusters: pl.DataFrame, edges: pl.DataFrame, names: _NameComparer
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Rebuild clusters whose members hold conflicting names, refusing the unions that join them."""
    named = clusters.join(names.nodes, on="node").filter(
        pl.col("first").is_not_null() | pl.col("last").is_not_null()
    )
    variants = named.select("cluster", "first", "last").unique()
    multi = variants.filter(pl.len().over("cluster") > 1)
    grouped = multi.group_by("cluster").agg("first", "last")
    suspect: set[int] = set()
    for cluster, firsts, lasts in grouped.iter_rows():
        people = list(zip(firsts, lasts, strict=True))
        if any(names.level(*p, *q) == "conflict" for p, q in combinations(people, 2)):
            suspect.add(cluster)
    if not suspect:
        return clusters, edges, pl.DataFrame(schema=EDGE_SCHEMA)
    members = clusters.filter(pl.col("cluster").is_in(list(suspect)))
    member_set = set(members["node"].to_list())
    inside = edges.filter(pl.col("a").is_in(member_set) & pl.col("b").is_in(member_set))
    ordered = inside.with_columns(
        pl.col("rule").replace_strict(RULE_ORDER, return_dtype=pl.Int8).alias("order")
    ).sort(["score", "order", "a", "b"], descending=[True, False, False, False])
    parent = {n: n for n in member_set}
    holders: dict[int, list[int]] = {n: [n] if names.first[n] or names.last[n] else [] for n in member_set}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    kept: list[tuple] = []
    refused: list[tuple] = []
    for a, b, rule, level, score, _ in ordered.iter_rows():
        ra, rb = find(a), find(b)
        if ra == rb:
            kept.append((a, b, rule, level, score))
            continue
        if any(names.conflicts(x, y) for x in holders[ra] for y in holders[rb]):
            refused.append((a, b, rule, "chain_conflict", score))
            continue
        root, child = min(ra, rb), max(ra, rb)
        parent[child] = root
        holders[root] = holders[root] + holders[child]
        kept.append((a, b, rule, level, score))
    rebuilt = pl.DataFrame(
        {"node": list(member_set), "cluster": [find(n) for n in member_set]},
        schema={"node": pl.Int64, "cluster": pl.Int64},
    )
    # a rebuilt cluster is labelled by its smallest node
    rebuilt = rebuilt.with_columns(pl.col("node").min().over("cluster").alias("cluster"))
    clusters = (
        clusters.join(rebuilt.rename({"cluster": "rebuilt"}), on="node", how="left")
        .select("node", pl.coalesce("rebuilt", "cluster").alias("cluster"))
        .sort("node")
    )
    others = edges.filter(~(pl.col("a").is_in(member_set) & pl.col("b").is_in(member_set)))
    kept_frame = pl.DataFrame(kept, schema=EDGE_SCHEMA, orient="row")
    refused_frame = pl.DataFrame(refused, schema=EDGE_SCHEMA, orient="row")
    return clusters, pl.concat([others, kept_frame]), refused_frame


def _expected_namesakes(block_keys: pl.DataFrame) -> pl.DataFrame:
    """Per block: how many *other* people with this name the company should hold by chance.

    (people at the company - 1) x P(first name) x P(last name), with the frequencies taken from
    the clusters in view (the batch and its candidates). 'James Smith' at a 5,000-person company
    expects about one namesake, so the name alone cannot tell them apart; 'Ngozi Okafor' at a
    40-person company expects almost none."""
    parts = block_keys.select("cluster", "value", pl.col("value").str.split("|").alias("parts")).with_columns(
        pl.col("parts").list.get(0).alias("n1"),
        pl.col("parts").list.get(1).alias("n2"),
        pl.col("parts").list.get(2).alias("company"),
    )
    people = parts.select("cluster").n_unique()
    tokens = pl.concat(
        [
            parts.select("cluster", pl.col("n1").alias("tok")),
            parts.select("cluster", pl.col("n2").alias("tok")),
        ]
    ).unique()
    frequency = tokens.group_by("tok").agg((pl.col("cluster").n_unique() / people).alias("p"))
    company_size = parts.group_by("company").agg(pl.col("cluster").n_unique().alias("size"))
    return (
        parts.select("value", "n1", "n2", "company")
        .unique()
        .join(frequency.rename({"tok": "n1", "p": "p1"}), on="n1")
        .join(frequency.rename({"tok": "n2", "p": "p2"}), on="n2")
        .join(company_size, on="company")
        .select("value", ((pl.col("size") - 1) * pl.col("p1") * pl.col("p2")).alias("expected_namesakes"))
    )


def _name_company_edges(
    keys: pl.DataFrame, clusters: pl.DataFrame, rules: ResolutionRules
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Join clusters that share a rare name at one company, when nothing says they are two people."""
    block_keys = keys.filter(pl.col("kind") == "name_company").join(clusters, on="node")
    blocks = block_keys.group_by("value").agg(
        pl.col("cluster").unique().alias("clusters"), pl.col("node").min().alias("head")
    )
    blocks = blocks.filter(
        (pl.col("clusters").list.len() > 1) & (pl.col("clusters").list.len() <= rules.max_block_size)
    )
    if blocks.height == 0:
        empty = pl.DataFrame(schema=EDGE_SCHEMA)
        return empty, empty
    # each cluster's own identities: work address, personal address, phone, helpdesk id (per desk)
    domain = pl.col("value").str.split("@").list.last()
    identities = (
        keys.filter(pl.col("kind").is_in(STRONG_RULES))
        .join(clusters, on="node")
        .select(
            "cluster",
            pl.when(pl.col("kind") == "email")
            .then(
                pl.when(domain.is_in(list(FREE_MAIL_DOMAINS)))
                .then(pl.lit("personal"))
                .otherwise(pl.lit("work"))
            )
            .when(pl.col("kind") == "helpdesk_id")
            .then(pl.lit("helpdesk:") + pl.col("value").str.split(":").list.first())
            .otherwise(pl.col("kind"))
            .alias("identity"),
        )
        .unique()
    )
    # two clusters of the block each holding an identity of one kind are two people: had they
    # shared it they would be one cluster already
    members = (
        blocks.explode("clusters").rename({"clusters": "cluster"}).join(identities, on="cluster", how="left")
    )
    verdict = (
        members.group_by("value", "identity")
        .agg((pl.col("cluster").n_unique() > 1).alias("two"))
        .group_by("value")
        .agg(pl.col("two").filter(pl.col("identity").is_not_null()).any().alias("two_people"))
    )
    verdict = verdict.join(_expected_namesakes(block_keys), on="value", how="left")
    common = pl.col("expected_namesakes").fill_null(0) > rules.max_expected_namesakes
    graded = verdict.with_columns(
        pl.when(pl.col("two_people"))
        .then(pl.lit("ambiguous"))
        .when(common)
        .then(pl.lit("common_name"))
        .otherwise(pl.lit("rare_name"))
        .alias("level")
    ).with_columns(
        pl.col("level").replace_strict(rules.rules["name_company"], return_dtype=pl.Float64).alias("score")
    )
    # one representative node per cluster in the block; pair every cluster with the block's first
    reps = (
        block_keys.join(graded, on="value")
        .group_by("value", "cluster")
        .agg(pl.col("node").min(), pl.col("level").first(), pl.col("score").first())
        .with_columns(pl.col("node").min().over("value").alias("head"))
        .filter(pl.col("node") != pl.col("head"))
        .select(
            pl.col("head").alias("a"),
            pl.col("node").alias("b"),
            pl.lit("name_company").alias("rule"),
            "level",
            "score",
        )
    )
    merges = reps.filter(pl.col("score") >= rules.merge)
    reviews = reps.filter((pl.col("score") >= rules.review) & (pl.col("score") < rules.merge))
    return merges, reviews
