"""Scenarios for multimail.mailflow: deliveries, the server's own mail, approval links,
SMTP arrivals, delivery reports, loop protection and signing — through ``Service``.

Rule 1: no network and no sleeping. The transport is a fake that records every hand-off
        and answers from a script; the clock is a mutable holder moved forward by hand.
Rule 2: each test builds its own Service on a MemoryStore (the reference store), except
        the property test, which shares one and gives every example its own mailbox and
        recipients.
Rule 3: a test that shows a known defect is ``xfail(strict=True)`` with the defect in its
        reason; it turns red the day the defect is fixed, so the mark gets removed.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multimail import mime, reports
from multimail.errors import AlreadyDecided, LinkExpired, LoopDetected, NotFound
from multimail.mailflow import Accepted, Incoming, NoRecipient
from multimail.records import MessageRecord, QueuedMail
from multimail.service import Config, Service
from multimail.store.memory import MemoryStore
from multimail.verify import VerifyResult, verify_message
from multimail_core import approval as approvals
from multimail_core import delivery, inbound, mailbox, outbound
from multimail_core.approval import LINK_TTL_MS
from multimail_core.authorization import Key
from multimail_core.errors import MultimailError
from multimail_core.modes import OversightMode

T0 = 1_700_000_000_000  # ms since epoch, in the past: dkimpy refuses t= in the future
SECOND = 1_000
DOMAIN = "agents.test"
ADMIN_SECRET = "mm_live_admin_for_mailflow_tests"
OPERATOR = "boss@corp.example"  # the account's oversight address: outside, so mail is queued

OK = (250, "2.0.0 queued")
LATER = (451, "4.3.0 try again later")
GONE = (550, "5.1.1 no such user")

Reply = tuple[int, str]


class Clock:
    """The service's clock: ``now`` in ms, moved only by the test."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


@dataclass(frozen=True)
class Handoff:
    mail_from: str
    rcpts: tuple[str, ...]
    raw: bytes


@dataclass
class FakeTransport:
    """Records every hand-off; answers ``replies[rcpt]`` (default 250) for each recipient."""

    replies: dict[str, Reply] = field(default_factory=dict)
    calls: list[Handoff] = field(default_factory=list)

    def __call__(self, mail_from: str, rcpts: Sequence[str], raw: bytes) -> dict[str, Reply]:
        self.calls.append(Handoff(mail_from, tuple(rcpts), raw))
        return {r: self.replies.get(r, OK) for r in rcpts}

    def handed(self, rcpt: str) -> int:
        """How many times ``rcpt`` was given to the transport."""
        return sum(rcpt in call.rcpts for call in self.calls)


@dataclass
class World:
    service: Service
    clock: Clock
    admin: Key
    account_id: str
    transport: FakeTransport
    names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def new_box(self, mode: OversightMode) -> mailbox.Mailbox:
        return self.service.create_mailbox(
            self.admin, name=f"box{next(self.names)}", oversight_mode=mode
        )

    def agent(self, box: mailbox.Mailbox) -> Key:
        """A key with send + read on ``box`` only, as an agent gets."""
        _, secret = self.service.create_key(self.admin, "agent", ["send", "read"], [box.id])
        return self.service.authenticate(secret)

    def reviewer(self) -> Key:
        _, secret = self.service.create_key(self.admin, "reviewer", ["oversight"], None)
        return self.service.authenticate(secret)

    def message(self, message_id: str) -> MessageRecord:
        record = self.service.store.get_message(message_id)
        assert record is not None
        return record

    def state(self, message_id: str) -> outbound.Outbound:
        state = self.message(message_id).state
        assert isinstance(state, outbound.Outbound)
        return state

    def mail(self, purpose: str | None = None) -> list[QueuedMail]:
        found = self.service.store.list_mail(self.account_id)
        return [m for m in found if purpose is None or m.purpose == purpose]

    def suppressed(self) -> dict[str, str]:
        return {s.address: s.reason for s in self.service.store.list_suppressions(self.account_id)}

    def events(self, type_: str) -> int:
        found = self.service.store.list_events(
            self.account_id, after=0, mailbox_id=None, types=frozenset({type_}), limit=1000
        )
        return len(found)

    def inbox(self, box: mailbox.Mailbox) -> list[MessageRecord]:
        found, _ = self.service.store.list_messages(
            box.id, filter="all", direction="inbound", limit=100, cursor=None
        )
        return found


def make_world() -> World:
    clock = Clock()
    ulids = itertools.count(1)
    service = Service(
        MemoryStore(),
        clock=clock,
        new_ulid=lambda: "01" + str(next(ulids)).rjust(24, "0"),
        config=Config(domain=DOMAIN, public_url="http://mm.test"),
    )
    account, _ = service.bootstrap(ADMIN_SECRET)
    admin = service.authenticate(ADMIN_SECRET)
    service.update_account(admin, oversight_email=OPERATOR)
    transport = FakeTransport()
    service.transport = transport
    return World(service, clock, admin, account.id, transport)


