"""Shared fixtures for the integration tests.

One real MultiMail (uvicorn on a free loopback port, SQLite in a temp dir, the delivery
worker running) per test module; every test gets its own fresh account through
``POST /v1/accounts``, so tests stay independent without paying a server start each.

Rule 1: tests talk HTTP (httpx) to the real server; ``flush()`` runs the delivery worker's
        own step (``service.run_deliveries``) synchronously, so "was NOT delivered" is
        asserted after every due message has been attempted, never after a blind sleep.
Rule 2: "is delivered" is asserted with ``eventually``: poll a probe until it holds or a
        short deadline passes (the background worker runs at least every 0.5 s).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest

from multimail.embedded import Embedded, run_embedded
from tests.smtp_sink import Sink, smtp_sink

T = TypeVar("T")

PROBLEM_FIELDS = ("type", "title", "status", "detail", "code")


def eventually(probe: Callable[[], T], *, timeout: float = 10.0, what: str = "") -> T:
    """Return the first truthy value of ``probe()``; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T = probe()
    while not last:
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or probe}: last={last!r}")
        time.sleep(0.02)
        last = probe()
    return last


def assert_problem(response: httpx.Response, status: int, code: str | None = None) -> dict:
    """An RFC 9457 problem document with our stable ``code``, and no internals leaked."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    for name in PROBLEM_FIELDS:
        assert name in body, (name, body)
    assert body["status"] == status
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["type"].endswith(body["code"])
    if code is not None:
        assert body["code"] == code, body
    for leak in ("Traceback", 'File "', "sqlite3.", "Error(", ".py"):
        assert leak not in response.text, response.text
    return body


class Api:
    """httpx against the running server, authenticated with one key."""

    def __init__(self, base_url: str, secret: str | None, key_id: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=15)
        self.secret = secret
        self.key_id = key_id

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.http.request(method, path, **kw)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        return self.http.post(path, json=body, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        return self.http.patch(path, json=body, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        return self.http.put(path, json=body, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.delete(path, **kw)

    def ok(self, method: str, path: str, body: Any = None, *, expect: int = 200, **kw: Any):
        r = self.http.request(method, path, json=body, **kw)
        assert r.status_code == expect, (method, path, r.status_code, r.text)
        return r.json()

    # conveniences used across files

    def send(self, mailbox_id: str, **body: Any) -> httpx.Response:
        body.setdefault("subject", "hello")
        if not {"body_text", "body_html", "markdown"} & body.keys():
            body["body_text"] = "hi there"
        return self.post(f"/v1/mailboxes/{mailbox_id}/send", body)

    def emails(self, mailbox_id: str, **params: Any) -> list[dict]:
        return self.ok("GET", f"/v1/mailboxes/{mailbox_id}/emails", params=params)["emails"]

    def email(self, email_id: str) -> dict:
        return self.ok("GET", f"/v1/emails/{email_id}")

    def pending(self) -> list[dict]:
        return self.ok("GET", "/v1/oversight/pending", params={"limit": 100})["pending"]

    def decide(self, pending_id: str, action: str, **extra: Any) -> httpx.Response:
        return self.post(
            "/v1/oversight/decide", {"pending_id": pending_id, "action": action, **extra}
        )

    def close(self) -> None:
        self.http.close()


@dataclass
class Tenant:
    """A fresh account on the shared server, with helpers to make mailboxes and keys."""

    mm: Embedded
    admin: Api
    account_id: str
    slug: str
    domain: str  # the account's own subdomain, <slug>.<server domain>
    apis: list[Api]

    def mailbox(
        self, name: str, mode: str = "autonomous", *, domain: str | None = None, **extra: Any
    ) -> dict:
        body = {"name": name, "oversight_mode": mode, **extra}
        if domain is not None:
            body["domain"] = domain
        return self.admin.ok("POST", "/v1/mailboxes", body, expect=201)

    def key(self, scopes: list[str], mailbox_ids: list[str] | None = None) -> Api:
        body: dict[str, Any] = {"name": "-".join(scopes), "scopes": scopes}
        if mailbox_ids is not None:
            body["mailbox_ids"] = mailbox_ids
        made = self.admin.ok("POST", "/v1/api-keys", body, expect=201)
        api = Api(self.mm.api_url, made["api_key"], made["id"])
        self.apis.append(api)
        return api

    def agent(self, mailbox_id: str) -> Api:
        """The key one gives an agent: send + read, restricted to its own mailbox."""
        return self.key(["send", "read"], [mailbox_id])

    def reviewer(self) -> Api:
        """A human operator's key: oversight only (it cannot send)."""
        return self.key(["oversight"])

    def flush(self) -> None:
        """Attempt every due delivery now, as the background worker would."""
        while self.mm.service.run_deliveries():
            pass

    def inbound(self, mailbox_id: str) -> list[dict]:
        return self.admin.emails(mailbox_id, direction="inbound", limit=100)

    def wait_inbound(self, mailbox_id: str, count: int = 1, timeout: float = 5.0) -> list[dict]:
        return eventually(
            lambda: (found := self.inbound(mailbox_id)) and len(found) >= count and found,
            timeout=timeout,
            what=f"{count} inbound message(s) in {mailbox_id}",
        )

    def wait_status(self, email_id: str, *statuses: str, timeout: float = 5.0) -> dict:
        return eventually(
            lambda: (e := self.admin.email(email_id))["status"] in statuses and e,
            timeout=timeout,
            what=f"{email_id} to reach {statuses}",
        )

    def audit_top(self) -> int:
        entries = self.admin.ok("GET", "/v1/audit-log", params={"limit": 1})["entries"]
        return entries[0]["seq"] if entries else 0

    def events(self, **params: Any) -> list[dict]:
        params.setdefault("limit", 100)
        return self.admin.ok("GET", "/v1/events", params=params)["events"]


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def mm() -> Iterator[Embedded]:
    with run_embedded() as server:
        yield server


