"""Outbound transport (PRODUCT.md §6): hand a signed message to the next hop with aiosmtplib.

Rule 1: with a relay (``smtp://HOST:PORT``, optional ``user:pass@``, ``smtps://`` for implicit
        TLS, ``?starttls=1`` to require STARTTLS), every message goes there; without one,
        recipients are grouped by domain and sent to the domain's MX hosts (dnspython) in
        preference order, falling back to the domain itself (RFC 5321 §5.1).
Rule 2: the answer is one (code, text) per recipient. Connection failures, timeouts and
        protocol errors are transient (4xx) for every recipient of that attempt; a refused
        RCPT keeps its own reply. Nothing here decides retry or bounce: the core does.
Rule 3: the transport never raises; it reports.
Rule 4: connections to the relay are kept open and reused (up to ``pool_size`` idle ones,
        each for at most ``IDLE_SECONDS``); a reused connection is checked with NOOP before
        a transaction starts, so a stale one costs a reconnect, never a lost or doubled
        message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
import dns.asyncresolver
import dns.exception
import dns.resolver

log = logging.getLogger("multimail.transport")

Replies = dict[str, tuple[int, str]]
TIMEOUT = 60.0
IDLE_SECONDS = 30.0


@dataclass(frozen=True)
class Relay:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    implicit_tls: bool = False
    starttls: bool = False

    @classmethod
    def parse(cls, url: str) -> Relay:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError(f"--relay wants smtp://HOST:PORT or smtps://HOST:PORT, got {url!r}")
        query = parse_qs(parts.query)
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if parts.scheme == "smtps" else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            implicit_tls=parts.scheme == "smtps",
            starttls=query.get("starttls", ["0"])[0] in ("1", "true", "yes"),
        )


class Transport:
    """Send to the relay, or direct to MX when there is none."""

    def __init__(
        self,
        relay: Relay | None,
        *,
        helo: str,
        timeout: float = TIMEOUT,
        mx_port: int = 25,
        pool_size: int = 20,
        resolver: dns.asyncresolver.Resolver | None = None,
    ) -> None:
        self.relay = relay
        self.helo = helo
        self.timeout = timeout
        self.mx_port = mx_port
        self.pool_size = pool_size
        self.resolver = resolver
        self._idle: list[tuple[float, aiosmtplib.SMTP]] = []

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for _, client in idle:
            await _quit(client)

    async def _pooled(self) -> aiosmtplib.SMTP | None:
        """An idle relay connection that still answers, or None."""
        loop = asyncio.get_running_loop()
        while self._idle:
            since, client = self._idle.pop()
            if loop.time() - since < IDLE_SECONDS and client.is_connected:
                try:
                    code, _ = await client.noop()
                    if code == 250:
                        return client
                except (aiosmtplib.SMTPException, OSError, TimeoutError):
                    pass
            await _quit(client)
        return None

    def _release(self, client: aiosmtplib.SMTP) -> None:
        if client.is_connected and len(self._idle) < self.pool_size:
            self._idle.append((asyncio.get_running_loop().time(), client))
        else:
            client.close()

    async def send(self, mail_from: str, recipients: Sequence[str], raw: bytes) -> Replies:
        try:
            if self.relay is not None:
                return await self._via(
                    [(self.relay.host, self.relay.port)], mail_from, recipients, raw, self.relay
                )
            replies: Replies = {}
            by_domain: dict[str, list[str]] = {}
            for rcpt in recipients:
                by_domain.setdefault(rcpt.rpartition("@")[2].lower(), []).append(rcpt)
            for domain, rcpts in by_domain.items():
                replies.update(await self._to_domain(domain, rcpts, mail_from, raw))
            return replies
        except Exception as exc:  # Rule 3
            log.exception("transport failure")
            return {r: (451, f"4.3.0 transport error: {type(exc).__name__}") for r in recipients}

    async def _to_domain(
        self, domain: str, rcpts: Sequence[str], mail_from: str, raw: bytes
    ) -> Replies:
        """One domain's recipients; a failure here answers for them only, never for the
        recipients of other domains (which may already have taken the message)."""
        try:
            hosts = await mx_hosts(domain, self.resolver)
        except ConnectionError as exc:
            return dict.fromkeys(rcpts, (451, f"4.4.3 {exc}"))
        if not hosts:
            return dict.fromkeys(rcpts, (550, "5.1.2 the recipient domain has no mail server"))
        try:
            return await self._via([(h, self.mx_port) for h in hosts], mail_from, rcpts, raw)
        except Exception as exc:
            log.exception("transport failure for %s", domain)
            return dict.fromkeys(rcpts, (451, f"4.3.0 transport error: {type(exc).__name__}"))

    async def _via(
        self,
        hosts: Sequence[tuple[str, int]],
        mail_from: str,
        recipients: Sequence[str],
        raw: bytes,
        relay: Relay | None = None,
    ) -> Replies:
        last: Replies = {}
        for host, port in hosts:
            replies = await self._one(host, port, mail_from, recipients, raw, relay)
            # Try the next MX only when this one could not be reached or answered 4xx.
            if not all(code // 100 == 4 for code, _ in replies.values()):
                return replies
            last = replies
        return last

    async def _one(
        self,
        host: str,
        port: int,
        mail_from: str,
        recipients: Sequence[str],
        raw: bytes,
        relay: Relay | None,
    ) -> Replies:
        client = await self._pooled() if relay is not None else None
        keep = False
        try:
            if client is None:
                client = aiosmtplib.SMTP(
                    hostname=host,
                    port=port,
                    local_hostname=self.helo,
                    timeout=self.timeout,
                    use_tls=bool(relay and relay.implicit_tls),
                    start_tls=True if relay and relay.starttls else None,
                    # STARTTLS when offered; certificates are checked for the relay we were
                    # told to use, not for MX hosts (opportunistic TLS, RFC 7435, as MTAs do)
                    validate_certs=relay is not None,
                )
                await client.connect()
                if relay is not None and relay.username:
                    await client.login(relay.username, relay.password or "")
            refused, _ = await client.sendmail(mail_from, list(recipients), raw)
            replies: Replies = dict.fromkeys(recipients, (250, "2.0.0 accepted"))
            for rcpt, response in refused.items():
                replies[rcpt] = (response.code, response.message)
            keep = relay is not None
            return replies
        except aiosmtplib.SMTPRecipientsRefused as exc:
            keep = relay is not None and await _reset(client)
            return {e.recipient: (e.code, e.message) for e in exc.recipients}
        except aiosmtplib.SMTPResponseException as exc:
            return dict.fromkeys(recipients, (exc.code, exc.message))
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            text = f"4.4.1 could not deliver to {host}:{port}: {type(exc).__name__}: {exc}"
            return dict.fromkeys(recipients, (451, text[:300]))
        finally:
            if client is not None:
                if keep:
                    self._release(client)
                else:
                    await _quit(client)


async def _quit(client: aiosmtplib.SMTP) -> None:
    if client.is_connected:
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            client.close()


async def _reset(client: aiosmtplib.SMTP | None) -> bool:
    """RSET after refused recipients, so the connection can carry the next message."""
    if client is None or not client.is_connected:
        return False
    try:
        code, _ = await client.rset()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        return False
    return code == 250


async def mx_hosts(domain: str, resolver: dns.asyncresolver.Resolver | None = None) -> list[str]:
    """MX hosts of ``domain`` by preference; the domain itself when it has none (RFC 5321
    §5.1); [] for a null MX (RFC 7505) or a domain that does not exist."""
    try:
        if resolver is None:
            answer = await dns.asyncresolver.resolve(domain, "MX", lifetime=10.0)
        else:
            answer = await resolver.resolve(domain, "MX", lifetime=10.0)
    except dns.resolver.NXDOMAIN:
        return []
    except dns.resolver.NoAnswer:
        return [domain]
    except (dns.exception.DNSException, OSError):
        raise ConnectionError(f"MX lookup for {domain} failed") from None
    records = sorted(answer, key=lambda r: r.preference)  # type: ignore[attr-defined]
    hosts = [str(r.exchange).rstrip(".") for r in records]  # type: ignore[attr-defined]
    if hosts == [""]:
        return []
    return hosts


async def send_all(
    transport: Transport, jobs: Sequence[tuple[str, Sequence[str], bytes]], *, concurrency: int
) -> list[Replies]:
    """Send several messages at once, at most ``concurrency`` connections."""
    gate = asyncio.Semaphore(concurrency)

    async def one(job: tuple[str, Sequence[str], bytes]) -> Replies:
        async with gate:
            return await transport.send(*job)

    return list(await asyncio.gather(*(one(j) for j in jobs)))


__all__ = ["Relay", "Replies", "Transport", "mx_hosts", "send_all"]
