"""Signing and verifying outbound mail: DKIM and identity keys, sign_message, verify_message
and the lookups it is given (adapters/multimail/signing.py, verify.py)."""

from __future__ import annotations

import base64
import dataclasses
import json
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dkim
import dns.exception
import dns.resolver
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from multimail import verify as verify_module
from multimail.signing import (
    ED25519_SHA256,
    RSA_SHA256,
    DkimKey,
    IdentityKey,
    MalformedMessage,
    SigningError,
    dkim_dns_record,
    dkim_h_tag,
    dkim_signature,
    from_doc,
    generate_dkim_key,
    generate_identity_key,
    jwk,
    key_id,
    parse_message,
    sign_message,
    to_doc,
)
from multimail.verify import (
    INTERNAL_ERROR,
    ResolverError,
    VerifyResult,
    dns_resolver,
    server_resolvers,
    verify_message,
)
from multimail_core import identity
from multimail_core.errors import InvalidValue
from multimail_core.modes import OversightMode
from tests.corpus import corpus_files, require_corpus

MAILBOX = "mbx_01JDQ8ZK3V5T7W9X2B4C6D8E0F"
OTHER_MAILBOX = "mbx_01JDQ8ZK3V5T7W9X2B4C6D8E0G"
DOMAIN = "agents.example"
IAT = 1_764_108_000  # seconds
NOW_MS = IAT * 1000 - 86_400_000
MESSAGE = (
    b"From: Support Bot <Bot@Agents.Example>\r\n"
    b"To: alice@example.com, Bob <bob@example.org>\r\n"
    b"Cc: carol@example.net\r\n"
    b"Subject: Your order\r\n has shipped\r\n"
    b"Date: Tue, 25 Nov 2025 22:00:00 +0000\r\n"
    b"Message-ID: <01JDQ8ZK3V5T7W9X2B4C6D8E0J@agents.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"X-AI-Generated: true\r\n"
    b"\r\n"
    b"Hello Alice,\r\n\r\nyour order has shipped.\r\n"
)


@pytest.fixture(scope="module")
def rsa_key() -> DkimKey:
    return generate_dkim_key(DOMAIN, "mm-rsa", RSA_SHA256, NOW_MS)


@pytest.fixture(scope="module")
def ed_key() -> DkimKey:
    return generate_dkim_key(DOMAIN, "mm-ed", ED25519_SHA256, NOW_MS)


@pytest.fixture(scope="module")
def id_key() -> IdentityKey:
    return generate_identity_key(MAILBOX, NOW_MS)


def sign(raw: bytes, id_key: IdentityKey, keys: Sequence[DkimKey], **over: Any) -> bytes:
    args: dict[str, Any] = {
        "mailbox_id": MAILBOX,
        "address": "bot@agents.example",
        "account_id": "acc_01JDQ8ZK3V5T7W9X2B4C6D8E0H",
        "mode": OversightMode.GATED_SEND,
        "human_approved": True,
        "reviewer_key_id": "key_01JDQ8ZK3V5T7W9X2B4C6D8E0K",
        "issued_at": IAT,
        "identity_key": id_key,
        "dkim_keys": keys,
    }
    return sign_message(raw, **(args | over))


def dns_of(*keys: DkimKey) -> Callable[[str], str | None]:
    records = {dkim_dns_record(k)["name"]: dkim_dns_record(k)["value"] for k in keys}
    return records.get


def keys_of(*keys: IdentityKey) -> Callable[[str], list[dict[str, object]]]:
    return lambda mailbox_id: [jwk(k) for k in keys if k.mailbox_id == mailbox_id]


def dnsfunc(*keys: DkimKey) -> Callable[..., bytes | None]:
    """dkimpy's own lookup shape, for checking our output with dkimpy alone."""
    lookup = dns_of(*keys)

    def txt(name: bytes, timeout: int = 5) -> bytes | None:
        answer = lookup(name.decode().rstrip("."))
        return None if answer is None else answer.encode()

    return txt


def failed(result: VerifyResult) -> set[str]:
    return {c["check"] for c in result.checks if not c["ok"]}


@pytest.fixture(scope="module")
def signed(rsa_key: DkimKey, ed_key: DkimKey, id_key: IdentityKey) -> bytes:
    return sign(MESSAGE, id_key, [rsa_key, ed_key])


