"""Resolution rules as data: scores per rule and comparison level, thresholds, source trust.

A pair of records sharing a key (email, helpdesk id, phone, name + company) gets the score its rule
gives the *level* of their other evidence (for email / helpdesk / phone: how their names compare;
for name + company: how rare the name is and whether the block is ambiguous). A score at or above
``merge`` joins them; between ``review`` and ``merge`` the pair waits for a person; below, they stay
distinct. Defaults below; ``--config resolution.toml`` overrides any of them, e.g.::

    [thresholds]
    merge = 0.9
    review = 0.6

    [rules.phone]
    unknown = 0.4   # a shared phone with a name missing on one side: not enough

    [source_trust]
    event = 3
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crmctl.errors import ConfigError

NAME_LEVELS = ("exact", "compatible", "similar", "unknown", "conflict")
NAME_COMPANY_LEVELS = ("rare_name", "common_name", "ambiguous")

DEFAULT_RULES: dict[str, dict[str, float]] = {
    # same normalised email: the strongest evidence unless the names clearly differ
    "email": {"exact": 0.99, "compatible": 0.97, "similar": 0.93, "unknown": 0.97, "conflict": 0.7},
    # same helpdesk user id (scoped to the source)
    "helpdesk_id": {"exact": 0.99, "compatible": 0.97, "similar": 0.93, "unknown": 0.95, "conflict": 0.7},
    # same phone: households share lines, so the names must agree, and two records that each
    # carry an email address, none in common, wait for a person (other_email caps the name's score)
    "phone": {
        "exact": 0.95,
        "compatible": 0.92,
        "similar": 0.5,
        "unknown": 0.4,
        "conflict": 0.2,
        "other_email": 0.6,
    },
    # same name at the same company: only when the name is rare and the block unambiguous
    "name_company": {"rare_name": 0.92, "common_name": 0.5, "ambiguous": 0.2},
}
DEFAULT_SOURCE_TRUST = {"event": 3, "dialler": 2, "support": 2, "web_form": 1}


@dataclass(frozen=True)
class ResolutionRules:
    merge: float = 0.9
    review: float = 0.6
    rules: dict[str, dict[str, float]] = field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_RULES.items()}
    )
    # first/last-name similarity (Jaro-Winkler) above which a typo still counts as the same name
    name_similarity: float = 0.88
    # a phone or name+company block bigger than this is a switchboard / data junk: not evidence
    max_block_size: int = 200
    # name + company joins only when the company is expected to hold fewer namesakes than this
    max_expected_namesakes: float = 0.3
    source_trust: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_SOURCE_TRUST))

    def score(self, rule: str, level: str) -> float:
        return self.rules[rule][level]

    def outcome(self, score: float) -> str:
        if score >= self.merge:
            return "merge"
        if score >= self.review:
            return "review"
        return "distinct"

    def as_dict(self) -> dict[str, Any]:
        return {
            "thresholds": {"merge": self.merge, "review": self.review},
            "rules": self.rules,
            "name_similarity": self.name_similarity,
            "max_block_size": self.max_block_size,
            "max_expected_namesakes": self.max_expected_namesakes,
            "source_trust": self.source_trust,
        }


def load_rules(path: Path | None) -> ResolutionRules:
    """The default rules, overridden by the TOML file at ``path``; every problem listed at once."""
    if path is None:
        return ResolutionRules()
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"Cannot read the resolution config {path}: {exc.strerror}.") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"The resolution config {Path(path).name} is not valid TOML: {exc}.") from exc
    problems: list[str] = []
    base = ResolutionRules()
    rules = {k: dict(v) for k, v in base.rules.items()}
    known = {
        "thresholds",
        "rules",
        "name_similarity",
        "max_block_size",
        "max_expected_namesakes",
        "source_trust",
    }
    problems += [f"unknown section or key '{k}'" for k in data if k not in known]
    thresholds = data.get("thresholds", {})
    for name, section in (data.get("rules") or {}).items():
        if name not in rules:
            problems.append(f"unknown rule '{name}' (known: {', '.join(rules)})")
            continue
        for level, value in section.items():
            if level not in rules[name]:
                problems.append(
                    f"unknown level '{level}' for rule '{name}' (known: {', '.join(rules[name])})"
                )
            elif not isinstance(value, int | float) or not 0 <= value <= 1:
                problems.append(f"rules.{name}.{level} must be a number from 0 to 1")
            else:
                rules[name][level] = float(value)
    merge = thresholds.get("merge", base.merge)
    review = thresholds.get("review", base.review)
    for key in thresholds:
        if key not in {"merge", "review"}:
            problems.append(f"unknown threshold '{key}'")
    if not all(isinstance(v, int | float) and 0 <= v <= 1 for v in (merge, review)):
        problems.append("thresholds must be numbers from 0 to 1")
    elif review > merge:
        problems.append("thresholds.review must not be above thresholds.merge")
    trust = dict(base.source_trust)
    for source, value in (data.get("source_trust") or {}).items():
        if not isinstance(value, int):
            problems.append(f"source_trust.{source} must be an integer")
        else:
            trust[source] = value
    similarity = data.get("name_similarity", base.name_similarity)
    if not isinstance(similarity, int | float) or not 0 < similarity <= 1:
        problems.append("name_similarity must be a number above 0 and at most 1")
    block = data.get("max_block_size", base.max_block_size)
    if not isinstance(block, int) or block < 2:
        problems.append("max_block_size must be an integer of at least 2")
    namesakes = data.get("max_expected_namesakes", base.max_expected_namesakes)
    if not isinstance(namesakes, int | float) or namesakes < 0:
        problems.append("max_expected_namesakes must be a number of at least 0")
    if problems:
        raise ConfigError(f"The resolution config {Path(path).name} has problems: {'; '.join(problems)}.")
    return ResolutionRules(
        merge=float(merge),
        review=float(review),
        rules=rules,
        name_similarity=float(similarity),
        max_block_size=int(block),
        max_expected_namesakes=float(namesakes),
        source_trust=trust,
    )
