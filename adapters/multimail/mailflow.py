"""Real email in the service layer: SMTP arrivals, deliveries through a transport, signing
keys, delivery reports and approval links. A mixin of ``Service``; same rules as there.

Rule 1: every state change happens in one store transaction with its events and audit entry;
        network IO (SMTP, DNS) never happens inside a transaction.
Rule 2: a delivery attempt is claimed (``sending``) and committed *before* the transport is
        called, and settled in a second transaction after it answered. A crash in between
        leaves the message ``sending``; at the next start it is failed, never re-sent (P7).
        A message that cannot be built or signed fails at once, alone (``_abandon``).
Rule 3: each recipient is handed over at most once: recipients that took the message,
        refused it for good, or were withheld (``meta["delivered"|"bounced"|"withheld"]``)
        are left out of any retry.
Rule 4: a batch of SMTP arrivals commits in one transaction; if the batch fails, each arrival
        is retried alone so that one bad message cannot refuse the others.
Rule 5: the decisions (hold or deliver, retry or bounce, warn or demote, loop or not) are the
        core's; this module only gathers inputs and persists results.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from multimail import mime, reports, signing
from multimail.errors import AlreadyDecided, LinkExpired, NotFound
from multimail.records import Attachment, Content, MessageRecord, QueuedMail, ReputationFact
from multimail.records import Suppression as SuppressionRecord
from multimail_core import approval as approvals
from multimail_core import delivery, mailbox, mailqueue, outbound, reputation, workflows
from multimail_core.addresses import parse_address
from multimail_core.authorization import Key, Scope
from multimail_core.errors import InvalidAddress, InvalidValue, MultimailError
from multimail_core.ids import Kind

if TYPE_CHECKING:
    from multimail.service import Service

    _Base = Service
else:
    _Base = object

#: Every SMTP reply the server composes, by name: (code, enhanced status + text).
#: spec/smtp.toml states the same table and tests/unit/test_spec_smtp.py compares them.
SMTP_REPLIES: dict[str, tuple[int, str]] = {
    "rcpt_ok": (250, "2.1.5 OK"),
    "rcpt_syntax": (501, "5.1.3 bad recipient address syntax"),
    "relay_denied": (550, "5.7.1 relaying denied: only mail for this server's mailboxes"),
    "no_such_mailbox": (550, "5.1.1 no such mailbox here"),
    "mailbox_gone": (550, "5.1.1 the recipient mailbox no longer accepts mail"),
    "bare_line_ending": (550, "5.6.0 bare LF or CR in message data; lines must end with CRLF"),
    "loop": (554, "5.4.6 routing loop detected: too many hops"),
    "too_many_recipients": (452, "4.5.3 too many recipients; send the rest in another transaction"),
    "temporary": (451, "4.3.0 temporary failure; try again later"),
    "stored": (250, "2.0.0 OK stored as"),
}

log = logging.getLogger("multimail.mail")

HOPS_HEADER = "X-MultiMail-Hops"
COPY_HEADER = "X-MultiMail-Oversight-Copy"
RCPT_CACHE_TTL = 2.0  # seconds; another process's mailbox change is seen within this
RCPT_CACHE_SIZE = 10_000
DKIM_SELECTORS = (("mm1", "rsa-sha256"), ("mm1ed", "ed25519-sha256"))
SYSTEM_LOCAL = "multimail"


@dataclass(frozen=True)
class Incoming:
    """One SMTP transaction, prepared outside the store lock (parsed, authenticated)."""

    raw: bytes
    mail_from: str
    rcpts: tuple[str, ...]
    parsed: mime.Parsed
    signals: dict[str, object]
    peer: str | None = None
    helo: str | None = None
    #: rcpt → the mailbox RCPT resolved it to (re-checked at commit); saves a lookup
    boxes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Accepted:
    message_ids: tuple[str, ...]
    reports: int = 0


@dataclass(frozen=True)
class Job:
    """A claimed delivery attempt waiting for the transport."""

    message_id: str
    mail_from: str
    recipients: tuple[str, ...]
    raw: bytes


@dataclass(frozen=True)
class LinkReview:
    approval: approvals.Approval
    record: MessageRecord
    token: str
    expires_at: int
    meta: dict[str, Any] = field(default_factory=dict)


def compose_outbound(
    content: Content,
    display_name: str | None,
    date: int,
    files: Sequence[mime.AttachmentData],
) -> bytes:
    """``content`` as an outbound message leaves (before signing): the one composition both
    the send-time check and the delivery use, so what was accepted is what can be built.

    :raises ValueError: when it cannot be put on the wire (see ``mime.compose``).
    """
    return mime.compose(
        sender=content.sender,
        display_name=display_name or None,
        to=content.to,
        cc=content.cc,
        subject=content.subject,
        body_text=content.body_text,
        body_html=content.body_html,
        message_id=content.message_id_header,
        date=date,
        in_reply_to=content.in_reply_to,
        references=content.references,
        extra_headers=(*content.headers, ("X-AI-Generated", "true")),
        attachments=files,
    )


class MailFlow(_Base):
    _rcpt_cache: dict[str, tuple[float, tuple[int, str, str | None]]]
    _rcpt_generation: int
    #: loaded signing keys by kv name (they change only by revocation, done here)
    _key_cache: dict[str, Any]

    # --- keys -------------------------------------------------------------------------

    def _kept(
        self,
        name: str,
        decode: Callable[[dict[str, object]], Any],
        make: Callable[[], dict[str, object]] | None,
    ) -> Any:
        """A server-held value by kv name: from memory, else the store (created with
        ``make`` on first use). Remembered only when read outside any transaction, so a
        value a rollback undoes is never kept (nor a key that was never stored)."""
        cached = self._key_cache.get(name)
        if cached is not None:
            return cached
        outside = not self.store.in_transaction()
        with self._tx():
            doc = self.store.kv_get(name)
            if doc is None:
                if make is None:
                    return None
                doc = make()
                self.store.kv_put(name, doc)
        value = decode(doc)
        if outside:
            self._key_cache[name] = value
        return value

    def dkim_keys(self, domain: str) -> list[signing.DkimKey]:
        """The domain's DKIM keys, generated and stored on first use."""
        domain = domain.lower()

        def make() -> dict[str, object]:
            now = self.clock()
            keys = [signing.generate_dkim_key(domain, s, a, now) for s, a in DKIM_SELECTORS]
            return {"keys": [signing.to_doc(k) for k in keys]}

        def decode(doc: dict[str, object]) -> tuple[signing.DkimKey, ...]:
            return tuple(signing.dkim_key_from_doc(d) for d in doc["keys"])  # type: ignore[attr-defined]

        return list(self._kept(f"dkim:{domain}", decode, make))

    def identity_key(self, mailbox_id: str) -> signing.IdentityKey:
        """The mailbox's own Ed25519 identity key (made with the mailbox; older mailboxes
        get theirs on first use)."""
        key: signing.IdentityKey = self._kept(
            f"identity:{mailbox_id}",
            signing.identity_key_from_doc,
            lambda: signing.to_doc(signing.generate_identity_key(mailbox_id, self.clock())),
        )
        return key

    def revoke_identity_key(self, mailbox_id: str, now: int) -> None:
        """Called when a mailbox is decommissioned; the key stays published, marked."""
        key = self.identity_key(mailbox_id)
        if key.revoked_at is None:
            revoked = replace(key, revoked_at=now)
            self.store.kv_put(f"identity:{mailbox_id}", signing.to_doc(revoked))
            self._key_cache.pop(f"identity:{mailbox_id}", None)

    def published_keys(self, mailbox_id: str) -> list[dict[str, object]] | None:
        """Public: the mailbox's identity keys as JWKs; None for a mailbox never created.
        Reads only: a public route never creates anything."""
        if self.store.get_mailbox(mailbox_id) is None:
            return None
        key = self._kept(f"identity:{mailbox_id}", signing.identity_key_from_doc, None)
        return [signing.jwk(key)] if key is not None else []

    def is_local_domain(self, domain: str) -> bool:
        domain = domain.lower().rstrip(".")
        return domain == self.config.domain or domain.endswith("." + self.config.domain)

    def published_txt(self, name: str) -> list[str]:
        """Public: the TXT records this server asks to be published under ``name``."""
        name = name.lower().rstrip(".")
        selector, sep, domain = name.partition("._domainkey.")
        if not sep or not self.is_local_domain(domain):
            return []
        doc = self.store.kv_get(f"dkim:{domain}")
        if doc is None:
            return []
        keys = [signing.dkim_key_from_doc(d) for d in doc["keys"]]  # type: ignore[attr-defined]
        return [str(signing.dkim_dns_record(k)["value"]) for k in keys if k.selector == selector]

    def dns_records(self, domain: str) -> list[dict[str, object]]:
        """What to publish for ``domain``: MX, SPF, DMARC and the DKIM keys."""
        records: list[dict[str, object]] = [
            {"type": "MX", "name": domain, "value": f"10 {self.config.domain}.", "purpose": "mx"},
            {"type": "TXT", "name": domain, "value": "v=spf1 mx a ~all", "purpose": "spf"},
            {
                "type": "TXT",
                "name": f"_dmarc.{domain}",
                "value": "v=DMARC1; p=quarantine",
                "purpose": "dmarc",
            },
        ]
        for key in self.dkim_keys(domain):
            record = dict(signing.dkim_dns_record(key))
            record["purpose"] = "dkim"
            records.append(record)
        return records

    def link_secret(self) -> bytes:
        secret: bytes = self._kept(
            "server:link-secret",
            lambda doc: bytes.fromhex(str(doc["secret"])),
            lambda: {"secret": secrets.token_hex(32)},
        )
        return secret

    # --- SMTP arrivals ----------------------------------------------------------------

    def smtp_rcpt_cached(self, address: str) -> tuple[int, str, str | None] | None:
        """``smtp_rcpt`` from a short-lived cache, or None; never waits for the store.

        RCPT must not queue behind the commit of other sessions' mail; the answer is
        checked again inside the commit (a mailbox decommissioned meanwhile gets nothing).
        """
        hit = self._rcpt_cache.get(address.lower())
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def forget_rcpts(self) -> None:
        """Called whenever a mailbox is created, changed or decommissioned."""
        self._rcpt_generation += 1
        self._rcpt_cache.clear()

    def smtp_rcpt(self, address: str) -> tuple[int, str, str | None]:
        generation = self._rcpt_generation
        answer = self._smtp_rcpt(address)
        if generation != self._rcpt_generation:
            return answer  # a mailbox changed meanwhile: this answer may be stale
        if len(self._rcpt_cache) > RCPT_CACHE_SIZE:
            self._rcpt_cache.clear()
        self._rcpt_cache[address.lower()] = (time.monotonic() + RCPT_CACHE_TTL, answer)
        return answer

    def _smtp_rcpt(self, address: str) -> tuple[int, str, str | None]:
        """The reply to ``RCPT TO:<address>`` (PRODUCT §6), and the mailbox it names."""
        try:
            parsed = parse_address(address)
        except (InvalidAddress, InvalidValue):
            return (*SMTP_REPLIES["rcpt_syntax"], None)
        if not self.is_local_domain(parsed.domain):
            return (*SMTP_REPLIES["relay_denied"], None)
        if reports.parse_verp(str(parsed)) is not None:
            return (*SMTP_REPLIES["rcpt_ok"], None)
        box = self._local_mailbox(str(parsed))
        if box is None or not mailbox.can_receive(box):
            return (*SMTP_REPLIES["no_such_mailbox"], None)
        return (*SMTP_REPLIES["rcpt_ok"], box.id)

    def accept_smtp(self, batch: Sequence[Incoming]) -> list[Accepted | Exception]:
        """Commit a batch of arrivals in one transaction (Rule 4)."""
        try:
            with self._tx():
                return [self._accept_one(item) for item in batch]
        except Exception:
            if len(batch) == 1:
                raise
        results: list[Accepted | Exception] = []
        for item in batch:
            try:
                with self._tx():
                    results.append(self._accept_one(item))
            except Exception as exc:
                results.append(exc)
        return results

    def _accept_one(self, item: Incoming) -> Accepted:
        now = self.clock()
        content = content_from(item.parsed, item.mail_from)
        to_verp = [r for r in item.rcpts if reports.parse_verp(r) is not None]
        report = _report(item.raw) if to_verp or _may_be_report(item.parsed) else None
        handled = 0
        ids: list[str] = []
        reached: set[str] = set()  # one copy per mailbox, however many spellings name it
        for rcpt in dict.fromkeys(item.rcpts):
            about = reports.parse_verp(rcpt)
            if about is not None:
                handled += self._apply_report(report, about, now)
                continue
            known = item.boxes.get(rcpt)
            box = self.store.get_mailbox(known) if known else self._local_mailbox(rcpt)
            if box is None or box.id in reached:
                continue
            reached.add(box.id)
            sender = content.sender.lower()
            prior = self.store.count_from_sender(box.id, sender) if sender else 0
            meta: dict[str, object] = {
                "signals": {**item.signals, "first_contact": prior == 0, "prior_messages": prior},
                "defects": list(item.parsed.defects),
                "envelope": {"mail_from": item.mail_from, "rcpt_to": rcpt, "peer": item.peer},
            }
            record = self.deliver_local(box, content, item.raw, now, meta=meta)
            if record is not None:
                ids.append(record.id)
        if report is not None and not handled and report.original_message_id:
            original = reports.message_id_to_local_id(
                report.original_message_id, self.is_local_domain
            )
            if original is not None:
                handled += self._apply_report(report, original, now)
        if not ids and not to_verp:
            raise NoRecipient("no recipient of this message can receive mail any more")
        return Accepted(tuple(ids), handled)

    def _apply_report(self, report: reports.Report | None, message_id: str, now: int) -> int:
        """A DSN or ARF report about one of our messages: status, reputation, suppression.

        Only addresses the message was really sent to count, and each once per message and
        kind: the VERP address can be derived from any copy of the message, so a forged or
        repeated report must neither suppress strangers nor inflate a bounce rate.
        """
        record = self.store.get_message(message_id)
        if report is None or record is None or not isinstance(record.state, outbound.Outbound):
            return 0
        state = record.state
        ours = {r.lower() for r in state.recipients}
        if report.kind == "complaint":
            named = [r.address for r in report.recipients]
            outcome, seen_key = reputation.Outcome.COMPLAINT, "complained"
            if not named:  # a complaint naming nobody: it counts, but suppresses no one
                if not record.meta.get(seen_key):
                    self.store.add_fact(ReputationFact(state.mailbox_id, outcome.value, now))
                    self.store.update_message(
                        replace(record, meta={**record.meta, seen_key: ["(unnamed)"]})
                    )
                    self._enforce(state.mailbox_id, now)
                self._audit(
                    state.account_id, None, "message.complaint", "message", record.id, now,
                    recipients=[], reporter=report.reporter,
                )  # fmt: skip
                return 1
        elif report.kind == "bounce":
            named = [r.address for r in report.recipients if r.permanent]
            outcome, seen_key = reputation.Outcome.HARD_BOUNCE, "bounced"
        else:
            self._audit(
                state.account_id, None, "message.report", "message", record.id, now,
                kind=report.kind, recipients=[r.address for r in report.recipients],
            )  # fmt: skip
            return 1
        seen = set(_strings(record.meta.get(seen_key)))
        rcpts = tuple(
            dict.fromkeys(
                a for a in _parseable(named) if a.lower() in ours and a.lower() not in seen
            )
        )
        if not rcpts:
            self._audit(
                state.account_id, None, "message.report_ignored", "message", record.id, now,
                kind=report.kind, named=named[:20],
                reason="no recipient of this message that was not already reported",
            )  # fmt: skip
            return 1
        if report.kind == "complaint":
            command: outbound.Command = outbound.RecordComplaint(rcpts)
        else:
            reply = next(
                (f"{r.status} {r.diagnostic}".strip() for r in report.recipients if r.permanent),
                "",
            )
            command = outbound.RecordBounce(rcpts, reply)
        if outbound.accepts(state, command):
            state, events = outbound.apply(state, command, now=now)
            self._emit(state.account_id, events, now)
        meta = dict(record.meta)
        meta[seen_key] = sorted(seen | {a.lower() for a in rcpts})
        self.store.update_message(replace(record, state=state, meta=meta))
        if not seen:  # one fact per message and kind (Rule: rates count messages)
            self.store.add_fact(ReputationFact(state.mailbox_id, outcome.value, now))
        self._suppress(state, outcome, rcpts, now)
        self._audit(
            state.account_id, None, f"message.{report.kind}", "message", record.id, now,
            recipients=list(rcpts), reporter=report.reporter,
        )  # fmt: skip
        self._enforce(state.mailbox_id, now)
        return 1

    def _suppress(
        self,
        state: outbound.Outbound,
        outcome: reputation.Outcome,
        recipients: Sequence[str],
        now: int,
    ) -> None:
        reason = {
            reputation.Outcome.HARD_BOUNCE: "hard_bounce",
            reputation.Outcome.COMPLAINT: "complaint",
        }.get(outcome, outcome.value)
        for address in workflows.suppressions_for(outcome, recipients):
            self.store.add_suppression(
                SuppressionRecord(state.account_id, address, reason, state.mailbox_id, now)
            )

    def _enforce(self, mailbox_id: str, now: int) -> None:
        """Reputation enforcement after a bounce or complaint (PRODUCT §8, P13)."""
        box = self.store.get_mailbox(mailbox_id)
        if box is None:
            return
        after, events = workflows.enforce_reputation(box, self.counters(mailbox_id, now), now=now)
        if not events:
            return
        if after != box:
            self.store.update_mailbox(after)
        self._emit(box.account_id, events, now)
        for event in events:
            self._audit(
                box.account_id, None, f"reputation.{type(event).__name__}", "mailbox", box.id,
                now, event=event,
            )  # fmt: skip
        if after.mode is not box.mode:
            self.notify_operator(
                box.account_id,
                subject=f"[MultiMail] {box.address} demoted to {after.mode.value}",
                text=(
                    f"Mailbox {box.address} ({box.id}) was moved from {box.mode.value} to "
                    f"{after.mode.value} because its bounce or complaint rate crossed the "
                    "enforcement threshold. Its outbound mail now waits for approval unless "
                    "every recipient is on its allowlist. Only an operator can raise it again."
                ),
                purpose="reputation_demotion",
                related_id=box.id,
                now=now,
            )

    # --- outbound deliveries ----------------------------------------------------------

    def recover_in_flight(self) -> int:
        """At start: attempts a crash interrupted are failed, not retried (Rule 2, P7)."""
        count = 0
        for record in self.store.in_flight_outbound():
            with self._tx():
                current = self.store.get_message(record.id)
                if current is None or not isinstance(current.state, outbound.Outbound):
                    continue
                if current.state.status is not outbound.Status.SENDING:
                    continue
                now = self.clock()
                state, events = outbound.apply(current.state, outbound.Interrupt(), now=now)
                self.store.update_message(replace(current, state=state))
                self._emit(state.account_id, events, now)
                self._audit(
                    state.account_id, None, "message.interrupted", "message", state.id, now,
                    delivered=current.meta.get("delivered", []),
                )  # fmt: skip
                count += 1
        for mail in self.store.mail_in_flight():
            with self._tx():
                now = self.clock()
                status = mailqueue.after_crash(mailqueue.Purpose(mail.purpose))
                after = replace(
                    mail,
                    status=status.value,
                    last_reply="interrupted mid-attempt",
                    next_attempt_at=now if status is mailqueue.Status.DEFERRED else None,
                )
                self.store.update_mail(after)
                self._audit(
                    mail.account_id, None, "mail.interrupted", "mail", mail.id, now,
                    purpose=mail.purpose, status=after.status,
                )  # fmt: skip
        return count

    def claim_deliveries(self, *, limit: int = 50) -> tuple[list[Job], int]:
        """Claim due messages; deliver local recipients at once, return the rest as jobs,
        with the number of messages handled.

        Three steps per message: claim (a transaction), sign (no lock held: RSA and Ed25519
        take a millisecond or two, and API requests would queue behind them), dispatch
        (a transaction: local recipients, and the job for the transport).
        """
        jobs: list[Job] = []
        handled = 0
        now = self.clock()
        for record in self.store.due_outbound(now, limit):
            with self._tx():
                current = self.store.get_message(record.id)
                if current is None or not _due(current, now):
                    continue
                claimed = self._claim_one(current, now)
                handled += 1
            if claimed is None:
                continue
            box, state = claimed
            try:
                raw = current.raw or self.signed_raw(box, current, state, now)
                with self._tx():
                    latest = self.store.get_message(record.id)
                    if latest is None or latest.state.status is not outbound.Status.SENDING:
                        continue
                    job = self._dispatch(box, replace(latest, raw=raw), now)
            except Exception as exc:  # this message only: the round goes on (Rule 2)
                log.exception("could not build or dispatch %s", record.id)
                self._abandon(record.id, f"{type(exc).__name__}: {exc}")
                continue
            if job is not None:
                jobs.append(job)
        return jobs, handled

    def _abandon(self, message_id: str, reason: str) -> None:
        """A claimed message that cannot be built or dispatched fails, not retried (it
        would fail the same way), and the reason is audited."""
        with self._tx():
            record = self.store.get_message(message_id)
            if record is None or not isinstance(record.state, outbound.Outbound):
                return
            if record.state.status is not outbound.Status.SENDING:
                return
            now = self.clock()
            state, events = outbound.apply(record.state, outbound.Interrupt(), now=now)
            state = replace(state, last_reply=f"not sent: {reason}"[:500])
            self.store.update_message(replace(record, state=state))
            self._emit(state.account_id, events, now)
            self._audit(
                state.account_id, None, "message.abandoned", "message", state.id, now,
                reason=reason[:1000],
            )  # fmt: skip

    def _claim_one(
        self, record: MessageRecord, now: int
    ) -> tuple[mailbox.Mailbox, outbound.Outbound] | None:
        """Release (if scheduled) and claim; None when the message may no longer leave."""
        state = record.state
        assert isinstance(state, outbound.Outbound)
        box = self.store.get_mailbox(state.mailbox_id)
        assert box is not None
        if state.status is outbound.Status.SCHEDULED:
            state, events = outbound.apply(state, outbound.Release(), now=now)
            self._emit(state.account_id, events, now)
        # Recipients this message has already settled (taken it, or refused it for good and
        # so been suppressed by it) do not cancel the attempt for the others. Once someone
        # has the message, a waiting recipient suppressed since is withheld (never sent to,
        # P14) rather than cancelling the message for everyone else.
        settled_raw = _settled(record.meta)
        settled = {reputation.normalize_for_suppression(a) for a in settled_raw}
        suppressed = self._suppressed(state.account_id) - settled
        meta = record.meta
        if record.meta.get("delivered"):
            pending = [r for r in state.recipients if r.lower() not in settled_raw]
            withheld = [r for r in pending if reputation.normalize_for_suppression(r) in suppressed]
            if withheld:
                meta = {**meta, "withheld": sorted({*_strings(meta.get("withheld")),
                                                    *(r.lower() for r in withheld)})}  # fmt: skip
                suppressed -= {reputation.normalize_for_suppression(r) for r in withheld}
        state, events = workflows.start_delivery(box, state, suppressed=suppressed, now=now)
        self._emit(state.account_id, events, now)
        self.store.update_message(replace(record, state=state, meta=meta))
        if state.status is outbound.Status.CANCELLED:
            return None
        return box, state

    def _dispatch(self, box: mailbox.Mailbox, record: MessageRecord, now: int) -> Job | None:
        """Deliver to local recipients; the outside ones become a Job (Rule 3)."""
        state = record.state
        assert isinstance(state, outbound.Outbound)
        raw = record.raw or b""
        done = _settled(record.meta)
        replies: dict[str, tuple[int, str]] = {}
        external: list[str] = []
        for rcpt in state.recipients:
            if rcpt.lower() in done:
                continue
            target = self._local_mailbox(rcpt)
            if target is not None:
                self.deliver_local(target, record.content, raw, now, meta=_local_meta(record))
                replies[rcpt] = (250, "2.0.0 delivered locally")
            elif self.is_local_domain(parse_address(rcpt).domain):
                replies[rcpt] = (550, "5.1.1 no such mailbox on this server")
            else:
                external.append(rcpt)
        if external:
            record = replace(record, meta=_merged(record.meta, replies))
            self.store.update_message(record)
            return Job(record.id, reports.verp_address(record.id, box.address.domain),
                       tuple(external), raw)  # fmt: skip
        self._settle(record, replies, now, local_only=True)
        return None

    def finish_delivery(self, job: Job, replies: Mapping[str, tuple[int, str]]) -> None:
        """Record the transport's answer for a claimed attempt (Rule 2)."""
        with self._tx():
            record = self.store.get_message(job.message_id)
            if record is None or not isinstance(record.state, outbound.Outbound):
                return
            if record.state.status is not outbound.Status.SENDING:
                return
            now = self.clock()
            local = {
                r: (int(v[0]), str(v[1]))
                for r, v in dict(record.meta.get("attempt", {})).items()  # type: ignore[call-overload]
            }
            self._settle(record, {**local, **replies}, now, local_only=False)

    def _settle(
        self,
        record: MessageRecord,
        replies: Mapping[str, tuple[int, str]],
        now: int,
        *,
        local_only: bool,
    ) -> None:
        """Store one attempt's outcome as ``workflows.settle_attempt`` decides it (Rule 3)."""
        state = record.state
        assert isinstance(state, outbound.Outbound)
        delivered = frozenset(_strings(record.meta.get("delivered")))
        bounced = frozenset(_strings(record.meta.get("bounced")))
        if not replies:  # nothing was pending: settle on what earlier attempts recorded
            replies = dict.fromkeys(sorted(delivered), (250, "2.0.0 delivered earlier"))
            replies.update(dict.fromkeys(sorted(bounced), (550, "5.0.0 refused earlier")))
        settled = workflows.settle_attempt(
            state,
            replies,
            delivered=delivered,
            bounced=bounced,
            copied=bool(record.meta.get("copied")),
            local_only=local_only,
            draw=secrets.randbelow(delivery.JITTER_DRAW_MAX + 1),
            now=now,
        )
        state = settled.message
        self._emit(state.account_id, settled.events, now)
        meta = {k: v for k, v in record.meta.items() if k != "attempt"}
        meta["delivered"] = sorted(settled.delivered)
        meta["bounced"] = sorted(settled.bounced)
        meta["replies"] = {**dict(meta.get("replies", {})), **{  # type: ignore[call-overload]
            r: f"{c} {t}".strip() for r, (c, t) in replies.items()
        }}  # fmt: skip
        for outcome in settled.facts:
            self.store.add_fact(ReputationFact(state.mailbox_id, outcome.value, now))
        for address in settled.suppress:
            self.store.add_suppression(
                SuppressionRecord(state.account_id, address, "hard_bounce", state.mailbox_id, now)
            )
        if settled.copy_now:
            meta["copied"] = True
            self._oversight_copy(replace(record, state=state), now)
        self.store.update_message(replace(record, state=state, meta=meta))
        self._audit(
            state.account_id, None, "message.attempt", "message", state.id, now,
            status=state.status, replies=meta["replies"],
        )  # fmt: skip
        if settled.suppress:
            self._enforce(state.mailbox_id, now)

    def signed_raw(
        self, box: mailbox.Mailbox, record: MessageRecord, state: outbound.Outbound, now: int
    ) -> bytes:
        """The message as it leaves: composed, identity claim, DKIM (PRODUCT §6, §7)."""
        return signing.sign_message(
            self.composed(box, record, state, now),
            mailbox_id=box.id,
            address=str(box.address),
            account_id=box.account_id,
            mode=box.mode,
            human_approved=state.approved_by is not None,
            reviewer_key_id=state.approved_by,
            issued_at=now // 1000,
            identity_key=self.identity_key(box.id),
            dkim_keys=self.dkim_keys(box.address.domain),
        )

    def composed(
        self, box: mailbox.Mailbox, record: MessageRecord, state: outbound.Outbound, date: int
    ) -> bytes:
        """An outbound message's RFC 5322 bytes, files included, before signing: what
        ``signed_raw`` signs, and what the raw route shows of a message not yet sent."""
        text = replace(
            record.content,
            subject=state.subject,
            body_text=state.body_text,
            body_html=state.body_html,
        )
        return compose_outbound(text, box.display_name, date, self.attachment_files(record.content))

    def attachment_files(self, content: Content) -> list[mime.AttachmentData]:
        """An outbound message's attachments with their stored bytes, for ``compose``."""
        files = []
        for a in content.attachments:
            data = self.store.get_blob(a.sha256)
            if data is None:
                raise MissingBlob(f"the bytes of attachment {a.attachment_id} are not stored")
            files.append((a.filename, a.content_type, data))
        return files

    # --- the server's own mail ---------------------------------------------------------

    def system_address(self) -> str:
        return f"{SYSTEM_LOCAL}@{self.config.domain}"

    def notify_operator(
        self,
        account_id: str,
        *,
        subject: str,
        text: str,
        purpose: str,
        related_id: str | None,
        now: int,
        html: str | None = None,
    ) -> str | None:
        """Mail the account's oversight address; caller holds the transaction."""
        account = self.store.get_account(account_id)
        if account is None or not account.oversight_email:
            self._audit(
                account_id, None, "oversight.notice_skipped", "account", account_id, now,
                purpose=purpose, reason="the account has no oversight_email",
            )  # fmt: skip
            return None
        message_id = f"<{self.new_id(Kind.EVENT).replace('evt_', 'ntc_')}@{self.config.domain}>"
        raw = mime.compose(
            sender=self.system_address(),
            display_name="MultiMail oversight",
            to=(account.oversight_email,),
            cc=(),
            subject=subject,
            body_text=text,
            body_html=html,
            message_id=message_id,
            date=now,
            in_reply_to=None,
            references=(),
            extra_headers=(("Auto-Submitted", "auto-generated"), ("X-MultiMail-Purpose", purpose)),
        )
        return self._queue_mail(
            account_id, account.oversight_email, raw, purpose=purpose, related_id=related_id,
            now=now, sign=True,
        )  # fmt: skip

    def _queue_mail(
        self,
        account_id: str,
        to: str,
        raw: bytes,
        *,
        purpose: str,
        related_id: str | None,
        now: int,
        sign: bool,
    ) -> str:
        """Local oversight address: delivered at once. Otherwise: queued for the transport.

        The server's own mail is never the subject of another approval request (when the
        oversight mailbox is itself gated_all, its copy waits in the pending list), never
        goes to a suppressed address (P14), and leaves with a null return path (RFC 3834
        §3.3: nothing bounces back to a notice)."""
        suppressed = workflows.suppressions_for(reputation.Outcome.HARD_BOUNCE, _parseable([to]))
        if suppressed and suppressed[0] in self._suppressed(account_id):
            self._audit(
                account_id, None, f"mail.{purpose}_skipped", "mail", related_id or "", now,
                to=to, reason="the oversight address is on the suppression list",
            )  # fmt: skip
            return ""
        target = self._local_mailbox(to)
        if sign:
            keys = self.dkim_keys(self.config.domain)
            raw = (
                b"".join(signing.dkim_signature(raw, k, timestamp=now // 1000) for k in keys) + raw
            )
        if target is not None:
            parsed = mime.parse(raw)
            content = content_from(parsed, self.system_address())
            if purpose == "oversight_copy":
                content = replace(
                    content, headers=(*content.headers, (COPY_HEADER, related_id or ""))
                )
            record = self.deliver_local(
                target, content, raw, now, meta={"purpose": purpose}, request_approval=False
            )
            outcome = "delivered" if record is not None else "refused"
            self._audit(
                account_id, None, f"mail.{purpose}", "mail", related_id or "", now, to=to,
                outcome=outcome,
            )  # fmt: skip
            return record.id if record is not None else ""
        mail = QueuedMail(
            id=self.new_id(Kind.EVENT).replace("evt_", "mq_"),
            account_id=account_id,
            purpose=purpose,
            mail_from="",
            recipients=(to,),
            status=mailqueue.Status.QUEUED.value,
            created_at=now,
            next_attempt_at=now,
            related_id=related_id,
            raw=raw,
        )
        self.store.insert_mail(mail)
        self._audit(
            account_id, None, f"mail.{purpose}", "mail", mail.id, now, to=to, outcome="queued",
            related_id=related_id,
        )  # fmt: skip
        return mail.id

    def claim_mail(self, *, limit: int = 50) -> list[QueuedMail]:
        now = self.clock()
        claimed = []
        for mail in self.store.due_mail(now, limit):
            with self._tx():
                current = self.store.get_mail(mail.id)
                if current is None or mailqueue.Status(current.status) not in mailqueue.DUE:
                    continue
                current = replace(
                    current, status=mailqueue.Status.SENDING.value, attempts=current.attempts + 1
                )
                self.store.update_mail(current)
            claimed.append(current)
        return claimed

    def finish_mail(self, mail: QueuedMail, replies: Mapping[str, tuple[int, str]]) -> None:
        """Record the transport's answer for server mail (``mailqueue.after_attempt``)."""
        with self._tx():
            now = self.clock()
            verdict = delivery.settle(replies)
            status, at = mailqueue.after_attempt(
                mail.attempts,
                verdict.code,
                verdict.text,
                draw=secrets.randbelow(delivery.JITTER_DRAW_MAX + 1),
                now=now,
            )
            reply = f"{verdict.code} {verdict.text}"
            after = replace(mail, status=status.value, last_reply=reply, next_attempt_at=at)
            self.store.update_mail(after)
            self._audit(
                mail.account_id, None, "mail.attempt", "mail", mail.id, now,
                purpose=mail.purpose, status=after.status, reply=reply,
            )  # fmt: skip

    # --- approval by email ---------------------------------------------------------------

    def approval_token(self, approval_id: str, expires_at: int) -> str:
        """A link credential for one approval: signed, expiring, and bound to the address it
        was mailed to (changing ``oversight_email`` voids the links sent to the old one)."""
        apr = self.store.get_approval(approval_id)
        account = self.store.get_account(apr.account_id) if apr is not None else None
        claims = {"a": approval_id, "e": expires_at, "o": _addressee(account)}
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        mac = hmac.new(self.link_secret(), body.encode(), hashlib.sha256).digest()
        return f"{body}.{_b64(mac)}"

    def _token_claims(self, token: str) -> tuple[str, int, str]:
        body, _, mac = token.partition(".")
        if len(token) > 1024:
            raise NotFound("this approval link is not valid")
        try:
            expected = hmac.new(self.link_secret(), body.encode(), hashlib.sha256).digest()
            # compare the text, not the decoded bytes: base64's unused low bits would let
            # several spellings of one MAC pass
            if not hmac.compare_digest(mac.encode(), _b64(expected).encode()):
                raise NotFound("this approval link is not valid")
            claims = json.loads(_unb64(body))
            return str(claims["a"]), int(claims["e"]), str(claims["o"])
        except (ValueError, KeyError, TypeError) as exc:
            raise NotFound("this approval link is not valid") from exc

    def review_link(self, token: str) -> LinkReview:
        """Public (the token is the credential): what the link lets its holder decide."""
        approval_id, expires_at, addressee = self._token_claims(token)
        apr = self.store.get_approval(approval_id)
        if apr is None:
            raise NotFound("this approval link is not valid")
        if not hmac.compare_digest(addressee, _addressee(self.store.get_account(apr.account_id))):
            raise NotFound("this approval link was sent to a former oversight address")
        record = self.store.get_message(apr.message_id)
        assert record is not None
        return LinkReview(apr, record, token, expires_at)

    def decide_by_link(
        self, token: str, action: str, reason: str = ""
    ) -> tuple[approvals.Approval, MessageRecord]:
        review = self.review_link(token)
        if not approvals.link_open(review.approval, now=self.clock(), expires_at=review.expires_at):
            if review.approval.status is not approvals.Status.PENDING:
                raise AlreadyDecided(f"this message was already {review.approval.status.value}")
            raise LinkExpired("this approval link has expired; decide in the API or CLI")
        reviewer = Key(
            id=f"link:{review.approval.id}",
            account_id=review.approval.account_id,
            scopes=frozenset({Scope.OVERSIGHT}),
        )
        return self.decide(reviewer, pending_id=review.approval.id, action=action, reason=reason)

    def request_approval_by_mail(
        self, approval: approvals.Approval, record: MessageRecord, now: int
    ) -> None:
        """Mail the operator the full draft and approve/reject links (PRODUCT §4)."""
        expires = now + approvals.LINK_TTL_MS
        token = self.approval_token(approval.id, expires)
        link = f"{self.config.public_url}/v1/approve/{token}"
        c = record.content
        direction = "An inbound" if record.direction == "inbound" else "An outbound"
        lines = [
            f"{direction} message is waiting for your decision.",
            "",
            f"Mailbox:  {approval.mailbox_id}",
            f"From:     {c.sender}",
            f"To:       {', '.join(c.to)}",
        ]
        if c.cc:
            lines.append(f"Cc:       {', '.join(c.cc)}")
        if c.bcc:
            lines.append(f"Bcc:      {', '.join(c.bcc)}  (hidden from the other recipients)")
        lines += [
            f"Subject:  {c.subject}",
            f"Pending:  {approval.id}",
            "",
            "Review it:  " + link,
            "Approve:    " + link + "?action=approve",
            "Reject:     " + link + "?action=reject",
            "",
            "The links open a review page; nothing is decided until you press a button there.",
            "They work once and expire in 7 days.",
            "",
            "---- the full message (text part) " + "-" * 28,
            "",
            c.body_text,
        ]
        if c.body_html:
            lines += [
                "",
                "---- the HTML part, as source: it is what mail programs show " + "-" * 4,
                "",
                c.body_html,
            ]
        if c.attachments:
            lines += ["", "---- attachments " + "-" * 45]
            lines += [f"{a.filename or a.attachment_id}  {a.content_type}  {a.size} bytes"
                      for a in c.attachments]  # fmt: skip
        self.notify_operator(
            approval.account_id,
            subject=f"[MultiMail] Approval needed: {c.subject}"[:200],
            text="\n".join(lines),
            purpose="approval_request",
            related_id=approval.id,
            now=now,
        )

    def _oversight_copy(self, record: MessageRecord, now: int) -> None:
        """P4: exactly one hidden copy of a monitored mailbox's message to the operator."""
        account = self.store.get_account(record.state.account_id)
        if account is None or not account.oversight_email:
            self._audit(
                record.state.account_id, None, "oversight.copy_skipped", "message", record.id,
                now, reason="the account has no oversight_email",
            )  # fmt: skip
            return
        raw = record.raw or b""
        self._queue_mail(
            record.state.account_id, account.oversight_email, raw, purpose="oversight_copy",
            related_id=record.id, now=now, sign=False,
        )  # fmt: skip


class MissingBlob(MultimailError):
    """An outbound attachment whose bytes are not in the store (a bug, or a damaged
    database): the message cannot be composed."""

    code = "missing_blob"


class NoRecipient(MultimailError):
    """Every RCPT-accepted mailbox stopped receiving before the commit (a race)."""

    code = "no_recipient"


# --- helpers ------------------------------------------------------------------------------


def _addressee(account: Any) -> str:
    """A short fingerprint of the account's oversight address (bound into link tokens)."""
    address = (getattr(account, "oversight_email", None) or "").lower()
    return hashlib.sha256(address.encode()).hexdigest()[:16]


def content_from(parsed: mime.Parsed, envelope_sender: str) -> Content:
    sender = parsed.sender or envelope_sender
    return Content(
        sender=sender,
        to=tuple(parsed.to),
        cc=tuple(parsed.cc),
        bcc=(),
        subject=parsed.subject,
        body_text=parsed.body_text,
        body_html=parsed.body_html,
        headers=tuple(parsed.headers),
        message_id_header=parsed.message_id or "",
        in_reply_to=parsed.in_reply_to,
        references=tuple(parsed.references),
        attachments=tuple(
            Attachment(a.attachment_id, a.filename or "", a.content_type, a.size, a.sha256)
            for a in parsed.attachments
        ),
    )


def _report(raw: bytes) -> reports.Report | None:
    """The delivery or feedback report in ``raw``; anything the report parser cannot read
    (it uses the stdlib parser, which recurses) is simply not a report."""
    try:
        return reports.parse_report(raw)
    except (RecursionError, MemoryError, ValueError, LookupError):
        return None


_REPORT_SENDERS = ("mailer-daemon@", "postmaster@")
_REPORT_TYPES = ("multipart/report", "message/delivery-status", "message/feedback-report")


def _may_be_report(parsed: mime.Parsed) -> bool:
    """Cheap pre-check before the full DSN/ARF parse (most arrivals are plain mail)."""
    sender = parsed.sender.lower()
    if sender.startswith(_REPORT_SENDERS) or not sender:
        return True
    for name, value in parsed.headers:
        lowered = name.lower()
        if lowered == "x-failed-recipients":
            return True
        if lowered == "content-type" and any(t in value.lower() for t in _REPORT_TYPES):
            return True
    return False


def hops_of(headers: Sequence[tuple[str, str]]) -> int:
    """The ``X-MultiMail-Hops`` count; absent or unreadable is 0, absurdly long is taken as
    past the limit (no int() of thousands of digits, no way round the loop check)."""
    for name, value in headers:
        if name.lower() == HOPS_HEADER.lower():
            digits = value.strip()
            if not digits.isascii() or not digits.isdigit():
                return 0
            return int(digits) if len(digits) <= 6 else delivery.HOP_LIMIT
    return 0


def _local_meta(record: MessageRecord) -> dict[str, object]:
    return {
        "signals": {"local": True, "from_mailbox_id": record.state.mailbox_id},
        "envelope": {"mail_from": record.content.sender, "peer": "local"},
    }


def _merged(
    meta: Mapping[str, object], replies: Mapping[str, tuple[int, str]]
) -> dict[str, object]:
    out = dict(meta)
    out["attempt"] = {r: [c, t] for r, (c, t) in replies.items()}
    return out


def _settled(meta: Mapping[str, object]) -> set[str]:
    """Recipients (lowercased) a message is done with: took it, refused it for good, or were
    withheld because they were suppressed while it waited."""
    return {
        *_strings(meta.get("delivered")),
        *_strings(meta.get("bounced")),
        *_strings(meta.get("withheld")),
    }


def _strings(value: object) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, (list, tuple)) else ()


def _parseable(addresses: Sequence[str]) -> tuple[str, ...]:
    out = []
    for a in addresses:
        try:
            out.append(str(parse_address(a)))
        except MultimailError:
            continue
    return tuple(out)


def _due(record: MessageRecord, now: int) -> bool:
    state = record.state
    return isinstance(state, outbound.Outbound) and (
        outbound.is_due(state, now=now) or outbound.is_release_due(state, now=now)
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


__all__ = [
    "Accepted",
    "Incoming",
    "Job",
    "LinkExpired",
    "LinkReview",
    "MailFlow",
    "NoRecipient",
    "content_from",
]
