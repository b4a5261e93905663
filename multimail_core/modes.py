"""Oversight modes and the autonomy ladder.

Rule 1: the ladder is total: read_only < gated_all < gated_send < monitored < autonomous.
Rule 2: "raising autonomy" means moving to a strictly higher rung; only overseers may do it.
Rule 3: a mailbox created without a mode gets DEFAULT_MODE (gated_send).
"""

from __future__ import annotations

import enum

import icontract


class OversightMode(enum.Enum):
    READ_ONLY = "read_only"
    GATED_ALL = "gated_all"
    GATED_SEND = "gated_send"
    MONITORED = "monitored"
    AUTONOMOUS = "autonomous"


LADDER: tuple[OversightMode, ...] = (
    OversightMode.READ_ONLY,
    OversightMode.GATED_ALL,
    OversightMode.GATED_SEND,
    OversightMode.MONITORED,
    OversightMode.AUTONOMOUS,
)

DEFAULT_MODE = OversightMode.GATED_SEND


@icontract.ensure(lambda result: 0 <= result < len(LADDER))
@icontract.ensure(lambda mode, result: LADDER[result] is mode)
def rank(mode: OversightMode) -> int:
    """Position of ``mode`` on the ladder; higher means more autonomy."""
    return LADDER.index(mode)


@icontract.ensure(lambda old, new, result: result == (rank(new) > rank(old)))
def is_raise(old: OversightMode, new: OversightMode) -> bool:
    """True when moving from ``old`` to ``new`` grants more autonomy."""
    return rank(new) > rank(old)


@icontract.ensure(lambda a, b, result: rank(result) <= rank(a) and rank(result) <= rank(b))
@icontract.ensure(lambda a, b, result: result is a or result is b)
def lower(a: OversightMode, b: OversightMode) -> OversightMode:
    """The less autonomous of two modes."""
    return a if rank(a) <= rank(b) else b
