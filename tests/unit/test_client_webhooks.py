"""Webhooks, ``wait_for_email`` and the event stream in the SDK and the CLI, offline.

The SDK is driven through an ``httpx.MockTransport`` that records requests and replays
canned answers (streams included, cut short or broken on demand), as in
``test_client_offline``. The CLI runs in-process (``multimail.cli.main``) against a tiny
HTTP server on 127.0.0.1 that does the same, so argv, exit codes and output are real.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from multimail import cli
from multimail.client import (
    _SSE,
    APIConnectionError,
    AsyncClient,
    AuthenticationError,
    Client,
    NotFound,
    Result,
    ServerError,
    _backoff,
    _EventStream,
    _SSEDecoder,
)

BASE = "http://mm.test:8025"
KEY = "mm_live_testkey"
MBX = "mbx_01HZ9K2P3XQRV8TNWYD4G6F0E"
EVENT_STREAM = {"content-type": "text/event-stream"}


# --- a fake server behind httpx.MockTransport -------------------------------------------


class Chunks(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body sent in these chunks, then ended cleanly or broken by ``error``."""

    def __init__(self, chunks: list[bytes], error: Exception | None = None) -> None:
        self.chunks = chunks
        self.error = error

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.error is not None:
            raise self.error

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.error is not None:
            raise self.error


