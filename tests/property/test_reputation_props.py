"""Properties of the reputation math: P8 (bounds, monotonicity, independence), P13, P14."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from multimail_core.modes import LADDER, OversightMode, rank
from multimail_core.reputation import (
    DAY_MS,
    FORMULA,
    HARMFUL,
    THRESHOLDS,
    Counters,
    Enforcement,
    Fact,
    Outcome,
    approval_rate_bp,
    bounce_rate_bp,
    complaint_rate_bp,
    delivery_rate_bp,
    enforce,
    engagement_rate_bp,
    normalize_for_suppression,
    record,
    score,
    suggest_promotion,
    suppressed_recipients,
    tally,
    window,
)

NOW = 1_700_000_000_000
RATES = (bounce_rate_bp, complaint_rate_bp, delivery_rate_bp, engagement_rate_bp, approval_rate_bp)
SEVERITY = {Enforcement.NONE: 0, Enforcement.WARN: 1, Enforcement.DEMOTE: 2}

small = st.integers(0, 2_000)
counters = st.builds(Counters, *[st.one_of(small, st.integers(0, 10**9)) for _ in range(9)])
modes = st.sampled_from(LADDER)
outcomes = st.sampled_from(list(Outcome))
facts = st.lists(
    st.builds(Fact, outcomes, st.integers(NOW - 40 * DAY_MS, NOW + DAY_MS)), max_size=60
)


def plus(c: Counters, **more: int) -> Counters:
    return dataclasses.replace(c, **{k: getattr(c, k) + v for k, v in more.items()})


# --- bounds --------------------------------------------------------------------------------


@given(counters)
def test_rates_are_basis_points(c: Counters) -> None:
    for rate in RATES:
        assert 0 <= rate(c) <= 10_000


@given(counters)
def test_score_is_between_0_and_100(c: Counters) -> None:
    assert 0 <= score(c) <= 100


@given(counters)
def test_score_matches_the_published_formula_in_exact_arithmetic(c: Counters) -> None:
    f = FORMULA
    exact = Fraction(
        f.neutral * f.prior_sends
        + 100 * c.sent
        - f.bounce_weight * c.hard_bounced
        - f.complaint_weight * c.complaints,
        f.prior_sends + c.sent,
    )
    assert score(c) == min(100, max(0, math.floor(exact)))


# --- P8 monotonicity -------------------------------------------------------------------------


@given(counters)
def test_a_bounced_send_never_raises_the_score(c: Counters) -> None:
    assert score(plus(c, sent=1, hard_bounced=1)) <= score(c)
    assert score(plus(c, hard_bounced=1)) <= score(c)


@given(counters, st.integers(1, 500))
def test_complaints_never_raise_the_score(c: Counters, n: int) -> None:
    assert score(plus(c, complaints=n)) <= score(c)


@given(counters, st.integers(1, 500))
def test_delivered_sends_never_lower_the_score(c: Counters, n: int) -> None:
    assert score(plus(c, sent=n, delivered=n)) >= score(c)
    assert score(plus(c, delivered=n)) == score(c)


@given(counters, outcomes)
def test_each_fact_moves_the_score_the_right_way(c: Counters, outcome: Outcome) -> None:
    after = score(record(c, outcome))
    assert after <= score(c) if outcome in HARMFUL else after >= score(c)


@given(facts, outcomes)
def test_record_agrees_with_tally(fs: list[Fact], outcome: Outcome) -> None:
    assert record(tally(fs), outcome) == tally([*fs, Fact(outcome, 0)])


# --- P8 independence: a dict of per-mailbox fact logs, windowed one mailbox at a time --------


@given(
    st.dictionaries(st.sampled_from(["mbx_a", "mbx_b", "mbx_c"]), facts, min_size=1),
    st.sampled_from(["mbx_a", "mbx_b", "mbx_c"]),
    facts,
)
def test_one_mailboxs_facts_never_move_another_mailboxs_score(
    logs: dict[str, list[Fact]], other: str, extra: list[Fact]
) -> None:
    before = {m: (window(fs, NOW), score(window(fs, NOW))) for m, fs in logs.items()}
    snapshot = {m: list(fs) for m, fs in logs.items()}
    logs.setdefault(other, []).extend(extra)
    for mailbox, (counters_before, score_before) in before.items():
        if mailbox != other:
            assert logs[mailbox] == snapshot[mailbox]
            assert window(logs[mailbox], NOW) == counters_before
            assert score(window(logs[mailbox], NOW)) == score_before


# --- window against a naive model ------------------------------------------------------------


def naive_window(fs: Sequence[Fact], now: int, days: int, last_sends: int) -> Counters:
    """Walk forward in time; keep the newest ``last_sends`` sends; start at the oldest kept."""
    span = [(f.at, i, f) for i, f in enumerate(fs) if now - days * DAY_MS <= f.at <= now]
    span.sort(key=lambda t: (t[0], t[1]))
    sends = [(at, i) for at, i, f in span if f.outcome is Outcome.SENT]
    kept = set(sends[-last_sends:]) if sends else set()
    start = min(at for at, _ in kept) if len(sends) > last_sends else -1
    counts = Counters()
    for at, i, f in span:
        if (at, i) in kept if f.outcome is Outcome.SENT else at >= start:
            counts = record(counts, f.outcome)
    return counts


@given(facts, st.integers(1, 40), st.integers(1, 12))
def test_window_agrees_with_the_naive_model(fs: list[Fact], days: int, last_sends: int) -> None:
    assert window(fs, NOW, days=days, last_sends=last_sends) == naive_window(
        fs, NOW, days, last_sends
    )


@given(
    facts,
    st.integers(1, 12),
    st.lists(st.builds(Fact, outcomes, st.integers(0, NOW - 31 * DAY_MS))),
)
def test_facts_older_than_the_window_change_nothing(
    fs: list[Fact], last_sends: int, old: list[Fact]
) -> None:
    assert window(fs + old, NOW, last_sends=last_sends) == window(fs, NOW, last_sends=last_sends)


# --- P13 demotion only ---------------------------------------------------------------------


@given(counters, modes)
def test_enforcement_never_raises_autonomy(c: Counters, mode: OversightMode) -> None:
    v = enforce(c, mode)
    assert rank(v.new_mode) <= rank(mode)
    if v.action is Enforcement.DEMOTE:
        assert v.new_mode is OversightMode.GATED_SEND
        assert rank(mode) > rank(OversightMode.GATED_SEND)
    else:
        assert v.new_mode is mode


@given(counters, modes)
def test_below_minimum_volume_enforcement_does_nothing(c: Counters, mode: OversightMode) -> None:
    c = dataclasses.replace(c, sent=c.sent % THRESHOLDS.min_volume)
    assert enforce(c, mode).action is Enforcement.NONE


@given(counters, modes, st.integers(1, 1_000), st.integers(1, 1_000))
def test_more_bounces_or_complaints_never_soften_enforcement(
    c: Counters, mode: OversightMode, bounces: int, complaints: int
) -> None:
    worse = plus(c, hard_bounced=bounces, complaints=complaints)
    assert SEVERITY[enforce(worse, mode).action] >= SEVERITY[enforce(c, mode).action]


@given(counters, modes)
def test_promotion_is_at_most_one_rung_and_never_after_a_rejection(
    c: Counters, mode: OversightMode
) -> None:
    suggestion = suggest_promotion(c, mode)
    if suggestion is not None:
        assert rank(suggestion) == rank(mode) + 1
        assert c.rejected == 0
    if c.rejected > 0 or mode is OversightMode.AUTONOMOUS:
        assert suggestion is None


# --- P14 suppression -----------------------------------------------------------------------

locals_ = st.from_regex(r"[A-Za-z0-9._]{1,8}(\+[A-Za-z0-9+]{0,5})?", fullmatch=True)
domains = st.sampled_from(["example.com", "Example.COM", "mail.example.org", "EXAMPLE.org"])
addresses = st.builds(lambda local, domain: f"{local}@{domain}", locals_, domains)


@given(addresses)
def test_normalize_is_idempotent_and_case_insensitive(address: str) -> None:
    normal = normalize_for_suppression(address)
    assert normalize_for_suppression(normal) == normal
    assert normalize_for_suppression(address.upper()) == normal
    assert normalize_for_suppression(address.lower()) == normal


@given(st.lists(addresses, max_size=12), st.lists(addresses, max_size=6))
def test_suppressed_recipients_is_exactly_the_suppressed_ones(
    recipients: list[str], listed: list[str]
) -> None:
    suppressed = frozenset(normalize_for_suppression(a) for a in listed)
    hits = suppressed_recipients(recipients, suppressed)
    expected = list(
        dict.fromkeys(r for r in recipients if normalize_for_suppression(r) in suppressed)
    )
    assert list(hits) == expected
    for recipient in recipients:
        assert (recipient in hits) == (normalize_for_suppression(recipient) in suppressed)
