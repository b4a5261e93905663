"""A whole account, driven at random: the core (through World) against the naive model.

After every rule the World's outcome (allowed / held / denied / refused) must equal the naive
prediction, the two views of state must agree, the World before the operation must still
read as it did (persistence: old values unchanged), other mailboxes must be untouched, and
every invariant of PRODUCT.md §11 the World can show (P1-P8, P11, P13, P14) must hold.

Budget: 200 examples x up to 50 steps (about 8,000 operations, each checked against the model
and followed by the invariant check) run in about 15 s of one core. The numbers are set
below, so HYPOTHESIS_PROFILE=thorough does not change them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from multimail_core import reputation
from multimail_core.approval import Content
from multimail_core.authorization import Key, Scope
from multimail_core.errors import MultimailError, OversightDenied
from multimail_core.modes import OversightMode
from tests.stateful.naive import ALLOWED, DENIED, HELD, REFUSED, Naive, NBox, NKey, violations
from tests.stateful.naive import view as world_view
from tests.stateful.world import STEP_MS, World

ACCOUNT = "acc_" + "0" * 25 + "1"
OTHER_ACCOUNT = "acc_" + "0" * 25 + "2"
MODES = list(OversightMode)
RECIPIENTS = ["ann@ok.test", "bob@example.com", "carol@example.com", "dan@far.test"]
SENDERS = ["ann@ok.test", "bob@example.com", "eve@spam.test"]
PATTERNS = ["*@ok.test", "carol@example.com", "*@far.test"]
EDIT = Content("edited by the reviewer", "better body", None)
MAX_HISTORY_SENDS = 900  # below reputation's 1,000-send window, so no fact ages out

SCOPES = {
    "admin": ({Scope.ADMIN}, None),
    "reviewer": ({Scope.OVERSIGHT}, None),
    "reader": ({Scope.READ}, None),
}


def held(world: World) -> int:
    return sum(1 for a in world.approvals if a.status.value == "pending")


def score(world: World, box_id: str) -> int:
    return reputation.score(world.counters(box_id))


def build_account(modes: list[OversightMode]) -> tuple[World, Naive, list[str]]:
    """One mailbox per mode, an allowlist on each, an agent key (send+read) per mailbox, and
    keys of every other kind: admin, reviewer (oversight), reader, a reviewer restricted to
    the first mailbox, and another account's admin."""
    world, model = World(ACCOUNT), Naive(ACCOUNT)
    for name, (scopes, restriction) in SCOPES.items():
        world = world.with_key(Key(name, ACCOUNT, frozenset(scopes), restriction))
        model.keys[name] = NKey(ACCOUNT, frozenset(s.value for s in scopes))
    world = world.with_key(Key("outsider", OTHER_ACCOUNT, frozenset({Scope.ADMIN})))
    model.keys["outsider"] = NKey(OTHER_ACCOUNT, frozenset({"admin"}))
    boxes = []
    for i, mode in enumerate(modes):
        world = world.create_mailbox("admin", f"agent{i}@agents.test", mode)
        box_id = world.mailboxes[-1].id
        world = world.set_allowlist(box_id, "reviewer", frozenset(PATTERNS[:2]))
        model.boxes[box_id] = NBox(mode.value, allowlist=frozenset(PATTERNS[:2]))
        agent = f"agent{i}"
        world = world.with_key(
            Key(agent, ACCOUNT, frozenset({Scope.SEND, Scope.READ}), frozenset({box_id}))
        )
        model.keys[agent] = NKey(ACCOUNT, frozenset({"send", "read"}), box_id)
        boxes.append(box_id)
    # A reviewer restricted to the first mailbox: decides there, never raises a mode (P5).
    restricted = frozenset({boxes[0]})
    world = world.with_key(Key("reviewer0", ACCOUNT, frozenset({Scope.OVERSIGHT}), restricted))
    model.keys["reviewer0"] = NKey(ACCOUNT, frozenset({"oversight"}), boxes[0])
    return world, model, boxes


def is_stranger(world: World, key_id: str, box_id: str) -> bool:
    """Another account's key, or an agent key of another mailbox (P6)."""
    key = world.key(key_id)
    return key.account_id != world.box(box_id).account_id or (
        key.mailbox_ids is not None and box_id not in key.mailbox_ids
    )