@pytest.fixture
def world() -> World:
    return make_world()


def send(
    w: World, box: mailbox.Mailbox, *to: str, key: Key | None = None, body: str = "Hi."
) -> str:
    result = w.service.send(key or w.admin, box.id, to=list(to), subject="Order", body_text=body)
    return result.message_id


# --- 1-4: outbound deliveries (P7) ------------------------------------------------------------


def test_a_deferred_recipient_is_retried_alone_and_the_other_is_handed_over_once(
    world: World,
) -> None:
    box = world.new_box(OversightMode.AUTONOMOUS)
    world.transport.replies["b@two.example"] = LATER
    mid = send(world, box, "a@one.example", "b@two.example")

    assert world.service.run_deliveries() == 1
    state = world.state(mid)
    assert state.status is outbound.Status.DEFERRED
    assert world.transport.calls[0].rcpts == ("a@one.example", "b@two.example")
    assert state.next_attempt_at is not None

    world.clock.now = state.next_attempt_at - 1  # not due yet: nothing is handed over
    world.service.run_deliveries()
    assert len(world.transport.calls) == 1

    world.clock.now = state.next_attempt_at
    world.transport.replies["b@two.example"] = OK
    world.service.run_deliveries()
    assert world.transport.calls[1].rcpts == ("b@two.example",)
    assert world.state(mid).status is outbound.Status.SENT  # a relay took it: sent
    assert world.state(mid).handoffs == 1

    world.clock.advance(7 * 86_400 * SECOND)
    world.service.run_deliveries()
    assert world.transport.handed("a@one.example") == 1
    assert world.transport.handed("b@two.example") == 2
    assert len(world.transport.calls) == 2


def test_one_permanent_refusal_bounces_the_message_and_touches_only_its_mailbox(
    world: World,
) -> None:
    other = world.new_box(OversightMode.AUTONOMOUS)
    send(world, other, "c@three.example")
    world.service.run_deliveries()
    other_before = world.service.counters(other.id, world.clock())
    assert other_before.sent == 1

    box = world.new_box(OversightMode.AUTONOMOUS)
    world.transport.replies["b@two.example"] = GONE
    mid = send(world, box, "a@one.example", "b@two.example")
    world.service.run_deliveries()

    assert world.state(mid).status is outbound.Status.BOUNCED
    assert world.suppressed() == {"b@two.example": "hard_bounce"}
    assert world.service.counters(box.id, world.clock()).hard_bounced == 1
    assert world.service.counters(other.id, world.clock()) == other_before
    world.clock.advance(86_400 * SECOND)
    world.service.run_deliveries()
    assert world.transport.handed("b@two.example") == 1  # a bounce is never retried


def test_a_recipient_refused_for_good_is_never_handed_over_again(world: World) -> None:
    box = world.new_box(OversightMode.AUTONOMOUS)
    world.transport.replies.update({"a@one.example": LATER, "b@two.example": GONE})
    mid = send(world, box, "a@one.example", "b@two.example")
    world.service.run_deliveries()
    world.service.remove_suppression(world.admin, "b@two.example")  # an operator's call
    world.clock.now = world.state(mid).next_attempt_at or 0
    world.transport.replies["a@one.example"] = OK
    world.service.run_deliveries()
    assert world.transport.handed("a@one.example") == 2
    assert world.transport.handed("b@two.example") == 1
    assert world.state(mid).status is outbound.Status.BOUNCED


def test_a_message_that_is_only_ever_deferred_fails_when_the_schedule_runs_out(
    world: World,
) -> None:
    box = world.new_box(OversightMode.AUTONOMOUS)
    world.transport.replies["a@one.example"] = LATER
    mid = send(world, box, "a@one.example")
    world.service.run_deliveries()
    for attempt, delay in enumerate(delivery.DELIVERY_SCHEDULE, start=1):
        assert world.state(mid).status is outbound.Status.DEFERRED
        assert len(world.transport.calls) == attempt
        failed_at = world.clock()
        # jitter keeps the wait within +-20 % of the scheduled delay
        world.clock.now = failed_at + delay * 800 - 1
        world.service.run_deliveries()
        assert len(world.transport.calls) == attempt, f"retried early after attempt {attempt}"
        world.clock.now = failed_at + delay * 1200
        world.service.run_deliveries()
    state = world.state(mid)
    assert state.status is outbound.Status.FAILED
    assert len(world.transport.calls) == len(delivery.DELIVERY_SCHEDULE) + 1
    world.clock.advance(30 * 86_400 * SECOND)
    world.service.run_deliveries()
    assert len(world.transport.calls) == len(delivery.DELIVERY_SCHEDULE) + 1
    assert state.handoffs == 0


