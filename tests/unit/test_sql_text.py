"""No table name is put into SQL text at run time (issue 11: the twin item tables have one
typed repository each, every statement written out in full): no f-string in a function with
a value where a table goes, and no `{placeholder}` where a table goes for `.format` or
`.replace` to fill. Module-level constants built from other constants are the same text at
every run and are not looked at. And the sender's autoresponder statements never read
`campaigns` (an autoresponder item belongs to no campaign)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from mailroom_outbound_sender import items

REPO = Path(__file__).resolve().parents[2]
SOURCES = [REPO / "libs" / "common", REPO / "services", REPO / "mailroom"]

# the text before a value is a keyword that a table name follows (the project writes SQL
# keywords in capitals; "from" in a sentence is not one)
TABLE_POSITION = re.compile(r"\b(UPDATE|FROM|INTO|JOIN|TABLE)\s*$")
PLACEHOLDER_TABLE = re.compile(r"\b(UPDATE|FROM|INTO|JOIN|TABLE)\s+\{\w*\}")


def _python_files() -> list[Path]:
    return sorted(
        path
        for root in SOURCES
        for path in root.rglob("*.py")
        if "tests" not in path.relative_to(REPO).parts and ".venv" not in path.parts
    )


def _interpolated_tables(tree: ast.AST) -> list[int]:
    """Lines of f-strings inside functions with a value where a table name goes."""
    found: list[int] = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if not isinstance(node, ast.JoinedStr):
                continue
            for before, value in zip(node.values, node.values[1:], strict=False):
                if (
                    isinstance(before, ast.Constant)
                    and isinstance(before.value, str)
                    and isinstance(value, ast.FormattedValue)
                    and TABLE_POSITION.search(before.value)
                ):
                    found.append(node.lineno)
    return found


def _table_placeholders(tree: ast.AST) -> list[int]:
    """Lines of plain strings with a `{placeholder}` where a table name goes."""
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and PLACEHOLDER_TABLE.search(node.value)
    ]


def test_no_table_name_is_put_into_sql_text() -> None:
    offenders = []
    for path in _python_files():
        tree = ast.parse(path.read_text(), str(path))
        where = path.relative_to(REPO)
        offenders += [f"{where}:{line}" for line in _interpolated_tables(tree)]
        offenders += [f"{where}:{line}" for line in _table_placeholders(tree)]
    assert offenders == []


def test_the_check_finds_both_forms() -> None:
    planted = ast.parse(
        "ITEMS = 'UPDATE {items} SET status = $2'\n"
        "async def bounce(conn, table):\n"
        "    await conn.execute(f\"UPDATE {table} SET status = 'bounced' WHERE id = $1\")\n"
        "    await conn.execute(f'SELECT 1 FROM campaigns WHERE id = {1}')\n"
    )
    assert _table_placeholders(planted) == [1]
    assert _interpolated_tables(planted) == [3]


def test_the_autoresponder_statements_never_read_campaigns() -> None:
    statements = {
        name: value
        for name, value in vars(items).items()
        if name.startswith("AUTORESPONDER_") and isinstance(value, str)
    }
    assert len(statements) == 7  # release, suppress, open items, claim, record, bounces, give up
    for name, statement in statements.items():
        assert re.search(r"\bautoresponder_item(s|_id)\b", statement), name
        assert not re.search(r"\bcampaigns\b", statement), name
