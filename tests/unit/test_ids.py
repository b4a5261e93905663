"""Scenarios for typed identifiers: ``<prefix>_<ULID>``."""

from __future__ import annotations

import pytest

from multimail_core.errors import InvalidValue
from multimail_core.ids import Kind, is_id, is_ulid, make_id, parse_id

ULID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"

PREFIXES = [
    (Kind.MAILBOX, "mbx"),
    (Kind.MESSAGE, "msg"),
    (Kind.THREAD, "thr"),
    (Kind.APPROVAL, "apr"),
    (Kind.EVENT, "evt"),
    (Kind.ACCOUNT, "acc"),
    (Kind.KEY, "key"),
]


@pytest.mark.parametrize(("kind", "prefix"), PREFIXES)
def test_make_id_prefixes_the_ulid(kind: Kind, prefix: str) -> None:
    assert make_id(kind, ULID) == f"{prefix}_{ULID}"


@pytest.mark.parametrize(("kind", "prefix"), PREFIXES)
def test_parse_id_returns_a_well_formed_id_unchanged(kind: Kind, prefix: str) -> None:
    text = f"{prefix}_{ULID}"
    assert is_id(kind, text) is True
    assert parse_id(kind, text) == text


@pytest.mark.parametrize(("kind", "prefix"), PREFIXES)
def test_an_id_of_another_kind_is_refused(kind: Kind, prefix: str) -> None:
    other = "msg" if prefix != "msg" else "mbx"
    text = f"{other}_{ULID}"
    assert is_id(kind, text) is False
    with pytest.raises(InvalidValue) as caught:
        parse_id(kind, text)
    assert caught.value.field == "id"
    assert caught.value.code == "invalid_value"
    assert f"not a {prefix}_ id" in caught.value.detail


def test_lowercase_ulid_is_accepted_and_uppercased() -> None:
    assert make_id(Kind.MESSAGE, ULID.lower()) == f"msg_{ULID}"
    assert make_id(Kind.THREAD, "01arz3ndektsV4RRFFQ69G5FAV") == f"thr_{ULID}"


@pytest.mark.parametrize(
    "text",
    [
        "00000000000000000000000000",  # the smallest ULID
        "7ZZZZZZZZZZZZZZZZZZZZZZZZZ",  # the largest: 48-bit timestamp all ones
        ULID,
    ],
)
def test_ulid_bounds_are_accepted(text: str) -> None:
    assert is_ulid(text) is True
    assert make_id(Kind.EVENT, text) == f"evt_{text}"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        (ULID[:25], "25 characters"),
        (ULID + "0", "27 characters"),
        ("8ZZZZZZZZZZZZZZZZZZZZZZZZZ", "first character 8 overflows 48 bits"),
        ("ZZZZZZZZZZZZZZZZZZZZZZZZZZ", "first character Z overflows 48 bits"),
        ("01ARZ3NDEKTSV4RRFFQ69G5FAI", "I is not Crockford"),
        ("01ARZ3NDEKTSV4RRFFQ69G5FAL", "L is not Crockford"),
        ("01ARZ3NDEKTSV4RRFFQ69G5FAO", "O is not Crockford"),
        ("01ARZ3NDEKTSV4RRFFQ69G5FAU", "U is not Crockford"),
        ("01ARZ3NDEKTSV4RRFFQ69G5FA-", "punctuation"),
        ("01ARZ3NDEKTSV4RRFFQ69G5FA ", "trailing space"),
        ("01ARZ3NDEKTSV4RRFFQ69G5FA\n", "newline"),
    ],
)
def test_bad_ulid_text_is_refused(text: str, why: str) -> None:
    assert is_ulid(text) is False, why
    with pytest.raises(InvalidValue) as caught:
        make_id(Kind.MAILBOX, text)
    assert caught.value.field == "id"


@pytest.mark.parametrize(
    "text",
    [
        f"mbx{ULID}",  # no separator
        f"mbx-{ULID}",
        f"MBX_{ULID}",  # the prefix is lowercase
        f"mbx_mbx_{ULID}",
        f"mbx_{ULID} ",
        f" mbx_{ULID}",
        "mbx_",
        f"mbx_{ULID[:25]}",
        f"mbx_8{ULID[1:]}",
    ],
)
def test_malformed_mailbox_ids_are_refused(text: str) -> None:
    assert is_id(Kind.MAILBOX, text) is False
    with pytest.raises(InvalidValue):
        parse_id(Kind.MAILBOX, text)


def test_refusal_quotes_at_most_forty_characters_of_the_input() -> None:
    with pytest.raises(InvalidValue) as caught:
        parse_id(Kind.KEY, "x" * 1000)
    assert "x" * 40 in caught.value.detail
    assert "x" * 41 not in caught.value.detail


@pytest.mark.parametrize(
    "text",
    [
        "0" * 24 + "ß",  # 25 characters; 'ß'.upper() is 'SS'
        "0" * 25 + "\u017f",  # LATIN SMALL LETTER LONG S; upper() is 'S'
    ],
)
def test_non_ascii_ulid_text_is_refused(text: str) -> None:
    with pytest.raises(InvalidValue):
        make_id(Kind.MAILBOX, text)
