"""A real Postfix on both sides of our server (PRODUCT §6, §7).

    smtplib ──► Postfix "in" ──relayhost──► MultiMail ──--relay──► Postfix "out" ──► sink

Rule 1: each Postfix is a private instance (``bench.postfix``): its own config, queue and
        log under a temporary directory, listening on a free loopback port, relaying
        everything to its relayhost. The module is skipped where one cannot run (not root,
        not installed).
Rule 2: inbound, what Postfix relays must land in our mailbox with Postfix's Received
        header and otherwise the injected bytes; a recipient we refuse is bounced by Postfix.
Rule 3: outbound, our DKIM-signed message must still verify (``multimail verify``, a
        subprocess, against the records our server publishes) after Postfix relayed it,
        and Postfix's own DSN about it must be attributed back to it.
"""

from __future__ import annotations

import hashlib
import shutil
import smtplib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from bench.postfix import PostfixSpec, PostfixUnavailable, PrivatePostfix, is_available
from multimail.embedded import Embedded, run_embedded
from tests.interop.conftest import Api, eventually
from tests.smtp_sink import Sink, free_port, smtp_sink

UNAVAILABLE = is_available()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"no Postfix: {UNAVAILABLE}")

ALICE = "alice@outside.example"
POSTFIX_WAIT = 20.0


def _postfix(relay_port: int) -> Iterator[PrivatePostfix]:
    try:
        with PrivatePostfix(PostfixSpec("relay", free_port(), sink_port=relay_port)) as postfix:
            yield postfix
    except PostfixUnavailable as exc:
        pytest.skip(f"private Postfix did not start: {exc}")


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    with smtp_sink() as s:
        yield s


@pytest.fixture(scope="module")
def postfix_out(sink: Sink) -> Iterator[PrivatePostfix]:
    """Our relay: everything it takes goes on to the sink."""
    yield from _postfix(sink.port)


@pytest.fixture(scope="module")
def server(postfix_out: PrivatePostfix) -> Iterator[Embedded]:
    with run_embedded(dns="off", relay=f"smtp://127.0.0.1:{postfix_out.spec.port}") as mm:
        yield mm


@pytest.fixture(scope="module")
def postfix_in(server: Embedded) -> Iterator[PrivatePostfix]:
    """An outside MTA whose relayhost is our SMTP port."""
    yield from _postfix(server.smtp_port)


