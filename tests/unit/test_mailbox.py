"""Scenarios for the mailbox lifecycle and address quarantine (PRODUCT.md §3, P11, P12)."""

from __future__ import annotations

import pytest

from multimail_core import mailbox
from multimail_core.errors import IllegalTransition
from multimail_core.events import (
    MailboxCreated,
    MailboxDecommissioned,
    MailboxResumed,
    MailboxSuspended,
    MailboxUpdated,
    ModeChanged,
)
from multimail_core.mailbox import (
    QUARANTINE_MS,
    Availability,
    ChangeMode,
    Configure,
    Decommission,
    Holder,
    Resume,
    SetAllowlist,
    Status,
    Suspend,
    address_availability,
    apply,
    can_receive,
    can_send,
)
from multimail_core.modes import OversightMode
from tests.unit.conftest import ACC_A, ACC_B, BOX_ADDRESS, DAY, MBX_1, NOW, addr, box

M = OversightMode
HOOK = "https://agent.example/hooks/mail"


def test_create_returns_an_active_mailbox_and_one_created_event() -> None:
    created, events = mailbox.create(
        MBX_1,
        ACC_A,
        addr(BOX_ADDRESS),
        display_name="Support agent",
        mode=M.MONITORED,
        webhook_url=HOOK,
        now=NOW,
    )
    assert created == mailbox.Mailbox(
        id=MBX_1,
        account_id=ACC_A,
        address=addr(BOX_ADDRESS),
        display_name="Support agent",
        mode=M.MONITORED,
        status=Status.ACTIVE,
        allowlist=frozenset(),
        webhook_url=HOOK,
        created_at=NOW,
        decommissioned_at=None,
    )
    assert events == (MailboxCreated(MBX_1, BOX_ADDRESS, M.MONITORED),)
    assert events[0].TYPE == "mailbox.created"


# --- suspend / resume / decommission -------------------------------------------------------------


def test_suspend_then_resume() -> None:
    suspended, events = apply(box(), Suspend(), now=NOW)
    assert suspended.status is Status.SUSPENDED
    assert events == (MailboxSuspended(MBX_1),)
    assert events[0].TYPE == "mailbox.updated"

    resumed, events = apply(suspended, Resume(), now=NOW + 1)
    assert resumed.status is Status.ACTIVE
    assert events == (MailboxResumed(MBX_1),)


def test_suspending_a_suspended_mailbox_is_illegal() -> None:
    with pytest.raises(IllegalTransition) as caught:
        apply(box(status=Status.SUSPENDED), Suspend(), now=NOW)
    assert (caught.value.entity, caught.value.state, caught.value.command) == (
        "mailbox",
        "suspended",
        "Suspend",
    )


def test_resuming_an_active_mailbox_is_illegal() -> None:
    with pytest.raises(IllegalTransition) as caught:
        apply(box(), Resume(), now=NOW)
    assert caught.value.state == "active"


@pytest.mark.parametrize("status", [Status.ACTIVE, Status.SUSPENDED])
def test_decommission_records_when_and_names_the_address(status: Status) -> None:
    gone, events = apply(box(status=status), Decommission(), now=NOW)
    assert gone.status is Status.DECOMMISSIONED
    assert gone.decommissioned_at == NOW
    assert gone.address == addr(BOX_ADDRESS)
    assert events == (MailboxDecommissioned(MBX_1, BOX_ADDRESS),)
    assert events[0].TYPE == "mailbox.decommissioned"


@pytest.mark.parametrize(
    "command",
    [
        Suspend(),
        Resume(),
        Decommission(),
        ChangeMode(M.READ_ONLY, "key_admin"),
        Configure(display_name="Back again"),
        SetAllowlist(frozenset({"*@example.com"})),
    ],
    ids=lambda c: type(c).__name__,
)
def test_decommissioned_is_terminal(command: mailbox.Command) -> None:
    gone, _ = apply(box(), Decommission(), now=NOW)
    with pytest.raises(IllegalTransition) as caught:
        apply(gone, command, now=NOW + 1)
    assert caught.value.state == "decommissioned"
    assert caught.value.command == type(command).__name__
    assert mailbox.accepts(gone, command) is False


@pytest.mark.parametrize(
    ("status", "sends", "receives"),
    [
        (Status.ACTIVE, True, True),
        (Status.SUSPENDED, False, False),
        (Status.DECOMMISSIONED, False, False),
    ],
)
def test_who_sends_and_who_receives(status: Status, sends: bool, receives: bool) -> None:
    b = box(status=status)
    assert (can_send(b), can_receive(b)) == (sends, receives)


# --- mode and allowlist --------------------------------------------------------------------------


def test_change_mode_records_old_new_and_actor() -> None:
    changed, events = apply(box(M.MONITORED), ChangeMode(M.GATED_ALL, "key_admin"), now=NOW)
    assert changed.mode is M.GATED_ALL
    assert changed.status is Status.ACTIVE
    assert events == (ModeChanged(MBX_1, M.MONITORED, M.GATED_ALL, "key_admin"),)


