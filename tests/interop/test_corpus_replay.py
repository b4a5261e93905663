"""Every corpus message through SMTP into one mailbox of one running server (PRODUCT §6:
"any bytes either become a stored message or a clean SMTP error").

Rule 1: each file goes over one reused smtplib session, as the bytes smtplib puts on the
        wire (``wire_bytes``); a 250 names the stored id, and ``/raw`` must give those
        bytes back exactly. Anything else must be a documented refusal, and the session must
        still take the next file.
Rule 2: the same files sent UNnormalised over a raw socket, when they hold a bare LF or CR,
        are refused (550 5.6.0; 500 when that makes a CRLF-delimited line too long) and
        store nothing; RSET and a good message then succeed on the same session.
Rule 3: after the replay the mailbox holds exactly the acknowledged messages, ``/health``
        answers and ordinary mail still flows.
"""

from __future__ import annotations

import smtplib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from multimail.embedded import Embedded
from multimail.mime import has_bare_line_endings
from tests.corpus import CORPUS, corpus_files, require_corpus
from tests.interop.conftest import (
    Api,
    RawSmtp,
    Reply,
    dot_stuffed,
    stored_ids,
    wire_bytes,
)

FILES = corpus_files()
SENDER = "replay@corpus.example"

#: (code, enhanced status) a well-formed or malformed message may be refused with: size
#: (552 5.3.4), header limits (554 5.6.0), and loop protection (554 5.4.6, ≥ 50 Received).
DOCUMENTED_REFUSALS = {(552, "5.3.4"), (554, "5.6.0"), (554, "5.4.6")}
MAX_REFUSED_SHARE = 0.02

#: aiosmtpd reads DATA in CRLF-terminated lines of at most 1001 octets (RFC 5321 §4.5.3.1.6
#: allows 1000); a longer one is answered "500 Line too long" before any handler runs. A file
#: with bare LFs is one such line as soon as it is a little over 1 KB.
MAX_DATA_LINE = 1001


def _rel(path: Path) -> str:
    return str(path.relative_to(CORPUS))


def _replay_params() -> list[Any]:
    return [pytest.param(p, id=_rel(p)) for p in FILES]


@dataclass(frozen=True)
class Outcome:
    wire: bytes
    code: int
    text: str
    email_ids: tuple[str, ...] = ()

    @property
    def status(self) -> tuple[int, str]:
        return self.code, self.text[:5]


@pytest.fixture(scope="module")
def box(api: Api) -> dict[str, Any]:
    return api.mailbox("corpus")


def _send(client: smtplib.SMTP, rcpt: str, wire: bytes) -> Outcome:
    code, text = client.mail(SENDER, [f"SIZE={len(wire)}"])
    if code != 250:
        return Outcome(wire, code, f"MAIL: {text.decode()}")
    code, text = client.rcpt(rcpt)
    if code != 250:
        return Outcome(wire, code, f"RCPT: {text.decode()}")
    try:
        code, text = client.data(wire)
    except smtplib.SMTPDataError as exc:  # DATA itself refused (no 354)
        return Outcome(wire, exc.smtp_code, f"DATA: {exc.smtp_error!r}")
    answer = text.decode("utf-8", "replace")
    return Outcome(wire, code, answer, tuple(stored_ids(answer)) if code == 250 else ())


@pytest.fixture(scope="module")
def replay(server: Embedded, box: dict[str, Any]) -> dict[Path, Outcome]:
    """Every corpus file sent once, in order, over one reused session (Rule 1)."""
    require_corpus()
    outcomes: dict[Path, Outcome] = {}
    client = smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=60)
    client.ehlo("replay.corpus.example")
    try:
        for path in FILES:
            outcomes[path] = _send(client, box["address"], wire_bytes(path.read_bytes()))
    finally:
        client.quit()
    return outcomes


@pytest.mark.parametrize("path", _replay_params())
def test_a_corpus_file_is_stored_byte_exact_or_cleanly_refused(
    path: Path, replay: dict[Path, Outcome], api: Api
) -> None:
    outcome = replay[path]
    if outcome.code != 250:
        assert outcome.status in DOCUMENTED_REFUSALS, outcome.text
        return
    [email_id] = outcome.email_ids  # one recipient, one stored message
    assert api.raw(email_id) == outcome.wire