def _message(to: str, subject: str, attachment: bytes) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Alice <{ALICE}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = "Wed, 25 Nov 2026 10:00:00 +0000"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@outside.example>"
    msg.set_content("Grüße über Postfix.\n.a line that starts with a dot\n", cte="8bit")
    msg.add_attachment(attachment, maintype="application", subtype="octet-stream",
                       filename="payload.bin")  # fmt: skip
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def _inject(postfix: PrivatePostfix, rcpts: list[str], raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", postfix.spec.port, timeout=30) as client:
        assert client.sendmail(ALICE, rcpts, raw, mail_options=["BODY=8BITMIME"]) == {}


def _split_received(raw: bytes) -> tuple[bytes, bytes]:
    """The first header field (with its folded lines) and the rest of the message."""
    lines = raw.split(b"\r\n")
    end = 1
    while lines[end][:1] in (b" ", b"\t"):
        end += 1
    return b"\r\n".join(lines[:end]), b"\r\n".join(lines[end:])


# --- inbound: Postfix relays into us -------------------------------------------------------


def test_mail_relayed_by_postfix_lands_with_its_received_header(
    postfix_in: PrivatePostfix, api: Api
) -> None:
    box = api.mailbox("via-postfix")
    payload = bytes(range(256)) * 16
    raw = _message(box["address"], "Relayed by Postfix", payload)
    _inject(postfix_in, [box["address"]], raw)
    [summary] = eventually(lambda: api.inbound(box["id"]), timeout=POSTFIX_WAIT,
                           what="the message relayed by Postfix")  # fmt: skip
    stored = api.raw(summary["id"])
    received, rest = _split_received(stored)
    assert received.startswith(b"Received: from ")
    assert b"(Postfix)" in received
    assert f"for <{box['address']}>".encode() in received
    assert rest == raw  # Postfix added its trace field and changed nothing else
    email = api.email(summary["id"])
    assert email["headers"][0]["name"] == "Received"
    assert email["subject"] == "Relayed by Postfix"
    assert email["from"] == ALICE
    assert "Grüße über Postfix." in email["body_text"]
    [att] = email["attachments"]
    assert att["filename"] == "payload.bin"
    assert att["sha256"] == hashlib.sha256(payload).hexdigest()
    signals = email["signals"]
    assert {"dkim", "spf", "dmarc"} <= signals.keys()
    assert (signals["first_contact"], signals["prior_messages"]) == (True, 0)


def test_postfix_bounces_the_recipient_we_refuse_and_delivers_the_other(
    postfix_in: PrivatePostfix, api: Api
) -> None:
    box = api.mailbox("partial")
    unknown = f"nobody-{uuid.uuid4().hex[:6]}@{box['address'].split('@')[1]}"
    _inject(postfix_in, [box["address"], unknown], _message(box["address"], "Partly", b"x"))
    [summary] = eventually(lambda: api.inbound(box["id"]), timeout=POSTFIX_WAIT,
                           what="the copy for the known recipient")  # fmt: skip
    assert api.email(summary["id"])["subject"] == "Partly"

    def bounced() -> list[str]:
        log = postfix_in.maillog.read_text(errors="replace")
        return [line for line in log.splitlines() if f"to=<{unknown}>" in line]

    [line] = eventually(bounced, timeout=POSTFIX_WAIT, what=f"Postfix's verdict on {unknown}")
    assert "status=bounced" in line
    assert "550 5.1.1" in line
    assert len(api.inbound(box["id"])) == 1


# --- outbound: we relay through Postfix ----------------------------------------------------


def _multimail() -> list[str]:
    script = shutil.which("multimail", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "multimail.cli"]


def _verify(server: Embedded, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_multimail(), "verify", str(path), "--server", server.api_url],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _send(api: Api, box: dict[str, Any], to: str, subject: str) -> str:
    body = {"to": [to], "subject": subject, "body_text": "Signed here.\nStill signed there."}
    sent = api.ok("POST", f"/v1/mailboxes/{box['id']}/send", body)
    return str(sent["email_id"])


def test_our_signed_mail_still_verifies_after_postfix_relayed_it(
    server: Embedded, sink: Sink, api: Api, tmp_path: Path
) -> None:
    box = api.mailbox("signed")
    to = f"bob-{uuid.uuid4().hex[:6]}@customer.example"
    email_id = _send(api, box, to, "Through Postfix")
    [copy] = sink.wait(to, timeout=POSTFIX_WAIT)
    assert copy.mail_from == f"bounces+{email_id}@{box['address'].split('@')[1]}"
    received, rest = _split_received(copy.data)
    assert b"(Postfix)" in received  # it really went through Postfix
    assert rest == api.raw(email_id)  # and Postfix changed nothing but the trace field
    assert b"X-MultiMail-Identity:" in rest
    eml = tmp_path / "copy.eml"
    eml.write_bytes(copy.data)
    verified = _verify(server, eml)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert box["id"] in verified.stdout
    eml.write_bytes(copy.data.replace(b"Still signed there.", b"Still signed THERE."))
    tampered = _verify(server, eml)
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr


def test_a_postfix_dsn_about_our_message_bounces_it(server: Embedded, sink: Sink, api: Api) -> None:
    box = api.mailbox("dsn")
    gone = f"gone-{uuid.uuid4().hex[:6]}@customer.example"
    sink.reply(gone, f"550 5.1.1 <{gone}>: no such user")
    email_id = _send(api, box, gone, "Will bounce")
    verp = f"bounces+{email_id}@{box['address'].split('@')[1]}"
    [dsn] = sink.wait(verp, timeout=POSTFIX_WAIT)  # Postfix's own RFC 3464 report
    assert dsn.mail_from in ("", "<>")  # the null reverse-path (RFC 5321 §4.5.5)
    assert b"report-type=delivery-status" in dsn.data
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
        assert client.sendmail("", [verp], dsn.data) == {}
    email = eventually(
        lambda: (e := api.email(email_id))["status"] == "bounced" and e,
        what=f"{email_id} bounced by the DSN",
    )
    assert "5.1.1" in email["last_reply"]
    suppressed = api.ok("GET", "/v1/suppression")["suppressions"]
    assert gone in [s["email_address"] for s in suppressed]
