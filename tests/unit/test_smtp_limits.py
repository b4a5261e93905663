"""Session limits of the inbound SMTP server (spec/smtp.toml [limits]): connections over the
limit are answered 421 and closed, and a freed slot is usable again."""

from __future__ import annotations

import asyncio
import smtplib
import threading
from collections.abc import Iterator

import pytest

from multimail.service import Config, Service
from multimail.smtp_in import InboundServer
from multimail.store.memory import MemoryStore
from tests.smtp_sink import free_port


@pytest.fixture
def server() -> Iterator[InboundServer]:
    counter = iter(range(10**9))
    service = Service(
        MemoryStore(),
        clock=lambda: 1_700_000_000_000,
        new_ulid=lambda: f"01JDQ8ZK3V5T7W9X2B4C{next(counter):06d}",
        config=Config(domain="limits.test"),
    )
    inbound = InboundServer(service, "127.0.0.1", free_port(), hostname="limits.test",
                            max_sessions=2)  # fmt: skip
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(inbound.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(5)
    yield inbound
    asyncio.run_coroutine_threadsafe(inbound.stop(grace=1), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_connections_over_the_limit_get_421_and_a_freed_slot_is_reused(server: InboundServer):
    first = smtplib.SMTP("127.0.0.1", server.port, timeout=5)
    second = smtplib.SMTP("127.0.0.1", server.port, timeout=5)
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtplib.SMTP("127.0.0.1", server.port, timeout=5)
    assert refused.value.smtp_code == 421
    assert first.noop()[0] == 250
    first.quit()
    for _ in range(50):  # the server notices the closed connection asynchronously
        if server.limits.open < 2:
            break
        threading.Event().wait(0.02)
    third = smtplib.SMTP("127.0.0.1", server.port, timeout=5)
    assert third.noop()[0] == 250
    third.quit()
    second.quit()


def test_noop_loops_are_cut_off(server: InboundServer):
    client = smtplib.SMTP("127.0.0.1", server.port, timeout=5)
    codes = [client.noop()[0] for _ in range(21)]
    assert codes[:20] == [250] * 20
    assert codes[20] == 421
    client.close()
