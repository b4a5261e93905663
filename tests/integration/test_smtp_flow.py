"""Real email end to end (PRODUCT.md §4, §6, §7, §8): swaks and smtplib into our aiosmtpd,
our outbound through ``--relay`` into a real SMTP sink, approval links, bounces.

One embedded server per module, relaying to an aiosmtpd sink; each test makes its own
account (its oversight address is an outside address, so approval mail reaches the sink).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import smtplib
import socket
import subprocess
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from multimail import verify
from multimail.embedded import Embedded, run_embedded
from tests.integration.conftest import Tenant, assert_problem, eventually, unique
from tests.smtp_sink import Sink


@pytest.fixture(scope="module")
def mm(sink: Sink) -> Iterator[Embedded]:
    with run_embedded(relay=sink.url) as server:
        yield server


@pytest.fixture
def tenant(overseen_tenant: Tenant) -> Tenant:
    return overseen_tenant


def smtp_send(mm: Embedded, raw: bytes, rcpts: list[str], mail_from: str = "alice@outside.example"):
    with smtplib.SMTP("127.0.0.1", mm.smtp_port, timeout=10) as client:
        return client.sendmail(mail_from, rcpts, raw)


def outside_message(to: str, subject: str = "Hello agent", body: str = "Can you help?") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Alice <alice@outside.example>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@outside.example>"
    msg["Date"] = "Wed, 25 Nov 2026 10:00:00 +0000"
    msg.set_content(body)
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


# --- inbound ----------------------------------------------------------------------------


@pytest.mark.skipif(
    shutil.which("swaks") is None, reason="swaks is not installed (.ci/run installs it)"
)
def test_a_message_sent_with_swaks_lands_with_parts_and_signals(tenant: Tenant, tmp_path: Path):
    box = tenant.mailbox("swaks-in")
    attachment = tmp_path / "report.pdf"
    attachment.write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 40)
    done = subprocess.run(
        [
            "swaks", "--server", f"127.0.0.1:{tenant.mm.smtp_port}",
            "--from", "bob@sender.example", "--to", box["address"],
            "--header", "Subject: Quarterly report",
            "--body", "Please find the report attached.",
            "--attach-type", "application/pdf", "--attach", f"@{attachment}",
        ],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "250 2.0.0" in done.stdout
    [summary] = tenant.wait_inbound(box["id"], timeout=15)
    assert summary["requires_action"] is True  # a person wrote; reading it clears this
    email = tenant.admin.email(summary["id"])
    assert email["subject"] == "Quarterly report"
    assert email["from"] == "bob@sender.example"
    assert "Please find the report attached." in email["body_text"]
    [att] = email["attachments"]
    assert att["content_type"] == "application/pdf"
    assert att["filename"] == "report.pdf"
    assert att["sha256"] == hashlib.sha256(attachment.read_bytes()).hexdigest()
    got = tenant.admin.get(f"/v1/emails/{email['id']}/attachments/{att['attachment_id']}")
    assert got.status_code == 200
    assert got.content == attachment.read_bytes()
    signals = email["signals"]
    assert signals["first_contact"] is True
    assert signals["prior_messages"] == 0
    assert {"dkim", "spf", "dmarc"} <= signals.keys()


def test_acknowledged_bytes_are_served_back_identically(tenant: Tenant):
    box = tenant.mailbox("raw-in")
    raw = outside_message(box["address"], "Byte for byte")
    assert smtp_send(tenant.mm, raw, [box["address"]]) == {}
    [summary] = tenant.wait_inbound(box["id"], timeout=15)
    assert tenant.admin.get(f"/v1/emails/{summary['id']}/raw").content == raw
    raw2 = outside_message(box["address"], "Second")
    smtp_send(tenant.mm, raw2, [box["address"]])
    emails = tenant.wait_inbound(box["id"], 2, timeout=15)
    second = tenant.admin.email(next(e["id"] for e in emails if e["subject"] == "Second"))
    assert second["signals"]["first_contact"] is False
    assert second["signals"]["prior_messages"] == 1


def test_plus_addressing_reaches_the_base_mailbox(tenant: Tenant):
    box = tenant.mailbox("plus")
    local, domain = box["address"].split("@")
    tagged = f"{local}+invoices@{domain}"
    smtp_send(tenant.mm, outside_message(tagged, "Tagged"), [tagged])
    [summary] = tenant.wait_inbound(box["id"], timeout=15)
    assert summary["subject"] == "Tagged"


def test_rcpt_is_refused_for_unknown_outside_and_decommissioned_addresses(tenant: Tenant):
    gone = tenant.mailbox("gone")
    tenant.admin.ok("DELETE", f"/v1/mailboxes/{gone['id']}")
    with smtplib.SMTP("127.0.0.1", tenant.mm.smtp_port, timeout=10) as client:
        client.ehlo("tester.example")
        client.mail("alice@outside.example")
        code, text = client.rcpt(f"nobody@{tenant.domain}")
        assert (code, text[:5]) == (550, b"5.1.1")
        code, text = client.rcpt(gone["address"])
        assert (code, text[:5]) == (550, b"5.1.1")
        code, text = client.rcpt("victim@elsewhere.example")  # no open relay
        assert code == 550
        assert b"5.7.1" in text


def _dialogue(port: int):
    """A raw SMTP session up to MAIL FROM, so that bytes smtplib would normalise reach the
    server as they are; returns the socket file and a reply reader."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=30)
    f = conn.makefile("rwb")

    def reply() -> bytes:
        lines = []
        while True:
            line = f.readline()
            lines.append(line)
            if line[3:4] != b"-":
                return b"".join(lines)

    reply()
    for command in (b"EHLO tester.example", b"MAIL FROM:<alice@outside.example>"):
        f.write(command + b"\r\n")
        f.flush()
        reply()
    return f, reply


