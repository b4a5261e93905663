"""The MCP tools for mail and oversight: send, read, wait, reply, attachments, tags,
held messages and the allowlist. Each is one API call (two where noted) with the
caller's key; see multimail.mcp_tools for the rules they share.
"""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Callable
from typing import Annotated, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import (
    BlobResourceContents,
    CallToolResult,
    ContentBlock,
    EmbeddedResource,
)
from pydantic import Field

from multimail.client import (
    WAIT_MAX_SECONDS,
)
from multimail.mcp_tools import (
    DESTRUCTIVE,
    IDEMPOTENT,
    INLINE_ATTACHMENT_LIMIT,
    READ,
    SENDS,
    WRITE,
    Copies,
    Cursor,
    EmailId,
    Files,
    HiddenCopies,
    Limit,
    MailboxId,
    Mode,
    Tools,
    files,
    summary,
    tool_result,
)


def install_email(t: Tools) -> None:
    async def send_email(
        ctx: Context,
        to: Annotated[list[str], Field(min_length=1, max_length=50, description="Recipients.")],
        subject: Annotated[str, Field(max_length=998, description="One line.")],
        body_text: Annotated[str | None, Field(description="Plain-text body.")] = None,
        body_html: Annotated[str | None, Field(description="HTML body (optional).")] = None,
        markdown: Annotated[
            str | None, Field(description="Markdown body; rendered to text and HTML.")
        ] = None,
        cc: Copies = None,
        bcc: HiddenCopies = None,
        attachments: Files = None,
        mailbox_id: MailboxId = None,
        send_at: Annotated[
            str | None, Field(description="Send later: ISO 8601 UTC, e.g. 2026-12-01T09:00Z")
        ] = None,
        dry_run: Annotated[
            bool, Field(description="Only report what oversight would do; send nothing.")
        ] = False,
        idempotency_key: Annotated[
            str | None, Field(description="Retry-safe key: a repeat returns the first result.")
        ] = None,
    ) -> CallToolResult:
        """Send an email from a mailbox. The mailbox's oversight mode decides: status
        'sent' (queued for delivery), 'pending' (held until a human approves: pending_id)
        or 'scheduled'. A read_only mailbox cannot send."""
        box = t.mailbox(ctx, mailbox_id)
        return await t.result(
            ctx,
            lambda mm: mm.send_email(
                box,
                to,
                subject,
                body_text=body_text,
                body_html=body_html,
                markdown=markdown,
                cc=cc,
                bcc=bcc,
                send_at=send_at,
                attachments=files(attachments),
                dry_run=dry_run,
                idempotency_key=idempotency_key,
            ),
        )

    async def reply_email(
        ctx: Context,
        email_id: Annotated[
            str | None, Field(description="The email to answer (or give thread_id).")
        ] = None,
        thread_id: Annotated[
            str | None, Field(description="Answer the thread's latest email instead.")
        ] = None,
        body_text: Annotated[str | None, Field(description="Plain-text body.")] = None,
        body_html: Annotated[str | None, Field(description="HTML body (optional).")] = None,
        markdown: Annotated[str | None, Field(description="Markdown body.")] = None,
        cc: Copies = None,
        bcc: HiddenCopies = None,
        attachments: Files = None,
        mailbox_id: MailboxId = None,
        dry_run: Annotated[bool, Field(description="Only report the oversight verdict.")] = (False),
        idempotency_key: Annotated[str | None, Field(description="Retry-safe key.")] = None,
    ) -> CallToolResult:
        """Reply to one of a mailbox's emails (or threads), from that mailbox. Recipient,
        'Re:' subject and threading headers are set by the server. Same result as
        send_email: 'sent', 'pending' (held for approval) or refused."""
        box = t.mailbox(ctx, mailbox_id)
        return await t.result(
            ctx,
            lambda mm: mm.reply_email(
                box,
                email_id=email_id,
                thread_id=thread_id,
                body_text=body_text,
                body_html=body_html,
                markdown=markdown,
                cc=cc,
                bcc=bcc,
                attachments=files(attachments),
                dry_run=dry_run,
                idempotency_key=idempotency_key,
            ),
        )

    async def check_inbox(
        ctx: Context,
        mailbox_id: MailboxId = None,
        filter: Annotated[
            Literal["all", "unread", "requires_action"],
            Field(description="all, unread, or requires_action (mail needing an answer)."),
        ] = "all",
        direction: Annotated[
            Literal["inbound", "outbound"] | None, Field(description="Only one direction.")
        ] = None,
        limit: Limit = 20,
        cursor: Cursor = None,
    ) -> CallToolResult:
        """List a mailbox's emails, newest first: ids, status, addresses, dates and a
        short preview (no full bodies; read_email gives those)."""
        box = t.mailbox(ctx, mailbox_id)
        page = await t.call(
            ctx,
            lambda mm: mm.check_inbox(
                box, filter=filter, limit=limit, cursor=cursor, direction=direction
            ),
        )
        data = page.to_dict()
        data["emails"] = [summary(e) for e in data.get("emails", [])]
        return tool_result(data)

    async def read_email(ctx: Context, email_id: EmailId) -> CallToolResult:
        """Read one email in full: metadata, bodies, headers, attachments (ids, types,
        sizes) and sender checks (DKIM/SPF/DMARC). Marks an inbound email read."""
        return await t.result(ctx, lambda mm: mm.read_email(email_id))

    async def get_thread(
        ctx: Context,
        thread_id: Annotated[str, Field(description="The thread (thr_…).")],
        mailbox_id: MailboxId = None,
    ) -> CallToolResult:
        """A whole conversation, oldest first, with its participants."""
        box = t.mailbox(ctx, mailbox_id)
        return await t.result(ctx, lambda mm: mm.get_thread(box, thread_id))

    async def download_attachment(
        ctx: Context,
        email_id: EmailId,
        attachment_id: Annotated[
            str | None, Field(description="From read_email's attachments (att_…).")
        ] = None,
        filename: Annotated[str | None, Field(description="Or the attachment's file name.")] = None,
    ) -> CallToolResult:
        """Fetch one attachment. Up to 256 KiB it comes back inline (base64, also as an
        embedded resource); larger ones as a URL to GET with the API key."""
        return await download(t, ctx, email_id, attachment_id, filename)

    async def get_raw_email(ctx: Context, email_id: EmailId) -> CallToolResult:
        """The email exactly as sent or received (RFC 5322 source), as untrusted content;
        past 100,000 characters it is cut (to check a message's signatures, give its
        email_id to verify_message, which reads the whole source)."""
        raw = await t.call(ctx, lambda mm: mm.get_raw_email(email_id))
        return tool_result(
            {
                "email_id": email_id,
                "size": len(raw),
                "raw_message": raw.decode("utf-8", "replace"),
            }
        )

    async def cancel_message(ctx: Context, email_id: EmailId) -> CallToolResult:
        """Cancel an outbound email that has not started sending (held or scheduled)."""
        return await t.result(ctx, lambda mm: mm.cancel_message(email_id))

    async def wait_for_email(
        ctx: Context,
        mailbox_id: MailboxId = None,
        timeout_seconds: Annotated[
            int,
            Field(ge=1, le=WAIT_MAX_SECONDS, description="Give up after this many seconds."),
        ] = 30,
        sender: Annotated[str | None, Field(description="Only mail from this address.")] = (None),
        subject_contains: Annotated[
            str | None, Field(description="Only mail whose subject contains this.")
        ] = None,
        after: Annotated[
            str | None,
            Field(description="The cursor a previous wait returned: wait for the next one."),
        ] = None,
    ) -> CallToolResult:
        """Block until an email reaches the mailbox (optionally from a sender or with a
        subject), or the timeout passes. Returns the email, or timed_out with a cursor
        to pass as 'after' next time so nothing is missed."""
        box = t.mailbox(ctx, mailbox_id)
        waited = await t.call(
            ctx,
            lambda mm: mm.wait_for_email(
                box,
                timeout_seconds=timeout_seconds,
                sender=sender,
                subject_contains=subject_contains,
                after=after,
            ),
        )
        data = waited.to_dict()
        if isinstance(data.get("email"), dict):  # bytes belong to download_attachment
            for attachment in data["email"].get("attachments") or []:
                attachment.pop("content_base64", None)
        return tool_result(data)

    async def get_tags(ctx: Context, email_id: EmailId) -> CallToolResult:
        """An email's tags: your own name → value notes (agent memory)."""
        return await t.result(ctx, lambda mm: mm.get_tags(email_id))

    async def set_tags(
        ctx: Context,
        email_id: EmailId,
        tags: Annotated[
            dict[str, str], Field(description="The complete tag map (replaces the old one).")
        ],
    ) -> CallToolResult:
        """Replace an email's tags with this name → value map."""
        return await t.result(ctx, lambda mm: mm.set_tags(email_id, tags))

    async def delete_tag(
        ctx: Context,
        email_id: EmailId,
        name: Annotated[str, Field(description="The tag to remove.")],
    ) -> CallToolResult:
        """Remove one tag from an email."""
        return await t.result(ctx, lambda mm: mm.delete_tag(email_id, name))

    for fn, hint in (
        (send_email, SENDS),
        (reply_email, SENDS),
        (check_inbox, READ),
        (read_email, WRITE),  # marks the email read
        (get_thread, READ),
        (download_attachment, READ),
        (get_raw_email, READ),
        (cancel_message, DESTRUCTIVE),
        (wait_for_email, READ),
        (get_tags, READ),
        (set_tags, IDEMPOTENT),
        (delete_tag, DESTRUCTIVE),
    ):
        t.register(fn, hint)


