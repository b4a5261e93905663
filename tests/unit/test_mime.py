"""The MIME layer: every corpus message parses, limits become defects or `Refused`, hostile
bytes never raise anything else, and compose → parse gives back what went in."""

from __future__ import annotations

import email
import email.policy
import hashlib
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from multimail.mime import (
    Limits,
    Parsed,
    Refused,
    attachment,
    compose,
    has_bare_line_endings,
    html_to_text,
    parse,
)
from tests.corpus import CORPUS, corpus_files, require_corpus

FILES = corpus_files()


def corpus(name: str) -> bytes:
    return (require_corpus() / name).read_bytes()


def no_internal_error(parsed: Parsed) -> None:
    assert not [d for d in parsed.defects if d.startswith("InternalParseError")]


def mail(head: str, body: str = "body\r\n") -> bytes:
    return (head.replace("\n", "\r\n") + "\r\n" + body).encode()


# --- the corpus --------------------------------------------------------------------------


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(CORPUS)) for p in FILES])
def test_every_corpus_message_parses_and_its_attachments_come_back(path: Path) -> None:
    raw = path.read_bytes()
    parsed = parse(raw)
    no_internal_error(parsed)
    assert parse(raw) == parsed  # deterministic, ids included
    ids = [a.attachment_id for a in parsed.attachments]
    assert len(ids) == len(set(ids))
    for listed in parsed.attachments:
        found = attachment(raw, listed.attachment_id)
        assert found is not None
        record, content = found
        assert record == listed
        assert hashlib.sha256(content).hexdigest() == listed.sha256
        assert len(content) == listed.size


def test_a_multipart_with_a_pdf_attachment() -> None:
    raw = corpus("mikel-mail/attachment_emails/attachment_pdf.eml")
    parsed = parse(raw)
    assert parsed.sender == "xxxx@xxxx.com"
    assert parsed.sender_name == "Test Tester"
    assert parsed.subject == "Another PDF with 🎉 Unicode chars in it 🍿"
    assert parsed.body_text.startswith("Just attaching another PDF, here,")
    assert parsed.body_html is None
    (pdf,) = parsed.attachments
    assert (pdf.filename, pdf.content_type, pdf.disposition, pdf.size) == (
        "broken.pdf",
        "application/pdf",
        "attachment",
        1026,
    )
    found = attachment(raw, pdf.attachment_id)
    assert found is not None
    assert found[1].startswith(b"%PDF-1.4")
    assert parsed.defects == ()


def test_non_ascii_charsets_are_decoded() -> None:
    korean = parse(corpus("mikel-mail/multi_charset/ks_c_5601-1987.eml"))
    assert korean.body_text == "스티해\n"
    japanese = parse(corpus("mikel-mail/multi_charset/japanese_iso_2022.eml"))
    assert japanese.subject == "まみむめも"
    assert japanese.sender_name == "Mikel Lindsaar"
    assert japanese.body_text.startswith("すみません。")
    named = parse(corpus("mikel-mail/multi_charset/japanese_attachment.eml"))
    assert [a.filename for a in named.attachments] == ["てすと.txt"]
    utf8 = parse(corpus("mikel-mail/rfc6532/utf8_headers.eml"))
    assert (utf8.sender, utf8.sender_name, utf8.to) == (
        "jdöe@mächine.example",
        "Jöhn Doe",
        ("märy@exämple.net",),
    )


def test_a_message_rfc822_part_is_one_attachment_that_parses_on_its_own() -> None:
    raw = corpus("mikel-mail/attachment_emails/attachment_message_rfc822.eml")
    parsed = parse(raw)
    assert parsed.body_text == "This is the first part.\n"
    (enclosed,) = parsed.attachments
    assert (enclosed.content_type, enclosed.filename) == ("message/rfc822", "ForwardedMessage.eml")
    found = attachment(raw, enclosed.attachment_id)
    assert found is not None
    assert parse(found[1]).subject == "Another PDF"


