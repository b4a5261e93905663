"""The MCP tools for the operator's side: mailboxes, the account and its keys and audit
log, contacts and suppression, webhooks, domains, reputation, events and message
verification. Each is one API call with the caller's key; see multimail.mcp_tools for
the rules they share.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Annotated, Any, Literal

import anyio
import anyio.from_thread
import anyio.to_thread
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import (
    CallToolResult,
)
from pydantic import Field

from multimail import verify
from multimail.client import (
    AsyncClient,
    MultimailAPIError,
    NotFound,
    Result,
)
from multimail.mcp_tools import (
    DESTRUCTIVE,
    IDEMPOTENT,
    READ,
    WRITE,
    Cursor,
    DisplayName,
    Limit,
    MailboxId,
    Mode,
    Tools,
    WebhookId,
    describe,
    given,
    tool_result,
)


def install_mailboxes(t: Tools) -> None:
    async def list_mailboxes(
        ctx: Context, limit: Limit = 50, cursor: Cursor = None
    ) -> CallToolResult:
        """The mailboxes this key can see: address, oversight mode, status."""
        return await t.result(ctx, lambda mm: mm.list_mailboxes(limit=limit, cursor=cursor))

    async def get_mailbox(ctx: Context, mailbox_id: MailboxId = None) -> CallToolResult:
        """One mailbox: address, oversight mode, webhook, status."""
        box = t.mailbox(ctx, mailbox_id)
        return await t.result(ctx, lambda mm: mm.get_mailbox(box))

    async def create_mailbox(
        ctx: Context,
        name: Annotated[
            str, Field(min_length=1, max_length=64, description="Local part: NAME@domain.")
        ],
        domain: Annotated[str | None, Field(description="Default: the account's domain.")] = None,
        display_name: Annotated[
            str | None, Field(max_length=200, description="Shown in From:.")
        ] = None,
        oversight_mode: Annotated[
            Mode | None, Field(description="Default: the account's default mode.")
        ] = None,
        webhook_url: Annotated[
            str | None, Field(description="Where inbound mail is POSTed as signed JSON.")
        ] = None,
        idempotency_key: Annotated[str | None, Field(description="Retry-safe key.")] = None,
    ) -> CallToolResult:
        """Create a mailbox; it receives and sends from the moment this returns.
        Operator (admin) keys only."""
        return await t.result(
            ctx,
            lambda mm: mm.create_mailbox(
                name,
                domain=domain,
                display_name=display_name,
                oversight_mode=oversight_mode,
                webhook_url=webhook_url,
                idempotency_key=idempotency_key,
            ),
        )

    async def configure_mailbox(
        ctx: Context,
        mailbox_id: MailboxId = None,
        oversight_mode: Annotated[
            Mode | None, Field(description="New oversight mode (operator keys only).")
        ] = None,
        display_name: DisplayName = None,
        webhook_url: Annotated[
            str | None, Field(description="New webhook URL; empty string removes it.")
        ] = None,
    ) -> CallToolResult:
        """Change a mailbox's oversight mode, display name or webhook URL."""
        box = t.mailbox(ctx, mailbox_id)
        fields = given(
            oversight_mode=oversight_mode,
            display_name=display_name,
            webhook_url=webhook_url,
        )
        return await update(t, ctx, box, fields)

    async def update_mailbox(
        ctx: Context,
        mailbox_id: MailboxId = None,
        display_name: DisplayName = None,
        webhook_url: Annotated[
            str | None, Field(description="New webhook URL; empty string removes it.")
        ] = None,
    ) -> CallToolResult:
        """Change a mailbox's display name or webhook URL (not its oversight mode: see
        configure_mailbox and request_upgrade)."""
        box = t.mailbox(ctx, mailbox_id)
        return await update(t, ctx, box, given(display_name=display_name, webhook_url=webhook_url))

    async def delete_mailbox(
        ctx: Context,
        mailbox_id: Annotated[str, Field(description="The mailbox to decommission.")],
    ) -> CallToolResult:
        """Decommission a mailbox: its address stops receiving and sending at once; its
        mail and audit history are kept. Operator (admin) keys only."""
        return await t.result(ctx, lambda mm: mm.delete_mailbox(mailbox_id))

    for fn, hint in (
        (list_mailboxes, READ),
        (get_mailbox, READ),
        (create_mailbox, WRITE),
        (configure_mailbox, IDEMPOTENT),
        (update_mailbox, IDEMPOTENT),
        (delete_mailbox, DESTRUCTIVE),
    ):
        t.register(fn, hint)


async def update(t: Tools, ctx: Context, box: str, fields: dict[str, Any]) -> CallToolResult:
    if not fields:
        raise ToolError("nothing to change: give at least one field")
    if fields.get("webhook_url") == "":
        fields["webhook_url"] = None
    return await t.result(ctx, lambda mm: mm.update_mailbox(box, **fields))


