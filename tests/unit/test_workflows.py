"""Scenarios for the use cases: authorization, mailbox status, oversight, suppression together."""

from __future__ import annotations

from dataclasses import replace

import icontract
import pytest

from multimail_core import approval as approvals
from multimail_core import inbound, outbound, oversight, reputation, workflows
from multimail_core.authorization import Key
from multimail_core.errors import (
    IllegalTransition,
    InvalidValue,
    MailboxUnavailable,
    NotPermitted,
    OversightDenied,
    RecipientSuppressed,
)
from multimail_core.events import (
    MailboxDecommissioned,
    MailboxDemoted,
    MailboxUpdated,
    MessageApproved,
    MessageCancelled,
    MessageHeld,
    MessageQueued,
    MessageRead,
    MessageReceived,
    MessageRejected,
    MessageScheduled,
    ModeChanged,
    ReputationWarned,
    UpgradeRequested,
)
from multimail_core.mailbox import Mailbox
from multimail_core.mailbox import Status as BoxStatus
from multimail_core.modes import OversightMode, rank
from tests.unit.conftest import (
    ACC_A,
    ACC_B,
    IDS,
    MBX_1,
    MBX_2,
    MINUTE,
    NOW,
    admin_key,
    agent_key,
    box,
    draft,
    key,
    overseer_key,
)

M = OversightMode
OS = outbound.Status
IS = inbound.Status
CUSTOMER = "ana@customer.example"
NO_SUPPRESSION: frozenset[str] = frozenset()


def submit(
    mode: OversightMode = M.GATED_SEND,
    d: workflows.Draft | None = None,
    *,
    k: Key | None = None,
    suppressed: frozenset[str] = NO_SUPPRESSION,
    **box_kw: object,
) -> workflows.Submission:
    return workflows.submit(
        box(mode, **box_kw),  # type: ignore[arg-type]
        k or agent_key(),
        d or draft(CUSTOMER),
        IDS,
        suppressed=suppressed,
        now=NOW,
    )


def receive(b: Mailbox) -> workflows.Receipt:
    return workflows.receive(
        b,
        sender=CUSTOMER,
        subject="Where is my order?",
        body_text="It has been a week.",
        kind=inbound.Kind.PERSONAL,
        ids=IDS,
        now=NOW,
    )


# --- submit in every mode ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "allowlist", "status", "held", "event_type", "monitored"),
    [
        (M.GATED_ALL, frozenset({CUSTOMER}), OS.PENDING_APPROVAL, True, MessageHeld, False),
        (M.GATED_SEND, frozenset(), OS.PENDING_APPROVAL, True, MessageHeld, False),
        (M.GATED_SEND, frozenset({CUSTOMER}), OS.QUEUED, False, MessageQueued, False),
        (M.MONITORED, frozenset(), OS.QUEUED, False, MessageQueued, True),
        (M.AUTONOMOUS, frozenset(), OS.QUEUED, False, MessageQueued, False),
    ],
    ids=["gated_all", "gated_send-held", "gated_send-allowlisted", "monitored", "autonomous"],
)
def test_submit_in_each_mode(
    mode: OversightMode,
    allowlist: frozenset[str],
    status: outbound.Status,
    held: bool,
    event_type: type,
    monitored: bool,
) -> None:
    result = submit(mode, allowlist=allowlist)
    assert result.message.status is status
    assert (result.approval is not None) is held
    assert result.message.approval_id == ("apr_1" if held else None)
    assert [type(e) for e in result.events] == [event_type]
    assert result.message.monitored is monitored
    assert result.message.handoffs == 0


def test_submit_in_read_only_is_refused() -> None:
    with pytest.raises(OversightDenied) as caught:
        submit(M.READ_ONLY)
    assert caught.value.rule == "read_only_refuses_send"
    assert caught.value.code == "oversight_denied"


def test_held_submission_creates_the_approval_and_names_it_in_the_event() -> None:
    result = submit(M.GATED_ALL, draft(CUSTOMER, body_html="<p>hi</p>"))
    assert result.approval == approvals.Approval(
        id="apr_1",
        account_id=ACC_A,
        mailbox_id=MBX_1,
        message_id="msg_1",
        direction=approvals.Direction.OUTBOUND,
        created_by="key_agent",
        original=approvals.Content("Your order", "It ships tomorrow.", "<p>hi</p>"),
        created_at=NOW,
    )
    assert result.events == (MessageHeld(MBX_1, "msg_1", "apr_1", "outbound"),)
    assert result.events[0].TYPE == "oversight.pending"
    assert result.message.next_attempt_at is None
    assert result.decision.rule == "gated_all_holds_send"


