"""P11 decommission and P10 durability against real servers.

Decommission runs against the module's embedded server. Durability starts ``multimail
serve`` as a subprocess on a SQLite file, talks HTTP to it, stops it with SIGTERM (which
must exit 0) or SIGKILL (mid-burst), starts it again on the same file and checks that
everything the server acknowledged with a 2xx is still there.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import Api, assert_problem, eventually, unique

# --- decommission (P11) ------------------------------------------------------------------


def test_a_decommissioned_mailbox_sends_nothing(tenant):
    t = tenant
    box, peer = t.mailbox("retiring"), t.mailbox("peer")
    mid = box["mailbox_id"]
    agent = t.agent(mid)
    t.admin.send(peer["mailbox_id"], to=[box["address"]], subject="earlier")
    [earlier] = t.wait_inbound(mid)

    assert_problem(agent.delete(f"/v1/mailboxes/{mid}"), 403)  # only an admin decommissions
    r = t.admin.delete(f"/v1/mailboxes/{mid}")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "decommissioned"
    assert r.json()["decommissioned_at"]
    assert t.admin.ok("GET", f"/v1/mailboxes/{mid}")["status"] == "decommissioned"

    for api in (agent, t.admin):
        assert_problem(api.send(mid, to=[peer["address"]]), 409, "mailbox_unavailable")
        assert_problem(
            api.send(mid, to=[peer["address"]], dry_run=True), 409, "mailbox_unavailable"
        )
        r = api.post(
            f"/v1/mailboxes/{mid}/reply", {"email_id": earlier["email_id"], "body_text": "late"}
        )
        assert_problem(r, 409, "mailbox_unavailable")
    assert_problem(t.admin.delete(f"/v1/mailboxes/{mid}"), 409)
    assert_problem(t.admin.patch(f"/v1/mailboxes/{mid}", {"display_name": "zombie"}), 409)
    r = agent.post(f"/v1/mailboxes/{mid}/request-upgrade", {"target_mode": "autonomous"})
    assert_problem(r, 409, "mailbox_unavailable")
    t.flush()
    assert t.inbound(peer["mailbox_id"]) == []
    assert [e["type"] for e in t.events(type="mailbox.decommissioned")] == [
        "mailbox.decommissioned"
    ]


def test_mail_queued_or_held_before_decommission_never_leaves(tenant):
    t = tenant
    scheduled_box = t.mailbox("scheduler")
    held_box = t.mailbox("holder", "gated_all")
    peer = t.mailbox("peer")
    reviewer = t.reviewer()
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    scheduled = t.admin.send(scheduled_box["mailbox_id"], to=[peer["address"]], send_at=soon)
    assert scheduled.json()["status"] == "scheduled"
    held = t.agent(held_box["mailbox_id"]).send(held_box["mailbox_id"], to=[peer["address"]])
    assert held.json()["status"] == "pending"

    for box in (scheduled_box, held_box):
        assert t.admin.delete(f"/v1/mailboxes/{box['mailbox_id']}").status_code == 200

    r = reviewer.decide(held.json()["pending_id"], "approve")
    assert_problem(r, 409, "mailbox_unavailable")
    final = t.wait_status(
        scheduled.json()["message_id"], "cancelled", "sent", "delivered", timeout=8
    )
    assert final["status"] == "cancelled"
    t.flush()
    assert t.inbound(peer["mailbox_id"]) == []
    assert t.admin.email(held.json()["message_id"])["status"] == "pending_approval"


def test_inbound_held_before_decommission_is_not_released_into_it(tenant):
    """P11: once decommissioned, the mailbox receives nothing, including held inbound mail
    that a reviewer approves afterwards (as approving held outbound mail is refused)."""
    t = tenant
    sender, gated = t.mailbox("sender"), t.mailbox("sheltered", "gated_all")
    reviewer = t.reviewer()
    t.admin.send(sender["mailbox_id"], to=[gated["address"]], subject="held inbound")
    [held] = eventually(
        lambda: [p for p in reviewer.pending() if p["mailbox_id"] == gated["mailbox_id"]],
        what="the inbound message to be held",
    )
    assert t.admin.delete(f"/v1/mailboxes/{gated['mailbox_id']}").status_code == 200

    r = reviewer.decide(held["pending_id"], "approve")
    assert_problem(r, 409, "mailbox_unavailable")
    assert t.admin.emails(gated["mailbox_id"]) == []
    assert t.events(mailbox_id=gated["mailbox_id"], type="message.received") == []


def test_local_mail_to_a_decommissioned_mailbox_does_not_arrive(tenant):
    t = tenant
    sender, gone = t.mailbox("sender"), t.mailbox("gone")
    t.admin.send(sender["mailbox_id"], to=[gone["address"]], subject="before")
    t.wait_inbound(gone["mailbox_id"])
    assert t.admin.delete(f"/v1/mailboxes/{gone['mailbox_id']}").status_code == 200

    r = t.admin.send(sender["mailbox_id"], to=[gone["address"]], subject="after")
    assert r.status_code == 200, r.text
    message_id = r.json()["message_id"]
    outcome = t.wait_status(message_id, "deferred", "bounced", "failed", "delivered")
    t.flush()
    # never handed to the decommissioned mailbox, and the sender is told so
    assert [m["subject"] for m in t.inbound(gone["mailbox_id"])] == ["before"]
    assert outcome["status"] != "delivered"
    assert outcome["last_reply"], outcome
    assert t.admin.email(message_id)["status"] in ("deferred", "bounced", "failed")
    types = {e["type"] for e in t.events(mailbox_id=gone["mailbox_id"])}
    assert types == {"mailbox.created", "message.received", "mailbox.decommissioned"}, types


def test_a_decommissioned_address_is_quarantined_from_other_accounts(tenant, other_tenant, mm):
    t, other = tenant, other_tenant
    name = unique("shared")
    first = t.mailbox(name, domain=mm.domain)
    taken = other.admin.post("/v1/mailboxes", {"name": name, "domain": mm.domain})
    assert_problem(taken, 409, "address_unavailable")

    assert t.admin.delete(f"/v1/mailboxes/{first['mailbox_id']}").status_code == 200
    quarantined = other.admin.post("/v1/mailboxes", {"name": name, "domain": mm.domain})
    assert_problem(quarantined, 409, "address_unavailable")
    assert "quarantine" in quarantined.json()["detail"]
    # the same account may take its address back at once
    again = t.admin.post("/v1/mailboxes", {"name": name, "domain": mm.domain})
    assert again.status_code == 201, again.text
    assert again.json()["address"] == first["address"]
    assert again.json()["mailbox_id"] != first["mailbox_id"]
    assert again.json()["status"] == "active"
    # and mail to the address now reaches the new mailbox only
    writer = other.mailbox("writer")
    assert other.admin.send(writer["mailbox_id"], to=[first["address"]]).status_code == 200
    t.wait_inbound(again.json()["mailbox_id"])
    assert t.inbound(first["mailbox_id"]) == []


# --- restart durability (P10) ------------------------------------------------------------

ADMIN = "mm_live_durability_admin_key_0123456789"
KEY_PATTERN = re.compile(r"mm_live_[A-Za-z0-9_-]{20,}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    process: subprocess.Popen
    url: str
    stdout: Path
    stderr: Path

    def output(self) -> str:
        return self.stdout.read_text()

    def diagnostics(self) -> str:
        return f"stdout:\n{self.output()}\nstderr:\n{self.stderr.read_text()[-3000:]}"

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            pytest.fail(
                f"server did not exit within {timeout}s of {sig.name}\n{self.diagnostics()}"
            )


_runs = iter(range(1, 1000))


def serve(data_dir: Path, admin_key: str | None = ADMIN) -> Served:
    """``multimail serve`` on a free port, the DB and admin key file in ``data_dir``."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MULTIMAIL_")}
    if admin_key is not None:
        env["MULTIMAIL_ADMIN_KEY"] = admin_key
    run = next(_runs)
    out, err = data_dir / f"stdout.{run}.txt", data_dir / f"stderr.{run}.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "multimail.cli", "serve",
                "--db", f"sqlite:///{data_dir}/mm.db",
                "--http", f"127.0.0.1:{port}",
                "--smtp", f"127.0.0.1:{_free_port()}",
                "--data-dir", str(data_dir),
            ],
            env=env,
            stdout=stdout,
            stderr=stderr,
        )  # fmt: skip
    served = Served(process, f"http://127.0.0.1:{port}", out, err)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}\n{served.diagnostics()}")
        try:
            if httpx.get(f"{served.url}/health", timeout=2).json() == {"status": "ok"}:
                return served
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            served.stop(signal.SIGKILL)
            pytest.fail(f"server not healthy within 60s\n{served.diagnostics()}")
        time.sleep(0.05)


