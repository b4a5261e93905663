"""Address syntax: what is accepted, what is refused and why, plus-addressing, allowlists."""

from __future__ import annotations

import pytest

from multimail_core.addresses import (
    Address,
    all_allowlisted,
    base,
    has_header_breaking_chars,
    is_valid_domain,
    is_valid_local_part,
    matches_allowlist,
    parse_address,
    tag,
    validate_allowlist_pattern,
)
from multimail_core.errors import InvalidAddress, InvalidValue


def domain_of_length(n: int) -> str:
    """A valid domain of exactly ``n`` octets: 63-octet labels, then a shorter one, then .com."""
    labels: list[str] = []
    remaining = n - len(".com")
    while remaining > 0:
        size = min(63, remaining)
        if remaining - size == 1:  # a lone dot cannot be followed by an empty label
            size -= 1
        labels.append("a" * size)
        remaining -= size + 1
    domain = ".".join(labels) + ".com"
    assert len(domain) == n
    return domain


# --- accepted ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "local", "domain"),
    [
        ("agent@example.com", "agent", "example.com"),
        ("Agent.Smith@Example.COM", "Agent.Smith", "example.com"),
        ("a@b.co", "a", "b.co"),
        ("x+tag@agents.localhost", "x+tag", "agents.localhost"),
        ("!#$%&'*+-/=?^_`{|}~@example.org", "!#$%&'*+-/=?^_`{|}~", "example.org"),
        ("first.middle.last@mail.example.com", "first.middle.last", "mail.example.com"),
        ("a@my-host.example", "a", "my-host.example"),
        ("a@123.example", "a", "123.example"),
        ("a@bücher.example", "a", "xn--bcher-kva.example"),
        ("a@BÜCHER.example", "a", "xn--bcher-kva.example"),
        ("a@xn--bcher-kva.example", "a", "xn--bcher-kva.example"),
        ("a@XN--BCHER-KVA.Example", "a", "xn--bcher-kva.example"),
        ("a@bücher。example", "a", "xn--bcher-kva.example"),  # RFC 3490 §3.1 full stop
        ("a@bu\u0308cher.example", "a", "xn--bcher-kva.example"),  # NFC first
        ("a@straße.de", "a", "strasse.de"),  # IDNA 2003 maps ß to ss (documented)
    ],
)
def test_parses(text: str, local: str, domain: str) -> None:
    address = parse_address(text)
    assert (address.local, address.domain) == (local, domain)
    assert str(address) == f"{local}@{domain}"


def test_local_part_of_64_octets_is_accepted_and_65_refused() -> None:
    assert parse_address("a" * 64 + "@example.com").local == "a" * 64
    with pytest.raises(InvalidAddress, match="longer than 64"):
        parse_address("a" * 65 + "@example.com")


def test_address_of_254_octets_is_accepted_and_255_refused() -> None:
    local = "a" * 64
    ok = f"{local}@{domain_of_length(254 - 65)}"
    assert len(ok) == 254
    assert str(parse_address(ok)) == ok
    too_long = f"{local}@{domain_of_length(255 - 65)}"
    assert len(too_long) == 255
    with pytest.raises(InvalidAddress, match="address longer than 254"):
        parse_address(too_long)


def test_domain_of_253_octets_is_valid_and_254_is_not() -> None:
    assert is_valid_domain(domain_of_length(253))
    assert not is_valid_domain(domain_of_length(254))
    with pytest.raises(InvalidAddress, match="domain longer than 253"):
        parse_address("a@" + domain_of_length(254))


def test_label_of_63_octets_is_accepted_and_64_refused() -> None:
    assert parse_address(f"a@{'b' * 63}.com").domain == "b" * 63 + ".com"
    with pytest.raises(InvalidAddress, match="label longer than 63"):
        parse_address(f"a@{'b' * 64}.com")


def test_local_part_keeps_case_and_normalized_lowers_it() -> None:
    address = parse_address("Bob.Smith@EXAMPLE.com")
    assert address.local == "Bob.Smith"
    assert address.normalized() == "bob.smith@example.com"
    assert address != parse_address("bob.smith@example.com")
    assert address.normalized() == parse_address("bob.smith@example.com").normalized()


