"""The rest of the ``multimail`` CLI end to end: every command exists, explains itself, and
does what it says to a real embedded server, as a real subprocess.

Rule 1: every leaf of the parser appears in some ``test_cli*.py`` call (found by reading the
        test sources), so a new command without a test fails here.
Rule 2: effects are checked through a second path (the SDK, or another command), not by
        trusting the command's own output.
"""

from __future__ import annotations

import argparse
import ast
import json
import mailbox
import os
import re
import smtplib
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from multimail import cli_bulk
from multimail.cli import _GLOBAL_WITH_VALUE, build_parser, mbox_entry
from multimail.client import RateLimited
from tests.e2e.cli_env import Env, embedded_cli, fake_api, unique, wait_for

HERE = Path(__file__).parent
RUNNERS = {"run", "ok", "json", "fails", "raw", "run_on_tty"}
PAYLOAD = bytes(range(256)) * 4  # every byte value, NUL and 0xff included


@pytest.fixture(scope="module")
def cli() -> Iterator[Env]:
    with embedded_cli(webhook_allow_private=True) as env:
        yield env


# --- every command: tested, explained ----------------------------------------------------


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    children = _subcommands(parser)
    if not children:
        yield path, parser
    for name, child in children.items():
        yield from leaves(child, (*path, name))


def _command_path(call: ast.Call, commands: dict[str, argparse.ArgumentParser]) -> tuple[str, ...]:
    """The (command, action) a runner call in a test invokes, read from its literal args."""
    words: list[str] = []
    skip = False
    for arg in call.args:
        if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
            if words:
                break
            skip = False
            continue  # `fails(3, ...)`: the expected exit code, or a global option's value
        if skip:
            skip = False
        elif arg.value.startswith("-") and not words:
            skip = arg.value in _GLOBAL_WITH_VALUE
        else:
            words.append(arg.value)
            command = commands.get(words[0])
            if len(words) == 2 or command is None or not _subcommands(command):
                break
    return tuple(words[:2]) if words and words[0] in commands else ()


def exercised() -> set[tuple[str, ...]]:
    commands = _subcommands(build_parser())
    found: set[tuple[str, ...]] = set()
    for source in sorted(HERE.glob("test_cli*.py")):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in RUNNERS:
                    found.add(_command_path(node, commands))
    return found


def test_every_command_is_run_by_some_cli_test() -> None:
    every = {path for path, _ in leaves(build_parser())}
    assert len(every) > 40
    untested = every - exercised()
    assert not untested, f"commands without a test in tests/e2e/test_cli*.py: {sorted(untested)}"


def test_every_command_explains_what_it_does_and_each_argument() -> None:
    parser = build_parser()
    assert "Exit codes: 0 ok, 2 usage, 3 not found, 4 auth" in parser.format_help()
    for path, leaf in leaves(parser):
        assert leaf.description, path
        for action in leaf._actions:
            assert action.help, (path, action.dest)


def test_process_commands_answer_help(cli: Env) -> None:
    assert "MULTIMAIL_MAILBOX_ID" in cli.ok("mcp", "--help")
    assert "--json" not in cli.ok("mcp", "--help")  # it prints no results of its own
    assert "--http" in cli.ok("serve", "--help")
    assert "Exit codes: 0 every row created" in cli.ok("mailboxes", "import", "--help")


# --- health, usage, account, accounts ---------------------------------------------------


def test_health_usage_and_the_account(cli: Env) -> None:
    assert cli.ok("health", key="").startswith("ok: http://127.0.0.1:")
    assert cli.json("health", key="") == {"status": "ok"}
    cli.fails(5, "health", url="http://127.0.0.1:9")

    usage = cli.json("usage")
    assert usage["mailboxes_created"] >= 0
    assert "emails_sent" in cli.ok("usage")

    before = cli.json("account", "get")
    renamed = cli.json("account", "update", "--name", "Renamed by the CLI")
    assert renamed["name"] == "Renamed by the CLI"
    assert cli.json("account", "get")["name"] == "Renamed by the CLI"
    out = cli.ok("account", "update", "--default-mode", before["default_oversight_mode"])
    assert before["default_oversight_mode"] in out
    assert cli.fails(2, "account", "update").startswith("error: usage: nothing to update")
    cli.fails(8, "account", "update", "--default-mode", "yolo")
    cli.fails(4, "account", "update", "--name", "x", key=cli.reviewer_key)


