"""Scenarios for multimail_core.delivery: SMTP reply classes, retry schedules, jitter."""

from __future__ import annotations

import icontract
import pytest

from multimail_core.delivery import (
    DELIVERY_SCHEDULE,
    WEBHOOK_SCHEDULE,
    ReplyClass,
    classify_reply,
    delivery_retry_delay,
    honour_retry_after,
    next_attempt_at,
    parse_enhanced,
    webhook_retry_delay,
    with_jitter,
)

A, T, P = ReplyClass.ACCEPTED, ReplyClass.TRANSIENT, ReplyClass.PERMANENT
HOUR, DAY = 3_600, 86_400


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (250, "2.0.0 Ok: queued as 4F2A", A),
        (250, "", A),
        (251, "User not local; will forward", A),
        (450, "4.2.0 Mailbox temporarily unavailable", T),
        (452, "4.3.1 Insufficient system storage", T),
        (421, "", T),  # service not available, closing channel
        (421, "4.7.0 Try again later, closing connection", T),
        (550, "5.1.1 <nobody@example.com>: user unknown", P),
        (554, "5.7.1 Message rejected as spam", P),
        (552, "5.2.2 Mailbox full", P),  # the server said permanent: honour it
        (550, "", P),
        # RFC 2034 §4 wants the two to agree; when a server breaks that, the enhanced class
        # wins between the failure kinds (RFC 3463): greylisting MTAs send 550 4.x.x.
        (550, "4.7.1 Greylisted, please try again", T),
        (450, "5.1.1 user unknown", P),
        # Success and failure disagreeing: trust neither, retry.
        (250, "5.0.0 rejected after all", T),
        (550, "2.0.0 Ok", T),
        # Not a completion reply where one is due, or not SMTP at all: retry.
        (354, "End data with <CR><LF>.<CR><LF>", T),
        (199, "", T),
        (0, "", T),
        (600, "5.1.1 nonsense", T),
        (999, "", T),
        # A malformed enhanced code is ignored and the basic code decides.
        (550, "4.7 not an enhanced code", P),
        (550, "4.1234.1 too many digits", P),
        (550, "3.1.1 no such class", P),
    ],
)
def test_classify_reply(code: int, text: str, expected: ReplyClass) -> None:
    assert classify_reply(code, text) is expected


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("2.0.0 Ok", (2, 0, 0)),
        ("5.1.1", (5, 1, 1)),
        ("  4.7.26 spf fail", (4, 7, 26)),
        ("5.999.999 max", (5, 999, 999)),
        ("5.01.001 leading zeros", (5, 1, 1)),
        ("4.2.2\n4.2.2 second line", (4, 2, 2)),
        ("", None),
        ("Ok", None),
        ("5.1", None),
        ("5.1.1.1", None),
        ("6.1.1 bad class", None),
        ("5..1 empty subject", None),
        ("5.1.1000 four digits", None),
        ("5.².1 superscript", None),
        ("5.1.1x glued", None),
        ("user 5.1.1 not first", None),
    ],
)
def test_parse_enhanced(text: str, parsed: tuple[int, int, int] | None) -> None:
    assert parse_enhanced(text) == parsed


# --- schedules ---------------------------------------------------------------------------


def test_delivery_schedule_spans_about_five_days() -> None:
    total = sum(DELIVERY_SCHEDULE)
    assert 5 * DAY <= total <= 5.5 * DAY
    assert len(DELIVERY_SCHEDULE) + 1 == 14  # attempts in all


def test_delivery_retry_delays() -> None:
    assert delivery_retry_delay(1) == 60
    assert delivery_retry_delay(2) == 300
    assert delivery_retry_delay(13) == DAY
    assert delivery_retry_delay(14) is None  # the 14th attempt failed: the message fails


def test_webhook_schedule_follows_standard_webhooks() -> None:
    # Attempt 1 immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
    assert WEBHOOK_SCHEDULE == (5, 300, 1_800, 2 * HOUR, 5 * HOUR, 10 * HOUR, 10 * HOUR)
    assert 27 * HOUR <= sum(WEBHOOK_SCHEDULE) <= 28 * HOUR
    assert webhook_retry_delay(1) == 5
    assert webhook_retry_delay(7) == 10 * HOUR
    assert webhook_retry_delay(8) is None  # dead-lettered


def test_attempt_numbers_start_at_one() -> None:
    with pytest.raises(icontract.ViolationError, match="attempt"):
        delivery_retry_delay(0)


# --- jitter, Retry-After, timestamps -------------------------------------------------------


@pytest.mark.parametrize(
    ("draw", "expected"),
    [(0, 800), (250, 900), (500, 1000), (750, 1100), (1000, 1200)],
)
def test_jitter_spans_plus_minus_twenty_percent(draw: int, expected: int) -> None:
    assert with_jitter(1000, draw) == expected


def test_jitter_never_reaches_zero_for_a_positive_delay() -> None:
    assert with_jitter(1, 0) == 1
    assert with_jitter(5, 0) == 4


def test_retry_after_can_only_delay() -> None:
    assert honour_retry_after(300, None) == 300
    assert honour_retry_after(300, 60) == 300
    assert honour_retry_after(300, 3_600) == 3_600


def test_retry_after_is_capped_but_never_shortens_our_schedule() -> None:
    assert honour_retry_after(300, 10 * DAY) == DAY
    assert honour_retry_after(300, 10 * DAY, cap=HOUR) == HOUR
    assert honour_retry_after(2 * DAY, 10 * DAY) == 2 * DAY


def test_next_attempt_at_converts_seconds_to_milliseconds() -> None:
    assert next_attempt_at(1_700_000_000_000, 60) == 1_700_000_060_000