def test_a_delivery_status_report_keeps_its_machine_parts_as_attachments() -> None:
    parsed = parse(corpus("flanker/bounce/zed.eml"))
    assert parsed.body_text.startswith("This is the mail system at host mail.example.com.")
    assert [a.content_type for a in parsed.attachments] == [
        "message/delivery-status",
        "message/rfc822",
    ]


def test_the_210_kb_header_is_stored_capped() -> None:
    raw = corpus("flanker/long-header.eml")
    parsed = parse(raw)
    assert parsed.subject.startswith(
        "Die heiße Zypernsonne quälte Max und Victoria ja böse auf dem Weg bis zur Küste"
    )
    limit = Limits().max_stored_header_chars
    assert len(parsed.subject) <= limit
    assert all(len(value) <= limit for _, value in parsed.headers)
    assert (parsed.sender, parsed.to) == ("bob@example.com", ("helen@example.com",))
    with pytest.raises(Refused) as refused:
        parse(raw, Limits(max_header_field_size=100_000))
    assert (refused.value.code, refused.value.text) == (554, "5.6.0 header field too long")


def test_the_torture_message() -> None:
    parsed = parse(corpus("flanker/torture.eml"))
    assert (parsed.sender, parsed.sender_name) == ("mrc@CAC.Washington.EDU", "Mark Crispin")
    assert parsed.body_text.startswith("This is a demonstration of multi-part mail")
    kinds = [a.content_type for a in parsed.attachments]
    assert len(kinds) == 11
    assert kinds.count("message/rfc822") == 8
    assert {"audio/basic", "image/pbm", "image/gif"} <= set(kinds)
    assert [a.attachment_id for a in parsed.attachments][:2] == ["att_2", "att_3"]


def test_comments_groups_and_folded_dates_of_rfc_5322_appendix_a() -> None:
    parsed = parse(corpus("mikel-mail/rfc2822/example10.eml"))
    assert (parsed.sender, parsed.sender_name) == ("pete@silly.test", "Pete")
    assert parsed.to == ("c@public.example", "joe@example.org", "jdoe@one.test")
    assert parsed.cc == ()
    assert parsed.defects == ()


def test_8_bit_header_bytes_that_are_not_utf8_become_text_and_a_defect() -> None:
    parsed = parse(corpus("flanker/mailformed-headers.eml"))
    assert parsed.sender == "headers@gmail.com"
    assert "NonUTF8HeaderBytes: subject" in parsed.defects


# --- headers, decoding and defects -------------------------------------------------------


def test_headers_are_unfolded_decoded_and_in_order() -> None:
    raw = mail(
        "From: =?iso-8859-1?q?J=F6rg?= <j@x.example>\n"
        "To: a@x.example,\n  b@x.example\n"
        "Subject: =?utf-8?q?caf=C3?= =?utf-8?q?=A9?= ok\n"
        "Message-ID: <id@x.example>\n"
        "In-Reply-To: <p@x.example>\n"
        "References: <r@x.example>\n <p@x.example>\n"
    )
    parsed = parse(raw)
    assert (parsed.sender, parsed.sender_name) == ("j@x.example", "Jörg")
    assert parsed.to == ("a@x.example", "b@x.example")
    assert parsed.subject == "café ok"  # a character split across two words survives
    assert (parsed.message_id, parsed.in_reply_to) == ("<id@x.example>", "<p@x.example>")
    assert parsed.references == ("<r@x.example>", "<p@x.example>")
    assert [name for name, _ in parsed.headers] == [
        "From",
        "To",
        "Subject",
        "Message-ID",
        "In-Reply-To",
        "References",
    ]
    assert dict(parsed.headers)["To"] == "a@x.example,  b@x.example"
    assert parsed.defects == ()