def test_accounts_create_needs_the_server_admin_key(cli: Env) -> None:
    slug = unique("tenant")[:32].strip("-")
    created = cli.json("accounts", "create", "Tenant", "--slug", slug)
    assert created["slug"] == slug
    assert created["api_key"].startswith("mm_live_")
    own = cli.json("account", "get", key=created["api_key"])
    assert own["account_id"] == created["account_id"] != cli.json("account", "get")["account_id"]
    # The tenant's own admin key is not the server's: it may not create accounts.
    cli.fails(4, "accounts", "create", "Other", key=created["api_key"])
    cli.fails(6, "accounts", "create", "Again", "--slug", slug)


# --- mailboxes: allowlist, request-upgrade ----------------------------------------------


def test_allowlist_show_set_add_remove(cli: Env) -> None:
    mid = cli.mailbox("gated_send")["mailbox_id"]
    assert f"allowlist of {mid}: 0 entries" in cli.ok("mailboxes", "allowlist", mid)
    got = cli.json("mailboxes", "allowlist", mid, "--set", "a@x.test,*@y.test")
    assert got == {"mailbox_id": mid, "entries": ["*@y.test", "a@x.test"]}
    out = cli.ok("mailboxes", "allowlist", mid, "--add", "b@x.test", "--remove", "a@x.test")
    assert "2 entries" in out
    assert "b@x.test" in out
    assert sorted(cli.mm.client.get_allowlist(mid).entries) == ["*@y.test", "b@x.test"]
    assert cli.json("mailboxes", "allowlist", mid, "--set", "")["entries"] == []
    cli.fails(2, "mailboxes", "allowlist", mid, "--set", "a@x.test", "--add", "b@x.test")
    cli.fails(3, "mailboxes", "allowlist", "mbx_01AAAAAAAAAAAAAAAAAAAAAAAA")


def test_request_upgrade_is_recorded_for_the_operator(cli: Env) -> None:
    box = cli.mailbox("gated_all")
    mid = box["mailbox_id"]
    agent = cli.json("keys", "create", "agent", "--scopes", "read,send", "--mailbox", mid)
    out = cli.ok("request-upgrade", mid, "monitored", key=agent["api_key"])
    assert out.startswith(f"requested monitored for {mid}")
    asked = cli.json("request-upgrade", mid, "autonomous", key=agent["api_key"])
    assert asked["status"] == "upgrade_requested"
    assert cli.mm.client.get_mailbox(mid).oversight_mode == "gated_all"  # only asked
    entries = cli.mm.client.get_audit_log(limit=100).entries
    assert any(e.action == "mailbox.request_upgrade" and e.resource_id == mid for e in entries)
    line = cli.fails(8, "request-upgrade", mid, "read_only", key=agent["api_key"])
    assert line.startswith("error: invalid_value: ")


# --- mail: cancel, thread, attachment, tags ---------------------------------------------


def test_cancel_a_scheduled_email(cli: Env) -> None:
    box = cli.mailbox("autonomous")
    sent = cli.json(
        "send", box["mailbox_id"], "--to", "later@example.com", "--subject", "Later",
        "--body", "x", "--send-at", "2099-01-01T00:00:00Z",
    )  # fmt: skip
    assert sent["status"] == "scheduled"
    mid = sent["message_id"]
    assert cli.ok("cancel", mid) == f"{mid} is now cancelled\n"
    assert cli.mm.client.read_email(mid).status == "cancelled"
    cli.fails(6, "cancel", mid)
    cli.fails(3, "cancel", "msg_01AAAAAAAAAAAAAAAAAAAAAAAA")


def test_send_and_reply_attach_files(cli: Env, tmp_path: Path) -> None:
    sender = cli.mailbox("autonomous")
    target = cli.mailbox("autonomous")
    report = tmp_path / "report.pdf"
    report.write_bytes(PAYLOAD)
    notes = tmp_path / "notes.txt"
    notes.write_text("n\n", encoding="utf-8")
    sent = cli.json(
        "send", sender["mailbox_id"], "--to", target["address"], "--subject", "Files",
        "--body", "Two files.", "--attach", str(report), "--attach", str(notes),
    )  # fmt: skip
    own = cli.mm.client.read_email(sent["email_id"])
    assert [(a.filename, a.content_type) for a in own.attachments] == [
        ("report.pdf", "application/pdf"),  # named after the file, type guessed
        ("notes.txt", "text/plain"),
    ]
    assert wait_for(lambda: cli.mm.client.check_inbox(target["mailbox_id"]).emails)
    got = cli.mm.client.check_inbox(target["mailbox_id"]).emails[0]
    first = cli.mm.client.read_email(got.email_id).attachments[0]
    assert cli.mm.client.download_attachment(got.email_id, first.attachment_id) == PAYLOAD

    replied = cli.json(
        "reply", target["mailbox_id"], "--email-id", got.email_id, "--body", "Back.",
        "--attach", str(notes),
    )  # fmt: skip
    assert [a.filename for a in cli.mm.client.read_email(replied["email_id"]).attachments] == [
        "notes.txt"
    ]
    cli.fails(2, "send", sender["mailbox_id"], "--to", target["address"], "--subject", "x",
              "--body", "x", "--attach", str(tmp_path / "missing.bin"))  # fmt: skip


