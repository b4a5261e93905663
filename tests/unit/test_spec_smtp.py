"""spec/smtp.toml against the code: every SMTP reply the server composes, the parser's
refusals and the limits (PRODUCT.md §6)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from multimail import mime, smtp_in
from multimail.mailflow import SMTP_REPLIES
from multimail.smtp_in import MAX_SIZE
from multimail_core import delivery

SPEC = tomllib.loads((Path(__file__).parents[2] / "spec" / "smtp.toml").read_text())


def test_the_reply_table_names_the_same_replies():
    assert set(SPEC["replies"]) == set(SMTP_REPLIES)


@pytest.mark.parametrize("name", sorted(SPEC["replies"]))
def test_each_reply_has_the_specified_code_and_enhanced_status(name):
    code, enhanced = SPEC["replies"][name]
    got_code, text = SMTP_REPLIES[name]
    assert got_code == code
    assert text.split()[0] == enhanced
    assert str(code)[0] == enhanced[0], "basic and enhanced class agree (RFC 3463)"


def test_the_parser_refuses_oversize_as_specified():
    code, enhanced = SPEC["refusals_by_the_parser"]["too_big"]
    limits = mime.Limits(max_size=1000)
    with pytest.raises(mime.Refused) as exc:
        mime.parse(b"Subject: x\r\n\r\n" + b"y" * 1000, limits)
    assert (exc.value.code, exc.value.text.split()[0]) == (code, enhanced)


def test_the_parser_refuses_header_floods_as_specified():
    code, enhanced = SPEC["refusals_by_the_parser"]["header_limits"]
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(SPEC["limits"]["max_header_fields"] + 1))
    with pytest.raises(mime.Refused) as exc:
        mime.parse(many + b"\r\nbody\r\n")
    assert (exc.value.code, exc.value.text.split()[0]) == (code, enhanced)
    long_field = b"X-Long: " + b"a" * SPEC["limits"]["max_header_field_bytes"] + b"\r\n\r\nb\r\n"
    with pytest.raises(mime.Refused) as exc:
        mime.parse(long_field)
    assert (exc.value.code, exc.value.text.split()[0]) == (code, enhanced)


def test_the_limits_are_the_specified_ones():
    limits = SPEC["limits"]
    defaults = mime.Limits()
    assert MAX_SIZE == limits["max_size_bytes"] == defaults.max_size
    assert defaults.max_depth == limits["max_depth"]
    assert defaults.max_parts == limits["max_parts"]
    assert defaults.max_header_fields == limits["max_header_fields"]
    assert defaults.max_header_field_size == limits["max_header_field_bytes"]
    assert limits["hop_limit"] == delivery.HOP_LIMIT
    assert limits["received_limit"] == delivery.RECEIVED_LIMIT
    assert limits["max_recipients"] == smtp_in.MAX_RCPTS
    assert limits["max_sessions"] == smtp_in.MAX_SESSIONS
    assert limits["session_timeout_seconds"] == smtp_in.SESSION_TIMEOUT


@pytest.mark.parametrize(
    ("hops", "received", "loop"),
    [(0, 0, False), (19, 49, False), (20, 0, True), (0, 50, True)],
)
def test_loop_limits_are_inclusive_at_the_stated_numbers(hops, received, loop):
    assert delivery.loop_suspected(hops, received) is loop


def test_server_mail_table():
    from multimail_core import mailqueue

    table = SPEC["server_mail"]
    assert table["statuses"] == [s.value for s in mailqueue.Status]
    assert sorted(table["due"]) == sorted(s.value for s in mailqueue.DUE)
    assert table["purposes"] == [p.value for p in mailqueue.Purpose]
    assert sorted(table["never_resent_after_a_crash"]) == sorted(
        p.value for p in mailqueue.AT_MOST_ONCE
    )
    for purpose in mailqueue.Purpose:
        crashed = mailqueue.after_crash(purpose)
        resent = purpose.value not in table["never_resent_after_a_crash"]
        assert (crashed is mailqueue.Status.DEFERRED) == resent
