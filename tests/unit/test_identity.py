"""The identity claim: payload, header, binding and the judging of a verification."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections.abc import Callable

import icontract
import pytest

from multimail_core.addresses import parse_address
from multimail_core.errors import InvalidAddress, InvalidValue
from multimail_core.identity import (
    BOUND_HEADERS,
    CHECKS,
    HEADER_NAME,
    MAX_PAYLOAD,
    PAYLOAD_KEYS,
    Check,
    Claim,
    Evidence,
    binding_hash,
    binding_input,
    canonical_payload,
    decode_header,
    encode_header,
    judge,
    new_claim,
    parse_payload,
)
from multimail_core.modes import OversightMode

MBX = "mbx_01HZY3Q4ZJ8W6W3V1X2Y3Z4A5B"
ACC = "acc_01HZY3Q4ZJ8W6W3V1X2Y3Z4A5C"
KEY = "key_01HZY3Q4ZJ8W6W3V1X2Y3Z4A5D"
HEADERS = [
    ("From", "Support Bot <bot@agents.example>"),
    ("To", "alice@example.com"),
    ("Subject", "Your order"),
    ("Date", "Tue, 25 Nov 2025 22:00:00 +0000"),
    ("Message-ID", "<1.2.3@agents.example>"),
]
BODY = b"Hello Alice,\r\n\r\nit shipped.\r\n"
SIGNATURE = bytes(range(64))


def make_claim(**overrides: object) -> Claim:
    args: dict[str, object] = {
        "mailbox_id": MBX,
        "address": "bot@agents.example",
        "account_id": ACC,
        "mode": OversightMode.GATED_SEND,
        "human_approved": True,
        "reviewer_key_id": KEY,
        "issued_at": 1_764_108_000,
        "message_id": "<1.2.3@agents.example>",
        "headers": HEADERS,
        "body": BODY,
    }
    args.update(overrides)
    return new_claim(**args)  # type: ignore[arg-type]


def payload_fields(claim: Claim) -> dict[str, object]:
    fields: dict[str, object] = json.loads(canonical_payload(claim))
    return fields


def encode(fields: dict[str, object]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


# --- the payload ------------------------------------------------------------------------


def test_payload_is_canonical_json_with_the_stable_keys() -> None:
    claim = make_claim()
    payload = canonical_payload(claim)
    assert payload == (
        b'{"account_id":"' + ACC.encode() + b'","address":"bot@agents.example",'
        b'"ai_generated":true,"binding":"' + claim.binding.encode() + b'",'
        b'"human_approved":true,"iat":1764108000,"mailbox_id":"' + MBX.encode() + b'",'
        b'"message_id":"<1.2.3@agents.example>","oversight_mode":"gated_send",'
        b'"reviewer_key_id":"' + KEY.encode() + b'","v":1}'
    )
    assert set(json.loads(payload)) == set(PAYLOAD_KEYS)


def test_payload_round_trips() -> None:
    for claim in (make_claim(), make_claim(human_approved=False, reviewer_key_id=None)):
        assert parse_payload(canonical_payload(claim)) == claim


def test_unapproved_claim_has_null_reviewer() -> None:
    claim = make_claim(human_approved=False, reviewer_key_id=None, mode=OversightMode.AUTONOMOUS)
    fields = payload_fields(claim)
    assert fields["reviewer_key_id"] is None
    assert fields["human_approved"] is False
    assert fields["oversight_mode"] == "autonomous"
    assert fields["ai_generated"] is True


@pytest.mark.parametrize(
    "render",
    [
        lambda f: json.dumps(f, sort_keys=True).encode(),  # spaces after separators
        lambda f: json.dumps(f, sort_keys=True, indent=1).encode(),
        lambda f: json.dumps({k: f[k] for k in PAYLOAD_KEYS}, separators=(",", ":")).encode(),
        lambda f: encode(f) + b"\n",
        lambda f: b" " + encode(f),
        lambda f: encode(f).replace(b'"v":1', b'"v":1.0'),
        lambda f: encode(f).replace(b'"v":1', b'"v":1e0'),
        lambda f: encode(f).replace(b'"address":"b', b'"address":"\\u0062'),
        lambda f: encode(f).replace(b'"v":1}', b'"v":1,"v":1}'),  # duplicate key
    ],
)
def test_parse_rejects_non_canonical_encodings(
    render: Callable[[dict[str, object]], bytes],
) -> None:
    data = render(payload_fields(make_claim()))
    assert data != canonical_payload(make_claim())
    with pytest.raises(InvalidValue):
        parse_payload(data)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("v", 2, "v must be 1"),
        ("v", "1", "v must be 1"),
        ("v", True, "v must be 1"),
        ("mailbox_id", "mbx_nope", "mailbox_id"),
        ("mailbox_id", 7, "mailbox_id"),
        ("address", "Bot <bot@agents.example>", "address"),
        ("address", "bot@Agents.Example", "address"),  # not normalized
        ("address", "Bot@agents.example", "address"),  # not normalized
        ("account_id", "", "account_id"),
        ("account_id", "acc 1", "account_id"),
        ("oversight_mode", "yolo", "oversight_mode"),
        ("human_approved", 1, "human_approved"),
        ("human_approved", False, "reviewer_key_id"),  # reviewer present but not approved
        ("reviewer_key_id", None, "reviewer_key_id"),  # approved but no reviewer
        ("reviewer_key_id", 5, "reviewer_key_id"),
        ("ai_generated", False, "ai_generated must be true"),
        ("ai_generated", 1, "ai_generated must be true"),
        ("iat", -1, "iat"),
        ("iat", 2**53, "iat"),
        ("iat", "1764108000", "iat"),
        ("message_id", "1.2.3@agents.example", "message_id"),
        ("message_id", "<no-at-sign>", "message_id"),
        ("message_id", "<a b@c>", "message_id"),
        ("binding", "AB" * 32, "binding"),
        ("binding", "ab" * 31, "binding"),
        ("binding", None, "binding"),
    ],
)
def test_parse_rejects_wrong_values_and_types(key: str, value: object, reason: str) -> None:
    fields = payload_fields(make_claim())
    fields[key] = value
    with pytest.raises(InvalidValue, match=reason):
        parse_payload(encode(fields))


def test_parse_rejects_missing_and_extra_keys() -> None:
    fields = payload_fields(make_claim())
    del fields["binding"]
    with pytest.raises(InvalidValue, match=r"missing \['binding'\]"):
        parse_payload(encode(fields))
    fields = payload_fields(make_claim())
    fields["exp"] = 1
    with pytest.raises(InvalidValue, match=r"unknown \['exp'\]"):
        parse_payload(encode(fields))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not JSON"),
        (b"{", "not JSON"),
        (b"[]", "not a JSON object"),
        (b"null", "not a JSON object"),
        (b"[" * 4000 + b"]" * 4000, "longer than 4096|not JSON"),
        (b"[" * 2000 + b"]" * 2000, "not JSON"),  # deeper than the recursion limit
        (b"x" * (MAX_PAYLOAD + 1), "longer than 4096"),
        ('{"address":"é"}'.encode(), "not ASCII"),
    ],
)
def test_parse_rejects_malformed_bytes(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidValue, match=reason):
        parse_payload(data)


def test_claim_constructor_enforces_invariants() -> None:
    claim = make_claim()
    with pytest.raises(icontract.ViolationError):
        dataclasses.replace(claim, ai_generated=False)
    with pytest.raises(icontract.ViolationError):
        dataclasses.replace(claim, reviewer_key_id=None)
    with pytest.raises(icontract.ViolationError):
        dataclasses.replace(claim, binding="0" * 63)


# --- new_claim ----------------------------------------------------------------------------


def test_new_claim_computes_the_binding_and_stores_the_address() -> None:
    claim = make_claim(address=parse_address("Bot@AGENTS.example"))
    assert claim.binding == binding_hash(HEADERS, BODY)
    assert claim.address == "bot@agents.example"  # normalized, as mailbox lookup compares
    assert claim.version == 1
    assert claim.ai_generated is True


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"human_approved": True, "reviewer_key_id": None}, "reviewer_key_id"),
        ({"human_approved": False, "reviewer_key_id": KEY}, "reviewer_key_id"),
        ({"mailbox_id": "msg_01HZY3Q4ZJ8W6W3V1X2Y3Z4A5B"}, "mailbox_id"),
        ({"message_id": "no-brackets@x"}, "message_id"),
        ({"issued_at": -5}, "iat"),
        ({"account_id": "x" * 129}, "account_id"),
    ],
)
def test_new_claim_validates(overrides: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidValue, match=reason):
        make_claim(**overrides)


def test_new_claim_refuses_a_bad_address_with_invalid_address() -> None:
    with pytest.raises(InvalidAddress):
        make_claim(address="Bot <bot@agents.example>")


# --- the header ----------------------------------------------------------------------------


def test_header_round_trip_and_shape() -> None:
    payload = canonical_payload(make_claim())
    value = encode_header(payload, SIGNATURE)
    assert HEADER_NAME == "X-MultiMail-Identity"
    assert "=" not in value
    assert value.count(".") == 1
    left, _, right = value.partition(".")
    assert base64.urlsafe_b64decode(left + "==") == payload
    assert base64.urlsafe_b64decode(right + "==") == SIGNATURE
    assert decode_header(value) == (payload, SIGNATURE)


def test_header_decodes_after_folding() -> None:
    payload = canonical_payload(make_claim())
    value = encode_header(payload, SIGNATURE)
    folded = "\r\n ".join(value[i : i + 70] for i in range(0, len(value), 70))
    assert decode_header(" " + folded + "\t") == (payload, SIGNATURE)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "two base64url parts"),
        (_b64(b"{}"), "two base64url parts"),
        (f"{_b64(b'{}')}.{_b64(SIGNATURE)}.{_b64(b'x')}", "two base64url parts"),
        (f".{_b64(SIGNATURE)}", "empty payload"),
        (f"{_b64(b'{}')}.", "empty signature"),
        (f"{_b64(b'{}')}=.{_b64(SIGNATURE)}", "payload is not unpadded base64url"),
        (f"{_b64(b'{}')}.{_b64(SIGNATURE)}==", "signature is not unpadded base64url"),
        (f"{_b64(b'{}~')}.{_b64(SIGNATURE)}".replace("-", "+"), "not unpadded"),
        (f"{_b64(b'{}?')}.{_b64(SIGNATURE)}".replace("_", "/"), "not unpadded"),
        (f"{_b64(b'{}')}.{_b64(SIGNATURE[:63])}", "63 bytes"),
        (f"{_b64(b'{}')}.{_b64(SIGNATURE + b'x')}", "65 bytes"),
        (f"e31.{_b64(SIGNATURE)}", "non-canonical"),  # "e31" decodes to "{}" too
        (f"{_b64(b'x' * (MAX_PAYLOAD + 1))}.{_b64(SIGNATURE)}", "longer than"),
        (f"{_b64(b'{}')}\x00.{_b64(SIGNATURE)}", "not unpadded"),
        (f"{_b64(b'{}')}.{_b64(SIGNATURE)}\u00a0", "not unpadded"),
        (f"e.{_b64(SIGNATURE)}", "not unpadded"),  # a length of 1 mod 4 is impossible
    ],
)
def test_header_decoding_is_strict(value: str, reason: str) -> None:
    with pytest.raises(InvalidValue, match=reason):
        decode_header(value)


def test_the_non_canonical_example_is_a_second_spelling_of_the_same_bytes() -> None:
    # A lenient decoder reads "e31" as "{}", whose only unpadded encoding is "e30".
    assert base64.urlsafe_b64decode("e31=") == b"{}"
    assert _b64(b"{}") == "e30"


# --- the binding -----------------------------------------------------------------------------


def test_binding_input_is_the_documented_encoding() -> None:
    headers = [
        ("From", "bot@agents.example"),
        ("subject", "  Two\r\n\t  words  "),
        ("CC", ""),
        ("X-Other", "not bound"),
        ("Subject", "again"),
    ]
    assert binding_input(headers, b"line\n\n\n") == (
        b"multimail-binding/1\n"
        b"from 1\n18:bot@agents.example\n"
        b"to 0\n"
        b"cc 1\n0:\n"
        b"subject 2\n9:Two words\n5:again\n"
        b"date 0\n"
        b"body 6\nline\r\n"
    )
    assert (
        binding_hash(headers, b"line\n\n\n")
        == hashlib.sha256(binding_input(headers, b"line\n\n\n")).hexdigest()
    )


def test_mapping_and_pairs_bind_the_same() -> None:
    assert binding_hash(dict(HEADERS), BODY) == binding_hash(HEADERS, BODY)


def test_absent_and_empty_headers_differ() -> None:
    assert binding_hash([], b"") != binding_hash([("Cc", "")], b"")
    assert binding_hash([("Cc", "")], b"") != binding_hash([("Cc", ""), ("Cc", "")], b"")


def test_occurrence_order_and_boundaries_matter() -> None:
    one = binding_hash([("To", "a"), ("To", "b")], b"")
    assert one != binding_hash([("To", "b"), ("To", "a")], b"")
    assert one != binding_hash([("To", "a b")], b"")
    assert one != binding_hash([("To", "ab")], b"")


def test_value_that_mimics_the_encoding_cannot_collide() -> None:
    forged = [("Subject", "a\n1:b")]
    honest = [("Subject", "a"), ("Subject", "b")]
    assert binding_input(forged, b"") != binding_input(honest, b"")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (b"hi", b"hi\r\n"),
        (b"hi\n", b"hi\r\n"),
        (b"hi\r\n\r\n\r\n", b"hi\r\n"),
        (b"hi\n\n", b"hi\r\n"),
        (b"", b"\r\n"),
        (b"", b"\r\n\r\n"),
        (b"a\nb", b"a\r\nb\r\n"),
    ],
)
def test_body_canonicalization_equivalences(a: bytes, b: bytes) -> None:
    assert binding_hash([], a) == binding_hash([], b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (b"hi", b"hi "),
        (b"hi", b"Hi"),
        (b"hi\r\n", b"\r\nhi\r\n"),  # leading empty lines are content
        (b"a\r\n\r\nb", b"a\r\nb"),  # inner empty lines are content
        (b"a\rb", b"a\r\nb"),  # a bare CR is content
    ],
)
def test_body_differences_that_matter(a: bytes, b: bytes) -> None:
    assert binding_hash([], a) != binding_hash([], b)


def test_header_name_case_and_unbound_headers_do_not_matter() -> None:
    lowered = [(name.lower(), value) for name, value in HEADERS]
    assert binding_hash(lowered, BODY) == binding_hash(HEADERS, BODY)
    extra = [*HEADERS, ("X-Mailer", "anything"), ("Received", "from somewhere")]
    assert binding_hash(extra, BODY) == binding_hash(HEADERS, BODY)


def test_raw_octets_bind_like_their_utf8_text() -> None:
    raw = "Caf\udcc3\udca9"  # what bytes.decode('ascii', 'surrogateescape') gives for UTF-8 é
    assert binding_hash([("Subject", raw)], b"") == binding_hash([("Subject", "Café")], b"")
    with pytest.raises(InvalidValue, match="lone surrogate"):
        binding_input([("Subject", "bad \ud800")], b"")


def test_bound_headers_are_the_five_of_the_spec() -> None:
    assert BOUND_HEADERS == ("from", "to", "cc", "subject", "date")


# --- judging ----------------------------------------------------------------------------------


def good_evidence(**overrides: object) -> Evidence:
    fields: dict[str, object] = {
        "signature_valid": True,
        "binding_matches": True,
        "key_found": True,
        "key_revoked_at": None,
        "claim": make_claim(),
        "from_address": "bot@agents.example",
        "dkim_pass": True,
    }
    fields.update(overrides)
    return Evidence(**fields)  # type: ignore[arg-type]


def test_good_evidence_passes_and_names_the_mailbox() -> None:
    verdict = judge(good_evidence())
    assert verdict.ok
    assert verdict.failed == ()
    assert verdict.mailbox_id == MBX
    assert MBX in verdict.reason


def test_dkim_not_checked_still_passes() -> None:
    assert judge(good_evidence(dkim_pass=None)).ok


def test_from_address_must_be_given_normalized() -> None:
    claim = make_claim(address="Bot@Agents.Example")
    assert judge(good_evidence(claim=claim, from_address="bot@agents.example")).ok
    verdict = judge(good_evidence(claim=claim, from_address="Bot@agents.example"))
    assert verdict.failed == (Check.MAILBOX_MATCHES_FROM,)


@pytest.mark.parametrize(
    ("overrides", "check"),
    [
        ({"signature_valid": False}, Check.SIGNATURE),
        ({"binding_matches": False}, Check.BINDING),
        ({"key_found": False}, Check.KEY_KNOWN),
        ({"key_revoked_at": 1_764_107_999}, Check.KEY_NOT_REVOKED),
        ({"key_revoked_at": 1_764_108_000}, Check.KEY_NOT_REVOKED),  # at iat: revoked
        ({"from_address": "other@agents.example"}, Check.MAILBOX_MATCHES_FROM),
        ({"from_address": "bot+x@agents.example"}, Check.MAILBOX_MATCHES_FROM),
        ({"from_address": None}, Check.MAILBOX_MATCHES_FROM),
        ({"dkim_pass": False}, Check.DKIM),
    ],
)
def test_each_single_failure_fails_and_is_named(overrides: dict[str, object], check: Check) -> None:
    verdict = judge(good_evidence(**overrides))
    assert not verdict.ok
    assert verdict.failed == (check,)
    assert verdict.mailbox_id is None
    why = next(text for c, _, text in CHECKS if c is check)
    assert verdict.reason == why


def test_missing_claim_fails() -> None:
    verdict = judge(good_evidence(claim=None))
    assert not verdict.ok
    assert Check.CLAIM in verdict.failed
    assert verdict.mailbox_id is None


def test_key_revoked_after_issue_passes() -> None:
    assert judge(good_evidence(key_revoked_at=1_764_108_001)).ok


def test_every_failure_is_reported_in_table_order() -> None:
    verdict = judge(
        Evidence(
            signature_valid=False,
            binding_matches=False,
            key_found=False,
            key_revoked_at=0,
            claim=None,
            from_address=None,
            dkim_pass=False,
        )
    )
    assert verdict.failed == tuple(check for check, _, _ in CHECKS)
    assert set(verdict.failed) == set(Check)
