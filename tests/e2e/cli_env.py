"""Running the ``multimail`` CLI as a real subprocess against one embedded server.

``embedded_cli()`` starts the server and yields an ``Env`` whose methods run
``python -m multimail.cli ...`` with ``MULTIMAIL_API_URL``/``MULTIMAIL_API_KEY`` pointing at
it. Mailbox names are unique per process, so tests share the server without seeing each
other's mail. ``run_on_tty`` gives the command a pseudo-terminal for stdout or stderr, to
see what a person at a terminal would. ``fake_api`` stands in for a server that answers
what the real one would not (a failure halfway, a reply the CLI does not expect).
"""

from __future__ import annotations

import itertools
import json
import os
import pty
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from multimail.embedded import Embedded, run_embedded

_names = itertools.count(1)


def unique(stem: str) -> str:
    """A mailbox local part no other test (or worker process) uses."""
    return f"cli{os.getpid()}x{next(_names)}-{stem}"


@dataclass
class Env:
    mm: Embedded
    reviewer_key: str  # scope oversight: may decide what the admin key sent

    def environ(self, key: str | None = None, url: str | None = None) -> dict[str, str]:
        return {
            **os.environ,
            "MULTIMAIL_API_URL": url or self.mm.api_url,
            "MULTIMAIL_API_KEY": self.mm.admin_key if key is None else key,
        }

    def run(
        self, *args: str, key: str | None = None, input: str | None = None, url: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "multimail.cli", *args],
            env=self.environ(key, url),
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def ok(self, *args: str, **kwargs: Any) -> str:
        done = self.run(*args, **kwargs)
        assert done.returncode == 0, (args, done.returncode, done.stderr)
        assert "Traceback" not in done.stderr
        return done.stdout

    def json(self, *args: str, **kwargs: Any) -> Any:
        return json.loads(self.ok(*args, "--json", **kwargs))

    def raw(self, *args: str, key: str | None = None) -> bytes:
        """stdout as bytes, for commands that print binary data."""
        done = subprocess.run(
            [sys.executable, "-m", "multimail.cli", *args],
            env=self.environ(key),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, (args, done.returncode, done.stderr)
        return done.stdout

    def fails(self, code: int, *args: str, **kwargs: Any) -> str:
        done = self.run(*args, **kwargs)
        assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        return lines[0]

    def mailbox(self, mode: str) -> dict[str, Any]:
        box: dict[str, Any] = self.json("mailboxes", "create", unique(mode), "--mode", mode)
        return box

    def run_on_tty(self, *args: str, tty: str) -> tuple[int, str, str]:
        """Run with ``tty`` ("stdout" or "stderr") on a pseudo-terminal, the other stream
        captured: (exit code, captured text, what the terminal received)."""
        leader, follower = pty.openpty()
        received = bytearray()

        def drain() -> None:
            while True:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # EIO: the last writer closed the terminal
                    return
                if not chunk:
                    return
                received.extend(chunk)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, tty: follower}
        env = {**self.environ(), "TERM": "xterm-256color", "COLUMNS": "100"}
        env.pop("NO_COLOR", None)
        try:
            with subprocess.Popen(
                [sys.executable, "-m", "multimail.cli", *args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=streams["stdout"],
                stderr=streams["stderr"],
            ) as process:
                os.close(follower)
                out, err = process.communicate(timeout=60)
            reader.join(timeout=10)
        finally:
            os.close(leader)
        captured = (err if tty == "stdout" else out) or b""
        return process.returncode, captured.decode(), received.decode(errors="replace")


@contextmanager
def embedded_cli(**options: Any) -> Iterator[Env]:
    """An embedded server (``options`` as for ``run_embedded``) and an Env pointing at it."""
    with run_embedded(**options) as mm:
        reviewer = mm.client.create_api_key("reviewer", scopes=["oversight"])
        yield Env(mm, reviewer.api_key)


def wait_for(predicate: Any, timeout: float = 15.0) -> Any:
    """Poll (through the SDK, not the CLI, to keep it quick) until ``predicate()`` is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


@contextmanager
def fake_api(routes: Mapping[str, tuple[int, Any]]) -> Iterator[str]:
    """A stand-in server on 127.0.0.1; yields its URL. A GET of a path in ``routes`` (the
    query ignored) answers ``(status, body)``: bytes as a message, anything else as JSON;
    any other request answers 404."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = routes.get(self.path.split("?")[0], (404, {"code": "not_found"}))
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            kind = "message/rfc822" if isinstance(body, bytes) else "application/json"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
