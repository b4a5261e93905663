"""The SQLite store: the embedded default (sqlite-utils over one sqlite3 connection).

Rule 1: it answers every query exactly as MemoryStore does, orders and cursors included
        (tests/stateful/test_store_agreement.py).
Rule 2: each row keeps the whole value as a JSON document (``doc``, see codec) plus the
        columns its queries filter and sort on. The message flags (visible, unread,
        requires_action, due_at) are computed by the core's predicates when a message is
        written: changing those predicates needs a migration that recomputes them.
Rule 3: one connection and one RLock, held for a whole transaction and for every read. The
        outermost ``transaction()`` is BEGIN IMMEDIATE … COMMIT, ROLLBACK on any exception;
        nested blocks join it. A failed statement leaves the transaction usable (SQLite
        aborts the statement only), as a refused write leaves MemoryStore unchanged.
Rule 4: durability (P10): in WAL mode a COMMIT that has returned is in the log, in the
        operating system's hands, so killing the process at any point loses nothing
        committed. ``synchronous="NORMAL"`` (the default) may lose the last commits on power
        loss or an OS crash; ``"FULL"`` fsyncs the log on every commit and survives those too.
Rule 5: opening applies the missing migrations (multimail.store.migrations) in order, each
        in its own transaction, so opening twice changes nothing. A database newer than this
        code is refused.
Rule 6: writes are plain SQL statements; sqlite-utils builds the schema (tables, foreign keys,
        indexes) and runs statements. Its ``insert()`` is not used on the hot path: it
        introspects the table on every call.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import sqlite_utils

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
    PRIOR_CAP,
    DanglingReference,
    DuplicateRecord,
    MissingRecord,
    StoreError,
)
from multimail.store.memory import (
    check_inbox_query,
    check_limit,
    contact_matches,
    is_unread,
    is_visible,
    needs_action,
)
from multimail.store.migrations import MIGRATIONS
from multimail_core import inbound, outbound
from multimail_core.approval import Approval
from multimail_core.errors import InvalidValue
from multimail_core.mailbox import Holder, Mailbox, Status

Synchronous = Literal["NORMAL", "FULL"]
T = TypeVar("T")
Row = tuple[Any, ...]

#: ``due_at`` of a queued or deferred message without ``next_attempt_at``: due at any time.
ALWAYS = -(2**63)
AUDIT_CHUNK = 500
DECOMMISSIONED = Status.DECOMMISSIONED.value
HELD = (outbound.Status.PENDING_APPROVAL.value, inbound.Status.PENDING_INBOUND_APPROVAL.value)
INBOX_FLAG = {"all": "visible", "unread": "unread", "requires_action": "requires_action"}


# --- values ↔ rows ----------------------------------------------------------------------


def _text(value: str) -> str:
    """A text column value. Lone surrogates (undecodable bytes in a parsed header) cannot be
    stored as UTF-8, so such text is kept in its JSON-escaped form, ASCII and injective."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value)
    return value


def _params(values: Sequence[object]) -> list[object]:
    return [_text(v) if isinstance(v, str) else v for v in values]


def _ids(values: Sequence[str] | frozenset[str]) -> str:
    """A JSON array for ``IN (SELECT value FROM json_each(?))``: one parameter, any size."""
    return json.dumps([_text(v) for v in values])


def _due_at(state: outbound.Outbound | inbound.Inbound) -> int | None:
    """When the worker should take the message (``outbound.is_due``/``is_release_due``)."""
    if not isinstance(state, outbound.Outbound):
        return None
    if state.status in (outbound.Status.QUEUED, outbound.Status.DEFERRED):
        return ALWAYS if state.next_attempt_at is None else state.next_attempt_at
    if state.status is outbound.Status.SCHEDULED:
        return state.send_at
    return None


def _message_row(record: MessageRecord) -> list[object]:
    state = record.state
    if isinstance(state, outbound.Outbound):
        created_at, next_attempt_at, send_at = (
            state.created_at,
            state.next_attempt_at,
            state.send_at,
        )
    else:
        created_at, next_attempt_at, send_at = state.received_at, None, None
    doc = codec.dumps(replace(record, raw=None) if record.raw is not None else record)
    return [
        state.mailbox_id,
        state.account_id,
        state.thread_id,
        record.direction,
        state.status.value,
        int(is_visible(record)),
        int(is_unread(record)),
        int(needs_action(record)),
        created_at,
        record.content.message_id_header,
        next_attempt_at,
        send_at,
        _due_at(state),
        doc,
        record.raw,
        record.content.sender.lower(),
        record.id,
    ]


