"""Webhook benchmarks (PRODUCT.md §12): SMTP end-of-DATA → webhook received, and deliveries/s.

One receiver process (a bare asyncio HTTP/1.1 server answering ``200`` to every request and
writing one line per request: wall-clock arrival time, ``data.subject``, body size) serves as
the webhook URL of a mailbox of ``multimail serve`` and as the target of the baseline:

- peak: smtp-source (``-s SESSIONS -m PEAK -l SIZE``) against the server; messages/s.
- latency: an open-loop asyncio SMTP client at half that peak, one connection per message,
  a unique marker in each Subject; ``time.time()`` when the ``250`` to the final "." arrives
  here, matched with ``time.time()`` when the receiver has read the webhook's body (same
  machine, same clock). Reported: p50/p99/max and how many arrived within WINDOW s. The same
  again at LIGHT_RATE/s, where no queue can form, separates pipeline time from queueing.
- throughput: N messages injected over SESSIONS concurrent connections; from the first
  ``250`` to the last webhook received → deliveries/s.
- bare: N POSTs of the same body size (httpx.AsyncClient, CONCURRENCY in flight) to the same
  receiver in the same run → POSTs/s; throughput / bare is the ratio reported. A second bare
  run keeps PER_ENDPOINT in flight, the webhook worker's own cap per URL (httpx's pool costs
  more CPU per request as connections grow, so both are shown).

Rules: each phase starts with the webhook backlog of the previous one drained (or says it
was not); a case that cannot run says why in its cell ("n/a: …") and the others still run;
every process started here is stopped here; results go to a table on stdout and to
bench/results/webhooks.json (``--quick``: webhooks-quick.json).
``python bench/webhooks.py receiver`` is the receiver process itself.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import http.client
import json
import math
import os
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import httpx

try:  # run as a script (python bench/webhooks.py) or imported as bench.webhooks
    from bench import smtp
except ModuleNotFoundError:
    import smtp  # type: ignore[no-redef,import-not-found]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
ADMIN = smtp.ADMIN
SENDER = smtp.SENDER
BARE = "bare-"
SAMPLES = 3
FALLBACK_BODY = 2048
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


@dataclass(frozen=True)
class Options:
    messages: int = 2000
    peak_messages: int = 1000
    latency_messages: int = 500
    light_rate: float = 20.0  # a second latency run, far below any capacity: no queueing
    light_messages: int = 100
    sessions: int = 20
    size: int = 4096
    concurrency: int = 32
    per_endpoint: int = 4  # the webhook worker's default cap of requests in flight per URL
    window: float = 30.0
    timeout: float = 300.0
    base_dir: str | None = None
    output: Path = RESULTS / "webhooks.json"
    quick: bool = False


QUICK = Options(
    messages=200,
    peak_messages=200,
    latency_messages=100,
    light_messages=40,
    timeout=60.0,
    output=RESULTS / "webhooks-quick.json",
    quick=True,
)

NotAvailable = smtp.NotAvailable


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of a non-empty sequence."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


# --- the receiver (a separate process) --------------------------------------------------


def subject_of(body: bytes) -> str:
    try:
        subject = json.loads(body)["data"]["subject"]
    except (ValueError, KeyError, TypeError):
        return ""
    return subject if isinstance(subject, str) else ""


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers are sent to a webhook
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


class ReceiverProtocol:
    """Keep-alive HTTP/1.1: read a request, stamp it, answer 200, write one stdout line."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.samples = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {
                    k.strip().lower().decode(): v.strip().decode("latin-1")
                    for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:])
                    if k
                }
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    body = await read_chunked(reader)
                else:
                    body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.record(time.time(), headers, body)
                writer.write(OK)
                if headers.get("connection", "").lower() == "close":
                    await writer.drain()
                    return
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            return
        finally:
            writer.close()

    def record(self, now: float, headers: dict[str, str], body: bytes) -> None:
        subject = subject_of(body)
        self.out.write(json.dumps([now, subject, len(body)]) + "\n")
        if self.samples < SAMPLES and "webhook-signature" in headers:
            self.samples += 1
            sample = {"headers": headers, "body": base64.b64encode(body).decode()}
            self.out.write(json.dumps({"sample": sample}) + "\n")