def check(raw: bytes, rsa_key: DkimKey, ed_key: DkimKey, id_key: IdentityKey) -> VerifyResult:
    return verify_message(raw, dns_txt=dns_of(rsa_key, ed_key), identity_keys=keys_of(id_key))


# --- keys -----------------------------------------------------------------------------


def test_rsa_dkim_key_is_published_as_an_rsa_txt_record(rsa_key: DkimKey) -> None:
    assert rsa_key.private_key.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert dkim_dns_record(rsa_key) == {
        "type": "TXT",
        "name": "mm-rsa._domainkey.agents.example",
        "value": f"v=DKIM1; k=rsa; p={rsa_key.public_key}",
    }
    assert (
        dkim.crypto.parse_public_key(base64.b64decode(rsa_key.public_key))["modulus"].bit_length()
        == 2048
    )


def test_ed25519_dkim_key_is_a_base64_seed_and_raw_public_key(ed_key: DkimKey) -> None:
    assert len(base64.b64decode(ed_key.private_key, validate=True)) == 32
    assert len(base64.b64decode(ed_key.public_key, validate=True)) == 32
    assert dkim_dns_record(ed_key)["value"] == f"v=DKIM1; k=ed25519; p={ed_key.public_key}"


def test_unknown_dkim_algorithm_or_odd_selector_is_refused() -> None:
    with pytest.raises(InvalidValue):
        generate_dkim_key(DOMAIN, "s1", "rsa-sha1", NOW_MS)
    with pytest.raises(InvalidValue):
        DkimKey(DOMAIN, "s 1", ED25519_SHA256, b"", "", NOW_MS)


def test_identity_key_is_an_ed25519_jwk_with_times_in_seconds(id_key: IdentityKey) -> None:
    revoked = dataclasses.replace(id_key, revoked_at=IAT * 1000 + 999)
    published = jwk(revoked)
    assert published == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": base64.urlsafe_b64encode(id_key.public_key).rstrip(b"=").decode(),
        "kid": id_key.kid,
        "use": "sig",
        "alg": "EdDSA",
        "created_at": NOW_MS // 1000,
        "revoked_at": IAT,
    }
    assert id_key.kid == key_id(id_key.public_key)
    assert id_key.kid.startswith("idk_")
    assert generate_identity_key(MAILBOX, NOW_MS).kid != id_key.kid


def test_keys_survive_a_json_round_trip(
    rsa_key: DkimKey, ed_key: DkimKey, id_key: IdentityKey
) -> None:
    revoked = dataclasses.replace(id_key, revoked_at=NOW_MS + 5)
    for key in (rsa_key, ed_key, id_key, revoked):
        assert from_doc(json.loads(json.dumps(to_doc(key)))) == key


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "other"},
        {"created_at": True},
        {"private_key": "not base64!"},
        {"kid": "idk_0000000000000000"},
        {"mailbox_id": None},
    ],
)
def test_a_damaged_identity_key_document_is_refused(
    id_key: IdentityKey, change: dict[str, object]
) -> None:
    with pytest.raises(InvalidValue):
        from_doc(to_doc(id_key) | change)


def test_an_identity_document_whose_public_key_is_not_its_own_is_refused(
    id_key: IdentityKey,
) -> None:
    other = generate_identity_key(MAILBOX, NOW_MS)
    doc = to_doc(id_key) | {"public_key": to_doc(other)["public_key"], "kid": other.kid}
    with pytest.raises(InvalidValue):
        from_doc(doc)


# --- reading a message -----------------------------------------------------------------


def test_parse_message_keeps_folds_and_reads_crlf_and_lf() -> None:
    parsed = parse_message(b"From x\nSubject: a\r\n\tb\r\nX-A:y\n\nbody\r\n\r\n")
    assert parsed.headers == (("Subject", " a\r\n\tb"), ("X-A", "y"))
    assert parsed.body == b"body\r\n\r\n"
    assert parse_message(b"A: \xff\r\n").headers == (("A", " \udcff"),)
    assert parse_message(b"A: 1\r\n").body == b""


@pytest.mark.parametrize("raw", [b" folded first\r\n\r\n", b"A: 1\r\nno colon\r\n\r\n", b":x\r\n"])
def test_parse_message_refuses_lines_that_are_not_fields(raw: bytes) -> None:
    with pytest.raises(MalformedMessage):
        parse_message(raw)


