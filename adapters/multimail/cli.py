"""The ``multimail`` command: ``serve`` the server, or talk to one through the SDK.

Rule 1: client subcommands only translate: argv → one ``Client`` call → output. No
business rule lives here; the server decides and the CLI reports.
Rule 2: ``--json`` prints the API's JSON unchanged (pretty-printed); otherwise a readable
table or summary. Untrusted text (subjects, bodies) is printed with control characters
made visible, so an email can't drive the terminal.
Rule 3: errors are one line on stderr, ``error: <code>: <detail>``, never a traceback, with
an exit code by kind: 0 ok, 2 usage, 3 not found, 4 auth, 5 server or connection,
6 conflict, 7 rate limited, 8 invalid request, 1 anything else (``wait`` with no email in
time, a broken audit chain); Ctrl-C exits 130.
Rule 4: streamed output (``events --follow``) is one line per event, flushed at once; with
``--json`` one compact JSON object per line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from multimail.client import (
    WAIT_MAX_SECONDS,
    APIConnectionError,
    AuthenticationError,
    Client,
    Conflict,
    MultimailAPIError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    Result,
    ServerError,
    ValidationError,
)

OK, FAILED, USAGE, NOT_FOUND, AUTH, SERVER, CONFLICT, RATE_LIMITED, INVALID = range(9)

EXIT_CODES: tuple[tuple[type[MultimailAPIError], int], ...] = (
    (NotFound, NOT_FOUND),
    (AuthenticationError, AUTH),
    (PermissionDenied, AUTH),
    (APIConnectionError, SERVER),
    (ServerError, SERVER),
    (Conflict, CONFLICT),
    (RateLimited, RATE_LIMITED),
    (ValidationError, INVALID),
    (PayloadTooLarge, INVALID),
)

MODES = "read_only, gated_all, gated_send, monitored or autonomous"
_GLOBAL_WITH_VALUE = ("--api-url", "--api-key")


class UsageError(Exception):
    """A command line that parsed but cannot be run (exit 2)."""


# --- output -----------------------------------------------------------------------------

# C0 controls except tab and newline, DEL and C1: what a terminal would act on.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def safe(value: object) -> str:
    """Text for a terminal: control characters shown as escapes, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(safe(v) for v in value) or "-"
    if isinstance(value, Result):
        return ", ".join(f"{k}={safe(v)}" for k, v in value.to_dict().items()) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={safe(v)}" for k, v in value.items()) or "-"
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def when(value: object) -> str:
    """``2026-04-19T10:00:00.000Z`` → ``2026-04-19 10:00:00``."""
    if not isinstance(value, str):
        return "-"
    return value.replace("T", " ")[:19]