def outcome_of(act: Callable[[World], World], before: World) -> tuple[str, World, str]:
    try:
        after = act(before)
    except MultimailError as exc:
        return (DENIED if isinstance(exc, OversightDenied) else REFUSED), before, repr(exc)
    return (HELD if held(after) > held(before) else ALLOWED), after, ""


class AccountMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        # Two gated_send mailboxes: the mode where allowlists, holds and upgrades all meet.
        self.world, self.model, self.boxes = build_account([*MODES, OversightMode.GATED_SEND])
        # Strangers first: Hypothesis draws the first element most often when it draws "any".
        self.key_ids = sorted((k.id for k in self.world.keys), key=lambda k: k != "outsider")
        self.agent_of = {box_id: f"agent{i}" for i, box_id in enumerate(self.boxes)}

    def step(
        self,
        label: str,
        act: Callable[[World], World],
        predicted: str,
        *,
        key_id: str | None = None,
        box_id: str | None = None,
    ) -> World:
        before = self.world
        seen = world_view(before)
        outcome, after, error = outcome_of(act, before)
        assert outcome == predicted, f"{label}: core says {outcome} {error}, model {predicted}"
        assert world_view(before) == seen, "an operation changed the World it started from"
        if outcome in (DENIED, REFUSED):
            assert after is before
        if key_id is not None and box_id is not None and is_stranger(before, key_id, box_id):
            assert outcome == REFUSED, f"P6: {key_id} on {box_id}: {outcome}"
            assert after == before, "P6: a stranger's operation changed the World"
        if box_id is not None:
            self.untouched_elsewhere(before, after, box_id)
        assert world_view(after) == self.model.view(), label
        self.world = after
        return after

    def untouched_elsewhere(self, before: World, after: World, box_id: str) -> None:
        """Old values unchanged: an operation on one mailbox leaves the others as they were,
        including their reputation (P8: mailboxes are independent)."""
        for other in self.boxes:
            if other == box_id:
                continue
            assert after.box(other) == before.box(other)
            assert after.facts_of(other) == before.facts_of(other)
            assert score(after, other) == score(before, other)
            for a, b in ((before.outbound, after.outbound), (before.inbound, after.inbound)):
                mine = [m for m in a if m.mailbox_id == other]
                assert mine == [m for m in b if m.mailbox_id == other][: len(mine)]

    def key(self, data: Any, box_id: str, *likely: str) -> str:
        """Mostly a key that may act (``likely``; "agent" is the mailbox's own agent key),
        otherwise any key, strangers included."""
        names = [self.agent_of[box_id] if k == "agent" else k for k in likely]
        return self.pick(data, self.key_ids, names)

    def pick(self, data: Any, items: list[Any], preferred: list[Any]) -> Any:
        """Mostly an item that can move on, sometimes any (to see refusals)."""
        # The simplest draw (0) picks from ``preferred``: Hypothesis draws it often.
        pool = preferred if preferred and data.draw(st.integers(0, 3)) < 3 else items
        return data.draw(st.sampled_from(pool))

    # --- agents --------------------------------------------------------------------------

    @rule(data=st.data(), scheduled=st.booleans())
    def send(self, data: Any, scheduled: bool) -> None:
        box_id = data.draw(st.sampled_from(self.boxes))
        key_id = self.key(data, box_id, "agent", "admin")
        recipients = st.lists(st.sampled_from(RECIPIENTS), min_size=1, max_size=2, unique=True)
        rcpts = tuple(data.draw(recipients))
        w = self.world
        ids = w.next_ids()
        send_at = w.now + 2 * STEP_MS if scheduled else None
        predicted = self.model.send(
            box_id, key_id, rcpts, (ids.message_id, ids.approval_id), now=w.now, send_at=send_at
        )
        self.step(
            "send",
            lambda w: w.send(box_id, key_id, rcpts, send_at=send_at),
            predicted,
            key_id=key_id,
            box_id=box_id,
        )

    @precondition(lambda self: self.world.inbound)
    @rule(data=st.data(), reply=st.booleans())
    def open_or_reply(self, data: Any, reply: bool) -> None:
        msg = data.draw(st.sampled_from(self.world.inbound))
        key_id = self.key(data, msg.mailbox_id, "agent", "reader" if not reply else "admin")
        if reply:
            ids = self.world.next_ids()
            new = (ids.message_id, ids.approval_id)
            predicted = self.model.reply(msg.id, key_id, new, now=self.world.now)
            act: Callable[[World], World] = lambda w: w.reply(msg.id, key_id)  # noqa: E731
        else:
            predicted = self.model.read(msg.id, key_id)
            act = lambda w: w.read(msg.id, key_id)  # noqa: E731
        label = "reply" if reply else "read"
        self.step(label, act, predicted, key_id=key_id, box_id=msg.mailbox_id)

    @precondition(lambda self: self.world.outbound)
    @rule(data=st.data())
    def cancel(self, data: Any) -> None:
        msg = data.draw(st.sampled_from(self.world.outbound))
        key_id = self.key(data, msg.mailbox_id, "agent", "admin")
        predicted = self.model.cancel(msg.id, key_id)
        self.step(
            "cancel",
            lambda w: w.cancel(msg.id, key_id),
            predicted,
            key_id=key_id,
            box_id=msg.mailbox_id,
        )

    # --- overseers -----------------------------------------------------------------------

    @precondition(lambda self: self.world.approvals)
    @rule(data=st.data(), approve=st.booleans(), edit=st.booleans())
    def decide(self, data: Any, approve: bool, edit: bool) -> None:
        pending = [a for a in self.world.approvals if a.status.value == "pending"]
        apr = self.pick(data, list(self.world.approvals), pending)
        key_id = self.key(data, apr.mailbox_id, "reviewer", "admin", "reviewer0")
        edits = EDIT if edit and approve else None
        predicted = self.model.decide(apr.id, key_id, approve=approve, now=self.world.now)
        after = self.step(
            "decide",
            lambda w: w.decide(apr.id, key_id, approve=approve, edits=edits),
            predicted,
            key_id=key_id,
            box_id=apr.mailbox_id,
        )
        decided = after.approval(apr.id)
        if predicted == ALLOWED and apr.direction.value == "outbound":
            # The reviewer's edit is what goes out; the approval keeps both versions.
            assert decided.original == apr.original
            assert after.out(apr.message_id).subject == (edits or apr.original).subject
            assert decided.edited == (edits if edits != apr.original else None)

    @rule(data=st.data(), mode=st.sampled_from(MODES))
    def change_mode(self, data: Any, mode: OversightMode) -> None:
        """Up and down the ladder, by agent keys and by overseers."""
        box_id = data.draw(st.sampled_from(self.boxes))
        key_id = self.key(data, box_id, "agent", "reviewer", "admin", "reviewer0")
        predicted = self.model.change_mode(box_id, key_id, mode.value)
        self.step(
            "change_mode",
            lambda w: w.change_mode(box_id, key_id, mode),
            predicted,
            key_id=key_id,
            box_id=box_id,
        )

    @rule(
        data=st.data(),
        what=st.sampled_from(["request_upgrade", "set_allowlist", "configure"]),
        mode=st.sampled_from(MODES),
        patterns=st.frozensets(st.sampled_from(PATTERNS)),
    )
    def settings(self, data: Any, what: str, mode: OversightMode, patterns: frozenset[str]) -> None:
        box_id = data.draw(st.sampled_from(self.boxes))
        key_id = self.key(data, box_id, "agent", "reviewer")
        act: Callable[[World], World]
        if what == "request_upgrade":
            predicted = self.model.request_upgrade(box_id, key_id, mode.value)
            act = lambda w: w.request_upgrade(box_id, key_id, mode)  # noqa: E731
        elif what == "set_allowlist":
            predicted = self.model.set_allowlist(box_id, key_id, patterns)
            act = lambda w: w.set_allowlist(box_id, key_id, patterns)  # noqa: E731
        else:
            predicted = self.model.configure(box_id, key_id)
            act = lambda w: w.configure(box_id, key_id, "Renamed agent")  # noqa: E731
        before = self.world.box(box_id)
        after = self.step(what, act, predicted, key_id=key_id, box_id=box_id)
        if what == "request_upgrade":
            assert after.box(box_id) == before, "an upgrade request changed the mailbox"

    @rule(data=st.data())
    def decommission(self, data: Any) -> None:
        box_id = data.draw(st.sampled_from(self.boxes))
        # Rarely the admin: a decommissioned mailbox stops most of what the rules can do.
        pool = ["admin"] if data.draw(st.integers(0, 4)) == 4 else self.key_ids
        key_id = data.draw(st.sampled_from(pool))
        predicted = self.model.decommission(box_id, key_id)
        self.step(
            "decommission",
            lambda w: w.decommission(box_id, key_id),
            predicted,
            key_id=key_id,
            box_id=box_id,
        )

    # --- the outside world ---------------------------------------------------------------

    @rule(data=st.data(), sender=st.sampled_from(SENDERS))
    def receive(self, data: Any, sender: str) -> None:
        box_id = data.draw(st.sampled_from(self.boxes))
        ids = self.world.next_ids()
        predicted = self.model.receive(box_id, sender, (ids.message_id, ids.approval_id))
        self.step("receive", lambda w: w.receive(box_id, sender), predicted, box_id=box_id)

    @precondition(lambda self: self.world.outbound)
    @rule(data=st.data())
    def release(self, data: Any) -> None:
        due = [m for m in self.world.outbound if m.status.value == "scheduled"]
        msg = self.pick(data, list(self.world.outbound), due)
        predicted = self.model.release(msg.id)
        self.step("release", lambda w: w.release(msg.id), predicted, box_id=msg.mailbox_id)

    @precondition(lambda self: self.world.outbound)
    @rule(data=st.data(), code=st.sampled_from([250, 451, 550]))
    def deliver(self, data: Any, code: int) -> None:
        ready = [m for m in self.world.outbound if m.status.value in ("queued", "deferred")]
        msg = self.pick(data, list(self.world.outbound), ready)
        box_id, before = msg.mailbox_id, score(self.world, msg.mailbox_id)
        predicted = self.model.deliver(msg.id, code)
        after = self.step(
            f"deliver {code}", lambda w: w.deliver(msg.id, code), predicted, box_id=box_id
        )
        if code == 250:
            assert score(after, box_id) >= before, "P8: a delivery lowered the score"
        else:
            assert score(after, box_id) <= before, "P8: a failure raised the score"

    @precondition(lambda self: self.world.outbound)
    @rule(code=st.sampled_from([250, 250, 451]))
    def drain(self, code: int) -> None:
        """The delivery worker takes every message that is ready, one attempt each."""
        ready = [m for m in self.world.outbound if m.status.value in ("queued", "deferred")]
        for msg in ready:
            predicted = self.model.deliver(msg.id, code)
            self.step(f"drain {code}", lambda w, m=msg.id: w.deliver(m, code), predicted)

    @precondition(lambda self: self.world.outbound)
    @rule(data=st.data(), what=st.sampled_from(["confirm", "bounce", "complain"]))
    def report(self, data: Any, what: str) -> None:
        """A delivery report, an RFC 3464 DSN or an RFC 5965 complaint about a message."""
        sent = [m for m in self.world.outbound if m.status.value in ("sent", "delivered")]
        msg = self.pick(data, list(self.world.outbound), sent)
        box_id, before = msg.mailbox_id, score(self.world, msg.mailbox_id)
        predicted = getattr(self.model, what)(msg.id)
        after = self.step(
            what, lambda w: getattr(w, what)(msg.id), predicted, box_id=msg.mailbox_id
        )
        if what == "confirm":
            assert score(after, box_id) >= before, "P8: a delivery lowered the score"
        else:
            assert score(after, box_id) <= before, f"P8: a {what} raised the score"

    @precondition(lambda self: sum(b.sent for b in self.model.boxes.values()) < MAX_HISTORY_SENDS)
    @rule(
        data=st.data(),
        sent=st.sampled_from([0, 10, 60]),
        bounced=st.integers(0, 8),
        complaints=st.integers(0, 1),
    )
    def history(self, data: Any, sent: int, bounced: int, complaints: int) -> None:
        """Earlier traffic, enough to cross the enforcement bars of §8 (demotion only)."""
        box_id = data.draw(st.sampled_from(self.boxes))
        predicted = self.model.history(box_id, sent=sent, bounced=bounced, complaints=complaints)
        self.step(
            "history",
            lambda w: w.history(box_id, sent=sent, bounced=bounced, complaints=complaints),
            predicted,
            box_id=box_id,
        )

    @invariant()
    def product_invariants_hold(self) -> None:
        bad = violations(self.world)
        assert not bad, bad


AccountMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=50)
TestAccountMachine = AccountMachine.TestCase