async def receiver_serve() -> None:
    protocol = ReceiverProtocol(sys.stdout)
    server = await asyncio.start_server(protocol.serve, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"port {port}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        while not stop.is_set():
            # arrival times are stamped in the lines; batching the flush costs no accuracy
            sys.stdout.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.01)
    sys.stdout.flush()


def receiver_main() -> int:
    asyncio.run(receiver_serve())
    return 0


@dataclass(frozen=True)
class Arrival:
    at: float
    subject: str
    size: int


def group_of(subject: str) -> str:
    """``kind-token-`` of a ``kind-token-n`` marker: the prefix a phase waits on."""
    return subject.rpartition("-")[0] + "-"


@dataclass
class Receiver:
    """The receiver process, seen from here: its arrivals, indexed as they come, and a way
    to wait on them (predicates are O(1) because they run on every arrival)."""

    proc: subprocess.Popen[str] | None = None
    port: int = 0
    first: dict[str, Arrival] = field(default_factory=dict)  # subject → first arrival
    distinct: dict[str, int] = field(default_factory=dict)  # group → distinct subjects
    total: dict[str, int] = field(default_factory=dict)  # group → arrivals
    webhooks: int = 0  # arrivals that are not the baseline's
    arrived: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def __enter__(self) -> Receiver:
        self.proc = subprocess.Popen(
            [smtp.venv_python(), str(Path(__file__).resolve()), "receiver"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self.wait_until(lambda: self.port > 0, 20):
            smtp.stop_process(self.proc)
            raise NotAvailable("the webhook receiver did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            smtp.stop_process(self.proc)

    def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                if line.startswith("port "):
                    self.port = int(line.split()[1])
                elif line.startswith("{"):
                    self.samples.append(json.loads(line)["sample"])
                else:
                    self._add(Arrival(*json.loads(line)))
                self._changed.notify_all()

    def _add(self, arrival: Arrival) -> None:
        group = group_of(arrival.subject)
        self.total[group] = self.total.get(group, 0) + 1
        self.arrived += 1
        self.webhooks += not arrival.subject.startswith(BARE)
        if arrival.subject not in self.first:
            self.first[arrival.subject] = arrival
            self.distinct[group] = self.distinct.get(group, 0) + 1

    def wait_until(self, done: Callable[[], bool], timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(done, timeout)

    def wait_progress(self, done: Callable[[], bool], idle: float, timeout: float) -> bool:
        """Wait for ``done`` up to ``timeout`` s, giving up early after ``idle`` s without
        any arrival."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            seen = self.arrived
            if self.wait_until(done, min(idle, left)):
                return True
            if self.arrived == seen:
                return False
        return False

    def wait_group(
        self, prefix: str, count: int, idle: float, timeout: float
    ) -> dict[str, Arrival]:
        """Wait until ``count`` distinct subjects of ``prefix`` arrived (see wait_progress);
        the first arrival of each."""
        self.wait_progress(lambda: self.distinct.get(prefix, 0) >= count, idle, timeout)
        with self._changed:
            return {s: a for s, a in self.first.items() if s.startswith(prefix)}


def verify_signature(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks v1: one of the signatures is HMAC-SHA256 of ``id.timestamp.body``."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers.get('webhook-id', '')}.{headers.get('webhook-timestamp', '')}.".encode()
    expected = base64.b64encode(hmac.new(key, signed + body, hashlib.sha256).digest()).decode()
    offered = headers.get("webhook-signature", "").split()
    return any(s.startswith("v1,") and hmac.compare_digest(s[3:], expected) for s in offered)


# --- the server -------------------------------------------------------------------------


class Server:
    """``multimail serve`` on free loopback ports, SQLite under ``tmp``, private webhooks on."""

    def __init__(self, tmp: Path) -> None:
        self.http_port = smtp.free_port()
        self.smtp_port = smtp.free_port()
        self.log = tmp / "multimail.log"
        cmd = [*smtp.multimail_command(), "serve", "--db", f"sqlite:///{tmp / 'bench.db'}",
               "--http", f"127.0.0.1:{self.http_port}", "--smtp", f"127.0.0.1:{self.smtp_port}",
               "--domain", smtp.DOMAIN, "--data-dir", str(tmp), "--rate-limit", "0",
               "--dns", "off", "--webhook-allow-private"]  # fmt: skip
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env={**os.environ, "MULTIMAIL_ADMIN_KEY": ADMIN},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def __enter__(self) -> Server:
        try:
            self._wait_healthy(60)
            smtp.wait_banner(self.smtp_port, 10, self.proc)
        except BaseException:
            smtp.stop_process(self.proc)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        smtp.stop_process(self.proc)

    def log_tail(self) -> str:
        lines = self.log.read_text(errors="replace").strip().splitlines()
        return lines[-1][-160:] if lines else ""

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise NotAvailable(f"multimail serve exited: {self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self.request("GET", "/health")[0] == 200:
                    return
            time.sleep(0.1)
        raise NotAvailable("multimail serve never became healthy")

    def request(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=30)
        try:
            headers = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
            conn.request(method, path, None if body is None else json.dumps(body), headers)
            response = conn.getresponse()
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
        finally:
            conn.close()

    def create_mailbox(self, webhook_url: str) -> dict[str, Any]:
        body = {"name": "bench", "oversight_mode": "autonomous", "webhook_url": webhook_url}
        status, box = self.request("POST", "/v1/mailboxes", body)
        if status != 201:
            raise NotAvailable(f"POST /v1/mailboxes → {status}: {box}")
        return dict(box)


# --- the SMTP client --------------------------------------------------------------------


def message(rcpt: str, subject: str, size: int) -> bytes:
    head = (f"From: <{SENDER}>\r\nTo: <{rcpt}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@{smtp.DOMAIN}>\r\n\r\n")  # fmt: skip
    line = b"X" * 78 + b"\r\n"
    return head.encode() + line * max(1, size // len(line)) + b".\r\n"


async def deliver(port: int, rcpt: str, data: bytes) -> float:
    """One SMTP session; ``time.time()`` when the 250 to the end of DATA was read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await smtp._reply(reader)
        await smtp._command(reader, writer, b"EHLO webhooks.bench.test\r\n")
        await smtp._command(reader, writer, f"MAIL FROM:<{SENDER}>\r\n".encode())
        await smtp._command(reader, writer, f"RCPT TO:<{rcpt}>\r\n".encode())
        await smtp._command(reader, writer, b"DATA\r\n")
        writer.write(data)
        await writer.drain()
        reply = await smtp._reply(reader)
        accepted = time.time()
        if not reply.startswith(b"250"):
            raise ConnectionError(f"end of data → {reply.strip()!r}")
        writer.write(b"QUIT\r\n")
        return accepted
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@dataclass
class Sent:
    accepted: dict[str, float] = field(default_factory=dict)  # subject → time of the 250
    errors: int = 0
    seconds: float = 0.0


async def paced(port: int, rcpt: str, subjects: Sequence[str], rate: float, size: int) -> Sent:
    """Open loop: message i starts at i / rate seconds, whatever the earlier ones do."""
    sent = Sent()

    async def one(subject: str) -> None:
        try:
            sent.accepted[subject] = await deliver(port, rcpt, message(rcpt, subject, size))
        except (OSError, ConnectionError):
            sent.errors += 1

    start = time.perf_counter()
    tasks = []
    for n, subject in enumerate(subjects):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(subject)))
    await asyncio.gather(*tasks)
    sent.seconds = time.perf_counter() - start
    return sent


async def flood(port: int, rcpt: str, subjects: Sequence[str], sessions: int, size: int) -> Sent:
    """As fast as ``sessions`` concurrent connections go, one connection per message."""
    sent = Sent()
    queue = list(reversed(subjects))

    async def worker() -> None:
        while queue:
            subject = queue.pop()
            try:
                sent.accepted[subject] = await deliver(port, rcpt, message(rcpt, subject, size))
            except (OSError, ConnectionError):
                sent.errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(sessions)))
    sent.seconds = time.perf_counter() - start
    return sent