class Output:
    """Where results go: JSON for machines, rich tables for people."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def json(self, data: Any) -> None:
        text = json.dumps(data, indent=2, ensure_ascii=False)
        # json escapes C0 controls; escape C1 too so --json output is terminal-safe.
        print(re.sub(r"[\x80-\x9f]", lambda m: f"\\u{ord(m.group()):04x}", text))

    def line(self, text: str) -> None:
        print(text)

    def json_line(self, data: Any) -> None:
        """One compact JSON object on one line (JSON Lines), C1 controls escaped too."""
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        print(re.sub(r"[\x80-\x9f]", lambda m: f"\\u{ord(m.group()):04x}", text))

    def flush(self) -> None:
        sys.stdout.flush()

    def note(self, text: str) -> None:
        print(text, file=sys.stderr)

    def _print(self, renderable: Any) -> None:
        from rich.console import Console

        # On a terminal fit its width; in a pipe never cut ids short.
        tty = sys.stdout.isatty()
        console = Console(highlight=False, width=None if tty else 10_000, color_system=None)
        with console.capture() as captured:
            console.print(renderable)
        print("\n".join(line.rstrip() for line in captured.get().splitlines()))

    def record(self, result: Result) -> None:
        """One object: JSON, or a two-column field/value table of the fields that are set."""
        if self.as_json:
            self.json(result.to_dict())
            return
        from rich.table import Table
        from rich.text import Text

        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(no_wrap=True)
        table.add_column(overflow="fold")
        for name in result:
            value = result[name]
            if value is None or value == [] or value == {}:
                continue
            if name == "id" and any(result[k] == value for k in result if k.endswith("_id")):
                continue  # ``id`` repeats ``mailbox_id``/``email_id``
            table.add_row(Text(name), Text(safe(value)))
        self._print(table)

    def table(
        self,
        result: Result,
        rows: str,
        columns: Sequence[tuple[str, Callable[[Result], object]]],
        *,
        empty: str,
        more: str = "--cursor",
    ) -> None:
        """A list response: JSON, or a table of ``result[rows]`` plus a paging hint."""
        if self.as_json:
            self.json(result.to_dict())
            return
        from rich.table import Table
        from rich.text import Text

        items = result.get(rows) or []
        if not items:
            self.line(empty)
        else:
            cells = [[safe(get(item)) for _, get in columns] for item in items]
            table = Table(box=None, pad_edge=False, header_style="bold")
            for i, (title, _) in enumerate(columns):
                if title in ("SUBJECT", "FROM", "TO", "ADDRESS"):  # free text: cut with …
                    table.add_column(title, overflow="ellipsis", max_width=60)
                else:  # ids and short values: never cut
                    widest = max(len(title), *(len(row[i]) for row in cells))
                    table.add_column(title, no_wrap=True, min_width=widest)
            for row in cells:
                table.add_row(*(Text(cell) for cell in row))
            self._print(table)
        if result.get("next_cursor"):
            self.note(f"more: {more} {result.next_cursor}")


# --- commands ---------------------------------------------------------------------------

Handler = Callable[[Client, argparse.Namespace, Output], int]


def _read_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UsageError(f"cannot read {path}: {reason}") from exc


def _read_body(args: argparse.Namespace) -> str:
    if args.body is not None:
        return str(args.body)
    if args.body_file not in (None, "-"):
        return _read_file(args.body_file)
    if args.body_file is None and (sys.stdin is None or sys.stdin.isatty()):
        raise UsageError("give --body TEXT, --body-file FILE, or pipe the body on stdin")
    return sys.stdin.read()


def _read_html(args: argparse.Namespace) -> str | None:
    return None if args.html is None else _read_file(args.html)


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def _sent(result: Result, out: Output) -> int:
    if out.as_json:
        out.json(result.to_dict())
        return OK
    if result.get("dry_run"):
        out.line(
            f"dry run: {safe(result.status)} (verdict {safe(result.get('verdict'))}, "
            f"rule {safe(result.get('rule'))}): {safe(result.get('reason'))}"
        )
    elif result.status == "pending":
        out.line(
            f"pending: held for approval as {safe(result.pending_id)} "
            f"(message {safe(result.message_id)})"
        )
        out.note(f"an overseer approves it with: multimail approve {safe(result.pending_id)}")
    else:
        out.line(
            f"{safe(result.status)}: message {safe(result.message_id)} "
            f"(thread {safe(result.get('thread_id'))})"
        )
    return OK


def cmd_mailboxes_create(client: Client, args: argparse.Namespace, out: Output) -> int:
    out.record(
        client.create_mailbox(
            args.name,
            domain=args.domain,
            display_name=args.display_name,
            oversight_mode=args.mode,
            webhook_url=args.webhook_url,
            idempotency_key=args.idempotency_key,
        )
    )
    return OK


MAILBOX_COLUMNS: Sequence[tuple[str, Callable[[Result], object]]] = (
    ("MAILBOX_ID", lambda m: m.mailbox_id),
    ("ADDRESS", lambda m: m.address),
    ("MODE", lambda m: m.oversight_mode),
    ("STATUS", lambda m: m.status),
    ("CREATED", lambda m: when(m.created_at)),
)


def cmd_mailboxes_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    page = client.list_mailboxes(limit=args.limit, cursor=args.cursor)
    out.table(page, "mailboxes", MAILBOX_COLUMNS, empty="no mailboxes")
    return OK


def cmd_mailboxes_get(client: Client, args: argparse.Namespace, out: Output) -> int:
    out.record(client.get_mailbox(args.mailbox_id))
    return OK


def cmd_mailboxes_update(client: Client, args: argparse.Namespace, out: Output) -> int:
    fields: dict[str, Any] = {}
    if args.mode is not None:
        fields["oversight_mode"] = args.mode
    if args.display_name is not None:
        fields["display_name"] = args.display_name
    if args.webhook_url is not None:
        fields["webhook_url"] = args.webhook_url or None
    if args.allowlist is not None:
        fields["allowlist"] = _split(args.allowlist)
    if not fields:
        raise UsageError(
            "nothing to update: give --mode, --display-name, --webhook-url or --allowlist"
        )
    out.record(client.update_mailbox(args.mailbox_id, **fields))
    return OK


def cmd_mailboxes_delete(client: Client, args: argparse.Namespace, out: Output) -> int:
    out.record(client.delete_mailbox(args.mailbox_id))
    return OK


def cmd_send(client: Client, args: argparse.Namespace, out: Output) -> int:
    body = _read_body(args)
    result = client.send_email(
        args.mailbox_id,
        to=args.to,
        subject=args.subject,
        body_text=body,
        body_html=_read_html(args),
        cc=args.cc,
        bcc=args.bcc,
        send_at=args.send_at,
        dry_run=args.dry_run,
        idempotency_key=args.idempotency_key,
    )
    return _sent(result, out)


def cmd_reply(client: Client, args: argparse.Namespace, out: Output) -> int:
    body = _read_body(args)
    result = client.reply_email(
        args.mailbox_id,
        email_id=args.email_id,
        thread_id=args.thread_id,
        body_text=body,
        body_html=_read_html(args),
        cc=args.cc,
        bcc=args.bcc,
        dry_run=args.dry_run,
        idempotency_key=args.idempotency_key,
    )
    return _sent(result, out)


def cmd_inbox(client: Client, args: argparse.Namespace, out: Output) -> int:
    page = client.check_inbox(
        args.mailbox_id,
        filter=args.filter,
        limit=args.limit,
        cursor=args.cursor,
        direction=args.direction,
    )
    columns: Sequence[tuple[str, Callable[[Result], object]]] = (
        ("EMAIL_ID", lambda e: e.email_id),
        ("!", lambda e: "!" if e.get("requires_action") else ""),
        ("DATE", lambda e: when(e.get("received_at") or e.get("sent_at"))),
        ("FROM", lambda e: e.sender),
        ("SUBJECT", lambda e: e.subject),
        ("STATUS", lambda e: e.status),
    )
    out.table(page, "emails", columns, empty="no emails")
    return OK


def cmd_read(client: Client, args: argparse.Namespace, out: Output) -> int:
    if args.raw:
        sys.stdout.buffer.write(client.get_raw_email(args.email_id))
        sys.stdout.flush()
        return OK
    email = client.read_email(args.email_id)
    if out.as_json:
        out.json(email.to_dict())
        return OK
    _show_email(email, out)
    return OK


def _show_email(email: Result, out: Output) -> None:
    """Headers, attachments and the text body of one email, for a person."""
    head = [
        ("From", email.get("sender")),
        ("To", email.get("to")),
        ("Cc", email.get("cc") or None),
        ("Subject", email.get("subject")),
        ("Date", when(email.get("received_at") or email.get("sent_at"))),
        ("Email", f"{email.get('email_id')}  thread {email.get('thread_id')}"),
        ("Status", f"{email.get('status')} ({email.get('direction')})"),
    ]
    for name, value in head:
        if value is not None:
            out.line(f"{name + ':':<9}{safe(value)}")
    for attachment in email.get("attachments") or []:
        out.line(
            f"{'Attached:':<9}{safe(attachment.filename)} "
            f"({safe(attachment.content_type)}, {attachment.size} bytes)"
        )
    out.line("")
    out.line(safe(email.get("body_text") or ""))


def cmd_wait(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.wait_for_email(
        args.mailbox_id,
        timeout_seconds=args.timeout,
        sender=args.sender,
        subject_contains=args.subject,
        after=args.after,
    )
    email = result.get("email")
    if out.as_json:
        out.json(result.to_dict())
    elif email is not None:
        _show_email(email, out)
    cursor = result.get("cursor")
    resume = f" (resume with --after {safe(cursor)})" if cursor is not None else ""
    if email is None:
        out.note(f"no email within {args.timeout} s{resume}")
        return FAILED
    if not out.as_json and cursor is not None:
        out.note(f"next: multimail wait {safe(args.mailbox_id)} --after {safe(cursor)}")
    return OK


def cmd_pending(client: Client, args: argparse.Namespace, out: Output) -> int:
    page = client.list_pending(limit=args.limit, cursor=args.cursor)
    columns: Sequence[tuple[str, Callable[[Result], object]]] = (
        ("PENDING_ID", lambda p: p.pending_id),
        ("MAILBOX_ID", lambda p: p.mailbox_id),
        ("DIR", lambda p: p.direction),
        ("FROM", lambda p: p.get("from")),
        ("TO", lambda p: p.to),
        ("SUBJECT", lambda p: p.subject),
        ("CREATED", lambda p: when(p.created_at)),
    )
    out.table(page, "pending", columns, empty="nothing awaits a decision")
    return OK


def _decide(action: str) -> Handler:
    def handler(client: Client, args: argparse.Namespace, out: Output) -> int:
        # A held message may be named by its approval (apr_…) or by the message (msg_…).
        by_email = args.id.startswith("msg_")
        result = client.decide_email(
            pending_id=None if by_email else args.id,
            email_id=args.id if by_email else None,
            action=action,
            reason=args.reason,
        )
        if out.as_json:
            out.json(result.to_dict())
        else:
            out.line(
                f"{safe(result.status)} {safe(result.pending_id)}: message "
                f"{safe(result.message_id)} is now {safe(result.get('message_status'))}"
            )
        return OK

    return handler


REPUTATION_COLUMNS: Sequence[tuple[str, Callable[[Result], object]]] = (
    ("MAILBOX_ID", lambda r: r.mailbox_id),
    ("ADDRESS", lambda r: r.address),
    ("SCORE", lambda r: r.reputation_score),
    ("DELIVERY", lambda r: f"{r.delivery_rate:.1%}"),
    ("BOUNCE", lambda r: f"{r.bounce_rate:.1%}"),
    ("COMPLAINT", lambda r: f"{r.complaint_rate:.2%}"),
    ("SENT_30D", lambda r: r.messages_sent_30d),
    ("MODE", lambda r: r.get("oversight_mode")),
)


def cmd_reputation(client: Client, args: argparse.Namespace, out: Output) -> int:
    if args.mailbox_id:
        out.record(client.get_reputation(args.mailbox_id))
    else:
        result = client.list_reputation(sort=args.sort, order=args.order)
        out.table(result, "mailboxes", REPUTATION_COLUMNS, empty="no mailboxes")
    return OK


def cmd_keys_create(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.create_api_key(
        args.name,
        scopes=_split(args.scopes),
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
    out.table(client.list_api_keys(), "api_keys", columns, empty="no keys")
    return OK


def cmd_keys_revoke(client: Client, args: argparse.Namespace, out: Output) -> int:
    out.record(client.revoke_api_key(args.key_id))
    return OK


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
    if not found:
        raise UsageError(
            f"{args.domain} is not one of this account's domains (multimail domains list)"
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


def cmd_events(client: Client, args: argparse.Namespace, out: Output) -> int:
    if args.follow:
        return _follow_events(client, args, out)
    result = client.list_events(
        after=0 if args.after is None else args.after,
        mailbox_id=args.mailbox,
        type=args.type,
        limit=args.limit,
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
        after=args.after, mailbox_id=args.mailbox, types=_split(args.type)
    )
    for event in events:
        if out.as_json:
            out.json_line(event.to_dict())
        else:
            out.line(_event_line(event))
        out.flush()
    return OK


# webhooks


def cmd_webhooks_create(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.create_webhook(
        args.url,
        events=_split(args.events),
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


def cmd_account_get(client: Client, args: argparse.Namespace, out: Output) -> int:
    out.record(client.get_account())
    return OK


# --- the parser -------------------------------------------------------------------------


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """--json/--api-url/--api-key, accepted before or after the subcommand."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--json", action="store_true", default=default(False), help="print the API's JSON"
    )
    parser.add_argument(
        "--api-url",
        metavar="URL",
        default=default(None),
        help="server URL (default: $MULTIMAIL_API_URL, else http://127.0.0.1:8025)",
    )
    parser.add_argument(
        "--api-key",
        metavar="KEY",
        default=default(None),
        help="API key (default: $MULTIMAIL_API_KEY)",
    )