@pytest.fixture
def root(mm: Embedded) -> Iterator[Api]:
    """The server's bootstrap admin key (the only one that creates accounts)."""
    api = Api(mm.api_url, mm.admin_key)
    yield api
    api.close()


def make_tenant(
    mm: Embedded, root: Api, oversight_email: str | None = None, *, overseen: bool = True
) -> Tenant:
    """A new account (with its own admin key) created through the API; ``overseen`` gives
    it an oversight address (``oversight_email``, else one of its own)."""
    name = unique()
    body = {"name": name}
    if overseen:
        body["oversight_email"] = oversight_email or f"ops@{name}.example"
    made = root.ok("POST", "/v1/accounts", body, expect=201)
    admin = Api(mm.api_url, made["api_key"])
    return Tenant(
        mm, admin, made["account_id"], made["slug"], f"{made['slug']}.{mm.domain}", [admin]
    )


@pytest.fixture
def tenant(mm: Embedded, root: Api) -> Iterator[Tenant]:
    t = make_tenant(mm, root)
    yield t
    for api in t.apis:
        api.close()


@pytest.fixture
def other_tenant(mm: Embedded, root: Api) -> Iterator[Tenant]:
    """A second, unrelated account on the same server."""
    t = make_tenant(mm, root)
    yield t
    for api in t.apis:
        api.close()


@pytest.fixture
def plain_tenant(mm: Embedded, root: Api) -> Iterator[Tenant]:
    """An account without an oversight address: nothing is mailed to a reviewer."""
    t = make_tenant(mm, root, overseen=False)
    yield t
    for api in t.apis:
        api.close()


# --- modules whose server relays to an SMTP sink ----------------------------------------
# They override ``mm`` with ``run_embedded(relay=sink.url)`` and take ``overseen_tenant``:
# its oversight address is outside, so approval mail leaves through the relay.


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    with smtp_sink() as s:
        yield s


@pytest.fixture
def ops() -> str:
    """The outside oversight address of ``overseen_tenant``."""
    return f"ops-{uuid.uuid4().hex[:8]}@operators.example"


@pytest.fixture
def overseen_tenant(mm: Embedded, root: Api, ops: str) -> Iterator[Tenant]:
    t = make_tenant(mm, root, oversight_email=ops)
    yield t
    for api in t.apis:
        api.close()
