"""Draft campaigns: checked and stored by one set of functions, whoever asks.

`campaign.create` and `campaign.update` (the item generator consumes them) and
`mailroom campaign create` (the CLI, the demo, the benchmark) all come through here, so a
campaign the CLI refuses is refused by command for the same reason, and the other way round.

What is checked, before anything is written:
- templates: subject, HTML and text compiled as the message processor compiles them, with
  the marketing footers, and trial-rendered (`campaign_message.compile_campaign`, in a
  thread of its own: it may take a second), and no variable used that no template is given
  (`{{ first_name }}`, not `contact.first_name`);
- From and Reply-To: the rules of the SMTP account's From (`addresses.check_sender`: ASCII,
  a domain with a dot, no special-use domain but `.test`), no control characters, then the
  renderer's own check;
- target lists: at least one, each known (by name or id), resolved in the transaction that
  stores them.

A refusal is `CampaignProblem`, whose `field` names the field of the command and whose
`reason` is "field: what is wrong" (the `x-mailroom-error` of a refused command); `str()`
is what the CLI has always printed.

Idempotency: a create may carry the CRM's idempotency key, or else the broker message id of
its command; either is stored on the campaign (unique, migration 0014) with a digest of the
content. The same key with the same content finds the campaign made before (`replayed`);
with other content it is refused. Two consumers taking the same request at once make one
campaign: the insert does nothing on a conflict and waits for the other's commit.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any

from asyncpg.pool import Pool, PoolConnectionProxy
from jinja2 import meta, nodes

from mailroom_common.addresses import AddressProblem, check_sender
from mailroom_common.campaign_message import compile_campaign
from mailroom_common.events import CampaignCreate, CampaignUpdate
from mailroom_common.rendering import TemplateProblem
from mailroom_common.rendering.message import RECIPIENT_VARIABLES
from mailroom_common.rendering.templates import (
    HTML,
    HTML_ENVIRONMENT,
    SUBJECT,
    TEXT,
    TEXT_ENVIRONMENT,
)
from mailroom_common.runtime_settings import MarketingSettings, SettingsStore
from mailroom_common.settings import Settings

# the command's field for each part a TemplateProblem names
_FIELD_OF_PART = {
    "subject": "subject",
    "html": "html_template",
    "text": "text_template",
    "from address": "from_email",
    "reply-to": "reply_to",
    "text footer": "marketing.text_footer",
    "html footer": "marketing.html_footer",
    "message": "templates",
}
_DRAFT = (
    "SELECT status, name, subject, from_email, from_name, reply_to, html_template,"
    " text_template, ARRAY(SELECT list_id FROM campaign_lists WHERE campaign_id = $1"
    " ORDER BY list_id) AS list_ids FROM campaigns WHERE id = $1"
)
_DRAFT_FOR_UPDATE = _DRAFT + " FOR UPDATE"
# drafts are checked one at a time in a thread of their own: a CRM sending many costly
# templates at once takes one core at most, and never the default executor that rendering
# shares (`mailroom run all`)
_CHECKS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailroom-draft-check")
_UPDATE_TRIES = 20  # each try, one of the updates racing on a draft lands
# what a campaign's templates are given: the recipient's variables, and the campaign
_TEMPLATE_NAMES = RECIPIENT_VARIABLES | {"campaign"}
# what campaign.update may change besides the lists
_TEXT_FIELDS = (
    "name",
    "subject",
    "from_email",
    "from_name",
    "reply_to",
    "html_template",
    "text_template",
)
_INSERT = (
    f"INSERT INTO campaigns ({', '.join(_TEXT_FIELDS)}, idempotency_key, request_message_id,"
    " request_digest) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    " ON CONFLICT DO NOTHING RETURNING id"
)
_UPDATE = (
    "UPDATE campaigns SET"
    f" {', '.join(f'{name} = ${n}' for n, name in enumerate(_TEXT_FIELDS, start=2))}"
    " WHERE id = $1"
)


class CampaignProblem(ValueError):
    """A campaign request a person must correct: `field` names the field of the command,
    `reason` says what is wrong ("field: ..."), `str()` is the CLI's wording."""

    def __init__(
        self, field: str, problem: str, *, line: int | None = None, said: str = ""
    ) -> None:
        self.field = field
        where = field if line is None else f"{field}, line {line}"
        self.reason = f"{where}: {problem}"
        super().__init__(said or self.reason)


