"""Mailbox lifecycle: active, suspended, decommissioned; address quarantine.

Rule 1: every legal (status, command) pair is in TRANSITIONS; anything else raises
        IllegalTransition and changes nothing.
Rule 2: only an active mailbox sends or receives; decommissioned is terminal (P11).
Rule 3: a decommissioned address is not given to another account for QUARANTINE_MS after
        the decommission; the same account may take it back at once.
Rule 4: ``apply`` does not judge who asks; ``workflows`` consults authorization and
        oversight first. ``apply`` only enforces the table and the values.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace

import icontract

from multimail_core.addresses import Address
from multimail_core.errors import IllegalTransition
from multimail_core.events import (
    Event,
    MailboxCreated,
    MailboxDecommissioned,
    MailboxResumed,
    MailboxSuspended,
    MailboxUpdated,
    ModeChanged,
)
from multimail_core.modes import OversightMode

DAY_MS = 86_400_000
QUARANTINE_MS = 30 * DAY_MS
MAX_DISPLAY_NAME = 200


class Status(enum.Enum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    DECOMMISSIONED = "decommissioned"


@icontract.invariant(
    lambda self: (self.status is Status.DECOMMISSIONED) == (self.decommissioned_at is not None)
)
@icontract.invariant(lambda self: len(self.display_name) <= MAX_DISPLAY_NAME)
@dataclass(frozen=True)
class Mailbox:
    id: str
    account_id: str
    address: Address
    display_name: str
    mode: OversightMode
    status: Status
    allowlist: frozenset[str]
    webhook_url: str | None
    created_at: int
    decommissioned_at: int | None = None


# --- commands ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Suspend:
    pass


@dataclass(frozen=True)
class Resume:
    pass


@dataclass(frozen=True)
class Decommission:
    pass


@dataclass(frozen=True)
class ChangeMode:
    mode: OversightMode
    by: str


@dataclass(frozen=True)
class Configure:
    """Change presentation and delivery settings; ``None`` leaves a field as it is."""

    display_name: str | None = None
    webhook_url: str | None = None
    clear_webhook: bool = False


@dataclass(frozen=True)
class SetAllowlist:
    patterns: frozenset[str]


Command = Suspend | Resume | Decommission | ChangeMode | Configure | SetAllowlist

_A, _S, _D = Status.ACTIVE, Status.SUSPENDED, Status.DECOMMISSIONED

#: (status, command type) → status. ``spec/mailbox.toml`` states the same table.
TRANSITIONS: dict[tuple[Status, type[Command]], Status] = {
    (_A, Suspend): _S,
    (_S, Resume): _A,
    (_A, Decommission): _D,
    (_S, Decommission): _D,
    (_A, ChangeMode): _A,
    (_S, ChangeMode): _S,
    (_A, Configure): _A,
    (_S, Configure): _S,
    (_A, SetAllowlist): _A,
    (_S, SetAllowlist): _S,
}


@icontract.ensure(
    lambda mailbox, command, result: result == ((mailbox.status, type(command)) in TRANSITIONS)
)
def accepts(mailbox: Mailbox, command: Command) -> bool:
    return (mailbox.status, type(command)) in TRANSITIONS


def _event(before: Mailbox, after: Mailbox, command: Command) -> Event:
    mid = before.id
    if isinstance(command, Suspend):
        return MailboxSuspended(mid)
    if isinstance(command, Resume):
        return MailboxResumed(mid)
    if isinstance(command, Decommission):
        return MailboxDecommissioned(mid, str(before.address))
    if isinstance(command, ChangeMode):
        return ModeChanged(mid, before.mode, after.mode, command.by)
    if isinstance(command, SetAllowlist):
        return MailboxUpdated(mid, ("allowlist",))
    changed = tuple(
        name
        for name in ("display_name", "webhook_url")
        if getattr(before, name) != getattr(after, name)
    )
    return MailboxUpdated(mid, changed)


def _updated(mailbox: Mailbox, command: Command, status: Status, now: int) -> Mailbox:
    if isinstance(command, Decommission):
        return replace(mailbox, status=status, decommissioned_at=now)
    if isinstance(command, ChangeMode):
        return replace(mailbox, mode=command.mode)
    if isinstance(command, SetAllowlist):
        return replace(mailbox, allowlist=command.patterns)
    if isinstance(command, Configure):
        hook = None if command.clear_webhook else (command.webhook_url or mailbox.webhook_url)
        name = mailbox.display_name if command.display_name is None else command.display_name
        return replace(mailbox, display_name=name, webhook_url=hook)
    return replace(mailbox, status=status)


@icontract.require(
    lambda command: (
        not isinstance(command, Configure)
        or command.display_name is None
        or len(command.display_name) <= MAX_DISPLAY_NAME
    )
)
@icontract.ensure(lambda mailbox, result: result[0].id == mailbox.id)
@icontract.ensure(lambda mailbox, result: result[0].account_id == mailbox.account_id)
@icontract.ensure(lambda mailbox, result: result[0].address == mailbox.address)
@icontract.ensure(lambda result: len(result[1]) == 1, "P12: one event per change")
@icontract.ensure(
    lambda mailbox, command, result: (
        result[0].status is TRANSITIONS[(mailbox.status, type(command))]
    )
)
def apply(mailbox: Mailbox, command: Command, *, now: int) -> tuple[Mailbox, tuple[Event, ...]]:
    """Apply one command; return the new mailbox and its one event.

    :raises IllegalTransition: when the pair is not in TRANSITIONS.
    """
    target = TRANSITIONS.get((mailbox.status, type(command)))
    if target is None:
        raise IllegalTransition("mailbox", mailbox.status.value, type(command).__name__)
    after = _updated(mailbox, command, target, now)
    return after, (_event(mailbox, after, command),)


@icontract.ensure(lambda mailbox, result: result == (mailbox.status is Status.ACTIVE))
def can_send(mailbox: Mailbox) -> bool:
    """Only an active mailbox sends; suspended and decommissioned ones do not."""
    return mailbox.status is Status.ACTIVE


@icontract.ensure(lambda mailbox, result: result == (mailbox.status is Status.ACTIVE))
def can_receive(mailbox: Mailbox) -> bool:
    """Only an active mailbox accepts mail (PRODUCT §6); senders get 550 5.1.1 otherwise."""
    return mailbox.status is Status.ACTIVE


@dataclass(frozen=True)
class Holder:
    """A mailbox that holds or held an address: enough to judge availability."""

    account_id: str
    status: Status
    decommissioned_at: int | None


class Availability(enum.Enum):
    AVAILABLE = "available"
    TAKEN = "taken"
    QUARANTINED = "quarantined"


@icontract.ensure(
    lambda holders, result: (
        result is not Availability.AVAILABLE
        or all(h.status is Status.DECOMMISSIONED for h in holders)
    ),
    "an address is never held by two live mailboxes",
)
@icontract.ensure(
    lambda holders, account_id, now, result: (
        result is not Availability.AVAILABLE
        or all(
            h.account_id == account_id
            or h.decommissioned_at is None
            or now - h.decommissioned_at >= QUARANTINE_MS
            for h in holders
        )
    ),
    "P11: quarantine",
)
def address_availability(holders: Sequence[Holder], account_id: str, *, now: int) -> Availability:
    """May ``account_id`` take an address whose past and present holders are ``holders``?"""
    for h in holders:
        if h.status is not Status.DECOMMISSIONED:
            return Availability.TAKEN
    for h in holders:
        if (
            h.account_id != account_id
            and h.decommissioned_at is not None
            and now - h.decommissioned_at < QUARANTINE_MS
        ):
            return Availability.QUARANTINED
    return Availability.AVAILABLE


@icontract.require(lambda display_name: len(display_name) <= MAX_DISPLAY_NAME)
@icontract.ensure(lambda result: result[0].status is Status.ACTIVE)
@icontract.ensure(lambda mode, result: result[0].mode is mode)
@icontract.ensure(lambda result: len(result[1]) == 1)
def create(
    mailbox_id: str,
    account_id: str,
    address: Address,
    *,
    display_name: str,
    mode: OversightMode,
    webhook_url: str | None,
    now: int,
) -> tuple[Mailbox, tuple[Event, ...]]:
    """A new, active mailbox with an empty allowlist; creation is its one event."""
    mailbox = Mailbox(
        id=mailbox_id,
        account_id=account_id,
        address=address,
        display_name=display_name,
        mode=mode,
        status=Status.ACTIVE,
        allowlist=frozenset(),
        webhook_url=webhook_url,
        created_at=now,
    )
    return mailbox, (MailboxCreated(mailbox_id, str(address), mode),)
