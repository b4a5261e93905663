"""Scenarios for multimail.payloads: the webhook envelope and the ``message.received`` data.

Records are built by hand from `mime.parse` of literal MIME (or `mime.compose`), so each
test shows the bytes it is about. The corpus test wraps every corpus message in a record
and checks the payload survives a JSON round trip unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from multimail import mime
from multimail.payloads import (
    event_payload,
    from_name,
    message_payload,
    reply_text,
    truncate_utf8,
)
from multimail.records import Attachment, Content, MessageRecord
from multimail_core import inbound, outbound
from tests.corpus import corpus_files, require_corpus

NOW = 1_700_000_000_123
URL = "https://mail.example.test"


def attachments_of(payload: dict[str, object]) -> list[dict[str, Any]]:
    found = payload["attachments"]
    assert isinstance(found, list)
    return found


def content_of(parsed: mime.Parsed) -> Content:
    return Content(
        sender=parsed.sender or "envelope@example.net",
        to=parsed.to,
        cc=parsed.cc,
        bcc=(),
        subject=parsed.subject,
        body_text=parsed.body_text,
        body_html=parsed.body_html,
        headers=parsed.headers,
        message_id_header=parsed.message_id or "",
        in_reply_to=parsed.in_reply_to,
        references=parsed.references,
        attachments=tuple(
            Attachment(a.attachment_id, a.filename or "", a.content_type, a.size, a.sha256)
            for a in parsed.attachments
        ),
    )


def received(
    raw: bytes,
    *,
    keep_raw: bool = True,
    status: inbound.Status = inbound.Status.UNREAD,
    kind: inbound.Kind = inbound.Kind.PERSONAL,
) -> MessageRecord:
    parsed = mime.parse(raw)
    state = inbound.Inbound(
        id="msg_1",
        mailbox_id="mbx_1",
        account_id="acc_1",
        thread_id="thr_1",
        sender=parsed.sender,
        subject=parsed.subject,
        kind=kind,
        status=status,
        received_at=NOW,
    )
    meta: dict[str, object] = {
        "signals": {"spf": "pass", "dkim": "none"},
        "defects": list(parsed.defects),
        "envelope": {"mail_from": parsed.sender},
    }
    return MessageRecord(state, content_of(parsed), raw if keep_raw else None, meta=meta)


def plain(body: str, *, sender: str = '"Bob Smith" <bob@example.com>') -> bytes:
    return mime.compose(
        sender="bob@example.com",
        display_name=None,
        to=["agent@acme.test"],
        cc=[],
        subject="Hello",
        body_text=body,
        body_html=None,
        message_id="<m1@example.com>",
        date=NOW,
        in_reply_to=None,
        references=[],
    ).replace(b"From: bob@example.com", b"From: " + sender.encode())


SMALL = bytes(range(256)) * 4  # 1 KiB with every byte value
LARGE = b"L" * 70_000


def with_attachments(small: bytes = SMALL) -> bytes:
    def part(name: str, data: bytes) -> bytes:
        encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
        return (
            b"--XYZ\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Disposition: attachment; filename=" + name.encode() + b"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded
        )

    return (
        b"From: Ann <ann@example.org>\r\nTo: agent@acme.test\r\nSubject: files\r\n"
        b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\nMessage-ID: <f@example.org>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XYZ\r\n\r\n"
        b"--XYZ\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nTwo files.\r\n"
        + part("small.bin", small)
        + part("large.bin", LARGE)
        + b"--XYZ--\r\n"
    )


# --- reply_text ---------------------------------------------------------------------------

GMAIL_REPLY = """Sounds good, see you at 3.

Best regards,
Ann

