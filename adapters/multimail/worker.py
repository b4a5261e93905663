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
from collections.abc import Awaitable, Callable

from multimail.mailflow import Job
from multimail.records import QueuedMail
from multimail.service import Service
from multimail.transport import Transport

log = logging.getLogger("multimail.worker")

IDLE_WAIT = 0.5


class DeliveryWorker:
    def __init__(self, service: Service, transport: Transport, *, concurrency: int = 20) -> None:
        self.service = service
        self.transport = transport
        self.concurrency = concurrency
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kick: asyncio.Event | None = None
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._kick = asyncio.Event()

    def kick(self) -> None:
        """Wake the worker (a message was queued); safe from any thread."""
        loop, event = self._loop, self._kick
        if loop is not None and event is not None:
            loop.call_soon_threadsafe(event.set)

    def stop(self) -> None:
        self._stopping = True
        self.kick()

    async def run(self) -> None:
        assert self._kick is not None, "bind() first"
        while not self._stopping:
            try:
                busy = await self._round()
            except Exception:
                log.exception("delivery round failed; retrying")
                busy = False
            if busy:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), timeout=IDLE_WAIT)
            self._kick.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _round(self) -> bool:
        room = self.concurrency - len(self._tasks)
        if room <= 0:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
            return True
        jobs, handled = await asyncio.to_thread(self.service.claim_deliveries, limit=room)
        for job in jobs:
            self._spawn(self._deliver(job))
        mails = await asyncio.to_thread(self.service.claim_mail, limit=max(1, room - len(jobs)))
        for mail in mails:
            self._spawn(self._send_mail(mail))
        return bool(handled or mails)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery task failed", exc_info=task.exception())
        self.kick()

    async def _deliver(self, job: Job) -> None:
        replies = await self.transport.send(job.mail_from, job.recipients, job.raw)
        await _settle(self.service.finish_delivery, job, replies)

    async def _send_mail(self, mail: QueuedMail) -> None:
        replies = await self.transport.send(mail.mail_from, mail.recipients, mail.raw)
        await _settle(self.service.finish_mail, mail, replies)


SETTLE_TRIES = 6


async def _settle(record: Callable[..., None], *args: object) -> None:
    """Record the transport's answer, retrying a store that is briefly unavailable: the
    answer exists only in memory, and losing it turns a delivered message into a failed
    one at the next start (Rule 3)."""
    for attempt in range(SETTLE_TRIES):
        try:
            await asyncio.to_thread(record, *args)
            return
        except Exception:
            log.exception("recording a delivery answer failed (try %d)", attempt + 1)
            await asyncio.sleep(0.2 * 2**attempt)
    log.error("gave up recording a delivery answer; the message fails at the next start")


Authenticator = Callable[[bytes, str | None, str | None, str, str], dict[str, object]]


def sender_checks(mode: str) -> Authenticator:
    """DKIM, SPF and DMARC for an arrival (``--dns system`` or ``--dns HOST:PORT``), or
    nothing (``--dns off``)."""
    from multimail import signals
    from multimail.smtp_in import no_signals

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


__all__ = ["DeliveryWorker", "sender_checks"]
