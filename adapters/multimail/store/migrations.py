"""The SQLite schema and its migrations.

Rule 1: the schema version is ``PRAGMA user_version``; ``MIGRATIONS[v]`` takes a database from
        version v to v + 1. The list is append-only: a released migration never changes.
Rule 2: a migration runs inside the transaction SqliteStore opens for it, together with the
        ``user_version`` bump, so it is applied whole or not at all.
Rule 3: every column is NOT NULL unless named nullable; tables are STRICT; each table keeps the
        value as a JSON ``doc`` plus the columns its queries filter and sort on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlite_utils
from sqlite_utils.db import DescIndex


def _v1_initial(db: sqlite_utils.Database) -> None:
    def table(
        name: str,
        columns: dict[str, type],
        pk: str | tuple[str, ...],
        nullable: tuple[str, ...] = (),
        **kw: Any,
    ) -> Any:
        # Every column is NOT NULL unless named; an INTEGER PRIMARY KEY is the rowid.
        required = [c for c, t in columns.items() if c not in nullable and (c != pk or t is str)]
        return db.table(name).create(columns, pk=pk, not_null=required, strict=True, **kw)

    table("accounts", {"id": str, "slug": str, "doc": str}, "id").create_index(
        ["slug"], unique=True
    )
    keys = table(
        "api_keys",
        {"id": str, "account_id": str, "secret_hash": str, "doc": str},
        "id",
        foreign_keys=[("account_id", "accounts", "id")],
    )
    keys.create_index(["secret_hash"], unique=True)
    keys.create_index(["account_id", "id"])
    boxes = table(
        "mailboxes",
        {"id": str, "account_id": str, "address": str, "status": str, "doc": str},
        "id",
        foreign_keys=[("account_id", "accounts", "id")],
    )
    boxes.create_index(["account_id", "id"])
    boxes.create_index(["address"])
    messages = table(
        "messages",
        {
            "id": str,
            "mailbox_id": str,
            "account_id": str,
            "thread_id": str,
            "direction": str,
            "status": str,
            "visible": int,
            "unread": int,
            "requires_action": int,
            "created_at": int,
            "message_id_header": str,
            "next_attempt_at": int,
            "send_at": int,
            "due_at": int,
            "doc": str,
            "raw": bytes,
        },
        "id",
        nullable=("next_attempt_at", "send_at", "due_at", "raw"),
        foreign_keys=[("mailbox_id", "mailboxes", "id")],
    )
    for flag in ("visible", "unread", "requires_action"):
        messages.create_index(["mailbox_id", flag, DescIndex("id")])
    messages.create_index(["mailbox_id", "thread_id", "id"])
    messages.create_index(["mailbox_id", "message_id_header"])
    messages.create_index(["due_at"])
    approvals = table(
        "approvals",
        {
            "id": str,
            "account_id": str,
            "mailbox_id": str,
            "message_id": str,
            "status": str,
            "doc": str,
        },
        "id",
        foreign_keys=[("message_id", "messages", "id")],
    )
    approvals.create_index(["account_id", "status", "id"])
    approvals.create_index(["message_id"])
    events = table(
        "events",
        {
            "seq": int,
            "id": str,
            "account_id": str,
            "mailbox_id": str,
            "type": str,
            "created_at": int,
            "doc": str,
        },
        "seq",
        nullable=("mailbox_id",),
    )
    events.create_index(["id"], unique=True)
    events.create_index(["account_id", "seq"])
    events.create_index(["mailbox_id", "seq"])
    table("audit", {"id": str, "account_id": str, "seq": int, "doc": str}, "id").create_index(
        ["account_id", "seq"], unique=True
    )
    table(
        "idempotency",
        {"key_id": str, "idempotency_key": str, "doc": str},
        ("key_id", "idempotency_key"),
    )
    table(
        "suppressions", {"account_id": str, "address": str, "doc": str}, ("account_id", "address")
    )
    table("contacts", {"id": str, "account_id": str, "doc": str}, "id").create_index(
        ["account_id", "id"]
    )
    table("facts", {"id": int, "mailbox_id": str, "at": int, "doc": str}, "id").create_index(
        ["mailbox_id", "at", "id"]
    )


def _v2_email(db: sqlite_utils.Database) -> None:
    """Real email: the sender of each message (first contact, prior messages), crash
    recovery of in-flight deliveries, server-held keys and the server's own mail queue."""
    db.execute("ALTER TABLE messages ADD COLUMN sender TEXT NOT NULL DEFAULT ''")
    db.execute("UPDATE messages SET sender = lower(json_extract(doc, '$.content.sender'))")
    db.execute("CREATE INDEX idx_messages_sender ON messages (mailbox_id, sender, direction)")
    db.execute("CREATE INDEX idx_messages_sending ON messages (id) WHERE status = 'sending'")
    db.table("kv").create({"name": str, "doc": str}, pk="name", not_null=["doc"], strict=True)
    mail = db.table("mail_queue").create(
        {
            "id": str,
            "account_id": str,
            "related_id": str,
            "status": str,
            "due_at": int,
            "doc": str,
            "raw": bytes,
        },
        pk="id",
        not_null=["account_id", "status", "doc", "raw"],
        strict=True,
    )
    mail.create_index(["due_at"])
    mail.create_index(["account_id", "related_id"])


def _v3_webhooks(db: sqlite_utils.Database) -> None:
    """Webhook endpoints and the delivery log (PRODUCT §9)."""
    hooks = db.table("webhooks").create(
        {"id": str, "account_id": str, "doc": str},
        pk="id",
        not_null=["account_id", "doc"],
        foreign_keys=[("account_id", "accounts", "id")],
        strict=True,
    )
    hooks.create_index(["account_id", "id"])
    deliveries = db.table("webhook_deliveries").create(
        {
            "id": str,
            "account_id": str,
            "endpoint_id": str,
            "status": str,
            "due_at": int,
            "doc": str,
        },
        pk="id",
        not_null=["account_id", "endpoint_id", "status", "doc"],
        strict=True,
    )
    deliveries.create_index(["due_at"])
    deliveries.create_index(["account_id", "id"])
    db.execute(
        "CREATE INDEX idx_deliveries_inflight ON webhook_deliveries (id) "
        "WHERE status = 'delivering'"
    )


def _v4_blobs(db: sqlite_utils.Database) -> None:
    """Content-addressed bytes: outbound attachments, stored once per SHA-256 (PRODUCT §3)."""
    db.table("blobs").create(
        {"sha256": str, "data": bytes}, pk="sha256", not_null=["sha256", "data"], strict=True
    )


#: ``MIGRATIONS[v]`` takes the schema from version v to v + 1. Append only.
MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (
    _v1_initial,
    _v2_email,
    _v3_webhooks,
    _v4_blobs,
)


__all__ = ["MIGRATIONS"]
