"""``multimail mcp`` as a real subprocess, driven by the MCP SDK's ClientSession over stdio.

``stdio_session(...)`` spawns ``python -m multimail.cli mcp`` with ``MULTIMAIL_API_URL``,
``MULTIMAIL_API_KEY`` and (optionally) ``MULTIMAIL_MAILBOX_ID`` set, initializes a session
and yields an ``McpProcess``. The command runs under ``sh`` only so that its exit status
is written to its stderr file once it exits on its own: when the client closes, the SDK
closes the server's stdin and, after a grace period, kills the process group (taking
``sh`` with it), so ``exit_status()`` is ``None`` unless the server exited by itself.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp_types import CallToolResult, TextContent

MCP_COMMAND = [sys.executable, "-m", "multimail.cli", "mcp"]
_EXIT_LINE = "multimail-mcp-exit-status"
_WRAPPER = f'"$@"; echo "{_EXIT_LINE} $?" >&2'
_OWN_VARIABLES = ("MULTIMAIL_API_URL", "MULTIMAIL_API_KEY", "MULTIMAIL_MAILBOX_ID")


@dataclass
class McpProcess:
    """One stdio MCP server process: its initialized session and its stderr file."""

    session: ClientSession
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def exit_status(self) -> int | None:
        """The server's exit status if it exited on its own, else None (killed, running)."""
        found = re.findall(rf"^{_EXIT_LINE} (\d+)$", self.stderr(), flags=re.MULTILINE)
        return int(found[-1]) if found else None


def mcp_environment(api_url: str, api_key: str | None, mailbox_id: str | None) -> dict[str, str]:
    """This process's environment with only the given MultiMail settings."""
    env = {k: v for k, v in os.environ.items() if k not in _OWN_VARIABLES}
    env["MULTIMAIL_API_URL"] = api_url
    if api_key is not None:
        env["MULTIMAIL_API_KEY"] = api_key
    if mailbox_id is not None:
        env["MULTIMAIL_MAILBOX_ID"] = mailbox_id
    return env


@asynccontextmanager
async def stdio_session(
    api_url: str, api_key: str, stderr_path: Path, *, mailbox_id: str | None = None
) -> AsyncIterator[McpProcess]:
    """Spawn ``multimail mcp`` and yield its initialized session; on exit the client
    closes the connection and the SDK stops the process."""
    params = StdioServerParameters(
        command="sh",
        args=["-c", _WRAPPER, "sh", *MCP_COMMAND],
        env=mcp_environment(api_url, api_key, mailbox_id),
    )
    with stderr_path.open("w", encoding="utf-8") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield McpProcess(session, stderr_path)


def text_of(result: CallToolResult) -> str:
    """All text blocks of a tool result, joined."""
    return "\n".join(b.text for b in result.content if isinstance(b, TextContent))
