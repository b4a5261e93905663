"""Scenarios for the inbound lifecycle, visibility and classification (PRODUCT.md §4, P3)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from multimail_core.errors import IllegalTransition
from multimail_core.events import (
    MessageArchived,
    MessageRead,
    MessageReceived,
    MessageRejected,
    MessageReplied,
    MessageUnread,
)
from multimail_core.inbound import (
    Approve,
    Archive,
    Inbound,
    Kind,
    MarkRead,
    MarkReplied,
    MarkUnread,
    Reject,
    Status,
    apply,
    classify,
    is_visible,
    requires_action,
)
from tests.unit.conftest import ACC_A, MBX_1, NOW

S = Status
MSG = "msg_1"


def message(
    status: Status = S.UNREAD, *, kind: Kind = Kind.PERSONAL, replied: bool = False
) -> Inbound:
    return Inbound(
        id=MSG,
        mailbox_id=MBX_1,
        account_id=ACC_A,
        thread_id="thr_1",
        sender="ana@customer.example",
        subject="Where is my order?",
        kind=kind,
        status=status,
        received_at=NOW,
        approval_id="apr_1" if status is S.PENDING_INBOUND_APPROVAL else None,
        replied=replied,
    )


# --- classify -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({}, Kind.PERSONAL, id="no-headers"),
        pytest.param({"content-type": "text/plain; charset=utf-8"}, Kind.PERSONAL, id="plain"),
        pytest.param(
            {"content-type": "multipart/report; report-type=delivery-status; boundary=x"},
            Kind.BOUNCE,
            id="dsn",
        ),
        pytest.param(
            {"content-type": 'multipart/report; boundary="b1"; report-type="delivery-status"'},
            Kind.BOUNCE,
            id="dsn-quoted-param-not-first",
        ),
        pytest.param(
            {"content-type": "multipart/report; report-type=feedback-report"},
            Kind.COMPLAINT,
            id="arf",
        ),
        pytest.param(
            {"content-type": "multipart/mixed; report-type=delivery-status"},
            Kind.PERSONAL,
            id="report-type-outside-multipart-report",
        ),
        pytest.param(
            {"content-type": "multipart/report; report-type=disposition-notification"},
            Kind.AUTO_REPLY,
            id="read-receipt",
        ),
        pytest.param({"auto-submitted": "auto-replied"}, Kind.AUTO_REPLY, id="auto-replied"),
        pytest.param({"auto-submitted": "auto-generated"}, Kind.AUTO_REPLY, id="auto-generated"),
        pytest.param(
            {"auto-submitted": "auto-replied; owner-email=ops@example.com"},
            Kind.AUTO_REPLY,
            id="auto-replied-with-params",
        ),
        pytest.param({"auto-submitted": "no"}, Kind.PERSONAL, id="auto-submitted-no"),
        pytest.param({"precedence": "bulk"}, Kind.BULK, id="precedence-bulk"),
        pytest.param({"precedence": "list"}, Kind.BULK, id="precedence-list"),
        pytest.param({"precedence": "junk"}, Kind.BULK, id="precedence-junk"),
        pytest.param({"precedence": "first-class"}, Kind.PERSONAL, id="precedence-other"),
        pytest.param({"list-id": "<news.example.com>"}, Kind.BULK, id="list-id"),
        pytest.param(
            {"list-unsubscribe": "<mailto:leave@example.com>"}, Kind.BULK, id="list-unsubscribe"
        ),
        pytest.param(
            {"auto-submitted": "no", "list-id": "<news.example.com>"},
            Kind.BULK,
            id="auto-submitted-no-on-list-mail",
        ),
        pytest.param(
            {
                "content-type": "multipart/report; report-type=delivery-status",
                "auto-submitted": "auto-replied",
                "list-id": "<x.example.com>",
            },
            Kind.BOUNCE,
            id="dsn-wins",
        ),
        pytest.param(
            {"auto-submitted": "auto-replied", "precedence": "bulk"},
            Kind.AUTO_REPLY,
            id="auto-reply-before-bulk",
        ),
    ],
)
def test_classify(headers: dict[str, str], expected: Kind) -> None:
    assert classify(headers) is expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"content-type": "Multipart/Report; Report-Type=Delivery-Status"}, Kind.BOUNCE),
        ({"content-type": "MULTIPART/REPORT; REPORT-TYPE=FEEDBACK-REPORT"}, Kind.COMPLAINT),
        ({"auto-submitted": "Auto-Replied"}, Kind.AUTO_REPLY),
        ({"auto-submitted": " NO "}, Kind.PERSONAL),
        ({"auto-submitted": "No"}, Kind.PERSONAL),
        ({"precedence": "BULK"}, Kind.BULK),
        ({"precedence": " List "}, Kind.BULK),
    ],
)
def test_classify_ignores_the_case_of_values(headers: dict[str, str], expected: Kind) -> None:
    assert classify(headers) is expected


# --- requires_action and visibility ---------------------------------------------------------------


@pytest.mark.parametrize("replied", [False, True])
@pytest.mark.parametrize("status", list(Status))
@pytest.mark.parametrize("kind", list(Kind))
def test_requires_action_only_for_unread_unreplied_personal_mail(
    kind: Kind, status: Status, replied: bool
) -> None:
    expected = kind is Kind.PERSONAL and status is S.UNREAD and not replied
    assert requires_action(message(status, kind=kind, replied=replied)) is expected


def test_a_held_personal_message_does_not_yet_require_action() -> None:
    assert requires_action(message(S.PENDING_INBOUND_APPROVAL)) is False


@pytest.mark.parametrize(
    ("status", "visible"),
    [
        (S.PENDING_INBOUND_APPROVAL, False),
        (S.REJECTED, False),
        (S.UNREAD, True),
        (S.READ, True),
        (S.ARCHIVED, True),
    ],
)
def test_visibility(status: Status, visible: bool) -> None:
    assert is_visible(message(status)) is visible


# --- transitions ----------------------------------------------------------------------------------

COMMANDS = {
    Approve: Approve("apr_1", "key_overseer"),
    Reject: Reject("apr_1", "key_overseer", "phishing"),
    MarkRead: MarkRead(),
    MarkUnread: MarkUnread(),
    Archive: Archive(),
    MarkReplied: MarkReplied("msg_reply"),
}

HELD = S.PENDING_INBOUND_APPROVAL
REVIEW = ("apr_1", "key_overseer")
LEGAL = {
    (HELD, Approve): (S.UNREAD, MessageReceived(MBX_1, MSG, "thr_1")),
    (HELD, Reject): (S.REJECTED, MessageRejected(MBX_1, MSG, *REVIEW, "phishing")),
    (S.UNREAD, MarkRead): (S.READ, MessageRead(MBX_1, MSG)),
    (S.READ, MarkUnread): (S.UNREAD, MessageUnread(MBX_1, MSG)),
    (S.UNREAD, Archive): (S.ARCHIVED, MessageArchived(MBX_1, MSG)),
    (S.READ, Archive): (S.ARCHIVED, MessageArchived(MBX_1, MSG)),
    (S.ARCHIVED, MarkRead): (S.READ, MessageRead(MBX_1, MSG)),
    (S.UNREAD, MarkReplied): (S.READ, MessageReplied(MBX_1, MSG, "msg_reply")),
    (S.READ, MarkReplied): (S.READ, MessageReplied(MBX_1, MSG, "msg_reply")),
    (S.ARCHIVED, MarkReplied): (S.ARCHIVED, MessageReplied(MBX_1, MSG, "msg_reply")),
}  # fmt: skip


@pytest.mark.parametrize(("pair", "outcome"), LEGAL.items(), ids=lambda v: str(v))
def test_legal_transition(pair: tuple[Status, type], outcome: tuple[Status, object]) -> None:
    status, command_type = pair
    after, events = apply(message(status), COMMANDS[command_type], now=NOW)
    assert (after.status, events) == (outcome[0], (outcome[1],))


ILLEGAL = [(s, c) for s in Status for c in COMMANDS if (s, c) not in LEGAL]


def test_twenty_of_the_thirty_pairs_are_illegal() -> None:
    assert len(ILLEGAL) == 30 - len(LEGAL) == 20


@pytest.mark.parametrize(("status", "command_type"), ILLEGAL, ids=str)
def test_illegal_transition(status: Status, command_type: type) -> None:
    with pytest.raises(IllegalTransition) as caught:
        apply(message(status), COMMANDS[command_type], now=NOW)
    assert (caught.value.entity, caught.value.state, caught.value.command) == (
        "inbound message",
        status.value,
        command_type.__name__,
    )


def test_replying_marks_replied_and_read_and_ends_the_need_for_action() -> None:
    unread = message(S.UNREAD)
    assert requires_action(unread) is True
    after, _ = apply(unread, MarkReplied("msg_reply"), now=NOW)
    assert (after.status, after.replied) == (S.READ, True)
    assert requires_action(after) is False


def test_replied_survives_mark_unread() -> None:
    replied, _ = apply(message(S.UNREAD), MarkReplied("msg_reply"), now=NOW)
    unread_again, _ = apply(replied, MarkUnread(), now=NOW)
    assert (unread_again.status, unread_again.replied) == (S.UNREAD, True)
    assert requires_action(unread_again) is False


def test_mark_unread_brings_back_the_need_for_action() -> None:
    read, _ = apply(message(S.UNREAD), MarkRead(), now=NOW)
    unread_again, _ = apply(read, MarkUnread(), now=NOW)
    assert requires_action(unread_again) is True


def test_approval_makes_a_held_message_visible_and_actionable() -> None:
    held = message(S.PENDING_INBOUND_APPROVAL)
    after, _ = apply(held, COMMANDS[Approve], now=NOW)
    assert is_visible(after) is True
    assert requires_action(after) is True
    assert after == replace(held, status=S.UNREAD)
