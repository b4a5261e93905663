"""``multimail mcp`` over stdio, end to end: real subprocesses, the MCP SDK's ClientSession.

What this file proves, against one embedded server:
- An agent session (agent key, MULTIMAIL_MAILBOX_ID) waits for, reads and replies to mail;
  the reply of its gated_send mailbox is held; the agent's own key cannot approve it
  (a 403 permission error, the message still pending); a reviewer session (oversight key)
  lists and approves it, and the reply reaches the other mailbox in the same thread.
- Without MULTIMAIL_API_KEY the command exits 2 with one line on stderr; a wrong key makes
  tools fail with a 401 text; a server that is down gives a connection error text and the
  session lives on. No tracebacks anywhere.
- stdout carries JSON-RPC only, and the process exits with status 0 when the client closes
  its stdin (every SDK session here checks that, too).
"""

from __future__ import annotations

import json
import select
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import mcp_types
import pytest

from multimail.embedded import Embedded, run_embedded
from tests.e2e.mcp_session import (
    MCP_COMMAND,
    McpProcess,
    mcp_environment,
    stdio_session,
    text_of,
)

SESSION_LIMIT = 90  # seconds: a hung session fails the test instead of blocking the suite


@pytest.fixture(scope="module")
def mm() -> Iterator[Embedded]:
    with run_embedded() as server:
        yield server


@pytest.fixture
def logs(tmp_path: Path) -> Callable[[str], Path]:
    return lambda name: tmp_path / f"{name}.stderr"