class Server:
    """Records requests; answers from a queue, then ``200 {}`` (never a stream, so a
    reconnecting loop ends in an error instead of running on)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.responses: list[httpx.Response | Exception] = []

    def reply(self, status: int = 200, body: Any = None) -> None:
        self.responses.append(httpx.Response(status, json=body) if body else httpx.Response(status))

    def stream(self, *chunks: bytes, error: Exception | None = None) -> None:
        self.responses.append(
            httpx.Response(200, headers=EVENT_STREAM, stream=Chunks(list(chunks), error))
        )

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.responses.pop(0) if self.responses else httpx.Response(200, json={})
        if isinstance(answer, Exception):
            raise answer
        return answer

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def body(request: httpx.Request) -> Any:
    request.read()
    return json.loads(request.content) if request.content else None


def query(request: httpx.Request) -> dict[str, str]:
    return dict(request.url.params)


def sse(seq: int, type: str = "message.received", **data: Any) -> bytes:
    payload = {"id": f"evt_{seq}", "type": type, "mailbox_id": MBX, "data": data}
    return f"id: {seq}\nevent: {type}\ndata: {json.dumps(payload)}\n\n".encode()


@pytest.fixture
def server() -> Server:
    return Server()


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    with Client(api_key=KEY, base_url=BASE, transport=httpx.MockTransport(server.handle)) as c:
        yield c


# --- webhook operations -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "method", "path", "sent", "params"),
    [
        (lambda c: c.list_webhooks(), "GET", "/v1/webhooks", None, {}),
        (lambda c: c.get_webhook("wh_1"), "GET", "/v1/webhooks/wh_1", None, {}),
        (lambda c: c.delete_webhook("wh_1"), "DELETE", "/v1/webhooks/wh_1", None, {}),
        (
            lambda c: c.rotate_webhook_secret("wh_1"),
            "POST",
            "/v1/webhooks/wh_1/rotate-secret",
            None,
            {},
        ),
        (
            lambda c: c.list_webhook_deliveries(),
            "GET",
            "/v1/webhook-deliveries",
            None,
            {"limit": "50"},
        ),
        (
            lambda c: c.list_webhook_deliveries(
                limit=5, cursor="c2", status="dead", webhook_id="wh_1"
            ),
            "GET",
            "/v1/webhook-deliveries",
            None,
            {"limit": "5", "cursor": "c2", "status": "dead", "webhook_id": "wh_1"},
        ),
        (
            lambda c: c.replay_webhook_delivery("dlv_1"),
            "POST",
            "/v1/webhook-deliveries/dlv_1/replay",
            None,
            {},
        ),
        (
            lambda c: c.create_webhook("https://hooks.example/in"),
            "POST",
            "/v1/webhooks",
            {"url": "https://hooks.example/in"},
            {},
        ),
        (
            lambda c: c.create_webhook("https://hooks.example/in", events=[]),
            "POST",
            "/v1/webhooks",
            {"url": "https://hooks.example/in", "events": []},
            {},
        ),
        (
            lambda c: c.create_webhook(
                "https://hooks.example/in", events="message.received", mailbox_id=MBX
            ),
            "POST",
            "/v1/webhooks",
            {"url": "https://hooks.example/in", "events": ["message.received"], "mailbox_id": MBX},
            {},
        ),
    ],
)
def test_each_webhook_operation_hits_its_route(
    client: Client,
    server: Server,
    call: Any,
    method: str,
    path: str,
    sent: Any,
    params: dict[str, str],
) -> None:
    call(client)
    assert (server.last.method, server.last.url.path) == (method, path)
    assert body(server.last) == sent
    assert query(server.last) == params


def test_create_webhook_returns_the_secret_and_sends_the_idempotency_key(
    client: Client, server: Server
) -> None:
    created = {
        "id": "wh_1",
        "url": "https://hooks.example/in",
        "events": ["message.received", "oversight.pending"],
        "mailbox_id": None,
        "status": "active",
        "signing_secret": "whsec_abc",
        "created_at": "2026-04-19T10:00:00Z",
    }
    server.reply(201, created)
    webhook = client.create_webhook(
        "https://hooks.example/in",
        events=("message.received", "oversight.pending"),
        idempotency_key="hook-1",
    )
    assert server.last.headers["idempotency-key"] == "hook-1"
    assert body(server.last)["events"] == ["message.received", "oversight.pending"]
    assert (webhook.id, webhook.signing_secret, webhook.mailbox_id) == ("wh_1", "whsec_abc", None)


def test_webhook_ids_are_escaped_and_a_204_is_an_empty_result(
    client: Client, server: Server
) -> None:
    server.reply(204)
    assert client.delete_webhook("../api-keys").to_dict() == {}
    client.replay_webhook_delivery("dlv_1/../x")
    assert [r.url.raw_path for r in server.requests] == [
        b"/v1/webhooks/..%2Fapi-keys",
        b"/v1/webhook-deliveries/dlv_1%2F..%2Fx/replay",
    ]


def test_webhook_errors_are_raised_by_status(client: Client, server: Server) -> None:
    server.reply(404, {"code": "not_found", "detail": "no such webhook"})
    with pytest.raises(NotFound, match="no such webhook"):
        client.get_webhook("wh_missing")


# --- wait_for_email ---------------------------------------------------------------------


def test_wait_for_email_sends_its_filters_and_reads_the_answer(
    client: Client, server: Server
) -> None:
    email = {"email_id": "msg_1", "sender": "a@example.com", "subject": "Invoice 7"}
    server.reply(200, {"email": email, "timed_out": False, "cursor": "42"})
    result = client.wait_for_email(
        MBX, timeout_seconds=5, sender="a@example.com", subject_contains="Invoice", after="40"
    )
    assert (server.last.method, server.last.url.path) == ("GET", f"/v1/mailboxes/{MBX}/wait")
    assert query(server.last) == {
        "timeout_seconds": "5",
        "sender": "a@example.com",
        "subject_contains": "Invoice",
        "after": "40",
    }
    assert result.email.subject == "Invoice 7"
    assert (result.timed_out, result.cursor) == (False, "42")


def test_wait_for_email_timing_out_has_no_email(client: Client, server: Server) -> None:
    server.reply(200, {"email": None, "timed_out": True, "cursor": "42"})
    result = client.wait_for_email(MBX)
    assert query(server.last) == {"timeout_seconds": "30"}
    assert result.email is None
    assert result.timed_out is True


def read_timeout(request: httpx.Request) -> float:
    return float(request.extensions["timeout"]["read"])


def test_wait_for_email_reads_longer_than_the_server_holds(server: Server) -> None:
    transport = httpx.MockTransport(server.handle)
    with Client(KEY, BASE, timeout=5.0, transport=transport) as c:
        c.wait_for_email(MBX, timeout_seconds=120)
        c.get_account()
    waited, plain = server.requests
    assert read_timeout(waited) == 130.0
    assert waited.extensions["timeout"]["connect"] == 5.0  # only the read is stretched
    assert read_timeout(plain) == 5.0
    with Client(KEY, BASE, timeout=300.0, transport=transport) as c:
        c.wait_for_email(MBX, timeout_seconds=30)
    assert read_timeout(server.last) == 300.0  # a longer client timeout is kept


@given(st.integers(min_value=-500, max_value=500))
def test_wait_for_email_accepts_exactly_1_to_120_seconds(seconds: int) -> None:
    server = Server()
    with Client(KEY, BASE, transport=httpx.MockTransport(server.handle)) as c:
        if 1 <= seconds <= 120:
            server.reply(200, {"email": None, "timed_out": True, "cursor": "1"})
            c.wait_for_email(MBX, timeout_seconds=seconds)
            assert query(server.last)["timeout_seconds"] == str(seconds)
            assert read_timeout(server.last) > seconds
        else:
            with pytest.raises(ValueError, match="from 1 to 120"):
                c.wait_for_email(MBX, timeout_seconds=seconds)
            assert server.requests == []


@pytest.mark.parametrize("bad", [True, 2.5, "30", None])
def test_wait_for_email_refuses_a_timeout_that_is_not_whole_seconds(
    client: Client, server: Server, bad: Any
) -> None:
    with pytest.raises(ValueError, match="whole number of seconds"):
        client.wait_for_email(MBX, timeout_seconds=bad)
    assert server.requests == []


def test_async_client_has_the_same_operations(server: Server) -> None:
    server.reply(201, {"id": "wh_1", "signing_secret": "whsec_abc"})
    server.reply(200, {"email": None, "timed_out": True, "cursor": "3"})

    async def scenario() -> tuple[Result, Result]:
        transport = httpx.MockTransport(server.handle)
        async with AsyncClient(KEY, BASE, transport=transport) as c:
            with pytest.raises(ValueError, match="from 1 to 120"):
                c.wait_for_email(MBX, timeout_seconds=121)  # refused before any await
            created = await c.create_webhook("https://hooks.example/in", mailbox_id=MBX)
            waited = await c.wait_for_email(MBX, timeout_seconds=60)
        return created, waited

    created, waited = asyncio.run(scenario())
    assert created.signing_secret == "whsec_abc"
    assert waited.timed_out is True
    first, second = server.requests
    assert body(first) == {"url": "https://hooks.example/in", "mailbox_id": MBX}
    assert second.url.path == f"/v1/mailboxes/{MBX}/wait"
    assert read_timeout(second) == 70.0


# --- the SSE decoder --------------------------------------------------------------------


def decode(*chunks: bytes) -> list[_SSE]:
    decoder = _SSEDecoder()
    return [event for chunk in chunks for event in decoder.feed(chunk)]


def test_data_lines_join_with_newlines_and_comments_are_skipped() -> None:
    stream = (
        b": keep-alive\n"
        b"id: 7\n"
        b"event: message.received\n"
        b"data: first line\n"
        b": a comment between data lines\n"
        b"data:second line, no space\n"
        b"data:  two spaces keep one\n"
        b"\n"
    )
    assert decode(stream) == [
        _SSE("message.received", "first line\nsecond line, no space\n two spaces keep one", "7")
    ]


def test_the_event_type_defaults_to_message_and_the_id_carries_over() -> None:
    decoder = _SSEDecoder()
    events = decoder.feed(b"id: 3\ndata: a\n\ndata: b\n\nid\ndata: c\n\n")
    assert events == [
        _SSE("message", "a", "3"),
        _SSE("message", "b", "3"),
        _SSE("message", "c", ""),  # a bare "id" field empties the id
    ]


def test_ids_with_nul_unknown_fields_and_bad_retry_are_ignored() -> None:
    decoder = _SSEDecoder()
    events = decoder.feed(b"id: 1\n\nid: 2\x00x\nretry: soon\nfoo: bar\ndata\n\nretry: 2500\n")
    assert events == [_SSE("message", "", "1")]  # a bare "data" field is an empty line
    assert decoder.retry_ms == 2500


def test_an_event_without_data_is_dropped_but_moves_the_last_id() -> None:
    decoder = _SSEDecoder()
    assert decoder.feed(b"id: 9\nevent: ping\n\n") == []
    assert decoder.last_event_id == "9"


def test_an_event_cut_off_by_a_reconnect_is_dropped_and_its_id_not_kept() -> None:
    decoder = _SSEDecoder()
    assert decoder.feed(b"id: 1\ndata: one\n\nid: 2\ndata: tw") == [_SSE("message", "one", "1")]
    assert decoder.last_event_id == "1"
    decoder.restart()
    assert decoder.feed(b"o\n\n") == []  # the tail alone is a field "o", not data
    assert decoder.feed(b"data: two\n\n") == [_SSE("message", "two", "1")]
    assert decoder.last_event_id == "1"


def test_line_ends_split_across_chunks_and_a_byte_order_mark() -> None:
    euro = "€".encode()
    chunks = [b"\xef\xbb", b"\xbfid: 5\r", b"\ndata: ", euro[:1], euro[1:], b"\r", b"\ndata: b\r\r"]
    assert decode(*chunks) == [_SSE("message", "€\nb", "5")]


line_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"),
    max_size=12,
)
events_strategy = st.lists(
    st.builds(
        _SSE,
        event=st.sampled_from(["message", "message.received", "odd:name", " spaced"]),
        data=st.lists(line_text, min_size=1, max_size=3).map("\n".join),
        id=st.integers(min_value=1, max_value=10**9).map(str),
    ),
    max_size=6,
)


def encode(event: _SSE, end: str, comment: bool) -> str:
    lines = [": keep-alive"] if comment else []
    lines += [f"id: {event.id}", f"event: {event.event}"]
    lines += [f"data: {line}" for line in event.data.split("\n")]
    return "".join(line + end for line in [*lines, ""])


@given(
    events_strategy,
    st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=6, max_size=6),
    st.lists(st.booleans(), min_size=6, max_size=6),
    st.data(),
)
def test_any_stream_in_any_chunks_decodes_to_the_events_sent(
    events: list[_SSE], ends: list[str], comments: list[bool], data: st.DataObject
) -> None:
    raw = "".join(encode(e, end, c) for e, end, c in zip(events, ends, comments, strict=False))
    raw_bytes = raw.encode()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw_bytes)), max_size=8)))
    pieces = [raw_bytes[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw_bytes)], strict=True)]
    decoder = _SSEDecoder()
    decoded = [event for piece in pieces for event in decoder.feed(piece)]
    assert decoded == events
    assert decoder.last_event_id == (events[-1].id if events else "")


# --- stream_events ----------------------------------------------------------------------


def test_stream_yields_each_event_with_its_seq(client: Client, server: Server) -> None:
    multi_line = (
        b'id: 12\nevent: message.sent\ndata: {"id": "evt_12",\ndata:  "type": "message.sent"}\n\n'
    )
    server.stream(b": keep-alive\n\n", sse(11, subject="hi"), b": keep-alive\n\n", multi_line)
    stream = client.stream_events(after=10, mailbox_id=MBX, types=["message.received", "x"])
    first, second = next(stream), next(stream)
    stream.close()
    assert (first.seq, first.id, first.type, first.data.subject) == (
        11,
        "evt_11",
        "message.received",
        "hi",
    )
    assert (second.seq, second.type) == (12, "message.sent")
    request = server.last
    assert (request.method, request.url.path) == ("GET", "/v1/events/stream")
    assert query(request) == {"after": "10", "mailbox_id": MBX, "type": "message.received,x"}
    assert request.headers["accept"] == "text/event-stream"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert "last-event-id" not in request.headers
    assert len(server.requests) == 1


def test_without_after_the_stream_starts_from_now(client: Client, server: Server) -> None:
    server.stream(sse(1))
    next(client.stream_events())
    assert query(server.last) == {}


def test_a_stream_that_ends_is_reopened_after_the_last_event(
    client: Client, server: Server
) -> None:
    server.stream(sse(1), sse(2))
    server.stream(b": keep-alive\n\n")
    server.stream(sse(3))
    seqs = []
    for event in client.stream_events(after=0, reconnect_delay=0):
        seqs.append(event.seq)
        if event.seq == 3:
            break
    assert seqs == [1, 2, 3]
    assert len(server.requests) == 3  # breaking out stops it: no fourth connection
    first, second, third = server.requests
    assert query(first) == {"after": "0"}
    assert "last-event-id" not in first.headers
    for later in (second, third):
        assert later.headers["last-event-id"] == "2"
        assert query(later) == {"after": "2"}


def test_a_broken_connection_resumes_before_the_event_it_cut(
    client: Client, server: Server
) -> None:
    cut = sse(6)[:20]
    server.stream(sse(5), cut, error=httpx.ReadError("connection reset"))
    server.responses.append(httpx.ConnectError("refused while restarting"))
    server.stream(sse(6))
    stream = client.stream_events(types="message.received", reconnect_delay=0)
    seqs = [next(stream).seq, next(stream).seq]
    stream.close()
    assert seqs == [5, 6]
    assert [r.headers.get("last-event-id") for r in server.requests] == [None, "5", "5"]
    assert all(query(r)["type"] == "message.received" for r in server.requests)


def test_an_unreachable_server_is_raised_not_retried(client: Client, server: Server) -> None:
    server.responses.append(httpx.ConnectError("[Errno 111] Connection refused"))
    with pytest.raises(APIConnectionError, match=r"mm\.test:8025"):
        next(client.stream_events(reconnect_delay=0))
    assert len(server.requests) == 1


def test_http_errors_are_raised_even_after_the_stream_opened(
    client: Client, server: Server
) -> None:
    server.reply(401, {"code": "unauthenticated", "detail": "key revoked"})
    with pytest.raises(AuthenticationError):
        next(client.stream_events())
    server.stream(sse(1))
    server.reply(503, {"code": "unavailable", "detail": "restarting"})  # transient: retried
    server.stream(sse(2))
    server.reply(401, {"code": "unauthenticated", "detail": "key revoked"})
    stream = client.stream_events(reconnect_delay=0)
    assert [next(stream).seq, next(stream).seq] == [1, 2]
    with pytest.raises(AuthenticationError, match="key revoked"):
        next(stream)


def test_a_response_that_is_not_an_event_stream_is_reported(client: Client, server: Server) -> None:
    server.reply(200, {"events": []})
    with pytest.raises(ServerError) as info:
        next(client.stream_events())
    assert info.value.code == "invalid_response"
    assert "application/json" in info.value.detail


def test_an_event_whose_data_is_not_a_json_object_is_reported(
    client: Client, server: Server
) -> None:
    server.stream(b"id: 4\ndata: [1, 2]\n\n")
    with pytest.raises(ServerError) as info:
        next(client.stream_events())
    assert info.value.code == "invalid_event"
    assert "event 4" in info.value.detail


def test_the_stream_read_timeout_outlasts_several_keep_alives(
    client: Client, server: Server
) -> None:
    server.stream(sse(1))
    next(client.stream_events())
    assert read_timeout(server.last) >= 45.0


def test_backoff_doubles_from_the_base_up_to_a_cap() -> None:
    assert [_backoff(n, 0.5) for n in range(1, 8)] == [0.5, 1, 2, 4, 8, 10, 10]
    assert _backoff(10_000, 0.5) == 10


def test_reconnect_delay_resets_on_traffic_and_follows_the_servers_retry() -> None:
    stream = _EventStream(None, None, None, reconnect_delay=0.5)
    assert [stream.delay(), stream.delay(), stream.delay()] == [0.5, 1, 2]
    stream.feed(b": keep-alive\n\n")
    assert stream.delay() == 0.5
    stream.feed(b"retry: 3000\n")
    assert stream.delay() == 3.0


def test_async_stream_reconnects_with_the_last_event_id(server: Server) -> None:
    server.stream(sse(1), sse(2)[:10], error=httpx.ReadError("reset"))
    server.stream(sse(2))

    async def scenario() -> list[int]:
        transport = httpx.MockTransport(server.handle)
        async with AsyncClient(KEY, BASE, transport=transport) as c:
            seqs = []
            async for event in c.stream_events(after=0, reconnect_delay=0):
                seqs.append(event.seq)
                if len(seqs) == 2:
                    break
            return seqs

    assert asyncio.run(scenario()) == [1, 2]
    assert [r.headers.get("last-event-id") for r in server.requests] == [None, "1"]
    assert query(server.requests[1]) == {"after": "1"}


# --- the CLI against a tiny HTTP server on 127.0.0.1 ------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


class FakeAPI:
    """Answers each request from a queue: JSON, an empty 204, or an event stream."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.answers: list[tuple[int, dict[str, str], list[bytes]]] = []
        self.url = ""

    def answer(self, status: int, data: Any = None) -> None:
        content = [] if data is None else [json.dumps(data).encode()]
        self.answers.append((status, {"content-type": "application/json"}, content))

    def stream(self, *chunks: bytes) -> None:
        self.answers.append((200, EVENT_STREAM, list(chunks)))

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                fake.seen.append(
                    Seen(
                        self.command,
                        parts.path,
                        dict(parse_qsl(parts.query)),
                        {k.lower(): v for k, v in self.headers.items()},
                        json.loads(raw) if raw else None,
                    )
                )
                status, headers, chunks = (
                    fake.answers.pop(0) if fake.answers else (500, {}, [b"{}"])
                )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if headers != EVENT_STREAM:
                    self.send_header("content-length", str(sum(map(len, chunks))))
                self.end_headers()
                for chunk in chunks:
                    self.wfile.write(chunk)
                    self.wfile.flush()

            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def do_DELETE(self) -> None:
                self._serve()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    fake = FakeAPI()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield fake
    httpd.shutdown()
    httpd.server_close()


