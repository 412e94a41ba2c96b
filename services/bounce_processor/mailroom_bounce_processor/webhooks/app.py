"""The public endpoint of the provider webhooks, on MAILROOM_HTTP_PORT:

    POST /webhooks/ses        Amazon SNS (SES bounce and complaint notifications)
    POST /webhooks/sendgrid   SendGrid's signed event webhook
    POST /webhooks/postmark   Postmark's bounce and spam-complaint webhooks (basic auth)
    POST /webhooks/mailgun    Mailgun's signed webhooks (failed, complained)

A provider whose settings are not set answers 404. A call that is not authentic (unsigned,
badly signed, too old, replayed, wrong credentials) is refused with 401 or 403 and a message,
and changes nothing; so is a body that is too large (413), of another type (415) or not
JSON (400). An accepted call answers 200, also when its events were recorded before (the
providers deliver again until they get a 2xx)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from mailroom_common.events import BounceDetected
from mailroom_common.runtime_settings import BounceMailbox, SettingsStore
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mailroom_bounce_processor.metrics import WEBHOOK_CALLS
from mailroom_bounce_processor.records import Recorder, announce_bounces
from mailroom_bounce_processor.webhooks import mailgun, postmark, sendgrid
from mailroom_bounce_processor.webhooks.body import check_content_type, parse_json, read_body
from mailroom_bounce_processor.webhooks.events import Provider, ProviderEvent, Refused
from mailroom_bounce_processor.webhooks.fetch import https_get
from mailroom_bounce_processor.webhooks.ses import ses_events
from mailroom_bounce_processor.webhooks.sns import Fetch, SnsVerifier

log = logging.getLogger(__name__)

PATHS = ("/webhooks",)
SETTINGS_SECONDS = 5.0
"""How long the bounce settings are kept between calls (a change also forgets them)."""
JSON = ("application/json",)
SNS_TYPES = ("text/plain", "application/json")  # SNS posts its JSON as text/plain
NO_STORE = {"Cache-Control": "no-store"}

Announce = Callable[[BounceDetected], Awaitable[None]]
# tells the CRM's timeline of the bounces of one call (contact.activity)
Activity = Callable[[Sequence[BounceDetected]], Awaitable[None]]


class CachedSettings:
    """The bounce settings group, read at most every SETTINGS_SECONDS."""

    def __init__(self, store: SettingsStore, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self._value: BounceMailbox | None = None
        self._read_at = 0.0

    async def get(self) -> BounceMailbox:
        if self._value is None or self.clock() - self._read_at > SETTINGS_SECONDS:
            self._value, _version = await self.store.load(BounceMailbox)
            self._read_at = self.clock()
        return self._value

    def forget(self) -> None:
        self._value = None


class Webhooks:
    def __init__(
        self,
        recorder: Recorder,
        settings: CachedSettings,
        announce: Announce,
        fetch: Fetch = https_get,
        clock: Callable[[], float] = time.time,
        activity: Activity | None = None,
    ) -> None:
        self.recorder = recorder
        self.settings = settings
        self.announce = announce
        self.activity = activity
        self.clock = clock
        self.sns = SnsVerifier(fetch, clock)

    # --- one handler per provider: authenticate, then the events -----------------------

    async def ses(self, request: Request, mailbox: BounceMailbox) -> dict[str, Any]:
        if not mailbox.ses_topic_arns:
            raise Refused(404, "disabled", "SES webhooks are not configured (ses_topic_arns)")
        check_content_type(request, SNS_TYPES)
        body = await read_body(request)
        message = parse_json(body)
        if not isinstance(message, dict):
            raise Refused(400, "malformed", "an SNS message is a JSON object")
        declared = request.headers.get("x-amz-sns-message-type")
        if declared is not None and declared != message.get("Type"):
            raise Refused(400, "malformed", "x-amz-sns-message-type does not match Type")
        await self.sns.verify(message, mailbox.ses_topic_arns)
        if message["Type"] == "SubscriptionConfirmation":
            await self.sns.confirm(message)
            log.info("confirmed the SNS subscription to %s", message["TopicArn"])
            return {"confirmed": message["TopicArn"]}
        if message["Type"] == "UnsubscribeConfirmation":
            log.warning("SNS says the subscription to %s was removed", message["TopicArn"])
            return {}
        events = ses_events(str(message.get("Message")), str(message.get("MessageId"))[:200])
        return await self._record(events, mailbox, len(body))

    async def sendgrid(self, request: Request, mailbox: BounceMailbox) -> dict[str, Any]:
        if not mailbox.sendgrid_public_key:
            raise Refused(404, "disabled", "SendGrid webhooks are not configured")
        check_content_type(request, JSON)
        body = await read_body(request)
        sendgrid.verify(
            sendgrid.public_key(mailbox.sendgrid_public_key),
            request.headers.get(sendgrid.SIGNATURE_HEADER),
            request.headers.get(sendgrid.TIMESTAMP_HEADER),
            body,
            self.clock(),
        )
        return await self._record(sendgrid.sendgrid_events(parse_json(body)), mailbox, len(body))

    async def postmark(self, request: Request, mailbox: BounceMailbox) -> dict[str, Any]:
        password = mailbox.postmark_password.get_secret_value()
        if not mailbox.postmark_username or not password:
            raise Refused(404, "disabled", "Postmark webhooks are not configured")
        postmark.check_caller(
            request.headers.get("authorization"),
            request.client.host if request.client else None,
            mailbox.postmark_username,
            password,
            mailbox.postmark_allowed_ips,
        )
        check_content_type(request, JSON)
        body = await read_body(request)
        return await self._record(postmark.postmark_events(parse_json(body)), mailbox, len(body))

    async def mailgun(self, request: Request, mailbox: BounceMailbox) -> dict[str, Any]:
        key = mailbox.mailgun_signing_key.get_secret_value()
        if not key:
            raise Refused(404, "disabled", "Mailgun webhooks are not configured")
        check_content_type(request, JSON)
        body = await read_body(request)
        payload = parse_json(body)
        token = mailgun.verify(payload, key, self.clock())
        events = mailgun.mailgun_events(payload)
        return await self._record(events, mailbox, len(body), nonce=("mailgun", token))

    # --- shared ---------------------------------------------------------------------------

    async def _record(
        self,
        events: list[ProviderEvent],
        mailbox: BounceMailbox,
        size: int,
        nonce: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        outcome = await self.recorder.record_provider(events, mailbox, size, nonce)
        if outcome.replayed:
            raise Refused(403, "replayed", "this call's token was used before: a replay")
        await announce_bounces(self.announce, outcome.events, self.activity)
        return {
            "recorded": outcome.recorded,
            "duplicates": outcome.duplicates,
            "unproven": outcome.unproven,
        }

    def endpoint(
        self,
        provider: Provider,
        handle: Callable[[Request, BounceMailbox], Awaitable[dict[str, Any]]],
    ) -> Callable[[Request], Awaitable[JSONResponse]]:
        async def answer(request: Request) -> JSONResponse:
            try:
                mailbox = await self.settings.get()
                result = await handle(request, mailbox)
            except Refused as refusal:
                WEBHOOK_CALLS.labels(provider, refusal.reason).inc()
                if refusal.status in (401, 403):
                    log.warning("%s webhook call refused: %s", provider, refusal.message)
                headers = dict(NO_STORE)
                if refusal.status == 401 and provider == "postmark":
                    headers["WWW-Authenticate"] = 'Basic realm="mailroom webhooks"'
                return JSONResponse(
                    {"detail": refusal.message}, status_code=refusal.status, headers=headers
                )
            WEBHOOK_CALLS.labels(provider, "accepted").inc()
            return JSONResponse(result, headers=NO_STORE)

        return answer


def create_app(webhooks: Webhooks) -> Starlette:
    handlers: dict[Provider, Callable[[Request, BounceMailbox], Awaitable[dict[str, Any]]]] = {
        "ses": webhooks.ses,
        "sendgrid": webhooks.sendgrid,
        "postmark": webhooks.postmark,
        "mailgun": webhooks.mailgun,
    }
    routes = [
        Route(f"/webhooks/{name}", webhooks.endpoint(name, handle), methods=["POST"])
        for name, handle in handlers.items()
    ]
    return Starlette(routes=routes)
