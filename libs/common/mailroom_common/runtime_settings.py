"""Runtime settings an administrator changes (owned by the config service), kept in PostgreSQL.

One row per group in `settings`; a group missing from the table has its defaults.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from typing import Annotated, Any, Literal, TypeVar

from asyncpg.pool import Pool
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr

from mailroom_common.addresses import AddressProblem, check_sender
from mailroom_common.urls import is_one_click_url

DEFAULT_TEXT_FOOTER = (
    "You receive this email because you subscribed to our list.\n"
    "Unsubscribe: {{ unsubscribe_url }}\n"
    "Manage subscriptions: {{ manage_url }}"
)
DEFAULT_HTML_FOOTER = (
    '<div style="font-size:12px;color:#666;margin-top:24px">'
    "You receive this email because you subscribed to our list. "
    '<a href="{{ unsubscribe_url }}">Unsubscribe</a> · '
    '<a href="{{ manage_url }}">Manage subscriptions</a></div>'
)


# --- value rules shared by the groups (every value has a size limit) ---------------------------

_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_TEMPLATE_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # all but \t \n \r
_HOST = re.compile(r"[A-Za-z0-9.:_\[\]-]+")


def one_line(value: str) -> str:
    if _CONTROLS.search(value):
        raise ValueError("must not contain line breaks or other control characters")
    return value


def template_text(value: str) -> str:
    if _TEMPLATE_CONTROLS.search(value):
        raise ValueError("must not contain control characters other than tabs and line breaks")
    return value


def host_name(value: str) -> str:
    if not _HOST.fullmatch(value):
        raise ValueError("must be a host name or an IP address")
    return value


def from_address(value: str) -> str:
    """An address for From headers: plain ASCII (no SMTPUTF8), checked by email-validator."""
    one_line(value)
    try:
        check_sender(value)
    except AddressProblem as problem:
        raise ValueError(f"not a valid email address: {problem}") from None
    return value


OneLine = Annotated[str, Field(max_length=200), AfterValidator(one_line)]
Host = Annotated[str, Field(min_length=1, max_length=253), AfterValidator(host_name)]
Username = Annotated[str, Field(max_length=320), AfterValidator(one_line)]
Password = Annotated[SecretStr, Field(max_length=1024)]
FromAddress = Annotated[str, Field(max_length=320), AfterValidator(from_address)]
Footer = Annotated[str, Field(max_length=65_536), AfterValidator(template_text)]
DkimDomain = Annotated[
    str, Field(max_length=253, pattern=r"^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)*$")
]
DkimSelector = Annotated[
    str, Field(max_length=63, pattern=r"^([A-Za-z0-9]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.?)*$")
]
DkimKey = Annotated[SecretStr, Field(max_length=16_384)]  # PEM; checked by the config API


class SmtpAccount(BaseModel):
    """The global SMTP account every campaign and autoresponder goes through."""

    model_config = ConfigDict(extra="forbid")
    group: Literal["smtp"] = "smtp"

    host: Host = "127.0.0.1"
    port: int = Field(default=25, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "none"
    username: Username = ""
    password: Password = SecretStr("")
    verify_certificates: bool = True
    from_name: OneLine = "Mailroom"
    from_email: FromAddress = "news@mailroom.test"
    pool_size: int = Field(default=8, ge=1, le=200)
    messages_per_second: float = Field(
        default=0, ge=0, le=100_000, allow_inf_nan=False, description="0 means no limit."
    )
    timeout_seconds: float = Field(default=30, gt=0, le=3600, allow_inf_nan=False)
    # DKIM (docs/config.md): every message signed for dkim_domain, rsa-sha256 with the
    # selector's key and, when set, ed25519-sha256 as well; the keys are write-only.
    dkim_domain: DkimDomain = Field(default="", description="Empty: messages are not signed.")
    dkim_selector: DkimSelector = ""
    dkim_private_key: DkimKey = SecretStr("")
    dkim_next_selector: DkimSelector = Field(
        default="",
        description="A key made for rotation, not used yet: setting dkim_selector to it makes"
        " it the active key (once its DNS record is published).",
    )
    dkim_next_private_key: DkimKey = SecretStr("")
    dkim_previous_selector: DkimSelector = Field(
        default="", description="The selector rotated out: keep its DNS record a while."
    )
    dkim_ed25519_selector: DkimSelector = ""
    dkim_ed25519_private_key: DkimKey = SecretStr("")
    # the adaptive rate (mailroom_common.adaptive_rate), between the floor and
    # messages_per_second; nothing to adapt when that is 0 (no limit)
    adaptive_rate: bool = Field(
        default=True,
        description="Lower the send rate while the relay throttles (421, 4.7.x), then raise it"
        " back slowly.",
    )
    rate_floor_per_second: float = Field(default=1, gt=0, le=100_000, allow_inf_nan=False)
    rate_increase_step_percent: float = Field(
        default=5,
        gt=0,
        le=100,
        allow_inf_nan=False,
        description="Percent of messages_per_second added back every interval.",
    )
    rate_decrease_factor: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        allow_inf_nan=False,
        description="The rate is multiplied by it when the relay throttles.",
    )
    rate_interval_seconds: float = Field(
        default=2,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="One increase step per interval without throttling; at most one decrease"
        " per interval, whatever the number of senders.",
    )


def check_public_base_url(url: str) -> str:
    if not is_one_click_url(url):
        raise ValueError(
            "must be an https:// URL (RFC 8058 one-click unsubscribe); http:// only for localhost"
        )
    return url.rstrip("/")


class MarketingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    group: Literal["marketing"] = "marketing"

    text_footer: Footer = DEFAULT_TEXT_FOOTER
    html_footer: Footer = DEFAULT_HTML_FOOTER
    public_base_url: Annotated[
        str, Field(max_length=2000), AfterValidator(one_line), AfterValidator(check_public_base_url)
    ] = "http://127.0.0.1:8080"


# --- the provider webhooks' entries of the bounce group (docs/bounces.md) -----------------

_TOPIC_ARN = re.compile(r"arn:aws(-[a-z]+)*:sns:[a-z0-9-]{1,30}:[0-9]{12}:[A-Za-z0-9_.-]{1,256}")


def topic_arn(value: str) -> str:
    if not _TOPIC_ARN.fullmatch(value):
        raise ValueError("must be an SNS topic ARN: arn:aws:sns:<region>:<account>:<topic>")
    return value


def ip_network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ValueError("must be an IP address or network (CIDR)") from None


def sendgrid_key(value: str) -> str:
    """SendGrid's verification key: base64 of the DER public key, as SendGrid shows it (a PEM
    block is taken too); it must be an ECDSA P-256 key."""
    value = value.strip()
    if not value:
        return value
    try:
        if value.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(value.encode("ascii"))
        else:
            key = serialization.load_der_public_key(base64.b64decode(value, validate=True))
    except (ValueError, UnicodeError):
        raise ValueError("must be SendGrid's verification key (base64 or PEM)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("must be an ECDSA P-256 public key (SendGrid's verification key)")
    return value


TopicArn = Annotated[str, Field(max_length=256), AfterValidator(topic_arn)]
IpNetwork = Annotated[str, Field(max_length=50), AfterValidator(ip_network)]
SendGridKey = Annotated[str, Field(max_length=1000), AfterValidator(sendgrid_key)]


class BounceMailbox(BaseModel):
    model_config = ConfigDict(extra="forbid")
    group: Literal["bounce"] = "bounce"

    host: Host = "127.0.0.1"
    port: int = Field(default=143, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "tls"
    username: Username = ""
    password: Password = SecretStr("")
    verify_certificates: bool = True
    folder: OneLine = "INBOX"
    poll_interval_seconds: float = Field(default=60, gt=0, le=86_400, allow_inf_nan=False)
    soft_bounce_threshold: int = Field(default=3, ge=1, le=1000)
    soft_bounce_window_days: int = Field(default=7, ge=1, le=3650)
    # provider webhooks (docs/bounces.md): a provider's endpoint answers only when its
    # entries are set; the secrets are write-only like the password
    ses_topic_arns: list[TopicArn] = Field(default_factory=list, max_length=20)
    sendgrid_public_key: SendGridKey = ""
    postmark_username: Username = ""
    postmark_password: Password = SecretStr("")
    postmark_allowed_ips: list[IpNetwork] = Field(default_factory=list, max_length=100)
    mailgun_signing_key: Password = SecretStr("")


GroupModel = TypeVar("GroupModel", SmtpAccount, MarketingSettings, BounceMailbox)
GROUPS: dict[str, type[BaseModel]] = {
    "smtp": SmtpAccount,
    "marketing": MarketingSettings,
    "bounce": BounceMailbox,
}
_ENCRYPTED = "enc:v1:"


def _secret_fields(model: type[BaseModel]) -> list[str]:
    return [name for name, field in model.model_fields.items() if field.annotation is SecretStr]


class SettingsStore:
    """Reads and writes settings groups; passwords are stored encrypted (Fernet, with a key
    derived from the deployment's MAILROOM_SETTINGS_KEY) and only ever decrypted in memory."""

    def __init__(self, pool: Pool, secrets_key: SecretStr) -> None:
        self.pool = pool
        digest = hashlib.sha256(secrets_key.get_secret_value().encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def _decrypt(self, model: type[BaseModel], stored: dict[str, Any]) -> dict[str, Any]:
        data = dict(stored)
        for name in _secret_fields(model):
            value = data.get(name)
            if isinstance(value, str) and value.startswith(_ENCRYPTED):
                try:
                    data[name] = self._fernet.decrypt(value.removeprefix(_ENCRYPTED)).decode()
                except InvalidToken as error:
                    raise ValueError(
                        f"cannot decrypt settings.{data.get('group')}.{name}:"
                        " MAILROOM_SETTINGS_KEY is not the key it was stored with"
                    ) from error
        return data

    async def load(self, model: type[GroupModel]) -> tuple[GroupModel, int]:
        """The group's current value and version (0 when never saved: the defaults)."""
        group = model.model_fields["group"].default
        row = await self.pool.fetchrow(
            "SELECT value, version FROM settings WHERE group_name = $1", group
        )
        if row is None:
            return model(), 0
        return model.model_validate(self._decrypt(model, row["value"])), int(row["version"])

    async def version(self, group: str) -> int:
        version = await self.pool.fetchval(
            "SELECT version FROM settings WHERE group_name = $1", group
        )
        return int(version or 0)

    async def save(self, value: BaseModel, *, changed_by: str) -> tuple[int, list[str]]:
        """Store a whole group with a history row; return the new version and changed keys."""
        model = type(value)
        plain = value.model_dump(mode="json")
        secrets = _secret_fields(model)
        for name in secrets:
            plain[name] = getattr(value, name).get_secret_value()
        group = plain["group"]
        stored = dict(plain)
        for name in secrets:
            stored[name] = _ENCRYPTED + self._fernet.encrypt(plain[name].encode()).decode()
        async with self.pool.acquire() as conn, conn.transaction():
            old = await conn.fetchrow(
                "SELECT value FROM settings WHERE group_name = $1 FOR UPDATE", group
            )
            if old is not None:
                before = self._decrypt(model, old["value"])
            else:  # never saved: it had its defaults (see load), changes are against those
                defaults = model()
                before = defaults.model_dump(mode="json")
                before.update({n: getattr(defaults, n).get_secret_value() for n in secrets})
            changed = sorted(k for k in plain if k != "group" and before.get(k) != plain[k])
            version: int = await conn.fetchval(
                "INSERT INTO settings (group_name, value, updated_by) VALUES ($1, $2, $3)"
                " ON CONFLICT (group_name) DO UPDATE SET value = EXCLUDED.value,"
                " version = settings.version + 1, updated_by = EXCLUDED.updated_by,"
                " updated_at = now() RETURNING version",
                group,
                stored,
                changed_by,
            )
            await conn.execute(
                "INSERT INTO settings_history (group_name, version, changed_keys, changed_by)"
                " VALUES ($1, $2, $3, $4)",
                group,
                version,
                changed,
                changed_by,
            )
        return version, changed
