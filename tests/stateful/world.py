"""One account's whole system, composed from the core's workflows: the thing the stateful and
exhaustive tests drive.

Rule 1: a World is a frozen value. Every operation calls the core and returns a new World, or
        lets the core's MultimailError through, leaving this World as it was.
Rule 2: deterministic: ids come from a counter (``next_ids``), time from ``now``, which each
        successful operation moves on by STEP_MS.
Rule 3: the logs are append-only and ordered by ``seq`` (the event-log length when an entry
        was made): events, transport hand-offs (one per recipient on SENDING → SENT),
        monitored copies (one per MessageSent with ``monitored_copy``), suppressions, and the
        mode and allowlist each message met when it was created (``origins``).
Rule 4: nothing is decided here: the delivery worker's last-moment checks (mailbox still
        active and not read_only, no recipient suppressed) are ``workflows.start_delivery``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Any

from multimail_core import approval as approvals
from multimail_core import authorization as authz
from multimail_core import inbound, mailbox, outbound, reputation, workflows
from multimail_core.addresses import parse_address
from multimail_core.approval import Content
from multimail_core.authorization import Key
from multimail_core.errors import AddressUnavailable, IllegalTransition
from multimail_core.events import Event, MessageSent
from multimail_core.ids import Kind, is_ulid, make_id
from multimail_core.modes import OversightMode
from multimail_core.reputation import Fact, Outcome

START_MS = 1_700_000_000_000
STEP_MS = 1_000
IDS_PER_OPERATION = 3
PERSONAL = inbound.Kind.PERSONAL


def ulid(n: int) -> str:
    """Valid ULID text for a counter value: zero-padded decimal digits."""
    text = str(n)
    result = "0" * (26 - len(text)) + text
    assert is_ulid(result)
    return result


@dataclass(frozen=True)
class Origin:
    """What a message met when it was created: the mailbox's mode and allowlist."""

    message_id: str
    mailbox_id: str
    mode: OversightMode
    allowlist: frozenset[str]
    seq: int


@dataclass(frozen=True)
class Handoff:
    """One transport-log entry: ``recipient`` was handed ``message_id``."""

    message_id: str
    recipient: str
    seq: int


