"""Composing mail with attachments (mime.compose, PRODUCT §5): multipart/mixed, the body
first, each file base64 in 76-character lines with its name quoted in ASCII and, when it is
not plain ASCII, in RFC 2231 form; our parser and the stdlib read back the same names, types
and bytes under the ids ``composed_attachment_ids`` promises."""

from __future__ import annotations

import email
import email.policy
import hashlib
from email.message import EmailMessage

import pytest
from hypothesis import given
from hypothesis import strategies as st

from multimail.mime import (
    attachment,
    compose,
    composed_attachment_ids,
    filename_problem,
    has_bare_line_endings,
    media_type_problem,
    parse,
)

WHEN = 1_700_000_000_000
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 3


def message(**overrides: object) -> bytes:
    fields: dict[str, object] = {
        "sender": "agent@acme.example",
        "display_name": "Support agent",
        "to": ["bob@example.com"],
        "cc": [],
        "subject": "Your invoice",
        "body_text": "Attached.\n",
        "body_html": None,
        "message_id": "<m1@acme.example>",
        "date": WHEN,
        "in_reply_to": None,
        "references": [],
    }
    fields.update(overrides)
    return compose(**fields)  # type: ignore[arg-type]


def test_the_html_alternative_without_attachments_is_byte_for_byte_what_it_was() -> None:
    raw = message(body_html="<p>Attached.</p>")
    assert raw == message(body_html="<p>Attached.</p>", attachments=())
    boundary = "=_mm_" + hashlib.sha256(b"<m1@acme.example>").hexdigest()[:32]
    assert raw.endswith(
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: multipart/alternative;\r\n"
        b' boundary="' + boundary.encode() + b'"\r\n'
        b"\r\n"
        b"--" + boundary.encode() + b"\r\n"
        b'Content-Type: text/plain; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: 7bit\r\n"
        b"\r\n"
        b"Attached.\r\n"
        b"\r\n"
        b"--" + boundary.encode() + b"\r\n"
        b'Content-Type: text/html; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: 7bit\r\n"
        b"\r\n"
        b"<p>Attached.</p>\r\n"
        b"\r\n"
        b"--" + boundary.encode() + b"--\r\n"
    )


def test_a_plain_message_with_one_file_byte_for_byte() -> None:
    raw = message(attachments=[("invoice.pdf", "application/pdf", b"%PDF-1.7 tiny")])
    mixed = "=_mmx_" + hashlib.sha256(b"<m1@acme.example>").hexdigest()[:32]
    assert raw.endswith(
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed;\r\n"
        b' boundary="' + mixed.encode() + b'"\r\n'
        b"\r\n"
        b"--" + mixed.encode() + b"\r\n"
        b'Content-Type: text/plain; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: 7bit\r\n"
        b"\r\n"
        b"Attached.\r\n"
        b"\r\n"
        b"--" + mixed.encode() + b"\r\n"
        b'Content-Type: application/pdf; name="invoice.pdf"\r\n'
        b'Content-Disposition: attachment; filename="invoice.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n"
        b"JVBERi0xLjcgdGlueQ==\r\n"
        b"\r\n"
        b"--" + mixed.encode() + b"--\r\n"
    )


def test_base64_lines_are_76_characters_and_the_body_comes_first() -> None:
    raw = message(body_html="<p>Attached.</p>", attachments=[("a.pdf", "application/pdf", PDF)])
    assert raw.isascii()
    assert not has_bare_line_endings(raw)
    start = raw.index(b"Content-Transfer-Encoding: base64\r\n\r\n") + 37
    lines = raw[start:].split(b"\r\n\r\n--")[0].split(b"\r\n")
    assert {len(line) for line in lines[:-1]} == {76}
    assert 0 < len(lines[-1]) <= 76
    assert raw.index(b"multipart/alternative") < raw.index(b"application/pdf")


def test_a_non_ascii_name_has_a_quoted_ascii_fallback_and_an_rfc_2231_form() -> None:
    raw = message(attachments=[("Résumé 2024.pdf", "application/pdf", b"x")])
    assert b'filename="Resume 2024.pdf"' in raw
    assert b"filename*=utf-8''R%C3%A9sum%C3%A9%202024.pdf" in raw
    assert b'name="Resume 2024.pdf"' in raw
    assert b"name*=utf-8''R%C3%A9sum%C3%A9%202024.pdf" in raw
    [found] = parse(raw).attachments
    assert found.filename == "Résumé 2024.pdf"


def test_a_long_non_ascii_name_is_split_into_rfc_2231_sections() -> None:
    name = "報告書" * 80 + ".txt"
    raw = message(attachments=[(name, "text/plain", b"hello\n")])
    assert b"filename*0*=utf-8''" in raw
    assert b"filename*1*=" in raw
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    [found] = parse(raw).attachments
    assert found.filename == name
    assert attachment(raw, found.attachment_id) == (found, b"hello\n")


def test_a_name_that_looks_like_an_encoded_word_comes_back_as_written() -> None:
    name = "=?utf-8?q?evil?=.txt"
    raw = message(attachments=[(name, "text/plain", b"")])
    [found] = parse(raw).attachments
    assert found.filename == name
    assert found.size == 0


