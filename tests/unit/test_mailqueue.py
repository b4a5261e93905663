"""The server's own mail queue (multimail_core.mailqueue) and one delivery attempt's
settlement (workflows.settle_attempt): the rules the shell only stores."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from multimail_core import delivery, mailqueue, outbound, reputation, workflows

NOW = 1_700_000_000_000


def test_server_mail_is_sent_failed_or_deferred_by_its_reply():
    assert mailqueue.after_attempt(1, 250, "2.0.0 ok", draw=500, now=NOW) == (
        mailqueue.Status.SENT,
        None,
    )
    assert mailqueue.after_attempt(1, 550, "5.1.1 no", draw=500, now=NOW) == (
        mailqueue.Status.FAILED,
        None,
    )
    status, at = mailqueue.after_attempt(1, 451, "4.3.0 later", draw=500, now=NOW)
    assert status is mailqueue.Status.DEFERRED
    assert at == NOW + delivery.DELIVERY_SCHEDULE[0] * 1000
    last = len(delivery.DELIVERY_SCHEDULE) + 1
    assert mailqueue.after_attempt(last, 451, "4.3.0 later", draw=500, now=NOW) == (
        mailqueue.Status.FAILED,
        None,
    )


def test_after_a_crash_only_the_oversight_copy_is_not_resent():
    assert mailqueue.after_crash(mailqueue.Purpose.OVERSIGHT_COPY) is mailqueue.Status.FAILED
    for purpose in mailqueue.Purpose:
        if purpose is not mailqueue.Purpose.OVERSIGHT_COPY:
            assert mailqueue.after_crash(purpose) is mailqueue.Status.DEFERRED


def sending(recipients: tuple[str, ...], monitored: bool) -> outbound.Outbound:
    return outbound.Outbound(
        id="msg_01JDQ8ZK3V5T7W9X2B4C6D8E0J",
        mailbox_id="mbx_01JDQ8ZK3V5T7W9X2B4C6D8E0F",
        account_id="acc_01JDQ8ZK3V5T7W9X2B4C6D8E0G",
        thread_id="thr_01JDQ8ZK3V5T7W9X2B4C6D8E0K",
        created_by="key_01JDQ8ZK3V5T7W9X2B4C6D8E0H",
        recipients=recipients,
        subject="s",
        body_text="b",
        body_html=None,
        status=outbound.Status.SENDING,
        monitored=monitored,
        created_at=NOW,
        attempts=1,
    )


CODES = st.sampled_from([(250, "2.0.0 ok"), (451, "4.3.0 later"), (550, "5.1.1 gone")])
RCPTS = ("a@one.example", "b@two.example", "c@three.example")


@given(
    codes=st.lists(CODES, min_size=1, max_size=3),
    monitored=st.booleans(),
    copied=st.booleans(),
    delivered_before=st.booleans(),
)
def test_one_attempt_settles_per_recipient(codes, monitored, copied, delivered_before):
    rcpts = RCPTS[: len(codes)]
    replies = dict(zip(rcpts, codes, strict=True))
    before = frozenset({"z@earlier.example"}) if delivered_before else frozenset()
    result = workflows.settle_attempt(
        sending((*rcpts, "z@earlier.example"), monitored), replies, delivered=before,
        bounced=frozenset(), copied=copied, local_only=False, draw=500, now=NOW,
    )  # fmt: skip
    accepted = {r for r, (c, _) in replies.items() if c == 250}
    refused = {r for r, (c, _) in replies.items() if c == 550}
    waiting = {r for r, (c, _) in replies.items() if c == 451}
    assert result.delivered == before | accepted
    assert result.bounced == refused
    status = result.message.status
    if waiting:
        assert status is outbound.Status.DEFERRED
    elif refused:  # refused by someone for good: bounced, even if others took it
        assert status is outbound.Status.BOUNCED
    else:
        assert status is outbound.Status.SENT
    assert result.copy_now == (monitored and not copied and not before and bool(accepted))
    assert (reputation.Outcome.HARD_BOUNCE in result.facts) == bool(refused)
    assert result.facts.count(reputation.Outcome.SENT) == (0 if waiting else 1)
    assert set(result.suppress) == refused
