"""P9 end to end: what sign_message signs, verify_message accepts and attributes to the
mailbox; any meaningful change to the claim, a bound header, Message-ID or the body makes it
fail; unbound, unsigned headers do not matter; arbitrary bytes never make it raise.

"Meaningful" is the canonical forms' business: DKIM relaxed and the binding (spec/identity.md
§4) both ignore folding whitespace and trailing empty body lines, so a mutation that leaves
the binding input unchanged is discarded with ``assume``."""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from multimail.signing import (
    ED25519_SHA256,
    RSA_SHA256,
    DkimKey,
    IdentityKey,
    MalformedMessage,
    dkim_dns_record,
    generate_dkim_key,
    generate_identity_key,
    header_values,
    jwk,
    parse_message,
    sign_message,
)
from multimail.verify import INTERNAL_ERROR, VerifyResult, verify_message
from multimail_core import identity
from multimail_core.modes import OversightMode

MAILBOX = "mbx_01JDQ8ZK3V5T7W9X2B4C6D8E0F"
DOMAIN = "agents.example"
IAT = 1_764_108_000
NOW_MS = (IAT - 86_400) * 1000
MESSAGE = (
    b"From: Support Bot <bot@agents.example>\r\n"
    b"To: alice@example.com,\r\n Bob <bob@example.org>\r\n"
    b"Cc: carol@example.net\r\n"
    b"Subject: Your order\r\n has shipped\r\n"
    b"Date: Tue, 25 Nov 2025 22:00:00 +0000\r\n"
    b"Message-ID: <01JDQ8ZK3V5T7W9X2B4C6D8E0J@agents.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"X-AI-Generated: true\r\n"
    b"\r\n"
    b"Hello Alice,\r\n\r\nyour order has shipped.\r\n  Regards,\r\n\tthe bot\r\n"
)
SETTINGS = settings(deadline=None, max_examples=60)


class World:
    """The keys, the DNS and the key directory a verifier sees."""

    def __init__(self) -> None:
        self.dkim_keys: list[DkimKey] = [
            generate_dkim_key(DOMAIN, "mm-rsa", RSA_SHA256, NOW_MS),
            generate_dkim_key(DOMAIN, "mm-ed", ED25519_SHA256, NOW_MS),
        ]
        self.identity_key: IdentityKey = generate_identity_key(MAILBOX, NOW_MS)
        self.records = {
            dkim_dns_record(k)["name"]: dkim_dns_record(k)["value"] for k in self.dkim_keys
        }

    def sign(self, raw: bytes, **over: Any) -> bytes:
        args: dict[str, Any] = {
            "mailbox_id": MAILBOX,
            "address": "bot@agents.example",
            "account_id": "acc_01JDQ8ZK3V5T7W9X2B4C6D8E0H",
            "mode": OversightMode.MONITORED,
            "human_approved": False,
            "reviewer_key_id": None,
            "issued_at": IAT,
            "identity_key": self.identity_key,
            "dkim_keys": self.dkim_keys,
        }
        return sign_message(raw, **(args | over))

    def keys(self, mailbox_id: str) -> list[dict[str, object]]:
        return [jwk(self.identity_key)] if mailbox_id == MAILBOX else []

    def verify(
        self, raw: bytes, *, check_dkim: bool = True, keys: Callable[..., Any] | None = None
    ) -> VerifyResult:
        result = verify_message(
            raw, dns_txt=self.records.get, identity_keys=keys or self.keys, check_dkim=check_dkim
        )
        assert INTERNAL_ERROR not in result.reason, result.reason
        return result


@pytest.fixture(scope="module")
def world() -> World:
    return World()


@pytest.fixture(scope="module")
def signed(world: World) -> bytes:
    out = world.sign(MESSAGE)
    assert world.verify(out).ok
    return out


# --- mutations ------------------------------------------------------------------------

PRINTABLE = [bytes([c]) for c in range(0x20, 0x7F)] + [b"\t", b"\xc3\xa9", b"\r\n", b"\r\n "]