@dataclass(frozen=True)
class World:
    account_id: str
    keys: tuple[Key, ...] = ()
    mailboxes: tuple[mailbox.Mailbox, ...] = ()
    outbound: tuple[outbound.Outbound, ...] = ()
    inbound: tuple[inbound.Inbound, ...] = ()
    approvals: tuple[approvals.Approval, ...] = ()
    origins: tuple[Origin, ...] = ()
    suppressed: tuple[tuple[str, int], ...] = ()  # (normalized address, seq)
    facts: tuple[tuple[str, str | None, Fact], ...] = ()  # (mailbox, message or None, fact)
    events: tuple[Event, ...] = ()
    transport: tuple[Handoff, ...] = ()
    copies: tuple[tuple[str, int], ...] = ()  # (message id, seq)
    now: int = START_MS
    counter: int = 0

    # --- lookups ------------------------------------------------------------------------

    def key(self, key_id: str) -> Key:
        return _find(self.keys, key_id)

    def box(self, mailbox_id: str) -> mailbox.Mailbox:
        return _find(self.mailboxes, mailbox_id)

    def out(self, message_id: str) -> outbound.Outbound:
        return _find(self.outbound, message_id)

    def inb(self, message_id: str) -> inbound.Inbound:
        return _find(self.inbound, message_id)

    def approval(self, approval_id: str) -> approvals.Approval:
        return _find(self.approvals, approval_id)

    @property
    def suppressed_set(self) -> frozenset[str]:
        return frozenset(address for address, _ in self.suppressed)

    def facts_of(self, mailbox_id: str) -> tuple[Fact, ...]:
        return tuple(f for m, _, f in self.facts if m == mailbox_id)

    def counters(self, mailbox_id: str) -> reputation.Counters:
        return reputation.window(self.facts_of(mailbox_id), self.now)

    def next_ids(self) -> workflows.NewIds:
        return _new_ids(self.counter)

    # --- setup ----------------------------------------------------------------------------

    def with_key(self, key: Key) -> World:
        return replace(self, keys=(*self.keys, key))

    def create_mailbox(self, key_id: str, address: str, mode: OversightMode) -> World:
        key, addr = self.key(key_id), parse_address(address)
        authz.require(authz.Request(key, authz.OPERATIONS["mailboxes.create"], self.account_id))
        holders = [
            mailbox.Holder(b.account_id, b.status, b.decommissioned_at)
            for b in self.mailboxes
            if b.address.normalized() == addr.normalized()
        ]
        if mailbox.address_availability(holders, key.account_id, now=self.now).value != "available":
            raise AddressUnavailable(f"{address} is not available")
        box_id = make_id(Kind.MAILBOX, ulid(self.counter + 1))
        box, events = mailbox.create(
            box_id, key.account_id, addr, display_name="", mode=mode, webhook_url=None, now=self.now
        )
        return self._commit(events, mailboxes=(*self.mailboxes, box), counter=self.counter + 3)

    # --- agents and overseers -------------------------------------------------------------

    def send(
        self, mailbox_id: str, key_id: str, to: tuple[str, ...], *, send_at: int | None = None
    ) -> World:
        draft = workflows.Draft(tuple(_address(a) for a in to), "hello", "hi", send_at=send_at)
        return self._submit(self.box(mailbox_id), key_id, draft, None)

    def reply(self, message_id: str, key_id: str) -> World:
        original = self.inb(message_id)
        draft = workflows.Draft((_address(original.sender),), "Re: " + original.subject, "ok")
        return self._submit(self.box(original.mailbox_id), key_id, draft, original)

    def _submit(
        self, box: mailbox.Mailbox, key_id: str, draft: workflows.Draft, replying: Any
    ) -> World:
        ids = self.next_ids()
        if replying is not None:
            ids = replace(ids, thread_id=replying.thread_id)
        key, suppressed, now = self.key(key_id), self.suppressed_set, self.now
        sub = workflows.submit(
            box, key, draft, ids, suppressed=suppressed, now=now, reply=replying is not None
        )
        events, received = sub.events, self.inbound
        if replying is not None:
            marked, more = inbound.apply(replying, inbound.MarkReplied(ids.message_id), now=now)
            events, received = events + more, _swap(self.inbound, marked)
        return self._created(box, sub.message, sub.approval, events, inbound=received)

    def read(self, message_id: str, key_id: str) -> World:
        msg, key = self.inb(message_id), self.key(key_id)
        after, events = workflows.read(self.box(msg.mailbox_id), key, msg, now=self.now)
        return self._commit(events, inbound=_swap(self.inbound, after))

    def decide(
        self, approval_id: str, key_id: str, *, approve: bool, edits: Content | None = None
    ) -> World:
        apr, key = self.approval(approval_id), self.key(key_id)
        outgoing = apr.direction is approvals.Direction.OUTBOUND
        msg = self.out(apr.message_id) if outgoing else self.inb(apr.message_id)
        box, suppressed = self.box(apr.mailbox_id), self.suppressed_set
        d = workflows.decide(
            box, key, apr, msg, approve=approve, edits=edits, suppressed=suppressed, now=self.now
        )
        facts = self.facts
        if d.review is not None:  # trust evidence for the sending mailbox (§8)
            facts = (*facts, (box.id, msg.id, Fact(d.review, self.now)))
        field = "outbound" if outgoing else "inbound"
        changed = {field: _swap(getattr(self, field), d.message)}
        return self._commit(
            d.events, approvals=_swap(self.approvals, d.approval), facts=facts, **changed
        )

    def cancel(self, message_id: str, key_id: str) -> World:
        msg = self.out(message_id)
        box = self.box(msg.mailbox_id)
        op = authz.OPERATIONS["messages.cancel"]
        authz.require(authz.Request(self.key(key_id), op, box.account_id, box.id))
        after, events = outbound.apply(msg, outbound.Cancel(), now=self.now)
        return self._commit(events, outbound=_swap(self.outbound, after))

    def change_mode(self, mailbox_id: str, key_id: str, mode: OversightMode) -> World:
        return self._settle(workflows.change_mode, mailbox_id, key_id, mode)

    def request_upgrade(self, mailbox_id: str, key_id: str, mode: OversightMode) -> World:
        return self._commit(workflows.request_upgrade(self.box(mailbox_id), self.key(key_id), mode))

    def set_allowlist(self, mailbox_id: str, key_id: str, patterns: frozenset[str]) -> World:
        return self._settle(workflows.set_allowlist, mailbox_id, key_id, patterns)

    def configure(self, mailbox_id: str, key_id: str, display_name: str) -> World:
        command = mailbox.Configure(display_name=display_name)
        return self._settle(workflows.configure, mailbox_id, key_id, command)

    def decommission(self, mailbox_id: str, key_id: str) -> World:
        return self._settle(workflows.decommission, mailbox_id, key_id)

    def _settle(self, use_case: Any, mailbox_id: str, key_id: str, *args: Any) -> World:
        """A mailbox setting: one use case, the new mailbox and its events."""
        box, events = use_case(self.box(mailbox_id), self.key(key_id), *args, now=self.now)
        return self._commit(events, mailboxes=_swap(self.mailboxes, box))

    # --- the outside world: SMTP in, delivery worker, DSNs and ARF reports ------------------

    def receive(self, mailbox_id: str, sender: str, kind: inbound.Kind = PERSONAL) -> World:
        box, ids = self.box(mailbox_id), self.next_ids()
        r = workflows.receive(
            box, sender=sender, subject="hi", body_text="hello", kind=kind, ids=ids, now=self.now
        )
        return self._created(box, r.message, r.approval, r.events)

    def release(self, message_id: str) -> World:
        """The scheduler fires when ``send_at`` is reached: time moves on to it if need be."""
        msg = self.out(message_id)
        at = max(self.now, msg.send_at or self.now)
        after, events = outbound.apply(msg, outbound.Release(), now=at)
        return replace(self, now=at)._commit(events, outbound=_swap(self.outbound, after))

    def deliver(self, message_id: str, code: int) -> World:
        """One delivery attempt: start it (or cancel it), then record the transport's reply."""
        msg = self.out(message_id)
        box = self.box(msg.mailbox_id)
        if not outbound.accepts(msg, outbound.Claim()):  # the worker loads due rows only
            raise IllegalTransition("outbound message", msg.status.value, "Claim")
        claimed, started = workflows.start_delivery(
            box, msg, suppressed=self.suppressed_set, now=self.now
        )
        if claimed.status is outbound.Status.CANCELLED:  # it may no longer leave
            return self._commit(started, outbound=_swap(self.outbound, claimed))
        after, attempted = outbound.apply(claimed, outbound.RecordAttempt(code), now=self.now)
        w = replace(self, outbound=_swap(self.outbound, after))
        seq = len(self.events) + 1  # the index MessageSent will have
        if after.status is outbound.Status.SENT:
            sent = attempted[0]
            assert isinstance(sent, MessageSent)
            handed = tuple(Handoff(msg.id, r, seq) for r in dict.fromkeys(msg.recipients))
            copy = ((msg.id, seq),) if sent.monitored_copy else ()
            fact = (box.id, msg.id, Fact(Outcome.SENT, self.now))
            w = replace(w, transport=self.transport + handed, copies=self.copies + copy)
            return replace(w, facts=(*self.facts, fact))._commit(started + attempted)
        if after.status is outbound.Status.BOUNCED:
            return w._harm(after, Outcome.HARD_BOUNCE, after.recipients, started + attempted)
        soft = (*self.facts, (box.id, msg.id, Fact(Outcome.SOFT_BOUNCE, self.now)))
        return replace(w, facts=soft)._commit(started + attempted)

    def confirm(self, message_id: str) -> World:
        msg = self.out(message_id)
        after, events = outbound.apply(msg, outbound.ConfirmDelivery(), now=self.now)
        fact = (msg.mailbox_id, msg.id, Fact(Outcome.DELIVERED, self.now))
        return self._commit(events, outbound=_swap(self.outbound, after), facts=(*self.facts, fact))

    def bounce(self, message_id: str) -> World:
        """An RFC 3464 DSN reports a permanent failure for every recipient."""
        msg = self.out(message_id)
        after, events = outbound.apply(msg, outbound.RecordBounce(msg.recipients), now=self.now)
        w = replace(self, outbound=_swap(self.outbound, after))
        return w._harm(after, Outcome.HARD_BOUNCE, msg.recipients, events)

    def complain(self, message_id: str) -> World:
        """An RFC 5965 ARF report from the first recipient."""
        msg = self.out(message_id)
        who = msg.recipients[:1]
        after, events = outbound.apply(msg, outbound.RecordComplaint(who), now=self.now)
        w = replace(self, outbound=_swap(self.outbound, after))
        return w._harm(after, Outcome.COMPLAINT, who, events)

    def history(self, mailbox_id: str, *, sent: int, bounced: int, complaints: int) -> World:
        """Earlier traffic of the mailbox, as reputation facts, then enforcement."""
        f = [Outcome.SENT] * sent + [Outcome.HARD_BOUNCE] * bounced
        f += [Outcome.COMPLAINT] * complaints
        facts = self.facts + tuple((mailbox_id, None, Fact(o, self.now)) for o in f)
        return replace(self, facts=facts)._enforced(self.box(mailbox_id), ())

    # --- internals --------------------------------------------------------------------------

    def _created(
        self, box: mailbox.Mailbox, message: Any, held: Any, events: tuple[Event, ...], **more: Any
    ) -> World:
        """A new message (and its approval, if held), with the mode and allowlist it met."""
        field = "outbound" if isinstance(message, outbound.Outbound) else "inbound"
        origin = Origin(message.id, box.id, box.mode, box.allowlist, len(self.events))
        return self._commit(
            events,
            **{field: (*getattr(self, field), message)},
            approvals=self.approvals + ((held,) if held else ()),
            origins=(*self.origins, origin),
            counter=self.counter + IDS_PER_OPERATION,
            **more,
        )

    def _harm(
        self,
        msg: outbound.Outbound,
        outcome: Outcome,
        to: tuple[str, ...],
        events: tuple[Event, ...],
    ) -> World:
        """A hard bounce or complaint: a fact, suppressions (P14), then enforcement (§8)."""
        seq, known = len(self.events), self.suppressed_set
        new = tuple((a, seq) for a in workflows.suppressions_for(outcome, to) if a not in known)
        facts = (*self.facts, (msg.mailbox_id, msg.id, Fact(outcome, self.now)))
        w = replace(self, suppressed=self.suppressed + new, facts=facts)
        return w._enforced(w.box(msg.mailbox_id), events)

    def _enforced(self, box: mailbox.Mailbox, events: tuple[Event, ...]) -> World:
        after, more = workflows.enforce_reputation(box, self.counters(box.id), now=self.now)
        return self._commit(events + more, mailboxes=_swap(self.mailboxes, after))

    def _commit(self, events: tuple[Event, ...], **changes: Any) -> World:
        return replace(self, events=self.events + events, now=self.now + STEP_MS, **changes)


@functools.cache
def _new_ids(n: int) -> workflows.NewIds:
    return workflows.NewIds(
        make_id(Kind.MESSAGE, ulid(n + 1)),
        make_id(Kind.APPROVAL, ulid(n + 2)),
        make_id(Kind.THREAD, ulid(n + 3)),
    )


_address = functools.cache(parse_address)  # a pure function; its contracts cost time


def _find(items: tuple[Any, ...], item_id: str) -> Any:
    for item in items:
        if item.id == item_id:
            return item
    raise LookupError(item_id)


def _swap(items: tuple[Any, ...], new: Any) -> tuple[Any, ...]:
    return tuple(new if x.id == new.id else x for x in items)