def test_damage_becomes_text_and_defects() -> None:
    raw = mail(
        "From: Nobody <not an address>, ok@x.example\n"
        "Subject: =?x-unknown?q?abc?= =?utf-8?b?!!!?=\n"
        "Content-Type: text/plain; charset=x-mystery\n"
        "Content-Transfer-Encoding: base64\n",
        "aGVsbG8gd29ybGQ\r\n",
    )
    parsed = parse(raw)
    assert parsed.sender == "ok@x.example"
    assert parsed.body_text == "hello world"
    assert "UnparsableAddress: from" in parsed.defects
    assert "UnknownCharset: x-mystery" in parsed.defects
    assert "UnknownCharset: x-unknown" in parsed.defects
    assert "InvalidBase64PaddingDefect" in parsed.defects
    assert parsed.subject.startswith("abc")


def test_html_only_mail_gets_a_plain_text_rendering() -> None:
    raw = mail(
        "From: a@x.example\nContent-Type: text/html; charset=utf-8\n",
        "<html><head><style>p {color: red}</style><title>T</title></head><body>"
        "<p>Hello&nbsp;<b>there</b></p><!-- hidden --><script>alert(1)</script>"
        "<div>Caf&eacute; &lt;ok&gt;</div></body></html>\r\n",
    )
    parsed = parse(raw)
    assert parsed.body_html is not None
    assert parsed.body_text == "Hello there\n\nCafé <ok>"
    assert html_to_text("<p>a</p><p>b</p>", limit=8) == ("a", True)


def test_a_second_inline_text_part_is_an_attachment_and_ids_follow_the_walk() -> None:
    raw = mail(
        'From: a@x.example\nContent-Type: multipart/mixed; boundary="b"\n',
        "--b\r\nContent-Type: multipart/alternative; boundary=c\r\n\r\n"
        "--c\r\n\r\nplain\r\n--c\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--c--\r\n"
        "--b\r\nContent-Type: text/plain\r\n\r\nsecond\r\n"
        "--b\r\nContent-Type: image/png; name=x.png\r\nContent-Transfer-Encoding: base64\r\n"
        "Content-ID: <img1>\r\n\r\niVBORw==\r\n--b--\r\n",
    )
    parsed = parse(raw)
    assert (parsed.body_text, parsed.body_html) == ("plain", "<p>html</p>")
    assert [(a.attachment_id, a.content_type, a.filename) for a in parsed.attachments] == [
        ("att_4", "text/plain", None),
        ("att_5", "image/png", "x.png"),
    ]
    assert parsed.attachments[1].content_id == "<img1>"
    found = attachment(raw, "att_5")
    assert found is not None
    assert found[1] == b"\x89PNG"
    assert attachment(raw, "att_2") is None  # the text body is not an attachment
    assert attachment(raw, "att_99") is None


def test_rfc_2231_filenames_and_path_segments() -> None:
    raw = mail(
        'From: a@x.example\nContent-Type: multipart/mixed; boundary="b"\n',
        "--b\r\nContent-Type: application/octet-stream\r\n"
        "Content-Disposition: attachment; filename*0*=utf-8''caf%C3%A9; filename*1=\".txt\"\r\n"
        '\r\nx\r\n--b\r\nContent-Type: application/octet-stream; name="../../etc/passwd"\r\n'
        "\r\ny\r\n--b--\r\n",
    )
    assert [a.filename for a in parse(raw).attachments] == ["café.txt", "passwd"]


# --- limits --------------------------------------------------------------------------------


def nested_multiparts(levels: int) -> bytes:
    opening = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
        for i in range(levels)
    )
    return b"From: a@x.example\r\n" + opening + b"\r\ninnermost\r\n"


def test_50k_nested_multiparts_stop_at_the_depth_limit() -> None:
    parsed = parse(nested_multiparts(50_000))
    assert "NestingTooDeep" in parsed.defects
    (opaque,) = parsed.attachments
    assert opaque.content_type == "multipart/mixed"
    assert opaque.attachment_id == f"att_{Limits().max_depth}"


def test_the_depth_limit_is_a_parameter() -> None:
    assert "NestingTooDeep" not in parse(nested_multiparts(5)).defects
    assert "NestingTooDeep" in parse(nested_multiparts(5), Limits(max_depth=3)).defects


