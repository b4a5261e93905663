"""Scenarios for multimail_core.reputation: score, rates, window, enforcement, suppression."""

from __future__ import annotations

import pytest

from multimail_core.errors import InvalidAddress
from multimail_core.modes import OversightMode as M
from multimail_core.reputation import (
    DAY_MS,
    FORMULA,
    Counters,
    Enforcement,
    Fact,
    Outcome,
    SuppressionReason,
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
    suppression_for,
    tally,
    window,
)

NOW = 1_700_000_000_000


def sends(n: int, *, bounced: int = 0, complaints: int = 0) -> Counters:
    return Counters(sent=n, delivered=n - bounced, hard_bounced=bounced, complaints=complaints)


# --- score -------------------------------------------------------------------------------


def test_new_mailbox_is_neutral() -> None:
    assert score(Counters()) == FORMULA.neutral == 50


def test_a_few_clean_sends_move_the_score_only_a_little() -> None:
    assert score(sends(1)) == 52  # (1000 + 100) // 21
    assert score(sends(5)) == 60  # (1000 + 500) // 25


def test_clean_thousand_sends_score_high() -> None:
    assert score(sends(1000)) >= 95


def test_bounces_cost_three_points_per_percent() -> None:
    clean, one_percent = score(sends(10_000)), score(sends(10_000, bounced=100))
    assert clean - one_percent == 3


def test_formula_worked_example() -> None:
    # (50*20 + 100*100 - 300*10) // (20 + 100) = 8000 // 120
    assert score(sends(100, bounced=10)) == 66


def test_heavy_complaints_floor_the_score_at_zero() -> None:
    assert score(sends(100, complaints=50)) == 0


def test_score_ignores_reviews_replies_and_soft_bounces() -> None:
    base = sends(200, bounced=4)
    noisy = Counters(
        sent=200, delivered=196, hard_bounced=4, soft_bounced=30, replies=80, rejected=9, edited=3
    )
    assert score(noisy) == score(base)


def test_record_adds_exactly_one_fact() -> None:
    c = record(record(Counters(), Outcome.SENT), Outcome.HARD_BOUNCE)
    assert c == Counters(sent=1, hard_bounced=1)
    assert record(c, Outcome.REVIEW_EDITED).edited == 1


# --- rates -------------------------------------------------------------------------------


def test_rates_of_an_empty_mailbox_are_zero() -> None:
    empty = Counters()
    rates = [bounce_rate_bp, complaint_rate_bp, delivery_rate_bp, engagement_rate_bp]
    assert [rate(empty) for rate in [*rates, approval_rate_bp]] == [0, 0, 0, 0, 0]


def test_rates_in_basis_points() -> None:
    c = Counters(sent=400, delivered=380, hard_bounced=12, complaints=1, replies=40)
    assert bounce_rate_bp(c) == 300
    assert complaint_rate_bp(c) == 25
    assert delivery_rate_bp(c) == 9500
    assert engagement_rate_bp(c) == 1000


def test_engagement_is_clamped_when_replies_outnumber_sends() -> None:
    assert engagement_rate_bp(Counters(sent=2, replies=7)) == 10_000


def test_approval_rate_counts_only_unchanged_approvals() -> None:
    assert approval_rate_bp(Counters(approved_unchanged=18, edited=1, rejected=1)) == 9000
    assert approval_rate_bp(Counters(approved_unchanged=3)) == 10_000


# --- window ------------------------------------------------------------------------------


def test_tally_counts_each_outcome() -> None:
    facts = [Fact(o, 0) for o in Outcome] + [Fact(Outcome.SENT, 5)]
    assert tally(facts) == Counters(2, 1, 1, 1, 1, 1, 1, 1, 1)