def test_change_mode_while_suspended_keeps_it_suspended() -> None:
    changed, _ = apply(box(status=Status.SUSPENDED), ChangeMode(M.READ_ONLY, "k"), now=NOW)
    assert (changed.mode, changed.status) == (M.READ_ONLY, Status.SUSPENDED)


def test_set_allowlist_replaces_the_whole_list() -> None:
    start = box(allowlist=frozenset({"old@example.com"}))
    changed, events = apply(start, SetAllowlist(frozenset({"*@partner.example"})), now=NOW)
    assert changed.allowlist == frozenset({"*@partner.example"})
    assert events == (MailboxUpdated(MBX_1, ("allowlist",)),)


# --- configure -----------------------------------------------------------------------------------


def test_configure_display_name_keeps_the_webhook() -> None:
    changed, events = apply(box(webhook_url=HOOK), Configure(display_name="Billing"), now=NOW)
    assert (changed.display_name, changed.webhook_url) == ("Billing", HOOK)
    assert events == (MailboxUpdated(MBX_1, ("display_name",)),)


def test_configure_webhook_keeps_the_display_name() -> None:
    new_hook = "https://other.example/hook"
    changed, events = apply(box(webhook_url=HOOK), Configure(webhook_url=new_hook), now=NOW)
    assert (changed.display_name, changed.webhook_url) == ("Support agent", new_hook)
    assert events == (MailboxUpdated(MBX_1, ("webhook_url",)),)


def test_configure_both_fields_reports_both() -> None:
    changed, events = apply(box(), Configure(display_name="B", webhook_url=HOOK), now=NOW)
    assert (changed.display_name, changed.webhook_url) == ("B", HOOK)
    assert events == (MailboxUpdated(MBX_1, ("display_name", "webhook_url")),)


def test_clear_webhook_removes_it_and_keeps_the_name() -> None:
    changed, events = apply(box(webhook_url=HOOK), Configure(clear_webhook=True), now=NOW)
    assert (changed.display_name, changed.webhook_url) == ("Support agent", None)
    assert events == (MailboxUpdated(MBX_1, ("webhook_url",)),)


def test_clear_webhook_wins_over_a_new_url() -> None:
    changed, _ = apply(
        box(webhook_url=HOOK), Configure(webhook_url=HOOK, clear_webhook=True), now=0
    )
    assert changed.webhook_url is None


def test_empty_display_name_is_a_value_not_an_omission() -> None:
    changed, _ = apply(box(), Configure(display_name=""), now=NOW)
    assert changed.display_name == ""


def test_configure_in_suspended_keeps_status() -> None:
    changed, _ = apply(box(status=Status.SUSPENDED), Configure(display_name="X"), now=NOW)
    assert changed.status is Status.SUSPENDED


# --- address availability -------------------------------------------------------------------------


def live(account: str = ACC_B, status: Status = Status.ACTIVE) -> Holder:
    return Holder(account, status, None)


def gone(account: str, at: int) -> Holder:
    return Holder(account, Status.DECOMMISSIONED, at)


def test_an_address_nobody_held_is_available() -> None:
    assert address_availability([], ACC_A, now=NOW) is Availability.AVAILABLE


@pytest.mark.parametrize("status", [Status.ACTIVE, Status.SUSPENDED])
@pytest.mark.parametrize("holder_account", [ACC_A, ACC_B])
def test_a_live_holder_makes_it_taken(status: Status, holder_account: str) -> None:
    holders = [live(holder_account, status)]
    assert address_availability(holders, ACC_A, now=NOW) is Availability.TAKEN


def test_live_holder_wins_over_an_old_decommissioned_one() -> None:
    holders = [gone(ACC_A, NOW - 90 * DAY), live(ACC_B)]
    assert address_availability(holders, ACC_A, now=NOW) is Availability.TAKEN


def test_another_accounts_address_is_quarantined_for_thirty_days() -> None:
    holders = [gone(ACC_B, NOW - DAY)]
    assert address_availability(holders, ACC_A, now=NOW) is Availability.QUARANTINED


def test_the_same_account_may_take_its_address_back_at_once() -> None:
    holders = [gone(ACC_A, NOW)]
    assert address_availability(holders, ACC_A, now=NOW) is Availability.AVAILABLE


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (QUARANTINE_MS - 1, Availability.QUARANTINED),
        (QUARANTINE_MS, Availability.AVAILABLE),
        (31 * DAY, Availability.AVAILABLE),
    ],
)
def test_quarantine_ends_after_thirty_days(age: int, expected: Availability) -> None:
    assert QUARANTINE_MS == 30 * DAY
    holders = [gone(ACC_B, NOW - age)]
    assert address_availability(holders, ACC_A, now=NOW) is expected


def test_one_recent_foreign_holder_quarantines_despite_older_ones() -> None:
    holders = [gone(ACC_A, NOW - 2 * DAY), gone(ACC_B, NOW - 40 * DAY), gone(ACC_B, NOW - DAY)]
    assert address_availability(holders, ACC_A, now=NOW) is Availability.QUARANTINED
