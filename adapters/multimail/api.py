"""The HTTP API: ``create_app(service)``.

Entrypoints only translate: request → service call → response. Every route is declared
with the core operation it performs (``app.state.operations``, mirrored in spec/routes.toml);
every error becomes an RFC 9457 problem document through the one table in ``errors``.
Pydantic models live only here; unknown fields are refused (422).
"""

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import parse_qsl, quote

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from markdown_it import MarkdownIt
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from multimail import mime, render
from multimail.errors import HIDE_AS_NOT_FOUND, STATUS, NotFound, PayloadTooLarge, RateLimited
from multimail.mcp_server import HttpEndpoint
from multimail.service import Service, canonical
from multimail_core.addresses import has_header_breaking_chars
from multimail_core.approval import Content as EditContent
from multimail_core.authorization import Key
from multimail_core.errors import InvalidValue, MultimailError, NotPermitted
from multimail_core.modes import OversightMode
from multimail_core.webhooks import AGENT_TYPES

log = logging.getLogger("multimail.api")

PROBLEM = "application/problem+json"
T = TypeVar("T")
MAX_BODY = 10 * 1024 * 1024
#: send/reply attachments: how many, and their decoded bytes together (the base64 of 7 MiB
#: and the bodies fit in MAX_BODY)
MAX_ATTACHMENTS = 20
MAX_ATTACHMENT_BYTES = 7 * 1024 * 1024


# --- problem documents ------------------------------------------------------------------