def test_few_corpus_files_are_refused(replay: dict[Path, Outcome]) -> None:
    refused = {_rel(p): o.text for p, o in replay.items() if o.code != 250}
    assert len(refused) <= MAX_REFUSED_SHARE * len(replay), refused


def test_the_mailbox_holds_exactly_the_acknowledged_messages(
    replay: dict[Path, Outcome], api: Api, box: dict[str, Any]
) -> None:
    acknowledged = [i for o in replay.values() for i in o.email_ids]
    assert len(acknowledged) == sum(o.code == 250 for o in replay.values())
    listed = [e["id"] for e in api.inbound(box["id"])]
    assert sorted(listed) == sorted(acknowledged)


def test_after_the_replay_the_server_is_healthy_and_takes_ordinary_mail(
    replay: dict[Path, Outcome], server: Embedded, api: Api, box: dict[str, Any]
) -> None:
    health = httpx.get(f"{server.api_url}/health", timeout=10)
    assert health.status_code == 200
    raw = _ordinary(box["address"])
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
        client.ehlo("replay.corpus.example")
        outcome = _send(client, box["address"], raw)
    assert outcome.code == 250, outcome.text
    [email_id] = outcome.email_ids
    assert api.raw(email_id) == raw
    email = api.email(email_id)
    assert (email["mailbox_id"], email["direction"]) == (box["id"], "inbound")
    assert email["subject"] == "After the corpus"
    assert {"dkim", "spf", "dmarc", "first_contact", "prior_messages"} <= email["signals"].keys()


def _ordinary(to: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = to
    msg["Subject"] = "After the corpus"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@corpus.example>"
    msg.set_content("Still here.")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


# --- unnormalised bytes over a raw socket (Rule 2) ---------------------------------------

BARE_FILES = [p for p in FILES if has_bare_line_endings(p.read_bytes())]


@pytest.fixture(scope="module")
def raw_box(api: Api) -> dict[str, Any]:
    return api.mailbox("bare")


@pytest.fixture
def session(server: Embedded) -> Iterator[RawSmtp]:
    with RawSmtp(server.smtp_port) as smtp:
        assert smtp.command("EHLO raw.corpus.example").code == 250
        yield smtp


def _expected_refusal(data: bytes) -> tuple[int, str]:
    longest = max(len(line) + 2 for line in data.split(b"\r\n"))
    return (500, "Line ") if longest > MAX_DATA_LINE else (550, "5.6.0")


def _transaction(session: RawSmtp, rcpt: str, data: bytes) -> Reply:
    assert session.command(f"MAIL FROM:<{SENDER}>").code == 250
    assert session.command(f"RCPT TO:<{rcpt}>").code == 250
    assert session.command("DATA").code == 354
    session.send(data)
    return session.reply()


@pytest.mark.parametrize("path", [pytest.param(p, id=_rel(p)) for p in BARE_FILES])
def test_a_file_with_bare_line_endings_is_refused_as_sent_and_the_session_goes_on(
    path: Path, session: RawSmtp, api: Api, raw_box: dict[str, Any]
) -> None:
    data = dot_stuffed(path.read_bytes())
    refusal = _transaction(session, raw_box["address"], data)
    assert (refusal.code, refusal.text[:5]) == _expected_refusal(data), refusal
    assert session.command("RSET").code == 250
    good = _ordinary(raw_box["address"])
    accepted = _transaction(session, raw_box["address"], dot_stuffed(good))
    assert accepted.code == 250, accepted
    [email_id] = stored_ids(accepted.text)
    assert api.raw(email_id) == good


def test_no_refused_file_was_stored(api: Api, raw_box: dict[str, Any]) -> None:
    """The mailbox of the raw-socket tests holds only their good follow-up messages."""
    subjects = {e["subject"] for e in api.inbound(raw_box["id"])}
    assert subjects <= {"After the corpus"}
