"""Scenarios for keys, scopes and the authorization table (PRODUCT.md §3, P6)."""

from __future__ import annotations

import icontract
import pytest

from multimail_core.authorization import (
    OPERATIONS,
    RULES,
    Key,
    Request,
    Scope,
    Target,
    authorize,
    can_lower_autonomy,
    can_raise_autonomy,
    check_scope_set,
    is_agent_key,
    is_overseer,
    is_valid_scope_set,
    require,
)
from multimail_core.errors import InvalidValue, NotPermitted
from tests.unit.conftest import ACC_A, ACC_B, MBX_1, MBX_2, admin_key, agent_key, key


def scopes(*names: str) -> frozenset[Scope]:
    return frozenset(Scope(n) for n in names)


def ask(k: Key, operation: str, account: str = ACC_A, mailbox_id: str | None = None) -> str:
    """The rule that decides ``k`` doing ``operation``; ``"allowed"`` when nothing denies."""
    return authorize(Request(k, OPERATIONS[operation], account, mailbox_id)).rule


# --- scope sets ---------------------------------------------------------------------------


def test_send_plus_oversight_is_refused_because_it_could_approve_its_own_mail() -> None:
    with pytest.raises(InvalidValue) as caught:
        check_scope_set(scopes("send", "oversight"), None)
    assert caught.value.field == "scopes"
    assert "approve" in caught.value.detail
    assert is_valid_scope_set(scopes("send", "oversight"), None) is False


def test_send_plus_oversight_is_refused_even_alongside_admin_and_read() -> None:
    with pytest.raises(InvalidValue, match="approve"):
        check_scope_set(scopes("admin", "send", "oversight", "read"), None)


def test_restricted_admin_is_refused() -> None:
    with pytest.raises(InvalidValue) as caught:
        check_scope_set(scopes("admin"), frozenset({MBX_1}))
    assert caught.value.field == "scopes"
    assert "restricted" in caught.value.detail
    assert is_valid_scope_set(scopes("admin"), frozenset({MBX_1})) is False


def test_empty_scope_set_is_refused() -> None:
    with pytest.raises(InvalidValue, match="at least one scope"):
        check_scope_set(frozenset(), None)
    assert is_valid_scope_set(frozenset(), None) is False


def test_restriction_to_no_mailbox_is_refused() -> None:
    with pytest.raises(InvalidValue) as caught:
        check_scope_set(scopes("send"), frozenset())
    assert caught.value.field == "mailbox_ids"


def test_is_valid_scope_set_agrees_with_check_scope_set_on_an_empty_restriction() -> None:
    assert is_valid_scope_set(scopes("send"), frozenset()) is False


@pytest.mark.parametrize(
    ("names", "mailbox_ids"),
    [
        (("send", "read"), frozenset({MBX_1})),
        (("oversight", "read"), None),
        (("admin", "oversight"), None),
        (("admin", "send", "read"), None),
        (("read",), frozenset({MBX_1, MBX_2})),
    ],
)
def test_valid_scope_sets_pass(names: tuple[str, ...], mailbox_ids: frozenset[str] | None) -> None:
    assert check_scope_set(scopes(*names), mailbox_ids) is None
    assert is_valid_scope_set(scopes(*names), mailbox_ids) is True


def test_a_key_holding_send_and_oversight_cannot_even_be_built() -> None:
    with pytest.raises(icontract.ViolationError):
        key("send", "oversight")


@pytest.mark.parametrize(
    ("names", "overseer"),
    [
        (("admin",), True),
        (("oversight",), True),
        (("oversight", "read"), True),
        (("send",), False),
        (("read",), False),
        (("send", "read"), False),
    ],
)
def test_is_overseer(names: tuple[str, ...], overseer: bool) -> None:
    assert is_overseer(key(*names)) is overseer


def test_is_agent_key_means_restricted_to_mailboxes() -> None:
    assert is_agent_key(agent_key()) is True
    assert is_agent_key(key("send", "read")) is False
    assert is_agent_key(admin_key()) is False


# --- who may move a mailbox along the ladder (P5) -------------------------------------------


@pytest.mark.parametrize(
    ("k", "raise_", "lower_own", "lower_other"),
    [
        pytest.param(admin_key(), True, True, True, id="admin"),
        pytest.param(key("oversight"), True, True, True, id="overseer"),
        pytest.param(key("oversight", mailboxes=(MBX_1,)), False, True, False, id="mbx-overseer"),
        pytest.param(agent_key(mailbox_id=MBX_1), False, True, False, id="agent"),
        pytest.param(key("read", mailboxes=(MBX_1,)), False, True, False, id="agent-reader"),
        pytest.param(key("send", "read"), False, False, False, id="unrestricted-sender"),
        pytest.param(key("read"), False, False, False, id="unrestricted-reader"),
    ],
)
def test_who_may_raise_and_who_may_lower(
    k: Key, raise_: bool, lower_own: bool, lower_other: bool
) -> None:
    assert can_raise_autonomy(k) is raise_
    assert can_lower_autonomy(k, MBX_1) is lower_own
    assert can_lower_autonomy(k, MBX_2) is lower_other


# --- the rules, one scenario each ----------------------------------------------------------


def test_rules_are_walked_in_this_order() -> None:
    assert [r.name for r in RULES] == [
        "key_revoked",
        "server_admin_only",
        "other_account",
        "agent_key_account_operation",
        "other_mailbox",
        "missing_mailbox",
        "missing_scope",
    ]


def test_admin_of_another_account_is_refused_as_other_account() -> None:
    assert ask(admin_key(account=ACC_B), "mailbox.read", ACC_A, MBX_1) == "other_account"
    assert ask(admin_key(account=ACC_B), "mailboxes.list", ACC_A) == "other_account"


