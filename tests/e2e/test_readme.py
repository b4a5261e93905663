"""README.md's quickstart and examples, run as written against a real ``multimail serve``.

The only substitutions: the server listens on free ports instead of 8025 and 2525, and
``.venv/bin/`` points at this interpreter's environment.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client

from multimail.embedded import run_embedded
from tests.e2e.conftest import start_server, stop_server

README = Path(__file__).parents[2] / "README.md"
BIN = Path(sys.executable).parent


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def blocks(text: str) -> list[tuple[str, str]]:
    return re.findall(r"```(\w+)\n(.*?)```", text, flags=re.S)


def test_quickstart_runs_top_to_bottom(tmp_path):
    quick = blocks(section("Quickstart"))
    langs = [lang for lang, _ in quick]
    assert langs == ["sh", "sh", "json", "sh", "sh", "python", "sh", "sh", "sh", "text"], langs
    assert quick[0][1].strip() == "make serve"
    served = start_server(tmp_path / "var", admin_key="", cwd=tmp_path, defaults=True)
    url = served.url
    try:
        script = ["set -euo pipefail"]
        for lang, body in quick[1:]:
            body = body.replace("http://127.0.0.1:8025", url).replace(".venv/bin/", f"{BIN}/")
            body = body.replace('"127.0.0.1", 2525', f'"127.0.0.1", {served.smtp_port}')
            if lang == "sh":
                script.append(body)
            elif lang == "python":
                (tmp_path / "quickstart.py").write_text(body)
                script.append(f"{BIN}/python quickstart.py")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MULTIMAIL_")}
        env["PATH"] = f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}"
        run = subprocess.run(
            ["bash", "-c", "\n".join(script)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        out = run.stdout
        assert '"address":"support-agent@default.agents.localhost"' in out
        assert "From: customer@default.agents.localhost  Subject: Order 42" in out
        assert "Where is my order?" in out
        assert re.search(r"pending apr_\w+", out)
        assert "refused: forbidden" in out
        assert "Re: Order 42" in out  # the approved reply reached the customer
        assert "audit log intact" in out
        assert "Invoice 7" in out  # the SMTP message reached the support agent
        assert re.search(
            r"verified: sent by mailbox mbx_\w+ <support-agent@default\.agents\.localhost>", out
        ), out
        assert re.search(r"mode gated_send, human approved: yes \(key_\w+\), DKIM pass", out), out
    finally:
        assert stop_server(served) == 0


def test_embedded_example_runs():
    (lang, body), *_ = blocks(section("Test your agent against a real MultiMail"))
    assert lang == "python"
    run = subprocess.run([sys.executable, "-c", body], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def test_core_library_example_runs():
    (_, body), *_ = blocks(section("Using the core as a library"))
    run = subprocess.run([sys.executable, "-c", body], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "Verdict.HOLD gated_all_holds_send"


def test_mcp_client_configuration_starts_the_stdio_server():
    """The README's MCP client configuration, as a client would run it: its command, args
    and env (pointed at a real server) give a session offering the tools."""
    (lang, body), *_ = blocks(section("Plug an agent in over MCP"))
    assert lang == "json"
    config = json.loads(body)["mcpServers"]["multimail"]
    assert config["args"] == ["mcp"]
    assert Path(config["command"]).name == "multimail"
    assert set(config["env"]) == {"MULTIMAIL_API_URL", "MULTIMAIL_API_KEY", "MULTIMAIL_MAILBOX_ID"}

    async def session(api_url: str, key: str, mailbox_id: str) -> tuple[int, str]:
        env = {**os.environ, **config["env"]}
        env |= {"MULTIMAIL_API_URL": api_url, "MULTIMAIL_API_KEY": key}
        env["MULTIMAIL_MAILBOX_ID"] = mailbox_id
        params = StdioServerParameters(command=f"{BIN}/multimail", args=config["args"], env=env)
        async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            tools = (await s.list_tools()).tools
            mailbox = await s.call_tool("get_mailbox", {})  # the env's default mailbox
            assert not mailbox.is_error, mailbox
            return len(tools), mailbox.structured_content["address"]

    with run_embedded() as mm:
        box = mm.client.create_mailbox(name="readme-mcp")
        count, address = anyio.run(session, mm.api_url, mm.admin_key, box.mailbox_id)
    assert count >= 50
    assert address == box.address
