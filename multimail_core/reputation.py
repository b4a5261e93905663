"""Per-mailbox reputation: facts -> windowed counters -> rates, score, enforcement, suppression.

Rule 1: a mailbox's reputation is a function of its own facts only (P8: mailboxes are
        independent); the shell windows each mailbox's facts separately.
Rule 2: rates are integer basis points in [0, 10000], 0 on an empty denominator; the score is
        an integer in [0, 100] from FORMULA, whose neutral prior puts a new mailbox at NEUTRAL.
Rule 3: the score never rises with a bounce or a complaint and never falls with a delivery (P8).
Rule 4: enforcement only ever lowers a mode (P13); promotion is only ever suggested (P5).
Rule 5: hard bounces and complaints suppress a recipient; soft bounces never do (P14).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence

import icontract

from multimail_core.errors import InvalidAddress
from multimail_core.modes import LADDER, OversightMode, lower, rank

BP = 10_000  # basis points in 100 %
DAY_MS = 86_400_000
WINDOW_DAYS = 30
WINDOW_SENDS = 1_000


class Outcome(enum.Enum):
    """A fact about one mailbox that reputation counts."""

    SENT = "sent"
    DELIVERED = "delivered"
    HARD_BOUNCE = "hard_bounce"
    SOFT_BOUNCE = "soft_bounce"
    COMPLAINT = "complaint"
    REPLY = "reply"
    REVIEW_APPROVED = "review_approved"
    REVIEW_EDITED = "review_edited"
    REVIEW_REJECTED = "review_rejected"


# Every outcome feeds exactly one counter, so a tally's counters sum to its number of facts.
COUNTER_OF: Mapping[Outcome, str] = {
    Outcome.SENT: "sent",
    Outcome.DELIVERED: "delivered",
    Outcome.HARD_BOUNCE: "hard_bounced",
    Outcome.SOFT_BOUNCE: "soft_bounced",
    Outcome.COMPLAINT: "complaints",
    Outcome.REPLY: "replies",
    Outcome.REVIEW_APPROVED: "approved_unchanged",
    Outcome.REVIEW_EDITED: "edited",
    Outcome.REVIEW_REJECTED: "rejected",
}

# The facts that may lower the score; every other fact leaves it equal or raises it.
HARMFUL: frozenset[Outcome] = frozenset({Outcome.HARD_BOUNCE, Outcome.COMPLAINT})


@icontract.invariant(lambda self: self.at >= 0)
@dataclasses.dataclass(frozen=True)
class Fact:
    """``outcome`` happened at ``at`` (ms since epoch)."""

    outcome: Outcome
    at: int


@icontract.invariant(
    lambda self: all(
        n >= 0
        for n in (
            self.sent,
            self.delivered,
            self.hard_bounced,
            self.soft_bounced,
            self.complaints,
            self.replies,
            self.approved_unchanged,
            self.edited,
            self.rejected,
        )
    )
)
@dataclasses.dataclass(frozen=True)
class Counters:
    """Counts of each outcome over a window. Arbitrary (e.g. delivered > sent) but never < 0."""

    sent: int = 0
    delivered: int = 0
    hard_bounced: int = 0
    soft_bounced: int = 0
    complaints: int = 0
    replies: int = 0
    approved_unchanged: int = 0
    edited: int = 0
    rejected: int = 0


def _total(c: Counters) -> int:
    return sum(int(getattr(c, name)) for name in COUNTER_OF.values())


def _at_most(a: Counters, b: Counters) -> bool:
    return all(getattr(a, name) <= getattr(b, name) for name in COUNTER_OF.values())


def _in_span(fact: Fact, now: int, days: int) -> bool:
    # Inclusive at both ends: a fact exactly ``days`` old is not yet older than the window.
    return now - days * DAY_MS <= fact.at <= now


@icontract.ensure(
    lambda facts, result: (
        _total(result) == len(facts)
        and result.sent == sum(1 for f in facts if f.outcome is Outcome.SENT)
    ),
    "every fact is counted once, under its own outcome",
)
def tally(facts: Sequence[Fact]) -> Counters:
    """Count every fact, whatever its time."""
    counts = dict.fromkeys(COUNTER_OF.values(), 0)
    for fact in facts:
        counts[COUNTER_OF[fact.outcome]] += 1
    return Counters(**counts)


@icontract.require(lambda now: now >= 0)
@icontract.require(lambda days: days >= 1)
@icontract.require(lambda last_sends: last_sends >= 1)
@icontract.ensure(
    lambda facts, now, days, last_sends, result: (
        _at_most(result, tally(facts))
        and result.sent
        == min(
            last_sends,
            sum(1 for f in facts if f.outcome is Outcome.SENT and _in_span(f, now, days)),
        )
    ),
    "windowing only drops facts; it keeps every send of the period, up to last_sends",
)
def window(
    facts: Sequence[Fact],
    now: int,
    *,
    days: int = WINDOW_DAYS,
    last_sends: int = WINDOW_SENDS,
) -> Counters:
    """Counters over the rolling window: the last ``days`` days, and at most ``last_sends`` sends.

    With more than ``last_sends`` sends in the period, the window starts at the oldest of the
    most recent ``last_sends`` sends: earlier facts of every kind drop out. Among sends at the
    same instant, the later one in ``facts`` counts as the more recent.
    """
    recent = [(i, f) for i, f in enumerate(facts) if _in_span(f, now, days)]
    sends = sorted(
        ((f.at, i) for i, f in recent if f.outcome is Outcome.SENT),
        reverse=True,
    )
    if len(sends) <= last_sends:
        return tally([f for _, f in recent])
    kept_sends = frozenset(i for _, i in sends[:last_sends])
    cutoff = sends[last_sends - 1][0]
    return tally(
        [f for i, f in recent if (i in kept_sends if f.outcome is Outcome.SENT else f.at >= cutoff)]
    )


# --- rates -----------------------------------------------------------------------------------


def _bp(numerator: int, denominator: int) -> int:
    if denominator <= 0:
        return 0
    return min(BP, numerator * BP // denominator)


@icontract.ensure(lambda c, result: result == c.approved_unchanged + c.edited + c.rejected)
@icontract.ensure(lambda c, result: result >= c.rejected)
def reviewed(c: Counters) -> int:
    """Held messages a reviewer decided on."""
    return c.approved_unchanged + c.edited + c.rejected


@icontract.ensure(lambda result: 0 <= result <= BP)
@icontract.ensure(lambda c, result: c.sent > 0 or result == 0)
def bounce_rate_bp(c: Counters) -> int:
    """Hard bounces per send."""
    return _bp(c.hard_bounced, c.sent)


@icontract.ensure(lambda result: 0 <= result <= BP)
@icontract.ensure(lambda c, result: c.sent > 0 or result == 0)
def complaint_rate_bp(c: Counters) -> int:
    """Complaints (ARF reports) per send."""
    return _bp(c.complaints, c.sent)


@icontract.ensure(lambda result: 0 <= result <= BP)
@icontract.ensure(lambda c, result: c.sent > 0 or result == 0)
def delivery_rate_bp(c: Counters) -> int:
    """Deliveries per send; an empty mailbox has delivered nothing, so 0."""
    return _bp(c.delivered, c.sent)


@icontract.ensure(lambda result: 0 <= result <= BP)
@icontract.ensure(lambda c, result: c.sent > 0 or result == 0)
def engagement_rate_bp(c: Counters) -> int:
    """Replies received per send, clamped: a thread can draw more replies than sends."""
    return _bp(c.replies, c.sent)


@icontract.ensure(lambda result: 0 <= result <= BP)
@icontract.ensure(lambda c, result: reviewed(c) > 0 or result == 0)
@icontract.ensure(lambda c, result: c.rejected + c.edited > 0 or result in (0, BP))
def approval_rate_bp(c: Counters) -> int:
    """Held messages approved unchanged per reviewed message."""
    return _bp(c.approved_unchanged, reviewed(c))


# --- score -----------------------------------------------------------------------------------


@icontract.invariant(
    lambda self: (
        0 <= self.neutral <= self.ceiling
        and self.prior_sends >= 1
        and self.bounce_weight >= self.ceiling
        and self.complaint_weight >= 0
    ),
    "a neutral prior within range, and weights that keep P8 true",
)
@dataclasses.dataclass(frozen=True)
class Formula:
    """Constants of the score; ``spec/reputation.toml`` publishes the same numbers.

    score = clamp(floor((neutral * prior_sends + ceiling * sent - bounce_weight * hard_bounced
                         - complaint_weight * complaints) / (prior_sends + sent)), 0, ceiling)

    Every send counts as ``ceiling`` points unless it bounced or drew a complaint; the prior
    acts as ``prior_sends`` imaginary sends scored ``neutral``, so tiny samples stay near it.
    ``bounce_weight >= ceiling`` is what makes a bounced send lower the score (P8).
    """

    neutral: int = 50
    prior_sends: int = 20
    bounce_weight: int = 300  # 1 % hard bounces cost 3 points
    complaint_weight: int = 3_000  # 0.1 % complaints cost 3 points
    ceiling: int = 100


FORMULA = Formula()


def _points(sent: int, hard_bounced: int, complaints: int) -> int:
    f = FORMULA
    numerator = (
        f.neutral * f.prior_sends
        + f.ceiling * sent
        - f.bounce_weight * hard_bounced
        - f.complaint_weight * complaints
    )
    if numerator <= 0:
        return 0  # clamp before dividing: floor division of a negative rounds away from zero
    return min(f.ceiling, numerator // (f.prior_sends + sent))


@icontract.ensure(lambda result: 0 <= result <= FORMULA.ceiling)
@icontract.ensure(
    lambda c, result: c.sent + c.hard_bounced + c.complaints > 0 or result == FORMULA.neutral
)
@icontract.ensure(
    lambda c, result: _points(c.sent + 1, c.hard_bounced + 1, c.complaints) <= result,
    "P8: one more send that hard-bounced never raises the score",
)
@icontract.ensure(
    lambda c, result: _points(c.sent, c.hard_bounced, c.complaints + 1) <= result,
    "P8: one more complaint never raises the score",
)
@icontract.ensure(
    lambda c, result: _points(c.sent + 1, c.hard_bounced, c.complaints) >= result,
    "P8: one more send that was delivered never lowers the score",
)
def score(c: Counters) -> int:
    """The reputation score, 0..100, per FORMULA; a function of this mailbox's counters only."""
    return _points(c.sent, c.hard_bounced, c.complaints)


