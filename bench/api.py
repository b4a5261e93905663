"""HTTP API benchmark: POST /v1/mailboxes and check_inbox against a bare FastAPI endpoint.

Both servers are started here, in this run, as single uvicorn processes on loopback; the
same async load (CONCURRENCY requests in flight) hits each for DURATION seconds. Prints a
table and writes bench/results/api.json. PRODUCT.md §12: create ≥ 0.6× the bare endpoint,
p99 within 3×.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DURATION = float(os.environ.get("BENCH_SECONDS", "8"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "16"))
ADMIN = "mm_live_bench_admin_key_0000000000000000"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} never became healthy")


def start_multimail(tmp: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "multimail.cli", "serve", "--db", f"sqlite:///{tmp / 'mm.db'}",
         "--http", f"127.0.0.1:{port}", "--data-dir", str(tmp)],
        env={**os.environ, "MULTIMAIL_ADMIN_KEY": ADMIN, "MULTIMAIL_RATE_LIMIT": "0"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc)
    return url, proc


def start_bare() -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc)
    return url, proc


async def load(make_request, duration: float, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        counter = 0

        async def worker() -> None:
            nonlocal errors, counter
            while time.perf_counter() < stop:
                counter += 1
                t0 = time.perf_counter()
                r = await make_request(client, counter)
                latencies.append(time.perf_counter() - t0)
                if r.status_code >= 300:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
    }


def create_request(url: str, tag: str):
    headers = {"Authorization": f"Bearer {ADMIN}"}

    async def request(client: httpx.AsyncClient, n: int) -> httpx.Response:
        body = {
            "name": f"agent-{tag}-{n}",
            "display_name": "Bench Agent",
            "oversight_mode": "monitored",
        }
        return await client.post(f"{url}/v1/mailboxes", json=body, headers=headers)

    return request


def inbox_request(url: str, mailbox_id: str):
    headers = {"Authorization": f"Bearer {ADMIN}"}

    async def request(client: httpx.AsyncClient, n: int) -> httpx.Response:
        return await client.get(
            f"{url}/v1/mailboxes/{mailbox_id}/emails?filter=unread&limit=20", headers=headers
        )

    return request


def seed_inbox(url: str) -> str:
    h = {"Authorization": f"Bearer {ADMIN}"}
    box = httpx.post(
        f"{url}/v1/mailboxes",
        json={"name": "inbox-bench", "oversight_mode": "autonomous"},
        headers=h,
    ).json()
    sender = httpx.post(
        f"{url}/v1/mailboxes",
        json={"name": "sender-bench", "oversight_mode": "autonomous"},
        headers=h,
    ).json()
    for i in range(50):
        httpx.post(
            f"{url}/v1/mailboxes/{sender['mailbox_id']}/send",
            json={"to": [box["address"]], "subject": f"message {i}", "body_text": "x" * 400},
            headers=h,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = httpx.get(
            f"{url}/v1/mailboxes/{box['mailbox_id']}/emails?limit=100", headers=h
        ).json()
        if len(got["emails"]) >= 50:
            break
        time.sleep(0.2)
    return str(box["mailbox_id"])


def main() -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        mm_url, mm = start_multimail(Path(tmp))
        bare_url, bare = start_bare()
        try:
            results = {
                "create_bare": asyncio.run(
                    load(create_request(bare_url, "b"), DURATION, CONCURRENCY)
                ),
                "create_multimail": asyncio.run(
                    load(create_request(mm_url, "m"), DURATION, CONCURRENCY)
                ),
            }
            mailbox_id = seed_inbox(mm_url)
            results["inbox_bare"] = asyncio.run(
                load(inbox_request(bare_url, mailbox_id), DURATION, CONCURRENCY)
            )
            results["inbox_multimail"] = asyncio.run(
                load(inbox_request(mm_url, mailbox_id), DURATION, CONCURRENCY)
            )
        finally:
            for p in (mm, bare):
                p.terminate()
                p.wait(timeout=20)
    ratios = {
        "create_rps_ratio": round(
            results["create_multimail"]["rps"] / results["create_bare"]["rps"], 3
        ),
        "create_p99_ratio": round(
            results["create_multimail"]["p99_ms"] / results["create_bare"]["p99_ms"], 3
        ),
        "inbox_rps_ratio": round(
            results["inbox_multimail"]["rps"] / results["inbox_bare"]["rps"], 3
        ),
    }
    report = {
        "duration_s": DURATION,
        "concurrency": CONCURRENCY,
        "cpus": os.cpu_count(),
        "results": results,
        "ratios": ratios,
        "targets": {"create_rps_ratio": ">= 0.6", "create_p99_ratio": "<= 3.0"},
    }
    (RESULTS / "api.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'case':<18}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for name, r in results.items():
        print(f"{name:<18}{r['rps']:>10}{r['p50_ms']:>10}{r['p99_ms']:>10}{r['errors']:>8}")
    for name, value in ratios.items():
        print(f"{name:<18}{value:>10}")
    print(f"written to {RESULTS / 'api.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
