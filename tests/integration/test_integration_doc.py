"""docs/integration.md's worked example, run exactly as written: its code blocks (each marked
`<!-- crm-example -->`) put together into one program, run as a CRM would run it against an
installation of the test's own, and what it prints checked against the database, the SMTP
server and the broker. A change to the document that breaks the example fails here."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.support.crm import columns_holding
from tests.support.environment import RABBITMQ_URL, ROOT, Installation
from tests.support.queues import delete_queues, queue_depth
from tests.support.scenario import pool_of
from tests.support.seed import use_smtp_server
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.integration

DOC = ROOT / "docs" / "integration.md"
MARKER = "<!-- crm-example -->"
BLOCK = re.compile(rf"^{re.escape(MARKER)}\n```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def example_program() -> str:
    """Every marked block of the document, in order, as one program."""
    text = DOC.read_text(encoding="utf-8")
    blocks = BLOCK.findall(text)
    assert blocks, f"no ```python block after {MARKER} in {DOC}"
    assert len(blocks) == text.count(MARKER), f"a {MARKER} not followed by a ```python block"
    return "\n\n".join(blocks)


async def _run(program: Path, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(program),
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 240)
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
        raise AssertionError(f"the example did not end: {out.decode()}\n{err.decode()}") from None
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_worked_example_runs_as_written(
    installation: Installation, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    pool = pool_of(installation)
    await use_smtp_server(pool, smtp_server.port)
    installation.start_services()
    program = tmp_path / "crm_example.py"
    program.write_text(example_program(), encoding="utf-8")
    prefix = installation.settings.queue_prefix
    crm_queue = f"{prefix}.crm-example"  # the CRM's queues are its own: not Mailroom's to delete
    try:
        code, out, err = await _run(
            program,
            {
                "MAILROOM_RABBITMQ_URL": RABBITMQ_URL,
                "MAILROOM_QUEUE_PREFIX": prefix,
                "CRM_QUEUE": crm_queue,
                "CRM_FROM_EMAIL": "news@example.com",
                "CRM_TIMEOUT_SECONDS": "90",
            },
        )
        assert code == 0, f"{out}\n{err}"
        refused_left = await queue_depth(f"{prefix}.item_generator.commands.dlq")
        unread = await queue_depth(f"{crm_queue}.unread")
    finally:
        await delete_queues(crm_queue, f"{crm_queue}.unread")
    print(f"\n{out}")
    lines = out.splitlines()
    assert len(lines) == 9, out
    assert lines[0] == "contacts: 3 created, 0 failed"
    created = re.fullmatch(r"campaign (\d+) created", lines[1])
    assert created is not None, lines[1]
    campaign_id = int(created.group(1))
    assert lines[2] == f"the same create again: campaign {campaign_id}, replayed True"
    assert lines[3] == f'campaign {campaign_id} completed: {{"sent": 3}}'

    # one timeline entry per recipient, with the CRM's id and the address the email went to
    sent = [re.fullmatch(r"sent: (\S+) (\S+)", line) for line in lines[4:7]]
    assert all(sent), lines[4:7]
    told = {m.group(1): m.group(2) for m in sent if m}
    crm_ids = {r["crm_id"] for r in await pool.fetch("SELECT crm_id FROM contacts")}
    assert set(told) == crm_ids and len(crm_ids) == 3
    assert smtp_server.handler.recipients() == Counter(told.values())
    items = await pool.fetchval(
        "SELECT count(*) FROM campaign_items WHERE campaign_id = $1 AND status = 'sent'",
        campaign_id,
    )
    assert items == 3

    # the refused create: named the field, made nothing, and is still there for operators
    assert re.fullmatch(r"refused: lists: no list named 'autumn-\w+'", lines[7]), lines[7]
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 1
    assert (refused_left, unread) == (1, 0)

    # the erased person: the first of the three (Ann), nowhere in the database any more
    erased = re.fullmatch(r"erased (\S+): 1 contact, 1 item", lines[8])
    assert erased is not None, lines[8]
    gone = erased.group(1)
    assert told[gone].startswith("ann.")
    assert await columns_holding(pool, [told[gone]]) == {}
    others = [address for crm_id, address in told.items() if crm_id != gone]
    assert set(await columns_holding(pool, others)) >= {"contacts.email", "campaign_items.email"}
