"""Inbound SMTP (PRODUCT.md §6): aiosmtpd on the server's event loop.

Rule 1: ``RCPT`` is answered from the store: active mailboxes of this server (plus-addressing
        folds ``name+tag@`` to ``name@``) and our VERP bounce addresses get 250; anything
        else 550 — unauthenticated clients cannot relay.
Rule 2: a ``250`` to DATA is sent only after the message is committed. Arrivals are committed
        by one thread in batches (group commit): each session waits for the commit that
        holds its own message, so concurrent sessions share one fsync.
Rule 3: strict line endings: DATA holding a bare LF or a bare CR is refused (SMTP smuggling,
        header injection through bare newlines); over-size DATA gets 552 (aiosmtpd).
Rule 4: any bytes become a stored message (with parse defects recorded) or a clean SMTP
        error; an exception in our code is a 451 (try again), never a dropped connection.
Rule 5: parsing and sender checks (DNS) run in worker threads, never on the event loop and
        never inside a store transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, cast

from aiosmtpd.smtp import SMTP, Envelope, Session, syntax

from multimail import mime
from multimail.mailflow import SMTP_REPLIES, Accepted, Incoming, NoRecipient, hops_of
from multimail.service import Service
from multimail_core import delivery

log = logging.getLogger("multimail.smtp")

MAX_SIZE = 25 * 1024 * 1024
MAX_BATCH = 128
CHECK_THREADS = 8
MAX_SESSIONS = 256  # open SMTP connections; more get 421 (Postfix: smtpd process limit 100)
MAX_RCPTS = 100  # per transaction (RFC 5321 §4.5.3.1.8's minimum); more get 452
SESSION_TIMEOUT = 300  # seconds of silence (RFC 5321 §4.5.3.2 asks for 5 minutes)
#: per-session command budgets: enough for a relay's connection cache, not for a NOOP loop
COMMAND_LIMITS = {"NOOP": 20, "VRFY": 5, "EXPN": 5, "HELP": 10, "*": 1000}

#: (raw, client IP, HELO name, MAIL FROM, the parsed From address) → sender signals
Authenticator = Callable[[bytes, str | None, str | None, str, str], dict[str, object]]


def no_signals(
    raw: bytes, peer: str | None, helo: str | None, mail_from: str, from_address: str
) -> dict[str, object]:
    return {"dkim": "skipped", "spf": "skipped", "dmarc": "skipped"}


class ShuttingDown(Exception):
    """An arrival after the committer stopped: answered 421, the client retries."""


@dataclass
class _Pending:
    item: Incoming
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Accepted]


class Committer:
    """One thread that commits arrivals in batches (Rule 2)."""

    def __init__(self, service: Service, *, max_batch: int = MAX_BATCH) -> None:
        self.service = service
        self.max_batch = max_batch
        self.closed = False
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="smtp-commit", daemon=True)
        self._thread.start()

    async def commit(self, item: Incoming) -> Accepted:
        if self.closed:  # stopping: the client keeps the message and tries again
            raise ShuttingDown("the server is stopping")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Accepted] = loop.create_future()
        self._queue.put(_Pending(item, loop, future))
        return await future

    def close(self) -> None:
        self.closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            try:
                results: list[Accepted | Exception] = self.service.accept_smtp(
                    [p.item for p in batch]
                )
            except Exception as exc:  # the whole batch failed even one by one
                results = [exc] * len(batch)
            for pending, result in zip(batch, results, strict=True):
                pending.loop.call_soon_threadsafe(_settle, pending.future, result)
            if stop:
                return


def _settle(future: asyncio.Future[Accepted], result: Accepted | Exception) -> None:
    if future.done():
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)


def _reply(name: str) -> str:
    code, text = SMTP_REPLIES[name]
    return f"{code} {text}"


class Handler:
    """aiosmtpd handler hooks: RCPT, DATA (Rules 1–5)."""

    def __init__(
        self,
        service: Service,
        committer: Committer,
        *,
        authenticate: Authenticator = no_signals,
        limits: mime.Limits | None = None,
    ) -> None:
        self.service = service
        self.committer = committer
        self.authenticate = authenticate
        self.limits = limits or mime.Limits()
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()
        #: parsing and sender checks (DNS, up to a few seconds) get their own threads, so
        #: slow lookups never hold up RCPT answers or the delivery worker
        self._checks = ThreadPoolExecutor(CHECK_THREADS, thread_name_prefix="smtp-checks")

    def close(self) -> None:
        self._checks.shutdown(wait=False, cancel_futures=True)

    def begin(self) -> None:
        """A DATA transaction started (its bytes may still be arriving)."""
        self.in_flight += 1
        self.idle.clear()

    def end(self) -> None:
        self.in_flight -= 1
        if not self.in_flight:
            self.idle.set()

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= MAX_RCPTS:
            return _reply("too_many_recipients")
        try:
            answer = self.service.smtp_rcpt_cached(address)
            if answer is None:
                answer = await asyncio.to_thread(self.service.smtp_rcpt, address)
            code, text, box_id = answer
        except Exception:
            log.exception("RCPT lookup failed")
            return _reply("temporary")
        if code == 250:
            envelope.rcpt_tos.append(address)
            if box_id is not None:
                _boxes(envelope)[address] = box_id
        return f"{code} {text}"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        try:
            return await self._data(session, envelope)
        except mime.Refused as exc:
            return f"{exc.code} {exc.text}"
        except NoRecipient:
            return _reply("mailbox_gone")
        except ShuttingDown:
            return "421 4.3.2 the server is stopping; try again later"
        except Exception:
            log.exception("DATA failed")
            return _reply("temporary")

    async def _data(self, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        if mime.has_bare_line_endings(raw):
            return _reply("bare_line_ending")
        peer = session.peer[0] if isinstance(session.peer, tuple) else None
        helo = session.host_name
        mail_from = envelope.mail_from or ""
        item = await asyncio.get_running_loop().run_in_executor(
            self._checks, self._prepare, raw, mail_from, tuple(envelope.rcpt_tos), peer, helo
        )
        if isinstance(item, str):
            return item
        item = replace(item, boxes=dict(_boxes(envelope)))
        accepted = await self.committer.commit(item)
        ids = " ".join(accepted.message_ids) or "report"
        return f"{_reply('stored')} {ids}"

    def _prepare(
        self, raw: bytes, mail_from: str, rcpts: tuple[str, ...], peer: str | None, helo: str | None
    ) -> Incoming | str:
        parsed = mime.parse(raw, self.limits)
        received = sum(1 for name, _ in parsed.headers if name.lower() == "received")
        if delivery.loop_suspected(hops_of(parsed.headers), received):
            return _reply("loop")
        try:
            signals = self.authenticate(raw, peer, helo, mail_from, parsed.sender)
        except Exception:
            log.exception("sender checks failed")
            signals = {"dkim": "temperror", "spf": "temperror", "dmarc": "temperror"}
        return Incoming(raw, mail_from, rcpts, parsed, signals, peer, helo)


def _boxes(envelope: Envelope) -> dict[str, str]:
    """Our per-transaction note of rcpt → mailbox id (aiosmtpd resets the envelope per
    transaction, so it cannot leak into the next one)."""
    found = getattr(envelope, "mm_boxes", None)
    if found is None:
        found = {}
        envelope.mm_boxes = found  # type: ignore[attr-defined]
    return found


class _Session(SMTP):
    """aiosmtpd's protocol, counting DATA transactions from the DATA command on, so that
    SIGTERM waits for a message whose bytes are still arriving, not only for its commit;
    and refusing connections beyond the server's session limit with a 421."""

    limits: _SessionLimit

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.limits.enter():
            self._over_limit = True
            cast(asyncio.WriteTransport, transport).write(
                b"421 4.7.0 too many connections; try again later\r\n"
            )
            transport.close()
            return
        self._over_limit = False
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if getattr(self, "_over_limit", False):
            return
        self.limits.leave()
        super().connection_lost(error)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802 - aiosmtpd's command hook
        handler = self.event_handler
        handler.begin()
        try:
            await super().smtp_DATA(arg)
        finally:
            handler.end()