def test_queued_submission_records_every_recipient_and_is_due_now() -> None:
    d = draft(CUSTOMER, cc=("Bob@Partner.Example",), bcc=("audit@acme.example",))
    result = submit(M.AUTONOMOUS, d)
    assert result.message.recipients == (CUSTOMER, "Bob@partner.example", "audit@acme.example")
    assert result.message.created_by == "key_agent"
    assert (result.message.thread_id, result.message.id) == ("thr_1", "msg_1")
    assert result.message.next_attempt_at == NOW
    assert result.events == (MessageQueued(MBX_1, "msg_1"),)


def test_future_send_at_schedules_an_unheld_message() -> None:
    later = NOW + 30 * MINUTE
    result = submit(M.AUTONOMOUS, draft(CUSTOMER, send_at=later))
    assert result.message.status is OS.SCHEDULED
    assert result.message.next_attempt_at == later
    assert result.events == (MessageScheduled(MBX_1, "msg_1", later),)


def test_send_at_now_or_earlier_queues_at_once() -> None:
    for send_at in (NOW, NOW - MINUTE):
        result = submit(M.AUTONOMOUS, draft(CUSTOMER, send_at=send_at))
        assert result.message.status is OS.QUEUED
        assert result.events == (MessageQueued(MBX_1, "msg_1"),)


def test_future_send_at_on_a_held_message_waits_for_approval_first() -> None:
    result = submit(M.GATED_ALL, draft(CUSTOMER, send_at=NOW + 30 * MINUTE))
    assert result.message.status is OS.PENDING_APPROVAL


def test_a_reply_is_gated_like_a_send() -> None:
    result = workflows.submit(
        box(M.GATED_ALL),
        agent_key(),
        draft(CUSTOMER),
        IDS,
        suppressed=NO_SUPPRESSION,
        now=NOW,
        reply=True,
    )
    assert result.message.status is OS.PENDING_APPROVAL


def test_gated_send_holds_if_a_bcc_recipient_is_not_allowlisted() -> None:
    d = draft(CUSTOMER, bcc=("eve@stranger.example",))
    assert submit(M.GATED_SEND, d, allowlist=frozenset({CUSTOMER})).message.status is (
        OS.PENDING_APPROVAL
    )


# --- dry run -------------------------------------------------------------------------------------


def test_check_send_answers_the_decision_without_creating_anything() -> None:
    decision = workflows.check_send(
        box(M.GATED_SEND), agent_key(), draft(CUSTOMER), suppressed=NO_SUPPRESSION
    )
    assert decision == oversight.Decision(
        oversight.Verdict.HOLD,
        "gated_send_holds",
        "gated_send: a recipient is not on the allowlist, so a reviewer decides",
    )


def test_check_send_reports_the_monitored_copy() -> None:
    decision = workflows.check_send(
        box(M.MONITORED), agent_key(), draft(CUSTOMER), suppressed=NO_SUPPRESSION
    )
    assert (decision.verdict, decision.monitor_copy) == (oversight.Verdict.ALLOW, True)


def test_check_send_raises_like_submit() -> None:
    with pytest.raises(OversightDenied):
        workflows.check_send(
            box(M.READ_ONLY), agent_key(), draft(CUSTOMER), suppressed=NO_SUPPRESSION
        )


# --- suppression ---------------------------------------------------------------------------------

SUPPRESSED = frozenset({"ana@customer.example"})


@pytest.mark.parametrize(
    ("spelling", "reported"),
    [
        ("ana@customer.example", "ana@customer.example"),
        ("ana+orders@customer.example", "ana+orders@customer.example"),
        ("Ana@Customer.EXAMPLE", "Ana@customer.example"),
        ("ANA+x@customer.example", "ANA+x@customer.example"),
    ],
)
def test_a_suppressed_recipient_is_refused_in_any_spelling(spelling: str, reported: str) -> None:
    with pytest.raises(RecipientSuppressed) as caught:
        submit(M.AUTONOMOUS, draft(spelling), suppressed=SUPPRESSED)
    assert caught.value.addresses == (reported,)
    assert caught.value.code == "recipient_suppressed"
    assert reported in caught.value.detail


def test_only_the_suppressed_recipients_are_listed() -> None:
    d = draft("bob@partner.example", cc=("ana@customer.example",))
    with pytest.raises(RecipientSuppressed) as caught:
        submit(M.AUTONOMOUS, d, suppressed=SUPPRESSED)
    assert caught.value.addresses == ("ana@customer.example",)


def test_suppression_applies_to_held_messages_too() -> None:
    with pytest.raises(RecipientSuppressed):
        submit(M.GATED_ALL, suppressed=SUPPRESSED)


def test_oversight_is_checked_before_suppression() -> None:
    with pytest.raises(OversightDenied):
        submit(M.READ_ONLY, suppressed=SUPPRESSED)


def test_a_different_local_part_is_not_suppressed() -> None:
    result = submit(M.AUTONOMOUS, draft("anna@customer.example"), suppressed=SUPPRESSED)
    assert result.message.status is OS.QUEUED