def test_an_attempt_interrupted_by_a_crash_is_failed_and_never_handed_over(
    world: World,
) -> None:
    box = world.new_box(OversightMode.AUTONOMOUS)
    mid = send(world, box, "a@one.example")
    jobs, handled = world.service.claim_deliveries()
    assert (handled, [j.message_id for j in jobs]) == (1, [mid])
    assert world.state(mid).status is outbound.Status.SENDING

    assert world.service.recover_in_flight() == 1
    assert world.state(mid).status is outbound.Status.FAILED
    world.clock.advance(7 * 86_400 * SECOND)
    world.service.run_deliveries()
    assert world.transport.calls == []
    # the old worker's late answer changes nothing either
    world.service.finish_delivery(jobs[0], {"a@one.example": OK})
    assert world.state(mid).status is outbound.Status.FAILED
    assert world.state(mid).handoffs == 0
    assert world.service.recover_in_flight() == 0


REPLY_CHOICES = (OK, LATER, GONE, (421, "4.4.2 timeout"), (554, "5.7.1 spam"))


@functools.cache
def shared_world() -> World:
    return make_world()


@settings(max_examples=40)
@given(
    scripts=st.lists(
        st.lists(st.sampled_from(REPLY_CHOICES), min_size=1, max_size=4), min_size=1, max_size=3
    ),
)
def test_property_each_recipient_is_handed_over_until_it_gets_a_final_answer_and_never_after(
    scripts: list[list[Reply]],
) -> None:
    """P7 over random per-recipient reply scripts; a script's last reply repeats forever."""
    w = shared_world()
    box = w.new_box(OversightMode.AUTONOMOUS)
    rcpts = [f"r{i}-{box.id.lower()}@peer{i}.example" for i in range(len(scripts))]
    answers: dict[str, list[Reply]] = {}

    def transport(mail_from: str, given_rcpts: Sequence[str], raw: bytes) -> dict[str, Reply]:
        out = {}
        for r in given_rcpts:
            script = scripts[rcpts.index(r)]
            out[r] = script[min(len(answers.setdefault(r, [])), len(script) - 1)]
            answers[r].append(out[r])
        return out

    w.service.transport = transport
    mid = send(w, box, *rcpts)
    for _ in range(len(delivery.DELIVERY_SCHEDULE) + 2):
        w.service.run_deliveries()
        state = w.state(mid)
        if state.status is not outbound.Status.DEFERRED:
            break
        assert state.next_attempt_at is not None
        w.clock.now = max(w.clock(), state.next_attempt_at)
    state = w.state(mid)
    assert state.status not in (
        outbound.Status.QUEUED,
        outbound.Status.SENDING,
        outbound.Status.DEFERRED,
    )
    assert state.handoffs <= 1
    final = [c for c in delivery.ReplyClass if c is not delivery.ReplyClass.TRANSIENT]
    for r in rcpts:
        classes = [delivery.classify_reply(code, text) for code, text in answers[r]]
        assert all(c not in final for c in classes[:-1]), (r, answers[r])  # nothing after one
    last = {r: delivery.classify_reply(*answers[r][-1]) for r in rcpts}
    waiting = delivery.ReplyClass.TRANSIENT in last.values()
    refused = delivery.ReplyClass.PERMANENT in last.values()
    # one recipient's bounce never stops the others (it is settled for this message)
    expected = (
        outbound.Status.FAILED
        if waiting
        else outbound.Status.BOUNCED
        if refused
        else outbound.Status.SENT
    )
    assert state.status is expected
    if waiting:  # retried on the schedule until it ran out
        assert state.attempts == len(delivery.DELIVERY_SCHEDULE) + 1


def test_a_bounce_in_one_attempt_does_not_cancel_the_retry_for_another_recipient(
    world: World,
) -> None:
    box = world.new_box(OversightMode.AUTONOMOUS)
    world.transport.replies.update({"a@one.example": LATER, "b@two.example": GONE})
    mid = send(world, box, "a@one.example", "b@two.example")
    world.service.run_deliveries()
    assert world.suppressed() == {"b@two.example": "hard_bounce"}
    world.clock.now = world.state(mid).next_attempt_at or 0
    world.transport.replies["a@one.example"] = OK
    world.service.run_deliveries()
    assert world.transport.handed("a@one.example") == 2
    assert world.transport.handed("b@two.example") == 1
    assert world.state(mid).status is not outbound.Status.CANCELLED