async def download(
    t: Tools, ctx: Context, email_id: str, attachment_id: str | None, filename: str | None
) -> CallToolResult:
    if not attachment_id and not filename:
        raise ToolError("give attachment_id (from read_email) or filename")
    email = await t.call(ctx, lambda mm: mm.read_email(email_id))
    attachments = [a.to_dict() for a in email.get("attachments") or []]
    chosen = next(
        (
            a
            for a in attachments
            if (attachment_id and a.get("attachment_id") == attachment_id)
            or (not attachment_id and a.get("filename") == filename)
        ),
        None,
    )
    if chosen is None:
        names = ", ".join(str(a.get("attachment_id")) for a in attachments) or "none"
        raise ToolError(f"404 not_found: no such attachment on {email_id} (it has: {names})")
    data = dict(chosen)
    data["email_id"] = email_id
    extra: list[ContentBlock] = []
    if int(chosen.get("size") or 0) <= INLINE_ATTACHMENT_LIMIT:
        ident = str(chosen["attachment_id"])
        blob = await t.call(ctx, lambda mm: mm.download_attachment(email_id, ident))
        encoded = base64.b64encode(blob).decode("ascii")
        data["inline"] = True
        data["content_base64"] = encoded
        extra.append(
            EmbeddedResource(
                type="resource",
                resource=BlobResourceContents(
                    uri=str(chosen.get("url")),
                    mime_type=_known_type(chosen.get("content_type")),
                    blob=encoded,
                ),
            )
        )
    else:
        data["inline"] = False
        data["note"] = "too large to return inline: GET url with the API key"
    return tool_result(data, extra=extra)