# --- mailbox status, recipients, authorization ----------------------------------------------------


@pytest.mark.parametrize("status", [BoxStatus.SUSPENDED, BoxStatus.DECOMMISSIONED])
def test_an_unavailable_mailbox_cannot_send(status: BoxStatus) -> None:
    with pytest.raises(MailboxUnavailable) as caught:
        submit(M.AUTONOMOUS, status=status)
    assert status.value in caught.value.detail


def test_authorization_is_checked_before_mailbox_status() -> None:
    with pytest.raises(NotPermitted) as caught:
        submit(M.AUTONOMOUS, k=agent_key(mailbox_id=MBX_2), status=BoxStatus.SUSPENDED)
    assert caught.value.rule == "other_mailbox"


def test_a_key_of_another_account_cannot_send() -> None:
    with pytest.raises(NotPermitted) as caught:
        submit(M.AUTONOMOUS, k=admin_key(account=ACC_B))
    assert caught.value.rule == "other_account"


def test_an_overseer_key_cannot_send() -> None:
    with pytest.raises(NotPermitted) as caught:
        submit(M.AUTONOMOUS, k=overseer_key())
    assert caught.value.rule == "missing_scope"


def _many(n: int) -> workflows.Draft:
    return draft(*(f"r{i}@customer.example" for i in range(n)))


def test_more_than_fifty_recipients_are_refused() -> None:
    with pytest.raises(InvalidValue) as caught:
        submit(M.AUTONOMOUS, _many(51))
    assert caught.value.field == "to"


def test_fifty_recipients_counting_cc_and_bcc_are_accepted_fifty_one_are_not() -> None:
    assert len(submit(M.AUTONOMOUS, _many(50)).message.recipients) == 50
    over = replace(_many(49), cc=(draft("c@x.example").to[0],), bcc=(draft("b@x.example").to[0],))
    with pytest.raises(InvalidValue):
        submit(M.AUTONOMOUS, over)


# --- receive and read -----------------------------------------------------------------------------


def test_receive_in_gated_all_is_held_and_hidden() -> None:
    receipt = receive(box(M.GATED_ALL))
    assert receipt.message.status is IS.PENDING_INBOUND_APPROVAL
    assert inbound.is_visible(receipt.message) is False
    assert receipt.events == (MessageHeld(MBX_1, "msg_1", "apr_1", "inbound"),)
    assert receipt.approval is not None
    assert receipt.approval.direction is approvals.Direction.INBOUND
    assert receipt.approval.created_by is None
    assert receipt.approval.original == approvals.Content(
        "Where is my order?", "It has been a week.", None
    )


@pytest.mark.parametrize("mode", [M.READ_ONLY, M.GATED_SEND, M.MONITORED, M.AUTONOMOUS])
def test_receive_in_other_modes_is_visible_and_announced(mode: OversightMode) -> None:
    receipt = receive(box(mode))
    assert receipt.message.status is IS.UNREAD
    assert inbound.is_visible(receipt.message) is True
    assert receipt.approval is None
    assert receipt.message.approval_id is None
    assert receipt.events == (MessageReceived(MBX_1, "msg_1", "thr_1"),)
    assert receipt.events[0].TYPE == "message.received"


@pytest.mark.parametrize("status", [BoxStatus.SUSPENDED, BoxStatus.DECOMMISSIONED])
def test_only_an_active_mailbox_receives(status: BoxStatus) -> None:
    with pytest.raises(MailboxUnavailable) as caught:
        receive(box(status=status))
    assert caught.value.detail == f"mailbox is {status.value}; it receives nothing"


def test_read_marks_an_unread_message_read() -> None:
    message = receive(box()).message
    after, events = workflows.read(box(), agent_key(), message, now=NOW + 1)
    assert after.status is IS.READ
    assert events == (MessageRead(MBX_1, "msg_1"),)


def test_reading_a_read_message_changes_nothing() -> None:
    message = replace(receive(box()).message, status=IS.READ)
    assert workflows.read(box(), agent_key(), message, now=NOW) == (message, ())


def test_a_held_message_cannot_be_read() -> None:
    message = receive(box(M.GATED_ALL)).message
    with pytest.raises(OversightDenied) as caught:
        workflows.read(box(M.GATED_ALL), agent_key(), message, now=NOW)
    assert caught.value.rule == "held_message_hidden"


def test_a_rejected_message_cannot_be_read() -> None:
    message = replace(receive(box(M.GATED_ALL)).message, status=IS.REJECTED)
    with pytest.raises(OversightDenied) as caught:
        workflows.read(box(M.GATED_ALL), admin_key(), message, now=NOW)
    assert caught.value.rule == "held_message_hidden"


def test_reading_another_mailboxs_message_through_this_mailbox_is_a_contract_violation() -> None:
    foreign = replace(receive(box()).message, mailbox_id=MBX_2, account_id=ACC_B)
    with pytest.raises(icontract.ViolationError):
        workflows.read(box(), agent_key(), foreign, now=NOW)


