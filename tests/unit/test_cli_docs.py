"""The command line as the docs show it: every command that prints JSON with `--json` is shown
with that flag in the README or docs/ (issue 12: `--json` documented everywhere)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import typer

from mailroom.cli import app
from tests.support.deployment import ROOT


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    if getattr(command, "invoke_without_command", False) or not hasattr(command, "commands"):
        yield " ".join(path), command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def _json_commands() -> set[str]:
    return {
        path
        for path, command in _commands(typer.main.get_command(app))
        if any("--json" in getattr(p, "opts", ()) for p in command.params)
    }


def _documented_invocations() -> list[str]:
    """Each `mailroom ...` command line of the docs, with its backslash continuations."""
    invocations = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = re.sub(r"\\\n\s*", " ", doc.read_text())
        invocations += re.findall(r"mailroom [a-z][^\n`]*", text)
    return invocations


def test_the_commands_with_json_are_known() -> None:
    # the walk finds commands at every depth, and the group `jobs` (a command itself)
    assert {"jobs", "jobs run", "campaign list", "dlq show"} <= _json_commands()


def test_every_json_flag_is_documented() -> None:
    invocations = _documented_invocations()
    undocumented = sorted(
        path
        for path in _json_commands()
        if not any(
            re.match(rf"mailroom {re.escape(path)}(?: |$)", line) and "--json" in line
            for line in invocations
        )
    )
    assert undocumented == [], f"shown without [--json] nowhere in the docs: {undocumented}"