def install_oversight(t: Tools) -> None:
    async def list_pending(
        ctx: Context, limit: Limit = 50, cursor: Cursor = None
    ) -> CallToolResult:
        """Messages held for a human decision (outbound drafts of gated mailboxes, and
        inbound mail of gated_all ones), with their full content. Needs an oversight
        or admin key."""
        return await t.result(ctx, lambda mm: mm.list_pending(limit=limit, cursor=cursor))

    async def decide_email(
        ctx: Context,
        action: Annotated[Literal["approve", "reject"], Field(description="The decision.")],
        pending_id: Annotated[
            str | None, Field(description="The held message (apr_…) from list_pending.")
        ] = None,
        email_id: Annotated[str | None, Field(description="Or the message's email id.")] = (None),
        reason: Annotated[
            str, Field(max_length=2000, description="Recorded in the audit log.")
        ] = "",
        edits: Annotated[
            dict[str, str] | None,
            Field(description="Change subject, body_text or body_html before approving."),
        ] = None,
    ) -> CallToolResult:
        """Approve (release) or reject a held message. Needs an oversight or admin key
        that did not write the message: an agent cannot approve its own mail."""
        return await t.result(
            ctx,
            lambda mm: mm.decide_email(
                pending_id=pending_id,
                email_id=email_id,
                action=action,
                reason=reason or None,
                edits=edits,
            ),
        )

    async def request_upgrade(
        ctx: Context,
        target_mode: Annotated[Mode, Field(description="The oversight mode you ask for.")],
        mailbox_id: MailboxId = None,
    ) -> CallToolResult:
        """Ask the human operator to give this mailbox more autonomy. Nothing changes
        until they agree; an agent can never raise its own mode."""
        box = t.mailbox(ctx, mailbox_id)
        return await t.result(ctx, lambda mm: mm.request_upgrade(box, target_mode))

    async def list_allowlist(ctx: Context, mailbox_id: MailboxId = None) -> CallToolResult:
        """Addresses (or *@domain) a gated_send mailbox may write to without review."""
        box = t.mailbox(ctx, mailbox_id)
        return await t.result(ctx, lambda mm: mm.get_allowlist(box))

    async def add_allowlist_entry(
        ctx: Context,
        entry: Annotated[str, Field(description="An address or *@domain.")],
        mailbox_id: MailboxId = None,
    ) -> CallToolResult:
        """Let a gated_send mailbox write to this address or domain without review.
        Operator (admin) keys only."""
        box = t.mailbox(ctx, mailbox_id)
        return await edit_allowlist(t, ctx, box, lambda entries: [*entries, entry])

    async def remove_allowlist_entry(
        ctx: Context,
        entry: Annotated[str, Field(description="The address or *@domain to remove.")],
        mailbox_id: MailboxId = None,
    ) -> CallToolResult:
        """Remove an allowlist entry: mail to it is reviewed again."""
        box = t.mailbox(ctx, mailbox_id)
        return await edit_allowlist(
            t, ctx, box, lambda entries: [e for e in entries if e.lower() != entry.lower()]
        )

    for fn, hint in (
        (list_pending, READ),
        (decide_email, WRITE),
        (request_upgrade, WRITE),
        (list_allowlist, READ),
        (add_allowlist_entry, IDEMPOTENT),
        (remove_allowlist_entry, DESTRUCTIVE),
    ):
        t.register(fn, hint)


async def edit_allowlist(
    t: Tools, ctx: Context, box: str, change: Callable[[list[str]], list[str]]
) -> CallToolResult:
    current = await t.call(ctx, lambda mm: mm.get_allowlist(box))
    entries = list(dict.fromkeys(change([str(e) for e in current.get("entries") or []])))
    return await t.result(ctx, lambda mm: mm.set_allowlist(box, entries))


def _known_type(declared: object) -> str:
    """The sender's declared type when it is a registered one (it is their text, so an
    invented type never reaches the client as metadata), else application/octet-stream."""
    if isinstance(declared, str) and mimetypes.guess_extension(declared, strict=False):
        return declared
    return "application/octet-stream"