def test_a_recipient_suppressed_while_waiting_is_withheld_not_the_whole_message(
    world: World,
) -> None:
    """Once someone has the message, a waiting recipient suppressed since is skipped
    (P14) and the others still get it; nothing is 'cancelled' after a hand-off (P7)."""
    box = world.new_box(OversightMode.AUTONOMOUS)
    world.transport.replies.update({"b@two.example": LATER, "c@three.example": LATER})
    mid = send(world, box, "a@one.example", "b@two.example", "c@three.example")
    world.service.run_deliveries()
    assert world.state(mid).status is outbound.Status.DEFERRED
    world.service.add_suppression(world.admin, "b@two.example")
    world.clock.now = world.state(mid).next_attempt_at or 0
    world.transport.replies.update({"b@two.example": OK, "c@three.example": OK})
    world.service.run_deliveries()
    assert world.transport.handed("a@one.example") == 1
    assert world.transport.handed("b@two.example") == 1  # the first, deferred attempt only
    assert world.transport.handed("c@three.example") == 2
    state = world.state(mid)
    assert state.status is outbound.Status.SENT
    assert state.handoffs == 1
    assert world.message(mid).meta["withheld"] == ["b@two.example"]


def test_a_suppressed_recipient_still_cancels_a_message_nobody_has_yet(world: World) -> None:
    box = world.new_box(OversightMode.AUTONOMOUS)
    world.transport.replies.update({"a@one.example": LATER, "b@two.example": LATER})
    mid = send(world, box, "a@one.example", "b@two.example")
    world.service.run_deliveries()
    world.service.add_suppression(world.admin, "b@two.example")
    world.clock.now = world.state(mid).next_attempt_at or 0
    world.service.run_deliveries()
    assert world.state(mid).status is outbound.Status.CANCELLED
    assert world.transport.handed("a@one.example") == 1


# --- 5: approval by email ------------------------------------------------------------------

TOKEN = re.compile(rb"/v1/approve/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)")


@dataclass(frozen=True)
class Held:
    message_id: str
    pending_id: str
    agent: Key


def hold(w: World, body: str = "Draft body: refund 42 EUR.") -> Held:
    box = w.new_box(OversightMode.GATED_SEND)
    agent = w.agent(box)
    result = w.service.send(agent, box.id, to=["a@one.example"], subject="Refund", body_text=body)
    assert result.status == "pending"
    assert result.pending_id is not None
    return Held(result.message_id, result.pending_id, agent)


def link_token(w: World, pending_id: str) -> str:
    (request,) = [m for m in w.mail("approval_request") if m.related_id == pending_id]
    tokens = set(TOKEN.findall(request.raw))
    assert len(tokens) == 1, tokens  # review, approve and reject all carry the same token
    return tokens.pop().decode()


def test_a_held_message_mails_the_operator_the_draft_and_a_working_link(world: World) -> None:
    held = hold(world)
    (request,) = world.mail("approval_request")
    assert request.related_id == held.pending_id
    assert request.recipients == (OPERATOR,)
    assert request.status == "queued"
    assert b"Draft body: refund 42 EUR." in request.raw
    assert b"http://mm.test/v1/approve/" in request.raw
    token = link_token(world, held.pending_id)

    review = world.service.review_link(token)
    assert review.approval.id == held.pending_id
    assert review.record.id == held.message_id
    assert world.state(held.message_id).status is outbound.Status.PENDING_APPROVAL

    apr, record = world.service.decide_by_link(token, "approve")
    assert apr.status is approvals.Status.APPROVED
    assert record.state.status is outbound.Status.QUEUED
    assert apr.decided_by is not None
    assert apr.decided_by != held.agent.id
    assert world.state(held.message_id).approved_by == apr.decided_by

    with pytest.raises(AlreadyDecided):
        world.service.decide_by_link(token, "reject")
    assert world.state(held.message_id).status is outbound.Status.QUEUED
    world.service.run_deliveries()
    assert world.transport.handed("a@one.example") == 1


def test_a_link_rejection_means_the_message_is_never_handed_over(world: World) -> None:
    held = hold(world)
    world.service.decide_by_link(link_token(world, held.pending_id), "reject", "no refunds")
    assert world.state(held.message_id).status is outbound.Status.REJECTED
    world.clock.advance(86_400 * SECOND)
    world.service.run_deliveries()
    assert world.transport.handed("a@one.example") == 0


def _altered(token: str, index: int) -> str:
    replacement = "A" if token[index] != "A" else "B"
    return token[:index] + replacement + token[index + 1 :]