def test_window_drops_facts_older_than_thirty_days() -> None:
    facts = [
        Fact(Outcome.SENT, NOW - 31 * DAY_MS),
        Fact(Outcome.HARD_BOUNCE, NOW - 31 * DAY_MS + 1),
        Fact(Outcome.SENT, NOW - 30 * DAY_MS),  # exactly 30 days old: still in
        Fact(Outcome.SENT, NOW - DAY_MS),
        Fact(Outcome.COMPLAINT, NOW),
    ]
    assert window(facts, NOW) == Counters(sent=2, complaints=1)


def test_window_ignores_facts_after_now() -> None:
    assert window([Fact(Outcome.SENT, NOW + 1)], NOW) == Counters()


def test_window_keeps_only_the_last_thousand_sends() -> None:
    old_bounces = [Fact(Outcome.HARD_BOUNCE, NOW - DAY_MS + i) for i in range(40)]
    facts = [Fact(Outcome.SENT, NOW - DAY_MS + i) for i in range(1_005)] + old_bounces
    c = window(facts, NOW)
    # The 1,000 most recent sends start at NOW - DAY_MS + 5: five sends and five bounces drop.
    assert c == Counters(sent=1_000, hard_bounced=35)


def test_window_breaks_ties_between_simultaneous_sends_by_order() -> None:
    facts = [Fact(Outcome.SENT, NOW)] * 5 + [Fact(Outcome.DELIVERED, NOW)]
    assert window(facts, NOW, last_sends=3) == Counters(sent=3, delivered=1)


def test_window_sizes_are_parameters() -> None:
    facts = [Fact(Outcome.SENT, NOW - 2 * DAY_MS), Fact(Outcome.SENT, NOW)]
    assert window(facts, NOW, days=1).sent == 1
    assert window(facts, NOW, last_sends=1).sent == 1
    assert window(facts, NOW).sent == 2


# --- enforcement ---------------------------------------------------------------------------


def test_twelve_percent_bounces_demote_a_monitored_mailbox_to_gated_send() -> None:
    v = enforce(sends(100, bounced=12), M.MONITORED)
    assert (v.action, v.new_mode) == (Enforcement.DEMOTE, M.GATED_SEND)
    assert "12.00%" in v.reason


def test_autonomous_is_demoted_to_gated_send_too() -> None:
    assert enforce(sends(100, bounced=10), M.AUTONOMOUS).new_mode is M.GATED_SEND


def test_six_percent_bounces_warn_without_demoting() -> None:
    v = enforce(sends(100, bounced=6), M.MONITORED)
    assert (v.action, v.new_mode) == (Enforcement.WARN, M.MONITORED)


def test_exactly_five_percent_warns_and_just_below_does_not() -> None:
    assert enforce(sends(1000, bounced=50), M.AUTONOMOUS).action is Enforcement.WARN
    assert enforce(sends(1000, bounced=49), M.AUTONOMOUS).action is Enforcement.NONE


def test_below_minimum_volume_nothing_happens() -> None:
    v = enforce(sends(49, bounced=49, complaints=49), M.AUTONOMOUS)
    assert (v.action, v.new_mode) == (Enforcement.NONE, M.AUTONOMOUS)
    assert enforce(sends(50, bounced=5), M.AUTONOMOUS).action is Enforcement.DEMOTE


@pytest.mark.parametrize("mode", [M.GATED_SEND, M.GATED_ALL, M.READ_ONLY])
def test_at_or_below_gated_send_a_demotion_is_only_a_warning(mode: M) -> None:
    v = enforce(sends(100, bounced=50), mode)
    assert (v.action, v.new_mode) == (Enforcement.WARN, mode)
    assert "already" in v.reason


@pytest.mark.parametrize(
    ("complaints", "action"),
    [
        (0, Enforcement.NONE),
        (1, Enforcement.WARN),  # 0.1 %
        (4, Enforcement.WARN),
        (5, Enforcement.DEMOTE),  # 0.5 %
    ],
)
def test_complaint_thresholds(complaints: int, action: Enforcement) -> None:
    assert enforce(sends(1000, complaints=complaints), M.MONITORED).action is action


