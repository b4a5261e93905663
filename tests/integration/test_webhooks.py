"""Webhooks end to end (PRODUCT.md §9): an email arrives over SMTP and reaches a real
``http.server`` receiver as one signed JSON event that the Standard Webhooks reference
library verifies; failures are retried, 410 disables, dead letters are replayable; the
event stream and ``wait_for_email`` deliver the same event with no public URL.

The server runs with ``--webhook-allow-private`` (the receiver is on 127.0.0.1); one test
runs a second server without it to show such URLs refused. Time is injected: the test moves
the service clock forward instead of waiting for the retry schedule.
"""

from __future__ import annotations

import json
import smtplib
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from multimail.embedded import Embedded, run_embedded
from tests.integration.conftest import Api, Tenant, assert_problem
from tests.integration.conftest import eventually as _eventually


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 answering from a script (default 200)."""

    server: ThreadingHTTPServer
    script: list[int] = field(default_factory=list)
    got: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def bodies(self, type_: str | None = None) -> list[dict]:
        with self.lock:
            found = [json.loads(b) for _, b, code in self.got if 200 <= code < 300]
        return [b for b in found if type_ is None or b["type"] == type_]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    holder: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            r = holder["r"]
            with r.lock:
                code = r.script.pop(0) if r.script else 200
                r.got.append(({k.lower(): v for k, v in self.headers.items()}, body, code))
            self.send_response(code)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder["r"] = Receiver(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield holder["r"]
    server.shutdown()


@pytest.fixture(scope="module")
def mm() -> Iterator[Embedded]:
    with run_embedded(webhook_allow_private=True) as server:
        yield server


@pytest.fixture
def tenant(plain_tenant: Tenant) -> Tenant:
    return plain_tenant


def deliver_mail(mm: Embedded, to: str, subject: str) -> None:
    raw = (
        f"From: Alice <alice@outside.example>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@outside.example>\r\n"
        "Date: Wed, 25 Nov 2026 10:00:00 +0000\r\n\r\nHello agent.\r\n\r\n"
        "On Tue, Bob wrote:\r\n> earlier text\r\n"
    ).encode()
    with smtplib.SMTP("127.0.0.1", mm.smtp_port, timeout=10) as client:
        client.sendmail("alice@outside.example", [to], raw)


def eventually(probe, *, timeout: float = 15.0, what: str = ""):
    """The shared helper with a longer default: webhooks go through fan-out and a worker,
    and CI machines are busy."""
    return _eventually(probe, timeout=timeout, what=what)


def subscribe(tenant: Tenant, receiver: Receiver, events: list[str]) -> dict:
    body = {"url": receiver.url, "events": events}
    return tenant.admin.ok("POST", "/v1/webhooks", body, expect=201)


def pending_after(tenant: Tenant, webhook_id: str, attempts: int) -> bool:
    log = tenant.admin.ok("GET", "/v1/webhook-deliveries", params={"webhook_id": webhook_id})
    return any(d["status"] == "pending" and d["attempts"] == attempts for d in log["deliveries"])


def dead_letters(tenant: Tenant) -> list[dict]:
    log = tenant.admin.ok("GET", "/v1/webhook-deliveries")["deliveries"]
    return [d for d in log if d["status"] == "dead"]


def verify(secret: str, headers: dict[str, str], body: bytes) -> dict:
    return Webhook(secret).verify(body, headers)


def test_an_email_reaches_the_mailbox_webhook_signed_and_complete(
    tenant: Tenant, receiver: Receiver
):
    box = tenant.mailbox("hooked", webhook_url=receiver.url)
    secret = box["webhook_secret"]
    assert secret.startswith("whsec_")
    deliver_mail(tenant.mm, box["address"], "Invoice 9")
    eventually(lambda: receiver.bodies("message.received"), what="the webhook", timeout=10)
    headers, body, _ = next(g for g in receiver.got if b"message.received" in g[1])
    payload = verify(secret, headers, body)
    assert payload["type"] == "message.received"
    assert payload["mailbox_id"] == box["id"]
    data = payload["data"]
    assert data["subject"] == "Invoice 9"
    assert data["from"] == "alice@outside.example"
    assert "Hello agent." in data["text"]
    assert "earlier text" not in data["reply_text"]
    assert data["thread_id"].startswith("thr_")
    assert "signals" in data
    assert headers["webhook-id"].startswith("whd_")
    # an agent's own endpoint never hears of the operator's business (P3)
    assert not [b for b in receiver.bodies() if b["type"].startswith("oversight.")]


def test_failures_are_retried_with_the_same_id_until_delivered(tenant: Tenant, receiver: Receiver):
    receiver.script[:] = [500, 503]
    made = subscribe(tenant, receiver, ["mailbox.created"])
    tenant.mailbox("trigger")
    service = tenant.mm.service
    for attempts in (1, 2):  # move time past each retry instead of waiting for it
        # the failed attempt is recorded (its retry scheduled) before time moves on
        eventually(lambda n=attempts: pending_after(tenant, made["id"], n), what="a failure")
        seen = len(receiver.got)
        service.clock = _shifted(service.clock, 3_600_000)
        eventually(lambda seen=seen: len(receiver.got) > seen, what="a retry")
    ids = {h["webhook-id"] for h, _, _ in receiver.got}
    assert len(ids) == 1  # at-least-once with a stable id: receivers dedupe on it
    assert [code for _, _, code in receiver.got] == [500, 503, 200]
    verify(made["signing_secret"], receiver.got[-1][0], receiver.got[-1][1])
    log = tenant.admin.ok("GET", "/v1/webhook-deliveries", params={"webhook_id": made["id"]})
    [entry] = log["deliveries"]
    assert entry["status"] == "delivered"
    assert entry["attempts"] == 3
    assert entry["response_status"] == 200


def test_410_disables_the_endpoint_and_a_replay_revives_it(tenant: Tenant, receiver: Receiver):
    receiver.script[:] = [410]
    made = subscribe(tenant, receiver, ["mailbox.created"])
    tenant.mailbox("gone")
    entry = eventually(lambda: dead_letters(tenant), what="a dead letter")[0]
    assert tenant.admin.ok("GET", f"/v1/webhooks/{made['id']}")["status"] == "disabled"
    tenant.mailbox("ignored")  # a disabled endpoint gets nothing new
    time.sleep(0.3)
    assert len(receiver.got) == 1
    tenant.admin.ok("POST", f"/v1/webhook-deliveries/{entry['id']}/replay", expect=202)
    eventually(lambda: len(receiver.got) == 2, what="the replay")
    assert receiver.got[0][0]["webhook-id"] == receiver.got[1][0]["webhook-id"]
    assert tenant.admin.ok("GET", f"/v1/webhooks/{made['id']}")["status"] == "active"


def test_rotation_signs_with_both_secrets_for_a_while(tenant: Tenant, receiver: Receiver):
    made = subscribe(tenant, receiver, ["mailbox.created"])
    rotated = tenant.admin.ok("POST", f"/v1/webhooks/{made['id']}/rotate-secret")
    assert rotated["signing_secret"] != made["signing_secret"]
    tenant.mailbox("rotated")
    eventually(lambda: receiver.got, what="a delivery")
    headers, body, _ = receiver.got[0]
    assert len(headers["webhook-signature"].split()) == 2
    verify(made["signing_secret"], headers, body)
    verify(rotated["signing_secret"], headers, body)


def test_subscriptions_filter_by_type_and_mailbox(tenant: Tenant, receiver: Receiver):
    a = tenant.mailbox("scope-a")
    b = tenant.mailbox("scope-b")
    tenant.admin.ok("POST", "/v1/webhooks", {"url": receiver.url,
                    "events": ["message.received"], "mailbox_id": a["id"]}, expect=201)  # fmt: skip
    deliver_mail(tenant.mm, b["address"], "for b")
    deliver_mail(tenant.mm, a["address"], "for a")
    eventually(lambda: receiver.bodies("message.received"), what="a's mail")
    time.sleep(0.3)
    assert [p["data"]["subject"] for p in receiver.bodies()] == ["for a"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x",
        "http://10.0.0.1/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x",
        "http://localhost/x",
        "http://user:pw@93.184.216.34/x",
        "ftp://example.com/x",
    ],
)
def test_private_and_odd_urls_are_refused_by_default(url: str):
    with run_embedded() as server:
        admin = Api(server.api_url, server.admin_key)
        answer = admin.post("/v1/webhooks", {"url": url})
        assert_problem(answer, 422, "invalid_value")
        box = admin.post("/v1/mailboxes", {"name": "x", "webhook_url": url})
        assert_problem(box, 422, "invalid_value")
        admin.close()


def test_the_stream_and_wait_for_email_deliver_without_a_public_url(tenant: Tenant):
    box = tenant.mailbox("pull")
    agent = tenant.agent(box["id"])
    got: dict[str, object] = {}

    def wait() -> None:
        got["wait"] = agent.ok("GET", f"/v1/mailboxes/{box['id']}/wait",
                               params={"timeout_seconds": 20}, timeout=30)  # fmt: skip

    waiter = threading.Thread(target=wait)
    waiter.start()
    stream_lines: list[str] = []

    def stream() -> None:
        with httpx.stream("GET", f"{tenant.mm.api_url}/v1/events/stream",
                          headers={"Authorization": f"Bearer {agent.secret}"},
                          params={"mailbox_id": box["id"]}, timeout=30) as response:  # fmt: skip
            for line in response.iter_lines():
                stream_lines.append(line)
                if line.startswith("data:") and "message.received" in line:
                    return

    streamer = threading.Thread(target=stream)
    streamer.start()
    time.sleep(0.5)
    deliver_mail(tenant.mm, box["address"], "No public URL")
    waiter.join(25)
    streamer.join(25)
    result = got["wait"]
    assert result["timed_out"] is False  # type: ignore[index]
    assert result["email"]["subject"] == "No public URL"  # type: ignore[index]
    data = json.loads(next(line for line in stream_lines if line.startswith("data:"))[5:])
    assert data["type"] == "message.received"
    assert data["data"]["subject"] == "No public URL"
    assert any(line.startswith("id: ") for line in stream_lines)
    timed = agent.ok("GET", f"/v1/mailboxes/{box['id']}/wait", params={"timeout_seconds": 1})
    assert timed == {"email": None, "timed_out": True, "cursor": timed["cursor"]}


def _shifted(clock, by_ms: int):
    return lambda: clock() + by_ms


def test_a_receiver_that_is_down_gets_the_event_once_it_is_back(tenant: Tenant):
    """Connection refused is retried like any failure; nothing is lost meanwhile."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hook"
    made = tenant.admin.ok("POST", "/v1/webhooks", {"url": url, "events": ["mailbox.created"]},
                           expect=201)  # fmt: skip
    tenant.mailbox("while-down")
    log = eventually(
        lambda: [d for d in tenant.admin.ok("GET", "/v1/webhook-deliveries",
                 params={"webhook_id": made["id"]})["deliveries"] if d["attempts"] >= 1],
        what="a failed attempt",
    )  # fmt: skip
    assert log[0]["status"] == "pending"
    assert log[0]["response_status"] is None
    got: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(self.rfile.read(int(self.headers.get("content-length", 0))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        service = tenant.mm.service
        service.clock = _shifted(service.clock, 3_600_000)  # past the retry, without waiting
        eventually(lambda: got, what="the retried delivery")
        assert json.loads(got[0])["type"] == "mailbox.created"
    finally:
        server.shutdown()
