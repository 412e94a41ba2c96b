"""The deployment mode: outside development no process starts with the public development keys
(anyone could forge unsubscribe tokens with them) or with short keys; in development they are
used with a loud warning."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from mailroom_common.settings import DEVELOPMENT_SIGNING_KEY, Settings
from pydantic import ValidationError

from tests.support.environment import ROOT

GOOD = "k" * 40


def _settings(**env: str) -> Settings:
    saved = dict(os.environ)
    for name in ("MAILROOM_SIGNING_KEY", "MAILROOM_SETTINGS_KEY", "MAILROOM_ENVIRONMENT"):
        os.environ.pop(name, None)
    os.environ.update(env)
    try:
        return Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, ["MAILROOM_SIGNING_KEY", "MAILROOM_SETTINGS_KEY"]),
        ({"MAILROOM_SETTINGS_KEY": GOOD}, ["MAILROOM_SIGNING_KEY"]),
        ({"MAILROOM_SIGNING_KEY": GOOD}, ["MAILROOM_SETTINGS_KEY"]),
        (
            {"MAILROOM_SIGNING_KEY": DEVELOPMENT_SIGNING_KEY, "MAILROOM_SETTINGS_KEY": GOOD},
            ["MAILROOM_SIGNING_KEY is not set"],
        ),
        (
            {"MAILROOM_SIGNING_KEY": "short", "MAILROOM_SETTINGS_KEY": GOOD},
            ["MAILROOM_SIGNING_KEY is shorter than 32 characters"],
        ),
        ({"MAILROOM_ENVIRONMENT": "production", "MAILROOM_SIGNING_KEY": GOOD}, ["SETTINGS_KEY"]),
    ],
)
def test_production_refuses_missing_development_and_short_keys(
    env: dict[str, str], named: list[str]
) -> None:
    with pytest.raises(ValidationError) as caught:
        _settings(**env)
    message = str(caught.value)
    for expected in named:
        assert expected in message
    assert message.count("MAILROOM_") - message.count("MAILROOM_ENVIRONMENT") == len(named)
    assert "secrets.token_urlsafe" in message  # how to make one


def test_production_starts_with_keys_of_its_own() -> None:
    settings = _settings(MAILROOM_SIGNING_KEY=GOOD, MAILROOM_SETTINGS_KEY="s" * 32)
    assert settings.environment == "production" and settings.key_problems() == []


def test_a_development_previous_key_is_refused_too() -> None:
    with pytest.raises(ValidationError, match="MAILROOM_SIGNING_KEY_PREVIOUS"):
        _settings(
            MAILROOM_SIGNING_KEY=GOOD,
            MAILROOM_SETTINGS_KEY=GOOD,
            MAILROOM_SIGNING_KEY_PREVIOUS=DEVELOPMENT_SIGNING_KEY,
        )


def test_development_uses_the_development_keys_and_warns_loudly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = _settings(MAILROOM_ENVIRONMENT="development")
    assert settings.signing_key.get_secret_value() == DEVELOPMENT_SIGNING_KEY
    with caplog.at_level(logging.WARNING):
        settings.warn_about_keys()
    text = caplog.text
    assert "DEVELOPMENT MODE" in text
    assert "MAILROOM_SIGNING_KEY" in text and "MAILROOM_SETTINGS_KEY" in text


def test_a_service_process_refuses_to_start_naming_the_variable() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILROOM_")}
    result = subprocess.run(
        [sys.executable, "-m", "mailroom", "run", "config"],
        env={**env, "COLUMNS": "300"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "MAILROOM_SIGNING_KEY is not set" in result.stderr
    assert "MAILROOM_SETTINGS_KEY is not set" in result.stderr
    # the check of both keys together has no single variable to put before the message
    assert result.stderr.startswith("error: refusing to start: "), result.stderr
    assert "Traceback" not in result.stderr
