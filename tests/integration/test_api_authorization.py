"""P6 over HTTP: every route is in the authorization table, and no key reaches another
account's resources, nor an agent key another mailbox's, on any route — with nothing
changed by the attempt."""

from __future__ import annotations

import itertools
import re
import tomllib
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from multimail.api import create_app
from multimail.service import Config, Service
from multimail.store.sqlite import SqliteStore
from multimail_core.authorization import OPERATIONS

SPEC = Path(__file__).parents[2] / "spec" / "routes.toml"
ADMIN = "mm_live_admin_for_tests"


def spec_routes() -> dict[tuple[str, str], str]:
    table = tomllib.loads(SPEC.read_text())["routes"]
    return {tuple(k.split(" ", 1)): v for k, v in table.items()}  # type: ignore[misc]


def app_routes(app) -> set[tuple[str, str]]:
    found = set()
    for r in app.routes:
        methods = getattr(r, "methods", None) or set()
        for m in methods - {"HEAD", "OPTIONS"}:
            found.add((m, r.path))
    return found


@pytest.fixture
def world(tmp_path):
    counter = itertools.count(1)
    store = SqliteStore(str(tmp_path / "mm.db"))
    service = Service(
        store,
        clock=lambda: 1_800_000_000_000,
        new_ulid=lambda: "01" + str(next(counter)).rjust(24, "0"),
        config=Config(),
    )
    service.bootstrap(ADMIN)
    app = create_app(service)
    client = TestClient(app)
    admin = {"Authorization": f"Bearer {ADMIN}"}

    def post(path, body, headers=admin, expect=(200, 201, 202)):
        r = client.post(path, json=body, headers=headers)
        assert r.status_code in expect, r.text
        return r.json()

    b = post("/v1/accounts", {"name": "tenant-b", "oversight_email": "ops@b.example"})
    a = post("/v1/accounts", {"name": "tenant-a", "oversight_email": "ops@a.example"})
    ha = {"Authorization": f"Bearer {a['api_key']}"}
    hb = {"Authorization": f"Bearer {b['api_key']}"}
    a1 = post("/v1/mailboxes", {"name": "one", "oversight_mode": "gated_send"}, ha)
    a2 = post("/v1/mailboxes", {"name": "two", "oversight_mode": "autonomous"}, ha)
    post("/v1/mailboxes", {"name": "bee", "oversight_mode": "autonomous"}, hb)
    agent2 = post(
        "/v1/api-keys",
        {"name": "agent2", "scopes": ["read", "send"], "mailbox_ids": [a2["mailbox_id"]]},
        ha,
    )
    hagent2 = {"Authorization": f"Bearer {agent2['api_key']}"}
    # a delivered message a2 → a1, a held reply in a1, a contact, a suppression
    post(
        f"/v1/mailboxes/{a2['mailbox_id']}/send",
        {"to": [a1["address"]], "subject": "hello", "body_text": "hi"},
        ha,
    )
    service.run_deliveries()
    inbox = client.get(f"/v1/mailboxes/{a1['mailbox_id']}/emails", headers=ha).json()["emails"]
    email = inbox[0]
    held = post(
        f"/v1/mailboxes/{a1['mailbox_id']}/reply",
        {"email_id": email["email_id"], "body_text": "ok"},
        ha,
    )
    contact = post("/v1/contacts", {"email": "c@a.example", "name": "C"}, ha)
    post("/v1/suppression", {"email_address": "gone@a.example"}, ha)
    reviewer = post("/v1/api-keys", {"name": "rev", "scopes": ["oversight"]}, ha)
    hook = post("/v1/webhooks", {"url": "https://93.184.216.34/hook"}, ha)
    service.fan_out()
    [delivery] = service.store.list_deliveries(a["account_id"], limit=1, cursor=None)[0]
    ids = {
        "mailbox_id": a1["mailbox_id"],
        "email_id": email["email_id"],
        "thread_id": email["thread_id"],
        "pending_id": held["pending_id"],
        "key_id": reviewer["id"],
        "contact_id": contact["id"],
        "address": "gone@a.example",
        "name": "label",
        "attachment_id": "att_1",
        "webhook_id": hook["id"],
        "delivery_id": delivery.id,
    }
    return {
        "client": client,
        "app": app,
        "store": store,
        "service": service,
        "a": a,
        "ha": ha,
        "hb": hb,
        "hagent2": hagent2,
        "ids": ids,
        "account_ids": {a["account_id"]},
        "a_resource_ids": {
            a1["mailbox_id"],
            a2["mailbox_id"],
            email["email_id"],
            held["pending_id"],
            reviewer["id"],
            contact["id"],
            hook["id"],
            delivery.id,
        },
    }


