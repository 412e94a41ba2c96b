"""Log lines: JSON by default, carrying the ids of the message at hand (set by intake), text
for a terminal; never an email address from the ids."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from mailroom_common.events import ItemsPage, OutboundBatch, OutboundEmail
from mailroom_common.intake import log_fields
from mailroom_common.logs import (
    JsonFormatter,
    TextFormatter,
    add_log_fields,
    configure_logging,
    log_context,
)


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, logging.Handler]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("mailroom.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield stream, handler
    finally:
        logger.removeHandler(handler)


def test_a_json_line_carries_the_ids_of_the_message(
    captured: tuple[io.StringIO, logging.Handler],
) -> None:
    stream, handler = captured
    handler.setFormatter(JsonFormatter())
    batch = OutboundBatch(
        campaign_id=42,
        emails=[
            OutboundEmail(
                item_id=7001, recipient="reader@example.com", envelope_from="b@x.test", message="x"
            )
        ],
    )
    with log_context(queue="p.outbound_sender.batches", message_id="m-1"):
        add_log_fields(**log_fields(batch))
        logging.getLogger("mailroom.test_logs").info("sent %d of %d", 1, 1)
    logging.getLogger("mailroom.test_logs").info("after")

    first, after = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "sent 1 of 1"
    assert first["level"] == "info" and first["logger"] == "mailroom.test_logs"
    assert first["time"].endswith("+00:00")
    assert first["campaign_id"] == 42 and first["item_id"] == 7001
    assert first["message_id"] == "m-1" and first["queue"] == "p.outbound_sender.batches"
    assert first["batch_items"] == 1 and first["kind"] == "campaign"
    assert "reader@example.com" not in stream.getvalue()
    assert "campaign_id" not in after, "the ids end with their message"


def test_a_page_names_its_campaign_and_page() -> None:
    fields = log_fields(ItemsPage(campaign_id=3, page_id=9, item_ids=[1, 2, 3]))
    assert {k: v for k, v in fields.items() if v is not None} == {
        "campaign_id": 3,
        "page_id": 9,
        "batch_items": 3,
    }


def test_an_exception_stays_in_its_line(captured: tuple[io.StringIO, logging.Handler]) -> None:
    stream, handler = captured
    handler.setFormatter(JsonFormatter())
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("mailroom.test_logs").exception("failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert line["level"] == "error" and "RuntimeError: boom" in line["exception"]


@pytest.mark.parametrize("formatter", [JsonFormatter, TextFormatter])
def test_quoted_text_loses_addresses_at_info_and_above(
    captured: tuple[io.StringIO, logging.Handler], formatter: type[logging.Formatter]
) -> None:
    """An SMTP reply or an exception quoted in a line keeps the domain of an address it
    names, not the person; a debug line keeps it whole."""
    stream, handler = captured
    handler.setFormatter(formatter())
    logger = logging.getLogger("mailroom.test_logs")
    logger.setLevel(logging.DEBUG)
    reply = "550 5.1.1 <ann.o+news@example.com>: Recipient address rejected"
    logger.info("test email via smtp.example.com:587: %s", reply)
    try:
        raise RuntimeError(f"refused bob@mail.example.org ({reply})")
    except RuntimeError:
        logger.exception("send failed")
    logger.debug("raw reply: %s", reply)
    text = stream.getvalue()
    info, debug = text.split("send failed")[0], text.split("raw reply")[1]
    assert "<***@example.com>: Recipient address rejected" in info
    assert "ann.o+news" not in text.split("raw reply")[0]
    assert "bob@" not in text and "***@mail.example.org" in text
    assert "smtp.example.com:587" in info  # host names are not addresses
    assert "ann.o+news@example.com" in debug


def test_text_for_a_terminal(captured: tuple[io.StringIO, logging.Handler]) -> None:
    stream, handler = captured
    handler.setFormatter(TextFormatter())
    with log_context(campaign_id=5):
        logging.getLogger("mailroom.test_logs").warning("slow")
    assert stream.getvalue().rstrip().endswith("WARNING mailroom.test_logs: slow [campaign_id=5]")


def test_configure_logging_picks_the_format() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("info", "json")
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        configure_logging("info", "text")
        assert isinstance(root.handlers[0].formatter, TextFormatter)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
