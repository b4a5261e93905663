"""swaks, a real SMTP client, sending into our server (PRODUCT §6); what landed is read back
through the API.

Rule 1: every test uses a fresh mailbox, so "nothing else was stored" is a plain equality.
Rule 2: swaks's transcript is evidence of the dialogue (which replies it got, whether it
        tried STARTTLS); the API is evidence of what was stored.
"""

from __future__ import annotations

import hashlib
import shutil
import smtplib
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from multimail.embedded import Embedded
from multimail.mime import has_bare_line_endings
from tests.interop.conftest import Api, RawSmtp, dot_stuffed, stored_ids

SWAKS = shutil.which("swaks")
pytestmark = pytest.mark.skipif(SWAKS is None, reason="swaks is not installed")

SENDER = "bob@sender.example"


@dataclass(frozen=True)
class SwaksRun:
    returncode: int
    transcript: str

    @property
    def replies(self) -> list[str]:
        """Server lines as swaks shows them: ``<-`` expected, ``<**`` unexpected."""
        return [
            line[4:] for line in self.transcript.splitlines() if line.startswith(("<-  ", "<** "))
        ]

    @property
    def sent(self) -> list[str]:
        return [line[4:] for line in self.transcript.splitlines() if line.startswith(" -> ")]

    @property
    def stored(self) -> list[str]:
        return stored_ids(self.transcript)