# Valid bodies, so a refusal can only come from authorization (never a 422).
BODIES = {
    ("POST", "/v1/accounts"): {"name": "intruder"},
    ("PATCH", "/v1/account"): {"name": "renamed"},
    ("POST", "/v1/api-keys"): {"name": "x", "scopes": ["read"]},
    ("POST", "/v1/mailboxes"): {"name": "intruder"},
    ("PATCH", "/v1/mailboxes/{mailbox_id}"): {
        "oversight_mode": "autonomous",
        "display_name": "pwned",
    },
    ("PUT", "/v1/mailboxes/{mailbox_id}/allowlist"): {"entries": ["*@evil.example"]},
    ("POST", "/v1/mailboxes/{mailbox_id}/request-upgrade"): {"target_mode": "autonomous"},
    ("POST", "/v1/mailboxes/{mailbox_id}/send"): {
        "to": ["x@evil.example"],
        "subject": "s",
        "body_text": "b",
    },
    ("POST", "/v1/mailboxes/{mailbox_id}/reply"): {"thread_id": "{thread_id}", "body_text": "b"},
    ("PUT", "/v1/emails/{email_id}/tags"): {"tags": {"k": "v"}},
    ("POST", "/v1/oversight/decide"): {"pending_id": "{pending_id}", "action": "approve"},
    ("POST", "/v1/contacts"): {"email": "z@evil.example"},
    ("POST", "/v1/suppression"): {"email_address": "z@evil.example"},
    ("POST", "/v1/webhooks"): {"url": "https://93.184.216.34/steal"},
}


def fill(text: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], text)


def fill_body(body, ids):
    if isinstance(body, dict):
        return {k: fill_body(v, ids) for k, v in body.items()}
    if isinstance(body, list):
        return [fill_body(v, ids) for v in body]
    if isinstance(body, str):
        return fill(body, ids)
    return body


def snapshot(w) -> tuple:
    """Everything observable of account A: its audit chain and events, via A's admin key."""
    c, ha = w["client"], w["ha"]
    audit = c.get("/v1/audit-log/verify", headers=ha).json()
    events = c.get("/v1/events?limit=100", headers=ha).json()["events"]
    boxes = c.get("/v1/mailboxes", headers=ha).json()["mailboxes"]
    keys = c.get("/v1/api-keys", headers=ha).json()["api_keys"]
    return audit["entries"], len(events), boxes, keys


def test_every_app_route_is_in_the_spec_and_vice_versa(world):
    app_side = app_routes(world["app"])
    spec = spec_routes()
    assert app_side == set(spec), {
        "missing from spec/routes.toml": sorted(app_side - set(spec)),
        "in spec but not served": sorted(set(spec) - app_side),
    }
    assert world["app"].state.operations == spec
    for op in spec.values():
        assert op == "public" or op in OPERATIONS, op


def test_every_routed_endpoint_declares_its_operation(world):
    declared = world["app"].state.operations
    for r in world["app"].routes:
        if isinstance(r, APIRoute):
            for m in r.methods - {"HEAD"}:
                assert (m, r.path) in declared


