"""MultiMail in-process: the whole server on free loopback ports with a temporary SQLite file.

    from multimail.embedded import run_embedded

    with run_embedded() as mm:
        box = mm.client.create_mailbox(name="agent-1")
        ...  # point your agent at mm.api_url with a key from mm.client.create_api_key(...)

For pytest, ``multimail_server`` is a ready fixture: add
``pytest_plugins = ["multimail.embedded"]`` to your conftest.py.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from multimail.client import Client
from multimail.server import Runtime, Settings, bootstrap_admin, build_service
from multimail.service import Service, new_secret


@dataclass
class Embedded:
    api_url: str
    admin_key: str
    client: Client
    service: Service
    data_dir: Path
    domain: str
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 0


def _listening_socket(host: str) -> socket.socket:
    # IPPROTO_TCP given explicitly: asyncio sets TCP_NODELAY only on sockets whose proto
    # says TCP, and without it every small reply waits for the peer's delayed ACK (~40 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


@contextmanager
def run_embedded(
    *,
    domain: str = "agents.localhost",
    data_dir: str | Path | None = None,
    db: str | None = None,
    admin_key: str | None = None,
    relay: str | None = None,
    dns: str = "off",
    webhook_allow_private: bool = False,
    rate_limit: float = 100.0,
    public_url: str | None = None,
) -> Iterator[Embedded]:
    """Start the full server in a background thread; stop it and clean up on exit."""
    with tempfile.TemporaryDirectory(prefix="multimail-") as tmp:
        root = Path(data_dir) if data_dir is not None else Path(tmp)
        sock = _listening_socket("127.0.0.1")
        port = sock.getsockname()[1]
        smtp_sock = _listening_socket("127.0.0.1")
        smtp_port = smtp_sock.getsockname()[1]
        settings = Settings(
            db=db or f"sqlite:///{root / 'multimail.db'}",
            http=f"127.0.0.1:{port}",
            smtp=f"127.0.0.1:{smtp_port}",
            domain=domain,
            data_dir=str(root),
            admin_key=admin_key or new_secret(),
            relay=relay,
            dns=dns,
            webhook_allow_private=webhook_allow_private,
            rate_limit=rate_limit,
            public_url=public_url,
        )
        service = build_service(settings)
        bootstrap_admin(service, settings)
        runtime = Runtime(service, settings, sock=sock, smtp_sock=smtp_sock)
        loop = asyncio.new_event_loop()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(runtime.serve())
            except BaseException as exc:  # surfaced to the caller below
                failure.append(exc)

        thread = threading.Thread(target=run, name="multimail-embedded", daemon=True)
        thread.start()
        deadline = 200
        while not runtime.ready.is_set() and thread.is_alive() and deadline:
            threading.Event().wait(0.05)
            deadline -= 1
        if failure or not runtime.ready.is_set():
            raise RuntimeError(f"embedded MultiMail failed to start: {failure[:1]}")
        assert settings.admin_key is not None
        # where it listens (a public_url, when given, only names links in what it returns)
        api_url = f"http://127.0.0.1:{port}"
        client = Client(api_key=settings.admin_key, base_url=api_url)
        try:
            yield Embedded(
                api_url,
                settings.admin_key,
                client,
                service,
                root,
                domain,
                smtp_port=smtp_port,
            )
        finally:
            client.close()
            loop.call_soon_threadsafe(runtime.stop)
            thread.join(timeout=15)
            sock.close()
            smtp_sock.close()
            service.store.close()


try:  # the pytest fixture, when pytest is present
    import pytest

    @pytest.fixture
    def multimail_server() -> Iterator[Embedded]:
        """A fresh, running MultiMail per test; yields an Embedded (api_url, admin client)."""
        with run_embedded() as mm:
            yield mm

except ImportError:  # pragma: no cover
    pass