def test_reading_needs_the_read_scope() -> None:
    message = receive(box()).message
    with pytest.raises(NotPermitted) as caught:
        workflows.read(box(), key("send", mailboxes=(MBX_1,)), message, now=NOW)
    assert caught.value.rule == "missing_scope"


# --- decide --------------------------------------------------------------------------------------


def held() -> workflows.Submission:
    return submit(M.GATED_ALL, draft(CUSTOMER, body_html="<p>It ships tomorrow.</p>"))


def test_approve_queues_the_held_message() -> None:
    s = held()
    assert s.approval is not None
    result = workflows.decide(
        box(M.GATED_ALL), overseer_key(), s.approval, s.message, approve=True, now=NOW + 1
    )
    assert result.approval.status is approvals.Status.APPROVED
    assert isinstance(result.message, outbound.Outbound)
    assert result.message.status is OS.QUEUED
    assert result.message.approved_by == "key_overseer"
    assert result.events == (MessageApproved(MBX_1, "msg_1", "apr_1", "key_overseer", False),)
    assert result.review is reputation.Outcome.REVIEW_APPROVED


def test_reject_keeps_the_reason() -> None:
    s = held()
    assert s.approval is not None
    result = workflows.decide(
        box(M.GATED_ALL),
        overseer_key(),
        s.approval,
        s.message,
        approve=False,
        reason="off-brand",
        now=NOW + 1,
    )
    assert result.message.status is OS.REJECTED
    assert result.approval.reason == "off-brand"
    assert result.events == (MessageRejected(MBX_1, "msg_1", "apr_1", "key_overseer", "off-brand"),)
    assert result.review is reputation.Outcome.REVIEW_REJECTED


def test_approve_with_edits_sends_the_edit_and_keeps_both_versions() -> None:
    s = held()
    assert s.approval is not None
    edit = approvals.Content("Your order #42", "It ships Monday.", "<p>It ships Monday.</p>")
    result = workflows.decide(
        box(M.GATED_ALL),
        overseer_key(),
        s.approval,
        s.message,
        approve=True,
        edits=edit,
        now=NOW + 1,
    )
    assert isinstance(result.message, outbound.Outbound)
    sent = result.message
    assert (sent.subject, sent.body_text, sent.body_html) == (
        "Your order #42",
        "It ships Monday.",
        "<p>It ships Monday.</p>",
    )
    assert result.approval.edited == edit
    assert result.approval.original == approvals.Content(
        "Your order", "It ships tomorrow.", "<p>It ships tomorrow.</p>"
    )
    assert result.events == (MessageApproved(MBX_1, "msg_1", "apr_1", "key_overseer", True),)
    assert result.review is reputation.Outcome.REVIEW_EDITED


def test_an_edit_that_drops_the_html_body_sends_no_html() -> None:
    s = held()
    assert s.approval is not None
    edit = approvals.Content("Your order", "It ships Monday.", None)
    result = workflows.decide(
        box(M.GATED_ALL),
        overseer_key(),
        s.approval,
        s.message,
        approve=True,
        edits=edit,
        now=NOW + 1,
    )
    assert result.approval.edited == edit
    assert isinstance(result.message, outbound.Outbound)
    assert result.message.body_html is None


def test_the_creating_admin_cannot_approve_its_own_message() -> None:
    s = submit(M.GATED_ALL, k=admin_key())
    assert s.approval is not None
    with pytest.raises(NotPermitted) as caught:
        workflows.decide(
            box(M.GATED_ALL), admin_key(), s.approval, s.message, approve=True, now=NOW
        )
    assert caught.value.rule == "self_approval"


def test_another_admin_may_approve_an_admins_message() -> None:
    s = submit(M.GATED_ALL, k=admin_key())
    assert s.approval is not None
    other = admin_key(id="key_admin_2")
    result = workflows.decide(box(M.GATED_ALL), other, s.approval, s.message, approve=True, now=NOW)
    assert result.approval.decided_by == "key_admin_2"


def test_an_agent_key_cannot_decide() -> None:
    s = held()
    assert s.approval is not None
    with pytest.raises(NotPermitted) as caught:
        workflows.decide(
            box(M.GATED_ALL),
            agent_key(id="key_agent_2"),
            s.approval,
            s.message,
            approve=True,
            now=NOW,
        )
    assert caught.value.rule == "missing_scope"


def test_an_overseer_of_another_account_cannot_decide() -> None:
    s = held()
    assert s.approval is not None
    with pytest.raises(NotPermitted) as caught:
        workflows.decide(
            box(M.GATED_ALL),
            overseer_key(account=ACC_B),
            s.approval,
            s.message,
            approve=True,
            now=NOW,
        )
    assert caught.value.rule == "other_account"


