"""The timings and sizes that were constants (the generator's lease and poll, the republish
sweep, the settings re-check, the prefetch, the chunk factor) are settings: read from the
environment, defaulting to the former constants, and refused unless positive."""

from __future__ import annotations

import pytest
from mailroom_common.settings import Settings
from pydantic import ValidationError

# field: (the former constant, a value set through the environment)
TUNABLES: dict[str, tuple[float, str]] = {
    "generation_lease_seconds": (15.0, "60"),
    "generation_poll_seconds": (1.0, "0.25"),
    "republish_after_seconds": (5.0, "12.5"),
    "republish_pages": (100, "250"),
    "settings_recheck_seconds": (30.0, "5"),
    "prefetch": (8, "32"),
    "chunk_per_connection": (4, "16"),
}


def _variable(field: str) -> str:
    return f"MAILROOM_{field.upper()}"


def test_the_defaults_are_the_former_constants(monkeypatch: pytest.MonkeyPatch) -> None:
    for field in TUNABLES:
        monkeypatch.delenv(_variable(field), raising=False)
    settings = Settings()
    assert {field: getattr(settings, field) for field in TUNABLES} == {
        field: default for field, (default, _) in TUNABLES.items()
    }


def test_each_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for field, (_, value) in TUNABLES.items():
        monkeypatch.setenv(_variable(field), value)
    settings = Settings()
    assert {field: getattr(settings, field) for field in TUNABLES} == {
        field: float(value) for field, (_, value) in TUNABLES.items()
    }


@pytest.mark.parametrize("field", TUNABLES)
@pytest.mark.parametrize("value", ["0", "-1"])
def test_zero_and_negative_are_refused(
    monkeypatch: pytest.MonkeyPatch, field: str, value: str
) -> None:
    monkeypatch.setenv(_variable(field), value)
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert [error["loc"] for error in refused.value.errors()] == [(field,)]


def test_stale_after_seconds_is_gone() -> None:
    assert "stale_after_seconds" not in Settings.model_fields
