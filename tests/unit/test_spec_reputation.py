"""spec/reputation.toml and spec/retry.toml against the code, so they cannot drift apart."""

from __future__ import annotations

import dataclasses
import itertools
import math
import tomllib
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from multimail_core import delivery, reputation
from multimail_core.modes import OversightMode
from multimail_core.reputation import Counters, Outcome

SPEC = Path(__file__).resolve().parents[2] / "spec"
REP: dict[str, Any] = tomllib.loads((SPEC / "reputation.toml").read_text(encoding="utf-8"))
RETRY: dict[str, Any] = tomllib.loads((SPEC / "retry.toml").read_text(encoding="utf-8"))

# Counters covering empty, tiny, clean, bouncing, complaining and hopeless mailboxes.
SAMPLES = [
    Counters(sent=s, hard_bounced=b, complaints=c, delivered=max(0, s - b))
    for s, b, c in itertools.product([0, 1, 7, 50, 120, 1000, 9999], [0, 1, 6, 120], [0, 1, 5])
]


def evaluate(expression: str, c: Counters, constants: dict[str, int]) -> int:
    """Evaluate a spec formula exactly: `/` on Fractions, floor and clamp as written."""
    names: dict[str, Any] = {
        **{k: Fraction(v) for k, v in constants.items()},
        **{f.name: Fraction(getattr(c, f.name)) for f in dataclasses.fields(c)},
        "floor": math.floor,
        "clamp": lambda x, lo, hi: min(hi, max(lo, x)),
    }
    return int(eval(expression, {"__builtins__": {"min": min, "max": max}}, names))


# --- reputation.toml -----------------------------------------------------------------------


def test_outcomes() -> None:
    assert REP["outcomes"] == [o.value for o in Outcome]


def test_window_sizes() -> None:
    assert REP["window"] == {"days": reputation.WINDOW_DAYS, "last_sends": reputation.WINDOW_SENDS}


def test_formula_constants() -> None:
    constants = {k: v for k, v in REP["formula"].items() if isinstance(v, int)}
    assert constants == dataclasses.asdict(reputation.FORMULA)


@pytest.mark.parametrize("c", SAMPLES)
def test_formula_expression_and_text_compute_the_score(c: Counters) -> None:
    spec = REP["formula"]
    constants = {k: v for k, v in spec.items() if isinstance(v, int)}
    assert evaluate(spec["expression"], c, constants) == reputation.score(c)
    lhs, rhs = spec["text"].split("=", 1)
    assert lhs.strip() == "score"
    assert evaluate(rhs, c, {}) == reputation.score(c)


@pytest.mark.parametrize("name", list(REP["rates"]))
def test_rates(name: str) -> None:
    rule = REP["rates"][name]
    function = getattr(reputation, f"{name}_bp")
    for c in [*SAMPLES, Counters(replies=9, sent=3), Counters(approved_unchanged=19, edited=1)]:
        numerator = getattr(c, rule["numerator"])
        denominator = sum(getattr(c, field) for field in rule["denominator"])
        expected = min(10_000, numerator * 10_000 // denominator) if denominator else 0
        assert function(c) == expected, c


def test_every_rate_function_is_in_the_spec() -> None:
    in_code = {n.removesuffix("_bp") for n in vars(reputation) if n.endswith("_rate_bp")}
    assert in_code == set(REP["rates"])


def test_enforcement_thresholds() -> None:
    spec = dict(REP["enforcement"])
    assert spec.pop("demotion_target") == reputation.DEMOTION_TARGET.value
    assert spec == dataclasses.asdict(reputation.THRESHOLDS)


def test_promotion_bar() -> None:
    spec = dict(REP["promotion"])
    assert spec.pop("requires_no_rejections") is True
    assert spec == dataclasses.asdict(reputation.PROMOTION_BAR)
    bar = Counters(approved_unchanged=spec["min_reviewed"])
    assert reputation.suggest_promotion(bar, OversightMode.GATED_SEND) is not None
    assert (
        reputation.suggest_promotion(dataclasses.replace(bar, rejected=1), OversightMode.GATED_SEND)
        is None
    )


def test_suppression_rules() -> None:
    spec = REP["suppression"]
    assert spec["reasons"] == [r.value for r in reputation.SuppressionReason]
    for outcome in Outcome:
        reason = reputation.suppression_for(outcome)
        assert (reason and reason.value) == spec["suppressing"].get(outcome.value), outcome
    for address, normal in spec["normalization"]:
        assert reputation.normalize_for_suppression(address) == normal


# --- retry.toml --------------------------------------------------------------------------


def test_delivery_schedule() -> None:
    spec = RETRY["delivery"]
    assert tuple(spec["schedule_seconds"]) == delivery.DELIVERY_SCHEDULE
    assert spec["attempts"] == len(delivery.DELIVERY_SCHEDULE) + 1
    assert delivery.delivery_retry_delay(spec["attempts"]) is None


def test_webhook_schedule() -> None:
    spec = RETRY["webhook"]
    assert tuple(spec["schedule_seconds"]) == delivery.WEBHOOK_SCHEDULE
    assert spec["attempts"] == len(delivery.WEBHOOK_SCHEDULE) + 1
    assert delivery.webhook_retry_delay(spec["attempts"]) is None


def test_jitter_bounds() -> None:
    spec = RETRY["jitter"]
    assert spec["draw_max"] == delivery.JITTER_DRAW_MAX
    assert spec["spread_percent"] == delivery.JITTER_SPREAD_PERCENT
    delay, spread = 10_000, spec["spread_percent"]
    assert delivery.with_jitter(delay, spec["draw_min"]) == delay * (100 - spread) // 100
    assert delivery.with_jitter(delay, spec["draw_max"]) == delay * (100 + spread) // 100


def test_retry_after_cap() -> None:
    cap = RETRY["retry_after"]["cap_seconds"]
    assert cap == delivery.RETRY_AFTER_CAP
    assert delivery.honour_retry_after(60, 10 * cap) == cap


@pytest.mark.parametrize(
    "row", RETRY["smtp"]["replies"], ids=lambda r: f"{r['code']} {r['text']}".strip()
)
def test_smtp_reply_classes(row: dict[str, Any]) -> None:
    assert delivery.classify_reply(row["code"], row["text"]).value == row["class"]
