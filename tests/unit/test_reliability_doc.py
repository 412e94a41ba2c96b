"""docs/RELIABILITY.md lists exactly the catalogue cases the tests run."""

from __future__ import annotations

from collections import Counter

from scripts import reliability_catalogue


def test_the_catalogue_table_is_current() -> None:
    document = reliability_catalogue.DOCUMENT.read_text()
    assert document == reliability_catalogue.updated_document(), (
        "run: .venv/bin/python scripts/reliability_catalogue.py"
    )


def test_the_catalogue_has_at_least_sixty_distinct_cases() -> None:
    ids = Counter(case_id for _, case_id, _, _ in reliability_catalogue.catalogue_cases())
    assert len(ids) >= 60
    assert [i for i, n in ids.items() if n > 1] == []