# --- the cases --------------------------------------------------------------------------


def attempt(results: dict[str, Any], name: str, case: Callable[[], dict[str, Any]]) -> None:
    """Run one case; record its dict or its "n/a" reason."""
    try:
        results[name] = case()
    except NotAvailable as exc:
        results[name] = {"na": str(exc)}
    except Exception as exc:  # a broken case must not stop the others from running
        results[name] = {"na": f"{type(exc).__name__}: {exc}"}


@dataclass
class Run:
    """One server, its webhook mailbox and the receiver; counts what was accepted so far."""

    opts: Options
    server: Server
    receiver: Receiver
    rcpt: str
    secret: str
    token: str = field(default_factory=lambda: secrets.token_hex(4))
    accepted: int = 0

    def drained(self) -> str:
        """Wait until every accepted message's webhook arrived, as long as they keep coming;
        "" or what is missing."""
        rx, o = self.receiver, self.opts
        if rx.wait_progress(lambda: rx.webhooks >= self.accepted, o.window, o.timeout):
            return ""
        return f"{self.accepted - rx.webhooks} earlier webhooks still pending"

    def smtp_options(self, messages: int) -> smtp.Options:
        o = self.opts
        return smtp.Options(messages=messages, sessions=o.sessions, size=o.size, timeout=o.timeout)

    def peak(self) -> dict[str, Any]:
        warm = 2 * self.opts.sessions
        smtp.smtp_source(self.server.smtp_port, self.smtp_options(warm), self.rcpt, warm)
        self.accepted += warm
        backlog = self.drained()
        if self.receiver.webhooks == 0:
            raise NotAvailable(
                f"no webhook arrived for {warm} messages (server log: {self.server.log_tail()})"
            )
        n = self.opts.peak_messages
        result = smtp.smtp_source(self.server.smtp_port, self.smtp_options(n), self.rcpt, n)
        self.accepted += n
        return {
            **result.as_dict(),
            "note": f"smtp-source -s {self.opts.sessions} -l {self.opts.size}"
            + (f"; {backlog}" if backlog else ""),
        }

    def latency(self, rate: float, count: int, kind: str) -> dict[str, Any]:
        backlog, o = self.drained(), self.opts
        prefix = f"{kind}-{self.token}-"
        subjects = [f"{prefix}{n}" for n in range(count)]
        sent = asyncio.run(paced(self.server.smtp_port, self.rcpt, subjects, rate, o.size))
        self.accepted += len(sent.accepted)
        if not sent.accepted:
            raise NotAvailable(f"all {len(subjects)} SMTP transactions failed")
        left = max(sent.accepted.values()) + o.window - time.time()
        arrived = self.receiver.wait_group(prefix, len(sent.accepted), o.window, max(0.0, left))
        delays = [arrived[s].at - t for s, t in sent.accepted.items() if s in arrived]
        within = [d for d in delays if d <= o.window]
        if not within:
            raise NotAvailable(
                f"no webhook arrived within {o.window:.0f} s of its 250 "
                f"({len(sent.accepted)} accepted; server log: {self.server.log_tail()})"
            )
        return {
            "messages": len(subjects),
            "accepted": len(sent.accepted),
            "smtp_errors": sent.errors,
            "target_rate": round(rate, 1),
            "achieved_rate": round(len(subjects) / sent.seconds, 1),
            "arrived_within_window": len(within),
            "window_s": o.window,
            "p50_ms": ms(statistics.median(within)),
            "p99_ms": ms(percentile(within, 0.99)),
            "min_ms": ms(min(within)),
            "max_ms": ms(max(within)),
            "note": f"{len(within)} of {len(sent.accepted)} within {o.window:.0f} s"
            + (f"; {backlog}" if backlog else ""),
        }

    def throughput(self) -> dict[str, Any]:
        backlog, o = self.drained(), self.opts
        prefix = f"tput-{self.token}-"
        subjects = [f"{prefix}{n}" for n in range(o.messages)]
        sent = asyncio.run(flood(self.server.smtp_port, self.rcpt, subjects, o.sessions, o.size))
        self.accepted += len(sent.accepted)
        if not sent.accepted:
            raise NotAvailable(f"all {len(subjects)} SMTP transactions failed")
        arrived = self.receiver.wait_group(prefix, len(sent.accepted), o.window, o.timeout)
        missing = set(sent.accepted) - arrived.keys()
        if missing:
            raise NotAvailable(
                f"{len(sent.accepted) - len(missing)} of {len(sent.accepted)} webhooks "
                f"arrived (waited until none came for {o.window:.0f} s, at most {o.timeout:.0f} s)"
            )
        first_250, last_250 = min(sent.accepted.values()), max(sent.accepted.values())
        seconds = max(arrived[s].at for s in sent.accepted) - first_250
        n = len(sent.accepted)
        smtp_rate = round(n / (last_250 - first_250), 1) if last_250 > first_250 else None
        return {
            "messages": n,
            "smtp_errors": sent.errors,
            "seconds": round(seconds, 3),
            "per_s": round(n / seconds, 1) if seconds > 0 else 0.0,
            "smtp_per_s": smtp_rate,
            "duplicates": self.receiver.total.get(prefix, 0) - n,
            "body_bytes_median": int(statistics.median(arrived[s].size for s in sent.accepted)),
            "note": f"first 250 → last webhook; 250s alone came at {smtp_rate}/s"
            + (f"; {backlog}" if backlog else ""),
        }

    def signatures(self) -> str:
        samples = list(self.receiver.samples)
        good = sum(
            verify_signature(self.secret, s["headers"], base64.b64decode(s["body"]))
            for s in samples
        )
        return f"{good} of {len(samples)} sampled webhooks verify with the mailbox's secret"


