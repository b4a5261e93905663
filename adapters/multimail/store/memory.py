"""The in-memory store: the reference model every other store must agree with.

Rule 1: plain dicts and lists, queried by scanning; clarity over speed. Each query states its
        order in one line, and SQLite must reproduce it exactly.
Rule 2: every stored value goes through the codec's JSON round trip first, so this store keeps
        and returns exactly what a database would (tuples, not lists; a value the codec cannot
        store fails here too) and callers cannot mutate what it holds.
Rule 3: ``transaction()`` is re-entrant. The outermost block snapshots the tables (shallow
        copies: the values are frozen) and restores the snapshot on any exception.
Rule 4: one RLock serializes everything, held for the whole of a transaction: FastAPI runs
        sync handlers in a thread pool.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TypeVar

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
from multimail.store import codec
from multimail.store.base import (
    DIRECTIONS,
    INBOX_FILTERS,
    PRIOR_CAP,
    DanglingReference,
    DuplicateRecord,
    MissingRecord,
)
from multimail_core import inbound, outbound
from multimail_core.approval import Approval
from multimail_core.approval import Status as ApprovalStatus
from multimail_core.mailbox import Holder, Mailbox, Status

V = TypeVar("V")

PENDING_MESSAGE = frozenset(
    {outbound.Status.PENDING_APPROVAL, inbound.Status.PENDING_INBOUND_APPROVAL}
)


def _stored(value: V) -> V:
    return codec.loads(type(value), codec.dumps(value))


def check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")


def check_inbox_query(filter: str, direction: str | None) -> None:
    if filter not in INBOX_FILTERS:
        raise ValueError(f"unknown filter {filter!r}; use one of {INBOX_FILTERS}")
    if direction is not None and direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; use one of {DIRECTIONS}")


def is_visible(record: MessageRecord) -> bool:
    """Outbound messages always; inbound ones unless held or rejected (P3)."""
    state = record.state
    return not isinstance(state, inbound.Inbound) or inbound.is_visible(state)


def is_unread(record: MessageRecord) -> bool:
    state = record.state
    return isinstance(state, inbound.Inbound) and state.status is inbound.Status.UNREAD


def needs_action(record: MessageRecord) -> bool:
    state = record.state
    return isinstance(state, inbound.Inbound) and inbound.requires_action(state)


def is_dispatchable(record: MessageRecord, now: int) -> bool:
    """Due for the delivery worker (queued/deferred and due) or for release (scheduled)."""
    state = record.state
    return isinstance(state, outbound.Outbound) and (
        outbound.is_due(state, now=now) or outbound.is_release_due(state, now=now)
    )


def page(items: list[V], limit: int, key: str) -> tuple[list[V], str | None]:
    """The first ``limit`` items and the cursor after them (None when nothing follows)."""
    if len(items) <= limit:
        return items, None
    return items[:limit], getattr(items[limit - 1], key)


@dataclass
class _Tables:
    accounts: dict[str, Account] = field(default_factory=dict)
    keys: dict[str, KeyRecord] = field(default_factory=dict)
    mailboxes: dict[str, Mailbox] = field(default_factory=dict)
    messages: dict[str, MessageRecord] = field(default_factory=dict)
    approvals: dict[str, Approval] = field(default_factory=dict)
    events: list[EventRecord] = field(default_factory=list)
    event_ids: set[str] = field(default_factory=set)
    audit: dict[str, list[AuditEntry]] = field(default_factory=dict)  # by account, seq order
    audit_ids: set[str] = field(default_factory=set)
    idempotency: dict[tuple[str, str], IdempotentResponse] = field(default_factory=dict)
    suppressions: dict[tuple[str, str], Suppression] = field(default_factory=dict)
    contacts: dict[str, Contact] = field(default_factory=dict)
    facts: dict[str, list[ReputationFact]] = field(default_factory=dict)  # by mailbox
    kv: dict[str, dict[str, object]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    mail: dict[str, QueuedMail] = field(default_factory=dict)
    webhooks: dict[str, WebhookRecord] = field(default_factory=dict)
    deliveries: dict[str, DeliveryRecord] = field(default_factory=dict)

    def copy(self) -> _Tables:
        return _Tables(
            accounts=dict(self.accounts),
            keys=dict(self.keys),
            mailboxes=dict(self.mailboxes),
            messages=dict(self.messages),
            approvals=dict(self.approvals),
            events=list(self.events),
            event_ids=set(self.event_ids),
            audit={k: list(v) for k, v in self.audit.items()},
            audit_ids=set(self.audit_ids),
            idempotency=dict(self.idempotency),
            suppressions=dict(self.suppressions),
            contacts=dict(self.contacts),
            facts={k: list(v) for k, v in self.facts.items()},
            kv=dict(self.kv),
            blobs=dict(self.blobs),
            mail=dict(self.mail),
            webhooks=dict(self.webhooks),
            deliveries=dict(self.deliveries),
        )


class MemoryStore:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._t = _Tables()
        self._depth = 0

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            snapshot = self._t.copy()
            self._depth = 1
            try:
                yield
            except BaseException:
                self._t = snapshot
                raise
            finally:
                self._depth = 0

    def in_transaction(self) -> bool:
        return self._depth > 0

    def close(self) -> None:
        pass

    # --- integrity checks, in the order SQLite applies them ----------------------------

    @staticmethod
    def _absent(table: dict[str, V], id: str, what: str) -> None:
        if id in table:
            raise DuplicateRecord(f"{what} {id} is already stored")

    @staticmethod
    def _present(table: dict[str, V], id: str, what: str) -> None:
        if id not in table:
            raise MissingRecord(f"no {what} {id} to update")

    @staticmethod
    def _referenced(table: dict[str, V], id: str, what: str) -> None:
        if id not in table:
            raise DanglingReference(f"no {what} {id}")

    # --- accounts and keys --------------------------------------------------------------

    def _slug_free(self, account: Account) -> None:
        for other in self._t.accounts.values():
            if other.slug == account.slug and other.id != account.id:
                raise DuplicateRecord(f"slug {account.slug!r} is taken")

    def insert_account(self, account: Account) -> None:
        account = _stored(account)
        with self._lock:
            self._absent(self._t.accounts, account.id, "account")
            self._slug_free(account)
            self._t.accounts[account.id] = account

    def update_account(self, account: Account) -> None:
        account = _stored(account)
        with self._lock:
            self._present(self._t.accounts, account.id, "account")
            self._slug_free(account)
            self._t.accounts[account.id] = account

    def get_account(self, account_id: str) -> Account | None:
        with self._lock:
            return self._t.accounts.get(account_id)

    def account_by_slug(self, slug: str) -> Account | None:
        with self._lock:
            return next((a for a in self._t.accounts.values() if a.slug == slug), None)

    def _hash_free(self, record: KeyRecord) -> None:
        for other in self._t.keys.values():
            if other.secret_hash == record.secret_hash and other.id != record.id:
                raise DuplicateRecord("a key with this secret hash is stored")

    def insert_key(self, record: KeyRecord) -> None:
        record = _stored(record)
        with self._lock:
            self._absent(self._t.keys, record.id, "key")
            self._hash_free(record)
            self._referenced(self._t.accounts, record.key.account_id, "account")
            self._t.keys[record.id] = record

    def update_key(self, record: KeyRecord) -> None:
        record = _stored(record)
        with self._lock:
            self._present(self._t.keys, record.id, "key")
            self._hash_free(record)
            self._referenced(self._t.accounts, record.key.account_id, "account")
            self._t.keys[record.id] = record

    def get_key(self, key_id: str) -> KeyRecord | None:
        with self._lock:
            return self._t.keys.get(key_id)

    def key_by_hash(self, secret_hash: str) -> KeyRecord | None:
        with self._lock:
            return next((k for k in self._t.keys.values() if k.secret_hash == secret_hash), None)

    def list_keys(self, account_id: str) -> list[KeyRecord]:
        """Ordered by key id."""
        with self._lock:
            keys = [k for k in self._t.keys.values() if k.key.account_id == account_id]
        return sorted(keys, key=lambda k: k.id)

    # --- mailboxes ----------------------------------------------------------------------

    def insert_mailbox(self, mailbox: Mailbox) -> None:
        mailbox = _stored(mailbox)
        with self._lock:
            self._absent(self._t.mailboxes, mailbox.id, "mailbox")
            self._referenced(self._t.accounts, mailbox.account_id, "account")
            self._t.mailboxes[mailbox.id] = mailbox

    def update_mailbox(self, mailbox: Mailbox) -> None:
        mailbox = _stored(mailbox)
        with self._lock:
            self._present(self._t.mailboxes, mailbox.id, "mailbox")
            self._referenced(self._t.accounts, mailbox.account_id, "account")
            self._t.mailboxes[mailbox.id] = mailbox

    def get_mailbox(self, mailbox_id: str) -> Mailbox | None:
        with self._lock:
            return self._t.mailboxes.get(mailbox_id)

    def _holding(self, address: str) -> list[Mailbox]:
        """Mailboxes with this normalized address, by mailbox id."""
        with self._lock:
            found = [m for m in self._t.mailboxes.values() if m.address.normalized() == address]
        return sorted(found, key=lambda m: m.id)

    def mailbox_by_address(self, address: str) -> Mailbox | None:
        """The first (by id) mailbox with this address that is not decommissioned."""
        live = (m for m in self._holding(address) if m.status is not Status.DECOMMISSIONED)
        return next(live, None)

    def address_holders(self, address: str) -> list[Holder]:
        """Every mailbox, any status, that has or had this address; by mailbox id."""
        return [Holder(m.account_id, m.status, m.decommissioned_at) for m in self._holding(address)]

    def list_mailboxes(
        self,
        account_id: str,
        *,
        only: frozenset[str] | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[Mailbox], str | None]:
        """Every status, by mailbox id ascending; the cursor is the last id."""
        check_limit(limit)
        with self._lock:
            boxes = [
                m
                for m in self._t.mailboxes.values()
                if m.account_id == account_id
                and (only is None or m.id in only)
                and (cursor is None or m.id > cursor)
            ]
        boxes.sort(key=lambda m: m.id)
        return page(boxes[: limit + 1], limit, "id")

    # --- messages -----------------------------------------------------------------------

    def insert_message(self, record: MessageRecord) -> None:
        record = _stored(record)
        with self._lock:
            self._absent(self._t.messages, record.id, "message")
            self._referenced(self._t.mailboxes, record.state.mailbox_id, "mailbox")
            self._t.messages[record.id] = record

    def update_message(self, record: MessageRecord) -> None:
        record = _stored(record)
        with self._lock:
            self._present(self._t.messages, record.id, "message")
            self._referenced(self._t.mailboxes, record.state.mailbox_id, "mailbox")
            self._t.messages[record.id] = record

    def get_message(self, message_id: str) -> MessageRecord | None:
        with self._lock:
            return self._t.messages.get(message_id)

    def _of_mailbox(self, mailbox_id: str) -> list[MessageRecord]:
        with self._lock:
            return [m for m in self._t.messages.values() if m.state.mailbox_id == mailbox_id]

    def list_messages(
        self,
        mailbox_id: str,
        *,
        filter: str,
        direction: str | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[MessageRecord], str | None]:
        """Agent-visible messages, newest (highest id) first; the cursor is the last id."""
        check_inbox_query(filter, direction)
        check_limit(limit)
        wanted = {"all": is_visible, "unread": is_unread, "requires_action": needs_action}[filter]
        found = [
            m
            for m in self._of_mailbox(mailbox_id)
            if wanted(m)
            and (direction is None or m.direction == direction)
            and (cursor is None or m.id < cursor)
        ]
        found.sort(key=lambda m: m.id, reverse=True)
        return page([replace(m, raw=None) for m in found[: limit + 1]], limit, "id")

    def thread_messages(self, mailbox_id: str, thread_id: str) -> list[MessageRecord]:
        """Every message of the thread in this mailbox, visible or not; oldest first."""
        found = [m for m in self._of_mailbox(mailbox_id) if m.state.thread_id == thread_id]
        return sorted(found, key=lambda m: m.id)

    def thread_of_header(self, mailbox_id: str, message_ids: Sequence[str]) -> str | None:
        """Thread of the newest message here whose Message-ID is one of ``message_ids``."""
        wanted = set(message_ids)
        found = [m for m in self._of_mailbox(mailbox_id) if m.content.message_id_header in wanted]
        return max(found, key=lambda m: m.id).state.thread_id if found else None

    def due_outbound(self, now: int, limit: int) -> list[MessageRecord]:
        """Outbound messages the worker should claim or release at ``now``; oldest first."""
        check_limit(limit)
        with self._lock:
            due = [m for m in self._t.messages.values() if is_dispatchable(m, now)]
        return sorted(due, key=lambda m: m.id)[:limit]

    def in_flight_outbound(self) -> list[MessageRecord]:
        with self._lock:
            found = [
                m
                for m in self._t.messages.values()
                if isinstance(m.state, outbound.Outbound)
                and m.state.status is outbound.Status.SENDING
            ]
        return sorted(found, key=lambda m: m.id)

    def count_from_sender(self, mailbox_id: str, sender: str) -> int:
        with self._lock:
            found = sum(
                1
                for m in self._t.messages.values()
                if m.direction == "inbound"
                and m.state.mailbox_id == mailbox_id
                and m.content.sender.lower() == sender.lower()
            )
        return min(found, PRIOR_CAP)

    # --- approvals ----------------------------------------------------------------------

    def insert_approval(self, approval: Approval) -> None:
        approval = _stored(approval)
        with self._lock:
            self._absent(self._t.approvals, approval.id, "approval")
            self._referenced(self._t.messages, approval.message_id, "message")
            self._t.approvals[approval.id] = approval

    def update_approval(self, approval: Approval) -> None:
        approval = _stored(approval)
        with self._lock:
            self._present(self._t.approvals, approval.id, "approval")
            self._referenced(self._t.messages, approval.message_id, "message")
            self._t.approvals[approval.id] = approval

    def get_approval(self, approval_id: str) -> Approval | None:
        with self._lock:
            return self._t.approvals.get(approval_id)

    def list_pending(
        self,
        account_id: str,
        *,
        only: frozenset[str] | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[Approval], str | None]:
        """Pending approvals whose message is still held, by approval id; cursor = last id."""
        check_limit(limit)
        with self._lock:
            found = [
                a
                for a in self._t.approvals.values()
                if a.account_id == account_id
                and a.status is ApprovalStatus.PENDING
                and (only is None or a.mailbox_id in only)
                and (cursor is None or a.id > cursor)
                and self._still_held(a)
            ]
        found.sort(key=lambda a: a.id)
        return page(found[: limit + 1], limit, "id")

    def _still_held(self, approval: Approval) -> bool:
        message = self._t.messages.get(approval.message_id)
        return message is not None and message.state.status in PENDING_MESSAGE

    # --- events and audit ---------------------------------------------------------------

    def append_event(self, event: EventRecord) -> EventRecord:
        """Sequence numbers are global to the store: the previous highest plus one."""
        checked = _stored(event)
        with self._lock:
            if event.id in self._t.event_ids:
                raise DuplicateRecord(f"event {event.id} is already stored")
            seq = self._t.events[-1].seq + 1 if self._t.events else 1
            stored = replace(checked, seq=seq)
            self._t.events.append(stored)
            self._t.event_ids.add(stored.id)
            return stored

    def list_events(
        self,
        account_id: str,
        *,
        after: int,
        mailbox_id: str | None,
        types: frozenset[str] | None,
        limit: int,
    ) -> list[EventRecord]:
        """The account's events with seq > ``after``, ascending seq."""
        check_limit(limit)
        out: list[EventRecord] = []
        with self._lock:
            events = self._t.events
            start = bisect.bisect_right(events, after, key=lambda e: e.seq)
            for event in events[start:]:
                if (
                    event.account_id == account_id
                    and (mailbox_id is None or event.mailbox_id == mailbox_id)
                    and (types is None or event.type in types)
                ):
                    out.append(event)
                    if len(out) == limit:
                        break
        return out

    def last_audit(self, account_id: str) -> AuditEntry | None:
        with self._lock:
            entries = self._t.audit.get(account_id)
            return entries[-1] if entries else None

    def append_audit(self, entry: AuditEntry) -> None:
        entry = _stored(entry)
        with self._lock:
            entries = self._t.audit.get(entry.account_id, [])
            if entry.id in self._t.audit_ids:
                raise DuplicateRecord(f"audit entry {entry.id} is already stored")
            at = bisect.bisect_left(entries, entry.seq, key=lambda e: e.seq)
            if at < len(entries) and entries[at].seq == entry.seq:
                raise DuplicateRecord(f"audit seq {entry.seq} of {entry.account_id} is taken")
            entries.insert(at, entry)
            self._t.audit[entry.account_id] = entries
            self._t.audit_ids.add(entry.id)

    def list_audit(
        self, account_id: str, *, limit: int, cursor: str | None
    ) -> tuple[list[AuditEntry], str | None]:
        """Newest (highest seq) first; the cursor is the last entry's seq."""
        check_limit(limit)
        before = int(cursor) if cursor is not None else None
        with self._lock:
            entries = list(self._t.audit.get(account_id, []))
        found = [e for e in reversed(entries) if before is None or e.seq < before][: limit + 1]
        items = found[:limit]
        return items, (str(items[-1].seq) if len(found) > limit else None)

    def iter_audit(self, account_id: str) -> Iterator[AuditEntry]:
        """Every entry of the account, ascending seq (a snapshot taken at the call)."""
        with self._lock:
            return iter(list(self._t.audit.get(account_id, [])))

    # --- idempotency --------------------------------------------------------------------

    def get_idempotent(self, key_id: str, idempotency_key: str) -> IdempotentResponse | None:
        with self._lock:
            return self._t.idempotency.get((key_id, idempotency_key))

    def put_idempotent(self, response: IdempotentResponse) -> None:
        response = _stored(response)
        with self._lock:
            self._t.idempotency[(response.key_id, response.idempotency_key)] = response

    # --- suppression, contacts, reputation ----------------------------------------------

    def add_suppression(self, suppression: Suppression) -> None:
        suppression = _stored(suppression)
        with self._lock:
            self._t.suppressions[(suppression.account_id, suppression.address)] = suppression

    def remove_suppression(self, account_id: str, address: str) -> bool:
        with self._lock:
            return self._t.suppressions.pop((account_id, address), None) is not None

    def list_suppressions(self, account_id: str) -> list[Suppression]:
        """Ordered by address."""
        with self._lock:
            found = [s for (acc, _), s in self._t.suppressions.items() if acc == account_id]
        return sorted(found, key=lambda s: s.address)

    def insert_contact(self, contact: Contact) -> None:
        contact = _stored(contact)
        with self._lock:
            self._absent(self._t.contacts, contact.id, "contact")
            self._t.contacts[contact.id] = contact

    def delete_contact(self, account_id: str, contact_id: str) -> bool:
        with self._lock:
            contact = self._t.contacts.get(contact_id)
            if contact is None or contact.account_id != account_id:
                return False
            del self._t.contacts[contact_id]
            return True

    def list_contacts(self, account_id: str, query: str | None) -> list[Contact]:
        """By contact id; ``query`` matches a case-folded substring of the email or name."""
        with self._lock:
            found = [c for c in self._t.contacts.values() if c.account_id == account_id]
        if query is not None:
            found = [c for c in found if contact_matches(c, query)]
        return sorted(found, key=lambda c: c.id)

    def add_fact(self, fact: ReputationFact) -> None:
        fact = _stored(fact)
        with self._lock:
            self._t.facts.setdefault(fact.mailbox_id, []).append(fact)

    def facts(self, mailbox_id: str, since: int) -> list[ReputationFact]:
        """Facts at or after ``since``, ascending ``at``, ties in insertion order."""
        with self._lock:
            found = [f for f in self._t.facts.get(mailbox_id, []) if f.at >= since]
        return sorted(found, key=lambda f: f.at)

    # --- server-held material and the server's own mail queue ---------------------------

    def kv_get(self, name: str) -> dict[str, object] | None:
        with self._lock:
            doc = self._t.kv.get(name)
        return dict(doc) if doc is not None else None

    def kv_put(self, name: str, doc: dict[str, object]) -> None:
        doc = check_json_doc(doc)
        with self._lock:
            self._t.kv[name] = doc

    def put_blob(self, data: bytes) -> str:
        data = bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            self._t.blobs.setdefault(digest, data)
        return digest

    def get_blob(self, sha256: str) -> bytes | None:
        with self._lock:
            return self._t.blobs.get(sha256)

    def insert_mail(self, mail: QueuedMail) -> None:
        mail = _stored(mail)
        with self._lock:
            self._absent(self._t.mail, mail.id, "mail")
            self._t.mail[mail.id] = mail

    def update_mail(self, mail: QueuedMail) -> None:
        mail = _stored(mail)
        with self._lock:
            if mail.id not in self._t.mail:
                raise MissingRecord(f"no mail {mail.id}")
            self._t.mail[mail.id] = mail

    def get_mail(self, mail_id: str) -> QueuedMail | None:
        with self._lock:
            return self._t.mail.get(mail_id)

    def due_mail(self, now: int, limit: int) -> list[QueuedMail]:
        check_limit(limit)
        with self._lock:
            due = [
                m
                for m in self._t.mail.values()
                if m.status in ("queued", "deferred")
                and m.next_attempt_at is not None
                and m.next_attempt_at <= now
            ]
        return sorted(due, key=lambda m: m.id)[:limit]

    def list_mail(self, account_id: str, *, related_id: str | None = None) -> list[QueuedMail]:
        with self._lock:
            found = [
                m
                for m in self._t.mail.values()
                if m.account_id == account_id and (related_id is None or m.related_id == related_id)
            ]
        return sorted(found, key=lambda m: m.id)

    def mail_in_flight(self) -> list[QueuedMail]:
        with self._lock:
            found = [m for m in self._t.mail.values() if m.status == "sending"]
        return sorted(found, key=lambda m: m.id)

    # --- webhooks -------------------------------------------------------------------------

    def last_event_seq(self) -> int:
        with self._lock:
            return self._t.events[-1].seq if self._t.events else 0

    def events_since(self, after: int, limit: int) -> list[EventRecord]:
        check_limit(limit)
        with self._lock:
            found = [e for e in self._t.events if e.seq > after]
        return found[:limit]

    def put_webhook(self, record: WebhookRecord) -> None:
        record = _stored(record)
        with self._lock:
            if record.endpoint.account_id not in self._t.accounts:
                raise DanglingReference(f"no account {record.endpoint.account_id}")
            self._t.webhooks[record.id] = record

    def get_webhook(self, webhook_id: str) -> WebhookRecord | None:
        with self._lock:
            return self._t.webhooks.get(webhook_id)

    def delete_webhook(self, webhook_id: str) -> bool:
        with self._lock:
            return self._t.webhooks.pop(webhook_id, None) is not None

    def list_webhooks(self, account_id: str) -> list[WebhookRecord]:
        with self._lock:
            found = [w for w in self._t.webhooks.values() if w.endpoint.account_id == account_id]
        return sorted(found, key=lambda w: w.id)

    def insert_delivery(self, record: DeliveryRecord) -> None:
        record = _stored(record)
        with self._lock:
            self._absent(self._t.deliveries, record.id, "delivery")
            self._t.deliveries[record.id] = record

    def update_delivery(self, record: DeliveryRecord) -> None:
        record = _stored(record)
        with self._lock:
            if record.id not in self._t.deliveries:
                raise MissingRecord(f"no delivery {record.id} to update")
            self._t.deliveries[record.id] = record

    def get_delivery(self, delivery_id: str) -> DeliveryRecord | None:
        with self._lock:
            return self._t.deliveries.get(delivery_id)

    def due_deliveries(self, now: int, limit: int) -> list[DeliveryRecord]:
        check_limit(limit)
        with self._lock:
            due = [
                d
                for d in self._t.deliveries.values()
                if d.delivery.next_attempt_at is not None and d.delivery.next_attempt_at <= now
            ]
        return sorted(due, key=lambda d: d.id)[:limit]

    def deliveries_in_flight(self) -> list[DeliveryRecord]:
        with self._lock:
            found = [
                d for d in self._t.deliveries.values() if d.delivery.status.value == "delivering"
            ]
        return sorted(found, key=lambda d: d.id)

    def list_deliveries(
        self,
        account_id: str,
        *,
        limit: int,
        cursor: str | None,
        status: str | None = None,
        webhook_id: str | None = None,
    ) -> tuple[list[DeliveryRecord], str | None]:
        check_limit(limit)
        with self._lock:
            found = [
                d
                for d in self._t.deliveries.values()
                if d.account_id == account_id
                and (status is None or d.delivery.status.value == status)
                and (webhook_id is None or d.delivery.endpoint_id == webhook_id)
                and (cursor is None or d.id < cursor)
            ]
        found.sort(key=lambda d: d.id, reverse=True)
        return page(found[: limit + 1], limit, "id")


def check_json_doc(doc: dict[str, object]) -> dict[str, object]:
    """A JSON-only copy of ``doc`` (what SQLite would store and give back)."""
    return json.loads(json.dumps(doc))  # type: ignore[no-any-return]


def contact_matches(contact: Contact, query: str) -> bool:
    needle = query.casefold()
    return needle in contact.email.casefold() or needle in contact.name.casefold()


__all__ = ["MemoryStore"]