def test_a_complaint_rate_just_under_a_tenth_of_a_percent_does_not_warn() -> None:
    assert enforce(sends(1001, complaints=1), M.MONITORED).action is Enforcement.NONE


def test_clean_mailbox_is_left_alone() -> None:
    v = enforce(sends(5000, bounced=20), M.AUTONOMOUS)
    assert (v.action, v.new_mode, v.reason) == (Enforcement.NONE, M.AUTONOMOUS, "within thresholds")


# --- trust evidence --------------------------------------------------------------------------


def test_twenty_unchanged_approvals_suggest_the_next_rung() -> None:
    assert suggest_promotion(Counters(approved_unchanged=20), M.GATED_SEND) is M.MONITORED
    assert suggest_promotion(Counters(approved_unchanged=20), M.READ_ONLY) is M.GATED_ALL


def test_too_little_evidence_suggests_nothing() -> None:
    assert suggest_promotion(Counters(approved_unchanged=19), M.GATED_SEND) is None


def test_one_rejection_suggests_nothing() -> None:
    assert suggest_promotion(Counters(approved_unchanged=200, rejected=1), M.GATED_SEND) is None


def test_approval_bar_is_ninety_five_percent_unchanged() -> None:
    assert suggest_promotion(Counters(approved_unchanged=19, edited=1), M.GATED_ALL) is M.GATED_SEND
    assert suggest_promotion(Counters(approved_unchanged=18, edited=2), M.GATED_ALL) is None


def test_autonomous_has_nowhere_to_go() -> None:
    assert suggest_promotion(Counters(approved_unchanged=500), M.AUTONOMOUS) is None


def test_the_bar_is_configurable() -> None:
    c = Counters(approved_unchanged=4, edited=1)
    assert suggest_promotion(c, M.GATED_SEND) is None
    assert suggest_promotion(c, M.GATED_SEND, min_reviewed=5, min_approval_bp=8000) is M.MONITORED


# --- suppression -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        (Outcome.HARD_BOUNCE, SuppressionReason.HARD_BOUNCE),
        (Outcome.COMPLAINT, SuppressionReason.COMPLAINT),
        (Outcome.SOFT_BOUNCE, None),
        (Outcome.DELIVERED, None),
        (Outcome.REVIEW_REJECTED, None),
    ],
)
def test_only_hard_bounces_and_complaints_suppress(
    outcome: Outcome, reason: SuppressionReason | None
) -> None:
    assert suppression_for(outcome) is reason


@pytest.mark.parametrize(
    ("address", "normal"),
    [
        ("Bob@Example.COM", "bob@example.com"),
        ("bob+news@example.com", "bob@example.com"),
        ("Bob+a+b@example.com", "bob@example.com"),
        ("+only-a-tag@example.com", "+only-a-tag@example.com"),
        ('"a@b"@example.com', '"a@b"@example.com'),
    ],
)
def test_normalize_for_suppression(address: str, normal: str) -> None:
    assert normalize_for_suppression(address) == normal


@pytest.mark.parametrize("bad", ["", "bob", "@example.com", "bob@"])
def test_normalize_refuses_non_addresses(bad: str) -> None:
    with pytest.raises(InvalidAddress):
        normalize_for_suppression(bad)


def test_suppressed_recipients_keep_spelling_and_order_once_each() -> None:
    suppressed = frozenset({"bob@example.com", "eve@example.org"})
    recipients = ["Eve@Example.org", "alice@example.com", "bob+x@example.com", "Eve@Example.org"]
    assert suppressed_recipients(recipients, suppressed) == (
        "Eve@Example.org",
        "bob+x@example.com",
    )


def test_nobody_suppressed() -> None:
    assert suppressed_recipients(["a@example.com"], frozenset({"b@example.com"})) == ()