def install_account(t: Tools) -> None:
    async def get_account(ctx: Context) -> CallToolResult:
        """The key's account: name, oversight email, default mode."""
        return await t.result(ctx, lambda mm: mm.get_account())

    async def update_account(
        ctx: Context,
        name: Annotated[str | None, Field(max_length=998, description="New name.")] = None,
        oversight_email: Annotated[
            str | None, Field(description="Where held mail and notices are sent.")
        ] = None,
        default_oversight_mode: Annotated[
            Mode | None, Field(description="Mode of new mailboxes.")
        ] = None,
    ) -> CallToolResult:
        """Change the account's name, oversight email or default oversight mode."""
        fields = given(
            name=name,
            oversight_email=oversight_email,
            default_oversight_mode=default_oversight_mode,
        )
        if not fields:
            raise ToolError("nothing to change: give at least one field")
        return await t.result(ctx, lambda mm: mm.update_account(**fields))

    async def create_account(
        ctx: Context,
        name: Annotated[str, Field(max_length=998, description="The tenant's name.")],
        oversight_email: Annotated[str | None, Field(description="Its reviewer.")] = None,
        slug: Annotated[str | None, Field(description="Its mail subdomain label.")] = None,
    ) -> CallToolResult:
        """Create a tenant account (server-admin key only); returns its admin api_key,
        shown once."""
        return await t.result(
            ctx, lambda mm: mm.create_account(name, oversight_email=oversight_email, slug=slug)
        )

    async def get_usage(ctx: Context) -> CallToolResult:
        """This account's counts: mailboxes, messages sent and received."""
        return await t.result(ctx, lambda mm: mm.get_usage())

    async def list_api_keys(
        ctx: Context, limit: Limit = 50, cursor: Cursor = None
    ) -> CallToolResult:
        """The account's API keys: names, scopes, mailboxes (never the secrets)."""
        return await t.result(ctx, lambda mm: mm.list_api_keys(limit=limit, cursor=cursor))

    async def create_api_key(
        ctx: Context,
        name: Annotated[str, Field(max_length=998, description="A label, e.g. 'agent-7'.")],
        scopes: Annotated[
            list[Literal["admin", "oversight", "send", "read"]],
            Field(
                min_length=1,
                description="admin, oversight (reviewers), send, read; never both send "
                "and oversight.",
            ),
        ],
        mailbox_ids: Annotated[
            list[str] | None, Field(description="Restrict the key to these mailboxes.")
        ] = None,
    ) -> CallToolResult:
        """Create an API key; its secret (api_key) is shown once."""
        return await t.result(
            ctx, lambda mm: mm.create_api_key(name, scopes=scopes, mailbox_ids=mailbox_ids)
        )

    async def revoke_api_key(
        ctx: Context, key_id: Annotated[str, Field(description="The key (key_…).")]
    ) -> CallToolResult:
        """Revoke an API key at once."""
        return await t.result(ctx, lambda mm: mm.revoke_api_key(key_id))

    async def get_audit_log(
        ctx: Context, limit: Limit = 50, cursor: Cursor = None
    ) -> CallToolResult:
        """The tamper-evident log of every change: who, what, when."""
        return await t.result(ctx, lambda mm: mm.get_audit_log(limit=limit, cursor=cursor))

    async def verify_audit_log(ctx: Context) -> CallToolResult:
        """Recompute the audit log's hash chain: valid, or where it breaks."""
        return await t.result(ctx, lambda mm: mm.verify_audit_log())

    for fn, hint in (
        (get_account, READ),
        (update_account, IDEMPOTENT),
        (create_account, WRITE),
        (get_usage, READ),
        (list_api_keys, READ),
        (create_api_key, WRITE),
        (revoke_api_key, DESTRUCTIVE),
        (get_audit_log, READ),
        (verify_audit_log, READ),
    ):
        t.register(fn, hint)


