"""Scenarios for the oversight decision table (PRODUCT.md §4, P1-P5)."""

from __future__ import annotations

import icontract
import pytest

from multimail_core.modes import OversightMode
from multimail_core.oversight import RULES, Action, Decision, Request, Verdict, decide
from tests.unit.conftest import addr

M = OversightMode
ALLOW, HOLD, DENY = Verdict.ALLOW, Verdict.HOLD, Verdict.DENY

CUSTOMER = addr("ana@customer.example")
ALLOWLIST = frozenset({"ana@customer.example", "*@partner.example"})


def send(
    mode: OversightMode,
    *recipients: str,
    allowlist: frozenset[str] = ALLOWLIST,
    action: Action = Action.SEND,
) -> Decision:
    return decide(Request(mode, action, tuple(addr(r) for r in recipients), allowlist))


# --- outbound: every mode x send/reply x allowlisted or not ----------------------------------

OUTBOUND = [
    # mode, all recipients allowlisted, verdict, rule, monitored copy
    (M.READ_ONLY, True, DENY, "read_only_refuses_send", False),
    (M.READ_ONLY, False, DENY, "read_only_refuses_send", False),
    (M.GATED_ALL, True, HOLD, "gated_all_holds_send", False),
    (M.GATED_ALL, False, HOLD, "gated_all_holds_send", False),
    (M.GATED_SEND, True, ALLOW, "gated_send_allowlisted", False),
    (M.GATED_SEND, False, HOLD, "gated_send_holds", False),
    (M.MONITORED, True, ALLOW, "monitored_sends_with_copy", True),
    (M.MONITORED, False, ALLOW, "monitored_sends_with_copy", True),
    (M.AUTONOMOUS, True, ALLOW, "autonomous_sends", False),
    (M.AUTONOMOUS, False, ALLOW, "autonomous_sends", False),
]


@pytest.mark.parametrize("action", [Action.SEND, Action.REPLY])
@pytest.mark.parametrize(("mode", "allowlisted", "verdict", "rule", "copy"), OUTBOUND)
def test_outbound_decision(
    action: Action,
    mode: OversightMode,
    allowlisted: bool,
    verdict: Verdict,
    rule: str,
    copy: bool,
) -> None:
    recipient = "ana@customer.example" if allowlisted else "eve@stranger.example"
    decision = send(mode, recipient, action=action)
    assert (decision.verdict, decision.rule, decision.monitor_copy) == (verdict, rule, copy)


def test_gated_send_holds_when_only_some_recipients_are_allowlisted() -> None:
    decision = send(M.GATED_SEND, "ana@customer.example", "eve@stranger.example")
    assert (decision.verdict, decision.rule) == (HOLD, "gated_send_holds")


def test_gated_send_allows_a_domain_wildcard_match() -> None:
    decision = send(M.GATED_SEND, "ana@customer.example", "carol@partner.example")
    assert (decision.verdict, decision.rule) == (ALLOW, "gated_send_allowlisted")


def test_domain_wildcard_does_not_cover_subdomains() -> None:
    assert send(M.GATED_SEND, "carol@eu.partner.example").verdict is HOLD


def test_allowlisted_address_matches_its_plus_tags_and_any_case() -> None:
    assert send(M.GATED_SEND, "ana+orders@customer.example").verdict is ALLOW
    assert send(M.GATED_SEND, "Ana@Customer.Example").verdict is ALLOW


def test_gated_send_with_an_empty_allowlist_holds() -> None:
    decision = send(M.GATED_SEND, "ana@customer.example", allowlist=frozenset())
    assert decision.verdict is HOLD


def test_gated_send_without_recipients_holds() -> None:
    assert send(M.GATED_SEND).verdict is HOLD


def test_decision_carries_the_rules_reason() -> None:
    assert send(M.READ_ONLY, "ana@customer.example").reason == "read_only mailboxes never send"


# --- inbound -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "verdict", "rule"),
    [
        (M.READ_ONLY, ALLOW, "inbound_delivered"),
        (M.GATED_ALL, HOLD, "gated_all_holds_inbound"),
        (M.GATED_SEND, ALLOW, "inbound_delivered"),
        (M.MONITORED, ALLOW, "inbound_delivered"),
        (M.AUTONOMOUS, ALLOW, "inbound_delivered"),
    ],
)
def test_inbound_decision(mode: OversightMode, verdict: Verdict, rule: str) -> None:
    decision = decide(Request(mode, Action.INBOUND))
    assert (decision.verdict, decision.rule, decision.monitor_copy) == (verdict, rule, False)


