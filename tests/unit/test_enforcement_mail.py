"""Reputation enforcement fed by real delivery outcomes (PRODUCT.md §8): bounces over the
bars warn, then demote the mailbox that bounced (only that one), and the operator is
mailed; an agent's upgrade request is mailed too (§4)."""

from __future__ import annotations

from multimail_core import mailbox, reputation
from multimail_core.modes import OversightMode
from tests.unit.test_mailflow import GONE, OPERATOR, World, make_world, send


def send_many(world: World, box: mailbox.Mailbox, total: int, every: int) -> None:
    """``total`` messages, one recipient each; every ``every``-th one bounces (0: none)."""
    for i in range(1, total + 1):
        rcpt = f"r{i}-{box.id.lower()}@customers.example"
        if every and i % every == 0:
            world.transport.replies[rcpt] = GONE
        send(world, box, rcpt)
        world.service.run_deliveries()


def test_a_bounce_rate_over_the_bar_demotes_only_that_mailbox_and_mails_the_operator():
    world = make_world()
    noisy = world.new_box(OversightMode.AUTONOMOUS)
    quiet = world.new_box(OversightMode.AUTONOMOUS)
    bar = reputation.THRESHOLDS
    send_many(world, quiet, bar.min_volume, 0)
    send_many(world, noisy, bar.min_volume, 5)  # 20 % bounce
    after = world.service.store.get_mailbox(noisy.id)
    assert after is not None
    assert after.mode is OversightMode.GATED_SEND  # demoted, never promoted (P13)
    other = world.service.store.get_mailbox(quiet.id)
    assert other is not None
    assert other.mode is OversightMode.AUTONOMOUS  # one mailbox's bounces move only its own
    [notice] = world.mail("reputation_demotion")
    assert notice.recipients == (OPERATOR,)
    assert b"demoted to gated_send" in notice.raw
    assert world.events("reputation.warning") >= 1
    # what the demoted mailbox sends now waits for a reviewer
    held = send(world, after, "new@customers.example")
    assert world.state(held).status.value == "pending_approval"


def test_below_the_minimum_volume_nothing_happens():
    world = make_world()
    box = world.new_box(OversightMode.AUTONOMOUS)
    send_many(world, box, reputation.THRESHOLDS.min_volume - 1, 2)  # 50 %, but too few
    after = world.service.store.get_mailbox(box.id)
    assert after is not None
    assert after.mode is OversightMode.AUTONOMOUS
    assert world.mail("reputation_demotion") == []


def test_an_upgrade_request_is_mailed_to_the_operator():
    world = make_world()
    box = world.new_box(OversightMode.GATED_SEND)
    world.service.request_upgrade(world.agent(box), box.id, OversightMode.AUTONOMOUS)
    [notice] = world.mail("upgrade_request")
    assert notice.recipients == (OPERATOR,)
    assert b"autonomous" in notice.raw
    assert world.service.store.get_mailbox(box.id).mode is OversightMode.GATED_SEND
