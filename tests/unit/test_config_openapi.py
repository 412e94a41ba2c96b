from __future__ import annotations

import json
from pathlib import Path

from mailroom_config.api import PATHS, create_app, openapi_document

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi-config.json"


def test_committed_document_matches_the_app() -> None:
    assert DOCUMENT.read_text() == openapi_document(), (
        "run: mailroom settings openapi --out docs/openapi-config.json"
    )
    assert json.loads(DOCUMENT.read_text()) == create_app().openapi()


def test_every_operation_is_authenticated_and_served() -> None:
    document = create_app().openapi()
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path, operations in document["paths"].items():
        assert any(path.startswith(p) for p in PATHS), path
        for operation in operations.values():
            assert operation["security"] == [{"HTTPBearer": []}]
            assert "401" in operation["responses"]
