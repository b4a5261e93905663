"""Domain events: what happened, in the past tense, as frozen values.

Rule 1: every committed state change yields exactly one event (P12); the shell gives it an
        ``evt_`` id and writes it in the same transaction as the state (transactional outbox).
Rule 2: ``TYPE`` is the public event type of PRODUCT.md §9 that webhooks and the event
        stream carry; several internal events may share one public type.
Rule 3: events carry ids and small facts, never whole messages; the shell renders payloads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from multimail_core.modes import OversightMode


@dataclass(frozen=True)
class Event:
    """Base of all events; ``mailbox_id`` orders them per mailbox."""

    TYPE: ClassVar[str] = "event"
    mailbox_id: str


# --- mailboxes -------------------------------------------------------------------------


@dataclass(frozen=True)
class MailboxCreated(Event):
    TYPE: ClassVar[str] = "mailbox.created"
    address: str
    mode: OversightMode


@dataclass(frozen=True)
class MailboxUpdated(Event):
    TYPE: ClassVar[str] = "mailbox.updated"
    fields: tuple[str, ...]


@dataclass(frozen=True)
class ModeChanged(Event):
    TYPE: ClassVar[str] = "mailbox.updated"
    old: OversightMode
    new: OversightMode
    by: str


@dataclass(frozen=True)
class MailboxSuspended(Event):
    TYPE: ClassVar[str] = "mailbox.updated"


@dataclass(frozen=True)
class MailboxResumed(Event):
    TYPE: ClassVar[str] = "mailbox.updated"


@dataclass(frozen=True)
class MailboxDecommissioned(Event):
    TYPE: ClassVar[str] = "mailbox.decommissioned"
    address: str


@dataclass(frozen=True)
class UpgradeRequested(Event):
    TYPE: ClassVar[str] = "oversight.upgrade_requested"
    current: OversightMode
    requested: OversightMode
    by: str


@dataclass(frozen=True)
class ReputationWarned(Event):
    TYPE: ClassVar[str] = "reputation.warning"
    reason: str


@dataclass(frozen=True)
class MailboxDemoted(Event):
    TYPE: ClassVar[str] = "reputation.warning"
    old: OversightMode
    new: OversightMode
    reason: str


# --- messages --------------------------------------------------------------------------


@dataclass(frozen=True)
class MessageEvent(Event):
    message_id: str


@dataclass(frozen=True)
class MessageHeld(MessageEvent):
    TYPE: ClassVar[str] = "oversight.pending"
    approval_id: str
    direction: str


@dataclass(frozen=True)
class MessageApproved(MessageEvent):
    TYPE: ClassVar[str] = "oversight.approved"
    approval_id: str
    reviewer: str
    edited: bool


@dataclass(frozen=True)
class MessageRejected(MessageEvent):
    TYPE: ClassVar[str] = "oversight.rejected"
    approval_id: str
    reviewer: str
    reason: str


@dataclass(frozen=True)
class MessageQueued(MessageEvent):
    TYPE: ClassVar[str] = "message.queued"


@dataclass(frozen=True)
class MessageScheduled(MessageEvent):
    TYPE: ClassVar[str] = "message.scheduled"
    send_at: int


@dataclass(frozen=True)
class MessageCancelled(MessageEvent):
    TYPE: ClassVar[str] = "message.cancelled"


@dataclass(frozen=True)
class DeliveryStarted(MessageEvent):
    TYPE: ClassVar[str] = "message.sending"
    attempt: int


@dataclass(frozen=True)
class MessageSent(MessageEvent):
    """The transport accepted the message: the one hand-off P7 counts."""

    TYPE: ClassVar[str] = "message.sent"
    monitored_copy: bool


@dataclass(frozen=True)
class MessageDeferred(MessageEvent):
    TYPE: ClassVar[str] = "message.deferred"
    attempt: int
    retry_at: int
    reply: str


@dataclass(frozen=True)
class MessageDelivered(MessageEvent):
    TYPE: ClassVar[str] = "message.delivered"


@dataclass(frozen=True)
class MessageBounced(MessageEvent):
    TYPE: ClassVar[str] = "message.bounced"
    recipients: tuple[str, ...]
    reply: str


@dataclass(frozen=True)
class MessageFailed(MessageEvent):
    TYPE: ClassVar[str] = "message.failed"
    reply: str


@dataclass(frozen=True)
class MessageComplained(MessageEvent):
    TYPE: ClassVar[str] = "message.complained"
    recipients: tuple[str, ...]


@dataclass(frozen=True)
class MessageReceived(MessageEvent):
    TYPE: ClassVar[str] = "message.received"
    thread_id: str


@dataclass(frozen=True)
class MessageRead(MessageEvent):
    TYPE: ClassVar[str] = "message.read"


@dataclass(frozen=True)
class MessageUnread(MessageEvent):
    TYPE: ClassVar[str] = "message.unread"


@dataclass(frozen=True)
class MessageArchived(MessageEvent):
    TYPE: ClassVar[str] = "message.archived"


@dataclass(frozen=True)
class MessageReplied(MessageEvent):
    TYPE: ClassVar[str] = "message.replied"
    reply_id: str


#: The public event types of PRODUCT.md §9 that a webhook may subscribe to.
PUBLIC_TYPES: frozenset[str] = frozenset(
    {
        "message.received",
        "message.sent",
        "message.delivered",
        "message.bounced",
        "message.complained",
        "oversight.pending",
        "oversight.approved",
        "oversight.rejected",
        "mailbox.created",
        "mailbox.updated",
        "mailbox.decommissioned",
        "reputation.warning",
    }
)
