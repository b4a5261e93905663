"""Scenarios for approvals: one decision, by a different overseer (PRODUCT.md §3, P1)."""

from __future__ import annotations

import pytest

from multimail_core.approval import (
    REVIEWER_RULES,
    Approval,
    Approve,
    Content,
    Direction,
    Reject,
    Status,
    apply,
    reviewer_denial,
)
from multimail_core.authorization import Key
from multimail_core.errors import IllegalTransition, NotPermitted
from tests.unit.conftest import ACC_A, ACC_B, MBX_1, MBX_2, NOW, admin_key, key, overseer_key

ORIGINAL = Content("Your order", "It ships tomorrow.", "<p>It ships tomorrow.</p>")
LATER = NOW + 5_000


def pending(
    created_by: str | None = "key_agent", direction: Direction = Direction.OUTBOUND
) -> Approval:
    return Approval(
        id="apr_1",
        account_id=ACC_A,
        mailbox_id=MBX_1,
        message_id="msg_1",
        direction=direction,
        created_by=created_by,
        original=ORIGINAL,
        created_at=NOW,
    )


def test_approve_records_who_and_when() -> None:
    decided, edited = apply(pending(), Approve(overseer_key()), now=LATER)
    assert edited is False
    assert decided.status is Status.APPROVED
    assert (decided.decided_by, decided.decided_at) == ("key_overseer", LATER)
    assert decided.reason == ""
    assert decided.edited is None
    assert decided.original == ORIGINAL


def test_reject_keeps_the_reason() -> None:
    decided, edited = apply(pending(), Reject(overseer_key(), "promises a refund"), now=LATER)
    assert edited is False
    assert decided.status is Status.REJECTED
    assert decided.reason == "promises a refund"
    assert decided.decided_by == "key_overseer"
    assert decided.edited is None


def test_approve_with_different_content_records_the_edit_and_keeps_the_original() -> None:
    edit = Content("Your order #42", "It ships Monday.", None)
    decided, edited = apply(pending(), Approve(overseer_key(), edit), now=LATER)
    assert edited is True
    assert decided.edited == edit
    assert decided.original == ORIGINAL


def test_approve_with_content_equal_to_the_original_records_no_edit() -> None:
    same = Content("Your order", "It ships tomorrow.", "<p>It ships tomorrow.</p>")
    decided, edited = apply(pending(), Approve(overseer_key(), same), now=LATER)
    assert edited is False
    assert decided.edited is None


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (Approve(overseer_key()), Approve(overseer_key(id="key_overseer_2"))),
        (Approve(overseer_key()), Reject(overseer_key(id="key_overseer_2"))),
        (Reject(overseer_key()), Approve(overseer_key(id="key_overseer_2"))),
        (Reject(overseer_key()), Reject(overseer_key())),
    ],
    ids=["approve-approve", "approve-reject", "reject-approve", "reject-reject"],
)
def test_an_approval_is_decided_once(first: Approve | Reject, second: Approve | Reject) -> None:
    decided, _ = apply(pending(), first, now=LATER)
    with pytest.raises(IllegalTransition) as caught:
        apply(decided, second, now=LATER + 1)
    assert caught.value.entity == "approval"
    assert caught.value.state == decided.status.value
    assert caught.value.command == type(second).__name__


def test_deciding_twice_is_refused_before_the_reviewer_is_judged() -> None:
    decided, _ = apply(pending(), Approve(overseer_key()), now=LATER)
    with pytest.raises(IllegalTransition):
        apply(decided, Approve(key("read", revoked=True)), now=LATER)


# --- reviewer rules -------------------------------------------------------------------------------


def test_reviewer_rules_in_order() -> None:
    assert [r.name for r in REVIEWER_RULES] == [
        "key_revoked",
        "other_account",
        "not_an_overseer",
        "other_mailbox",
        "self_approval",
    ]


@pytest.mark.parametrize(
    ("reviewer", "rule"),
    [
        pytest.param(key("oversight", revoked=True), "key_revoked", id="revoked"),
        pytest.param(overseer_key(account=ACC_B), "other_account", id="other-account"),
        pytest.param(admin_key(account=ACC_B), "other_account", id="other-account-admin"),
        pytest.param(key("send", "read"), "not_an_overseer", id="send-read"),
        pytest.param(key("read"), "not_an_overseer", id="read-only"),
        pytest.param(key("oversight", mailboxes=(MBX_2,)), "other_mailbox", id="other-mailbox"),
        pytest.param(admin_key(id="key_agent"), "self_approval", id="admin-creator"),
        pytest.param(
            key("oversight", account=ACC_B, revoked=True), "key_revoked", id="revoked-first"
        ),
        pytest.param(key("read", account=ACC_B), "other_account", id="account-before-scope"),
    ],
)
def test_reviewer_denied(reviewer: Key, rule: str) -> None:
    assert reviewer_denial(pending(), reviewer) == rule
    with pytest.raises(NotPermitted) as caught:
        apply(pending(), Approve(reviewer), now=LATER)
    assert caught.value.rule == rule


def test_the_creating_admin_key_cannot_reject_its_own_message_either() -> None:
    with pytest.raises(NotPermitted) as caught:
        apply(pending(created_by="key_admin"), Reject(admin_key(), "oops"), now=LATER)
    assert caught.value.rule == "self_approval"
    assert caught.value.detail == "the key that created a message cannot decide on it"


@pytest.mark.parametrize(
    "reviewer",
    [
        overseer_key(),
        admin_key(),
        key("oversight", "read", mailboxes=(MBX_1,)),
        key("oversight", mailboxes=(MBX_1, MBX_2)),
    ],
    ids=["overseer", "admin", "restricted-overseer", "overseer-of-two"],
)
def test_a_different_overseer_of_the_mailbox_may_decide(reviewer: Key) -> None:
    assert reviewer_denial(pending(), reviewer) is None
    decided, _ = apply(pending(), Approve(reviewer), now=LATER)
    assert decided.decided_by == reviewer.id


def test_an_inbound_approval_has_no_creator_so_any_overseer_decides() -> None:
    inbound = pending(created_by=None, direction=Direction.INBOUND)
    decided, _ = apply(inbound, Reject(admin_key(id="key_agent"), "spam"), now=LATER)
    assert (decided.status, decided.reason) == (Status.REJECTED, "spam")