def _deliver_with_attachment(cli: Env, to: str, subject: str) -> None:
    message = EmailMessage()
    message["From"] = "Outside Sender <sender@outside.example>"
    message["To"] = to
    message["Subject"] = subject
    message.set_content("Report attached.\n")
    message.add_attachment(
        PAYLOAD, maintype="application", subtype="octet-stream", filename="report.bin"
    )
    with smtplib.SMTP(cli.mm.smtp_host, cli.mm.smtp_port, timeout=15) as smtp:
        smtp.send_message(message, "sender@outside.example", [to])


def test_thread_attachment_and_tags(cli: Env, tmp_path: Path) -> None:
    box = cli.mailbox("monitored")
    mid = box["mailbox_id"]
    _deliver_with_attachment(cli, box["address"], "Report \x9b31mred")
    assert wait_for(lambda: cli.mm.client.check_inbox(mid).emails)
    email = cli.json("read", cli.mm.client.check_inbox(mid).emails[0].email_id)
    eid, tid = email["email_id"], email["thread_id"]
    [attached] = email["attachments"]

    # thread: the inbound email and the reply, oldest first; the subject's ESC made visible.
    cli.ok("reply", mid, "--email-id", eid, "--body", "Thanks.")
    thread = cli.json("thread", mid, tid)
    assert thread["message_count"] == 2
    assert [e["direction"] for e in thread["emails"]] == ["inbound", "outbound"]
    shown = cli.ok("thread", mid, tid)
    assert "Report \\x9b31mred" in shown  # a C1 control (CSI) made visible
    assert "\x9b" not in shown
    cli.fails(3, "thread", mid, "thr_01AAAAAAAAAAAAAAAAAAAAAAAA")

    # attachment: to a file, to a pipe, never to a terminal, never over a file without --force.
    target = tmp_path / "report.bin"
    cli.ok("attachment", eid, attached["attachment_id"], "-o", str(target))
    assert target.read_bytes() == PAYLOAD
    assert cli.raw("attachment", eid, attached["attachment_id"]) == PAYLOAD
    code, _, terminal = cli.run_on_tty("attachment", eid, attached["attachment_id"], tty="stdout")
    assert code == 2
    assert "\x00" not in terminal
    cli.fails(2, "attachment", eid, attached["attachment_id"], "-o", str(target))
    wrote = cli.json("attachment", eid, attached["attachment_id"], "-o", str(target), "--force")
    assert wrote["size"] == len(PAYLOAD)
    cli.fails(3, "attachment", eid, "att_01AAAAAAAAAAAAAAAAAAAAAAAA", "-o", str(tmp_path / "x"))
    assert cli.raw("attachment", eid, attached["attachment_id"], "-o", "-") == PAYLOAD
    code, _, terminal = cli.run_on_tty(
        "attachment", eid, attached["attachment_id"], "-o", "-", tty="stdout"
    )
    assert (code, terminal) == (2, "")

    # read --raw: the message's bytes (ESC, C1 and all) to a pipe, never to a terminal.
    assert cli.raw("read", eid, "--raw") == cli.mm.client.get_raw_email(eid)
    code, stderr, terminal = cli.run_on_tty("read", eid, "--raw", tty="stdout")
    assert (code, terminal) == (2, "")
    assert stderr.startswith("error: usage: not writing a raw message to a terminal")
    cli.fails(2, "read", eid, "--raw", "--json")

    # tags: set replaces, get shows, delete removes.
    assert cli.json("tags", "set", eid, "priority=high", "team=ops")["tags"] == {
        "priority": "high",
        "team": "ops",
    }
    assert "priority=high" in cli.ok("tags", "get", eid)
    assert cli.ok("tags", "delete", eid, "team") == "priority=high\n"
    assert cli.mm.client.get_tags(eid).tags.to_dict() == {"priority": "high"}
    cli.fails(2, "tags", "set", eid, "no-value")
    cli.fails(3, "tags", "get", "msg_01AAAAAAAAAAAAAAAAAAAAAAAA")


