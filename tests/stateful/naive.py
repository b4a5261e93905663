"""A naive model of one account, and the invariants P1-P14, stated straight from PRODUCT.md.

Rule 1: nothing here reads the core's tables: modes are strings, scopes are strings, and
        every decision is a plain if/else written from PRODUCT.md §3 (keys), §4 (oversight
        modes and lifecycles), §8 (reputation, suppression) and §11 (invariants).
Rule 2: ``Naive`` predicts each operation's outcome: ALLOWED, HELD (waits for a reviewer),
        DENIED (the oversight table said no: 403 oversight_denied) or REFUSED (any other
        error: wrong key, wrong state, suppressed recipient...). It changes its own state
        only when the outcome is ALLOWED or HELD.
Rule 3: the order of checks is PRODUCT's: who asks (P6), then the mailbox's status (P11),
        then oversight (P1-P5), then suppression (P14).
Rule 4: ``violations`` judges a World (tests/stateful/world.py) against §11, naively too.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

LADDER = ("read_only", "gated_all", "gated_send", "monitored", "autonomous")
ALLOWED, HELD, DENIED, REFUSED = "allowed", "held", "denied", "refused"
CANCELLABLE = ("pending_approval", "scheduled", "queued", "deferred")
HIDDEN = ("pending_inbound_approval", "rejected")
MAX_TRANSIENT_ATTEMPTS = 13  # PRODUCT §6: retries with backoff; the 14th 4xx fails it


def rank(mode: str) -> int:
    return LADDER.index(mode)


def allowlisted(recipient: str, patterns: frozenset[str] | set[str]) -> bool:
    """PRODUCT §4: an exact address or ``*@domain``."""
    r = recipient.lower()
    for p in patterns:
        p = p.lower()
        if r == p or (p.startswith("*@") and r.split("@")[1] == p[2:]):
            return True
    return False


@dataclass
class NKey:
    account: str
    scopes: frozenset[str]
    mailbox: str | None = None  # agent keys are restricted to one mailbox

    @property
    def overseer(self) -> bool:
        return "admin" in self.scopes or "oversight" in self.scopes


@dataclass
class NBox:
    mode: str
    active: bool = True
    allowlist: frozenset[str] = frozenset()
    sent: int = 0
    bounced: int = 0
    complaints: int = 0


@dataclass
class NOut:
    mailbox: str
    creator: str
    rcpts: tuple[str, ...]
    status: str
    copy: bool
    send_at: int | None
    attempts: int = 0


@dataclass
class NIn:
    mailbox: str
    sender: str
    status: str


@dataclass
class NApproval:
    message: str
    outbound: bool
    creator: str | None
    decided: bool = False


@dataclass
class Naive:
    account: str
    keys: dict[str, NKey] = field(default_factory=dict)
    boxes: dict[str, NBox] = field(default_factory=dict)
    out: dict[str, NOut] = field(default_factory=dict)
    inb: dict[str, NIn] = field(default_factory=dict)
    approvals: dict[str, NApproval] = field(default_factory=dict)
    suppressed: set[str] = field(default_factory=set)
    transport: list[tuple[str, str]] = field(default_factory=list)
    copies: list[str] = field(default_factory=list)

    # --- who may do what (§3, §5) ---------------------------------------------------------

    def may(self, key_id: str, box: str, *scopes: str, agent_ok: bool = True) -> bool:
        k = self.keys[key_id]
        if k.account != self.account:
            return False
        if k.mailbox is not None and (not agent_ok or k.mailbox != box):
            return False
        return "admin" in k.scopes or any(s in k.scopes for s in scopes)

    # --- sending (§4 table, §8 suppression) ------------------------------------------------

    def _send_verdict(self, box_id: str, key_id: str, rcpts: tuple[str, ...]) -> str:
        box = self.boxes[box_id]
        if not self.may(key_id, box_id, "send"):
            return REFUSED
        if not box.active:
            return REFUSED
        if box.mode == "read_only":
            return DENIED
        if any(r.lower() in self.suppressed for r in rcpts):
            return REFUSED
        if box.mode == "gated_all":
            return HELD
        if box.mode == "gated_send":
            return ALLOWED if all(allowlisted(r, box.allowlist) for r in rcpts) else HELD
        return ALLOWED  # monitored and autonomous send

    def send(
        self,
        box_id: str,
        key_id: str,
        rcpts: tuple[str, ...],
        ids: tuple[str, str],
        *,
        now: int,
        send_at: int | None = None,
    ) -> str:
        verdict = self._send_verdict(box_id, key_id, rcpts)
        if verdict in (ALLOWED, HELD):
            self._create(box_id, key_id, rcpts, ids, verdict, now=now, send_at=send_at)
        return verdict

    def reply(self, inbound_id: str, key_id: str, ids: tuple[str, str], *, now: int) -> str:
        original = self.inb[inbound_id]
        verdict = self._send_verdict(original.mailbox, key_id, (original.sender,))
        if verdict in (DENIED, REFUSED):
            return verdict
        if original.status in HIDDEN:
            return REFUSED  # nobody replies to mail the agent cannot see
        self._create(original.mailbox, key_id, (original.sender,), ids, verdict, now=now)
        if original.status == "unread":
            original.status = "read"
        return verdict

    def _create(
        self,
        box_id: str,
        key_id: str,
        rcpts: tuple[str, ...],
        ids: tuple[str, str],
        verdict: str,
        *,
        now: int,
        send_at: int | None = None,
    ) -> None:
        message_id, approval_id = ids
        later = send_at is not None and send_at > now
        status = "pending_approval" if verdict == HELD else "scheduled" if later else "queued"
        copy = self.boxes[box_id].mode == "monitored"
        self.out[message_id] = NOut(box_id, key_id, rcpts, status, copy, send_at)
        if verdict == HELD:
            self.approvals[approval_id] = NApproval(message_id, True, key_id)

    def cancel(self, message_id: str, key_id: str) -> str:
        m = self.out[message_id]
        if not self.may(key_id, m.mailbox, "send") or m.status not in CANCELLABLE:
            return REFUSED
        m.status = "cancelled"
        return ALLOWED

    # --- receiving and reading -------------------------------------------------------------

    def receive(self, box_id: str, sender: str, ids: tuple[str, str]) -> str:
        box = self.boxes[box_id]
        if not box.active:
            return REFUSED
        held = box.mode == "gated_all"
        self.inb[ids[0]] = NIn(box_id, sender, "pending_inbound_approval" if held else "unread")
        if held:
            self.approvals[ids[1]] = NApproval(ids[0], False, None)
            return HELD
        return ALLOWED

    def read(self, message_id: str, key_id: str) -> str:
        m = self.inb[message_id]
        if not self.may(key_id, m.mailbox, "read"):
            return REFUSED
        if m.status in HIDDEN:
            return DENIED
        if m.status == "unread":
            m.status = "read"
        return ALLOWED

    # --- reviewing ------------------------------------------------------------------------

    def decide(self, approval_id: str, key_id: str, *, approve: bool, now: int) -> str:
        a = self.approvals[approval_id]
        msg: Any = self.out[a.message] if a.outbound else self.inb[a.message]
        if not self.may(key_id, msg.mailbox, "oversight"):
            return REFUSED
        release = self._release_verdict(msg) if approve and a.outbound else ALLOWED
        if a.decided or key_id == a.creator:
            return REFUSED  # decided once; nobody approves their own message
        if msg.status not in ("pending_approval", "pending_inbound_approval"):
            return REFUSED  # e.g. the sender cancelled it meanwhile
        if approve and not a.outbound and not self.boxes[msg.mailbox].active:
            return REFUSED  # nothing is released into a decommissioned mailbox (P11)
        if release != ALLOWED:
            return release
        a.decided = True
        if not approve:
            msg.status = "rejected"
        elif not a.outbound:
            msg.status = "unread"
        else:
            later = msg.send_at is not None and msg.send_at > now
            msg.status = "scheduled" if later else "queued"
        return ALLOWED

    def _release_verdict(self, m: NOut) -> str:
        """May held or queued mail still leave? Not from an inactive or read_only mailbox
        (P11, P2), not to a suppressed recipient (P14)."""
        box = self.boxes[m.mailbox]
        if not box.active:
            return REFUSED
        if box.mode == "read_only":
            return DENIED
        if any(r.lower() in self.suppressed for r in m.rcpts):
            return REFUSED
        return ALLOWED

    # --- mailbox settings -----------------------------------------------------------------

    def change_mode(self, box_id: str, key_id: str, mode: str) -> str:
        """Down the ladder: any overseer, or the mailbox's own agent key. Up: overseers only
        (an agent can only request an upgrade)."""
        box, k = self.boxes[box_id], self.keys[key_id]
        if not self.may(key_id, box_id, "read", "send", "oversight"):
            return REFUSED
        lowering = rank(mode) <= rank(box.mode)
        permitted = (k.overseer and k.mailbox is None) or (k.mailbox == box_id and lowering)
        if not box.active:
            return REFUSED
        if not permitted:
            return DENIED
        box.mode = mode
        return ALLOWED

    def request_upgrade(self, box_id: str, key_id: str, mode: str) -> str:
        box = self.boxes[box_id]
        if not self.may(key_id, box_id, "read", "send", "oversight") or not box.active:
            return REFUSED
        return ALLOWED if rank(mode) > rank(box.mode) else REFUSED

    def set_allowlist(self, box_id: str, key_id: str, patterns: frozenset[str]) -> str:
        box = self.boxes[box_id]
        if not self.may(key_id, box_id, "oversight", agent_ok=False) or not box.active:
            return REFUSED
        box.allowlist = patterns
        return ALLOWED

    def configure(self, box_id: str, key_id: str) -> str:
        if not self.may(key_id, box_id, "send", "oversight") or not self.boxes[box_id].active:
            return REFUSED
        return ALLOWED

    def decommission(self, box_id: str, key_id: str) -> str:
        box = self.boxes[box_id]
        if not self.may(key_id, box_id, "admin", agent_ok=False) or not box.active:
            return REFUSED
        box.active = False
        return ALLOWED

    # --- delivery, bounces, complaints, reputation (§4, §6, §8) ------------------------------

    def release(self, message_id: str) -> str:
        m = self.out[message_id]
        if m.status != "scheduled":
            return REFUSED
        m.status = "queued"
        return ALLOWED

    def deliver(self, message_id: str, code: int) -> str:
        m = self.out[message_id]
        box = self.boxes[m.mailbox]
        if m.status not in ("queued", "deferred"):
            return REFUSED
        if self._release_verdict(m) != ALLOWED:
            m.status = "cancelled"  # checked again at the last moment; it may not leave
            return ALLOWED
        m.attempts += 1
        if code // 100 == 2:
            m.status = "sent"
            self.transport += [(message_id, r) for r in dict.fromkeys(m.rcpts)]
            self.copies += [message_id] if m.copy else []
            box.sent += 1
        elif code // 100 == 5:
            m.status = "bounced"
            self._harm(box, m.rcpts, bounced=1)
        else:
            m.status = "failed" if m.attempts > MAX_TRANSIENT_ATTEMPTS else "deferred"
        return ALLOWED

    def confirm(self, message_id: str) -> str:
        m = self.out[message_id]
        if m.status != "sent":
            return REFUSED
        m.status = "delivered"
        return ALLOWED

    def bounce(self, message_id: str) -> str:
        m = self.out[message_id]
        if m.status not in ("sent", "delivered"):
            return REFUSED
        m.status = "bounced"
        self._harm(self.boxes[m.mailbox], m.rcpts, bounced=1)
        return ALLOWED

    def complain(self, message_id: str) -> str:
        m = self.out[message_id]
        if m.status not in ("sent", "delivered", "bounced"):
            return REFUSED
        self._harm(self.boxes[m.mailbox], m.rcpts[:1], complaints=1)
        return ALLOWED

    def history(self, box_id: str, *, sent: int, bounced: int, complaints: int) -> str:
        box = self.boxes[box_id]
        box.sent += sent
        self._harm(box, (), bounced=bounced, complaints=complaints)
        return ALLOWED

    def _harm(
        self, box: NBox, rcpts: tuple[str, ...], *, bounced: int = 0, complaints: int = 0
    ) -> None:
        """§8: hard-bounced and complaining recipients are suppressed; past the minimum
        volume, bounce >= 10 % or complaints >= 0.5 % demote a mailbox to gated_send."""
        self.suppressed |= {r.lower() for r in rcpts}
        box.bounced += bounced
        box.complaints += complaints
        if not box.active or box.sent < 50:
            return
        harmful = box.bounced * 10 >= box.sent or box.complaints * 200 >= box.sent
        if harmful and box.mode in ("monitored", "autonomous"):
            box.mode = "gated_send"

    # --- what must agree with the World ----------------------------------------------------

    def view(self) -> dict[str, Any]:
        return {
            "modes": {b: x.mode for b, x in self.boxes.items()},
            "active": {b: x.active for b, x in self.boxes.items()},
            "allowlists": {b: x.allowlist for b, x in self.boxes.items()},
            "outbound": {m: x.status for m, x in self.out.items()},
            "inbound": {m: x.status for m, x in self.inb.items()},
            "decided": {a: x.decided for a, x in self.approvals.items()},
            "suppressed": set(self.suppressed),
            "transport": list(self.transport),
            "copies": list(self.copies),
        }


def view(world: Any) -> dict[str, Any]:
    """The same projection of a World."""
    return {
        "modes": {b.id: b.mode.value for b in world.mailboxes},
        "active": {b.id: b.status.value == "active" for b in world.mailboxes},
        "allowlists": {b.id: b.allowlist for b in world.mailboxes},
        "outbound": {m.id: m.status.value for m in world.outbound},
        "inbound": {m.id: m.status.value for m in world.inbound},
        "decided": {a.id: a.status.value != "pending" for a in world.approvals},
        "suppressed": set(world.suppressed_set),
        "transport": [(h.message_id, h.recipient) for h in world.transport],
        "copies": [m for m, _ in world.copies],
    }


# --- the invariants of PRODUCT.md §11, over a whole World --------------------------------


def violations(world: Any) -> list[str]:
    """Every breach of P1-P8, P11, P13, P14 visible in ``world``; empty when all hold."""
    bad: list[str] = []
    keys = {k.id: k for k in world.keys}
    boxes = {b.id: b for b in world.mailboxes}
    origin = {o.message_id: o for o in world.origins}
    approval_of = {a.message_id: a for a in world.approvals}

    def overseer(key_id: str | None, *, unrestricted: bool = False) -> bool:
        k = keys.get(key_id or "")
        scopes = {s.value for s in k.scopes} if k else set()
        return (
            k is not None
            and k.account_id == world.account_id
            and bool(scopes & {"admin", "oversight"})
            and not (unrestricted and k.mailbox_ids is not None)
        )

    def owns(key_id: str | None, box_id: str) -> bool:
        k = keys.get(key_id or "")
        return (
            k is not None
            and k.account_id == boxes[box_id].account_id
            and (k.mailbox_ids is None or box_id in k.mailbox_ids)
        )

    handed: dict[str, list[str]] = {}
    for h in world.transport:
        handed.setdefault(h.message_id, []).append(h.recipient)
    copies: dict[str, int] = {}
    for message_id, _ in world.copies:
        copies[message_id] = copies.get(message_id, 0) + 1
    ended = {e.mailbox_id: i for i, e in enumerate(world.events) if _is(e, "MailboxDecommissioned")}

    for m in world.outbound:
        o, status, a = origin[m.id], m.status.value, approval_of.get(m.id)
        mode = o.mode.value
        gated = mode in ("read_only", "gated_all") or (
            mode == "gated_send" and not all(allowlisted(r, o.allowlist) for r in m.recipients)
        )
        if (
            gated
            and status not in ("pending_approval", "rejected", "cancelled")
            and not (
                a is not None
                and a.status.value == "approved"
                and a.decided_by != m.created_by
                and overseer(a.decided_by)
            )
        ):
            bad.append(f"P1: {m.id} created in {mode} is {status} without another overseer's OK")
        if mode == "read_only":
            bad.append(f"P2: {m.id} was created in a read_only mailbox")
        sent_to = handed.get(m.id, [])
        want = 1 if sent_to and mode == "monitored" else 0
        if copies.get(m.id, 0) != want:
            bad.append(f"P4: {m.id} ({mode}) has {copies.get(m.id, 0)} copies, wants {want}")
        if not owns(m.created_by, m.mailbox_id) or m.account_id != world.account_id:
            bad.append(f"P6: {m.id} was created by {m.created_by}, a stranger to its mailbox")
        if len(sent_to) != len(set(sent_to)):
            bad.append(f"P7: {m.id} handed to a recipient twice: {sent_to}")
        if sent_to and (status in ("rejected", "cancelled") or m.handoffs != 1):
            bad.append(f"P7: {m.id} is {status} with handoffs={m.handoffs} but was handed over")
        if sent_to and sorted(sent_to) != sorted(set(m.recipients)):
            bad.append(f"P7: {m.id} handed to {sent_to}, not to its recipients {m.recipients}")

    told = {
        e.message_id for e in world.events if _is(e, "MessageReceived") or _is(e, "MessageRead")
    }
    for m in world.inbound:
        o, status, a = origin[m.id], m.status.value, approval_of.get(m.id)
        if status in HIDDEN and m.id in told:
            bad.append(f"P3: held inbound {m.id} was shown to the agent")
        if (
            o.mode.value == "gated_all"
            and status not in HIDDEN
            and not (a is not None and a.status.value == "approved" and overseer(a.decided_by))
        ):
            bad.append(f"P3: {m.id} received in gated_all is {status} without approval")

    for a in world.approvals:
        if a.decided_by is not None and not (
            overseer(a.decided_by) and owns(a.decided_by, a.mailbox_id)
        ):
            bad.append(f"P6: approval {a.id} decided by {a.decided_by}")

    for e in world.events:
        raised = _is(e, "ModeChanged") and rank(e.new.value) > rank(e.old.value)
        if raised and not overseer(e.by, unrestricted=True):  # agent keys never raise
            bad.append(f"P5: {e.by} raised {e.mailbox_id} from {e.old.value} to {e.new.value}")
        if _is(e, "ModeChanged") and not owns(e.by, e.mailbox_id):
            bad.append(f"P6: {e.by} changed the mode of {e.mailbox_id}")
        if _is(e, "MailboxDemoted") and rank(e.new.value) >= rank(e.old.value):
            bad.append(f"P13: enforcement moved {e.mailbox_id} from {e.old.value} to {e.new.value}")

    bad += _reputation_violations(world, boxes)

    for o in world.origins:
        if o.mailbox_id in ended and o.seq > ended[o.mailbox_id]:
            bad.append(f"P11: {o.message_id} arrived in decommissioned {o.mailbox_id}")
    sender_of = {m.id: m.mailbox_id for m in world.outbound}
    since = dict(world.suppressed)
    for h in world.transport:
        box_id = sender_of[h.message_id]
        if box_id in ended and h.seq > ended[box_id]:
            bad.append(f"P11: decommissioned {box_id} sent {h.message_id}")
        if h.recipient.lower() in since and since[h.recipient.lower()] < h.seq:
            bad.append(f"P14: {h.message_id} handed to suppressed {h.recipient}")
    return bad


def _reputation_violations(world: Any, boxes: dict[str, Any]) -> list[str]:
    """P8: rates in [0, 1] (basis points), score in [0, 100], and each fact is the mailbox's own."""

    bad: list[str] = []
    owner = {m.id: m.mailbox_id for m in world.outbound}
    for box_id, message_id, _ in world.facts:
        if box_id not in boxes or (message_id is not None and owner.get(message_id) != box_id):
            bad.append(f"P8: a fact of {message_id} was counted for {box_id}")
    for box_id in boxes:
        rates, score = _rates_and_score(world.facts_of(box_id))
        if not all(0 <= r <= 10_000 for r in rates) or not 0 <= score <= 100:
            bad.append(f"P8: {box_id} has rates {rates}, score {score}")
    return bad


@functools.lru_cache(maxsize=4096)
def _rates_and_score(facts: tuple[Any, ...]) -> tuple[tuple[int, ...], int]:
    """Rates (basis points) and score of one mailbox's facts, as the core computes them."""
    from multimail_core import reputation

    c = reputation.tally(facts)
    rates = (
        reputation.bounce_rate_bp(c),
        reputation.complaint_rate_bp(c),
        reputation.delivery_rate_bp(c),
        reputation.engagement_rate_bp(c),
        reputation.approval_rate_bp(c),
    )
    return rates, reputation.score(c)


def _is(event: Any, name: str) -> bool:
    return type(event).__name__ == name
