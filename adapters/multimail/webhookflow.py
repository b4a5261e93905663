"""Webhooks in the service layer (PRODUCT.md §9): endpoints, fan-out of committed events into
a delivery log, signed payloads, the delivery worker's claim and settle. A mixin of
``Service``; same rules as there.

Rule 1: fan-out reads events in commit order after a stored cursor and writes one delivery
        per matching endpoint, in one transaction with the cursor: every event reaches each
        matching endpoint exactly once in the log (P12), in commit order per mailbox.
Rule 2: a delivery is claimed (``delivering``) before the request and settled after; a crash
        in between makes it pending again at start-up: at least once, same ``webhook-id``.
Rule 3: payloads are signed per Standard Webhooks: ``webhook-id`` (the delivery id, stable
        across retries), ``webhook-timestamp``, ``webhook-signature: v1,<base64 HMAC-SHA256
        of id.timestamp.body>``, one signature per valid secret during a rotation.
Rule 4: the decisions (who receives what, retry, disable, dead-letter) are the core's
        (``multimail_core.webhooks``); this module gathers inputs and stores results.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from multimail import payloads, ssrf
from multimail.errors import NotFound
from multimail.records import DeliveryRecord, EventRecord, WebhookRecord
from multimail_core import webhooks
from multimail_core.authorization import Key
from multimail_core.delivery import JITTER_DRAW_MAX
from multimail_core.errors import InvalidValue
from multimail_core.ids import Kind

if TYPE_CHECKING:
    from multimail.service import Service

    _Base = Service
else:
    _Base = object

CURSOR = "webhooks:cursor"
ROTATION_GRACE_MS = 24 * 3_600_000
FAN_OUT_BATCH = 500


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks v1 signature of one payload with one ``whsec_`` secret."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


@dataclass(frozen=True)
class Outgoing:
    """A claimed delivery, ready to POST."""

    delivery_id: str
    endpoint_id: str
    url: str
    body: bytes
    secrets: tuple[str, ...]

    def headers(self, timestamp: int) -> dict[str, str]:
        return {
            "content-type": "application/json",
            "user-agent": "MultiMail-Webhooks/1",
            "webhook-id": self.delivery_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(
                sign(s, self.delivery_id, timestamp, self.body) for s in self.secrets
            ),
        }


class WebhookFlow(_Base):
    # --- endpoints ----------------------------------------------------------------------

    def _check_hook_url(self, url: str) -> str:
        """Refuse what is unsafe now; a name that does not resolve yet is accepted (every
        delivery checks the address it connects to again, so it cannot reach a private
        range later either)."""
        try:
            return ssrf.check_url(url, allow_private=self.config.webhook_allow_private)
        except ssrf.Unresolvable:
            return ssrf.check_url(url, allow_private=True)  # syntax checks only
        except ssrf.UnsafeUrl as exc:
            raise InvalidValue("url", str(exc)) from None

    def create_webhook(
        self, key: Key, url: str, events: Sequence[str] = (), mailbox_id: str | None = None
    ) -> WebhookRecord:
        self._authorize(key, "webhooks.manage", key.account_id)
        wanted = frozenset(events)
        if not webhooks.valid_filter(wanted):
            unknown = sorted(wanted - webhooks.PUBLIC_TYPES)
            raise InvalidValue(
                "events", f"unknown event types {unknown}; use {sorted(webhooks.PUBLIC_TYPES)}"
            )
        if mailbox_id is not None:
            self._mailbox(key, mailbox_id, "mailbox.read")
        checked = self._check_hook_url(url)
        with self._tx():
            now = self.clock()
            record = WebhookRecord(
                webhooks.Endpoint(
                    self.new_id(Kind.EVENT).replace("evt_", "wh_"),
                    key.account_id,
                    checked,
                    wanted,
                    mailbox_id,
                ),
                new_webhook_secret(),
                now,
            )
            self.store.put_webhook(record)
            self._audit(key.account_id, key, "webhook.create", "webhook", record.id, now,
                        url=checked, events=sorted(wanted), mailbox_id=mailbox_id)  # fmt: skip
        return record

    def _webhook(self, key: Key, webhook_id: str) -> WebhookRecord:
        self._authorize(key, "webhooks.manage", key.account_id)
        record = self.store.get_webhook(webhook_id)
        if record is None or record.endpoint.account_id != key.account_id:
            raise NotFound(f"no webhook {webhook_id}")
        return record

    def list_webhooks(self, key: Key) -> list[WebhookRecord]:
        self._authorize(key, "webhooks.manage", key.account_id)
        return self.store.list_webhooks(key.account_id)

    def get_webhook(self, key: Key, webhook_id: str) -> WebhookRecord:
        return self._webhook(key, webhook_id)

    def delete_webhook(self, key: Key, webhook_id: str) -> None:
        with self._tx():
            record = self._webhook(key, webhook_id)
            if record.kind == "mailbox":
                raise InvalidValue(
                    "webhook_id", "a mailbox's webhook_url is changed on the mailbox"
                )
            self.store.delete_webhook(webhook_id)
            self._audit(key.account_id, key, "webhook.delete", "webhook", webhook_id, self.clock())

    def rotate_webhook_secret(self, key: Key, webhook_id: str) -> WebhookRecord:
        """A new signing secret; the previous one keeps signing for 24 h (Rule 3)."""
        with self._tx():
            record = self._webhook(key, webhook_id)
            now = self.clock()
            rotated = replace(
                record,
                secret=new_webhook_secret(),
                previous_secret=record.secret,
                previous_expires_at=now + ROTATION_GRACE_MS,
            )
            self.store.put_webhook(rotated)
            self._audit(key.account_id, key, "webhook.rotate", "webhook", webhook_id, now)
        return rotated

    def mailbox_webhook(self, mailbox_id: str) -> WebhookRecord | None:
        return self.store.get_webhook(_mailbox_hook_id(mailbox_id))

    def sync_mailbox_webhook(
        self, mailbox_id: str, account_id: str, url: str | None, now: int
    ) -> None:
        """A mailbox's ``webhook_url`` is an agent-facing endpoint (caller holds the tx)."""
        hook_id = _mailbox_hook_id(mailbox_id)
        current = self.store.get_webhook(hook_id)
        if url is None:
            if current is not None:
                self.store.delete_webhook(hook_id)
            return
        endpoint = webhooks.Endpoint(
            hook_id, account_id, url, frozenset(), mailbox_id, agent_facing=True
        )
        if current is None:
            self.store.put_webhook(WebhookRecord(endpoint, new_webhook_secret(), now, "mailbox"))
        elif current.endpoint != endpoint:
            self.store.put_webhook(replace(current, endpoint=endpoint))

    def latest_event_seq(self) -> int:
        """Where a stream or a wait that starts now begins (nothing older is replayed)."""
        return self.store.last_event_seq()

    # --- fan-out and delivery -------------------------------------------------------------

    def fan_out(self, *, limit: int = FAN_OUT_BATCH) -> int:
        """Turn committed events into deliveries (Rule 1); returns the events read."""
        if self.store.last_event_seq() <= self._fan_out_cursor():
            return 0  # nothing new: no write transaction (this runs after every commit)
        with self._tx():
            cursor = self._fan_out_cursor()
            events = self.store.events_since(cursor, limit)
            if not events:
                return 0
            now = self.clock()
            endpoints: dict[str, list[WebhookRecord]] = {}
            for event in events:
                hooks = endpoints.get(event.account_id)
                if hooks is None:
                    hooks = endpoints[event.account_id] = self.store.list_webhooks(event.account_id)
                for hook in hooks:
                    if not webhooks.matches(hook.endpoint, event.type, event.mailbox_id):
                        continue
                    delivery = webhooks.Delivery(
                        self.new_id(Kind.EVENT).replace("evt_", "whd_"),
                        hook.id,
                        event.id,
                        webhooks.DeliveryStatus.PENDING,
                        0,
                        now,
                    )
                    record = DeliveryRecord(
                        delivery, event.account_id, event.seq, event.type, hook.endpoint.url, now
                    )
                    self.store.insert_delivery(record)
            self.store.kv_put(CURSOR, {"seq": events[-1].seq})
        return len(events)

    def _fan_out_cursor(self) -> int:
        return int(dict(self.store.kv_get(CURSOR) or {}).get("seq", 0))  # type: ignore[call-overload]

    def claim_webhook_deliveries(self, *, limit: int = 50) -> list[Outgoing]:
        claimed: list[tuple[DeliveryRecord, WebhookRecord]] = []
        now = self.clock()
        if not self.store.due_deliveries(now, 1):
            return []  # nothing due: no write transaction
        with self._tx():  # one transaction for the whole round of claims
            hooks: dict[str, WebhookRecord | None] = {}
            for record in self.store.due_deliveries(now, limit):
                if record.delivery.status is not webhooks.DeliveryStatus.PENDING:
                    continue
                endpoint_id = record.delivery.endpoint_id
                if endpoint_id not in hooks:
                    hooks[endpoint_id] = self.store.get_webhook(endpoint_id)
                hook = hooks[endpoint_id]
                if hook is None or hook.endpoint.status is not webhooks.EndpointStatus.ACTIVE:
                    continue  # a deleted or disabled endpoint: the delivery stays as logged
                self.store.update_delivery(
                    replace(record, delivery=webhooks.claim(record.delivery))
                )
                claimed.append((record, hook))
        out: list[Outgoing] = []
        for record, hook in claimed:
            body = self._payload(record)
            valid = [hook.secret]
            if hook.previous_secret and (hook.previous_expires_at or 0) > now:
                valid.append(hook.previous_secret)
            out.append(Outgoing(record.id, hook.id, hook.endpoint.url, body, tuple(valid)))
        return out

    def _payload(self, record: DeliveryRecord) -> bytes:
        [event] = self.store.events_since(record.event_seq - 1, 1) or [None]
        if event is None:
            return b"{}"
        return json.dumps(self.event_body(event), separators=(",", ":")).encode()

    def event_body(self, event: EventRecord) -> dict[str, object]:
        """``{id, type, created_at, account_id, mailbox_id, data}``; ``message.received``
        carries the parsed message (PRODUCT §9)."""
        data: dict[str, object] = dict(event.data)
        message_id = data.get("message_id")
        if event.type == "message.received" and isinstance(message_id, str):
            message = self.store.get_message(message_id)
            if message is not None:
                data = payloads.message_payload(message, public_url=self.config.public_url)
        return payloads.event_payload(
            event.id, event.type, event.created_at, event.account_id, event.mailbox_id, data
        )

    def received_email(
        self,
        event: EventRecord,
        *,
        sender: str | None = None,
        subject_contains: str | None = None,
    ) -> dict[str, object] | None:
        """The ``message.received`` payload of ``event`` when the message matches the
        filters (case-insensitive substrings), else None (``wait_for_email``)."""
        message_id = event.data.get("message_id")
        if not isinstance(message_id, str):
            return None
        record = self.store.get_message(message_id)
        if record is None or record.state.mailbox_id != event.mailbox_id:
            return None
        content = record.content
        if sender and sender.lower() not in content.sender.lower():
            return None
        if subject_contains and subject_contains.lower() not in content.subject.lower():
            return None
        return payloads.message_payload(record, public_url=self.config.public_url)

    def finish_webhook_delivery(
        self,
        delivery_id: str,
        status: int | None,
        *,
        retry_after: int | None,
        latency_ms: int,
        excerpt: str,
    ) -> None:
        with self._tx():
            record = self.store.get_delivery(delivery_id)
            if record is None or record.delivery.status is not webhooks.DeliveryStatus.DELIVERING:
                return
            now = self.clock()
            outcome = webhooks.after_attempt(
                record.delivery,
                status,
                retry_after=retry_after,
                draw=secrets.randbelow(JITTER_DRAW_MAX + 1),
                now=now,
            )
            settled = replace(
                record,
                delivery=outcome.delivery,
                last_attempt_at=now,
                latency_ms=latency_ms,
                response_excerpt=excerpt[:500],
            )
            self.store.update_delivery(settled)
            if outcome.disable_endpoint:
                hook = self.store.get_webhook(record.delivery.endpoint_id)
                if hook is not None:
                    disabled = replace(hook.endpoint, status=webhooks.EndpointStatus.DISABLED)
                    self.store.put_webhook(replace(hook, endpoint=disabled))
                    self._audit(
                        record.account_id, None, "webhook.disabled", "webhook", hook.id, now,
                        reason="the endpoint answered 410 Gone",
                    )  # fmt: skip

    def recover_webhooks(self) -> int:
        count = 0
        for record in self.store.deliveries_in_flight():
            with self._tx():
                now = self.clock()
                again = webhooks.after_crash(record.delivery, now=now)
                self.store.update_delivery(replace(record, delivery=again))
                count += 1
        return count

    def list_webhook_deliveries(
        self,
        key: Key,
        *,
        limit: int,
        cursor: str | None,
        status: str | None = None,
        webhook_id: str | None = None,
    ) -> tuple[list[DeliveryRecord], str | None]:
        self._authorize(key, "webhooks.manage", key.account_id)
        return self.store.list_deliveries(
            key.account_id, limit=limit, cursor=cursor, status=status, webhook_id=webhook_id
        )

    def replay_webhook_delivery(self, key: Key, delivery_id: str) -> DeliveryRecord:
        self._authorize(key, "webhooks.manage", key.account_id)
        with self._tx():
            record = self.store.get_delivery(delivery_id)
            if record is None or record.account_id != key.account_id:
                raise NotFound(f"no webhook delivery {delivery_id}")
            if record.delivery.status not in (
                webhooks.DeliveryStatus.DEAD,
                webhooks.DeliveryStatus.DELIVERED,
            ):
                raise InvalidValue("delivery_id", "only a delivered or dead delivery is replayed")
            now = self.clock()
            hook = self.store.get_webhook(record.delivery.endpoint_id)
            if hook is not None and hook.endpoint.status is webhooks.EndpointStatus.DISABLED:
                active = replace(hook.endpoint, status=webhooks.EndpointStatus.ACTIVE)
                self.store.put_webhook(replace(hook, endpoint=active))  # replay re-enables
            again = replace(record, delivery=webhooks.replay(record.delivery, now=now))
            self.store.update_delivery(again)
            self._audit(key.account_id, key, "webhook.replay", "webhook_delivery", delivery_id, now)
        return again


def _mailbox_hook_id(mailbox_id: str) -> str:
    return "wh_" + mailbox_id.removeprefix("mbx_")


__all__ = ["Outgoing", "WebhookFlow", "new_webhook_secret", "sign"]
