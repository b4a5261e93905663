"""Sender-authentication signals: DKIM, SPF and DMARC from canned DNS (no network).

Every DNS answer comes from a StaticResolver table, except the SystemResolver tests, which
talk to a tiny DNS responder on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from multimail.signals import (
    MAX_DKIM_SIGNATURES,
    DnsTempError,
    Signals,
    StaticResolver,
    SystemResolver,
    authenticate,
    normalize_domain,
    organizational_domain,
    parse_dmarc,
)
from tests.corpus import corpus_files, require_corpus
from tests.dns_responder import Responder

_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE_PEM = _KEY.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.TraditionalOpenSSL,
    serialization.NoEncryption(),
)
KEY_TXT = "v=DKIM1; k=rsa; p=" + base64.b64encode(
    _KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode("ascii")

MSG = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: agent@agents.test\r\n"
    b"Subject: hello\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"\r\n"
    b"Hello there.\r\n"
)

DKIM_RESULTS = {"pass", "fail", "none", "temperror", "permerror"}
SPF_RESULTS = {"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror", "skipped"}
DMARC_RESULTS = {"pass", "fail", "none", "temperror"}


def sign(message: bytes, *, domain: str = "example.com", selector: str = "sel") -> bytes:
    header = dkim.sign(
        message,
        selector.encode(),
        domain.encode(),
        PRIVATE_PEM,
        include_headers=[b"from", b"to", b"subject", b"message-id"],
    )
    return header + message


def key_record(domain: str = "example.com", selector: str = "sel") -> dict:
    return {(f"{selector}._domainkey.{domain}", "TXT"): [KEY_TXT]}


def check(
    raw: bytes,
    records: dict | None = None,
    *,
    client_ip: str | None = None,
    mail_from: str = "alice@example.com",
    helo: str | None = "mx.example.com",
    temp_failures: tuple = (),
) -> Signals:
    resolver = StaticResolver(records or {}, temp_failures=temp_failures)
    return authenticate(raw, client_ip=client_ip, helo=helo, mail_from=mail_from, resolver=resolver)


# --- DKIM --------------------------------------------------------------------------------


def test_dkim_signature_with_published_key_passes() -> None:
    signals = check(sign(MSG), key_record())
    assert signals.dkim == "pass"
    assert signals.dkim_domains == ("example.com",)


def test_dkim_tampered_body_fails() -> None:
    raw = sign(MSG).replace(b"Hello there.", b"Hello there!")
    signals = check(raw, key_record())
    assert signals.dkim == "fail"
    assert signals.dkim_domains == ()


def test_dkim_tampered_signed_header_fails() -> None:
    raw = sign(MSG).replace(b"Subject: hello", b"Subject: wire the money")
    assert check(raw, key_record()).dkim == "fail"


def test_dkim_unsigned_message_is_none() -> None:
    signals = check(MSG, key_record())
    assert signals.dkim == "none"
    assert signals.dkim_domains == ()


def test_dkim_dns_temporary_failure_is_temperror() -> None:
    signals = check(sign(MSG), temp_failures=(("sel._domainkey.example.com", "TXT"),))
    assert signals.dkim == "temperror"


def test_dkim_unpublished_key_is_permerror() -> None:
    assert check(sign(MSG), {}).dkim == "permerror"


def test_dkim_malformed_signature_header_is_permerror() -> None:
    raw = b"DKIM-Signature: this is not a tag list\r\n" + MSG
    assert check(raw, key_record()).dkim == "permerror"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"DKIM-Signature: v=1; d=example.com\r\nno colon here\r\n\r\nbody\r\n", "permerror"),
        (b"Subject: x\r\nno colon here\r\n\r\nDKIM-Signature: v=1\r\n", "none"),
    ],
)
def test_dkim_unparsable_header_block(raw: bytes, expected: str) -> None:
    assert check(raw, key_record()).dkim == expected


def test_dkim_reports_only_domains_whose_signature_passes() -> None:
    raw = sign(sign(MSG), domain="relay.test")  # relay.test publishes no key
    signals = check(raw, key_record())
    assert signals.dkim == "pass"
    assert signals.dkim_domains == ("example.com",)


def _buried(valid_position: int) -> tuple[bytes, dict]:
    """A valid signature with ``valid_position - 1`` unverifiable ones above it."""
    raw = sign(MSG)
    for i in range(valid_position - 1):
        raw = sign(raw, selector=f"junk{i}")
    return raw, key_record()


def test_dkim_checks_a_valid_signature_within_the_cap() -> None:
    raw, records = _buried(MAX_DKIM_SIGNATURES)
    assert check(raw, records).dkim == "pass"


def test_dkim_ignores_signatures_beyond_the_cap() -> None:
    raw, records = _buried(MAX_DKIM_SIGNATURES + 1)
    resolver = StaticResolver(records)
    signals = authenticate(
        raw, client_ip=None, helo=None, mail_from="alice@example.com", resolver=resolver
    )
    assert signals.dkim == "permerror"
    key_lookups = [q for q in resolver.queries if "._domainkey." in q[0]]
    assert len(key_lookups) == MAX_DKIM_SIGNATURES


# --- SPF ---------------------------------------------------------------------------------

SPF_STRICT = {("example.com", "TXT"): ["google-site-verification=abc", "v=spf1 ip4:127.0.0.1 -all"]}


def test_spf_listed_ip_passes() -> None:
    signals = check(MSG, SPF_STRICT, client_ip="127.0.0.1")
    assert (signals.spf, signals.spf_domain) == ("pass", "example.com")


def test_spf_unlisted_ip_fails() -> None:
    assert check(MSG, SPF_STRICT, client_ip="10.0.0.1").spf == "fail"


def test_spf_tilde_all_softfails() -> None:
    records = {("example.com", "TXT"): ["v=spf1 ip4:127.0.0.1 ~all"]}
    assert check(MSG, records, client_ip="10.0.0.1").spf == "softfail"


def test_spf_question_all_is_neutral() -> None:
    records = {("example.com", "TXT"): ["v=spf1 ?all"]}
    assert check(MSG, records, client_ip="10.0.0.1").spf == "neutral"


INCLUDE_CHAIN = {
    ("example.com", "TXT"): ["v=spf1 include:_spf.example.net -all"],
    ("_spf.example.net", "TXT"): ["v=spf1 include:_spf2.example.net -all"],
    ("_spf2.example.net", "TXT"): ["v=spf1 ip4:192.0.2.0/24 -all"],
}


@pytest.mark.parametrize(("ip", "expected"), [("192.0.2.77", "pass"), ("198.51.100.1", "fail")])
def test_spf_follows_include_chains(ip: str, expected: str) -> None:
    assert check(MSG, INCLUDE_CHAIN, client_ip=ip).spf == expected


def test_spf_mx_and_aaaa_answers_are_understood() -> None:
    records = {
        ("example.com", "TXT"): ["v=spf1 mx a:v6.example.com -all"],
        ("example.com", "MX"): ["10 mx1.example.com.", "20 mx2.example.com"],
        ("mx2.example.com", "A"): ["203.0.113.5"],
        ("v6.example.com", "AAAA"): ["2001:db8::25"],
    }
    assert check(MSG, records, client_ip="203.0.113.5").spf == "pass"
    assert check(MSG, records, client_ip="2001:db8::25").spf == "pass"
    assert check(MSG, records, client_ip="203.0.113.6").spf == "fail"


def test_spf_without_record_is_none() -> None:
    assert check(MSG, {}, client_ip="127.0.0.1").spf == "none"


def test_spf_without_client_ip_is_skipped_and_asks_no_dns() -> None:
    resolver = StaticResolver(SPF_STRICT)
    signals = authenticate(
        MSG, client_ip=None, helo="mx.example.com", mail_from="a@example.com", resolver=resolver
    )
    assert signals.spf == "skipped"
    assert ("example.com", "TXT") not in resolver.queries


def test_spf_temporary_failure_is_temperror() -> None:
    signals = check(MSG, client_ip="127.0.0.1", temp_failures=(("example.com", "TXT"),))
    assert signals.spf == "temperror"


def test_spf_broken_record_is_permerror() -> None:
    records = {("example.com", "TXT"): ["v=spf1 ip4:127.0.0.999 -all"]}
    assert check(MSG, records, client_ip="127.0.0.1").spf == "permerror"


def test_spf_null_sender_checks_the_helo_name() -> None:
    records = {("mx.example.com", "TXT"): ["v=spf1 ip4:127.0.0.1 -all"]}
    signals = check(MSG, records, client_ip="127.0.0.1", mail_from="", helo="mx.example.com")
    assert (signals.spf, signals.spf_domain) == ("pass", "mx.example.com")


def test_spf_invalid_client_ip_is_permerror() -> None:
    assert check(MSG, SPF_STRICT, client_ip="not-an-ip").spf == "permerror"


# --- DMARC -------------------------------------------------------------------------------


def dmarc(domain: str, record: str) -> dict:
    return {(f"_dmarc.{domain}", "TXT"): [record]}


def test_dmarc_aligned_dkim_passes() -> None:
    signals = check(sign(MSG), key_record() | dmarc("example.com", "v=DMARC1; p=reject"))
    assert (signals.dmarc, signals.dmarc_policy) == ("pass", "reject")
    assert signals.from_domain == "example.com"


def test_dmarc_relaxed_dkim_alignment_accepts_a_subdomain_signature() -> None:
    raw = sign(MSG, domain="mail.example.com")
    records = key_record("mail.example.com")
    assert check(raw, records | dmarc("example.com", "v=DMARC1; p=reject")).dmarc == "pass"
    strict = dmarc("example.com", "v=DMARC1; p=reject; adkim=s")
    assert check(raw, records | strict).dmarc == "fail"


def test_dmarc_unaligned_spf_pass_without_dkim_fails_with_the_policy() -> None:
    records = {("bulk.test", "TXT"): ["v=spf1 ip4:127.0.0.1 -all"]}
    records |= dmarc("example.com", "v=DMARC1; p=quarantine")
    signals = check(MSG, records, client_ip="127.0.0.1", mail_from="bounce@bulk.test")
    assert signals.spf == "pass"
    assert (signals.dmarc, signals.dmarc_policy) == ("fail", "quarantine")


def test_dmarc_aligned_spf_pass_passes_relaxed_but_not_strict() -> None:
    records = {("bounces.example.com", "TXT"): ["v=spf1 ip4:127.0.0.1 -all"]}
    kw = {"client_ip": "127.0.0.1", "mail_from": "b@bounces.example.com"}
    relaxed = records | dmarc("example.com", "v=DMARC1; p=reject")
    assert check(MSG, relaxed, **kw).dmarc == "pass"
    strict = records | dmarc("example.com", "v=DMARC1; p=reject; aspf=s")
    assert check(MSG, strict, **kw).dmarc == "fail"


def test_dmarc_falls_back_to_the_organizational_domain_and_uses_sp() -> None:
    raw = MSG.replace(b"alice@example.com", b"alice@news.example.co.uk")
    resolver = StaticResolver(dmarc("example.co.uk", "v=DMARC1; p=reject; sp=quarantine"))
    signals = authenticate(raw, client_ip=None, helo=None, mail_from="", resolver=resolver)
    assert signals.from_domain == "news.example.co.uk"
    assert (signals.dmarc, signals.dmarc_policy) == ("fail", "quarantine")
    dmarc_queries = [name for name, _ in resolver.queries if name.startswith("_dmarc.")]
    assert dmarc_queries == ["_dmarc.news.example.co.uk", "_dmarc.example.co.uk"]


def test_dmarc_subdomain_without_sp_inherits_p() -> None:
    raw = MSG.replace(b"alice@example.com", b"alice@news.example.com")
    signals = check(raw, dmarc("example.com", "v=DMARC1; p=reject"))
    assert (signals.dmarc, signals.dmarc_policy) == ("fail", "reject")


def test_dmarc_own_record_wins_over_the_organizational_one() -> None:
    raw = MSG.replace(b"alice@example.com", b"alice@news.example.com")
    records = dmarc("news.example.com", "v=DMARC1; p=none") | dmarc(
        "example.com", "v=DMARC1; p=reject; sp=reject"
    )
    assert check(raw, records).dmarc_policy == "none"


def test_dmarc_without_record_is_none() -> None:
    signals = check(sign(MSG), key_record())
    assert (signals.dmarc, signals.dmarc_policy) == ("none", None)


def test_dmarc_two_records_mean_no_policy() -> None:
    records = {("_dmarc.example.com", "TXT"): ["v=DMARC1; p=reject", "v=DMARC1; p=none"]}
    assert check(MSG, records).dmarc == "none"


def test_dmarc_dns_temporary_failure_is_temperror() -> None:
    signals = check(sign(MSG), key_record(), temp_failures=(("_dmarc.example.com", "TXT"),))
    assert signals.dkim == "pass"
    assert signals.dmarc == "temperror"


def test_dmarc_undecided_dkim_is_temperror_not_fail() -> None:
    records = dmarc("example.com", "v=DMARC1; p=reject")
    failing = (("sel._domainkey.example.com", "TXT"),)
    assert check(sign(MSG), records, temp_failures=failing).dmarc == "temperror"


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("v=DMARC1; p=reject", "reject"),
        ("v=DMARC1;p=Quarantine;sp=none", "quarantine"),
        ("v=DMARC1; p=bogus; rua=mailto:d@example.com", "none"),  # RFC 7489 §6.6.3 step 6
        ("v=DMARC1; p=bogus", None),
        ("v=DMARC1; rua=ftp://x", None),
    ],
)
def test_parse_dmarc(text: str, policy: str | None) -> None:
    record = parse_dmarc(text)
    assert (record.p if record else None) == policy


@pytest.mark.parametrize(
    ("domain", "org"),
    [
        ("example.com", "example.com"),
        ("a.b.example.com", "example.com"),
        ("mail.example.co.uk", "example.co.uk"),
        ("example.co.uk", "example.co.uk"),
        ("x.example.com.au", "example.com.au"),
        ("x.example.ac.jp", "example.ac.jp"),
        ("x.co.example", "co.example"),  # "example" is not a two-letter TLD
    ],
)
def test_organizational_domain_heuristic(domain: str, org: str) -> None:
    assert organizational_domain(domain) == org


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Example.COM.", "example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("localhost", None),
        ("[192.0.2.1]", None),
        ("192.0.2.1", None),
        ("bad..example", None),
    ],
)
def test_normalize_domain(text: str, expected: str | None) -> None:
    assert normalize_domain(text) == expected


# --- the whole ---------------------------------------------------------------------------


def test_to_dict_is_json() -> None:
    signals = check(sign(MSG), key_record() | SPF_STRICT, client_ip="127.0.0.1")
    data = json.loads(json.dumps(signals.to_dict()))
    assert data == {
        "dkim": "pass",
        "dkim_domains": ["example.com"],
        "spf": "pass",
        "spf_domain": "example.com",
        "dmarc": "none",
        "dmarc_policy": None,
        "from_domain": "example.com",
    }


def test_no_lookup_starts_after_the_budget_is_spent() -> None:
    records = key_record() | SPF_STRICT | dmarc("example.com", "v=DMARC1; p=reject")
    times = iter([0.0])  # the start; every later reading is past the deadline

    def clock() -> float:
        return next(times, 100.0)

    resolver = StaticResolver(records)
    signals = authenticate(
        sign(MSG),
        client_ip="127.0.0.1",
        helo=None,
        mail_from="alice@example.com",
        resolver=resolver,
        budget=5.0,
        clock=clock,
    )
    assert (signals.dkim, signals.spf, signals.dmarc) == ("temperror", "temperror", "temperror")
    assert resolver.queries == []


class ExplodingResolver:
    def txt(self, name: str) -> list[str] | None:
        raise RuntimeError("resolver bug")

    def lookup(self, name: str, rtype: str) -> list[str] | None:
        raise RuntimeError("resolver bug")


def test_a_broken_resolver_never_escapes() -> None:
    signals = authenticate(
        sign(MSG),
        client_ip="127.0.0.1",
        helo="mx.example.com",
        mail_from="alice@example.com",
        resolver=ExplodingResolver(),
    )
    assert signals.dkim == "permerror"
    assert signals.spf == "permerror"
    assert signals.dmarc == "temperror"
    assert signals.from_domain == "example.com"


def assert_well_formed(signals: Signals) -> None:
    assert signals.dkim in DKIM_RESULTS
    assert signals.spf in SPF_RESULTS
    assert signals.dmarc in DMARC_RESULTS
    assert signals.dmarc_policy in {None, "none", "quarantine", "reject"}
    json.dumps(signals.to_dict())


@settings(max_examples=150, deadline=None)
@given(
    raw=st.binary(max_size=3000),
    client_ip=st.sampled_from([None, "127.0.0.1", "::1", "300.1.1.1", ""]),
    mail_from=st.text(max_size=40),
    helo=st.none() | st.text(max_size=30),
)
def test_random_bytes_never_raise(
    raw: bytes, client_ip: str | None, mail_from: str, helo: str | None
) -> None:
    records = key_record() | SPF_STRICT | dmarc("example.com", "v=DMARC1; p=reject")
    assert_well_formed(check(raw, records, client_ip=client_ip, mail_from=mail_from, helo=helo))


_header_line = st.sampled_from(
    [b"From: ", b"DKIM-Signature: ", b"To: ", b"Subject: ", b"From:", b" ", b"\t"]
).flatmap(lambda name: st.binary(max_size=120).map(lambda value: name + value + b"\r\n"))


@settings(max_examples=150, deadline=None)
@given(
    headers=st.lists(_header_line, max_size=8),
    body=st.binary(max_size=200),
    spf_text=st.text(max_size=80),
    dmarc_text=st.text(max_size=80),
    key_text=st.text(max_size=80),
)
def test_hostile_headers_and_records_never_raise(
    headers: list[bytes], body: bytes, spf_text: str, dmarc_text: str, key_text: str
) -> None:
    raw = sign(MSG) + b"".join(headers) + b"\r\n" + body
    records = {
        ("example.com", "TXT"): ["v=spf1 " + spf_text],
        ("_dmarc.example.com", "TXT"): ["v=DMARC1; " + dmarc_text],
        ("sel._domainkey.example.com", "TXT"): [key_text],
    }
    assert_well_formed(check(raw, records, client_ip="127.0.0.1"))


def test_every_corpus_message_yields_signals() -> None:
    require_corpus()
    for path in corpus_files():
        assert_well_formed(check(path.read_bytes(), {}, client_ip="127.0.0.1"))


# --- SystemResolver against a responder on 127.0.0.1 ---------------------------------------


ZONE = {
    ("example.com", "TXT"): ['"v=spf1 ip4:127.0.0.1 " "-all"'],
    ("example.com", "MX"): ["10 mx.example.com."],
    ("mx.example.com", "A"): ["192.0.2.25"],
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def responder() -> Iterator[Responder]:
    server = Responder(ZONE, servfail={("broken.example.com", "TXT")})
    yield server
    server.sock.close()


def test_system_resolver_answers_in_presentation_form(responder: Responder) -> None:
    resolver = SystemResolver(1.0, nameservers=["127.0.0.1"], port=responder.port)
    assert resolver.txt("example.com") == ["v=spf1 ip4:127.0.0.1 -all"]
    assert resolver.lookup("example.com.", "MX") == ["10 mx.example.com"]
    assert resolver.lookup("MX.example.com", "A") == ["192.0.2.25"]
    assert resolver.lookup("example.com", "A") is None  # no data
    assert resolver.txt("nowhere.example.com") is None  # NXDOMAIN


def test_system_resolver_caches_until_the_ttl_runs_out(responder: Responder) -> None:
    clock = FakeClock()
    resolver = SystemResolver(1.0, nameservers=["127.0.0.1"], port=responder.port, clock=clock)
    resolver.txt("example.com")
    resolver.txt("example.com")
    resolver.txt("nowhere.example.com")
    resolver.txt("nowhere.example.com")
    assert responder.hits[("example.com", "TXT")] == 1
    assert responder.hits[("nowhere.example.com", "TXT")] == 1
    clock.now = 61.0
    resolver.txt("example.com")
    assert responder.hits[("example.com", "TXT")] == 2


def test_system_resolver_servfail_is_a_temporary_error_and_not_cached(
    responder: Responder,
) -> None:
    resolver = SystemResolver(1.0, nameservers=["127.0.0.1"], port=responder.port)
    for _ in range(2):
        with pytest.raises(DnsTempError):
            resolver.txt("broken.example.com")
    assert responder.hits[("broken.example.com", "TXT")] == 2


def test_system_resolver_silence_is_a_temporary_error() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        resolver = SystemResolver(0.2, nameservers=["127.0.0.1"], port=silent.getsockname()[1])
        with pytest.raises(DnsTempError):
            resolver.txt("example.com")
    finally:
        silent.close()


def test_authenticate_over_the_system_resolver(responder: Responder) -> None:
    resolver = SystemResolver(1.0, nameservers=["127.0.0.1"], port=responder.port)
    signals = authenticate(
        MSG, client_ip="127.0.0.1", helo=None, mail_from="a@example.com", resolver=resolver
    )
    assert (signals.spf, signals.dkim, signals.dmarc) == ("pass", "none", "none")
