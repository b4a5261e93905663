"""SMTP benchmarks (PRODUCT.md §12): MultiMail against baselines started in the same run.

Every server runs on loopback as its own process(es), started and stopped here:

- inbound: Postfix's ``smtp-source`` (``-s SESSIONS -m N -l SIZE``, one connection per
  message) against a private Postfix in ``accept`` mode (durable queue, then discard), a
  bare aiosmtpd sink (answers ``250 OK`` and does nothing) and ``multimail serve``.
  Reported: messages/s (wall time of smtp-source) and MultiMail / Postfix (target ≥ 1.0).
- latency: a paced asyncio client (one connection per message, open loop at half of
  MultiMail's measured peak) times the final ``.`` to the ``250``; the server answers only
  after commit, so this is end-of-DATA → stored. MultiMail and Postfix accept mode, p50/p99.
- outbound: N ``POST /v1/mailboxes/{id}/send`` to an external recipient with
  ``--relay smtp://127.0.0.1:SINK``, timed until the sink holds all N (the sink also counts
  how many carry a DKIM-Signature); against Postfix in ``relay`` mode fed the same N by
  smtp-source. Reported: messages/s and MultiMail / Postfix (target ≥ 1.0).

Rules: a case that cannot run says why in its cell ("n/a: …") and the others still run;
every process started here is stopped here; results go to a table on stdout and to
bench/results/smtp.json (``--quick``: a small smoke run, written to smtp-quick.json).
``python bench/smtp.py sink PORT [--count]`` is the sink process itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

try:  # run as a script (python bench/smtp.py) or imported as bench.smtp
    from bench.postfix import PostfixSpec, PostfixUnavailable, PrivatePostfix
except ModuleNotFoundError:
    from postfix import PostfixSpec, PostfixUnavailable, PrivatePostfix  # type: ignore[no-redef,import-not-found]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SMTP_SOURCE = "/usr/sbin/smtp-source"
ADMIN = "mm_live_bench_admin_key_0000000000000000"
DOMAIN = "bench.test"
SENDER = f"sender@{DOMAIN}"
EXTERNAL = "someone@example.net"
TARGET_RATIO = 1.0


@dataclass(frozen=True)
class Options:
    messages: int = 2000
    sessions: int = 20
    size: int = 4096
    latency_messages: int = 500
    outbound_messages: int = 500
    timeout: float = 300.0
    repeat: int = 3
    base_dir: str | None = None
    output: Path = RESULTS / "smtp.json"
    quick: bool = False


QUICK = Options(
    messages=200,
    latency_messages=100,
    outbound_messages=100,
    timeout=60.0,
    repeat=1,
    output=RESULTS / "smtp-quick.json",
    quick=True,
)


class NotAvailable(Exception):
    """A case cannot run here; the message goes into its table cell as "n/a: …"."""


@dataclass(frozen=True)
class Throughput:
    messages: int
    seconds: float

    @property
    def per_second(self) -> float:
        return round(self.messages / self.seconds, 1) if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 3), "msgs_per_s": self.per_second}


@dataclass(frozen=True)
class Latency:
    messages: int
    errors: int
    target_rate: float
    achieved_rate: float
    p50_ms: float
    p99_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def venv_python() -> str:
    candidate = ROOT / ".venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def wait_banner(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Return once 127.0.0.1:port answers with a 220 greeting, else raise NotAvailable."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise NotAvailable(f"process exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 2) as s:
            if s.recv(512).startswith(b"220"):
                s.sendall(b"QUIT\r\n")
                return
        time.sleep(0.05)
    raise NotAvailable(f"nothing answers SMTP on 127.0.0.1:{port}")


def stop_process(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the sink (a separate process) ------------------------------------------------------


class SinkHandler:
    """aiosmtpd handler: ``250 OK`` after nothing, or after one stdout line per message."""

    def __init__(self, *, count: bool) -> None:
        self.count = count
        self.received = 0
        self.signed = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.count:
            self.received += 1
            head = bytes(envelope.content).split(b"\r\n\r\n", 1)[0].lower()
            self.signed += head.startswith(b"dkim-signature:") or b"\ndkim-signature:" in head
            sys.stdout.write(f"{self.received} {self.signed}\n")
            sys.stdout.flush()
        return "250 OK"


def sink_main(port: int, *, count: bool) -> int:
    from aiosmtpd.controller import Controller

    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # the server thread inherits the mask
    controller = Controller(SinkHandler(count=count), hostname="127.0.0.1", port=port)
    controller.start()
    signal.sigwait(stop)
    controller.stop()
    return 0


class Sink:
    """The sink process; with ``count`` it reports each message and when ``target`` arrived."""

    def __init__(self, *, count: bool, target: int = 0) -> None:
        self.port = free_port()
        self.target = target
        self.received = 0
        self.signed = 0
        self.reached_at: float | None = None
        self._done = threading.Event()
        args = [venv_python(), str(Path(__file__).resolve()), "sink", str(self.port)]
        self.proc = subprocess.Popen(
            [*args, "--count"] if count else args,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            received, signed = (int(x) for x in line.split())
            self.received, self.signed = received, signed
            if self.target and received >= self.target and self.reached_at is None:
                self.reached_at = time.monotonic()
                self._done.set()

    def wait(self, timeout: float) -> float | None:
        """The monotonic time the target count arrived, or None after ``timeout``."""
        self._done.wait(timeout)
        return self.reached_at

    def __enter__(self) -> Sink:
        try:
            wait_banner(self.port, 20, self.proc)
        except BaseException:
            stop_process(self.proc)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        stop_process(self.proc)


# --- clients ----------------------------------------------------------------------------


def smtp_source(port: int, opts: Options, rcpt: str, messages: int) -> Throughput:
    """Run smtp-source against 127.0.0.1:port; wall time of the whole run."""
    if not Path(SMTP_SOURCE).exists():
        raise NotAvailable(f"{SMTP_SOURCE} not installed")
    argv = [SMTP_SOURCE, "-s", str(opts.sessions), "-m", str(messages), "-l", str(opts.size),
            "-f", SENDER, "-t", rcpt, f"127.0.0.1:{port}"]  # fmt: skip
    t0 = time.perf_counter()
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=opts.timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise NotAvailable(
            f"smtp-source did not finish {messages} messages within {opts.timeout:.0f} s"
        ) from None
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise NotAvailable(f"smtp-source failed: {done.stderr.strip()[-200:]}")
    return Throughput(messages, elapsed)


def message_body(size: int, rcpt: str, n: int) -> bytes:
    head = (f"From: <{SENDER}>\r\nTo: <{rcpt}>\r\nSubject: latency {n}\r\n"
            f"Message-ID: <latency.{n}.{time.time_ns()}@{DOMAIN}>\r\n\r\n")  # fmt: skip
    line = b"X" * 78 + b"\r\n"
    body = line * max(1, size // len(line))
    return head.encode() + body


async def _reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        if line[3:4] != b"-":
            return line


async def _command(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cmd: bytes) -> None:
    writer.write(cmd)
    await writer.drain()
    reply = await _reply(reader)
    if reply[:1] not in (b"2", b"3"):
        raise ConnectionError(f"{cmd.strip()!r} → {reply.strip()!r}")


async def timed_transaction(port: int, rcpt: str, body: bytes) -> float:
    """One SMTP session; seconds from writing the final "." to reading the 250."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await _reply(reader)
        await _command(reader, writer, b"EHLO latency.bench.test\r\n")
        await _command(reader, writer, f"MAIL FROM:<{SENDER}>\r\n".encode())
        await _command(reader, writer, f"RCPT TO:<{rcpt}>\r\n".encode())
        await _command(reader, writer, b"DATA\r\n")
        writer.write(body)
        await writer.drain()
        t0 = time.perf_counter()
        writer.write(b".\r\n")
        await writer.drain()
        reply = await _reply(reader)
        elapsed = time.perf_counter() - t0
        if not reply.startswith(b"250"):
            raise ConnectionError(f"end of data → {reply.strip()!r}")
        writer.write(b"QUIT\r\n")
        return elapsed
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def paced_latency(port: int, rcpt: str, rate: float, count: int, size: int) -> Latency:
    """Open loop: transaction i starts at i / rate seconds, whatever the earlier ones do."""
    times: list[float] = []
    errors = 0

    async def one(n: int) -> None:
        nonlocal errors
        try:
            times.append(await timed_transaction(port, rcpt, message_body(size, rcpt, n)))
        except (OSError, ConnectionError):
            errors += 1

    start = time.perf_counter()
    tasks = []
    for n in range(count):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    if not times:
        raise NotAvailable(f"all {count} transactions failed")
    times.sort()
    return Latency(
        messages=len(times),
        errors=errors,
        target_rate=round(rate, 1),
        achieved_rate=round(count / elapsed, 1),
        p50_ms=round(statistics.median(times) * 1000, 2),
        p99_ms=round(times[max(0, int(len(times) * 0.99) - 1)] * 1000, 2),
    )