# --- refused ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "missing '@'"),
        ("agent", "missing '@'"),
        ("a@b@example.com", "more than one '@'"),
        ("@example.com", "empty local part"),
        ("a@", "empty domain"),
        (".a@example.com", "starts or ends with '.'"),
        ("a.@example.com", "starts or ends with '.'"),
        ("a..b@example.com", "consecutive dots"),
        ('"a b"@example.com', "quoted-string"),
        ('"a"@example.com', "quoted-string"),
        ("Agent <a@example.com>", "display names"),
        ("<a@example.com>", "angle brackets"),
        ("a(comment)@example.com", "comments"),
        ("a@example.com (Agent)", "comments"),
        ("@relay.example:a@example.com", "source routes"),
        ("a@example.com,b@example.com", "address lists"),
        ("a@[192.0.2.1]", "IP-literal"),
        ("a@[IPv6:2001:db8::1]", "IP-literal"),
        ("a@192.0.2.1", "all digits"),
        ("a@localhost", "at least two labels"),
        ("a@example..com", "empty domain label"),
        ("a@.example.com", "empty domain label"),
        ("a@example.com.", "empty domain label"),
        ("a@-example.com", "starts or ends with '-'"),
        ("a@example-.com", "starts or ends with '-'"),
        ("a@exa_mple.com", "'_' is not allowed in a domain label"),
        ("a;b@example.com", "not allowed in a local part"),
        ("a:b@example.com", "not allowed in a local part"),
        ("a\\b@example.com", "not allowed in a local part"),
        ("a@*.example.com", "'*' is not allowed in a domain label"),
        ("jörg@example.com", "non-ASCII local parts"),
        ("a@xn--zz.example", "not a valid A-label"),
        ("a@xn--abc-.example", "starts or ends with '-'"),
        ("a@ex\u2488ample.com", "'.' is not allowed in a domain label"),  # ⒈ maps to "1."
        ("a@\u0602.example", "invisible"),
    ],
)
def test_refuses_with_reason(text: str, reason: str) -> None:
    with pytest.raises(InvalidAddress, match=None) as info:
        parse_address(text)
    assert reason in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "a\r\n@example.com",
        "a@example.com\r\nBcc: victim@example.org",
        "a@exam\nple.com",
        "a\r@example.com",
        "a\x00@example.com",
        "a@example.com\x00",
        "a b@example.com",
        " a@example.com",
        "a@example.com ",
        "a\t@example.com",
        "a\x7f@example.com",
        "a\x1b@example.com",
        "a@exa\u00a0mple.com",  # NO-BREAK SPACE
        "a@exa\u200bmple.com",  # ZERO WIDTH SPACE: IDNA 2003 would silently drop it
        "a@exa\u202emple.com",  # RIGHT-TO-LEFT OVERRIDE
    ],
)
def test_refuses_controls_whitespace_and_invisibles_anywhere(text: str) -> None:
    with pytest.raises(InvalidAddress, match=r"position|invisible"):
        parse_address(text)


def test_invalid_address_is_an_invalid_value_with_the_address_field() -> None:
    with pytest.raises(InvalidValue) as info:
        parse_address("nope")
    assert info.value.code == "invalid_address"
    assert info.value.field == "address"


# --- predicates ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("a", True),
        ("a.b", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("", False),
        (".a", False),
        ("a.", False),
        ("a..b", False),
        ("a b", False),
        ('"a"', False),
        ("é", False),
        ("a@b", False),
    ],
)
def test_is_valid_local_part(text: str, valid: bool) -> None:
    assert is_valid_local_part(text) is valid


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("example.com", True),
        ("EXAMPLE.com", True),
        ("xn--bcher-kva.example", True),
        ("a.b.c.d", True),
        ("example", False),
        ("bücher.example", False),  # valid *as stored* means A-labels
        ("1.2.3.4", False),
        ("-a.com", False),
        ("a-.com", False),
        ("a..com", False),
        ("a.com.", False),
        ("xn--zz.example", False),
        ("[1.2.3.4]", False),
        ("", False),
    ],
)
def test_is_valid_domain(text: str, valid: bool) -> None:
    assert is_valid_domain(text) is valid


@pytest.mark.parametrize(
    ("text", "breaking"),
    [
        ("Hello there", False),
        ("tab\tinside", False),
        ("ünïcödé ✓", False),
        ("", False),
        ("a\rb", True),
        ("a\nb", True),
        ("a\r\nBcc: x@example.com", True),
        ("nul\x00", True),
        ("\x01", True),
        ("\x1f", True),
        ("del\x7f", True),
        ("nel\x85", True),
        ("line\u2028sep", True),
        ("para\u2029sep", True),
    ],
)
def test_has_header_breaking_chars(text: str, breaking: bool) -> None:
    assert has_header_breaking_chars(text) is breaking