def test_deciding_twice_is_illegal() -> None:
    s = held()
    assert s.approval is not None
    first = workflows.decide(
        box(M.GATED_ALL), overseer_key(), s.approval, s.message, approve=True, now=NOW
    )
    with pytest.raises(IllegalTransition):
        workflows.decide(
            box(M.GATED_ALL), overseer_key(), first.approval, first.message, approve=False, now=NOW
        )


def test_approving_held_inbound_mail_makes_it_visible() -> None:
    receipt = receive(box(M.GATED_ALL))
    assert receipt.approval is not None
    result = workflows.decide(
        box(M.GATED_ALL), overseer_key(), receipt.approval, receipt.message, approve=True, now=NOW
    )
    assert isinstance(result.message, inbound.Inbound)
    assert result.message.status is IS.UNREAD
    assert inbound.is_visible(result.message) is True
    assert result.events == (MessageReceived(MBX_1, "msg_1", "thr_1"),)
    assert result.review is None


def test_rejecting_held_inbound_mail_keeps_it_hidden() -> None:
    receipt = receive(box(M.GATED_ALL))
    assert receipt.approval is not None
    result = workflows.decide(
        box(M.GATED_ALL),
        overseer_key(),
        receipt.approval,
        receipt.message,
        approve=False,
        reason="phishing",
        now=NOW,
    )
    assert isinstance(result.message, inbound.Inbound)
    assert result.message.status is IS.REJECTED
    assert inbound.is_visible(result.message) is False


# --- what may have changed while a message waited for its reviewer --------------------------


@pytest.mark.parametrize("status", [BoxStatus.SUSPENDED, BoxStatus.DECOMMISSIONED])
def test_approving_mail_of_a_mailbox_that_is_no_longer_active_is_refused(
    status: BoxStatus,
) -> None:
    s = held()
    assert s.approval is not None
    with pytest.raises(MailboxUnavailable):
        workflows.decide(
            box(M.GATED_ALL, status=status),
            overseer_key(),
            s.approval,
            s.message,
            approve=True,
            now=NOW,
        )


def test_approving_mail_of_a_mailbox_lowered_to_read_only_is_refused() -> None:
    s = held()
    assert s.approval is not None
    with pytest.raises(OversightDenied) as caught:
        workflows.decide(
            box(M.READ_ONLY), overseer_key(), s.approval, s.message, approve=True, now=NOW
        )
    assert caught.value.rule == "read_only_refuses_release"


def test_approving_mail_to_a_recipient_suppressed_meanwhile_is_refused() -> None:
    s = held()
    assert s.approval is not None
    with pytest.raises(RecipientSuppressed) as caught:
        workflows.decide(
            box(M.GATED_ALL),
            overseer_key(),
            s.approval,
            s.message,
            approve=True,
            suppressed=frozenset({CUSTOMER}),
            now=NOW,
        )
    assert caught.value.addresses == (CUSTOMER,)


def test_approval_is_not_re_gated_by_a_later_mode_change() -> None:
    s = held()
    assert s.approval is not None
    result = workflows.decide(
        box(M.GATED_SEND), overseer_key(), s.approval, s.message, approve=True, now=NOW
    )
    assert isinstance(result.message, outbound.Outbound)
    assert result.message.status is OS.QUEUED


def test_rejecting_still_works_in_a_read_only_or_suspended_mailbox() -> None:
    s = held()
    assert s.approval is not None
    for b in (box(M.READ_ONLY), box(M.GATED_ALL, status=BoxStatus.SUSPENDED)):
        result = workflows.decide(b, overseer_key(), s.approval, s.message, approve=False, now=NOW)
        assert isinstance(result.message, outbound.Outbound)
        assert result.message.status is OS.REJECTED


@pytest.mark.parametrize("status", [BoxStatus.SUSPENDED, BoxStatus.DECOMMISSIONED])
def test_held_inbound_mail_is_not_released_into_an_inactive_mailbox(status: BoxStatus) -> None:
    receipt = receive(box(M.GATED_ALL))
    assert receipt.approval is not None
    inactive = box(M.GATED_ALL, status=status)
    with pytest.raises(MailboxUnavailable):
        workflows.decide(
            inactive, overseer_key(), receipt.approval, receipt.message, approve=True, now=NOW
        )
    rejected = workflows.decide(
        inactive, overseer_key(), receipt.approval, receipt.message, approve=False, now=NOW
    )
    assert isinstance(rejected.message, inbound.Inbound)
    assert rejected.message.status is IS.REJECTED


def test_deciding_through_another_mailbox_is_a_contract_violation() -> None:
    s = held()
    assert s.approval is not None
    with pytest.raises(icontract.ViolationError):
        workflows.decide(
            box(M.GATED_ALL, id=MBX_2),
            overseer_key(),
            s.approval,
            s.message,
            approve=True,
            now=NOW,
        )


