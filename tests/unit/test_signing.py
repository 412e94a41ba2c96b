from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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


# --- malformed input verifies as False, never raises (issue 9, item 10) ---------------------

ROTATED = Signer(KEY, previous_key=OLD_KEY)
MALFORMED_VERP = [
    "bounces+123-\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"
    "@bounces.example.test",
    "bounces+123-ｂｂｂ@bounces.example.test",
    "bounces+\u0661\u0662\u0663-abcdefghijklm@bounces.example.test",
    "bounces+123-@bounces.example.test",
    "bounces+-abcdefghijklm@bounces.example.test",
    "bounces+" + "1" * 5000 + "-abcdefghijklm@bounces.example.test",
    "bounces+123-" + "a" * 10_000 + "@bounces.example.test",
    "bounces+123-abcdefghijklm\x00@bounces.example.test",
    "",
    "<>",
    "@",
    "bounces+\ud800-x@y",
]


@pytest.mark.parametrize("address", MALFORMED_VERP)
def test_malformed_verp_addresses_verify_as_none(address: str) -> None:
    assert ROTATED.verify_verp_address(address) is None


def test_verp_and_message_id_of_the_previous_key_verify() -> None:
    old = Signer(OLD_KEY)
    assert ROTATED.verify_verp_address(old.verp_address("a9", "b.example.test")) == "a9"
    assert ROTATED.verify_message_id(old.message_id("9", "c4", "m.example.test")) == ("c4", "9")
    assert Signer(KEY).verify_message_id(old.message_id("9", "c4", "m.example.test")) is None


def test_message_id_verifies_only_what_we_signed() -> None:
    signer = Signer(KEY)
    mid = signer.message_id("42", "c5", "mailroom.test")
    assert signer.verify_message_id(mid) == ("c5", "42")
    assert signer.verify_message_id(mid.strip("<>")) == ("c5", "42")
    assert signer.verify_message_id(mid.replace(".42.", ".43.")) is None
    auto = signer.message_id("a7", "a2", "mailroom.test")
    assert signer.verify_message_id(auto) == ("a2", "a7")
    for bad in (
        "",
        "<>",
        "<c5.42.\u00e9\u00e9@x>",
        "<c\u0665.42.abc@x>",
        mid.replace("@", "\n@"),
        "<" + "c5." * 5000 + ">",
    ):
        assert signer.verify_message_id(bad) is None


@pytest.mark.parametrize(
    "token",
    [
        "",
        ".",
        "..",
        "\u00e9.\u00e9",
        "a" * 10_240,
        "a" * 5_000 + "." + "b" * 5_000,
        "../../etc/passwd",
        "MTpjMTp1bnN1YnNjcmliZQ.%%%%",
        "\x00.\x00",
        "\ud800.x",
    ],
)
def test_malformed_link_tokens_are_invalid(token: str) -> None:
    with pytest.raises(InvalidToken):
        ROTATED.verify_link_token(token)


def test_a_token_with_characters_outside_the_alphabet_is_refused() -> None:
    token = Signer(KEY).link_token(1, "c1", "unsubscribe")
    payload, mac = token.split(".")
    with pytest.raises(InvalidToken):
        ROTATED.verify_link_token(f"{payload}.{mac[:4]}!{mac[4:]}")


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_any_text_verifies_without_raising(text: str) -> None:
    assert ROTATED.verify_verp_address(text) is None
    assert ROTATED.verify_message_id(text) is None
    with pytest.raises(InvalidToken):
        ROTATED.verify_link_token(text)


@settings(max_examples=300, deadline=None)
@given(
    st.from_regex(r"\Abounces\+a?[0-9]{1,6}-\Z", fullmatch=True),
    st.text(min_size=0, max_size=40),
    st.text(max_size=30),
)
def test_verp_shaped_text_verifies_without_raising(
    prefix: str, signature: str, domain: str
) -> None:
    assert ROTATED.verify_verp_address(f"{prefix}{signature}@{domain}") is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.text(max_size=60))
def test_token_shaped_text_is_invalid_without_raising(payload: str, mac: str) -> None:
    with pytest.raises(InvalidToken):
        ROTATED.verify_link_token(f"{payload}.{mac}")


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=2**62), st.sampled_from(["c", "a"]), st.integers(1, 10**9)
)
def test_what_we_sign_verifies(item: int, kind: str, source_id: int) -> None:
    ref = f"a{item}" if kind == "a" else str(item)
    source = f"{kind}{source_id}"
    assert ROTATED.verify_verp_address(ROTATED.verp_address(ref, "b.example.test")) == ref
    assert ROTATED.verify_message_id(ROTATED.message_id(ref, source, "m.example.test")) == (
        source,
        ref,
    )
    claims = ROTATED.verify_link_token(ROTATED.link_token(item, source, "manage"))
    assert (claims.contact_id, claims.source, claims.purpose) == (item, source, "manage")