def server_cases(opts: Options, receiver: Receiver, results: dict[str, Any]) -> str | None:
    """Peak, latency and throughput against one server; returns the signature check."""
    names = ("peak_inbound", "webhook_latency", "webhook_latency_light", "webhook_throughput")
    try:
        with smtp.workdir(opts.base_dir, "bench-wh-") as tmp, Server(tmp) as server:
            box = server.create_mailbox(receiver.url)
            secret = box.get("webhook_secret")
            if not box.get("address") or not secret:
                raise NotAvailable(f"mailbox without address or webhook_secret: {box}")
            run = Run(opts, server, receiver, box["address"], secret)
            attempt(results, "peak_inbound", run.peak)
            peak = results["peak_inbound"].get("msgs_per_s")
            if peak:
                half = partial(run.latency, peak / 2, opts.latency_messages, "lat")
                attempt(results, "webhook_latency", half)
            else:
                results["webhook_latency"] = {"na": "no peak inbound rate measured"}
            light = partial(run.latency, opts.light_rate, opts.light_messages, "light")
            attempt(results, "webhook_latency_light", light)
            attempt(results, "webhook_throughput", run.throughput)
            return run.signatures()
    except Exception as exc:  # the server is not there: its cells say why, the baseline runs
        reason = str(exc) if isinstance(exc, NotAvailable) else f"{type(exc).__name__}: {exc}"
        for name in names:
            results.setdefault(name, {"na": reason})
        return None


