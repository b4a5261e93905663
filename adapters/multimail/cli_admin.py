"""``multimail`` commands for the account and its surroundings: one SDK call each.

Keys, the account and its tenants, usage, health, domains and DNS, message verification,
the audit log, events, webhooks, contacts and suppression; and ``mcp``, which runs a
process of its own.

Rule 1: a handler only translates: argv → ``Client`` call → output; the server decides.
Rule 2: secrets the server returns (API keys, webhook signing secrets) go to stdout only;
no command writes one to a file.
Rule 3: streamed output (``events --follow``) is one line per event, flushed at once;
with ``--json`` one compact JSON object per line.
Rule 4: checks that can fail without an API error (``verify``, ``audit verify``) exit 1
when they fail.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from multimail.cli_output import (
    FAILED,
    OK,
    SERVER,
    Output,
    UsageError,
    connect,
    safe,
    split_list,
    when,
)
from multimail.client import Client, NotFound, Result

# --- keys, account, accounts, usage, health ---------------------------------------------


def cmd_keys_create(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.create_api_key(
        args.name,
        scopes=split_list(args.scopes),
        mailbox_ids=args.mailbox,
        idempotency_key=args.idempotency_key,
    )
    out.record(result)
    if not out.as_json:
        out.note("store the api_key now: it is not shown again")
    return OK


def cmd_keys_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    columns: Sequence[tuple[str, Callable[[Result], object]]] = (
        ("ID", lambda k: k.id),
        ("NAME", lambda k: k.name),
        ("PREFIX", lambda k: k.get("prefix")),
        ("SCOPES", lambda k: k.scopes),
        ("MAILBOXES", lambda k: k.get("mailbox_ids") or "all"),
        ("REVOKED", lambda k: k.get("revoked")),
        ("CREATED", lambda k: when(k.get("created_at"))),
    )
    page = client.list_api_keys(limit=args.limit, cursor=args.cursor)
    out.table(page, "api_keys", columns, empty="no keys")
    return OK


def cmd_keys_revoke(client: Client, args: argparse.Namespace, out: Output) -> int:
    out.record(client.revoke_api_key(args.key_id))
    return OK


def cmd_account_get(client: Client, args: argparse.Namespace, out: Output) -> int:
    out.record(client.get_account())
    return OK


def cmd_account_update(client: Client, args: argparse.Namespace, out: Output) -> int:
    fields = {
        "name": args.name,
        "oversight_email": args.oversight_email,
        "default_oversight_mode": args.default_mode,
    }
    given = {k: v for k, v in fields.items() if v is not None}
    if not given:
        raise UsageError("nothing to update: give --name, --oversight-email or --default-mode")
    out.record(client.update_account(**given))
    return OK


def cmd_accounts_create(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.create_account(
        args.name,
        oversight_email=args.oversight_email,
        slug=args.slug,
        idempotency_key=args.idempotency_key,
    )
    out.record(result)
    if not out.as_json:
        out.note("store the api_key now: it is the new account's admin key, not shown again")
    return OK


def cmd_usage(client: Client, args: argparse.Namespace, out: Output) -> int:
    out.record(client.get_usage())
    return OK


def cmd_health(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.health()
    out.done(result, f"{safe(result.get('status'))}: {safe(client.base_url)}")
    return OK


# --- domains, verify, audit, events -----------------------------------------------------


def cmd_domains_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    columns: Sequence[tuple[str, Callable[[Result], object]]] = (
        ("DOMAIN", lambda d: d.domain),
        ("KIND", lambda d: d.get("kind")),
        ("STATUS", lambda d: d.status),
        ("DNS_RECORDS", lambda d: len(d.get("dns_records") or [])),
    )
    out.table(client.list_domains(), "domains", columns, empty="no domains")
    return OK


def cmd_dns(client: Client, args: argparse.Namespace, out: Output) -> int:
    wanted = args.domain.lower().rstrip(".")
    found = [d for d in client.list_domains().domains if str(d.domain).lower() == wanted]
    if not found:  # what the API would answer for a domain it does not know
        raise NotFound(
            None,
            "not_found",
            f"{args.domain} is not one of this account's domains (multimail domains list)",
        )
    records = found[0].to_dict().get("dns_records") or []
    if out.as_json:
        out.json({"domain": wanted, "dns_records": records})
        return OK
    out.line(f"; DNS records to publish for {wanted} (zone-file form)")
    for r in records:
        value = str(r["value"])
        if r["type"] == "TXT":
            chunks = [value[i : i + 250] for i in range(0, len(value), 250)]
            value = " ".join(f'"{c}"' for c in chunks)
        out.line(f"{r['name']}.\tIN\t{r['type']}\t{value}")
    return OK


def cmd_verify(client: Client, args: argparse.Namespace, out: Output) -> int:
    from multimail import verify

    try:
        raw = Path(args.file).read_bytes() if args.file != "-" else sys.stdin.buffer.read()
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    server = args.server or args.api_url or os.environ.get("MULTIMAIL_API_URL")
    if server:
        dns_txt, identity_keys = verify.server_resolvers(server)
    else:
        dns_txt = verify.dns_resolver()
        identity_keys = _no_keys
    result = verify.verify_message(
        raw, dns_txt=dns_txt, identity_keys=identity_keys, check_dkim=not args.no_dkim
    )
    if out.as_json:
        out.json(result.to_dict() if hasattr(result, "to_dict") else dataclasses.asdict(result))
    elif result.ok:
        claim = result.claim or {}
        out.line(f"verified: sent by mailbox {result.mailbox_id} <{result.address}>")
        approved = "no"
        if claim.get("human_approved"):
            approved = f"yes ({claim.get('reviewer_key_id')})"
        out.line(
            f"  mode {claim.get('oversight_mode')}, human approved: {approved}, "
            f"DKIM {result.dkim.get('result')} ({result.dkim.get('domain')})"
        )
    else:
        out.line(f"NOT verified: {result.reason}")
        for check in result.checks:
            if not check["ok"]:
                out.line(f"  x {check['check']}: {check['reason']}")
    return OK if result.ok else FAILED


def _no_keys(mailbox_id: str) -> list[dict[str, object]]:
    raise UsageError(
        "identity keys are fetched from a MultiMail server: pass --server URL or set "
        "MULTIMAIL_API_URL"
    )


def cmd_audit_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    columns: Sequence[tuple[str, Callable[[Result], object]]] = (
        ("SEQ", lambda e: e.seq),
        ("ACTION", lambda e: e.action),
        ("RESOURCE", lambda e: f"{e.resource_type} {e.resource_id}"),
        ("ACTOR", lambda e: e.get("actor_key_id")),
        ("CREATED", lambda e: when(e.created_at)),
    )
    page = client.get_audit_log(limit=args.limit, cursor=args.cursor)
    out.table(page, "entries", columns, empty="no audit entries")
    return OK


def cmd_audit_verify(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.verify_audit_log()
    valid = bool(result.get("valid"))
    if out.as_json:
        out.json(result.to_dict())
    elif valid:
        out.line(f"audit log intact: {result.get('entries')} entries, hash chain verified")
    else:
        out.line(f"audit log BROKEN at entry {result.get('broken_at')}")
    return OK if valid else FAILED


EVENTS_PAGE = 100  # events listed when --limit is not given


def cmd_events(client: Client, args: argparse.Namespace, out: Output) -> int:
    if args.follow:
        if args.limit is not None:
            raise UsageError("--limit applies to the list, not to --follow")
        return _follow_events(client, args, out)
    result = client.list_events(
        after=0 if args.after is None else args.after,
        mailbox_id=args.mailbox,
        type=split_list(args.type),
        limit=EVENTS_PAGE if args.limit is None else args.limit,
    )
    columns: Sequence[tuple[str, Callable[[Result], object]]] = (
        ("SEQ", lambda e: e.seq),
        ("TYPE", lambda e: e.type),
        ("MAILBOX_ID", lambda e: e.get("mailbox_id")),
        ("CREATED", lambda e: when(e.created_at)),
        ("ID", lambda e: e.id),
    )
    out.table(result, "events", columns, empty="no events", more="--after")
    return OK


def _event_line(event: Result) -> str:
    return "  ".join(
        (
            f"{safe(event.get('seq')):>6}",
            when(event.get("created_at")),
            f"{safe(event.get('type')):<22}",
            safe(event.get("mailbox_id")),
            safe(event.get("id")),
        )
    )


def _follow_events(client: Client, args: argparse.Namespace, out: Output) -> int:
    if not out.as_json:
        out.note("following events as they happen; Ctrl-C stops")
    events = client.stream_events(
        after=args.after, mailbox_id=args.mailbox, types=split_list(args.type)
    )
    for event in events:
        if out.as_json:
            out.json_line(event.to_dict())
        else:
            out.line(_event_line(event))
        out.flush()
    return OK


# --- webhooks ---------------------------------------------------------------------------


def cmd_webhooks_create(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.create_webhook(
        args.url,
        events=split_list(args.events),
        mailbox_id=args.mailbox,
        idempotency_key=args.idempotency_key,
    )
    out.record(result)
    if not out.as_json:
        out.note("each delivery is signed with signing_secret: verify it in the receiver")
    return OK


def _events_cell(events: object) -> str:
    """A subscription's event filter, short enough for a table cell."""
    if not isinstance(events, list) or not events:
        return "all"
    if len(events) <= 2:
        return safe(events)
    return f"{safe(events[0])} +{len(events) - 1} more"