def _message(row: Row) -> MessageRecord:
    record = codec.loads(MessageRecord, row[0])
    return record if row[1] is None else replace(record, raw=bytes(row[1]))


def _integrity(exc: sqlite3.IntegrityError) -> StoreError:
    text = str(exc)
    if "FOREIGN KEY" in text:
        return DanglingReference(f"a referenced record is not stored ({text})")
    if "UNIQUE" in text or "PRIMARY KEY" in text:
        return DuplicateRecord(f"already stored ({text})")
    return StoreError(text)


class SqliteStore:
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "NORMAL",
        busy_timeout_ms: int = 5_000,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise InvalidValue("synchronous", f"use NORMAL or FULL, not {synchronous!r}")
        self.path = os.fspath(path)
        self.synchronous = synchronous
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            self.path,
            timeout=busy_timeout_ms / 1000,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,  # the RLock serializes every use
        )
        self.db = sqlite_utils.Database(self._conn, recursive_triggers=False, execute_plugins=False)
        self._lock = threading.RLock()
        self._depth = 0
        self._tx_event_seq: int | None = None
        self._tx_audit_heads: dict[str, AuditEntry | None] = {}
        self.audit_chunk = AUDIT_CHUNK
        try:
            self._configure(busy_timeout_ms)
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    def _configure(self, busy_timeout_ms: int) -> None:
        self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal" and self.path != ":memory:":
            raise StoreError(f"{self.path}: cannot use write-ahead logging (journal_mode={mode})")
        self._conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        self._conn.execute("PRAGMA foreign_keys = ON")

    def _migrate(self) -> None:
        while True:
            with self.transaction():
                version = self.schema_version()
                if version > len(MIGRATIONS):
                    raise StoreError(
                        f"{self.path} has schema version {version}; this MultiMail knows "
                        f"{len(MIGRATIONS)}: upgrade MultiMail"
                    )
                if version == len(MIGRATIONS):
                    return
                MIGRATIONS[version](self.db)
                self._conn.execute(f"PRAGMA user_version = {version + 1}")

    def schema_version(self) -> int:
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

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
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            # what this transaction has read or written, kept only while it is open (the
            # write lock is ours, so nobody else can change it): saves a query per event
            # and per audit entry on the hot path
            self._tx_event_seq = None
            self._tx_audit_heads = {}
            try:
                yield
            except BaseException:
                self._depth = 0
                self._rollback()
                raise
            self._depth = 0
            try:
                self._conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def in_transaction(self) -> bool:
        return self._depth > 0

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- statements ---------------------------------------------------------------------

    def _write(self, sql: str, params: Sequence[object]) -> sqlite3.Cursor:
        with self.transaction():
            try:
                return self.db.execute(sql, _params(params))
            except sqlite3.IntegrityError as exc:
                raise _integrity(exc) from exc

    def _update(self, what: str, id: str, sql: str, params: Sequence[object]) -> None:
        with self.transaction():
            if self._write(sql, params).rowcount == 0:
                raise MissingRecord(f"no {what} {id} to update")

    def _rows(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        with self._lock:
            return self.db.execute(sql, _params(params)).fetchall()

    def _doc(self, cls: type[T], sql: str, params: Sequence[object]) -> T | None:
        rows = self._rows(sql, params)
        return codec.loads(cls, rows[0][0]) if rows else None

    def _docs(self, cls: type[T], sql: str, params: Sequence[object]) -> list[T]:
        return [codec.loads(cls, row[0]) for row in self._rows(sql, params)]

    @staticmethod
    def _page(items: list[T], limit: int, cursor: Callable[[T], str]) -> tuple[list[T], str | None]:
        if len(items) <= limit:
            return items, None
        return items[:limit], cursor(items[limit - 1])

    # --- accounts and keys --------------------------------------------------------------

    def insert_account(self, account: Account) -> None:
        self._write(
            "INSERT INTO accounts (slug, doc, id) VALUES (?, ?, ?)",
            [account.slug, codec.dumps(account), account.id],
        )

    def update_account(self, account: Account) -> None:
        self._update(
            "account",
            account.id,
            "UPDATE accounts SET slug = ?, doc = ? WHERE id = ?",
            [account.slug, codec.dumps(account), account.id],
        )

    def get_account(self, account_id: str) -> Account | None:
        return self._doc(Account, "SELECT doc FROM accounts WHERE id = ?", [account_id])

    def account_by_slug(self, slug: str) -> Account | None:
        return self._doc(Account, "SELECT doc FROM accounts WHERE slug = ?", [slug])

    def insert_key(self, record: KeyRecord) -> None:
        self._write(
            "INSERT INTO api_keys (account_id, secret_hash, doc, id) VALUES (?, ?, ?, ?)",
            [record.key.account_id, record.secret_hash, codec.dumps(record), record.id],
        )

    def update_key(self, record: KeyRecord) -> None:
        self._update(
            "key",
            record.id,
            "UPDATE api_keys SET account_id = ?, secret_hash = ?, doc = ? WHERE id = ?",
            [record.key.account_id, record.secret_hash, codec.dumps(record), record.id],
        )

    def get_key(self, key_id: str) -> KeyRecord | None:
        return self._doc(KeyRecord, "SELECT doc FROM api_keys WHERE id = ?", [key_id])

    def key_by_hash(self, secret_hash: str) -> KeyRecord | None:
        return self._doc(KeyRecord, "SELECT doc FROM api_keys WHERE secret_hash = ?", [secret_hash])

    def list_keys(self, account_id: str) -> list[KeyRecord]:
        return self._docs(
            KeyRecord, "SELECT doc FROM api_keys WHERE account_id = ? ORDER BY id", [account_id]
        )

    # --- mailboxes ----------------------------------------------------------------------

    @staticmethod
    def _mailbox_row(mailbox: Mailbox) -> list[object]:
        return [
            mailbox.account_id,
            mailbox.address.normalized(),
            mailbox.status.value,
            codec.dumps(mailbox),
            mailbox.id,
        ]

    def insert_mailbox(self, mailbox: Mailbox) -> None:
        self._write(
            "INSERT INTO mailboxes (account_id, address, status, doc, id) VALUES (?, ?, ?, ?, ?)",
            self._mailbox_row(mailbox),
        )

    def update_mailbox(self, mailbox: Mailbox) -> None:
        self._update(
            "mailbox",
            mailbox.id,
            "UPDATE mailboxes SET account_id = ?, address = ?, status = ?, doc = ? WHERE id = ?",
            self._mailbox_row(mailbox),
        )

    def get_mailbox(self, mailbox_id: str) -> Mailbox | None:
        return self._doc(Mailbox, "SELECT doc FROM mailboxes WHERE id = ?", [mailbox_id])

    def mailbox_by_address(self, address: str) -> Mailbox | None:
        return self._doc(
            Mailbox,
            "SELECT doc FROM mailboxes WHERE address = ? AND status != ? ORDER BY id LIMIT 1",
            [address, DECOMMISSIONED],
        )

    def address_holders(self, address: str) -> list[Holder]:
        boxes = self._docs(
            Mailbox, "SELECT doc FROM mailboxes WHERE address = ? ORDER BY id", [address]
        )
        return [Holder(m.account_id, m.status, m.decommissioned_at) for m in boxes]

    def list_mailboxes(
        self,
        account_id: str,
        *,
        only: frozenset[str] | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[Mailbox], str | None]:
        check_limit(limit)
        sql, params = "SELECT doc FROM mailboxes WHERE account_id = ?", [account_id]
        if only is not None:
            sql += " AND id IN (SELECT value FROM json_each(?))"
            params.append(_ids(sorted(only)))
        if cursor is not None:
            sql += " AND id > ?"
            params.append(cursor)
        boxes = self._docs(Mailbox, sql + " ORDER BY id LIMIT ?", [*params, limit + 1])
        return self._page(boxes, limit, lambda m: m.id)

    # --- messages -----------------------------------------------------------------------

    _MESSAGE_COLUMNS = (
        "mailbox_id, account_id, thread_id, direction, status, visible, unread, "
        "requires_action, created_at, message_id_header, next_attempt_at, send_at, due_at, "
        "doc, raw, sender"
    )

    def insert_message(self, record: MessageRecord) -> None:
        self._write(
            # Only constant column names are interpolated; every value is a parameter.
            f"INSERT INTO messages ({self._MESSAGE_COLUMNS}, id) VALUES ({', '.join('?' * 17)})",  # noqa: S608
            _message_row(record),
        )

    def update_message(self, record: MessageRecord) -> None:
        assignments = ", ".join(f"{c.strip()} = ?" for c in self._MESSAGE_COLUMNS.split(","))
        self._update(
            "message",
            record.id,
            f"UPDATE messages SET {assignments} WHERE id = ?",  # noqa: S608
            _message_row(record),
        )

    def get_message(self, message_id: str) -> MessageRecord | None:
        rows = self._rows("SELECT doc, raw FROM messages WHERE id = ?", [message_id])
        return _message(rows[0]) if rows else None

    def _messages(self, sql: str, params: Sequence[object]) -> list[MessageRecord]:
        return [_message(row) for row in self._rows(sql, params)]

    def list_messages(
        self,
        mailbox_id: str,
        *,
        filter: str,
        direction: str | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[MessageRecord], str | None]:
        check_inbox_query(filter, direction)
        check_limit(limit)
        flag = INBOX_FLAG[filter]  # a constant column name, checked above
        # no raw bytes: a listing never needs them, and they may be megabytes each
        sql = f"SELECT doc, NULL FROM messages WHERE mailbox_id = ? AND {flag} = 1"  # noqa: S608
        params: list[object] = [mailbox_id]
        if direction is not None:
            sql += " AND direction = ?"
            params.append(direction)
        if cursor is not None:
            sql += " AND id < ?"
            params.append(cursor)
        found = self._messages(sql + " ORDER BY id DESC LIMIT ?", [*params, limit + 1])
        return self._page(found, limit, lambda m: m.id)

    def thread_messages(self, mailbox_id: str, thread_id: str) -> list[MessageRecord]:
        return self._messages(
            "SELECT doc, raw FROM messages WHERE mailbox_id = ? AND thread_id = ? ORDER BY id",
            [mailbox_id, thread_id],
        )

    def thread_of_header(self, mailbox_id: str, message_ids: Sequence[str]) -> str | None:
        if not message_ids:
            return None
        rows = self._rows(
            "SELECT doc, raw FROM messages WHERE mailbox_id = ? AND message_id_header IN "
            "(SELECT value FROM json_each(?)) ORDER BY id DESC LIMIT 1",
            [mailbox_id, _ids(message_ids)],
        )
        return _message(rows[0]).state.thread_id if rows else None

    def due_outbound(self, now: int, limit: int) -> list[MessageRecord]:
        check_limit(limit)
        return self._messages(
            "SELECT doc, raw FROM messages WHERE due_at <= ? ORDER BY id LIMIT ?", [now, limit]
        )

    # --- approvals ----------------------------------------------------------------------

    @staticmethod
    def _approval_row(approval: Approval) -> list[object]:
        return [
            approval.account_id,
            approval.mailbox_id,
            approval.message_id,
            approval.status.value,
            codec.dumps(approval),
            approval.id,
        ]

    def insert_approval(self, approval: Approval) -> None:
        self._write(
            "INSERT INTO approvals (account_id, mailbox_id, message_id, status, doc, id) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            self._approval_row(approval),
        )

    def update_approval(self, approval: Approval) -> None:
        self._update(
            "approval",
            approval.id,
            "UPDATE approvals SET account_id = ?, mailbox_id = ?, message_id = ?, status = ?, "
            "doc = ? WHERE id = ?",
            self._approval_row(approval),
        )

    def get_approval(self, approval_id: str) -> Approval | None:
        return self._doc(Approval, "SELECT doc FROM approvals WHERE id = ?", [approval_id])

    def list_pending(
        self,
        account_id: str,
        *,
        only: frozenset[str] | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[Approval], str | None]:
        check_limit(limit)
        sql = (
            "SELECT a.doc FROM approvals a JOIN messages m ON m.id = a.message_id "
            "WHERE a.account_id = ? AND a.status = 'pending' AND m.status IN (?, ?)"
        )
        params: list[object] = [account_id, *HELD]
        if only is not None:
            sql += " AND a.mailbox_id IN (SELECT value FROM json_each(?))"
            params.append(_ids(sorted(only)))
        if cursor is not None:
            sql += " AND a.id > ?"
            params.append(cursor)
        found = self._docs(Approval, sql + " ORDER BY a.id LIMIT ?", [*params, limit + 1])
        return self._page(found, limit, lambda a: a.id)

    # --- events and audit ---------------------------------------------------------------

    def append_event(self, event: EventRecord) -> EventRecord:
        with self.transaction():
            if self._tx_event_seq is None:
                (seq,) = self._rows("SELECT COALESCE(MAX(seq), 0) + 1 FROM events")[0]
            else:
                seq = self._tx_event_seq
            stored = replace(event, seq=seq)
            self._write(
                "INSERT INTO events (seq, id, account_id, mailbox_id, type, created_at, doc) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    seq,
                    stored.id,
                    stored.account_id,
                    stored.mailbox_id,
                    stored.type,
                    stored.created_at,
                    codec.dumps(stored),
                ],
            )
            self._tx_event_seq = seq + 1
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
        check_limit(limit)
        sql, params = "SELECT doc FROM events WHERE account_id = ? AND seq > ?", [account_id, after]
        if mailbox_id is not None:
            sql += " AND mailbox_id = ?"
            params.append(mailbox_id)
        if types is not None:
            sql += " AND type IN (SELECT value FROM json_each(?))"
            params.append(_ids(sorted(types)))
        return self._docs(EventRecord, sql + " ORDER BY seq LIMIT ?", [*params, limit])

    def last_audit(self, account_id: str) -> AuditEntry | None:
        with self._lock:
            if self._depth and account_id in self._tx_audit_heads:
                return self._tx_audit_heads[account_id]
            head = self._doc(
                AuditEntry,
                "SELECT doc FROM audit WHERE account_id = ? ORDER BY seq DESC LIMIT 1",
                [account_id],
            )
            if self._depth:
                self._tx_audit_heads[account_id] = head
            return head

    def append_audit(self, entry: AuditEntry) -> None:
        with self.transaction():
            self._write(
                "INSERT INTO audit (id, account_id, seq, doc) VALUES (?, ?, ?, ?)",
                [entry.id, entry.account_id, entry.seq, codec.dumps(entry)],
            )
            self._tx_audit_heads[entry.account_id] = entry

    def list_audit(
        self, account_id: str, *, limit: int, cursor: str | None
    ) -> tuple[list[AuditEntry], str | None]:
        check_limit(limit)
        sql = "SELECT doc FROM audit WHERE account_id = ?"
        params: list[object] = [account_id]
        if cursor is not None:
            sql += " AND seq < ?"
            params.append(int(cursor))
        found = self._docs(AuditEntry, sql + " ORDER BY seq DESC LIMIT ?", [*params, limit + 1])
        return self._page(found, limit, lambda e: str(e.seq))

    def iter_audit(self, account_id: str) -> Iterator[AuditEntry]:
        """Ascending seq, read in chunks (entries appended meanwhile may appear)."""
        sql = "SELECT doc FROM audit WHERE account_id = ?"
        chunk = self._docs(
            AuditEntry, sql + " ORDER BY seq LIMIT ?", [account_id, self.audit_chunk]
        )
        while chunk:
            yield from chunk
            if len(chunk) < self.audit_chunk:
                return
            chunk = self._docs(
                AuditEntry,
                sql + " AND seq > ? ORDER BY seq LIMIT ?",
                [account_id, chunk[-1].seq, self.audit_chunk],
            )

    # --- idempotency --------------------------------------------------------------------

    def get_idempotent(self, key_id: str, idempotency_key: str) -> IdempotentResponse | None:
        return self._doc(
            IdempotentResponse,
            "SELECT doc FROM idempotency WHERE key_id = ? AND idempotency_key = ?",
            [key_id, idempotency_key],
        )

    def put_idempotent(self, response: IdempotentResponse) -> None:
        self._write(
            "INSERT INTO idempotency (key_id, idempotency_key, doc) VALUES (?, ?, ?) "
            "ON CONFLICT (key_id, idempotency_key) DO UPDATE SET doc = excluded.doc",
            [response.key_id, response.idempotency_key, codec.dumps(response)],
        )

    # --- suppression, contacts, reputation ----------------------------------------------

    def add_suppression(self, suppression: Suppression) -> None:
        self._write(
            "INSERT INTO suppressions (account_id, address, doc) VALUES (?, ?, ?) "
            "ON CONFLICT (account_id, address) DO UPDATE SET doc = excluded.doc",
            [suppression.account_id, suppression.address, codec.dumps(suppression)],
        )

    def remove_suppression(self, account_id: str, address: str) -> bool:
        cursor = self._write(
            "DELETE FROM suppressions WHERE account_id = ? AND address = ?", [account_id, address]
        )
        return cursor.rowcount > 0

    def list_suppressions(self, account_id: str) -> list[Suppression]:
        return self._docs(
            Suppression,
            "SELECT doc FROM suppressions WHERE account_id = ? ORDER BY address",
            [account_id],
        )

    def insert_contact(self, contact: Contact) -> None:
        self._write(
            "INSERT INTO contacts (id, account_id, doc) VALUES (?, ?, ?)",
            [contact.id, contact.account_id, codec.dumps(contact)],
        )

    def delete_contact(self, account_id: str, contact_id: str) -> bool:
        cursor = self._write(
            "DELETE FROM contacts WHERE id = ? AND account_id = ?", [contact_id, account_id]
        )
        return cursor.rowcount > 0

    def list_contacts(self, account_id: str, query: str | None) -> list[Contact]:
        # Case folding is Unicode-aware in Python and ASCII-only in SQLite's LIKE: filter here.
        contacts = self._docs(
            Contact, "SELECT doc FROM contacts WHERE account_id = ? ORDER BY id", [account_id]
        )
        return [c for c in contacts if query is None or contact_matches(c, query)]

    def add_fact(self, fact: ReputationFact) -> None:
        self._write(
            "INSERT INTO facts (mailbox_id, at, doc) VALUES (?, ?, ?)",
            [fact.mailbox_id, fact.at, codec.dumps(fact)],
        )

    def facts(self, mailbox_id: str, since: int) -> list[ReputationFact]:
        return self._docs(
            ReputationFact,
            "SELECT doc FROM facts WHERE mailbox_id = ? AND at >= ? ORDER BY at, id",
            [mailbox_id, since],
        )

    # --- server-held material and the server's own mail queue ---------------------------

    def kv_get(self, name: str) -> dict[str, object] | None:
        rows = self._rows("SELECT doc FROM kv WHERE name = ?", [name])
        return json.loads(rows[0][0]) if rows else None  # type: ignore[no-any-return]

    def kv_put(self, name: str, doc: dict[str, object]) -> None:
        self._write(
            "INSERT INTO kv (name, doc) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET doc = excluded.doc",
            [name, json.dumps(doc)],
        )

    def put_blob(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        self._write(
            "INSERT INTO blobs (sha256, data) VALUES (?, ?) ON CONFLICT (sha256) DO NOTHING",
            [digest, bytes(data)],
        )
        return digest

    def get_blob(self, sha256: str) -> bytes | None:
        rows = self._rows("SELECT data FROM blobs WHERE sha256 = ?", [sha256])
        return bytes(rows[0][0]) if rows else None

    @staticmethod
    def _mail_row(mail: QueuedMail) -> list[object]:
        due = mail.next_attempt_at if mail.status in ("queued", "deferred") else None
        return [
            mail.account_id,
            mail.related_id,
            mail.status,
            due,
            codec.dumps(replace(mail, raw=b"")),
            mail.raw,
            mail.id,
        ]

    def insert_mail(self, mail: QueuedMail) -> None:
        self._write(
            "INSERT INTO mail_queue (account_id, related_id, status, due_at, doc, raw, id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            self._mail_row(mail),
        )

    def update_mail(self, mail: QueuedMail) -> None:
        self._update(
            "mail",
            mail.id,
            "UPDATE mail_queue SET account_id = ?, related_id = ?, status = ?, due_at = ?, "
            "doc = ?, raw = ? WHERE id = ?",
            self._mail_row(mail),
        )

    def _mails(self, sql: str, params: Sequence[object]) -> list[QueuedMail]:
        return [
            replace(codec.loads(QueuedMail, row[0]), raw=bytes(row[1]))
            for row in self._rows(sql, params)
        ]

    def get_mail(self, mail_id: str) -> QueuedMail | None:
        found = self._mails("SELECT doc, raw FROM mail_queue WHERE id = ?", [mail_id])
        return found[0] if found else None

    def due_mail(self, now: int, limit: int) -> list[QueuedMail]:
        check_limit(limit)
        return self._mails(
            "SELECT doc, raw FROM mail_queue WHERE due_at <= ? ORDER BY id LIMIT ?", [now, limit]
        )

    def list_mail(self, account_id: str, *, related_id: str | None = None) -> list[QueuedMail]:
        if related_id is None:
            return self._mails(
                "SELECT doc, raw FROM mail_queue WHERE account_id = ? ORDER BY id", [account_id]
            )
        return self._mails(
            "SELECT doc, raw FROM mail_queue WHERE account_id = ? AND related_id = ? ORDER BY id",
            [account_id, related_id],
        )

    def mail_in_flight(self) -> list[QueuedMail]:
        return self._mails(
            "SELECT doc, raw FROM mail_queue WHERE status = 'sending' ORDER BY id", []
        )

    def in_flight_outbound(self) -> list[MessageRecord]:
        return self._messages(
            "SELECT doc, raw FROM messages WHERE status = 'sending' ORDER BY id", []
        )

    def count_from_sender(self, mailbox_id: str, sender: str) -> int:
        rows = self._rows(
            "SELECT count(*) FROM (SELECT 1 FROM messages WHERE mailbox_id = ? AND sender = ? "
            "AND direction = 'inbound' LIMIT ?)",
            [mailbox_id, sender.lower(), PRIOR_CAP],
        )
        return int(rows[0][0])

    # --- webhooks -------------------------------------------------------------------------

    def last_event_seq(self) -> int:
        return int(self._rows("SELECT COALESCE(MAX(seq), 0) FROM events")[0][0])

    def events_since(self, after: int, limit: int) -> list[EventRecord]:
        check_limit(limit)
        return self._docs(
            EventRecord, "SELECT doc FROM events WHERE seq > ? ORDER BY seq LIMIT ?", [after, limit]
        )

    def put_webhook(self, record: WebhookRecord) -> None:
        self._write(
            "INSERT INTO webhooks (id, account_id, doc) VALUES (?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET account_id = excluded.account_id, doc = excluded.doc",
            [record.id, record.endpoint.account_id, codec.dumps(record)],
        )

    def get_webhook(self, webhook_id: str) -> WebhookRecord | None:
        return self._doc(WebhookRecord, "SELECT doc FROM webhooks WHERE id = ?", [webhook_id])

    def delete_webhook(self, webhook_id: str) -> bool:
        return self._write("DELETE FROM webhooks WHERE id = ?", [webhook_id]).rowcount > 0

    def list_webhooks(self, account_id: str) -> list[WebhookRecord]:
        return self._docs(
            WebhookRecord,
            "SELECT doc FROM webhooks WHERE account_id = ? ORDER BY id",
            [account_id],
        )

    @staticmethod
    def _delivery_row(record: DeliveryRecord) -> list[object]:
        d = record.delivery
        return [record.account_id, d.endpoint_id, d.status.value, d.next_attempt_at,
                codec.dumps(record), record.id]  # fmt: skip

    def insert_delivery(self, record: DeliveryRecord) -> None:
        self._write(
            "INSERT INTO webhook_deliveries (account_id, endpoint_id, status, due_at, doc, id) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            self._delivery_row(record),
        )

    def update_delivery(self, record: DeliveryRecord) -> None:
        self._update(
            "delivery",
            record.id,
            "UPDATE webhook_deliveries SET account_id = ?, endpoint_id = ?, status = ?, "
            "due_at = ?, doc = ? WHERE id = ?",
            self._delivery_row(record),
        )

    def get_delivery(self, delivery_id: str) -> DeliveryRecord | None:
        return self._doc(
            DeliveryRecord, "SELECT doc FROM webhook_deliveries WHERE id = ?", [delivery_id]
        )

    def due_deliveries(self, now: int, limit: int) -> list[DeliveryRecord]:
        check_limit(limit)
        return self._docs(
            DeliveryRecord,
            "SELECT doc FROM webhook_deliveries WHERE due_at <= ? ORDER BY id LIMIT ?",
            [now, limit],
        )

    def deliveries_in_flight(self) -> list[DeliveryRecord]:
        return self._docs(
            DeliveryRecord,
            "SELECT doc FROM webhook_deliveries WHERE status = 'delivering' ORDER BY id",
            [],
        )

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
        sql = "SELECT doc FROM webhook_deliveries WHERE account_id = ?"
        params: list[object] = [account_id]
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        if webhook_id is not None:
            sql += " AND endpoint_id = ?"
            params.append(webhook_id)
        if cursor is not None:
            sql += " AND id < ?"
            params.append(cursor)
        found = self._docs(DeliveryRecord, sql + " ORDER BY id DESC LIMIT ?", [*params, limit + 1])
        return self._page(found, limit, lambda d: d.id)


__all__ = ["SqliteStore"]