On Mon, 3 Mar 2025 at 10:00, Bob Smith <bob@example.com> wrote:
> Can we meet at 3?
>
> Bob
"""


def test_reply_text_drops_attribution_quotes_and_signoff() -> None:
    assert reply_text(GMAIL_REPLY) == "Sounds good, see you at 3."


def test_reply_text_handles_crlf_and_a_wrapped_attribution() -> None:
    text = (
        "Yes.\r\n\r\nOn Mon, 3 Mar 2025 at 10:00, Bob Smith <\r\n"
        "bob@example.com> wrote:\r\n\r\n> Meet?\r\n"
    )
    assert reply_text(text) == "Yes."


def test_reply_text_keeps_a_plain_message_whole() -> None:
    text = "Hi,\n\n- one\n- two\n\n\nthanks for this, more later\nOn it.\n"
    assert reply_text(text) == text.rstrip("\n")


def test_reply_text_keeps_answers_between_quotes() -> None:
    text = "Answers inline.\n\nBob wrote:\n> One?\nYes.\n\n> Two?\nNo.\n"
    assert reply_text(text) == "Answers inline.\n\nYes.\n\nNo."


def test_blank_lines_that_meet_across_a_removed_quote_collapse() -> None:
    assert reply_text("Above.\n\n> quoted\n> more\n\nBelow.\n") == "Above.\n\nBelow."
    assert reply_text("Above.\n\n\nBelow.\n") == "Above.\n\n\nBelow."  # none removed


def test_a_wrote_line_without_a_quote_after_it_is_text() -> None:
    text = "Here is what he wrote:\nHe said hi."
    assert reply_text(text) == text


def test_a_dated_attribution_without_quotes_starts_history() -> None:
    text = "Fine.\n\nOn 3 March 2025, Bob wrote:\nold text without quote marks\n"
    assert reply_text(text) == "Fine."


@pytest.mark.parametrize(
    "history",
    [
        "-----Original Message-----\nFrom: Bob\nSent: Monday\nTo: Ann\n\nold",
        "________________________________\nFrom: Bob <b@x.test>\nSent: Monday\nTo: Ann\n\nold",
        "From: Bob <b@x.test>\nDate: Mon, 3 Mar 2025\nSubject: old\n\nold",
        "---------- Forwarded message ---------\nFrom: Bob\n\nold",
        "Begin forwarded message:\n\nold",
    ],
)
def test_unquoted_history_is_cut(history: str) -> None:
    assert reply_text(f"Fine by me.\n\n{history}\n") == "Fine by me."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Call me.\n\n-- \nAnn Example\nCEO, Example Ltd\n", "Call me."),
        ("Call me.\n--\nAnn\n", "Call me."),
        ("Call me.\n\nSent from my iPhone\n", "Call me."),
        ("Call me.\n\nThanks,\nAnn\n", "Call me."),
        # a valediction followed by a long paragraph is not a sign-off
        ("Call me.\nThanks,\n" + "x" * 80 + "\n", "Call me.\nThanks,\n" + "x" * 80),
        # a message that is only a sign-off keeps it rather than become empty
        ("Thanks!\n", "Thanks!"),
    ],
)
def test_signatures(text: str, expected: str) -> None:
    assert reply_text(text) == expected


def test_a_message_of_quotes_only_has_no_new_text() -> None:
    assert reply_text("> all quoted\n> here\n") == ""


def test_crafted_text_is_read_in_linear_time() -> None:
    # quadratic scanners take minutes on these; a linear one takes well under a second
    assert reply_text("On 1 x wrote:\n> a\n" * 20_000) == ""
    assert reply_text("On " + "a " * 200_000 + "\nwrote:").startswith("On a a")
    assert reply_text("x" + "\n" * 200_000 + "y") == "x" + "\n" * 200_000 + "y"


_WORDS = st.text(alphabet="abcxyz0123456789 .?", max_size=30)  # cannot spell any marker


@given(st.lists(_WORDS, max_size=20))
def test_text_without_markers_comes_back_whole(lines: list[str]) -> None:
    text = "\n".join(lines)
    kept = text.split("\n")
    while kept and not kept[0].strip():
        kept.pop(0)
    while kept and not kept[-1].strip():
        kept.pop()
    assert reply_text(text) == "\n".join(kept)


_LINES = st.sampled_from(
    ["> q", "On 1 Mar, Bob wrote:", "Bob wrote:", "--", "Thanks,", "From: a", "To: b", "", "x"]
)


@given(st.lists(_LINES | _WORDS, max_size=30))
def test_reply_lines_are_input_lines_in_order(lines: list[str]) -> None:
    out = reply_text("\n".join(lines))
    source = iter(lines)
    assert all(line in source for line in (out.split("\n") if out else []))
    assert not any(line.startswith(">") for line in out.split("\n"))


# --- truncation ----------------------------------------------------------------------------


@given(st.text(max_size=200), st.integers(min_value=0, max_value=300))
def test_truncate_utf8_is_the_longest_prefix_that_fits(text: str, limit: int) -> None:
    cut, was_cut = truncate_utf8(text, limit)
    assert cut is not None
    size = len(cut.encode("utf-8", "surrogatepass"))
    assert text.startswith(cut)
    assert size <= limit
    assert was_cut == (cut != text)
    if was_cut:  # one more character would not fit
        assert size + len(text[len(cut)].encode("utf-8", "surrogatepass")) > limit


def test_bodies_are_cut_at_a_character_boundary_and_flagged() -> None:
    body = "é" * 100  # 200 bytes; 2 bytes a character
    record = received(plain(body))
    payload = message_payload(record, public_url=URL, body_limit=101)
    assert payload["text"] == "é" * 50  # 101 would split the 51st character
    assert payload["reply_text"] == "é" * 50
    assert payload["truncated"] is True
    assert payload["raw_url"] == f"{URL}/v1/emails/msg_1/raw"
    assert payload["full_url"] == f"{URL}/v1/emails/msg_1"


def test_a_body_exactly_at_the_limit_is_not_cut() -> None:
    record = received(plain("é" * 100))
    assert record.content.body_text.encode() == ("é" * 100 + "\n").encode()
    payload = message_payload(record, public_url=URL, body_limit=201)
    assert payload["truncated"] is False
    assert payload["text"] == record.content.body_text
    assert "raw_url" not in payload
    assert "full_url" not in payload


def test_html_over_the_limit_also_sets_the_flag() -> None:
    record = received(plain("short"))
    record = replace(record, content=replace(record.content, body_html="<p>" + "€" * 50))
    payload = message_payload(record, public_url=URL, body_limit=10)
    assert payload["html"] == "<p>€€"  # 3 + 3 + 3 bytes; a third € would make 12
    assert payload["text"] == "short\n"
    assert payload["truncated"] is True


# --- attachments ---------------------------------------------------------------------------


def test_a_small_attachment_is_inlined_and_a_large_one_only_linked() -> None:
    payload = message_payload(received(with_attachments()), public_url=URL)
    small, large = attachments_of(payload)
    assert small["filename"] == "small.bin"
    assert base64.b64decode(small["content_base64"]) == SMALL
    assert small["sha256"] == hashlib.sha256(SMALL).hexdigest()
    assert small["size"] == len(SMALL)
    assert small["url"] == f"{URL}/v1/emails/msg_1/attachments/{small['attachment_id']}"
    assert large["size"] == len(LARGE) > 64 * 1024
    assert "content_base64" not in large
    assert large["url"] == f"{URL}/v1/emails/msg_1/attachments/{large['attachment_id']}"


def test_the_inline_limit_is_inclusive() -> None:
    at = message_payload(received(with_attachments()), public_url=URL, inline_limit=len(SMALL))
    below = message_payload(
        received(with_attachments()), public_url=URL, inline_limit=len(SMALL) - 1
    )
    assert "content_base64" in attachments_of(at)[0]
    assert "content_base64" not in attachments_of(below)[0]


def test_missing_raw_gives_links_without_content() -> None:
    payload = message_payload(received(with_attachments(), keep_raw=False), public_url=URL)
    attachments = attachments_of(payload)
    assert [a["filename"] for a in attachments] == ["small.bin", "large.bin"]
    assert not any("content_base64" in a for a in attachments)


def test_raw_that_does_not_hold_the_recorded_bytes_is_not_inlined() -> None:
    record = received(with_attachments())
    other = with_attachments(small=b"other bytes under the same attachment id")
    for raw in (other, plain("no attachments here"), b"", b"\x00\xff garbage"):
        payload = message_payload(replace(record, raw=raw), public_url=URL)
        assert not any("content_base64" in a for a in attachments_of(payload))


def test_at_most_inline_count_limit_attachments_are_inlined() -> None:
    record = received(with_attachments())
    payload = message_payload(record, public_url=URL, inline_limit=10**6, inline_count_limit=1)
    assert ["content_base64" in a for a in attachments_of(payload)] == [True, False]


# --- the rest of the fields -----------------------------------------------------------------


def test_fields_of_a_received_reply() -> None:
    raw = (
        b'From: "Smith, Bob" <bob@example.com>\r\nTo: agent@acme.test\r\n'
        b"Cc: Carol <carol@example.com>\r\nSubject: Re: plan\r\n"
        b"Date: Mon, 3 Mar 2025 10:00:00 +0100\r\nMessage-ID: <r2@example.com>\r\n"
        b"In-Reply-To: <r1@acme.test>\r\nReferences: <r0@acme.test> <r1@acme.test>\r\n"
        b"\r\n" + GMAIL_REPLY.replace("\n", "\r\n").encode()
    )
    payload = message_payload(received(raw), public_url=URL)
    assert payload["email_id"] == "msg_1"
    assert payload["mailbox_id"] == "mbx_1"
    assert payload["thread_id"] == "thr_1"
    assert payload["message_id"] == "<r2@example.com>"
    assert payload["in_reply_to"] == "<r1@acme.test>"
    assert payload["references"] == ["<r0@acme.test>", "<r1@acme.test>"]
    assert payload["from"] == "bob@example.com"
    assert payload["from_name"] == "Smith, Bob"
    assert payload["to"] == ["agent@acme.test"]
    assert payload["cc"] == ["carol@example.com"]
    assert payload["subject"] == "Re: plan"
    assert payload["date"] == "Mon, 3 Mar 2025 10:00:00 +0100"
    assert payload["received_at"] == "2023-11-14T22:13:20.123Z"
    headers = payload["headers"]
    assert isinstance(headers, list)
    assert {"name": "In-Reply-To", "value": "<r1@acme.test>"} in headers
    assert payload["text"] == GMAIL_REPLY
    assert payload["html"] is None
    assert payload["reply_text"] == "Sounds good, see you at 3."
    assert payload["signals"] == {"spf": "pass", "dkim": "none"}
    assert payload["defects"] == []
    assert payload["requires_action"] is True
    assert payload["direction"] == "inbound"
    assert payload["status"] == "unread"
    assert payload["truncated"] is False


@pytest.mark.parametrize(
    ("status", "kind"),
    [(inbound.Status.READ, inbound.Kind.PERSONAL), (inbound.Status.UNREAD, inbound.Kind.BULK)],
)
def test_requires_action_follows_the_core(status: inbound.Status, kind: inbound.Kind) -> None:
    payload = message_payload(received(plain("hi"), status=status, kind=kind), public_url=URL)
    assert payload["requires_action"] is False
    assert payload["status"] == status.value


def test_an_outbound_record_has_no_received_at_and_never_requires_action() -> None:
    record = received(plain("hi"))
    state = outbound.Outbound(
        id="msg_9", mailbox_id="mbx_1", account_id="acc_1", thread_id="thr_1",
        created_by="key_1", recipients=("x@example.com",), subject="Hello", body_text="hi",
        body_html=None, status=outbound.Status.SENT, monitored=False, created_at=NOW,
    )  # fmt: skip
    payload = message_payload(replace(record, state=state, meta={}), public_url=URL)
    assert payload["direction"] == "outbound"
    assert payload["received_at"] is None
    assert payload["sent_at"] == "2023-11-14T22:13:20.123Z"
    assert payload["requires_action"] is False
    assert payload["signals"] == {}
    assert payload["defects"] == []


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ('"Bob \\"B\\" Smith" <bob@example.com>', 'Bob "B" Smith'),
        ("Doe, John <bob@example.com>", "Doe, John"),  # stored decoded from an encoded word
        ("Bob   Smith <BOB@example.com>", "Bob Smith"),
        ("bob@example.com (Bob Smith)", "Bob Smith"),
        ("<bob@example.com>", None),
        ("bob@example.com", None),
        ("Mallory <mallory@evil.test>", None),  # another address than the sender
    ],
)
def test_from_name(value: str, name: str | None) -> None:
    assert from_name((("Subject", "x"), ("From", value)), "bob@example.com") == name


def test_from_name_without_a_from_header_is_none() -> None:
    assert from_name((("Subject", "x"),), "bob@example.com") is None


def test_header_values_are_data() -> None:
    raw = plain("hi", sender='"{{7*7}} <script>" <bob@example.com>')
    payload = message_payload(received(raw), public_url=URL)
    assert payload["from_name"] == "{{7*7}} <script>"


# --- envelope and JSON ---------------------------------------------------------------------


def test_event_payload_envelope() -> None:
    data: dict[str, object] = {"email_id": "msg_1"}
    assert event_payload("evt_1", "message.received", NOW, "acc_1", "mbx_1", data) == {
        "id": "evt_1",
        "type": "message.received",
        "created_at": "2023-11-14T22:13:20.123Z",
        "account_id": "acc_1",
        "mailbox_id": "mbx_1",
        "data": data,
    }


def test_every_corpus_message_gives_a_json_payload() -> None:
    require_corpus()
    files = corpus_files()
    assert files
    for path in files:
        record = received(path.read_bytes())
        for inline_limit, body_limit in ((64 * 1024, 256 * 1024), (10**6, 2000)):
            payload = message_payload(
                record, public_url=URL, inline_limit=inline_limit, body_limit=body_limit
            )
            event = event_payload("evt_1", "message.received", NOW, "acc_1", "mbx_1", payload)
            text = json.dumps(event, allow_nan=False)
            assert json.loads(text) == event, path
            for a in attachments_of(payload):
                if "content_base64" in a:
                    data = base64.b64decode(a["content_base64"])
                    assert hashlib.sha256(data).hexdigest() == a["sha256"], path