# --- signing --------------------------------------------------------------------------


def test_signed_message_is_dkim_signatures_then_the_claim_then_the_original(
    signed: bytes, rsa_key: DkimKey, id_key: IdentityKey
) -> None:
    assert signed.endswith(MESSAGE)
    top = signed[: -len(MESSAGE)]
    assert top.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;")
    assert top.count(b"DKIM-Signature:") == 2
    assert b"a=ed25519-sha256" in top
    claim_field = top[top.index(b"X-MultiMail-Identity: ") :]
    assert all(len(line) <= 78 for line in top.split(b"\r\n"))
    assert claim_field.count(b"\r\n ") >= 2  # folded
    payload, signature = identity.decode_header(claim_field.decode().partition(":")[2])
    Ed25519PublicKey.from_public_bytes(id_key.public_key).verify(signature, payload)
    claim = identity.parse_payload(payload)
    message = parse_message(MESSAGE)
    assert claim.address == "bot@agents.example"
    assert claim.message_id == "<01JDQ8ZK3V5T7W9X2B4C6D8E0J@agents.example>"
    assert claim.binding == identity.binding_hash(message.headers, message.body)
    assert (claim.mailbox_id, claim.issued_at, claim.oversight_mode) == (MAILBOX, IAT, "gated_send")
    assert (claim.human_approved, claim.reviewer_key_id) == (True, "key_01JDQ8ZK3V5T7W9X2B4C6D8E0K")


def test_dkimpy_verifies_every_signature_and_each_covers_the_claim(
    signed: bytes, rsa_key: DkimKey, ed_key: DkimKey
) -> None:
    assert dkim.verify(signed, dnsfunc=dnsfunc(rsa_key, ed_key))
    verifier = dkim.DKIM(signed)
    for index in (0, 1):
        assert verifier.verify(idx=index, dnsfunc=dnsfunc(rsa_key, ed_key))
        assert b"x-multimail-identity" in verifier.include_headers
        assert verifier.signature_fields[b"t"] == str(IAT).encode()


def test_signing_is_deterministic(
    signed: bytes, rsa_key: DkimKey, ed_key: DkimKey, id_key: IdentityKey
) -> None:
    assert sign(MESSAGE, id_key, [rsa_key, ed_key]) == signed


@pytest.mark.parametrize("which", ["rsa", "ed25519"])
def test_dkim_signature_is_byte_for_byte_what_dkimpy_signs(
    which: str,
    rsa_key: DkimKey,
    ed_key: DkimKey,
    signed: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = rsa_key if which == "rsa" else ed_key
    claimed = signed[signed.index(b"X-MultiMail-Identity:") :]
    monkeypatch.setattr(dkim, "time", types.SimpleNamespace(time=lambda: 1_700_000_123.5))
    expected = dkim.sign(
        claimed,
        key.selector.encode(),
        key.domain.encode(),
        key.private_key,
        signature_algorithm=key.algorithm.encode(),
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=dkim_h_tag(dkim.rfc822_parse(claimed)[0]),
    )
    assert dkim_signature(claimed, key, timestamp=1_700_000_123) == expected


def test_every_signed_header_is_listed_once_more_than_it_occurs() -> None:
    headers = [[b"From", b"x"], [b"Received", b"y"], [b"To", b"a"], [b"to", b"b"]]
    h = dkim_h_tag(headers)
    assert (h.count(b"from"), h.count(b"to"), h.count(b"cc"), h.count(b"received")) == (2, 3, 1, 0)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (MESSAGE.replace(b"\r\n", b"\n"), "CRLF"),
        (MESSAGE.replace(b"Message-ID", b"X-Message-ID"), "Message-ID"),
        (MESSAGE.replace(b"MIME-Version", b"Message-ID: <b@c>\r\nMIME-Version"), "Message-ID"),
        (MESSAGE.replace(b"Bot@Agents", b"Bot2@Agents"), "From"),
        (MESSAGE.replace(b"MIME-Version", b"From: bot@agents.example\r\nMIME-Version"), "From"),
        (b"X-MultiMail-Identity: a.b\r\n" + MESSAGE, "already"),
        (b" \r\n" + MESSAGE, "continuation"),
    ],
)
def test_a_message_that_cannot_carry_a_valid_claim_is_refused(
    raw: bytes, why: str, id_key: IdentityKey, rsa_key: DkimKey
) -> None:
    with pytest.raises(SigningError, match=why):
        sign(raw, id_key, [rsa_key])


