"""The bad-input catalogue: each case names the attack and the answer we hold Mailroom to.

Every module of this package lists its cases as `CASES` and runs one test per case
(parametrized with `ids=case_ids(CASES)`); docs/RELIABILITY.md is the catalogue in prose.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    id: str  # "<area>-<nn>", unique across the catalogue
    attack: str  # what a hostile or careless sender does
    expected: str  # the answer Mailroom must give


def case_ids(cases: list[Case]) -> list[str]:
    return [case.id for case in cases]
