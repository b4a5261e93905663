"""MCP benchmark: what a tool call costs on top of the HTTP API it wraps.

One ``multimail serve`` process is started here; the same operation, reading one mailbox
(``get_mailbox`` / ``GET /v1/mailboxes/{id}``) and one inbox page (``check_inbox`` /
``GET /v1/mailboxes/{id}/emails``, 20 emails, their text fenced by the tool), runs
CALLS times sequentially and then with CONCURRENCY in flight:

- api: httpx straight to the route (the baseline, started in the same run);
- mcp-http: the SDK's ClientSession over Streamable HTTP at /mcp (one session, stateless
  POSTs; each tool call runs the route in-process with the same key);
- mcp-stdio: the SDK's ClientSession over stdio to ``multimail mcp`` (its own process,
  calling the API over HTTP), sequential only (one pipe).

Prints a table (calls/s, p50, p99 per case, and the ratio to the API) and writes
bench/results/mcp_calls.json. PRODUCT.md §12 sets no MCP target; the figures say what the tool
layer adds.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import httpx2
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.api import ADMIN, start_multimail

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CALLS = int(os.environ.get("BENCH_MCP_CALLS", "300"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "8"))

Call = Callable[[], Awaitable[Any]]


async def measure(call: Call, calls: int, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    queue = iter(range(calls))

    async def worker() -> None:
        for _ in queue:
            started = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - started) * 1000)

    for _ in range(min(20, calls)):  # warm-up, not counted
        await call()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "calls_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 2),
    }


def seed(url: str) -> str:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        box = http.post("/v1/mailboxes", json={"name": "bench-mcp", "oversight_mode": "autonomous"})
        box.raise_for_status()
        mailbox_id = str(box.json()["mailbox_id"])
        for i in range(20):
            http.post(
                f"/v1/mailboxes/{mailbox_id}/send",
                json={"to": [box.json()["address"]], "subject": f"m{i}", "body_text": "x" * 500},
            ).raise_for_status()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # local delivery is asynchronous
            page = http.get(f"/v1/mailboxes/{mailbox_id}/emails", params={"limit": 100}).json()
            if len(page["emails"]) >= 40:
                break
            time.sleep(0.1)
    return mailbox_id


def tool(session: ClientSession, name: str, arguments: dict[str, Any]) -> Call:
    async def call() -> None:
        result = await session.call_tool(name, arguments)
        if result.is_error:
            raise SystemExit(f"{name} failed: {result.content}")

    return call


async def run_api(url: str, mailbox_id: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=url, headers=headers) as http:

        def get(path: str, **params: Any) -> Call:
            async def call() -> None:
                (await http.get(path, params=params)).raise_for_status()

            return call

        mailbox = get(f"/v1/mailboxes/{mailbox_id}")
        inbox = get(f"/v1/mailboxes/{mailbox_id}/emails", limit=20)
        return {
            "get_mailbox": await measure(mailbox, CALLS, 1),
            "check_inbox": await measure(inbox, CALLS, 1),
            "get_mailbox_concurrent": await measure(mailbox, CALLS, CONCURRENCY),
        }


async def run_http(url: str, mailbox_id: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    timeout = httpx2.Timeout(30, read=120)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout) as http,
        streamable_http_client(f"{url}/mcp", http_client=http) as (read, write, *_),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        mailbox = tool(session, "get_mailbox", {"mailbox_id": mailbox_id})
        inbox = tool(session, "check_inbox", {"mailbox_id": mailbox_id, "limit": 20})
        return {
            "get_mailbox": await measure(mailbox, CALLS, 1),
            "check_inbox": await measure(inbox, CALLS, 1),
            "get_mailbox_concurrent": await measure(mailbox, CALLS, CONCURRENCY),
        }


async def run_stdio(url: str, mailbox_id: str) -> dict[str, Any]:
    env = {**os.environ, "MULTIMAIL_API_URL": url, "MULTIMAIL_API_KEY": ADMIN}
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "multimail.cli", "mcp"], env=env
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        mailbox = tool(session, "get_mailbox", {"mailbox_id": mailbox_id})
        inbox = tool(session, "check_inbox", {"mailbox_id": mailbox_id, "limit": 20})
        return {
            "get_mailbox": await measure(mailbox, CALLS, 1),
            "check_inbox": await measure(inbox, CALLS, 1),
        }


def main() -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        url, server = start_multimail(Path(tmp))
        try:
            mailbox_id = seed(url)
            results = {
                "api": asyncio.run(run_api(url, mailbox_id)),
                "mcp-http": asyncio.run(run_http(url, mailbox_id)),
                "mcp-stdio": asyncio.run(run_stdio(url, mailbox_id)),
            }
        finally:
            server.terminate()
            server.wait(timeout=20)
    print(f"{'transport':<11}{'case':<24}{'calls/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'vs api':>8}")
    for transport, cases in results.items():
        for case, r in cases.items():
            ratio = round(r["calls_per_s"] / results["api"][case]["calls_per_s"], 2)
            r["ratio_to_api"] = ratio
            print(
                f"{transport:<11}{case:<24}{r['calls_per_s']:>9}{r['p50_ms']:>9}"
                f"{r['p99_ms']:>9}{ratio:>8}"
            )
    report = {"calls": CALLS, "concurrency": CONCURRENCY, "cpus": os.cpu_count(), **results}
    (RESULTS / "mcp_calls.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {RESULTS / 'mcp_calls.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
