from __future__ import annotations

import json
from pathlib import Path

from mailroom.asyncapi import build_document, render

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json"


def test_committed_document_matches_the_code() -> None:
    assert DOCUMENT.read_text() == render(), "run: mailroom asyncapi --out docs/asyncapi.json"


def test_every_channel_has_a_payload_schema() -> None:
    document = build_document()
    schemas = document["components"]["schemas"]
    for name, channel in document["channels"].items():
        assert channel["bindings"]["amqp"]["exchange"]["name"].startswith("{prefix}.")
        assert "schema_version" in schemas[name]["properties"]
    refs = [v for v in json.dumps(document).split('"') if v.startswith("#/components/schemas/")]
    assert all(ref.rsplit("/", 1)[1] in schemas for ref in refs)
