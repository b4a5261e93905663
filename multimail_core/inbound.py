"""Inbound message lifecycle and what an inbound message asks of its agent.

Rule 1: every legal (status, command) pair is in TRANSITIONS; anything else raises
        IllegalTransition and changes nothing.
Rule 2: a message held for review (gated_all) is invisible to the agent until a reviewer
        approves it; a rejected one stays invisible (P3).
Rule 3: ``requires_action`` is true exactly for a visible, unread, unreplied message that
        is personal mail: not a bounce/DSN, not an ARF complaint, not an auto-reply
        (RFC 3834 ``Auto-Submitted``), not list or bulk mail. Mail from other agents is
        personal mail.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace

import icontract

from multimail_core.errors import IllegalTransition
from multimail_core.events import (
    Event,
    MessageArchived,
    MessageRead,
    MessageReceived,
    MessageRejected,
    MessageReplied,
    MessageUnread,
)


class Status(enum.Enum):
    PENDING_INBOUND_APPROVAL = "pending_inbound_approval"
    UNREAD = "unread"
    READ = "read"
    ARCHIVED = "archived"
    REJECTED = "rejected"


class Kind(enum.Enum):
    PERSONAL = "personal"
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    AUTO_REPLY = "auto_reply"
    BULK = "bulk"


HIDDEN = frozenset({Status.PENDING_INBOUND_APPROVAL, Status.REJECTED})


@dataclass(frozen=True)
class Inbound:
    id: str
    mailbox_id: str
    account_id: str
    thread_id: str
    sender: str
    subject: str
    kind: Kind
    status: Status
    received_at: int
    approval_id: str | None = None
    replied: bool = False


# --- commands ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Approve:
    approval_id: str
    reviewer: str


@dataclass(frozen=True)
class Reject:
    approval_id: str
    reviewer: str
    reason: str = ""


@dataclass(frozen=True)
class MarkRead:
    pass


@dataclass(frozen=True)
class MarkUnread:
    pass


@dataclass(frozen=True)
class Archive:
    pass


@dataclass(frozen=True)
class MarkReplied:
    reply_id: str


Command = Approve | Reject | MarkRead | MarkUnread | Archive | MarkReplied

S = Status

#: (status, command type) → status. ``spec/inbound.toml`` mirrors it.
TRANSITIONS: dict[tuple[Status, type[Command]], Status] = {
    (S.PENDING_INBOUND_APPROVAL, Approve): S.UNREAD,
    (S.PENDING_INBOUND_APPROVAL, Reject): S.REJECTED,
    (S.UNREAD, MarkRead): S.READ,
    (S.READ, MarkUnread): S.UNREAD,
    (S.UNREAD, Archive): S.ARCHIVED,
    (S.READ, Archive): S.ARCHIVED,
    (S.ARCHIVED, MarkRead): S.READ,
    (S.UNREAD, MarkReplied): S.READ,
    (S.READ, MarkReplied): S.READ,
    (S.ARCHIVED, MarkReplied): S.ARCHIVED,
}


@icontract.ensure(
    lambda message, command, result: result == ((message.status, type(command)) in TRANSITIONS)
)
def accepts(message: Inbound, command: Command) -> bool:
    return (message.status, type(command)) in TRANSITIONS


def _event(m: Inbound, c: Command) -> Event:
    mb, mid = m.mailbox_id, m.id
    if isinstance(c, Approve):
        # Approval is the moment the agent receives the mail (P3): its event is the
        # agent-facing one; the reviewer and approval id go in the audit entry.
        return MessageReceived(mb, mid, m.thread_id)
    if isinstance(c, Reject):
        return MessageRejected(mb, mid, c.approval_id, c.reviewer, c.reason)
    if isinstance(c, MarkRead):
        return MessageRead(mb, mid)
    if isinstance(c, MarkUnread):
        return MessageUnread(mb, mid)
    if isinstance(c, Archive):
        return MessageArchived(mb, mid)
    return MessageReplied(mb, mid, c.reply_id)


@icontract.ensure(lambda message, result: result[0].id == message.id)
@icontract.ensure(
    lambda message, command, result: (
        result[0].status is TRANSITIONS[(message.status, type(command))]
    )
)
@icontract.ensure(lambda message, result: result[0].replied or not message.replied)
@icontract.ensure(lambda result: len(result[1]) == 1, "P12: one event per change")
def apply(message: Inbound, command: Command, *, now: int) -> tuple[Inbound, tuple[Event, ...]]:
    """Apply one command; return the new message and its one event.

    :raises IllegalTransition: when the pair is not in TRANSITIONS.
    """
    target = TRANSITIONS.get((message.status, type(command)))
    if target is None:
        raise IllegalTransition("inbound message", message.status.value, type(command).__name__)
    replied = message.replied or isinstance(command, MarkReplied)
    return replace(message, status=target, replied=replied), (_event(message, command),)


@icontract.ensure(lambda message, result: result == (message.status not in HIDDEN), "P3")
def is_visible(message: Inbound) -> bool:
    """May the agent list, read or be notified of this message?"""
    return message.status not in HIDDEN


@icontract.ensure(lambda message, result: not result or is_visible(message))
@icontract.ensure(lambda message, result: not result or message.kind is Kind.PERSONAL)
def requires_action(message: Inbound) -> bool:
    return message.kind is Kind.PERSONAL and message.status is S.UNREAD and not message.replied


def _param(value: str, name: str) -> str:
    for part in value.split(";")[1:]:
        key, _, val = part.strip().partition("=")
        if key.strip().lower() == name:
            return val.strip().strip('"').lower()
    return ""


@icontract.ensure(lambda headers, result: isinstance(result, Kind))
def classify(headers: Mapping[str, str]) -> Kind:
    """Kind of an inbound message from its headers (names lowercased by the caller).

    DSN: ``multipart/report; report-type=delivery-status`` (RFC 3464 §2); ARF:
    ``report-type=feedback-report`` (RFC 5965 §2); auto-reply: ``Auto-Submitted`` other than
    ``no`` (RFC 3834 §5), or an RFC 8098 read receipt; bulk: ``Precedence: bulk|list|junk``
    or ``List-Id`` / ``List-Unsubscribe`` (RFC 2919, RFC 2369).
    """
    ctype = headers.get("content-type", "")
    if ctype.split(";")[0].strip().lower() == "multipart/report":
        report = _param(ctype, "report-type")
        if report == "delivery-status":
            return Kind.BOUNCE
        if report == "feedback-report":
            return Kind.COMPLAINT
        if report == "disposition-notification":
            return Kind.AUTO_REPLY  # RFC 8098 read receipt: informative, never actionable
    auto = headers.get("auto-submitted", "").split(";")[0].strip().lower()
    if auto and auto != "no":
        return Kind.AUTO_REPLY
    if headers.get("precedence", "").strip().lower() in ("bulk", "list", "junk"):
        return Kind.BULK
    if "list-id" in headers or "list-unsubscribe" in headers:
        return Kind.BULK
    return Kind.PERSONAL


#: Kinds an agent must not answer with a reply (RFC 3834 §2: no automatic response to
#: automatic mail, nor to delivery and feedback reports): replying is how loops start.
UNANSWERABLE = frozenset({Kind.BOUNCE, Kind.COMPLAINT, Kind.AUTO_REPLY})


@icontract.ensure(lambda kind, result: result == (kind not in UNANSWERABLE))
def answerable(kind: Kind) -> bool:
    """May an agent reply to a message of this kind? (It may still write a new message.)"""
    return kind not in UNANSWERABLE


_REPLY_PREFIXES = ("re:", "fwd:", "fw:", "aw:", "wg:", "sv:", "vs:", "tr:", "rv:")


def _strip_prefixes(subject: str) -> str:
    text = " ".join(subject.casefold().split())
    changed = True
    while changed:
        changed = False
        for prefix in _REPLY_PREFIXES:
            if text.startswith(prefix):
                text = text[len(prefix) :].lstrip()
                changed = True
                break
    return text


@icontract.ensure(lambda result: result == result.strip())
@icontract.ensure(lambda result: not result.startswith(_REPLY_PREFIXES))
def thread_subject(subject: str) -> str:
    """The subject a thread is recognised by: reply and forward prefixes (``Re:``,
    ``Fwd:``, ``AW:`` …, repeated) removed, whitespace collapsed, case folded."""
    return _strip_prefixes(subject)


@icontract.ensure(
    lambda subject, result: (
        result == (thread_subject(subject) != " ".join(subject.casefold().split()))
    )
)
def is_reply_subject(subject: str) -> bool:
    """Does the subject carry a reply or forward prefix?"""
    return thread_subject(subject) != " ".join(subject.casefold().split())
