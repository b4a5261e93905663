"""Approvals: a held message's one decision.

Rule 1: an approval is decided once: PENDING → APPROVED or REJECTED; deciding again raises
        IllegalTransition (the shell answers 409) and changes nothing.
Rule 2: the reviewer holds ``admin`` or ``oversight``, belongs to the approval's account,
        covers the mailbox if restricted, is not revoked, and is not the key that created
        the message (no self-approval, even for admin keys) (P1).
Rule 3: the reviewer may edit subject and bodies before approving; the approval keeps the
        original and the edit so the audit log shows both.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace

import icontract

from multimail_core.authorization import Key, is_overseer
from multimail_core.errors import IllegalTransition, NotPermitted


class Status(enum.Enum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class Direction(enum.Enum):
    OUTBOUND = "outbound"
    INBOUND = "inbound"


@dataclass(frozen=True)
class Content:
    subject: str
    body_text: str
    body_html: str | None


@icontract.invariant(lambda self: (self.status is Status.PENDING) == (self.decided_by is None))
@icontract.invariant(lambda self: (self.decided_by is None) == (self.decided_at is None))
@icontract.invariant(lambda self: self.edited is None or self.status is Status.APPROVED)
@icontract.invariant(
    lambda self: self.created_by is None or self.decided_by != self.created_by,
    "no self-approval",
)
@dataclass(frozen=True)
class Approval:
    id: str
    account_id: str
    mailbox_id: str
    message_id: str
    direction: Direction
    created_by: str | None
    original: Content
    created_at: int
    status: Status = Status.PENDING
    decided_by: str | None = None
    decided_at: int | None = None
    reason: str = ""
    edited: Content | None = None


@dataclass(frozen=True)
class Approve:
    reviewer: Key
    edits: Content | None = None


@dataclass(frozen=True)
class Reject:
    reviewer: Key
    reason: str = ""


Command = Approve | Reject

#: (status, command type) → status. ``spec/approval.toml`` mirrors it.
TRANSITIONS: dict[tuple[Status, type[Command]], Status] = {
    (Status.PENDING, Approve): Status.APPROVED,
    (Status.PENDING, Reject): Status.REJECTED,
}


@dataclass(frozen=True)
class ReviewerRule:
    name: str
    denies: Callable[[Approval, Key], bool]
    reason: str


#: Ordered; the first rule that denies decides (Rule 2).
REVIEWER_RULES: tuple[ReviewerRule, ...] = (
    ReviewerRule("key_revoked", lambda a, k: k.revoked, "the key has been revoked"),
    ReviewerRule(
        "other_account", lambda a, k: k.account_id != a.account_id, "another account's approval"
    ),
    ReviewerRule(
        "not_an_overseer",
        lambda a, k: not is_overseer(k),
        "deciding needs an admin or oversight key",
    ),
    ReviewerRule(
        "other_mailbox",
        lambda a, k: k.mailbox_ids is not None and a.mailbox_id not in k.mailbox_ids,
        "the key is restricted to other mailboxes",
    ),
    ReviewerRule(
        "self_approval",
        lambda a, k: a.created_by is not None and k.id == a.created_by,
        "the key that created a message cannot decide on it",
    ),
)


@icontract.ensure(
    lambda approval, reviewer, result: result is None or result in {r.name for r in REVIEWER_RULES}
)
@icontract.ensure(
    lambda approval, reviewer, result: (
        result is not None or (is_overseer(reviewer) and reviewer.id != approval.created_by)
    ),
    "P1: only a different overseer decides",
)
def reviewer_denial(approval: Approval, reviewer: Key) -> str | None:
    """Name of the first rule that forbids ``reviewer`` to decide, or None."""
    for rule in REVIEWER_RULES:
        if rule.denies(approval, reviewer):
            return rule.name
    return None


@icontract.ensure(lambda approval, result: result[0].id == approval.id)
@icontract.ensure(lambda approval, result: approval.status is Status.PENDING)
@icontract.ensure(lambda result: result[0].status is not Status.PENDING)
@icontract.ensure(lambda approval, command, result: result[0].decided_by == command.reviewer.id)
def apply(approval: Approval, command: Command, *, now: int) -> tuple[Approval, bool]:
    """Decide; return the decided approval and whether the content was edited.

    :raises IllegalTransition: when already decided.
    :raises NotPermitted: when the reviewer may not decide (rule name in ``rule``).
    """
    target = TRANSITIONS.get((approval.status, type(command)))
    if target is None:
        raise IllegalTransition("approval", approval.status.value, type(command).__name__)
    denial = reviewer_denial(approval, command.reviewer)
    if denial is not None:
        reason = next(r.reason for r in REVIEWER_RULES if r.name == denial)
        raise NotPermitted(denial, reason)
    edits = command.edits if isinstance(command, Approve) else None
    edited = edits if edits is not None and edits != approval.original else None
    decided = replace(
        approval,
        status=target,
        decided_by=command.reviewer.id,
        decided_at=now,
        reason=command.reason if isinstance(command, Reject) else "",
        edited=edited,
    )
    return decided, edited is not None


#: How long an emailed approval link can decide (PRODUCT §4: signed, single-use, expiring).
LINK_TTL_MS = 7 * 86_400_000


@icontract.require(lambda now, expires_at: now >= 0 and expires_at >= 0)
@icontract.ensure(
    lambda approval, now, expires_at, result: (
        result == (approval.status is Status.PENDING and now <= expires_at)
    )
)
def link_open(approval: Approval, *, now: int, expires_at: int) -> bool:
    """May an emailed link still decide (and show) this approval? Only while it is pending
    and the link has not expired: a decided approval makes every link spent (single use)."""
    return approval.status is Status.PENDING and now <= expires_at