def problem(status: int, code: str, detail: str, **extra: object) -> JSONResponse:
    body = {
        "type": f"https://multimail.dev/problems/{code}",
        "title": code.replace("_", " "),
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    headers = {}
    if "retry_after" in extra:
        headers["Retry-After"] = str(extra["retry_after"])
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def error_response(exc: MultimailError) -> JSONResponse:
    if isinstance(exc, NotPermitted) and exc.rule in HIDE_AS_NOT_FOUND:
        return problem(404, "not_found", "no such resource")
    extra: dict[str, object] = {}
    if isinstance(exc, NotPermitted):
        extra["rule"] = exc.rule
    if isinstance(exc, RateLimited):
        extra["retry_after"] = exc.retry_after
    if hasattr(exc, "addresses"):
        extra["addresses"] = list(exc.addresses)
    if hasattr(exc, "field"):
        extra["field"] = exc.field
    return problem(STATUS.get(exc.code, 500), exc.code, exc.detail, **extra)


# --- request models ---------------------------------------------------------------------


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _single_line(value: str | None) -> str | None:
    if value is not None and has_header_breaking_chars(value):
        raise ValueError("must not contain CR, LF or control characters")
    return value


Line = Annotated[str, Field(max_length=998)]


class CreateWebhook(Strict):
    url: str = Field(min_length=1, max_length=2048)
    events: list[str] | None = Field(default=None, max_length=32)
    mailbox_id: str | None = None
    idempotency_key: str | None = None


class CreateAccount(Strict):
    name: Line
    oversight_email: str | None = None
    slug: str | None = None
    _v = field_validator("name", "oversight_email", "slug")(_single_line)


class UpdateAccount(Strict):
    name: Line | None = None
    oversight_email: str | None = None
    default_oversight_mode: OversightMode | None = None
    _v = field_validator("name", "oversight_email")(_single_line)


class CreateKey(Strict):
    name: Line = "key"
    scopes: list[str] = Field(default_factory=lambda: ["read"], min_length=1)
    mailbox_ids: list[str] | None = None
    idempotency_key: str | None = None
    _v = field_validator("name")(_single_line)


class CreateMailbox(Strict):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    domain: str | None = None
    display_name: Annotated[str, Field(max_length=200)] | None = None
    oversight_mode: OversightMode | None = None
    webhook_url: Annotated[str, Field(max_length=2048)] | None = None
    idempotency_key: str | None = None
    _v = field_validator("name", "domain", "display_name", "webhook_url")(_single_line)


class UpdateMailbox(Strict):
    oversight_mode: OversightMode | None = None
    display_name: Annotated[str, Field(max_length=200)] | None = None
    webhook_url: Annotated[str, Field(max_length=2048)] | None = None
    allowlist: list[str] | None = None
    _v = field_validator("display_name", "webhook_url")(_single_line)


class Attachment(Strict):
    """A file to attach (PRODUCT §5). ``content_base64`` is standard base64 with padding
    (RFC 4648 §4); line breaks (CRLF or LF, as MIME tools wrap it) are ignored, any other
    character outside the alphabet (spaces, base64url's ``-`` and ``_``) is refused."""

    filename: str = Field(
        description="1–255 characters; no control characters, no / or \\, no space at either end",
    )
    content_base64: str = Field(
        description="the bytes, standard base64 (line breaks allowed, nothing else)"
    )
    content_type: str = Field(
        default="application/octet-stream",
        description="a media type, type/subtype without parameters (e.g. application/pdf)",
    )

    @field_validator("filename")
    @classmethod
    def _filename(cls, value: str) -> str:
        problem = mime.filename_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("content_type")
    @classmethod
    def _content_type(cls, value: str) -> str:
        problem = mime.media_type_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value.lower()

    @field_validator("content_base64")
    @classmethod
    def _base64(cls, value: str) -> str:
        compact = value.replace("\r", "").replace("\n", "")
        try:
            base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(
                "must be standard base64 (A-Z a-z 0-9 + / with = padding); "
                "only line breaks may separate it"
            ) from None
        return compact

    @property
    def size(self) -> int:
        """The decoded length, read off the (validated) base64."""
        text = self.content_base64
        return len(text) // 4 * 3 - text[-2:].count("=")

    def data(self) -> mime.AttachmentData:
        return (self.filename, self.content_type, base64.b64decode(self.content_base64))


def _attachments_fit(value: list[Attachment]) -> list[Attachment]:
    total = sum(a.size for a in value)
    if total > MAX_ATTACHMENT_BYTES:
        raise ValueError(
            f"the attachments decode to {total} bytes together; the limit is "
            f"{MAX_ATTACHMENT_BYTES} (7 MiB)"
        )
    return value


Attachments = Annotated[
    list[Attachment],
    Field(
        max_length=MAX_ATTACHMENTS,
        description=f"at most {MAX_ATTACHMENTS} files, together at most 7 MiB decoded",
    ),
]


class Send(Strict):
    to: list[str] = Field(min_length=1, max_length=50)
    cc: list[str] = Field(default_factory=list, max_length=50)
    bcc: list[str] = Field(default_factory=list, max_length=50)
    subject: Line = ""
    body_text: Annotated[str, Field(max_length=1_000_000)] | None = None
    body_html: Annotated[str, Field(max_length=2_000_000)] | None = None
    markdown: Annotated[str, Field(max_length=262_144)] | None = None
    attachments: Attachments = Field(default_factory=list)
    send_at: str | None = None
    dry_run: bool = False
    idempotency_key: str | None = None
    _v = field_validator("subject")(_single_line)
    _a = field_validator("attachments")(_attachments_fit)


class Reply(Strict):
    email_id: str | None = None
    thread_id: str | None = None
    mailbox_id: str | None = None
    body_text: Annotated[str, Field(max_length=1_000_000)] | None = None
    body_html: Annotated[str, Field(max_length=2_000_000)] | None = None
    markdown: Annotated[str, Field(max_length=262_144)] | None = None
    cc: list[str] = Field(default_factory=list, max_length=50)
    bcc: list[str] = Field(default_factory=list, max_length=50)
    attachments: Attachments = Field(default_factory=list)
    dry_run: bool = False
    idempotency_key: str | None = None
    _a = field_validator("attachments")(_attachments_fit)


class Edits(Strict):
    subject: Line | None = None
    body_text: str | None = None
    body_html: str | None = None
    _v = field_validator("subject")(_single_line)


class Decide(Strict):
    pending_id: str | None = None
    email_id: str | None = None
    action: Literal["approve", "reject"]
    reason: Annotated[str, Field(max_length=2000)] = ""
    edits: Edits | None = None


class UpgradeRequest(Strict):
    target_mode: OversightMode


class Allowlist(Strict):
    entries: list[str] = Field(max_length=1000)


class Tags(Strict):
    tags: dict[str, str]


class CreateContact(Strict):
    email: str
    name: Line = ""
    tags: list[str] = Field(default_factory=list)
    _v = field_validator("name")(_single_line)


class CreateSuppression(Strict):
    email_address: str
    reason: str = "manual"


# --- rate limiting ----------------------------------------------------------------------


class RateLimiter:
    """Token bucket per key: ``rate`` requests/s sustained, ``burst`` at once; rate 0 = off."""

    def __init__(
        self, rate: float = 50.0, burst: int = 200, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key_id: str) -> None:
        if self.rate <= 0:
            return
        with self._lock:
            now = self.clock()
            tokens, last = self._buckets.get(key_id, (float(self.burst), now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1:
                self._buckets[key_id] = (tokens, now)
                raise RateLimited(
                    "too many requests for this key", math.ceil((1 - tokens) / self.rate)
                )
            self._buckets[key_id] = (tokens - 1, now)


# --- the app ----------------------------------------------------------------------------


def page(
    items: list[T], sort_key: Callable[[T], str], limit: int, cursor: str | None
) -> tuple[list[T], str | None]:
    """Cursor pagination over a small, fully loaded list (keys, contacts, suppressions):
    items after ``cursor`` in ``sort_key`` order, and the cursor of the next page."""
    ordered = sorted(items, key=sort_key)
    after = [i for i in ordered if cursor is None or sort_key(i) > cursor]
    chunk = after[:limit]
    return chunk, (sort_key(chunk[-1]) if len(after) > limit else None)


def _field_path(loc: tuple[int | str, ...]) -> str:
    """A field's place in the request body as a reader writes it: ``attachments[1].filename``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def _markdown_bodies(text: str | None, html: str | None, md: str | None) -> tuple[str, str | None]:
    if md is not None:
        return md, html or MarkdownIt("commonmark", {"html": False}).render(md)
    if text is None and html is None:
        raise InvalidValue("body_text", "give body_text, body_html or markdown")
    return text or "", html


def _parse_when(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidValue(
            "send_at", "use an ISO 8601 UTC time such as 2026-05-01T09:00:00Z"
        ) from exc
    if parsed.tzinfo is None:
        raise InvalidValue("send_at", "include a time zone (end with Z for UTC)")
    return int(parsed.timestamp() * 1000)


_NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
_PAGE_HEADERS = {
    **_NO_STORE,
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}
LINK_FORM_MAX = 16 * 1024


async def _link_form(request: Request) -> dict[str, str]:
    """The decision form of an approval link (form-encoded or JSON), read up to
    LINK_FORM_MAX bytes whatever the Content-Length says (chunked bodies included)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > LINK_FORM_MAX:
            raise PayloadTooLarge(f"a decision is at most {LINK_FORM_MAX} bytes")
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = json.loads(body or b"null")
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise InvalidValue("body", "send a JSON object with an action")
        return {k: str(v) for k, v in data.items() if isinstance(v, (str, int))}
    pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    return dict(pairs)


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


class EventBell:
    """Wakes long-polls and event streams when a transaction commits (rung from any
    thread; waited on in the server's event loop)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self.closed = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def ring(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._fire)

    def _fire(self) -> None:
        event, self._event = self._event, asyncio.Event()
        if event is not None:
            event.set()

    def armed(self) -> asyncio.Event | None:
        """The event the next ring sets: take it BEFORE looking, then await it."""
        return self._event

    def close(self) -> None:
        self.closed = True
        self.ring()


async def _await_ring(armed: asyncio.Event | None, timeout: float) -> None:
    if armed is None:  # no runtime (an app built for a test): poll
        await asyncio.sleep(min(timeout, 0.2))
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(armed.wait(), timeout=max(0.0, timeout))


def create_app(
    service: Service,
    *,
    limiter: RateLimiter | None = None,
    on_send: Callable[[], None] | None = None,
    bell: EventBell | None = None,
) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with app.state.mcp.running():
            yield

    app = FastAPI(
        lifespan=lifespan,
        title="MultiMail API",
        version="0.1.0",
        description=(
            "Self-hostable email infrastructure for AI agents: "
            "one isolated, overseen mailbox per agent. The same operations are MCP tools "
            "at `POST /mcp` (Streamable HTTP, the same bearer keys; spec/mcp.toml)."
        ),
    )
    #: (method, path) → core operation (authorization.OPERATIONS) or "public";
    #: spec/routes.toml states the same table and a test compares them.
    routes: dict[tuple[str, str], str] = {}
    app.state.operations = routes
    limiter = limiter or RateLimiter()
    kick = on_send or (lambda: None)

    @app.exception_handler(MultimailError)
    async def _mm_error(request: Request, exc: MultimailError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in exc.errors()
        ]
        first = exc.errors()[0] if errors else {"loc": (), "msg": "invalid request"}
        field = _field_path(tuple(first.get("loc", ()))[1:]) or "body"
        detail = f"{field}: {first['msg']}"
        return problem(422, "validation_error", detail, field=field, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status_code, "http_error"
        )
        return problem(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(
            500, "internal_error", "the server failed to handle this request; it has been logged"
        )

    @app.middleware("http")
    async def _limit_body(request: Request, call_next: Callable[[Request], Any]) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return problem(
                413, "payload_too_large", f"request bodies are limited to {MAX_BODY} bytes"
            )
        return await call_next(request)

    def auth(authorization: Annotated[str | None, Header()] = None) -> Key:
        secret = None
        if authorization and authorization.lower().startswith("bearer "):
            secret = authorization[7:].strip()
        key = service.authenticate(secret)
        limiter.check(key.id)
        return key

    AuthKey = Annotated[Key, Depends(auth)]  # noqa: N806
    IdemHeader = Annotated[str | None, Header(alias="Idempotency-Key")]  # noqa: N806
    Limit = Annotated[int, Query(ge=1, le=100)]  # noqa: N806

    def route(
        method: str, path: str, operation: str, **kwargs: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        routes[(method, path)] = operation
        return app.api_route(path, methods=[method], **kwargs)

    def once(
        key: Key,
        header: str | None,
        body: BaseModel,
        path: str,
        create: Callable[[], tuple[int, dict[str, object]]],
    ) -> JSONResponse:
        idem = header or getattr(body, "idempotency_key", None)
        fingerprint = hashlib.sha256(
            path.encode()
            + b"\0"
            + canonical(body.model_dump(exclude={"idempotency_key"}, mode="json"))
        ).hexdigest()
        status, payload = service.idempotent(key, idem, fingerprint, create)
        return JSONResponse(payload, status_code=status)

    # health and meta

    @route("GET", "/health", "public")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    # accounts and keys

    @route("POST", "/v1/accounts", "accounts.create", status_code=201)
    def create_account(body: CreateAccount, key: AuthKey, idem: IdemHeader = None) -> JSONResponse:
        def make() -> tuple[int, dict[str, object]]:
            account, secret = service.create_account(
                key, body.name, body.oversight_email, body.slug
            )
            return 201, {**render.account_view(account), "api_key": secret}

        return once(key, idem, body, "/v1/accounts", make)

    @route("GET", "/v1/account", "account.read")
    def get_account(key: AuthKey) -> dict[str, object]:
        return render.account_view(service.get_account(key))

    @route("PATCH", "/v1/account", "account.update")
    def patch_account(body: UpdateAccount, key: AuthKey) -> dict[str, object]:
        account = service.update_account(
            key,
            name=body.name,
            oversight_email=body.oversight_email,
            default_oversight_mode=body.default_oversight_mode,
        )
        return render.account_view(account)

    @route("POST", "/v1/api-keys", "keys.manage", status_code=201)
    def create_key(body: CreateKey, key: AuthKey, idem: IdemHeader = None) -> JSONResponse:
        def make() -> tuple[int, dict[str, object]]:
            record, secret = service.create_key(key, body.name, body.scopes, body.mailbox_ids)
            return 201, {**render.key_view(record), "api_key": secret}

        return once(key, idem, body, "/v1/api-keys", make)

    @route("GET", "/v1/api-keys", "keys.manage")
    def list_keys(key: AuthKey, limit: Limit = 100, cursor: str | None = None) -> dict[str, object]:
        records, nxt = page(service.list_keys(key), lambda r: r.id, limit, cursor)
        return {"api_keys": [render.key_view(r) for r in records], "next_cursor": nxt}

    @route("DELETE", "/v1/api-keys/{key_id}", "keys.manage")
    def revoke_key(key_id: str, key: AuthKey) -> dict[str, object]:
        return render.key_view(service.revoke_key(key, key_id))

    # mailboxes

    @route("POST", "/v1/mailboxes", "mailboxes.create", status_code=201)
    def create_mailbox(body: CreateMailbox, key: AuthKey, idem: IdemHeader = None) -> JSONResponse:
        def make() -> tuple[int, dict[str, object]]:
            box = service.create_mailbox(
                key,
                name=body.name,
                domain=body.domain,
                display_name=body.display_name,
                oversight_mode=body.oversight_mode,
                webhook_url=body.webhook_url,
            )
            return 201, mview(box)

        return once(key, idem, body, "/v1/mailboxes", make)

    @route("GET", "/v1/mailboxes", "mailboxes.list")
    def list_mailboxes(
        key: AuthKey, limit: Limit = 50, cursor: str | None = None
    ) -> dict[str, object]:
        boxes, nxt = service.list_mailboxes(key, limit=limit, cursor=cursor)
        return {"mailboxes": [mview(b) for b in boxes], "next_cursor": nxt}

    @route("GET", "/v1/mailboxes/{mailbox_id}", "mailbox.read")
    def get_mailbox(mailbox_id: str, key: AuthKey) -> dict[str, object]:
        return mview(service.get_mailbox(key, mailbox_id))

    @route("PATCH", "/v1/mailboxes/{mailbox_id}", "mailbox.configure")
    def patch_mailbox(mailbox_id: str, body: UpdateMailbox, key: AuthKey) -> dict[str, object]:
        fields = body.model_fields_set
        box = service.update_mailbox(
            key,
            mailbox_id,
            oversight_mode=body.oversight_mode,
            display_name=body.display_name,
            webhook_url=body.webhook_url,
            clear_webhook="webhook_url" in fields and body.webhook_url is None,
            allowlist=body.allowlist,
        )
        return mview(box)

    @route("DELETE", "/v1/mailboxes/{mailbox_id}", "mailbox.decommission")
    def delete_mailbox(mailbox_id: str, key: AuthKey) -> dict[str, object]:
        return mview(service.delete_mailbox(key, mailbox_id))

    @route("GET", "/v1/mailboxes/{mailbox_id}/allowlist", "mailbox.allowlist.read")
    def get_allowlist(mailbox_id: str, key: AuthKey) -> dict[str, object]:
        box = service.get_mailbox(key, mailbox_id)
        return {"mailbox_id": box.id, "entries": sorted(box.allowlist)}

    @route("PUT", "/v1/mailboxes/{mailbox_id}/allowlist", "mailbox.allowlist.change")
    def put_allowlist(mailbox_id: str, body: Allowlist, key: AuthKey) -> dict[str, object]:
        box = service.update_mailbox(key, mailbox_id, allowlist=body.entries)
        return {"mailbox_id": box.id, "entries": sorted(box.allowlist)}

    @route(
        "POST",
        "/v1/mailboxes/{mailbox_id}/request-upgrade",
        "mailbox.request_upgrade",
        status_code=202,
    )
    def request_upgrade(mailbox_id: str, body: UpgradeRequest, key: AuthKey) -> JSONResponse:
        service.request_upgrade(key, mailbox_id, body.target_mode)
        return JSONResponse(
            {
                "status": "upgrade_requested",
                "mailbox_id": mailbox_id,
                "target_mode": body.target_mode.value,
            },
            status_code=202,
        )

    # sending

    def _send_response(result: Any, dry_run: bool) -> tuple[int, dict[str, object]]:
        decision = {
            "verdict": result.decision.verdict.value,
            "rule": result.decision.rule,
            "reason": result.decision.reason,
        }
        if dry_run:
            return 200, {
                "dry_run": True,
                "status": result.status,
                **decision,
                "oversight": decision,
            }
        body: dict[str, object] = {
            "status": result.status,
            "message_id": result.message_id,
            "email_id": result.message_id,
            "thread_id": result.thread_id,
            "oversight": decision,
        }
        if result.pending_id:
            body["pending_id"] = result.pending_id
        return (202 if result.status in ("pending", "scheduled") else 200), body

    @route("POST", "/v1/mailboxes/{mailbox_id}/send", "messages.send")
    def send(mailbox_id: str, body: Send, key: AuthKey, idem: IdemHeader = None) -> JSONResponse:
        text, html = _markdown_bodies(body.body_text, body.body_html, body.markdown)

        def make() -> tuple[int, dict[str, object]]:
            result = service.send(
                key,
                mailbox_id,
                to=body.to,
                cc=body.cc,
                bcc=body.bcc,
                subject=body.subject,
                body_text=text,
                body_html=html,
                send_at=_parse_when(body.send_at),
                dry_run=body.dry_run,
                attachments=[a.data() for a in body.attachments],
            )
            kick()
            return _send_response(result, body.dry_run)

        if body.dry_run:
            status, payload = make()
            return JSONResponse(payload, status_code=status)
        return once(key, idem, body, f"/v1/mailboxes/{mailbox_id}/send", make)

    @route("POST", "/v1/mailboxes/{mailbox_id}/reply", "messages.send")
    def reply(mailbox_id: str, body: Reply, key: AuthKey, idem: IdemHeader = None) -> JSONResponse:
        text, html = _markdown_bodies(body.body_text, body.body_html, body.markdown)

        def make() -> tuple[int, dict[str, object]]:
            result = service.reply(
                key,
                mailbox_id,
                email_id=body.email_id,
                thread_id=body.thread_id,
                body_text=text,
                body_html=html,
                cc=body.cc,
                bcc=body.bcc,
                dry_run=body.dry_run,
                attachments=[a.data() for a in body.attachments],
            )
            kick()
            return _send_response(result, body.dry_run)

        if body.dry_run:
            status, payload = make()
            return JSONResponse(payload, status_code=status)
        return once(key, idem, body, f"/v1/mailboxes/{mailbox_id}/reply", make)

    # reading

    @route("GET", "/v1/mailboxes/{mailbox_id}/emails", "messages.read")
    def list_emails(
        mailbox_id: str,
        key: AuthKey,
        filter: Literal["all", "unread", "requires_action"] = "all",
        direction: Literal["inbound", "outbound"] | None = None,
        limit: Limit = 20,
        cursor: str | None = None,
    ) -> dict[str, object]:
        records, nxt = service.list_emails(
            key, mailbox_id, filter=filter, direction=direction, limit=limit, cursor=cursor
        )
        return {"emails": [render.email_summary(r) for r in records], "next_cursor": nxt}

    @route("GET", "/v1/emails/{email_id}", "messages.read")
    def read_email(email_id: str, key: AuthKey) -> dict[str, object]:
        return render.email_view(service.read_email(key, email_id), service.config.public_url)

    @route("GET", "/v1/emails/{email_id}/raw", "messages.read")
    def raw_email(email_id: str, key: AuthKey) -> Response:
        return Response(service.raw_source(key, email_id), media_type="message/rfc822")

    @route("GET", "/v1/emails/{email_id}/attachments/{attachment_id}", "messages.read")
    def attachment(email_id: str, attachment_id: str, key: AuthKey) -> Response:
        meta, data = service.get_attachment(key, email_id, attachment_id)
        disposition = "attachment; filename*=UTF-8''" + quote(meta.filename or attachment_id)
        return Response(
            data,
            media_type=meta.content_type or "application/octet-stream",
            headers={"Content-Disposition": disposition, "X-Content-Type-Options": "nosniff"},
        )

    @route("GET", "/v1/mailboxes/{mailbox_id}/threads/{thread_id}", "messages.read")
    def get_thread(mailbox_id: str, thread_id: str, key: AuthKey) -> dict[str, object]:
        records = service.get_thread(key, mailbox_id, thread_id)
        participants = sorted(
            {r.content.sender for r in records} | {a for r in records for a in r.content.to}
        )
        return {
            "thread_id": thread_id,
            "mailbox_id": mailbox_id,
            "message_count": len(records),
            "participants": participants,
            "emails": [render.email_summary(r) for r in records],
        }

    @route("POST", "/v1/emails/{email_id}/cancel", "messages.cancel")
    def cancel(email_id: str, key: AuthKey) -> dict[str, object]:
        record = service.cancel(key, email_id)
        return {"email_id": record.id, "status": record.state.status.value}

    @route("GET", "/v1/emails/{email_id}/tags", "messages.read")
    def get_tags(email_id: str, key: AuthKey) -> dict[str, object]:
        return {"email_id": email_id, "tags": dict(service.get_email(key, email_id).tags)}

    @route("PUT", "/v1/emails/{email_id}/tags", "messages.manage")
    def put_tags(email_id: str, body: Tags, key: AuthKey) -> dict[str, object]:
        return {"email_id": email_id, "tags": dict(service.set_tags(key, email_id, body.tags).tags)}

    @route("DELETE", "/v1/emails/{email_id}/tags/{name}", "messages.manage")
    def delete_tag(email_id: str, name: str, key: AuthKey) -> dict[str, object]:
        return {"email_id": email_id, "tags": dict(service.delete_tag(key, email_id, name).tags)}

    # oversight

    @route("GET", "/v1/oversight/pending", "oversight.list")
    def list_pending(
        key: AuthKey, limit: Limit = 50, cursor: str | None = None
    ) -> dict[str, object]:
        items, nxt = service.list_pending(key, limit=limit, cursor=cursor)
        return {"pending": [render.pending_view(a, r) for a, r in items], "next_cursor": nxt}

    @route("POST", "/v1/oversight/decide", "oversight.decide")
    def decide(body: Decide, key: AuthKey) -> dict[str, object]:
        edits = (
            EditContent(body.edits.subject or "", body.edits.body_text or "", body.edits.body_html)
            if body.edits
            else None
        )
        approval, record = service.decide(
            key,
            pending_id=body.pending_id,
            email_id=body.email_id,
            action=body.action,
            reason=body.reason,
            edits=edits,
        )
        kick()
        return {
            "status": approval.status.value,
            "pending_id": approval.id,
            "message_id": record.id,
            "email_id": record.id,
            "message_status": record.state.status.value,
            "edited": approval.edited is not None,
        }

    # reputation

    @route("GET", "/v1/mailboxes/{mailbox_id}/reputation", "reputation.read")
    def mailbox_reputation(mailbox_id: str, key: AuthKey) -> dict[str, object]:
        box, counters = service.reputation(key, mailbox_id)
        return render.reputation_view(box, counters)

    @route("GET", "/v1/reputation", "reputation.list")
    def list_reputation(
        key: AuthKey,
        sort: Literal[
            "reputation_score", "bounce_rate", "complaint_rate", "delivery_rate"
        ] = "reputation_score",
        order: Literal["asc", "desc"] | None = None,
    ) -> dict[str, object]:
        views = [render.reputation_view(b, c) for b, c in service.list_reputation(key)]
        descending = order == "desc" if order else sort in ("bounce_rate", "complaint_rate")
        views.sort(key=lambda v: (v[sort], v["mailbox_id"]), reverse=descending)  # type: ignore[arg-type,return-value]
        return {"mailboxes": views}

    # audit, usage, domains, events

    @route("GET", "/v1/audit-log", "audit.read")
    def audit_log(key: AuthKey, limit: Limit = 50, cursor: str | None = None) -> dict[str, object]:
        entries, nxt = service.list_audit(key, limit=limit, cursor=cursor)
        return {"entries": [render.audit_view(e) for e in entries], "next_cursor": nxt}

    @route("GET", "/v1/audit-log/verify", "audit.read")
    def audit_verify(key: AuthKey) -> dict[str, object]:
        return service.verify_audit(key)

    @route("GET", "/v1/usage", "usage.read")
    def usage(key: AuthKey) -> dict[str, object]:
        return dict(service.usage(key))

    @route("GET", "/v1/domains", "domains.read")
    def domains(key: AuthKey) -> dict[str, object]:
        return {"domains": service.domains(key)}

    # identity and approval links: public, the path or the token is the credential

    @route("GET", "/.well-known/multimail/keys/{mailbox_id}", "public")
    def identity_keys(mailbox_id: str) -> dict[str, object]:
        keys = service.published_keys(mailbox_id)
        if keys is None:
            raise NotFound(f"no mailbox {mailbox_id}")
        return {"mailbox_id": mailbox_id, "keys": keys}

    @route("GET", "/.well-known/multimail/dns", "public")
    def published_dns(
        name: Annotated[str, Query(max_length=253)],
        type: Annotated[str, Query(pattern="^(?i:txt)$")] = "TXT",
    ) -> dict[str, object]:
        records = service.published_txt(name)
        if not records:
            raise NotFound(f"this server publishes no TXT record at {name}")
        return {"name": name.lower().rstrip("."), "type": "TXT", "records": records}

    def public_limit(request: Request) -> None:
        """Public routes are rate limited per client address."""
        client = request.client.host if request.client else "unknown"
        limiter.check(f"ip:{client}")

    @route("GET", "/v1/approve/{token}", "public", response_model=None)
    def review_page(token: str, request: Request, action: str | None = None) -> Response:
        public_limit(request)
        try:
            review = service.review_link(token)
        except NotFound as exc:
            if _wants_json(request):
                raise
            page = render.link_error_page(exc.detail)
            return HTMLResponse(page, status_code=404, headers=_PAGE_HEADERS)
        if _wants_json(request):
            return JSONResponse(render.link_view(review, service.clock()), headers=_NO_STORE)
        page = render.review_page(review, now=service.clock(), preselect=action)
        return HTMLResponse(page, headers=_PAGE_HEADERS)

    @route("POST", "/v1/approve/{token}", "public", response_model=None)
    async def decide_by_link(token: str, request: Request) -> Response:
        public_limit(request)
        wants_json = _wants_json(request)
        try:
            # the token first: nobody without one gets the body read
            await run_in_threadpool(service.review_link, token)
            form = await _link_form(request)
            action = form.get("action", "")
            if action not in ("approve", "reject"):
                raise InvalidValue("action", "use approve or reject")
            approval, record = await run_in_threadpool(
                service.decide_by_link, token, action, form.get("reason", "")[:1000]
            )
        except MultimailError as exc:
            if wants_json:
                raise
            status = STATUS.get(exc.code, 500)
            page = render.link_error_page(exc.detail)
            return HTMLResponse(page, status_code=status, headers=_PAGE_HEADERS)
        kick()
        if wants_json:
            return JSONResponse(
                {"pending_id": approval.id, "status": approval.status.value, "email_id": record.id}
            )
        return HTMLResponse(render.decided_page(approval, record), headers=_PAGE_HEADERS)

    def mview(box: Any) -> dict[str, object]:
        """A mailbox as the API shows it; with its webhook_url, the secret that signs what
        is posted there (the agent needs it to verify)."""
        view = render.mailbox_view(box)
        if box.webhook_url:
            hook = service.mailbox_webhook(box.id)
            view["webhook_secret"] = hook.secret if hook is not None else None
        return view

    # webhooks (PRODUCT §9)

    def hook_view(record: Any, *, secret: bool) -> dict[str, object]:
        e = record.endpoint
        view: dict[str, object] = {
            "id": e.id,
            "url": e.url,
            "events": sorted(e.events),
            "mailbox_id": e.mailbox_id,
            "status": e.status.value,
            "kind": record.kind,
            "created_at": render.iso(record.created_at),
        }
        if secret:
            view["signing_secret"] = record.secret
            if record.previous_secret and record.previous_expires_at:
                view["previous_secret_expires_at"] = render.iso(record.previous_expires_at)
        return view

    def delivery_view(record: Any) -> dict[str, object]:
        d = record.delivery
        return {
            "id": d.id,
            "webhook_id": d.endpoint_id,
            "event_id": d.event_id,
            "event_type": record.event_type,
            "url": record.url,
            "status": d.status.value,
            "attempts": d.attempts,
            "response_status": d.last_status,
            "latency_ms": record.latency_ms,
            "response_excerpt": record.response_excerpt or None,
            "created_at": render.iso(record.created_at),
            "last_attempt_at": render.iso(record.last_attempt_at),
            "next_attempt_at": render.iso(d.next_attempt_at),
        }

    @route("POST", "/v1/webhooks", "webhooks.manage", status_code=201)
    def create_webhook(body: CreateWebhook, key: AuthKey, idem: IdemHeader = None) -> JSONResponse:
        def make() -> tuple[int, dict[str, object]]:
            record = service.create_webhook(key, body.url, body.events or (), body.mailbox_id)
            return 201, hook_view(record, secret=True)

        return once(key, idem, body, "/v1/webhooks", make)

    @route("GET", "/v1/webhooks", "webhooks.manage")
    def list_webhooks(key: AuthKey) -> dict[str, object]:
        return {"subscriptions": [hook_view(w, secret=False) for w in service.list_webhooks(key)]}

    @route("GET", "/v1/webhooks/{webhook_id}", "webhooks.manage")
    def get_webhook(webhook_id: str, key: AuthKey) -> dict[str, object]:
        return hook_view(service.get_webhook(key, webhook_id), secret=True)

    @route("DELETE", "/v1/webhooks/{webhook_id}", "webhooks.manage", status_code=204)
    def delete_webhook(webhook_id: str, key: AuthKey) -> Response:
        service.delete_webhook(key, webhook_id)
        return Response(status_code=204)

    @route("POST", "/v1/webhooks/{webhook_id}/rotate-secret", "webhooks.manage")
    def rotate_webhook(webhook_id: str, key: AuthKey) -> dict[str, object]:
        return hook_view(service.rotate_webhook_secret(key, webhook_id), secret=True)

    @route("GET", "/v1/webhook-deliveries", "webhooks.manage")
    def webhook_deliveries(
        key: AuthKey,
        limit: Limit = 50,
        cursor: str | None = None,
        status: Literal["pending", "delivering", "delivered", "dead"] | None = None,
        webhook_id: str | None = None,
    ) -> dict[str, object]:
        found, nxt = service.list_webhook_deliveries(
            key, limit=limit, cursor=cursor, status=status, webhook_id=webhook_id
        )
        return {"deliveries": [delivery_view(d) for d in found], "next_cursor": nxt}

    @route(
        "POST", "/v1/webhook-deliveries/{delivery_id}/replay", "webhooks.manage", status_code=202
    )
    def replay_delivery(delivery_id: str, key: AuthKey) -> dict[str, object]:
        again = service.replay_webhook_delivery(key, delivery_id)
        kick_hooks()
        return {"delivery": delivery_view(again)}

    def kick_hooks() -> None:
        if bell is not None:
            bell.ring()

    # live events without a public URL: a stream, and a long-poll for the next email

    @route("GET", "/v1/events/stream", "events.read", response_model=None)
    async def event_stream(
        request: Request,
        key: AuthKey,
        after: Annotated[int | None, Query(ge=0)] = None,
        mailbox_id: str | None = None,
        type: str | None = None,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
        max_seconds: Annotated[int | None, Query(ge=1, le=86_400)] = None,
    ) -> StreamingResponse:
        """Server-Sent Events: ``id`` is the event seq, ``event`` its type, ``data`` the
        webhook payload. Resume with ``Last-Event-ID`` (or ``after``); ``max_seconds``
        ends the stream after that long (for proxies that cut long requests)."""
        ends = time.monotonic() + max_seconds if max_seconds is not None else math.inf
        types = frozenset(t for t in type.split(",") if t) if type else None
        start = after
        if last_event_id is not None and last_event_id.strip().isdigit():
            start = int(last_event_id.strip())
        if start is None:
            start = await run_in_threadpool(service.latest_event_seq)
        if mailbox_id is not None:  # authorization now, not after the first event
            await run_in_threadpool(service.get_mailbox, key, mailbox_id)
        agent = key.mailbox_ids is not None

        async def frames() -> Any:
            cursor = start
            yield ": connected\n\n"
            while not (bell is not None and bell.closed) and time.monotonic() < ends:
                armed = bell.armed() if bell is not None else None
                batch = await run_in_threadpool(
                    service.list_events, key, after=cursor, mailbox_id=mailbox_id,
                    types=types, limit=100,
                )  # fmt: skip
                for event in batch:
                    cursor = event.seq
                    if agent and event.type not in AGENT_TYPES:
                        continue  # P3: an agent's stream carries no oversight events
                    body = await run_in_threadpool(service.event_body, event)
                    data = json.dumps(body, separators=(",", ":"))
                    yield f"id: {event.seq}\nevent: {event.type}\ndata: {data}\n\n"
                if batch:
                    continue
                if await request.is_disconnected():
                    return
                await _await_ring(armed, min(15.0, max(0.0, ends - time.monotonic())))
                if armed is not None and not armed.is_set():
                    yield ": keep-alive\n\n"

        return StreamingResponse(
            frames(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @route("GET", "/v1/mailboxes/{mailbox_id}/wait", "messages.read")
    async def wait_for_email(
        mailbox_id: str,
        key: AuthKey,
        timeout_seconds: Annotated[int, Query(ge=1, le=120)] = 30,
        sender: Annotated[str | None, Query(max_length=320)] = None,
        subject_contains: Annotated[str | None, Query(max_length=500)] = None,
        after: Annotated[int | None, Query(ge=0)] = None,
    ) -> dict[str, object]:
        """Long-poll for the next email to arrive in the mailbox (≤ 120 s): the
        ``message.received`` payload, or ``timed_out``. Pass the returned ``cursor`` as
        ``after`` to wait for the one after it."""
        await run_in_threadpool(service.get_mailbox, key, mailbox_id)
        cursor = after if after is not None else await run_in_threadpool(service.latest_event_seq)
        deadline = time.monotonic() + timeout_seconds
        wanted = frozenset({"message.received"})
        while True:
            armed = bell.armed() if bell is not None else None
            batch = await run_in_threadpool(
                service.list_events, key, after=cursor, mailbox_id=mailbox_id, types=wanted,
                limit=100,
            )  # fmt: skip
            for event in batch:
                cursor = event.seq
                found = await run_in_threadpool(
                    service.received_email, event, sender=sender, subject_contains=subject_contains
                )
                if found is not None:
                    return {"email": found, "timed_out": False, "cursor": str(cursor)}
            if batch:
                continue
            left = deadline - time.monotonic()
            if left <= 0 or (bell is not None and bell.closed):
                return {"email": None, "timed_out": True, "cursor": str(cursor)}
            await _await_ring(armed, left)

    @route("GET", "/v1/events", "events.read")
    def events(
        key: AuthKey,
        after: Annotated[int, Query(ge=0)] = 0,
        cursor: Annotated[str | None, Query(pattern=r"^\d+$")] = None,
        mailbox_id: str | None = None,
        type: str | None = None,
        limit: Limit = 100,
    ) -> dict[str, object]:
        """Events in commit order; resume with ``after`` (a ``seq``) or ``cursor``."""
        start = int(cursor) if cursor is not None else after
        types = frozenset(t for t in type.split(",") if t) if type else None
        items = service.list_events(
            key, after=start, mailbox_id=mailbox_id, types=types, limit=limit
        )
        nxt = str(items[-1].seq) if len(items) == limit else None
        return {"events": [render.event_view(e) for e in items], "next_cursor": nxt}

    # contacts and suppression

    @route("GET", "/v1/contacts", "contacts.read")
    def list_contacts(
        key: AuthKey, q: str | None = None, limit: Limit = 100, cursor: str | None = None
    ) -> dict[str, object]:
        contacts, nxt = page(service.list_contacts(key, q), lambda c: c.id, limit, cursor)
        return {"contacts": [render.contact_view(c) for c in contacts], "next_cursor": nxt}

    @route("POST", "/v1/contacts", "contacts.manage", status_code=201)
    def add_contact(body: CreateContact, key: AuthKey, idem: IdemHeader = None) -> JSONResponse:
        def make() -> tuple[int, dict[str, object]]:
            return 201, render.contact_view(
                service.add_contact(key, body.email, body.name, body.tags)
            )

        return once(key, idem, body, "/v1/contacts", make)

    @route("DELETE", "/v1/contacts/{contact_id}", "contacts.manage")
    def delete_contact(contact_id: str, key: AuthKey) -> dict[str, object]:
        service.delete_contact(key, contact_id)
        return {"id": contact_id, "deleted": True}

    @route("GET", "/v1/suppression", "suppression.read")
    def list_suppression(
        key: AuthKey, limit: Limit = 100, cursor: str | None = None
    ) -> dict[str, object]:
        entries, nxt = page(service.list_suppressions(key), lambda s: s.address, limit, cursor)
        return {"suppressions": [render.suppression_view(s) for s in entries], "next_cursor": nxt}

    @route("POST", "/v1/suppression", "suppression.manage", status_code=201)
    def add_suppression(
        body: CreateSuppression, key: AuthKey, idem: IdemHeader = None
    ) -> JSONResponse:
        def make() -> tuple[int, dict[str, object]]:
            entry = service.add_suppression(key, body.email_address, body.reason)
            return 201, render.suppression_view(entry)

        return once(key, idem, body, "/v1/suppression", make)

    @route("DELETE", "/v1/suppression/{address}", "suppression.manage")
    def remove_suppression(address: str, key: AuthKey) -> dict[str, object]:
        service.remove_suppression(key, address)
        return {"email_address": address, "deleted": True}

    routes[("GET", "/openapi.json")] = "public"
    routes[("GET", "/docs")] = "public"
    routes[("GET", "/docs/oauth2-redirect")] = "public"
    routes[("GET", "/redoc")] = "public"
    # MCP over Streamable HTTP: the same keys; each tool call goes through the routes above.
    app.state.mcp = HttpEndpoint(app, service, limiter.check)
    routes[("POST", "/mcp")] = "mcp.connect"
    app.router.routes.append(Route("/mcp", app.state.mcp, methods=["POST"]))
    return app


__all__ = ["RateLimiter", "create_app", "problem"]
