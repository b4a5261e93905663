"""The server's own mail (approval requests, oversight copies, notices to the operator):
its delivery statuses and what an attempt or a crash does to them.

Rule 1: an attempt's reply decides the next status: accepted → sent, permanent → failed,
        transient → deferred on the delivery schedule, or failed once it runs out.
Rule 2: after a crash mid-attempt, an oversight copy is failed, never resent (P4: at most
        one copy); every other purpose is retried (a second notice is harmless, a missing
        approval request leaves a message waiting for nobody).
Rule 3: values in, values out; times are ms since the epoch, draws jitter the delay.
"""

from __future__ import annotations

import enum

import icontract

from multimail_core.delivery import (
    JITTER_DRAW_MAX,
    ReplyClass,
    classify_reply,
    delivery_retry_delay,
    next_attempt_at,
    with_jitter,
)


class Status(enum.Enum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"


class Purpose(enum.Enum):
    APPROVAL_REQUEST = "approval_request"
    OVERSIGHT_COPY = "oversight_copy"
    UPGRADE_REQUEST = "upgrade_request"
    REPUTATION_DEMOTION = "reputation_demotion"


#: statuses the worker takes mail from
DUE = frozenset({Status.QUEUED, Status.DEFERRED})
#: never resent after a crash (Rule 2)
AT_MOST_ONCE = frozenset({Purpose.OVERSIGHT_COPY})


@icontract.require(lambda attempts: attempts >= 1)
@icontract.require(lambda code: 0 <= code <= 999)
@icontract.require(lambda draw: 0 <= draw <= JITTER_DRAW_MAX)
@icontract.require(lambda now: now >= 0)
@icontract.ensure(
    lambda code, text, result: (
        (result[0] is Status.SENT) == (classify_reply(code, text) is ReplyClass.ACCEPTED)
    )
)
@icontract.ensure(lambda result: (result[0] is Status.DEFERRED) == (result[1] is not None))
@icontract.ensure(lambda now, result: result[1] is None or result[1] > now)
def after_attempt(
    attempts: int, code: int, text: str, *, draw: int, now: int
) -> tuple[Status, int | None]:
    """The status after attempt number ``attempts`` got ``code``/``text`` (Rule 1), and
    when to try again if at all."""
    kind = classify_reply(code, text)
    if kind is ReplyClass.ACCEPTED:
        return Status.SENT, None
    if kind is ReplyClass.PERMANENT:
        return Status.FAILED, None
    wait = delivery_retry_delay(attempts)
    if wait is None:
        return Status.FAILED, None
    return Status.DEFERRED, next_attempt_at(now, with_jitter(wait, draw))


@icontract.ensure(
    lambda purpose, result: (
        result is (Status.FAILED if purpose in AT_MOST_ONCE else Status.DEFERRED)
    )
)
def after_crash(purpose: Purpose) -> Status:
    """The status of mail found ``sending`` at start-up (Rule 2)."""
    return Status.FAILED if purpose in AT_MOST_ONCE else Status.DEFERRED
