"""The store interface: everything the service layer loads and persists.

Rule 1: every write happens inside ``transaction()``; leaving the block commits, an
        exception rolls everything back (the transactional outbox: state, events and
        audit entries commit together or not at all).
Rule 2: reads return the core's frozen values and the shell's records; never rows.
Rule 3: list queries take ``(limit, cursor)`` and return ``(items, next_cursor)``; cursors
        are opaque strings (the last item's sort key); ordering is stable.
Rule 4: the in-memory store is the reference model; SQLite (and PostgreSQL) must agree
        with it on every operation (tests/stateful/test_store_agreement.py).
Rule 5: ``transaction()`` is re-entrant: a nested block joins the outer transaction and only
        the outermost one commits or rolls back. A write outside any transaction is its own
        transaction. One transaction at a time per store (threads wait).
Rule 6: ``insert_*`` of a stored id (or unique key) raises DuplicateRecord, ``update_*`` of an
        unstored id MissingRecord, a reference to an unstored account, mailbox or message
        DanglingReference; a refused write writes nothing. ``add_suppression`` and
        ``put_idempotent`` replace what is stored under the same key; ``put_blob`` of bytes
        already stored changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from multimail.errors import Conflict, ShellError
from multimail.records import (
    Account,
    AuditEntry,
    Contact,
    DeliveryRecord,
    EventRecord,
    IdempotentResponse,
    KeyRecord,
    MessageRecord,
    QueuedMail,
    ReputationFact,
    Suppression,
    WebhookRecord,
)
from multimail_core.approval import Approval
from multimail_core.mailbox import Holder, Mailbox

INBOX_FILTERS = ("all", "unread", "requires_action")
#: count_from_sender counts up to this many (a signal, not a statistic: bounded work)
PRIOR_CAP = 1000
DIRECTIONS = ("inbound", "outbound")


class StoreError(ShellError):
    """The store refused a write. Nothing was written; the enclosing transaction stays usable.

    Short of a race on PostgreSQL these are bugs in the caller (500), not user errors.
    """

    code = "store_error"


class DuplicateRecord(StoreError, Conflict):
    """An insert or update would repeat a unique key: an id, a slug, a key's secret hash,
    an event id, an audit (account, seq)."""

    code = "conflict"


class MissingRecord(StoreError):
    """An update of a record that is not stored."""


class DanglingReference(StoreError):
    """A key or mailbox of an unknown account, a message of an unknown mailbox, an approval
    of an unknown message."""


class UnsupportedStore(StoreError, NotImplementedError):
    """A database URL whose backend this build does not provide (yet)."""

    code = "unsupported_store"


class Store(Protocol):
    def transaction(self) -> AbstractContextManager[None]: ...
    def in_transaction(self) -> bool:
        """Is a transaction open (in any thread)? Caches of stored values fill only outside
        one, so that nothing a rollback undoes is remembered."""
        ...

    def close(self) -> None: ...

    # accounts and keys
    def insert_account(self, account: Account) -> None: ...
    def update_account(self, account: Account) -> None: ...
    def get_account(self, account_id: str) -> Account | None: ...
    def account_by_slug(self, slug: str) -> Account | None: ...
    def insert_key(self, record: KeyRecord) -> None: ...
    def update_key(self, record: KeyRecord) -> None: ...
    def get_key(self, key_id: str) -> KeyRecord | None: ...
    def key_by_hash(self, secret_hash: str) -> KeyRecord | None: ...
    def list_keys(self, account_id: str) -> list[KeyRecord]: ...

    # mailboxes
    def insert_mailbox(self, mailbox: Mailbox) -> None: ...
    def update_mailbox(self, mailbox: Mailbox) -> None: ...
    def get_mailbox(self, mailbox_id: str) -> Mailbox | None: ...
    def mailbox_by_address(self, address: str) -> Mailbox | None:
        """The live (not decommissioned) mailbox with this normalized address."""
        ...

    def address_holders(self, address: str) -> list[Holder]: ...
    def list_mailboxes(
        self,
        account_id: str,
        *,
        only: frozenset[str] | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[Mailbox], str | None]: ...

    # messages
    def insert_message(self, record: MessageRecord) -> None: ...
    def update_message(self, record: MessageRecord) -> None: ...
    def get_message(self, message_id: str) -> MessageRecord | None: ...
    def list_messages(
        self,
        mailbox_id: str,
        *,
        filter: str,
        direction: str | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[MessageRecord], str | None]:
        """Agent-visible messages of a mailbox, newest first, without their raw bytes
        (``get_message`` has them)."""
        ...

    def thread_messages(self, mailbox_id: str, thread_id: str) -> list[MessageRecord]: ...
    def thread_of_header(self, mailbox_id: str, message_ids: Sequence[str]) -> str | None:
        """Thread id of a message in this mailbox whose Message-ID is one of ``message_ids``."""
        ...

    def due_outbound(self, now: int, limit: int) -> list[MessageRecord]: ...
    def in_flight_outbound(self) -> list[MessageRecord]:
        """Outbound messages left in ``sending`` (a crash mid-attempt), oldest first."""
        ...

    def count_from_sender(self, mailbox_id: str, sender: str) -> int:
        """Inbound messages this mailbox holds from ``sender`` (normalized address), counted
        up to PRIOR_CAP."""
        ...

    # approvals
    def insert_approval(self, approval: Approval) -> None: ...
    def update_approval(self, approval: Approval) -> None: ...
    def get_approval(self, approval_id: str) -> Approval | None: ...
    def list_pending(
        self,
        account_id: str,
        *,
        only: frozenset[str] | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[Approval], str | None]: ...

    # events and audit
    def append_event(self, event: EventRecord) -> EventRecord:
        """Store the event with the next sequence number and return it as stored."""
        ...

    def list_events(
        self,
        account_id: str,
        *,
        after: int,
        mailbox_id: str | None,
        types: frozenset[str] | None,
        limit: int,
    ) -> list[EventRecord]: ...

    def last_audit(self, account_id: str) -> AuditEntry | None: ...
    def append_audit(self, entry: AuditEntry) -> None: ...
    def list_audit(
        self, account_id: str, *, limit: int, cursor: str | None
    ) -> tuple[list[AuditEntry], str | None]: ...
    def iter_audit(self, account_id: str) -> Iterator[AuditEntry]: ...

    # idempotency
    def get_idempotent(self, key_id: str, idempotency_key: str) -> IdempotentResponse | None: ...
    def put_idempotent(self, response: IdempotentResponse) -> None: ...

    # suppression, contacts, reputation
    def add_suppression(self, suppression: Suppression) -> None: ...
    def remove_suppression(self, account_id: str, address: str) -> bool: ...
    def list_suppressions(self, account_id: str) -> list[Suppression]: ...
    def insert_contact(self, contact: Contact) -> None: ...
    def delete_contact(self, account_id: str, contact_id: str) -> bool: ...
    def list_contacts(self, account_id: str, query: str | None) -> list[Contact]: ...
    def add_fact(self, fact: ReputationFact) -> None: ...
    def facts(self, mailbox_id: str, since: int) -> list[ReputationFact]: ...

    # server-held material (signing keys, the link-signing secret): JSON docs by name
    def kv_get(self, name: str) -> dict[str, object] | None: ...
    def kv_put(self, name: str, doc: dict[str, object]) -> None:
        """Store ``doc`` under ``name``, replacing what is there."""
        ...

    # content-addressed bytes (outbound attachments), by SHA-256 hex digest
    def put_blob(self, data: bytes) -> str:
        """Store ``data`` under its SHA-256 (lowercase hex), which is returned; the same bytes
        are stored once however often they are put."""
        ...

    def get_blob(self, sha256: str) -> bytes | None: ...

    # the server's own mail queue (approval requests, oversight copies, notices)
    def insert_mail(self, mail: QueuedMail) -> None: ...
    def update_mail(self, mail: QueuedMail) -> None: ...
    def get_mail(self, mail_id: str) -> QueuedMail | None: ...
    def due_mail(self, now: int, limit: int) -> list[QueuedMail]:
        """Queued or deferred mail whose next attempt is due, oldest first."""
        ...

    def list_mail(self, account_id: str, *, related_id: str | None = None) -> list[QueuedMail]: ...

    def mail_in_flight(self) -> list[QueuedMail]:
        """Mail left in ``sending`` (a crash mid-attempt), oldest first."""
        ...

    # webhooks: endpoints and the delivery log
    def last_event_seq(self) -> int:
        """The seq of the newest event (0 when there is none)."""
        ...

    def events_since(self, after: int, limit: int) -> list[EventRecord]:
        """Events of every account with seq > ``after``, in commit order."""
        ...

    def put_webhook(self, record: WebhookRecord) -> None:
        """Store the endpoint, replacing one with the same id."""
        ...

    def get_webhook(self, webhook_id: str) -> WebhookRecord | None: ...
    def delete_webhook(self, webhook_id: str) -> bool: ...
    def list_webhooks(self, account_id: str) -> list[WebhookRecord]: ...
    def insert_delivery(self, record: DeliveryRecord) -> None: ...
    def update_delivery(self, record: DeliveryRecord) -> None: ...
    def get_delivery(self, delivery_id: str) -> DeliveryRecord | None: ...
    def due_deliveries(self, now: int, limit: int) -> list[DeliveryRecord]:
        """Pending deliveries whose next attempt is due, oldest first."""
        ...

    def deliveries_in_flight(self) -> list[DeliveryRecord]: ...
    def list_deliveries(
        self,
        account_id: str,
        *,
        limit: int,
        cursor: str | None,
        status: str | None = None,
        webhook_id: str | None = None,
    ) -> tuple[list[DeliveryRecord], str | None]:
        """The delivery log, newest first."""
        ...
