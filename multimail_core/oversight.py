"""The oversight decision: an ordered rule table, first match wins (Mailman-style).

Rule 1: ``decide`` walks RULES in order; the first rule whose action, mode and condition
        match returns its verdict, and the Decision names that rule for the audit log.
Rule 2: outbound from read_only is denied (P2); from gated_all always held; from
        gated_send held unless every recipient is allowlisted (P1); monitored sends carry
        exactly one oversight copy (P4); autonomous sends.
        Approved mail is released in any mode but read_only (no re-gating; P2 still holds).
Rule 3: inbound to gated_all is held and hidden until approved (P3); a held message is not
        readable.
Rule 4: an unrestricted admin/oversight key may set any mode; the mailbox's own key and
        mailbox-restricted overseers may keep or lower it; nobody else changes it (P5).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import icontract

from multimail_core.addresses import Address, all_allowlisted
from multimail_core.modes import OversightMode, is_raise


class Action(enum.Enum):
    SEND = "send"
    REPLY = "reply"
    INBOUND = "inbound"
    READ = "read"
    MODE_CHANGE = "mode_change"
    RELEASE = "release"


class Verdict(enum.Enum):
    ALLOW = "allow"
    HOLD = "hold"
    DENY = "deny"


@dataclass(frozen=True)
class Request:
    """Everything a rule may look at. Fields irrelevant to an action keep their defaults."""

    mode: OversightMode
    action: Action
    recipients: tuple[Address, ...] = ()
    allowlist: frozenset[str] = frozenset()
    actor_may_raise: bool = False
    actor_may_lower: bool = False
    new_mode: OversightMode | None = None
    message_held: bool = False


class Condition(enum.Enum):
    """Named conditions, so spec/oversight.toml can state each rule as data."""

    ALWAYS = "always"
    ALL_RECIPIENTS_ALLOWLISTED = "all_recipients_allowlisted"
    MESSAGE_HELD = "message_held"
    ACTOR_MAY_RAISE = "actor_may_raise"
    LOWERING_BY_ACTOR_WHO_MAY_LOWER = "lowering_by_actor_who_may_lower"


def _lowering_allowed(r: Request) -> bool:
    return r.actor_may_lower and r.new_mode is not None and not is_raise(r.mode, r.new_mode)


CONDITIONS: dict[Condition, Callable[[Request], bool]] = {
    Condition.ALWAYS: lambda r: True,
    Condition.ALL_RECIPIENTS_ALLOWLISTED: lambda r: all_allowlisted(r.recipients, r.allowlist),
    Condition.MESSAGE_HELD: lambda r: r.message_held,
    Condition.ACTOR_MAY_RAISE: lambda r: r.actor_may_raise,
    Condition.LOWERING_BY_ACTOR_WHO_MAY_LOWER: _lowering_allowed,
}


@dataclass(frozen=True)
class Rule:
    name: str
    actions: frozenset[Action]
    modes: frozenset[OversightMode]
    condition: Condition
    verdict: Verdict
    reason: str
    monitor_copy: bool = False


_OUT = frozenset({Action.SEND, Action.REPLY})
_ALL = frozenset(OversightMode)
M = OversightMode


def _rule(
    name: str,
    actions: frozenset[Action] | Action,
    modes: frozenset[OversightMode] | OversightMode,
    condition: Condition,
    verdict: Verdict,
    reason: str,
    *,
    monitor_copy: bool = False,
) -> Rule:
    acts = actions if isinstance(actions, frozenset) else frozenset({actions})
    mds = modes if isinstance(modes, frozenset) else frozenset({modes})
    return Rule(name, acts, mds, condition, verdict, reason, monitor_copy)


#: The oversight table. ``spec/oversight.toml`` states the same rows in the same order.
RULES: tuple[Rule, ...] = (
    _rule("read_only_refuses_send", _OUT, M.READ_ONLY, Condition.ALWAYS, Verdict.DENY,
          "read_only mailboxes never send"),
    _rule("gated_all_holds_send", _OUT, M.GATED_ALL, Condition.ALWAYS, Verdict.HOLD,
          "gated_all: every outbound message waits for a reviewer"),
    _rule("gated_send_allowlisted", _OUT, M.GATED_SEND, Condition.ALL_RECIPIENTS_ALLOWLISTED,
          Verdict.ALLOW, "gated_send: every recipient is on the mailbox allowlist"),
    _rule("gated_send_holds", _OUT, M.GATED_SEND, Condition.ALWAYS, Verdict.HOLD,
          "gated_send: a recipient is not on the allowlist, so a reviewer decides"),
    _rule("monitored_sends_with_copy", _OUT, M.MONITORED, Condition.ALWAYS, Verdict.ALLOW,
          "monitored: sent, with one copy to the oversight address", monitor_copy=True),
    _rule("autonomous_sends", _OUT, M.AUTONOMOUS, Condition.ALWAYS, Verdict.ALLOW,
          "autonomous: sent"),
    _rule("read_only_refuses_release", Action.RELEASE, M.READ_ONLY, Condition.ALWAYS,
          Verdict.DENY, "read_only mailboxes never send, not even mail approved earlier"),
    _rule("release_approved", Action.RELEASE, _ALL, Condition.ALWAYS, Verdict.ALLOW,
          "an approved message is not re-gated by a later mode change"),
    _rule("gated_all_holds_inbound", Action.INBOUND, M.GATED_ALL, Condition.ALWAYS,
          Verdict.HOLD, "gated_all: inbound mail waits for a reviewer before the agent sees it"),
    _rule("inbound_delivered", Action.INBOUND, _ALL, Condition.ALWAYS, Verdict.ALLOW,
          "inbound mail is delivered"),
    _rule("held_message_hidden", Action.READ, _ALL, Condition.MESSAGE_HELD, Verdict.DENY,
          "the message is held for review"),
    _rule("read_allowed", Action.READ, _ALL, Condition.ALWAYS, Verdict.ALLOW,
          "the message is readable"),
    _rule("overseer_sets_mode", Action.MODE_CHANGE, _ALL, Condition.ACTOR_MAY_RAISE,
          Verdict.ALLOW, "an unrestricted admin or oversight key may set any mode"),
    _rule("agent_lowers_mode", Action.MODE_CHANGE, _ALL,
          Condition.LOWERING_BY_ACTOR_WHO_MAY_LOWER, Verdict.ALLOW,
          "the mailbox's own key may keep or lower its autonomy"),
    _rule("agent_cannot_raise", Action.MODE_CHANGE, _ALL, Condition.ALWAYS, Verdict.DENY,
          "only an unrestricted admin or oversight key raises autonomy, and only they or "
          "the mailbox's own key lower it; an agent key can request an upgrade instead"),
)  # fmt: skip

DEFAULT_RULE = "no_rule_matched"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    rule: str
    reason: str
    monitor_copy: bool = False


def _matches(rule: Rule, r: Request) -> bool:
    return r.action in rule.actions and r.mode in rule.modes and CONDITIONS[rule.condition](r)


def _is_outbound(r: Request) -> bool:
    return r.action in _OUT


@icontract.require(
    lambda request: (request.action is Action.MODE_CHANGE) == (request.new_mode is not None)
)
@icontract.ensure(
    lambda request, result: (
        not (
            (_is_outbound(request) or request.action is Action.RELEASE)
            and request.mode is M.READ_ONLY
        )
        or result.verdict is Verdict.DENY
    ),
    "P2: read_only never produces a sendable message",
)
@icontract.ensure(
    lambda request, result: (
        not (
            _is_outbound(request)
            and (
                request.mode is M.GATED_ALL
                or (
                    request.mode is M.GATED_SEND
                    and not all_allowlisted(request.recipients, request.allowlist)
                )
            )
        )
        or result.verdict is Verdict.HOLD
    ),
    "P1: gated outbound is held",
)
@icontract.ensure(
    lambda request, result: (
        result.monitor_copy == (_is_outbound(request) and request.mode is M.MONITORED)
    ),
    "P4: exactly monitored sends carry a copy",
)
@icontract.ensure(
    lambda request, result: (
        not (request.action is Action.INBOUND and request.mode is M.GATED_ALL)
        or result.verdict is Verdict.HOLD
    ),
    "P3: gated_all inbound is held",
)
@icontract.ensure(
    lambda request, result: (
        not (
            request.action is Action.MODE_CHANGE
            and request.new_mode is not None
            and is_raise(request.mode, request.new_mode)
            and not request.actor_may_raise
        )
        or result.verdict is Verdict.DENY
    ),
    "P5: only unrestricted overseers raise autonomy",
)
@icontract.ensure(
    lambda request, result: (
        not (
            request.action is Action.MODE_CHANGE
            and result.verdict is Verdict.ALLOW
            and not request.actor_may_raise
        )
        or request.actor_may_lower
    ),
    "only those who may lower change a mode without the right to raise",
)
@icontract.ensure(
    lambda request, result: (
        not (request.action is Action.READ and request.message_held)
        or result.verdict is Verdict.DENY
    )
)
def decide(request: Request) -> Decision:
    """The first matching rule decides; the Decision names it."""
    for rule in RULES:
        if _matches(rule, request):
            return Decision(rule.verdict, rule.name, rule.reason, rule.monitor_copy)
    return Decision(Verdict.DENY, DEFAULT_RULE, "no rule allows this")
