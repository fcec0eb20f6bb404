"""The health model file: the default loads; every kind of mistake is one error naming its line."""

from __future__ import annotations

import hashlib
import re
from itertools import product

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crmctl.errors import ConfigError
from crmctl.health.model import Segment, _overlap, default_model_text, load_model, parse_model

VALID = """\
name = "t"
rollup = "average"

[bands]
red = { min = 0, max = 40 }
amber = { min = 40, max = 70 }
green = { min = 70, max = 100 }

[signals.logins]
weight = 10

[signals.nps]
weight = 5

[segments.enterprise]
match = { arr_tier = ["enterprise"] }
weights = { logins = 20 }

[segments.rest]
otherwise = true
"""


def _error(body: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_model(body, source="m.toml")
    return str(info.value)


def test_default_model_is_valid_and_versioned_by_its_text() -> None:
    model = load_model()
    assert model.version == hashlib.sha256(default_model_text().encode()).hexdigest()[:16]
    assert {"logins", "feature_adoption", "days_since_csm_contact", "nps", "days_to_renewal"} <= {
        s.name for s in model.signals
    }
    assert [b.name for b in model.bands] == ["red", "amber", "green"]


def test_a_valid_model_parses_with_segment_weights() -> None:
    model = parse_model(VALID)
    logins = next(s for s in model.signals if s.name == "logins")
    assert model.weight("enterprise", logins) == 20
    assert model.weight("rest", logins) == 10
    assert model.band_of(39.99) == "red" and model.band_of(40) == "amber" and model.band_of(100) == "green"
    assert parse_model(VALID + "\n# comment\n").version != model.version


def test_unknown_signal_names_its_line() -> None:
    body = VALID.replace("[signals.nps]", "[signals.happiness]")
    assert re.search(r"line 12: unknown signal 'happiness'", _error(body))


def test_weight_that_is_not_a_number_names_its_line() -> None:
    body = VALID.replace("weight = 5", 'weight = "five"')
    assert "line 13: signal 'nps': weight is not a number" in _error(body)
    body = VALID.replace("weights = { logins = 20 }", 'weights = { logins = "lots" }')
    assert "line 17: segment 'enterprise': the weight of 'logins' is not a number" in _error(body)


def test_overlapping_segments_name_the_line_and_an_example() -> None:
    body = VALID.replace("otherwise = true", 'match = { arr_tier = ["enterprise", "smb"], plan = "pro" }')
    message = _error(body)
    assert "line 19: segments 'enterprise' and 'rest' overlap" in message
    assert "arr_tier 'enterprise' and plan 'pro'" in message


def test_band_gaps_and_overlaps_name_the_line() -> None:
    assert "line 6: bands leave a gap between 40 and 45" in _error(
        VALID.replace("amber = { min = 40", "amber = { min = 45")
    )
    assert "line 7: bands leave a gap: nothing covers 90 to 100" in _error(
        VALID.replace("max = 100", "max = 90")
    )
    assert "bands amber and green overlap" in _error(
        VALID.replace("green = { min = 70", "green = { min = 60")
    )


def test_every_problem_is_reported_at_once_and_toml_errors_are_one_sentence() -> None:
    body = VALID.replace("weight = 5", 'weight = "x"').replace("[signals.logins]", "[signals.nope]")
    message = _error(body)
    assert (
        "(3 problem(s))" in message
        and "weights signal 'logins', which this model does not declare" in message
        and "nothing was written" in message
    )
    assert "not valid TOML" in _error("name = ")


values = st.frozensets(st.sampled_from(["a", "b", "c"]), min_size=1)
predicates = st.dictionaries(st.sampled_from(["arr_tier", "plan"]), values, min_size=1)


@given(predicates, predicates)
def test_overlap_is_reported_exactly_when_some_account_matches_both(left: dict, right: dict) -> None:
    a = Segment("a", left, False, {})
    b = Segment("b", right, False, {})
    accounts = [{"arr_tier": t, "plan": p} for t, p in product("abcd", "abcd")]

    def matches(seg: Segment, account: dict) -> bool:
        return all(account[f] in v for f, v in seg.match.items())

    both = any(matches(a, acc) and matches(b, acc) for acc in accounts)
    assert (_overlap(a, b) is not None) == both


VALID_YAML = """\
name: t
rollup: average
bands:
  red: {min: 0, max: 40}
  amber: {min: 40, max: 70}
  green: {min: 70, max: 100}
signals:
  logins:
    weight: 10
  nps:
    weight: 5
segments:
  enterprise:
    match: {arr_tier: [enterprise]}
    weights: {logins: 20}
  rest:
    otherwise: true
"""


def test_a_yaml_model_means_the_same_as_its_toml_twin() -> None:
    toml_model, yaml_model = parse_model(VALID), parse_model(VALID_YAML, yaml_syntax=True)
    assert yaml_model.signals == toml_model.signals and yaml_model.bands == toml_model.bands
    assert yaml_model.segments == toml_model.segments
    assert parse_model(VALID_YAML).signals == toml_model.signals  # stored text: syntax told apart
    assert yaml_model.version != toml_model.version  # the version is the text's hash


def test_yaml_mistakes_name_their_line() -> None:
    body = VALID_YAML.replace("  nps:\n    weight: 5", "  nps:\n    weight: lots")
    with pytest.raises(ConfigError) as info:
        parse_model(body, source="m.yaml", yaml_syntax=True)
    assert "line 11: signal 'nps': weight is not a number" in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_model("name: [t\n", source="m.yaml", yaml_syntax=True)
    assert "is not valid YAML on line 2" in str(info.value)


def test_a_yaml_key_written_twice_is_refused_with_its_line() -> None:
    body = VALID_YAML.replace("  nps:\n    weight: 5", "  nps:\n    weight: 5\n    weight: 6")
    with pytest.raises(ConfigError) as info:
        parse_model(body, source="m.yaml", yaml_syntax=True)
    assert "line 12: the key 'weight' is written twice" in str(info.value)


def test_a_missing_or_non_utf8_model_file_is_one_sentence(tmp_path) -> None:
    from crmctl.errors import CrmctlError

    with pytest.raises(CrmctlError, match="The health model .* does not exist"):
        load_model(tmp_path / "nope.toml")
    latin = tmp_path / "latin.toml"
    latin.write_bytes('name = "caf\xe9"'.encode("latin-1"))
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_model(latin)