# --- wait and webhooks ------------------------------------------------------------------


def test_wait_for_an_email_or_time_out(cli: Env) -> None:
    sender = cli.mailbox("autonomous")
    box = cli.mailbox("monitored")
    line = cli.fails(1, "wait", box["mailbox_id"], "--timeout", "1")
    resume = re.fullmatch(r"no email within 1 s \(resume with --after (\S+)\)", line)
    assert resume, line
    cli.mm.client.send_email(
        sender["mailbox_id"], to=box["address"], subject="Wake up", body_text="now"
    )
    waited = cli.json(
        "wait", box["mailbox_id"], "--timeout", "15", "--subject", "Wake", "--after", resume[1]
    )
    assert waited["email"]["subject"] == "Wake up"
    assert cli.run("wait", box["mailbox_id"], "--timeout", "999").returncode == 2

    # For a person: the sender with its display name, and the body.
    _deliver_with_attachment(cli, box["address"], "From outside")
    shown = cli.ok("wait", box["mailbox_id"], "--timeout", "15", "--after", waited["cursor"])
    assert "From:    Outside Sender <sender@outside.example>\n" in shown
    assert "Subject: From outside\n" in shown
    assert shown.endswith("\nReport attached.\n\n")


def test_approve_with_edits(cli: Env, tmp_path: Path) -> None:
    box = cli.mailbox("gated_send")
    held = cli.mm.client.send_email(
        box["mailbox_id"], to=f"{unique('out')}@example.com", subject="Draft", body_text="draft"
    )
    body, html = tmp_path / "body.txt", tmp_path / "body.html"
    body.write_text("Final words.\n", encoding="utf-8")
    html.write_text("<p>Final words.</p>", encoding="utf-8")
    out = cli.ok(
        "approve", held.pending_id, "--edit-subject", "Final", "--edit-body", str(body),
        "--edit-html", str(html), key=cli.reviewer_key,
    )  # fmt: skip
    assert out.startswith(f"approved {held.pending_id} with edits: message {held.message_id}")
    sent = cli.mm.client.read_email(held.message_id)
    assert (sent.subject, sent.body_text, sent.body_html) == (
        "Final",
        "Final words.\n",
        "<p>Final words.</p>",
    )
    assert "--edit-body" not in cli.ok("reject", "--help")


def test_send_and_reply_in_markdown(cli: Env, tmp_path: Path) -> None:
    sender, target = cli.mailbox("autonomous"), cli.mailbox("monitored")
    note = tmp_path / "note.md"
    note.write_text("# Plan\n\nShip **today**.\n", encoding="utf-8")
    sent = cli.json(
        "send", sender["mailbox_id"], "--to", target["address"], "--subject", "Plan",
        "--markdown", str(note),
    )  # fmt: skip
    assert "<strong>today</strong>" in cli.mm.client.read_email(sent["email_id"]).body_html
    replied = cli.json(
        "reply", sender["mailbox_id"], "--email-id", sent["email_id"], "--markdown", "-",
        input="*Shipped.*\n",
    )  # fmt: skip
    assert "<em>Shipped.</em>" in cli.mm.client.read_email(replied["email_id"]).body_html
    done = cli.run(
        "send", sender["mailbox_id"], "--to", target["address"], "--subject", "x",
        "--markdown", str(note), "--body", "x",
    )  # fmt: skip
    assert done.returncode == 2
    assert "not allowed with argument --markdown" in done.stderr


def test_events_types_may_have_spaces_and_follow_takes_no_limit(cli: Env) -> None:
    mid = cli.mailbox("monitored")["mailbox_id"]
    cli.mm.client.delete_mailbox(mid)
    listed = cli.json(
        "events", "--mailbox", mid, "--type", "mailbox.created, mailbox.decommissioned"
    )
    assert [e["type"] for e in listed["events"]] == ["mailbox.created", "mailbox.decommissioned"]
    line = cli.fails(2, "events", "--follow", "--limit", "5")
    assert line == "error: usage: --limit applies to the list, not to --follow"


