"""The seed's examples (shared/reference/seed.txt), run as written against a real server.

Only what the seed leaves to the reader changes: the base URL, the key, and the example
ids (mbx_…/thr_… in the seed) replaced by ids this server issued. The server runs with
``--domain multimail.dev`` and the account's slug is ``yourcompany``, so the seed's own
``"domain": "yourcompany.multimail.dev"`` is this account's domain.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import httpx
import pytest

SEED_CURL_CREATE = """curl -X POST https://api.multimail.dev/v1/mailboxes \\
-H "Authorization: Bearer $MULTIMAIL_API_KEY" \\
-H "Content-Type: application/json" \\
-d '{
"name": "support-agent",
"domain": "yourcompany.multimail.dev",
"display_name": "Support Agent",
"oversight_mode": "monitored",
"webhook_url": "https://yourapp.com/webhooks/email"
}'"""

SEED_CURL_REPUTATION = (
    "curl https://api.multimail.dev/v1/mailboxes/mbx_01HZ9K2P3XQRV8TNWYD4G6F0E/reputation \\\n"
    '-H "Authorization: Bearer $MULTIMAIL_API_KEY"'
)

SEED_PY_INBOX = """import multimail
client = multimail.Client(api_key="$MULTIMAIL_API_KEY")
# Check inbox for a specific mailbox
messages = client.check_inbox(
mailbox_id="mbx_01HZ9K2P3XQRV8TNWYD4G6F0E",
filter="unread",
limit=20
)
for message in messages.emails:
print(f"From: {message.sender}")
print(f"Subject: {message.subject}")
print(f"Thread: {message.thread_id}")
print(f"Preview: {message.body_text[:100]}")
print("---")
# Read full email if needed
if message.requires_action:
full = client.read_email(email_id=message.email_id)
print(full.body_text)"""

SEED_PY_REPLY = """import multimail
client = multimail.Client(api_key="$MULTIMAIL_API_KEY")
# Reply to an existing thread
result = client.reply_email(
thread_id="thr_01HZ9K2P3XQRV8TNWYD4G6F0E",
mailbox_id="mbx_01HZ9K2P3XQRV8TNWYD4G6F0E",
body_text="Thanks for reaching out. I've reviewed your request and here's what I found...",
body_html="<p>Thanks for reaching out. I've reviewed your request and here's what I found...</p>"
)
if result.status == "pending":
# Mailbox is in gated_send — message awaits human approval
print(f"Awaiting approval: {result.pending_id}")
elif result.status == "sent":
print(f"Sent: {result.message_id}")"""

SEED_JS_PATCH = """const response = await fetch(
'https://api.multimail.dev/v1/mailboxes/mbx_01HZ9K2P3XQRV8TNWYD4G6F0E',
{
method: 'PATCH',
headers: {
'Authorization': 'Bearer $MULTIMAIL_API_KEY',
'Content-Type': 'application/json',
},
body: JSON.stringify({
oversight_mode: 'monitored', // promote from gated_send
}),
}
);
const mailbox = await response.json();
console.log(`Updated: ${mailbox.address} → ${mailbox.oversight_mode}`);"""

SEED_MBX = "mbx_01HZ9K2P3XQRV8TNWYD4G6F0E"
SEED_THR = "thr_01HZ9K2P3XQRV8TNWYD4G6F0E"


def reindent(snippet: str) -> str:
    """The seed page lost its indentation; restore Python's block structure."""
    out, depth = [], 0
    for line in snippet.splitlines():
        stripped = line.strip()
        if stripped.startswith(("elif ", "else:")):
            depth = max(depth - 1, 0)
        if (
            depth
            and not line.startswith(" ")
            and stripped.startswith(("# Read full", "if message."))
        ):
            depth = 0
        out.append("    " * depth + stripped)
        if stripped.endswith(":") and not stripped.startswith("#"):
            depth += 1
    return "\n".join(out)


def python_snippet(snippet: str, url: str, key: str, ids: dict[str, str]) -> str:
    code = reindent(snippet).replace(
        'api_key="$MULTIMAIL_API_KEY"', f'api_key="{key}", base_url="{url}"'
    )
    for seed_id, real in ids.items():
        code = code.replace(seed_id, real)
    return code


