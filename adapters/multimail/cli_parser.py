"""The ``multimail`` command line: every subcommand, its arguments and its handler.

Rule 1: declarations only: each leaf subcommand names a ``handler`` (SDK calls, given a
``Client``) or a ``run`` (a process that makes its own client); nothing is called here.
Rule 2: ``--json``, ``--api-url`` and ``--api-key`` are accepted before or after the
subcommand; after it they default to "not given", so a value before it is kept.
Rule 3: a subcommand's one-line help is also its description; the top-level help lists the
exit codes.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from multimail.cli_admin import (
    EVENTS_PAGE,
    cmd_account_get,
    cmd_account_update,
    cmd_accounts_create,
    cmd_audit_list,
    cmd_audit_verify,
    cmd_contacts_add,
    cmd_contacts_delete,
    cmd_contacts_list,
    cmd_dns,
    cmd_domains_list,
    cmd_events,
    cmd_health,
    cmd_keys_create,
    cmd_keys_list,
    cmd_keys_revoke,
    cmd_suppression_add,
    cmd_suppression_list,
    cmd_suppression_remove,
    cmd_usage,
    cmd_verify,
    cmd_webhooks_create,
    cmd_webhooks_delete,
    cmd_webhooks_deliveries,
    cmd_webhooks_get,
    cmd_webhooks_list,
    cmd_webhooks_replay,
    cmd_webhooks_rotate,
    run_mcp,
)
from multimail.cli_bulk import IMPORT_HELP, cmd_export, cmd_mailboxes_import
from multimail.cli_mail import (
    cmd_attachment,
    cmd_cancel,
    cmd_inbox,
    cmd_mailboxes_allowlist,
    cmd_mailboxes_create,
    cmd_mailboxes_delete,
    cmd_mailboxes_get,
    cmd_mailboxes_list,
    cmd_mailboxes_update,
    cmd_pending,
    cmd_read,
    cmd_reply,
    cmd_reputation,
    cmd_request_upgrade,
    cmd_send,
    cmd_tags_delete,
    cmd_tags_get,
    cmd_tags_set,
    cmd_thread,
    cmd_wait,
    decide,
)
from multimail.cli_output import Handler
from multimail.client import WAIT_MAX_SECONDS

MODES = "read_only, gated_all, gated_send, monitored or autonomous"
_GLOBAL_WITH_VALUE = ("--api-url", "--api-key")


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool, json: bool = True) -> None:
    """--json/--api-url/--api-key, accepted before or after the subcommand (``json=False``:
    a process that prints no results of its own, like ``mcp``, takes no --json)."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    if json:
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
    body.add_argument(
        "--markdown",
        metavar="FILE",
        help="read a Markdown body from FILE ('-' = stdin); the server makes the text and "
        "HTML parts from it",
    )
    parser.add_argument("--html", metavar="FILE", help="HTML alternative read from FILE")
    parser.add_argument(
        "--attach",
        action="append",
        metavar="FILE",
        help="attach FILE (repeatable; its type is guessed from the name; at most 20 files, "
        "7 MiB together)",
    )
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
        _global_options(sub, suppress=True, json=run is None)
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
    p.add_argument(
        "--raw",
        action="store_true",
        help="print the RFC 5322 message as stored (to a redirected stdout, not a terminal)",
    )

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
    p.add_argument(
        "-o", "--output", metavar="FILE", help="write to FILE instead of stdout ('-' = stdout)"
    )
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
    where.add_argument(
        "--out",
        metavar="DIR",
        help="write DIR/<email_id>.eml, then DIR/index.jsonl last: a DIR without index.jsonl "
        "holds an interrupted export",
    )
    where.add_argument(
        "--mbox",
        metavar="FILE",
        help="write one mbox file (mboxrd quoting), complete or not at all; '-' writes it to "
        "stdout (the summary then goes to stderr)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing FILE, or a previous export in DIR (its <email_id>.eml files "
        "and index.jsonl; a DIR holding other files is refused)",
    )


def _add_oversight(commands: Any) -> None:
    p = _command(commands, "pending", "list held messages awaiting a decision", cmd_pending)
    _paging(p, 50)
    for action, verb in (("approve", "release"), ("reject", "refuse")):
        p = _command(commands, action, f"{verb} a held message", decide(action))
        p.add_argument("id", metavar="PENDING_ID", help="apr_… (or the message's msg_… id)")
        p.add_argument("--reason", help="recorded in the audit log")
        if action == "approve":
            p.add_argument("--edit-subject", metavar="TEXT", help="send it with this subject")
            p.add_argument(
                "--edit-body", metavar="FILE", help="send it with the plain-text body in FILE"
            )
            p.add_argument("--edit-html", metavar="FILE", help="send it with the HTML body in FILE")

    p = _command(
        commands, "reputation", "reputation of one mailbox, or all of them", cmd_reputation
    )
    p.add_argument("mailbox_id", metavar="MAILBOX_ID", nargs="?", help="one mailbox (default all)")
    p.add_argument(
        "--sort",
        choices=("reputation_score", "bounce_rate", "complaint_rate", "delivery_rate"),
        help="order the list of all mailboxes by this (default reputation_score)",
    )
    p.add_argument(
        "--order", choices=("asc", "desc"), help="of the list of all (default: worst first)"
    )

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
    p = _command(actions, "list", "list API keys", cmd_keys_list)
    _paging(p, 100)
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
        "--limit",
        type=int,
        help=f"at most this many (default {EVENTS_PAGE}; not with --follow)",
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
        choices=("pending", "delivering", "delivered", "dead"),
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