def test_deeply_nested_message_rfc822_is_one_attachment() -> None:
    raw = b"Content-Type: message/rfc822\r\n\r\n" * 50_000 + b"hi\r\n"
    parsed = parse(raw)
    (enclosed,) = parsed.attachments
    assert enclosed.content_type == "message/rfc822"
    assert enclosed.size == len(raw) - len(b"Content-Type: message/rfc822\r\n\r\n")


def test_the_part_limit_drops_the_rest_with_a_defect() -> None:
    raw = mail(
        "Content-Type: multipart/mixed; boundary=b\n",
        "".join(f"--b\r\nContent-Type: application/x-{i}\r\n\r\n{i}\r\n" for i in range(20))
        + "--b--\r\n",
    )
    assert len(parse(raw).attachments) == 20
    capped = parse(raw, Limits(max_parts=6))
    assert "TooManyParts" in capped.defects
    assert [a.content_type for a in capped.attachments] == [f"application/x-{i}" for i in range(5)]


def test_size_and_header_count_limits_refuse() -> None:
    with pytest.raises(Refused) as too_big:
        parse(b"x" * 101, Limits(max_size=100))
    assert (too_big.value.code, too_big.value.text.split()[0]) == (552, "5.3.4")
    many = "".join(f"X-H{i}: v\n" for i in range(11))
    with pytest.raises(Refused) as too_many:
        parse(mail(many), Limits(max_header_fields=10))
    assert (too_many.value.code, too_many.value.text) == (554, "5.6.0 too many header fields")
    assert parse(mail(many), Limits(max_header_fields=11)).headers[-1] == ("X-H10", "v")


def test_missing_boundaries_are_defects() -> None:
    unclosed = parse(mail("Content-Type: multipart/mixed; boundary=b\n", "--b\r\n\r\ntext\r\n"))
    assert unclosed.body_text == "text\r\n".replace("\r\n", "\n")
    assert "CloseBoundaryNotFoundDefect" in unclosed.defects
    absent = parse(mail("Content-Type: multipart/mixed; boundary=b\n", "just text\r\n"))
    assert (absent.body_text, absent.defects) == ("just text\n", ("StartBoundaryNotFoundDefect",))


# --- never anything but Refused ----------------------------------------------------------

FRAGMENTS = st.sampled_from(
    [
        b"\r\n",
        b"\n",
        b"\r",
        b" ",
        b"From: ",
        b"To: ",
        b"Subject: ",
        b"Content-Type: multipart/mixed; boundary=b\r\n",
        b"Content-Type: message/rfc822\r\n",
        b"Content-Type: text/html; charset=",
        b"Content-Transfer-Encoding: base64\r\n",
        b"Content-Transfer-Encoding: quoted-printable\r\n",
        b"Content-Disposition: attachment; filename*0*=utf-8''%C3; filename*1=x\r\n",
        b"--b\r\n",
        b"--b--\r\n",
        b"=?utf-8?b?",
        b"=?x?q?=C3?=",
        b"?=",
        b'"',
        b"(",
        b")",
        b"<",
        b">",
        b",",
        b":",
        b";",
        b"@",
        b"\\",
        b"<p>&amp;",
        b"\xc3",
        b"\xff",
    ]
)
MESSAGES = st.lists(FRAGMENTS | st.binary(max_size=8), max_size=60).map(b"".join)


@given(st.binary(max_size=2000))
def test_random_bytes_always_parse(raw: bytes) -> None:
    no_internal_error(parse(raw))


@given(MESSAGES)
def test_mime_shaped_garbage_parses_and_attachments_come_back(raw: bytes) -> None:
    parsed = parse(raw)
    no_internal_error(parsed)
    for listed in parsed.attachments:
        found = attachment(raw, listed.attachment_id)
        assert found is not None
        assert hashlib.sha256(found[1]).hexdigest() == listed.sha256


@given(MESSAGES)
def test_limits_refuse_cleanly(raw: bytes) -> None:
    small = Limits(max_size=200, max_depth=2, max_parts=3, max_header_fields=3)
    try:
        no_internal_error(parse(raw, small))
    except Refused as refused:
        reply = (refused.code, refused.text[:5])
    else:
        return
    assert reply in {(552, "5.3.4"), (554, "5.6.0")}


