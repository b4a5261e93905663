"""Verifying a received message's identity claim and DKIM signature (PRODUCT.md §7,
spec/identity.md §5): the shell gathers identity.Evidence, the core judges it.

Rule 1: verify_message never raises. Malformed bytes, malformed claims, published keys or DNS
        answers, and lookups that raise all become failed checks with a reason.
Rule 2: the claim has no key id, so its signature is tried under every key the mailbox
        publishes; the key that verifies it supplies the revocation time.
Rule 3: the claim binds Message-ID through its ``message_id``; a Message-ID that differs from
        it fails the ``binding`` check, as a changed bound header or body does.
Rule 4: DKIM passes when a DKIM-Signature whose d= is the From domain verifies (dkimpy);
        no such signature is a failure ("none"), and check_dkim=False records "skipped".
Rule 5: lookups come in as functions (``dns_txt``, ``identity_keys``): DNS via dnspython, or
        the records and keys a MultiMail server publishes under /.well-known/multimail/.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import dkim
import dns.exception
import dns.resolver
import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from dkim.util import InvalidTagValueList, parse_tag_value

from multimail.signing import (
    MalformedMessage,
    ParsedMessage,
    from_address,
    header_values,
    message_id_of,
    parse_message,
)
from multimail_core import identity
from multimail_core.errors import InvalidValue

DnsTxt = Callable[[str], str | None]
IdentityKeys = Callable[[str], Sequence[Mapping[str, Any]]]
PUBLIC_KEY_LENGTH = 32
HTTP_TIMEOUT = 10.0
INTERNAL_ERROR = "internal error while verifying"
SKIPPED = ("skipped", None, None, "")
NO_CLAIM = "there is no claim to check"
NEED_A_CLAIM = (
    identity.Check.KEY_KNOWN,
    identity.Check.SIGNATURE,
    identity.Check.BINDING,
    identity.Check.KEY_NOT_REVOKED,
    identity.Check.MAILBOX_MATCHES_FROM,
)


class ResolverError(RuntimeError):
    """A lookup could not be answered (network failure, unexpected status or shape)."""


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    mailbox_id: str | None  # the verified sender; None unless ok
    address: str | None  # the verified sender's address; None unless ok
    claim: dict[str, Any] | None  # the claim's payload when it decodes, even if it fails
    checks: list[dict[str, Any]]  # {"check", "ok", "reason"} for every identity.Check, in order
    dkim: dict[str, str | None]  # {"result": pass|fail|none|skipped, "domain", "selector"}
    reason: str  # "sent by mbx_..." or every failed check with its reason

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "mailbox_id": self.mailbox_id,
            "address": self.address,
            "claim": self.claim,
            "checks": self.checks,
            "dkim": self.dkim,
            "reason": self.reason,
        }


# --- the claim and its key ------------------------------------------------------------


@dataclass(frozen=True)
class _ClaimRead:
    claim: identity.Claim | None
    payload: bytes
    signature: bytes
    problem: str


def _read_claim(message: ParsedMessage) -> _ClaimRead:
    values = header_values(message.headers, identity.HEADER_NAME.lower())
    if len(values) != 1:
        count = "no" if not values else "more than one"
        return _ClaimRead(None, b"", b"", f"{count} {identity.HEADER_NAME} header")
    try:
        payload, signature = identity.decode_header(values[0])
        return _ClaimRead(identity.parse_payload(payload), payload, signature, "")
    except InvalidValue as exc:
        return _ClaimRead(None, b"", b"", exc.detail)


@dataclass(frozen=True)
class _PublishedKey:
    kid: str
    public_key: ed25519.Ed25519PublicKey
    revoked_at: int | None  # seconds


def _published_key(doc: object) -> _PublishedKey | None:
    """A JWK as ``signing.jwk`` writes it, or None when it is not one."""
    if not isinstance(doc, Mapping) or (doc.get("kty"), doc.get("crv")) != ("OKP", "Ed25519"):
        return None
    x, revoked = doc.get("x"), doc.get("revoked_at")
    if not isinstance(x, str) or not (revoked is None or type(revoked) is int):
        return None
    try:
        raw = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) != PUBLIC_KEY_LENGTH:
        return None
    kid = doc.get("kid")
    try:
        public = ed25519.Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        return None
    return _PublishedKey(kid if isinstance(kid, str) else "", public, revoked)


def _published_keys(lookup: IdentityKeys, mailbox_id: str) -> tuple[list[_PublishedKey], str]:
    try:
        docs = list(lookup(mailbox_id))
    except Exception as exc:  # Rule 1: a failing lookup is a failed check, not a crash
        return [], f"identity key lookup failed: {type(exc).__name__}: {exc}"
    keys = [key for doc in docs if (key := _published_key(doc)) is not None]
    if docs and not keys:
        return [], f"{len(docs)} published key(s) for {mailbox_id}, none an Ed25519 JWK"
    return keys, "" if keys else f"no identity key is published for {mailbox_id}"


def _signing_key(keys: Sequence[_PublishedKey], read: _ClaimRead) -> _PublishedKey | None:
    for key in keys:
        try:
            key.public_key.verify(read.signature, read.payload)
        except InvalidSignature:
            continue
        return key
    return None


def _binding(message: ParsedMessage, claim: identity.Claim) -> tuple[bool, str]:
    if identity.binding_hash(message.headers, message.body) != claim.binding:
        return False, "the headers or body differ from what the claim binds"
    if message_id_of(message.headers) != claim.message_id:
        return False, "the Message-ID is not the claim's message_id"
    return True, ""


# --- DKIM -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _DkimOutcome:
    result: str  # pass | fail | none | skipped
    domain: str | None
    selector: str | None
    reason: str

    @property
    def passed(self) -> bool | None:
        return None if self.result == "skipped" else self.result == "pass"


class _DnsFunc:
    """dkimpy's ``dnsfunc(name: bytes, timeout) -> bytes | None`` over ``dns_txt(fqdn)``,
    remembering what went wrong for the report."""

    def __init__(self, dns_txt: DnsTxt) -> None:
        self._dns_txt = dns_txt
        self.problem = ""

    def __call__(self, name: bytes, timeout: float = 5) -> bytes | None:
        fqdn = name.decode("ascii", "replace").rstrip(".")
        try:
            answer = self._dns_txt(fqdn)
        except Exception as exc:  # Rule 1
            self.problem = f"DKIM key lookup for {fqdn} failed: {type(exc).__name__}: {exc}"
            return None
        if answer is None:
            self.problem = f"no DKIM key is published at {fqdn}"
            return None
        return answer.encode("utf-8", "replace")


def _aligned_signatures(verifier: dkim.DKIM, domain: str) -> list[tuple[int, str]]:
    """(index among DKIM-Signature fields, selector) of every signature with d=domain."""
    found = []
    signatures = [v for n, v in verifier.headers if n.lower() == b"dkim-signature"]
    for index, value in enumerate(signatures):
        try:
            tags = parse_tag_value(value)
        except InvalidTagValueList:
            continue
        d = tags.get(b"d", b"").decode("ascii", "replace").strip().lower()
        if d == domain:
            found.append((index, tags.get(b"s", b"").decode("ascii", "replace").strip()))
    return found


def _verify_one(verifier: dkim.DKIM, index: int, dns_txt: DnsTxt) -> str:
    """'' when signature ``index`` verifies, else why not."""
    lookup = _DnsFunc(dns_txt)
    try:
        if verifier.verify(idx=index, dnsfunc=lookup):
            return ""
    except Exception as exc:  # dkimpy on hostile input raises more than DKIMException
        return f"{type(exc).__name__}: {exc}"
    return lookup.problem or "the DKIM signature does not verify"


def _check_dkim(raw: bytes, from_domain: str | None, dns_txt: DnsTxt) -> _DkimOutcome:
    if from_domain is None:
        return _DkimOutcome("none", None, None, "no From address to align DKIM with")
    try:
        verifier = dkim.DKIM(raw, minkey=1024)
    except Exception as exc:  # Rule 1: dkimpy's parser on hostile bytes
        return _DkimOutcome("fail", from_domain, None, f"{type(exc).__name__}: {exc}")
    aligned = _aligned_signatures(verifier, from_domain)
    if not aligned:
        return _DkimOutcome("none", from_domain, None, f"no DKIM-Signature with d={from_domain}")
    problems = []
    for index, selector in aligned:
        problem = _verify_one(verifier, index, dns_txt)
        if not problem:
            return _DkimOutcome("pass", from_domain, selector, "")
        problems.append(f"s={selector}: {problem}")
    return _DkimOutcome("fail", from_domain, aligned[0][1], "; ".join(problems))


# --- the verdict ----------------------------------------------------------------------


def _report(
    verdict: identity.Verdict, reasons: Mapping[identity.Check, str]
) -> list[dict[str, Any]]:
    return [
        {
            "check": check.value,
            "ok": check not in verdict.failed,
            "reason": "" if check not in verdict.failed else (reasons.get(check) or why),
        }
        for check, _, why in identity.CHECKS
    ]


def _result(
    evidence: identity.Evidence,
    reasons: Mapping[identity.Check, str],
    dkim_outcome: _DkimOutcome,
    payload: bytes,
) -> VerifyResult:
    verdict = identity.judge(evidence)
    checks = _report(verdict, reasons)
    failed = [f"{c['check']}: {c['reason']}" for c in checks if c["reason"] not in ("", NO_CLAIM)]
    return VerifyResult(
        ok=verdict.ok,
        mailbox_id=verdict.mailbox_id,
        address=evidence.claim.address if verdict.ok and evidence.claim else None,
        claim=json.loads(payload) if evidence.claim is not None else None,
        checks=checks,
        dkim={
            "result": dkim_outcome.result,
            "domain": dkim_outcome.domain,
            "selector": dkim_outcome.selector,
        },
        reason=verdict.reason if verdict.ok else "; ".join(failed),
    )


def _failure(problem: str, check_dkim: bool) -> VerifyResult:
    """The result for bytes that could not be examined at all."""
    outcome = _DkimOutcome(*(("fail", None, None, problem) if check_dkim else SKIPPED))
    evidence = identity.Evidence(
        signature_valid=False,
        binding_matches=False,
        key_found=False,
        key_revoked_at=None,
        claim=None,
        from_address=None,
        dkim_pass=outcome.passed,
    )
    reasons = _claim_reasons(_ClaimRead(None, b"", b"", problem), None, None)
    return _result(evidence, reasons | {identity.Check.DKIM: problem}, outcome, b"")


def _claim_reasons(
    read: _ClaimRead, signer: _PublishedKey | None, sender: str | None
) -> dict[identity.Check, str]:
    """The specific reason for each check that may fail, beyond the core's generic one."""
    claim = read.claim
    if claim is None:
        return {identity.Check.CLAIM: read.problem} | dict.fromkeys(NEED_A_CLAIM, NO_CLAIM)
    reasons = {
        identity.Check.MAILBOX_MATCHES_FROM: (
            f"the claim's address {claim.address} is not the From address {sender}"
        )
    }
    if signer is not None and signer.revoked_at is not None:
        reasons[identity.Check.KEY_NOT_REVOKED] = (
            f"identity key {signer.kid} was revoked at {signer.revoked_at}, "
            f"at or before the claim's iat {claim.issued_at}"
        )
    return reasons