def install_contacts(t: Tools) -> None:
    async def search_contacts(
        ctx: Context,
        query: Annotated[
            str | None, Field(description="Matches names and addresses; omit for all.")
        ] = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> CallToolResult:
        """Find contacts by name or address."""
        return await t.result(ctx, lambda mm: mm.list_contacts(q=query, limit=limit, cursor=cursor))

    async def add_contact(
        ctx: Context,
        email: Annotated[str, Field(description="The contact's address.")],
        name: Annotated[str | None, Field(max_length=998, description="Their name.")] = None,
        tags: Annotated[list[str] | None, Field(description="Labels.")] = None,
    ) -> CallToolResult:
        """Save a contact."""
        return await t.result(ctx, lambda mm: mm.add_contact(email, name=name, tags=tags))

    async def delete_contact(
        ctx: Context, contact_id: Annotated[str, Field(description="The contact (con_…).")]
    ) -> CallToolResult:
        """Delete a contact."""
        return await t.result(ctx, lambda mm: mm.delete_contact(contact_id))

    async def list_suppression(
        ctx: Context, limit: Limit = 50, cursor: Cursor = None
    ) -> CallToolResult:
        """Addresses no mailbox of the account will send to (hard bounces, complaints,
        manual entries), with the reason."""
        return await t.result(ctx, lambda mm: mm.list_suppressions(limit=limit, cursor=cursor))

    async def add_suppression(
        ctx: Context,
        email_address: Annotated[str, Field(description="The address to stop mailing.")],
        reason: Annotated[str, Field(description="Why (recorded).")] = "manual",
    ) -> CallToolResult:
        """Stop every mailbox of the account from sending to an address."""
        return await t.result(ctx, lambda mm: mm.add_suppression(email_address, reason))

    async def remove_suppression(
        ctx: Context, email_address: Annotated[str, Field(description="The address.")]
    ) -> CallToolResult:
        """Allow sending to a suppressed address again."""
        return await t.result(ctx, lambda mm: mm.remove_suppression(email_address))

    for fn, hint in (
        (search_contacts, READ),
        (add_contact, WRITE),
        (delete_contact, DESTRUCTIVE),
        (list_suppression, READ),
        (add_suppression, IDEMPOTENT),
        (remove_suppression, DESTRUCTIVE),
    ):
        t.register(fn, hint)


def install_webhooks(t: Tools) -> None:
    async def create_webhook(
        ctx: Context,
        url: Annotated[str, Field(description="Where events are POSTed (public http(s)).")],
        events: Annotated[
            list[str] | None,
            Field(description="Event types, e.g. message.received; omit for all."),
        ] = None,
        mailbox_id: Annotated[
            str | None, Field(description="Only this mailbox's events; omit for all.")
        ] = None,
    ) -> CallToolResult:
        """Subscribe a URL to events; every delivery is signed (Standard Webhooks) with
        the returned signing_secret."""
        return await t.result(
            ctx, lambda mm: mm.create_webhook(url, events=events, mailbox_id=mailbox_id)
        )

    async def list_webhooks(ctx: Context) -> CallToolResult:
        """The account's webhook subscriptions (without secrets)."""
        return await t.result(ctx, lambda mm: mm.list_webhooks())

    async def get_webhook(ctx: Context, webhook_id: WebhookId) -> CallToolResult:
        """One subscription, with its signing secret."""
        return await t.result(ctx, lambda mm: mm.get_webhook(webhook_id))

    async def delete_webhook(ctx: Context, webhook_id: WebhookId) -> CallToolResult:
        """Remove a subscription; nothing more is sent to it."""
        return await t.result(ctx, lambda mm: mm.delete_webhook(webhook_id))

    async def rotate_webhook_secret(ctx: Context, webhook_id: WebhookId) -> CallToolResult:
        """Issue a new signing secret; the old one keeps verifying for 24 hours."""
        return await t.result(ctx, lambda mm: mm.rotate_webhook_secret(webhook_id))

    async def list_webhook_deliveries(
        ctx: Context,
        status: Annotated[
            Literal["pending", "delivering", "delivered", "dead"] | None,
            Field(description="Only deliveries in this state (dead: retries exhausted)."),
        ] = None,
        webhook_id: Annotated[str | None, Field(description="Only this subscription.")] = (None),
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> CallToolResult:
        """The delivery log: each event sent to each URL, attempts, status codes."""
        return await t.result(
            ctx,
            lambda mm: mm.list_webhook_deliveries(
                limit=limit, cursor=cursor, status=status, webhook_id=webhook_id
            ),
        )

    async def replay_webhook_delivery(
        ctx: Context, delivery_id: Annotated[str, Field(description="The delivery (whd_…).")]
    ) -> CallToolResult:
        """Send a delivery again (a dead one, say), with the same webhook-id."""
        return await t.result(ctx, lambda mm: mm.replay_webhook_delivery(delivery_id))

    for fn, hint in (
        (create_webhook, WRITE),
        (list_webhooks, READ),
        (get_webhook, READ),
        (delete_webhook, DESTRUCTIVE),
        (rotate_webhook_secret, WRITE),
        (list_webhook_deliveries, READ),
        (replay_webhook_delivery, WRITE),
    ):
        t.register(fn, hint)


def install_insight(t: Tools) -> None:
    async def list_domains(ctx: Context) -> CallToolResult:
        """Sending domains and the DNS records (MX, SPF, DMARC, DKIM) to publish."""
        return await t.result(ctx, lambda mm: mm.list_domains())

    async def get_reputation(ctx: Context, mailbox_id: MailboxId = None) -> CallToolResult:
        """A mailbox's reputation: score 0-100, bounce, complaint and delivery rates."""
        box = t.mailbox(ctx, mailbox_id)
        return await t.result(ctx, lambda mm: mm.get_reputation(box))

    async def list_reputation(
        ctx: Context,
        sort: Annotated[
            Literal["reputation_score", "bounce_rate", "complaint_rate", "delivery_rate"],
            Field(description="Sort key."),
        ] = "reputation_score",
        order: Annotated[
            Literal["asc", "desc"] | None, Field(description="Default: worst first.")
        ] = None,
    ) -> CallToolResult:
        """Every mailbox's reputation, worst first."""
        return await t.result(ctx, lambda mm: mm.list_reputation(sort=sort, order=order))

    async def list_events(
        ctx: Context,
        after: Annotated[int, Field(ge=0, description="Events after this seq.")] = 0,
        mailbox_id: Annotated[str | None, Field(description="One mailbox only.")] = None,
        type: Annotated[
            list[str] | None, Field(description="Event types, e.g. message.received.")
        ] = None,
        limit: Limit = 100,
    ) -> CallToolResult:
        """Committed events in order (message.received, message.sent, oversight.*, …);
        pass the last seq as 'after' to continue."""
        return await t.result(
            ctx,
            lambda mm: mm.list_events(after=after, mailbox_id=mailbox_id, type=type, limit=limit),
        )

    async def verify_message(
        ctx: Context,
        email_id: Annotated[
            str | None,
            Field(description="An email in one of your mailboxes: its source is checked."),
        ] = None,
        raw_message: Annotated[
            str | None,
            Field(
                max_length=5_000_000,
                description="Or the complete email source (headers and body), as received.",
            ),
        ] = None,
        check_dkim: Annotated[bool, Field(description="Also check the DKIM signatures.")] = True,
    ) -> CallToolResult:
        """Check that an email really came from a MultiMail mailbox of this server: its
        signed identity claim, the headers and body it binds, and DKIM. Names the
        sending mailbox, its oversight mode and whether a human approved it. Give
        email_id (one you received) or raw_message (a source you were handed)."""
        if (email_id is None) == (raw_message is None):
            raise ToolError("give exactly one of email_id and raw_message")
        if email_id is not None:
            raw = await t.call(ctx, lambda mm: mm.get_raw_email(email_id))
        else:
            raw = str(raw_message).encode("utf-8", "surrogateescape")
            if b"\r\n" not in raw:  # pasted with bare newlines: restore the wire form
                raw = raw.replace(b"\n", b"\r\n")
        return await verify_raw(t, ctx, raw, check_dkim)

    for fn, hint in (
        (list_domains, READ),
        (get_reputation, READ),
        (list_reputation, READ),
        (list_events, READ),
        (verify_message, READ),
    ):
        t.register(fn, hint)


async def verify_raw(t: Tools, ctx: Context, raw: bytes, check_dkim: bool) -> CallToolResult:
    """The verdict; when it fails, everything but ``ok`` may quote the message (a claim's
    unknown keys, a DKIM selector), so it goes under ``untrusted``."""
    async with t.connection.open(ctx) as mm:
        dns_txt, identity_keys = _async_resolvers(mm)
        result = await anyio.to_thread.run_sync(
            lambda: verify.verify_message(
                raw, dns_txt=dns_txt, identity_keys=identity_keys, check_dkim=check_dkim
            )
        )
    verdict = result.to_dict()
    if not result.ok:
        verdict = {"ok": False, "untrusted": {k: v for k, v in verdict.items() if k != "ok"}}
    return tool_result(verdict)


def _async_resolvers(
    mm: AsyncClient,
) -> tuple[Callable[[str], str | None], Callable[[str], Sequence[Mapping[str, Any]]]]:
    """verify's lookups, answered by the server's public endpoints through ``mm`` (so they
    work in-process too); called from a worker thread, they run on the event loop."""

    async def published(call: Callable[[], Awaitable[Result]]) -> Result | None:
        try:
            return await call()
        except NotFound:
            return None
        except MultimailAPIError as exc:
            raise verify.ResolverError(describe(exc)) from None

    def dns_txt(fqdn: str) -> str | None:
        body = anyio.from_thread.run(published, lambda: mm.get_published_dns(fqdn))
        records = body.get("records") if body is not None else None
        return str(records[0]) if isinstance(records, list) and records else None

    def identity_keys(mailbox_id: str) -> Sequence[Mapping[str, Any]]:
        body = anyio.from_thread.run(published, lambda: mm.get_identity_keys(mailbox_id))
        keys = body.to_dict().get("keys") if body is not None else None
        return [k for k in keys if isinstance(k, dict)] if isinstance(keys, list) else []

    return dns_txt, identity_keys
