"""A real ``multimail serve`` process on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


@dataclass
class Served:
    url: str
    admin_key: str
    process: subprocess.Popen[bytes]
    data_dir: Path
    smtp_port: int = 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    data_dir: Path,
    *extra: str,
    admin_key: str = "mm_live_e2e_admin_key",
    cwd: Path | None = None,
    defaults: bool = False,
) -> Served:
    """Run ``multimail serve``; with ``defaults`` it uses the default --db and --data-dir
    (./var under ``cwd``), as ``make serve`` does."""
    port = free_port()
    smtp_port = free_port()
    smtp = [] if "--smtp" in extra else ["--smtp", f"127.0.0.1:{smtp_port}"]
    env = {k: v for k, v in os.environ.items() if k != "MULTIMAIL_ADMIN_KEY"}
    if admin_key:
        env["MULTIMAIL_ADMIN_KEY"] = admin_key
    where = (
        [] if defaults else ["--db", f"sqlite:///{data_dir / 'mm.db'}", "--data-dir", str(data_dir)]
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "multimail.cli",
            "serve",
            "--http",
            f"127.0.0.1:{port}",
            *smtp,
            *where,
            *extra,
        ],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(process.stdout.read().decode() if process.stdout else "exited")
        try:
            if httpx.get(f"{url}/health", timeout=1).json() == {"status": "ok"}:
                return Served(url, admin_key, process, data_dir, smtp_port)
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("multimail serve did not become healthy in 30 s")


def stop_server(served: Served) -> int:
    served.process.terminate()
    try:
        return served.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        served.process.kill()
        return served.process.wait()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = start_server(tmp_path, "--domain", "multimail.dev")
    yield s
    assert stop_server(s) == 0
