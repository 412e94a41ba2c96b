"""The admin HTTP API of the runtime settings (FastAPI), served by the config service.

    GET  /settings                    every group
    GET  /settings/{group}            one group (smtp, marketing, bounce)
    PUT  /settings/{group}            partial update: merged, validated as a whole, versioned
    GET  /settings/{group}/history    who changed what, when
    POST /actions/test-smtp           a test email through the global SMTP account
    POST /actions/test-imap           a login to the bounce mailbox
    GET  /admin/jobs                  the jobs (jobs_api)
    POST /admin/jobs/{name}/run       run one now

Every call needs `Authorization: Bearer <MAILROOM_ADMIN_TOKEN>` (checked before anything
else is read); /docs and /openapi.json describe the API and are public.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Annotated, Any

from fastapi import FastAPI, Header, HTTPException, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from mailroom_common.addresses import AddressProblem, checked_address
from mailroom_common.runtime import Runtime
from mailroom_common.runtime_settings import GROUPS
from pydantic import BaseModel, Field, SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailroom_config import settings_ops
from mailroom_config.console.app import create_console
from mailroom_config.groups import (
    DEPLOYMENT_SETTINGS,
    GROUP_NAMES,
    FieldProblem,
    Invalid,
    ReadOnly,
)
from mailroom_config.jobs_api import jobs_router
from mailroom_config.settings_ops import (
    ActionResult,
    ChangeResult,
    GroupView,
    History,
)

log = logging.getLogger(__name__)

PATHS = ("/settings", "/actions", "/admin", "/console", "/docs", "/openapi.json")
PROTECTED = ("/settings", "/actions", "/admin")
TOKEN_NOT_SET = (
    "the admin API is disabled: MAILROOM_ADMIN_TOKEN is not set for the config service"
    " (set it, restart the service, then call with 'Authorization: Bearer <token>')"
)
BAD_TOKEN = "missing or wrong bearer token (Authorization: Bearer <MAILROOM_ADMIN_TOKEN>)"
MAX_BODY_BYTES = 1024 * 1024  # two 64 KB footers, escaped, fit with room to spare
TOO_LARGE = f"the request body is larger than {MAX_BODY_BYTES:,} bytes"


# --- what the API answers (also its OpenAPI document) -------------------------------------


class Problem(BaseModel):
    detail: str


class FieldProblemOut(BaseModel):
    field: str = Field(description="The setting (or request field) that is wrong.")
    problem: str = Field(description="Why, in words.")


class ValidationProblem(BaseModel):
    detail: list[FieldProblemOut]


class TestSmtpRequest(BaseModel):
    to: str = Field(description="Where the test email goes.", examples=["admin@example.com"])


PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or wrong bearer token."},
    503: {"model": Problem, "description": "MAILROOM_ADMIN_TOKEN is not set: API disabled."},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "Unknown settings group."}
}
INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": ValidationProblem, "description": "Invalid values, by field."}
}


def _partial_schema(group: str) -> dict[str, Any]:
    schema = GROUPS[group].model_json_schema()
    schema["properties"].pop("group", None)
    schema.pop("required", None)
    schema["title"] = f"{group} (any of these keys)"
    schema["additionalProperties"] = False
    for name, source in DEPLOYMENT_SETTINGS.get(group, {}).items():
        schema["properties"][name] = {
            "type": "integer",
            "readOnly": True,
            "description": f"Read-only ({source}); a different value gets 409.",
        }
    return schema


PUT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The settings to change; the others keep their value. A password sent"
        ' back as "********" keeps the stored one.',
        "content": {
            "application/json": {"schema": {"anyOf": [_partial_schema(g) for g in GROUP_NAMES]}}
        },
    }
}


# --- authentication -------------------------------------------------------------------------


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class AdminAuth:
    """Refuses every call under PROTECTED without the admin token, before anything is read.

    Comparison in constant time (of equal-length digests, so not even the length leaks)."""

    def __init__(self, app: ASGIApp, token: SecretStr | None) -> None:
        self.app = app
        secret = token.get_secret_value() if token is not None else ""
        self.expected = _digest(secret) if secret else None

    def allowed(self, authorization: str) -> bool:
        scheme, _, presented = authorization.partition(" ")
        if self.expected is None or scheme.lower() != "bearer" or not presented.strip():
            return False
        return hmac.compare_digest(_digest(presented.strip()), self.expected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not any(path == p or path.startswith(p + "/") for p in PROTECTED):
            await self.app(scope, receive, send)
            return
        if self.expected is None:
            response = JSONResponse({"detail": TOKEN_NOT_SET}, status_code=503)
        else:
            headers = dict(scope.get("headers") or [])
            authorization = headers.get(b"authorization", b"").decode("latin-1")
            if self.allowed(authorization):
                await self.app(scope, receive, send)
                return
            response = JSONResponse(
                {"detail": BAD_TOKEN},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="mailroom-admin"'},
            )
        await response(scope, receive, send)


class BodyLimit:
    """Reads a request body up to MAX_BODY_BYTES before the app sees it (a declared
    Content-Length or a chunked body alike) and answers 413 past that, without reading on."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {"detail": TOO_LARGE}, status_code=413, headers={"Connection": "close"}
        )
        await response(scope, receive, send)


