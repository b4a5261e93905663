"""The ``multimail`` command: ``serve`` the server, or talk to one through the SDK.

Rule 1: client subcommands only translate: argv → ``Client`` call(s) → output. No
business rule lives here; the server decides and the CLI reports. Bulk commands
(``mailboxes import``, ``export``) are loops over single calls.
Rule 2: ``--json`` prints the API's JSON unchanged (pretty-printed); otherwise a readable
table or summary. Untrusted text (subjects, bodies) is printed with control characters
made visible, so an email can't drive the terminal.
Rule 3: errors are one line on stderr, ``error: <code>: <detail>``, never a traceback, with
an exit code by kind: 0 ok, 2 usage, 3 not found, 4 auth, 5 server or connection,
6 conflict, 7 rate limited, 8 invalid request, 1 anything else (``wait`` with no email in
time, a broken audit chain); Ctrl-C exits 130.
Rule 4: streamed output (``events --follow``) is one line per event, flushed at once; with
``--json`` one compact JSON object per line.
Rule 5: progress bars go to stderr, only when it is a terminal and never with ``--json``;
stdout carries results only. Files are written only where the user named them, and an
existing file or non-empty directory is replaced only with ``--force``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

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


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 email``, ``3 emails``."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


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

    @contextmanager
    def progress(self, total: int, what: str) -> Iterator[Callable[[], None]]:
        """A bar on stderr for ``total`` steps (when stderr is a terminal and not --json);
        yields the function that advances it by one."""
        if self.as_json or not sys.stderr.isatty():
            yield lambda: None
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        columns = (
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=Console(stderr=True)) as bar:
            task = bar.add_task(what, total=total)
            yield lambda: bar.advance(task)

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


def cmd_mailboxes_allowlist(client: Client, args: argparse.Namespace, out: Output) -> int:
    if args.set is not None and (args.add or args.remove):
        raise UsageError("give --set, or --add/--remove, not both")
    if args.set is not None:
        result = client.set_allowlist(args.mailbox_id, _split(args.set) or [])
    elif args.add or args.remove:
        result = client.set_allowlist(args.mailbox_id, _edited_allowlist(client, args, out))
    else:
        result = client.get_allowlist(args.mailbox_id)
    if out.as_json:
        out.json(result.to_dict())
        return OK
    entries = result.get("entries") or []
    out.line(
        f"allowlist of {safe(result.get('mailbox_id'))}: {count(len(entries), 'entry', 'entries')}"
    )
    for entry in entries:
        out.line(f"  {safe(entry)}")
    return OK


def _edited_allowlist(client: Client, args: argparse.Namespace, out: Output) -> list[str]:
    """The current allowlist with ``--remove`` entries dropped and ``--add`` entries appended."""
    current = [str(e) for e in client.get_allowlist(args.mailbox_id).get("entries") or []]
    removed = {r.casefold() for r in args.remove or []}
    for missing in sorted(removed - {e.casefold() for e in current}):
        out.note(f"not in the allowlist: {safe(missing)}")
    kept = [e for e in current if e.casefold() not in removed]
    known = {e.casefold() for e in kept}
    return kept + [a for a in dict.fromkeys(args.add or []) if a.casefold() not in known]


def cmd_request_upgrade(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.request_upgrade(args.mailbox_id, args.mode)
    if out.as_json:
        out.json(result.to_dict())
    else:
        out.line(
            f"requested {safe(result.get('target_mode'))} for {safe(result.get('mailbox_id'))}: "
            "the operator decides"
        )
        out.note(
            f"an operator grants it with: multimail mailboxes update {safe(args.mailbox_id)} "
            f"--mode {safe(args.mode)}"
        )
    return OK


def cmd_cancel(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.cancel_message(args.email_id)
    if out.as_json:
        out.json(result.to_dict())
    else:
        out.line(f"{safe(result.get('email_id'))} is now {safe(result.get('status'))}")
    return OK


EMAIL_COLUMNS: Sequence[tuple[str, Callable[[Result], object]]] = (
    ("EMAIL_ID", lambda e: e.email_id),
    ("DIR", lambda e: e.get("direction")),
    ("DATE", lambda e: when(e.get("received_at") or e.get("sent_at"))),
    ("FROM", lambda e: e.sender),
    ("SUBJECT", lambda e: e.subject),
    ("STATUS", lambda e: e.status),
)


def cmd_thread(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.get_thread(args.mailbox_id, args.thread_id)
    if not out.as_json:
        out.line(
            f"thread {safe(result.get('thread_id'))}: "
            f"{count(int(result.get('message_count') or 0), 'email')} "
            f"between {safe(result.get('participants'))}"
        )
    out.table(result, "emails", EMAIL_COLUMNS, empty="no emails")
    return OK


def _check_new_file(path: Path, force: bool) -> None:
    """Refuse to replace a file that has content, unless ``--force``."""
    if path.is_dir():
        raise UsageError(f"{path} is a directory")
    if path.exists() and path.stat().st_size > 0 and not force:
        raise UsageError(f"{path} exists: pass --force to overwrite it")


def cmd_attachment(client: Client, args: argparse.Namespace, out: Output) -> int:
    if args.output is None and sys.stdout.isatty():
        raise UsageError("not writing binary data to a terminal: pass -o FILE or redirect stdout")
    target = None if args.output is None else Path(args.output)
    if target is not None:
        _check_new_file(target, args.force)
    data = client.download_attachment(args.email_id, args.attachment_id)
    if target is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return OK
    _write_bytes(target, data)
    if out.as_json:
        out.json(
            {
                "email_id": args.email_id,
                "attachment_id": args.attachment_id,
                "file": str(target),
                "size": len(data),
            }
        )
    else:
        out.line(f"wrote {len(data)} bytes to {target}")
    return OK


def _write_bytes(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None


# tags


def _show_tags(result: Result, out: Output) -> None:
    if out.as_json:
        out.json(result.to_dict())
        return
    tags = result.get("tags") or Result()
    if not len(tags):
        out.line(f"{safe(result.get('email_id'))} has no tags")
    for name in tags:
        out.line(f"{safe(name)}={safe(tags[name])}")


def _tag_pairs(pairs: Sequence[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"tags are NAME=VALUE, got {pair!r}")
        tags[name] = value
    return tags


def cmd_tags_get(client: Client, args: argparse.Namespace, out: Output) -> int:
    _show_tags(client.get_tags(args.email_id), out)
    return OK


def cmd_tags_set(client: Client, args: argparse.Namespace, out: Output) -> int:
    _show_tags(client.set_tags(args.email_id, _tag_pairs(args.tags)), out)
    return OK


def cmd_tags_delete(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = Result()
    for name in dict.fromkeys(args.names):
        result = client.delete_tag(args.email_id, name)
    _show_tags(result, out)
    return OK


# contacts and suppression


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
    if out.as_json:
        out.json(result.to_dict())
    else:
        out.line(f"deleted contact {safe(args.contact_id)}")
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
    if out.as_json:
        out.json(result.to_dict())
    else:
        out.line(f"{safe(args.address)} is no longer suppressed")
    return OK


# account, accounts, usage, health


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
    if out.as_json:
        out.json(result.to_dict())
    else:
        out.line(f"{safe(result.get('status'))}: {safe(client.base_url)}")
    return OK


# bulk import of mailboxes

IMPORT_FIELDS = ("name", "domain", "display_name", "oversight_mode", "webhook_url")
IMPORT_ALIASES = {"mode": "oversight_mode"}
IMPORT_HELP = """\
FILE is CSV with a header row, or JSON Lines (one object per line); '-' reads stdin.
Fields: name (required), domain, display_name, oversight_mode (or mode), webhook_url;
empty values are left out. The file is checked first: an unknown column, a row without
a name, bad JSON or a repeated row exits 2 naming the line, and nothing is created.