# --- has_bare_line_endings ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "bare"),
    [
        (b"", False),
        (b"no line ending", False),
        (b"a\r\nb\r\n", False),
        (b"\r\n\r\n.\r\n", False),
        (b"a\nb", True),
        (b"a\rb", True),
        (b"a\r\r\n", True),
        (b"a\r\n\n", True),
        (b"\n", True),
        (b"\r", True),
        (b"a\r\nb\r", True),
        (b"\na\r\n", True),
        (b"a\n\r", True),
    ],
)
def test_bare_line_endings(data: bytes, bare: bool) -> None:
    assert has_bare_line_endings(data) is bare


def bare_by_walking(data: bytes) -> bool:
    for i, byte in enumerate(data):
        if byte == 13 and data[i + 1 : i + 2] != b"\n":
            return True
        if byte == 10 and (i == 0 or data[i - 1] != 13):
            return True
    return False


@given(st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b"."])).map(b"".join))
def test_bare_line_endings_agree_with_a_byte_walk(data: bytes) -> None:
    assert has_bare_line_endings(data) is bare_by_walking(data)


# --- compose -------------------------------------------------------------------------------

WHEN = 1_700_000_000_000


def message(**overrides: object) -> bytes:
    fields: dict[str, object] = {
        "sender": "agent@acme.example",
        "display_name": "Support agent",
        "to": ["bob@example.com"],
        "cc": [],
        "subject": "Your order",
        "body_text": "It ships tomorrow.\n",
        "body_html": None,
        "message_id": "<m1@acme.example>",
        "date": WHEN,
        "in_reply_to": None,
        "references": [],
    }
    fields.update(overrides)
    return compose(**fields)  # type: ignore[arg-type]


def test_a_plain_message_byte_for_byte() -> None:
    assert message() == (
        b'From: "Support agent" <agent@acme.example>\r\n'
        b"To: bob@example.com\r\n"
        b"Subject: Your order\r\n"
        b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
        b"Message-ID: <m1@acme.example>\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: text/plain; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: 7bit\r\n"
        b"\r\n"
        b"It ships tomorrow.\r\n"
    )


def test_dates_as_datetimes_keep_their_offset_and_naive_ones_are_refused() -> None:
    plus_two = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert b"Date: Tue, 02 Jan 2024 03:04:05 +0200\r\n" in message(date=plus_two)
    assert message(date=datetime.fromtimestamp(WHEN / 1000, tz=UTC)) == message()
    with pytest.raises(ValueError, match="naive"):
        message(date=datetime(2024, 1, 2))


def test_html_makes_a_deterministic_7bit_multipart_alternative() -> None:
    raw = message(body_text="héllo\n" + "x" * 2000, body_html="<p>h\u00e9llo</p>")
    assert raw == message(body_text="héllo\n" + "x" * 2000, body_html="<p>h\u00e9llo</p>")
    assert raw.isascii()
    assert b"Content-Type: multipart/alternative" in raw
    assert b"Bcc" not in raw
    assert not has_bare_line_endings(raw)
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert raw != message(
        body_text="héllo\n" + "x" * 2000, body_html="<p>h\u00e9llo</p>", message_id="<m2@x>"
    )


def test_the_stdlib_reads_composed_mail_the_same_way() -> None:
    raw = message(
        display_name='Zoë, the "agent"',
        to=["bob@example.com", "carol@example.com"],
        subject="Grüße — " + "a long subject that has to be folded " * 3,
        body_text="Größe: 10\n" + "word " * 300,
        body_html="<p>Größe</p>",
        references=["<r1@x.example>", "<r2@x.example>"],
    )
    theirs = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(theirs, EmailMessage)
    ours = parse(raw)
    assert str(theirs["Subject"]) == ours.subject + " "  # the trailing space is theirs to keep
    assert theirs["From"].addresses[0].display_name == ours.sender_name == 'Zoë, the "agent"'
    assert [a.addr_spec for a in theirs["To"].addresses] == list(ours.to)
    plain, html_part = theirs.get_body(("plain",)), theirs.get_body(("html",))
    assert plain is not None
    assert html_part is not None
    assert plain.get_content().replace("\r\n", "\n") == ours.body_text  # we store LF
    assert html_part.get_content().replace("\r\n", "\n") == ours.body_html
    assert theirs.defects == []


