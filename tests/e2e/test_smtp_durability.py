"""P10 for SMTP: a ``250`` to DATA means committed. A ``kill -9`` in the middle of an inbound
burst from several concurrent sessions loses no acknowledged message, and each one is served
back byte for byte after a restart."""

from __future__ import annotations

import signal
import smtplib
import threading
import time
import uuid
from pathlib import Path

import httpx

from tests.e2e.conftest import start_server, stop_server

SESSIONS = 8


def _message(to: str, tag: str) -> bytes:
    return (
        f"From: burst@outside.example\r\nTo: {to}\r\nSubject: {tag}\r\n"
        f"Message-ID: <{tag}@outside.example>\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\n"
        f"\r\nBody of {tag}\r\n" + "filler line\r\n" * 60
    ).encode()


def test_kill_9_during_an_inbound_burst_loses_no_acknowledged_message(tmp_path: Path):
    served = start_server(tmp_path, "--domain", "burst.test", "--dns", "off")
    http = httpx.Client(
        base_url=served.url, headers={"Authorization": f"Bearer {served.admin_key}"}, timeout=15
    )
    box = http.post("/v1/mailboxes", json={"name": "burst", "oversight_mode": "autonomous"}).json()
    acked: dict[str, bytes] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def blast() -> None:
        try:
            client = smtplib.SMTP("127.0.0.1", served.smtp_port, timeout=10)
            while not stop.is_set():
                tag = f"m{uuid.uuid4().hex}"
                raw = _message(box["address"], tag)
                client.sendmail("burst@outside.example", [box["address"]], raw)
                with lock:  # sendmail returned: the server answered 250 to DATA
                    acked[tag] = raw
        except (smtplib.SMTPException, OSError):
            return  # the server died under us: whatever was not acknowledged may be lost

    threads = [threading.Thread(target=blast) for _ in range(SESSIONS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 150 and time.monotonic() < deadline:
        time.sleep(0.01)
    served.process.send_signal(signal.SIGKILL)
    served.process.wait(timeout=10)
    stop.set()
    for t in threads:
        t.join(timeout=15)
    http.close()
    assert len(acked) >= 150, f"only {len(acked)} messages were acknowledged before the kill"

    again = start_server(tmp_path, "--domain", "burst.test", "--dns", "off")
    try:
        http = httpx.Client(
            base_url=again.url, headers={"Authorization": f"Bearer {again.admin_key}"}, timeout=15
        )
        stored: dict[str, str] = {}
        cursor = None
        while True:
            params = {"limit": 100, "direction": "inbound"}
            if cursor:
                params["cursor"] = cursor
            page = http.get(f"/v1/mailboxes/{box['id']}/emails", params=params).json()
            stored.update({e["subject"]: e["id"] for e in page["emails"]})
            cursor = page["next_cursor"]
            if not cursor:
                break
        missing = sorted(set(acked) - set(stored))
        assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {missing[:3]}"
        for tag in list(acked)[:: max(1, len(acked) // 20)]:
            assert http.get(f"/v1/emails/{stored[tag]}/raw").content == acked[tag]
        http.close()
    finally:
        assert stop_server(again) == 0


def test_sigterm_lets_a_message_whose_bytes_are_still_arriving_finish(tmp_path: Path):
    served = start_server(tmp_path, "--domain", "term.test", "--dns", "off")
    http = httpx.Client(
        base_url=served.url, headers={"Authorization": f"Bearer {served.admin_key}"}, timeout=15
    )
    box = http.post("/v1/mailboxes", json={"name": "late", "oversight_mode": "autonomous"}).json()
    http.close()
    client = smtplib.SMTP("127.0.0.1", served.smtp_port, timeout=20)
    client.ehlo("tester.example")
    client.mail("late@outside.example")
    client.rcpt(box["address"])
    code, _ = client.docmd("DATA")
    assert code == 354
    raw = _message(box["address"], "mid-data")
    client.send(raw[: len(raw) // 2])
    served.process.send_signal(signal.SIGTERM)  # the server is told to stop mid-message
    time.sleep(0.5)
    client.send(raw[len(raw) // 2 :] + b".\r\n")
    code, text = client.getreply()
    assert (code, text[:5]) == (250, b"2.0.0"), text
    client.close()
    assert served.process.wait(timeout=30) == 0
    again = start_server(tmp_path, "--domain", "term.test", "--dns", "off")
    try:
        http = httpx.Client(
            base_url=again.url, headers={"Authorization": f"Bearer {again.admin_key}"}, timeout=15
        )
        emails = http.get(f"/v1/mailboxes/{box['mailbox_id']}/emails").json()["emails"]
        assert [e["subject"] for e in emails] == ["mid-data"]
        assert http.get(f"/v1/emails/{emails[0]['id']}/raw").content == raw
        http.close()
    finally:
        assert stop_server(again) == 0
