"""Use cases: each composes authorization, oversight and the lifecycles for one operation.

Rule 1: every function takes the acting key and the current values, and returns new values
        plus the events to persist; the shell stores them in one transaction. A raised
        MultimailError means nothing is to be stored.
Rule 2: the order of checks is fixed: authorization (P6), mailbox status (P11), oversight
        (P1-P5), suppression (P14). The first failing check raises.
Rule 3: the shell never decides anything these functions decide; it only loads and stores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import icontract

from multimail_core import approval as approvals
from multimail_core import authorization as authz
from multimail_core import delivery, inbound, mailbox, outbound, oversight, reputation
from multimail_core.addresses import Address, parse_address
from multimail_core.authorization import (
    OPERATIONS,
    Key,
    can_lower_autonomy,
    can_raise_autonomy,
    is_overseer,
)
from multimail_core.errors import (
    IllegalTransition,
    InvalidAddress,
    InvalidValue,
    MailboxUnavailable,
    OversightDenied,
    RecipientSuppressed,
)
from multimail_core.events import (
    Event,
    MailboxDemoted,
    MessageHeld,
    MessageQueued,
    MessageReceived,
    MessageScheduled,
    ReputationWarned,
    UpgradeRequested,
)
from multimail_core.modes import OversightMode, is_raise, rank

MAX_RECIPIENTS = 50


def _parses(text: str) -> bool:
    try:
        parse_address(text)
    except InvalidAddress:
        return False
    return True


def _require(key: Key, operation: str, box: mailbox.Mailbox) -> None:
    authz.require(authz.Request(key, OPERATIONS[operation], box.account_id, box.id))


# --- sending ----------------------------------------------------------------------------


@icontract.invariant(lambda self: len(self.to) + len(self.cc) + len(self.bcc) > 0)
@dataclass(frozen=True)
class Draft:
    to: tuple[Address, ...]
    subject: str
    body_text: str
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    body_html: str | None = None
    send_at: int | None = None

    @property
    def recipients(self) -> tuple[Address, ...]:
        return self.to + self.cc + self.bcc


@dataclass(frozen=True)
class NewIds:
    """Ids minted by the shell for whatever the operation may create."""

    message_id: str
    approval_id: str
    thread_id: str


@dataclass(frozen=True)
class Submission:
    decision: oversight.Decision
    message: outbound.Outbound
    approval: approvals.Approval | None
    events: tuple[Event, ...]


@icontract.ensure(lambda result: result.verdict is not oversight.Verdict.DENY)
def check_send(
    box: mailbox.Mailbox,
    key: Key,
    draft: Draft,
    *,
    suppressed: frozenset[str],
    reply: bool = False,
) -> oversight.Decision:
    """Every check of a send, nothing created: what ``dry_run`` answers.

    :raises NotPermitted: when the key may not send from this mailbox.
    :raises MailboxUnavailable: when the mailbox is suspended or decommissioned.
    :raises OversightDenied: when the oversight table denies (read_only).
    :raises RecipientSuppressed: when a recipient is on the suppression list.
    :raises InvalidValue: for more than MAX_RECIPIENTS recipients.
    """
    _require(key, "messages.send", box)
    if not mailbox.can_send(box):
        raise MailboxUnavailable(f"mailbox is {box.status.value}; it cannot send")
    if len(draft.recipients) > MAX_RECIPIENTS:
        raise InvalidValue("to", f"at most {MAX_RECIPIENTS} recipients")
    action = oversight.Action.REPLY if reply else oversight.Action.SEND
    decision = oversight.decide(
        oversight.Request(box.mode, action, draft.recipients, box.allowlist)
    )
    if decision.verdict is oversight.Verdict.DENY:
        raise OversightDenied(decision.rule, decision.reason)
    blocked = reputation.suppressed_recipients([str(a) for a in draft.recipients], suppressed)
    if blocked:
        raise RecipientSuppressed(blocked)
    return decision


@icontract.ensure(
    lambda result: (
        (result.approval is None) == (result.decision.verdict is oversight.Verdict.ALLOW)
    ),
    "held exactly when the table says hold",
)
@icontract.ensure(
    lambda box, result: (
        box.mode not in (OversightMode.READ_ONLY, OversightMode.GATED_ALL)
        or result.message.status is outbound.Status.PENDING_APPROVAL
    ),
    "P1/P2",
)
@icontract.ensure(lambda result: result.message.handoffs == 0)
@icontract.ensure(lambda result: len(result.events) == 1, "P12")
def submit(
    box: mailbox.Mailbox,
    key: Key,
    draft: Draft,
    ids: NewIds,
    *,
    suppressed: frozenset[str],
    now: int,
    reply: bool = False,
) -> Submission:
    """Create an outbound message: held for review, scheduled, or queued for delivery.

    :raises NotPermitted: when the key may not send from this mailbox.
    :raises MailboxUnavailable: when the mailbox is suspended or decommissioned.
    :raises OversightDenied: when the oversight table denies (read_only).
    :raises RecipientSuppressed: when a recipient is on the suppression list.
    :raises InvalidValue: for more than MAX_RECIPIENTS recipients.
    """
    decision = check_send(box, key, draft, suppressed=suppressed, reply=reply)
    held = decision.verdict is oversight.Verdict.HOLD
    later = draft.send_at is not None and draft.send_at > now
    status = (
        outbound.Status.PENDING_APPROVAL
        if held
        else outbound.Status.SCHEDULED
        if later
        else outbound.Status.QUEUED
    )
    message = outbound.Outbound(
        id=ids.message_id,
        mailbox_id=box.id,
        account_id=box.account_id,
        thread_id=ids.thread_id,
        created_by=key.id,
        recipients=tuple(dict.fromkeys(str(a) for a in draft.recipients)),
        subject=draft.subject,
        body_text=draft.body_text,
        body_html=draft.body_html,
        status=status,
        monitored=decision.monitor_copy,
        created_at=now,
        send_at=draft.send_at,
        approval_id=ids.approval_id if held else None,
        next_attempt_at=None if held else (draft.send_at if later else now),
    )
    if not held:
        event: Event = (
            MessageScheduled(box.id, message.id, draft.send_at or now)
            if later
            else MessageQueued(box.id, message.id)
        )
        return Submission(decision, message, None, (event,))
    approval = approvals.Approval(
        id=ids.approval_id,
        account_id=box.account_id,
        mailbox_id=box.id,
        message_id=message.id,
        direction=approvals.Direction.OUTBOUND,
        created_by=key.id,
        original=approvals.Content(draft.subject, draft.body_text, draft.body_html),
        created_at=now,
    )
    held_event = MessageHeld(box.id, message.id, approval.id, "outbound")
    return Submission(decision, message, approval, (held_event,))


# --- receiving --------------------------------------------------------------------------


@dataclass(frozen=True)
class Receipt:
    decision: oversight.Decision
    message: inbound.Inbound
    approval: approvals.Approval | None
    events: tuple[Event, ...]


@icontract.ensure(
    lambda box, result: (
        box.mode is not OversightMode.GATED_ALL or not inbound.is_visible(result.message)
    ),
    "P3",
)
@icontract.ensure(
    lambda result: (
        not any(isinstance(e, MessageReceived) for e in result.events)
        or inbound.is_visible(result.message)
    ),
    "P3: the agent is told only of visible mail",
)
@icontract.ensure(lambda result: len(result.events) == 1, "P12")
def receive(
    box: mailbox.Mailbox,
    *,
    sender: str,
    subject: str,
    body_text: str,
    kind: inbound.Kind,
    ids: NewIds,
    now: int,
) -> Receipt:
    """Store an inbound message: visible to the agent, or held for review (gated_all).

    :raises MailboxUnavailable: when the mailbox is not active (P11; PRODUCT §6).
    """
    if not mailbox.can_receive(box):
        raise MailboxUnavailable(f"mailbox is {box.status.value}; it receives nothing")
    decision = oversight.decide(oversight.Request(box.mode, oversight.Action.INBOUND))
    held = decision.verdict is oversight.Verdict.HOLD
    message = inbound.Inbound(
        id=ids.message_id,
        mailbox_id=box.id,
        account_id=box.account_id,
        thread_id=ids.thread_id,
        sender=sender,
        subject=subject,
        kind=kind,
        status=inbound.Status.PENDING_INBOUND_APPROVAL if held else inbound.Status.UNREAD,
        received_at=now,
        approval_id=ids.approval_id if held else None,
    )
    if not held:
        return Receipt(
            decision, message, None, (MessageReceived(box.id, message.id, ids.thread_id),)
        )
    approval = approvals.Approval(
        id=ids.approval_id,
        account_id=box.account_id,
        mailbox_id=box.id,
        message_id=message.id,
        direction=approvals.Direction.INBOUND,
        created_by=None,
        original=approvals.Content(subject, body_text, None),
        created_at=now,
    )
    held_event = MessageHeld(box.id, message.id, approval.id, "inbound")
    return Receipt(decision, message, approval, (held_event,))


@icontract.require(lambda box, message: message.mailbox_id == box.id)
@icontract.ensure(lambda result: inbound.is_visible(result[0]))
def read(
    box: mailbox.Mailbox, key: Key, message: inbound.Inbound, *, now: int
) -> tuple[inbound.Inbound, tuple[Event, ...]]:
    """Open a message: unread becomes read; a held message is not readable (P3).

    :raises NotPermitted: when the key may not read this mailbox, or the message is held.
    """
    _require(key, "messages.read", box)
    decision = oversight.decide(
        oversight.Request(
            box.mode, oversight.Action.READ, message_held=not inbound.is_visible(message)
        )
    )
    if decision.verdict is not oversight.Verdict.ALLOW:
        raise OversightDenied(decision.rule, decision.reason)
    if message.status is inbound.Status.UNREAD:
        return inbound.apply(message, inbound.MarkRead(), now=now)
    return message, ()


# --- reviewing --------------------------------------------------------------------------

Message = outbound.Outbound | inbound.Inbound


@dataclass(frozen=True)
class Decided:
    approval: approvals.Approval
    message: Message
    events: tuple[Event, ...]
    #: Trust evidence for the sending mailbox (§8); None for inbound reviews.
    review: reputation.Outcome | None = None


@icontract.require(lambda approval, message: approval.message_id == message.id)
@icontract.require(
    lambda box, approval, message: approval.mailbox_id == box.id == message.mailbox_id
)
@icontract.ensure(lambda reviewer, result: result.approval.decided_by == reviewer.id)
@icontract.ensure(
    lambda box, result: (
        not isinstance(result.message, outbound.Outbound)
        or result.message.status is outbound.Status.REJECTED
        or (mailbox.can_send(box) and box.mode is not OversightMode.READ_ONLY)
    ),
    "P2/P11: nothing is released from a read_only or inactive mailbox",
)
@icontract.ensure(
    lambda box, result: (
        not isinstance(result.message, inbound.Inbound)
        or not inbound.is_visible(result.message)
        or mailbox.can_receive(box)
    ),
    "P11: nothing is released into an inactive mailbox",
)
@icontract.ensure(
    lambda approval, reviewer: approval.created_by != reviewer.id and is_overseer(reviewer),
    "P1",
)
@icontract.ensure(lambda result: len(result.events) == 1, "P12")
def decide(
    box: mailbox.Mailbox,
    reviewer: Key,
    approval: approvals.Approval,
    message: Message,
    *,
    approve: bool,
    edits: approvals.Content | None = None,
    reason: str = "",
    suppressed: frozenset[str] = frozenset(),
    now: int,
) -> Decided:
    """Approve (optionally with edits) or reject a held message, once.

    Approving outbound mail re-checks what may have changed while it waited: the mailbox
    must still be active and not read_only (P2, P11), no recipient suppressed (P14).

    :raises NotPermitted: when the reviewer may not decide (P1, P6).
    :raises IllegalTransition: when already decided, or the message is no longer held.
    :raises MailboxUnavailable: when approving mail of (or into) an inactive mailbox (P11).
    :raises OversightDenied: when approving outbound mail of a read_only mailbox.
    :raises RecipientSuppressed: when approving outbound mail to a suppressed recipient.
    """
    _require(reviewer, "oversight.decide", box)
    command: approvals.Command = (
        approvals.Approve(reviewer, edits) if approve else approvals.Reject(reviewer, reason)
    )
    # The decision itself first (decided once, reviewer rules, the message still held),
    # then what releasing needs: a second decision is a conflict whatever the mailbox has
    # become since.
    decided, _ = approvals.apply(approval, command, now=now)
    if isinstance(message, outbound.Outbound):
        change = decided.edited
        ocmd: outbound.Command = (
            outbound.Approve(
                approval.id,
                reviewer.id,
                (change.subject, change.body_text, change.body_html) if change else None,
            )
            if approve
            else outbound.Reject(approval.id, reviewer.id, reason)
        )
        new_out, out_events = outbound.apply(message, ocmd, now=now)
        if approve:
            _check_release(box, message, suppressed)
        review = (
            reputation.Outcome.REVIEW_REJECTED
            if not approve
            else reputation.Outcome.REVIEW_EDITED
            if decided.edited is not None
            else reputation.Outcome.REVIEW_APPROVED
        )
        return Decided(decided, new_out, out_events, review)
    icmd: inbound.Command = (
        inbound.Approve(approval.id, reviewer.id)
        if approve
        else inbound.Reject(approval.id, reviewer.id, reason)
    )
    new_in, in_events = inbound.apply(message, icmd, now=now)
    if approve and not mailbox.can_receive(box):
        raise MailboxUnavailable(
            f"mailbox is {box.status.value}; held mail is not released into it"
        )
    return Decided(decided, new_in, in_events)


def _check_release(
    box: mailbox.Mailbox, message: outbound.Outbound, suppressed: frozenset[str]
) -> None:
    if not mailbox.can_send(box):
        raise MailboxUnavailable(f"mailbox is {box.status.value}; it cannot send")
    decision = oversight.decide(oversight.Request(box.mode, oversight.Action.RELEASE))
    if decision.verdict is not oversight.Verdict.ALLOW:
        raise OversightDenied(decision.rule, decision.reason)
    blocked = reputation.suppressed_recipients(message.recipients, suppressed)
    if blocked:
        raise RecipientSuppressed(blocked)


@icontract.require(lambda box, message: box.id == message.mailbox_id)
@icontract.require(
    lambda message: message.status in (outbound.Status.QUEUED, outbound.Status.DEFERRED),
    "only due mail is claimed; held and scheduled mail is never cancelled here",
)
@icontract.ensure(
    lambda result: result[0].status in (outbound.Status.SENDING, outbound.Status.CANCELLED)
)
@icontract.ensure(
    lambda box, result: (
        result[0].status is outbound.Status.CANCELLED
        or (mailbox.can_send(box) and box.mode is not OversightMode.READ_ONLY)
    ),
    "P2/P11",
)
@icontract.ensure(
    lambda suppressed, result: (
        result[0].status is outbound.Status.CANCELLED
        or not reputation.suppressed_recipients(result[0].recipients, suppressed)
    ),
    "P14",
)
@icontract.ensure(lambda result: len(result[1]) == 1, "P12")
def start_delivery(
    box: mailbox.Mailbox,
    message: outbound.Outbound,
    *,
    suppressed: frozenset[str],
    now: int,
) -> tuple[outbound.Outbound, tuple[Event, ...]]:
    """Claim a due message for one attempt, or cancel it if it may no longer leave.

    Checked again at the last moment because the mailbox may have been suspended,
    decommissioned or made read_only, or a recipient suppressed, since it was queued.
    """
    try:
        _check_release(box, message, suppressed)
    except (MailboxUnavailable, OversightDenied, RecipientSuppressed):
        return outbound.apply(message, outbound.Cancel(), now=now)
    return outbound.apply(message, outbound.Claim(), now=now)


# --- mailbox settings -------------------------------------------------------------------


@icontract.ensure(
    lambda box, key, new_mode, result: (
        can_raise_autonomy(key) or rank(result[0].mode) <= rank(box.mode)
    ),
    "P5: no self-promotion",
)
def change_mode(
    box: mailbox.Mailbox, key: Key, new_mode: OversightMode, *, now: int
) -> tuple[mailbox.Mailbox, tuple[Event, ...]]:
    """Set the oversight mode; an unchanged mode changes nothing and emits nothing.

    :raises NotPermitted: when the key may not configure this mailbox.
    :raises OversightDenied: when a key that may not raise (or lower) autonomy tries to.
    :raises IllegalTransition: when the mailbox is decommissioned.
    """
    _require(key, "mailbox.set_mode", box)
    command = mailbox.ChangeMode(new_mode, key.id)
    if not mailbox.accepts(box, command):  # Rule 2: the mailbox's status before oversight
        raise IllegalTransition("mailbox", box.status.value, "ChangeMode")
    decision = oversight.decide(
        oversight.Request(
            box.mode,
            oversight.Action.MODE_CHANGE,
            actor_may_raise=can_raise_autonomy(key),
            actor_may_lower=can_lower_autonomy(key, box.id),
            new_mode=new_mode,
        )
    )
    if decision.verdict is not oversight.Verdict.ALLOW:
        raise OversightDenied(decision.rule, decision.reason)
    if new_mode is box.mode:
        return box, ()  # nothing changes, so nothing is announced (P12)
    return mailbox.apply(box, command, now=now)


@icontract.ensure(lambda result: len(result) == 1)
def request_upgrade(box: mailbox.Mailbox, key: Key, requested: OversightMode) -> tuple[Event, ...]:
    """An agent asks for more autonomy; only the operator can grant it.

    :raises NotPermitted: when the key may not act on this mailbox.
    :raises InvalidValue: when ``requested`` is not above the current mode.
    :raises MailboxUnavailable: when the mailbox is decommissioned.
    """
    _require(key, "mailbox.request_upgrade", box)
    if box.status is mailbox.Status.DECOMMISSIONED:
        raise MailboxUnavailable("mailbox is decommissioned")
    if not is_raise(box.mode, requested):
        raise InvalidValue("target_mode", f"{requested.value} is not above {box.mode.value}")
    return (UpgradeRequested(box.id, box.mode, requested, key.id),)


@icontract.ensure(lambda box, result: result[0].mode is box.mode)
def set_allowlist(
    box: mailbox.Mailbox, key: Key, patterns: frozenset[str], *, now: int
) -> tuple[mailbox.Mailbox, tuple[Event, ...]]:
    """Replace the allowlist; only overseers (it widens what gated_send lets through).

    :raises NotPermitted: when the key is not an overseer of this mailbox.
    :raises IllegalTransition: when the mailbox is decommissioned.
    """
    _require(key, "mailbox.allowlist.change", box)
    return mailbox.apply(box, mailbox.SetAllowlist(patterns), now=now)


@icontract.ensure(lambda box, result: result[0].mode is box.mode)
def configure(
    box: mailbox.Mailbox, key: Key, command: mailbox.Configure, *, now: int
) -> tuple[mailbox.Mailbox, tuple[Event, ...]]:
    """Change display name or webhook URL; a no-op changes nothing and emits nothing.

    :raises NotPermitted: when the key may not configure this mailbox.
    :raises InvalidValue: for a display name over MAX_DISPLAY_NAME characters.
    :raises IllegalTransition: when the mailbox is decommissioned.
    """
    _require(key, "mailbox.configure", box)
    if command.display_name is not None and len(command.display_name) > mailbox.MAX_DISPLAY_NAME:
        raise InvalidValue("display_name", f"at most {mailbox.MAX_DISPLAY_NAME} characters")
    after, events = mailbox.apply(box, command, now=now)
    if after == box:
        return box, ()  # nothing changes, so nothing is announced (P12)
    return after, events


@icontract.ensure(lambda result: result[0].status is mailbox.Status.DECOMMISSIONED)
def decommission(
    box: mailbox.Mailbox, key: Key, *, now: int
) -> tuple[mailbox.Mailbox, tuple[Event, ...]]:
    """Tear a mailbox down for good (P11).

    :raises NotPermitted: when the key is not an admin of this account.
    :raises IllegalTransition: when already decommissioned.
    """
    _require(key, "mailbox.decommission", box)
    return mailbox.apply(box, mailbox.Decommission(), now=now)


@icontract.ensure(lambda box, result: rank(result[0].mode) <= rank(box.mode), "P13")
@icontract.ensure(lambda result: len(result[1]) <= 1)
def enforce_reputation(
    box: mailbox.Mailbox, counters: reputation.Counters, *, now: int
) -> tuple[mailbox.Mailbox, tuple[Event, ...]]:
    """Apply the reputation verdict: warn, demote to gated_send, or nothing. Never promote."""
    if box.status is mailbox.Status.DECOMMISSIONED:
        return box, ()
    verdict = reputation.enforce(counters, box.mode)
    if verdict.action is reputation.Enforcement.DEMOTE and verdict.new_mode is not box.mode:
        after, _ = mailbox.apply(box, mailbox.ChangeMode(verdict.new_mode, "reputation"), now=now)
        return after, (MailboxDemoted(box.id, box.mode, after.mode, verdict.reason),)
    if verdict.action is reputation.Enforcement.NONE:
        return box, ()
    return box, (ReputationWarned(box.id, verdict.reason),)


@icontract.require(lambda recipients: all(_parses(r) for r in recipients))
@icontract.ensure(lambda result: all(r.lower() == r for r in result))
def suppressions_for(outcome: reputation.Outcome, recipients: Sequence[str]) -> tuple[str, ...]:
    """Addresses to add to the account suppression list after a bounce or complaint (P14)."""
    if reputation.suppression_for(outcome) is None:
        return ()
    return tuple(dict.fromkeys(reputation.normalize_for_suppression(r) for r in recipients))


# --- settling one delivery attempt --------------------------------------------------------


@dataclass(frozen=True)
class Settled:
    """What one delivery attempt of a message amounts to, for the shell to store.

    ``delivered``/``bounced``: every recipient (lowercased) that took the message or refused
    it for good, over all attempts. ``copy_now``: make the monitored copy in this
    transaction (P4). ``facts``: the reputation facts to record. ``suppress``: addresses for
    the suppression list (P14).
    """

    message: outbound.Outbound
    events: tuple[Event, ...]
    delivered: frozenset[str]
    bounced: frozenset[str]
    copy_now: bool
    facts: tuple[reputation.Outcome, ...]
    suppress: tuple[str, ...]


def _all_parse(addresses: Sequence[str]) -> bool:
    return all(_parses(a) for a in addresses)


@icontract.require(lambda message: message.status is outbound.Status.SENDING)
@icontract.require(lambda replies: len(replies) > 0 and _all_parse(list(replies)))
@icontract.require(lambda replies: all(0 <= code <= 999 for code, _ in replies.values()))
@icontract.require(lambda draw: 0 <= draw <= delivery.JITTER_DRAW_MAX)
@icontract.ensure(lambda delivered, result: delivered <= result.delivered)
@icontract.ensure(lambda bounced, result: bounced <= result.bounced)
@icontract.ensure(
    lambda message, copied, delivered, result: (
        result.copy_now
        == (message.monitored and not copied and not delivered and bool(result.delivered))
    ),
    "P4: one copy, made when the first recipient takes a monitored message",
)
@icontract.ensure(
    lambda bounced, result: (
        result.facts.count(reputation.Outcome.HARD_BOUNCE)
        == (1 if result.bounced and not bounced else 0)
    ),
    "one hard-bounce fact per message",
)
@icontract.ensure(
    lambda result: result.message.status is not outbound.Status.SENT or not result.bounced,
    "a sent message with a refused recipient is bounced",
)
@icontract.ensure(
    lambda result: (
        result.facts.count(reputation.Outcome.SENT)
        == (
            1
            if result.message.status
            in (outbound.Status.SENT, outbound.Status.DELIVERED, outbound.Status.BOUNCED)
            else 0
        )
    ),
    "a message counts as sent once, when its fate is known",
)
def settle_attempt(
    message: outbound.Outbound,
    replies: Mapping[str, tuple[int, str]],
    *,
    delivered: frozenset[str],
    bounced: frozenset[str],
    copied: bool,
    local_only: bool,
    draw: int,
    now: int,
) -> Settled:
    """Record one attempt's per-recipient replies (``delivery.settle``) on the message.

    The message takes the attempt's reply (deferred while anyone waits); once sent it is
    bounced if any recipient refused for good in any attempt, else delivered when every
    recipient was a local mailbox (storing it there is delivery).
    """
    verdict = delivery.settle(replies, delivered_before=len(delivered))
    after, events = outbound.apply(
        message, outbound.RecordAttempt(verdict.code, verdict.text, draw), now=now
    )
    now_delivered = delivered | {r.lower() for r in verdict.accepted}
    now_bounced = bounced | {r.lower() for r in verdict.permanent}
    facts: list[reputation.Outcome] = []
    if now_bounced and not bounced:
        facts.append(reputation.Outcome.HARD_BOUNCE)
    if after.status in (outbound.Status.SENT, outbound.Status.BOUNCED):
        # the message's fate is known: it counts as sent, whether taken or refused (a bounce
        # rate is bounces over sends, so a refused message must count in both)
        facts.append(reputation.Outcome.SENT)
    if after.status is outbound.Status.SENT:
        if now_bounced:
            reply = "; ".join(f"{r}: {replies[r][0]} {replies[r][1]}" for r in verdict.permanent)
            after, more = outbound.apply(
                after, outbound.RecordBounce(tuple(sorted(now_bounced)), reply), now=now
            )
            events += more
        elif local_only:
            after, more = outbound.apply(after, outbound.ConfirmDelivery(), now=now)
            events += more
            facts.append(reputation.Outcome.DELIVERED)
    return Settled(
        message=after,
        events=events,
        delivered=frozenset(now_delivered),
        bounced=frozenset(now_bounced),
        copy_now=message.monitored and not copied and not delivered and bool(now_delivered),
        facts=tuple(facts),
        suppress=suppressions_for(reputation.Outcome.HARD_BOUNCE, list(verdict.permanent)),
    )
