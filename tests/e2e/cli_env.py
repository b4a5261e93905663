"""Running the ``multimail`` CLI as a real subprocess against one embedded server.

``embedded_cli()`` starts the server and yields an ``Env`` whose methods run
``python -m multimail.cli ...`` with ``MULTIMAIL_API_URL``/``MULTIMAIL_API_KEY`` pointing at
it. Mailbox names are unique per process, so tests share the server without seeing each
other's mail. ``run_on_tty`` gives the command a pseudo-terminal for stdout or stderr, to
see what a person at a terminal would.
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