def _protected(world):
    return [(m, p) for (m, p), op in sorted(spec_routes().items()) if op != "public"]


@pytest.mark.parametrize("who", ["other_account", "agent_of_other_mailbox", "no_key", "bad_key"])
def test_no_route_crosses_accounts_or_mailboxes(world, who):
    c, ids = world["client"], world["ids"]
    headers = {
        "other_account": world["hb"],
        "agent_of_other_mailbox": world["hagent2"],
        "no_key": {},
        "bad_key": {"Authorization": "Bearer mm_live_nope"},
    }[who]
    before = snapshot(world)
    checked = 0
    for method, path in _protected(world):
        has_resource = "{" in path
        if who in ("other_account", "agent_of_other_mailbox") and not has_resource:
            continue  # account-wide routes are checked for leaks below
        url = fill(path, ids)
        body = fill_body(BODIES.get((method, path)), ids)
        r = c.request(method, url, json=body, headers=headers)
        if who in ("no_key", "bad_key"):
            assert r.status_code == 401, (method, path, r.status_code, r.text)
        else:
            assert r.status_code in (403, 404), (method, path, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        checked += 1
    assert checked >= 10
    assert snapshot(world) == before


@pytest.mark.parametrize("who", ["other_account", "agent_of_other_mailbox"])
def test_account_wide_reads_do_not_leak(world, who):
    c = world["client"]
    headers = world["hb"] if who == "other_account" else world["hagent2"]
    forbidden = world["a_resource_ids"]
    if who == "agent_of_other_mailbox":
        # the agent may see its own mailbox (a2) and mail a2 sent; nothing of a1
        forbidden = {world["ids"]["mailbox_id"], world["ids"]["pending_id"], world["ids"]["key_id"]}
    for method, path in _protected(world):
        if method != "GET" or "{" in path:
            continue
        params = {"max_seconds": 1} if path.endswith("/stream") else None  # a live stream
        r = c.get(path, headers=headers, params=params)
        assert r.status_code in (200, 403), (path, r.status_code, r.text)
        for rid in forbidden:
            assert rid not in r.text, (path, rid)


def test_agent_key_cannot_approve_or_self_promote(world):
    c, ids = world["client"], world["ids"]
    ha = world["ha"]
    agent1 = c.post(
        "/v1/api-keys",
        json={"name": "agent1", "scopes": ["read", "send"], "mailbox_ids": [ids["mailbox_id"]]},
        headers=ha,
    ).json()
    h1 = {"Authorization": f"Bearer {agent1['api_key']}"}
    r = c.post(
        "/v1/oversight/decide",
        json={"pending_id": ids["pending_id"], "action": "approve"},
        headers=h1,
    )
    assert r.status_code == 403
    r = c.patch(
        f"/v1/mailboxes/{ids['mailbox_id']}", json={"oversight_mode": "autonomous"}, headers=h1
    )
    assert r.status_code == 403
    assert r.json()["code"] == "oversight_denied"
    # lowering its own mailbox is allowed
    r = c.patch(
        f"/v1/mailboxes/{ids['mailbox_id']}", json={"oversight_mode": "gated_all"}, headers=h1
    )
    assert r.status_code == 200
    assert r.json()["oversight_mode"] == "gated_all"
    # it may only ask for more
    r = c.post(
        f"/v1/mailboxes/{ids['mailbox_id']}/request-upgrade",
        json={"target_mode": "monitored"},
        headers=h1,
    )
    assert r.status_code == 202
    assert (
        c.get(f"/v1/mailboxes/{ids['mailbox_id']}", headers=ha).json()["oversight_mode"]
        == "gated_all"
    )


def test_send_and_oversight_on_one_key_is_refused(world):
    r = world["client"].post(
        "/v1/api-keys", json={"name": "both", "scopes": ["send", "oversight"]}, headers=world["ha"]
    )
    assert r.status_code == 422
    assert "approve" in r.json()["detail"]