def test_a_body_that_contains_the_boundary_is_still_one_part() -> None:
    boundary = message(body_html="<p/>").split(b'boundary="')[1].split(b'"')[0].decode()
    raw = message(body_text=f"--{boundary}--\n", body_html="<p/>")
    assert parse(raw).body_text == f"--{boundary}--\n"


@pytest.mark.parametrize(
    "overrides",
    [
        {"subject": "Hi\r\nBcc: victim@example.com"},
        {"subject": "Hi\nthere"},
        {"display_name": "Eve\r\nBcc: x@example.com"},
        {"to": ["bob@example.com\r\nBcc: x@example.com"]},
        {"cc": ["bob@example.com>, <x@example.com"]},
        {"sender": "agent@acme.example\n"},
        {"message_id": "<m1@acme.example>\r\nBcc: x@example.com"},
        {"in_reply_to": "<p@x>\nBcc: x@example.com"},
        {"references": ["<r@x>\r\n"]},
        {"extra_headers": [("X-Tag", "a\r\nBcc: x@example.com")]},
        {"extra_headers": [("Bcc", "x@example.com")]},
        {"extra_headers": [("X-Bad Name", "v")]},
        {"extra_headers": [("X-Bad\r\nName", "v")]},
        {"to": ["bøb@example.com"]},
        {"extra_headers": [("X-Long", "x" * 1000)]},
    ],
)
def test_compose_refuses_header_injection_and_bad_fields(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - every one of these is the same refusal
        message(**overrides)


NAMES = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=120)
LOCAL = st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,15}", fullmatch=True).filter(lambda s: ".." not in s)
ADDRESSES = st.builds(lambda local, domain: f"{local}@{domain}.example", LOCAL, LOCAL)
IDS = st.builds(lambda a, b: f"<{a}@{b}>", LOCAL, LOCAL)
BODIES = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)


def normalized(body: str) -> str:
    body = body.replace("\r\n", "\n").replace("\r", "\n")
    return body if not body or body.endswith("\n") else body + "\n"


@given(
    sender=ADDRESSES,
    name=NAMES,
    to=st.lists(ADDRESSES, min_size=1, max_size=4),
    cc=st.lists(ADDRESSES, max_size=3),
    subject=NAMES,
    text=BODIES,
    html=st.none() | BODIES,
    message_id=IDS,
    in_reply_to=st.none() | IDS,
    references=st.lists(IDS, max_size=5),
)
def test_compose_then_parse_gives_back_what_went_in(
    sender: str,
    name: str,
    to: list[str],
    cc: list[str],
    subject: str,
    text: str,
    html: str | None,
    message_id: str,
    in_reply_to: str | None,
    references: list[str],
) -> None:
    raw = compose(
        sender=sender,
        display_name=name,
        to=to,
        cc=cc,
        subject=subject,
        body_text=text,
        body_html=html,
        message_id=message_id,
        date=WHEN,
        in_reply_to=in_reply_to,
        references=references,
        extra_headers=[("X-AI-Generated", "true")],
    )
    assert raw.isascii()
    assert not has_bare_line_endings(raw)
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    parsed = parse(raw)
    assert (parsed.sender, parsed.sender_name) == (sender, " ".join(name.split()))
    assert (parsed.to, parsed.cc) == (tuple(to), tuple(cc))
    assert parsed.subject == subject.strip()
    assert parsed.body_text == normalized(text)
    assert parsed.body_html == (None if html is None else normalized(html))
    assert (parsed.message_id, parsed.in_reply_to) == (message_id, in_reply_to)
    assert parsed.references == tuple(references)
    assert ("X-AI-Generated", "true") in parsed.headers
    assert parsed.attachments == ()
    assert parsed.defects == ()
