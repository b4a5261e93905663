"""Properties of delivery classification and retry timing: totality, monotone schedules, bounds."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from multimail_core.delivery import (
    DELIVERY_SCHEDULE,
    JITTER_DRAW_MAX,
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

codes = st.integers(0, 999)
enhanced = st.tuples(st.sampled_from([2, 4, 5]), st.integers(0, 999), st.integers(0, 999))
reply_texts = st.one_of(
    st.text(),
    st.builds(lambda e, rest: f"{e[0]}.{e[1]}.{e[2]} {rest}", enhanced, st.text()),
)


@given(codes, reply_texts)
@example(550, "4.7.1 greylisted")
@example(250, "\x00")
def test_classify_reply_is_total(code: int, text: str) -> None:
    assert isinstance(classify_reply(code, text), ReplyClass)


def test_every_code_without_enhanced_text_follows_its_first_digit() -> None:
    by_digit = {2: ReplyClass.ACCEPTED, 4: ReplyClass.TRANSIENT, 5: ReplyClass.PERMANENT}
    for code in range(1_000):
        expected = by_digit.get(code // 100, ReplyClass.TRANSIENT)
        assert classify_reply(code) is expected, code


@given(codes, reply_texts)
def test_only_a_2xx_is_ever_accepted(code: int, text: str) -> None:
    if classify_reply(code, text) is ReplyClass.ACCEPTED:
        assert 200 <= code <= 299


@given(st.sampled_from([4, 5]), st.integers(400, 599), st.integers(0, 999), st.integers(0, 999))
def test_between_failures_the_enhanced_class_decides(
    cls: int, code: int, subject: int, detail: int
) -> None:
    expected = ReplyClass.TRANSIENT if cls == 4 else ReplyClass.PERMANENT
    assert classify_reply(code, f"{cls}.{subject}.{detail} text") is expected


@given(st.text())
def test_parse_enhanced_is_total(text: str) -> None:
    parsed = parse_enhanced(text)
    if parsed is not None:
        assert parsed[0] in (2, 4, 5)
        assert 0 <= parsed[1] <= 999
        assert 0 <= parsed[2] <= 999


@given(enhanced, st.sampled_from(["", " ", "  x", "\tx", "\nsecond line"]))
def test_parse_enhanced_reads_what_a_server_writes(e: tuple[int, int, int], rest: str) -> None:
    assert parse_enhanced(f"{e[0]}.{e[1]}.{e[2]}{rest}") == e


# --- schedules ---------------------------------------------------------------------------


@given(st.integers(1, 40))
def test_delivery_schedule_is_positive_monotone_and_finite(attempt: int) -> None:
    delay = delivery_retry_delay(attempt)
    assert (delay is None) == (attempt > len(DELIVERY_SCHEDULE))
    if delay is not None:
        assert delay > 0
        previous = delivery_retry_delay(attempt - 1) if attempt > 1 else None
        assert previous is None or previous <= delay


@given(st.integers(1, 40))
def test_webhook_schedule_is_positive_monotone_and_finite(attempt: int) -> None:
    delay = webhook_retry_delay(attempt)
    assert (delay is None) == (attempt > len(WEBHOOK_SCHEDULE))
    if delay is not None:
        assert delay > 0
        previous = webhook_retry_delay(attempt - 1) if attempt > 1 else None
        assert previous is None or previous <= delay


# --- jitter and Retry-After ----------------------------------------------------------------


@given(st.integers(0, 10**9), st.integers(0, JITTER_DRAW_MAX))
def test_jitter_stays_within_twenty_percent(delay: int, draw: int) -> None:
    jittered = with_jitter(delay, draw)
    assert 4 * delay <= 5 * jittered <= 6 * delay  # 0.8 x .. 1.2 x, exactly
    assert delay == 0 or jittered >= 1


@given(st.integers(0, 10**9), st.integers(0, JITTER_DRAW_MAX - 1))
def test_jitter_grows_with_the_draw(delay: int, draw: int) -> None:
    assert with_jitter(delay, draw) <= with_jitter(delay, draw + 1)


@given(
    st.integers(0, 10**6),
    st.one_of(st.none(), st.integers(0, 10**8)),
    st.integers(0, 10**6),
)
def test_retry_after_only_delays_and_is_capped(
    scheduled: int, retry_after: int | None, cap: int
) -> None:
    delay = honour_retry_after(scheduled, retry_after, cap=cap)
    assert delay >= scheduled
    assert delay <= max(scheduled, cap)
    if retry_after is not None:
        assert delay >= min(retry_after, cap)


@given(st.integers(0, 2**45), st.integers(0, 10**7))
def test_next_attempt_is_in_the_future_by_the_delay(now: int, delay: int) -> None:
    assert next_attempt_at(now, delay) == now + 1_000 * delay
