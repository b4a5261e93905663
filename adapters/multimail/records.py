"""Shell-side records: what the store keeps around the core's values.

The core's values (Mailbox, Outbound, Inbound, Approval, Key) carry state and rules; these
records add what only the shell needs: secrets' hashes, message content and headers,
raw bytes, tags, the hash chain of the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from multimail_core.authorization import Key
from multimail_core.inbound import Inbound
from multimail_core.modes import OversightMode
from multimail_core.outbound import Outbound
from multimail_core.webhooks import Delivery, Endpoint


@dataclass(frozen=True)
class Account:
    id: str
    name: str
    oversight_email: str | None
    slug: str
    default_mode: OversightMode
    created_at: int


@dataclass(frozen=True)
class KeyRecord:
    key: Key
    name: str
    secret_hash: str
    prefix: str
    created_at: int

    @property
    def id(self) -> str:
        return self.key.id


@dataclass(frozen=True)
class Content:
    """What a message says and how it is addressed, as stored and served."""

    sender: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    subject: str
    body_text: str
    body_html: str | None
    headers: tuple[tuple[str, str], ...]
    message_id_header: str
    in_reply_to: str | None
    references: tuple[str, ...]
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True)
class Attachment:
    attachment_id: str
    filename: str
    content_type: str
    size: int
    sha256: str


@dataclass(frozen=True)
class MessageRecord:
    """One stored message, either direction: the core state plus content."""

    state: Outbound | Inbound
    content: Content
    raw: bytes | None = None
    tags: tuple[tuple[str, str], ...] = ()
    #: What the shell learned on the way in or out: sender signals, parse defects, the
    #: SMTP envelope, the transport's replies. JSON values only.
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.state.id

    @property
    def direction(self) -> str:
        return "outbound" if isinstance(self.state, Outbound) else "inbound"


@dataclass(frozen=True)
class EventRecord:
    id: str
    seq: int
    type: str
    account_id: str
    mailbox_id: str | None
    created_at: int
    data: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditEntry:
    id: str
    seq: int
    account_id: str
    action: str
    resource_type: str
    resource_id: str
    actor_key_id: str | None
    metadata: dict[str, object]
    created_at: int
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class IdempotentResponse:
    key_id: str
    idempotency_key: str
    fingerprint: str
    status: int
    body: dict[str, object]
    created_at: int


@dataclass(frozen=True)
class Suppression:
    account_id: str
    address: str
    reason: str
    mailbox_id: str | None
    created_at: int


@dataclass(frozen=True)
class Contact:
    id: str
    account_id: str
    email: str
    name: str
    tags: tuple[str, ...]
    created_at: int


@dataclass(frozen=True)
class QueuedMail:
    """Mail the server itself sends through the transport: approval requests, monitored
    copies to an outside oversight address, notices to the operator. Retried on the core's
    delivery schedule; ``raw`` is the complete message as it leaves."""

    id: str
    account_id: str
    purpose: str
    mail_from: str
    recipients: tuple[str, ...]
    status: str  # queued | sending | sent | deferred | failed
    created_at: int
    next_attempt_at: int | None
    attempts: int = 0
    last_reply: str = ""
    related_id: str | None = None
    raw: bytes = b""


@dataclass(frozen=True)
class WebhookRecord:
    """A webhook endpoint: an account subscription, or a mailbox's own ``webhook_url``.

    Two secrets are valid during a rotation: the new one signs, the previous one also signs
    until ``previous_expires_at`` (Standard Webhooks: several ``v1,`` signatures)."""

    endpoint: Endpoint
    secret: str
    created_at: int
    kind: str = "subscription"  # subscription | mailbox
    previous_secret: str | None = None
    previous_expires_at: int | None = None

    @property
    def id(self) -> str:
        return self.endpoint.id


@dataclass(frozen=True)
class DeliveryRecord:
    """One event to one endpoint: its attempts, as the delivery log shows them."""

    delivery: Delivery
    account_id: str
    event_seq: int
    event_type: str
    url: str
    created_at: int
    last_attempt_at: int | None = None
    latency_ms: int | None = None
    response_excerpt: str = ""

    @property
    def id(self) -> str:
        return self.delivery.id


@dataclass(frozen=True)
class ReputationFact:
    mailbox_id: str
    outcome: str
    at: int


__all__ = [
    "Account",
    "Attachment",
    "AuditEntry",
    "Contact",
    "Content",
    "DeliveryRecord",
    "EventRecord",
    "IdempotentResponse",
    "KeyRecord",
    "MessageRecord",
    "QueuedMail",
    "ReputationFact",
    "Suppression",
    "WebhookRecord",
]
