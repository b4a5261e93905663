"""What every MCP tool shares: the connection it calls through, the error text, the
parameter types and the result shape.

Rule 1: a tool only translates: arguments → SDK call(s) with the caller's own key →
        result. Authorization, decisions and records are the server's.
Rule 2: results carry structured content (the API's JSON, email text moved under
        ``untrusted``) and text for the model: the trusted JSON, then the fence.
Rule 3: a failure is one line (``404 not_found: no email …``), never a traceback.
Rule 4: parameter names are the HTTP API's field names; a mailbox-scoped tool's
        ``mailbox_id`` falls back to the connection's default mailbox.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, Protocol, TypeVar

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import (
    CallToolResult,
    ContentBlock,
    TextContent,
    ToolAnnotations,
)
from pydantic import BaseModel, Field

from multimail.client import (
    AsyncClient,
    MultimailAPIError,
    RateLimited,
    Result,
)
from multimail.untrusted import UNTRUSTED_WARNING, fence, split_untrusted, without_untrusted

T = TypeVar("T")

#: Attachments up to this size are returned inline; larger ones as a URL.
INLINE_ATTACHMENT_LIMIT = 256 * 1024
PREVIEW_CHARS = 160


def describe(exc: MultimailAPIError) -> str:
    status = f"{exc.status} " if exc.status else ""
    text = f"{status}{exc.code}: {exc.detail}"
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        text += f" (retry after {exc.retry_after} s)"
    return text


class Connection(Protocol):
    """Where a tool call's API requests go, with whose key."""

    def open(self, ctx: Context) -> contextlib.AbstractAsyncContextManager[AsyncClient]: ...

    def default_mailbox(self, ctx: Context) -> str | None: ...


MailboxId = Annotated[
    str | None,
    Field(
        description="The mailbox (mbx_…). Optional when a default mailbox is configured "
        "(MULTIMAIL_MAILBOX_ID); list_mailboxes shows yours."
    ),
]
EmailId = Annotated[str, Field(description="The email (msg_…), from check_inbox or a result.")]
Limit = Annotated[int, Field(ge=1, le=100, description="At most this many items (1-100).")]
Cursor = Annotated[
    str | None, Field(description="next_cursor from the previous page; omit for the first.")
]
WebhookId = Annotated[str, Field(description="The subscription (whk_…), from list_webhooks.")]
Copies = Annotated[
    list[str] | None, Field(max_length=50, description="More recipients (addresses), optional.")
]
HiddenCopies = Annotated[
    list[str] | None, Field(max_length=50, description="Hidden recipients (addresses), optional.")
]
DisplayName = Annotated[
    str | None, Field(max_length=200, description="The name shown in From:, e.g. 'Support'.")
]


class FileIn(BaseModel):
    """One file to attach."""

    filename: str = Field(description="The file's name as the recipient sees it, e.g. q3.pdf.")
    content_base64: str = Field(description="The bytes, standard base64.")
    content_type: str = Field(
        default="application/octet-stream", description="Its media type, e.g. application/pdf."
    )


Files = Annotated[
    list[FileIn] | None,
    Field(
        max_length=20,
        description="Files to attach (at most 20, 7 MiB together); "
        "download_attachment gives received ones as base64.",
    ),
]
Mode = Literal["read_only", "gated_all", "gated_send", "monitored", "autonomous"]

READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
IDEMPOTENT = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)
DESTRUCTIVE = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
)
SENDS = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True)


class Tools:
    """Registers every tool on ``server``; each call goes through ``connection``."""

    def __init__(self, server: MCPServer, connection: Connection) -> None:
        self.server = server
        self.connection = connection

    async def call(self, ctx: Context, op: Callable[[AsyncClient], Awaitable[T]]) -> T:
        async with self.connection.open(ctx) as mm:
            try:
                return await op(mm)
            except MultimailAPIError as exc:
                raise ToolError(describe(exc)) from None

    async def result(
        self, ctx: Context, op: Callable[[AsyncClient], Awaitable[Result]]
    ) -> CallToolResult:
        return tool_result(await self.call(ctx, op))

    def mailbox(self, ctx: Context, mailbox_id: str | None) -> str:
        chosen = mailbox_id or self.connection.default_mailbox(ctx)
        if not chosen:
            raise ToolError(
                "mailbox_id is required: pass it (list_mailboxes shows your mailboxes) or "
                "configure a default mailbox (MULTIMAIL_MAILBOX_ID)"
            )
        return chosen

    def register(self, fn: Callable[..., Awaitable[CallToolResult]], annotations: Any) -> None:
        self.server.add_tool(fn, annotations=annotations, structured_output=False)


def tool_result(data: Any, *, extra: Sequence[ContentBlock] = ()) -> CallToolResult:
    """Structured content plus text: the trusted JSON, then (if any) the warning and the
    fenced untrusted values."""
    split = split_untrusted(plain(data))
    structured = split.data if isinstance(split.data, dict) else {"result": split.data}
    if split.found:
        structured = {"warning": UNTRUSTED_WARNING, **structured}
    trusted = without_untrusted(structured)
    blocks: list[ContentBlock] = [
        TextContent(type="text", text=json.dumps(trusted, indent=2, ensure_ascii=False))
    ]
    if split.found:
        blocks.append(TextContent(type="text", text=fence(split.found)))
    blocks.extend(extra)
    return CallToolResult(content=blocks, structured_content=structured)


def plain(value: Any) -> Any:
    if isinstance(value, Result):
        return value.to_dict()
    return value


def given(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def summary(email: Mapping[str, Any]) -> dict[str, Any]:
    """A list row: no full body, a short preview instead (both untrusted)."""
    row = {k: v for k, v in email.items() if k != "body_text"}
    body = str(email.get("body_text") or "")
    row["preview"] = body[:PREVIEW_CHARS] + ("…" if len(body) > PREVIEW_CHARS else "")
    return row


def files(value: list[FileIn] | None) -> list[dict[str, str]] | None:
    """The API's ``attachments`` list."""
    return None if value is None else [f.model_dump() for f in value]
