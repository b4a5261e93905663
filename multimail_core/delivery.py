"""Delivery outcomes and retry schedules: SMTP replies -> classes, attempts -> delays.

Rule 1: only a 2xx reply means the server took the message; anything the core does not
        understand is TRANSIENT (a retry costs minutes, a wrong bounce loses the message).
Rule 2: schedules are data; attempt n (1-based) failed -> wait schedule[n - 1] seconds before
        attempt n + 1; past the end there is no next attempt and the delivery fails.
Rule 3: randomness and the clock stay in the shell: jitter takes a draw in [0, 1000], times
        come in as ``now`` (ms since epoch).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

import icontract

JITTER_DRAW_MAX = 1_000
JITTER_SPREAD_PERCENT = 20  # a jittered delay stays within +-20 % of the scheduled one
RETRY_AFTER_CAP = 86_400  # seconds; a server's Retry-After never delays us beyond this

# Seconds to wait after failed attempt n (index n - 1). Exponential backoff as in Postfix
# (minimal_backoff_time 300 s, doubling), stretched past Postfix's 4000 s cap to keep the
# attempt count small, and bounded by Postfix's maximal_queue_lifetime of 5 days:
# 14 attempts over ~5.2 days.
DELIVERY_SCHEDULE: tuple[int, ...] = (
    60,
    300,
    900,
    1_800,
    3_600,
    7_200,
    14_400,
    28_800,
    43_200,
    86_400,
    86_400,
    86_400,
    86_400,
)

# Standard Webhooks / Svix: attempt 1 immediately, then after 5 s, 5 min, 30 min, 2 h, 5 h,
# 10 h and 10 h: 8 attempts over ~27.6 h.
WEBHOOK_SCHEDULE: tuple[int, ...] = (5, 300, 1_800, 7_200, 18_000, 36_000, 36_000)


class ReplyClass(enum.Enum):
    ACCEPTED = "accepted"  # 2yz: the server took responsibility (RFC 5321 §4.2.1)
    TRANSIENT = "transient"  # retry later (deferred)
    PERMANENT = "permanent"  # bounce; do not retry


_BY_CLASS_DIGIT = {2: ReplyClass.ACCEPTED, 4: ReplyClass.TRANSIENT, 5: ReplyClass.PERMANENT}
_DIGITS = frozenset("0123456789")


def _sub_code(text: str) -> int | None:
    # 1*3digit (RFC 3463 §2), ASCII only: str.isdigit() also accepts '²' and friends.
    if not 1 <= len(text) <= 3 or not all(ch in _DIGITS for ch in text):
        return None
    return int(text)


@icontract.ensure(
    lambda text, result: (
        result is None
        or (
            result[0] in (2, 4, 5)
            and 0 <= result[1] <= 999
            and 0 <= result[2] <= 999
            and text.lstrip()[:1] == str(result[0])
        )
    ),
    "class 2, 4 or 5, as written first in the text; subject and detail of 1 to 3 digits",
)
def parse_enhanced(text: str) -> tuple[int, int, int] | None:
    """The RFC 3463 status code ``class.subject.detail`` opening an SMTP reply text, if any.

    ``text`` is the reply without its three-digit code, e.g. ``"5.1.1 user unknown"``; RFC 2034
    §4 puts the status code first, followed by one or more spaces.
    """
    words = text.split(maxsplit=1)
    if not words:
        return None
    parts = words[0].split(".")
    if len(parts) != 3 or parts[0] not in ("2", "4", "5"):
        return None
    subject, detail = _sub_code(parts[1]), _sub_code(parts[2])
    if subject is None or detail is None:
        return None
    return int(parts[0]), subject, detail


@icontract.require(lambda code: 0 <= code <= 999)
@icontract.ensure(
    lambda code, result: (
        (result is not ReplyClass.ACCEPTED or code // 100 == 2)
        and (code // 100 in (2, 4, 5) or result is ReplyClass.TRANSIENT)
    ),
    "only a 2yz is accepted; a code that is not 2yz/4yz/5yz is transient",
)
@icontract.ensure(
    lambda code, text, result: (
        parse_enhanced(text) is not None
        or code // 100 not in (2, 4, 5)
        or result is _BY_CLASS_DIGIT[code // 100]
    )
)
def classify_reply(code: int, text: str = "") -> ReplyClass:
    """Classify an SMTP reply to a transaction step (RCPT, end of DATA).

    - basic code 2yz / 4yz / 5yz: accepted / transient / permanent (RFC 5321 §4.2.1);
    - an enhanced status code in ``text`` refines the basic code and takes precedence over it
      when both say the same kind of thing, i.e. both failure (4 vs 5): RFC 2034 §4 requires
      them to agree, and when a server breaks that, the enhanced class is its more specific,
      machine-readable statement (it is what a DSN records in its Status field, RFC 3464).
      So ``550 4.2.2`` is TRANSIENT and ``450 5.1.1`` is PERMANENT;
    - success and failure disagreeing (``250 5.0.0``, ``550 2.0.0``) is TRANSIENT: neither
      "delivered" nor "bounced" can be trusted, and retrying is the only recoverable choice;
    - any other code (1yz/3yz where a completion reply is due, or outside 200..599) is
      TRANSIENT: the exchange went wrong, the message is not lost, so try again later.
    """
    basic = _BY_CLASS_DIGIT.get(code // 100)
    if basic is None:
        return ReplyClass.TRANSIENT
    enhanced = parse_enhanced(text)
    if enhanced is None:
        return basic
    refined = _BY_CLASS_DIGIT[enhanced[0]]
    if (basic is ReplyClass.ACCEPTED) != (refined is ReplyClass.ACCEPTED):
        return ReplyClass.TRANSIENT
    return refined


def _delay_after(schedule: tuple[int, ...], attempt: int) -> int | None:
    return schedule[attempt - 1] if attempt <= len(schedule) else None


@icontract.require(lambda attempt: attempt >= 1)
@icontract.ensure(lambda attempt, result: (result is None) == (attempt > len(DELIVERY_SCHEDULE)))
@icontract.ensure(lambda result: result is None or result > 0)
@icontract.ensure(
    lambda attempt, result: (
        result is None or attempt == 1 or DELIVERY_SCHEDULE[attempt - 2] <= result
    ),
    "delays never shrink",
)
def delivery_retry_delay(attempt: int) -> int | None:
    """Seconds to wait after failed SMTP delivery attempt ``attempt``; None: give up (failed)."""
    return _delay_after(DELIVERY_SCHEDULE, attempt)


@icontract.require(lambda attempt: attempt >= 1)
@icontract.ensure(lambda attempt, result: (result is None) == (attempt > len(WEBHOOK_SCHEDULE)))
@icontract.ensure(lambda result: result is None or result > 0)
@icontract.ensure(
    lambda attempt, result: (
        result is None or attempt == 1 or WEBHOOK_SCHEDULE[attempt - 2] <= result
    ),
    "delays never shrink",
)
def webhook_retry_delay(attempt: int) -> int | None:
    """Seconds to wait after failed webhook attempt ``attempt``; None: dead-letter it."""
    return _delay_after(WEBHOOK_SCHEDULE, attempt)


@icontract.require(lambda delay: delay >= 0)
@icontract.require(lambda draw: 0 <= draw <= JITTER_DRAW_MAX)
@icontract.ensure(
    lambda delay, result: (
        (100 - JITTER_SPREAD_PERCENT) * delay
        <= 100 * result
        <= (100 + JITTER_SPREAD_PERCENT) * delay
    )
)
@icontract.ensure(lambda delay, draw, result: draw != JITTER_DRAW_MAX // 2 or result == delay)
def with_jitter(delay: int, draw: int) -> int:
    """``delay`` moved by up to +-20 %: draw 0 -> shortest, 500 -> unchanged, 1000 -> longest.

    The shell supplies ``draw`` from its random source, so many deliveries that failed
    together do not all retry in the same second.
    """
    half = JITTER_DRAW_MAX // 2
    # Truncate toward zero on both sides, so rounding never leaves the +-20 % band.
    spread = delay * abs(draw - half) * JITTER_SPREAD_PERCENT // (half * 100)
    return delay + spread if draw >= half else delay - spread


@icontract.require(lambda scheduled: scheduled >= 0)
@icontract.require(lambda retry_after: retry_after is None or retry_after >= 0)
@icontract.require(lambda cap: cap >= 0)
@icontract.ensure(lambda scheduled, result: result >= scheduled)
@icontract.ensure(lambda scheduled, cap, result: result <= max(scheduled, cap))
@icontract.ensure(
    lambda scheduled, retry_after, result: retry_after is not None or result == scheduled
)
@icontract.ensure(
    lambda retry_after, cap, result: retry_after is None or result >= min(retry_after, cap)
)
def honour_retry_after(
    scheduled: int, retry_after: int | None, *, cap: int = RETRY_AFTER_CAP
) -> int:
    """The later of our scheduled delay and the server's ``Retry-After`` (seconds).

    The cap bounds what a server can impose on us; it never shortens our own schedule.
    """
    if retry_after is None:
        return scheduled
    return max(scheduled, min(retry_after, cap))


@icontract.require(lambda now: now >= 0)
@icontract.require(lambda delay_seconds: delay_seconds >= 0)
@icontract.ensure(lambda now, delay_seconds, result: result - now == delay_seconds * 1_000)
def next_attempt_at(now: int, delay_seconds: int) -> int:
    """When (ms since epoch) the next attempt is due."""
    return now + delay_seconds * 1_000


# --- one attempt, many recipients ------------------------------------------------------

#: A message that has passed this many MultiMail hops (agent answering agent answering
#: agent...) is not sent on; one that carries this many Received fields is refused at the
#: door (Postfix's hopcount_limit is also 50).
HOP_LIMIT = 20
RECEIVED_LIMIT = 50


@icontract.ensure(
    lambda hops, received, result: result == (hops >= HOP_LIMIT or received >= RECEIVED_LIMIT)
)
def loop_suspected(hops: int, received: int) -> bool:
    """Rule: mail that has circled too often is refused rather than answered again."""
    return hops >= HOP_LIMIT or received >= RECEIVED_LIMIT


@dataclass(frozen=True)
class Settlement:
    """What one delivery attempt over several recipients amounts to.

    ``code``/``text`` is the reply the message records for the attempt (RecordAttempt):
    transient if any recipient must be tried again, accepted if anyone took it (now or in an
    earlier attempt) and nobody waits, permanent when every recipient refused for good.
    """

    code: int
    text: str
    accepted: tuple[str, ...]
    permanent: tuple[str, ...]
    transient: tuple[str, ...]


def _settled_consistently(replies: Mapping[str, tuple[int, str]], s: Settlement) -> bool:
    parts = (*s.accepted, *s.permanent, *s.transient)
    return sorted(parts) == sorted(replies) and len(set(parts)) == len(parts)


@icontract.require(lambda replies: len(replies) > 0)
@icontract.require(lambda replies: all(0 <= code <= 999 for code, _ in replies.values()))
@icontract.require(lambda delivered_before: delivered_before >= 0)
@icontract.ensure(lambda replies, result: _settled_consistently(replies, result))
@icontract.ensure(
    lambda result: (
        not result.transient or classify_reply(result.code, result.text) is ReplyClass.TRANSIENT
    )
)
@icontract.ensure(
    lambda delivered_before, result: (
        result.transient
        or not (result.accepted or delivered_before)
        or classify_reply(result.code, result.text) is ReplyClass.ACCEPTED
    )
)
def settle(replies: Mapping[str, tuple[int, str]], *, delivered_before: int = 0) -> Settlement:
    """Sort each recipient's reply into accepted / permanent / transient (classify_reply)
    and choose the reply the message records (see Settlement)."""
    by_class: dict[ReplyClass, list[str]] = {k: [] for k in ReplyClass}
    for rcpt, (code, text) in replies.items():
        by_class[classify_reply(code, text)].append(rcpt)
    accepted = tuple(by_class[ReplyClass.ACCEPTED])
    permanent = tuple(by_class[ReplyClass.PERMANENT])
    transient = tuple(by_class[ReplyClass.TRANSIENT])
    if transient:
        code, text = replies[transient[0]]
        if classify_reply(code, text) is not ReplyClass.TRANSIENT or code // 100 != 4:
            code, text = 451, f"4.0.0 {code} {text}".strip()
    elif accepted or delivered_before:
        code, text = 250, "2.0.0 accepted"
    else:
        code, text = replies[permanent[0]]
    return Settlement(code, text[:500], accepted, permanent, transient)
