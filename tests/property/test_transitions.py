"""Every (state, command) pair of every lifecycle against its transition table.

For the mailbox, outbound, inbound and approval lifecycles: a pair in TRANSITIONS succeeds
and lands in the table's target (or one of its targets); a pair not in TRANSITIONS raises
IllegalTransition naming the state and the command, and the input is left as it was (equal
to a copy taken before, and ``accepts`` says no). Hypothesis samples the pairs; a plain
parametrize enumerates all of them too, so none is left to chance. The tables themselves are
checked against spec/ in tests/unit/test_spec_tables.py, and here against the rules of
PRODUCT.md they must never break (P1, P3, P7, P11, decided once).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from multimail_core import approval, inbound, mailbox, outbound
from multimail_core.addresses import parse_address
from multimail_core.authorization import Key, Scope
from multimail_core.errors import IllegalTransition
from multimail_core.modes import OversightMode

NOW = 1_700_000_000_000
PAST, FUTURE = NOW - 60_000, NOW + 60_000
ACCOUNT = "acc_" + "0" * 25 + "1"
MAILBOX = "mbx_" + "0" * 25 + "1"
MESSAGE = "msg_" + "0" * 25 + "2"
APPROVAL = "apr_" + "0" * 25 + "3"
REVIEWER = Key("key_reviewer", ACCOUNT, frozenset({Scope.OVERSIGHT}))
EDIT = approval.Content("edited", "edited body", None)


@dataclass(frozen=True)
class Lifecycle:
    """One state machine: how to build a value in a status, its commands, its ``apply``."""

    name: str
    statuses: tuple[Any, ...]
    commands: tuple[Any, ...]
    transitions: dict[tuple[Any, type], Any]
    build: Callable[[Any, int | None], Any]
    apply: Callable[[Any, Any], Any]
    accepts: Callable[[Any, Any], bool] | None


def _mailbox(status: mailbox.Status, _send_at: int | None) -> mailbox.Mailbox:
    box, _ = mailbox.create(
        MAILBOX,
        ACCOUNT,
        parse_address("agent@agents.test"),
        display_name="Agent",
        mode=OversightMode.GATED_SEND,
        webhook_url=None,
        now=PAST,
    )
    ended = PAST if status is mailbox.Status.DECOMMISSIONED else None
    return replace(box, status=status, decommissioned_at=ended)


_ATTEMPTED = {"sending", "sent", "delivered", "deferred", "bounced", "failed"}
_HANDED_OVER = {"sent", "delivered", "bounced"}


def _outbound(status: outbound.Status, send_at: int | None) -> outbound.Outbound:
    return outbound.Outbound(
        id=MESSAGE,
        mailbox_id=MAILBOX,
        account_id=ACCOUNT,
        thread_id="thr_" + "0" * 25 + "4",
        created_by="key_agent",
        recipients=("ann@ok.test",),
        subject="hello",
        body_text="hi",
        body_html=None,
        status=status,
        monitored=False,
        created_at=PAST,
        send_at=send_at,
        approval_id=APPROVAL if status is outbound.Status.PENDING_APPROVAL else None,
        attempts=1 if status.value in _ATTEMPTED else 0,
        handoffs=1 if status.value in _HANDED_OVER else 0,
    )


def _inbound(status: inbound.Status, _send_at: int | None) -> inbound.Inbound:
    return inbound.Inbound(
        id=MESSAGE,
        mailbox_id=MAILBOX,
        account_id=ACCOUNT,
        thread_id="thr_" + "0" * 25 + "4",
        sender="bob@example.com",
        subject="hi",
        kind=inbound.Kind.PERSONAL,
        status=status,
        received_at=PAST,
        approval_id=APPROVAL,
    )


def _approval(status: approval.Status, _send_at: int | None) -> approval.Approval:
    decided = status is not approval.Status.PENDING
    return approval.Approval(
        id=APPROVAL,
        account_id=ACCOUNT,
        mailbox_id=MAILBOX,
        message_id=MESSAGE,
        direction=approval.Direction.OUTBOUND,
        created_by="key_agent",
        original=approval.Content("hello", "hi", None),
        created_at=PAST,
        status=status,
        decided_by="key_earlier_reviewer" if decided else None,
        decided_at=PAST if decided else None,
    )


LIFECYCLES = (
    Lifecycle(
        "mailbox",
        tuple(mailbox.Status),
        (
            mailbox.Suspend(),
            mailbox.Resume(),
            mailbox.Decommission(),
            mailbox.ChangeMode(OversightMode.AUTONOMOUS, "key_admin"),
            mailbox.ChangeMode(OversightMode.READ_ONLY, "key_agent"),
            mailbox.Configure(display_name="Renamed", webhook_url="https://hooks.example/x"),
            mailbox.Configure(clear_webhook=True),
            mailbox.SetAllowlist(frozenset({"*@ok.test"})),
        ),
        mailbox.TRANSITIONS,
        _mailbox,
        lambda value, command: mailbox.apply(value, command, now=NOW),
        mailbox.accepts,
    ),
    Lifecycle(
        "outbound",
        tuple(outbound.Status),
        (
            outbound.Approve(APPROVAL, "key_reviewer"),
            outbound.Approve(APPROVAL, "key_reviewer", ("edited", "edited body", None)),
            outbound.Reject(APPROVAL, "key_reviewer", "no"),
            outbound.Cancel(),
            outbound.Release(),
            outbound.Claim(),
            outbound.RecordAttempt(250),
            outbound.RecordAttempt(451, "4.2.2 mailbox full"),
            outbound.RecordAttempt(550, "5.1.1 user unknown"),
            outbound.Interrupt(),
            outbound.ConfirmDelivery(),
            outbound.RecordBounce(("ann@ok.test",), "5.1.1 user unknown"),
            outbound.RecordComplaint(("ann@ok.test",)),
        ),
        outbound.TRANSITIONS,
        _outbound,
        lambda value, command: outbound.apply(value, command, now=NOW),
        outbound.accepts,
    ),
    Lifecycle(
        "inbound",
        tuple(inbound.Status),
        (
            inbound.Approve(APPROVAL, "key_reviewer"),
            inbound.Reject(APPROVAL, "key_reviewer", "spam"),
            inbound.MarkRead(),
            inbound.MarkUnread(),
            inbound.Archive(),
            inbound.MarkReplied(MESSAGE),
        ),
        inbound.TRANSITIONS,
        _inbound,
        lambda value, command: inbound.apply(value, command, now=NOW),
        inbound.accepts,
    ),
    Lifecycle(
        "approval",
        tuple(approval.Status),
        (
            approval.Approve(REVIEWER),
            approval.Approve(REVIEWER, EDIT),
            approval.Reject(REVIEWER, "no"),
        ),
        approval.TRANSITIONS,
        _approval,
        lambda value, command: approval.apply(value, command, now=NOW),
        None,  # the approval module has no ``accepts``; its table is the whole answer
    ),
)
BY_NAME = {lc.name: lc for lc in LIFECYCLES}


def targets(lc: Lifecycle, status: Any, command: Any) -> frozenset[Any]:
    target = lc.transitions[(status, type(command))]
    return target if isinstance(target, frozenset) else frozenset({target})


def check_pair(lc: Lifecycle, status: Any, command: Any, send_at: int | None) -> None:
    value = lc.build(status, send_at)
    before = copy.deepcopy(value)
    legal = (status, type(command)) in lc.transitions
    if lc.accepts is not None:
        assert lc.accepts(value, command) is legal
    if legal:
        after, _ = lc.apply(value, command)
        assert after.id == value.id
        assert after.status in targets(lc, status, command), (status, command, after.status)
    else:
        with pytest.raises(IllegalTransition) as raised:
            lc.apply(value, command)
        assert raised.value.state == status.value
        assert raised.value.command == type(command).__name__
    # Frozen values: the input is never changed, legal or not.
    assert value == before


def send_at_for(status: Any, command: Any, send_at: int | None) -> int | None:
    """A scheduled message always has a send_at; it is released only once that is reached
    (a precondition of outbound.apply, not a table row)."""
    if status is outbound.Status.SCHEDULED:
        return PAST if isinstance(command, outbound.Release) else (send_at or FUTURE)
    return send_at


@pytest.mark.parametrize("name", BY_NAME)
@given(data=st.data(), send_at=st.sampled_from([None, PAST, FUTURE]))
def test_any_state_and_command_follows_the_table(name: str, data: Any, send_at: int | None) -> None:
    lc = BY_NAME[name]
    status = data.draw(st.sampled_from(lc.statuses), label="status")
    command = data.draw(st.sampled_from(lc.commands), label="command")
    assume(not (status is outbound.Status.SCHEDULED and send_at is None))
    check_pair(lc, status, command, send_at_for(status, command, send_at))


ALL_PAIRS = [
    pytest.param(lc, status, command, id=f"{lc.name}-{status.value}-{type(command).__name__}-{i}")
    for lc in LIFECYCLES
    for i, (status, command) in enumerate(itertools.product(lc.statuses, lc.commands))
]


@pytest.mark.parametrize(("lc", "status", "command"), ALL_PAIRS)
def test_every_pair_follows_the_table(lc: Lifecycle, status: Any, command: Any) -> None:
    check_pair(lc, status, command, send_at_for(status, command, None))


@pytest.mark.parametrize("lc", LIFECYCLES, ids=lambda lc: lc.name)
def test_the_table_names_only_known_statuses_and_commands(lc: Lifecycle) -> None:
    command_types = {type(c) for c in lc.commands}
    for (status, command_type), target in lc.transitions.items():
        assert status in lc.statuses
        assert command_type in command_types, f"{command_type} has no sample command"
        assert all(
            t in lc.statuses for t in (target if isinstance(target, frozenset) else {target})
        )
    # Every command can do something somewhere, and every status is mentioned.
    assert command_types == {c for _, c in lc.transitions}
    mentioned = {s for s, _ in lc.transitions} | {
        t
        for target in lc.transitions.values()
        for t in (target if isinstance(target, frozenset) else {target})
    }
    assert mentioned == set(lc.statuses)


def product_rule_breaches(tables: dict[str, dict[tuple[Any, type], Any]]) -> list[str]:
    """What PRODUCT.md says the tables may never allow, checked without trusting them."""
    o, i = outbound.Status, inbound.Status
    bad = []
    for (status, command), target in tables["outbound"].items():
        lands = target if isinstance(target, frozenset) else {target}
        if o.SENDING in lands and status not in (o.QUEUED, o.DEFERRED):
            bad.append(f"P7: {status.value} + {command.__name__} reaches sending")
        if o.SENT in lands and status not in (o.SENDING, o.SENT):
            bad.append(f"P7: {status.value} + {command.__name__} reaches sent")
        if status is o.PENDING_APPROVAL and command not in (
            outbound.Approve,
            outbound.Reject,
            outbound.Cancel,
        ):
            bad.append(f"P1: a held message leaves through {command.__name__}")
        if status in (o.REJECTED, o.CANCELLED, o.FAILED):
            bad.append(f"§4: {status.value} is final but accepts {command.__name__}")
        if command is outbound.Cancel and status not in CANCELLABLE:
            bad.append(f"§4: cancel after sending began ({status.value})")
    for (status, command), _ in tables["inbound"].items():
        if status in inbound.HIDDEN and command not in (inbound.Approve, inbound.Reject):
            bad.append(f"P3: hidden inbound ({status.value}) accepts {command.__name__}")
        if status is i.REJECTED:
            bad.append(f"P3: a rejected message accepts {command.__name__}")
    for (status, command), _ in tables["mailbox"].items():
        if status is mailbox.Status.DECOMMISSIONED:
            bad.append(f"P11: a decommissioned mailbox accepts {command.__name__}")
    for (status, command), _ in tables["approval"].items():
        if status is not approval.Status.PENDING:
            bad.append(f"§5: a decided approval accepts {command.__name__}")
    return bad


CANCELLABLE = (
    outbound.Status.PENDING_APPROVAL,
    outbound.Status.SCHEDULED,
    outbound.Status.QUEUED,
    outbound.Status.DEFERRED,
)


def test_the_tables_keep_the_product_rules() -> None:
    assert product_rule_breaches({lc.name: lc.transitions for lc in LIFECYCLES}) == []


def test_a_table_that_breaks_a_product_rule_is_caught() -> None:
    tables = {lc.name: dict(lc.transitions) for lc in LIFECYCLES}
    tables["outbound"][(outbound.Status.CANCELLED, outbound.Claim)] = frozenset(
        {outbound.Status.SENDING}
    )
    tables["mailbox"][(mailbox.Status.DECOMMISSIONED, mailbox.Resume)] = mailbox.Status.ACTIVE
    assert [b.split(":")[0] for b in product_rule_breaches(tables)] == ["P7", "§4", "P11"]


def test_the_pair_check_can_fail() -> None:
    """A table that allowed one more pair would be caught: the pair raises, not succeeds."""
    lc = BY_NAME["outbound"]
    lying = {**lc.transitions, (outbound.Status.CANCELLED, outbound.Claim): frozenset()}
    with pytest.raises(IllegalTransition):
        check_pair(
            replace(lc, transitions=lying, accepts=None),
            outbound.Status.CANCELLED,
            outbound.Claim(),
            None,
        )
