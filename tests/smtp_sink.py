"""A real SMTP sink for tests: aiosmtpd on a free loopback port, recording every message.

``replies`` maps a recipient address to the RCPT reply the sink gives it (e.g.
``"550 5.1.1 no such user"`` or ``"451 4.3.0 try later"``); others are accepted.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpts: tuple[str, ...]
    data: bytes


@dataclass
class _Handler:
    replies: dict[str, str] = field(default_factory=dict)
    messages: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list
    ) -> str:
        reply = self.replies.get(address.lower())
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            self.messages.append(
                Received(
                    envelope.mail_from or "",
                    tuple(envelope.rcpt_tos),
                    envelope.original_content or b"",
                )
            )
        return "250 2.0.0 OK"


class Sink:
    def __init__(self, controller: Controller, handler: _Handler) -> None:
        self.controller = controller
        self.handler = handler

    @property
    def port(self) -> int:
        return int(self.controller.port)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def messages(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.messages)

    def reply(self, address: str, text: str) -> None:
        self.handler.replies[address.lower()] = text

    def to(self, address: str) -> list[Received]:
        return [m for m in self.messages if address.lower() in (r.lower() for r in m.rcpts)]

    def wait(self, address: str, count: int = 1, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.to(address)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(
            f"the sink got {len(self.to(address))} message(s) for {address}, wanted {count}"
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def smtp_sink(port: int | None = None) -> Iterator[Sink]:
    """A sink on a free port, or on ``port`` (to restart 'the same relay')."""
    handler = _Handler()
    controller = Controller(handler, hostname="127.0.0.1", port=port or free_port())
    controller.start()
    try:
        yield Sink(controller, handler)
    finally:
        controller.stop()


__all__ = ["Received", "Sink", "free_port", "smtp_sink"]
