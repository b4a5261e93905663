"""Keys and signing for outbound mail (PRODUCT.md §7, spec/identity.md): the domain's DKIM keys,
each mailbox's Ed25519 identity key, and ``sign_message``, which adds the identity claim and
the DKIM signatures to a serialized message.

Rule 1: the claim is computed from the headers and body exactly as they are in ``raw``
        (``parse_message``); the claim header is prepended, then one DKIM-Signature per key.
Rule 2: every DKIM signature covers the identity claim and the headers in SIGNED_HEADERS, each
        listed once more than it occurs (RFC 6376 §5.4.2), so adding one breaks it.
Rule 3: DKIM headers are built with dkimpy's own parsing, canonicalization (relaxed/relaxed),
        header hashing and folding; only the private-key operation is done by
        ``cryptography``. dkimpy does RSA in pure Python: measured on a 4 KiB message,
        dkimpy's rsa-sha256 costs ~7 ms (6.3 ms of it the RSA operation) against ~0.3 ms for
        ed25519-sha256; with the RSA operation in OpenSSL this module signs in ~0.6 ms.
        The output is byte-for-byte what ``dkim.sign`` produces for the same ``t=``
        (tests/unit/test_signing.py checks it), with ``t=`` the claim's issued-at.
Rule 4: a message that cannot carry a valid claim (bare LF, no single Message-ID, a From that
        is not the mailbox, a claim already present) or a key that may not sign (another
        mailbox's, revoked) raises SigningError; nothing is half-signed.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import functools
import hashlib
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils
from dkim.canonicalization import CanonicalizationPolicy

from multimail.errors import ShellError
from multimail_core import identity
from multimail_core.addresses import parse_address
from multimail_core.errors import InvalidAddress, InvalidValue
from multimail_core.modes import OversightMode

RSA_SHA256 = "rsa-sha256"
ED25519_SHA256 = "ed25519-sha256"
ALGORITHMS = (RSA_SHA256, ED25519_SHA256)
RSA_BITS = 2048
KEY_TYPE = {RSA_SHA256: "rsa", ED25519_SHA256: "ed25519"}  # the k= tag, RFC 8463 §4
SEED_LENGTH = 32
DNS_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "-._")
KID_PREFIX = "idk_"
KID_HEX_DIGITS = 16
CRLF = b"\r\n"
FOLD_WIDTH = 76  # RFC 5322 §2.1.1: lines SHOULD stay within 78 characters
DKIM_HEADER = b"DKIM-Signature"
CANONICALIZATION = b"relaxed/relaxed"
SIGNED_HEADERS = (
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "x-multimail-identity",
    "x-ai-generated",
)


class SigningError(ShellError):
    """The message or the keys cannot produce a valid signed message."""

    code = "signing_error"


class MalformedMessage(ValueError):
    """The bytes are not a header block of ``name: value`` fields (RFC 5322 §2.2)."""


# --- keys -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DkimKey:
    """A domain's DKIM signing key; ``public_key`` is the DNS ``p=`` value (base64)."""

    domain: str
    selector: str
    algorithm: str  # RSA_SHA256 | ED25519_SHA256
    private_key: bytes  # PEM (RSA) | base64 of the 32-byte seed (Ed25519), as dkimpy reads them
    public_key: str
    created_at: int  # ms since the epoch

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise InvalidValue("dkim_key", f"algorithm must be one of {', '.join(ALGORITHMS)}")
        for name, text in (("domain", self.domain), ("selector", self.selector)):
            if not text or not all(c in DNS_NAME_CHARS for c in text):
                raise InvalidValue("dkim_key", f"{name} must be an ASCII DNS name: {text!r}")