def test_bare_lf_in_data_is_refused_and_nothing_is_stored(tenant: Tenant):
    box = tenant.mailbox("smuggle")
    f, reply = _dialogue(tenant.mm.smtp_port)
    f.write(f"RCPT TO:<{box['address']}>\r\nDATA\r\n".encode())
    f.flush()
    assert reply().startswith(b"250")
    assert reply().startswith(b"354")
    smuggled = (
        b"Subject: hi\r\n\r\nfirst\n.\r\nMAIL FROM:<x@y>\r\nRCPT TO:<z@w>\r\n"
        b"DATA\r\nsmuggled\r\n.\r\n"
    )
    f.write(smuggled)
    f.flush()
    answer = reply()
    assert answer.startswith(b"550 5.6.0"), answer
    tenant.flush()
    assert tenant.inbound(box["id"]) == []


def test_oversize_mail_gets_552_whether_declared_or_not(tenant: Tenant):
    box = tenant.mailbox("big")
    big = outside_message(box["address"], "Big") + (b"y" * 998 + b"\r\n") * 27_000
    # smtplib declares SIZE= in MAIL FROM: refused before any data is sent
    with (
        pytest.raises(smtplib.SMTPSenderRefused) as exc,
        smtplib.SMTP("127.0.0.1", tenant.mm.smtp_port, timeout=30) as client,
    ):
        client.sendmail("alice@outside.example", [box["address"]], big)
    assert exc.value.smtp_code == 552
    # undeclared: the server reads on and refuses at the end of DATA
    f, reply = _dialogue(tenant.mm.smtp_port)
    f.write(f"RCPT TO:<{box['address']}>\r\nDATA\r\n".encode())
    f.flush()
    assert reply().startswith(b"250")
    assert reply().startswith(b"354")
    f.write(big + b".\r\n")
    f.flush()
    assert reply().startswith(b"552")
    tenant.flush()
    assert tenant.inbound(box["id"]) == []