def test_another_mailboxs_or_a_revoked_identity_key_cannot_sign(id_key: IdentityKey) -> None:
    with pytest.raises(SigningError, match="another mailbox"):
        sign(MESSAGE, id_key, [], mailbox_id=OTHER_MAILBOX)
    with pytest.raises(SigningError, match="revoked"):
        sign(MESSAGE, dataclasses.replace(id_key, revoked_at=NOW_MS), [])


def test_a_dkim_key_that_does_not_load_is_refused(id_key: IdentityKey) -> None:
    for algorithm in (RSA_SHA256, ED25519_SHA256):
        broken = DkimKey(DOMAIN, "s1", algorithm, b"junk", "", NOW_MS)
        with pytest.raises(SigningError, match="does not load"):
            sign(MESSAGE, id_key, [broken])


def test_a_claim_field_that_breaks_the_spec_is_refused(id_key: IdentityKey) -> None:
    with pytest.raises(InvalidValue):
        sign(MESSAGE, id_key, [], human_approved=False)  # reviewer id without approval


# --- verifying ------------------------------------------------------------------------


def test_a_signed_message_verifies_and_names_its_mailbox(
    signed: bytes, rsa_key: DkimKey, ed_key: DkimKey, id_key: IdentityKey
) -> None:
    result = check(signed, rsa_key, ed_key, id_key)
    assert result.ok, result.reason
    assert (result.mailbox_id, result.address) == (MAILBOX, "bot@agents.example")
    assert result.claim is not None
    assert result.claim["iat"] == IAT
    assert result.dkim == {"result": "pass", "domain": DOMAIN, "selector": "mm-rsa"}
    assert [c["check"] for c in result.checks] == [c.value for c, _, _ in identity.CHECKS]
    assert all(c["ok"] and c["reason"] == "" for c in result.checks)
    assert json.loads(json.dumps(result.to_dict()))["mailbox_id"] == MAILBOX


def test_one_passing_aligned_dkim_signature_is_enough(
    signed: bytes, ed_key: DkimKey, id_key: IdentityKey
) -> None:
    result = verify_message(signed, dns_txt=dns_of(ed_key), identity_keys=keys_of(id_key))
    assert result.ok
    assert result.dkim["selector"] == "mm-ed"


def test_a_message_saved_with_lf_line_ends_still_verifies(
    signed: bytes, rsa_key: DkimKey, ed_key: DkimKey, id_key: IdentityKey
) -> None:
    assert check(signed.replace(b"\r\n", b"\n"), rsa_key, ed_key, id_key).ok


def test_skipping_dkim_never_looks_up_dns(signed: bytes, id_key: IdentityKey) -> None:
    def no_dns(fqdn: str) -> str | None:
        raise AssertionError("looked up " + fqdn)

    result = verify_message(signed, dns_txt=no_dns, identity_keys=keys_of(id_key), check_dkim=False)
    assert result.ok
    assert result.dkim == {"result": "skipped", "domain": None, "selector": None}


def test_an_unknown_mailbox_fails(signed: bytes, rsa_key: DkimKey, ed_key: DkimKey) -> None:
    stranger = generate_identity_key(OTHER_MAILBOX, NOW_MS)
    result = check(signed, rsa_key, ed_key, stranger)
    assert not result.ok
    assert result.mailbox_id is None
    assert failed(result) == {"key_known", "signature"}
    assert "no identity key is published" in result.reason


def test_a_claim_signed_by_another_key_fails(
    signed: bytes, rsa_key: DkimKey, ed_key: DkimKey
) -> None:
    impostor = generate_identity_key(MAILBOX, NOW_MS)
    result = check(signed, rsa_key, ed_key, impostor)
    assert not result.ok
    assert failed(result) == {"signature"}


def test_any_published_key_of_the_mailbox_may_have_signed(
    signed: bytes, rsa_key: DkimKey, ed_key: DkimKey, id_key: IdentityKey
) -> None:
    newer = generate_identity_key(MAILBOX, NOW_MS + 1)
    result = verify_message(
        signed, dns_txt=dns_of(rsa_key, ed_key), identity_keys=keys_of(newer, id_key)
    )
    assert result.ok