def run_curl(command: str, url: str, key: str, ids: dict[str, str]) -> dict:
    command = command.replace("https://api.multimail.dev", url)
    for seed_id, real in ids.items():
        command = command.replace(seed_id, real)
    out = subprocess.run(
        ["bash", "-c", command + " --silent --show-error --fail-with-body"],
        env={"MULTIMAIL_API_KEY": key, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return json.loads(out.stdout)


@pytest.fixture
def account(served):
    r = httpx.post(
        f"{served.url}/v1/accounts",
        json={"name": "yourcompany", "oversight_email": "operator@yourcompany.example"},
        headers={"Authorization": f"Bearer {served.admin_key}"},
    )
    assert r.status_code == 201, r.text
    return r.json()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is installed by .ci/run")
def test_seed_curl_create_and_reputation(served, account):
    created = run_curl(SEED_CURL_CREATE, served.url, account["api_key"], {})
    assert created["address"] == "support-agent@yourcompany.multimail.dev"
    assert created["mailbox_id"].startswith("mbx_")
    assert created["oversight_mode"] == "monitored"
    assert created["created_at"].endswith("Z")
    rep = run_curl(
        SEED_CURL_REPUTATION, served.url, account["api_key"], {SEED_MBX: created["mailbox_id"]}
    )
    for field in (
        "mailbox_id", "address", "reputation_score", "bounce_rate", "complaint_rate",
        "delivery_rate", "messages_sent_30d", "identity_verified",
    ):  # fmt: skip
        assert field in rep
    assert rep["mailbox_id"] == created["mailbox_id"]
    assert 0 <= rep["reputation_score"] <= 100


def test_seed_python_inbox_and_gated_reply(served, account, tmp_path):
    key, url = account["api_key"], served.url
    h = {"Authorization": f"Bearer {key}"}
    agent = httpx.post(
        f"{url}/v1/mailboxes",
        json={"name": "support-agent", "oversight_mode": "gated_send"},
        headers=h,
    ).json()
    customer = httpx.post(
        f"{url}/v1/mailboxes", json={"name": "customer", "oversight_mode": "autonomous"}, headers=h
    ).json()
    sent = httpx.post(
        f"{url}/v1/mailboxes/{customer['mailbox_id']}/send",
        json={
            "to": [agent["address"]],
            "subject": "Refund request",
            "body_text": "Please refund order 42.",
        },
        headers=h,
    ).json()
    assert sent["status"] == "sent"

    ids = {SEED_MBX: agent["mailbox_id"]}
    inbox = subprocess.run(
        [sys.executable, "-c", python_snippet(SEED_PY_INBOX, url, key, ids)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    deadline = 0
    while "Refund request" not in inbox.stdout and deadline < 50:  # local delivery is asynchronous
        deadline += 1
        inbox = subprocess.run(
            [sys.executable, "-c", python_snippet(SEED_PY_INBOX, url, key, ids)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert inbox.returncode == 0, inbox.stderr
    assert f"From: {customer['address']}" in inbox.stdout
    assert "Subject: Refund request" in inbox.stdout
    assert "Please refund order 42." in inbox.stdout  # the preview, then the full body
    thread_id = next(
        line.split()[-1] for line in inbox.stdout.splitlines() if line.startswith("Thread:")
    )

    ids[SEED_THR] = thread_id
    reply = subprocess.run(
        [sys.executable, "-c", python_snippet(SEED_PY_REPLY, url, key, ids)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert reply.returncode == 0, reply.stderr
    assert reply.stdout.startswith("Awaiting approval: apr_"), reply.stdout
    pending_id = reply.stdout.split()[-1]

    # nothing arrives until a separate oversight key approves
    reviewer = httpx.post(
        f"{url}/v1/api-keys", json={"name": "reviewer", "scopes": ["oversight"]}, headers=h
    ).json()
    hr = {"Authorization": f"Bearer {reviewer['api_key']}"}
    inbox_c = httpx.get(
        f"{url}/v1/mailboxes/{customer['mailbox_id']}/emails?direction=inbound", headers=h
    ).json()
    assert inbox_c["emails"] == []
    decided = httpx.post(
        f"{url}/v1/oversight/decide",
        json={"pending_id": pending_id, "action": "approve"},
        headers=hr,
    )
    assert decided.status_code == 200, decided.text
    for _ in range(100):
        inbox_c = httpx.get(
            f"{url}/v1/mailboxes/{customer['mailbox_id']}/emails?direction=inbound", headers=h
        ).json()
        if inbox_c["emails"]:
            break
        subprocess.run(["sleep", "0.1"], check=True)
    (arrived,) = inbox_c["emails"]
    assert arrived["subject"] == "Re: Refund request"
    assert arrived["body_text"].startswith("Thanks for reaching out.")
    assert arrived["thread_id"] == sent["thread_id"]  # threading preserved on the customer's side


@pytest.mark.skipif(shutil.which("node") is None, reason="node is part of the machine image")
def test_seed_js_patch_promotes(served, account, tmp_path):
    key, url = account["api_key"], served.url
    h = {"Authorization": f"Bearer {key}"}
    box = httpx.post(
        f"{url}/v1/mailboxes", json={"name": "ops-agent", "oversight_mode": "gated_send"}, headers=h
    ).json()
    script = SEED_JS_PATCH.replace("https://api.multimail.dev", url).replace(
        SEED_MBX, box["mailbox_id"]
    )
    script = script.replace("$MULTIMAIL_API_KEY", key)
    path = tmp_path / "patch.mjs"
    path.write_text(textwrap.dedent(script))
    out = subprocess.run(["node", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"Updated: {box['address']} → monitored"
