"""Shared pieces of the interoperability tests: real SMTP peers (swaks, Postfix, smtplib, a
raw socket) against a real MultiMail on 127.0.0.1.

Rule 1: what landed is read back through the HTTP API (listing, ``/v1/emails/{id}``,
        ``/raw``), never from the store directly.
Rule 2: waits poll a probe until a deadline (``eventually``); nothing sleeps blindly.
Rule 3: ``RawSmtp`` writes bytes exactly as given, so the server sees what a careless or
        hostile client would send (smtplib would normalise line endings of ``str`` data).
Rule 4: ``wire_bytes`` is the one place that states what smtplib puts on the wire for a
        message: line endings made CRLF, a final CRLF added when missing. The server must
        store exactly those bytes (dot-stuffing is undone on receipt, RFC 5321 §4.5.2).
"""

from __future__ import annotations

import re
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import httpx
import pytest

from multimail.embedded import Embedded, run_embedded
from tests.integration.conftest import eventually

T = TypeVar("T")

RATE_LIMIT_RETRIES = 30

_EOL = re.compile(rb"(?:\r\n|\n|\r(?!\n))")
_STORED_AS = re.compile(r"stored as ((?:msg_\w+ ?)+)")


def wire_bytes(data: bytes) -> bytes:
    """What the server must store for ``data`` sent by smtplib (Rule 4)."""
    fixed = _EOL.sub(b"\r\n", data)
    return fixed if fixed.endswith(b"\r\n") else fixed + b"\r\n"


def dot_stuffed(data: bytes) -> bytes:
    """``data`` as DATA content ending in the terminator; only CRLF starts a line (§4.5.2)."""
    stuffed = re.sub(rb"(?:^|(?<=\r\n))\.", b"..", data)
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


def stored_ids(reply_text: str) -> list[str]:
    """The message ids our server names in its ``250 ... stored as msg_…`` reply."""
    found = _STORED_AS.search(reply_text)
    return found.group(1).split() if found else []


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Reply:
    code: int
    text: str  # every line's text after the code, joined by "\n"

    @classmethod
    def parse(cls, lines: list[bytes]) -> Reply:
        code = int(lines[-1][:3])
        text = "\n".join(line[4:].rstrip(b"\r\n").decode("utf-8", "replace") for line in lines)
        return cls(code, text)


class RawSmtp:
    """An SMTP client socket that sends bytes verbatim and reads replies (Rule 3)."""

    def __init__(self, port: int, *, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rwb")
        self.greeting = self.reply()

    def __enter__(self) -> RawSmtp:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.file.write(data)
        self.file.flush()

    def reply(self) -> Reply:
        lines: list[bytes] = []
        while True:
            self._quick_ack()
            line = self.file.readline()
            if not line:
                raise ConnectionError(f"server closed the connection after {lines!r}")
            lines.append(line)
            if line[3:4] != b"-":
                return Reply.parse(lines)

    def _quick_ack(self) -> None:
        """ACK at once, so a multi-line reply written line by line by a server without
        TCP_NODELAY is not held back by Nagle for our delayed ACK (~40 ms a reply)."""
        quickack = getattr(socket, "TCP_QUICKACK", None)
        if quickack is not None:
            self.sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)

    def command(self, line: str) -> Reply:
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def close(self) -> None:
        try:
            self.file.close()
        finally:
            self.sock.close()


class Api:
    """httpx against the server with the bootstrap admin key.

    One connection per request: the embedded server's listening socket is made with
    protocol 0, so asyncio never sets TCP_NODELAY on its connections, and on a kept-alive
    connection each response then waits ~40 ms for a delayed ACK (Nagle).
    """

    def __init__(self, base_url: str, key: str) -> None:
        headers = {"Authorization": f"Bearer {key}", "Connection": "close"}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=30)

    def request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """One request; a 429 is waited out as its ``Retry-After`` asks (the limit is per
        key, and the corpus tests make a few hundred requests with one key)."""
        for _ in range(RATE_LIMIT_RETRIES):
            response = self.http.request(method, path, json=body)
            if response.status_code != 429:
                return response
            time.sleep(float(response.headers.get("retry-after", "1")))
        return response

    def ok(self, method: str, path: str, body: Any = None, *, expect: int = 200) -> Any:
        response = self.request(method, path, body)
        assert response.status_code == expect, (method, path, response.status_code, response.text)
        return response.json()

    def mailbox(self, prefix: str) -> dict[str, Any]:
        body = {"name": unique(prefix), "oversight_mode": "autonomous"}
        return dict(self.ok("POST", "/v1/mailboxes", body, expect=201))

    def inbound(self, mailbox_id: str) -> list[dict[str, Any]]:
        """Every inbound message of the mailbox, following ``next_cursor``."""
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"direction": "inbound", "limit": 100}
        while True:
            page = self.ok("GET", f"/v1/mailboxes/{mailbox_id}/emails?{_query(params)}")
            found.extend(page["emails"])
            if not page["next_cursor"]:
                return found
            params["cursor"] = page["next_cursor"]

    def wait_inbound(self, mailbox_id: str, count: int = 1) -> list[dict[str, Any]]:
        def enough() -> list[dict[str, Any]]:
            got = self.inbound(mailbox_id)
            return got if len(got) >= count else []

        return eventually(enough, what=f"{count} inbound message(s) in {mailbox_id}")

    def email(self, email_id: str) -> dict[str, Any]:
        return dict(self.ok("GET", f"/v1/emails/{email_id}"))

    def raw(self, email_id: str) -> bytes:
        response = self.request("GET", f"/v1/emails/{email_id}/raw")
        assert response.status_code == 200, (email_id, response.status_code, response.text)
        return response.content

    def close(self) -> None:
        self.http.close()


def _query(params: dict[str, Any]) -> str:
    return str(httpx.QueryParams(params))


@pytest.fixture(scope="module")
def server() -> Iterator[Embedded]:
    """One in-process MultiMail per module; sender checks off (no DNS on loopback)."""
    with run_embedded(dns="off") as mm:
        yield mm


@pytest.fixture(scope="module")
def api(server: Embedded) -> Iterator[Api]:
    client = Api(server.api_url, server.admin_key)
    yield client
    client.close()
