"""``multimail verify`` and ``multimail dns`` end to end, on mail a real server really sent.

One ``multimail serve`` process relays to a local SMTP sink; an autonomous mailbox sends one
message to an outside address; the bytes the sink received are verified by the installed
``multimail`` console script against the records the server publishes (``--server``).

Rule 1: the message under test is exactly what left the server (the sink's bytes); every
        tampered copy differs from it in one place only.
Rule 2: exit codes and streams are checked as a shell script would see them: 0 verified,
        1 not verified (reason on stdout), 2 usage (one ``error:`` line on stderr).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Served, start_server, stop_server
from tests.smtp_sink import smtp_sink

MULTIMAIL = Path(sys.executable).parent / "multimail"
RECIPIENT = "reader@outside.example"
BODY = "Quarterly numbers attached in spirit: 42."
SUBJECT = "Numbers for Q3"
ZONE_LINE = re.compile(r"^\S+\.\tIN\t(MX|TXT)\t\S.*$")


@dataclass(frozen=True)
class Sent:
    served: Served
    mailbox_id: str
    address: str
    raw: bytes


@pytest.fixture(scope="module")
def sent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sent]:
    with smtp_sink() as sink:
        served = start_server(
            tmp_path_factory.mktemp("server"), "--relay", sink.url, "--dns", "off"
        )
        try:
            admin = {"Authorization": f"Bearer {served.admin_key}"}
            with httpx.Client(base_url=served.url, headers=admin, timeout=15) as http:
                created = http.post(
                    "/v1/mailboxes", json={"name": "reporter", "oversight_mode": "autonomous"}
                )
                assert created.status_code == 201, created.text
                box = created.json()
                posted = http.post(
                    f"/v1/mailboxes/{box['mailbox_id']}/send",
                    json={"to": [RECIPIENT], "subject": SUBJECT, "body_text": BODY},
                )
                assert posted.status_code == 200, posted.text
                assert posted.json()["status"] == "sent"
            (received,) = sink.wait(RECIPIENT)
            yield Sent(served, box["mailbox_id"], box["address"], received.data)
        finally:
            code = stop_server(served)
        assert code == 0


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MULTIMAIL_")}
    return subprocess.run(
        [str(MULTIMAIL), *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def verify(sent: Sent, path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run("verify", str(path), "--server", sent.served.url, *extra)


def written(tmp_path: Path, name: str, raw: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(raw)
    return path


def one_change(raw: bytes, old: bytes, new: bytes) -> bytes:
    assert raw.count(old) == 1, (old, raw.count(old))
    changed = raw.replace(old, new)
    assert len(changed) == len(raw) - len(old) + len(new)
    return changed


def test_the_sent_message_verifies_and_names_its_mailbox(sent: Sent, tmp_path: Path) -> None:
    assert BODY.encode() in sent.raw  # the message under test is the one we sent
    done = verify(sent, written(tmp_path, "sent.eml", sent.raw))
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert sent.mailbox_id in done.stdout
    assert sent.address in done.stdout
    assert "Traceback" not in done.stderr


def test_json_output_parses_and_says_ok(sent: Sent, tmp_path: Path) -> None:
    done = verify(sent, written(tmp_path, "sent.eml", sent.raw), "--json")
    assert done.returncode == 0, (done.stdout, done.stderr)
    result = json.loads(done.stdout)
    assert result["ok"] is True
    assert result["mailbox_id"] == sent.mailbox_id
    assert result["address"] == sent.address
    assert result["dkim"]["result"] == "pass"
    assert result["claim"]["human_approved"] is False
    assert all(check["ok"] for check in result["checks"])


def test_one_changed_body_byte_fails_with_a_reason(sent: Sent, tmp_path: Path) -> None:
    raw = one_change(sent.raw, BODY.encode(), BODY.replace("42", "43").encode())
    done = verify(sent, written(tmp_path, "body.eml", raw))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stdout.startswith("NOT verified: ")
    assert len(done.stdout.splitlines()[0]) > len("NOT verified: ")
    assert sent.mailbox_id not in done.stdout.splitlines()[0]
    assert "Traceback" not in done.stderr

    as_json = json.loads(verify(sent, written(tmp_path, "body.eml", raw), "--json").stdout)
    assert as_json["ok"] is False
    assert as_json["mailbox_id"] is None
    assert as_json["reason"]


def test_a_changed_subject_fails(sent: Sent, tmp_path: Path) -> None:
    raw = one_change(sent.raw, f"Subject: {SUBJECT}".encode(), b"Subject: Numbers for Q4")
    done = verify(sent, written(tmp_path, "subject.eml", raw))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stdout.startswith("NOT verified: ")


def test_a_missing_file_is_a_usage_error(sent: Sent, tmp_path: Path) -> None:
    done = verify(sent, tmp_path / "nowhere.eml")
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error:")
    assert "nowhere.eml" in lines[0]
    assert done.stdout == ""


def dkim_records(records: list[dict[str, str]]) -> dict[str, str]:
    return {
        r["name"]: r["value"] for r in records if r["type"] == "TXT" and "._domainkey." in r["name"]
    }


def test_the_account_domain_lists_both_dkim_keys_the_server_publishes(sent: Sent) -> None:
    domain = sent.address.partition("@")[2]
    admin = {"Authorization": f"Bearer {sent.served.admin_key}"}
    listed = httpx.get(f"{sent.served.url}/v1/domains", headers=admin).json()["domains"]
    (ours,) = [d for d in listed if d["domain"] == domain]
    dkim = dkim_records(ours["dns_records"])
    assert set(dkim) == {f"mm1._domainkey.{domain}", f"mm1ed._domainkey.{domain}"}
    assert "k=rsa" in dkim[f"mm1._domainkey.{domain}"]
    assert "k=ed25519" in dkim[f"mm1ed._domainkey.{domain}"]
    for name, value in dkim.items():  # what is listed to publish is what verify relied on
        served = httpx.get(
            f"{sent.served.url}/.well-known/multimail/dns", params={"name": name, "type": "TXT"}
        )
        assert served.json()["records"] == [value]


def dns_env(sent: Sent) -> dict[str, str]:
    return {"MULTIMAIL_API_URL": sent.served.url, "MULTIMAIL_API_KEY": sent.served.admin_key}


def test_dns_json_lists_both_dkim_keys(sent: Sent) -> None:
    domain = sent.address.partition("@")[2]
    done = run("dns", domain, "--json", env=dns_env(sent))
    assert done.returncode == 0, (done.stdout, done.stderr)
    listed = json.loads(done.stdout)
    assert listed["domain"] == domain
    dkim = dkim_records(listed["dns_records"])
    assert set(dkim) == {f"mm1._domainkey.{domain}", f"mm1ed._domainkey.{domain}"}


def test_dns_prints_zone_file_lines(sent: Sent) -> None:
    domain = sent.address.partition("@")[2]
    done = run("dns", domain, env=dns_env(sent))
    assert done.returncode == 0, (done.stdout, done.stderr)
    lines = [ln for ln in done.stdout.splitlines() if ln and not ln.startswith(";")]
    assert lines
    assert all(ZONE_LINE.match(ln) for ln in lines), lines
    for selector in ("mm1", "mm1ed"):
        assert any(ln.startswith(f"{selector}._domainkey.{domain}.\tIN\tTXT\t") for ln in lines)