@dataclass
class _SessionLimit:
    most: int
    open: int = 0

    def enter(self) -> bool:
        if self.open >= self.most:
            return False
        self.open += 1
        return True

    def leave(self) -> None:
        self.open -= 1


class InboundServer:
    """The listening SMTP server on the running event loop."""

    def __init__(
        self,
        service: Service,
        host: str,
        port: int,
        *,
        hostname: str,
        authenticate: Authenticator = no_signals,
        max_size: int = MAX_SIZE,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self.service = service
        self.host = host
        self.port = port
        self.hostname = hostname
        self.max_size = max_size
        self.committer = Committer(service)
        self.handler = Handler(
            service, self.committer, authenticate=authenticate, limits=mime.Limits()
        )
        self._server: asyncio.base_events.Server | None = None
        self.limits = _SessionLimit(max_sessions)

    def _factory(self) -> SMTP:
        session = _Session(
            self.handler,
            data_size_limit=self.max_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=self.hostname,
            ident="MultiMail ESMTP",
            timeout=SESSION_TIMEOUT,
            command_call_limit=COMMAND_LIMITS,
        )
        session.limits = self.limits
        return session

    async def start(self, sock: Any = None) -> None:
        loop = asyncio.get_running_loop()
        if sock is not None:
            self._server = await loop.create_server(self._factory, sock=sock)
        else:
            self._server = await loop.create_server(self._factory, self.host, self.port)
        sockets = self._server.sockets or ()
        if sockets:
            self.port = sockets[0].getsockname()[1]

    async def stop(self, *, grace: float = 30.0) -> None:
        """Stop accepting; let in-flight DATA transactions commit and answer (SIGTERM)."""
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.handler.idle.wait(), timeout=grace)
        await asyncio.to_thread(self.committer.close)
        self.handler.close()


__all__ = ["Committer", "Handler", "InboundServer", "no_signals"]
