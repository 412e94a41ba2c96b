"""`campaigns.status` is written by mailroom_common.campaign_lifecycle alone (issue 11): no
other statement in the services, the common library, the CLI or the migrations sets it, and
campaigns are created without one (a draft, the column's default). Tests, scripts and
benchmarks stand outside this rule: they set up states to measure them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCES = [REPO / "libs" / "common", REPO / "services", REPO / "mailroom"]
OWNER = REPO / "libs" / "common" / "mailroom_common" / "campaign_lifecycle.py"

# an UPDATE of campaigns up to its WHERE (or FROM, or the end), and what it sets
UPDATE_CAMPAIGNS = re.compile(
    r"\bUPDATE\s+campaigns\b(?:\s+\w+)?\s+SET\b(.*?)(?:\bWHERE\b|\bFROM\b|\bRETURNING\b|$)",
    re.IGNORECASE | re.DOTALL,
)
SETS_STATUS = re.compile(r"(?:^|,)\s*(?:\w+\.)?status\s*=", re.IGNORECASE)
INSERT_CAMPAIGNS = re.compile(r"\bINSERT\s+INTO\s+campaigns\s*\(([^)]*)\)", re.IGNORECASE)


def status_writes(sql: str) -> list[str]:
    """The statements of `sql` that set campaigns.status."""
    found = [m.group(0) for m in UPDATE_CAMPAIGNS.finditer(sql) if SETS_STATUS.search(m.group(1))]
    found += [
        m.group(0)
        for m in INSERT_CAMPAIGNS.finditer(sql)
        if re.search(r"\bstatus\b", m.group(1), re.IGNORECASE)
    ]
    return found


def _texts(path: Path) -> list[str]:
    """The SQL a source may hold: a migration whole, a module's strings (an f-string's text
    with its values left out)."""
    if path.suffix == ".sql":
        return [path.read_text()]
    texts: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            texts.append(node.value)
        elif isinstance(node, ast.JoinedStr):
            texts.append(
                "".join(
                    str(v.value) if isinstance(v, ast.Constant) else "{}"
                    for v in node.values
                    if isinstance(v, ast.Constant | ast.FormattedValue)
                )
            )
    return texts


def _sources() -> list[Path]:
    return sorted(
        path
        for root in SOURCES
        for path in [*root.rglob("*.py"), *root.rglob("*.sql")]
        if "tests" not in path.relative_to(REPO).parts and ".venv" not in path.parts
    )


def test_only_the_lifecycle_writes_a_campaigns_status() -> None:
    writers = {
        str(path.relative_to(REPO))
        for path in _sources()
        if path != OWNER and any(status_writes(text) for text in _texts(path))
    }
    assert writers == set()
    assert len([t for t in _texts(OWNER) if status_writes(t)]) == 7  # the lifecycle's writes


def test_the_check_sees_each_form() -> None:
    assert status_writes("UPDATE campaigns SET status = 'sending' WHERE id = $1")
    assert status_writes("UPDATE campaigns c SET paused_from = c.status, status = 'paused'")
    assert status_writes("INSERT INTO campaigns (name, status) VALUES ($1, 'sending')")
    assert not status_writes("UPDATE campaigns SET cursor_item_id = $2 WHERE status = 'x'")
    assert not status_writes("UPDATE campaign_items SET status = 'queued' WHERE id = $1")
    assert not status_writes("UPDATE campaigns SET unsubscribes = unsubscribes + 1")
    assert not status_writes(
        "UPDATE campaigns SET hard_bounces = 1 FROM x WHERE x.status = 'bounced'"
    )
