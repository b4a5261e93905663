"""Sender signals of mail arriving over SMTP (PRODUCT.md §6: DKIM, SPF, DMARC, first
contact, prior messages), with the server's sender checks pointed at a real DNS responder
on 127.0.0.1 (``--dns HOST:PORT``)."""

from __future__ import annotations

import base64
import smtplib
import uuid
from collections.abc import Iterator

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from multimail.embedded import Embedded, run_embedded
from tests.dns_responder import Responder
from tests.integration.conftest import Tenant, eventually

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = KEY.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.TraditionalOpenSSL,
    serialization.NoEncryption(),
)
PUBLIC = base64.b64encode(
    KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()


def txt(value: str) -> str:
    """A TXT record in presentation form, split into strings of at most 255 octets."""
    return " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))


@pytest.fixture(scope="module")
def responder() -> Iterator[Responder]:
    server = Responder(
        {
            ("sel._domainkey.signed.example", "TXT"): [txt(f"v=DKIM1; k=rsa; p={PUBLIC}")],
            ("_dmarc.signed.example", "TXT"): ['"v=DMARC1; p=reject"'],
            ("_dmarc.spoof.example", "TXT"): ['"v=DMARC1; p=quarantine"'],
        },
        servfail=set(),
    )
    yield server
    server.close()


@pytest.fixture(scope="module")
def mm(responder: Responder) -> Iterator[Embedded]:
    with run_embedded(dns=f"127.0.0.1:{responder.port}") as server:
        yield server


@pytest.fixture
def tenant(plain_tenant: Tenant) -> Tenant:
    return plain_tenant


def message(sender: str, to: str, subject: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@example>\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\n"
        "\r\nHello from a domain with a DMARC policy.\r\n"
    ).encode()


def signed(raw: bytes) -> bytes:
    header = dkim.sign(raw, b"sel", b"signed.example", PEM, include_headers=[b"from", b"subject"])
    return header + raw


def deliver(mm: Embedded, raw: bytes, sender: str, to: str) -> None:
    with smtplib.SMTP("127.0.0.1", mm.smtp_port, timeout=10) as client:
        client.sendmail(sender, [to], raw)


def signals_of(tenant: Tenant, box: dict, subject: str) -> dict:
    found = eventually(
        lambda: [e for e in tenant.inbound(box["id"]) if e["subject"] == subject],
        what=subject,
    )
    return tenant.admin.email(found[0]["id"])["signals"]


def test_an_aligned_dkim_signature_passes_dkim_and_dmarc(tenant: Tenant):
    box = tenant.mailbox("signals")
    deliver(tenant.mm, signed(message("alice@signed.example", box["address"], "signed")),
            "alice@signed.example", box["address"])  # fmt: skip
    got = signals_of(tenant, box, "signed")
    assert got["dkim"] == "pass"
    assert got["dkim_domains"] == ["signed.example"]
    assert got["dmarc"] == "pass"
    assert got["dmarc_policy"] == "reject"
    assert got["spf"] == "skipped"  # a loopback client says nothing about the sender
    assert got["first_contact"] is True


def test_a_tampered_body_fails_dkim_and_dmarc(tenant: Tenant):
    box = tenant.mailbox("tampered")
    raw = signed(message("alice@signed.example", box["address"], "tampered"))
    raw = raw.replace(b"Hello", b"Jello")
    deliver(tenant.mm, raw, "alice@signed.example", box["address"])
    got = signals_of(tenant, box, "tampered")
    assert got["dkim"] == "fail"
    assert got["dmarc"] == "fail"
    assert got["dmarc_policy"] == "reject"


def test_an_unsigned_message_from_a_policy_domain_fails_dmarc(tenant: Tenant):
    box = tenant.mailbox("spoofed")
    deliver(tenant.mm, message("ceo@spoof.example", box["address"], "wire money"),
            "ceo@spoof.example", box["address"])  # fmt: skip
    got = signals_of(tenant, box, "wire money")
    assert got["dkim"] == "none"
    assert got["dmarc"] == "fail"
    assert got["dmarc_policy"] == "quarantine"
    assert got["from_domain"] == "spoof.example"
