"""The per-mailbox identity claim (PRODUCT.md §7, spec/identity.md): what is signed, and how
a verification is judged. The shell signs and verifies with Ed25519; keys never enter here.

Rule 1: the payload is canonical JSON (sorted keys, no whitespace, ASCII only); parse_payload
        accepts canonical bytes only, so a claim has exactly one encoding and a signature
        covers exactly one claim.
Rule 2: the binding is sha256 over an injective, length-prefixed encoding of the bound
        headers (DKIM "relaxed", RFC 6376 §3.4.2) and the body (DKIM "simple", §3.4.3):
        changing a bound header or the body changes it; folding whitespace and unbound
        headers do not.
Rule 3: the header is base64url(payload) "." base64url(signature), unpadded; decoding is
        strict (one encoding per value) after folding whitespace is removed.
Rule 4: judge passes a message only when every Check in CHECKS passes; the Verdict names
        every failed check, and names the mailbox only when it passes.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import icontract

from multimail_core.addresses import ATEXT, MAX_ADDRESS, Address, parse_address
from multimail_core.errors import InvalidAddress, InvalidValue
from multimail_core.ids import Kind, is_id
from multimail_core.modes import OversightMode

VERSION = 1
HEADER_NAME = "X-MultiMail-Identity"
BOUND_HEADERS = ("from", "to", "cc", "subject", "date")
# Payload keys in the order PRODUCT.md lists them; the JSON itself sorts them.
PAYLOAD_KEYS = (
    "v",
    "mailbox_id",
    "address",
    "account_id",
    "oversight_mode",
    "human_approved",
    "reviewer_key_id",
    "ai_generated",
    "iat",
    "message_id",
    "binding",
)
MAX_PAYLOAD = 4096
SIGNATURE_LENGTH = 64  # Ed25519, RFC 8032 §5.1.6
MAX_IAT = 2**53 - 1  # the largest integer every JSON implementation reads exactly
MAX_MESSAGE_ID = 255
MAX_TOKEN = 128
MAILBOX_ID_LENGTH = len("mbx_") + 26
BINDING_LENGTH = 64  # hex sha256
BINDING_TAG = b"multimail-binding/1\n"
MODE_VALUES = tuple(mode.value for mode in OversightMode)
HEX = frozenset("0123456789abcdef")
TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "._:@+-")
B64URL = frozenset(string.ascii_letters + string.digits + "-_")
WSP = (" ", "\t")


def _b64_length(octets: int) -> int:
    return (4 * octets + 2) // 3


MAX_HEADER_VALUE = _b64_length(MAX_PAYLOAD) + 1 + _b64_length(SIGNATURE_LENGTH)


# --- the claim ------------------------------------------------------------------------


def _is_dot_atom_text(text: str) -> bool:
    return (
        bool(text)
        and text[0] != "."
        and text[-1] != "."
        and ".." not in text
        and all(c == "." or c in ATEXT for c in text)
    )


def _is_message_id(text: str) -> bool:
    """RFC 5322 §3.6.4 msg-id with dot-atom-text on both sides (no obsolete forms)."""
    if not 5 <= len(text) <= MAX_MESSAGE_ID or text[0] != "<" or text[-1] != ">":
        return False
    left, at, right = text[1:-1].partition("@")
    return bool(at) and _is_dot_atom_text(left) and _is_dot_atom_text(right)


def _is_token(text: str) -> bool:
    return 1 <= len(text) <= MAX_TOKEN and all(c in TOKEN_CHARS for c in text)


def _is_normalized_address(text: str) -> bool:
    try:
        return parse_address(text).normalized() == text
    except InvalidAddress:
        return False


def _is_int_in(value: object, low: int, high: int) -> bool:
    # bool is an int subclass, but JSON true is not a number here.
    return type(value) is int and low <= value <= high


def _field_problem(fields: Mapping[str, object]) -> str | None:
    """The first field of a would-be claim that breaks its rule, as ``"key must ..."``."""
    reviewer = fields["reviewer_key_id"]
    checks: tuple[tuple[str, bool, str], ...] = (
        ("v", _is_int_in(fields["v"], VERSION, VERSION), f"must be {VERSION}"),
        (
            "mailbox_id",
            isinstance(fields["mailbox_id"], str) and is_id(Kind.MAILBOX, fields["mailbox_id"]),
            "must be a mailbox id mbx_<ULID>",
        ),
        (
            "address",
            isinstance(fields["address"], str) and _is_normalized_address(fields["address"]),
            "must be a normalized address: lowercase local@domain, A-label domain",
        ),
        (
            "account_id",
            isinstance(fields["account_id"], str) and _is_token(fields["account_id"]),
            f"must be 1..{MAX_TOKEN} characters of [A-Za-z0-9._:@+-]",
        ),
        (
            "oversight_mode",
            fields["oversight_mode"] in MODE_VALUES,
            "must be one of " + ", ".join(sorted(MODE_VALUES)),
        ),
        ("human_approved", isinstance(fields["human_approved"], bool), "must be true or false"),
        (
            "reviewer_key_id",
            (reviewer is None and fields["human_approved"] is False)
            or (
                isinstance(reviewer, str)
                and _is_token(reviewer)
                and fields["human_approved"] is True
            ),
            f"must be a key id (1..{MAX_TOKEN} characters of [A-Za-z0-9._:@+-]) when "
            "human_approved is true, and null otherwise",
        ),
        ("ai_generated", fields["ai_generated"] is True, "must be true"),
        (
            "iat",
            _is_int_in(fields["iat"], 0, MAX_IAT),
            f"must be an integer number of seconds in 0..{MAX_IAT}",
        ),
        (
            "message_id",
            isinstance(fields["message_id"], str) and _is_message_id(fields["message_id"]),
            f"must be a Message-ID <left@right> of at most {MAX_MESSAGE_ID} characters",
        ),
        (
            "binding",
            isinstance(fields["binding"], str)
            and len(fields["binding"]) == BINDING_LENGTH
            and all(c in HEX for c in fields["binding"]),
            "must be 64 lowercase hex digits (sha256)",
        ),
    )
    for key, ok, rule in checks:
        if not ok:
            return f"{key} {rule}"
    return None


def _reviewer_fits(human_approved: bool, reviewer_key_id: str | None) -> bool:
    """A reviewer key id is present exactly when a human approved, and has a token's length."""
    if reviewer_key_id is None:
        return not human_approved
    return human_approved and 1 <= len(reviewer_key_id) <= MAX_TOKEN