def test_an_answer_the_cli_does_not_expect_is_one_line_exit_1(cli: Env) -> None:
    odd = {
        "mailbox_id": "mbx_01AAAAAAAAAAAAAAAAAAAAAAAA", "address": "a@b.test",
        "reputation_score": 50, "delivery_rate": "high", "bounce_rate": 0,
        "complaint_rate": 0, "messages_sent_30d": 0,
    }  # fmt: skip
    with fake_api({"/v1/reputation": (200, {"mailboxes": [odd]})}) as url:
        line = cli.fails(1, "reputation", url=url)
    assert line.startswith("error: internal: ValueError: "), line


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def test_webhooks_subscribe_deliver_replay_rotate_delete(cli: Env, receiver: str) -> None:
    hook = cli.json("webhooks", "create", receiver, "--events", "mailbox.created")
    hid, secret = hook["id"], hook["signing_secret"]
    assert hid in [w["id"] for w in cli.json("webhooks", "list")["subscriptions"]]
    assert receiver in cli.ok("webhooks", "list")
    assert cli.json("webhooks", "get", hid)["signing_secret"] == secret

    cli.mailbox("monitored")  # a mailbox.created event for the subscription

    def delivered() -> list[Any]:
        page = cli.mm.client.list_webhook_deliveries(webhook_id=hid, status="delivered")
        return list(page.deliveries)

    [first, *_] = wait_for(delivered)
    listed = cli.json("webhooks", "deliveries", "--webhook", hid, "--status", "delivered")
    assert first.id in [d["id"] for d in listed["deliveries"]]
    assert first.id in cli.ok("webhooks", "deliveries", "--webhook", hid)
    replayed = cli.json("webhooks", "replay", first.id)
    assert replayed["delivery"]["event_id"] == first.event_id

    rotated = cli.json("webhooks", "rotate", hid)
    assert rotated["signing_secret"] not in (None, secret)
    assert cli.mm.client.get_webhook(hid).signing_secret == rotated["signing_secret"]
    cli.ok("webhooks", "delete", hid)
    assert hid not in [w.id for w in cli.mm.client.list_webhooks().subscriptions]
    cli.fails(3, "webhooks", "get", hid)


# --- contacts and suppression -----------------------------------------------------------


def test_contacts_add_list_delete(cli: Env) -> None:
    address = f"{unique('ann')}@example.com"
    added = cli.json("contacts", "add", address, "--name", "Ann Example", "--tag", "vip")
    assert (added["email"], added["name"], added["tags"]) == (address, "Ann Example", ["vip"])
    found = cli.json("contacts", "list", "--query", "Ann Example")["contacts"]
    assert added["id"] in [c["id"] for c in found]
    assert address in cli.ok("contacts", "list")
    assert cli.ok("contacts", "delete", added["id"]) == f"deleted contact {added['id']}\n"
    assert added["id"] not in [c.id for c in cli.mm.client.list_contacts().contacts]
    cli.fails(3, "contacts", "delete", added["id"])


def test_suppression_add_list_remove(cli: Env) -> None:
    address = f"{unique('gone')}@example.com"
    added = cli.json("suppression", "add", address, "--reason", "asked to stop")
    assert (added["email_address"], added["reason"]) == (address, "asked to stop")
    listed = cli.json("suppression", "list")["suppressions"]
    assert address in [s["email_address"] for s in listed]
    assert address in cli.ok("suppression", "list")
    assert cli.ok("suppression", "remove", address) == f"{address} is no longer suppressed\n"
    remaining = cli.mm.client.list_suppressions().suppressions
    assert address not in [s.email_address for s in remaining]
    reader = cli.json("keys", "create", "reader", "--scopes", "read")["api_key"]
    cli.fails(4, "suppression", "add", address, key=reader)


# --- mailboxes import -------------------------------------------------------------------


def _addresses(cli: Env) -> dict[str, str]:
    return {m.address.split("@")[0]: m.mailbox_id for m in cli.mm.client.iter_mailboxes(100)}


def test_import_csv_reports_each_row_and_reruns_without_duplicates(
    cli: Env, tmp_path: Path
) -> None:
    a, b, taken = unique("imp-a"), unique("imp-b"), cli.mailbox("monitored")["address"]
    rows = [
        "name,mode,display_name",
        f"{a},gated_all,Agent A",
        f"{taken.split('@')[0]},,Clash",
        f"{b},,",
    ]
    csv_file = tmp_path / "boxes.csv"
    csv_file.write_text("\n".join(rows) + "\n", encoding="utf-8")

    done = cli.run("mailboxes", "import", str(csv_file), "--json")
    assert done.returncode == 6, done.stderr  # the clash is a conflict
    report = json.loads(done.stdout)
    assert [(r["line"], r["status"]) for r in report] == [
        (2, "created"),
        (3, "failed"),
        (4, "created"),
    ]
    assert report[0]["mailbox"]["oversight_mode"] == "gated_all"
    assert report[0]["mailbox"]["display_name"] == "Agent A"
    assert report[1]["error"]["status"] == 409
    assert done.stderr.startswith("error: ")
    boxes = _addresses(cli)
    assert boxes[a] == report[0]["mailbox"]["mailbox_id"]
    assert boxes[b] == report[2]["mailbox"]["mailbox_id"]

    # Run again (as after a crash): the same mailboxes, none added.
    again = cli.run("mailboxes", "import", str(csv_file))
    assert again.returncode == 6
    assert "created 2 of 3 mailboxes" in again.stdout
    assert _addresses(cli) == boxes