# --- start_delivery -------------------------------------------------------------------------


def due(mode: OversightMode = M.AUTONOMOUS) -> outbound.Outbound:
    return submit(mode, draft(CUSTOMER, cc=("bob@partner.example",))).message


def test_start_delivery_claims_a_due_message() -> None:
    after, events = workflows.start_delivery(box(), due(), suppressed=NO_SUPPRESSION, now=NOW)
    assert after.status is OS.SENDING
    assert after.attempts == 1
    assert [type(e).__name__ for e in events] == ["DeliveryStarted"]


@pytest.mark.parametrize(
    ("b", "suppressed"),
    [
        pytest.param(box(status=BoxStatus.SUSPENDED), NO_SUPPRESSION, id="suspended"),
        pytest.param(box(status=BoxStatus.DECOMMISSIONED), NO_SUPPRESSION, id="decommissioned"),
        pytest.param(box(M.READ_ONLY), NO_SUPPRESSION, id="read_only"),
        pytest.param(box(), frozenset({"bob@partner.example"}), id="suppressed-cc"),
    ],
)
def test_start_delivery_cancels_mail_that_may_no_longer_leave(
    b: Mailbox, suppressed: frozenset[str]
) -> None:
    after, events = workflows.start_delivery(b, due(), suppressed=suppressed, now=NOW)
    assert after.status is OS.CANCELLED
    assert after.handoffs == 0
    assert events == (MessageCancelled(MBX_1, "msg_1"),)


def test_start_delivery_of_a_deferred_message_claims_the_next_attempt() -> None:
    claimed, _ = workflows.start_delivery(box(), due(), suppressed=NO_SUPPRESSION, now=NOW)
    deferred, _ = outbound.apply(claimed, outbound.RecordAttempt(451), now=NOW)
    again, _ = workflows.start_delivery(box(), deferred, suppressed=NO_SUPPRESSION, now=NOW)
    assert (again.status, again.attempts) == (OS.SENDING, 2)


def test_start_delivery_of_a_held_message_is_refused() -> None:
    with pytest.raises(icontract.ViolationError):
        workflows.start_delivery(
            box(M.GATED_ALL), held().message, suppressed=NO_SUPPRESSION, now=NOW
        )


def test_start_delivery_of_a_held_message_is_refused_even_when_the_mailbox_is_suspended() -> None:
    # A contract, not an outcome: the delivery worker only ever claims due (queued or
    # deferred) mail, so handing it a held message is a bug in the caller.
    with pytest.raises(icontract.ViolationError):
        workflows.start_delivery(
            box(M.GATED_ALL, status=BoxStatus.SUSPENDED),
            held().message,
            suppressed=NO_SUPPRESSION,
            now=NOW,
        )


# --- change_mode, request_upgrade, allowlist, decommission ----------------------------------------


def test_an_agent_cannot_raise_its_own_autonomy() -> None:
    with pytest.raises(OversightDenied) as caught:
        workflows.change_mode(box(M.GATED_SEND), agent_key(), M.AUTONOMOUS, now=NOW)
    assert caught.value.rule == "agent_cannot_raise"


def test_an_agent_may_lower_its_autonomy() -> None:
    after, events = workflows.change_mode(box(M.MONITORED), agent_key(), M.GATED_ALL, now=NOW)
    assert after.mode is M.GATED_ALL
    assert events == (ModeChanged(MBX_1, M.MONITORED, M.GATED_ALL, "key_agent"),)


@pytest.mark.parametrize("reviewer", [overseer_key(), admin_key()], ids=["oversight", "admin"])
def test_an_overseer_may_raise_autonomy(reviewer: Key) -> None:
    after, events = workflows.change_mode(box(M.GATED_ALL), reviewer, M.AUTONOMOUS, now=NOW)
    assert after.mode is M.AUTONOMOUS
    assert events == (ModeChanged(MBX_1, M.GATED_ALL, M.AUTONOMOUS, reviewer.id),)


@pytest.mark.parametrize("k", [agent_key(), overseer_key()], ids=["agent", "overseer"])
def test_setting_the_same_mode_changes_nothing(k: Key) -> None:
    start = box(M.MONITORED)
    assert workflows.change_mode(start, k, M.MONITORED, now=NOW) == (start, ())


@pytest.mark.parametrize(
    "k", [key("read"), key("send", "read")], ids=["reader", "unrestricted-sender"]
)
def test_a_key_that_is_neither_overseer_nor_the_mailboxs_own_cannot_even_lower(k: Key) -> None:
    with pytest.raises(OversightDenied) as caught:
        workflows.change_mode(box(M.MONITORED), k, M.GATED_ALL, now=NOW)
    assert caught.value.rule == "agent_cannot_raise"


