"""SQLite against the reference model: the same random operations must give the same answers.

A MemoryStore and a SqliteStore (a file in a temporary directory) receive identical writes —
accounts, keys, mailboxes, messages of both directions, approvals, events, audit entries,
idempotent responses, suppressions, contacts, facts — drawn from small pools of ids, slugs,
hashes, addresses, threads and Message-IDs so that duplicates, dangling references, updates of
missing rows and shared threads happen often. Every write must end the same way in both
(the same value, or the same exception class); every query, with small limits and its cursors
followed to the end, must return equal values. Transactions that raise midway, nested or
not, must leave both stores exactly as they were. A seed gives every run two accounts, the
pooled mailboxes, held and queued messages with approvals about them, facts, events and audit
entries, so that the queries have pages to turn from the first step.

Budget: 100 examples x up to 50 steps; about 20 s on an idle 2-core machine (CI runs it beside
the rest of the suite: well under a minute).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from multimail.records import (
    Account,
    Attachment,
    AuditEntry,
    Contact,
    Content,
    EventRecord,
    IdempotentResponse,
    KeyRecord,
    MessageRecord,
    ReputationFact,
    Suppression,
)
from multimail.store.base import Store, StoreError
from multimail.store.memory import MemoryStore
from multimail.store.sqlite import SqliteStore
from multimail_core import approval, inbound, mailbox, outbound
from multimail_core.addresses import parse_address
from multimail_core.authorization import Key, Scope
from multimail_core.ids import Kind, make_id
from multimail_core.modes import OversightMode


def _ids(kind: Kind, n: int) -> list[str]:
    return [make_id(kind, f"{i:026d}") for i in range(1, n + 1)]


ACCOUNT_IDS = _ids(Kind.ACCOUNT, 3)  # the third is rarely inserted: dangling references
SLUGS = ["alpha", "beta", "gamma"]
KEY_IDS = _ids(Kind.KEY, 4)
HASHES = ["h1", "h2", "h3"]
MAILBOX_IDS = _ids(Kind.MAILBOX, 5)
ADDRESSES = ["agent@x.test", "Agent@x.test", "bot@x.test", "agent@y.test"]
NORMALIZED = sorted({parse_address(a).normalized() for a in ADDRESSES})
MESSAGE_IDS = _ids(Kind.MESSAGE, 16)
THREAD_IDS = _ids(Kind.THREAD, 3)
HEADERS = ["<1@x.test>", "<2@x.test>", "<é@x.test>", "<\udc80@x.test>"]
APPROVAL_IDS = _ids(Kind.APPROVAL, 5)
EVENT_IDS = _ids(Kind.EVENT, 25)
EVENT_TYPES = ["message.sent", "message.received", "mailbox.created"]
AUDIT_IDS = [f"aud_{i}" for i in range(1, 16)]
IDEMPOTENCY_KEYS = ["k1", "k2", "k3"]
SUPPRESSED = ["ann@x.test", "Ann@x.test", "émile@x.test", "zed@y.test"]
CONTACT_IDS = [f"con_{i}" for i in range(1, 6)]
CONTACT_EMAILS = ["ann@x.test", "BOB@Y.TEST", "straße@x.test"]
CONTACT_NAMES = ["Ann", "Bob Smith", "STRASSE", ""]
QUERIES = [None, "", "ann", "B", "x.test", "strasse", "zz"]
NOWS = [0, 3, 6, 10]
TIMES = st.sampled_from([3, 6, 0, 10, 1, 5, 8])  # the NOWS first: due-time boundaries
MAYBE_TIME = TIMES | st.none()
SMALL_LIMITS = st.integers(1, 3)

account_ids = st.sampled_from([*ACCOUNT_IDS[:2] * 3, ACCOUNT_IDS[2]])
mailbox_ids = st.sampled_from(MAILBOX_IDS)
message_ids = st.sampled_from(MESSAGE_IDS)
onlies = st.none() | st.frozensets(mailbox_ids, max_size=3)
json_docs = st.dictionaries(
    st.sampled_from(["a", "b", "ü"]),
    st.none() | st.integers(-3, 3) | st.text(max_size=3) | st.lists(st.booleans(), max_size=2),
    max_size=2,
)


@dataclass(frozen=True)
class Op:
    """One store call: ``getattr(store, name)(*args)``."""

    name: str
    args: tuple[Any, ...]

    def __call__(self, store: Store) -> Any:
        return getattr(store, self.name)(*self.args)


def _op(name: str, strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Op]:
    return strategy.map(lambda value: Op(name, (value,)))


# --- values, built with the real constructors -------------------------------------------

accounts = st.builds(
    Account,
    id=account_ids,
    name=st.sampled_from(["Acme", "Beta"]),
    oversight_email=st.none() | st.just("boss@x.test"),
    slug=st.sampled_from(SLUGS),
    default_mode=st.sampled_from(OversightMode),
    created_at=TIMES,
)

SCOPE_SETS = [
    (frozenset({Scope.ADMIN}), None),
    (frozenset({Scope.OVERSIGHT}), None),
    (frozenset({Scope.SEND, Scope.READ}), frozenset(MAILBOX_IDS[:2])),
    (frozenset({Scope.READ}), frozenset(MAILBOX_IDS[1:2])),
]


@st.composite
def key_records(draw: st.DrawFn) -> KeyRecord:
    scopes, restriction = draw(st.sampled_from(SCOPE_SETS))
    key = Key(
        draw(st.sampled_from(KEY_IDS)),
        draw(account_ids),
        scopes,
        restriction,
        server_admin=draw(st.booleans()),
        revoked=draw(st.booleans()),
    )
    return KeyRecord(key, "agent", draw(st.sampled_from(HASHES)), "mm_live_abcd", draw(TIMES))


@st.composite
def mailboxes(draw: st.DrawFn) -> mailbox.Mailbox:
    status = draw(st.sampled_from(mailbox.Status))
    return mailbox.Mailbox(
        id=draw(mailbox_ids),
        account_id=draw(account_ids),
        address=parse_address(draw(st.sampled_from(ADDRESSES))),
        display_name=draw(st.sampled_from(["Agent", "Bot"])),
        mode=draw(st.sampled_from(OversightMode)),
        status=status,
        allowlist=draw(st.frozensets(st.sampled_from(["*@ok.test", "a@b.test"]))),
        webhook_url=draw(st.none() | st.just("https://hook.test/x")),
        created_at=draw(TIMES),
        decommissioned_at=draw(TIMES) if status is mailbox.Status.DECOMMISSIONED else None,
    )


# The statuses the queries single out come first (Hypothesis favours early elements); the
# seed holds messages itself.
_DISPATCHABLE = [outbound.Status.QUEUED, outbound.Status.DEFERRED, outbound.Status.SCHEDULED]
OUTBOUND_STATUSES = _DISPATCHABLE + [s for s in outbound.Status if s not in _DISPATCHABLE]
INBOUND_STATUSES = [
    inbound.Status.UNREAD,
    *(s for s in inbound.Status if s is not inbound.Status.UNREAD),
]


@st.composite
def states(draw: st.DrawFn, dispatchable: bool = False) -> outbound.Outbound | inbound.Inbound:
    common: dict[str, Any] = {
        "id": draw(message_ids),
        "mailbox_id": draw(mailbox_ids),
        "account_id": draw(account_ids),
        "thread_id": draw(st.sampled_from(THREAD_IDS)),
        "subject": "Hello",
        "approval_id": draw(st.none() | st.sampled_from(APPROVAL_IDS)),
    }
    if dispatchable or draw(st.booleans()):
        status = draw(st.sampled_from(_DISPATCHABLE if dispatchable else OUTBOUND_STATUSES))
        handoffs = 0 if status in outbound.NEVER_SENT else draw(st.integers(0, 1))
        return outbound.Outbound(
            **common,
            created_by=draw(st.sampled_from(KEY_IDS)),
            recipients=("ann@x.test",),
            body_text="body",
            body_html=None,
            status=status,
            monitored=draw(st.booleans()),
            created_at=draw(TIMES),
            send_at=draw(MAYBE_TIME),
            approved_by=None,
            attempts=handoffs + draw(st.integers(0, 2)) + (status is outbound.Status.SENDING),
            handoffs=handoffs,
            next_attempt_at=draw(MAYBE_TIME),
        )
    return inbound.Inbound(
        **common,
        sender="ann@x.test",
        kind=draw(st.sampled_from(inbound.Kind)),
        status=draw(st.sampled_from(INBOUND_STATUSES)),
        received_at=draw(TIMES),
        replied=draw(st.booleans()),
    )


ATTACHMENT = Attachment("att_1", "a.txt", "text/plain", 3, "ab")


@st.composite
def message_records(draw: st.DrawFn, dispatchable: bool = False) -> MessageRecord:
    content = Content(
        sender="ann@x.test",
        to=("agent@x.test",),
        cc=(),
        bcc=(),
        subject="Hello",
        body_text=draw(st.sampled_from(["hi", "héllo"])),
        body_html=None,
        headers=(("X-Test", "1"),),
        message_id_header=draw(st.sampled_from(HEADERS)),
        in_reply_to=None,
        references=(),
        attachments=tuple(draw(st.lists(st.just(ATTACHMENT), max_size=1))),
    )
    return MessageRecord(
        draw(states(dispatchable)),
        content,
        raw=draw(st.none() | st.binary(max_size=6)),
        tags=tuple(
            draw(st.lists(st.tuples(st.just("k"), st.sampled_from(["1", "2"])), max_size=1))
        ),
    )


@st.composite
def approvals(draw: st.DrawFn) -> approval.Approval:
    status = draw(st.sampled_from([*approval.Status, *[approval.Status.PENDING] * 3]))
    decided = status is not approval.Status.PENDING
    original = approval.Content("Hello", "body", None)
    return approval.Approval(
        id=draw(st.sampled_from(APPROVAL_IDS)),
        account_id=draw(account_ids),
        mailbox_id=draw(mailbox_ids),
        message_id=draw(message_ids),
        direction=draw(st.sampled_from(approval.Direction)),
        created_by=KEY_IDS[0],
        original=original,
        created_at=draw(TIMES),
        status=status,
        decided_by=KEY_IDS[1] if decided else None,
        decided_at=draw(TIMES) if decided else None,
        reason="",
        edited=(
            draw(st.none() | st.just(approval.Content("Edited", "body", None)))
            if status is approval.Status.APPROVED
            else None
        ),
    )


events = st.builds(
    EventRecord,
    id=st.sampled_from(EVENT_IDS),
    seq=st.just(0),
    type=st.sampled_from(EVENT_TYPES),
    account_id=account_ids,
    mailbox_id=st.none() | mailbox_ids,
    created_at=TIMES,
    data=json_docs | st.just({"not json": (1, 2)}),
)
audit_entries = st.builds(
    AuditEntry,
    id=st.sampled_from(AUDIT_IDS),
    seq=st.integers(1, 6),
    account_id=account_ids,
    action=st.sampled_from(["mailbox.create", "message.send"]),
    resource_type=st.just("mailbox"),
    resource_id=mailbox_ids,
    actor_key_id=st.none() | st.sampled_from(KEY_IDS),
    metadata=json_docs,
    created_at=TIMES,
    prev_hash=st.just("0" * 64),
    hash=st.sampled_from(["a" * 64, "b" * 64]),
)
idempotent = st.builds(
    IdempotentResponse,
    key_id=st.sampled_from(KEY_IDS[:2]),
    idempotency_key=st.sampled_from(IDEMPOTENCY_KEYS),
    fingerprint=st.sampled_from(["f1", "f2"]),
    status=st.sampled_from([200, 201, 202]),
    body=json_docs,
    created_at=TIMES,
)
suppressions = st.builds(
    Suppression,
    account_id=account_ids,
    address=st.sampled_from(SUPPRESSED),
    reason=st.sampled_from(["manual", "hard_bounce"]),
    mailbox_id=st.none() | mailbox_ids,
    created_at=TIMES,
)
contacts = st.builds(
    Contact,
    id=st.sampled_from(CONTACT_IDS),
    account_id=account_ids,
    email=st.sampled_from(CONTACT_EMAILS),
    name=st.sampled_from(CONTACT_NAMES),
    tags=st.lists(st.sampled_from(["vip", "lead"]), max_size=2).map(tuple),
    created_at=TIMES,
)
facts = st.builds(
    ReputationFact,
    mailbox_id=mailbox_ids,
    outcome=st.sampled_from(["sent", "delivered", "hard_bounce"]),
    at=st.integers(0, 3),  # ties are frequent: their order (insertion) must agree
)

#: Attachment bytes (content-addressed): the empty file, two short ones, every byte value.
BLOBS = [b"", b"a", b"%PDF-1.4 x", bytes(range(256)) * 8]

WRITES: st.SearchStrategy[Op] = st.one_of(
    _op("insert_account", accounts),
    _op("update_account", accounts),
    _op("insert_key", key_records()),
    _op("update_key", key_records()),
    _op("insert_mailbox", mailboxes()),
    _op("update_mailbox", mailboxes()),
    _op("insert_message", message_records()),
    _op("insert_message", message_records()),
    _op("update_message", message_records()),
    _op("insert_approval", approvals()),
    _op("update_approval", approvals()),
    _op("append_event", events),
    _op("append_audit", audit_entries),
    _op("put_idempotent", idempotent),
    _op("add_suppression", suppressions),
    st.builds(
        lambda a, s: Op("remove_suppression", (a, s)), account_ids, st.sampled_from(SUPPRESSED)
    ),
    _op("insert_contact", contacts),
    st.builds(lambda a, c: Op("delete_contact", (a, c)), account_ids, st.sampled_from(CONTACT_IDS)),
    _op("add_fact", facts),
    _op("put_blob", st.sampled_from(BLOBS)),
)


# --- queries ------------------------------------------------------------------------------

Paged = Callable[[Store, str | None], tuple[list[Any], str | None]]


def _pages(store: Store, query: Paged, first: str | None) -> list[tuple[list[Any], str | None]]:
    """Every page from ``first`` on, following ``next_cursor`` until it is None."""
    pages, cursor = [], first
    for _ in range(100):
        items, cursor = query(store, cursor)
        pages.append((items, cursor))
        if cursor is None:
            return pages
    raise AssertionError("cursor never ran out")


def _mailbox_pages(account: str, only: frozenset[str] | None, limit: int) -> Paged:
    return lambda s, c: s.list_mailboxes(account, only=only, limit=limit, cursor=c)


def _message_pages(box: str, filter: str, direction: str | None, limit: int) -> Paged:
    return lambda s, c: s.list_messages(
        box, filter=filter, direction=direction, limit=limit, cursor=c
    )


def _pending_pages(account: str, only: frozenset[str] | None, limit: int) -> Paged:
    return lambda s, c: s.list_pending(account, only=only, limit=limit, cursor=c)


def _audit_pages(account: str, limit: int) -> Paged:
    return lambda s, c: s.list_audit(account, limit=limit, cursor=c)


FILTERS = ["all", "unread", "requires_action"]
DIRECTIONS = [None, "inbound", "outbound"]

paged_queries = st.one_of(
    st.builds(_mailbox_pages, account_ids, onlies, SMALL_LIMITS),
    st.builds(
        _message_pages,
        mailbox_ids,
        st.sampled_from(FILTERS),
        st.sampled_from(DIRECTIONS),
        SMALL_LIMITS,
    ),
    st.builds(_pending_pages, account_ids, onlies, SMALL_LIMITS),
    st.builds(_audit_pages, account_ids, SMALL_LIMITS),
)
first_cursors = st.none() | st.sampled_from([MAILBOX_IDS[2], MESSAGE_IDS[5], APPROVAL_IDS[2], "3"])

simple_queries: st.SearchStrategy[Op] = st.one_of(
    st.builds(lambda a: Op("get_account", (a,)), account_ids),
    st.builds(lambda s: Op("account_by_slug", (s,)), st.sampled_from(SLUGS)),
    st.builds(lambda k: Op("get_key", (k,)), st.sampled_from(KEY_IDS)),
    st.builds(lambda h: Op("key_by_hash", (h,)), st.sampled_from(HASHES)),
    st.builds(lambda a: Op("list_keys", (a,)), account_ids),
    st.builds(lambda m: Op("get_mailbox", (m,)), mailbox_ids),
    st.builds(lambda a: Op("mailbox_by_address", (a,)), st.sampled_from(NORMALIZED)),
    st.builds(lambda a: Op("address_holders", (a,)), st.sampled_from(NORMALIZED)),
    st.builds(lambda m: Op("get_message", (m,)), message_ids),
    st.builds(lambda m, t: Op("thread_messages", (m, t)), mailbox_ids, st.sampled_from(THREAD_IDS)),
    st.builds(
        lambda m, h: Op("thread_of_header", (m, h)),
        mailbox_ids,
        st.lists(st.sampled_from(HEADERS), max_size=3),
    ),
    st.builds(lambda n, k: Op("due_outbound", (n, k)), st.sampled_from(NOWS), SMALL_LIMITS),
    st.builds(lambda a: Op("get_approval", (a,)), st.sampled_from(APPROVAL_IDS)),
    st.builds(lambda a: Op("last_audit", (a,)), account_ids),
    st.builds(
        lambda k, i: Op("get_idempotent", (k, i)),
        st.sampled_from(KEY_IDS[:2]),
        st.sampled_from(IDEMPOTENCY_KEYS),
    ),
    st.builds(lambda a: Op("list_suppressions", (a,)), account_ids),
    st.builds(lambda a, q: Op("list_contacts", (a, q)), account_ids, st.sampled_from(QUERIES)),
    st.builds(lambda m, s: Op("facts", (m, s)), mailbox_ids, st.sampled_from(NOWS)),
)


def _events(
    store: Store,
    account: str,
    after: int,
    box: str | None,
    types: frozenset[str] | None,
    limit: int,
) -> list[EventRecord]:
    return store.list_events(account, after=after, mailbox_id=box, types=types, limit=limit)


def snapshot(store: Store) -> dict[str, Any]:
    """Everything the store can answer about the pools, every list read to its end one item
    per page (so every cursor is used)."""
    view: dict[str, Any] = {}
    for account in ACCOUNT_IDS:
        view[f"account {account}"] = store.get_account(account)
        view[f"keys {account}"] = store.list_keys(account)
        for only in (None, frozenset(MAILBOX_IDS[1:3])):
            view[f"mailboxes {account} {only}"] = _pages(
                store, _mailbox_pages(account, only, 1), None
            )
            view[f"pending {account} {only}"] = _pages(
                store, _pending_pages(account, only, 1), None
            )
        view[f"audit {account}"] = _pages(store, _audit_pages(account, 1), None)
        view[f"audit all {account}"] = list(store.iter_audit(account))
        view[f"last audit {account}"] = store.last_audit(account)
        view[f"events {account}"] = _events(store, account, 0, None, None, 1000)
        view[f"suppressions {account}"] = store.list_suppressions(account)
        view[f"contacts {account}"] = store.list_contacts(account, None)
    view["slugs"] = [store.account_by_slug(s) for s in SLUGS]
    view["keys"] = [store.get_key(k) for k in KEY_IDS] + [store.key_by_hash(h) for h in HASHES]
    view["addresses"] = [
        (store.mailbox_by_address(a), store.address_holders(a)) for a in NORMALIZED
    ]
    view["messages"] = [store.get_message(m) for m in MESSAGE_IDS]
    view["approvals"] = [store.get_approval(a) for a in APPROVAL_IDS]
    view["due"] = [store.due_outbound(now, 100) for now in NOWS]
    view["idempotent"] = [store.get_idempotent(k, i) for k in KEY_IDS[:2] for i in IDEMPOTENCY_KEYS]
    view["blobs"] = [store.get_blob(hashlib.sha256(b).hexdigest()) for b in BLOBS]
    for box in MAILBOX_IDS:
        view[f"facts {box}"] = store.facts(box, 0)
        view[f"threads {box}"] = [store.thread_messages(box, t) for t in THREAD_IDS]
        view[f"header {box}"] = [store.thread_of_header(box, [h]) for h in HEADERS]
        for filter in FILTERS:
            for direction in DIRECTIONS:
                query = _message_pages(box, filter, direction, 1)
                view[f"inbox {box} {filter} {direction}"] = _pages(store, query, None)
    return view


def _held(record: MessageRecord) -> MessageRecord:
    state = record.state
    if isinstance(state, outbound.Outbound):
        return replace(record, state=replace(state, status=outbound.Status.PENDING_APPROVAL))
    return replace(record, state=replace(state, status=inbound.Status.PENDING_INBOUND_APPROVAL))


class Boom(Exception):
    """Raised inside a transaction to make it roll back."""


def _outcome(store: Store, op: Callable[[Store], Any]) -> tuple[str, Any]:
    try:
        return ("ok", op(store))
    except (StoreError, ValueError) as exc:
        return ("error", type(exc))


class StoreAgreement(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="mm-agreement-")
        self.memory = MemoryStore()
        self.sqlite = SqliteStore(f"{self.tmp}/store.db")
        self.sqlite.audit_chunk = 2  # iter_audit reads in chunks: make it turn chunks here
        self.stores: tuple[Store, Store] = (self.memory, self.sqlite)

    def teardown(self) -> None:
        try:
            assert snapshot(self.memory) == snapshot(self.sqlite)
        finally:
            self.sqlite.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    @initialize(
        boxes=st.lists(mailboxes(), min_size=5, max_size=5),
        messages=st.lists(message_records(), min_size=4, max_size=12),
        queue=st.lists(message_records(dispatchable=True), min_size=1, max_size=4),
        held=st.lists(approvals(), min_size=3, max_size=6),
        history=st.lists(
            st.one_of(_op("add_fact", facts), _op("append_event", events)), max_size=10
        ),
        audit=st.lists(_op("append_audit", audit_entries), min_size=3, max_size=8),
    )
    def seed(
        self,
        boxes: list[mailbox.Mailbox],
        messages: list[MessageRecord],
        queue: list[MessageRecord],
        held: list[approval.Approval],
        history: list[Op],
        audit: list[Op],
    ) -> None:
        """Two accounts and every pooled mailbox exist from the start, so that most message
        and approval writes land rather than dangle."""
        for account, slug in zip(ACCOUNT_IDS[:2], SLUGS, strict=False):
            self._agree(
                Op(
                    "insert_account",
                    (Account(account, slug, None, slug, OversightMode.GATED_SEND, 0),),
                )
            )
        for i, (box, box_id) in enumerate(zip(boxes, MAILBOX_IDS, strict=True)):
            seeded = replace(box, id=box_id, account_id=ACCOUNT_IDS[i % 2])
            self._agree(Op("insert_mailbox", (seeded,)))
        # Approvals about seeded messages, in their mailbox's account: all but the last about
        # held messages, so that list_pending has pages to turn; the last about a queued (or
        # deferred, or scheduled) one, so that it has an approval to skip.
        messages = [_held(m) for m in messages[: len(held) - 1]] + messages[len(held) - 1 :]
        for message in messages + queue:
            self._agree(Op("insert_message", (message,)))
        targets = messages[: len(held) - 1] + queue
        for apr, target in zip(held, targets, strict=False):
            state = target.state
            owner = ACCOUNT_IDS[MAILBOX_IDS.index(state.mailbox_id) % 2]
            apr = replace(apr, message_id=state.id, mailbox_id=state.mailbox_id, account_id=owner)
            self._agree(Op("insert_approval", (apr,)))
        for op in history + audit:
            self._agree(op)

    def _agree(self, op: Callable[[Store], Any]) -> tuple[str, Any]:
        expected, actual = (_outcome(s, op) for s in self.stores)
        assert actual == expected, f"{op}: memory {expected!r}, sqlite {actual!r}"
        return expected

    @rule(op=WRITES)
    def write(self, op: Op) -> None:
        self._agree(op)

    @rule(ops=st.lists(WRITES, min_size=1, max_size=5), split=st.integers(0, 5))
    def committed_transaction(self, ops: list[Op], split: int) -> None:
        """A nested block joins the outer transaction; refused writes leave it usable."""

        def run(store: Store) -> list[tuple[str, Any]]:
            with store.transaction():
                done = [_outcome(store, op) for op in ops[:split]]
                with store.transaction():
                    done += [_outcome(store, op) for op in ops[split:]]
            return done

        self._agree(run)

    @rule(ops=st.lists(WRITES, min_size=1, max_size=5), split=st.integers(0, 5))
    def failing_transaction(self, ops: list[Op], split: int) -> None:
        """An exception anywhere, even in a nested block, undoes the whole transaction."""

        def run(store: Store) -> None:
            with store.transaction():
                for op in ops[:split]:
                    _outcome(store, op)
                with store.transaction():
                    for op in ops[split:]:
                        _outcome(store, op)
                    raise Boom

        before = snapshot(self.memory)
        for store in self.stores:
            with pytest.raises(Boom):
                run(store)
        assert snapshot(self.memory) == before
        assert snapshot(self.sqlite) == before

    @rule(query=paged_queries, first=first_cursors)
    def paged_read(self, query: Paged, first: str | None) -> None:
        self._agree(lambda store: _pages(store, query, first))

    @rule(query=simple_queries)
    def read(self, query: Op) -> None:
        self._agree(query)

    @rule(
        account=account_ids,
        after=st.integers(0, 8),
        box=st.none() | mailbox_ids,
        types=st.none() | st.frozensets(st.sampled_from(EVENT_TYPES), max_size=2),
        limit=SMALL_LIMITS,
    )
    def read_events(
        self, account: str, after: int, box: str | None, types: frozenset[str] | None, limit: int
    ) -> None:
        self._agree(lambda store: _events(store, account, after, box, types, limit))

    @rule(limit=st.integers(-1, 0), filter=st.sampled_from(["all", "bogus"]))
    def bad_queries(self, limit: int, filter: str) -> None:
        """Refused the same way: a bad limit or an unknown filter is a ValueError."""
        outcome = self._agree(
            lambda store: store.list_messages(
                MAILBOX_IDS[0], filter=filter, direction=None, limit=limit, cursor=None
            )
        )
        assert outcome == ("error", ValueError)


StoreAgreement.TestCase.settings = settings(max_examples=100, stateful_step_count=50, deadline=None)
test_store_agreement = StoreAgreement.TestCase
