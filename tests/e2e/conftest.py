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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(data_dir: Path, *extra: str, admin_key: str = "mm_live_e2e_admin_key") -> Served:
    port = free_port()
    env = {**os.environ, "MULTIMAIL_ADMIN_KEY": admin_key}
    process = subprocess.Popen(
        [
            sys.executable, "-m", "multimail.cli", "serve",
            "--db", f"sqlite:///{data_dir / 'mm.db'}",
            "--http", f"127.0.0.1:{port}",
            "--data-dir", str(data_dir),
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(process.stdout.read().decode() if process.stdout else "exited")
        try:
            if httpx.get(f"{url}/health", timeout=1).json() == {"status": "ok"}:
                return Served(url, admin_key, process, data_dir)
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
