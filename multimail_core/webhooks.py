"""Webhooks (PRODUCT.md §9): which endpoint receives which event, and what one delivery
attempt does to a delivery and its endpoint.

Rule 1: an endpoint receives an event when it is active, the event is public, its type is in
        the endpoint's filter (an empty filter takes every public type), and the endpoint's
        mailbox scope, if any, is the event's mailbox. A mailbox's own ``webhook_url`` is an
        agent-facing endpoint scoped to that mailbox: it never receives ``oversight.*``
        events (P3: held mail is announced to the operator, not to the agent).
Rule 2: a 2xx delivers; 410 Gone disables the endpoint and dead-letters the delivery; any
        other answer or a timeout (status None) retries on WEBHOOK_SCHEDULE with jitter,
        waiting at least what Retry-After asks (capped), and dead-letters after the last.
Rule 3: a dead or delivered delivery can be replayed: it becomes pending again, due now,
        with its attempts kept (the log shows every one).
Rule 4: at-least-once: a delivery found ``delivering`` after a crash is pending again (the
        receiver dedupes on ``webhook-id``, which is the delivery id and never changes).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

import icontract

from multimail_core.delivery import (
    JITTER_DRAW_MAX,
    RETRY_AFTER_CAP,
    WEBHOOK_SCHEDULE,
    honour_retry_after,
    next_attempt_at,
    webhook_retry_delay,
    with_jitter,
)
from multimail_core.events import PUBLIC_TYPES


class EndpointStatus(enum.Enum):
    ACTIVE = "active"
    DISABLED = "disabled"


class DeliveryStatus(enum.Enum):
    PENDING = "pending"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    DEAD = "dead"


@dataclass(frozen=True)
class Endpoint:
    id: str
    account_id: str
    url: str
    events: frozenset[str]  # empty: every public type
    mailbox_id: str | None
    status: EndpointStatus = EndpointStatus.ACTIVE
    agent_facing: bool = False  # a mailbox's own webhook_url: its agent reads what it gets


@icontract.invariant(lambda self: self.attempts >= 0)
@icontract.invariant(
    lambda self: (self.status is DeliveryStatus.PENDING) == (self.next_attempt_at is not None)
)
@dataclass(frozen=True)
class Delivery:
    id: str
    endpoint_id: str
    event_id: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: int | None
    last_status: int | None = None


#: What an agent-facing endpoint may receive (Rule 1, P3).
AGENT_TYPES: frozenset[str] = frozenset(t for t in PUBLIC_TYPES if not t.startswith("oversight."))


@icontract.ensure(
    lambda endpoint, event_type, mailbox_id, result: (
        not result
        or (
            endpoint.status is EndpointStatus.ACTIVE
            and event_type in PUBLIC_TYPES
            and (endpoint.mailbox_id is None or endpoint.mailbox_id == mailbox_id)
        )
    )
)
@icontract.ensure(
    lambda endpoint, event_type, result: (
        not result or not endpoint.agent_facing or event_type in AGENT_TYPES
    ),
    "P3: no oversight event reaches an agent's endpoint",
)
def matches(endpoint: Endpoint, event_type: str, mailbox_id: str | None) -> bool:
    """Does ``endpoint`` receive an event of this type and mailbox? (Rule 1)"""
    if endpoint.status is not EndpointStatus.ACTIVE or event_type not in PUBLIC_TYPES:
        return False
    if endpoint.agent_facing and event_type not in AGENT_TYPES:
        return False
    if endpoint.mailbox_id is not None and endpoint.mailbox_id != mailbox_id:
        return False
    return not endpoint.events or event_type in endpoint.events


@icontract.ensure(lambda events, result: result == (not events or events <= PUBLIC_TYPES))
def valid_filter(events: frozenset[str]) -> bool:
    """Every type named in a filter is a public event type (an empty filter is all)."""
    return not events or events <= PUBLIC_TYPES


@dataclass(frozen=True)
class Outcome:
    delivery: Delivery
    disable_endpoint: bool


@icontract.require(lambda delivery: delivery.status is DeliveryStatus.DELIVERING)
@icontract.require(lambda status: status is None or 100 <= status <= 599)
@icontract.require(lambda draw: 0 <= draw <= JITTER_DRAW_MAX)
@icontract.require(lambda now: now >= 0)
@icontract.require(lambda retry_after: retry_after is None or retry_after >= 0)
@icontract.ensure(
    lambda status, result: (
        (result.delivery.status is DeliveryStatus.DELIVERED)
        == (status is not None and 200 <= status <= 299)
    )
)
@icontract.ensure(lambda status, result: result.disable_endpoint == (status == 410), "410 disables")
@icontract.ensure(lambda delivery, result: result.delivery.attempts == delivery.attempts + 1)
@icontract.ensure(
    lambda now, result: (
        result.delivery.next_attempt_at is None or result.delivery.next_attempt_at > now
    )
)
def after_attempt(
    delivery: Delivery,
    status: int | None,
    *,
    retry_after: int | None,
    draw: int,
    now: int,
) -> Outcome:
    """The delivery (and whether to disable its endpoint) after one attempt answered
    ``status`` (None: timeout or connection failure) (Rule 2)."""
    attempts = delivery.attempts + 1
    if status is not None and 200 <= status <= 299:
        done = replace(
            delivery,
            status=DeliveryStatus.DELIVERED,
            attempts=attempts,
            next_attempt_at=None,
            last_status=status,
        )
        return Outcome(done, False)
    if status == 410:
        gone = replace(
            delivery, status=DeliveryStatus.DEAD, attempts=attempts, next_attempt_at=None,
            last_status=status,
        )  # fmt: skip
        return Outcome(gone, True)
    wait = webhook_retry_delay(attempts)
    if wait is None:
        dead = replace(
            delivery, status=DeliveryStatus.DEAD, attempts=attempts, next_attempt_at=None,
            last_status=status,
        )  # fmt: skip
        return Outcome(dead, False)
    delay = honour_retry_after(with_jitter(wait, draw), retry_after)
    again = replace(
        delivery,
        status=DeliveryStatus.PENDING,
        attempts=attempts,
        next_attempt_at=next_attempt_at(now, max(1, delay)),
        last_status=status,
    )
    return Outcome(again, False)


@icontract.require(
    lambda delivery: delivery.status in (DeliveryStatus.DEAD, DeliveryStatus.DELIVERED)
)
@icontract.ensure(lambda result: result.status is DeliveryStatus.PENDING)
@icontract.ensure(lambda delivery, result: result.attempts == delivery.attempts)
def replay(delivery: Delivery, *, now: int) -> Delivery:
    """Send a finished delivery again (Rule 3); same id, so receivers can dedupe."""
    return replace(delivery, status=DeliveryStatus.PENDING, next_attempt_at=now)


@icontract.require(lambda delivery: delivery.status is DeliveryStatus.DELIVERING)
@icontract.ensure(lambda result: result.status is DeliveryStatus.PENDING)
def after_crash(delivery: Delivery, *, now: int) -> Delivery:
    """A delivery left ``delivering`` by a crash is due again (Rule 4: at least once)."""
    return replace(delivery, status=DeliveryStatus.PENDING, next_attempt_at=now)


@icontract.require(lambda delivery: delivery.status is DeliveryStatus.PENDING)
@icontract.ensure(lambda result: result.status is DeliveryStatus.DELIVERING)
def claim(delivery: Delivery) -> Delivery:
    return replace(delivery, status=DeliveryStatus.DELIVERING, next_attempt_at=None)


__all__ = [
    "AGENT_TYPES",
    "RETRY_AFTER_CAP",
    "WEBHOOK_SCHEDULE",
    "Delivery",
    "DeliveryStatus",
    "Endpoint",
    "EndpointStatus",
    "Outcome",
    "after_attempt",
    "after_crash",
    "claim",
    "matches",
    "replay",
    "valid_filter",
]
