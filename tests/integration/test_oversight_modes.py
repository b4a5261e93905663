"""Every oversight mode through the real HTTP API (PRODUCT §4; P1-P5, P7).

Agents send with their own mailbox-restricted key (send + read); a human operator decides
with a separate oversight key; mail between mailboxes of the server is delivered locally by
the running delivery worker. "Not delivered" is asserted after ``flush()`` has attempted
every due delivery; "delivered" is polled for with a deadline.
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import assert_problem, eventually, unique


def _snapshot(t, mailbox_id: str) -> tuple:
    """What an attempt that stores nothing must leave unchanged."""
    return (
        t.admin.emails(mailbox_id, limit=100),
        t.admin.emails(mailbox_id, direction="outbound", limit=100),
        t.admin.pending(),
        [e["id"] for e in t.events(mailbox_id=mailbox_id)],
        t.audit_top(),
    )


# --- read_only ---------------------------------------------------------------------------


def test_read_only_refuses_send_and_reply_and_stores_nothing(tenant):
    t = tenant
    ro = t.mailbox("watcher", "read_only")
    peer = t.mailbox("peer")
    agent = t.agent(ro["mailbox_id"])

    # inbound to a read_only mailbox is delivered and readable
    assert (
        t.admin.send(peer["mailbox_id"], to=[ro["address"]], subject="for you").status_code == 200
    )
    [received] = t.wait_inbound(ro["mailbox_id"])
    assert agent.email(received["email_id"])["subject"] == "for you"
    before = _snapshot(t, ro["mailbox_id"])

    r = agent.send(ro["mailbox_id"], to=[peer["address"]])
    assert_problem(r, 403, "oversight_denied")
    assert r.json()["rule"] == "read_only_refuses_send"
    r = agent.post(
        f"/v1/mailboxes/{ro['mailbox_id']}/reply",
        {"email_id": received["email_id"], "body_text": "thanks"},
    )
    assert_problem(r, 403, "oversight_denied")
    # not even the account's admin key makes a read_only mailbox send
    assert_problem(t.admin.send(ro["mailbox_id"], to=[peer["address"]]), 403, "oversight_denied")
    r = t.admin.post(
        f"/v1/mailboxes/{ro['mailbox_id']}/reply",
        {"thread_id": received["thread_id"], "body_text": "thanks"},
    )
    assert_problem(r, 403, "oversight_denied")

    t.flush()
    assert _snapshot(t, ro["mailbox_id"]) == before
    assert t.inbound(peer["mailbox_id"]) == []


# --- gated_all ---------------------------------------------------------------------------


def test_gated_all_holds_outbound_until_a_separate_overseer_approves(tenant):
    t = tenant
    gated = t.mailbox("careful", "gated_all")
    dest = t.mailbox("dest")
    agent = t.agent(gated["mailbox_id"])
    reviewer = t.reviewer()

    r = agent.send(gated["mailbox_id"], to=[dest["address"]], subject="needs review")
    assert r.status_code == 202, r.text
    sent = r.json()
    assert sent["status"] == "pending"
    assert sent["pending_id"].startswith("apr_")
    assert sent["message_id"].startswith("msg_")
    assert sent["oversight"]["rule"] == "gated_all_holds_send"

    t.flush()
    assert t.inbound(dest["mailbox_id"]) == []
    assert agent.email(sent["message_id"])["status"] == "pending_approval"
    [item] = [p for p in reviewer.pending() if p["pending_id"] == sent["pending_id"]]
    assert item["direction"] == "outbound"
    assert item["email_id"] == sent["message_id"]
    assert item["subject"] == "needs review"
    assert item["to"] == [dest["address"]]

    # the agent itself holds no oversight scope
    assert_problem(agent.decide(sent["pending_id"], "approve"), 403)
    t.flush()
    assert t.inbound(dest["mailbox_id"]) == []

    decided = reviewer.decide(sent["pending_id"], "approve")
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "approved"
    assert decided.json()["message_id"] == sent["message_id"]

    [arrived] = t.wait_inbound(dest["mailbox_id"])
    assert arrived["subject"] == "needs review"
    assert arrived["sender"] == gated["address"]
    assert t.wait_status(sent["message_id"], "delivered")["approved_by"] == reviewer.key_id
    assert sent["pending_id"] not in {p["pending_id"] for p in reviewer.pending()}
    # decided once
    assert_problem(reviewer.decide(sent["pending_id"], "approve"), 409, "already_decided")
    assert_problem(reviewer.decide(sent["pending_id"], "reject"), 409, "already_decided")
    t.flush()
    assert len(t.inbound(dest["mailbox_id"])) == 1


def test_gated_all_inbound_is_invisible_until_approved(tenant):
    t = tenant
    gated = t.mailbox("sheltered", "gated_all")
    sender = t.mailbox("stranger")
    agent = t.agent(gated["mailbox_id"])
    reviewer = t.reviewer()
    mid = gated["mailbox_id"]

    assert (
        t.admin.send(sender["mailbox_id"], to=[gated["address"]], subject="psst").status_code == 200
    )
    [held] = eventually(
        lambda: [p for p in reviewer.pending() if p["mailbox_id"] == mid],
        what="the inbound message to be held for review",
    )
    assert held["direction"] == "inbound"
    assert held["subject"] == "psst"
    email_id = held["email_id"]

    for flt in ("all", "unread", "requires_action"):
        assert agent.emails(mid, filter=flt) == []
        assert t.admin.emails(mid, filter=flt) == []
    for api in (agent, t.admin):
        assert_problem(api.get(f"/v1/emails/{email_id}"), 404, "not_found")
        assert_problem(api.get(f"/v1/emails/{email_id}/raw"), 404, "not_found")
    r = agent.post(f"/v1/mailboxes/{mid}/reply", {"email_id": email_id, "body_text": "hi"})
    assert_problem(r, 404, "not_found")
    # no message.received for the agent to see either (P3)
    received = {"type": "message.received", "mailbox_id": mid}
    assert agent.ok("GET", "/v1/events", params=received)["events"] == []

    decided = reviewer.decide(held["pending_id"], "approve")
    assert decided.status_code == 200, decided.text

    [visible] = agent.emails(mid)
    assert visible["email_id"] == email_id
    assert visible["subject"] == "psst"
    assert visible["sender"] == sender["address"]
    assert agent.email(email_id)["body_text"] == "hi there"
    assert len(agent.ok("GET", "/v1/events", params=received)["events"]) == 1
    assert (
        agent.post(
            f"/v1/mailboxes/{mid}/reply", {"email_id": email_id, "body_text": "hello"}
        ).status_code
        == 202
    )  # gated_all: the reply is held in turn


def test_gated_all_inbound_rejected_stays_invisible(tenant):
    t = tenant
    gated = t.mailbox("sheltered", "gated_all")
    sender = t.mailbox("spammer")
    reviewer = t.reviewer()
    t.admin.send(sender["mailbox_id"], to=[gated["address"]], subject="buy now")
    [held] = eventually(
        lambda: [p for p in reviewer.pending() if p["mailbox_id"] == gated["mailbox_id"]],
        what="the inbound message to be held",
    )
    assert reviewer.decide(held["pending_id"], "reject", reason="spam").status_code == 200
    assert t.admin.emails(gated["mailbox_id"]) == []
    assert_problem(t.admin.get(f"/v1/emails/{held['email_id']}"), 404)


# --- gated_send --------------------------------------------------------------------------


def test_gated_send_holds_unless_every_recipient_is_allowlisted(tenant, mm):
    t = tenant
    gs = t.mailbox("outreach", "gated_send")
    exact = t.mailbox(unique("friend"), domain=mm.domain)  # on the shared server domain
    pal = t.mailbox("pal")  # on the account's own domain: matched by *@domain
    stranger = t.mailbox(unique("stranger"), domain=mm.domain)
    agent = t.agent(gs["mailbox_id"])
    reviewer = t.reviewer()
    mid = gs["mailbox_id"]

    r = agent.send(mid, to=[pal["address"]])
    assert r.status_code == 202, r.text
    assert r.json()["oversight"]["rule"] == "gated_send_holds"

    # the agent cannot widen its own allowlist; an oversight key can
    entries = [exact["address"], f"*@{t.domain}"]
    assert_problem(agent.put(f"/v1/mailboxes/{mid}/allowlist", {"entries": entries}), 403)
    assert agent.ok("GET", f"/v1/mailboxes/{mid}/allowlist")["entries"] == []
    set_ = reviewer.put(f"/v1/mailboxes/{mid}/allowlist", {"entries": entries})
    assert set_.status_code == 200, set_.text
    assert set_.json()["entries"] == sorted(entries)
    assert agent.ok("GET", f"/v1/mailboxes/{mid}/allowlist")["entries"] == sorted(entries)
    assert_problem(
        reviewer.put(f"/v1/mailboxes/{mid}/allowlist", {"entries": ["*@*.example"]}), 422
    )

    allowed = {
        "exact": {"to": [exact["address"]]},
        "domain": {"to": [pal["address"]]},
        "plus_tag": {"to": [pal["address"].replace("@", "+news@")]},
        "both": {"to": [exact["address"]], "cc": [pal["address"]]},
    }
    sent_ids = {}
    for label, rcpts in allowed.items():
        r = agent.send(mid, subject=label, **rcpts)
        assert r.status_code == 200, (label, r.text)
        assert r.json()["status"] == "sent"
        assert r.json()["oversight"]["rule"] == "gated_send_allowlisted"
        sent_ids[label] = r.json()["message_id"]

    held = {
        "stranger": {"to": [stranger["address"]]},
        "one_of_two": {"to": [exact["address"], stranger["address"]]},
        "cc": {"to": [exact["address"]], "cc": [stranger["address"]]},
        "bcc": {"to": [pal["address"]], "bcc": [stranger["address"]]},
        "subdomain": {"to": [f"someone@sub.{t.domain}"]},
        "lookalike": {"to": [f"someone@{t.domain}.evil.example"]},
    }
    for label, rcpts in held.items():
        r = agent.send(mid, subject=label, **rcpts)
        assert r.status_code == 202, (label, r.text)
        assert r.json()["status"] == "pending"
        assert r.json()["pending_id"]

    for email_id in sent_ids.values():
        t.wait_status(email_id, "delivered")
    t.flush()
    assert sorted(m["subject"] for m in t.inbound(exact["mailbox_id"])) == ["both", "exact"]
    assert sorted(m["subject"] for m in t.inbound(pal["mailbox_id"])) == [
        "both",
        "domain",
        "plus_tag",
    ]
    assert t.inbound(stranger["mailbox_id"]) == []


# --- monitored and autonomous ------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "rule"),
    [("monitored", "monitored_sends_with_copy"), ("autonomous", "autonomous_sends")],
)
def test_monitored_and_autonomous_send_and_deliver_locally(tenant, mode, rule):
    t = tenant
    box = t.mailbox("free", mode)
    dest = t.mailbox("dest")
    agent = t.agent(box["mailbox_id"])

    r = agent.send(box["mailbox_id"], to=[dest["address"]], subject=f"from {mode}")
    assert r.status_code == 200, r.text
    sent = r.json()
    assert sent["status"] == "sent"
    assert "pending_id" not in sent
    assert sent["oversight"] == {
        "verdict": "allow",
        "rule": rule,
        "reason": sent["oversight"]["reason"],
    }

    [arrived] = t.wait_inbound(dest["mailbox_id"])
    assert arrived["subject"] == f"from {mode}"
    assert arrived["sender"] == box["address"]
    assert arrived["to"] == [dest["address"]]
    assert arrived["direction"] == "inbound"
    assert arrived["requires_action"] is True  # mail from another agent requires action
    assert t.wait_status(sent["message_id"], "delivered")["direction"] == "outbound"
    t.flush()
    assert len(t.inbound(dest["mailbox_id"])) == 1  # handed over once (P7)


def test_monitored_send_copies_the_oversight_address_once(tenant):
    """P4: every message sent from a monitored mailbox has exactly one oversight copy,
    Bcc-style. The account's oversight address is made a local mailbox so the copy can be
    observed without an outbound relay."""
    t = tenant
    ops = t.mailbox("ops")
    t.admin.ok("PATCH", "/v1/account", {"oversight_email": ops["address"]})
    box = t.mailbox("watched", "monitored")
    free = t.mailbox("free", "autonomous")
    dest = t.mailbox("dest")

    watched = t.admin.send(box["mailbox_id"], to=[dest["address"]], subject="watched")
    assert watched.status_code == 200, watched.text
    unwatched = t.admin.send(free["mailbox_id"], to=[dest["address"]], subject="unwatched")
    assert unwatched.status_code == 200, unwatched.text
    t.wait_inbound(dest["mailbox_id"], 2)
    t.wait_status(watched.json()["message_id"], "delivered")
    t.flush()

    copies = t.inbound(ops["mailbox_id"])
    assert [c["subject"] for c in copies] == ["watched"], copies
    for got in t.inbound(dest["mailbox_id"]):
        assert ops["address"] not in got["to"] + got["cc"]
        raw = t.admin.get(f"/v1/emails/{got['email_id']}/raw").text
        assert ops["address"] not in raw


# --- threads across agents ---------------------------------------------------------------


def test_agent_to_agent_reply_lands_in_the_same_thread_on_both_sides(tenant):
    t = tenant
    a = t.mailbox("alice")
    b = t.mailbox("bob")
    agent_a, agent_b = t.agent(a["mailbox_id"]), t.agent(b["mailbox_id"])

    first = agent_a.send(a["mailbox_id"], to=[b["address"]], subject="plan").json()
    thread_a = first["thread_id"]
    [got] = t.wait_inbound(b["mailbox_id"])
    thread_b = got["thread_id"]
    assert got["requires_action"] is True

    r = agent_b.post(
        f"/v1/mailboxes/{b['mailbox_id']}/reply", {"email_id": got["email_id"], "body_text": "ok"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["thread_id"] == thread_b
    [answer] = t.wait_inbound(a["mailbox_id"])
    assert answer["thread_id"] == thread_a
    assert answer["subject"] == "Re: plan"
    view = agent_a.email(answer["email_id"])
    assert view["in_reply_to"] == agent_a.email(first["message_id"])["message_id"]
    # replying marked the original as answered: it no longer requires action
    assert agent_b.email(got["email_id"])["requires_action"] is False

    # and back again, by thread id this time
    r = agent_a.post(
        f"/v1/mailboxes/{a['mailbox_id']}/reply", {"thread_id": thread_a, "body_text": "great"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["thread_id"] == thread_a
    t.wait_inbound(b["mailbox_id"], 2)

    side_a = agent_a.ok("GET", f"/v1/mailboxes/{a['mailbox_id']}/threads/{thread_a}")
    side_b = agent_b.ok("GET", f"/v1/mailboxes/{b['mailbox_id']}/threads/{thread_b}")
    assert side_a["message_count"] == 3
    assert side_b["message_count"] == 3
    assert [e["direction"] for e in side_a["emails"]] == ["outbound", "inbound", "outbound"]
    assert [e["direction"] for e in side_b["emails"]] == ["inbound", "outbound", "inbound"]
    assert {e["thread_id"] for e in side_b["emails"]} == {thread_b}
    assert set(side_a["participants"]) == {a["address"], b["address"]}


# --- decisions ---------------------------------------------------------------------------


def test_approve_with_edits_changes_what_arrives_and_the_audit_log_keeps_both(tenant):
    t = tenant
    gated = t.mailbox("reviewed", "gated_all")
    dest = t.mailbox("dest")
    agent = t.agent(gated["mailbox_id"])
    reviewer = t.reviewer()

    sent = agent.send(
        gated["mailbox_id"], to=[dest["address"]], subject="Draft subject", body_text="draft body"
    ).json()
    r = reviewer.decide(
        sent["pending_id"],
        "approve",
        edits={"subject": "Edited subject", "body_text": "edited body"},
        reason="tone",
    )
    assert r.status_code == 200, r.text
    assert r.json()["edited"] is True

    [arrived] = t.wait_inbound(dest["mailbox_id"])
    assert arrived["subject"] == "Edited subject"
    assert t.admin.email(arrived["email_id"])["body_text"] == "edited body"
    assert "draft" not in t.admin.get(f"/v1/emails/{arrived['email_id']}/raw").text.lower()
    outbound = t.wait_status(sent["message_id"], "delivered")
    assert outbound["subject"] == "Edited subject"

    entries = t.admin.ok("GET", "/v1/audit-log", params={"limit": 100})["entries"]
    [approval] = [e for e in entries if e["action"] == "oversight.approve"]
    assert approval["resource_id"] == sent["message_id"]
    assert approval["actor_key_id"] == reviewer.key_id
    meta = approval["metadata"]
    assert meta["original"]["subject"] == "Draft subject"
    assert meta["original"]["body_text"] == "draft body"
    assert meta["edited"]["subject"] == "Edited subject"
    assert meta["edited"]["body_text"] == "edited body"
    [submitted] = [e for e in entries if e["action"] == "message.send"]
    assert submitted["metadata"]["subject"] == "Draft subject"
    assert t.admin.ok("GET", "/v1/audit-log/verify")["valid"] is True


def test_reject_never_delivers_and_deciding_twice_conflicts(tenant):
    t = tenant
    gated = t.mailbox("risky", "gated_send")
    dest = t.mailbox("dest")
    agent = t.agent(gated["mailbox_id"])
    reviewer = t.reviewer()

    sent = agent.send(gated["mailbox_id"], to=[dest["address"]], subject="nope").json()
    r = reviewer.decide(sent["pending_id"], "reject", reason="off-brand")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "rejected"
    assert r.json()["message_status"] == "rejected"

    assert_problem(reviewer.decide(sent["pending_id"], "approve"), 409, "already_decided")
    assert_problem(reviewer.decide(sent["pending_id"], "reject"), 409, "already_decided")
    r = reviewer.post("/v1/oversight/decide", {"email_id": sent["message_id"], "action": "approve"})
    assert_problem(r, 409, "already_decided")
    # a rejected message cannot be smuggled out by cancelling or re-deciding
    assert_problem(agent.post(f"/v1/emails/{sent['message_id']}/cancel"), 409)

    t.flush()
    assert agent.email(sent["message_id"])["status"] == "rejected"
    assert t.inbound(dest["mailbox_id"]) == []
    assert sent["pending_id"] not in {p["pending_id"] for p in reviewer.pending()}
    types = [e["type"] for e in t.events(mailbox_id=gated["mailbox_id"])]
    assert "oversight.rejected" in types
    assert not {"message.sent", "message.delivered"} & set(types)


def test_the_creator_can_never_review_its_own_message_even_with_admin(tenant):
    t = tenant
    gated = t.mailbox("self", "gated_send")
    dest = t.mailbox("dest")

    sent = t.admin.send(gated["mailbox_id"], to=[dest["address"]], subject="mine").json()
    assert sent["status"] == "pending"
    for action in ("approve", "reject"):
        r = t.admin.decide(sent["pending_id"], action)
        assert_problem(r, 403, "forbidden")
        assert r.json()["rule"] == "self_approval"
    t.flush()
    assert t.admin.email(sent["message_id"])["status"] == "pending_approval"
    assert sent["pending_id"] in {p["pending_id"] for p in t.admin.pending()}
    assert t.inbound(dest["mailbox_id"]) == []

    other_admin = t.key(["admin"])
    assert other_admin.decide(sent["pending_id"], "approve").status_code == 200
    t.wait_inbound(dest["mailbox_id"])


# --- dry run -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "verdict", "rule", "status"),
    [
        ("gated_all", "hold", "gated_all_holds_send", "pending"),
        ("gated_send", "hold", "gated_send_holds", "pending"),
        ("monitored", "allow", "monitored_sends_with_copy", "sent"),
        ("autonomous", "allow", "autonomous_sends", "sent"),
    ],
)
def test_dry_run_returns_the_decision_and_stores_nothing(tenant, mode, verdict, rule, status):
    t = tenant
    box = t.mailbox("tester", mode)
    dest = t.mailbox("dest")
    agent = t.agent(box["mailbox_id"])
    # something to reply to
    t.admin.send(dest["mailbox_id"], to=[box["address"]], subject="question")
    if mode == "gated_all":
        [held] = eventually(lambda: t.admin.pending(), what="held inbound")
        assert t.reviewer().decide(held["pending_id"], "approve").status_code == 200
    [question] = t.wait_inbound(box["mailbox_id"])
    before = _snapshot(t, box["mailbox_id"])
    dest_before = t.inbound(dest["mailbox_id"])

    r = agent.send(box["mailbox_id"], to=[dest["address"]], dry_run=True)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["dry_run"] is True
    assert (body["verdict"], body["rule"], body["status"]) == (verdict, rule, status)
    assert body["reason"]
    assert "message_id" not in body or not body["message_id"]

    r = agent.post(
        f"/v1/mailboxes/{box['mailbox_id']}/reply",
        {"email_id": question["email_id"], "body_text": "maybe", "dry_run": True},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["verdict"], r.json()["rule"]) == (verdict, rule)

    t.flush()
    assert _snapshot(t, box["mailbox_id"]) == before
    assert t.inbound(dest["mailbox_id"]) == dest_before


def test_dry_run_from_read_only_is_refused_like_the_real_send(tenant):
    t = tenant
    box = t.mailbox("ro", "read_only")
    before = _snapshot(t, box["mailbox_id"])
    r = t.admin.send(box["mailbox_id"], to=["x@example.com"], dry_run=True)
    assert_problem(r, 403, "oversight_denied")
    assert _snapshot(t, box["mailbox_id"]) == before


# --- mode changes ------------------------------------------------------------------------


def test_agent_lowers_its_mode_but_only_an_overseer_raises_it(tenant):
    t = tenant
    box = t.mailbox("climber", "autonomous")
    dest = t.mailbox("dest")
    mid = box["mailbox_id"]
    agent = t.agent(mid)
    reviewer = t.reviewer()

    lowered = agent.patch(f"/v1/mailboxes/{mid}", {"oversight_mode": "gated_all"})
    assert lowered.status_code == 200, lowered.text
    assert lowered.json()["oversight_mode"] == "gated_all"
    # takes effect for the very next send
    held = agent.send(mid, to=[dest["address"]], subject="after lowering")
    assert held.status_code == 202, held.text

    for target in ("gated_send", "monitored", "autonomous"):
        r = agent.patch(f"/v1/mailboxes/{mid}", {"oversight_mode": target})
        assert_problem(r, 403, "oversight_denied")
    assert t.admin.ok("GET", f"/v1/mailboxes/{mid}")["oversight_mode"] == "gated_all"

    up = agent.post(f"/v1/mailboxes/{mid}/request-upgrade", {"target_mode": "autonomous"})
    assert up.status_code == 202, up.text
    assert up.json()["status"] == "upgrade_requested"
    assert t.admin.ok("GET", f"/v1/mailboxes/{mid}")["oversight_mode"] == "gated_all"
    [event] = t.events(type="oversight.upgrade_requested", mailbox_id=mid)
    assert (event["data"]["current"], event["data"]["requested"]) == ("gated_all", "autonomous")
    assert event["data"]["by"] == agent.key_id
    assert_problem(
        agent.post(f"/v1/mailboxes/{mid}/request-upgrade", {"target_mode": "read_only"}), 422
    )

    # the operator promotes; the message held before stays held (no silent release)
    raised = reviewer.patch(f"/v1/mailboxes/{mid}", {"oversight_mode": "autonomous"})
    assert raised.status_code == 200, raised.text
    t.flush()
    assert agent.email(held.json()["message_id"])["status"] == "pending_approval"
    assert t.inbound(dest["mailbox_id"]) == []
    assert agent.send(mid, to=[dest["address"]], subject="now free").status_code == 200

    # and the agent may lower itself all the way to read_only, but not climb back
    assert agent.patch(f"/v1/mailboxes/{mid}", {"oversight_mode": "read_only"}).status_code == 200
    r = agent.patch(f"/v1/mailboxes/{mid}", {"oversight_mode": "gated_all"})
    assert_problem(r, 403, "oversight_denied")
    # an approval does not release mail from a mailbox that became read_only (P2)
    r = reviewer.decide(held.json()["pending_id"], "approve")
    assert_problem(r, 403, "oversight_denied")
    t.flush()
    assert [m["subject"] for m in t.inbound(dest["mailbox_id"])] == ["now free"]