def test_a_link_with_one_character_changed_is_not_found(world: World) -> None:
    held = hold(world)
    token = link_token(world, held.pending_id)
    body, _, mac = token.partition(".")
    for index in (3, len(body) // 2, len(body) + 1 + len(mac) // 2):
        with pytest.raises(NotFound):
            world.service.decide_by_link(_altered(token, index), "approve")
    with pytest.raises(NotFound):
        world.service.review_link(body)  # no signature at all
    assert world.state(held.message_id).status is outbound.Status.PENDING_APPROVAL


def test_every_single_character_change_of_a_link_is_not_found(world: World) -> None:
    held = hold(world)
    token = link_token(world, held.pending_id)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    accepted = []
    for index in range(len(token)):
        for ch in alphabet.replace(token[index], ""):
            try:
                world.service.review_link(token[:index] + ch + token[index + 1 :])
                accepted.append((index, ch))
            except NotFound:
                pass
    assert accepted == []


def test_an_expired_link_decides_nothing(world: World) -> None:
    held = hold(world)
    token = world.service.approval_token(held.pending_id, world.clock() + SECOND)
    world.clock.advance(SECOND)
    assert world.service.review_link(token).approval.id == held.pending_id  # last valid ms
    world.clock.advance(1)
    with pytest.raises(LinkExpired):
        world.service.decide_by_link(token, "approve")
    assert world.state(held.message_id).status is outbound.Status.PENDING_APPROVAL
    apr = world.service.store.get_approval(held.pending_id)
    assert apr is not None
    assert apr.status is approvals.Status.PENDING


def test_the_mailed_link_expires_after_its_ttl(world: World) -> None:
    held = hold(world)
    token = link_token(world, held.pending_id)
    world.clock.advance(LINK_TTL_MS + 1)
    with pytest.raises(LinkExpired):
        world.service.decide_by_link(token, "approve")
    assert world.state(held.message_id).status is outbound.Status.PENDING_APPROVAL


# --- 6-7: the oversight copy and the server's own mail -----------------------------------------


def test_a_monitored_message_has_exactly_one_copy_equal_to_what_the_recipient_got(
    world: World,
) -> None:
    box = world.new_box(OversightMode.MONITORED)
    world.transport.replies["a@one.example"] = LATER
    mid = send(world, box, "a@one.example")
    world.service.run_deliveries()
    assert world.mail("oversight_copy") == []  # deferred: nobody has it yet

    world.clock.now = world.state(mid).next_attempt_at or 0
    world.transport.replies["a@one.example"] = OK
    world.service.run_deliveries()
    assert world.state(mid).status is outbound.Status.SENT
    (copy,) = world.mail("oversight_copy")
    handoff = world.transport.calls[-1]  # the attempt that succeeded
    assert handoff.rcpts == ("a@one.example",)
    assert copy.related_id == mid
    assert copy.recipients == (OPERATOR,)
    assert copy.raw == handoff.raw
    assert OPERATOR.encode() not in handoff.raw  # Bcc-style: the recipient cannot see it

    world.clock.advance(86_400 * SECOND)
    world.service.run_deliveries()
    assert len(world.mail("oversight_copy")) == 1


def test_an_autonomous_message_has_no_copy(world: World) -> None:
    box = world.new_box(OversightMode.AUTONOMOUS)
    send(world, box, "a@one.example")
    world.service.run_deliveries()
    assert world.transport.handed("a@one.example") == 1
    assert world.mail("oversight_copy") == []


def test_a_monitored_message_that_reached_someone_has_a_copy_even_if_it_then_fails(
    world: World,
) -> None:
    box = world.new_box(OversightMode.MONITORED)
    world.transport.replies["b@two.example"] = LATER
    mid = send(world, box, "a@one.example", "b@two.example")
    for _ in range(len(delivery.DELIVERY_SCHEDULE) + 1):
        world.service.run_deliveries()
        world.clock.now = world.state(mid).next_attempt_at or world.clock.now
    assert world.state(mid).status is outbound.Status.FAILED
    assert world.transport.handed("a@one.example") == 1
    assert len(world.mail("oversight_copy")) == 1


def test_a_crash_fails_an_oversight_copy_in_flight_but_retries_an_approval_request(
    world: World,
) -> None:
    box = world.new_box(OversightMode.MONITORED)
    send(world, box, "a@one.example")
    world.service.run_deliveries()
    held = hold(world)
    claimed = world.service.claim_mail()
    assert sorted(m.purpose for m in claimed) == ["approval_request", "oversight_copy"]
    assert {m.status for m in world.mail()} == {"sending"}

    world.service.recover_in_flight()
    (copy,) = world.mail("oversight_copy")
    (request,) = world.mail("approval_request")
    assert copy.status == "failed"
    assert request.status == "deferred"
    assert request.related_id == held.pending_id

    world.clock.advance(86_400 * SECOND)
    again = world.service.claim_mail()
    assert [m.id for m in again] == [request.id]  # the copy never goes out twice


def test_system_mail_is_deferred_on_a_transient_reply_and_failed_on_a_permanent_one(
    world: World,
) -> None:
    hold(world)
    (mail,) = world.service.claim_mail()
    assert mail.attempts == 1
    world.service.finish_mail(mail, {OPERATOR: LATER})
    (after,) = world.mail("approval_request")
    assert after.status == "deferred"
    first_delay = delivery.DELIVERY_SCHEDULE[0] * SECOND
    assert after.next_attempt_at is not None
    assert world.clock() + first_delay * 8 // 10 <= after.next_attempt_at
    assert after.next_attempt_at <= world.clock() + first_delay * 12 // 10
    assert world.service.claim_mail() == []  # not due yet

    world.clock.now = after.next_attempt_at
    (mail,) = world.service.claim_mail()
    assert mail.attempts == 2
    world.service.finish_mail(mail, {OPERATOR: GONE})
    (after,) = world.mail("approval_request")
    assert after.status == "failed"
    assert after.last_reply.startswith("550")
    world.clock.advance(30 * 86_400 * SECOND)
    assert world.service.claim_mail() == []


def test_system_mail_is_sent_on_a_2xx(world: World) -> None:
    hold(world)
    (mail,) = world.service.claim_mail()
    world.service.finish_mail(mail, {OPERATOR: OK})
    (after,) = world.mail("approval_request")
    assert (after.status, after.next_attempt_at) == ("sent", None)


# --- 8: SMTP arrivals and delivery reports --------------------------------------------------


def arrival(raw: bytes, *rcpts: str, boxes: dict[str, str] | None = None) -> Incoming:
    return Incoming(
        raw=raw,
        mail_from="sender@peer.example",
        rcpts=rcpts,
        parsed=mime.parse(raw),
        signals={},
        boxes=boxes or {},
    )


def plain(to: str, *, subject: str = "Hello", extra: str = "") -> bytes:
    return (
        "From: Pat <pat@peer.example>\r\n"
        f"To: {to}\r\n"
        f"Subject: {subject}\r\n"
        "Date: Fri, 15 Jan 2027 08:00:00 +0000\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}-{to}@peer.example>\r\n"
        f"{extra}"
        "\r\n"
        "Are you there?\r\n"
    ).encode()


def dsn(to: str, failed: str, original_message_id: str) -> bytes:
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.one.example>\r\n"
        f"To: {to}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <dsn-1@mx.one.example>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n'
        "\r\n"
        "--b1\r\n"
        "Content-Type: text/plain\r\n"
        "\r\n"
        "Your message could not be delivered.\r\n"
        "--b1\r\n"
        "Content-Type: message/delivery-status\r\n"
        "\r\n"
        "Reporting-MTA: dns; mx.one.example\r\n"
        "\r\n"
        f"Final-Recipient: rfc822; {failed}\r\n"
        "Action: failed\r\n"
        "Status: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n"
        "--b1\r\n"
        "Content-Type: text/rfc822-headers\r\n"
        "\r\n"
        f"Message-ID: {original_message_id}\r\n"
        "\r\n"
        "--b1--\r\n"
    ).encode()


