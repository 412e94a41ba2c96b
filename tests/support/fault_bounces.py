"""The bounce mailbox under a fault: hard bounces of a campaign's delivered messages put in
a private Dovecot, the server restarted while the bounce processor fetches them, and the
figures of that case."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mailroom_common.runtime_settings import BounceMailbox

from tests.support import bounce_messages as bm
from tests.support.dovecot import PASSWORD, USER, Dovecot
from tests.support.fault_campaign import SUMMARY_PREFIX, FaultCampaign

# big enough that fetching them takes a few seconds, so a restart falls in the middle
PADDING = "x" * 20_000


def bounce_mailbox(dovecot: Dovecot) -> BounceMailbox:
    return BounceMailbox.model_validate(
        {
            "host": "127.0.0.1",
            "port": dovecot.imap_port,
            "security": "none",
            "username": USER,
            "password": PASSWORD,
            "poll_interval_seconds": 1,
        }
    )


async def bounce_some(run: FaultCampaign, dovecot: Dovecot, count: int) -> set[str]:
    """Hard bounces (to the message's VERP address, its headers returned) of `count`
    messages the server took and whose items are recorded as sent."""
    sent = {
        r["email"]
        for r in await run.pool.fetch(
            "SELECT lower(email) AS email FROM campaign_items"
            " WHERE campaign_id = $1 AND status = 'sent'",
            run.campaign_id,
        )
    }
    with run.smtp.handler.lock:
        by_recipient = {r.recipients[0].lower(): r for r in run.smtp.handler.received}
    chosen = sorted(sent & set(by_recipient))[:count]
    assert len(chosen) == count, f"only {len(chosen)} delivered messages to bounce"
    await dovecot.append(
        *(
            bm.dsn(
                by_recipient[address].envelope_from,
                address,
                diagnostic=f"550 5.1.1 <{{rcpt}}>: unknown user {PADDING}",
                original=by_recipient[address].data,
            )
            for address in chosen
        )
    )
    return set(chosen)


async def _processed(run: FaultCampaign) -> int:
    count: int = await run.pool.fetchval("SELECT count(*) FROM processed_messages")
    return count


@dataclass
class BounceFigures:
    case: str
    appended: int
    processed: int
    bounce_records: int
    items_bounced: int
    suppressed: int
    wrong_items: int
    at_crash: int
    recover_s: float

    def line(self) -> str:
        return (
            f"{SUMMARY_PREFIX} {self.case}: appended={self.appended}"
            f" in_flight=- left_at_crash={self.appended - self.at_crash}"
            f" duplicates={self.bounce_records - self.appended}"
            f" missing={self.appended - self.processed} processed={self.processed}"
            f" items_bounced={self.items_bounced} wrong_items={self.wrong_items}"
            f" suppressed={self.suppressed} at_crash={self.at_crash}"
            f" recover_s={self.recover_s:.1f}"
        )

    def check(self) -> None:
        problems = []
        if not 0 < self.at_crash < self.appended:
            problems.append(f"the restart came after {self.at_crash}: not mid-fetch")
        if self.processed != self.appended:
            problems.append(f"{self.processed} of {self.appended} bounces processed")
        if self.bounce_records != self.appended:
            problems.append(f"{self.bounce_records} bounces recorded for {self.appended}")
        if self.items_bounced != self.appended or self.wrong_items:
            problems.append(
                f"{self.items_bounced} items bounced for {self.appended},"
                f" {self.wrong_items} of them not bounced by us"
            )
        if self.suppressed != self.appended:
            problems.append(f"{self.suppressed} addresses suppressed for {self.appended}")
        assert not problems, "; ".join(problems) + f"\n{self.line()}"


@dataclass
class MailboxRestart:
    at_crash: int  # messages processed when Dovecot was killed
    back: float  # time.monotonic() when it was started again
    drained: float  # when every message was processed and the mailbox empty
    already: int = 0  # messages processed before this round's were appended

    async def figures(
        self,
        run: FaultCampaign,
        case: str,
        bounced: set[str],
        earlier: frozenset[str] = frozenset(),
    ) -> BounceFigures:
        items = {
            r["email"]
            for r in await run.pool.fetch(
                "SELECT lower(email) AS email FROM campaign_items"
                " WHERE campaign_id = $1 AND status = 'bounced'",
                run.campaign_id,
            )
        }
        suppressed = await run.pool.fetchval(
            "SELECT count(*) FROM suppressions WHERE email = ANY($1::text[])", list(bounced)
        )
        records = await run.pool.fetchval("SELECT count(*) FROM bounces")
        return BounceFigures(
            case=case,
            appended=len(bounced),
            processed=await _processed(run) - self.already,
            bounce_records=records - self.already,
            items_bounced=len(items & bounced),
            suppressed=suppressed,
            wrong_items=len(items - bounced - earlier),
            at_crash=self.at_crash,
            recover_s=self.drained - self.back,
        )


async def restart_dovecot(dovecot: Dovecot) -> None:
    dovecot.kill()
    await asyncio.sleep(1.5)
    dovecot.start()


async def restart_service(run: FaultCampaign, how: signal.Signals) -> None:
    """The bounce processor stopped with `how` (a SIGTERM must end it cleanly) and started
    again."""
    exit_code = await run.stop("bounce_processor", how, lambda: None)
    assert how == signal.SIGKILL or exit_code == 0, f"bounce_processor exited {exit_code}"
    await run.start_again("bounce_processor")


async def restart_mid_fetch(
    run: FaultCampaign,
    dovecot: Dovecot,
    total: int,
    fault: Callable[[], Awaitable[None]],
    already: int = 0,
) -> MailboxRestart:
    """Bring `fault` (Dovecot or the bounce processor stopped and started again) once the
    bounce processor has handled a few of the `total` new messages (`already` were processed
    before them), and wait until the mailbox is processed and empty."""

    async def fetching() -> bool:
        return await _processed(run) >= already + 10

    await run.until(fetching, "the bounce processor to be fetching")
    at_crash = await _processed(run) - already
    await fault()
    back = time.monotonic()

    async def drained() -> bool:
        return await _processed(run) >= already + total and await dovecot.count() == 0

    try:
        await run.until(drained, f"{total} bounces processed and the mailbox empty", 120)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{run.log_digest()}\n{dovecot.log()[-2000:]}") from None
    return MailboxRestart(at_crash, back, time.monotonic(), already)
