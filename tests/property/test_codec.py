"""The store codec: every storable value survives encode → JSON text → decode exactly.

Values are built with the real constructors (so the core's invariants hold) from wide
strategies: any text (lone surrogates included), unbounded integers, arbitrary JSON documents.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
from multimail.store import codec
from multimail.store.codec import CodecError
from multimail_core import approval, inbound, mailbox, outbound
from multimail_core.addresses import Address, parse_address
from multimail_core.authorization import Key, Scope, is_valid_scope_set
from multimail_core.modes import OversightMode

TEXT = st.text(st.characters(exclude_categories=()), max_size=20)
TEXTS = st.lists(TEXT, max_size=3).map(tuple)
INTS = st.integers()
MAYBE_TEXT = st.none() | TEXT
MAYBE_INT = st.none() | INTS

LOCAL = st.from_regex(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,8}(\.[A-Za-z0-9_-]{1,4}){0,2}", fullmatch=True
)
DOMAIN = st.from_regex(
    r"[a-z0-9]{1,8}(-[a-z0-9]{1,3})?\.(com|io|agents\.localhost|xn--bcher-kva\.example)",
    fullmatch=True,
)
ADDRESSES = st.builds(lambda local, domain: parse_address(f"{local}@{domain}"), LOCAL, DOMAIN)

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | INTS | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=10,
)
DOCUMENTS = st.dictionaries(TEXT, JSON_VALUES, max_size=4)


@st.composite
def mailboxes(draw: st.DrawFn) -> mailbox.Mailbox:
    status = draw(st.sampled_from(mailbox.Status))
    decommissioned = status is mailbox.Status.DECOMMISSIONED
    return mailbox.Mailbox(
        id=draw(TEXT),
        account_id=draw(TEXT),
        address=draw(ADDRESSES),
        display_name=draw(TEXT),
        mode=draw(st.sampled_from(OversightMode)),
        status=status,
        allowlist=draw(st.frozensets(TEXT, max_size=4)),
        webhook_url=draw(MAYBE_TEXT),
        created_at=draw(INTS),
        decommissioned_at=draw(INTS) if decommissioned else None,
    )


@st.composite
def outbounds(draw: st.DrawFn) -> outbound.Outbound:
    status = draw(st.sampled_from(outbound.Status))
    handoffs = 0 if status in outbound.NEVER_SENT else draw(st.integers(0, 1))
    return outbound.Outbound(
        id=draw(TEXT),
        mailbox_id=draw(TEXT),
        account_id=draw(TEXT),
        thread_id=draw(TEXT),
        created_by=draw(TEXT),
        recipients=tuple(draw(st.lists(TEXT, min_size=1, max_size=3))),
        subject=draw(TEXT),
        body_text=draw(TEXT),
        body_html=draw(MAYBE_TEXT),
        status=status,
        monitored=draw(st.booleans()),
        created_at=draw(INTS),
        send_at=draw(MAYBE_INT),
        approval_id=draw(MAYBE_TEXT),
        approved_by=draw(MAYBE_TEXT),
        attempts=handoffs + draw(st.integers(0, 5)) + (status is outbound.Status.SENDING),
        handoffs=handoffs,
        next_attempt_at=draw(MAYBE_INT),
        last_reply=draw(TEXT),
    )


INBOUNDS = st.builds(
    inbound.Inbound,
    id=TEXT,
    mailbox_id=TEXT,
    account_id=TEXT,
    thread_id=TEXT,
    sender=TEXT,
    subject=TEXT,
    kind=st.sampled_from(inbound.Kind),
    status=st.sampled_from(inbound.Status),
    received_at=INTS,
    approval_id=MAYBE_TEXT,
    replied=st.booleans(),
)

APPROVAL_CONTENT = st.builds(approval.Content, TEXT, TEXT, MAYBE_TEXT)


@st.composite
def approvals(draw: st.DrawFn) -> approval.Approval:
    status = draw(st.sampled_from(approval.Status))
    created_by = draw(MAYBE_TEXT)
    decided = status is not approval.Status.PENDING
    decided_by = draw(TEXT.filter(lambda t: t != created_by)) if decided else None
    return approval.Approval(
        id=draw(TEXT),
        account_id=draw(TEXT),
        mailbox_id=draw(TEXT),
        message_id=draw(TEXT),
        direction=draw(st.sampled_from(approval.Direction)),
        created_by=created_by,
        original=draw(APPROVAL_CONTENT),
        created_at=draw(INTS),
        status=status,
        decided_by=decided_by,
        decided_at=draw(INTS) if decided else None,
        reason=draw(TEXT),
        edited=draw(st.none() | APPROVAL_CONTENT) if status is approval.Status.APPROVED else None,
    )


@st.composite
def keys(draw: st.DrawFn) -> Key:
    scopes = draw(st.frozensets(st.sampled_from(Scope), min_size=1))
    mailbox_ids = draw(st.none() | st.frozensets(TEXT, min_size=1, max_size=3))
    if not is_valid_scope_set(scopes, mailbox_ids):
        scopes, mailbox_ids = frozenset({Scope.READ}), mailbox_ids
    return Key(
        id=draw(TEXT),
        account_id=draw(TEXT),
        scopes=scopes,
        mailbox_ids=mailbox_ids,
        server_admin=draw(st.booleans()),
        revoked=draw(st.booleans()),
    )


ACCOUNTS = st.builds(
    Account,
    id=TEXT,
    name=TEXT,
    oversight_email=MAYBE_TEXT,
    slug=TEXT,
    default_mode=st.sampled_from(OversightMode),
    created_at=INTS,
)
KEY_RECORDS = st.builds(
    KeyRecord, key=keys(), name=TEXT, secret_hash=TEXT, prefix=TEXT, created_at=INTS
)
ATTACHMENTS = st.builds(
    Attachment, attachment_id=TEXT, filename=TEXT, content_type=TEXT, size=INTS, sha256=TEXT
)
CONTENTS = st.builds(
    Content,
    sender=TEXT,
    to=TEXTS,
    cc=TEXTS,
    bcc=TEXTS,
    subject=TEXT,
    body_text=TEXT,
    body_html=MAYBE_TEXT,
    headers=st.lists(st.tuples(TEXT, TEXT), max_size=3).map(tuple),
    message_id_header=TEXT,
    in_reply_to=MAYBE_TEXT,
    references=TEXTS,
    attachments=st.lists(ATTACHMENTS, max_size=2).map(tuple),
)
MESSAGE_RECORDS = st.builds(
    MessageRecord,
    state=outbounds() | INBOUNDS,
    content=CONTENTS,
    raw=st.none() | st.binary(max_size=64),
    tags=st.lists(st.tuples(TEXT, TEXT), max_size=3).map(tuple),
)
EVENTS = st.builds(
    EventRecord,
    id=TEXT,
    seq=INTS,
    type=TEXT,
    account_id=TEXT,
    mailbox_id=MAYBE_TEXT,
    created_at=INTS,
    data=DOCUMENTS,
)
AUDIT = st.builds(
    AuditEntry,
    id=TEXT,
    seq=INTS,
    account_id=TEXT,
    action=TEXT,
    resource_type=TEXT,
    resource_id=TEXT,
    actor_key_id=MAYBE_TEXT,
    metadata=DOCUMENTS,
    created_at=INTS,
    prev_hash=TEXT,
    hash=TEXT,
)
IDEMPOTENT = st.builds(
    IdempotentResponse,
    key_id=TEXT,
    idempotency_key=TEXT,
    fingerprint=TEXT,
    status=INTS,
    body=DOCUMENTS,
    created_at=INTS,
)
SUPPRESSIONS = st.builds(
    Suppression, account_id=TEXT, address=TEXT, reason=TEXT, mailbox_id=MAYBE_TEXT, created_at=INTS
)
CONTACTS = st.builds(
    Contact, id=TEXT, account_id=TEXT, email=TEXT, name=TEXT, tags=TEXTS, created_at=INTS
)
FACTS = st.builds(ReputationFact, mailbox_id=TEXT, outcome=TEXT, at=INTS)

STORABLE: dict[str, st.SearchStrategy[Any]] = {
    "Address": ADDRESSES,
    "Mailbox": mailboxes(),
    "Outbound": outbounds(),
    "Inbound": INBOUNDS,
    "Approval": approvals(),
    "Key": keys(),
    "Account": ACCOUNTS,
    "KeyRecord": KEY_RECORDS,
    "MessageRecord": MESSAGE_RECORDS,
    "EventRecord": EVENTS,
    "AuditEntry": AUDIT,
    "IdempotentResponse": IDEMPOTENT,
    "Suppression": SUPPRESSIONS,
    "Contact": CONTACTS,
    "ReputationFact": FACTS,
}


@pytest.mark.parametrize("kind", sorted(STORABLE))
@given(data=st.data())
def test_round_trip_is_exact(kind: str, data: st.DataObject) -> None:
    value = data.draw(STORABLE[kind])
    encoded = codec.encode(value)
    assert json.loads(json.dumps(encoded)) == encoded  # already plain JSON
    assert codec.decode(type(value), encoded) == value
    text = codec.dumps(value)
    assert text.isascii()
    back = codec.loads(type(value), text)
    assert back == value
    assert type(back) is type(value)
    assert codec.dumps(back) == text  # one document per value: stable across round trips


@given(mailboxes())
def test_sets_are_stored_sorted(box: mailbox.Mailbox) -> None:
    encoded = codec.encode(box)
    assert isinstance(encoded, dict)
    assert encoded["allowlist"] == sorted(box.allowlist)


def test_message_state_is_tagged_with_its_class() -> None:
    state = inbound.Inbound(
        "msg_1", "mbx_1", "acc_1", "thr_1", "a@b.io", "hi", inbound.Kind.PERSONAL,
        inbound.Status.UNREAD, 5,
    )  # fmt: skip
    content = Content("a@b.io", ("c@d.io",), (), (), "hi", "body", None, (), "<m@b.io>", None, ())
    encoded = codec.encode(MessageRecord(state, content, b"\x00\xff"))
    assert isinstance(encoded, dict)
    assert encoded["state"] == {"type": "Inbound", "value": codec.encode(state)}
    assert encoded["raw"] == "AP8="


def test_address_is_stored_as_text_and_keeps_case() -> None:
    address = parse_address("Agent.Smith@Example.COM")
    assert codec.encode(address) == "Agent.Smith@example.com"
    assert codec.decode(Address, "Agent.Smith@example.com") == address


@pytest.mark.parametrize(
    "data",
    [
        {"tuple": (1, 2)},
        {"set": {1}},
        {"nan": float("nan")},
        {"inf": float("inf")},
        {"bytes": b"x"},
        {"nested": [{1: "int key"}]},
    ],
)
def test_free_form_documents_must_be_plain_json(data: dict[str, object]) -> None:
    event = EventRecord("evt_1", 1, "t", "acc_1", None, 0, data)
    with pytest.raises(CodecError):
        codec.dumps(event)


def test_wrongly_typed_fields_are_refused() -> None:
    fact = ReputationFact("mbx_1", "sent", "yesterday")  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="expected int"):
        codec.encode(fact)
    with pytest.raises(CodecError, match="expected int"):
        codec.encode(ReputationFact("mbx_1", "sent", True))


def test_missing_field_with_default_decodes_to_the_default() -> None:
    """A field added to a core value with a default still reads older documents."""
    content = Content("a", (), (), (), "s", "t", None, (), "<m>", None, ())
    encoded = codec.encode(content)
    assert isinstance(encoded, dict)
    del encoded["attachments"]
    assert codec.decode(Content, encoded) == content


def test_unknown_or_missing_required_fields_are_errors() -> None:
    encoded = codec.encode(ReputationFact("mbx_1", "sent", 1))
    assert isinstance(encoded, dict)
    with pytest.raises(CodecError, match="unknown fields"):
        codec.decode(ReputationFact, {**encoded, "surprise": 1})
    with pytest.raises(CodecError, match="lacks 'at'"):
        codec.decode(ReputationFact, {"mailbox_id": "mbx_1", "outcome": "sent"})


@pytest.mark.parametrize(
    ("cls", "data"),
    [
        (mailbox.Mailbox, []),
        (Address, "no-at-sign"),
        (Address, "a..b@example.com"),  # the Address invariants check what is read back
        (MessageRecord, {"state": {"type": "Nope", "value": {}}}),
        (approval.Approval, {"direction": "sideways"}),
    ],
)
def test_documents_that_are_not_values_are_refused(cls: type, data: codec.JSON) -> None:
    with pytest.raises(CodecError):
        codec.decode(cls, data)


def test_not_json_text_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match="not JSON"):
        codec.loads(ReputationFact, "{")