def test_server_admin_is_not_cross_tenant() -> None:
    root = key("admin", account=ACC_B, server_admin=True)
    assert ask(root, "messages.read", ACC_A, MBX_1) == "other_account"


def test_agent_key_on_another_mailbox_is_refused_as_other_mailbox() -> None:
    assert ask(agent_key(mailbox_id=MBX_1), "messages.send", ACC_A, MBX_2) == "other_mailbox"
    assert ask(agent_key(mailbox_id=MBX_1), "messages.read", ACC_A, MBX_2) == "other_mailbox"


def test_agent_key_on_its_own_mailbox_is_allowed() -> None:
    assert ask(agent_key(mailbox_id=MBX_1), "messages.send", ACC_A, MBX_1) == "allowed"
    assert ask(agent_key(mailbox_id=MBX_1), "mailbox.read", ACC_A, MBX_1) == "allowed"


@pytest.mark.parametrize(
    "operation",
    ["keys.manage", "mailboxes.create", "audit.read", "suppression.manage", "webhooks.manage"],
)
def test_agent_key_on_an_account_wide_operation_is_refused(operation: str) -> None:
    overseeing_agent = key("oversight", "read", mailboxes=(MBX_1,))
    assert ask(overseeing_agent, operation, ACC_A) == "agent_key_account_operation"


def test_agent_key_cannot_change_the_allowlist_even_of_its_own_mailbox() -> None:
    overseeing_agent = key("oversight", mailboxes=(MBX_1,))
    rule = ask(overseeing_agent, "mailbox.allowlist.change", ACC_A, MBX_1)
    assert rule == "agent_key_account_operation"


def test_agent_key_may_list_in_its_account() -> None:
    assert ask(agent_key(), "mailboxes.list", ACC_A) == "allowed"


@pytest.mark.parametrize(
    ("names", "operation", "mailbox_id"),
    [
        (("read",), "messages.send", MBX_1),
        (("send",), "messages.read", MBX_1),
        (("oversight",), "messages.send", MBX_1),
        (("send", "read"), "oversight.decide", MBX_1),
        (("send", "read"), "mailbox.decommission", MBX_1),
        (("oversight",), "mailbox.decommission", MBX_1),
        (("oversight",), "keys.manage", None),
        (("read",), "mailbox.configure", MBX_1),
    ],
)
def test_missing_scope(names: tuple[str, ...], operation: str, mailbox_id: str | None) -> None:
    assert ask(key(*names), operation, ACC_A, mailbox_id) == "missing_scope"


@pytest.mark.parametrize(
    "operation", sorted(n for n, op in OPERATIONS.items() if op.target is not Target.SERVER)
)
def test_admin_is_allowed_every_operation_in_its_own_account(operation: str) -> None:
    mailbox_id = MBX_1 if OPERATIONS[operation].target is Target.MAILBOX else None
    assert ask(admin_key(), operation, ACC_A, mailbox_id) == "allowed"


def test_revoked_key_is_refused() -> None:
    assert ask(key("read", revoked=True), "messages.read", ACC_A, MBX_1) == "key_revoked"
    assert ask(key("admin", revoked=True), "account.read", ACC_A) == "key_revoked"


def test_server_operation_needs_the_server_admin() -> None:
    assert ask(admin_key(), "accounts.create", ACC_A) == "server_admin_only"
    assert ask(key("admin", server_admin=True), "accounts.create", ACC_A) == "allowed"


def test_server_operation_is_not_bound_to_the_account_of_the_request() -> None:
    root = key("admin", account=ACC_A, server_admin=True)
    assert ask(root, "accounts.create", ACC_B) == "allowed"


def test_mailbox_operation_without_a_mailbox_is_refused() -> None:
    assert ask(admin_key(), "messages.send", ACC_A, None) == "missing_mailbox"


# --- rule order -----------------------------------------------------------------------------


def test_revoked_wins_over_other_account() -> None:
    stranger = key("admin", account=ACC_B, revoked=True)
    assert ask(stranger, "mailbox.read", ACC_A, MBX_1) == "key_revoked"


def test_server_admin_only_wins_over_other_account() -> None:
    assert ask(admin_key(account=ACC_B), "accounts.create", ACC_A) == "server_admin_only"


def test_other_account_wins_over_agent_key_account_operation() -> None:
    foreign_agent = key("oversight", account=ACC_B, mailboxes=(MBX_1,))
    assert ask(foreign_agent, "audit.read", ACC_A) == "other_account"


def test_agent_key_account_operation_wins_over_missing_scope() -> None:
    assert ask(agent_key(), "keys.manage", ACC_A) == "agent_key_account_operation"


def test_other_mailbox_wins_over_missing_scope() -> None:
    reader = key("read", mailboxes=(MBX_1,))
    assert ask(reader, "messages.send", ACC_A, MBX_2) == "other_mailbox"


# --- require ----------------------------------------------------------------------------------


def test_require_raises_not_permitted_naming_the_rule() -> None:
    request = Request(agent_key(), OPERATIONS["messages.send"], ACC_A, MBX_2)
    with pytest.raises(NotPermitted) as caught:
        require(request)
    assert caught.value.rule == "other_mailbox"
    assert caught.value.code == "forbidden"
    assert caught.value.detail == "the key is restricted to other mailboxes"


def test_require_returns_quietly_when_allowed() -> None:
    assert require(Request(agent_key(), OPERATIONS["messages.send"], ACC_A, MBX_1)) is None


def test_decision_reason_is_the_rules_reason() -> None:
    decision = authorize(Request(key("read"), OPERATIONS["messages.send"], ACC_A, MBX_1))
    assert decision.allowed is False
    assert decision.reason == "the key lacks the required scope"
