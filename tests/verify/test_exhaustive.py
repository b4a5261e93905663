"""Bounded exhaustive exploration of one small account: every command sequence to DEPTH.

The universe: two mailboxes (m1 starts gated_send, m2 monitored; change_mode takes each
through all five modes), three keys (the account's admin, m1's agent key with send+read,
and another account's admin), two recipients (one on the allowlist), at most two outbound
messages (sends and replies) and one inbound message, and the commands of ``commands``:
mode changes up and down by the admin and the agent, sends, inbound mail, reads, replies,
approvals (approve, approve with an edit, reject), cancellation, delivery attempts
(250/451/550), delivery reports, bounces, complaints, allowlist changes, upgrade requests,
a harmful sending history (demotion), decommission, and stranger probes in every state.

Breadth-first; states are de-duplicated on a canonical form that forgets ids, times and
logs (ids are minted in different orders on different paths; logs only grow). That is sound
for what is checked: every World a command produces is checked in full, logs included,
before it is de-duplicated, and each log invariant judges an entry against state the
canonical form keeps (modes, statuses, suppressions). Attempt counts are forgotten too:
they matter only from the 14th failed attempt, which this depth cannot reach.

Checked at every transition: the invariants of PRODUCT.md §11 (tests/stateful/naive.py),
P6 (another account's key, or the agent key on m2, changes nothing), P5 (the agent key
never raises a mode), and that the World a command started from still reads as before.

Measured at depth 6: 96,479 states, 497,678 transitions, about 105 s of CPU split over two
worker processes: 54 s wall on the 2-core machine at load 3, 66 s at load 4.
``pytest -s`` prints the counts; they also go to the report through ``record_property``.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

from multimail_core.approval import Content
from multimail_core.authorization import Key, Scope
from multimail_core.errors import MultimailError
from multimail_core.modes import OversightMode, rank
from tests.stateful.naive import view as world_view
from tests.stateful.naive import violations
from tests.stateful.world import World

DEPTH = 6
ACCOUNT = "acc_" + "0" * 25 + "1"
OTHER_ACCOUNT = "acc_" + "0" * 25 + "2"
OK, FAR = "ann@ok.test", "dan@far.test"  # OK is on the allowlist, FAR is not
NARROW, WIDE = frozenset({OK}), frozenset({OK, "*@far.test"})
MODES = tuple(OversightMode)
EDIT = Content("edited subject", "edited body", None)
# Floors well below what the universe yields, so a regression that stops exploration
# (a command that always raises, a canonical form that merges too much) fails the test.
MIN_STATES = 50_000
MIN_TRANSITIONS = 300_000
MAX_OUTBOUND = 2  # sends and replies stop at this many outbound messages
MAX_INBOUND = 1
WORKERS = min(2, os.cpu_count() or 1)  # the CI machine has 2 cores

Command = tuple[Any, ...]


@functools.cache
def universe() -> tuple[World, str, str]:
    w = World(ACCOUNT).with_key(Key("admin", ACCOUNT, frozenset({Scope.ADMIN})))
    w = w.with_key(Key("outsider", OTHER_ACCOUNT, frozenset({Scope.ADMIN})))
    w = w.create_mailbox("admin", "m1@agents.test", OversightMode.GATED_SEND)
    w = w.create_mailbox("admin", "m2@agents.test", OversightMode.MONITORED)
    m1, m2 = (b.id for b in w.mailboxes)
    w = w.with_key(Key("agent1", ACCOUNT, frozenset({Scope.SEND, Scope.READ}), frozenset({m1})))
    w = w.set_allowlist(m1, "admin", NARROW).set_allowlist(m2, "admin", NARROW)
    return w, m1, m2


def commands(w: World, m1: str, m2: str) -> Iterator[Command]:
    """Every command of the alphabet that names something existing in ``w``.

    m1 is where everything happens: the admin moves it one rung up or down, the agent one
    rung down or (denied) to the top; the agent sends, receives, reads and replies there.
    m2 stays quiet apart from its mode, which the admin turns one rung at a time through all
    five; it is there to be left alone by the agent key (P6) and by m1's reputation (P8).
    Probes by strangers are issued in every state.
    """
    r1 = rank(w.box(m1).mode)
    for r in (r1 - 1, r1 + 1):
        if 0 <= r < len(MODES):
            yield ("change_mode", m1, "admin", MODES[r])
    if r1 > 0:
        yield ("change_mode", m1, "agent1", MODES[r1 - 1])  # its own mailbox, down: allowed
    yield ("change_mode", m1, "agent1", OversightMode.AUTONOMOUS)  # up: denied (P5)
    yield ("change_mode", m2, "admin", MODES[(rank(w.box(m2).mode) + 1) % len(MODES)])
    yield ("change_mode", m2, "agent1", OversightMode.AUTONOMOUS)
    yield ("change_mode", m1, "outsider", OversightMode.AUTONOMOUS)
    yield ("request_upgrade", m1, "agent1", OversightMode.AUTONOMOUS)
    yield ("set_allowlist", m1, "admin", WIDE if w.box(m1).allowlist == NARROW else NARROW)
    yield ("set_allowlist", m1, "agent1", WIDE)
    yield ("decommission", m1, "admin")
    yield ("decommission", m1, "outsider")
    if not any(message is None for _, message, _ in w.facts):
        yield ("history", m1)
    if len(w.outbound) < MAX_OUTBOUND:
        yield ("send", m1, "agent1", (OK,))
        yield ("send", m1, "agent1", (FAR,))
        yield ("send", m1, "admin", (FAR,))  # the admin may never approve its own message
    yield ("send", m2, "agent1", (OK,))
    yield ("send", m1, "outsider", (OK,))
    if len(w.inbound) < MAX_INBOUND:
        yield ("receive", m1, FAR)
    for a in w.approvals:
        if a.status.value == "pending":
            for key_id, verdict in (
                ("admin", "approve"),
                ("admin", "edit"),
                ("admin", "reject"),
                ("agent1", "approve"),
                ("outsider", "approve"),
            ):
                yield ("decide", a.id, key_id, verdict)
    for msg in w.outbound:
        status = msg.status.value
        if status in ("queued", "deferred"):
            yield from (("deliver", msg.id, code) for code in (250, 451, 550))
        if status in ("pending_approval", "queued", "deferred"):
            yield from (("cancel", msg.id, key_id) for key_id in ("agent1", "outsider"))
        if status in ("sent", "delivered", "bounced"):
            yield from ((report, msg.id) for report in ("confirm", "bounce", "complain"))
    for msg in w.inbound:
        yield ("read", msg.id, "agent1")
        yield ("read", msg.id, "outsider")
        if len(w.outbound) < MAX_OUTBOUND:
            yield ("reply", msg.id, "agent1")


def run(w: World, cmd: Command) -> World:
    name, *args = cmd
    if name == "decide":
        apr, key_id, verdict = args
        edits = EDIT if verdict == "edit" else None
        return w.decide(apr, key_id, approve=verdict != "reject", edits=edits)
    if name == "history":
        return w.history(args[0], sent=50, bounced=5, complaints=0)
    operation: Callable[..., World] = getattr(w, name)
    return operation(*args)


def target(w: World, cmd: Command) -> tuple[str | None, str | None]:
    """(key, mailbox) a command acts with and on, for the P6 check."""
    name, *args = cmd
    if name in ("change_mode", "set_allowlist", "decommission", "request_upgrade", "send"):
        return args[1], args[0]
    if name == "decide":
        return args[1], w.approval(args[0]).mailbox_id
    if name == "cancel":
        return args[1], w.out(args[0]).mailbox_id
    if name in ("read", "reply"):
        return args[1], w.inb(args[0]).mailbox_id
    return None, None


def canonical(w: World) -> tuple[Any, ...]:
    """The World without ids, times and logs: what decides its future."""
    approvals = {
        a.message_id: (a.status.value, a.decided_by or "", a.edited is not None)
        for a in w.approvals
    }
    origins = {o.message_id: (o.mode.value, tuple(sorted(o.allowlist))) for o in w.origins}
    handed = Counter(h.message_id for h in w.transport)
    copies = Counter(message_id for message_id, _ in w.copies)
    none = ("", "", False)
    outbound = sorted(
        (
            m.mailbox_id,
            m.created_by,
            m.recipients,
            m.status.value,
            m.subject,
            m.monitored,
            m.handoffs,
            approvals.get(m.id, none),
            origins[m.id],
            handed[m.id],
            copies[m.id],
        )
        for m in w.outbound
    )
    inbound = sorted(
        (m.mailbox_id, m.sender, m.status.value, m.replied, approvals.get(m.id, none))
        + origins[m.id]
        for m in w.inbound
    )
    boxes = tuple(
        (b.id, b.mode.value, b.status.value, tuple(sorted(b.allowlist))) for b in w.mailboxes
    )
    facts = sorted(Counter((box, f.outcome.value) for box, _, f in w.facts).items())
    return (boxes, tuple(outbound), tuple(inbound), tuple(sorted(w.suppressed_set)), tuple(facts))


def check_transition(before: World, cmd: Command, after: World) -> None:
    key_id, box_id = target(before, cmd)
    if key_id is not None and box_id is not None:
        key = before.key(key_id)
        stranger = key.account_id != ACCOUNT or (
            key.mailbox_ids is not None and box_id not in key.mailbox_ids
        )
        assert not stranger or after == before, f"P6: {cmd} by a stranger changed the World"
    if key_id == "agent1" and cmd[0] == "change_mode":
        old, new = before.box(cmd[1]).mode, after.box(cmd[1]).mode
        assert rank(new) <= rank(old), f"P5: {cmd} raised {old.value} to {new.value}"
    if after is not before:
        bad = violations(after)
        assert not bad, f"{cmd}: {bad}"


Path = tuple[Command, ...]
Found = tuple[list[tuple[Any, Path]], int, Counter[str]]


def expand(paths: list[Path]) -> Found:
    """Apply every command to the World at the end of each path (replayed from the start,
    so no World crosses a process boundary); check each transition; return the successors'
    canonical forms with their paths (new within this batch), the number of transitions
    tried, and how often each command name changed the World."""
    start, m1, m2 = universe()
    found: list[tuple[Any, Path]] = []
    local: set[Any] = set()
    transitions, moved = 0, Counter[str]()
    for path in paths:
        w = start
        for step in path:
            w = run(w, step)
        seen = world_view(w)
        for cmd in commands(w, m1, m2):
            transitions += 1
            try:
                after = run(w, cmd)
            except MultimailError:
                after = w
            check_transition(w, cmd, after)
            if after is w:
                continue
            moved[cmd[0]] += 1
            form = canonical(after)
            if form not in local:
                local.add(form)
                found.append((form, (*path, cmd)))
        assert world_view(w) == seen, "a command changed the World it started from"
    return found, transitions, moved


def explore(depth: int, workers: int = WORKERS) -> tuple[int, int, Counter[str]]:
    """Breadth-first over every command sequence up to ``depth``, level by level, the
    level's states split among ``workers`` processes; return the number of distinct
    states, the transitions tried and how often each command name changed the World."""
    start, _, _ = universe()
    assert violations(start) == []
    visited = {canonical(start)}
    frontier: list[Path] = [()]
    transitions, moved = 0, Counter[str]()
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        for level in range(1, depth + 1):
            size = max(1, len(frontier) // (8 * workers))
            batches = [frontier[i : i + size] for i in range(0, len(frontier), size)]
            frontier = []
            for found, tried, changed in pool.map(expand, batches):
                transitions += tried
                moved += changed
                for form, path in found:
                    if form not in visited:
                        visited.add(form)
                        if level < depth:  # the last level is checked, not expanded
                            frontier.append(path)
    return len(visited), transitions, moved


@pytest.mark.slow
# junitxml's default xunit2 family warns about record_property yet writes it all the same.
@pytest.mark.filterwarnings("ignore:record_property is incompatible:pytest.PytestWarning")
def test_every_sequence_to_depth_keeps_the_invariants(
    record_property: Callable[[str, object], None],
) -> None:
    began = time.perf_counter()
    states, transitions, moved = explore(DEPTH)
    seconds = time.perf_counter() - began
    summary = f"explored {states} states, {transitions} transitions, depth {DEPTH}"
    print(f"{summary} in {seconds:.0f} s; state-changing commands: {dict(moved)}")
    record_property("exhaustive_states", states)
    record_property("exhaustive_transitions", transitions)
    record_property("exhaustive_depth", DEPTH)
    record_property("exhaustive_seconds", round(seconds, 1))
    assert states >= MIN_STATES, summary
    assert transitions >= MIN_TRANSITIONS, summary
    # Every kind of command changed the World somewhere: the universe is not degenerate.
    assert set(moved) >= {
        "change_mode",
        "send",
        "receive",
        "decide",
        "deliver",
        "confirm",
        "bounce",
        "complain",
        "cancel",
        "read",
        "reply",
        "set_allowlist",
        "decommission",
        "history",
        "request_upgrade",
    }, moved
