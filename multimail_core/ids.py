"""Typed identifiers: a kind prefix plus a ULID text (Crockford base32, 26 characters).

Rule 1: the core never invents ids; the shell generates ULID text and passes it in.
Rule 2: an id is ``<prefix>_<ULID>``; anything else is an InvalidValue.
"""

from __future__ import annotations

import enum

import icontract

from multimail_core.errors import InvalidValue

CROCKFORD = frozenset("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
ULID_LENGTH = 26


class Kind(enum.Enum):
    MAILBOX = "mbx"
    MESSAGE = "msg"
    THREAD = "thr"
    APPROVAL = "apr"
    EVENT = "evt"
    ACCOUNT = "acc"
    KEY = "key"


@icontract.ensure(lambda text, result: not result or len(text) == ULID_LENGTH)
def is_ulid(text: str) -> bool:
    """ULID text: 26 Crockford characters, the first at most '7' (48-bit timestamp)."""
    return len(text) == ULID_LENGTH and all(c in CROCKFORD for c in text) and text[0] in "01234567"


@icontract.ensure(lambda kind, text, result: not result or text.startswith(kind.value + "_"))
def is_id(kind: Kind, text: str) -> bool:
    prefix = kind.value + "_"
    return text.startswith(prefix) and is_ulid(text[len(prefix) :])


@icontract.ensure(lambda kind, result: is_id(kind, result))
@icontract.ensure(lambda ulid, result: result.endswith(ulid.upper()))
def make_id(kind: Kind, ulid: str) -> str:
    """``make_id(Kind.MAILBOX, "01HZ...")`` → ``"mbx_01HZ..."``.

    :raises InvalidValue: when ``ulid`` is not ULID text.
    """
    text = ulid.upper()
    if not ulid.isascii() or not is_ulid(text):  # 'ß'.upper() == 'SS': validate ASCII first
        raise InvalidValue("id", f"not ULID text: {ulid!r}")
    return f"{kind.value}_{text}"


@icontract.ensure(lambda kind, text, result: is_id(kind, result))
def parse_id(kind: Kind, text: str) -> str:
    """Return ``text`` if it is an id of ``kind``.

    :raises InvalidValue: when ``text`` is not an id of ``kind``.
    """
    if not is_id(kind, text):
        raise InvalidValue("id", f"not a {kind.value}_ id: {text[:40]!r}")
    return text