# --- plus-addressing --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "base_text", "expected_tag"),
    [
        ("bob+news@example.com", "bob@example.com", "news"),
        ("Bob+News@example.com", "Bob@example.com", "News"),
        ("bob+a+b@example.com", "bob@example.com", "a+b"),  # only the first '+'
        ("bob+@example.com", "bob@example.com", ""),
        ("bob@example.com", "bob@example.com", None),
        ("+news@example.com", "+news@example.com", None),  # empty name: no subaddress
        ("a.+x@example.com", "a.+x@example.com", None),  # "a." is no local part
    ],
)
def test_base_and_tag(text: str, base_text: str, expected_tag: str | None) -> None:
    address = parse_address(text)
    assert str(base(address)) == base_text
    assert tag(address) == expected_tag


# --- allowlists ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("Bob@Example.COM", "bob@example.com"),
        ("bob+news@example.com", "bob@example.com"),
        ("*@Example.COM", "*@example.com"),
        ("*@bücher.example", "*@xn--bcher-kva.example"),
    ],
)
def test_validate_allowlist_pattern_normalizes(text: str, normalized: str) -> None:
    assert validate_allowlist_pattern(text) == normalized


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("example.com", "give an address, or *@domain"),
        ("@example.com", "give an address, or *@domain"),
        ("*.example.com", "give an address, or *@domain"),
        ("*@*.example.com", "subdomain wildcards are not supported"),
        ("bob@*.example.com", "only as *@domain"),
        ("*@localhost", "at least two labels"),
        ("*@[192.0.2.1]", "IP-literal"),
        ("bob@example.com\r\n", "line break"),
        ("", "give an address"),
    ],
)
def test_validate_allowlist_pattern_refuses(text: str, reason: str) -> None:
    with pytest.raises(InvalidValue) as info:
        validate_allowlist_pattern(text)
    assert info.value.field == "allowlist"
    assert reason in str(info.value)


@pytest.mark.parametrize(
    ("address", "pattern", "matches"),
    [
        ("bob@example.com", "bob@example.com", True),
        ("Bob@EXAMPLE.com", "bob@example.com", True),
        ("bob@example.com", "BOB@Example.Com", True),
        ("bob+news@example.com", "bob@example.com", True),
        ("bob@example.com", "bob+news@example.com", True),  # compared after base()
        ("bob2@example.com", "bob@example.com", False),
        ("bob@example.org", "bob@example.com", False),
        ("bob@mail.example.com", "bob@example.com", False),
        ("x@example.com", "*@example.com", True),
        ("x@EXAMPLE.COM", "*@example.COM", True),
        ("x@sub.example.com", "*@example.com", False),  # no subdomain wildcard
        ("x@example.com", "*@sub.example.com", False),
        ("x@notexample.com", "*@example.com", False),
        ("x@xn--bcher-kva.example", "*@xn--bcher-kva.example", True),
        ("x@xn--bcher-kva.example", "*@bücher.example", False),  # unnormalized: fail closed
        ("x@example.com", "", False),
        ("x@example.com", "*", False),
    ],
)
def test_matches_allowlist(address: str, pattern: str, matches: bool) -> None:
    assert matches_allowlist(parse_address(address), pattern) is matches


def test_all_allowlisted() -> None:
    a = parse_address("a@example.com")
    b = parse_address("b@other.org")
    patterns = frozenset({"*@example.com", "b@other.org"})
    assert all_allowlisted([a, b], patterns)
    assert all_allowlisted((a,), patterns)
    assert not all_allowlisted([a, parse_address("c@other.org")], patterns)
    assert not all_allowlisted([a], frozenset())


def test_empty_recipient_list_is_never_allowlisted() -> None:
    assert not all_allowlisted([], frozenset({"*@example.com"}))
    assert not all_allowlisted((), frozenset({"*@example.com", "a@example.com"}))


# --- the Address value -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("local", "domain"),
    [
        ("", "example.com"),
        ("a" * 65, "example.com"),
        ("a", "Example.com"),
        ("a", "bücher.example"),
        ("a b", "example.com"),
        ("a", "localhost"),
    ],
)
def test_address_constructor_enforces_invariants(local: str, domain: str) -> None:
    import icontract

    with pytest.raises(icontract.ViolationError):
        Address(local, domain)