def bare_body(n: int, token: str, size: int) -> bytes:
    """A webhook-shaped JSON body of exactly ``size`` bytes (or the smallest possible)."""
    payload: dict[str, Any] = {
        "id": f"evt_{token}{n:08d}",
        "type": "message.received",
        "created_at": "2025-01-01T00:00:00Z",
        "account_id": "acct_bench",
        "mailbox_id": "mbx_bench",
        "data": {"subject": f"{BARE}{token}-{n}", "pad": ""},
    }
    short = len(json.dumps(payload).encode())
    payload["data"]["pad"] = "x" * max(0, size - short)
    return json.dumps(payload).encode()


async def post_loop(url: str, count: int, concurrency: int, size: int, token: str) -> Sent:
    sent = Sent()
    queue = list(range(count - 1, -1, -1))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {
        "content-type": "application/json",
        "webhook-id": "msg_bench",
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": "v1," + base64.b64encode(b"\0" * 32).decode(),
    }

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            n = queue.pop()
            try:
                response = await client.post(url, content=bare_body(n, token, size),
                                             headers=headers)  # fmt: skip
                if response.status_code == 200:
                    sent.accepted[str(n)] = time.time()
                else:
                    sent.errors += 1
            except httpx.HTTPError:
                sent.errors += 1

    start = time.perf_counter()
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    sent.seconds = time.perf_counter() - start
    return sent


def bare_posts(opts: Options, receiver: Receiver, size: int, concurrency: int) -> dict[str, Any]:
    token = secrets.token_hex(4)
    sent = asyncio.run(post_loop(receiver.url, opts.messages, concurrency, size, token))
    if not sent.accepted:
        raise NotAvailable(f"all {opts.messages} POSTs failed")
    prefix = f"{BARE}{token}-"
    got = len(receiver.wait_group(prefix, len(sent.accepted), 10, 10))
    return {
        "messages": len(sent.accepted),
        "errors": sent.errors,
        "seconds": round(sent.seconds, 3),
        "per_s": round(len(sent.accepted) / sent.seconds, 1),
        "body_bytes": size,
        "note": f"httpx.AsyncClient, {concurrency} in flight, {size} B bodies; receiver got {got}",
    }


