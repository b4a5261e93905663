"""Outbound message lifecycle.

Rule 1: every legal (status, command) pair is in TRANSITIONS with the set of statuses it may
        lead to; anything else raises IllegalTransition and changes nothing.
Rule 2: a held message leaves PENDING_APPROVAL only through Approve or Reject (P1).
Rule 3: the transport accepts a message at most once: ``handoffs`` rises only on
        SENDING → SENT, and no status reachable from SENT, REJECTED or CANCELLED leads back
        to SENDING (P7).
Rule 4: the outcome of a delivery attempt is decided here from the SMTP reply
        (RFC 3463 classification) and the retry schedule, not by the delivery worker.
Rule 5: a sender may cancel only before SENDING.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

import icontract

from multimail_core.delivery import (
    ReplyClass,
    classify_reply,
    delivery_retry_delay,
    next_attempt_at,
    with_jitter,
)
from multimail_core.errors import IllegalTransition
from multimail_core.events import (
    DeliveryStarted,
    Event,
    MessageApproved,
    MessageBounced,
    MessageCancelled,
    MessageComplained,
    MessageDeferred,
    MessageDelivered,
    MessageFailed,
    MessageQueued,
    MessageRejected,
    MessageSent,
)


class Status(enum.Enum):
    PENDING_APPROVAL = "pending_approval"
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


#: Statuses in which the message has not been (and can no longer be) handed over.
NEVER_SENT = frozenset({Status.REJECTED, Status.CANCELLED})
TERMINAL = frozenset({Status.BOUNCED, Status.FAILED, Status.REJECTED, Status.CANCELLED})


@icontract.invariant(lambda self: 0 <= self.handoffs <= 1, "P7")
@icontract.invariant(lambda self: self.attempts >= self.handoffs)
@icontract.invariant(lambda self: self.status is not Status.SENDING or self.attempts >= 1)
@icontract.invariant(lambda self: len(self.recipients) > 0)
@icontract.invariant(lambda self: self.status not in NEVER_SENT or self.handoffs == 0, "P7")
@dataclass(frozen=True)
class Outbound:
    id: str
    mailbox_id: str
    account_id: str
    thread_id: str
    created_by: str
    recipients: tuple[str, ...]
    subject: str
    body_text: str
    body_html: str | None
    status: Status
    monitored: bool
    created_at: int
    send_at: int | None = None
    approval_id: str | None = None
    approved_by: str | None = None
    attempts: int = 0
    handoffs: int = 0
    next_attempt_at: int | None = None
    last_reply: str = ""


# --- commands ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Approve:
    """A reviewer released a held message; ``edited`` is the whole new content, if any.

    ``edited`` replaces subject, text and HTML together (an HTML of None removes the HTML
    part), so what the reviewer approved is exactly what leaves.
    """

    approval_id: str
    reviewer: str
    edited: tuple[str, str, str | None] | None = None


@dataclass(frozen=True)
class Reject:
    approval_id: str
    reviewer: str
    reason: str = ""


@dataclass(frozen=True)
class Cancel:
    pass


@dataclass(frozen=True)
class Release:
    """The scheduler found ``send_at`` reached."""


@dataclass(frozen=True)
class Claim:
    """The delivery worker takes the message for one attempt."""


@dataclass(frozen=True)
class RecordAttempt:
    """The transport answered ``code`` / ``text``; ``draw`` ∈ [0, 1000] jitters the retry."""

    code: int
    text: str = ""
    draw: int = 500


@dataclass(frozen=True)
class Interrupt:
    """The process died mid-attempt; whether the transport took it is unknown.

    At-most-once (P7) wins over delivery: the message fails and the sender is told,
    rather than risking a second hand-off.
    """


@dataclass(frozen=True)
class ConfirmDelivery:
    """A positive delivery report (or local delivery) for a sent message."""


@dataclass(frozen=True)
class RecordBounce:
    """An asynchronous DSN (RFC 3464) reported a permanent failure after acceptance."""

    recipients: tuple[str, ...]
    reply: str = ""


@dataclass(frozen=True)
class RecordComplaint:
    """An ARF report (RFC 5965) about this message."""

    recipients: tuple[str, ...]


Command = (
    Approve
    | Reject
    | Cancel
    | Release
    | Claim
    | RecordAttempt
    | Interrupt
    | ConfirmDelivery
    | RecordBounce
    | RecordComplaint
)

S = Status

#: (status, command type) → the statuses it may lead to. ``spec/outbound.toml`` mirrors it.
TRANSITIONS: dict[tuple[Status, type[Command]], frozenset[Status]] = {
    (S.PENDING_APPROVAL, Approve): frozenset({S.QUEUED, S.SCHEDULED}),
    (S.PENDING_APPROVAL, Reject): frozenset({S.REJECTED}),
    (S.PENDING_APPROVAL, Cancel): frozenset({S.CANCELLED}),
    (S.SCHEDULED, Release): frozenset({S.QUEUED}),
    (S.SCHEDULED, Cancel): frozenset({S.CANCELLED}),
    (S.QUEUED, Cancel): frozenset({S.CANCELLED}),
    (S.QUEUED, Claim): frozenset({S.SENDING}),
    (S.DEFERRED, Claim): frozenset({S.SENDING}),
    (S.DEFERRED, Cancel): frozenset({S.CANCELLED}),
    (S.SENDING, RecordAttempt): frozenset({S.SENT, S.DEFERRED, S.BOUNCED, S.FAILED}),
    (S.SENDING, Interrupt): frozenset({S.FAILED}),
    (S.SENT, ConfirmDelivery): frozenset({S.DELIVERED}),
    (S.SENT, RecordBounce): frozenset({S.BOUNCED}),
    (S.DELIVERED, RecordBounce): frozenset({S.BOUNCED}),
    (S.SENT, RecordComplaint): frozenset({S.SENT}),
    (S.DELIVERED, RecordComplaint): frozenset({S.DELIVERED}),
    (S.BOUNCED, RecordComplaint): frozenset({S.BOUNCED}),
}


@icontract.ensure(
    lambda message, command, result: result == ((message.status, type(command)) in TRANSITIONS)
)
def accepts(message: Outbound, command: Command) -> bool:
    return (message.status, type(command)) in TRANSITIONS


def _approve(m: Outbound, c: Approve, now: int) -> tuple[Outbound, Event]:
    scheduled = m.send_at is not None and m.send_at > now
    after = replace(
        m,
        status=S.SCHEDULED if scheduled else S.QUEUED,
        approved_by=c.reviewer,
        subject=m.subject if c.edited is None else c.edited[0],
        body_text=m.body_text if c.edited is None else c.edited[1],
        body_html=m.body_html if c.edited is None else c.edited[2],
        next_attempt_at=m.send_at if scheduled else now,
    )
    edited = (after.subject, after.body_text, after.body_html) != (
        m.subject,
        m.body_text,
        m.body_html,
    )
    return after, MessageApproved(m.mailbox_id, m.id, c.approval_id, c.reviewer, edited)


def _attempt(m: Outbound, c: RecordAttempt, now: int) -> tuple[Outbound, Event]:
    kind = classify_reply(c.code, c.text)
    reply = f"{c.code} {c.text}".strip()[:500]
    if kind is ReplyClass.ACCEPTED:
        after = replace(m, status=S.SENT, handoffs=m.handoffs + 1, last_reply=reply)
        return after, MessageSent(m.mailbox_id, m.id, m.monitored)
    if kind is ReplyClass.PERMANENT:
        after = replace(m, status=S.BOUNCED, last_reply=reply, next_attempt_at=None)
        return after, MessageBounced(m.mailbox_id, m.id, m.recipients, reply)
    delay = delivery_retry_delay(m.attempts)
    if delay is None:
        after = replace(m, status=S.FAILED, last_reply=reply, next_attempt_at=None)
        return after, MessageFailed(m.mailbox_id, m.id, reply)
    at = next_attempt_at(now, with_jitter(delay, c.draw))
    after = replace(m, status=S.DEFERRED, last_reply=reply, next_attempt_at=at)
    return after, MessageDeferred(m.mailbox_id, m.id, m.attempts, at, reply)


def _send_time_reached(message: Outbound, now: int) -> bool:
    return message.send_at is not None and message.send_at <= now


def _step(m: Outbound, c: Command, now: int) -> tuple[Outbound, Event]:
    mb, mid = m.mailbox_id, m.id
    if isinstance(c, Approve):
        return _approve(m, c, now)
    if isinstance(c, Reject):
        after = replace(m, status=S.REJECTED, next_attempt_at=None)
        return after, MessageRejected(mb, mid, c.approval_id, c.reviewer, c.reason)
    if isinstance(c, Cancel):
        return replace(m, status=S.CANCELLED, next_attempt_at=None), MessageCancelled(mb, mid)
    if isinstance(c, Release):
        return replace(m, status=S.QUEUED, next_attempt_at=now), MessageQueued(mb, mid)
    if isinstance(c, Claim):
        after = replace(m, status=S.SENDING, attempts=m.attempts + 1)
        return after, DeliveryStarted(mb, mid, after.attempts)
    if isinstance(c, RecordAttempt):
        return _attempt(m, c, now)
    if isinstance(c, Interrupt):
        # Whether the transport took it is unknown; retrying could hand it over twice (P7).
        reply = "interrupted mid-delivery; not retried (at-most-once)"
        after = replace(m, status=S.FAILED, next_attempt_at=None, last_reply=reply)
        return after, MessageFailed(mb, mid, reply)
    if isinstance(c, ConfirmDelivery):
        return replace(m, status=S.DELIVERED), MessageDelivered(mb, mid)
    if isinstance(c, RecordBounce):
        after = replace(m, status=S.BOUNCED, last_reply=c.reply[:500])
        return after, MessageBounced(mb, mid, c.recipients, c.reply[:500])
    return m, MessageComplained(mb, mid, c.recipients)


@icontract.require(
    lambda command: not isinstance(command, RecordAttempt) or 0 <= command.code <= 999
)
@icontract.require(
    lambda command: not isinstance(command, RecordAttempt) or 0 <= command.draw <= 1000
)
@icontract.require(
    lambda message, command, now: (
        not isinstance(command, Release)
        or message.status is not S.SCHEDULED
        or _send_time_reached(message, now)
    ),
    "a scheduled message is released only once its send_at is reached",
)
@icontract.ensure(lambda message, result: result[0].id == message.id)
@icontract.ensure(lambda message, result: result[0].recipients == message.recipients)
@icontract.ensure(
    lambda message, command, result: (
        result[0].status in TRANSITIONS[(message.status, type(command))]
    )
)
@icontract.ensure(lambda message, result: result[0].handoffs >= message.handoffs)
@icontract.ensure(
    lambda message, result: (
        result[0].handoffs == message.handoffs
        or (message.status is S.SENDING and result[0].status is S.SENT)
    ),
    "P7: the only hand-off is SENDING → SENT",
)
@icontract.ensure(lambda result: len(result[1]) == 1, "P12: one event per change")
def apply(message: Outbound, command: Command, *, now: int) -> tuple[Outbound, tuple[Event, ...]]:
    """Apply one command; return the new message and its one event.

    :raises IllegalTransition: when the pair is not in TRANSITIONS.
    """
    if (message.status, type(command)) not in TRANSITIONS:
        raise IllegalTransition("outbound message", message.status.value, type(command).__name__)
    after, event = _step(message, command, now)
    return after, (event,)


@icontract.ensure(
    lambda message, now, result: not result or message.status in (S.QUEUED, S.DEFERRED)
)
def is_due(message: Outbound, *, now: int) -> bool:
    """Should the delivery worker claim this message now?"""
    return message.status in (S.QUEUED, S.DEFERRED) and (
        message.next_attempt_at is None or message.next_attempt_at <= now
    )


@icontract.ensure(
    lambda message, now, result: (
        result
        == (
            message.status is S.SCHEDULED and message.send_at is not None and message.send_at <= now
        )
    )
)
def is_release_due(message: Outbound, *, now: int) -> bool:
    return message.status is S.SCHEDULED and message.send_at is not None and message.send_at <= now