# --- reading -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(M))
def test_a_held_message_is_not_readable(mode: OversightMode) -> None:
    decision = decide(Request(mode, Action.READ, message_held=True))
    assert (decision.verdict, decision.rule) == (DENY, "held_message_hidden")


@pytest.mark.parametrize("mode", list(M))
def test_an_unheld_message_is_readable(mode: OversightMode) -> None:
    decision = decide(Request(mode, Action.READ, message_held=False))
    assert (decision.verdict, decision.rule) == (ALLOW, "read_allowed")


# --- mode changes --------------------------------------------------------------------------------


UP, DOWN, SAME = (M.GATED_SEND, M.AUTONOMOUS), (M.AUTONOMOUS, M.GATED_ALL), (M.MONITORED,) * 2


@pytest.mark.parametrize(
    ("move", "may_raise", "may_lower", "verdict", "rule"),
    [
        pytest.param(UP, True, True, ALLOW, "overseer_sets_mode", id="overseer-up"),
        pytest.param(DOWN, True, True, ALLOW, "overseer_sets_mode", id="overseer-down"),
        pytest.param(SAME, True, True, ALLOW, "overseer_sets_mode", id="overseer-same"),
        pytest.param(UP, False, True, DENY, "agent_cannot_raise", id="own-key-up"),
        pytest.param(DOWN, False, True, ALLOW, "agent_lowers_mode", id="own-key-down"),
        pytest.param(SAME, False, True, ALLOW, "agent_lowers_mode", id="own-key-same"),
        pytest.param(UP, False, False, DENY, "agent_cannot_raise", id="stranger-up"),
        pytest.param(DOWN, False, False, DENY, "agent_cannot_raise", id="stranger-down"),
        pytest.param(SAME, False, False, DENY, "agent_cannot_raise", id="stranger-same"),
    ],
)
def test_mode_change(
    move: tuple[OversightMode, OversightMode],
    may_raise: bool,
    may_lower: bool,
    verdict: Verdict,
    rule: str,
) -> None:
    old, new = move
    request = Request(
        old, Action.MODE_CHANGE, actor_may_raise=may_raise, actor_may_lower=may_lower, new_mode=new
    )
    decision = decide(request)
    assert (decision.verdict, decision.rule) == (verdict, rule)


# --- releasing approved mail -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "verdict", "rule"),
    [
        (M.READ_ONLY, DENY, "read_only_refuses_release"),
        (M.GATED_ALL, ALLOW, "release_approved"),
        (M.GATED_SEND, ALLOW, "release_approved"),
        (M.MONITORED, ALLOW, "release_approved"),
        (M.AUTONOMOUS, ALLOW, "release_approved"),
    ],
)
def test_release_of_approved_mail(mode: OversightMode, verdict: Verdict, rule: str) -> None:
    decision = decide(Request(mode, Action.RELEASE))
    assert (decision.verdict, decision.rule, decision.monitor_copy) == (verdict, rule, False)


def test_mode_change_without_a_target_mode_is_a_contract_violation() -> None:
    with pytest.raises(icontract.ViolationError):
        decide(Request(M.GATED_SEND, Action.MODE_CHANGE))


def test_a_target_mode_on_another_action_is_a_contract_violation() -> None:
    with pytest.raises(icontract.ViolationError):
        decide(Request(M.GATED_SEND, Action.SEND, (CUSTOMER,), new_mode=M.AUTONOMOUS))


# --- the table itself ----------------------------------------------------------------------------


def test_rule_names_in_table_order() -> None:
    assert [r.name for r in RULES] == [
        "read_only_refuses_send",
        "gated_all_holds_send",
        "gated_send_allowlisted",
        "gated_send_holds",
        "monitored_sends_with_copy",
        "autonomous_sends",
        "read_only_refuses_release",
        "release_approved",
        "gated_all_holds_inbound",
        "inbound_delivered",
        "held_message_hidden",
        "read_allowed",
        "overseer_sets_mode",
        "agent_lowers_mode",
        "agent_cannot_raise",
    ]


def test_only_the_monitored_rule_asks_for_a_copy() -> None:
    assert [r.name for r in RULES if r.monitor_copy] == ["monitored_sends_with_copy"]