@dataclass(frozen=True)
class IdentityKey:
    """A mailbox's own Ed25519 key for the identity claim."""

    mailbox_id: str
    kid: str
    private_key: bytes  # the 32-byte Ed25519 seed (RFC 8032 §5.1.5)
    public_key: bytes  # 32 bytes
    created_at: int  # ms since the epoch
    revoked_at: int | None  # ms since the epoch

    def __post_init__(self) -> None:
        if len(self.private_key) != SEED_LENGTH or len(self.public_key) != SEED_LENGTH:
            raise InvalidValue("identity_key", "Ed25519 seed and public key are 32 bytes each")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: object, field: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidValue(field, "must be base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidValue(field, "must be base64 text") from None


def _ed25519_public(seed: bytes) -> bytes:
    return (
        ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


def generate_dkim_key(domain: str, selector: str, algorithm: str, now_ms: int) -> DkimKey:
    """A new DKIM key for ``selector._domainkey.domain``.

    :raises InvalidValue: when ``algorithm`` is not rsa-sha256 or ed25519-sha256.
    """
    if algorithm == RSA_SHA256:
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return DkimKey(domain, selector, algorithm, private, _b64(spki), now_ms)
    if algorithm == ED25519_SHA256:
        seed = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        public = _b64(_ed25519_public(seed))
        return DkimKey(domain, selector, algorithm, _b64(seed).encode("ascii"), public, now_ms)
    raise InvalidValue("dkim_key", f"algorithm must be one of {', '.join(ALGORITHMS)}")


def dkim_dns_record(key: DkimKey) -> dict[str, str]:
    """The TXT record that publishes ``key`` (RFC 6376 §3.6.1, RFC 8463 §4)."""
    return {
        "type": "TXT",
        "name": f"{key.selector}._domainkey.{key.domain}",
        "value": f"v=DKIM1; k={KEY_TYPE[key.algorithm]}; p={key.public_key}",
    }


def key_id(public_key: bytes) -> str:
    """``idk_`` + the first 16 hex digits of sha256(public key)."""
    return KID_PREFIX + hashlib.sha256(public_key).hexdigest()[:KID_HEX_DIGITS]


def generate_identity_key(mailbox_id: str, now_ms: int) -> IdentityKey:
    seed = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = _ed25519_public(seed)
    return IdentityKey(mailbox_id, key_id(public), seed, public, now_ms, None)


def jwk(key: IdentityKey) -> dict[str, object]:
    """The public half as a JWK (RFC 8037 §2), times in seconds (a revocation instant rounds
    down, so a key revoked during second t vouches for nothing issued in second t)."""
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": _b64url(key.public_key),
        "kid": key.kid,
        "use": "sig",
        "alg": "EdDSA",
        "created_at": key.created_at // 1000,
        "revoked_at": None if key.revoked_at is None else key.revoked_at // 1000,
    }


DOC_KINDS = ("dkim", "identity")


def to_doc(key: DkimKey | IdentityKey) -> dict[str, object]:
    """A JSON-ready document of ``key`` (bytes as base64), tagged with its ``kind``."""
    if isinstance(key, DkimKey):
        return {
            "kind": "dkim",
            "domain": key.domain,
            "selector": key.selector,
            "algorithm": key.algorithm,
            "private_key": _b64(key.private_key),
            "public_key": key.public_key,
            "created_at": key.created_at,
        }
    return {
        "kind": "identity",
        "mailbox_id": key.mailbox_id,
        "kid": key.kid,
        "private_key": _b64(key.private_key),
        "public_key": _b64(key.public_key),
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
    }


def _field(doc: Mapping[str, Any], name: str, kind: type) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InvalidValue("key_doc", f"{name} must be {kind.__name__}")
    return value


def dkim_key_from_doc(doc: Mapping[str, Any]) -> DkimKey:
    return DkimKey(
        domain=_field(doc, "domain", str),
        selector=_field(doc, "selector", str),
        algorithm=_field(doc, "algorithm", str),
        private_key=_unb64(doc.get("private_key"), "key_doc"),
        public_key=_field(doc, "public_key", str),
        created_at=_field(doc, "created_at", int),
    )


def identity_key_from_doc(doc: Mapping[str, Any]) -> IdentityKey:
    key = IdentityKey(
        mailbox_id=_field(doc, "mailbox_id", str),
        kid=_field(doc, "kid", str),
        private_key=_unb64(doc.get("private_key"), "key_doc"),
        public_key=_unb64(doc.get("public_key"), "key_doc"),
        created_at=_field(doc, "created_at", int),
        revoked_at=None if doc.get("revoked_at") is None else _field(doc, "revoked_at", int),
    )
    if _ed25519_public(key.private_key) != key.public_key or key_id(key.public_key) != key.kid:
        raise InvalidValue("key_doc", "public key or kid does not match the private key")
    return key


def from_doc(doc: Mapping[str, Any]) -> DkimKey | IdentityKey:
    """The key ``to_doc`` wrote.

    :raises InvalidValue: when ``doc`` is not such a document, or (identity keys) its public
        key or kid does not belong to its private key.
    """
    kind = doc.get("kind")
    if kind == "dkim":
        return dkim_key_from_doc(doc)
    if kind == "identity":
        return identity_key_from_doc(doc)
    raise InvalidValue("key_doc", f"kind must be one of {', '.join(DOC_KINDS)}")


# --- reading a serialized message ------------------------------------------------------


@dataclass(frozen=True)
class ParsedMessage:
    """Header fields in order, as ``(name, value)`` with the value's folds kept and its final
    line break removed (octets ≥ 0x80 as U+DC80..U+DCFF, surrogateescape), and the raw body."""

    headers: tuple[tuple[str, str], ...]
    body: bytes


def _line_content(line: bytes) -> bytes:
    if line.endswith(b"\n"):
        line = line[:-1]
    return line[:-1] if line.endswith(b"\r") else line


def _split_fields(raw: bytes) -> tuple[list[bytes], bytes]:
    fields: list[bytes] = []
    pos = 0
    while pos < len(raw):
        end = raw.find(b"\n", pos)
        end = len(raw) if end < 0 else end + 1
        line, start, pos = raw[pos:end], pos, end
        content = _line_content(line)
        if not content:
            return fields, raw[pos:]
        if content[:1] in (b" ", b"\t"):
            if not fields:
                raise MalformedMessage("the header block starts with a continuation line")
            fields[-1] += line
        elif start == 0 and content.startswith(b"From "):
            continue  # an mbox separator line, as RFC 4155 files carry
        elif content.find(b":") <= 0:
            raise MalformedMessage(f"header line without a field name: {content[:40]!r}")
        else:
            fields.append(line)
    return fields, b""


def parse_message(raw: bytes) -> ParsedMessage:
    """Split ``raw`` into header fields and body; CRLF and bare LF line ends are both read.

    :raises MalformedMessage: when a header line is neither ``name:`` nor a continuation.
    """
    fields, body = _split_fields(raw)
    headers = []
    for field in fields:
        name, _, value = field.partition(b":")
        headers.append(
            (
                name.decode("ascii", "surrogateescape"),
                _line_content(value).decode("utf-8", "surrogateescape"),
            )
        )
    return ParsedMessage(tuple(headers), body)


def header_values(headers: Sequence[tuple[str, str]], name: str) -> list[str]:
    """Every value of field ``name``, matched like the binding matches (spec/identity.md §4)."""
    return [v for n, v in headers if n.isascii() and n.strip(" \t").lower() == name]


def message_id_of(headers: Sequence[tuple[str, str]]) -> str | None:
    """The single Message-ID, folding whitespace around it removed; None if not exactly one."""
    values = header_values(headers, "message-id")
    return values[0].strip(" \t\r\n") if len(values) == 1 else None


def from_address(headers: Sequence[tuple[str, str]]) -> str | None:
    """The normalized addr-spec of the single From field holding a single mailbox, else None."""
    values = header_values(headers, "from")
    if len(values) != 1:
        return None
    unfolded = values[0].replace("\r", "").replace("\n", "")
    pairs = [addr for _, addr in email.utils.getaddresses([unfolded]) if addr]
    if len(pairs) != 1:
        return None
    try:
        return parse_address(pairs[0]).normalized()
    except InvalidAddress:
        return None


# --- DKIM -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _digest_signer(algorithm: str, private_key: bytes) -> Callable[[bytes], bytes]:
    """The private-key operation over a sha256 digest. Cached: loading a PEM RSA key checks
    it, which costs ~35 ms, a hundred times the signature itself.

    :raises SigningError: when ``private_key`` is not a key of ``algorithm``.
    """
    try:
        if algorithm == RSA_SHA256:
            key = serialization.load_pem_private_key(private_key, password=None)
        else:
            seed = base64.b64decode(private_key, validate=True)
            key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    except (ValueError, TypeError) as exc:  # binascii.Error is a ValueError
        raise SigningError(f"the {algorithm} private key does not load: {exc}") from None
    if isinstance(key, rsa.RSAPrivateKey) and algorithm == RSA_SHA256:
        rsa_key, prehashed = key, utils.Prehashed(hashes.SHA256())
        return lambda digest: rsa_key.sign(digest, padding.PKCS1v15(), prehashed)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign  # RFC 8463 §3: Ed25519 over the sha256 of the signed data
    raise SigningError(f"{algorithm} needs an RSA private key")


def dkim_h_tag(headers: Sequence[Sequence[bytes]]) -> list[bytes]:
    """SIGNED_HEADERS, each once more than it occurs in ``headers`` (dkimpy's parse)."""
    names = [bytes(name).lower() for name, _ in headers]
    return [
        wanted.encode("ascii")
        for wanted in SIGNED_HEADERS
        for _ in range(names.count(wanted.encode("ascii")) + 1)
    ]


def _joined(fields: Sequence[tuple[bytes, bytes]]) -> bytes:
    return b"; ".join(b"=".join(field) for field in fields)


@functools.lru_cache(maxsize=8)
def _body_hash(body: bytes) -> bytes:
    """``bh=`` for the relaxed body; cached so that a message's RSA and Ed25519 signatures
    canonicalize its body once."""
    policy = CanonicalizationPolicy.from_c_value(CANONICALIZATION)
    return base64.b64encode(hashlib.sha256(policy.canonicalize_body(body)).digest())


def dkim_signature(message: bytes, key: DkimKey, *, timestamp: int) -> bytes:
    """The ``DKIM-Signature: ...`` field, CRLF-terminated, that ``dkim.sign`` would produce for
    ``message`` with relaxed/relaxed, Rule 2's header list and ``t=timestamp`` (Rule 3)."""
    try:
        headers, body = dkim.rfc822_parse(message)
    except dkim.MessageFormatError as exc:
        raise SigningError(f"dkim: {exc}") from None
    policy = CanonicalizationPolicy.from_c_value(CANONICALIZATION)
    include = dkim_h_tag(headers)
    domain = key.domain.encode("ascii")
    fields = [
        (b"v", b"1"),
        (b"a", key.algorithm.encode("ascii")),
        (b"c", CANONICALIZATION),
        (b"d", domain),
        (b"i", b"@" + domain),
        (b"q", b"dns/txt"),
        (b"s", key.selector.encode("ascii")),
        (b"t", str(timestamp).encode("ascii")),
        (b"h", b" : ".join(include)),
        (b"bh", _body_hash(body)),
        (b"b", b"0" * 60),  # placeholder, as dkimpy does, so b= folds onto its own line
    ]
    unsigned = dkim.fold(_joined(fields), namelen=len(DKIM_HEADER), linesep=CRLF)
    unsigned = dkim.RE_BTAG.sub(rb"\1", unsigned)
    hasher = hashlib.sha256()
    dkim.hash_headers(
        hasher,
        policy,
        policy.canonicalize_headers(headers),
        include,
        (DKIM_HEADER, b" " + unsigned),
        dict(fields),
    )
    signature = _digest_signer(key.algorithm, key.private_key)(hasher.digest())
    fields[-1] = (b"b", base64.b64encode(signature))
    value: bytes = dkim.fold(_joined(fields) + CRLF, namelen=len(DKIM_HEADER), linesep=CRLF)
    return DKIM_HEADER + b": " + value


# --- the signed message ---------------------------------------------------------------


def fold_header(name: str, value: str) -> bytes:
    """``name: value`` CRLF, folded with CRLF SP every FOLD_WIDTH characters (the identity
    value has no spaces; verifiers remove folding whitespace, spec/identity.md §3)."""
    first = FOLD_WIDTH - len(name) - 2
    chunks = [value[:first]] + [
        value[i : i + FOLD_WIDTH - 1] for i in range(first, len(value), FOLD_WIDTH - 1)
    ]
    folded = f"{name}: " + "\r\n ".join(chunk for chunk in chunks if chunk) + "\r\n"
    return folded.encode("ascii")


def _require(condition: bool, why: str) -> None:
    if not condition:
        raise SigningError(why)


def _checked_parse(raw: bytes, address: str) -> tuple[ParsedMessage, str]:
    _require(b"\n" not in raw.replace(CRLF, b""), "raw must use CRLF line endings only")
    try:
        message = parse_message(raw)
    except MalformedMessage as exc:
        raise SigningError(str(exc)) from None
    message_id = message_id_of(message.headers)
    _require(message_id is not None, "the message needs exactly one Message-ID")
    _require(
        not header_values(message.headers, identity.HEADER_NAME.lower()),
        f"the message already carries {identity.HEADER_NAME}",
    )
    try:
        mailbox_address = parse_address(address).normalized()
    except InvalidAddress as exc:
        raise SigningError(f"address: {exc.detail}") from None
    _require(
        from_address(message.headers) == mailbox_address,
        f"the From field must hold exactly the mailbox address {mailbox_address}",
    )
    return message, str(message_id)


def sign_message(
    raw: bytes,
    *,
    mailbox_id: str,
    address: str,
    account_id: str,
    mode: OversightMode,
    human_approved: bool,
    reviewer_key_id: str | None,
    issued_at: int,
    identity_key: IdentityKey,
    dkim_keys: Sequence[DkimKey],
) -> bytes:
    """``raw`` with the mailbox's identity claim and one DKIM-Signature per key prepended.

    :raises SigningError: when the message or keys cannot make a valid claim (Rule 4).
    :raises InvalidValue: when a claim field breaks spec/identity.md §1.
    """
    _require(identity_key.mailbox_id == mailbox_id, "the identity key is another mailbox's")
    _require(identity_key.revoked_at is None, f"identity key {identity_key.kid} is revoked")
    message, message_id = _checked_parse(raw, address)
    claim = identity.new_claim(
        mailbox_id=mailbox_id,
        address=address,
        account_id=account_id,
        mode=mode,
        human_approved=human_approved,
        reviewer_key_id=reviewer_key_id,
        issued_at=issued_at,
        message_id=message_id,
        headers=message.headers,
        body=message.body,
    )
    payload = identity.canonical_payload(claim)
    signature = ed25519.Ed25519PrivateKey.from_private_bytes(identity_key.private_key).sign(payload)
    header = fold_header(identity.HEADER_NAME, identity.encode_header(payload, signature))
    claimed = header + raw
    signatures = [dkim_signature(claimed, key, timestamp=issued_at) for key in dkim_keys]
    return b"".join(signatures) + claimed