# --- MultiMail --------------------------------------------------------------------------


def multimail_command() -> list[str]:
    exe = ROOT / ".venv" / "bin" / "multimail"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "multimail.cli"]


class MultiMail:
    """``multimail serve`` on free loopback ports with SQLite under ``tmp``."""

    def __init__(self, tmp: Path, *, relay_port: int | None = None) -> None:
        self.tmp = tmp
        self.http_port = free_port()
        self.smtp_port = free_port()
        self.log = tmp / "multimail.log"
        cmd = [*multimail_command(), "serve", "--db", f"sqlite:///{tmp / 'bench.db'}",
                "--http", f"127.0.0.1:{self.http_port}", "--smtp", f"127.0.0.1:{self.smtp_port}",
                "--domain", DOMAIN, "--data-dir", str(tmp), "--rate-limit", "0"]  # fmt: skip
        if relay_port is not None:
            cmd += ["--relay", f"smtp://127.0.0.1:{relay_port}"]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env={**os.environ, "MULTIMAIL_ADMIN_KEY": ADMIN},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def __enter__(self) -> MultiMail:
        try:
            self._wait_healthy(60)
        except BaseException:
            stop_process(self.proc)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        stop_process(self.proc)

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

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        conn: http.client.HTTPConnection | None = None,
    ) -> tuple[int, Any]:
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=30)
        try:
            headers = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
        finally:
            if own:
                conn.close()

    def create_mailbox(self, name: str) -> dict[str, Any]:
        status, box = self.request(
            "POST", "/v1/mailboxes", {"name": name, "oversight_mode": "autonomous"}
        )
        if status != 201:
            raise NotAvailable(f"POST /v1/mailboxes → {status}: {box}")
        return dict(box)

    def count_inbound(self, mailbox_id: str) -> int:
        total, cursor = 0, None
        while True:
            query = f"direction=inbound&limit=100{f'&cursor={cursor}' if cursor else ''}"
            status, page = self.request("GET", f"/v1/mailboxes/{mailbox_id}/emails?{query}")
            if status != 200:
                return total
            total += len(page["emails"])
            cursor = page.get("next_cursor")
            if not cursor:
                return total

    def smtp_banner(self) -> None:
        try:
            wait_banner(self.smtp_port, 5, self.proc)
        except NotAvailable:
            raise NotAvailable(
                f"MultiMail does not accept SMTP on --smtp 127.0.0.1:{self.smtp_port}"
            ) from None

    def post_sends(self, mailbox_id: str, count: int, size: int, concurrency: int) -> int:
        """POST ``count`` sends from ``concurrency`` keep-alive connections; returns failures."""
        body_text = ("x" * 76 + "\n") * max(1, size // 77)
        per_worker = [range(w, count, concurrency) for w in range(concurrency)]

        def worker(numbers: range) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=60)
            failed = 0
            try:
                for n in numbers:
                    body = {"to": [EXTERNAL], "subject": f"bench {n}", "body_text": body_text}
                    status, _ = self.request("POST", f"/v1/mailboxes/{mailbox_id}/send", body, conn)
                    failed += status >= 300
            finally:
                conn.close()
            return failed

        with ThreadPoolExecutor(concurrency) as pool:
            return sum(pool.map(worker, per_worker))