@pytest.fixture
def servers():
    """Every server a test starts is stopped at the end, whatever happened."""
    started: list[Served] = []
    yield started
    for served in started:
        if served.process.poll() is None:
            served.process.kill()
            served.process.wait(10)


def _all(api: Api, path: str, field: str) -> list[dict]:
    items, cursor = [], None
    while True:
        body = api.ok("GET", path, params={"limit": 100, **({"cursor": cursor} if cursor else {})})
        items += body[field]
        cursor = body["next_cursor"]
        if cursor is None:
            return items


def _state(api: Api, mailbox_ids: list[str]) -> dict:
    """Everything observable of an account through list endpoints (no side effects)."""
    return {
        "mailboxes": _all(api, "/v1/mailboxes", "mailboxes"),
        "emails": {m: _all(api, f"/v1/mailboxes/{m}/emails", "emails") for m in mailbox_ids},
        "pending": _all(api, "/v1/oversight/pending", "pending"),
        "keys": api.ok("GET", "/v1/api-keys")["api_keys"],
        "contacts": api.ok("GET", "/v1/contacts")["contacts"],
        "suppression": api.ok("GET", "/v1/suppression")["suppressions"],
        "events": api.ok("GET", "/v1/events", params={"limit": 100})["events"],
        "audit": api.ok("GET", "/v1/audit-log/verify"),
    }


