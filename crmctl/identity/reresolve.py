"""`crmctl resolve`: run resolution again over the contacts already in the database.

Used after a migration import (contacts that never went through lead import) or after the rules
changed. This is a deliberate full pass: every surviving contact and its identifiers are read
(narrow columns), clustered with the same rules and guards as an import, and the duplicates found
are merged contact-to-contact with a merge decision each (undo with `crmctl merges undo`).

A pair a person kept apart stays apart: a rejected review pair, which is also what `merges undo`
leaves behind, is never merged again (a nightly resolve would otherwise reverse the undo), and
is not asked about again.
"""

from __future__ import annotations

from typing import Any

import polars as pl
from sqlalchemy import text
from sqlmodel import Session

from crmctl.db import bulk
from crmctl.db.engine import tenant_of
from crmctl.db.models import utcnow
from crmctl.identity.history import kept_apart, surviving_contacts
from crmctl.identity.normalize import NICKNAME_TO_CANONICAL
from crmctl.identity.resolve import keep_apart, resolve
from crmctl.identity.rules import ResolutionRules
from crmctl.identity.survivorship import fill_survivors
from crmctl.importers.leads import json_list


def resolve_existing(session: Session, rules: ResolutionRules, *, actor: str) -> dict[str, Any]:
    tenant = tenant_of(session)
    params = {"t": tenant}
    contacts = bulk.read_frame(
        session,
        "SELECT id, first_name_norm, last_name_norm, email, phone, first_name, last_name, company "
        "FROM contact WHERE tenant_id = :t AND merged_into_id IS NULL AND erased_at IS NULL ORDER BY id",
        params,
    )
    if contacts.height < 2:
        return {"contacts": contacts.height, "merged": 0, "sent_to_review": 0, "rules": {}}
    merged = bulk.read_frame(
        session,
        "SELECT id, merged_into_id FROM contact WHERE tenant_id = :t AND merged_into_id IS NOT NULL",
        params,
    )
    roots = surviving_contacts(merged)
    identifiers = bulk.read_frame(
        session,
        "SELECT contact_id, kind, value FROM contact_identifier WHERE tenant_id = :t AND kind IN "
        "('email', 'phone', 'helpdesk_id', 'name_company')",
        params,
    )
    nodes = contacts.with_row_index("node").with_columns(
        pl.col("node").cast(pl.Int64),
        pl.col("first_name_norm").cast(pl.String).alias("first"),
        pl.col("last_name_norm")
        .cast(pl.String)
        .str.replace_all(" ", "")
        .replace(NICKNAME_TO_CANONICAL)
        .alias("last"),
    )
    keys = (
        identifiers.with_columns(pl.col("contact_id").replace(roots))
        .join(nodes.select("node", pl.col("id").alias("contact_id")), on="contact_id")
        .select("node", "kind", "value")
    )
    result = resolve(nodes.select("node", "first", "last"), keys, rules)
    result = keep_apart(result, kept_apart(session, dict(nodes.select("id", "node").iter_rows()), roots))
    clusters = result.clusters.join(nodes.select("node", "id"), on="node")
    groups = clusters.group_by("cluster").agg(pl.col("id").sort()).filter(pl.col("id").list.len() > 1)
    edges = result.edges.join(result.clusters.rename({"node": "a"}), on="a")
    summary = edges.group_by("cluster").agg(
        pl.col("rule").sort_by("score", descending=True).first().alias("rule"),
        pl.col("score").min().alias("score"),
        pl.concat_str("rule", "level", separator=":").unique().sort().alias("levels"),
    )
    candidates = (
        clusters.join(contacts, on="id")
        .group_by("cluster")
        .agg(
            pl.struct(
                pl.col("id").alias("contact_id"), "email", "phone", "first_name", "last_name", "company"
            ).alias("candidates")
        )
    )
    decisions = (
        groups.join(summary, on="cluster")
        .join(candidates, on="cluster")
        .with_columns(pl.col("id").list.first().alias("winner"))
        .explode("id")
        .filter(pl.col("id") != pl.col("winner"))
    )
    now = utcnow()
    if decisions.height:
        ids = bulk.allocate_ids(session, "merge_decision", decisions.height)
        bulk.insert_frame(
            session,
            "merge_decision",
            decisions.select(
                pl.Series("id", ids, dtype=pl.Int64),
                pl.lit(tenant).alias("tenant_id"),
                pl.lit("contact").alias("kind"),
                "rule",
                "score",
                pl.col("winner").alias("winner_contact_id"),
                pl.col("id").alias("loser_contact_id"),
                pl.struct(pl.col("levels").alias("edges")).struct.json_encode().alias("levels"),
                json_list("candidates").alias("candidates"),
                pl.lit(actor).alias("actor"),
                pl.lit(now).alias("created_at"),
            ),
        )
        session.connection().execute(
            text(
                "UPDATE contact SET merged_into_id = :w, updated_at = :now WHERE tenant_id = :t AND id = :l"
            ),
            [
                {"w": w, "l": loser, "now": now, "t": tenant}
                for w, loser in decisions.select("winner", "id").iter_rows()
            ],
        )
        # survivorship: each survivor takes the merged contacts' values for the fields it lacks
        merges = zip(ids, decisions["winner"].to_list(), decisions["id"].to_list(), strict=True)
        fill_survivors(session, list(merges), now)
    reviews = _new_reviews(session, result.reviews, nodes, tenant, now)
    return {
        "contacts": contacts.height,
        "merged": decisions.height,
        "sent_to_review": reviews,
        "rules": dict(result.edges.group_by("rule").len().iter_rows()),
    }


def _new_reviews(session: Session, reviews: pl.DataFrame, nodes: pl.DataFrame, tenant: str, now: Any) -> int:
    if reviews.height == 0:
        return 0
    ids = nodes.select("node", "id")
    pairs = (
        reviews.join(ids.rename({"node": "a", "id": "left"}), on="a")
        .join(ids.rename({"node": "b", "id": "right"}), on="b")
        .with_columns(
            pl.min_horizontal("left", "right").alias("left_contact_id"),
            pl.max_horizontal("left", "right").alias("right_contact_id"),
        )
        .unique(["left_contact_id", "right_contact_id"])
    )
    known = bulk.read_frame(
        session,
        "SELECT left_contact_id, right_contact_id FROM review_item WHERE tenant_id = :t",
        {"t": tenant},
    )
    if known.height:
        pairs = pairs.join(
            known.with_columns(pl.all().cast(pl.Int64)),
            on=["left_contact_id", "right_contact_id"],
            how="anti",
        )
    bulk.insert_frame(
        session,
        "review_item",
        pairs.select(
            pl.lit(tenant).alias("tenant_id"),
            "left_contact_id",
            "right_contact_id",
            "rule",
            "score",
            pl.struct("rule", "level").struct.json_encode().alias("levels"),
            pl.lit("open").alias("status"),
            pl.lit(now).alias("created_at"),
        ),
    )
    return pairs.height