def _body_options(parser: argparse.ArgumentParser) -> None:
    body = parser.add_mutually_exclusive_group()
    body.add_argument("--body", metavar="TEXT", help="plain-text body")
    body.add_argument(
        "--body-file", metavar="FILE", help="read the plain-text body from FILE ('-' = stdin)"
    )
    parser.add_argument("--html", metavar="FILE", help="HTML alternative read from FILE")
    parser.add_argument("--cc", action="append", metavar="ADDR", help="Cc (repeatable)")
    parser.add_argument("--bcc", action="append", metavar="ADDR", help="Bcc (repeatable)")
    parser.add_argument(
        "--dry-run", action="store_true", help="only report the oversight verdict; store nothing"
    )
    parser.add_argument("--idempotency-key", metavar="KEY", help="retry-safe request key")


def _wait_seconds(text: str) -> int:
    """``--timeout`` for ``wait``: whole seconds the server may hold the request."""
    try:
        seconds = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of seconds: {text!r}") from None
    if not 1 <= seconds <= WAIT_MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"must be 1 to {WAIT_MAX_SECONDS} seconds, got {seconds}")
    return seconds


def _paging(parser: argparse.ArgumentParser, limit: int) -> None:
    parser.add_argument("--limit", type=int, default=limit, help=f"page size (default {limit})")
    parser.add_argument("--cursor", help="continue from a previous page's next_cursor")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multimail",
        description="MultiMail: email infrastructure for AI agents. Run the server, or "
        "manage mailboxes, mail and oversight on one.",
        epilog="Exit codes: 0 ok, 2 usage, 3 not found, 4 auth, 5 server or connection, "
        "6 conflict, 7 rate limited, 8 invalid request, 1 no email in time (wait) or "
        "anything else, 130 interrupted.",
    )
    _global_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        group: Any, name: str, help: str, handler: Handler | None = None
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = group.add_parser(name, help=help, description=help)
        if handler is not None:
            _global_options(sub, suppress=True)
            sub.set_defaults(handler=handler)
        return sub

    command(commands, "serve", "run the server: HTTP API and delivery worker (see serve --help)")

    mailboxes = command(commands, "mailboxes", "create, list, change and decommission mailboxes")
    actions = mailboxes.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = command(actions, "create", "create a mailbox NAME@domain", cmd_mailboxes_create)
    p.add_argument("name", metavar="NAME", help="local part of the address")
    p.add_argument("--mode", metavar="MODE", help=f"oversight mode: {MODES}")
    p.add_argument("--domain", help="domain (default: the account's subdomain)")
    p.add_argument("--display-name", metavar="NAME", help="display name for From:")
    p.add_argument(
        "--webhook-url",
        metavar="URL",
        help="stored on the mailbox; posting arrives with the webhooks release",
    )
    p.add_argument("--idempotency-key", metavar="KEY", help="retry-safe request key")
    p = command(actions, "list", "list mailboxes", cmd_mailboxes_list)
    _paging(p, 50)
    p = command(actions, "get", "show one mailbox", cmd_mailboxes_get)
    p.add_argument("mailbox_id", metavar="MAILBOX_ID")
    p = command(
        actions, "update", "change mode, display name, webhook or allowlist", cmd_mailboxes_update
    )
    p.add_argument("mailbox_id", metavar="MAILBOX_ID")
    p.add_argument("--mode", metavar="MODE", help=f"oversight mode: {MODES}")
    p.add_argument("--display-name", metavar="NAME")
    p.add_argument(
        "--webhook-url", metavar="URL", help="stored only until the webhooks release; '' removes it"
    )
    p.add_argument(
        "--allowlist", metavar="A,B", help="comma-separated addresses or *@domain ('' clears)"
    )
    p = command(actions, "delete", "decommission a mailbox", cmd_mailboxes_delete)
    p.add_argument("mailbox_id", metavar="MAILBOX_ID")

    p = command(commands, "send", "send an email from a mailbox", cmd_send)
    p.add_argument("mailbox_id", metavar="MAILBOX_ID")
    p.add_argument(
        "--to", action="append", required=True, metavar="ADDR", help="recipient (repeatable)"
    )
    p.add_argument("--subject", required=True)
    p.add_argument("--send-at", metavar="TIME", help="ISO 8601 UTC time to send at")
    _body_options(p)

    p = command(commands, "inbox", "list a mailbox's emails", cmd_inbox)
    p.add_argument("mailbox_id", metavar="MAILBOX_ID")
    p.add_argument(
        "--filter",
        choices=("all", "unread", "requires_action"),
        default="all",
        help="(default all)",
    )
    p.add_argument("--direction", choices=("inbound", "outbound"), help="only one direction")
    _paging(p, 20)

    p = command(commands, "read", "show one email (marks it read)", cmd_read)
    p.add_argument("email_id", metavar="EMAIL_ID")
    p.add_argument("--raw", action="store_true", help="print the RFC 5322 message as stored")

    p = command(commands, "reply", "reply to an email or a thread", cmd_reply)
    p.add_argument("mailbox_id", metavar="MAILBOX_ID")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--email-id", metavar="EMAIL_ID", help="the email to answer")
    target.add_argument("--thread-id", metavar="THREAD_ID", help="answer the thread's latest email")
    _body_options(p)

    p = command(commands, "pending", "list held messages awaiting a decision", cmd_pending)
    _paging(p, 50)
    for action, verb in (("approve", "release"), ("reject", "refuse")):
        p = command(commands, action, f"{verb} a held message", _decide(action))
        p.add_argument("id", metavar="PENDING_ID", help="apr_… (or the message's msg_… id)")
        p.add_argument("--reason", help="recorded in the audit log")

    p = command(commands, "reputation", "reputation of one mailbox, or all of them", cmd_reputation)
    p.add_argument("mailbox_id", metavar="MAILBOX_ID", nargs="?")
    p.add_argument(
        "--sort",
        choices=("reputation_score", "bounce_rate", "complaint_rate", "delivery_rate"),
        default="reputation_score",
        help="(default reputation_score)",
    )
    p.add_argument("--order", choices=("asc", "desc"), help="(default: worst first)")

    keys = command(commands, "keys", "create, list and revoke API keys")
    actions = keys.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = command(actions, "create", "create an API key (shown once)", cmd_keys_create)
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--scopes",
        default="read",
        metavar="S,S",
        help="admin, oversight, send, read (default read)",
    )
    p.add_argument(
        "--mailbox",
        action="append",
        metavar="MAILBOX_ID",
        help="restrict to a mailbox (repeatable)",
    )
    p.add_argument("--idempotency-key", metavar="KEY", help="retry-safe request key")
    command(actions, "list", "list API keys", cmd_keys_list)
    p = command(actions, "revoke", "revoke an API key", cmd_keys_revoke)
    p.add_argument("key_id", metavar="KEY_ID")

    domains = command(commands, "domains", "sending domains")
    actions = domains.add_subparsers(dest="action", metavar="ACTION", required=True)
    command(actions, "list", "list domains and their status", cmd_domains_list)

    p = command(commands, "dns", "the DNS records to publish for DOMAIN (MX, SPF, DMARC, DKIM)",
                cmd_dns)  # fmt: skip
    p.add_argument("domain", metavar="DOMAIN")

    p = command(
        commands,
        "verify",
        "verify a message's DKIM signature and identity claim and name the mailbox that sent "
        "it (exit 0 verified, 1 not); keys come from --server / MULTIMAIL_API_URL, DKIM "
        "records from there or DNS",
        cmd_verify,
    )
    p.add_argument("file", metavar="FILE.eml", help="the message as received ('-' for stdin)")
    p.add_argument("--server", metavar="URL", help="MultiMail server publishing the keys")
    p.add_argument("--no-dkim", action="store_true", help="check the identity claim only")

    audit = command(commands, "audit", "the tamper-evident audit log")
    actions = audit.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = command(actions, "list", "list audit entries", cmd_audit_list)
    _paging(p, 50)
    command(actions, "verify", "check the hash chain (exit 1 if broken)", cmd_audit_verify)

    p = command(
        commands,
        "events",
        "list events in commit order, or --follow them as they happen",
        cmd_events,
    )
    p.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="stream events as they are committed, one line each (JSON lines with --json), "
        "reconnecting if the connection drops; Ctrl-C stops",
    )
    p.add_argument(
        "--after",
        type=int,
        metavar="SEQ",
        help="events after this seq (default: from the start; with --follow, from now)",
    )
    p.add_argument("--mailbox", metavar="MAILBOX_ID", help="one mailbox only")
    p.add_argument("--type", metavar="T,T", help="event types, comma-separated")
    p.add_argument(
        "--limit", type=int, default=100, help="at most this many (default 100; not with --follow)"
    )

    p = command(
        commands,
        "wait",
        "wait for an email to reach a mailbox and print it; exit 1 if none came in time",
        cmd_wait,
    )
    p.add_argument("mailbox_id", metavar="MAILBOX_ID")
    p.add_argument(
        "--timeout",
        type=_wait_seconds,
        default=30,
        metavar="SECONDS",
        help=f"give up after this long, 1 to {WAIT_MAX_SECONDS} (default 30)",
    )
    p.add_argument("--from", dest="sender", metavar="ADDR", help="only email from this sender")
    p.add_argument("--subject", metavar="TEXT", help="only email whose subject contains TEXT")
    p.add_argument(
        "--after",
        metavar="CURSOR",
        help="only email after this point: the cursor a previous wait printed",
    )

    webhooks = command(
        commands, "webhooks", "subscribe URLs to events; inspect and replay deliveries"
    )
    actions = webhooks.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = command(
        actions,
        "create",
        "subscribe URL to events; prints the secret that signs every delivery",
        cmd_webhooks_create,
    )
    p.add_argument("url", metavar="URL", help="where events are POSTed")
    p.add_argument(
        "--events",
        metavar="T,T",
        help="event types, comma-separated, e.g. message.received,oversight.pending "
        "(default: every event)",
    )
    p.add_argument(
        "--mailbox", metavar="MAILBOX_ID", help="only this mailbox's events (default: all)"
    )
    p.add_argument("--idempotency-key", metavar="KEY", help="retry-safe request key")
    command(actions, "list", "list subscriptions (secrets not shown)", cmd_webhooks_list)
    p = command(actions, "get", "show one subscription, with its signing secret", cmd_webhooks_get)
    p.add_argument("webhook_id", metavar="WEBHOOK_ID")
    p = command(
        actions, "delete", "delete a subscription; nothing more is sent", cmd_webhooks_delete
    )
    p.add_argument("webhook_id", metavar="WEBHOOK_ID")
    p = command(
        actions,
        "rotate",
        "issue a new signing secret; the old one stays valid for a while",
        cmd_webhooks_rotate,
    )
    p.add_argument("webhook_id", metavar="WEBHOOK_ID")
    p = command(
        actions,
        "deliveries",
        "the delivery log: each event sent to each URL, attempts and outcome",
        cmd_webhooks_deliveries,
    )
    p.add_argument(
        "--status",
        choices=("pending", "delivered", "failed", "dead"),
        help="only deliveries in this state (dead: retries exhausted)",
    )
    p.add_argument("--webhook", metavar="WEBHOOK_ID", help="only this subscription's deliveries")
    _paging(p, 50)
    p = command(
        actions,
        "replay",
        "send a delivery again (a dead one, say) as a fresh attempt",
        cmd_webhooks_replay,
    )
    p.add_argument("delivery_id", metavar="DELIVERY_ID")

    account = command(commands, "account", "your account")
    actions = account.add_subparsers(dest="action", metavar="ACTION", required=True)
    command(actions, "get", "show the account of the API key", cmd_account_get)
    return parser