def test_gated_all_holds_inbound_and_mails_the_operator(tenant: Tenant, sink: Sink, ops: str):
    box = tenant.mailbox("held-in", "gated_all")
    smtp_send(tenant.mm, outside_message(box["address"], "Held inbound"), [box["address"]])
    [request] = sink.wait(ops)
    assert b"Held inbound" in request.data
    agent = tenant.agent(box["id"])
    assert agent.emails(box["id"]) == []
    token = _token(request.data)
    answer = httpx.post(
        f"{tenant.mm.api_url}/v1/approve/{token}",
        json={"action": "approve"},
        headers={"Accept": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    eventually(lambda: agent.emails(box["id"]), what="the approved message visible to the agent")


# --- outbound, approval links, identity ----------------------------------------------------


def _token(data: bytes) -> str:
    import quopri

    text = quopri.decodestring(data).decode("utf-8", "replace")
    found = re.search(r"/v1/approve/([A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+)", text)
    assert found, text
    return found.group(1)


def test_a_gated_reply_waits_for_the_emailed_link_then_leaves_signed_and_verifiable(
    tenant: Tenant, sink: Sink, ops: str
):
    box = tenant.mailbox("gated", "gated_send")
    smtp_send(tenant.mm, outside_message(box["address"], "Need a quote"), [box["address"]],
              mail_from="alice@outside.example")  # fmt: skip
    [inbound] = tenant.wait_inbound(box["id"], timeout=15)
    agent = tenant.agent(box["id"])
    sent = agent.ok("POST", f"/v1/mailboxes/{box['id']}/reply",
                    {"email_id": inbound["id"], "body_text": "Our quote is 42 EUR."},
                    expect=202)  # fmt: skip
    assert sent["status"] == "pending"
    [request] = sink.wait(ops)
    assert b"Our quote is 42 EUR." in request.data  # the full draft
    token = _token(request.data)
    page = httpx.get(f"{tenant.mm.api_url}/v1/approve/{token}?action=approve")
    assert page.status_code == 200
    assert "Re: Need a quote" in page.text
    assert "<form" in page.text
    tenant.flush()
    assert sink.to("alice@outside.example") == []  # a GET decides nothing
    assert agent.get(f"/v1/approve/{token}").status_code == 200
    decided = httpx.post(f"{tenant.mm.api_url}/v1/approve/{token}", data={"action": "approve"})
    assert decided.status_code == 200
    assert "approved" in decided.text
    [out] = sink.wait("alice@outside.example")
    assert out.mail_from.startswith("bounces+msg_")
    result = verify.verify_message(out.data, **_resolvers(tenant.mm))
    assert result.ok, result
    assert result.mailbox_id == box["id"]
    assert result.claim is not None
    assert result.claim["human_approved"] is True
    assert result.claim["oversight_mode"] == "gated_send"
    assert result.dkim["result"] == "pass"
    tampered = out.data.replace(b"42 EUR", b"41 EUR")
    assert not verify.verify_message(tampered, **_resolvers(tenant.mm)).ok
    again = httpx.post(f"{tenant.mm.api_url}/v1/approve/{token}", data={"action": "reject"})
    assert again.status_code == 409  # single use
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert httpx.get(f"{tenant.mm.api_url}/v1/approve/{forged}").status_code == 404


def _resolvers(mm: Embedded) -> dict:
    """DKIM records and identity keys as the server publishes them (PRODUCT §7)."""
    dns_txt, identity_keys = verify.server_resolvers(mm.api_url)
    return {"dns_txt": dns_txt, "identity_keys": identity_keys}


def test_well_known_keys_and_dns_are_published(tenant: Tenant):
    box = tenant.mailbox("keys")
    keys = httpx.get(f"{tenant.mm.api_url}/.well-known/multimail/keys/{box['id']}").json()
    assert keys["mailbox_id"] == box["id"]
    [jwk] = keys["keys"]
    assert jwk["kty"] == "OKP"
    assert jwk["crv"] == "Ed25519"
    assert jwk["revoked_at"] is None
    domains = tenant.admin.ok("GET", "/v1/domains")["domains"]
    account = next(d for d in domains if d["domain"] == tenant.domain)
    dkim = [r for r in account["dns_records"] if r["purpose"] == "dkim"]
    assert {r["name"] for r in dkim} == {
        f"mm1._domainkey.{tenant.domain}",
        f"mm1ed._domainkey.{tenant.domain}",
    }
    for record in dkim:
        served = httpx.get(f"{tenant.mm.api_url}/.well-known/multimail/dns",
                           params={"name": record["name"], "type": "TXT"}).json()  # fmt: skip
        assert served["records"] == [record["value"]]
    missing = httpx.get(
        f"{tenant.mm.api_url}/.well-known/multimail/keys/mbx_01JDQ8ZK3V5T7W9X2B4C6D8E0F"
    )
    assert missing.status_code == 404
    tenant.admin.ok("DELETE", f"/v1/mailboxes/{box['id']}")
    after = httpx.get(f"{tenant.mm.api_url}/.well-known/multimail/keys/{box['id']}").json()
    assert after["keys"][0]["revoked_at"] is not None  # still published, marked revoked


def test_monitored_mail_sends_exactly_one_hidden_copy(tenant: Tenant, sink: Sink, ops: str):
    box = tenant.mailbox("watched", "monitored")
    to = f"client-{uuid.uuid4().hex[:6]}@customer.example"
    tenant.admin.ok("POST", f"/v1/mailboxes/{box['id']}/send",
                    {"to": [to], "subject": "Status", "body_text": "All green."})  # fmt: skip
    [out] = sink.wait(to)
    [copy] = sink.wait(ops)
    assert copy.data == out.data  # the same signed bytes, another envelope
    assert ops.encode() not in out.data  # recipients cannot see the copy
    assert copy.rcpts == (ops,)
    tenant.flush()
    assert len(sink.to(ops)) == 1


# --- bounces and reputation -------------------------------------------------------------


def test_a_hard_bounce_marks_the_message_moves_only_that_mailbox_and_suppresses(
    tenant: Tenant, sink: Sink
):
    a = tenant.mailbox("bouncer")
    b = tenant.mailbox("bystander")
    rejected = f"gone-{uuid.uuid4().hex[:6]}@customer.example"
    sink.reply(rejected, f"550 5.1.1 <{rejected}>: no such user")
    before_b = tenant.admin.ok("GET", f"/v1/mailboxes/{b['id']}/reputation")
    sent = tenant.admin.ok("POST", f"/v1/mailboxes/{a['id']}/send",
                           {"to": [rejected], "subject": "Hi", "body_text": "Hello"})  # fmt: skip
    email = tenant.wait_status(sent["message_id"], "bounced", timeout=15)
    assert "5.1.1" in email["last_reply"]
    rep_a = tenant.admin.ok("GET", f"/v1/mailboxes/{a['id']}/reputation")
    assert rep_a["hard_bounces_30d"] == 1
    assert tenant.admin.ok("GET", f"/v1/mailboxes/{b['id']}/reputation") == before_b
    suppressed = tenant.admin.ok("GET", "/v1/suppression")
    assert rejected in [s["email_address"] for s in suppressed["suppressions"]]
    body = {"to": [rejected], "subject": "Hi", "body_text": "Again"}
    again = tenant.admin.post(f"/v1/mailboxes/{a['id']}/send", body)
    assert_problem(again, 422, "recipient_suppressed")


def test_a_dsn_to_the_verp_address_bounces_the_original(tenant: Tenant, sink: Sink):
    a = tenant.mailbox("dsn")
    later = f"later-{uuid.uuid4().hex[:6]}@customer.example"
    body = {"to": [later], "subject": "Invoice", "body_text": "Attached."}
    sent = tenant.admin.ok("POST", f"/v1/mailboxes/{a['id']}/send", body)
    [out] = sink.wait(later)
    tenant.wait_status(sent["message_id"], "sent", "delivered", timeout=15)
    assert out.mail_from == f"bounces+{sent['message_id']}@{tenant.domain}"
    dsn = _dsn(out, later)
    smtp_send(tenant.mm, dsn, [out.mail_from], mail_from="")
    tenant.wait_status(sent["message_id"], "bounced", timeout=15)
    suppressed = tenant.admin.ok("GET", "/v1/suppression")["suppressions"]
    assert later in [s["email_address"] for s in suppressed]


def _dsn(out, rcpt: str) -> bytes:
    headers = out.data.split(b"\r\n\r\n", 1)[0].decode()
    boundary = "dsn-" + uuid.uuid4().hex
    return (
        "From: MAILER-DAEMON@customer.example\r\n"
        f"To: {out.mail_from}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n'
        "MIME-Version: 1.0\r\n\r\n"
        f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nThe mailbox does not exist.\r\n"
        f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.customer.example\r\n\r\n"
        f"Final-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n"
        f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n{headers}\r\n"
        f"--{boundary}--\r\n"
    ).encode()


# --- threads and loops ----------------------------------------------------------------------


def test_a_reply_that_lost_its_headers_joins_the_thread_by_subject_and_sender(tenant: Tenant):
    box = tenant.mailbox("threads")
    smtp_send(tenant.mm, outside_message(box["address"], "Order 42"), [box["address"]])
    [first] = tenant.wait_inbound(box["id"], timeout=15)
    tenant.admin.ok("POST", f"/v1/mailboxes/{box['id']}/reply",
                    {"email_id": first["id"], "body_text": "Which size?"})  # fmt: skip
    # the customer's client dropped In-Reply-To and References
    smtp_send(tenant.mm, outside_message(box["address"], "RE: Re:  order 42"), [box["address"]])
    # a stranger using the same subject is not folded into the customer's thread
    stranger = outside_message(box["address"], "Re: Order 42").replace(
        b"alice@outside.example", b"mallory@elsewhere.example"
    )
    smtp_send(tenant.mm, stranger, [box["address"]], mail_from="mallory@elsewhere.example")
    emails = tenant.wait_inbound(box["id"], 3, timeout=15)
    by_sender = {(e["from"], e["subject"]): e for e in emails}
    followup = by_sender[("alice@outside.example", "RE: Re:  order 42")]
    assert followup["thread_id"] == first["thread_id"]
    assert (
        by_sender[("mallory@elsewhere.example", "Re: Order 42")]["thread_id"] != first["thread_id"]
    )


def test_an_agent_cannot_reply_to_an_auto_reply(tenant: Tenant):
    box = tenant.mailbox("no-loops")
    raw = outside_message(box["address"], "Out of office").replace(
        b"Subject:", b"Auto-Submitted: auto-replied\r\nSubject:"
    )
    smtp_send(tenant.mm, raw, [box["address"]])
    [auto] = tenant.wait_inbound(box["id"], timeout=15)
    assert auto["requires_action"] is False
    answer = tenant.admin.post(f"/v1/mailboxes/{box['id']}/reply",
                               {"email_id": auto["id"], "body_text": "Thanks!"})  # fmt: skip
    body = assert_problem(answer, 422, "loop_detected")
    assert "RFC 3834" in body["detail"]


def test_one_transaction_stores_one_copy_per_mailbox_and_caps_recipients(tenant: Tenant):
    box = tenant.mailbox("once")
    local, domain = box["address"].split("@")
    spellings = [box["address"], f"{local}+a@{domain}", f"{local.upper()}@{domain}"]
    smtp_send(tenant.mm, outside_message(box["address"], "Spelled thrice"), spellings)
    tenant.flush()
    assert len(tenant.wait_inbound(box["id"], timeout=15)) == 1
    with smtplib.SMTP("127.0.0.1", tenant.mm.smtp_port, timeout=10) as client:
        client.ehlo("tester.example")
        client.mail("alice@outside.example")
        codes = [client.rcpt(f"{local}+{i}@{domain}")[0] for i in range(101)]
    assert codes[:100] == [250] * 100
    assert codes[100] == 452


# --- what an approval link shows, and for how long ------------------------------------------


def _held_with_link(tenant: Tenant, sink: Sink, ops: str, **body) -> tuple[dict, str]:
    box = tenant.mailbox(unique("held"), "gated_send")
    sent = tenant.admin.ok("POST", f"/v1/mailboxes/{box['id']}/send",
                           {"to": ["client@customer.example"], **body}, expect=202)  # fmt: skip
    [request] = sink.wait(ops)
    return sent, _token(request.data)


def test_the_reviewer_sees_bcc_html_and_attachments_before_deciding(
    tenant: Tenant, sink: Sink, ops: str
):
    _, token = _held_with_link(
        tenant, sink, ops, subject="Offer", body_text="Harmless text.",
        body_html="<p>Click <a href='http://evil.example/'>here</a></p>",
        bcc=["silent@watcher.example"],
    )  # fmt: skip
    page = httpx.get(f"{tenant.mm.api_url}/v1/approve/{token}")
    assert page.status_code == 200
    assert "silent@watcher.example" in page.text
    assert "http://evil.example/" in page.text  # the HTML source is shown...
    assert "<a href='http://evil.example/'>" not in page.text  # ...escaped, never rendered
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    view = httpx.get(f"{tenant.mm.api_url}/v1/approve/{token}",
                     headers={"Accept": "application/json"}).json()  # fmt: skip
    assert view["bcc"] == ["silent@watcher.example"]
    assert "evil.example" in view["body_html"]


def test_a_decided_link_shows_nothing_of_the_message_any_more(tenant: Tenant, sink: Sink, ops: str):
    _, token = _held_with_link(tenant, sink, ops, subject="Secret plan", body_text="Step one.")
    url = f"{tenant.mm.api_url}/v1/approve/{token}"
    assert httpx.post(url, data={"action": "reject"}).status_code == 200
    page = httpx.get(url)
    assert "already" in page.text
    assert "Step one." not in page.text
    assert "Secret plan" not in page.text
    view = httpx.get(url, headers={"Accept": "application/json"}).json()
    assert view["status"] == "rejected"
    assert "body_text" not in view
    again = httpx.post(url, data={"action": "approve"})
    assert again.status_code == 409
    assert again.headers["content-type"].startswith("text/html")


def test_changing_the_oversight_address_voids_links_sent_to_the_old_one(
    tenant: Tenant, sink: Sink, ops: str
):
    sent, token = _held_with_link(tenant, sink, ops, subject="Old link", body_text="x")
    tenant.admin.ok("PATCH", "/v1/account", {"oversight_email": "new-ops@operators.example"})
    url = f"{tenant.mm.api_url}/v1/approve/{token}"
    assert httpx.get(url).status_code == 404
    assert httpx.post(url, data={"action": "approve"}).status_code == 404
    assert tenant.admin.email(sent["message_id"])["status"] == "pending_approval"


def test_a_link_post_without_a_valid_token_reads_no_body(tenant: Tenant):
    url = f"{tenant.mm.api_url}/v1/approve/not.valid"

    def endless():
        for _ in range(10_000):
            yield b"x" * 1024

    answer = httpx.post(url, content=endless(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 404