def arf(to: str, complainant: str, original_message_id: str) -> bytes:
    return (
        "From: Feedback Loop <fbl@isp.example>\r\n"
        f"To: {to}\r\n"
        "Subject: Abuse report\r\n"
        "Message-ID: <arf-1@isp.example>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="b2"\r\n'
        "\r\n"
        "--b2\r\n"
        "Content-Type: text/plain\r\n"
        "\r\n"
        "This is an email abuse report.\r\n"
        "--b2\r\n"
        "Content-Type: message/feedback-report\r\n"
        "\r\n"
        "Feedback-Type: abuse\r\n"
        "User-Agent: fbl/1.0\r\n"
        "Version: 1\r\n"
        f"Original-Rcpt-To: <{complainant}>\r\n"
        "\r\n"
        "--b2\r\n"
        "Content-Type: text/rfc822-headers\r\n"
        "\r\n"
        f"Message-ID: {original_message_id}\r\n"
        "Subject: Order\r\n"
        "\r\n"
        "--b2--\r\n"
    ).encode()


def sent_message(w: World, *to: str) -> tuple[mailbox.Mailbox, str]:
    box = w.new_box(OversightMode.AUTONOMOUS)
    mid = send(w, box, *to)
    w.service.run_deliveries()
    assert w.state(mid).status is outbound.Status.SENT
    return box, mid