@pytest.mark.parametrize(("revoked_s", "ok"), [(IAT + 1, True), (IAT, False), (IAT - 1, False)])
def test_a_key_vouches_only_for_claims_issued_before_its_revocation(
    revoked_s: int,
    ok: bool,
    signed: bytes,
    rsa_key: DkimKey,
    ed_key: DkimKey,
    id_key: IdentityKey,
) -> None:
    revoked = dataclasses.replace(id_key, revoked_at=revoked_s * 1000 + 500)
    result = check(signed, rsa_key, ed_key, revoked)
    assert result.ok is ok
    assert ok or failed(result) == {"key_not_revoked"}


def test_a_changed_message_id_fails_even_without_dkim(signed: bytes, id_key: IdentityKey) -> None:
    changed = signed.replace(b"<01JDQ8ZK3V5T7W9X2B4C6D8E0J@", b"<01JDQ8ZK3V5T7W9X2B4C6D8E0X@")
    result = verify_message(
        changed, dns_txt=dns_of(), identity_keys=keys_of(id_key), check_dkim=False
    )
    assert not result.ok
    assert failed(result) == {"binding"}
    assert "Message-ID" in result.reason


def test_a_claim_for_another_from_address_fails(
    rsa_key: DkimKey, ed_key: DkimKey, id_key: IdentityKey
) -> None:
    signed = sign(MESSAGE, id_key, [rsa_key])
    forged = signed.replace(b"From: Support Bot <Bot@", b"From: Support Bot <Eve@")
    result = check(forged, rsa_key, ed_key, id_key)
    assert {"binding", "mailbox_matches_from", "dkim"} <= failed(result)


def test_an_unsigned_message_has_no_dkim_and_fails(
    rsa_key: DkimKey, ed_key: DkimKey, id_key: IdentityKey
) -> None:
    result = check(sign(MESSAGE, id_key, []), rsa_key, ed_key, id_key)
    assert not result.ok
    assert failed(result) == {"dkim"}
    assert result.dkim == {"result": "none", "domain": DOMAIN, "selector": None}


def test_a_signature_by_another_domain_does_not_count(
    id_key: IdentityKey, rsa_key: DkimKey, ed_key: DkimKey
) -> None:
    foreign = generate_dkim_key("relay.example", "r1", ED25519_SHA256, NOW_MS)
    result = check(sign(MESSAGE, id_key, [foreign]), rsa_key, ed_key, id_key)
    assert result.dkim["result"] == "none"
    assert not result.ok


def test_a_dkim_key_missing_from_dns_or_a_failing_lookup_fails_with_a_reason(
    signed: bytes, id_key: IdentityKey
) -> None:
    missing = verify_message(signed, dns_txt=dns_of(), identity_keys=keys_of(id_key))
    assert missing.dkim["result"] == "fail"
    assert "no DKIM key is published at" in missing.reason

    def broken(fqdn: str) -> str | None:
        raise ResolverError("network down")

    result = verify_message(signed, dns_txt=broken, identity_keys=keys_of(id_key))
    assert not result.ok
    assert "network down" in result.reason


def test_a_wrong_dkim_key_in_dns_fails(signed: bytes, id_key: IdentityKey) -> None:
    wrong = generate_dkim_key(DOMAIN, "mm-ed", ED25519_SHA256, NOW_MS)
    result = verify_message(signed, dns_txt=dns_of(wrong), identity_keys=keys_of(id_key))
    assert result.dkim == {"result": "fail", "domain": DOMAIN, "selector": "mm-rsa"}
    assert failed(result) == {"dkim"}
    assert "s=mm-ed: the DKIM signature does not verify" in result.reason


