"""SQLite durability (P10): committed means kept; interrupted means absent; opening is idempotent.

The kill test runs a child Python process that commits transactions in a loop and prints each
id, flushed, right after its COMMIT returns; the parent SIGKILLs it mid-loop (most likely in
the middle of a transaction) and then requires every reported id to be stored, the last
transaction whole or absent, and the file to pass SQLite's integrity check.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from multimail.records import Account, EventRecord, MessageRecord
from multimail.records import Content as MessageContent
from multimail.store.base import DanglingReference, StoreError
from multimail.store.migrations import MIGRATIONS
from multimail.store.sqlite import SqliteStore
from multimail_core import inbound, mailbox
from multimail_core.addresses import parse_address
from multimail_core.modes import OversightMode

ACCOUNT = Account("acc_1", "Acme", "boss@acme.test", "acme", OversightMode.GATED_SEND, 1)
BOX = mailbox.Mailbox(
    "mbx_1",
    "acc_1",
    parse_address("agent@acme.agents.localhost"),
    "Agent",
    OversightMode.MONITORED,
    mailbox.Status.ACTIVE,
    frozenset({"*@ok.test"}),
    None,
    2,
)
MESSAGE = MessageRecord(
    inbound.Inbound(
        "msg_1",
        "mbx_1",
        "acc_1",
        "thr_1",
        "ann@ok.test",
        "Hi",
        inbound.Kind.PERSONAL,
        inbound.Status.UNREAD,
        3,
    ),
    MessageContent(
        "ann@ok.test",
        ("agent@acme.agents.localhost",),
        (),
        (),
        "Hi",
        "Hello",
        None,
        (("Subject", "Hi"),),
        "<1@ok.test>",
        None,
        (),
    ),
    raw=b"Subject: Hi\r\n\r\nHello\r\n",
    tags=(("priority", "high"),),
)


def _event(n: int) -> EventRecord:
    return EventRecord(f"evt_{n}", 0, "message.received", "acc_1", "mbx_1", n, {"n": n})


def _seed(store: SqliteStore) -> None:
    with store.transaction():
        store.insert_account(ACCOUNT)
        store.insert_mailbox(BOX)
        store.insert_message(MESSAGE)
        store.append_event(_event(1))


def test_committed_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "mm.db"
    store = SqliteStore(path)
    _seed(store)
    store.close()

    again = SqliteStore(path)
    try:
        assert again.get_account("acc_1") == ACCOUNT
        assert again.get_mailbox("mbx_1") == BOX
        assert again.get_message("msg_1") == MESSAGE
        events = again.list_events("acc_1", after=0, mailbox_id=None, types=None, limit=10)
        assert [(e.seq, e.data) for e in events] == [(1, {"n": 1})]
        assert again.append_event(_event(2)).seq == 2  # the sequence goes on after a reopen
    finally:
        again.close()


def test_an_interrupted_transaction_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "mm.db"
    store = SqliteStore(path)

    seen_inside: list[MessageRecord | None] = []

    def crash() -> None:
        with store.transaction():
            _seed(store)  # a nested transaction: joins this one, commits nothing itself
            seen_inside.append(store.get_message("msg_1"))
            raise RuntimeError("crash between the writes and the commit")

    with pytest.raises(RuntimeError, match="crash"):
        crash()
    assert seen_inside == [MESSAGE]  # it was written, inside the transaction

    assert store.get_account("acc_1") is None
    assert store.get_message("msg_1") is None
    assert store.list_events("acc_1", after=0, mailbox_id=None, types=None, limit=10) == []
    store.close()
    again = SqliteStore(path)
    try:
        assert again.get_account("acc_1") is None
        assert again.append_event(_event(9)).seq == 1  # the rolled-back seq is not skipped
    finally:
        again.close()


def test_a_refused_write_leaves_the_transaction_usable(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "mm.db")
    try:
        with store.transaction():
            store.insert_account(ACCOUNT)
            with pytest.raises(DanglingReference):
                store.insert_message(MESSAGE)  # its mailbox does not exist yet
            store.insert_mailbox(BOX)
            store.insert_message(MESSAGE)
        assert store.get_message("msg_1") == MESSAGE
    finally:
        store.close()


def _schema(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()


def test_migrations_are_idempotent_and_versioned(tmp_path: Path) -> None:
    path = tmp_path / "mm.db"
    store = SqliteStore(path)
    _seed(store)
    assert store.schema_version() == len(MIGRATIONS) >= 1
    store.close()
    schema = _schema(path)
    tables = {n for n, _ in schema}
    assert tables >= {"accounts", "api_keys", "mailboxes", "messages", "approvals", "events"}
    assert tables >= {"audit", "idempotency", "suppressions", "contacts", "facts"}

    for _ in range(2):
        again = SqliteStore(path)
        assert again.schema_version() == len(MIGRATIONS)
        assert again.get_message("msg_1") == MESSAGE
        again.close()
    assert _schema(path) == schema


def test_a_database_from_a_newer_multimail_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mm.db"
    SqliteStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StoreError, match="upgrade MultiMail"):
        SqliteStore(path)


def test_threads_share_one_store_one_transaction_at_a_time(tmp_path: Path) -> None:
    """FastAPI runs sync handlers in a thread pool: transactions must serialize, not collide."""
    store = SqliteStore(tmp_path / "mm.db")
    store.insert_account(ACCOUNT)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(25):
                with store.transaction():
                    first = store.append_event(_event(worker * 1000 + 2 * i))
                    second = store.append_event(_event(worker * 1000 + 2 * i + 1))
                    assert second.seq == first.seq + 1  # nobody slipped in between
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        events = store.list_events("acc_1", after=0, mailbox_id=None, types=None, limit=1000)
        assert [e.seq for e in events] == list(range(1, 201))
    finally:
        store.close()


CHILD = textwrap.dedent(
    """
    import sys
    from multimail.records import Account, EventRecord
    from multimail.store.sqlite import SqliteStore
    from multimail_core.modes import OversightMode

    store = SqliteStore(sys.argv[1], synchronous=sys.argv[2])
    i = 0
    while True:
        i += 1
        with store.transaction():
            account = Account(f"acc_{i}", "x" * 200, None, f"slug-{i}", OversightMode.GATED_SEND, i)
            store.insert_account(account)
            for n in range(5):  # several statements: the kill often lands mid-transaction
                store.append_event(EventRecord(f"evt_{i}_{n}", 0, "t", account.id, None, i, {}))
        print(account.id, flush=True)
    """
)


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_sigkill_loses_no_reported_commit(tmp_path: Path, synchronous: str) -> None:
    path = tmp_path / "mm.db"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), synchronous],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    reported: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while len(reported) < 40 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            reported.append(line.strip())
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        # Whatever the child printed after our last read was committed too.
        reported += child.stdout.read().split()
        stderr = child.stderr.read() if child.stderr else ""
    assert child.returncode == -signal.SIGKILL, stderr
    assert len(reported) >= 40, stderr

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = SqliteStore(path)
    try:
        for account_id in reported:
            assert store.get_account(account_id) is not None, account_id
        # Every transaction is whole or absent: 5 events per stored account, none orphaned.
        stored = store.db.execute("SELECT id FROM accounts").fetchall()
        counts = store.db.execute(
            "SELECT account_id, COUNT(*) FROM events GROUP BY account_id"
        ).fetchall()
        assert sorted(counts) == sorted((account_id, 5) for (account_id,) in stored)
        assert len(stored) >= len(reported)
    finally:
        store.close()


def test_a_version_1_database_with_mail_is_migrated_in_place(tmp_path: Path):
    """Schema v2 (real email) adds the sender column, backfilled from the stored documents,
    the key store and the mail queue; mail stored by v1 reads back unchanged."""
    import json

    import sqlite_utils

    from multimail.store import codec

    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    MIGRATIONS[0](sqlite_utils.Database(conn))
    conn.execute("PRAGMA user_version = 1")
    conn.execute("COMMIT")
    conn.close()
    # what a v1 server stored: the same documents, without the fields v2 added
    store = SqliteStore(tmp_path / "scratch.db")
    account = Account("acc_01JDQ8ZK3V5T7W9X2B4C6D8E0G", "a", None, "a", OversightMode.GATED_SEND, 1)
    box, _ = mailbox.create(
        "mbx_01JDQ8ZK3V5T7W9X2B4C6D8E0F", account.id, parse_address("agent@a.agents.test"),
        display_name="agent", mode=OversightMode.AUTONOMOUS, webhook_url=None, now=1,
    )  # fmt: skip
    message = MessageRecord(
        inbound.Inbound(
            id="msg_01JDQ8ZK3V5T7W9X2B4C6D8E0J", mailbox_id=box.id, account_id=account.id,
            thread_id="thr_01JDQ8ZK3V5T7W9X2B4C6D8E0K", sender="Alice@Outside.example",
            subject="old", kind=inbound.Kind.PERSONAL, status=inbound.Status.UNREAD,
            received_at=2,
        ),
        MessageContent("Alice@Outside.example", (box.address.normalized(),), (), (), "old",
                       "stored by v1", None, (), "<old@outside.example>", None, ()),
    )  # fmt: skip
    store.close()
    doc = json.loads(codec.dumps(message))
    doc.pop("meta")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "INSERT INTO accounts (id, slug, doc) VALUES (?, ?, ?)",
        [account.id, account.slug, codec.dumps(account)],
    )
    conn.execute(
        "INSERT INTO mailboxes (id, account_id, address, status, doc) VALUES (?, ?, ?, ?, ?)",
        [box.id, account.id, box.address.normalized(), box.status.value, codec.dumps(box)],
    )
    conn.execute(
        "INSERT INTO messages (id, mailbox_id, account_id, thread_id, direction, status, "
        "visible, unread, requires_action, created_at, message_id_header, doc, raw) "
        "VALUES (?, ?, ?, ?, 'inbound', 'unread', 1, 1, 1, 2, ?, ?, ?)",
        [message.id, box.id, account.id, message.state.thread_id, "<old@outside.example>",
         json.dumps(doc), b"raw bytes of v1"],
    )  # fmt: skip
    conn.close()

    migrated = SqliteStore(path)
    try:
        assert migrated.schema_version() == len(MIGRATIONS) >= 2
        got = migrated.get_message(message.id)
        assert got is not None
        assert got.content == message.content
        assert got.raw == b"raw bytes of v1"
        assert got.meta == {}
        assert migrated.count_from_sender(box.id, "alice@outside.example") == 1
        assert migrated.kv_get("dkim:a.agents.test") is None
        assert migrated.due_mail(10**15, 10) == []
    finally:
        migrated.close()
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