def field_span(raw: bytes, name: bytes) -> tuple[int, int]:
    """(start, end) of the value of header field ``name`` in ``raw``: after the colon, up to
    the line break that ends the field (continuation lines included)."""
    start = raw.index(b"\r\n" + name + b":") + len(name) + 3
    end = raw.index(b"\r\n", start)
    while raw[end + 2 : end + 3] in (b" ", b"\t"):
        end = raw.index(b"\r\n", end + 2)
    return start, end


def body_span(raw: bytes) -> tuple[int, int]:
    return raw.index(b"\r\n\r\n") + 4, len(raw)


@st.composite
def edits(draw: st.DrawFn, span: tuple[int, int], alphabet: list[bytes]) -> tuple[int, int, bytes]:
    """(at, removed, inserted): replace, insert or delete within ``span``."""
    start, end = span
    at = draw(st.integers(start, end - 1 if end > start else start))
    kind = draw(st.sampled_from(["replace", "insert", "delete"]))
    removed = 0 if kind == "insert" or end == start else 1
    inserted = b"" if kind == "delete" else draw(st.sampled_from(alphabet))
    return at, removed, inserted


def apply(raw: bytes, edit: tuple[int, int, bytes]) -> bytes:
    at, removed, inserted = edit
    return raw[:at] + inserted + raw[at + removed :]


def binding_input(raw: bytes) -> bytes | None:
    try:
        message = parse_message(raw)
    except MalformedMessage:
        return None
    return identity.binding_input(message.headers, message.body)


def message_ids(raw: bytes) -> list[str] | None:
    try:
        return [v.strip() for v in header_values(parse_message(raw).headers, "message-id")]
    except MalformedMessage:
        return None


def claim_value(raw: bytes) -> str:
    """The claim header's value without folding whitespace; "" when it no longer parses."""
    try:
        values = header_values(parse_message(raw).headers, "x-multimail-identity")
    except MalformedMessage:
        return ""
    return "".join(values[0].split()) if len(values) == 1 else ""


# --- properties -----------------------------------------------------------------------


TOKEN = string.ascii_letters + string.digits + "._:@+-"
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=60
).filter(str.strip)


@SETTINGS
@given(
    subject=header_text,
    recipients=st.lists(
        st.from_regex(r"[a-z]{1,8}@[a-z]{1,8}\.example", fullmatch=True), min_size=1, max_size=3
    ),
    body=st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"\r\n")),
    mode=st.sampled_from(list(OversightMode)),
    reviewer=st.none() | st.text(TOKEN, min_size=1, max_size=20),
)
def test_what_is_signed_verifies_and_names_the_mailbox(
    world: World,
    subject: str,
    recipients: list[str],
    body: bytes,
    mode: OversightMode,
    reviewer: str | None,
) -> None:
    raw = (
        b"From: bot@agents.example\r\nTo: "
        + ", ".join(recipients).encode()
        + b"\r\nSubject: "
        + subject.encode()
        + b"\r\nDate: Tue, 25 Nov 2025 22:00:00 +0000\r\nMessage-ID: <x.1@agents.example>\r\n\r\n"
        + body
    )
    result = world.verify(
        world.sign(raw, mode=mode, human_approved=reviewer is not None, reviewer_key_id=reviewer)
    )
    assert result.ok, result.reason
    assert result.mailbox_id == MAILBOX
    assert result.claim is not None
    assert (result.claim["oversight_mode"], result.claim["reviewer_key_id"]) == (
        mode.value,
        reviewer,
    )


@pytest.mark.parametrize("name", [b"From", b"To", b"Cc", b"Subject", b"Date"])
@pytest.mark.parametrize("check_dkim", [True, False])
@SETTINGS
@given(data=st.data())
def test_any_change_to_a_bound_header_fails(
    world: World, signed: bytes, name: bytes, check_dkim: bool, data: st.DataObject
) -> None:
    changed = apply(signed, data.draw(edits(field_span(signed, name), PRINTABLE)))
    assume(binding_input(changed) != binding_input(signed))
    assert not world.verify(changed, check_dkim=check_dkim).ok