Each row is sent with an idempotency key derived from its content, so running the same
file again after a crash or a partial failure creates nothing twice. Rows that fail do
not stop the others; a table (--json: a list) reports each row.

Exit codes: 0 every row created; otherwise the code of the first failed row's kind
(3 not found, 4 auth, 5 server or connection, 6 conflict, 7 rate limited, 8 invalid)."""


@dataclasses.dataclass(frozen=True)
class ImportRow:
    """One mailbox to create: the file line it came from and its non-empty fields."""

    line: int
    fields: dict[str, str]

    @property
    def idempotency_key(self) -> str:
        canonical = json.dumps(self.fields, sort_keys=True, separators=(",", ":"))
        return "import-" + hashlib.sha256(canonical.encode()).hexdigest()


def _field(line: int, column: object) -> str:
    name = str(column).strip()
    name = IMPORT_ALIASES.get(name, name)
    if name not in IMPORT_FIELDS:
        raise UsageError(
            f"line {line}: unknown column {column!r} (known: name, domain, display_name, "
            "oversight_mode or mode, webhook_url)"
        )
    return name


def _import_row(line: int, raw: dict[Any, Any]) -> ImportRow:
    fields: dict[str, str] = {}
    for column, value in raw.items():
        name = _field(line, column)
        if value is not None and not isinstance(value, str):
            raise UsageError(f"line {line}: {column} must be text")
        if value is None or not value.strip():
            continue
        if name in fields:
            raise UsageError(f"line {line}: give oversight_mode or mode, not both")
        fields[name] = value.strip()
    if "name" not in fields:
        raise UsageError(f"line {line}: no name")
    return ImportRow(line, fields)


def _csv_rows(text: str) -> list[ImportRow]:
    reader = csv.DictReader(io.StringIO(text), restkey="\0extra")
    header = [_field(1, column) for column in reader.fieldnames or []]
    if header and "name" not in header:
        raise UsageError("line 1: no name column")
    if len(set(header)) != len(header):
        raise UsageError("line 1: a column appears twice (mode is oversight_mode)")
    rows = []
    for raw in reader:
        if "\0extra" in raw:
            raise UsageError(f"line {reader.line_num}: more cells than the header has")
        rows.append(_import_row(reader.line_num, raw))
    return rows


def _jsonl_rows(text: str) -> list[ImportRow]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"line {number}: not JSON: {exc.msg}") from None
        if not isinstance(raw, dict):
            raise UsageError(f"line {number}: expected a JSON object")
        rows.append(_import_row(number, raw))
    return rows


def _import_format(path: str, text: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    return "jsonl" if text.lstrip().startswith("{") else "csv"


def read_import(path: str, fmt: str | None) -> list[ImportRow]:
    """Every row of an import file, validated; a ``UsageError`` names the first bad line."""
    if path == "-" and (sys.stdin is None or sys.stdin.isatty()):
        raise UsageError("pipe the file on stdin, or name it")
    text = sys.stdin.read() if path == "-" else _read_file(path)
    text = text.removeprefix("\ufeff")
    try:
        rows = (_csv_rows if (fmt or _import_format(path, text)) == "csv" else _jsonl_rows)(text)
    except csv.Error as exc:
        raise UsageError(f"not CSV: {exc}") from None
    except UsageError as exc:
        raise UsageError(f"{'stdin' if path == '-' else path} {exc}") from None
    if not rows:
        raise UsageError(f"{path}: no rows to import")
    seen: dict[str, int] = {}
    for row in rows:
        first = seen.setdefault(row.idempotency_key, row.line)
        if first != row.line:
            raise UsageError(f"{path} line {row.line}: repeats line {first}")
    return rows


T = TypeVar("T")
BULK_RETRIES = 5  # a bulk command waits out this many 429s per call before giving up
BULK_WAIT_CAP = 60  # seconds


def patiently(call: Callable[[], T]) -> T:
    """``call()``, waiting out rate limiting (429, for as long as Retry-After says) a few
    times: bulk commands are expected to reach the limit, and every retried call is
    idempotent (a read, or a create with an idempotency key)."""
    for _ in range(BULK_RETRIES):
        try:
            return call()
        except RateLimited as exc:
            time.sleep(min(exc.retry_after or 1, BULK_WAIT_CAP))
    return call()


def _problem(exc: MultimailAPIError) -> dict[str, Any]:
    return {"status": exc.status, "code": exc.code, "detail": exc.detail}


def _create(client: Client, row: ImportRow) -> Result:
    return patiently(
        lambda: client.create_mailbox(**row.fields, idempotency_key=row.idempotency_key)
    )


def cmd_mailboxes_import(client: Client, args: argparse.Namespace, out: Output) -> int:
    rows = read_import(args.file, args.format)
    report: list[dict[str, Any]] = []
    failures: list[MultimailAPIError] = []
    with out.progress(len(rows), "creating mailboxes") as advance:
        for row in rows:
            entry: dict[str, Any] = {"line": row.line, "row": row.fields}
            try:
                box = _create(client, row)
                entry |= {"status": "created", "mailbox": box.to_dict()}
            except MultimailAPIError as exc:
                failures.append(exc)
                entry |= {"status": "failed", "error": _problem(exc)}
            report.append(entry)
            advance()
    _show_import(report, out)
    if not failures:
        return OK
    first = next(e for e in report if e["status"] == "failed")
    out.note(
        f"error: {failures[0].code}: {len(failures)} of {len(rows)} rows failed "
        f"(first: line {first['line']}: {safe(failures[0].detail)})"
    )
    return exit_code(failures[0])


def _show_import(report: list[dict[str, Any]], out: Output) -> None:
    if out.as_json:
        out.json(report)
        return
    columns: Sequence[tuple[str, Callable[[Result], object]]] = (
        ("LINE", lambda r: r.line),
        ("NAME", lambda r: r.row.name),
        ("RESULT", lambda r: r.status if r.status == "created" else r.error.code),
        ("MAILBOX_ID", lambda r: r.mailbox.mailbox_id if r.status == "created" else None),
        ("ADDRESS", lambda r: r.mailbox.address if r.status == "created" else r.error.detail),
    )
    out.table(Result({"rows": report}), "rows", columns, empty="no rows")
    created = sum(1 for r in report if r["status"] == "created")
    out.line(f"created {created} of {len(report)} mailboxes")


# export


def _all_emails(client: Client, mailbox_id: str) -> list[Result]:
    emails: list[Result] = []
    cursor = None
    while True:
        page = patiently(
            partial(client.check_inbox, mailbox_id, filter="all", limit=100, cursor=cursor)
        )
        emails.extend(page.get("emails") or [])
        cursor = page.get("next_cursor")
        if not cursor:
            return emails


def _raw(client: Client, email: Result) -> bytes:
    return patiently(lambda: client.get_raw_email(email.email_id))


def _oldest_first(emails: list[Result]) -> list[Result]:
    return sorted(
        emails, key=lambda e: (e.get("received_at") or e.get("sent_at") or "", e.email_id)
    )


def _check_new_dir(path: Path, force: bool) -> None:
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} is not a directory")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise UsageError(f"{path} is not empty: pass --force to write into it")


def _eml_name(email_id: object) -> str:
    # Ids are the server's (msg_…); anything else is kept out of the path all the same.
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(email_id)).lstrip(".") + ".eml"


def _export_dir(
    client: Client, emails: list[Result], path: Path, advance: Callable[[], None]
) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with (path / "index.jsonl").open("w", encoding="utf-8") as index:
            for email in emails:
                raw = _raw(client, email)
                (path / _eml_name(email.email_id)).write_bytes(raw)
                index.write(json.dumps(email.to_dict(), ensure_ascii=False) + "\n")
                advance()
    except OSError as exc:
        raise UsageError(f"cannot write {exc.filename or path}: {exc.strerror}") from None


_FROM_LINE = re.compile(rb"^(>*From )", re.MULTILINE)
_ENVELOPE_SENDER = re.compile(r"[!-~]+")


def mbox_entry(raw: bytes, sender: object, date: object) -> bytes:
    """One mboxrd message: a ``From `` separator line, then the message with LF line
    endings and every ``>*From `` line quoted with one more ``>``, then a blank line."""
    text = _FROM_LINE.sub(rb">\1", raw.replace(b"\r\n", b"\n"))
    if not text.endswith(b"\n"):
        text += b"\n"
    who = str(sender) if _ENVELOPE_SENDER.fullmatch(str(sender)) else "MAILER-DAEMON"
    try:
        moment = datetime.fromisoformat(str(date).replace("Z", "+00:00"))
    except ValueError:
        moment = datetime.fromtimestamp(0, tz=UTC)
    separator = f"From {who} {time.asctime(moment.utctimetuple())}\n"
    return separator.encode("ascii") + text + b"\n"


def _export_mbox(
    client: Client, emails: list[Result], path: Path, advance: Callable[[], None]
) -> None:
    partial = path.with_name(path.name + ".part")
    try:
        with partial.open("wb") as mbox:
            for email in emails:
                raw = _raw(client, email)
                date = email.get("received_at") or email.get("sent_at")
                mbox.write(mbox_entry(raw, email.get("sender"), date))
                advance()
        partial.replace(path)
    except OSError as exc:
        raise UsageError(f"cannot write {exc.filename or path}: {exc.strerror}") from None
    finally:
        partial.unlink(missing_ok=True)


def cmd_export(client: Client, args: argparse.Namespace, out: Output) -> int:
    path = Path(args.out if args.out is not None else args.mbox)
    if args.out is not None:
        _check_new_dir(path, args.force)
    else:
        _check_new_file(path, args.force)
    emails = _oldest_first(_all_emails(client, args.mailbox_id))
    write = _export_dir if args.out is not None else _export_mbox
    with out.progress(len(emails), "exporting emails") as advance:
        write(client, emails, path, advance)
    if out.as_json:
        kind = "eml" if args.out is not None else "mbox"
        out.json(
            {
                "mailbox_id": args.mailbox_id,
                "exported": len(emails),
                "format": kind,
                "path": str(path),
            }
        )
    else:
        out.line(f"exported {count(len(emails), 'email')} of {safe(args.mailbox_id)} to {path}")
    return OK


# mcp


def run_mcp(args: argparse.Namespace) -> int:
    """``multimail mcp``: the MCP server on stdin/stdout; it makes its own client."""
    try:
        from multimail.mcp_server import stdio_main
    except ImportError as exc:
        print(f"error: unavailable: this build has no MCP server ({exc})", file=sys.stderr)
        return SERVER
    code = stdio_main(api_url=args.api_url, api_key=args.api_key, mailbox_id=args.mailbox)
    return code if isinstance(code, int) else OK


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
    _idempotency(parser)


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


def _idempotency(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--idempotency-key", metavar="KEY", help="retry-safe request key")


def _mailbox_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mailbox_id", metavar="MAILBOX_ID", help="the mailbox (mbx_…)")


def _email_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("email_id", metavar="EMAIL_ID", help="the email (msg_…)")


def _command(
    group: Any,
    name: str,
    help: str,
    handler: Handler | None = None,
    *,
    run: Callable[[argparse.Namespace], int] | None = None,
    epilog: str | None = None,
) -> argparse.ArgumentParser:
    """A subcommand; with a ``handler`` (SDK call) or ``run`` (no client) it is a leaf."""
    sub: argparse.ArgumentParser = group.add_parser(
        name,
        help=help,
        description=help,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter if epilog else argparse.HelpFormatter,
    )
    if handler is not None or run is not None:
        _global_options(sub, suppress=True)
        sub.set_defaults(handler=handler, run=run)
    return sub


def _actions(parser: argparse.ArgumentParser) -> Any:
    return parser.add_subparsers(dest="action", metavar="ACTION", required=True)


def _add_mailboxes(commands: Any) -> None:
    actions = _actions(
        _command(commands, "mailboxes", "create, import, list, change and decommission mailboxes")
    )
    p = _command(actions, "create", "create a mailbox NAME@domain", cmd_mailboxes_create)
    p.add_argument("name", metavar="NAME", help="local part of the address")
    p.add_argument("--mode", metavar="MODE", help=f"oversight mode: {MODES}")
    p.add_argument("--domain", help="domain (default: the account's subdomain)")
    p.add_argument("--display-name", metavar="NAME", help="display name for From:")
    p.add_argument(
        "--webhook-url",
        metavar="URL",
        help="stored on the mailbox; posting arrives with the webhooks release",
    )
    _idempotency(p)
    p = _command(
        actions,
        "import",
        "create many mailboxes from a CSV or JSON Lines file, with a progress bar",
        cmd_mailboxes_import,
        epilog=IMPORT_HELP,
    )
    p.add_argument("file", metavar="FILE", help="CSV or JSON Lines file ('-' for stdin)")
    p.add_argument(
        "--format", choices=("csv", "jsonl"), help="(default: from the file name or its content)"
    )
    p = _command(actions, "list", "list mailboxes", cmd_mailboxes_list)
    _paging(p, 50)
    p = _command(actions, "get", "show one mailbox", cmd_mailboxes_get)
    _mailbox_arg(p)
    p = _command(
        actions, "update", "change mode, display name, webhook or allowlist", cmd_mailboxes_update
    )
    _mailbox_arg(p)
    p.add_argument("--mode", metavar="MODE", help=f"oversight mode: {MODES}")
    p.add_argument("--display-name", metavar="NAME", help="display name for From:")
    p.add_argument(
        "--webhook-url", metavar="URL", help="stored only until the webhooks release; '' removes it"
    )
    p.add_argument(
        "--allowlist", metavar="A,B", help="comma-separated addresses or *@domain ('' clears)"
    )
    p = _command(
        actions,
        "allowlist",
        "show or change the addresses (or *@domain) a gated_send mailbox may send to "
        "without review",
        cmd_mailboxes_allowlist,
    )
    _mailbox_arg(p)
    p.add_argument("--set", metavar="A,B", help="replace the list ('' clears it)")
    p.add_argument("--add", action="append", metavar="ADDR", help="add an entry (repeatable)")
    p.add_argument("--remove", action="append", metavar="ADDR", help="remove an entry (repeatable)")
    p = _command(actions, "delete", "decommission a mailbox", cmd_mailboxes_delete)
    _mailbox_arg(p)

    p = _command(
        commands,
        "request-upgrade",
        "ask the operator to raise a mailbox's oversight mode (an agent cannot raise its own)",
        cmd_request_upgrade,
    )
    _mailbox_arg(p)
    p.add_argument("mode", metavar="MODE", help=f"the mode asked for: {MODES}")


def _add_mail(commands: Any) -> None:
    p = _command(commands, "send", "send an email from a mailbox", cmd_send)
    _mailbox_arg(p)
    p.add_argument(
        "--to", action="append", required=True, metavar="ADDR", help="recipient (repeatable)"
    )
    p.add_argument("--subject", required=True, help="subject line")
    p.add_argument("--send-at", metavar="TIME", help="ISO 8601 UTC time to send at")
    _body_options(p)

    p = _command(commands, "inbox", "list a mailbox's emails", cmd_inbox)
    _mailbox_arg(p)
    p.add_argument(
        "--filter",
        choices=("all", "unread", "requires_action"),
        default="all",
        help="(default all)",
    )
    p.add_argument("--direction", choices=("inbound", "outbound"), help="only one direction")
    _paging(p, 20)

    p = _command(commands, "read", "show one email (marks it read)", cmd_read)
    _email_arg(p)
    p.add_argument("--raw", action="store_true", help="print the RFC 5322 message as stored")

    p = _command(commands, "thread", "list the emails of one thread, oldest first", cmd_thread)
    _mailbox_arg(p)
    p.add_argument("thread_id", metavar="THREAD_ID", help="the thread (thr_…)")

    p = _command(
        commands,
        "attachment",
        "download one attachment of an email (to -o FILE or redirected stdout)",
        cmd_attachment,
    )
    _email_arg(p)
    p.add_argument("attachment_id", metavar="ATTACHMENT_ID", help="from `multimail read`")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")

    p = _command(commands, "reply", "reply to an email or a thread", cmd_reply)
    _mailbox_arg(p)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--email-id", metavar="EMAIL_ID", help="the email to answer")
    target.add_argument("--thread-id", metavar="THREAD_ID", help="answer the thread's latest email")
    _body_options(p)

    p = _command(
        commands, "cancel", "cancel an outbound email that has not been sent yet", cmd_cancel
    )
    _email_arg(p)

    actions = _actions(_command(commands, "tags", "name=value labels on an email"))
    p = _command(actions, "get", "show an email's tags", cmd_tags_get)
    _email_arg(p)
    p = _command(actions, "set", "replace an email's tags with these", cmd_tags_set)
    _email_arg(p)
    p.add_argument("tags", nargs="+", metavar="NAME=VALUE", help="the tags it will have")
    p = _command(actions, "delete", "remove tags from an email", cmd_tags_delete)
    _email_arg(p)
    p.add_argument("names", nargs="+", metavar="NAME", help="tags to remove")

    p = _command(
        commands,
        "export",
        "download every email of a mailbox as .eml files plus index.jsonl, or one mbox file, "
        "with a progress bar",
        cmd_export,
    )
    _mailbox_arg(p)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", metavar="DIR", help="write DIR/<email_id>.eml and DIR/index.jsonl")
    where.add_argument("--mbox", metavar="FILE", help="write one mbox file (mboxrd quoting)")
    p.add_argument(
        "--force", action="store_true", help="write into a non-empty DIR or over an existing FILE"
    )


def _add_oversight(commands: Any) -> None:
    p = _command(commands, "pending", "list held messages awaiting a decision", cmd_pending)
    _paging(p, 50)
    for action, verb in (("approve", "release"), ("reject", "refuse")):
        p = _command(commands, action, f"{verb} a held message", _decide(action))
        p.add_argument("id", metavar="PENDING_ID", help="apr_… (or the message's msg_… id)")
        p.add_argument("--reason", help="recorded in the audit log")

    p = _command(
        commands, "reputation", "reputation of one mailbox, or all of them", cmd_reputation
    )
    p.add_argument("mailbox_id", metavar="MAILBOX_ID", nargs="?", help="one mailbox (default all)")
    p.add_argument(
        "--sort",
        choices=("reputation_score", "bounce_rate", "complaint_rate", "delivery_rate"),
        default="reputation_score",
        help="(default reputation_score)",
    )
    p.add_argument("--order", choices=("asc", "desc"), help="(default: worst first)")

    p = _command(
        commands,
        "wait",
        "wait for an email to reach a mailbox and print it; exit 1 if none came in time",
        cmd_wait,
    )
    _mailbox_arg(p)
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


def _add_account(commands: Any) -> None:
    actions = _actions(_command(commands, "keys", "create, list and revoke API keys"))
    p = _command(actions, "create", "create an API key (shown once)", cmd_keys_create)
    p.add_argument("name", metavar="NAME", help="a label for the key")
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
    _idempotency(p)
    _command(actions, "list", "list API keys", cmd_keys_list)
    p = _command(actions, "revoke", "revoke an API key", cmd_keys_revoke)
    p.add_argument("key_id", metavar="KEY_ID", help="the key's id (from keys list)")

    actions = _actions(_command(commands, "account", "your account"))
    _command(actions, "get", "show the account of the API key", cmd_account_get)
    p = _command(actions, "update", "change the account's name, overseer or default mode",
                 cmd_account_update)  # fmt: skip
    p.add_argument("--name", help="the account's name")
    p.add_argument(
        "--oversight-email", metavar="ADDR", help="where approval requests and notices go"
    )
    p.add_argument("--default-mode", metavar="MODE", help=f"for new mailboxes: {MODES}")

    actions = _actions(_command(commands, "accounts", "tenants of this server (server-admin key)"))
    p = _command(
        actions,
        "create",
        "create an account; prints its admin API key once",
        cmd_accounts_create,
    )
    p.add_argument("name", metavar="NAME", help="the account's name")
    p.add_argument("--oversight-email", metavar="ADDR", help="the account's overseer")
    p.add_argument("--slug", help="subdomain label (default: from NAME)")
    _idempotency(p)

    _command(commands, "usage", "counts of the account's sent, received and held email", cmd_usage)


def _add_lists(commands: Any) -> None:
    actions = _actions(_command(commands, "contacts", "the account's address book"))
    p = _command(actions, "list", "list contacts", cmd_contacts_list)
    p.add_argument("--query", metavar="Q", help="only contacts whose address or name matches")
    _paging(p, 100)
    p = _command(actions, "add", "add a contact", cmd_contacts_add)
    p.add_argument("email", metavar="EMAIL", help="the contact's address")
    p.add_argument("--name", help="the contact's name")
    p.add_argument("--tag", action="append", metavar="TAG", help="a label (repeatable)")
    _idempotency(p)
    p = _command(actions, "delete", "delete a contact", cmd_contacts_delete)
    p.add_argument("contact_id", metavar="CONTACT_ID", help="from contacts list")

    actions = _actions(
        _command(commands, "suppression", "addresses no mailbox of the account sends to")
    )
    p = _command(actions, "list", "list suppressed addresses", cmd_suppression_list)
    _paging(p, 100)
    p = _command(actions, "add", "stop all sending to an address", cmd_suppression_add)
    p.add_argument("address", metavar="ADDRESS", help="the address to suppress")
    p.add_argument("--reason", help="why (default manual)")
    p = _command(actions, "remove", "allow sending to an address again", cmd_suppression_remove)
    p.add_argument("address", metavar="ADDRESS", help="a suppressed address")


def _add_domains_and_audit(commands: Any) -> None:
    actions = _actions(_command(commands, "domains", "sending domains"))
    _command(actions, "list", "list domains and their status", cmd_domains_list)

    p = _command(commands, "dns", "the DNS records to publish for DOMAIN (MX, SPF, DMARC, DKIM)",
                 cmd_dns)  # fmt: skip
    p.add_argument("domain", metavar="DOMAIN", help="one of the account's domains")

    p = _command(
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

    actions = _actions(_command(commands, "audit", "the tamper-evident audit log"))
    p = _command(actions, "list", "list audit entries", cmd_audit_list)
    _paging(p, 50)
    _command(actions, "verify", "check the hash chain (exit 1 if broken)", cmd_audit_verify)

    p = _command(
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


def _add_webhooks(commands: Any) -> None:
    actions = _actions(
        _command(commands, "webhooks", "subscribe URLs to events; inspect and replay deliveries")
    )
    p = _command(
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
    _idempotency(p)
    _command(actions, "list", "list subscriptions (secrets not shown)", cmd_webhooks_list)
    for name, help, handler in (
        ("get", "show one subscription, with its signing secret", cmd_webhooks_get),
        ("delete", "delete a subscription; nothing more is sent", cmd_webhooks_delete),
        (
            "rotate",
            "issue a new signing secret; the old one stays valid for a while",
            cmd_webhooks_rotate,
        ),
    ):
        p = _command(actions, name, help, handler)
        p.add_argument("webhook_id", metavar="WEBHOOK_ID", help="the subscription (from list)")
    p = _command(
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
    p = _command(
        actions,
        "replay",
        "send a delivery again (a dead one, say) as a fresh attempt",
        cmd_webhooks_replay,
    )
    p.add_argument("delivery_id", metavar="DELIVERY_ID", help="from webhooks deliveries")


def _add_processes(commands: Any) -> None:
    _command(commands, "serve", "run the server: HTTP API and delivery worker (see serve --help)")
    p = _command(
        commands,
        "mcp",
        "run the MCP server over stdio for an agent (env MULTIMAIL_API_URL, MULTIMAIL_API_KEY, "
        "MULTIMAIL_MAILBOX_ID)",
        run=run_mcp,
    )
    p.add_argument(
        "--mailbox",
        metavar="MAILBOX_ID",
        help="the agent's mailbox (default: $MULTIMAIL_MAILBOX_ID)",
    )
    _command(commands, "health", "check that the server is up (no key needed)", cmd_health)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multimail",
        description="MultiMail: email infrastructure for AI agents. Run the server, or "
        "manage mailboxes, mail and oversight on one.",
        epilog="Exit codes: 0 ok, 2 usage, 3 not found, 4 auth, 5 server or connection, "
        "6 conflict, 7 rate limited, 8 invalid request, 1 no email in time (wait) or "
        "anything else, 130 interrupted. `mailboxes import` exits with the code of its "
        "first failed row.",
    )
    _global_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_processes(commands)
    _add_mailboxes(commands)
    _add_mail(commands)
    _add_oversight(commands)
    _add_account(commands)
    _add_lists(commands)
    _add_domains_and_audit(commands)
    _add_webhooks(commands)
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


def exit_code(exc: MultimailAPIError) -> int:
    """The exit code for an API error's kind (1 for a kind without its own code)."""
    return next((code for cls, code in EXIT_CODES if isinstance(exc, cls)), FAILED)


def _fail(exc: MultimailAPIError, client: Client | None, as_json: bool) -> int:
    detail = exc.detail
    if isinstance(exc, AuthenticationError) and client is not None and not client.api_key:
        detail += " (no API key: set MULTIMAIL_API_KEY or pass --api-key)"
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        detail += f" (retry after {exc.retry_after}s)"
    if as_json and isinstance(exc.body, dict):
        print(json.dumps(exc.body, indent=2, ensure_ascii=False))
    print(f"error: {exc.code}: {detail}", file=sys.stderr)
    return exit_code(exc)


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
        if args.run is not None:  # a process of its own (mcp): it makes its own client
            return int(args.run(args))
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
