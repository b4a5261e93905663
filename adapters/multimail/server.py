"""``multimail serve``: one process serving the HTTP API and the background workers.

Wiring lives here and nowhere else (the bootstrap): settings from flags and
``MULTIMAIL_*`` environment variables → store → service → app → uvicorn, plus the delivery
worker. SIGTERM stops accepting, lets in-flight requests and the current delivery batch
finish, then exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from ulid import ULID

from multimail import worker
from multimail.api import EventBell, RateLimiter, create_app
from multimail.service import Config, Service
from multimail.smtp_in import InboundServer
from multimail.store import open_store
from multimail.transport import Relay, Transport
from multimail_core.errors import MultimailError

log = logging.getLogger("multimail.server")

DEFAULTS = {
    "db": "sqlite:///./var/multimail.db",
    "http": "127.0.0.1:8025",
    "smtp": "127.0.0.1:2525",
    "domain": "agents.localhost",
    "relay": None,
    "data_dir": "./var",
    "public_url": None,
    "rate_limit": "100",
    "dns": "system",
    "webhook_allow_private": "",
}


HELP = {
    "db": "store URL: sqlite:///PATH (postgresql:// arrives with scale-out)",
    "http": "HOST:PORT for the HTTP API",
    "smtp": "HOST:PORT for inbound SMTP (mail for this server's mailboxes)",
    "domain": "the server's mail domain; accounts get <slug>.<domain>",
    "relay": "smtp://[USER:PASS@]HOST:PORT (or smtps://) for outbound mail; default: "
    "direct to each recipient domain's MX",
    "data_dir": "directory for a generated admin.key (the database is where --db says)",
    "public_url": "URL used in links (default http://<--http>)",
    "rate_limit": "requests/s per API key, burst twice that; 0 turns it off",
    "dns": "resolver for inbound sender checks (DKIM, SPF, DMARC): system (resolv.conf), "
    "HOST:PORT of a name server, or off to skip them",
    "webhook_allow_private": "let webhook URLs reach loopback and private networks "
    "(development only; off by default: such URLs are refused)",
}


@dataclass
class Settings:
    db: str = DEFAULTS["db"]  # type: ignore[assignment]
    http: str = DEFAULTS["http"]  # type: ignore[assignment]
    smtp: str = DEFAULTS["smtp"]  # type: ignore[assignment]
    domain: str = DEFAULTS["domain"]  # type: ignore[assignment]
    relay: str | None = None
    data_dir: str = DEFAULTS["data_dir"]  # type: ignore[assignment]
    public_url: str | None = None
    admin_key: str | None = field(default=None, repr=False)
    rate_limit: float = 100.0
    dns: str = "system"
    webhook_allow_private: bool = False

    @property
    def smtp_host_port(self) -> tuple[str, int]:
        return split_host_port(self.smtp, "--smtp")

    @property
    def http_host_port(self) -> tuple[str, int]:
        return split_host_port(self.http, "--http")

    @property
    def base_url(self) -> str:
        host, port = self.http_host_port
        return self.public_url or f"http://{host}:{port}"


def split_host_port(value: str, flag: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SystemExit(f"multimail serve: {flag} wants HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def parse_settings(argv: Sequence[str], env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    parser = argparse.ArgumentParser(
        prog="multimail serve",
        description="Run the MultiMail server: HTTP API and workers in one process. "
        "Every flag also reads MULTIMAIL_<FLAG> (e.g. MULTIMAIL_DB); MULTIMAIL_ADMIN_KEY "
        "fixes the bootstrap admin key.",
    )
    for name, default in DEFAULTS.items():
        flag = "--" + name.replace("_", "-")
        value = env.get("MULTIMAIL_" + name.upper(), default)
        if name == "webhook_allow_private":
            on = str(value).lower() in ("1", "true", "yes", "on")
            parser.add_argument(flag, action="store_true", default=on, help=HELP[name])
            continue
        parser.add_argument(flag, default=value, help=HELP.get(name, "") + f" (default: {value})")
    args = parser.parse_args(list(argv))
    return Settings(
        db=args.db,
        http=args.http,
        smtp=args.smtp,
        domain=args.domain,
        data_dir=args.data_dir,
        public_url=args.public_url,
        admin_key=env.get("MULTIMAIL_ADMIN_KEY") or None,
        rate_limit=_rate(args.rate_limit),
        dns=_dns(args.dns),
        webhook_allow_private=bool(args.webhook_allow_private),
        relay=_relay(args.relay),
    )


def _dns(value: str) -> str:
    if value in ("system", "off"):
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise SystemExit(
            f"multimail serve: --dns wants system, off or HOST:PORT of a name server, got {value!r}"
        )
    return value


def _relay(value: str | None) -> str | None:
    if not value:
        return None
    try:
        Relay.parse(value)
    except ValueError as exc:
        raise SystemExit(f"multimail serve: {exc}") from None
    return value


def _rate(value: str) -> float:
    try:
        rate = float(value)
    except ValueError:
        raise SystemExit(
            f"multimail serve: --rate-limit wants requests/s per key, got {value!r}"
        ) from None
    if rate < 0:
        raise SystemExit("multimail serve: --rate-limit must be >= 0 (0 turns it off)")
    return rate


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def new_ulid() -> str:
    return str(ULID())


def build_service(settings: Settings) -> Service:
    store = open_store(settings.db)
    return Service(
        store,
        clock=wall_clock_ms,
        new_ulid=new_ulid,
        config=Config(
            domain=settings.domain,
            public_url=settings.base_url,
            webhook_allow_private=settings.webhook_allow_private,
        ),
    )


def bootstrap_admin(service: Service, settings: Settings) -> str | None:
    """Ensure the admin key; a generated one is written to <data-dir>/admin.key (0600)."""
    _, generated = service.bootstrap(settings.admin_key)
    if generated is None:
        return None
    path = Path(settings.data_dir) / "admin.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(generated + "\n")
    return generated


class _QuietServer(uvicorn.Server):
    """Signals are the Runtime's: it stops uvicorn, then the workers, then exits 0.

    (uvicorn's own handling re-raises SIGTERM after shutdown, which would end the
    process with status 143 instead of 0.)
    """

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def,override]
        yield


class Runtime:
    """The running server: uvicorn, inbound SMTP and the delivery workers on one loop."""

    def __init__(
        self,
        service: Service,
        settings: Settings,
        *,
        sock: socket.socket | None = None,
        smtp_sock: socket.socket | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.service = service
        self.settings = settings
        self.sock = sock
        self.smtp_sock = smtp_sock
        self.ready = asyncio.Event()
        self._stopping = False
        self._stop_event: asyncio.Event | None = None
        relay = Relay.parse(settings.relay) if settings.relay else None
        self.transport = transport or Transport(relay, helo=settings.domain)
        self.worker = worker.DeliveryWorker(service, self.transport)
        self.webhooks = worker.WebhookWorker(service, allow_private=settings.webhook_allow_private)
        self.events = EventBell()
        service.on_commit.append(self.webhooks.kick)
        service.on_commit.append(self.events.ring)
        limiter = RateLimiter(rate=settings.rate_limit, burst=max(1, int(settings.rate_limit * 2)))
        self.app = create_app(service, limiter=limiter, on_send=self.kick, bell=self.events)
        host, port = settings.http_host_port
        self.uvicorn = _QuietServer(
            uvicorn.Config(self.app, host=host, port=port, log_level="warning", lifespan="off")
        )
        smtp_host, smtp_port = settings.smtp_host_port
        self.smtp = InboundServer(
            service,
            smtp_host,
            smtp_port,
            hostname=settings.domain,
            authenticate=worker.sender_checks(settings.dns),
        )

    def kick(self) -> None:
        self.worker.kick()

    async def serve(self, *, handle_signals: bool = False) -> None:
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        await asyncio.to_thread(self.service.recover_in_flight)
        await self.smtp.start(self.smtp_sock)
        self.worker.bind(loop)
        self.webhooks.bind(loop)
        self.events.bind(loop)
        work = asyncio.create_task(self.worker.run())
        hooks = asyncio.create_task(self.webhooks.run())
        sockets = [self.sock] if self.sock is not None else None
        async with self.app.state.mcp.running():
            server = asyncio.create_task(self.uvicorn.serve(sockets=sockets))
            while not self.uvicorn.started and not server.done():
                await asyncio.sleep(0.01)
            self.ready.set()
            await server
        # uvicorn has stopped taking requests: stop SMTP (in-flight DATA finishes), then
        # let the worker finish its current batch.
        await self.smtp.stop()
        self.worker.stop()
        self.webhooks.stop()
        self.events.close()
        await work
        await hooks
        await self.transport.close()

    def stop(self) -> None:
        self.uvicorn.should_exit = True


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop when it is installed (the SMTP path spends much of its time in the
    event loop; uvloop's is about twice as fast), else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        asyncio.run(main)
        return
    uvloop.run(main)


def serve_main(argv: Sequence[str]) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # aiosmtpd logs every SMTP command at INFO, httpx every request (webhooks, and each MCP
    # tool's in-process API call), the MCP SDK every stateless request: keep their warnings
    # and errors only.
    for noisy in ("mail.log", "httpx", "mcp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = parse_settings(argv)
    if settings.db.startswith("sqlite:///./") or settings.db.startswith("sqlite:///var"):
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    try:
        service = build_service(settings)
    except MultimailError as exc:  # a bad --db: one clear line, no traceback
        print(f"multimail serve: {exc.detail}", file=sys.stderr)
        return 2
    generated = bootstrap_admin(service, settings)
    runtime = Runtime(service, settings)
    print(f"MultiMail API      {settings.base_url}", flush=True)
    print(f"  OpenAPI          {settings.base_url}/openapi.json", flush=True)
    print(f"  mail domain      {settings.domain}", flush=True)
    if generated:
        where = Path(settings.data_dir) / "admin.key"
        print(f"  admin key        {generated}   (shown once; also in {where})", flush=True)
    elif settings.admin_key:
        print("  admin key        from MULTIMAIL_ADMIN_KEY", flush=True)
    else:
        print(
            f"  admin key        already created; see {Path(settings.data_dir) / 'admin.key'}",
            flush=True,
        )
    smtp_host, smtp_port = settings.smtp_host_port
    print(f"  SMTP in          {smtp_host}:{smtp_port}", flush=True)
    print(f"  SMTP out         {settings.relay or 'direct to MX (no --relay given)'}", flush=True)
    key = generated or "$(cat " + str(Path(settings.data_dir) / "admin.key") + ")"
    if settings.admin_key and not generated:
        key = "$MULTIMAIL_ADMIN_KEY"
    print(
        "\nQuickstart:\n"
        f"  export MULTIMAIL_API_URL={settings.base_url}\n"
        f"  export MULTIMAIL_API_KEY={key}\n"
        '  curl -s -X POST "$MULTIMAIL_API_URL/v1/mailboxes" \\\n'
        '    -H "Authorization: Bearer $MULTIMAIL_API_KEY" -H "Content-Type: application/json" \\\n'
        """    -d '{"name": "support-agent", "oversight_mode": "monitored"}'\n"""
        "  .venv/bin/multimail mailboxes list\n",
        flush=True,
    )
    try:
        _run(runtime.serve(handle_signals=True))
    finally:
        service.store.close()
    return 0


def main() -> int:  # pragma: no cover - console entry
    return serve_main(sys.argv[1:])


__all__ = ["Runtime", "Settings", "build_service", "parse_settings", "serve_main"]
