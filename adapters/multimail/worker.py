"""The delivery worker: claims due mail, hands it to the transport, records the answers.

Rule 1: claiming and settling are service calls in worker threads (store transactions);
        the network part runs on the event loop, many attempts at once (``concurrency``).
Rule 2: a slow remote server holds only its own attempt: the worker keeps claiming while
        fewer than ``concurrency`` attempts are in flight.
Rule 3: ``stop()`` ends claiming; attempts already handed to the transport are finished and
        recorded before ``run()`` returns (SIGTERM finishes in-flight deliveries); recording
        an answer is retried a few times, since the answer exists only in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from multimail.mailflow import Job
from multimail.records import QueuedMail
from multimail.service import Service
from multimail.smtp_in import Authenticator, no_signals
from multimail.transport import Transport
from multimail.webhookflow import Outgoing

log = logging.getLogger("multimail.worker")

IDLE_WAIT = 0.5


class _Loop:
    """What both workers share: a wake-up event, a stop flag, a set of tasks in flight, and
    rounds run until stopped (Rules 2, 3)."""

    name = "worker"

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kick: asyncio.Event | None = None
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._kick = asyncio.Event()

    def kick(self) -> None:
        """Wake the worker (something was queued or committed); safe from any thread."""
        loop, event = self._loop, self._kick
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    def stop(self) -> None:
        self._stopping = True
        self.kick()

    async def _rounds(self, round_: Callable[[], Awaitable[bool]]) -> None:
        assert self._kick is not None, "bind() first"
        while not self._stopping:
            try:
                busy = await round_()
            except Exception:
                log.exception("%s round failed; retrying", self.name)
                busy = False
            if busy:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), timeout=IDLE_WAIT)
            self._kick.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _room(self) -> int:
        """Free slots; when there are none, wait for a task to finish and say 0."""
        room = self.concurrency - len(self._tasks)
        if room <= 0:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
            return 0
        return room

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s task failed", self.name, exc_info=task.exception())
        self.kick()


class DeliveryWorker(_Loop):
    name = "delivery"

    def __init__(self, service: Service, transport: Transport, *, concurrency: int = 20) -> None:
        super().__init__(concurrency)
        self.service = service
        self.transport = transport

    async def run(self) -> None:
        await self._rounds(self._round)

    async def _round(self) -> bool:
        room = await self._room()
        if not room:
            return True
        jobs, handled = await asyncio.to_thread(self.service.claim_deliveries, limit=room)
        for job in jobs:
            self._spawn(self._deliver(job))
        mails = await asyncio.to_thread(self.service.claim_mail, limit=max(1, room - len(jobs)))
        for mail in mails:
            self._spawn(self._send_mail(mail))
        return bool(handled or mails)

    async def _deliver(self, job: Job) -> None:
        replies = await self.transport.send(job.mail_from, job.recipients, job.raw)
        await _settle(self.service.finish_delivery, job, replies)

    async def _send_mail(self, mail: QueuedMail) -> None:
        replies = await self.transport.send(mail.mail_from, mail.recipients, mail.raw)
        await _settle(self.service.finish_mail, mail, replies)


SETTLE_TRIES = 6


async def _settle(record: Callable[..., None], *args: object, **kwargs: object) -> None:
    """Record the transport's answer, retrying a store that is briefly unavailable: the
    answer exists only in memory, and losing it turns a delivered message into a failed
    one at the next start (Rule 3)."""
    for attempt in range(SETTLE_TRIES):
        try:
            await asyncio.to_thread(record, *args, **kwargs)
            return
        except Exception:
            log.exception("recording a delivery answer failed (try %d)", attempt + 1)
            await asyncio.sleep(0.2 * 2**attempt)
    log.error("gave up recording a delivery answer; the message fails at the next start")


def sender_checks(mode: str) -> Authenticator:
    """DKIM, SPF and DMARC for an arrival (``--dns system`` or ``--dns HOST:PORT``), or
    nothing (``--dns off``)."""
    from multimail import signals

    if mode == "off":
        return no_signals
    if mode == "system":
        resolver = signals.SystemResolver()
    else:
        host, _, port = mode.rpartition(":")
        resolver = signals.SystemResolver(nameservers=[host.strip("[]")], port=int(port))

    def check(
        raw: bytes, peer: str | None, helo: str | None, mail_from: str, from_address: str
    ) -> dict[str, object]:
        # SPF judges the connecting IP; for a loopback or private peer (a local relay, a
        # test) that says nothing about the sender, so SPF is skipped rather than faked.
        ip = peer if peer and ipaddress.ip_address(peer).is_global else None
        result = signals.authenticate(
            raw,
            client_ip=ip,
            helo=helo,
            mail_from=mail_from,
            resolver=resolver,
            from_address=from_address or None,
        )
        return result.to_dict()

    return check


class WebhookWorker(_Loop):
    """Fans committed events out into deliveries and POSTs them (PRODUCT §9).

    Rule 1: at most ``per_endpoint`` requests in flight per endpoint, ``concurrency`` in all.
    Rule 2: a request is bounded by ``timeout``; redirects are not followed; the connection
            is re-checked against private ranges at connect time (``ssrf.guarded_client``).
    Rule 3: ``stop()`` ends claiming; requests in flight are finished and recorded.
    """

    name = "webhook"

    def __init__(
        self,
        service: Service,
        *,
        allow_private: bool,
        timeout: float = 10.0,
        concurrency: int = 32,
        per_endpoint: int = 4,
    ) -> None:
        super().__init__(concurrency)
        self.service = service
        self.allow_private = allow_private
        self.timeout = timeout
        self.per_endpoint = per_endpoint
        self._busy: dict[str, int] = {}

    async def run(self) -> None:
        from multimail import ssrf

        await asyncio.to_thread(self.service.recover_webhooks)
        client = ssrf.guarded_client(allow_private=self.allow_private, timeout=self.timeout)
        try:
            await self._rounds(lambda: self._round(client))
        finally:
            await client.aclose()

    async def _round(self, client: Any) -> bool:
        fanned = await asyncio.to_thread(self.service.fan_out)
        room = await self._room()
        if not room:
            return True
        claimed = await asyncio.to_thread(self.service.claim_webhook_deliveries, limit=room)
        for outgoing in claimed:
            self._spawn(self._post(client, outgoing))
        return bool(fanned or claimed)

    async def _post(self, client: Any, outgoing: Outgoing) -> None:
        while self._busy.get(outgoing.endpoint_id, 0) >= self.per_endpoint:
            await asyncio.sleep(0.01)
        self._busy[outgoing.endpoint_id] = self._busy.get(outgoing.endpoint_id, 0) + 1
        started = time.monotonic()
        status: int | None = None
        retry_after: int | None = None
        excerpt = ""
        try:
            response = await client.post(
                outgoing.url, content=outgoing.body, headers=outgoing.headers(int(time.time()))
            )
            status = response.status_code
            retry_after = _retry_after(response.headers.get("retry-after"))
            excerpt = response.text[:500]
        except Exception as exc:  # timeouts, refused and blocked connections: retried
            excerpt = f"{type(exc).__name__}: {exc}"[:500]
        finally:
            self._busy[outgoing.endpoint_id] -= 1
        latency = int((time.monotonic() - started) * 1000)
        await _settle(
            self.service.finish_webhook_delivery,
            outgoing.delivery_id,
            status,
            retry_after=retry_after,
            latency_ms=latency,
            excerpt=excerpt,
        )


def _retry_after(value: str | None) -> int | None:
    """Retry-After in seconds (RFC 9110 §10.2.3: seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value)
    try:
        from email.utils import parsedate_to_datetime

        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0, int(when.timestamp() - time.time()))


__all__ = ["DeliveryWorker", "WebhookWorker", "sender_checks"]