def ratio(results: dict[str, Any], mine: str, base: str) -> float | None:
    a, b = results.get(mine, {}), results.get(base, {})
    return round(a["per_s"] / b["per_s"], 3) if "per_s" in a and b.get("per_s") else None


def run(opts: Options) -> dict[str, Any]:
    """Run every case; return the report written to JSON."""
    results: dict[str, Any] = {}
    signatures = None
    bare, bare_low = "bare_posts", f"bare_posts_{opts.per_endpoint}"
    try:
        with Receiver() as receiver:
            signatures = server_cases(opts, receiver, results)
            size = results.get("webhook_throughput", {}).get("body_bytes_median", FALLBACK_BODY)
            for name, concurrency in ((bare, opts.concurrency), (bare_low, opts.per_endpoint)):
                attempt(results, name, partial(bare_posts, opts, receiver, size, concurrency))
    except NotAvailable as exc:
        cases = ("peak_inbound", "webhook_latency", "webhook_latency_light", "webhook_throughput")
        for name in (*cases, bare, bare_low):
            results.setdefault(name, {"na": str(exc)})
    return {
        "quick": opts.quick,
        "messages": opts.messages,
        "peak_messages": opts.peak_messages,
        "latency_messages": opts.latency_messages,
        "sessions": opts.sessions,
        "size": opts.size,
        "concurrency": opts.concurrency,
        "per_endpoint": opts.per_endpoint,
        "latency_rate_from": "half of peak_inbound",
        "light_rate": opts.light_rate,
        "light_messages": opts.light_messages,
        "cpus": os.cpu_count(),
        "signatures": signatures,
        "results": results,
        "ratios": {
            f"webhook_throughput_vs_{bare}": ratio(results, "webhook_throughput", bare),
            f"webhook_throughput_vs_{bare_low}": ratio(results, "webhook_throughput", bare_low),
        },
    }


def print_table(report: dict[str, Any]) -> None:
    print(f"{'case':<23}{'msgs':>7}{'per s':>10}{'p50 ms':>9}{'p99 ms':>9}  note")
    for name, r in report["results"].items():
        if "na" in r:
            print(f"{name:<23}{'':>7}{'':>10}{'':>9}{'':>9}  n/a: {r['na']}")
            continue
        rate = r.get("per_s", r.get("msgs_per_s", r.get("achieved_rate", "")))
        note = r.get("note", "")
        if "target_rate" in r:
            note = f"paced at {r['target_rate']}/s; {note}"
        print(f"{name:<23}{r['messages']:>7}{rate:>10}{r.get('p50_ms', ''):>9}"
              f"{r.get('p99_ms', ''):>9}  {note}")  # fmt: skip
    for name, value in report["ratios"].items():
        print(f"{name:<36}{value if value is not None else 'n/a'}")
    if report["signatures"]:
        print(f"signatures: {report['signatures']}")


def parse_options(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(prog="bench/webhooks.py", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (N=200)")
    parser.add_argument("--messages", type=int, help="throughput messages and POSTs (2000)")
    parser.add_argument("--peak-messages", type=int, help="smtp-source peak run (1000)")
    parser.add_argument("--latency-messages", type=int, help="paced messages (500)")
    parser.add_argument("--sessions", type=int, help="concurrent SMTP sessions (20)")
    parser.add_argument("--size", type=int, help="message body bytes (4096)")
    parser.add_argument("--concurrency", type=int, help="baseline POSTs in flight (32)")
    parser.add_argument("--per-endpoint", type=int, help="second baseline's POSTs in flight (4)")
    parser.add_argument("--base-dir", help="where the temporary database lives")
    parser.add_argument("--output", type=Path, help="JSON path (bench/results/webhooks.json)")
    args = parser.parse_args(list(argv))
    overrides = {
        "messages": args.messages,
        "peak_messages": args.peak_messages,
        "latency_messages": args.latency_messages,
        "sessions": args.sessions,
        "size": args.size,
        "concurrency": args.concurrency,
        "per_endpoint": args.per_endpoint,
        "base_dir": args.base_dir,
        "output": args.output,
    }
    opts = QUICK if args.quick else Options()
    return replace(opts, **{k: v for k, v in overrides.items() if v is not None})


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["receiver"]:
        return receiver_main()
    opts = parse_options(argv)
    report = run(opts)
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    opts.output.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"written to {opts.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