def run(api: FakeAPI, *argv: str) -> int:
    return cli.main(["--api-url", api.url, "--api-key", KEY, *argv])


def test_cli_webhooks_create_posts_the_filters_and_prints_json(
    api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    created = {"id": "wh_1", "url": "https://hooks.example/in", "signing_secret": "whsec_abc"}
    api.answer(201, created)
    code = run(
        api,
        "webhooks",
        "create",
        "https://hooks.example/in",
        "--events",
        "message.received, oversight.pending",
        "--mailbox",
        MBX,
        "--json",
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out) == created
    (seen,) = api.seen
    assert (seen.method, seen.path) == ("POST", "/v1/webhooks")
    assert seen.body == {
        "url": "https://hooks.example/in",
        "events": ["message.received", "oversight.pending"],
        "mailbox_id": MBX,
    }
    assert seen.headers["authorization"] == f"Bearer {KEY}"


def test_cli_webhooks_list_shows_a_table_or_says_there_are_none(
    api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    hooks = [
        {"id": "wh_1", "url": "https://a.example/h", "events": [], "status": "active"},
        {
            "id": "wh_2",
            "url": "https://b.example/h",
            "events": ["message.sent", "message.bounced", "message.delivered"],
            "mailbox_id": MBX,
            "status": "disabled",
        },
    ]
    api.answer(200, {"subscriptions": hooks})
    api.answer(200, {"subscriptions": []})
    assert run(api, "webhooks", "list") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["WEBHOOK_ID", "URL", "EVENTS", "MAILBOX_ID", "STATUS", "CREATED"]
    assert table[1].split()[:4] == ["wh_1", "https://a.example/h", "all", "all"]
    assert "message.sent +2 more" in table[2]
    assert MBX in table[2]
    assert run(api, "webhooks", "list") == 0
    assert capsys.readouterr().out == "no webhooks\n"


def test_cli_webhooks_deliveries_filters_and_tabulates(
    api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    delivery = {
        "id": "dlv_1",
        "webhook_id": "wh_1",
        "event_id": "evt_1",
        "event_type": "message.received",
        "url": "https://a.example/h",
        "status": "dead",
        "attempts": 8,
        "response_status": 500,
        "latency_ms": 120,
        "last_attempt_at": "2026-04-19T10:00:00Z",
        "next_attempt_at": None,
    }
    api.answer(200, {"deliveries": [delivery], "next_cursor": "c2"})
    assert run(api, "webhooks", "deliveries", "--status", "dead", "--webhook", "wh_1") == 0
    captured = capsys.readouterr()
    row = captured.out.splitlines()[1]
    assert row.split()[:6] == ["dlv_1", "wh_1", "message.received", "dead", "8", "500"]
    assert "120 ms" in row
    assert "2026-04-19 10:00:00" in row
    assert captured.err == "more: --cursor c2\n"
    assert api.seen[0].query == {"limit": "50", "status": "dead", "webhook_id": "wh_1"}


def test_cli_webhooks_get_delete_rotate_replay(
    api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    api.answer(200, {"id": "wh_1", "url": "https://a.example/h", "signing_secret": "whsec_a"})
    api.answer(204)
    api.answer(
        200,
        {
            "id": "wh_1",
            "signing_secret": "whsec_b",
            "previous_secret_expires_at": "2026-04-20T10:00:00Z",
        },
    )
    api.answer(
        202,
        {
            "delivery": {
                "id": "dlv_2",
                "event_id": "evt_1",
                "event_type": "message.received",
                "url": "https://a.example/h",
                "status": "pending",
            }
        },
    )
    assert run(api, "webhooks", "get", "wh_1") == 0
    assert "whsec_a" in capsys.readouterr().out
    assert run(api, "webhooks", "delete", "wh_1") == 0
    assert capsys.readouterr().out == "deleted webhook wh_1\n"
    assert run(api, "webhooks", "rotate", "wh_1") == 0
    rotated = capsys.readouterr()
    assert "whsec_b" in rotated.out
    assert "2026-04-20 10:00:00" in rotated.err
    assert run(api, "webhooks", "replay", "dlv_1") == 0
    assert capsys.readouterr().out == (
        "replaying message.received event evt_1 to https://a.example/h: delivery dlv_2 is pending\n"
    )
    assert [(s.method, s.path) for s in api.seen] == [
        ("GET", "/v1/webhooks/wh_1"),
        ("DELETE", "/v1/webhooks/wh_1"),
        ("POST", "/v1/webhooks/wh_1/rotate-secret"),
        ("POST", "/v1/webhook-deliveries/dlv_1/replay"),
    ]


def test_cli_webhook_errors_and_usage(api: FakeAPI, capsys: pytest.CaptureFixture[str]) -> None:
    api.answer(404, {"code": "not_found", "detail": "no such webhook"})
    assert run(api, "webhooks", "get", "wh_missing") == cli.NOT_FOUND
    assert capsys.readouterr().err == "error: not_found: no such webhook\n"
    assert run(api, "webhooks", "deliveries", "--status", "lost") == cli.USAGE
    assert run(api, "webhooks") == cli.USAGE
    assert len(api.seen) == 1


def test_cli_wait_prints_the_email(api: FakeAPI, capsys: pytest.CaptureFixture[str]) -> None:
    email = {
        "email_id": "msg_1",
        "thread_id": "thr_1",
        "sender": "alice@example.com",
        "to": ["agent@acme.test"],
        "subject": "Invoice\x1b[31m 7",
        "body_text": "Please pay.",
        "received_at": "2026-04-19T10:00:00Z",
        "status": "unread",
        "direction": "inbound",
    }
    api.answer(200, {"email": email, "timed_out": False, "cursor": "42"})
    code = run(
        api, "wait", MBX, "--timeout", "5", "--from", "alice@example.com", "--subject", "Invoice"
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "From:    alice@example.com" in captured.out
    assert "Subject: Invoice\\x1b[31m 7" in captured.out  # the escape is shown, not obeyed
    assert captured.out.endswith("Please pay.\n")
    assert captured.err == f"next: multimail wait {MBX} --after 42\n"
    (seen,) = api.seen
    assert (seen.method, seen.path) == ("GET", f"/v1/mailboxes/{MBX}/wait")
    assert seen.query == {
        "timeout_seconds": "5",
        "sender": "alice@example.com",
        "subject_contains": "Invoice",
    }


def test_cli_wait_timing_out_exits_1(api: FakeAPI, capsys: pytest.CaptureFixture[str]) -> None:
    answer = {"email": None, "timed_out": True, "cursor": "42"}
    api.answer(200, answer)
    api.answer(200, answer)
    assert run(api, "wait", MBX, "--timeout", "5", "--after", "40") == cli.FAILED
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "no email within 5 s (resume with --after 42)\n"
    assert run(api, "wait", MBX, "--json") == cli.FAILED
    assert json.loads(capsys.readouterr().out) == answer
    assert api.seen[0].query == {"timeout_seconds": "5", "after": "40"}
    assert api.seen[1].query == {"timeout_seconds": "30"}


@pytest.mark.parametrize("seconds", ["0", "121", "-3", "ten"])
def test_cli_wait_refuses_a_bad_timeout_without_asking(
    api: FakeAPI, capsys: pytest.CaptureFixture[str], seconds: str
) -> None:
    assert run(api, "wait", MBX, "--timeout", seconds) == cli.USAGE
    assert "--timeout" in capsys.readouterr().err
    assert api.seen == []


class InterruptAfter(io.StringIO):
    """A stdout where Ctrl-C arrives once ``lines`` lines have been printed."""

    def __init__(self, lines: int) -> None:
        super().__init__()
        self.lines = lines

    def write(self, text: str) -> int:
        written = super().write(text)
        if self.getvalue().count("\n") >= self.lines:
            raise KeyboardInterrupt
        return written


def test_cli_events_follow_streams_json_lines_across_a_reconnect(
    api: FakeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.stream(b": keep-alive\n\n", sse(8, subject="one"))
    api.stream(sse(9, "message.sent"))
    out = InterruptAfter(2)
    monkeypatch.setattr(sys, "stdout", out)
    code = run(api, "events", "--follow", "--json", "--type", "message.received,message.sent")
    assert code == 130
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert (first["seq"], first["data"], second["seq"]) == (8, {"subject": "one"}, 9)
    assert [s.path for s in api.seen] == ["/v1/events/stream"] * 2
    assert "last-event-id" not in api.seen[0].headers
    assert api.seen[1].headers["last-event-id"] == "8"
    assert all(s.query["type"] == "message.received,message.sent" for s in api.seen)
    assert api.seen[0].headers["accept"] == "text/event-stream"


def test_cli_events_follow_prints_one_readable_line_per_event(
    api: FakeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = {
        "id": "evt_3",
        "type": "oversight.pending",
        "created_at": "2026-04-19T10:00:00Z",
        "mailbox_id": MBX,
        "data": {},
    }
    api.stream(f"id: 3\ndata: {json.dumps(event)}\n\n".encode())
    out = InterruptAfter(1)
    monkeypatch.setattr(sys, "stdout", out)
    assert run(api, "events", "-f", "--after", "2", "--mailbox", MBX) == 130
    assert out.getvalue().split() == [
        "3",
        "2026-04-19",
        "10:00:00",
        "oversight.pending",
        MBX,
        "evt_3",
    ]
    assert api.seen[0].query == {"after": "2", "mailbox_id": MBX}


def test_cli_events_without_follow_still_lists_from_the_start(
    api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    api.answer(200, {"events": [], "next_cursor": None})
    assert run(api, "events") == 0
    assert capsys.readouterr().out == "no events\n"
    assert (api.seen[0].path, api.seen[0].query) == ("/v1/events", {"after": "0", "limit": "100"})
