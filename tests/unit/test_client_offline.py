"""The SDK's own behaviour, offline: the requests it builds and what it makes of answers.

Every test drives ``multimail.Client`` (or ``AsyncClient``) through an ``httpx.MockTransport``
that records the requests and replays canned responses, then asserts the exact request
(method, path, query, JSON body, headers) and the resulting objects or exceptions.
"""

from __future__ import annotations

import asyncio
import json
import pickle
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

import multimail
from multimail import (
    APIConnectionError,
    AsyncClient,
    AuthenticationError,
    Client,
    Conflict,
    MultimailAPIError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    Result,
    ServerError,
    ValidationError,
)

BASE = "http://mm.test:8025"
KEY = "mm_live_testkey"
MBX = "mbx_01HZ9K2P3XQRV8TNWYD4G6F0E"
THR = "thr_01HZ9K2P3XQRV8TNWYD4G6F0E"


class Server:
    """A fake server: records requests, answers from a queue (default ``200 {}``)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.responses: list[httpx.Response | Exception] = []

    def reply(self, status: int = 200, body: Any = None, **kwargs: Any) -> None:
        if body is not None:
            kwargs["json"] = body
        self.responses.append(httpx.Response(status, **kwargs))

    def problem(self, status: int, code: str, detail: str, **headers: str) -> None:
        body = {"type": f"https://multimail.dev/problems/{code}", "title": code}
        body |= {"status": status, "detail": detail, "code": code}
        self.responses.append(
            httpx.Response(
                status,
                content=json.dumps(body).encode(),
                headers={"content-type": "application/problem+json", **headers},
            )
        )

    def handle(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        answer = self.responses.pop(0) if self.responses else httpx.Response(200, json={})
        if isinstance(answer, Exception):
            raise answer
        return answer

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def body(request: httpx.Request) -> Any:
    return json.loads(request.content) if request.content else None


def query(request: httpx.Request) -> dict[str, str]:
    return dict(request.url.params)


@pytest.fixture
def server() -> Server:
    return Server()


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    with Client(api_key=KEY, base_url=BASE, transport=httpx.MockTransport(server.handle)) as c:
        yield c


# --- configuration ----------------------------------------------------------------------


def test_explicit_key_and_url_are_used(client: Client, server: Server) -> None:
    client.health()
    assert server.last.method == "GET"
    assert str(server.last.url) == f"{BASE}/health"
    assert server.last.headers["authorization"] == f"Bearer {KEY}"
    assert server.last.headers["user-agent"] == f"multimail-python/{multimail.__version__}"
    assert server.last.headers["accept"] == "application/json"


def test_key_and_url_default_to_the_environment(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MULTIMAIL_API_KEY", "mm_live_fromenv")
    monkeypatch.setenv("MULTIMAIL_API_URL", "http://env.test:9000/")
    with Client(transport=httpx.MockTransport(server.handle)) as c:
        assert c.base_url == "http://env.test:9000"
        c.get_account()
    assert str(server.last.url) == "http://env.test:9000/v1/account"
    assert server.last.headers["authorization"] == "Bearer mm_live_fromenv"


def test_without_environment_the_url_is_local_and_no_key_is_sent(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MULTIMAIL_API_KEY", raising=False)
    monkeypatch.delenv("MULTIMAIL_API_URL", raising=False)
    with Client(transport=httpx.MockTransport(server.handle)) as c:
        c.health()
    assert str(server.last.url) == "http://127.0.0.1:8025/health"
    assert "authorization" not in server.last.headers


def test_explicit_arguments_beat_the_environment(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MULTIMAIL_API_KEY", "mm_live_fromenv")
    monkeypatch.setenv("MULTIMAIL_API_URL", "http://env.test:9000")
    with Client(KEY, BASE, transport=httpx.MockTransport(server.handle)) as c:
        c.health()
    assert str(server.last.url) == f"{BASE}/health"
    assert server.last.headers["authorization"] == f"Bearer {KEY}"


def test_the_seeds_literal_env_reference_is_expanded(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The seed writes multimail.Client(api_key="$MULTIMAIL_API_KEY").
    monkeypatch.setenv("MULTIMAIL_API_KEY", "mm_live_fromenv")
    with Client(
        api_key="$MULTIMAIL_API_KEY", base_url=BASE, transport=httpx.MockTransport(server.handle)
    ) as c:
        c.health()
    assert server.last.headers["authorization"] == "Bearer mm_live_fromenv"


def test_close_closes_the_connection_pool(server: Server) -> None:
    c = Client(KEY, BASE, transport=httpx.MockTransport(server.handle))
    with c:
        pass
    with pytest.raises(RuntimeError):
        c.health()


# --- request building -------------------------------------------------------------------


def test_create_mailbox_posts_only_given_fields_and_the_idempotency_header(
    client: Client, server: Server
) -> None:
    server.reply(
        201, {"mailbox_id": MBX, "address": "support@acme.test", "oversight_mode": "monitored"}
    )
    box = client.create_mailbox(
        name="support", oversight_mode="monitored", idempotency_key="create-support-1"
    )
    assert (server.last.method, server.last.url.path) == ("POST", "/v1/mailboxes")
    assert body(server.last) == {"name": "support", "oversight_mode": "monitored"}
    assert server.last.headers["idempotency-key"] == "create-support-1"
    assert server.last.headers["content-type"] == "application/json"
    assert box.mailbox_id == MBX
    assert box["address"] == "support@acme.test"


def test_requests_without_an_idempotency_key_send_no_header(client: Client, server: Server) -> None:
    client.create_mailbox("support")
    assert "idempotency-key" not in server.last.headers


def test_send_email_turns_single_addresses_into_lists(client: Client, server: Server) -> None:
    client.send_email(MBX, to="a@example.com", subject="Hi", body_text="hello", cc="c@example.com")
    assert (server.last.method, server.last.url.path) == ("POST", f"/v1/mailboxes/{MBX}/send")
    assert body(server.last) == {
        "to": ["a@example.com"],
        "subject": "Hi",
        "body_text": "hello",
        "cc": ["c@example.com"],
    }


def test_send_email_passes_every_field(client: Client, server: Server) -> None:
    at = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
    client.send_email(
        mailbox_id=MBX,
        to=("a@example.com", "b@example.com"),
        subject="Report",
        body_html="<p>x</p>",
        markdown="**x**",
        bcc=["z@example.com"],
        send_at=at,
        dry_run=True,
        idempotency_key="report-7",
    )
    assert body(server.last) == {
        "to": ["a@example.com", "b@example.com"],
        "subject": "Report",
        "body_html": "<p>x</p>",
        "markdown": "**x**",
        "bcc": ["z@example.com"],
        "send_at": "2026-05-01T09:00:00Z",
        "dry_run": True,
    }
    assert server.last.headers["idempotency-key"] == "report-7"


def test_seed_reply_snippet_builds_the_reply_request(client: Client, server: Server) -> None:
    server.reply(202, {"status": "pending", "pending_id": "apr_1", "message_id": "msg_1"})
    result = client.reply_email(
        thread_id=THR,
        mailbox_id=MBX,
        body_text="Thanks for reaching out.",
        body_html="<p>Thanks for reaching out.</p>",
    )
    assert (server.last.method, server.last.url.path) == ("POST", f"/v1/mailboxes/{MBX}/reply")
    assert body(server.last) == {
        "thread_id": THR,
        "body_text": "Thanks for reaching out.",
        "body_html": "<p>Thanks for reaching out.</p>",
    }
    assert (result.status, result.pending_id, result.message_id) == ("pending", "apr_1", "msg_1")


def test_seed_inbox_snippet_reads_results_by_attribute(client: Client, server: Server) -> None:
    email = {
        "email_id": "msg_1",
        "sender": "alice@example.com",
        "subject": "Question",
        "thread_id": THR,
        "body_text": "x" * 150,
        "requires_action": True,
    }
    server.reply(200, {"emails": [email], "next_cursor": None})
    server.reply(200, {**email, "body_text": "full text", "status": "read"})

    messages = client.check_inbox(mailbox_id=MBX, filter="unread", limit=20)
    message = messages.emails[0]
    full = client.read_email(email_id=message.email_id)

    first, second = server.requests
    assert (first.method, first.url.path) == ("GET", f"/v1/mailboxes/{MBX}/emails")
    assert query(first) == {"filter": "unread", "limit": "20"}
    assert (second.method, second.url.path) == ("GET", "/v1/emails/msg_1")
    assert message.sender == "alice@example.com"
    assert message.body_text[:100] == "x" * 100
    assert message.requires_action is True
    assert full.body_text == "full text"


def test_check_inbox_sends_cursor_and_direction_when_given(client: Client, server: Server) -> None:
    client.check_inbox(MBX, limit=5, cursor="c2", direction="inbound")
    assert query(server.last) == {
        "filter": "all",
        "limit": "5",
        "cursor": "c2",
        "direction": "inbound",
    }


def test_update_mailbox_patches_exactly_the_given_fields(client: Client, server: Server) -> None:
    client.update_mailbox(MBX, oversight_mode="monitored", webhook_url=None)
    assert (server.last.method, server.last.url.path) == ("PATCH", f"/v1/mailboxes/{MBX}")
    # An explicit None is sent: it removes the webhook.
    assert body(server.last) == {"oversight_mode": "monitored", "webhook_url": None}


@pytest.mark.parametrize(
    ("call", "method", "path", "sent"),
    [
        (lambda c: c.get_mailbox(MBX), "GET", f"/v1/mailboxes/{MBX}", None),
        (lambda c: c.delete_mailbox(MBX), "DELETE", f"/v1/mailboxes/{MBX}", None),
        (lambda c: c.get_allowlist(MBX), "GET", f"/v1/mailboxes/{MBX}/allowlist", None),
        (
            lambda c: c.set_allowlist(MBX, ["*@acme.test"]),
            "PUT",
            f"/v1/mailboxes/{MBX}/allowlist",
            {"entries": ["*@acme.test"]},
        ),
        (
            lambda c: c.request_upgrade(MBX, target_mode="monitored"),
            "POST",
            f"/v1/mailboxes/{MBX}/request-upgrade",
            {"target_mode": "monitored"},
        ),
        (lambda c: c.get_thread(MBX, THR), "GET", f"/v1/mailboxes/{MBX}/threads/{THR}", None),
        (lambda c: c.cancel_message("msg_1"), "POST", "/v1/emails/msg_1/cancel", None),
        (lambda c: c.get_tags("msg_1"), "GET", "/v1/emails/msg_1/tags", None),
        (
            lambda c: c.set_tags("msg_1", {"stage": "triaged"}),
            "PUT",
            "/v1/emails/msg_1/tags",
            {"tags": {"stage": "triaged"}},
        ),
        (lambda c: c.delete_tag("msg_1", "stage"), "DELETE", "/v1/emails/msg_1/tags/stage", None),
        (
            lambda c: c.create_account("Acme", oversight_email="ops@acme.test"),
            "POST",
            "/v1/accounts",
            {"name": "Acme", "oversight_email": "ops@acme.test"},
        ),
        (lambda c: c.get_account(), "GET", "/v1/account", None),
        (
            lambda c: c.update_account(default_oversight_mode="monitored"),
            "PATCH",
            "/v1/account",
            {"default_oversight_mode": "monitored"},
        ),
        (
            lambda c: c.create_api_key("agent", scopes=["read", "send"], mailbox_ids=MBX),
            "POST",
            "/v1/api-keys",
            {"name": "agent", "scopes": ["read", "send"], "mailbox_ids": [MBX]},
        ),
        (lambda c: c.list_api_keys(), "GET", "/v1/api-keys", None),
        (lambda c: c.revoke_api_key("key_1"), "DELETE", "/v1/api-keys/key_1", None),
        (lambda c: c.get_reputation(MBX), "GET", f"/v1/mailboxes/{MBX}/reputation", None),
        (lambda c: c.verify_audit_log(), "GET", "/v1/audit-log/verify", None),
        (lambda c: c.get_usage(), "GET", "/v1/usage", None),
        (lambda c: c.list_domains(), "GET", "/v1/domains", None),
        (
            lambda c: c.add_contact("bob@example.com", name="Bob", tags=["vip"]),
            "POST",
            "/v1/contacts",
            {"email": "bob@example.com", "name": "Bob", "tags": ["vip"]},
        ),
        (lambda c: c.delete_contact("con_1"), "DELETE", "/v1/contacts/con_1", None),
        (lambda c: c.list_suppressions(), "GET", "/v1/suppression", None),
        (
            lambda c: c.add_suppression("bad@example.com", reason="complaint"),
            "POST",
            "/v1/suppression",
            {"email_address": "bad@example.com", "reason": "complaint"},
        ),
    ],
)
def test_each_operation_hits_its_route(
    client: Client,
    server: Server,
    call: Callable[[Client], Any],
    method: str,
    path: str,
    sent: Any,
) -> None:
    call(client)
    assert (server.last.method, server.last.url.path) == (method, path)
    assert body(server.last) == sent


@pytest.mark.parametrize(
    ("call", "path", "params"),
    [
        (lambda c: c.list_mailboxes(), "/v1/mailboxes", {"limit": "50"}),
        (
            lambda c: c.list_pending(limit=10, cursor="p2"),
            "/v1/oversight/pending",
            {"limit": "10", "cursor": "p2"},
        ),
        (
            lambda c: c.list_reputation(sort="bounce_rate"),
            "/v1/reputation",
            {"sort": "bounce_rate"},
        ),
        (
            lambda c: c.list_reputation(order="asc"),
            "/v1/reputation",
            {"sort": "reputation_score", "order": "asc"},
        ),
        (lambda c: c.get_audit_log(limit=5), "/v1/audit-log", {"limit": "5"}),
        (lambda c: c.list_contacts(q="bob"), "/v1/contacts", {"q": "bob"}),
        (lambda c: c.list_contacts(), "/v1/contacts", {}),
        (lambda c: c.list_events(), "/v1/events", {"after": "0", "limit": "100"}),
        (
            lambda c: c.list_events(
                after=7, mailbox_id=MBX, type=["message.sent", "message.received"]
            ),
            "/v1/events",
            {
                "after": "7",
                "mailbox_id": MBX,
                "type": "message.sent,message.received",
                "limit": "100",
            },
        ),
        (
            lambda c: c.list_events(type="message.sent"),
            "/v1/events",
            {"after": "0", "type": "message.sent", "limit": "100"},
        ),
    ],
)
def test_list_operations_send_their_query(
    client: Client,
    server: Server,
    call: Callable[[Client], Any],
    path: str,
    params: dict[str, str],
) -> None:
    call(client)
    assert (server.last.method, server.last.url.path) == ("GET", path)
    assert query(server.last) == params
    assert server.last.content == b""


def test_decide_email_and_its_wrappers(client: Client, server: Server) -> None:
    client.decide_email(email_id="msg_1", action="reject", reason="tone")
    client.approve("apr_1", edits={"subject": "Better"})
    client.reject("apr_2", reason="wrong recipient")
    assert all(r.method == "POST" and r.url.path == "/v1/oversight/decide" for r in server.requests)
    assert [body(r) for r in server.requests] == [
        {"email_id": "msg_1", "action": "reject", "reason": "tone"},
        {"pending_id": "apr_1", "action": "approve", "edits": {"subject": "Better"}},
        {"pending_id": "apr_2", "action": "reject", "reason": "wrong recipient"},
    ]


def test_ids_are_escaped_so_they_cannot_change_the_route(client: Client, server: Server) -> None:
    client.remove_suppression("bad+tag@example.com")
    client.get_mailbox("../api-keys")
    client.read_email("msg_1?x=1#y")
    paths = [r.url.raw_path for r in server.requests]
    assert paths == [
        b"/v1/suppression/bad%2Btag%40example.com",
        b"/v1/mailboxes/..%2Fapi-keys",
        b"/v1/emails/msg_1%3Fx%3D1%23y",
    ]


def test_get_raw_email_returns_the_bytes(client: Client, server: Server) -> None:
    raw = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
    server.reply(200, content=raw, headers={"content-type": "message/rfc822"})
    assert client.get_raw_email("msg_1") == raw
    assert server.last.url.path == "/v1/emails/msg_1/raw"
    assert server.last.headers["accept"] == "message/rfc822"


def test_get_raw_email_raises_like_the_rest(client: Client, server: Server) -> None:
    server.problem(404, "not_found", "no such resource")
    with pytest.raises(NotFound):
        client.get_raw_email("msg_missing")


def test_iter_mailboxes_follows_cursors_to_the_end(client: Client, server: Server) -> None:
    server.reply(
        200, {"mailboxes": [{"mailbox_id": "mbx_1"}, {"mailbox_id": "mbx_2"}], "next_cursor": "c1"}
    )
    server.reply(200, {"mailboxes": [{"mailbox_id": "mbx_3"}], "next_cursor": None})
    ids = [m.mailbox_id for m in client.iter_mailboxes(limit=2)]
    assert ids == ["mbx_1", "mbx_2", "mbx_3"]
    assert [query(r) for r in server.requests] == [{"limit": "2"}, {"limit": "2", "cursor": "c1"}]


def test_an_empty_response_is_an_empty_result(client: Client, server: Server) -> None:
    server.reply(204)
    assert client.delete_contact("con_1").to_dict() == {}


# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "bad_request", ValidationError),
        (401, "unauthenticated", AuthenticationError),
        (403, "oversight_denied", PermissionDenied),
        (404, "not_found", NotFound),
        (409, "address_unavailable", Conflict),
        (413, "payload_too_large", PayloadTooLarge),
        (422, "validation_error", ValidationError),
        (429, "rate_limited", RateLimited),
        (500, "internal_error", ServerError),
        (503, "unavailable", ServerError),
        (418, "teapot", MultimailAPIError),
    ],
)
def test_problem_documents_become_exceptions_by_status(
    client: Client, server: Server, status: int, code: str, cls: type[MultimailAPIError]
) -> None:
    server.problem(status, code, "what went wrong")
    with pytest.raises(cls) as info:
        client.get_mailbox(MBX)
    exc = info.value
    assert type(exc) is cls
    assert (exc.status, exc.code, exc.detail) == (status, code, "what went wrong")
    assert exc.body["code"] == code
    assert f"{status} {code}: what went wrong" in str(exc)


def test_a_non_json_error_still_has_a_code_and_detail(client: Client, server: Server) -> None:
    server.reply(502, content=b"<html>Bad Gateway</html>", headers={"content-type": "text/html"})
    with pytest.raises(ServerError) as info:
        client.health()
    assert (info.value.status, info.value.code) == (502, "http_502")
    assert info.value.detail == "<html>Bad Gateway</html>"


def test_a_success_that_is_not_json_is_reported_not_crashed_on(
    client: Client, server: Server
) -> None:
    server.reply(200, content=b"<html>hello</html>", headers={"content-type": "text/html"})
    with pytest.raises(ServerError) as info:
        client.get_account()
    assert info.value.code == "invalid_response"
    assert f"{BASE}/v1/account" in info.value.detail
    assert "text/html" in info.value.detail


def test_rate_limited_reads_retry_after_seconds(client: Client, server: Server) -> None:
    server.problem(429, "rate_limited", "too many requests for this key", **{"Retry-After": "7"})
    with pytest.raises(RateLimited) as info:
        client.list_mailboxes()
    assert info.value.retry_after == 7


def test_rate_limited_reads_an_http_date_retry_after(client: Client, server: Server) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    server.problem(429, "rate_limited", "slow down", **{"Retry-After": later})
    with pytest.raises(RateLimited) as info:
        client.list_mailboxes()
    assert info.value.retry_after is not None
    assert 115 <= info.value.retry_after <= 120


def test_rate_limited_without_a_usable_header(client: Client, server: Server) -> None:
    server.problem(429, "rate_limited", "slow down", **{"Retry-After": "soon"})
    server.reply(429, {"code": "rate_limited", "detail": "slow down", "retry_after": 3})
    with pytest.raises(RateLimited) as first:
        client.list_mailboxes()
    with pytest.raises(RateLimited) as second:
        client.list_mailboxes()
    assert first.value.retry_after is None
    assert second.value.retry_after == 3


@pytest.mark.parametrize(
    "failure",
    [httpx.ConnectError("[Errno 111] Connection refused"), httpx.ReadTimeout("timed out")],
)
def test_an_unreachable_server_is_a_connection_error_naming_the_url(
    client: Client, server: Server, failure: Exception
) -> None:
    server.responses.append(failure)
    with pytest.raises(APIConnectionError) as info:
        client.health()
    assert info.value.status is None
    assert info.value.code == "connection_error"
    assert BASE in str(info.value)
    assert isinstance(info.value, MultimailAPIError)


# --- results ----------------------------------------------------------------------------


def test_result_attribute_and_item_access_nest() -> None:
    r = Result({"emails": [{"sender": "a@x", "tags": {"k": "v"}}], "next_cursor": None})
    assert r.emails[0].sender == "a@x"
    assert r["emails"][0]["tags"].k == "v"
    assert r.next_cursor is None
    assert "emails" in r
    assert "nope" not in r
    assert r.get("nope", 5) == 5
    assert list(r) == ["emails", "next_cursor"]
    assert len(r) == 2
    assert dict(r)["next_cursor"] is None


def test_result_to_dict_returns_plain_json() -> None:
    data = {"a": [{"b": {"c": 1}}, 2], "d": {"e": [3]}}
    r = Result(data)
    assert r.to_dict() == data
    assert type(r.to_dict()["a"][0]["b"]) is dict
    assert r == data
    assert r == Result(data)
    assert pickle.loads(pickle.dumps(r)) == r


def test_result_missing_field_names_the_available_ones() -> None:
    r = Result({"sender": "a@x", "subject": "hi"})
    with pytest.raises(AttributeError) as info:
        _ = r.sendr
    message = str(info.value)
    assert "'sendr'" in message
    assert "did you mean 'sender'" in message
    assert "sender, subject" in message
    assert not hasattr(r, "from_")


def test_result_keyword_fields_take_a_trailing_underscore() -> None:
    pending = Result({"from": "agent@acme.test"})
    assert pending.from_ == "agent@acme.test"
    assert pending["from"] == "agent@acme.test"


def test_result_is_read_only() -> None:
    r = Result({"status": "sent"})
    with pytest.raises(AttributeError):
        r.status = "pending"  # type: ignore[misc]


def test_result_repr_shows_fields_and_summarises_nesting() -> None:
    r = Result(
        {"status": "pending", "emails": [{"a": 1}, {"a": 2}], "oversight": {"verdict": "hold"}}
    )
    assert repr(r) == "Result(status='pending', emails=[2 items], oversight=Result(verdict))"


# --- async ------------------------------------------------------------------------------


def test_async_client_sends_the_same_requests(server: Server) -> None:
    server.reply(200, {"emails": [{"sender": "a@x"}], "next_cursor": None})
    server.reply(200, {"mailboxes": [{"mailbox_id": "mbx_1"}], "next_cursor": "c1"})
    server.reply(200, {"mailboxes": [{"mailbox_id": "mbx_2"}], "next_cursor": None})
    server.reply(200, content=b"raw bytes")
    server.problem(409, "already_decided", "decided already")

    async def scenario() -> tuple[Result, list[str], bytes]:
        transport = httpx.MockTransport(server.handle)
        async with AsyncClient(api_key=KEY, base_url=BASE, transport=transport) as c:
            inbox = await c.check_inbox(mailbox_id=MBX, filter="unread", limit=20)
            ids = [m.mailbox_id async for m in c.iter_mailboxes()]
            raw = await c.get_raw_email("msg_1")
            with pytest.raises(Conflict):
                await c.approve("apr_1")
        return inbox, ids, raw

    inbox, ids, raw = asyncio.run(scenario())
    assert inbox.emails[0].sender == "a@x"
    assert ids == ["mbx_1", "mbx_2"]
    assert raw == b"raw bytes"
    assert [(r.method, r.url.path) for r in server.requests] == [
        ("GET", f"/v1/mailboxes/{MBX}/emails"),
        ("GET", "/v1/mailboxes"),
        ("GET", "/v1/mailboxes"),
        ("GET", "/v1/emails/msg_1/raw"),
        ("POST", "/v1/oversight/decide"),
    ]
    assert query(server.requests[0]) == {"filter": "unread", "limit": "20"}
    assert body(server.requests[-1]) == {"pending_id": "apr_1", "action": "approve"}
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in server.requests)


def test_async_client_reports_connection_errors(server: Server) -> None:
    server.responses.append(httpx.ConnectError("refused"))

    async def scenario() -> None:
        async with AsyncClient(KEY, BASE, transport=httpx.MockTransport(server.handle)) as c:
            await c.health()

    with pytest.raises(APIConnectionError, match=r"mm\.test:8025"):
        asyncio.run(scenario())