def test_a_dsn_to_the_verp_address_bounces_the_message_and_suppresses_the_recipient(
    world: World,
) -> None:
    box, mid = sent_message(world, "a@one.example", "c@three.example")
    verp = reports.verp_address(mid, box.address.domain)
    raw = dsn(verp, "a@one.example", world.message(mid).content.message_id_header)

    (result,) = world.service.accept_smtp([arrival(raw, verp)])
    assert result == Accepted((), 1)
    assert world.state(mid).status is outbound.Status.BOUNCED
    assert world.suppressed() == {"a@one.example": "hard_bounce"}
    assert world.service.counters(box.id, world.clock()).hard_bounced == 1
    assert world.events("message.bounced") == 1


def test_the_same_dsn_twice_counts_one_bounce(world: World) -> None:
    box, mid = sent_message(world, "a@one.example")
    verp = reports.verp_address(mid, box.address.domain)
    raw = dsn(verp, "a@one.example", world.message(mid).content.message_id_header)
    world.service.accept_smtp([arrival(raw, verp)])
    world.service.accept_smtp([arrival(raw, verp)])
    assert world.service.counters(box.id, world.clock()).hard_bounced == 1


def test_a_dsn_naming_someone_the_message_never_went_to_suppresses_nobody(
    world: World,
) -> None:
    box, mid = sent_message(world, "a@one.example")
    verp = reports.verp_address(mid, box.address.domain)
    raw = dsn(verp, "ceo@customer.example", world.message(mid).content.message_id_header)
    world.service.accept_smtp([arrival(raw, verp)])
    assert "ceo@customer.example" not in world.suppressed()


def test_an_arf_complaint_naming_our_message_id_counts_and_suppresses(world: World) -> None:
    box, mid = sent_message(world, "a@one.example")
    raw = arf(str(box.address), "a@one.example", world.message(mid).content.message_id_header)

    (result,) = world.service.accept_smtp([arrival(raw, str(box.address))])
    assert isinstance(result, Accepted)
    assert result.reports == 1
    assert world.service.counters(box.id, world.clock()).complaints == 1
    assert world.suppressed() == {"a@one.example": "complaint"}
    assert world.events("message.complained") == 1
    assert world.state(mid).status is outbound.Status.SENT  # a complaint is not a bounce


def test_mail_for_a_mailbox_decommissioned_after_rcpt_is_refused_and_nothing_stored(
    world: World,
) -> None:
    box = world.new_box(OversightMode.AUTONOMOUS)
    address = str(box.address)
    code, _, resolved = world.service.smtp_rcpt(address)
    assert (code, resolved) == (250, box.id)
    world.service.delete_mailbox(world.admin, box.id)
    received = world.events("message.received")

    with pytest.raises(NoRecipient):
        world.service.accept_smtp([arrival(plain(address), address, boxes={address: box.id})])
    assert world.inbox(box) == []
    assert world.events("message.received") == received


def test_a_dsn_with_a_vanished_second_recipient_still_records_the_bounce(
    world: World,
) -> None:
    box, mid = sent_message(world, "a@one.example")
    gone = world.new_box(OversightMode.AUTONOMOUS)
    world.service.delete_mailbox(world.admin, gone.id)
    verp = reports.verp_address(mid, box.address.domain)
    raw = dsn(verp, "a@one.example", world.message(mid).content.message_id_header)
    item = arrival(raw, verp, str(gone.address), boxes={str(gone.address): gone.id})
    world.service.accept_smtp([item])
    assert world.state(mid).status is outbound.Status.BOUNCED


def test_one_broken_arrival_does_not_refuse_the_others_in_its_batch(world: World) -> None:
    first = world.new_box(OversightMode.AUTONOMOUS)
    second = world.new_box(OversightMode.AUTONOMOUS)
    broken = arrival(plain("x@y"), "not an address")
    batch = [
        arrival(plain(str(first.address)), str(first.address)),
        broken,
        arrival(plain(str(second.address)), str(second.address)),
    ]
    results = world.service.accept_smtp(batch)

    assert isinstance(results[0], Accepted)
    assert isinstance(results[1], MultimailError)
    assert isinstance(results[2], Accepted)
    assert [m.id for m in world.inbox(first)] == list(results[0].message_ids)
    assert [m.id for m in world.inbox(second)] == list(results[2].message_ids)
    assert world.events("message.received") == 2  # the failed batch left nothing behind


# --- 9: loop protection --------------------------------------------------------------------


def received_with_hops(w: World, box: mailbox.Mailbox, hops: str | None) -> str:
    extra = f"X-MultiMail-Hops: {hops}\r\n" if hops is not None else ""
    raw = plain(str(box.address), subject=f"Ping {hops}", extra=extra)
    (result,) = w.service.accept_smtp([arrival(raw, str(box.address))])
    assert isinstance(result, Accepted)
    (message_id,) = result.message_ids
    assert isinstance(w.message(message_id).state, inbound.Inbound)
    return message_id


