"""Scenarios for the outbound lifecycle (PRODUCT.md §4, P1, P7, P12)."""

from __future__ import annotations

from dataclasses import replace

import icontract
import pytest

from multimail_core.delivery import DELIVERY_SCHEDULE
from multimail_core.errors import IllegalTransition
from multimail_core.events import (
    DeliveryStarted,
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
from multimail_core.outbound import (
    Approve,
    Cancel,
    Claim,
    ConfirmDelivery,
    Interrupt,
    Outbound,
    RecordAttempt,
    RecordBounce,
    RecordComplaint,
    Reject,
    Release,
    Status,
    apply,
    is_due,
    is_release_due,
)
from tests.unit.conftest import ACC_A, MBX_1, MINUTE, NOW

S = Status
MSG = "msg_1"
RCPTS = ("ana@customer.example", "bob@partner.example")


def message(status: Status = S.PENDING_APPROVAL, **changes: object) -> Outbound:
    base = Outbound(
        id=MSG,
        mailbox_id=MBX_1,
        account_id=ACC_A,
        thread_id="thr_1",
        created_by="key_agent",
        recipients=RCPTS,
        subject="Your order",
        body_text="It ships tomorrow.",
        body_html="<p>It ships tomorrow.</p>",
        status=status,
        monitored=False,
        created_at=NOW,
        approval_id="apr_1" if status is S.PENDING_APPROVAL else None,
        attempts=1 if status is S.SENDING else 0,  # a message in flight was claimed once
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def queued(**changes: object) -> Outbound:
    return message(S.QUEUED, next_attempt_at=NOW, **changes)


def sending(**changes: object) -> Outbound:
    msg, _ = apply(queued(**changes), Claim(), now=NOW)
    return msg


def sent() -> Outbound:
    msg, _ = apply(sending(), RecordAttempt(250, "2.0.0 OK"), now=NOW)
    return msg


# --- approval and scheduling ----------------------------------------------------------------------


def test_approve_queues_for_now() -> None:
    after, events = apply(message(), Approve("apr_1", "key_overseer"), now=NOW + MINUTE)
    assert after.status is S.QUEUED
    assert after.approved_by == "key_overseer"
    assert after.next_attempt_at == NOW + MINUTE
    assert (after.subject, after.body_text) == ("Your order", "It ships tomorrow.")
    assert events == (MessageApproved(MBX_1, MSG, "apr_1", "key_overseer", False),)


def test_approve_with_edits_replaces_content_and_says_edited() -> None:
    edited = ("Your order #42", "Ships Monday.", None)
    after, events = apply(message(), Approve("apr_1", "key_overseer", edited), now=NOW)
    assert (after.subject, after.body_text) == ("Your order #42", "Ships Monday.")
    assert after.body_html is None  # the reviewer's version is the whole content
    assert events == (MessageApproved(MBX_1, MSG, "apr_1", "key_overseer", True),)


def test_approve_with_edits_equal_to_the_original_is_not_an_edit() -> None:
    original = ("Your order", "It ships tomorrow.", "<p>It ships tomorrow.</p>")
    command = Approve("apr_1", "key_overseer", original)
    _, events = apply(message(), command, now=NOW)
    assert events[0] == MessageApproved(MBX_1, MSG, "apr_1", "key_overseer", False)


def test_approve_with_a_future_send_at_schedules_it() -> None:
    later = NOW + 60 * MINUTE
    after, _ = apply(message(send_at=later), Approve("apr_1", "key_overseer"), now=NOW)
    assert after.status is S.SCHEDULED
    assert after.next_attempt_at == later


def test_approve_after_send_at_has_passed_queues_it() -> None:
    after, _ = apply(message(send_at=NOW - 1), Approve("apr_1", "key_overseer"), now=NOW)
    assert after.status is S.QUEUED
    assert after.next_attempt_at == NOW


def test_approve_exactly_at_send_at_queues_it() -> None:
    after, _ = apply(message(send_at=NOW), Approve("apr_1", "key_overseer"), now=NOW)
    assert after.status is S.QUEUED


def test_release_queues_a_scheduled_message_when_due() -> None:
    later = NOW + 60 * MINUTE
    scheduled = message(S.SCHEDULED, send_at=later, next_attempt_at=later)
    after, events = apply(scheduled, Release(), now=later)
    assert after.status is S.QUEUED
    assert after.next_attempt_at == later
    assert events == (MessageQueued(MBX_1, MSG),)


def test_release_before_send_at_is_a_contract_violation() -> None:
    scheduled = message(S.SCHEDULED, send_at=NOW + MINUTE)
    with pytest.raises(icontract.ViolationError):
        apply(scheduled, Release(), now=NOW)


def test_reject_keeps_the_reason() -> None:
    after, events = apply(message(), Reject("apr_1", "key_overseer", "wrong tone"), now=NOW)
    assert after.status is S.REJECTED
    assert after.next_attempt_at is None
    assert events == (MessageRejected(MBX_1, MSG, "apr_1", "key_overseer", "wrong tone"),)


@pytest.mark.parametrize(
    "command",
    [Claim(), RecordAttempt(250), Interrupt(), ConfirmDelivery(), RecordComplaint(RCPTS)],
    ids=lambda c: type(c).__name__,
)
def test_a_held_message_leaves_only_through_approve_reject_or_cancel(command: object) -> None:
    with pytest.raises(IllegalTransition) as caught:
        apply(message(), command, now=NOW)  # type: ignore[arg-type]
    assert caught.value.state == "pending_approval"


@pytest.mark.parametrize("status", [S.PENDING_APPROVAL, S.QUEUED])
def test_release_of_an_unscheduled_message_is_an_illegal_transition(status: Status) -> None:
    with pytest.raises(IllegalTransition):
        apply(message(status), Release(), now=NOW)


# --- delivery attempts ----------------------------------------------------------------------------


def test_claim_starts_an_attempt() -> None:
    after, events = apply(queued(), Claim(), now=NOW)
    assert after.status is S.SENDING
    assert after.attempts == 1
    assert events == (DeliveryStarted(MBX_1, MSG, 1),)


def test_250_means_sent_and_one_handoff() -> None:
    after, events = apply(sending(), RecordAttempt(250, "2.0.0 OK queued"), now=NOW)
    assert after.status is S.SENT
    assert after.handoffs == 1
    assert after.last_reply == "250 2.0.0 OK queued"
    assert events == (MessageSent(MBX_1, MSG, False),)


def test_sent_event_carries_the_monitored_flag() -> None:
    _, events = apply(sending(monitored=True), RecordAttempt(250), now=NOW)
    assert events == (MessageSent(MBX_1, MSG, True),)


def test_451_defers_by_the_first_step_of_the_schedule() -> None:
    after, events = apply(sending(), RecordAttempt(451, "4.3.0 try later"), now=NOW)
    assert after.status is S.DEFERRED
    assert after.handoffs == 0
    assert after.next_attempt_at == NOW + 60_000  # DELIVERY_SCHEDULE[0] = 60 s, draw 500
    assert events == (MessageDeferred(MBX_1, MSG, 1, NOW + 60_000, "451 4.3.0 try later"),)


@pytest.mark.parametrize(("draw", "delay_ms"), [(0, 48_000), (500, 60_000), (1000, 72_000)])
def test_jitter_draw_moves_the_retry_by_up_to_twenty_percent(draw: int, delay_ms: int) -> None:
    after, _ = apply(sending(), RecordAttempt(451, draw=draw), now=NOW)
    assert after.next_attempt_at == NOW + delay_ms


def test_second_deferral_waits_the_second_step() -> None:
    deferred, _ = apply(sending(), RecordAttempt(421), now=NOW)
    claimed, events = apply(deferred, Claim(), now=NOW + 60_000)
    assert claimed.attempts == 2
    assert events == (DeliveryStarted(MBX_1, MSG, 2),)
    after, _ = apply(claimed, RecordAttempt(421), now=NOW + 60_000)
    assert after.next_attempt_at == NOW + 60_000 + 300_000


def test_550_bounces() -> None:
    after, events = apply(sending(), RecordAttempt(550, "5.1.1 user unknown"), now=NOW)
    assert after.status is S.BOUNCED
    assert after.handoffs == 0
    assert after.next_attempt_at is None
    assert events == (MessageBounced(MBX_1, MSG, RCPTS, "550 5.1.1 user unknown"),)


def test_enhanced_status_code_refines_the_basic_code() -> None:
    after, _ = apply(sending(), RecordAttempt(550, "4.2.2 mailbox full"), now=NOW)
    assert after.status is S.DEFERRED


def test_last_reply_is_cut_to_500_characters() -> None:
    after, _ = apply(sending(), RecordAttempt(451, "x" * 1000), now=NOW)
    assert after.last_reply == "451 " + "x" * 496


def test_deferred_until_retries_are_exhausted_then_failed() -> None:
    msg, now = queued(), NOW
    waits: list[int] = []
    while msg.status is not S.FAILED:
        msg, _ = apply(msg, Claim(), now=now)
        msg, events = apply(msg, RecordAttempt(451, "4.4.1 no answer"), now=now)
        if msg.status is S.DEFERRED:
            assert msg.next_attempt_at is not None
            waits.append(msg.next_attempt_at - now)
            now = msg.next_attempt_at
    assert msg.attempts == len(DELIVERY_SCHEDULE) + 1 == 14
    assert waits == [s * 1000 for s in DELIVERY_SCHEDULE]
    assert msg.handoffs == 0
    assert msg.next_attempt_at is None
    assert events == (MessageFailed(MBX_1, MSG, "451 4.4.1 no answer"),)


def test_interrupt_fails_the_message_rather_than_risk_a_second_handoff() -> None:
    after, events = apply(sending(), Interrupt(), now=NOW + 5)
    reply = "interrupted mid-delivery; not retried (at-most-once)"
    assert after.status is S.FAILED
    assert (after.attempts, after.handoffs) == (1, 0)
    assert after.next_attempt_at is None
    assert after.last_reply == reply
    assert events == (MessageFailed(MBX_1, MSG, reply),)


def test_an_interrupted_message_is_never_claimed_again() -> None:
    failed, _ = apply(sending(), Interrupt(), now=NOW)
    with pytest.raises(IllegalTransition):
        apply(failed, Claim(), now=NOW)


# --- cancel ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [S.PENDING_APPROVAL, S.SCHEDULED, S.QUEUED, S.DEFERRED])
def test_cancel_before_sending(status: Status) -> None:
    after, events = apply(message(status, next_attempt_at=NOW), Cancel(), now=NOW)
    assert after.status is S.CANCELLED
    assert after.next_attempt_at is None
    assert events == (MessageCancelled(MBX_1, MSG),)


@pytest.mark.parametrize(
    "status",
    [S.SENDING, S.SENT, S.DELIVERED, S.BOUNCED, S.FAILED, S.REJECTED, S.CANCELLED],
)
def test_cancel_from_sending_on_is_illegal(status: Status) -> None:
    msg = message(status, attempts=1, handoffs=1 if status in (S.SENT, S.DELIVERED) else 0)
    with pytest.raises(IllegalTransition) as caught:
        apply(msg, Cancel(), now=NOW)
    assert (caught.value.entity, caught.value.state, caught.value.command) == (
        "outbound message",
        status.value,
        "Cancel",
    )


# --- after the hand-off ---------------------------------------------------------------------------


def test_a_sent_message_is_never_claimed_again() -> None:
    with pytest.raises(IllegalTransition):
        apply(sent(), Claim(), now=NOW)


def test_confirm_delivery() -> None:
    after, events = apply(sent(), ConfirmDelivery(), now=NOW)
    assert after.status is S.DELIVERED
    assert events == (MessageDelivered(MBX_1, MSG),)


@pytest.mark.parametrize("after_sent", [ConfirmDelivery(), RecordBounce(RCPTS), None])
def test_complaint_keeps_the_status(after_sent: ConfirmDelivery | RecordBounce | None) -> None:
    before = sent() if after_sent is None else apply(sent(), after_sent, now=NOW)[0]
    after, events = apply(before, RecordComplaint(("ana@customer.example",)), now=NOW)
    assert after == before
    assert events == (MessageComplained(MBX_1, MSG, ("ana@customer.example",)),)


@pytest.mark.parametrize("delivered", [False, True])
def test_asynchronous_bounce_after_sent(delivered: bool) -> None:
    before = apply(sent(), ConfirmDelivery(), now=NOW)[0] if delivered else sent()
    dsn = RecordBounce(("bob@partner.example",), "5.1.1 user unknown")
    after, events = apply(before, dsn, now=NOW)
    assert after.status is S.BOUNCED
    assert after.handoffs == 1
    assert after.last_reply == "5.1.1 user unknown"
    assert events == (MessageBounced(MBX_1, MSG, ("bob@partner.example",), "5.1.1 user unknown"),)


def test_a_bounce_report_for_a_message_never_sent_is_illegal() -> None:
    with pytest.raises(IllegalTransition):
        apply(queued(), RecordBounce(("bob@partner.example",)), now=NOW)


# --- due checks -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "next_at", "expected"),
    [
        (S.QUEUED, NOW, True),
        (S.QUEUED, NOW - 1, True),
        (S.QUEUED, None, True),
        (S.QUEUED, NOW + 1, False),
        (S.DEFERRED, NOW, True),
        (S.DEFERRED, NOW + 60_000, False),
        (S.PENDING_APPROVAL, NOW, False),
        (S.SCHEDULED, NOW, False),
        (S.SENDING, NOW, False),
        (S.SENT, NOW, False),
        (S.CANCELLED, NOW, False),
    ],
)
def test_is_due(status: Status, next_at: int | None, expected: bool) -> None:
    msg = message(status, next_attempt_at=next_at, attempts=1)
    assert is_due(msg, now=NOW) is expected


@pytest.mark.parametrize(
    ("status", "send_at", "expected"),
    [
        (S.SCHEDULED, NOW, True),
        (S.SCHEDULED, NOW - 1, True),
        (S.SCHEDULED, NOW + 1, False),
        (S.QUEUED, NOW - 1, False),
        (S.PENDING_APPROVAL, NOW - 1, False),
    ],
)
def test_is_release_due(status: Status, send_at: int, expected: bool) -> None:
    assert is_release_due(message(status, send_at=send_at), now=NOW) is expected
