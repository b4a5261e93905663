"""multimail_core.webhooks: who receives what, and what each attempt does (PRODUCT §9)."""

from __future__ import annotations

import pytest

from multimail_core import delivery, webhooks
from multimail_core.events import PUBLIC_TYPES

NOW = 1_700_000_000_000
MBX = "mbx_01JDQ8ZK3V5T7W9X2B4C6D8E0F"


def endpoint(**kw: object) -> webhooks.Endpoint:
    base: dict[str, object] = {
        "id": "wh_1", "account_id": "acc_1", "url": "https://hooks.example/x",
        "events": frozenset(), "mailbox_id": None,
    }  # fmt: skip
    base.update(kw)
    return webhooks.Endpoint(**base)  # type: ignore[arg-type]


def delivering(attempts: int = 0) -> webhooks.Delivery:
    return webhooks.Delivery("whd_1", "wh_1", "evt_1", webhooks.DeliveryStatus.DELIVERING,
                             attempts, None)  # fmt: skip


@pytest.mark.parametrize("type_", sorted(PUBLIC_TYPES))
def test_an_agents_own_endpoint_never_hears_of_oversight(type_: str):
    agent = endpoint(mailbox_id=MBX, agent_facing=True)
    operator = endpoint(mailbox_id=MBX)
    assert webhooks.matches(agent, type_, MBX) == (not type_.startswith("oversight."))
    assert webhooks.matches(operator, type_, MBX)


def test_filters_scope_and_status():
    hook = endpoint(events=frozenset({"message.received"}), mailbox_id=MBX)
    assert webhooks.matches(hook, "message.received", MBX)
    assert not webhooks.matches(hook, "message.sent", MBX)
    assert not webhooks.matches(hook, "message.received", "mbx_other")
    assert not webhooks.matches(hook, "message.read", MBX)  # not a public type
    off = endpoint(status=webhooks.EndpointStatus.DISABLED)
    assert not webhooks.matches(off, "mailbox.created", None)
    assert webhooks.valid_filter(frozenset({"message.sent"}))
    assert not webhooks.valid_filter(frozenset({"message.sent", "nope"}))


def test_each_failure_waits_longer_until_the_delivery_is_dead():
    current = delivering()
    waits = []
    for _ in range(len(delivery.WEBHOOK_SCHEDULE)):
        outcome = webhooks.after_attempt(current, 500, retry_after=None, draw=500, now=NOW)
        assert outcome.delivery.status is webhooks.DeliveryStatus.PENDING
        assert outcome.disable_endpoint is False
        waits.append((outcome.delivery.next_attempt_at or 0) - NOW)
        current = webhooks.claim(outcome.delivery)
    assert waits == [s * 1000 for s in delivery.WEBHOOK_SCHEDULE]
    last = webhooks.after_attempt(current, None, retry_after=None, draw=500, now=NOW)
    assert last.delivery.status is webhooks.DeliveryStatus.DEAD
    assert last.delivery.attempts == len(delivery.WEBHOOK_SCHEDULE) + 1
    revived = webhooks.replay(last.delivery, now=NOW)
    assert revived.status is webhooks.DeliveryStatus.PENDING
    assert revived.next_attempt_at == NOW


def test_retry_after_is_honoured_and_410_disables():
    slow = webhooks.after_attempt(delivering(), 429, retry_after=600, draw=500, now=NOW)
    assert slow.delivery.next_attempt_at == NOW + 600_000
    gone = webhooks.after_attempt(delivering(), 410, retry_after=None, draw=500, now=NOW)
    assert gone.disable_endpoint is True
    assert gone.delivery.status is webhooks.DeliveryStatus.DEAD
    ok = webhooks.after_attempt(delivering(), 204, retry_after=None, draw=500, now=NOW)
    assert ok.delivery.status is webhooks.DeliveryStatus.DELIVERED
    redirect = webhooks.after_attempt(delivering(), 302, retry_after=None, draw=500, now=NOW)
    assert redirect.delivery.status is webhooks.DeliveryStatus.PENDING  # never followed


def test_a_crash_mid_request_makes_the_delivery_due_again_with_its_id():
    again = webhooks.after_crash(delivering(attempts=2), now=NOW)
    assert again.status is webhooks.DeliveryStatus.PENDING
    assert again.id == "whd_1"
    assert again.attempts == 2