def test_a_mailbox_restricted_overseer_may_lower_but_not_raise() -> None:
    mbx_overseer = key("oversight", id="key_mbx_overseer", mailboxes=(MBX_1,))
    lowered, _ = workflows.change_mode(box(M.MONITORED), mbx_overseer, M.GATED_SEND, now=NOW)
    assert lowered.mode is M.GATED_SEND
    with pytest.raises(OversightDenied) as caught:
        workflows.change_mode(box(M.MONITORED), mbx_overseer, M.AUTONOMOUS, now=NOW)
    assert caught.value.rule == "agent_cannot_raise"


def test_an_agent_key_of_another_mailbox_cannot_change_the_mode() -> None:
    with pytest.raises(NotPermitted) as caught:
        workflows.change_mode(box(M.MONITORED), agent_key(mailbox_id=MBX_2), M.GATED_ALL, now=NOW)
    assert caught.value.rule == "other_mailbox"


def test_a_decommissioned_mailbox_cannot_change_mode() -> None:
    gone = box(M.MONITORED, status=BoxStatus.DECOMMISSIONED)
    with pytest.raises(IllegalTransition):
        workflows.change_mode(gone, admin_key(), M.GATED_ALL, now=NOW)


def test_a_decommissioned_mailbox_refuses_even_an_unchanged_mode() -> None:
    gone = box(M.MONITORED, status=BoxStatus.DECOMMISSIONED)
    with pytest.raises(IllegalTransition):
        workflows.change_mode(gone, admin_key(), M.MONITORED, now=NOW)


def test_request_upgrade_emits_the_request_and_changes_nothing() -> None:
    start = box(M.GATED_SEND)
    events = workflows.request_upgrade(start, agent_key(), M.MONITORED)
    assert events == (UpgradeRequested(MBX_1, M.GATED_SEND, M.MONITORED, "key_agent"),)
    assert events[0].TYPE == "oversight.upgrade_requested"
    assert start.mode is M.GATED_SEND


@pytest.mark.parametrize("requested", [M.GATED_SEND, M.GATED_ALL, M.READ_ONLY])
def test_request_upgrade_must_be_a_raise(requested: OversightMode) -> None:
    with pytest.raises(InvalidValue) as caught:
        workflows.request_upgrade(box(M.GATED_SEND), agent_key(), requested)
    assert caught.value.field == "target_mode"


def test_request_upgrade_on_a_decommissioned_mailbox_is_refused() -> None:
    gone = box(M.GATED_SEND, status=BoxStatus.DECOMMISSIONED)
    with pytest.raises(MailboxUnavailable):
        workflows.request_upgrade(gone, agent_key(), M.AUTONOMOUS)


def test_request_upgrade_by_another_mailboxs_agent_is_refused() -> None:
    with pytest.raises(NotPermitted) as caught:
        workflows.request_upgrade(box(M.GATED_SEND), agent_key(mailbox_id=MBX_2), M.MONITORED)
    assert caught.value.rule == "other_mailbox"


@pytest.mark.parametrize("k", [overseer_key(), admin_key()], ids=["oversight", "admin"])
def test_overseers_set_the_allowlist(k: Key) -> None:
    after, events = workflows.set_allowlist(box(), k, frozenset({"*@partner.example"}), now=NOW)
    assert after.allowlist == frozenset({"*@partner.example"})
    assert events == (MailboxUpdated(MBX_1, ("allowlist",)),)


@pytest.mark.parametrize(
    ("k", "rule"),
    [
        (agent_key(), "agent_key_account_operation"),
        (key("send", "read"), "missing_scope"),
        (key("read"), "missing_scope"),
    ],
    ids=["agent", "unrestricted-sender", "reader"],
)
def test_non_overseers_cannot_set_the_allowlist(k: Key, rule: str) -> None:
    with pytest.raises(NotPermitted) as caught:
        workflows.set_allowlist(box(), k, frozenset({"*@partner.example"}), now=NOW)
    assert caught.value.rule == rule


def test_only_an_admin_decommissions() -> None:
    after, events = workflows.decommission(box(), admin_key(), now=NOW)
    assert after.status is BoxStatus.DECOMMISSIONED
    assert events == (MailboxDecommissioned(MBX_1, "agent@acme.agents.localhost"),)
    for k in (overseer_key(), agent_key(), key("send", "read")):
        with pytest.raises(NotPermitted):
            workflows.decommission(box(), k, now=NOW)


def test_decommissioning_twice_is_illegal() -> None:
    gone, _ = workflows.decommission(box(), admin_key(), now=NOW)
    with pytest.raises(IllegalTransition):
        workflows.decommission(gone, admin_key(), now=NOW + 1)


# --- reputation enforcement -----------------------------------------------------------------------