# --- the cases --------------------------------------------------------------------------


@contextlib.contextmanager
def workdir(base_dir: str | None, prefix: str) -> Iterator[Path]:
    """A fresh directory under ``base_dir`` (None: the system's temp), removed after."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base_dir))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def attempt(results: dict[str, Any], name: str, case: Any) -> Any:
    """Run one case; record its dict or its "n/a" reason. Returns the case's value or None."""
    try:
        value = case()
    except (NotAvailable, PostfixUnavailable) as exc:
        results[name] = {"na": str(exc)}
        return None
    except Exception as exc:  # a broken case must not stop the baselines from running
        results[name] = {"na": f"{type(exc).__name__}: {exc}"}
        return None
    results[name] = value.as_dict() if hasattr(value, "as_dict") else value
    return value


def warmed_up(port: int, opts: Options, rcpt: str) -> int:
    """Untimed messages first, so process pools and caches are warm; returns how many."""
    count = 2 * opts.sessions
    smtp_source(port, opts, rcpt, count)
    return count


def median_of_runs(port: int, opts: Options, rcpt: str) -> dict[str, Any]:
    """``opts.repeat`` timed smtp-source runs on one warm server; the median run, and all."""
    runs = sorted(
        (smtp_source(port, opts, rcpt, opts.messages) for _ in range(opts.repeat)),
        key=lambda run: run.per_second,
    )
    result = runs[(len(runs) - 1) // 2].as_dict()
    result["runs_msgs_per_s"] = [run.per_second for run in runs]
    return result


def inbound_postfix(opts: Options) -> dict[str, Any]:
    port, rcpt = free_port(), f"rcpt@{DOMAIN}"
    with PrivatePostfix(PostfixSpec("accept", port, DOMAIN), base_dir=opts.base_dir):
        warmed_up(port, opts, rcpt)
        return median_of_runs(port, opts, rcpt)


def inbound_sink(opts: Options) -> dict[str, Any]:
    with Sink(count=False) as sink:
        warmed_up(sink.port, opts, f"rcpt@{DOMAIN}")
        return median_of_runs(sink.port, opts, f"rcpt@{DOMAIN}")


def inbound_multimail(opts: Options) -> dict[str, Any]:
    with workdir(opts.base_dir, "bench-mm-") as tmp, MultiMail(tmp) as mm:
        mm.smtp_banner()
        box = mm.create_mailbox("bench")
        warm = warmed_up(mm.smtp_port, opts, box["address"])
        result = median_of_runs(mm.smtp_port, opts, box["address"])
        sent = warm + opts.repeat * opts.messages
        result["note"] = f"stored {mm.count_inbound(box['mailbox_id'])} of {sent} sent"
        result["address"] = box["address"]
        return result


def latency_postfix(opts: Options, rate: float) -> Latency:
    port, rcpt = free_port(), f"rcpt@{DOMAIN}"
    with PrivatePostfix(PostfixSpec("accept", port, DOMAIN), base_dir=opts.base_dir):
        warmed_up(port, opts, rcpt)
        return asyncio.run(paced_latency(port, rcpt, rate, opts.latency_messages, opts.size))


def latency_multimail(opts: Options, rate: float) -> Latency:
    with workdir(opts.base_dir, "bench-mm-") as tmp, MultiMail(tmp) as mm:
        mm.smtp_banner()
        rcpt = mm.create_mailbox("bench")["address"]
        warmed_up(mm.smtp_port, opts, rcpt)
        return asyncio.run(
            paced_latency(mm.smtp_port, rcpt, rate, opts.latency_messages, opts.size)
        )


def _relayed(sink: Sink, t0: float, expected: int, opts: Options, who: str) -> dict[str, Any]:
    reached = sink.wait(opts.timeout)
    if reached is None:
        hint = " (does it relay yet?)" if sink.received == 0 else ""
        raise NotAvailable(
            f"{who}: sink got {sink.received} of {expected} within {opts.timeout:.0f} s{hint}"
        )
    result = Throughput(expected, reached - t0).as_dict()
    result["dkim_signed"] = sink.signed
    return result


def outbound_postfix(opts: Options) -> dict[str, Any]:
    n = opts.outbound_messages
    with Sink(count=True, target=n) as sink:
        port = free_port()
        spec = PostfixSpec("relay", port, DOMAIN, sink_port=sink.port)
        with PrivatePostfix(spec, base_dir=opts.base_dir):
            t0 = time.monotonic()
            smtp_source(port, opts, EXTERNAL, n)
            return _relayed(sink, t0, n, opts, "Postfix relay")


def outbound_multimail(opts: Options) -> dict[str, Any]:
    n = opts.outbound_messages
    with (
        Sink(count=True, target=n) as sink,
        workdir(opts.base_dir, "bench-mm-") as tmp,
        MultiMail(tmp, relay_port=sink.port) as mm,
    ):
        box = mm.create_mailbox("outbound")
        t0 = time.monotonic()
        failed = mm.post_sends(box["mailbox_id"], n, opts.size, opts.sessions)
        if failed:
            raise NotAvailable(f"{failed} of {n} POST /send failed")
        result = _relayed(sink, t0, n, opts, "MultiMail relay")
        result["note"] = f"{result['dkim_signed']} of {n} DKIM-signed"
        return result


def ratio(results: dict[str, Any], mine: str, base: str) -> float | None:
    a, b = results.get(mine, {}), results.get(base, {})
    if "msgs_per_s" in a and b.get("msgs_per_s"):
        return round(float(a["msgs_per_s"]) / float(b["msgs_per_s"]), 3)
    return None


def run(opts: Options) -> dict[str, Any]:
    """Run every case; return the report written to JSON (results, ratios, targets)."""
    results: dict[str, Any] = {}
    attempt(results, "inbound_postfix", lambda: inbound_postfix(opts))
    attempt(results, "inbound_sink", lambda: inbound_sink(opts))
    attempt(results, "inbound_multimail", lambda: inbound_multimail(opts))
    peak_from = "inbound_multimail" if "msgs_per_s" in results["inbound_multimail"] else None
    peak_from = peak_from or ("inbound_postfix" if "msgs_per_s" in results["inbound_postfix"]
                              else None)  # fmt: skip
    if peak_from:
        rate = results[peak_from]["msgs_per_s"] / 2
        attempt(results, "latency_multimail", lambda: latency_multimail(opts, rate))
        attempt(results, "latency_postfix", lambda: latency_postfix(opts, rate))
    else:
        results["latency_multimail"] = results["latency_postfix"] = {"na": "no peak measured"}
    attempt(results, "outbound_postfix", lambda: outbound_postfix(opts))
    attempt(results, "outbound_multimail", lambda: outbound_multimail(opts))
    return {
        "quick": opts.quick,
        "messages": opts.messages,
        "sessions": opts.sessions,
        "repeat": opts.repeat,
        "size": opts.size,
        "latency_messages": opts.latency_messages,
        "latency_rate_from": f"half of {peak_from}" if peak_from else None,
        "outbound_messages": opts.outbound_messages,
        "cpus": os.cpu_count(),
        "work_dir": opts.base_dir or tempfile.gettempdir(),
        "results": results,
        "ratios": {
            "inbound_vs_postfix": ratio(results, "inbound_multimail", "inbound_postfix"),
            "inbound_vs_sink": ratio(results, "inbound_multimail", "inbound_sink"),
            "outbound_vs_postfix": ratio(results, "outbound_multimail", "outbound_postfix"),
        },
        "targets": {
            "inbound_vs_postfix": f">= {TARGET_RATIO}",
            "outbound_vs_postfix": f">= {TARGET_RATIO}",
        },
    }


def print_table(report: dict[str, Any]) -> None:
    print(f"{'case':<20}{'msgs':>7}{'msgs/s':>10}{'p50 ms':>9}{'p99 ms':>9}  note")
    for name, r in report["results"].items():
        if "na" in r:
            print(f"{name:<20}{'':>7}{'':>10}{'':>9}{'':>9}  n/a: {r['na']}")
            continue
        rate = r.get("msgs_per_s", r.get("achieved_rate", ""))
        note = r.get("note", "")
        if "target_rate" in r:
            note = f"paced at {r['target_rate']}/s, {r['errors']} errors"
        print(f"{name:<20}{r['messages']:>7}{rate:>10}{r.get('p50_ms', ''):>9}"
              f"{r.get('p99_ms', ''):>9}  {note}")  # fmt: skip
    for name, value in report["ratios"].items():
        target = report["targets"].get(name, "")
        print(f"{name:<20}{'':>7}{value if value is not None else 'n/a':>10}  {target}")


def parse_options(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(prog="bench/smtp.py", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (N=200)")
    parser.add_argument("--messages", type=int, help="inbound messages (default 2000)")
    parser.add_argument("--sessions", type=int, default=20, help="concurrent SMTP sessions")
    parser.add_argument("--size", type=int, default=4096, help="message body bytes")
    parser.add_argument("--latency-messages", type=int, help="paced messages (default 500)")
    parser.add_argument("--outbound-messages", type=int, help="relayed messages (default 500)")
    parser.add_argument("--repeat", type=int, help="timed inbound runs, median (default 3)")
    parser.add_argument("--base-dir", help="where the temporary queues and databases live")
    parser.add_argument("--output", type=Path, help="JSON path (default bench/results/smtp.json)")
    args = parser.parse_args(list(argv))
    opts = replace(
        QUICK if args.quick else Options(),
        sessions=args.sessions,
        size=args.size,
        base_dir=args.base_dir,
    )
    overrides = {
        "messages": args.messages,
        "latency_messages": args.latency_messages,
        "outbound_messages": args.outbound_messages,
        "repeat": args.repeat,
        "output": args.output,
    }
    return replace(opts, **{k: v for k, v in overrides.items() if v is not None})


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sink"]:
        return sink_main(int(argv[1]), count="--count" in argv)
    opts = parse_options(argv)
    report = run(opts)
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    opts.output.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"written to {opts.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