# --- the app --------------------------------------------------------------------------------


def _unprocessable(problems: list[FieldProblem]) -> JSONResponse:
    return JSONResponse({"detail": [p.as_dict() for p in problems]}, status_code=422)


def _field_of(location: tuple[Any, ...]) -> str:
    parts = [str(p) for p in location]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "(body)"


def _known(group: str) -> str:
    if group not in GROUPS:
        raise HTTPException(
            404, f"unknown settings group {group!r}; known: {', '.join(GROUP_NAMES)}"
        )
    return group


GroupPath = Annotated[
    str,
    Path(description="smtp, marketing or bounce.", json_schema_extra={"enum": list(GROUP_NAMES)}),
]


DESCRIPTION = """\
Every call needs `Authorization: Bearer <MAILROOM_ADMIN_TOKEN>`: without it, or with another
token, the answer is 401; when the service has no token configured, every call gets 503.

- **Groups**: `smtp` (the global SMTP account every campaign and autoresponder uses),
  `marketing` (the footers appended to every email, the public base URL of their links) and
  `bounce` (the dedicated IMAP mailbox of bounces).
- **Changes** are partial: the keys sent are merged into the current value and the whole is
  validated (422 names each field and why). Each change is a new version, recorded with who
  made it (`X-Mailroom-Actor`, else `admin`) and announced as `settings.changed`.
- **Passwords** (and the DKIM private keys of `smtp`) are write-only: shown as `"********"`
  when set, `""` when not; sending the mask back keeps the stored value.
- **Read-only** entries (`read_only` in a group's view) are shown, never changed here; a PUT
  that tries gets 409.
- **Jobs** (`/admin/jobs`): the six campaign jobs and sync-crm-contacts, as `mailroom jobs
  --json` shows them (replicas, last run, last success, last error, queues and dead
  letters); a POST to `/admin/jobs/{name}/run` asks every replica of one to run it now
  (`job.run`).
"""


