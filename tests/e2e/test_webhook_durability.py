"""At-least-once across a crash (PRODUCT.md §9, P12): a ``kill -9`` while a webhook request
is in flight loses nothing; after the restart the same delivery is sent again with the same
``webhook-id``, so the receiver can tell it is a repeat."""

from __future__ import annotations

import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from tests.e2e.conftest import start_server, stop_server


def test_kill_9_mid_delivery_redelivers_with_the_same_webhook_id(tmp_path: Path):
    seen: list[str] = []
    first_arrived = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            seen.append(self.headers["webhook-id"])
            if len(seen) == 1:  # hold the first request while the server is killed
                first_arrived.set()
                time.sleep(3)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    flags = ("--domain", "hooks.test", "--dns", "off", "--webhook-allow-private")
    served = start_server(tmp_path, *flags)
    headers = {"Authorization": f"Bearer {served.admin_key}"}
    made = httpx.post(f"{served.url}/v1/webhooks", headers=headers,
                      json={"url": url, "events": ["mailbox.created"]}).json()  # fmt: skip
    httpx.post(f"{served.url}/v1/mailboxes", headers=headers, json={"name": "boom"})
    assert first_arrived.wait(15), "the webhook never arrived"
    served.process.send_signal(signal.SIGKILL)
    served.process.wait(timeout=10)
    again = start_server(tmp_path, *flags)
    try:
        deadline = time.monotonic() + 20
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(seen) >= 2, seen
        assert seen[0] == seen[1]  # the same delivery, not a new one
        log = httpx.get(f"{again.url}/v1/webhook-deliveries", headers={
            "Authorization": f"Bearer {again.admin_key}"}, params={"webhook_id": made["id"]},
        ).json()["deliveries"]  # fmt: skip
        deadline = time.monotonic() + 10
        while log and log[0]["status"] != "delivered" and time.monotonic() < deadline:
            time.sleep(0.1)
            log = httpx.get(f"{again.url}/v1/webhook-deliveries", headers={
                "Authorization": f"Bearer {again.admin_key}"},
                params={"webhook_id": made["id"]}).json()["deliveries"]  # fmt: skip
        assert [d["status"] for d in log] == ["delivered"]
    finally:
        assert stop_server(again) == 0
        receiver.shutdown()