class Burst:
    """Threads creating mailboxes and sending mail as fast as they can, recording every
    id the server acknowledged with a 2xx, until the server goes away or ``stop``."""

    def __init__(self, url: str, secret: str, sender_id: str, dest: str, threads: int = 6):
        self.url, self.secret, self.sender_id, self.dest = url, secret, sender_id, dest
        self.mailboxes: list[str] = []
        self.messages: list[str] = []
        self.refused: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)
        ]

    def __enter__(self) -> Burst:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    @property
    def acknowledged(self) -> int:
        with self._lock:
            return len(self.mailboxes) + len(self.messages)

    def _run(self, n: int) -> None:
        headers = {"Authorization": f"Bearer {self.secret}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=10) as c:
            for i in range(10_000):
                if self._stop.is_set():
                    return
                try:
                    if i % 2:
                        r = c.post(
                            f"/v1/mailboxes/{self.sender_id}/send",
                            json={"to": [self.dest], "subject": f"{n}-{i}", "body_text": "x"},
                        )
                        ok, made = r.status_code == 200, "message_id"
                    else:
                        r = c.post("/v1/mailboxes", json={"name": f"w{n}-{i}"})
                        ok, made = r.status_code == 201, "mailbox_id"
                except httpx.HTTPError:
                    return  # the server is gone (or going): stop this worker
                with self._lock:
                    if not ok:
                        self.refused.append(f"{r.status_code} {r.text[:200]}")
                    elif made == "message_id":
                        self.messages.append(r.json()[made])
                    else:
                        self.mailboxes.append(r.json()[made])


def test_sigterm_exits_zero_and_everything_acknowledged_survives(tmp_path, servers):
    first = serve(tmp_path)
    servers.append(first)
    admin = Api(first.url, ADMIN)
    a = admin.ok(
        "POST", "/v1/mailboxes", {"name": "alpha", "oversight_mode": "autonomous"}, expect=201
    )
    b = admin.ok(
        "POST", "/v1/mailboxes", {"name": "beta", "oversight_mode": "gated_send"}, expect=201
    )
    agent_made = admin.ok(
        "POST",
        "/v1/api-keys",
        {"name": "agent", "scopes": ["send", "read"], "mailbox_ids": [b["mailbox_id"]]},
        expect=201,
    )
    reviewer_made = admin.ok(
        "POST", "/v1/api-keys", {"name": "rev", "scopes": ["oversight"]}, expect=201
    )
    agent = Api(first.url, agent_made["api_key"])
    delivered = admin.ok(
        "POST",
        f"/v1/mailboxes/{a['mailbox_id']}/send",
        {"to": [b["address"]], "subject": "kept", "body_text": "x"},
    )
    held = agent.ok(
        "POST",
        f"/v1/mailboxes/{b['mailbox_id']}/send",
        {"to": [a["address"]], "subject": "held", "body_text": "y"},
        expect=202,
    )
    admin.ok("POST", "/v1/contacts", {"email": "carol@example.com", "name": "Carol"}, expect=201)
    admin.ok("POST", "/v1/suppression", {"email_address": "gone@example.com"}, expect=201)
    eventually(
        lambda: admin.email(delivered["message_id"])["status"] == "delivered",
        timeout=10,
        what="local delivery before the restart",
    )
    before = _state(admin, [a["mailbox_id"], b["mailbox_id"]])
    assert before["audit"]["valid"] is True

    # SIGTERM with requests in flight: stop accepting, finish, exit 0
    with Burst(first.url, ADMIN, a["mailbox_id"], b["address"], threads=3) as burst:
        eventually(lambda: burst.acknowledged >= 6, timeout=20, what="a few acknowledged creates")
        assert first.stop(signal.SIGTERM) == 0, first.diagnostics()
    assert not burst.refused, burst.refused
    for api in (admin, agent):
        api.close()

    second = serve(tmp_path)
    servers.append(second)
    admin, agent = Api(second.url, ADMIN), Api(second.url, agent_made["api_key"])
    after = _state(admin, [a["mailbox_id"], b["mailbox_id"]])
    kept_ids = {m["mailbox_id"] for m in after["mailboxes"]}
    assert set(burst.mailboxes) <= kept_ids
    for message_id in burst.messages:
        assert admin.ok("GET", f"/v1/emails/{message_id}")["email_id"] == message_id
    # what existed before the burst is unchanged (the burst only added)
    assert [m for m in after["mailboxes"] if m["mailbox_id"] not in set(burst.mailboxes)] == before[
        "mailboxes"
    ]
    for key in ("pending", "keys", "contacts", "suppression"):
        assert after[key] == before[key], key
    for mailbox_id, emails in before["emails"].items():
        now = {e["email_id"]: e for e in after["emails"][mailbox_id]}
        for email in emails:
            assert now[email["email_id"]] == email
    assert after["events"][: len(before["events"])] == before["events"]
    assert after["audit"]["valid"] is True
    assert after["audit"]["entries"] >= before["audit"]["entries"] + len(burst.mailboxes)

    # and the restarted server carries on: the agent key works, the held mail is released
    assert agent.ok("GET", f"/v1/mailboxes/{b['mailbox_id']}")["address"] == b["address"]
    reviewer = Api(second.url, reviewer_made["api_key"])
    reviewer.ok(
        "POST", "/v1/oversight/decide", {"pending_id": held["pending_id"], "action": "approve"}
    )
    eventually(
        lambda: admin.email(held["message_id"])["status"] == "delivered",
        timeout=10,
        what="the approved message to be delivered after the restart",
    )
    assert second.stop(signal.SIGTERM) == 0, second.diagnostics()
    for api in (admin, agent, reviewer):
        api.close()


def test_sigkill_mid_burst_loses_nothing_acknowledged(tmp_path, servers):
    first = serve(tmp_path)
    servers.append(first)
    admin = Api(first.url, ADMIN)
    src = admin.ok(
        "POST", "/v1/mailboxes", {"name": "src", "oversight_mode": "autonomous"}, expect=201
    )
    dest = admin.ok(
        "POST", "/v1/mailboxes", {"name": "dest", "oversight_mode": "autonomous"}, expect=201
    )
    with Burst(first.url, ADMIN, src["mailbox_id"], dest["address"]) as burst:
        eventually(lambda: burst.acknowledged >= 30, timeout=30, what="30 acknowledged creates")
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    assert not burst.refused, burst.refused
    admin.close()

    db = sqlite3.connect(tmp_path / "mm.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()

    second = serve(tmp_path)
    servers.append(second)
    admin = Api(second.url, ADMIN)
    present = {m["mailbox_id"] for m in _all(admin, "/v1/mailboxes", "mailboxes")}
    lost = set(burst.mailboxes) - present
    assert not lost, f"{len(lost)} acknowledged mailboxes lost: {sorted(lost)[:5]}"
    for message_id in burst.messages:
        r = admin.get(f"/v1/emails/{message_id}")
        assert r.status_code == 200, (message_id, r.text)
    assert admin.ok("GET", "/v1/audit-log/verify")["valid"] is True
    # mail queued at the moment of the kill is still delivered after the restart
    last = burst.messages[-1]
    eventually(
        lambda: admin.email(last)["status"] == "delivered",
        timeout=15,
        what="the last acknowledged message to be delivered after the restart",
    )
    assert second.stop(signal.SIGTERM) == 0, second.diagnostics()
    admin.close()


def test_generated_admin_key_is_printed_once_and_kept_in_a_0600_file(tmp_path, servers):
    first = serve(tmp_path, admin_key=None)
    servers.append(first)
    printed = sorted(set(KEY_PATTERN.findall(first.output())))
    assert len(printed) == 1, first.output()  # one key (the banner may show it more than once)
    key_file = tmp_path / "admin.key"
    assert key_file.exists()
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key_file.read_text().strip() == printed[0]
    with httpx.Client(base_url=first.url) as c:
        assert (
            c.get("/v1/account", headers={"Authorization": f"Bearer {printed[0]}"}).status_code
            == 200
        )
        assert (
            c.get("/v1/account", headers={"Authorization": "Bearer mm_live_guess"}).status_code
            == 401
        )
    assert first.stop() == 0, first.diagnostics()
    written = key_file.stat().st_mtime_ns

    second = serve(tmp_path, admin_key=None)
    servers.append(second)
    assert KEY_PATTERN.findall(second.output()) == [], second.output()
    assert key_file.read_text().strip() == printed[0]
    assert key_file.stat().st_mtime_ns == written
    with httpx.Client(base_url=second.url) as c:
        assert (
            c.get("/v1/account", headers={"Authorization": f"Bearer {printed[0]}"}).status_code
            == 200
        )
    assert second.stop() == 0, second.diagnostics()