# --- entry point ------------------------------------------------------------------------


def _serve_argv(argv: Sequence[str]) -> list[str] | None:
    """The arguments after ``serve`` when the command is ``serve``; they pass through as is."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "serve":
            return list(argv[i + 1 :])
        if arg in _GLOBAL_WITH_VALUE:
            i += 2
        elif arg == "--json" or arg.startswith(tuple(f"{o}=" for o in _GLOBAL_WITH_VALUE)):
            i += 1
        else:
            return None
    return None


def _serve(argv: list[str]) -> int:
    try:
        from multimail.server import serve_main
    except ModuleNotFoundError as exc:
        if exc.name != "multimail.server":
            raise
        print("error: unavailable: this build has no server (multimail.server)", file=sys.stderr)
        return SERVER
    try:
        return serve_main(argv)
    except SystemExit as exc:  # the server's argparse: --help or a bad flag
        if isinstance(exc.code, str):
            print(f"error: usage: {exc.code}", file=sys.stderr)
        return exc.code if isinstance(exc.code, int) else (OK if exc.code is None else USAGE)


def _fail(exc: MultimailAPIError, client: Client | None, as_json: bool) -> int:
    detail = exc.detail
    if isinstance(exc, AuthenticationError) and client is not None and not client.api_key:
        detail += " (no API key: set MULTIMAIL_API_KEY or pass --api-key)"
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        detail += f" (retry after {exc.retry_after}s)"
    if as_json and isinstance(exc.body, dict):
        print(json.dumps(exc.body, indent=2, ensure_ascii=False))
    print(f"error: {exc.code}: {detail}", file=sys.stderr)
    return next((code for cls, code in EXIT_CODES if isinstance(exc, cls)), FAILED)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``multimail`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    serve_argv = _serve_argv(argv)
    if serve_argv is not None:
        return _serve(serve_argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else USAGE
    client: Client | None = None
    try:
        client = Client(api_key=args.api_key, base_url=args.api_url)
        with client:
            return int(args.handler(client, args, Output(args.json)))
    except MultimailAPIError as exc:
        return _fail(exc, client, args.json)
    except UsageError as exc:
        print(f"error: usage: {exc}", file=sys.stderr)
        return USAGE
    except BrokenPipeError:  # `multimail ... | head`
        return FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
