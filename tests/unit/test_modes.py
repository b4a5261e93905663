"""Scenarios for the autonomy ladder (PRODUCT.md §4)."""

from __future__ import annotations

import pytest

from multimail_core.modes import DEFAULT_MODE, LADDER, OversightMode, is_raise, lower, rank

M = OversightMode


def test_ladder_runs_from_read_only_to_autonomous() -> None:
    assert LADDER == (M.READ_ONLY, M.GATED_ALL, M.GATED_SEND, M.MONITORED, M.AUTONOMOUS)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [(M.READ_ONLY, 0), (M.GATED_ALL, 1), (M.GATED_SEND, 2), (M.MONITORED, 3), (M.AUTONOMOUS, 4)],
)
def test_rank_is_the_position_on_the_ladder(mode: OversightMode, expected: int) -> None:
    assert rank(mode) == expected


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ("read_only", M.READ_ONLY),
        ("gated_all", M.GATED_ALL),
        ("gated_send", M.GATED_SEND),
        ("monitored", M.MONITORED),
        ("autonomous", M.AUTONOMOUS),
    ],
)
def test_public_mode_names(text: str, mode: OversightMode) -> None:
    assert OversightMode(text) is mode


def test_default_mode_is_gated_send() -> None:
    assert DEFAULT_MODE is M.GATED_SEND


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (M.GATED_SEND, M.MONITORED, True),
        (M.READ_ONLY, M.AUTONOMOUS, True),
        (M.READ_ONLY, M.GATED_ALL, True),
        (M.MONITORED, M.AUTONOMOUS, True),
        (M.MONITORED, M.GATED_SEND, False),
        (M.AUTONOMOUS, M.READ_ONLY, False),
        (M.GATED_ALL, M.READ_ONLY, False),
        (M.GATED_SEND, M.GATED_SEND, False),
        (M.AUTONOMOUS, M.AUTONOMOUS, False),
    ],
)
def test_is_raise(old: OversightMode, new: OversightMode, expected: bool) -> None:
    assert is_raise(old, new) is expected


def test_exactly_ten_of_the_twenty_five_moves_raise_autonomy() -> None:
    raises = {(old, new) for old in M for new in M if is_raise(old, new)}
    assert len(raises) == 10
    assert (M.AUTONOMOUS, M.MONITORED) not in raises
    assert all(not is_raise(m, m) for m in M)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (M.MONITORED, M.GATED_ALL, M.GATED_ALL),
        (M.GATED_ALL, M.MONITORED, M.GATED_ALL),
        (M.AUTONOMOUS, M.GATED_SEND, M.GATED_SEND),
        (M.READ_ONLY, M.GATED_SEND, M.READ_ONLY),
        (M.MONITORED, M.MONITORED, M.MONITORED),
    ],
)
def test_lower_picks_the_less_autonomous_mode(
    a: OversightMode, b: OversightMode, expected: OversightMode
) -> None:
    assert lower(a, b) is expected