WEBHOOK_COLUMNS: Sequence[tuple[str, Callable[[Result], object]]] = (
    ("WEBHOOK_ID", lambda w: w.id),
    ("URL", lambda w: w.url),
    ("EVENTS", lambda w: _events_cell(w.get("events"))),
    ("MAILBOX_ID", lambda w: w.get("mailbox_id") or "all"),
    ("STATUS", lambda w: w.get("status")),
    ("CREATED", lambda w: when(w.get("created_at"))),
)


def cmd_webhooks_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    out.table(client.list_webhooks(), "subscriptions", WEBHOOK_COLUMNS, empty="no webhooks")
    return OK


def cmd_webhooks_get(client: Client, args: argparse.Namespace, out: Output) -> int:
    out.record(client.get_webhook(args.webhook_id))
    return OK


def cmd_webhooks_delete(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.delete_webhook(args.webhook_id)
    if out.as_json:
        out.json(result.to_dict())
    elif len(result):
        out.record(result)
    else:
        out.line(f"deleted webhook {safe(args.webhook_id)}")
    return OK


def cmd_webhooks_rotate(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.rotate_webhook_secret(args.webhook_id)
    out.record(result)
    if not out.as_json:
        out.note(
            "receivers should accept both secrets until "
            f"{when(result.get('previous_secret_expires_at'))}"
        )
    return OK


def _latency(delivery: Result) -> str | None:
    ms = delivery.get("latency_ms")
    return None if ms is None else f"{ms} ms"


DELIVERY_COLUMNS: Sequence[tuple[str, Callable[[Result], object]]] = (
    ("DELIVERY_ID", lambda d: d.id),
    ("WEBHOOK_ID", lambda d: d.get("webhook_id")),
    ("EVENT", lambda d: d.get("event_type")),
    ("STATUS", lambda d: d.status),
    ("ATTEMPTS", lambda d: d.get("attempts")),
    ("HTTP", lambda d: d.get("response_status")),
    ("LATENCY", _latency),
    ("LAST_ATTEMPT", lambda d: when(d.get("last_attempt_at"))),
    ("NEXT_ATTEMPT", lambda d: when(d.get("next_attempt_at"))),
)


def cmd_webhooks_deliveries(client: Client, args: argparse.Namespace, out: Output) -> int:
    page = client.list_webhook_deliveries(
        limit=args.limit, cursor=args.cursor, status=args.status, webhook_id=args.webhook
    )
    out.table(page, "deliveries", DELIVERY_COLUMNS, empty="no deliveries")
    return OK


def cmd_webhooks_replay(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.replay_webhook_delivery(args.delivery_id)
    if out.as_json:
        out.json(result.to_dict())
        return OK
    delivery = result.get("delivery") or Result()
    out.line(
        f"replaying {safe(delivery.get('event_type'))} event {safe(delivery.get('event_id'))} "
        f"to {safe(delivery.get('url'))}: delivery {safe(delivery.get('id'))} is "
        f"{safe(delivery.get('status'))}"
    )
    return OK


# --- contacts and suppression -----------------------------------------------------------


def cmd_contacts_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    columns: Sequence[tuple[str, Callable[[Result], object]]] = (
        ("CONTACT_ID", lambda c: c.id),
        ("EMAIL", lambda c: c.email),
        ("NAME", lambda c: c.get("name") or None),
        ("TAGS", lambda c: c.get("tags")),
        ("CREATED", lambda c: when(c.get("created_at"))),
    )
    page = client.list_contacts(q=args.query, limit=args.limit, cursor=args.cursor)
    out.table(page, "contacts", columns, empty="no contacts")
    return OK


def cmd_contacts_add(client: Client, args: argparse.Namespace, out: Output) -> int:
    out.record(
        client.add_contact(
            args.email, name=args.name, tags=args.tag, idempotency_key=args.idempotency_key
        )
    )
    return OK


def cmd_contacts_delete(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.delete_contact(args.contact_id)
    out.done(result, f"deleted contact {safe(args.contact_id)}")
    return OK


def cmd_suppression_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    columns: Sequence[tuple[str, Callable[[Result], object]]] = (
        ("ADDRESS", lambda s: s.email_address),
        ("REASON", lambda s: s.get("reason")),
        ("MAILBOX_ID", lambda s: s.get("mailbox_id") or "all"),
        ("CREATED", lambda s: when(s.get("created_at"))),
    )
    page = client.list_suppressions(limit=args.limit, cursor=args.cursor)
    out.table(page, "suppressions", columns, empty="no suppressed addresses")
    return OK


def cmd_suppression_add(client: Client, args: argparse.Namespace, out: Output) -> int:
    out.record(client.add_suppression(args.address, reason=args.reason))
    return OK


def cmd_suppression_remove(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.remove_suppression(args.address)
    out.done(result, f"{safe(args.address)} is no longer suppressed")
    return OK


# --- mcp --------------------------------------------------------------------------------


def run_mcp(args: argparse.Namespace) -> int:
    """``multimail mcp``: the MCP server on stdin/stdout; it makes its own client."""
    try:
        from multimail.mcp_server import stdio_main
    except ImportError as exc:
        print(f"error: unavailable: this build has no MCP server ({exc})", file=sys.stderr)
        return SERVER
    connect(args.api_key, args.api_url).close()  # a URL or key it cannot use: exit 2, now
    code = stdio_main(api_url=args.api_url, api_key=args.api_key, mailbox_id=args.mailbox)
    return code if isinstance(code, int) else OK