@pytest.mark.parametrize(("inbound_hops", "outbound_hops"), [(None, "1"), ("5", "6"), ("18", "19")])
def test_a_reply_carries_one_more_hop(
    world: World, inbound_hops: str | None, outbound_hops: str
) -> None:
    box = world.new_box(OversightMode.AUTONOMOUS)
    email_id = received_with_hops(world, box, inbound_hops)
    result = world.service.reply(world.admin, box.id, email_id=email_id, body_text="Pong.")
    assert result.status == "sent"
    world.service.run_deliveries()
    (call,) = world.transport.calls
    assert call.rcpts == ("pat@peer.example",)
    headers = [(k.lower(), v) for k, v in mime.parse(call.raw).headers]
    assert headers.count(("x-multimail-hops", outbound_hops)) == 1


@pytest.mark.parametrize("inbound_hops", ["19", "40"])
def test_a_reply_past_the_hop_limit_is_refused_and_nothing_is_sent(
    world: World, inbound_hops: str
) -> None:
    box = world.new_box(OversightMode.AUTONOMOUS)
    email_id = received_with_hops(world, box, inbound_hops)
    sent = world.events("message.queued"), world.events("oversight.pending")
    with pytest.raises(LoopDetected):
        world.service.reply(world.admin, box.id, email_id=email_id, body_text="Pong.")
    world.service.run_deliveries()
    assert world.transport.calls == []
    assert (world.events("message.queued"), world.events("oversight.pending")) == sent


@pytest.mark.parametrize(
    ("hops", "received", "expected"),
    [
        (delivery.HOP_LIMIT - 1, 0, False),
        (delivery.HOP_LIMIT, 0, True),
        (0, delivery.RECEIVED_LIMIT - 1, False),
        (0, delivery.RECEIVED_LIMIT, True),
        (delivery.HOP_LIMIT - 1, delivery.RECEIVED_LIMIT - 1, False),
        (0, 0, False),
    ],
)
def test_loop_suspected_at_its_boundaries(hops: int, received: int, expected: bool) -> None:
    assert delivery.loop_suspected(hops, received) is expected


# --- 10: what leaves verifies against what the server publishes -----------------------------


def verify_with(w: World, raw: bytes) -> VerifyResult:
    def dns_txt(name: str) -> str | None:
        return next(iter(w.service.published_txt(name)), None)

    def identity_keys(mailbox_id: str) -> list[dict[str, object]]:
        return w.service.published_keys(mailbox_id) or []

    return verify_message(raw, dns_txt=dns_txt, identity_keys=identity_keys)


def test_what_leaves_verifies_against_the_servers_own_publication(world: World) -> None:
    box = world.new_box(OversightMode.AUTONOMOUS)
    send(world, box, "a@one.example", body="Signed and sealed.")
    world.service.run_deliveries()
    (call,) = world.transport.calls

    result = verify_with(world, call.raw)
    assert result.ok, result.reason
    assert (result.mailbox_id, result.address) == (box.id, str(box.address))
    assert result.dkim["result"] == "pass"
    assert result.claim is not None
    assert result.claim["human_approved"] is False
    assert result.claim["oversight_mode"] == "autonomous"

    tampered_body = call.raw.replace(b"Signed and sealed.", b"Signed and sealeD.")
    assert tampered_body != call.raw
    assert not verify_with(world, tampered_body).ok
    tampered_subject = call.raw.replace(b"Subject: Order", b"Subject: Orders")
    assert tampered_subject != call.raw
    assert not verify_with(world, tampered_subject).ok
    stranger = make_world()  # same domain name, other keys: its publication must not vouch
    assert not verify_with(stranger, call.raw).ok


def test_an_approved_message_claims_the_human_and_the_reviewers_key(world: World) -> None:
    held = hold(world)
    reviewer = world.reviewer()
    world.service.decide(reviewer, pending_id=held.pending_id, action="approve")
    world.service.run_deliveries()
    (call,) = world.transport.calls

    result = verify_with(world, call.raw)
    assert result.ok, result.reason
    assert result.claim is not None
    assert result.claim["human_approved"] is True
    assert result.claim["reviewer_key_id"] == reviewer.id
    assert result.claim["reviewer_key_id"] != held.agent.id
    assert result.claim["oversight_mode"] == "gated_send"


def test_the_approval_request_is_dkim_signed_for_the_server_domain(world: World) -> None:
    hold(world)
    (request,) = world.mail("approval_request")
    result = verify_with(world, request.raw)
    assert result.dkim == {"result": "pass", "domain": DOMAIN, "selector": result.dkim["selector"]}
    assert result.dkim["selector"] in ("mm1", "mm1ed")