@icontract.ensure(lambda c, outcome, result: _total(result) == _total(c) + 1)
@icontract.ensure(
    lambda c, outcome, result: (
        getattr(result, COUNTER_OF[outcome]) == getattr(c, COUNTER_OF[outcome]) + 1
    )
)
@icontract.ensure(
    lambda c, outcome, result: (
        score(result) <= score(c) if outcome in HARMFUL else score(result) >= score(c)
    ),
    "P8, fact by fact",
)
def record(c: Counters, outcome: Outcome) -> Counters:
    """``c`` with one more fact of ``outcome``."""
    name = COUNTER_OF[outcome]
    bumped: int = getattr(c, name) + 1
    return dataclasses.replace(c, **{name: bumped})


# --- enforcement -----------------------------------------------------------------------------


@icontract.invariant(
    lambda self: (
        self.min_volume >= 1
        and 0 <= self.warn_bounce_bp <= self.demote_bounce_bp <= BP
        and 0 <= self.warn_complaint_bp <= self.demote_complaint_bp <= BP
    )
)
@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Enforcement bars (R-REP): rates at or above a bar trip it; below min_volume, nothing."""

    min_volume: int = 50  # sends in the window
    warn_bounce_bp: int = 500  # 5 %
    warn_complaint_bp: int = 10  # 0.1 %
    demote_bounce_bp: int = 1_000  # 10 %
    demote_complaint_bp: int = 50  # 0.5 %


THRESHOLDS = Thresholds()

# Where a tripped demotion bar sends a mailbox (if it is above it).
DEMOTION_TARGET = OversightMode.GATED_SEND


class Enforcement(enum.Enum):
    NONE = "none"
    WARN = "warn"  # `reputation.warning` event, operator notified
    DEMOTE = "demote"  # mode lowered to Verdict.new_mode, operator notified


@dataclasses.dataclass(frozen=True)
class Verdict:
    action: Enforcement
    new_mode: OversightMode
    reason: str


def _percent(bp: int) -> str:
    return f"{bp // 100}.{bp % 100:02d}%"


@icontract.ensure(
    lambda c, mode, thresholds, result: (
        rank(result.new_mode) <= rank(mode)
        and (
            result.new_mode is lower(mode, DEMOTION_TARGET) and result.new_mode is not mode
            if result.action is Enforcement.DEMOTE
            else result.new_mode is mode
        )
        and (c.sent >= thresholds.min_volume or result.action is Enforcement.NONE)
    ),
    "P13: demotion only, to gated_send, and only at volume",
)
def enforce(c: Counters, mode: OversightMode, *, thresholds: Thresholds = THRESHOLDS) -> Verdict:
    """What reputation enforcement does to a mailbox in ``mode`` with window counters ``c``."""
    t = thresholds
    if c.sent < t.min_volume:
        return Verdict(
            Enforcement.NONE, mode, f"{c.sent} sends, below the minimum volume {t.min_volume}"
        )
    bounce, complaint = bounce_rate_bp(c), complaint_rate_bp(c)
    if bounce >= t.demote_bounce_bp or complaint >= t.demote_complaint_bp:
        why = (
            f"bounce rate {_percent(bounce)} >= {_percent(t.demote_bounce_bp)}"
            if bounce >= t.demote_bounce_bp
            else f"complaint rate {_percent(complaint)} >= {_percent(t.demote_complaint_bp)}"
        )
        target = lower(mode, DEMOTION_TARGET)
        if target is mode:
            return Verdict(
                Enforcement.WARN, mode, f"{why}; already at or below {DEMOTION_TARGET.value}"
            )
        return Verdict(Enforcement.DEMOTE, target, f"{why}; demoted to {target.value}")
    if bounce >= t.warn_bounce_bp:
        return Verdict(
            Enforcement.WARN,
            mode,
            f"bounce rate {_percent(bounce)} >= {_percent(t.warn_bounce_bp)}",
        )
    if complaint >= t.warn_complaint_bp:
        return Verdict(
            Enforcement.WARN,
            mode,
            f"complaint rate {_percent(complaint)} >= {_percent(t.warn_complaint_bp)}",
        )
    return Verdict(Enforcement.NONE, mode, "within thresholds")


# --- trust evidence --------------------------------------------------------------------------


@icontract.invariant(lambda self: self.min_reviewed >= 1 and 0 <= self.min_approval_bp <= BP)
@dataclasses.dataclass(frozen=True)
class PromotionBar:
    """Evidence needed before the API suggests one rung more autonomy (never applied here)."""

    min_reviewed: int = 20
    min_approval_bp: int = 9_500  # 95 % approved unchanged


PROMOTION_BAR = PromotionBar()


@icontract.require(lambda min_reviewed: min_reviewed >= 1)
@icontract.require(lambda min_approval_bp: 0 <= min_approval_bp <= BP)
@icontract.ensure(lambda mode, result: result is None or rank(result) == rank(mode) + 1)
@icontract.ensure(lambda c, result: result is None or c.rejected == 0)
@icontract.ensure(lambda c, min_reviewed, result: result is None or reviewed(c) >= min_reviewed)
def suggest_promotion(
    c: Counters,
    mode: OversightMode,
    *,
    min_reviewed: int = PROMOTION_BAR.min_reviewed,
    min_approval_bp: int = PROMOTION_BAR.min_approval_bp,
) -> OversightMode | None:
    """The next rung up when reviewers' decisions clear the bar, else None. Only a suggestion:
    an operator promotes (P5, P13)."""
    if mode is LADDER[-1] or c.rejected > 0 or reviewed(c) < min_reviewed:
        return None
    if approval_rate_bp(c) < min_approval_bp:
        return None
    return LADDER[rank(mode) + 1]


# --- suppression -----------------------------------------------------------------------------


class SuppressionReason(enum.Enum):
    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    MANUAL = "manual"  # added by an operator through the API


SUPPRESSES: Mapping[Outcome, SuppressionReason] = {
    Outcome.HARD_BOUNCE: SuppressionReason.HARD_BOUNCE,
    Outcome.COMPLAINT: SuppressionReason.COMPLAINT,
}


@icontract.ensure(lambda outcome, result: result is None or outcome in HARMFUL)
@icontract.ensure(lambda outcome, result: outcome is not Outcome.SOFT_BOUNCE or result is None)
def suppression_for(outcome: Outcome) -> SuppressionReason | None:
    """Why a recipient goes on the suppression list after ``outcome``, or None if it does not.

    A soft bounce (4xx, mailbox full) is transient and never suppresses.
    """
    return SUPPRESSES.get(outcome)


@icontract.ensure(
    lambda address, result: (
        result == result.lower()
        and result.rpartition("@")[2] == address.rpartition("@")[2].lower()
        and result.rpartition("@")[0] != ""
        and ("+" not in result.rpartition("@")[0] or result.startswith("+"))
    ),
    "lowercase, same domain, and the +tag gone unless the local part is nothing but a tag",
)
def normalize_for_suppression(address: str) -> str:
    """The key an address is suppressed under: lowercased, ``name+tag@`` folded to ``name@``.

    Local parts are case-sensitive in RFC 5321 §2.4, but no mailbox provider treats them so,
    and suppressing ``Bob@`` while still mailing ``bob@`` would defeat P14.

    :raises InvalidAddress: when ``address`` has no ``@`` or an empty local part or domain.
    """
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise InvalidAddress(f"not an address: {address[:80]!r}")
    base = local.partition("+")[0]
    return f"{base or local}@{domain}".lower()


@icontract.ensure(
    lambda recipients, suppressed, result: (
        len(set(result)) == len(result)
        and all(r in recipients and normalize_for_suppression(r) in suppressed for r in result)
    ),
    "only suppressed recipients, once each",
)
@icontract.ensure(
    lambda recipients, suppressed, result: all(
        r in result for r in recipients if normalize_for_suppression(r) in suppressed
    ),
    "P14: every suppressed recipient is reported",
)
def suppressed_recipients(recipients: Sequence[str], suppressed: frozenset[str]) -> tuple[str, ...]:
    """The recipients (as spelled, in order, once each) whose normalized form is in
    ``suppressed``, itself a set of normalized addresses.

    :raises InvalidAddress: when a recipient is not an address.
    """
    hits: dict[str, None] = {}
    for recipient in recipients:
        if normalize_for_suppression(recipient) in suppressed:
            hits[recipient] = None
    return tuple(hits)
