from __future__ import annotations

import pytest
from mailroom_common.signing import InvalidToken, Signer

KEY = b"k" * 32
OLD_KEY = b"o" * 32


def test_link_token_round_trip_and_rotation() -> None:
    token = Signer(OLD_KEY).link_token(42, "c7", "unsubscribe")
    claims = Signer(KEY, previous_key=OLD_KEY).verify_link_token(token)
    assert (claims.contact_id, claims.source, claims.purpose) == (42, "c7", "unsubscribe")
    with pytest.raises(InvalidToken):
        Signer(KEY).verify_link_token(token)


@pytest.mark.parametrize(
    "mangle", [lambda t: t[:-1], lambda t: "x" + t, lambda t: t + ".x", str.upper]
)
def test_tampered_tokens_are_refused(mangle: object) -> None:
    token = Signer(KEY).link_token(1, "c1", "manage")
    with pytest.raises(InvalidToken):
        Signer(KEY).verify_link_token(mangle(token))  # type: ignore[operator]


def test_verp_address_verifies_and_forgeries_do_not() -> None:
    signer = Signer(KEY)
    address = signer.verp_address("123", "bounces.example.test")
    assert address.startswith("bounces+123-") and address.endswith("@bounces.example.test")
    assert signer.verify_verp_address(address) == "123"
    assert signer.verify_verp_address(f"<{address.upper()}>") == "123"
    assert signer.verify_verp_address(address.replace("+123-", "+124-")) is None
    assert signer.verify_verp_address("someone@example.test") is None


def test_message_id_is_deterministic() -> None:
    signer = Signer(KEY)
    first = signer.message_id("5", "c1", "example.test")
    assert first == signer.message_id("5", "c1", "example.test")
    assert first != signer.message_id("6", "c1", "example.test")
    assert first.startswith("<c1.5.") and first.endswith("@example.test>")