# Structure only. The character-level rules (id syntax, address form, hex digits) are
# _field_problem's: new_claim and parse_payload enforce them, and canonical_payload's
# postcondition re-checks them on the way to the signer. Kept out of the invariant so that
# CrossHair can exhaust the paths of every method instead of timing out on each.
@icontract.invariant(
    lambda self: (
        self.version == VERSION
        and self.ai_generated is True
        and _reviewer_fits(self.human_approved, self.reviewer_key_id)
        and 0 <= self.issued_at <= MAX_IAT
        and self.oversight_mode in MODE_VALUES
        and len(self.mailbox_id) == MAILBOX_ID_LENGTH
        and 5 <= len(self.address) <= MAX_ADDRESS
        and 1 <= len(self.account_id) <= MAX_TOKEN
        and 5 <= len(self.message_id) <= MAX_MESSAGE_ID
        and len(self.binding) == BINDING_LENGTH
    )
)
@dataclass(frozen=True)
class Claim:
    """What a mailbox asserts about one message it sent; see spec/identity.md."""

    version: int
    mailbox_id: str
    address: str  # normalized: Address.normalized()
    account_id: str
    oversight_mode: str
    human_approved: bool
    reviewer_key_id: str | None
    ai_generated: bool
    issued_at: int  # seconds since the epoch, like JWT "iat"
    message_id: str
    binding: str


def _fields(claim: Claim) -> dict[str, object]:
    return {
        "v": claim.version,
        "mailbox_id": claim.mailbox_id,
        "address": claim.address,
        "account_id": claim.account_id,
        "oversight_mode": claim.oversight_mode,
        "human_approved": claim.human_approved,
        "reviewer_key_id": claim.reviewer_key_id,
        "ai_generated": claim.ai_generated,
        "iat": claim.issued_at,
        "message_id": claim.message_id,
        "binding": claim.binding,
    }