def run_async(body: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        with anyio.fail_after(SESSION_LIMIT):
            await body()

    anyio.run(bounded)


def assert_exited_cleanly(*processes: McpProcess) -> None:
    for process in processes:
        assert process.exit_status() == 0, process.stderr()
        assert "Traceback" not in process.stderr()


def assert_tool_error(result: mcp_types.CallToolResult, *fragments: str) -> str:
    text = text_of(result)
    assert result.is_error, text
    assert len(result.content) == 1
    assert "Traceback" not in text
    assert len(text.strip().splitlines()) == 1, text
    for fragment in fragments:
        assert fragment in text, text
    return text


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def wait_until(probe: Callable[[], Any], what: str, limit: float = 15) -> Any:
    """Poll ``probe`` until it returns something truthy (delivery is asynchronous)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


# --- the whole agent loop through three stdio sessions ----------------------------------


def test_agent_waits_reads_replies_and_only_the_reviewer_approves(
    mm: Embedded, logs: Callable[[str], Path]
) -> None:
    processes: list[McpProcess] = []
    seen: dict[str, str] = {}

    async def body() -> None:
        async with AsyncExitStack() as stack:
            admin = await stack.enter_async_context(
                stdio_session(mm.api_url, mm.admin_key, logs("admin"))
            )
            processes.append(admin)
            names = {tool.name for tool in (await admin.session.list_tools()).tools}
            assert {"create_mailbox", "wait_for_email", "decide_email"} <= names

            # the operator sets up: a gated agent mailbox A, an autonomous peer B, two keys
            made = await admin.session.call_tool(
                "create_mailbox", {"name": "stdio-agent", "oversight_mode": "gated_send"}
            )
            assert not made.is_error, text_of(made)
            box_a = made.structured_content
            made = await admin.session.call_tool(
                "create_mailbox", {"name": "stdio-peer", "oversight_mode": "autonomous"}
            )
            assert not made.is_error, text_of(made)
            box_b = made.structured_content
            assert mm.client.get_mailbox(box_a["mailbox_id"]).oversight_mode == "gated_send"
            assert mm.client.get_mailbox(box_b["mailbox_id"]).oversight_mode == "autonomous"

            made = await admin.session.call_tool(
                "create_api_key",
                {
                    "name": "stdio agent",
                    "scopes": ["send", "read"],
                    "mailbox_ids": [box_a["mailbox_id"]],
                },
            )
            assert not made.is_error, text_of(made)
            agent_key = made.structured_content["api_key"]
            made = await admin.session.call_tool(
                "create_api_key", {"name": "stdio reviewer", "scopes": ["oversight"]}
            )
            assert not made.is_error, text_of(made)
            reviewer_key = made.structured_content["api_key"]

            agent = await stack.enter_async_context(
                stdio_session(mm.api_url, agent_key, logs("agent"), mailbox_id=box_a["mailbox_id"])
            )
            reviewer = await stack.enter_async_context(
                stdio_session(mm.api_url, reviewer_key, logs("reviewer"))
            )
            processes.extend([agent, reviewer])

            # nothing yet: the wait times out and hands back a cursor (no mailbox_id needed)
            idle = await agent.session.call_tool("wait_for_email", {"timeout_seconds": 1})
            assert not idle.is_error, text_of(idle)
            assert idle.structured_content["timed_out"] is True
            assert idle.structured_content["email"] is None

            # B writes to A; the agent's wait from that cursor returns it
            sent = await admin.session.call_tool(
                "send_email",
                {
                    "mailbox_id": box_b["mailbox_id"],
                    "to": [box_a["address"]],
                    "subject": "Quarterly numbers",
                    "body_text": "Could you send me the Q3 figures?",
                },
            )
            assert not sent.is_error, text_of(sent)
            assert sent.structured_content["status"] == "sent"
            seen["peer_thread"] = sent.structured_content["thread_id"]
            seen["box_b"] = box_b["mailbox_id"]
            seen["address_a"] = box_a["address"]

            waited = await agent.session.call_tool(
                "wait_for_email",
                {"timeout_seconds": 30, "after": idle.structured_content["cursor"]},
            )
            assert not waited.is_error, text_of(waited)
            assert waited.structured_content["timed_out"] is False
            arrived = waited.structured_content["email"]
            assert arrived["from"] == box_b["address"]
            assert arrived["mailbox_id"] == box_a["mailbox_id"]
            assert arrived["untrusted"]["subject"] == "Quarterly numbers"
            email_id = arrived["email_id"]

            read = await agent.session.call_tool("read_email", {"email_id": email_id})
            assert not read.is_error, text_of(read)
            assert read.structured_content["untrusted"]["body_text"] == (
                "Could you send me the Q3 figures?"
            )
            assert read.structured_content["status"] == "read"
            unread = mm.client.check_inbox(box_a["mailbox_id"], filter="unread")
            assert email_id not in {e.email_id for e in unread.emails}

            # the reply of a gated_send mailbox is held for a human
            reply = await agent.session.call_tool(
                "reply_email", {"email_id": email_id, "body_text": "Attached: Q3 is up 4%."}
            )
            assert not reply.is_error, text_of(reply)
            held = reply.structured_content
            assert held["status"] == "pending"
            assert held["pending_id"].startswith("apr_")
            assert held["thread_id"] == read.structured_content["thread_id"]
            seen["reply_id"] = held["email_id"]

            # the agent cannot approve its own reply
            refused = await agent.session.call_tool(
                "decide_email", {"pending_id": held["pending_id"], "action": "approve"}
            )
            assert_tool_error(refused, "decide_email", "403", "forbidden")
            pending_ids = {p.pending_id for p in mm.client.list_pending().pending}
            assert held["pending_id"] in pending_ids
            assert mm.client.read_email(held["email_id"]).status == "pending_approval"
            in_b = mm.client.check_inbox(box_b["mailbox_id"], direction="inbound")
            assert in_b.emails == []

            # the reviewer sees it and approves it
            listed = await reviewer.session.call_tool("list_pending", {})
            assert not listed.is_error, text_of(listed)
            mine = [
                p for p in listed.structured_content["pending"] if p["email_id"] == held["email_id"]
            ]
            assert len(mine) == 1
            assert mine[0]["pending_id"] == held["pending_id"]
            assert mine[0]["untrusted"]["subject"] == "Re: Quarterly numbers"

            approved = await reviewer.session.call_tool(
                "decide_email", {"pending_id": held["pending_id"], "action": "approve"}
            )
            assert not approved.is_error, text_of(approved)
            assert approved.structured_content["status"] == "approved"

        # every session closed: each server process exited by itself, with status 0
        assert_exited_cleanly(*processes)

    run_async(body)

    # the approved reply leaves A and arrives in B, in the thread B started
    assert mm.client.read_email(seen["reply_id"]).status != "pending_approval"
    answer = wait_until(
        lambda: mm.client.check_inbox(seen["box_b"], direction="inbound").emails,
        "the approved reply in B",
    )
    assert len(answer) == 1
    assert answer[0].subject == "Re: Quarterly numbers"
    assert answer[0].body_text.strip() == "Attached: Q3 is up 4%."
    assert answer[0].sender == seen["address_a"]
    assert answer[0].thread_id == seen["peer_thread"]


# --- failures are one clear line, and the session survives them ---------------------------


def test_without_an_api_key_the_command_exits_2_with_one_line(mm: Embedded) -> None:
    done = subprocess.run(
        MCP_COMMAND,
        env=mcp_environment(mm.api_url, None, None),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error:")
    assert "MULTIMAIL_API_KEY" in lines[0]


def test_a_wrong_key_and_a_server_that_is_down_give_error_texts(
    mm: Embedded, logs: Callable[[str], Path]
) -> None:
    async def body() -> None:
        async with AsyncExitStack() as stack:
            wrong = await stack.enter_async_context(
                stdio_session(mm.api_url, "mm_live_not_a_real_key", logs("wrong"))
            )
            down = await stack.enter_async_context(
                stdio_session(closed_port_url(), mm.admin_key, logs("down"))
            )
            refused = await wrong.session.call_tool("list_mailboxes", {})
            assert_tool_error(refused, "list_mailboxes", "401")

            for tool, arguments in [
                ("list_mailboxes", {}),
                ("wait_for_email", {"mailbox_id": "mbx_none", "timeout_seconds": 1}),
            ]:
                unreachable = await down.session.call_tool(tool, arguments)
                line = assert_tool_error(unreachable, tool, "connection_error")
                assert "cannot reach" in line

            # both sessions are still alive and answer
            assert len((await down.session.list_tools()).tools) >= 50
            again = await wrong.session.call_tool("check_inbox", {"mailbox_id": "mbx_none"})
            assert_tool_error(again, "check_inbox", "401")
            processes = [wrong, down]
        assert_exited_cleanly(*processes)

    run_async(body)


# --- the stdio contract, without the SDK --------------------------------------------------


class Pipe:
    """A raw stdio conversation: one JSON-RPC message per line each way."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.lines: list[bytes] = []

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"jsonrpc": "2.0", **message}).encode() + b"\n")
        self.process.stdin.flush()

    def receive(self, limit: float = 30) -> dict[str, Any]:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], limit)
        assert ready, "no answer on stdout"
        line = self.process.stdout.readline()
        self.lines.append(line)
        message: dict[str, Any] = json.loads(line)
        assert message["jsonrpc"] == "2.0", line
        return message

    def request(self, ident: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send a request; return its answer (notifications before it are protocol too)."""
        self.send({"id": ident, "method": method, "params": params})
        while "id" not in (answer := self.receive()):
            pass
        assert answer["id"] == ident, answer
        return answer


def test_stdout_is_json_rpc_only_and_the_process_exits_when_stdin_closes(
    mm: Embedded, logs: Callable[[str], Path]
) -> None:
    with logs("raw").open("w+b") as errlog:
        process = subprocess.Popen(
            MCP_COMMAND,
            env=mcp_environment(mm.api_url, mm.admin_key, None),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errlog,
        )
        try:
            pipe = Pipe(process)
            hello = pipe.request(
                1,
                "initialize",
                {
                    "protocolVersion": mcp_types.LATEST_PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "raw-stdio-test", "version": "1"},
                },
            )
            assert "serverInfo" in hello["result"]
            pipe.send({"method": "notifications/initialized"})
            listed = pipe.request(2, "tools/list", {})
            assert len(listed["result"]["tools"]) >= 50
            ok = pipe.request(3, "tools/call", {"name": "list_mailboxes", "arguments": {}})
            assert ok["result"]["isError"] is False
            failed = pipe.request(
                4, "tools/call", {"name": "read_email", "arguments": {"email_id": "msg_nope"}}
            )
            assert failed["result"]["isError"] is True
            assert "404" in failed["result"]["content"][0]["text"]

            assert process.stdin is not None
            assert process.stdout is not None
            process.stdin.close()  # what a client does to end the session
            status = process.wait(timeout=30)
            rest = process.stdout.read()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
        errlog.seek(0)
        errors = errlog.read()
    assert status == 0, errors
    assert b"Traceback" not in errors
    # anything the server wrote after the last answer must be protocol too
    for line in rest.splitlines():
        assert json.loads(line)["jsonrpc"] == "2.0", line