def _verify(
    raw: bytes, dns_txt: DnsTxt, identity_keys: IdentityKeys, check_dkim: bool
) -> VerifyResult:
    try:
        message = parse_message(raw)
    except MalformedMessage as exc:
        return _failure(f"malformed message: {exc}", check_dkim)
    read = _read_claim(message)
    sender = from_address(message.headers)
    keys: list[_PublishedKey] = []
    signer: _PublishedKey | None = None
    binding_ok, binding_problem, keys_problem = False, "", ""
    if read.claim is not None:
        keys, keys_problem = _published_keys(identity_keys, read.claim.mailbox_id)
        signer = _signing_key(keys, read)
        binding_ok, binding_problem = _binding(message, read.claim)
    domain = None if sender is None else sender.partition("@")[2]
    outcome = _check_dkim(raw, domain, dns_txt) if check_dkim else _DkimOutcome(*SKIPPED)
    reasons = _claim_reasons(read, signer, sender)
    if read.claim is not None:
        reasons[identity.Check.KEY_KNOWN] = keys_problem
        reasons[identity.Check.BINDING] = binding_problem
    reasons[identity.Check.DKIM] = outcome.reason
    evidence = identity.Evidence(
        signature_valid=signer is not None,
        binding_matches=binding_ok,
        key_found=bool(keys),
        key_revoked_at=None if signer is None else signer.revoked_at,
        claim=read.claim,
        from_address=sender,
        dkim_pass=outcome.passed,
    )
    return _result(evidence, reasons, outcome, read.payload)


