"""Address parsing is total, idempotent and accepts every address built from the grammar."""

from __future__ import annotations

import string

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from multimail_core.addresses import (
    ATEXT,
    Address,
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

ATEXT_ALPHABET = "".join(sorted(ATEXT))
atoms = st.text(ATEXT_ALPHABET, min_size=1, max_size=12)
local_parts = st.lists(atoms, min_size=1, max_size=5).map(".".join).filter(lambda s: len(s) <= 64)

ldh_inner = st.text(string.ascii_letters + string.digits + "-", max_size=20)
alnum = st.sampled_from(string.ascii_letters + string.digits)
labels = st.one_of(
    alnum,
    st.tuples(alnum, ldh_inner, alnum).map("".join),
)
top_labels = st.tuples(st.sampled_from(string.ascii_letters), ldh_inner, alnum).map("".join)
domains = st.tuples(st.lists(labels, min_size=1, max_size=4), top_labels).map(
    lambda parts: ".".join([*parts[0], parts[1]])
)
valid_addresses = st.tuples(local_parts, domains).filter(lambda p: len(p[0]) + 1 + len(p[1]) <= 254)

# Text that looks like an address often enough to reach the deep branches.
address_like = st.one_of(
    st.text(),
    st.text(alphabet=ATEXT_ALPHABET + '.@"<>()[]:,;\\ \t\r\n\x00-', max_size=40),
    st.tuples(st.text(max_size=15), st.text(max_size=25)).map(lambda p: f"{p[0]}@{p[1]}"),
    st.tuples(local_parts, st.text(max_size=25)).map(lambda p: f"{p[0]}@{p[1]}"),
    st.tuples(
        local_parts,
        st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=3).map(".".join),
    ).map(lambda p: f"{p[0]}@{p[1]}.example"),
)


@given(address_like)
def test_parse_is_total(text: str) -> None:
    """Either an Address or InvalidAddress; no other exception, ever."""
    try:
        address = parse_address(text)
    except InvalidAddress:
        return
    assert isinstance(address, Address)
    assert is_valid_local_part(address.local)
    assert is_valid_domain(address.domain)
    assert not has_header_breaking_chars(str(address))


@given(address_like)
def test_parse_of_str_is_the_same_address(text: str) -> None:
    try:
        address = parse_address(text)
    except InvalidAddress:
        return
    assert parse_address(str(address)) == address
    assert parse_address(address.normalized()).normalized() == address.normalized()


@given(valid_addresses)
def test_grammar_built_addresses_parse(parts: tuple[str, str]) -> None:
    local, domain = parts
    assume(not domain.rpartition(".")[2].isdigit())
    address = parse_address(f"{local}@{domain}")
    assert address.local == local
    assert address.domain == domain.lower()


@given(valid_addresses, st.sampled_from(["\r", "\n", "\r\n", "\x00"]), st.data())
def test_line_breaks_and_nul_are_refused_anywhere(
    parts: tuple[str, str], bad: str, data: st.DataObject
) -> None:
    text = f"{parts[0]}@{parts[1]}"
    at = data.draw(st.integers(0, len(text)))
    with pytest.raises(InvalidAddress, match="position"):
        parse_address(text[:at] + bad + text[at:])


@given(st.text(), st.sampled_from(["\r", "\n"]), st.text())
def test_header_breaking_chars_catches_every_cr_and_lf(
    before: str, breaker: str, after: str
) -> None:
    assert has_header_breaking_chars(before + breaker + after)


@given(st.text(alphabet=st.characters(min_codepoint=0x20, exclude_characters="\x7f\x85")))
def test_header_breaking_chars_passes_ordinary_text(text: str) -> None:
    assume("\u2028" not in text and "\u2029" not in text)
    assert not has_header_breaking_chars(text)


@given(valid_addresses, atoms)
def test_plus_tag_round_trip(parts: tuple[str, str], tag_text: str) -> None:
    local, domain = parts
    assume("+" not in local and len(local) + len(tag_text) + len(domain) + 2 <= 254)
    assume(len(local) + 1 + len(tag_text) <= 64 and not domain.rpartition(".")[2].isdigit())
    plain = parse_address(f"{local}@{domain}")
    tagged = parse_address(f"{local}+{tag_text}@{domain}")
    assert base(tagged) == plain
    assert tag(tagged) == tag_text
    assert tag(plain) is None
    assert base(base(tagged)) == base(tagged)


@given(valid_addresses, valid_addresses)
def test_allowlist_match_is_exact_on_the_normalized_base(
    a: tuple[str, str], b: tuple[str, str]
) -> None:
    assume(not a[1].rpartition(".")[2].isdigit() and not b[1].rpartition(".")[2].isdigit())
    first = parse_address(f"{a[0]}@{a[1]}")
    second = parse_address(f"{b[0]}@{b[1]}")
    pattern = validate_allowlist_pattern(str(second))
    assert matches_allowlist(first, pattern) == (base(first).normalized() == pattern)
    assert matches_allowlist(second, pattern)
    domain_pattern = validate_allowlist_pattern(f"*@{second.domain.upper()}")
    assert matches_allowlist(first, domain_pattern) == (first.domain == second.domain)


@given(st.text(max_size=40))
def test_validate_allowlist_pattern_is_total_and_idempotent(text: str) -> None:
    try:
        pattern = validate_allowlist_pattern(text)
    except InvalidValue:
        return
    assert validate_allowlist_pattern(pattern) == pattern