@dataclass(frozen=True)
class NewCampaign:
    name: str
    subject: str
    from_email: str
    from_name: str
    html_template: str
    text_template: str | None
    lists: Sequence[str]
    reply_to: str | None = None
    list_ids: Sequence[int] = field(default=())

    @classmethod
    def of(cls, command: CampaignCreate) -> NewCampaign:
        return cls(
            **{name: getattr(command, name) for name in _TEXT_FIELDS},
            lists=tuple(command.lists),
            list_ids=tuple(command.list_ids),
        )

    def columns(self) -> dict[str, str | None]:
        """The values of _TEXT_FIELDS, in that order: the columns of `campaigns`."""
        return {name: getattr(self, name) for name in _TEXT_FIELDS}

    def digest(self) -> bytes:
        """SHA-256 of the content (the lists as sets): equal for a repeat of the request."""
        content = {
            "name": self.name,
            "subject": self.subject,
            "from_email": self.from_email,
            "from_name": self.from_name,
            "reply_to": self.reply_to,
            "html_template": self.html_template,
            "text_template": self.text_template,
            "lists": sorted(set(self.lists)),
            "list_ids": sorted(set(self.list_ids)),
        }
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).digest()


@dataclass(frozen=True)
class CreatedCampaign:
    campaign_id: int
    replayed: bool  # made before, by the same idempotency key or broker message


async def create_campaign(pool: Pool, campaign: NewCampaign, settings: Settings) -> int:
    """Check and store a draft campaign (no idempotency): its id."""
    return (await create_draft(pool, settings, campaign)).campaign_id


async def create_draft(
    pool: Pool,
    settings: Settings,
    campaign: NewCampaign,
    *,
    idempotency_key: str | None = None,
    message_id: str | None = None,
) -> CreatedCampaign:
    """Check `campaign` and store it as a draft, or find the one the same request made."""
    key, by_message = (idempotency_key, None) if idempotency_key else (None, message_id)
    digest = campaign.digest() if key or by_message else None
    if digest is not None:
        earlier = await _made_before(pool, key, by_message, digest)
        if earlier is not None:
            return earlier
    await _check_templates(pool, settings, campaign)
    async with pool.acquire() as conn, conn.transaction():
        list_ids = await _target_lists(conn, campaign.lists, campaign.list_ids)
        campaign_id: int | None = await conn.fetchval(
            _INSERT, *campaign.columns().values(), key, by_message, digest
        )
        if campaign_id is not None:
            await _store_lists(conn, campaign_id, list_ids)
            return CreatedCampaign(campaign_id, replayed=False)
    # another consumer stored the same request meanwhile (its commit ended our wait)
    earlier = None if digest is None else await _made_before(pool, key, by_message, digest)
    if earlier is None:  # deleted since: raised, so that the command is taken again
        raise RuntimeError("a campaign of the same request was stored and deleted meanwhile")
    return earlier


async def update_draft(pool: Pool, settings: Settings, command: CampaignUpdate) -> list[str]:
    """Apply `command` to its draft campaign, checked whole as a create is: the names of the
    fields whose stored value changed. What was checked is what is stored: if the draft
    changed while the templates compiled (another update), it is done again on the new one."""
    for _ in range(_UPDATE_TRIES):
        row = await _draft(pool, command.campaign_id)
        given = {
            name: getattr(command, name)
            for name in _TEXT_FIELDS
            if getattr(command, name) is not None
        }
        for name in ("reply_to", "text_template"):  # "" removes them
            if given.get(name) == "":
                given[name] = None
        new_lists = command.lists is not None or command.list_ids is not None
        campaign = NewCampaign(
            **{name: given.get(name, row[name]) for name in _TEXT_FIELDS},
            lists=tuple(command.lists or ()) if new_lists else (),
            list_ids=tuple(command.list_ids or ()) if new_lists else tuple(row["list_ids"]),
        )
        await _check_templates(pool, settings, campaign)
        changed = sorted(name for name, value in given.items() if row[name] != value)
        async with pool.acquire() as conn, conn.transaction():
            if await _draft(conn, command.campaign_id, lock=True) != row:
                continue
            await conn.execute(_UPDATE, command.campaign_id, *campaign.columns().values())
            if new_lists:
                list_ids = await _target_lists(conn, campaign.lists, campaign.list_ids)
                if list_ids != row["list_ids"]:
                    changed.append("lists")
                await conn.execute(
                    "DELETE FROM campaign_lists WHERE campaign_id = $1", command.campaign_id
                )
                await _store_lists(conn, command.campaign_id, list_ids)
            return changed
    raise RuntimeError(f"campaign {command.campaign_id} changed under {_UPDATE_TRIES} updates")


async def _store_lists(conn: PoolConnectionProxy, campaign_id: int, list_ids: list[int]) -> None:
    await conn.execute(
        "INSERT INTO campaign_lists (campaign_id, list_id) SELECT $1, unnest($2::bigint[])",
        campaign_id,
        list_ids,
    )


async def _draft(
    conn: Pool | PoolConnectionProxy, campaign_id: int, *, lock: bool = False
) -> dict[str, Any]:
    """The draft's fields and target list ids; CampaignProblem if it is none (any more)."""
    row = await conn.fetchrow(
        _DRAFT_FOR_UPDATE if lock else _DRAFT,
        campaign_id,
    )
    if row is None:
        raise CampaignProblem("campaign_id", f"campaign {campaign_id} does not exist")
    _require_draft(campaign_id, row["status"])  # a launch may have come meanwhile
    return {**dict(row), "list_ids": list(row["list_ids"])}