def _canonical_json(fields: Mapping[str, object]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode(
        "ascii"
    )


@icontract.ensure(lambda claim, result: _parses_to(result, claim))
def canonical_payload(claim: Claim) -> bytes:
    """The bytes the mailbox key signs: canonical JSON of the claim (module Rule 1)."""
    return _canonical_json(_fields(claim))


def _parses_to(payload: bytes, claim: Claim) -> bool:
    return parse_payload(payload) == claim


class _DuplicateKeyError(ValueError):
    pass


def _refuse_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _DuplicateKeyError("duplicate key")
    return result


@icontract.ensure(lambda data, result: canonical_payload(result) == data)
def parse_payload(data: bytes) -> Claim:
    """The claim in ``data``, which must be exactly its canonical encoding.

    :raises InvalidValue: when ``data`` is not a canonical claim payload.
    """
    if len(data) > MAX_PAYLOAD:
        raise InvalidValue("identity", f"payload longer than {MAX_PAYLOAD} bytes")
    if not data.isascii():
        raise InvalidValue("identity", "payload is not ASCII (canonical JSON escapes non-ASCII)")
    try:
        obj = json.loads(data.decode("ascii"), object_pairs_hook=_refuse_duplicates)
    except (ValueError, RecursionError) as exc:
        raise InvalidValue("identity", f"payload is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidValue("identity", "payload is not a JSON object")
    missing = sorted(set(PAYLOAD_KEYS) - obj.keys())
    extra = sorted(obj.keys() - set(PAYLOAD_KEYS))
    if missing or extra:
        raise InvalidValue("identity", f"payload keys: missing {missing}, unknown {extra}")
    problem = _field_problem(obj)
    if problem is not None:
        raise InvalidValue("identity", problem)
    claim = Claim(
        version=obj["v"],
        mailbox_id=obj["mailbox_id"],
        address=obj["address"],
        account_id=obj["account_id"],
        oversight_mode=obj["oversight_mode"],
        human_approved=obj["human_approved"],
        reviewer_key_id=obj["reviewer_key_id"],
        ai_generated=obj["ai_generated"],
        issued_at=obj["iat"],
        message_id=obj["message_id"],
        binding=obj["binding"],
    )
    if _canonical_json(obj) != data:
        raise InvalidValue(
            "identity", "payload is not canonical JSON (sorted keys, no whitespace, no escapes)"
        )
    return claim


# --- the binding ----------------------------------------------------------------------


def _relaxed_value(value: str) -> str:
    """RFC 6376 §3.4.2: unfold, collapse WSP runs to one SP, trim."""
    for line_end in ("\r\n", "\n"):
        for w in WSP:
            value = value.replace(line_end + w, w)
    return " ".join(part for part in value.replace("\t", " ").split(" ") if part)


def _simple_body(body: bytes) -> bytes:
    """RFC 6376 §3.4.3 after bare LF → CRLF: trailing empty lines dropped, one CRLF at end."""
    body = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    end = len(body)
    while end >= 4 and body[end - 4 : end] == b"\r\n\r\n":
        end -= 2
    body = body[:end]
    return body if body.endswith(b"\r\n") else body + b"\r\n"


def _header_items(
    headers: Mapping[str, str] | Sequence[tuple[str, str]],
) -> Sequence[tuple[str, str]]:
    return list(headers.items()) if isinstance(headers, Mapping) else headers


def _octets(name: str, value: str) -> bytes:
    """A header value's octets; U+DC80..U+DCFF stand for raw octets (Python surrogateescape)."""
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise InvalidValue("identity", f"{name} header holds a lone surrogate") from None


def _netstring(data: bytes) -> bytes:
    return str(len(data)).encode("ascii") + b":" + data + b"\n"


@icontract.require(lambda headers: not isinstance(headers, str | bytes))
@icontract.ensure(
    lambda body, result: result.startswith(BINDING_TAG) and result.endswith(_simple_body(body))
)
def binding_input(headers: Mapping[str, str] | Sequence[tuple[str, str]], body: bytes) -> bytes:
    """The injective byte string the binding hashes (spec/identity.md §4).

    For each name in BOUND_HEADERS: ``name SP count LF`` then every occurrence, in order, as
    ``len ":" octets LF`` of its relaxed value; then ``"body" SP len LF`` and the simple
    body. An absent header has count 0; an empty one is one occurrence of length 0.

    :raises InvalidValue: when a bound header value holds a lone surrogate.
    """
    items = _header_items(headers)
    out = [BINDING_TAG]
    for bound in BOUND_HEADERS:
        values = [
            _octets(bound, _relaxed_value(value))
            for name, value in items
            if name.isascii() and name.strip(" \t").lower() == bound  # RFC 6376 §3.4.2
        ]
        out.append(f"{bound} {len(values)}\n".encode("ascii"))
        out.extend(_netstring(v) for v in values)
    canonical_body = _simple_body(body)
    out.append(f"body {len(canonical_body)}\n".encode("ascii"))
    out.append(canonical_body)
    return b"".join(out)


@icontract.require(lambda headers: not isinstance(headers, str | bytes))
@icontract.ensure(lambda result: len(result) == BINDING_LENGTH and all(c in HEX for c in result))
def binding_hash(headers: Mapping[str, str] | Sequence[tuple[str, str]], body: bytes) -> str:
    """Lowercase hex sha256 of ``binding_input(headers, body)``.

    :raises InvalidValue: when a bound header value holds a lone surrogate.
    """
    return hashlib.sha256(binding_input(headers, body)).hexdigest()


@icontract.require(lambda headers: not isinstance(headers, str | bytes))
@icontract.ensure(
    lambda mailbox_id, mode, issued_at, message_id, result: (
        result.mailbox_id == mailbox_id
        and result.oversight_mode == mode.value
        and result.issued_at == issued_at
        and result.message_id == message_id
    )
)
def new_claim(
    *,
    mailbox_id: str,
    address: Address | str,
    account_id: str,
    mode: OversightMode,
    human_approved: bool,
    reviewer_key_id: str | None,
    issued_at: int,
    message_id: str,
    headers: Mapping[str, str] | Sequence[tuple[str, str]],
    body: bytes,
) -> Claim:
    """The claim for an outbound message, its binding computed from ``headers`` and ``body``
    exactly as they will be sent (raw header values; see spec/identity.md).

    :raises InvalidValue: when a field breaks its rule (an unparsable address raises
        InvalidAddress, a subclass).
    """
    parsed = address if isinstance(address, Address) else parse_address(address)
    binding = binding_hash(headers, body)
    fields: dict[str, object] = {
        "v": VERSION,
        "mailbox_id": mailbox_id,
        "address": parsed.normalized(),
        "account_id": account_id,
        "oversight_mode": mode.value,
        "human_approved": human_approved,
        "reviewer_key_id": reviewer_key_id,
        "ai_generated": True,
        "iat": issued_at,
        "message_id": message_id,
        "binding": binding,
    }
    problem = _field_problem(fields)
    if problem is not None:
        raise InvalidValue("claim", problem)
    return Claim(
        version=VERSION,
        mailbox_id=mailbox_id,
        address=parsed.normalized(),
        account_id=account_id,
        oversight_mode=mode.value,
        human_approved=human_approved,
        reviewer_key_id=reviewer_key_id,
        ai_generated=True,
        issued_at=issued_at,
        message_id=message_id,
        binding=binding,
    )


# --- the header -----------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _from_b64url(text: str, part: str) -> bytes:
    if not text:
        raise InvalidValue("identity", f"empty {part}")
    if not all(c in B64URL for c in text) or len(text) % 4 == 1:
        raise InvalidValue("identity", f"{part} is not unpadded base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64url(data) != text:
        raise InvalidValue("identity", f"{part} is non-canonical base64url (stray low bits)")
    return data


def _decodes_to(value: str, payload: bytes, signature: bytes) -> bool:
    return decode_header(value) == (payload, signature)


@icontract.require(lambda payload: 1 <= len(payload) <= MAX_PAYLOAD)
@icontract.require(lambda signature: len(signature) == SIGNATURE_LENGTH)
@icontract.ensure(lambda payload, signature, result: _decodes_to(result, payload, signature))
def encode_header(payload: bytes, signature: bytes) -> str:
    """The X-MultiMail-Identity value: base64url(payload) "." base64url(signature), unpadded."""
    return f"{_b64url(payload)}.{_b64url(signature)}"


@icontract.ensure(
    lambda result: 1 <= len(result[0]) <= MAX_PAYLOAD and len(result[1]) == SIGNATURE_LENGTH
)
def decode_header(value: str) -> tuple[bytes, bytes]:
    """``(payload, signature)`` from an X-MultiMail-Identity value. Folding whitespace (SP,
    HTAB, CR, LF) is removed first; everything else must be exact.

    :raises InvalidValue: when the value is malformed.
    """
    compact = value
    for fws in (" ", "\t", "\r", "\n"):
        compact = compact.replace(fws, "")
    if len(compact) > MAX_HEADER_VALUE:
        raise InvalidValue("identity", f"header value longer than {MAX_HEADER_VALUE} characters")
    if compact.count(".") != 1:
        raise InvalidValue("identity", "header value must be two base64url parts joined by '.'")
    encoded_payload, _, encoded_signature = compact.partition(".")
    payload = _from_b64url(encoded_payload, "payload")
    signature = _from_b64url(encoded_signature, "signature")
    if len(signature) != SIGNATURE_LENGTH:
        raise InvalidValue(
            "identity", f"signature is {len(signature)} bytes, Ed25519 needs {SIGNATURE_LENGTH}"
        )
    if len(payload) > MAX_PAYLOAD:
        raise InvalidValue("identity", f"payload longer than {MAX_PAYLOAD} bytes")
    return payload, signature


# --- judging a verification -------------------------------------------------------------


class Check(enum.Enum):
    CLAIM = "claim"
    KEY_KNOWN = "key_known"
    SIGNATURE = "signature"
    BINDING = "binding"
    KEY_NOT_REVOKED = "key_not_revoked"
    MAILBOX_MATCHES_FROM = "mailbox_matches_from"
    DKIM = "dkim"


@dataclass(frozen=True)
class Evidence:
    """What the shell established about one message, before judging it."""

    signature_valid: bool  # the payload's Ed25519 signature verifies with the published key
    binding_matches: bool  # binding_hash of the received headers and body == claim.binding
    key_found: bool  # the mailbox's identity key is published
    key_revoked_at: int | None  # seconds since the epoch; None while the key is live
    claim: Claim | None  # None when the header is absent or does not parse
    from_address: str | None  # the From addr-spec, Address.normalized(); None if absent/invalid
    dkim_pass: bool | None  # None when DKIM was not checked


def _claim_address_matches_from(evidence: Evidence) -> bool:
    # Both sides are normalized (lowercase) addresses, so equality is the comparison.
    return evidence.claim is not None and evidence.claim.address == evidence.from_address


def _key_live_at_issue(evidence: Evidence) -> bool:
    if evidence.key_revoked_at is None:
        return True
    return evidence.claim is not None and evidence.key_revoked_at > evidence.claim.issued_at


# Every check, in reporting order: (check, passes, why it failed). All are evaluated.
CHECKS: tuple[tuple[Check, Callable[[Evidence], bool], str], ...] = (
    (Check.CLAIM, lambda e: e.claim is not None, "no well-formed identity claim"),
    (Check.KEY_KNOWN, lambda e: e.key_found, "the mailbox's identity key is not published"),
    (Check.SIGNATURE, lambda e: e.signature_valid, "the claim's signature does not verify"),
    (
        Check.BINDING,
        lambda e: e.binding_matches,
        "the headers or body differ from what the claim binds",
    ),
    (
        Check.KEY_NOT_REVOKED,
        _key_live_at_issue,
        "the identity key was revoked at or before the claim's issue time",
    ),
    (
        Check.MAILBOX_MATCHES_FROM,
        _claim_address_matches_from,
        "the claim's address is not the From address",
    ),
    (Check.DKIM, lambda e: e.dkim_pass is not False, "DKIM verification failed"),
)


@icontract.invariant(
    lambda self: self.ok == (self.failed == ()) and self.ok == (self.mailbox_id is not None)
)
@dataclass(frozen=True)
class Verdict:
    ok: bool
    failed: tuple[Check, ...]  # in CHECKS order
    mailbox_id: str | None  # the verified sender; None unless ok
    reason: str


def _passes_every_rule(evidence: Evidence) -> bool:
    """The judging rule restated without CHECKS, so that a wrong table entry is a
    counterexample to judge's postcondition."""
    claim = evidence.claim
    if claim is None:
        return False
    return (
        evidence.key_found
        and evidence.signature_valid
        and evidence.binding_matches
        and (evidence.key_revoked_at is None or evidence.key_revoked_at > claim.issued_at)
        and claim.address == evidence.from_address
        and evidence.dkim_pass is not False
    )


def _names_the_claimed_mailbox(evidence: Evidence, verdict: Verdict) -> bool:
    return evidence.claim is not None and verdict.mailbox_id == evidence.claim.mailbox_id


# Helpers, not inline `and`/`or`: icontract re-evaluates a violated condition without
# short-circuiting to explain it, and `claim.issued_at` on a None claim would mask the report.
@icontract.ensure(
    lambda evidence, result: (
        result.ok == _passes_every_rule(evidence)
        and (not result.ok or _names_the_claimed_mailbox(evidence, result))
    )
)
def judge(evidence: Evidence) -> Verdict:
    """Pass or fail a message on the shell's evidence (module Rule 4)."""
    failed = tuple(check for check, passes, _ in CHECKS if not passes(evidence))
    if failed or evidence.claim is None:
        reasons = [why for check, _, why in CHECKS if check in failed]
        return Verdict(ok=False, failed=failed, mailbox_id=None, reason="; ".join(reasons))
    mailbox_id = evidence.claim.mailbox_id
    return Verdict(ok=True, failed=(), mailbox_id=mailbox_id, reason=f"sent by {mailbox_id}")
