"""The HTTP API's cross-cutting behaviour against the real server (PRODUCT §5, P7, P14):
idempotency, cursor pagination, problem documents, validation, markdown, scheduling and
cancelling, tags, contacts, suppression, the tamper-evident audit log, the event feed,
rate limits, /health and /openapi.json."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import sqlite3
import threading
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn

from multimail.api import MAX_BODY, RateLimiter, create_app
from tests.integration.conftest import Api, assert_problem

SPEC_ROUTES = Path(__file__).parents[2] / "spec" / "routes.toml"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- idempotency (P7) --------------------------------------------------------------------


def _names(t) -> list[str]:
    boxes = t.admin.ok("GET", "/v1/mailboxes", params={"limit": 100})["mailboxes"]
    return [b["address"].split("@")[0] for b in boxes]


def test_idempotency_key_header_replays_the_first_result(tenant):
    t = tenant
    headers = {"Idempotency-Key": "create-inbox-1"}
    first = t.admin.post("/v1/mailboxes", {"name": "idem"}, headers=headers)
    again = t.admin.post("/v1/mailboxes", {"name": "idem"}, headers=headers)
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert again.json() == first.json()
    assert _names(t).count("idem") == 1

    other = t.admin.post("/v1/mailboxes", {"name": "other"}, headers=headers)
    assert_problem(other, 409, "idempotency_conflict")
    assert "other" not in _names(t)
    # a new key creates again: it was the key that deduplicated, not the name check
    fresh = t.admin.post("/v1/mailboxes", {"name": "other"}, headers={"Idempotency-Key": "k2"})
    assert fresh.status_code == 201


def test_idempotency_key_body_field_works_too(tenant):
    t = tenant
    body = {"name": "field", "display_name": "Field", "idempotency_key": "abc-123"}
    first = t.admin.ok("POST", "/v1/mailboxes", body, expect=201)
    assert t.admin.ok("POST", "/v1/mailboxes", body, expect=201) == first
    changed = t.admin.post("/v1/mailboxes", {**body, "display_name": "Changed"})
    assert_problem(changed, 409, "idempotency_conflict")
    assert _names(t).count("field") == 1
    assert t.admin.ok("GET", f"/v1/mailboxes/{first['mailbox_id']}")["display_name"] == "Field"


def test_a_retried_send_creates_one_message_and_delivers_once(tenant):
    t = tenant
    src, dest = t.mailbox("src"), t.mailbox("dest")
    headers = {"Idempotency-Key": "send-1"}
    body = {"to": [dest["address"]], "subject": "once", "body_text": "only once"}
    path = f"/v1/mailboxes/{src['mailbox_id']}/send"
    responses = [t.admin.post(path, body, headers=headers) for _ in range(3)]
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["message_id"] for r in responses}) == 1
    t.wait_status(responses[0].json()["message_id"], "delivered")
    t.flush()
    assert len(t.admin.emails(src["mailbox_id"], direction="outbound")) == 1
    assert len(t.inbound(dest["mailbox_id"])) == 1
    changed = t.admin.post(path, {**body, "subject": "twice"}, headers=headers)
    assert_problem(changed, 409, "idempotency_conflict")


def test_concurrent_retries_with_one_key_create_one_mailbox(tenant):
    t = tenant
    headers = {"Idempotency-Key": "race"}

    def create(_: int) -> httpx.Response:
        with httpx.Client(base_url=t.mm.api_url, timeout=15) as c:
            return c.post(
                "/v1/mailboxes",
                json={"name": "racer"},
                headers={**headers, "Authorization": f"Bearer {t.admin.secret}"},
            )

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(create, range(8)))
    assert {r.status_code for r in results} == {201}, [r.text for r in results]
    assert len({r.json()["mailbox_id"] for r in results}) == 1
    assert _names(t).count("racer") == 1


# --- cursor pagination -------------------------------------------------------------------


def _pages(api: Api, path: str, field: str, limit: int, **params) -> list[list[dict]]:
    pages, cursor = [], None
    while True:
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        body = api.ok("GET", path, params=query)
        pages.append(body[field])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 20, "pagination does not terminate"


def test_mailbox_pages_follow_next_cursor_to_the_end(tenant):
    t = tenant
    ids = [t.mailbox(f"box{i}")["mailbox_id"] for i in range(7)]
    pages = _pages(t.admin, "/v1/mailboxes", "mailboxes", 3)
    assert [len(p) for p in pages] == [3, 3, 1]
    seen = [b["mailbox_id"] for p in pages for b in p]
    assert seen == sorted(ids)  # each exactly once, in id order
    whole = t.admin.ok("GET", "/v1/mailboxes", params={"limit": 7})
    assert whole["next_cursor"] is None  # a full last page does not promise another
    assert [b["mailbox_id"] for b in whole["mailboxes"]] == seen
    for bad in (0, 101, -1):
        assert_problem(t.admin.get("/v1/mailboxes", params={"limit": bad}), 422)


def test_keys_contacts_and_suppressions_page_too(tenant):
    t = tenant
    for i in range(4):
        t.admin.ok("POST", "/v1/contacts", {"email": f"c{i}@pages.example"}, expect=201)
        t.admin.ok("POST", "/v1/suppression", {"email_address": f"s{i}@pages.example"}, expect=201)
        t.admin.ok("POST", "/v1/api-keys", {"name": f"k{i}", "scopes": ["read"]}, expect=201)
    contacts = _pages(t.admin, "/v1/contacts", "contacts", 3)
    assert [len(p) for p in contacts] == [3, 1]
    assert len({c["id"] for p in contacts for c in p}) == 4
    suppressed = _pages(t.admin, "/v1/suppression", "suppressions", 3)
    addresses = [s["email_address"] for p in suppressed for s in p]
    assert addresses == sorted(addresses)
    assert len(addresses) == 4
    keys = _pages(t.admin, "/v1/api-keys", "api_keys", 2)
    ids = [k["id"] for p in keys for k in p]
    assert ids == sorted(set(ids))  # each once, in id order
    assert len(ids) >= 5  # the tenant's admin key and the four new ones


def test_inbox_pages_follow_next_cursor_newest_first(tenant):
    t = tenant
    src, dest = t.mailbox("src"), t.mailbox("dest")
    for i in range(7):
        assert (
            t.admin.send(src["mailbox_id"], to=[dest["address"]], subject=f"m{i}").status_code
            == 200
        )
    t.wait_inbound(dest["mailbox_id"], 7)
    agent = t.agent(dest["mailbox_id"])
    path = f"/v1/mailboxes/{dest['mailbox_id']}/emails"
    pages = _pages(agent, path, "emails", 3, filter="all")
    assert [len(p) for p in pages] == [3, 3, 1]
    seen = [e["email_id"] for p in pages for e in p]
    assert len(set(seen)) == 7
    assert seen == sorted(seen, reverse=True)
    assert sorted(e["subject"] for p in pages for e in p) == [f"m{i}" for i in range(7)]
    unread = _pages(agent, path, "emails", 3, filter="unread")
    assert [e["email_id"] for p in unread for e in p] == seen


# --- problem documents and validation ----------------------------------------------------


def test_errors_are_problem_documents_for_every_status(tenant):
    t = tenant
    box = t.mailbox("probe", "autonomous")
    mid = box["mailbox_id"]
    reader = t.key(["read"])
    anonymous, wrong = Api(t.mm.api_url, None), Api(t.mm.api_url, "mm_live_wrong")
    t.apis += [anonymous, wrong]
    cases = [
        (anonymous.get("/v1/mailboxes"), 401, "unauthenticated"),
        (wrong.get("/v1/account"), 401, "unauthenticated"),
        (reader.send(mid, to=["a@example.com"]), 403, "forbidden"),
        (t.admin.get("/v1/mailboxes/mbx_01NOSUCHMAILBOX0000000000"), 404, "not_found"),
        (t.admin.get("/v1/no-such-route"), 404, "not_found"),
        (t.admin.put("/v1/mailboxes", {}), 405, "method_not_allowed"),
        (t.admin.post("/v1/mailboxes", {"name": "probe"}), 409, "address_unavailable"),
        (t.admin.post("/v1/mailboxes", {"name": "x", "colour": "red"}), 422, "validation_error"),
        (
            t.admin.request(
                "POST",
                "/v1/mailboxes",
                content=b"{not json",
                headers={"content-type": "application/json"},
            ),
            422,
            "validation_error",
        ),
    ]
    for response, status, code in cases:
        assert_problem(response, status, code)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"to": ["a@example.com"], "subject": "s", "body_text": "b", "priority": 1}, None),
        (
            {"to": ["a@example.com"], "subject": "hi\r\nBcc: evil@example.com", "body_text": "b"},
            None,
        ),
        ({"to": ["a@example.com"], "subject": "hi\nthere", "body_text": "b"}, None),
        ({"to": ["not-an-address"], "subject": "s", "body_text": "b"}, "invalid_address"),
        ({"to": ["a@example.com\r\nRCPT TO:<b@example.com>"], "body_text": "b"}, "invalid_address"),
        ({"to": ["Eve <eve@example.com>"], "body_text": "b"}, "invalid_address"),
        ({"to": [], "body_text": "b"}, None),
        ({"to": [f"r{i}@example.com" for i in range(51)], "body_text": "b"}, None),
        (
            {
                "to": [f"r{i}@example.com" for i in range(30)],
                "cc": [f"c{i}@example.com" for i in range(21)],
                "body_text": "b",
            },
            "invalid_value",
        ),
        ({"to": ["a@example.com"], "subject": "s"}, None),
        ({"to": ["a@example.com"], "body_text": "b", "send_at": "tomorrow"}, None),
        ({"to": ["a@example.com"], "body_text": "b", "send_at": "2030-01-01T09:00:00"}, None),
    ],
    ids=[
        "unknown_field",
        "crlf_subject",
        "lf_subject",
        "bad_address",
        "smuggled_rcpt",
        "display_name_form",
        "no_recipient",
        "51_to",
        "51_to_plus_cc",
        "no_body",
        "bad_send_at",
        "naive_send_at",
    ],
)
def test_invalid_sends_are_422_and_store_nothing(tenant, body, code):
    t = tenant
    box = t.mailbox("strict", "autonomous")
    r = t.admin.post(f"/v1/mailboxes/{box['mailbox_id']}/send", body)
    problem = assert_problem(r, 422, code)
    assert code is not None or problem["code"] in ("validation_error", "invalid_value"), problem
    assert t.admin.emails(box["mailbox_id"]) == []


def test_display_names_and_mailbox_names_are_validated(tenant):
    t = tenant
    assert_problem(t.admin.post("/v1/mailboxes", {"name": "ok", "display_name": "A\r\nB"}), 422)
    assert_problem(t.admin.post("/v1/mailboxes", {"name": "bad name"}), 422, "invalid_address")
    assert_problem(t.admin.post("/v1/mailboxes", {"name": "a@b"}), 422)
    box = t.mailbox("ok")
    r = t.admin.patch(f"/v1/mailboxes/{box['mailbox_id']}", {"display_name": "Evil\nBcc: x"})
    assert_problem(r, 422)
    r = t.admin.patch(f"/v1/mailboxes/{box['mailbox_id']}", {"oversight_mode": "yolo"})
    assert_problem(r, 422)
    assert t.admin.ok("GET", f"/v1/mailboxes/{box['mailbox_id']}")["display_name"] == "ok"
    assert _names(t) == ["ok"]


def test_an_oversize_request_body_is_413(tenant):
    t = tenant
    box = t.mailbox("big")
    blob = json.dumps({"to": ["a@example.com"], "body_text": "x" * MAX_BODY}).encode()
    assert len(blob) > MAX_BODY
    r = t.admin.request(
        "POST",
        f"/v1/mailboxes/{box['mailbox_id']}/send",
        content=blob,
        headers={"content-type": "application/json"},
    )
    assert_problem(r, 413, "payload_too_large")
    assert t.admin.emails(box["mailbox_id"]) == []


# --- content, scheduling, cancelling, tags -----------------------------------------------


def test_markdown_is_rendered_to_html_and_raw_html_is_escaped(tenant):
    t = tenant
    src, dest = t.mailbox("writer"), t.mailbox("reader")
    md = "# Status\n\nAll **green**.\n\n<script>alert(1)</script>\n"
    r = t.admin.send(src["mailbox_id"], to=[dest["address"]], subject="md", markdown=md)
    assert r.status_code == 200, r.text
    sent = t.admin.email(r.json()["message_id"])
    assert sent["body_text"] == md
    assert "<h1>Status</h1>" in sent["body_html"]
    assert "<strong>green</strong>" in sent["body_html"]
    assert "<script>" not in sent["body_html"]
    [arrived] = t.wait_inbound(dest["mailbox_id"])
    assert t.admin.email(arrived["email_id"])["body_html"] == sent["body_html"]


def test_send_at_in_the_future_is_scheduled_and_not_delivered_before(tenant):
    t = tenant
    src, dest = t.mailbox("later"), t.mailbox("dest")
    next_hour = _iso(datetime.now(UTC) + timedelta(hours=1))
    far = t.admin.send(src["mailbox_id"], to=[dest["address"]], subject="far", send_at=next_hour)
    send_at = datetime.now(UTC) + timedelta(seconds=1.5)
    r = t.admin.send(src["mailbox_id"], to=[dest["address"]], subject="soon", send_at=_iso(send_at))
    for scheduled in (far, r):
        assert scheduled.status_code == 202, scheduled.text
        assert scheduled.json()["status"] == "scheduled"
        assert "pending_id" not in scheduled.json()

    # the worker takes it only once send_at has passed ...
    [arrived] = t.wait_inbound(dest["mailbox_id"], timeout=8)
    assert arrived["subject"] == "soon"
    assert _parse(arrived["received_at"]) >= send_at - timedelta(milliseconds=1)
    assert t.wait_status(r.json()["message_id"], "delivered")["send_at"]
    # ... and not a moment earlier, however often deliveries run
    t.flush()
    assert [m["subject"] for m in t.inbound(dest["mailbox_id"])] == ["soon"]
    assert t.admin.email(far.json()["message_id"])["status"] == "scheduled"

    past = t.admin.send(
        src["mailbox_id"],
        to=[dest["address"]],
        send_at=_iso(datetime.now(UTC) - timedelta(hours=1)),
    )
    assert past.status_code == 200, past.text
    assert past.json()["status"] == "sent"


def test_cancel_before_delivery_means_never_delivered(tenant):
    t = tenant
    src, dest = t.mailbox("fickle"), t.mailbox("dest")
    agent = t.agent(src["mailbox_id"])
    later = _iso(datetime.now(UTC) + timedelta(hours=1))
    sent = agent.send(src["mailbox_id"], to=[dest["address"]], send_at=later).json()
    r = agent.post(f"/v1/emails/{sent['message_id']}/cancel")
    assert r.status_code == 200, r.text
    assert r.json() == {"email_id": sent["message_id"], "status": "cancelled"}
    assert_problem(agent.post(f"/v1/emails/{sent['message_id']}/cancel"), 409, "illegal_transition")
    t.flush()
    assert agent.email(sent["message_id"])["status"] == "cancelled"
    assert t.inbound(dest["mailbox_id"]) == []
    # a delivered message can no longer be cancelled
    done = agent.send(src["mailbox_id"], to=[dest["address"]]).json()
    t.wait_status(done["message_id"], "delivered")
    assert_problem(agent.post(f"/v1/emails/{done['message_id']}/cancel"), 409)
    assert t.admin.email(done["message_id"])["status"] == "delivered"


def test_tags_put_get_delete(tenant):
    t = tenant
    src, dest = t.mailbox("tagger"), t.mailbox("dest")
    agent = t.agent(dest["mailbox_id"])
    t.admin.send(src["mailbox_id"], to=[dest["address"]])
    [email] = t.wait_inbound(dest["mailbox_id"])
    path = f"/v1/emails/{email['email_id']}/tags"
    assert agent.ok("GET", path)["tags"] == {}
    put = agent.ok("PUT", path, {"tags": {"priority": "high", "label": "x"}})
    assert put["tags"] == {"priority": "high", "label": "x"}
    assert agent.ok("PUT", path, {"tags": {"label": "y"}})["tags"] == {
        "priority": "high",
        "label": "y",
    }
    assert agent.ok("DELETE", f"{path}/priority")["tags"] == {"label": "y"}
    assert agent.ok("GET", path)["tags"] == {"label": "y"}
    assert agent.email(email["email_id"])["tags"] == {"label": "y"}
    assert_problem(agent.put(path, {"tags": {"n": 1}}), 422)


# --- contacts and suppression ------------------------------------------------------------


def test_contacts_crud(tenant):
    t = tenant
    made = t.admin.ok(
        "POST",
        "/v1/contacts",
        {"email": "ann@example.com", "name": "Ann", "tags": ["vip"]},
        expect=201,
    )
    assert made["email"] == "ann@example.com"
    assert made["tags"] == ["vip"]
    t.admin.ok("POST", "/v1/contacts", {"email": "bob@example.org", "name": "Bob"}, expect=201)
    listed = t.admin.ok("GET", "/v1/contacts")["contacts"]
    assert sorted(c["email"] for c in listed) == ["ann@example.com", "bob@example.org"]
    assert [
        c["id"] for c in t.admin.ok("GET", "/v1/contacts", params={"q": "ANN"})["contacts"]
    ] == [made["id"]]
    assert t.admin.ok("GET", "/v1/contacts", params={"q": "zed"})["contacts"] == []

    assert t.admin.ok("DELETE", f"/v1/contacts/{made['id']}") == {"id": made["id"], "deleted": True}
    assert [c["email"] for c in t.admin.ok("GET", "/v1/contacts")["contacts"]] == [
        "bob@example.org"
    ]
    assert_problem(t.admin.delete(f"/v1/contacts/{made['id']}"), 404, "not_found")
    assert_problem(t.admin.post("/v1/contacts", {"email": "nope"}), 422, "invalid_address")
    assert_problem(t.admin.post("/v1/contacts", {"email": "c@example.com", "name": "C\r\nX"}), 422)


def test_suppressed_recipients_are_refused_in_every_spelling(tenant):
    t = tenant
    src, dest = t.mailbox("sender"), t.mailbox("gone")
    added = t.admin.post("/v1/suppression", {"email_address": "Gone@Example.com"})
    assert added.status_code == 201, added.text
    assert added.json()["email_address"] == "gone@example.com"
    assert t.admin.post("/v1/suppression", {"email_address": dest["address"]}).status_code == 201
    listed = {s["email_address"] for s in t.admin.ok("GET", "/v1/suppression")["suppressions"]}
    assert listed == {"gone@example.com", dest["address"]}

    spellings = [
        {"to": ["gone@example.com"]},
        {"to": ["GONE@EXAMPLE.COM"]},
        {"to": ["gone+promo@example.com"]},
        {"to": ["ok@example.com"], "cc": ["gone@example.com"]},
        {"to": ["ok@example.com"], "bcc": ["Gone+x@example.com"]},
        {"to": [dest["address"].upper()]},
    ]
    for rcpts in spellings:
        r = t.admin.send(src["mailbox_id"], **rcpts)
        problem = assert_problem(r, 422, "recipient_suppressed")
        assert problem["addresses"], problem
    assert t.admin.emails(src["mailbox_id"]) == []

    r = t.admin.delete(f"/v1/suppression/{dest['address']}")
    assert r.status_code == 200, r.text
    assert t.admin.send(src["mailbox_id"], to=[dest["address"]]).status_code == 200
    t.wait_inbound(dest["mailbox_id"])


def test_suppression_added_after_queueing_stops_delivery(tenant):
    """P14 is checked again when the message is about to leave."""
    t = tenant
    src, dest = t.mailbox("sender"), t.mailbox("dest")
    soon = _iso(datetime.now(UTC) + timedelta(seconds=1))
    sent = t.admin.send(src["mailbox_id"], to=[dest["address"]], send_at=soon).json()
    assert sent["status"] == "scheduled"
    assert t.admin.post("/v1/suppression", {"email_address": dest["address"]}).status_code == 201
    assert t.wait_status(sent["message_id"], "cancelled", "delivered", timeout=8)["status"] == (
        "cancelled"
    )
    t.flush()
    assert t.inbound(dest["mailbox_id"]) == []


def test_approving_mail_to_a_recipient_suppressed_meanwhile_is_refused(tenant):
    t = tenant
    src, dest = t.mailbox("held", "gated_all"), t.mailbox("dest")
    agent, reviewer = t.agent(src["mailbox_id"]), t.reviewer()
    sent = agent.send(src["mailbox_id"], to=[dest["address"]]).json()
    assert reviewer.post("/v1/suppression", {"email_address": dest["address"]}).status_code == 201
    assert_problem(reviewer.decide(sent["pending_id"], "approve"), 422, "recipient_suppressed")
    t.flush()
    assert agent.email(sent["message_id"])["status"] == "pending_approval"
    assert t.inbound(dest["mailbox_id"]) == []


# --- audit log ---------------------------------------------------------------------------


def _audit(t) -> list[dict]:
    return list(reversed(_pages_flat(t.admin, "/v1/audit-log", "entries", 50)))


def _pages_flat(api, path, field, limit) -> list[dict]:
    return [item for page in _pages(api, path, field, limit) for item in page]


def test_audit_log_is_a_verifiable_hash_chain(tenant):
    t = tenant
    box = t.mailbox("audited", "gated_send")
    sent = t.admin.send(box["mailbox_id"], to=["x@example.com"]).json()
    t.reviewer().decide(sent["pending_id"], "reject", reason="no")
    entries = _audit(t)
    actions = [e["action"] for e in entries]
    for expected in ("account.create", "api_key.create", "mailbox.create", "message.send"):
        assert expected in actions, actions
    assert actions[-1] == "oversight.reject"
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert entries[0]["prev_hash"] == "0" * 64
    for prev, entry in itertools.pairwise(entries):
        assert entry["prev_hash"] == prev["hash"]
    assert t.admin.ok("GET", "/v1/audit-log/verify") == {
        "valid": True,
        "entries": len(entries),
        "broken_at": None,
    }
    # paging with a small page size walks the same chain
    assert list(reversed(_pages_flat(t.admin, "/v1/audit-log", "entries", 2))) == entries


@pytest.mark.parametrize("tamper", ["edit_metadata", "edit_action", "delete_row"])
def test_tampering_with_the_stored_audit_log_is_detected(tenant, root, mm, tamper):
    t = tenant
    for name in ("one", "two", "three"):
        t.mailbox(name)
    entries = _audit(t)
    [victim] = [
        e for e in entries if e["action"] == "mailbox.create" and "two@" in str(e["metadata"])
    ]
    db = sqlite3.connect(mm.data_dir / "multimail.db", timeout=10)
    try:
        (doc,) = db.execute("SELECT doc FROM audit WHERE id = ?", [victim["id"]]).fetchone()
        stored = json.loads(doc)
        if tamper == "delete_row":
            db.execute("DELETE FROM audit WHERE id = ?", [victim["id"]])
        else:
            if tamper == "edit_metadata":
                stored["metadata"]["address"] = stored["metadata"]["address"].replace("two", "evil")
            else:
                stored["action"] = "mailbox.read"
            db.execute("UPDATE audit SET doc = ? WHERE id = ?", [json.dumps(stored), victim["id"]])
        db.commit()
    finally:
        db.close()

    report = t.admin.ok("GET", "/v1/audit-log/verify")
    assert report["valid"] is False
    expected = victim["seq"] + 1 if tamper == "delete_row" else victim["seq"]
    assert report["broken_at"] == expected
    # another account's chain is untouched
    assert root.ok("GET", "/v1/audit-log/verify")["valid"] is True


# --- events ------------------------------------------------------------------------------


def test_events_feed_with_after_cursor_and_type_filter(tenant):
    t = tenant
    a, b = t.mailbox("a"), t.mailbox("b")
    t.admin.send(a["mailbox_id"], to=[b["address"]])
    t.wait_inbound(b["mailbox_id"])
    everything = t.events()
    seqs = [e["seq"] for e in everything]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    assert {e["account_id"] for e in everything} == {t.account_id}
    types = [e["type"] for e in everything]
    for expected in ("mailbox.created", "message.queued", "message.sent", "message.received"):
        assert expected in types, types

    assert t.events(after=seqs[1]) == everything[2:]
    assert t.events(after=seqs[-1]) == []
    created = t.events(type="mailbox.created")
    assert [e["mailbox_id"] for e in created] == [a["mailbox_id"], b["mailbox_id"]]
    wanted = {"mailbox.created", "message.received"}
    both = t.events(type=",".join(sorted(wanted)))
    assert both == [e for e in everything if e["type"] in wanted]
    assert t.events(mailbox_id=b["mailbox_id"], type="message.received")[0]["data"]["thread_id"]

    paged, after = [], 0
    while True:
        body = t.admin.ok("GET", "/v1/events", params={"after": after, "limit": 2})
        paged += body["events"]
        if body["next_cursor"] is None:
            break
        after = int(body["next_cursor"])
    assert paged == everything


# --- rate limits -------------------------------------------------------------------------


@contextmanager
def serve(app) -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_rate_limit_per_key_answers_429_with_retry_after(tenant, mm):
    t = tenant
    other = t.key(["read"])
    app = create_app(mm.service, limiter=RateLimiter(rate=1, burst=2))
    with serve(app) as url, httpx.Client(base_url=url) as c:
        auth = {"Authorization": f"Bearer {t.admin.secret}"}
        first, second, third = (c.get("/v1/account", headers=auth) for _ in range(3))
        assert (first.status_code, second.status_code) == (200, 200)
        problem = assert_problem(third, 429, "rate_limited")
        assert int(third.headers["Retry-After"]) >= 1
        assert problem["retry_after"] == int(third.headers["Retry-After"])
        # per key: another key still has its own burst; /health is not limited
        assert (
            c.get("/v1/account", headers={"Authorization": f"Bearer {other.secret}"}).status_code
            == 200
        )
        assert all(c.get("/health").status_code == 200 for _ in range(5))


# --- health and OpenAPI ------------------------------------------------------------------


def test_health_needs_no_key(mm):
    r = httpx.get(f"{mm.api_url}/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_openapi_lists_every_route(mm):
    r = httpx.get(f"{mm.api_url}/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    served = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    spec = tomllib.loads(SPEC_ROUTES.read_text())["routes"]
    expected = {tuple(k.split(" ", 1)) for k in spec} - {
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/docs/oauth2-redirect"),
        ("GET", "/redoc"),
    }
    assert expected <= served, sorted(expected - served)
    for seed_route in (
        ("POST", "/v1/mailboxes"),
        ("POST", "/v1/mailboxes/{mailbox_id}/send"),
        ("POST", "/v1/mailboxes/{mailbox_id}/reply"),
        ("GET", "/v1/mailboxes/{mailbox_id}/emails"),
        ("GET", "/v1/emails/{email_id}"),
        ("GET", "/v1/oversight/pending"),
        ("POST", "/v1/oversight/decide"),
        ("GET", "/v1/mailboxes/{mailbox_id}/reputation"),
    ):
        assert seed_route in served, seed_route
