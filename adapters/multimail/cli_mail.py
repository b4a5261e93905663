"""``multimail`` commands for mailboxes, their mail and its oversight: one SDK call each.

Rule 1: a handler only translates: argv → ``Client`` call → output. The server decides
(oversight verdicts, holds, modes); the handler reports what it answered, and a held
message is reported as pending with the command that approves it.
Rule 2: a body comes from ``--body``, ``--body-file``, ``--markdown`` or piped stdin, never
from an interactive terminal unless named (``-``); bytes from an email (an attachment, a raw
message) go to ``-o FILE`` or a redirected stdout, never to a terminal.
Rule 3: untrusted text (subjects, senders, bodies, tags) is shown through ``safe``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from multimail.cli_output import (
    FAILED,
    OK,
    Handler,
    Output,
    UsageError,
    check_new_file,
    check_not_terminal,
    count,
    read_file,
    safe,
    split_list,
    when,
    write_bytes,
)
from multimail.client import Client, Result
from multimail.client import attachment as file_entry

# --- reading a message to send ----------------------------------------------------------


def _read_text(path: str | None) -> str:
    """FILE's text; ``-`` reads stdin; no FILE reads stdin only when it is piped."""
    if path not in (None, "-"):
        return read_file(path)
    if sys.stdin is None or (path is None and sys.stdin.isatty()):
        raise UsageError(
            "give --body TEXT, --body-file FILE, --markdown FILE, or pipe the body on stdin"
        )
    return sys.stdin.read()


def _read_body(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """``(body_text, markdown)``: one of them, from the options or piped stdin."""
    if args.markdown is not None:
        return None, _read_text(args.markdown)
    if args.body is not None:
        return str(args.body), None
    return _read_text(args.body_file), None


def _read_html(args: argparse.Namespace) -> str | None:
    return None if args.html is None else read_file(args.html)


def _attachments(args: argparse.Namespace) -> list[dict[str, str]] | None:
    """``--attach FILE``s as the API's attachments (named after the file, type guessed)."""
    if not args.attach:
        return None
    files = []
    for name in args.attach:
        try:
            data = Path(name).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {name}: {exc.strerror}") from None
        files.append(file_entry(Path(name).name, data))
    return files


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


# --- mailboxes --------------------------------------------------------------------------


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
        fields["allowlist"] = split_list(args.allowlist)
    if not fields:
        raise UsageError(
            "nothing to update: give --mode, --display-name, --webhook-url or --allowlist"
        )
    out.record(client.update_mailbox(args.mailbox_id, **fields))
    return OK


def cmd_mailboxes_delete(client: Client, args: argparse.Namespace, out: Output) -> int:
    out.record(client.delete_mailbox(args.mailbox_id))
    return OK


def cmd_mailboxes_allowlist(client: Client, args: argparse.Namespace, out: Output) -> int:
    if args.set is not None and (args.add or args.remove):
        raise UsageError("give --set, or --add/--remove, not both")
    if args.set is not None:
        result = client.set_allowlist(args.mailbox_id, split_list(args.set) or [])
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


# --- mail -------------------------------------------------------------------------------


def _message_fields(args: argparse.Namespace) -> dict[str, Any]:
    """What the body options (cli_parser._body_options) give send and reply alike."""
    body, markdown = _read_body(args)
    return {
        "body_text": body,
        "body_html": _read_html(args),
        "markdown": markdown,
        "cc": args.cc,
        "bcc": args.bcc,
        "attachments": _attachments(args),
        "dry_run": args.dry_run,
        "idempotency_key": args.idempotency_key,
    }


def cmd_send(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.send_email(
        args.mailbox_id,
        to=args.to,
        subject=args.subject,
        send_at=args.send_at,
        **_message_fields(args),
    )
    return _sent(result, out)


def cmd_reply(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.reply_email(
        args.mailbox_id, email_id=args.email_id, thread_id=args.thread_id, **_message_fields(args)
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
        if out.as_json:
            raise UsageError("--raw prints the message as stored, not JSON: drop one of them")
        check_not_terminal("a raw message", "redirect stdout, or read it without --raw")
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
    """Headers, attachments and the text body of one email, for a person: from the email
    view (``sender``, ``body_text``) or the payload ``wait`` answers with (``from``,
    ``from_name``, ``text``)."""
    address = email.get("sender") or email.get("from")
    name = email.get("from_name")
    body = email.get("body_text") if "body_text" in email else email.get("text")
    head = [
        ("From", f"{name} <{address}>" if name and address else address),
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
    out.line(safe(body or ""))


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


def cmd_cancel(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.cancel_message(args.email_id)
    out.done(result, f"{safe(result.get('email_id'))} is now {safe(result.get('status'))}")
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


def cmd_attachment(client: Client, args: argparse.Namespace, out: Output) -> int:
    target = None if args.output in (None, "-") else Path(args.output)
    if target is None:
        check_not_terminal("binary data", "pass -o FILE or redirect stdout")
    else:
        check_new_file(target, args.force)
    data = client.download_attachment(args.email_id, args.attachment_id)
    if target is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return OK
    write_bytes(target, data)
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


# --- tags -------------------------------------------------------------------------------


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


# --- oversight --------------------------------------------------------------------------


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


def _edits(args: argparse.Namespace) -> dict[str, str] | None:
    """``approve --edit-subject/--edit-body/--edit-html`` as the API's ``edits``."""
    edits: dict[str, str] = {}
    if args.edit_subject is not None:
        edits["subject"] = args.edit_subject
    if args.edit_body is not None:
        edits["body_text"] = read_file(args.edit_body)
    if args.edit_html is not None:
        edits["body_html"] = read_file(args.edit_html)
    return edits or None


def decide(action: str) -> Handler:
    def handler(client: Client, args: argparse.Namespace, out: Output) -> int:
        # A held message may be named by its approval (apr_…) or by the message (msg_…).
        by_email = args.id.startswith("msg_")
        result = client.decide_email(
            pending_id=None if by_email else args.id,
            email_id=args.id if by_email else None,
            action=action,
            reason=args.reason,
            edits=_edits(args) if action == "approve" else None,  # only approve has --edit-*
        )
        if out.as_json:
            out.json(result.to_dict())
        else:
            edited = " with edits" if result.get("edited") else ""
            out.line(
                f"{safe(result.status)} {safe(result.pending_id)}{edited}: message "
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
    ordering = {k: v for k, v in (("sort", args.sort), ("order", args.order)) if v is not None}
    if args.mailbox_id:
        if ordering:
            raise UsageError("--sort and --order order the list of all mailboxes: not with one")
        out.record(client.get_reputation(args.mailbox_id))
    else:
        result = client.list_reputation(**ordering)
        out.table(result, "mailboxes", REPUTATION_COLUMNS, empty="no mailboxes")
    return OK