def test_import_jsonl_from_stdin_and_its_exit_codes(cli: Env) -> None:
    a, b = unique("jl-a"), unique("jl-b")
    lines = [
        json.dumps({"name": a, "oversight_mode": "monitored"}),
        "",
        json.dumps({"name": b, "webhook_url": None}),
    ]
    out = cli.ok("mailboxes", "import", "-", input="\n".join(lines))
    assert "created 2 of 2 mailboxes" in out
    assert {a, b} <= set(_addresses(cli))

    bad_mode = json.dumps({"name": unique("jl-c"), "mode": "yolo"})
    assert cli.run("mailboxes", "import", "-", input=bad_mode).returncode == 8
    cli.fails(4, "mailboxes", "import", "-", input=lines[0], key=cli.reviewer_key)


def test_import_checks_the_whole_file_before_creating_anything(cli: Env, tmp_path: Path) -> None:
    first = unique("never")
    cases = {
        "unknown.csv": (f"name,colour\n{first},blue\n", "line 1: unknown column 'colour'"),
        "noname.csv": (f"name,mode\n{first},monitored\n,monitored\n", "line 3: no name"),
        "repeat.csv": (f"name\n{first}\n{first}\n", "line 3: repeats line 2"),
        "samebox.csv": (
            f"name,mode\n{first},monitored\n{first.upper()},gated_all\n",
            "line 3: repeats line 2: the same mailbox",
        ),
        "extra.csv": (f"name\n{first},x\n", "line 2: more cells"),
        "bad.jsonl": (f'{{"name": "{first}"}}\n{{"name": \n', "line 2: not JSON"),
        "list.jsonl": (f'{{"name": "{first}"}}\n["x"]\n', "line 2: expected a JSON object"),
        "number.jsonl": (f'{{"name": "{first}", "domain": 7}}\n', "line 1: domain must be text"),
        "empty.csv": ("name\n", "no rows"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        line = cli.fails(2, "mailboxes", "import", str(path))
        assert line.startswith("error: usage: "), (name, line)
        assert message in line, (name, line)
    cli.fails(2, "mailboxes", "import", str(tmp_path / "missing.csv"))
    assert first not in _addresses(cli)


def test_import_jsonl_lines_end_at_line_feeds_only(cli: Env, tmp_path: Path) -> None:
    odd, plain = unique("sep-a"), unique("sep-b")
    rows = [{"name": odd, "display_name": "A\u2028B\u0085C"}, {"name": plain}]
    path = tmp_path / "rows.jsonl"
    path.write_bytes("".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in rows).encode())
    done = cli.run("mailboxes", "import", str(path), "--json")
    assert done.returncode != 2, done.stderr  # was "line 1: not JSON"
    report = json.loads(done.stdout)
    assert [(r["line"], r["row"]["name"]) for r in report] == [(1, odd), (2, plain)]
    assert report[0]["row"]["display_name"] == "A\u2028B\u0085C"


def test_import_rerun_says_when_a_mailbox_is_no_longer_active(cli: Env, tmp_path: Path) -> None:
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"name": unique("gone")}) + "\n", encoding="utf-8")
    [first] = cli.json("mailboxes", "import", str(path))
    assert (first["status"], first["mailbox"]["status"]) == ("created", "active")
    cli.mm.client.delete_mailbox(first["mailbox"]["mailbox_id"])
    out = cli.ok("mailboxes", "import", str(path))  # the replay is no failure of the import
    assert "exists (decommissioned)" in out
    assert "created 0 of 1 mailboxes; 1 not active" in out
    [again] = cli.json("mailboxes", "import", str(path))
    assert (again["status"], again["mailbox"]["status"]) == ("exists", "decommissioned")


