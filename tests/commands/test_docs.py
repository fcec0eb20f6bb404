"""Docs that cannot go stale: every command has help and an example; README covers every family."""

from pathlib import Path
from typing import Any

import typer

from crmctl.main import app

README = Path(__file__).resolve().parents[2] / "README.md"


def _leaves(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    if not hasattr(command, "list_commands"):
        return [(path, command)]
    out = []
    for name in command.list_commands(None):
        out += _leaves(command.get_command(None, name), (*path, name))
    return out


def test_every_command_has_help_and_an_example() -> None:
    root = typer.main.get_command(app)
    leaves = [(p, c) for p, c in _leaves(root) if p]
    assert len(leaves) >= 4
    missing_help = [" ".join(p) for p, c in leaves if not (c.help or "").strip()]
    missing_example = [" ".join(p) for p, c in leaves if "Examples" not in (c.epilog or "")]
    assert missing_help == [], f"commands without help: {missing_help}"
    assert missing_example == [], f"commands without an example in --help: {missing_example}"


def test_readme_documents_every_top_level_command() -> None:
    root = typer.main.get_command(app)
    text = README.read_text()
    undocumented = [name for name in root.list_commands(None) if f"crmctl {name}" not in text]
    assert undocumented == [], f"README has no usage for: {undocumented}"
    assert "make demo" in text and "make test" in text
