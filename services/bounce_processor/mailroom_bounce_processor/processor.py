"""The loop that empties the bounce mailbox: connect, take messages in batches, commit each
message's effects, then delete it; IDLE (or poll) for more; reconnect with capped exponential
back-off when the server or the credentials fail; reconnect at once when the settings change."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import Awaitable, Callable, Iterator, Sequence

from aioimaplib import aioimaplib
from aioimaplib.aioimaplib import Response
from mailroom_common import activity
from mailroom_common.events import SettingsChanged
from mailroom_common.imap import MailboxError, OpenMailbox, describe_failure, logout, open_mailbox
from mailroom_common.jobs import PROCESS_BOUNCE_EMAIL
from mailroom_common.runtime import Runtime
from mailroom_common.runtime_settings import BounceMailbox

from mailroom_bounce_processor.matching import analyse
from mailroom_bounce_processor.metrics import MAILBOX_ERRORS, MESSAGES
from mailroom_bounce_processor.records import Outcome, Recorder, announce_bounces

log = logging.getLogger(__name__)

BATCH_SIZE = 50
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
COMMAND_SECONDS = 60.0  # one IMAP command (a batch of big messages takes a while)
_FETCH_START = re.compile(rb"^\d+ FETCH \(")
_UID = re.compile(rb"UID (\d+)")
_LITERAL = re.compile(rb"\{(\d+)\}\s*$")


class SessionError(Exception):
    """The IMAP server refused a command in the middle of a session."""


def backoff_seconds(failures: int) -> float:
    return float(min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2.0 ** max(0, failures - 1)))


def parse_search(lines: Sequence[bytes | bytearray]) -> list[int]:
    for line in lines:
        words = bytes(line).split()
        if words and words[0].upper() == b"SEARCH":
            words = words[1:]
        if words and all(w.isdigit() for w in words):
            return sorted(int(w) for w in words)
    return []


def parse_fetch(lines: Sequence[bytes | bytearray]) -> Iterator[tuple[int, bytes]]:
    """(uid, raw message) pairs of a UID FETCH (UID RFC822) answer."""
    index = 0
    while index < len(lines):
        line = bytes(lines[index])
        if _FETCH_START.match(line) and _LITERAL.search(line) and index + 1 < len(lines):
            raw = bytes(lines[index + 1])
            uid = _UID.search(line)
            if uid is None and index + 2 < len(lines):
                uid = _UID.search(bytes(lines[index + 2]))
            if uid is not None:
                yield int(uid.group(1)), raw
            index += 2
            continue
        index += 1


def _setter(event: asyncio.Event) -> Callable[[Exception | None], None]:
    return lambda _error: event.set()


def _chunks(uids: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(uids), size):
        yield uids[start : start + size]


class BounceProcessor:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.recorder = Recorder(runtime.pool, runtime.signer)
        self.problem: str | None = None
        self._wake = asyncio.Event()  # settings changed, or stopping
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._warned_unconfigured = False
        self._lost = asyncio.Event()  # the current connection dropped

    async def _imap(self, command: Awaitable[Response], what: str) -> Response:
        """One IMAP command, given up when the connection drops or it takes too long."""
        answer = asyncio.ensure_future(command)
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            await asyncio.wait(
                {answer, lost}, timeout=COMMAND_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            lost.cancel()
        if answer.done():
            response = answer.result()
            if response.result != "OK":
                raise SessionError(f"{what}: {response.result} {response.lines[-1:]!r}"[:300])
            return response
        answer.cancel()
        if self._lost.is_set():
            raise ConnectionResetError(f"the server closed the connection during {what}")
        raise TimeoutError(f"no answer to {what} within {COMMAND_SECONDS:g} s")

    # --- service hooks -----------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="bounce-mailbox")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            # asyncio.wait never raises the task's own end (an error, a cancellation)
            await asyncio.wait({self._task}, timeout=30)
            if not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task})

    async def on_settings_changed(self, change: SettingsChanged) -> None:
        if change.group == "bounce":
            log.info("bounce mailbox settings changed (version %d): reconnecting", change.version)
            self._wake.set()

    def poll_now(self) -> None:
        """`mailroom jobs run process-bounce-email`: reconnect and read the mailbox now."""
        self._wake.set()

    def _failed(self, problem: str) -> None:
        self.problem = problem
        self.runtime.jobs.failed(PROCESS_BOUNCE_EMAIL, problem)

    async def bounce_mailbox(self) -> str | None:
        """Readiness: None when the mailbox works (or is not configured), else why not."""
        return self.problem

    # --- the loop ----------------------------------------------------------------------

    async def _pause(self, seconds: float) -> None:
        """Wait `seconds`, or less when the settings change or the service stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def run(self) -> None:
        failures = 0
        while not self._stopping:
            self._wake.clear()
            try:
                mailbox, _version = await self.runtime.settings_store.load(BounceMailbox)
            except Exception as error:
                failures += 1
                self._failed(f"bounce mailbox: cannot read its settings: {error}")
                log.error("%s; retrying in %g s", self.problem, backoff_seconds(failures))
                await self._pause(backoff_seconds(failures))
                continue
            if not mailbox.username:
                self.problem = None
                if not self._warned_unconfigured:
                    log.warning("bounce mailbox not configured (no username): not reading it")
                    self._warned_unconfigured = True
                await self._pause(mailbox.poll_interval_seconds)
                continue
            where = f"{mailbox.username}@{mailbox.host}:{mailbox.port}"
            try:
                lost = asyncio.Event()
                opened = await open_mailbox(mailbox, on_lost=_setter(lost))
            except MailboxError as error:
                failures += 1
                MAILBOX_ERRORS.labels(error.stage).inc()
                if error.stage == "login":
                    self._failed(
                        f"bounce mailbox: authentication failed for {where}: {error.reply}"
                    )
                else:
                    self._failed(f"bounce mailbox {where}: {error}")
                delay = backoff_seconds(failures)
                log.error("%s; retrying in %g s (attempt %d)", self.problem, delay, failures)
                await self._pause(delay)
                continue
            self.problem = None
            log.info(
                "reading bounce mailbox %s folder %s (%s messages, %s)",
                where,
                mailbox.folder,
                "?" if opened.exists is None else opened.exists,
                "IDLE"
                if "IDLE" in opened.capabilities
                else f"polling every {mailbox.poll_interval_seconds:g} s",
            )
            try:
                self._lost = lost
                await self._session(opened, mailbox)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as error:
                failures += 1
                MAILBOX_ERRORS.labels("session").inc()
                reason = describe_failure(error, mailbox.host, mailbox.port, COMMAND_SECONDS)
                self._failed(f"bounce mailbox {where}: {reason or type(error).__name__}")
                delay = backoff_seconds(failures)
                log.error(
                    "%s; reconnecting in %g s (attempt %d)",
                    self.problem,
                    delay,
                    failures,
                    exc_info=not isinstance(
                        error,
                        OSError
                        | SessionError
                        | aioimaplib.Abort
                        | aioimaplib.CommandTimeout
                        | TimeoutError,
                    ),
                )
                await self._pause(delay)
            finally:
                await logout(opened.client)

    async def _session(self, opened: OpenMailbox, mailbox: BounceMailbox) -> None:
        client = opened.client
        idle = "IDLE" in opened.capabilities
        await self._expunge(client)  # messages flagged before a crash
        jobs = self.runtime.jobs
        while not self._wake.is_set():
            jobs.ran(PROCESS_BOUNCE_EMAIL)  # a poll of the mailbox is a run of the job
            response = await self._imap(client.uid_search("ALL"), "UID SEARCH")
            uids = parse_search(response.lines)
            for batch in _chunks(uids, BATCH_SIZE):
                if self._wake.is_set():
                    return
                await self._batch(client, batch, mailbox)
            jobs.succeeded(PROCESS_BOUNCE_EMAIL)
            if uids:
                continue  # look again before waiting: more may have come meanwhile
            if idle:
                await self._idle(client, mailbox.poll_interval_seconds)
            else:
                await self._pause(mailbox.poll_interval_seconds)

    async def _idle(self, client: aioimaplib.IMAP4, seconds: float) -> None:
        seconds = min(seconds, 600.0)
        idle = await client.idle_start(timeout=seconds)
        push = asyncio.ensure_future(client.wait_server_push(timeout=seconds))
        wake = asyncio.ensure_future(self._wake.wait())
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            await asyncio.wait(
                {push, wake, lost}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (push, wake, lost):
                task.cancel()
        if self._lost.is_set():
            raise ConnectionResetError("the server closed the connection during IDLE")
        if client.has_pending_idle():
            client.idle_done()
        await self._imap(idle, "IDLE")

    async def _expunge(self, client: aioimaplib.IMAP4) -> None:
        await self._imap(client.expunge(), "EXPUNGE")

    async def _batch(
        self, client: aioimaplib.IMAP4, uids: list[int], mailbox: BounceMailbox
    ) -> None:
        uid_set = ",".join(str(u) for u in uids)
        response = await self._imap(
            client.protocol.uid("fetch", uid_set, "(UID RFC822)", timeout=COMMAND_SECONDS),
            "UID FETCH",
        )
        for uid, raw in parse_fetch(response.lines):
            await self.take(raw, mailbox)
            await self._imap(
                client.uid("store", str(uid), "+FLAGS.SILENT", r"(\Deleted)"), "UID STORE"
            )
        await self._expunge(client)

    async def take(self, raw: bytes, mailbox: BounceMailbox) -> Outcome:
        """Commit one message's effects (or recognise it as already done)."""
        analysis = await asyncio.to_thread(analyse, raw)
        try:
            outcome = await self.recorder.record(raw, analysis, mailbox)
        except (OSError, TimeoutError):
            raise  # the database is unreachable: the message stays, we retry later
        except Exception as error:
            if analysis.unreadable is not None:
                raise
            # something in this message our SQL refuses: keep it for a person, go on
            log.exception("recording a message from the bounce mailbox failed")
            outcome = await self.recorder.record_unparsed(
                raw, analysis, f"processing failed: {type(error).__name__}: {error}"
            )
        MESSAGES.labels(outcome.outcome).inc()
        if outcome.outcome == "unparsed":
            log.warning(
                "kept an unreadable message from the bounce mailbox (%d bytes, sha256 %s): %s",
                analysis.size,
                analysis.digest[:16],
                analysis.unreadable,
            )
        await announce_bounces(
            self.runtime.announce,
            outcome.events,
            functools.partial(activity.publish_bounces, self.runtime),
        )
        return outcome
