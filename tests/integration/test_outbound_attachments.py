"""Outbound attachments end to end (PRODUCT §3, §5, §7): send and reply take files, their
bytes are stored once by SHA-256 with the message, the signed message carries them to local
mailboxes, the relay and the operator's monitored copy, held drafts show and serve them, and
the API refuses what it cannot send with a problem naming the field.

One embedded server per module relaying to an SMTP sink; each test makes its own account
whose oversight address is outside, so approval requests and copies reach the sink.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import os
import re
import sqlite3
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from multimail import verify
from multimail.client import Client, attachment
from multimail.embedded import Embedded, run_embedded
from multimail.store.memory import MemoryStore
from multimail.store.migrations import MIGRATIONS
from multimail.store.sqlite import SqliteStore
from multimail_core.errors import InvalidValue
from tests.integration.conftest import Api, Tenant, assert_problem, eventually, unique
from tests.smtp_sink import Sink

MIB = 1024 * 1024
NAME = "Übersicht – März 報告.txt"


@pytest.fixture(scope="module")
def mm(sink: Sink) -> Iterator[Embedded]:
    with run_embedded(relay=sink.url) as server:
        yield server


@pytest.fixture
def tenant(overseen_tenant: Tenant) -> Tenant:
    return overseen_tenant


def files() -> list[tuple[str, str, bytes]]:
    """A binary file (every byte value, CR and LF included) and a text file with a
    non-ASCII name; random bytes keep each test's blobs its own."""
    binary = os.urandom(3000) + bytes(range(256)) + b"\r\n\x00\r"
    return [
        ("data.bin", "application/octet-stream", binary),
        (NAME, "text/plain", "größe: 10\n".encode() + os.urandom(8).hex().encode()),
    ]


def wire(items: list[tuple[str, str, bytes]]) -> list[dict[str, str]]:
    return [attachment(n, d, t) for n, t, d in items]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def listed(view: dict) -> list[tuple[str, str, int, str]]:
    return [(a["filename"], a["content_type"], a["size"], a["sha256"]) for a in view["attachments"]]


def expected(items: list[tuple[str, str, bytes]]) -> list[tuple[str, str, int, str]]:
    return [(n, t, len(d), sha(d)) for n, t, d in items]


def download(api: Api, email_id: str, attachment_id: str) -> bytes:
    r = api.get(f"/v1/emails/{email_id}/attachments/{attachment_id}")
    assert r.status_code == 200, r.text
    return r.content