@pytest.mark.parametrize("check_dkim", [True, False])
@SETTINGS
@given(data=st.data())
def test_any_change_to_the_body_fails(
    world: World, signed: bytes, check_dkim: bool, data: st.DataObject
) -> None:
    alphabet = [bytes([b]) for b in range(256)] + [b"\r\n"]
    changed = apply(signed, data.draw(edits(body_span(signed), alphabet)))
    assume(binding_input(changed) != binding_input(signed))
    result = world.verify(changed, check_dkim=check_dkim)
    assert not result.ok
    assert "binding" in {c["check"] for c in result.checks if not c["ok"]}


@pytest.mark.parametrize("check_dkim", [True, False])
@SETTINGS
@given(data=st.data())
def test_any_change_to_the_claim_fails(
    world: World, signed: bytes, check_dkim: bool, data: st.DataObject
) -> None:
    b64url = [c.encode() for c in string.ascii_letters + string.digits + "-_."]
    start, end = field_span(signed, b"X-MultiMail-Identity")
    positions = [i for i in range(start, end) if signed[i : i + 1] not in b" \t\r\n"]
    at = data.draw(st.sampled_from(positions))
    changed = apply(signed, data.draw(edits((at, at + 1), b64url)))
    assume(claim_value(changed) != claim_value(signed))
    assert not world.verify(changed, check_dkim=check_dkim).ok


@pytest.mark.parametrize("check_dkim", [True, False])
@SETTINGS
@given(data=st.data())
def test_any_change_to_the_message_id_fails(
    world: World, signed: bytes, check_dkim: bool, data: st.DataObject
) -> None:
    changed = apply(signed, data.draw(edits(field_span(signed, b"Message-ID"), PRINTABLE)))
    assume(message_ids(changed) != message_ids(signed))
    assert not world.verify(changed, check_dkim=check_dkim).ok


@SETTINGS
@given(data=st.data())
def test_refolding_the_claim_does_not_change_it(
    world: World, signed: bytes, data: st.DataObject
) -> None:
    start, end = field_span(signed, b"X-MultiMail-Identity")
    compact = "".join(signed[start:end].decode().split())
    width = data.draw(st.integers(1, 200))
    lines = [compact[i : i + width] for i in range(0, len(compact), width)]
    refolded = signed[:start] + b" " + "\r\n\t".join(lines).encode() + signed[end:]
    assert world.verify(refolded, check_dkim=False).ok


unbound_names = st.sampled_from(
    ["Received", "X-Spam-Score", "Authentication-Results", "Return-Path", "X-Original-To"]
)


@SETTINGS
@given(data=st.data(), name=unbound_names, value=header_text)
def test_adding_an_unbound_unsigned_header_keeps_it_passing(
    world: World, signed: bytes, data: st.DataObject, name: str, value: str
) -> None:
    header_end = signed.index(b"\r\n\r\n") + 2
    starts = [0] + [
        i + 2
        for i in range(header_end - 1)
        if signed[i : i + 2] == b"\r\n" and signed[i + 2 : i + 3] not in b" \t"
    ]
    at = data.draw(st.sampled_from(starts))
    changed = signed[:at] + f"{name}: {value}\r\n".encode() + signed[at:]
    result = world.verify(changed)
    assert result.ok, result.reason
    assert result.mailbox_id == MAILBOX


@SETTINGS
@given(revoked_s=st.integers(IAT - 10, IAT + 10), extra_ms=st.integers(0, 999))
def test_a_key_counts_exactly_when_revoked_after_the_claim(
    world: World, signed: bytes, revoked_s: int, extra_ms: int
) -> None:
    revoked = dataclasses.replace(world.identity_key, revoked_at=revoked_s * 1000 + extra_ms)
    result = world.verify(signed, keys=lambda m: [jwk(revoked)])
    assert result.ok is (revoked_s > IAT)


@SETTINGS
@given(raw=st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(world: World, raw: bytes) -> None:
    assert not world.verify(raw).ok


@SETTINGS
@given(data=st.data())
def test_arbitrary_edits_anywhere_never_raise(
    world: World, signed: bytes, data: st.DataObject
) -> None:
    alphabet = [bytes([b]) for b in range(256)] + [b"\r\n", b":", b"\r\n\r\n", b"=", b";"]
    changed = signed
    for _ in range(data.draw(st.integers(1, 4))):
        changed = apply(changed, data.draw(edits((0, len(changed)), alphabet)))
    world.verify(changed)
    world.verify(changed, check_dkim=False)
