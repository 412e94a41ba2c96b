"""Writes the bad-input catalogue's table into docs/RELIABILITY.md from the cases the tests run.

Usage: .venv/bin/python scripts/reliability_catalogue.py [--check]
The table sits between the two CATALOGUE markers; --check exits 1 when it is stale.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCUMENT = ROOT / "docs" / "RELIABILITY.md"
BEGIN = "<!-- CATALOGUE:BEGIN (scripts/reliability_catalogue.py writes this table) -->"
END = "<!-- CATALOGUE:END -->"


def catalogue_cases() -> list[tuple[str, str, str, str]]:
    """(area, id, attack, expected) of every case, module by module."""
    sys.path.insert(0, str(ROOT))
    rows: list[tuple[str, str, str, str]] = []
    for path in sorted((ROOT / "tests" / "catalogue").glob("test_*.py")):
        module = importlib.import_module(f"tests.catalogue.{path.stem}")
        area = path.stem.removeprefix("test_").replace("_", " ")
        rows.extend((area, c.id, c.attack, c.expected) for c in module.CASES)
    return rows


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render_table() -> str:
    rows = catalogue_cases()
    lines = [
        BEGIN,
        f"{len(rows)} cases.",
        "",
        "| area | case | attack | expected answer |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | `{i}` | {_cell(x)} | {_cell(e)} |" for a, i, x, e in rows]
    lines.append(END)
    return "\n".join(lines)


def updated_document() -> str:
    text = DOCUMENT.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return head + render_table() + tail


def main() -> int:
    new = updated_document()
    if "--check" in sys.argv:
        if new != DOCUMENT.read_text():
            print("docs/RELIABILITY.md is stale: run scripts/reliability_catalogue.py")
            return 1
        return 0
    DOCUMENT.write_text(new)
    print(f"wrote {len(catalogue_cases())} cases into {DOCUMENT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