def swaks(server: Embedded, to: str, *args: str) -> SwaksRun:
    assert SWAKS is not None
    done = subprocess.run(
        [SWAKS, "--server", f"127.0.0.1:{server.smtp_port}", "--from", SENDER, "--to", to,
         "--helo", "swaks.sender.example", "--timeout", "20", *args],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    text = (done.stdout + done.stderr).decode("utf-8", "replace")
    return SwaksRun(done.returncode, text)


def _delivered(run: SwaksRun) -> None:
    assert run.returncode == 0, run.transcript
    assert any(r.startswith("250 2.0.0 OK stored as") for r in run.replies), run.transcript


def test_a_plain_message_lands_as_swaks_sent_it(server: Embedded, api: Api) -> None:
    box = api.mailbox("plain")
    run = swaks(server, box["address"], "--header", "Subject: Plain hello",
                "--body", "Line one\nLine two")  # fmt: skip
    _delivered(run)
    [email_id] = run.stored
    assert [e["id"] for e in api.inbound(box["id"])] == [email_id]
    email = api.email(email_id)
    assert email["subject"] == "Plain hello"
    assert email["from"] == SENDER
    assert email["to"] == [box["address"]]
    assert "Line one\nLine two" in email["body_text"]
    message_id = next(s for s in run.sent if s.lower().startswith("message-id:"))
    assert email["message_id"] == message_id.split(":", 1)[1].strip()
    assert {"dkim", "spf", "dmarc"} <= email["signals"].keys()
    assert email["signals"]["first_contact"] is True
    raw = api.raw(email_id)
    assert b"\r\nSubject: Plain hello\r\n" in raw
    assert not has_bare_line_endings(raw)  # swaks turned the LF of --body into CRLF


def test_two_attachments_arrive_intact_with_their_names_and_types(
    server: Embedded, api: Api, tmp_path: Path
) -> None:
    box = api.mailbox("attach")
    blob = tmp_path / "blob"
    blob.write_bytes(bytes(range(256)) * 64)
    table = tmp_path / "table"
    table.write_bytes("name,city\r\nZoë,Zürich\r\n".encode())
    run = swaks(server, box["address"], "--header", "Subject: Two files",
                "--body", "Both attached.",
                "--attach-type", "application/octet-stream", "--attach-name", "data.bin",
                "--attach", f"@{blob}",
                "--attach-type", "text/csv", "--attach-name", "places.csv",
                "--attach", f"@{table}",
                "--suppress-data")  # fmt: skip
    _delivered(run)
    [email_id] = run.stored
    email = api.email(email_id)
    assert "Both attached." in email["body_text"]
    got = {a["filename"]: a for a in email["attachments"]}
    assert got.keys() == {"data.bin", "places.csv"}
    for name, path, ctype in (
        ("data.bin", blob, "application/octet-stream"),
        ("places.csv", table, "text/csv"),
    ):
        att = got[name]
        assert att["content_type"] == ctype
        assert att["size"] == path.stat().st_size
        assert att["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        served = api.request("GET", f"/v1/emails/{email_id}/attachments/{att['attachment_id']}")
        assert served.status_code == 200
        assert served.content == path.read_bytes()


def test_esmtp_with_pipelining_requested_delivers(server: Embedded, api: Api) -> None:
    box = api.mailbox("pipe")
    run = swaks(server, box["address"], "--protocol", "ESMTP", "--pipeline",
                "--header", "Subject: Pipelined")  # fmt: skip
    _delivered(run)
    assert run.sent[0].startswith("EHLO")
    [email_id] = run.stored
    assert api.email(email_id)["subject"] == "Pipelined"


def test_a_pipelining_client_gets_its_replies_in_order(server: Embedded, api: Api) -> None:
    """RFC 2920 §3.1: the whole envelope in one write; one reply per command, in order."""
    a, b = api.mailbox("pipe-a"), api.mailbox("pipe-b")
    unknown = f"nobody-here@{a['address'].split('@')[1]}"
    with RawSmtp(server.smtp_port) as smtp:
        assert smtp.command("EHLO pipeline.sender.example").code == 250
        smtp.send(
            f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{a['address']}>\r\nRCPT TO:<{unknown}>\r\n"
            f"RCPT TO:<{b['address']}>\r\nDATA\r\n".encode()
        )
        replies = [smtp.reply() for _ in range(5)]
        assert [r.code for r in replies] == [250, 250, 550, 250, 354], replies
        assert replies[2].text.startswith("5.1.1")
        message = b"From: bob@sender.example\r\nSubject: One write\r\n\r\nbody\r\n"
        smtp.send(dot_stuffed(message) + b"QUIT\r\n")
        done, bye = smtp.reply(), smtp.reply()
    assert done.code == 250, done
    assert bye.code == 221
    first, second = stored_ids(done.text)
    assert [e["id"] for e in api.inbound(a["id"])] == [first]
    assert [e["id"] for e in api.inbound(b["id"])] == [second]
    assert api.raw(first) == api.raw(second) == message


def test_an_unknown_recipient_among_several_is_refused_and_the_others_get_it(
    server: Embedded, api: Api
) -> None:
    a, b = api.mailbox("multi-a"), api.mailbox("multi-b")
    unknown = f"nobody-here@{a['address'].split('@')[1]}"
    run = swaks(server, f"{a['address']},{unknown},{b['address']}",
                "--header", "Subject: For two of three")  # fmt: skip
    _delivered(run)
    refusals = [r[:9] for r in run.replies if r.startswith("5")]
    assert refusals == ["550 5.1.1"], run.transcript
    ids = run.stored
    assert len(ids) == 2
    got = [e["id"] for box in (a, b) for e in api.inbound(box["id"])]
    assert sorted(got) == sorted(ids)
    assert {api.email(i)["subject"] for i in ids} == {"For two of three"}


def test_starttls_is_not_offered_and_tls_optional_still_delivers(
    server: Embedded, api: Api
) -> None:
    with RawSmtp(server.smtp_port) as smtp:
        ehlo = smtp.command("EHLO tls.sender.example")
    assert ehlo.code == 250
    assert "STARTTLS" not in ehlo.text.upper()
    box = api.mailbox("tls")
    run = swaks(server, box["address"], "--tls-optional", "--header", "Subject: Plaintext")
    _delivered(run)
    assert not any(s.upper().startswith("STARTTLS") for s in run.sent)
    [email_id] = run.stored
    assert api.email(email_id)["subject"] == "Plaintext"


def test_an_8bit_utf8_message_is_stored_and_decoded(server: Embedded, api: Api) -> None:
    box = api.mailbox("utf8")
    subject, body = "Grüße aus Köln 🌍", "Ünïcødé bödy ✓ — 日本語"
    run = swaks(server, box["address"], "--header", f"Subject: {subject}",
                "--add-header", "MIME-Version: 1.0",
                "--add-header", "Content-Type: text/plain; charset=utf-8",
                "--add-header", "Content-Transfer-Encoding: 8bit",
                "--body", body)  # fmt: skip
    _delivered(run)
    ehlo = run.replies[: run.replies.index("250 HELP") + 1]
    assert "250-8BITMIME" in ehlo
    [email_id] = run.stored
    email = api.email(email_id)
    assert email["subject"] == subject
    assert body in email["body_text"]
    raw = api.raw(email_id)
    assert f"Subject: {subject}\r\n".encode() in raw
    assert body.encode() in raw


def test_an_smtputf8_transaction_with_a_utf8_sender_is_accepted(server: Embedded, api: Api) -> None:
    """RFC 6531: the server advertises SMTPUTF8; a client using it may name a UTF-8 mailbox.
    (swaks has no way to send the SMTPUTF8 parameter, so smtplib is the client here.)"""
    box = api.mailbox("smtputf8")
    sender = "jösé@exämple.com"
    message = (
        f"From: José <{sender}>\r\nTo: {box['address']}\r\nSubject: Olá\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nçà va\r\n"
    ).encode()
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
        client.ehlo("utf8.sender.example")
        assert client.has_extn("smtputf8")
        refused = client.sendmail(
            sender, [box["address"]], message, mail_options=["SMTPUTF8", "BODY=8BITMIME"]
        )
    assert refused == {}
    [summary] = api.wait_inbound(box["id"])
    email = api.email(summary["id"])
    assert email["from"] == sender
    assert email["subject"] == "Olá"
    assert api.raw(summary["id"]) == message


def test_swaks_data_with_a_bare_lf_is_refused_and_nothing_is_stored(
    server: Embedded, api: Api
) -> None:
    box = api.mailbox("bare-lf")
    # --no-data-fixup sends --data as given; swaks appends the CRLF after the final dot.
    run = swaks(server, box["address"], "--no-data-fixup",
                "--data", "Subject: smuggled\r\n\r\nfirst\nsecond\r\n.")  # fmt: skip
    assert run.returncode != 0
    assert [r[:9] for r in run.replies if r.startswith("5")] == ["550 5.6.0"], run.transcript
    assert run.replies[-1].startswith("221")  # the session went on to a clean QUIT
    assert api.inbound(box["id"]) == []
