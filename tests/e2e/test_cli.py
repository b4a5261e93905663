"""The ``multimail`` CLI end to end: real subprocesses against a real, embedded server.

Each test runs ``python -m multimail.cli ...`` with ``MULTIMAIL_API_URL``/``MULTIMAIL_API_KEY``
pointing at one in-process server (``multimail.embedded``) and checks exit codes, the
human output and that ``--json`` output parses. Mailbox names are unique per test, so
the tests share the server without seeing each other's mail.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cli_env import Env, embedded_cli, unique, wait_for


@pytest.fixture(scope="module")
def cli() -> Iterator[Env]:
    with embedded_cli() as env:
        yield env


# --- usage ------------------------------------------------------------------------------


def test_help_lists_the_commands_and_usage_errors_exit_2(cli: Env) -> None:
    out = cli.ok("--help")
    for command in ("serve", "mailboxes", "send", "inbox", "read", "reply", "pending", "approve"):
        assert command in out
    assert "usage: multimail send" in cli.ok("send", "--help")
    assert cli.run("mailboxes").returncode == 2
    assert cli.run("send", "mbx_x", "--subject", "no recipient", "--body", "x").returncode == 2
    assert cli.run("frobnicate").returncode == 2
    line = cli.fails(2, "mailboxes", "update", "mbx_x")
    assert line.startswith("error: usage: nothing to update")


# --- mailboxes --------------------------------------------------------------------------


def test_mailboxes_create_prints_the_new_mailbox(cli: Env) -> None:
    name = unique("support")
    out = cli.ok("mailboxes", "create", name, "--mode", "monitored", "--display-name", "Support")
    assert f"{name}@" in out
    assert "monitored" in out
    assert "mbx_" in out

    created = cli.json("mailboxes", "create", f"{name}-2", "--mode", "gated_all")
    assert created["mailbox_id"].startswith("mbx_")
    assert created["address"].startswith(f"{name}-2@")
    assert created["oversight_mode"] == "gated_all"


def test_mailboxes_list_get_update_delete(cli: Env) -> None:
    box = cli.mailbox("gated_send")
    mid = box["mailbox_id"]

    listed = cli.json("mailboxes", "list", "--limit", "100")
    assert mid in [m["mailbox_id"] for m in listed["mailboxes"]]
    assert mid in cli.ok("mailboxes", "list", "--limit", "100")
    assert cli.json("mailboxes", "get", mid)["address"] == box["address"]

    updated = cli.json(
        "mailboxes", "update", mid, "--mode", "read_only", "--allowlist", "*@example.com,a@b.test"
    )
    assert updated["oversight_mode"] == "read_only"
    assert sorted(updated["allowlist"]) == ["*@example.com", "a@b.test"]

    deleted = cli.json("mailboxes", "delete", mid)
    assert deleted["status"] == "decommissioned"


# --- exit codes -------------------------------------------------------------------------


def test_not_found_exits_3(cli: Env) -> None:
    line = cli.fails(3, "mailboxes", "get", "mbx_01AAAAAAAAAAAAAAAAAAAAAAAA")
    assert line.startswith("error: not_found: ")
    cli.fails(3, "read", "msg_01AAAAAAAAAAAAAAAAAAAAAAAA")
    line = cli.fails(3, "dns", "unknown.example")
    assert line.startswith("error: not_found: unknown.example is not one of")


def test_authentication_and_permission_failures_exit_4(cli: Env) -> None:
    line = cli.fails(4, "account", "get", key="mm_live_not-a-real-key")
    assert line.startswith("error: unauthenticated: ")
    line = cli.fails(4, "mailboxes", "list", key="")
    assert "MULTIMAIL_API_KEY" in line
    # The reviewer key holds only `oversight`: it may not create mailboxes.
    cli.fails(4, "mailboxes", "create", unique("x"), key=cli.reviewer_key)


def test_invalid_requests_exit_8_and_conflicts_exit_6(cli: Env) -> None:
    line = cli.fails(8, "mailboxes", "create", unique("bad"), "--mode", "yolo")
    assert line.startswith("error: validation_error: ")
    box = cli.mailbox("monitored")
    local = box["address"].split("@")[0]
    line = cli.fails(6, "mailboxes", "create", local)
    assert line.startswith("error: ")


def test_an_unreachable_server_exits_5_naming_the_url(cli: Env) -> None:
    line = cli.fails(5, "mailboxes", "list", url="http://127.0.0.1:9")
    assert line.startswith("error: connection_error: ")
    assert "http://127.0.0.1:9" in line


def test_unusable_settings_and_file_names_are_usage_errors(cli: Env, tmp_path: Path) -> None:
    line = cli.fails(2, "--api-url", "http://[::1", "health")
    assert line.startswith("error: usage: invalid base URL 'http://[::1': ")
    line = cli.fails(2, "account", "get", "--api-key", "é")
    assert line == "error: usage: invalid API key: it may hold printable ASCII characters only"
    cli.fails(2, "mcp", "--api-key", "é")
    long = str(tmp_path / ("x" * 300))  # longer than a file name may be
    mbx, msg, att = (f"{kind}_01AAAAAAAAAAAAAAAAAAAAAAAA" for kind in ("mbx", "msg", "att"))
    for args in (["--mbox", long], ["--out", long]):
        assert cli.fails(2, "export", mbx, *args).endswith(": File name too long")
    assert cli.fails(2, "attachment", msg, att, "-o", long).endswith(": File name too long")


def test_errors_with_json_also_print_the_problem_document(cli: Env) -> None:
    done = cli.run("--json", "mailboxes", "get", "mbx_01AAAAAAAAAAAAAAAAAAAAAAAA")
    assert done.returncode == 3
    assert json.loads(done.stdout)["code"] == "not_found"


# --- mail and oversight -----------------------------------------------------------------


def test_send_inbox_read_reply_approve(cli: Env) -> None:
    sender = cli.mailbox("autonomous")
    agent = cli.mailbox("gated_send")

    out = cli.ok(
        "send",
        sender["mailbox_id"],
        "--to",
        agent["address"],
        "--subject",
        "Quarterly numbers",
        "--body",
        "Could you send the Q3 report?",
    )
    assert out.startswith("sent: message msg_")

    assert wait_for(lambda: cli.mm.client.check_inbox(agent["mailbox_id"]).emails)
    inbox = cli.json("inbox", agent["mailbox_id"], "--filter", "unread")["emails"]
    assert len(inbox) == 1
    email = inbox[0]
    assert (email["sender"], email["subject"]) == (sender["address"], "Quarterly numbers")
    assert email["requires_action"] is True
    assert "Quarterly numbers" in cli.ok("inbox", agent["mailbox_id"])

    out = cli.ok("read", email["email_id"])
    assert f"From:    {sender['address']}" in out
    assert "Could you send the Q3 report?" in out
    assert cli.json("read", email["email_id"])["status"] == "read"
    assert cli.json("inbox", agent["mailbox_id"], "--filter", "unread")["emails"] == []
    assert b"Quarterly numbers" in cli.ok("read", email["email_id"], "--raw").encode()

    # gated_send holds the reply until an overseer decides.
    done = cli.run(
        "reply", agent["mailbox_id"], "--email-id", email["email_id"], "--body", "Attached."
    )
    assert done.returncode == 0, done.stderr
    held_line = re.match(
        r"pending: held for approval as (apr_\w+) \(message msg_\w+\)", done.stdout
    )
    assert held_line, done.stdout
    pending_id = held_line.group(1)

    pending = cli.json("pending", key=cli.reviewer_key)["pending"]
    held = next(p for p in pending if p["pending_id"] == pending_id)
    assert (held["mailbox_id"], held["subject"]) == (agent["mailbox_id"], "Re: Quarterly numbers")
    assert pending_id in cli.ok("pending", key=cli.reviewer_key)

    # The key that sent it may not approve it; the reviewer may, once.
    cli.fails(4, "approve", pending_id)
    out = cli.ok("approve", pending_id, "--reason", "looks right", key=cli.reviewer_key)
    assert out.startswith(f"approved {pending_id}: message msg_")
    line = cli.fails(6, "approve", pending_id, key=cli.reviewer_key)
    assert line.startswith("error: already_decided: ")

    delivered = wait_for(
        lambda: cli.mm.client.check_inbox(sender["mailbox_id"], direction="inbound").emails
    )
    assert delivered, "the approved reply was not delivered"
    replies = cli.json("inbox", sender["mailbox_id"], "--direction", "inbound")["emails"]
    assert [e["subject"] for e in replies] == ["Re: Quarterly numbers"]


def test_reply_by_thread_and_reject(cli: Env) -> None:
    sender = cli.mailbox("autonomous")
    agent = cli.mailbox("gated_all")
    cli.ok("send", sender["mailbox_id"], "--to", agent["address"], "--subject", "Hi", "--body", "x")

    # gated_all holds inbound mail too: the reviewer releases it first.
    assert wait_for(
        lambda: any(
            p.mailbox_id == agent["mailbox_id"] for p in cli.mm.client.list_pending().pending
        )
    )
    pending = cli.json("pending", "--limit", "100", key=cli.reviewer_key)["pending"]
    held = [p for p in pending if p["mailbox_id"] == agent["mailbox_id"]]
    assert len(held) == 1
    assert held[0]["direction"] == "inbound"
    assert cli.json("inbox", agent["mailbox_id"])["emails"] == []
    decided = cli.json("approve", held[0]["email_id"], key=cli.reviewer_key)
    assert decided["status"] == "approved"

    email = cli.json("inbox", agent["mailbox_id"])["emails"][0]
    result = cli.json("reply", agent["mailbox_id"], "--thread-id", email["thread_id"], input="ok\n")
    assert result["status"] == "pending"
    rejected = cli.json("reject", result["pending_id"], "--reason", "not yet", key=cli.reviewer_key)
    assert rejected["status"] == "rejected"
    assert rejected["message_status"] == "rejected"


def test_send_reads_the_body_from_stdin_or_files(cli: Env, tmp_path: Path) -> None:
    sender = cli.mailbox("autonomous")
    target = cli.mailbox("monitored")
    body_file = tmp_path / "body.txt"
    body_file.write_text("from a file\n", encoding="utf-8")
    html_file = tmp_path / "body.html"
    html_file.write_text("<p>from a file</p>", encoding="utf-8")

    piped = cli.json(
        "send",
        sender["mailbox_id"],
        "--to",
        target["address"],
        "--subject",
        "s1",
        input="from stdin\n",
    )
    filed = cli.json(
        "send",
        sender["mailbox_id"],
        "--to",
        target["address"],
        "--subject",
        "s2",
        "--body-file",
        str(body_file),
        "--html",
        str(html_file),
    )
    assert piped["status"] == filed["status"] == "sent"

    first = cli.json("read", piped["message_id"])
    second = cli.json("read", filed["message_id"])
    assert first["body_text"].strip() == "from stdin"
    assert second["body_text"].strip() == "from a file"
    assert second["body_html"] == "<p>from a file</p>"

    dry = cli.ok(
        "send",
        target["mailbox_id"],
        "--to",
        "someone@example.com",
        "--subject",
        "s3",
        "--body",
        "x",
        "--dry-run",
    )
    assert dry.startswith("dry run: ")

    line = cli.fails(
        2,
        "send",
        sender["mailbox_id"],
        "--to",
        target["address"],
        "--subject",
        "s4",
        "--body-file",
        str(tmp_path / "missing.txt"),
    )
    assert line.startswith("error: usage: ")


def test_read_only_refuses_to_send_with_exit_4(cli: Env) -> None:
    box = cli.mailbox("read_only")
    line = cli.fails(
        4, "send", box["mailbox_id"], "--to", "a@example.com", "--subject", "s", "--body", "x"
    )
    assert line.startswith("error: oversight_denied: ")


# --- keys, domains, audit, events, account, reputation ----------------------------------


def test_keys_create_list_revoke(cli: Env) -> None:
    box = cli.mailbox("gated_send")
    created = cli.json(
        "keys", "create", "agent", "--scopes", "read,send", "--mailbox", box["mailbox_id"]
    )
    assert created["api_key"].startswith("mm_live_")
    assert created["scopes"] == ["read", "send"]
    assert created["mailbox_ids"] == [box["mailbox_id"]]

    # The agent key sees its mailbox only.
    mine = cli.json("mailboxes", "list", key=created["api_key"])["mailboxes"]
    assert [m["mailbox_id"] for m in mine] == [box["mailbox_id"]]

    assert created["id"] in [k["id"] for k in cli.json("keys", "list")["api_keys"]]
    first = cli.json("keys", "list", "--limit", "1")
    assert len(first["api_keys"]) == 1
    rest = cli.json("keys", "list", "--cursor", first["next_cursor"])["api_keys"]
    assert rest
    assert first["api_keys"][0]["id"] not in [k["id"] for k in rest]
    assert created["id"] in cli.ok("keys", "list")
    assert cli.json("keys", "revoke", created["id"])["revoked"] is True
    cli.fails(4, "mailboxes", "list", key=created["api_key"])


def test_account_domains_audit_events_reputation(cli: Env) -> None:
    box = cli.mailbox("monitored")

    account = cli.json("account", "get")
    assert account["account_id"].startswith("acc_")
    assert account["account_id"] in cli.ok("account", "get")

    domains = [d["domain"] for d in cli.json("domains", "list")["domains"]]
    assert box["address"].split("@")[1] in domains
    assert cli.mm.domain in cli.ok("domains", "list")

    entries = cli.json("audit", "list", "--limit", "5")["entries"]
    assert entries
    assert entries[0]["action"] in cli.ok("audit", "list", "--limit", "5")
    verified = cli.json("audit", "verify")
    assert verified["valid"] is True
    assert cli.ok("audit", "verify").startswith("audit log intact")

    events = cli.json("events", "--type", "mailbox.created", "--limit", "100")["events"]
    assert {e["type"] for e in events} == {"mailbox.created"}
    assert box["mailbox_id"] in [e["mailbox_id"] for e in events]
    later = cli.json("events", "--after", str(events[0]["seq"]), "--type", "mailbox.created")
    assert all(e["seq"] > events[0]["seq"] for e in later["events"])

    rep = cli.json("reputation", box["mailbox_id"])
    assert rep["mailbox_id"] == box["mailbox_id"]
    assert 0 <= rep["reputation_score"] <= 100
    every = cli.json("reputation", "--sort", "bounce_rate")["mailboxes"]
    assert box["mailbox_id"] in [r["mailbox_id"] for r in every]
    assert box["mailbox_id"] in cli.ok("reputation")
    line = cli.fails(2, "reputation", box["mailbox_id"], "--sort", "bounce_rate")
    assert "--sort and --order" in line


def test_global_flags_work_before_or_after_the_command(cli: Env) -> None:
    before = cli.ok("--json", "--api-key", cli.mm.admin_key, "account", "get", key="")
    after = cli.ok("account", "get", "--api-key", cli.mm.admin_key, "--json", key="")
    assert json.loads(before) == json.loads(after)
    url = cli.ok("--api-url", cli.mm.api_url, "account", "get", url="http://127.0.0.1:9")
    assert "account_id" in url