def test_a_text_attachment_is_never_taken_for_the_body() -> None:
    raw = message(body_text="", attachments=[("notes.txt", "text/plain", b"not the body\n")])
    parsed = parse(raw)
    assert parsed.body_text == ""
    assert [a.filename for a in parsed.attachments] == ["notes.txt"]


def test_a_body_holding_the_mixed_boundary_stays_one_part() -> None:
    mixed = "=_mmx_" + hashlib.sha256(b"<m1@acme.example>").hexdigest()[:32]
    text = f"--{mixed}\nContent-Type: text/plain\n\nsmuggled\n--{mixed}--\n"
    raw = message(body_text=text, attachments=[("a.bin", "application/octet-stream", b"\x00")])
    parsed = parse(raw)
    assert parsed.body_text == text
    assert [a.filename for a in parsed.attachments] == ["a.bin"]


@pytest.mark.parametrize(
    ("filename", "media_type"),
    [
        ("", "text/plain"),
        ("x" * 256, "text/plain"),
        ("a\r\nContent-Type: text/html", "text/plain"),
        ("a\x00b", "text/plain"),
        ("tab\there", "text/plain"),
        ("\x85next-line", "text/plain"),
        ("line\u2028separator", "text/plain"),
        ("invoice\u202efdp.exe", "text/plain"),
        ("../../etc/passwd", "text/plain"),
        ("dir\\file", "text/plain"),
        (" padded.txt", "text/plain"),
        ("padded.txt ", "text/plain"),
        ("..", "text/plain"),
        ("ok.txt", "text/plain; charset=utf-8"),
        ("ok.txt", "text/plain\r\nX-Injected: 1"),
        ("ok.txt", "text"),
        ("ok.txt", "text/"),
        ("ok.txt", "te xt/plain"),
        ("ok.txt", "multipart/mixed"),
        ("ok.txt", "message/rfc822"),
        ("ok.txt", "a/" + "b" * 300),
    ],
)
def test_compose_refuses_bad_names_and_types(filename: str, media_type: str) -> None:
    assert filename_problem(filename) is not None or media_type_problem(media_type) is not None
    with pytest.raises(ValueError, match="attachment"):
        message(attachments=[(filename, media_type, b"x")])


def test_what_the_api_accepts_compose_takes() -> None:
    assert filename_problem("Quarterly report (final) — v2.pdf") is None
    assert filename_problem("a" * 255) is None
    assert media_type_problem("Application/VND.ms-Excel") is None
    assert media_type_problem("image/svg+xml") is None


def test_the_stdlib_reads_the_same_files() -> None:
    files = [
        ("Résumé.pdf", "application/pdf", PDF),
        ("報告.txt", "text/plain", "größe\n".encode()),
        ('say "hi"; ok.bin', "application/octet-stream", b""),
    ]
    raw = message(body_html="<p>x</p>", attachments=files)
    theirs = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(theirs, EmailMessage)
    found = [(p.get_filename(), p.get_content_type(), p.get_payload(decode=True))
             for p in theirs.iter_attachments()]  # fmt: skip
    assert found == files
    assert theirs.defects == []
    assert all(not p.defects for p in theirs.walk())


FILENAMES = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="/\\"),
    min_size=1,
    max_size=80,
).filter(lambda name: filename_problem(name) is None)
MEDIA_TYPES = st.sampled_from(
    ["application/octet-stream", "application/pdf", "text/plain", "text/html", "image/PNG",
     "application/vnd.openxmlformats-officedocument.wordprocessingml.document"]
)  # fmt: skip
FILES = st.lists(st.tuples(FILENAMES, MEDIA_TYPES, st.binary(max_size=600)), max_size=5)


@given(
    files=FILES,
    text=st.text(max_size=200),
    html=st.none() | st.text(max_size=200),
    message_id=st.from_regex(r"<[a-z0-9]{1,12}@[a-z]{1,8}\.example>", fullmatch=True),
)
def test_compose_then_parse_gives_back_every_file(
    files: list[tuple[str, str, bytes]], text: str, html: str | None, message_id: str
) -> None:
    raw = message(body_text=text, body_html=html, message_id=message_id, attachments=files)
    assert raw.isascii()
    assert not has_bare_line_endings(raw)
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    parsed = parse(raw)
    assert parsed.defects == ()
    assert parsed.body_text == message_body(text)
    assert parsed.body_html == (None if html is None else message_body(html))
    ids = composed_attachment_ids(len(files), alternative=html is not None)
    assert [a.attachment_id for a in parsed.attachments] == list(ids)
    for (name, media_type, data), listed in zip(files, parsed.attachments, strict=True):
        assert (listed.filename, listed.content_type) == (name, media_type.lower())
        assert (listed.size, listed.sha256) == (len(data), hashlib.sha256(data).hexdigest())
        assert attachment(raw, listed.attachment_id) == (listed, data)
    if not files:
        assert raw == message(body_text=text, body_html=html, message_id=message_id)


def message_body(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if not text or text.endswith("\n") else text + "\n"