def test_a_failing_or_garbled_key_lookup_fails_key_known(
    signed: bytes, rsa_key: DkimKey, ed_key: DkimKey
) -> None:
    def broken(mailbox_id: str) -> list[dict[str, object]]:
        raise ResolverError("server down")

    garbled: list[Any] = [{"kty": "OKP", "crv": "Ed25519", "x": "!!"}, "x", {"x": 1}]
    for lookup, why in ((broken, "server down"), (lambda m: garbled, "none an Ed25519 JWK")):
        result = verify_message(signed, dns_txt=dns_of(rsa_key, ed_key), identity_keys=lookup)
        assert not result.ok
        assert "key_known" in failed(result)
        assert why in result.reason


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x00\xff", b"From: a@b.example\r\n\r\n", b"X-MultiMail-Identity: a.b\r\n\r\n"],
)
def test_messages_without_a_claim_fail_without_raising(raw: bytes, id_key: IdentityKey) -> None:
    result = verify_message(raw, dns_txt=dns_of(), identity_keys=keys_of(id_key))
    assert not result.ok
    assert "claim" in failed(result)
    assert result.claim is None
    assert INTERNAL_ERROR not in result.reason


def test_every_corpus_message_fails_cleanly(id_key: IdentityKey) -> None:
    require_corpus()
    for path in corpus_files():
        result = verify_message(path.read_bytes(), dns_txt=dns_of(), identity_keys=keys_of(id_key))
        assert not result.ok, path
        assert INTERNAL_ERROR not in result.reason, (path, result.reason)


# --- lookups --------------------------------------------------------------------------


def mock_server(routes: Mapping[str, tuple[int, object]], seen: list[httpx.URL]) -> httpx.Client:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        status, body = routes.get(request.url.path, (404, {"detail": "not found"}))
        return httpx.Response(status, json=body)

    return httpx.Client(transport=httpx.MockTransport(handle))


def test_server_resolvers_read_the_well_known_endpoints(
    signed: bytes, rsa_key: DkimKey, id_key: IdentityKey
) -> None:
    record = dkim_dns_record(rsa_key)
    seen: list[httpx.URL] = []
    client = mock_server(
        {
            "/.well-known/multimail/dns": (
                200,
                {"name": record["name"], "type": "TXT", "records": [record["value"]]},
            ),
            f"/.well-known/multimail/keys/{MAILBOX}": (
                200,
                {"mailbox_id": MAILBOX, "keys": [jwk(id_key)]},
            ),
        },
        seen,
    )
    dns_txt, identity_keys = server_resolvers("http://mm.test/", client)
    assert dns_txt(record["name"]) == record["value"]
    assert seen[-1].params["name"] == record["name"]
    assert seen[-1].params["type"] == "TXT"
    assert identity_keys(MAILBOX) == [jwk(id_key)]
    assert identity_keys(OTHER_MAILBOX) == []
    assert verify_message(signed, dns_txt=dns_txt, identity_keys=identity_keys).ok


def test_server_resolvers_map_404_to_nothing_and_other_failures_to_resolver_error() -> None:
    seen: list[httpx.URL] = []
    client = mock_server(
        {
            "/.well-known/multimail/dns": (500, {}),
            f"/.well-known/multimail/keys/{MAILBOX}": (200, {"keys": "nope"}),
        },
        seen,
    )
    dns_txt, identity_keys = server_resolvers("http://mm.test", client)
    with pytest.raises(ResolverError, match="HTTP 500"):
        dns_txt("s._domainkey.agents.example")
    with pytest.raises(ResolverError, match="expected"):
        identity_keys(MAILBOX)
    assert server_resolvers("http://mm.test", mock_server({}, seen))[0]("x.example") is None


class FakeResolver:
    """dnspython's Resolver as dns_resolver uses it; ``answers`` maps a name to its
    TXT strings, or to the exception resolving it raises."""

    answers: dict[str, Any] = {}

    lifetime = 0.0

    def resolve(self, name: str, rdtype: str) -> list[Any]:
        answer = self.answers.get(name, dns.resolver.NXDOMAIN())
        if isinstance(answer, Exception):
            raise answer
        return [types.SimpleNamespace(strings=answer)]


def test_dns_resolver_joins_strings_and_maps_absence_to_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    FakeResolver.answers = {
        "s._domainkey.a.example": [b"v=DKIM1; k=rsa; ", b"p=AAAA"],
        "slow.example": dns.exception.Timeout(),
    }
    monkeypatch.setattr(verify_module.dns.resolver, "Resolver", FakeResolver)
    dns_txt = dns_resolver(timeout=1.0)
    assert dns_txt("s._domainkey.a.example") == "v=DKIM1; k=rsa; p=AAAA"
    assert dns_txt("absent.example") is None
    with pytest.raises(ResolverError):
        dns_txt("slow.example")
