"""The sender's lean SMTP transaction and To-header check answer as the general code does:
a plain envelope address is written as aiosmtplib's quoting writes it, the SIZE is that of
the message as DATA sends it, and the To header's fast path finds the addresses
email.utils.getaddresses finds (anything it does not recognise goes to getaddresses)."""

from __future__ import annotations

from email.utils import getaddresses

import pytest
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import normalize_message_line_endings
from hypothesis import given
from hypothesis import strategies as st
from mailroom_outbound_sender.recipients import _PLAIN_TO, to_addresses
from mailroom_outbound_sender.smtp_transaction import (
    _PLAIN_ADDRESS,
    envelope_address,
    wire_size,
)

ATOM_CHARS = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
atoms = st.text(ATOM_CHARS, min_size=1, max_size=6)
labels = st.text("abz09-", min_size=1, max_size=6)
plain_addresses = st.builds(
    lambda local, domain: f"{'.'.join(local)}@{'.'.join(domain)}",
    st.lists(atoms, min_size=1, max_size=3),
    st.lists(labels, min_size=1, max_size=3),
)
# a To header's value from pieces that trouble address parsers
TRICKY = ["a", "b.c", "@", ",", ";", ":", "<", ">", '"', "\\", "(", ")", "[", "]", " ",
          ".", "=?utf-8?q?J=C3=BCrgen?=", "x@y.z", "<x@y.z>", '"q, r"', "é", "\t"]  # fmt: skip
values = st.lists(st.sampled_from(TRICKY), max_size=8).map("".join)
display_names = st.text("abcXY .'-=?_", max_size=12) | st.just('"Smith, John"')


@given(plain_addresses)
def test_a_plain_envelope_address_is_written_as_aiosmtplib_quotes_it(address: str) -> None:
    assert _PLAIN_ADDRESS.fullmatch(address)
    assert envelope_address(address) == quote_address(address).encode("ascii")


@pytest.mark.parametrize(
    "address",
    ['"john doe"@example.com', "ann@[127.0.0.1]", "a..b@example.com", ".a@example.com"],
)
def test_other_envelope_addresses_go_through_aiosmtplib(address: str) -> None:
    assert not _PLAIN_ADDRESS.fullmatch(address)
    assert envelope_address(address) == quote_address(address).encode("ascii")


@pytest.mark.parametrize("address", ["a b@example.com", "a\tb@example.com"])
def test_an_address_that_would_break_the_command_line_is_refused(address: str) -> None:
    with pytest.raises(ValueError):
        envelope_address(address)


@pytest.mark.parametrize("address", ["a@example.com> SIZE=1", "a@example.com\r\nRSET"])
def test_what_parseaddr_cuts_down_to_an_address_is_sent_as_that_address(address: str) -> None:
    # as sendmail did: no parameter, no command gets onto the line
    assert envelope_address(address) == b"<a@example.com>"


def test_a_non_ascii_address_is_refused_as_sendmail_refused_it() -> None:
    with pytest.raises(UnicodeEncodeError):
        envelope_address("jürgen@example.com")


@given(st.binary(max_size=40).map(lambda b: bytes(b"a\r\n. "[x % 5] for x in b)))
def test_the_size_is_that_of_the_message_as_data_sends_it(message: bytes) -> None:
    assert wire_size(message) == len(normalize_message_line_endings(message))


def _reference(value: str) -> list[str]:
    return [address for _name, address in getaddresses([value]) if address]


@given(display_names, plain_addresses)
def test_the_renderers_to_headers_take_the_fast_path(name: str, address: str) -> None:
    value = f"{name} <{address}>"
    assert _PLAIN_TO.fullmatch(value)
    assert to_addresses(value) == _reference(value) == [address]


@given(values)
def test_any_to_header_gives_the_addresses_getaddresses_gives(value: str) -> None:
    assert to_addresses(value) == _reference(value)