def verify_message(
    raw: bytes,
    *,
    dns_txt: DnsTxt,
    identity_keys: IdentityKeys,
    check_dkim: bool = True,
) -> VerifyResult:
    """Verify ``raw``'s identity claim, binding and (unless ``check_dkim`` is False) DKIM.

    ``dns_txt(fqdn)`` returns a TXT record's text or None; ``identity_keys(mailbox_id)``
    returns the mailbox's published JWKs, [] when unknown. Never raises (Rule 1).
    """
    try:
        return _verify(raw, dns_txt, identity_keys, check_dkim)
    except Exception as exc:  # Rule 1's last line; tests assert it is never reached
        return _failure(f"{INTERNAL_ERROR}: {type(exc).__name__}: {exc}", check_dkim)


# --- lookups --------------------------------------------------------------------------


def dns_resolver(timeout: float = 5.0) -> DnsTxt:
    """``dns_txt`` over the system's resolvers (dnspython): the first TXT record's strings
    joined (RFC 6376 §3.6.2.2), None when the name or record does not exist.

    The returned function raises ResolverError when no resolver is configured, on timeouts
    and on server failures."""

    def dns_txt(fqdn: str) -> str | None:
        try:
            resolver = dns.resolver.Resolver()
            resolver.lifetime = timeout
            answer = resolver.resolve(fqdn, "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except dns.exception.DNSException as exc:
            raise ResolverError(f"TXT {fqdn}: {type(exc).__name__}: {exc}") from exc
        for record in answer:
            return b"".join(record.strings).decode("utf-8", "replace")
        return None

    return dns_txt


def _get_json(client: httpx.Client | None, url: str, params: Mapping[str, str]) -> Any:
    """The JSON body of GET ``url``; None on 404.

    :raises ResolverError: on a transport error, another non-2xx status or a non-JSON body.
    """
    try:
        if client is None:
            response = httpx.get(url, params=params, timeout=HTTP_TIMEOUT)
        else:
            response = client.get(url, params=params)
    except httpx.HTTPError as exc:
        raise ResolverError(f"GET {url}: {type(exc).__name__}: {exc}") from exc
    if response.status_code == httpx.codes.NOT_FOUND:
        return None
    if not response.is_success:
        raise ResolverError(f"GET {url}: HTTP {response.status_code}")
    try:
        return response.json()
    except ValueError as exc:
        raise ResolverError(f"GET {url}: the body is not JSON") from exc


def _shape_error(url: str, what: str) -> ResolverError:
    return ResolverError(f"GET {url}: expected {what}")


def server_resolvers(
    base_url: str, client: httpx.Client | None = None
) -> tuple[DnsTxt, IdentityKeys]:
    """``(dns_txt, identity_keys)`` answered by a MultiMail server's public endpoints:
    ``GET /.well-known/multimail/dns?name=FQDN&type=TXT`` → ``{"records": [str, ...]}`` (the
    first record is the answer) and ``GET /.well-known/multimail/keys/{mailbox_id}`` →
    ``{"keys": [jwk, ...]}``; a 404 means no record / no keys.

    The returned functions raise ResolverError on other failures."""
    root = base_url.rstrip("/") + "/.well-known/multimail"

    def dns_txt(fqdn: str) -> str | None:
        url = f"{root}/dns"
        body = _get_json(client, url, {"name": fqdn, "type": "TXT"})
        if body is None:
            return None
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list) or not all(isinstance(r, str) for r in records):
            raise _shape_error(url, '{"records": [str, ...]}')
        return records[0] if records else None

    def identity_keys(mailbox_id: str) -> Sequence[Mapping[str, Any]]:
        url = f"{root}/keys/{quote(mailbox_id, safe='')}"
        body = _get_json(client, url, {})
        if body is None:
            return []
        keys = body.get("keys") if isinstance(body, dict) else None
        if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
            raise _shape_error(url, '{"keys": [jwk, ...]}')
        return keys

    return dns_txt, identity_keys