def mime_files(raw: bytes) -> list[tuple[str | None, str, bytes]]:
    """What a mail reader (the stdlib's) finds attached to ``raw``."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    assert msg.get_content_type() == "multipart/mixed"
    return [
        (p.get_filename(), p.get_content_type(), p.get_payload(decode=True))
        for p in msg.iter_attachments()
    ]


def resolvers(mm: Embedded) -> dict:
    dns_txt, identity_keys = verify.server_resolvers(mm.api_url)
    return {"dns_txt": dns_txt, "identity_keys": identity_keys}


def flip_one_attachment_byte(raw: bytes) -> bytes:
    """The same message with one base64 character of its first attachment changed."""
    start = raw.index(b"Content-Transfer-Encoding: base64\r\n\r\n") + 37
    swapped = b"B" if raw[start : start + 1] != b"B" else b"C"
    return raw[:start] + swapped + raw[start + 1 :]


def blob_count(mm: Embedded) -> int:
    store = mm.service.store
    assert isinstance(store, SqliteStore)
    return int(store.db.execute("SELECT count(*) FROM blobs").fetchone()[0])


# --- between mailboxes of this server ---------------------------------------------------------


def test_two_files_reach_another_mailbox_of_this_server_byte_for_byte(tenant: Tenant):
    alice = tenant.mailbox(unique("alice"))
    bob = tenant.mailbox(unique("bob"))
    sent_files = files()
    sdk = Client(api_key=tenant.admin.secret, base_url=tenant.mm.api_url)
    try:
        sent = sdk.send_email(
            alice["id"],
            to=bob["address"],
            subject="Figures",
            body_text="Both files attached.",
            attachments=wire(sent_files),
        )
        assert sent.status == "sent"
        [arrived] = tenant.wait_inbound(bob["id"])
        assert arrived["has_attachments"] is True
        theirs = tenant.admin.email(arrived["id"])
        assert listed(theirs) == expected(sent_files)
        for meta, (_, _, data) in zip(theirs["attachments"], sent_files, strict=True):
            assert download(tenant.admin, arrived["id"], meta["attachment_id"]) == data
            assert sdk.download_attachment(arrived["id"], meta["attachment_id"]) == data
        r = tenant.admin.get(
            f"/v1/emails/{arrived['id']}/attachments/{theirs['attachments'][1]['attachment_id']}"
        )
        assert r.headers["content-disposition"].endswith("%E5%A0%B1%E5%91%8A.txt")
        assert r.headers["content-type"].startswith("text/plain")
        ours = tenant.admin.email(sent.message_id)  # the sender's copy
        assert ours["direction"] == "outbound"
        assert listed(ours) == expected(sent_files)
        ids = [a["attachment_id"] for a in ours["attachments"]]
        assert ids == [a["attachment_id"] for a in theirs["attachments"]]
        for attachment_id, (_, _, data) in zip(ids, sent_files, strict=True):
            assert download(tenant.admin, sent.message_id, attachment_id) == data
        raw = tenant.admin.get(f"/v1/emails/{arrived['id']}/raw").content
        assert [(n, t, d) for n, t, d in mime_files(raw)] == sent_files
        assert verify.verify_message(raw, **resolvers(tenant.mm)).ok

        # and back: a reply carries its own file
        answer = ("answer.csv", "text/csv", b"a,b\r\n1,2\r\n")
        replied = sdk.reply_email(
            bob["id"],
            email_id=arrived["id"],
            body_text="Thanks, mine too.",
            attachments=[attachment("answer.csv", answer[2])],
        )
        assert replied.status == "sent"
        back = eventually(
            lambda: [e for e in tenant.inbound(alice["id"]) if e["has_attachments"]],
            what="the reply with its attachment",
        )
        view = tenant.admin.email(back[0]["id"])
        assert listed(view) == expected([answer])
        assert (
            download(tenant.admin, back[0]["id"], view["attachments"][0]["attachment_id"])
            == answer[2]
        )
    finally:
        sdk.close()


def test_the_sdk_helper_guesses_types_it_can_send():
    assert attachment("report.pdf", b"%PDF")["content_type"] == "application/pdf"
    assert attachment("unknown.zzz", b"?")["content_type"] == "application/octet-stream"
    assert attachment("backup.tar.gz", b"\x1f\x8b")["content_type"] == "application/gzip"
    assert attachment("forwarded.eml", b"From: x")["content_type"] == "application/octet-stream"
    assert attachment("x.bin", b"\x00\xff", "image/png") == {
        "filename": "x.bin",
        "content_base64": "AP8=",
        "content_type": "image/png",
    }


# --- to the outside, through the relay --------------------------------------------------------


def test_relayed_mail_carries_the_exact_bytes_signed_and_the_monitored_copy_too(
    tenant: Tenant, sink: Sink, ops: str
):
    box = tenant.mailbox(unique("sales"), "monitored")
    outside = f"{unique('client')}@customer.example"
    sent_files = files()
    agent = tenant.agent(box["id"])
    sent = agent.ok(
        "POST",
        f"/v1/mailboxes/{box['id']}/send",
        {
            "to": [outside],
            "subject": "Offer",
            "body_text": "See attached.",
            "body_html": "<p>See attached.</p>",
            "attachments": wire(sent_files),
        },
    )
    assert sent["status"] == "sent"
    [out] = sink.wait(outside)
    assert mime_files(out.data) == sent_files
    checked = verify.verify_message(out.data, **resolvers(tenant.mm))
    assert checked.ok, checked
    assert checked.mailbox_id == box["id"]
    assert not verify.verify_message(flip_one_attachment_byte(out.data), **resolvers(tenant.mm)).ok
    [copy] = sink.wait(ops)  # P4: the operator's hidden copy is the message as sent
    assert mime_files(copy.data) == sent_files
    assert outside not in copy.rcpts
    view = tenant.admin.email(sent["message_id"])
    assert listed(view) == expected(sent_files)
    assert [a["attachment_id"] for a in view["attachments"]] == ["att_4", "att_5"]  # after the HTML
    for meta, (_, _, data) in zip(view["attachments"], sent_files, strict=True):
        assert download(tenant.admin, sent["message_id"], meta["attachment_id"]) == data
    assert tenant.admin.get(f"/v1/emails/{sent['message_id']}/raw").content == out.data


# --- held for approval ------------------------------------------------------------------------


def _token(raw: bytes) -> str:
    found = re.search(rb"/v1/approve/([A-Za-z0-9_.=-]+)", raw.replace(b"=\r\n", b""))
    assert found, raw[:2000]
    return found.group(1).decode()


def test_a_held_draft_shows_and_serves_its_files_and_they_leave_after_approval(
    tenant: Tenant, sink: Sink, ops: str
):
    box = tenant.mailbox(unique("gated"), "gated_send")
    outside = f"{unique('client')}@customer.example"
    sent_files = files()
    agent = tenant.agent(box["id"])
    held = agent.ok(
        "POST",
        f"/v1/mailboxes/{box['id']}/send",
        {
            "to": [outside],
            "subject": "Contract",
            "body_text": "Please sign.",
            "attachments": wire(sent_files),
        },
        expect=202,
    )
    assert held["status"] == "pending"
    draft = agent.email(held["message_id"])
    assert draft["status"] == "pending_approval"
    assert listed(draft) == expected(sent_files)
    for meta, (_, _, data) in zip(draft["attachments"], sent_files, strict=True):
        assert download(agent, held["message_id"], meta["attachment_id"]) == data
    # its source, before signing, already carries the files a reader would find
    source = agent.get(f"/v1/emails/{held['message_id']}/raw").content
    assert mime_files(source) == sent_files
    [pending] = [p for p in tenant.admin.pending() if p["pending_id"] == held["pending_id"]]
    assert [(a["filename"], a["size"]) for a in pending["attachments"]] == [
        (n, len(d)) for n, _, d in sent_files
    ]
    # the operator's mail and the review page list what would leave
    [request] = sink.wait(ops)
    text = email.message_from_bytes(request.data, policy=email.policy.default)
    body = text.get_body(("plain",))
    assert body is not None
    mailed = body.get_content()
    for name, media_type, data in sent_files:
        assert f"{name}  {media_type}  {len(data)} bytes" in mailed
    token = _token(request.data)
    page = httpx.get(f"{tenant.mm.api_url}/v1/approve/{token}")
    for name, media_type, data in sent_files:
        assert f"{name} ({media_type}, {len(data)} bytes)" in page.text
    view = httpx.get(
        f"{tenant.mm.api_url}/v1/approve/{token}", headers={"Accept": "application/json"}
    ).json()
    assert view["attachments"] == [
        {"filename": n, "content_type": t, "size": len(d)} for n, t, d in sent_files
    ]
    tenant.flush()
    assert sink.to(outside) == []
    decided = httpx.post(f"{tenant.mm.api_url}/v1/approve/{token}", data={"action": "approve"})
    assert decided.status_code == 200
    [out] = sink.wait(outside)
    assert mime_files(out.data) == sent_files
    checked = verify.verify_message(out.data, **resolvers(tenant.mm))
    assert checked.ok, checked
    assert checked.claim is not None
    assert checked.claim["human_approved"] is True


def test_an_edit_that_adds_html_renumbers_the_files_and_they_still_leave(
    tenant: Tenant, sink: Sink
):
    box = tenant.mailbox(unique("gated"), "gated_send")
    outside = f"{unique('client')}@customer.example"
    sent_files = files()
    held = tenant.admin.ok(
        "POST",
        f"/v1/mailboxes/{box['id']}/send",
        {
            "to": [outside],
            "subject": "Terms",
            "body_text": "Plain draft.",
            "attachments": wire(sent_files),
        },
        expect=202,
    )
    before = tenant.admin.email(held["message_id"])
    assert [a["attachment_id"] for a in before["attachments"]] == ["att_2", "att_3"]
    reviewer = tenant.reviewer()
    decided = reviewer.ok(
        "POST",
        "/v1/oversight/decide",
        {
            "pending_id": held["pending_id"],
            "action": "approve",
            "edits": {"body_html": "<p>Reviewed draft.</p>"},
        },
    )
    assert decided["edited"] is True
    after = tenant.admin.email(held["message_id"])
    assert [a["attachment_id"] for a in after["attachments"]] == ["att_4", "att_5"]
    assert listed(after) == expected(sent_files)
    [out] = sink.wait(outside)
    assert mime_files(out.data) == sent_files
    assert verify.verify_message(out.data, **resolvers(tenant.mm)).ok
    for meta, (_, _, data) in zip(after["attachments"], sent_files, strict=True):
        assert download(tenant.admin, held["message_id"], meta["attachment_id"]) == data


# --- refusals ---------------------------------------------------------------------------------

GOOD = attachment("fine.txt", b"fine")
BIG = [attachment("a.bin", b"\0" * (4 * MIB)), attachment("b.bin", b"\0" * (3 * MIB))]


@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        ([{**GOOD, "content_base64": "Zm9v YmFy"}], "attachments[1].content_base64", "base64"),
        ([{**GOOD, "content_base64": "-_8="}], "attachments[1].content_base64", "base64"),
        ([GOOD, {**GOOD, "content_base64": "Zm9vYg"}], "attachments[2].content_base64", "base64"),
        ([GOOD] * 20, "attachments", "at most 20"),
        (BIG, "attachments", "7340032"),
        ([{**GOOD, "filename": "../../etc/passwd"}], "attachments[1].filename", "path"),
        ([{**GOOD, "filename": "a\r\nBcc: x@example.com"}], "attachments[1].filename", "control"),
        ([{**GOOD, "filename": ""}], "attachments[1].filename", "1 to 255"),
        ([{**GOOD, "filename": "x" * 256}], "attachments[1].filename", "1 to 255"),
        ([{**GOOD, "filename": "invoice\u202efdp.exe"}], "attachments[1].filename", "control"),
        (
            [{**GOOD, "content_type": "text/plain; charset=utf-8"}],
            "attachments[1].content_type",
            "type/subtype",
        ),
        (
            [{**GOOD, "content_type": "text/plain\r\nX-Injected: 1"}],
            "attachments[1].content_type",
            "type/subtype",
        ),
        ([{**GOOD, "content_type": "pdf"}], "attachments[1].content_type", "type/subtype"),
        ([{**GOOD, "content_type": "message/rfc822"}], "attachments[1].content_type", "octet"),
        ([{"filename": "x.txt"}], "attachments[1].content_base64", "required"),
    ],
    ids=[
        "space",
        "base64url",
        "padding",
        "too-many",
        "too-large",
        "path",
        "crlf-name",
        "empty-name",
        "long-name",
        "bidi-name",
        "parameters",
        "crlf-type",
        "no-subtype",
        "composite",
        "missing",
    ],
)
def test_bad_attachments_are_refused_naming_the_field_and_nothing_is_stored(
    tenant: Tenant, bad: list[dict], field: str, words: str
):
    """A valid file goes first: the refusal must leave no trace of it either."""
    box = tenant.mailbox(unique("strict"))
    marker = os.urandom(16)
    body = {
        "to": ["x@customer.example"],
        "subject": "s",
        "body_text": "t",
        "attachments": [attachment("marker.bin", marker), *bad],
    }
    problem = assert_problem(
        tenant.admin.post(f"/v1/mailboxes/{box['id']}/send", body), 422, "validation_error"
    )
    assert problem["field"] == field, problem
    assert problem["detail"].startswith(f"{field}: "), problem
    assert words in problem["detail"], problem
    assert tenant.admin.emails(box["id"]) == []
    assert tenant.mm.service.store.get_blob(sha(marker)) is None


def test_a_reply_is_held_to_the_same_limits(tenant: Tenant):
    a, b = tenant.mailbox(unique("a")), tenant.mailbox(unique("b"))
    tenant.admin.ok(
        "POST",
        f"/v1/mailboxes/{a['id']}/send",
        {"to": [b["address"]], "subject": "q", "body_text": "?"},
    )
    [arrived] = tenant.wait_inbound(b["id"])
    r = tenant.admin.post(
        f"/v1/mailboxes/{b['id']}/reply",
        {
            "email_id": arrived["id"],
            "body_text": "!",
            "attachments": [GOOD, {**GOOD, "filename": "a/b"}],
        },
    )
    problem = assert_problem(r, 422, "validation_error")
    assert problem["field"] == "attachments[1].filename"
    assert [e["direction"] for e in tenant.admin.emails(b["id"])] == ["inbound"]


def test_exactly_7_mib_in_20_files_is_accepted(tenant: Tenant):
    box = tenant.mailbox(unique("big"))
    share = 7 * MIB // 20
    items = [attachment(f"part{i}.bin", b"\x01" * share) for i in range(19)]
    items.append(attachment("rest.bin", b"\x02" * (7 * MIB - 19 * share)))
    r = tenant.admin.post(
        f"/v1/mailboxes/{box['id']}/send",
        {
            "to": ["x@customer.example"],
            "subject": "s",
            "body_text": "t",
            "attachments": items,
            "dry_run": True,
        },
    )
    assert r.status_code == 200, r.text[:500]
    assert r.json()["dry_run"] is True
    assert tenant.admin.emails(box["id"]) == []


# --- idempotency, content addressing, restarts ----------------------------------------------


def test_an_idempotent_retry_returns_the_same_message_and_stores_each_blob_once(tenant: Tenant):
    a, b = tenant.mailbox(unique("a")), tenant.mailbox(unique("b"))
    sent_files = files()
    body = {
        "to": [b["address"]],
        "subject": "Once",
        "body_text": "t",
        "attachments": wire(sent_files),
    }
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    blobs = blob_count(tenant.mm)
    first = tenant.admin.post(f"/v1/mailboxes/{a['id']}/send", body, headers=headers)
    again = tenant.admin.post(f"/v1/mailboxes/{a['id']}/send", body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert blob_count(tenant.mm) == blobs + 2
    assert len(tenant.admin.emails(a["id"], direction="outbound")) == 1
    # the same bytes in another message: a second message, no second copy of the bytes
    other = tenant.admin.post(f"/v1/mailboxes/{a['id']}/send", {**body, "subject": "Twice"})
    assert other.status_code == 200
    assert other.json()["message_id"] != first.json()["message_id"]
    assert blob_count(tenant.mm) == blobs + 2
    assert listed(tenant.admin.email(other.json()["message_id"])) == expected(sent_files)
    changed = tenant.admin.post(
        f"/v1/mailboxes/{a['id']}/send", {**body, "attachments": wire(files())}, headers=headers
    )
    assert_problem(changed, 409, "idempotency_conflict")


@pytest.mark.parametrize("make", [MemoryStore, "sqlite"])
def test_both_stores_keep_blobs_by_hash_once_and_roll_them_back(make, tmp_path: Path):
    store = SqliteStore(tmp_path / "blobs.db") if make == "sqlite" else make()
    try:
        assert store.put_blob(b"bytes") == sha(b"bytes")
        assert store.put_blob(b"bytes") == sha(b"bytes")
        assert store.get_blob(sha(b"bytes")) == b"bytes"
        assert store.put_blob(b"") == sha(b"")
        assert store.get_blob(sha(b"")) == b""
        assert store.get_blob(sha(b"never stored")) is None
        assert store.get_blob(sha(b"bytes").upper()) is None

        def abandoned() -> None:
            with store.transaction():
                store.put_blob(b"rolled back")
                raise RuntimeError("abort")

        with pytest.raises(RuntimeError):
            abandoned()
        assert store.get_blob(sha(b"rolled back")) is None
    finally:
        store.close()


def test_a_version_3_database_gains_the_blob_table_and_keeps_blobs_across_reopening(
    tmp_path: Path,
):
    import sqlite_utils

    path = tmp_path / "v3.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    for migration in MIGRATIONS[:3]:
        migration(sqlite_utils.Database(conn))
    conn.execute("PRAGMA user_version = 3")
    conn.execute("INSERT INTO kv (name, doc) VALUES ('server:link-secret', '{\"secret\": \"ab\"}')")
    conn.execute("COMMIT")
    conn.close()
    store = SqliteStore(path)
    try:
        assert store.schema_version() == len(MIGRATIONS) == 4
        assert store.kv_get("server:link-secret") == {"secret": "ab"}
        digest = store.put_blob(b"kept \x00 bytes")
    finally:
        store.close()
    again = SqliteStore(path)
    try:
        assert again.get_blob(digest) == b"kept \x00 bytes"
        assert again.put_blob(b"kept \x00 bytes") == digest
        assert again.db.execute("SELECT count(*) FROM blobs").fetchone()[0] == 1
    finally:
        again.close()


def test_a_held_drafts_files_survive_a_restart(tmp_path: Path):
    admin_key = "mm_live_" + uuid.uuid4().hex
    data = os.urandom(5000)
    with run_embedded(data_dir=tmp_path, admin_key=admin_key) as first:
        api = Api(first.api_url, admin_key)
        box = api.ok(
            "POST", "/v1/mailboxes", {"name": "held", "oversight_mode": "gated_send"}, expect=201
        )
        held = api.ok(
            "POST",
            f"/v1/mailboxes/{box['id']}/send",
            {
                "to": ["client@customer.example"],
                "subject": "s",
                "body_text": "t",
                "attachments": [attachment("keep.bin", data)],
            },
            expect=202,
        )
        api.close()
    with run_embedded(data_dir=tmp_path, admin_key=admin_key) as second:
        api = Api(second.api_url, admin_key)
        view = api.email(held["message_id"])
        assert view["status"] == "pending_approval"
        assert listed(view) == [("keep.bin", "application/octet-stream", 5000, sha(data))]
        assert download(api, held["message_id"], view["attachments"][0]["attachment_id"]) == data
        api.close()


def test_the_service_refuses_what_it_could_not_compose_and_keeps_nothing(tenant: Tenant):
    """Callers other than the HTTP API (the CLI's import, the MCP tools) reach the service
    directly: a file it could not put on the wire is refused at submission."""
    box = tenant.mailbox(unique("direct"))
    service = tenant.mm.service
    key = service.authenticate(tenant.admin.secret)
    marker = os.urandom(16)
    for bad in [("a/b.txt", "text/plain"), ("ok.txt", "text/plain; x=y")]:
        with pytest.raises(InvalidValue, match="attachment") as refused:
            service.send(key, box["id"], to=["x@customer.example"], subject="s", body_text="t",
                         attachments=[("marker.bin", "application/octet-stream", marker),
                                      (*bad, b"x")])  # fmt: skip
        assert refused.value.field == "message"
    assert tenant.admin.emails(box["id"]) == []
    assert service.store.get_blob(sha(marker)) is None