def _require_draft(campaign_id: int, status: str) -> None:
    if status != "draft":
        raise CampaignProblem(
            "campaign_id",
            f"campaign {campaign_id} is {status}; only a draft can be updated",
        )


async def _made_before(
    pool: Pool, key: str | None, message_id: str | None, digest: bytes
) -> CreatedCampaign | None:
    what, column, value = (
        ("idempotency_key", "idempotency_key", key)
        if key is not None
        else ("message_id", "request_message_id", message_id)
    )
    row = await pool.fetchrow(
        f"SELECT id, request_digest FROM campaigns WHERE {column} = $1", value
    )
    if row is None:
        return None
    if bytes(row["request_digest"]) != digest:
        raise CampaignProblem(
            what,
            f"{value!r} already created campaign {row['id']} with other content;"
            " a new campaign needs a new key",
        )
    return CreatedCampaign(row["id"], replayed=True)


async def _check_templates(pool: Pool, settings: Settings, campaign: NewCampaign) -> None:
    _check_address("from_email", "from address", campaign.from_email)
    if campaign.reply_to is not None:
        _check_address("reply_to", "reply-to", parseaddr(campaign.reply_to)[1] or campaign.reply_to)
    marketing, _ = await SettingsStore(pool, settings.settings_key).load(MarketingSettings)
    try:
        await asyncio.get_running_loop().run_in_executor(
            _CHECKS, check_campaign, campaign, marketing
        )
    except TemplateProblem as problem:
        raise CampaignProblem(
            _FIELD_OF_PART.get(problem.part, problem.part),
            problem.problem,
            line=problem.line,
            said=str(problem),
        ) from problem


def check_campaign(campaign: NewCampaign, marketing: MarketingSettings) -> None:
    """Compile as the message processor will (`compile_campaign`), then look for names no
    template can be given: `{{ first_name }}` for `{{ contact.first_name }}` would render as
    nothing for everyone. Only here, when a campaign is defined: a stored campaign renders as
    it always did."""
    compile_campaign({"id": 0, **campaign.columns()}, marketing)
    for part, source, environment in (
        (SUBJECT, campaign.subject, TEXT_ENVIRONMENT),
        (HTML, campaign.html_template, HTML_ENVIRONMENT),
        (TEXT, campaign.text_template, TEXT_ENVIRONMENT),
    ):
        if source is None:
            continue
        tree = environment.parse(source)
        # a name set anywhere counts as given: Jinja reports one set in the branches of an
        # `if` as undeclared (it may be unset), but that is the template's own variable
        stored = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
        unknown = (
            meta.find_undeclared_variables(tree)
            - _TEMPLATE_NAMES
            - set(environment.globals)
            - stored
        )
        if unknown:
            first = min(
                (node.lineno, node.name)
                for node in tree.find_all(nodes.Name)
                if node.name in unknown
            )
            raise TemplateProblem(
                part,
                f"unknown variable '{first[1]}': a merge field is contact.<field>"
                " (e.g. contact.first_name), the campaign's name campaign.name",
                first[0],
            )


def _check_address(field: str, part: str, value: str) -> None:
    """A sender's address other servers take: email-validator's rules (no display name, no
    quoting, a domain with a dot, not a special-use domain but `.test`), ASCII only."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise CampaignProblem(field, "holds a control character (a line break?)")
    try:
        check_sender(value.strip())  # the rules of the SMTP account's From (config)
    except AddressProblem as problem:
        raise CampaignProblem(field, str(problem), said=f"{part}: {problem}") from None


async def _target_lists(
    conn: PoolConnectionProxy, names: Sequence[str], ids: Sequence[int]
) -> list[int]:
    """The ids of the lists named or given, each checked to exist (held against deletion
    until the transaction ends), in id order."""
    if not names and not ids:
        raise CampaignProblem(
            "lists",
            "name at least one target list (lists or list_ids)",
            said="name at least one target list (--list NAME)",
        )
    rows = await conn.fetch(
        "SELECT id, name FROM lists WHERE name = ANY($1::text[]) OR id = ANY($2::bigint[])"
        " ORDER BY id FOR KEY SHARE",
        list(names),
        list(ids),
    )
    missing_names = sorted(set(names) - {r["name"] for r in rows})
    if missing_names:
        shown = ", ".join(missing_names)
        raise CampaignProblem(
            "lists",
            f"no list named {', '.join(repr(n) for n in missing_names)}",
            said=f"unknown list(s): {shown}",
        )
    missing_ids = sorted(set(ids) - {r["id"] for r in rows})
    if missing_ids:
        raise CampaignProblem(
            "list_ids",
            f"list {', '.join(map(str, missing_ids))} does not exist"
            if len(missing_ids) == 1
            else f"lists {', '.join(map(str, missing_ids))} do not exist",
        )
    return [r["id"] for r in rows]