def test_bulk_calls_wait_out_rate_limiting_then_give_up(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(cli_bulk.time, "sleep", slept.append)
    answers: list[Any] = [RateLimited(429, "rate_limited", "slow", retry_after=3), "done"]

    def call() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return str(answer)

    assert cli_bulk.patiently(call) == "done"
    assert slept == [3]

    def always() -> str:
        raise RateLimited(429, "rate_limited", "slow", retry_after=None)

    with pytest.raises(RateLimited):
        cli_bulk.patiently(always)
    assert slept == [3] + [1] * cli_bulk.BULK_RETRIES


def test_import_progress_stays_off_stdout(cli: Env, tmp_path: Path) -> None:
    path = tmp_path / "boxes.jsonl"
    path.write_text(json.dumps({"name": unique("tty")}) + "\n", encoding="utf-8")
    code, stdout, terminal = cli.run_on_tty("mailboxes", "import", str(path), tty="stderr")
    assert code == 0
    assert "creating mailboxes" in terminal
    assert "1/1" in terminal
    assert "creating mailboxes" not in stdout
    code, stdout, terminal = cli.run_on_tty(
        "mailboxes", "import", str(path), "--json", tty="stderr"
    )
    assert code == 0
    assert json.loads(stdout)[0]["status"] == "created"
    assert terminal == ""


# --- export -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def filled(cli: Env) -> dict[str, Any]:
    """A mailbox holding three inbound emails, one of them with body lines that start
    with ``From `` (which mbox must quote)."""
    sender = cli.mailbox("autonomous")
    box = cli.mailbox("monitored")
    bodies = ["First.", "From here on, all is well.\n>From the quoted part.", "Third."]
    for i, body in enumerate(bodies):
        cli.mm.client.send_email(
            sender["mailbox_id"], to=box["address"], subject=f"Export {i}", body_text=body
        )
    assert wait_for(lambda: len(cli.mm.client.check_inbox(box["mailbox_id"]).emails) == 3)
    return {**box, "sender": sender["address"]}


def test_export_to_a_directory(cli: Env, filled: dict[str, Any], tmp_path: Path) -> None:
    mid = filled["mailbox_id"]
    out = tmp_path / "export"
    result = cli.json("export", mid, "--out", str(out))
    assert result == {"mailbox_id": mid, "exported": 3, "format": "eml", "path": str(out)}
    index = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert len(index) == 3
    assert sorted(e["subject"] for e in index) == ["Export 0", "Export 1", "Export 2"]
    for entry in index:
        eml = (out / f"{entry['email_id']}.eml").read_bytes()
        assert eml == cli.mm.client.get_raw_email(entry["email_id"])
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*(f"{e['email_id']}.eml" for e in index), "index.jsonl"]
    )

    written = sorted(p.name for p in out.iterdir())
    line = cli.fails(2, "export", mid, "--out", str(out))
    assert "pass --force" in line
    # --force replaces an earlier export (a stale email of it too), and nothing else.
    (out / "msg_01STALESTALESTALESTALESTA.eml").write_bytes(b"gone since")
    (out / "index.jsonl.part").write_text("", encoding="utf-8")
    assert cli.ok("export", mid, "--out", str(out), "--force").startswith("exported 3 emails")
    assert sorted(p.name for p in out.iterdir()) == written
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    assert "notes.txt" in cli.fails(2, "export", mid, "--out", str(out), "--force")
    assert sorted(p.name for p in out.iterdir()) == sorted([*written, "notes.txt"])
    cli.fails(3, "export", "mbx_01AAAAAAAAAAAAAAAAAAAAAAAA", "--out", str(tmp_path / "none"))
    assert not (tmp_path / "none").exists()
    assert cli.run("export", mid).returncode == 2  # --out or --mbox


