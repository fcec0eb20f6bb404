"""Health models: a TOML (or YAML) file of segments, signals, normalisations, weights and bands.

A model is configuration data, validated as a whole before anything runs: every problem is
reported with the line it is on, in one error. Its version is a hash of its text, so a snapshot
names exactly the model that produced it.

Shape (see ``default_model.toml`` for a complete, commented example)::

    name = "default"
    rollup = "arr_weighted"          # parent accounts: average | arr_weighted of their children

    [bands]                          # must tile 0..100 without gaps or overlaps
    red = { min = 0, max = 40 }
    amber = { min = 40, max = 70 }
    green = { min = 70, max = 100 }

    [signals.logins]                 # a built-in signal; any key below overrides its default
    source = "product_usage"
    events = ["login"]
    aggregation = "sum"
    window_days = 30
    normalise = "percentile"         # zscore | percentile (within the segment) | target | none
    direction = "higher"             # higher | lower is better
    weight = 15
    missing = "zero"                 # neutral | worst | best | zero | skip

    [segments.enterprise]            # predicates over account fields; segments must not overlap
    match = { arr_tier = ["enterprise"] }
    weights = { logins = 10 }        # per-segment weights override the signal's weight
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from crmctl import configfile
from crmctl.errors import ConfigError

DEFAULT_MODEL_FILE = "default_model.toml"

# source -> the aggregations it supports (each is one SQL or polars expression per account)
AGGREGATIONS: dict[str, frozenset[str]] = {
    "product_usage": frozenset({"count", "sum", "distinct_features", "entitled_feature_share", "trend"}),
    "interaction": frozenset({"count", "days_since_last", "latest_score", "mean_score"}),
    "support_ticket": frozenset({"open_weighted", "mean_sentiment", "escalations", "opened", "mean_csat"}),
    "contract": frozenset({"days_to_renewal"}),
    "manual": frozenset({"latest"}),
}
NORMALISATIONS = ("zscore", "percentile", "target", "none")
DIRECTIONS = ("higher", "lower")
MISSING_POLICIES = ("neutral", "worst", "best", "zero", "skip")
ROLLUPS = ("average", "arr_weighted")
BAND_NAMES = ("red", "amber", "green")
SEGMENT_FIELDS = ("arr_tier", "plan", "industry", "segment", "country", "contract_type")
DEFAULT_PRIORITY_WEIGHTS = {"low": 0.5, "normal": 1.0, "high": 2.0, "urgent": 4.0}
UNSEGMENTED = "unsegmented"

# The built-in signals of the two families. A model may override any key; a signal not listed
# here must name its own source and aggregation.
BUILTIN_SIGNALS: dict[str, dict[str, Any]] = {
    # product engagement
    "logins": {"source": "product_usage", "events": ["login"], "aggregation": "sum", "window_days": 30},
    "feature_adoption": {
        "source": "product_usage",
        "events": ["feature_used"],
        "aggregation": "entitled_feature_share",
        "window_days": 30,
    },
    "usage_volume": {
        "source": "product_usage",
        "events": ["data_volume_mb"],
        "aggregation": "sum",
        "window_days": 30,
    },
    "api_calls": {"source": "product_usage", "events": ["api_call"], "aggregation": "sum", "window_days": 30},
    "integrations": {
        "source": "product_usage",
        "events": ["integration_connected"],
        "aggregation": "distinct_features",
        "window_days": 60,
    },
    "usage_trend": {
        "source": "product_usage",
        "events": ["login", "feature_used", "api_call"],
        "aggregation": "trend",
        "window_days": 30,
    },
    # relationship
    "days_since_csm_contact": {
        "source": "interaction",
        "kinds": ["email", "call", "meeting"],
        "aggregation": "days_since_last",
        "window_days": 0,
    },
    "open_tickets": {"source": "support_ticket", "aggregation": "open_weighted", "window_days": 0},
    "ticket_sentiment": {"source": "support_ticket", "aggregation": "mean_sentiment", "window_days": 90},
    "nps": {"source": "interaction", "kinds": ["nps"], "aggregation": "latest_score", "window_days": 365},
    "csat": {"source": "interaction", "kinds": ["csat"], "aggregation": "latest_score", "window_days": 180},
    "escalations": {"source": "support_ticket", "aggregation": "escalations", "window_days": 90},
    "days_to_renewal": {"source": "contract", "aggregation": "days_to_renewal", "window_days": 0},
    "csm_judgement": {"source": "manual", "aggregation": "latest", "window_days": 0},
}

_SIGNAL_KEYS = frozenset(
    {
        "source",
        "events",
        "kinds",
        "aggregation",
        "window_days",
        "normalise",
        "target",
        "direction",
        "weight",
        "missing",
        "priority_weights",
        "description",
    }
)
_TOP_KEYS = frozenset({"name", "description", "rollup", "bands", "signals", "segments"})
_SEGMENT_KEYS = frozenset({"match", "otherwise", "weights", "description"})


@dataclass(frozen=True)
class Band:
    name: str
    min: float
    max: float


@dataclass(frozen=True)
class SignalSpec:
    name: str
    source: str
    aggregation: str
    window_days: int  # 0: all history up to the as-of date
    filter: tuple[str, ...]  # product_usage events / interaction kinds this signal counts
    normalise: str
    target: tuple[float, float] | None
    direction: str
    weight: float
    missing: str
    priority_weights: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Segment:
    name: str
    match: dict[str, frozenset[str]]  # field -> accepted values (AND across fields)
    otherwise: bool
    weights: dict[str, float]


@dataclass(frozen=True)
class HealthModel:
    name: str
    version: str
    body: str
    rollup: str
    bands: tuple[Band, ...]  # ascending by min, tiling 0..100
    signals: tuple[SignalSpec, ...]  # sorted by name: the order composites are summed in
    segments: tuple[Segment, ...]

    def weight(self, segment: str, signal: SignalSpec) -> float:
        for seg in self.segments:
            if seg.name == segment:
                return seg.weights.get(signal.name, signal.weight)
        return signal.weight

    def band_of(self, composite: float) -> str:
        band = self.bands[0].name
        for b in self.bands:
            if composite >= b.min:
                band = b.name
        return band

    @property
    def segment_names(self) -> list[str]:
        names = [s.name for s in self.segments]
        return names if any(s.otherwise for s in self.segments) else [*names, UNSEGMENTED]


def model_version(body: str) -> str:
    """The content hash that identifies a model (first 16 hex digits of SHA-256)."""
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def default_model_text() -> str:
    return resources.files("crmctl.health").joinpath(DEFAULT_MODEL_FILE).read_text(encoding="utf-8")


def load_model(path: Path | None = None) -> HealthModel:
    """Read and validate a model file (the packaged default when ``path`` is None)."""
    if path is None:
        return parse_model(default_model_text(), source="the default model")
    body = configfile.read(path, "health model")
    return parse_model(body, source=str(path), yaml_syntax=configfile.is_yaml(path))


class _Problems:
    """Collects every problem with its line, then raises once."""

    def __init__(self, body: str, source: str, yaml_syntax: bool) -> None:
        self.lines = configfile.key_lines(body, yaml_syntax=yaml_syntax)
        self.source = source
        self.items: list[tuple[int, str]] = []

    def line(self, *path: str) -> int:
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return 1

    def add(self, path: tuple[str, ...], sentence: str) -> None:
        self.items.append((self.line(*path), sentence))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        ordered = sorted(set(self.items))
        detail = "; ".join(f"line {n}: {s}" for n, s in ordered)
        raise ConfigError(
            f"The health model {self.source} is invalid ({len(ordered)} problem(s)): {detail}.",
            hint="Fix the model file; nothing was written.",
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _strings(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def parse_model(body: str, *, source: str = "file", yaml_syntax: bool | None = None) -> HealthModel:
    """Validate ``body`` (TOML, or YAML; None = tell from the text) and build the model; raise one
    ConfigError listing every problem."""
    if yaml_syntax is None:
        yaml_syntax = configfile.looks_like_yaml(body)
    hint = "Fix the file; nothing was written."
    data = configfile.parse(body, yaml_syntax=yaml_syntax, what="health model", source=source, hint=hint)
    problems = _Problems(body, source, yaml_syntax)
    for key in data:
        if key not in _TOP_KEYS:
            problems.add((key,), f"unknown key '{key}' (expected one of {', '.join(sorted(_TOP_KEYS))})")
    name = data.get("name", "unnamed")
    if not isinstance(name, str):
        problems.add(("name",), "'name' must be a string")
        name = "unnamed"
    rollup = data.get("rollup", "average")
    if rollup not in ROLLUPS:
        problems.add(("rollup",), f"rollup must be one of {', '.join(ROLLUPS)}")
    bands = _parse_bands(data.get("bands"), problems)
    signals = _parse_signals(data.get("signals"), problems)
    segments = _parse_segments(data.get("segments"), {s.name: s for s in signals}, problems)
    problems.raise_if_any()
    return HealthModel(
        name=name,
        version=model_version(body),
        body=body,
        rollup=rollup,
        bands=bands,
        signals=tuple(sorted(signals, key=lambda s: s.name)),
        segments=segments,
    )


def _parse_bands(raw: Any, problems: _Problems) -> tuple[Band, ...]:
    if not isinstance(raw, dict):
        problems.add(("bands",), "a [bands] table with red, amber and green is required")
        return ()
    bands: list[Band] = []
    for name, spec in raw.items():
        if name not in BAND_NAMES:
            problems.add(("bands", name), f"unknown band '{name}' (bands are red, amber and green)")
            continue
        if not isinstance(spec, dict) or not _is_number(spec.get("min")) or not _is_number(spec.get("max")):
            problems.add(
                ("bands", name), f"band '{name}' needs numeric min and max, e.g. {{ min = 0, max = 40 }}"
            )
            continue
        if spec["min"] >= spec["max"]:
            problems.add(("bands", name), f"band '{name}' must have min below max")
            continue
        bands.append(Band(name, float(spec["min"]), float(spec["max"])))
    missing = [b for b in BAND_NAMES if b not in raw]
    if missing:
        problems.add(("bands",), f"[bands] is missing {', '.join(missing)}")
    bands.sort(key=lambda b: b.min)
    if bands and bands[0].min != 0:
        problems.add(("bands", bands[0].name), f"bands leave a gap: nothing covers 0 to {bands[0].min:g}")
    if bands and bands[-1].max != 100:
        problems.add(("bands", bands[-1].name), f"bands leave a gap: nothing covers {bands[-1].max:g} to 100")
    for low, high in zip(bands, bands[1:], strict=False):
        if high.min > low.max:
            problems.add(
                ("bands", high.name),
                f"bands leave a gap between {low.max:g} and {high.min:g} ({low.name} ends at {low.max:g}, "
                f"{high.name} starts at {high.min:g})",
            )
        elif high.min < low.max:
            problems.add(("bands", high.name), f"bands {low.name} and {high.name} overlap")
    return tuple(bands)


def _parse_signals(raw: Any, problems: _Problems) -> list[SignalSpec]:
    if not isinstance(raw, dict) or not raw:
        problems.add(("signals",), "at least one [signals.NAME] table is required")
        return []
    signals: list[SignalSpec] = []
    for name, given in raw.items():
        path = ("signals", name)
        if not isinstance(given, dict):
            problems.add(path, f"signal '{name}' must be a table")
            continue
        if name not in BUILTIN_SIGNALS and "source" not in given:
            problems.add(
                path,
                f"unknown signal '{name}': not a built-in signal and no source given "
                f"(built-in signals: {', '.join(sorted(BUILTIN_SIGNALS))})",
            )
            continue
        spec = {**BUILTIN_SIGNALS.get(name, {}), **given}
        bad_keys = [k for k in given if k not in _SIGNAL_KEYS]
        for k in bad_keys:
            problems.add((*path, k), f"unknown key '{k}' in signal '{name}'")
        parsed = _parse_signal(name, spec, path, problems)
        if parsed is not None and not bad_keys:
            signals.append(parsed)
    return signals


def _parse_signal(
    name: str, spec: dict[str, Any], path: tuple[str, ...], problems: _Problems
) -> SignalSpec | None:
    ok = True
    source = spec.get("source")
    if source not in AGGREGATIONS:
        problems.add(
            (*path, "source"), f"signal '{name}' has unknown source (one of {', '.join(AGGREGATIONS)})"
        )
        return None
    aggregation = spec.get("aggregation")
    if aggregation not in AGGREGATIONS[source]:
        problems.add(
            (*path, "aggregation"),
            f"signal '{name}': aggregation must be one of {', '.join(sorted(AGGREGATIONS[source]))} "
            f"for source {source}",
        )
        ok = False
    filter_key = {"product_usage": "events", "interaction": "kinds"}.get(source)
    values: list[str] = []
    if filter_key is not None:
        values = _strings(spec.get(filter_key)) or []
        if not values:
            problems.add(
                (*path, filter_key), f"signal '{name}' needs {filter_key} = [...] (a list of strings)"
            )
            ok = False
    window = spec.get("window_days", 0)
    if not isinstance(window, int) or isinstance(window, bool) or window < 0:
        problems.add(
            (*path, "window_days"), f"signal '{name}': window_days must be a whole number of days >= 0"
        )
        ok = False
    elif aggregation == "trend" and window == 0:
        problems.add((*path, "window_days"), f"signal '{name}': a trend needs window_days > 0")
        ok = False
    normalise = spec.get("normalise", "percentile")
    if normalise not in NORMALISATIONS:
        problems.add(
            (*path, "normalise"), f"signal '{name}': normalise must be one of {', '.join(NORMALISATIONS)}"
        )
        ok = False
    target = spec.get("target")
    target_pair: tuple[float, float] | None = None
    if normalise == "target":
        if (
            not isinstance(target, list)
            or len(target) != 2
            or not all(_is_number(t) for t in target)
            or target[0] >= target[1]
        ):
            problems.add(
                (*path, "target"), f"signal '{name}': target must be [low, high] numbers with low < high"
            )
            ok = False
        else:
            target_pair = (float(target[0]), float(target[1]))
    direction = spec.get("direction", "higher")
    if direction not in DIRECTIONS:
        problems.add(
            (*path, "direction"), f"signal '{name}': direction must be 'higher' or 'lower' (is better)"
        )
        ok = False
    weight = spec.get("weight", 0)
    if not _is_number(weight):
        problems.add((*path, "weight"), f"signal '{name}': weight is not a number")
        ok = False
    elif weight < 0:
        problems.add((*path, "weight"), f"signal '{name}': weight must not be negative")
        ok = False
    missing = spec.get("missing", "neutral")
    if missing not in MISSING_POLICIES:
        problems.add(
            (*path, "missing"), f"signal '{name}': missing must be one of {', '.join(MISSING_POLICIES)}"
        )
        ok = False
    priority_weights = dict(DEFAULT_PRIORITY_WEIGHTS)
    given_pw = spec.get("priority_weights")
    if given_pw is not None:
        if not isinstance(given_pw, dict) or not all(_is_number(v) for v in given_pw.values()):
            problems.add(
                (*path, "priority_weights"), f"signal '{name}': priority_weights values must be numbers"
            )
            ok = False
        else:
            priority_weights = {str(k): float(v) for k, v in given_pw.items()}
    if not ok:
        return None
    return SignalSpec(
        name=name,
        source=source,
        aggregation=aggregation,
        window_days=window,
        filter=tuple(values),
        normalise=normalise,
        target=target_pair,
        direction=direction,
        weight=float(weight),
        missing=missing,
        priority_weights=priority_weights,
    )


def _parse_segments(raw: Any, signals: dict[str, SignalSpec], problems: _Problems) -> tuple[Segment, ...]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.add(("segments",), "[segments] must be tables like [segments.enterprise]")
        return ()
    segments: list[Segment] = []
    for name, spec in raw.items():
        path = ("segments", name)
        if not isinstance(spec, dict):
            problems.add(path, f"segment '{name}' must be a table")
            continue
        for k in spec:
            if k not in _SEGMENT_KEYS:
                problems.add((*path, k), f"unknown key '{k}' in segment '{name}'")
        otherwise = spec.get("otherwise", False)
        if not isinstance(otherwise, bool):
            problems.add((*path, "otherwise"), f"segment '{name}': otherwise must be true or false")
            otherwise = False
        match: dict[str, frozenset[str]] = {}
        raw_match = spec.get("match", {})
        if not isinstance(raw_match, dict):
            problems.add((*path, "match"), f"segment '{name}': match must be a table of field = [values]")
            raw_match = {}
        for fld, values in raw_match.items():
            if fld not in SEGMENT_FIELDS:
                problems.add(
                    (*path, "match", fld),
                    f"segment '{name}' matches on unknown field '{fld}' "
                    f"(fields: {', '.join(SEGMENT_FIELDS)})",
                )
                continue
            listed = _strings(values)
            if listed is None:
                problems.add(
                    (*path, "match", fld), f"segment '{name}': {fld} must be a string or a list of strings"
                )
                continue
            match[fld] = frozenset(listed)
        if otherwise and match:
            problems.add(
                (*path, "otherwise"), f"segment '{name}' is 'otherwise' and cannot also have a match"
            )
        if not otherwise and not raw_match:
            problems.add(path, f"segment '{name}' needs a match (or otherwise = true for everything else)")
        weights: dict[str, float] = {}
        raw_weights = spec.get("weights", {})
        if not isinstance(raw_weights, dict):
            problems.add((*path, "weights"), f"segment '{name}': weights must be a table of signal = number")
            raw_weights = {}
        for signal, weight in raw_weights.items():
            if signal not in signals and signal not in BUILTIN_SIGNALS:
                problems.add(
                    (*path, "weights", signal), f"segment '{name}' weights unknown signal '{signal}'"
                )
            elif signal not in signals:
                problems.add(
                    (*path, "weights", signal),
                    f"segment '{name}' weights signal '{signal}', which this model does not declare",
                )
            elif not _is_number(weight):
                problems.add(
                    (*path, "weights", signal), f"segment '{name}': the weight of '{signal}' is not a number"
                )
            elif weight < 0:
                problems.add(
                    (*path, "weights", signal), f"segment '{name}': the weight of '{signal}' is negative"
                )
            else:
                weights[signal] = float(weight)
        segments.append(Segment(name=name, match=match, otherwise=otherwise, weights=weights))
    if sum(s.otherwise for s in segments) > 1:
        names = [s.name for s in segments if s.otherwise]
        problems.add(("segments", names[1]), f"only one segment may be 'otherwise' ({', '.join(names)} are)")
    for i, left in enumerate(segments):
        for right in segments[i + 1 :]:
            example = _overlap(left, right)
            if example is not None:
                problems.add(
                    ("segments", right.name), f"segments '{left.name}' and '{right.name}' overlap: {example}"
                )
    names = [s.name for s in segments] or [UNSEGMENTED]
    for seg_name in names:
        seg = next((s for s in segments if s.name == seg_name), None)
        total = sum((seg.weights.get(s.name, s.weight) if seg else s.weight) for s in signals.values())
        if signals and total <= 0:
            problems.add(
                ("segments", seg_name) if seg else ("signals",),
                f"segment '{seg_name}' has no positive weight",
            )
    return tuple(segments)


def _overlap(left: Segment, right: Segment) -> str | None:
    """An account both segments would match, described, or None when they are disjoint.

    Predicates are conjunctions of 'field in values', so two segments overlap exactly when every
    field both constrain shares a value (a field only one constrains can take any value)."""
    if left.otherwise or right.otherwise:
        return None
    example: list[str] = []
    for fld in sorted(set(left.match) | set(right.match)):
        if fld in left.match and fld in right.match:
            common = left.match[fld] & right.match[fld]
            if not common:
                return None
            example.append(f"{fld} '{sorted(common)[0]}'")
        else:
            values = left.match.get(fld) or right.match.get(fld) or frozenset()
            example.append(f"{fld} '{sorted(values)[0]}'")
    return "an account with " + " and ".join(example) + " would match both"