BAD_BOUNCES = reputation.Counters(sent=100, hard_bounced=20)  # 20 % >= 10 % demotion bar
BAD_COMPLAINTS = reputation.Counters(sent=1_000, complaints=5)  # 0.5 % >= 0.5 % demotion bar
WARN_BOUNCES = reputation.Counters(sent=100, hard_bounced=6)  # 6 %: warn, not demote
CLEAN = reputation.Counters(sent=500, delivered=500)


@pytest.mark.parametrize("mode", [M.MONITORED, M.AUTONOMOUS])
def test_bad_bounce_rate_demotes_to_gated_send(mode: OversightMode) -> None:
    after, events = workflows.enforce_reputation(box(mode), BAD_BOUNCES, now=NOW)
    assert after.mode is M.GATED_SEND
    reason = "bounce rate 20.00% >= 10.00%; demoted to gated_send"
    assert events == (MailboxDemoted(MBX_1, mode, M.GATED_SEND, reason),)
    assert events[0].TYPE == "reputation.warning"


def test_bad_complaint_rate_demotes_too() -> None:
    after, events = workflows.enforce_reputation(box(M.MONITORED), BAD_COMPLAINTS, now=NOW)
    assert after.mode is M.GATED_SEND
    assert isinstance(events[0], MailboxDemoted)
    assert events[0].reason.startswith("complaint rate 0.50% >= 0.50%")


def test_demotion_keeps_a_suspended_mailbox_suspended() -> None:
    suspended = box(M.AUTONOMOUS, status=BoxStatus.SUSPENDED)
    after, _ = workflows.enforce_reputation(suspended, BAD_BOUNCES, now=NOW)
    assert (after.mode, after.status) == (M.GATED_SEND, BoxStatus.SUSPENDED)


@pytest.mark.parametrize("mode", [M.GATED_SEND, M.GATED_ALL, M.READ_ONLY])
def test_at_or_below_gated_send_a_demotion_level_rate_only_warns(mode: OversightMode) -> None:
    start = box(mode)
    after, events = workflows.enforce_reputation(start, BAD_BOUNCES, now=NOW)
    assert after == start
    assert events == (
        ReputationWarned(MBX_1, "bounce rate 20.00% >= 10.00%; already at or below gated_send"),
    )


def test_a_warning_level_rate_warns_without_demoting() -> None:
    start = box(M.AUTONOMOUS)
    after, events = workflows.enforce_reputation(start, WARN_BOUNCES, now=NOW)
    assert after == start
    assert events == (ReputationWarned(MBX_1, "bounce rate 6.00% >= 5.00%"),)


def test_nothing_happens_below_the_minimum_volume() -> None:
    start = box(M.AUTONOMOUS)
    tiny = reputation.Counters(sent=49, hard_bounced=49, complaints=49)
    assert workflows.enforce_reputation(start, tiny, now=NOW) == (start, ())


def test_clean_counters_do_nothing() -> None:
    start = box(M.AUTONOMOUS)
    assert workflows.enforce_reputation(start, CLEAN, now=NOW) == (start, ())


@pytest.mark.parametrize("mode", list(M))
def test_enforcement_never_raises_autonomy(mode: OversightMode) -> None:
    for counters in (CLEAN, WARN_BOUNCES, BAD_BOUNCES, BAD_COMPLAINTS):
        after, _ = workflows.enforce_reputation(box(mode), counters, now=NOW)
        assert rank(after.mode) <= rank(mode)


def test_a_decommissioned_mailbox_is_left_alone() -> None:
    gone = box(M.AUTONOMOUS, status=BoxStatus.DECOMMISSIONED)
    assert workflows.enforce_reputation(gone, BAD_BOUNCES, now=NOW) == (gone, ())


# --- suppressions_for -----------------------------------------------------------------------------

BOUNCED_TO = ["Bob+news@Partner.Example", "bob@partner.example", "carol@partner.example"]


@pytest.mark.parametrize("outcome", [reputation.Outcome.HARD_BOUNCE, reputation.Outcome.COMPLAINT])
def test_hard_bounces_and_complaints_suppress_normalized_addresses_once(
    outcome: reputation.Outcome,
) -> None:
    assert workflows.suppressions_for(outcome, BOUNCED_TO) == (
        "bob@partner.example",
        "carol@partner.example",
    )


@pytest.mark.parametrize(
    "outcome",
    [reputation.Outcome.SOFT_BOUNCE, reputation.Outcome.DELIVERED, reputation.Outcome.REPLY],
)
def test_other_outcomes_suppress_nothing(outcome: reputation.Outcome) -> None:
    assert workflows.suppressions_for(outcome, BOUNCED_TO) == ()


def test_a_suppression_from_a_bounce_blocks_the_next_send() -> None:
    suppressed = frozenset(
        workflows.suppressions_for(reputation.Outcome.HARD_BOUNCE, ["Ana+Orders@customer.example"])
    )
    with pytest.raises(RecipientSuppressed):
        submit(M.AUTONOMOUS, draft("ana@customer.example"), suppressed=suppressed)