def create_app(runtime: Runtime | None = None) -> FastAPI:
    """The admin API; without a runtime it can only describe itself (openapi())."""
    app = FastAPI(
        title="Mailroom config",
        version="1",
        summary="The runtime settings of Mailroom: the global SMTP account, the marketing"
        " footers and the bounce mailbox.",
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    bearer = HTTPBearer(auto_error=False, description="MAILROOM_ADMIN_TOKEN")
    secured = [Security(bearer)]  # documents the scheme; AdminAuth enforces it

    def current() -> Runtime:
        assert runtime is not None, "the app was built without a runtime"
        return runtime

    @app.exception_handler(Invalid)
    async def invalid(_: Request, error: Invalid) -> JSONResponse:
        return _unprocessable(error.problems)

    @app.exception_handler(RequestValidationError)
    async def request_invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI's own shape echoes the input; a value may be a password, so never
        return _unprocessable(
            [
                FieldProblem(_field_of(tuple(e.get("loc", ()))), str(e.get("msg", "invalid")))
                for e in error.errors()
            ]
        )

    @app.exception_handler(ReadOnly)
    async def read_only_refused(_: Request, error: ReadOnly) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=409)

    async def view(group: str) -> GroupView:
        return await settings_ops.group_view(current(), group)

    @app.get(
        "/settings",
        response_model=dict[str, GroupView],
        dependencies=secured,
        responses=PROBLEMS,
        summary="Every settings group",
    )
    async def all_settings() -> dict[str, GroupView]:
        return {group: await view(group) for group in GROUP_NAMES}

    @app.get(
        "/settings/{group}",
        response_model=GroupView,
        dependencies=secured,
        responses={**PROBLEMS, **NOT_FOUND},
        summary="One settings group",
    )
    async def get_group(group: GroupPath) -> GroupView:
        return await view(_known(group))

    @app.put(
        "/settings/{group}",
        response_model=ChangeResult,
        dependencies=secured,
        responses={
            **PROBLEMS,
            **NOT_FOUND,
            409: {"model": Problem, "description": "A read-only entry cannot change here."},
            **INVALID,
        },
        openapi_extra=PUT_BODY,
        summary="Change some settings of a group",
        description="The body's keys are merged into the current value and the whole is"
        " validated; a change is stored as a new version (with who made it: the"
        " X-Mailroom-Actor header, else 'admin') and announced as settings.changed. A body"
        " that changes nothing makes no version and no event.",
    )
    async def put_group(
        group: GroupPath,
        request: Request,
        x_mailroom_actor: Annotated[
            str | None, Header(description="Who makes the change (default 'admin').")
        ] = None,
    ) -> ChangeResult:
        _known(group)
        actor = settings_ops.actor_name(x_mailroom_actor)
        try:
            changes = json.loads(await request.body() or b"null")
        except (ValueError, RecursionError):
            raise Invalid([FieldProblem("(body)", "not valid JSON")]) from None
        if not isinstance(changes, dict):
            raise Invalid(
                [FieldProblem("(body)", "must be a JSON object of the settings to change")]
            )
        return await settings_ops.change_group(current(), group, changes, actor)

    @app.get(
        "/settings/{group}/history",
        response_model=History,
        dependencies=secured,
        responses={**PROBLEMS, **NOT_FOUND, **INVALID},
        summary="The changes of a group, newest first",
    )
    async def history(
        group: GroupPath, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> History:
        _known(group)
        entries = await settings_ops.history(current(), group, limit)
        return History(group=group, entries=[entry for _, entry in entries])

    @app.post(
        "/actions/test-smtp",
        response_model=ActionResult,
        dependencies=secured,
        responses={**PROBLEMS, **INVALID},
        summary="Send a test email through the global SMTP account",
    )
    async def test_smtp(body: TestSmtpRequest) -> ActionResult:
        try:
            to = checked_address(body.to)
        except AddressProblem as error:
            raise Invalid([FieldProblem("to", str(error))]) from None
        return await settings_ops.test_smtp(current(), to)

    @app.post(
        "/actions/test-imap",
        response_model=ActionResult,
        dependencies=secured,
        responses=PROBLEMS,
        summary="Log in to the bounce mailbox and select its folder",
    )
    async def test_imap() -> ActionResult:
        return await settings_ops.test_imap(current())

    app.include_router(jobs_router(current, secured, PROBLEMS))
    app.mount("/console", create_console(current), name="console")

    token = runtime.settings.admin_token if runtime is not None else None
    app.add_middleware(BodyLimit)
    app.add_middleware(AdminAuth, token=token)  # the outermost: nothing is read before it
    return app


def openapi_document() -> str:
    """The OpenAPI document, as committed in docs/openapi-config.json."""
    return json.dumps(create_app().openapi(), indent=2, ensure_ascii=False) + "\n"
