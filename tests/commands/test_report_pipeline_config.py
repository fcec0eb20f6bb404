"""crmctl pipeline show|set: stages as configuration data, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

from crmctl.db.engine import Database
from tests.conftest import Cli
from tests.pipeline import fixtures


def _set(cli: Cli, tmp_path: Path, body: str, *extra: str, expect: int = 0) -> str:
    path = tmp_path / "pipelines.toml"
    path.write_text(body)
    result = cli("pipeline", "set", str(path), *extra, expect=expect)
    return result.stderr if expect else result.stdout


def test_set_then_show_round_trips_order_and_settings(cli: Cli, tmp_path: Path) -> None:
    _set(cli, tmp_path, fixtures.PIPELINE_TOML)
    rows = json.loads(cli("pipeline", "show", "--format", "json").stdout)
    assert [
        (r["name"], r["position"], r["probability"], r["is_won"], r["is_lost"], r["stall_days"]) for r in rows
    ] == [
        ("Lead", 1, 0.1, False, False, 10),
        ("Demo", 2, 0.5, False, False, 20),
        ("Contract", 3, 0.8, False, False, None),
        ("Won", 4, 1.0, True, False, None),
        ("Lost", 5, 0.0, False, True, None),
    ]
    assert {r["pipeline"] for r in rows} == {"sales"} and rows[0]["default"] is True


def test_set_reorders_and_updates_in_place(cli: Cli, tmp_path: Path) -> None:
    _set(cli, tmp_path, fixtures.PIPELINE_TOML)
    reordered = fixtures.PIPELINE_TOML.replace(
        'name = "Lead"\nprobability = 0.1', 'name = "Lead"\nprobability = 0.2'
    )
    reordered = reordered.replace('name = "Demo"', 'name = "Discovery"')
    out = json.loads(_set(cli, tmp_path, reordered, "--format", "json"))
    assert (out["stages_created"], out["stages_updated"], out["stages_deleted"]) == (1, 4, 1)
    rows = json.loads(cli("pipeline", "show", "sales", "--format", "json").stdout)
    assert [r["name"] for r in rows] == ["Lead", "Discovery", "Contract", "Won", "Lost"]
    assert rows[0]["probability"] == 0.2


def test_dry_run_changes_nothing(cli: Cli, tmp_path: Path) -> None:
    _set(cli, tmp_path, fixtures.PIPELINE_TOML, "--dry-run")
    assert "no pipeline configured" in cli("pipeline", "show", expect=2).stderr


def test_stage_in_use_cannot_be_removed(cli: Cli, db: Database, tmp_path: Path) -> None:
    fixtures.load(cli, db, tmp_path)
    without_demo = fixtures.PIPELINE_TOML.replace(
        '[[pipeline.stage]]\nname = "Demo"\nprobability = 0.5\nstall_days = 20\n', ""
    )
    err = _set(cli, tmp_path, without_demo, expect=2)
    assert "Stage 'Demo' of pipeline 'sales' is used by deals or their history and cannot be removed." in err
    rows = json.loads(cli("pipeline", "show", "--format", "json").stdout)
    assert "Demo" in [r["name"] for r in rows]


def test_invalid_file_lists_every_problem(cli: Cli, tmp_path: Path) -> None:
    body = """
[[pipeline]]
name = "x"
currency = "dollars"
[[pipeline.stage]]
name = "A"
probability = 1.5
[[pipeline.stage]]
name = "A"
probability = 0.5
won = true
lost = true
"""
    err = _set(cli, tmp_path, body, expect=2)
    assert "4 problem(s)" in err
    assert (
        "'currency' must be a 3-letter ISO code" in err
        and "'probability' must be a number from 0 to 1" in err
    )
    assert "duplicate stage name 'A'" in err and "cannot be both won and lost" in err
    assert "is not valid TOML" in _set(cli, tmp_path, "[[pipeline]\n", expect=2)
    missing = cli("pipeline", "set", str(tmp_path / "nope.toml"), expect=2)
    assert "does not exist" in missing.stderr


PIPELINE_YAML = """
pipeline:
  - name: sales
    default: true
    currency: USD
    stage:
      - {name: Lead, probability: 0.1, stall_days: 10}
      - {name: Demo, probability: 0.5, stall_days: 20}
      - {name: Contract, probability: 0.8}
      - {name: Won, probability: 1.0, won: true}
      - {name: Lost, probability: 0.0, lost: true}
"""


def test_a_yaml_file_configures_the_same_pipeline_as_toml(cli: Cli, tmp_path: Path) -> None:
    _set(cli, tmp_path, fixtures.PIPELINE_TOML)
    from_toml = json.loads(cli("pipeline", "show", "--format", "json").stdout)
    path = tmp_path / "pipelines.yaml"
    path.write_text(PIPELINE_YAML)
    out = json.loads(cli("pipeline", "set", str(path), "--format", "json").stdout)
    assert (out["stages_created"], out["stages_deleted"]) == (0, 0)  # nothing differs
    assert json.loads(cli("pipeline", "show", "--format", "json").stdout) == from_toml
    path.write_text("pipeline:\n  - name: sales\n    stage: [unclosed\n")
    err = cli("pipeline", "set", str(path), expect=2).stderr
    assert "is not valid YAML on line" in err
