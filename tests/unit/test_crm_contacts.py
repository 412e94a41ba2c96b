"""contact.upserted and contact.erased as models, and a batch checked contact by contact."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from mailroom_common.events import MAX_UPSERTED_CONTACTS, ContactErased, ContactsUpserted
from mailroom_common.intake import describe_validation_error
from mailroom_subscriptions.crm_upsert import prepare
from pydantic import ValidationError


def batch(*contacts: Mapping[str, object], **fields: object) -> ContactsUpserted:
    return ContactsUpserted.model_validate({"contacts": list(contacts), **fields})


def test_each_contact_fails_alone_and_the_last_of_a_crm_id_wins() -> None:
    prepared = prepare(
        batch(
            {"crm_id": "a", "email": "first@example.com", "first_name": "First"},
            {"crm_id": "bad", "email": "not an address"},
            {"crm_id": "nul", "email": "n@example.com", "attributes": {"city": "O\x00slo"}},
            {"crm_id": "inf", "email": "i@example.com", "attributes": {"score": float("inf")}},
            {"crm_id": "a", "email": "Second@Example.com", "first_name": "Second"},
        )
    )
    assert prepared.crm_ids == ["a"] and prepared.first_names == ["Second"]
    assert prepared.emails == ["Second@example.com"]  # as checked_address gives it
    assert prepared.duplicates == 1
    reasons = {f.crm_id: f.reason for f in prepared.failed}
    assert reasons["bad"].startswith("email: ")
    assert reasons["nul"] == "attributes.city holds a NUL character"
    assert reasons["inf"] == "attributes.score: inf is not a finite number"


def test_unknown_fields_are_ignored_and_wrong_ones_are_named() -> None:
    event = batch({"crm_id": "a", "email": "a@example.com", "mood": "new"}, sent_by="crm v9")
    assert event.contacts[0].crm_id == "a"
    with pytest.raises(ValidationError) as wrong:
        batch({"crm_id": "a", "email": "a@example.com", "lists": {"news": "maybe"}})
    assert describe_validation_error(wrong.value).startswith(
        "contacts.0.lists.news: Input should be"
    )
    with pytest.raises(ValidationError) as too_many:
        batch(
            *[
                {"crm_id": str(i), "email": "a@example.com"}
                for i in range(MAX_UPSERTED_CONTACTS + 1)
            ]
        )
    assert "contacts: List should have at most 1000 items" in describe_validation_error(
        too_many.value
    )


def test_an_erasure_names_someone() -> None:
    assert ContactErased.model_validate({"emails": ["a@example.com"]}).crm_ids == []
    with pytest.raises(ValidationError, match="names nobody"):
        ContactErased.model_validate({"correlation_id": "x"})
    with pytest.raises(ValidationError, match="NUL"):
        ContactErased.model_validate({"crm_ids": ["a\x00"]})