def test_export_to_mbox(cli: Env, filled: dict[str, Any], tmp_path: Path) -> None:
    mid = filled["mailbox_id"]
    path = tmp_path / "box.mbox"
    assert cli.ok("export", mid, "--mbox", str(path)) == f"exported 3 emails of {mid} to {path}\n"
    data = path.read_bytes()
    assert b"\n>From here on" in data
    assert b"\n>>From the quoted part" in data
    parsed = mailbox.mbox(path)
    assert sorted(str(m["Subject"]) for m in parsed) == ["Export 0", "Export 1", "Export 2"]
    assert [m.get_from().split(" ")[0] for m in parsed] == [filled["sender"]] * 3

    cli.fails(2, "export", mid, "--mbox", str(path))
    assert cli.json("export", mid, "--mbox", str(path), "--force")["exported"] == 3
    assert not path.with_name("box.mbox.part").exists()

    # '-' is stdout, the summary then on stderr; never a terminal.
    assert cli.raw("export", mid, "--mbox", "-") == data
    done = cli.run("export", mid, "--mbox", "-", "--json")
    assert done.stdout.startswith("From ")
    assert json.loads(done.stderr)["path"] == "-"
    code, _, terminal = cli.run_on_tty("export", mid, "--mbox", "-", tty="stdout")
    assert (code, terminal) == (2, "")

    # Not a regular file (a pipe, a symlink to one, a directory): refused even with --force.
    fifo, to_fifo = tmp_path / "fifo", tmp_path / "to-fifo"
    os.mkfifo(fifo)
    to_fifo.symlink_to(fifo)
    for target in (fifo, to_fifo, tmp_path):
        cli.fails(2, "export", mid, "--mbox", str(target), "--force")
    assert fifo.is_fifo()
    assert to_fifo.is_symlink()
    # A symlink to a file: the file is replaced, the link stays.
    real, alias = tmp_path / "real.mbox", tmp_path / "alias.mbox"
    real.write_bytes(b"old")
    alias.symlink_to(real)
    cli.ok("export", mid, "--mbox", str(alias), "--force")
    assert alias.is_symlink()
    assert real.read_bytes() == data

    # The mbox is written through a temporary file of its own: FILE.part is someone else's.
    path.with_name("box.mbox.part").write_text("mine", encoding="utf-8")
    (tmp_path / "new.mbox.part").mkdir()
    cli.ok("export", mid, "--mbox", str(path), "--force")
    cli.ok("export", mid, "--mbox", str(tmp_path / "new.mbox"))
    assert path.with_name("box.mbox.part").read_text(encoding="utf-8") == "mine"
    assert (tmp_path / "new.mbox.part").is_dir()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_an_interrupted_export_leaves_no_index_and_no_mbox(cli: Env, tmp_path: Path) -> None:
    mid = "mbx_01AAAAAAAAAAAAAAAAAAAAAAAA"
    first, second = "msg_01AAAAAAAAAAAAAAAAAAAAAAA1", "msg_01AAAAAAAAAAAAAAAAAAAAAAA2"
    listing = {
        "emails": [
            {"email_id": first, "received_at": "2026-01-01T00:00:00Z"},
            {"email_id": second, "received_at": "2026-01-02T00:00:00Z"},
        ],
        "next_cursor": None,
    }
    routes = {
        f"/v1/mailboxes/{mid}/emails": (200, listing),
        f"/v1/emails/{first}/raw": (200, b"Subject: one\r\n\r\nOne.\r\n"),
        f"/v1/emails/{second}/raw": (500, {"code": "internal_error", "detail": "lost"}),
    }
    out = tmp_path / "export"
    with fake_api(routes) as url:
        cli.fails(5, "export", mid, "--out", str(out), url=url)
        cli.fails(5, "export", mid, "--mbox", str(tmp_path / "box.mbox"), url=url)
    # No index.jsonl: an unfinished export (which --force may replace).
    assert sorted(p.name for p in out.iterdir()) == ["index.jsonl.part", f"{first}.eml"]
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no mbox, no temporary file
    assert "interrupted export" in cli.ok("export", "--help")


def test_export_progress_bar_only_on_a_terminal_and_never_with_json(
    cli: Env, filled: dict[str, Any], tmp_path: Path
) -> None:
    mid = filled["mailbox_id"]
    code, stdout, terminal = cli.run_on_tty(
        "export", mid, "--mbox", str(tmp_path / "a.mbox"), tty="stderr"
    )
    assert code == 0
    assert stdout == f"exported 3 emails of {mid} to {tmp_path / 'a.mbox'}\n"
    assert "exporting emails" in terminal
    assert "3/3" in terminal

    code, stdout, terminal = cli.run_on_tty(
        "export", mid, "--out", str(tmp_path / "b"), "--json", tty="stderr"
    )
    assert code == 0
    assert json.loads(stdout)["exported"] == 3
    assert terminal == ""


def test_mbox_entries_quote_from_lines_and_end_with_a_blank_line() -> None:
    raw = b"Subject: s\r\n\r\nFrom me\r\n>From you\r\nFromage"
    entry = mbox_entry(raw, "a@b.test", "2026-04-19T10:00:00.000Z")
    assert entry == (
        b"From a@b.test Sun Apr 19 10:00:00 2026\nSubject: s\n\n>From me\n>>From you\nFromage\n\n"
    )
    odd = mbox_entry(b"x", "has space@b.test", None)
    assert odd.startswith(b"From MAILER-DAEMON Thu Jan  1 00:00:00 1970\n")
