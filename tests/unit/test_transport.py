"""The outbound transport against real peers on 127.0.0.1: an aiosmtpd sink and a DNS
responder (PRODUCT.md §6: "to the configured relay, else direct to MX")."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import dns.asyncresolver
import pytest

from multimail.transport import Relay, Transport, mx_hosts
from tests.dns_responder import Responder
from tests.smtp_sink import Sink, free_port, smtp_sink

RAW = b"From: a@agents.test\r\nTo: b@example.test\r\nSubject: hi\r\n\r\nhello\r\n"


@pytest.fixture
def sink() -> Iterator[Sink]:
    with smtp_sink() as s:
        yield s


def resolver_for(responder: Responder) -> dns.asyncresolver.Resolver:
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = responder.port
    return resolver


@pytest.fixture
def responder() -> Iterator[Responder]:
    server = Responder(
        {
            ("example.test", "MX"): ["20 localhost.", "10 nothing-listens.invalid."],
            ("plain.test", "A"): ["127.0.0.1"],
            ("nullmx.test", "MX"): ["0 ."],
            ("localhost", "A"): ["127.0.0.1"],
        },
        servfail={("broken.test", "MX")},
    )
    yield server
    server.close()


def run(coro):
    return asyncio.run(coro)


def test_mx_hosts_follow_preference_null_mx_and_nxdomain(responder: Responder):
    resolver = resolver_for(responder)
    assert run(mx_hosts("example.test", resolver)) == ["nothing-listens.invalid", "localhost"]
    assert run(mx_hosts("plain.test", resolver)) == ["plain.test"]  # no MX: the domain itself
    assert run(mx_hosts("nullmx.test", resolver)) == []  # RFC 7505: accepts no mail
    assert run(mx_hosts("nowhere.test", resolver)) == []  # NXDOMAIN
    with pytest.raises(ConnectionError):
        run(mx_hosts("broken.test", resolver))


def test_direct_delivery_tries_the_next_mx_when_one_cannot_be_reached(
    responder: Responder, sink: Sink
):
    transport = Transport(None, helo="agents.test", mx_port=sink.port, timeout=5,
                          resolver=resolver_for(responder))  # fmt: skip
    replies = run(transport.send("bounces+x@agents.test", ["b@example.test"], RAW))
    assert replies == {"b@example.test": (250, "2.0.0 accepted")}
    [got] = sink.to("b@example.test")
    assert got.data == RAW
    assert got.mail_from == "bounces+x@agents.test"


def test_direct_delivery_answers_per_domain(responder: Responder, sink: Sink):
    transport = Transport(None, helo="agents.test", mx_port=sink.port, timeout=5,
                          resolver=resolver_for(responder))  # fmt: skip
    rcpts = ["b@example.test", "c@nullmx.test", "d@nowhere.test", "e@broken.test"]
    replies = run(transport.send("bounces+x@agents.test", rcpts, RAW))
    assert replies["b@example.test"][0] == 250
    assert replies["c@nullmx.test"] == (550, "5.1.2 the recipient domain has no mail server")
    assert replies["d@nowhere.test"][0] == 550
    assert replies["e@broken.test"][0] == 451  # a DNS failure is transient: retried later
    assert [m.rcpts for m in sink.messages] == [("b@example.test",)]


def test_a_relay_refusing_one_recipient_refuses_only_that_one_and_the_connection_is_reused(
    sink: Sink,
):
    sink.reply("gone@example.test", "550 5.1.1 no such user")
    transport = Transport(Relay.parse(sink.url), helo="agents.test", timeout=5)

    async def two_messages() -> tuple[dict, dict, int]:
        first = await transport.send("r@agents.test", ["gone@example.test", "ok@example.test"], RAW)
        pooled = len(transport._idle)
        second = await transport.send("r@agents.test", ["ok2@example.test"], RAW)
        await transport.close()
        return first, second, pooled

    first, second, pooled = run(two_messages())
    assert first == {
        "gone@example.test": (550, "5.1.1 no such user"),
        "ok@example.test": (250, "2.0.0 accepted"),
    }
    assert second == {"ok2@example.test": (250, "2.0.0 accepted")}
    assert pooled == 1  # the connection went back to the pool after the partial refusal
    assert [m.rcpts for m in sink.messages] == [("ok@example.test",), ("ok2@example.test",)]


def test_a_stale_pooled_connection_costs_a_reconnect_never_a_message():
    port = free_port()

    async def scenario() -> list[dict]:
        answers = []
        with smtp_sink(port) as first:
            transport = Transport(Relay.parse(f"smtp://127.0.0.1:{port}"), helo="a.test", timeout=5)
            answers.append(await transport.send("r@a.test", ["x@example.test"], RAW))
        # the relay restarted: the idle connection in the pool is dead
        with smtp_sink(port) as second:
            answers.append(await transport.send("r@a.test", ["y@example.test"], RAW))
            await transport.close()
            answers.append({"first": len(first.messages), "second": len(second.messages)})
        return answers

    one, two, counts = run(scenario())
    assert one["x@example.test"][0] == 250
    assert two["y@example.test"][0] == 250
    assert counts == {"first": 1, "second": 1}


def test_an_unreachable_relay_is_a_transient_reply_for_every_recipient():
    transport = Transport(Relay.parse(f"smtp://127.0.0.1:{free_port()}"), helo="a.test", timeout=2)
    replies = run(transport.send("r@a.test", ["x@example.test", "y@example.test"], RAW))
    assert {code for code, _ in replies.values()} == {451}
    assert all("4.4.1" in text for _, text in replies.values())


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://relay.test:2525", Relay("relay.test", 2525)),
        ("smtps://u%40x:p%3Aw@relay.test", Relay("relay.test", 465, "u@x", "p:w", True, False)),
        ("smtp://relay.test?starttls=1", Relay("relay.test", 25, starttls=True)),
    ],
)
def test_relay_urls(url, expected):
    assert Relay.parse(url) == expected


@pytest.mark.parametrize("url", ["http://relay.test", "smtp://", "relay.test:25"])
def test_bad_relay_urls_are_refused(url):
    with pytest.raises(ValueError, match="--relay"):
        Relay.parse(url)
