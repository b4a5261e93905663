"""SSRF guard for webhooks: the address table, URL checks, and the connect-time re-check.

The connect-time tests run a real HTTP(S) server on 127.0.0.1 and inject the resolver, so a
made-up name (``rebind.test``) can point at it; the server records every connection it
accepts, which shows that a refused destination was never contacted.
"""

from __future__ import annotations

import asyncio
import datetime
import http.server
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from multimail.ssrf import (
    BlockedConnection,
    UnsafeUrl,
    check_url,
    forbidden_address,
    guarded_client,
    literal_address,
    system_resolve,
)

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1::1"


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as the guard reads a host: odd IPv4 spellings included."""
    parsed = literal_address(text)
    assert parsed is not None, text
    return parsed


# --- forbidden_address -------------------------------------------------------------------

ALLOWED = [
    PUBLIC_V4,
    PUBLIC_V6,
    "8.8.8.8",
    "1.1.1.1",
    "2001:4860:4860::8888",
    "::ffff:93.184.216.34",  # mapped form of a public address is that address
    "64:ff9b::5db8:d822",  # NAT64 form of 93.184.216.34
    "2002:5db8:d822::1",  # 6to4 form of 93.184.216.34
]

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.1", "loopback"),
    ("2130706433", "loopback"),
    ("0x7f000001", "loopback"),
    ("0x7f.1", "loopback"),
    ("017700000001", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "metadata"),
    ("169.254.1.1", "link-local"),
    ("100.100.100.200", "metadata"),
    ("168.63.129.16", "metadata"),
    ("100.64.0.1", "shared"),
    ("100.127.255.255", "shared"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "this network"),
    ("255.255.255.255", "broadcast"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("192.0.0.8", "IETF"),
    ("192.0.2.1", "documentation"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:10.0.0.1", "private"),
    ("::ffff:169.254.169.254", "metadata"),
    ("::127.0.0.1", "loopback"),  # IPv4-compatible
    ("::ffff:0:127.0.0.1", "loopback"),  # IPv4-translated
    ("64:ff9b::7f00:1", "loopback"),  # NAT64
    ("64:ff9b::a9fe:a9fe", "metadata"),  # NAT64 of 169.254.169.254
    ("64:ff9b:1::1", "NAT64"),
    ("2002:7f00:1::1", "loopback"),  # 6to4
    ("2002:c0a8:101::1", "private"),  # 6to4 of 192.168.1.1
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("fc00::1", "unique local"),
    ("fd12:3456::1", "unique local"),
    ("fd00:ec2::254", "metadata"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("100::1", "discard"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
    ("::1:0:0", "reserved"),
    ("4000::1", "reserved"),
    ("fe00::1", "reserved"),
]


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert forbidden_address(ip(address)) is None


@pytest.mark.parametrize(("address", "why"), REFUSED)
def test_non_public_addresses_are_refused_with_their_reason(address: str, why: str) -> None:
    reason = forbidden_address(ip(address))
    assert reason is not None
    assert why in reason


def test_wrapped_forms_name_the_inner_address() -> None:
    reason = forbidden_address(ip("::ffff:127.0.0.1"))
    assert reason == "IPv4-mapped form of 127.0.0.1: loopback address"


def test_odd_ipv4_spellings_are_read_like_the_c_resolver() -> None:
    for spelling in ("127.1", "2130706433", "0x7f000001", "0x7f.1", "017700000001", "127.0.1"):
        assert literal_address(spelling) == ipaddress.IPv4Address("127.0.0.1"), spelling
    assert literal_address("[::1]") == ipaddress.IPv6Address("::1")


@pytest.mark.parametrize("host", ["example.com", "1.2.3.4.5", "127.1 x", "0x7f.1.", "deadbeef.io"])
def test_hostnames_are_not_literals(host: str) -> None:
    assert literal_address(host) is None


v4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)


@given(v4)
def test_ipv6_wrappings_judge_like_the_inner_address(inner: ipaddress.IPv4Address) -> None:
    low = int(inner)
    wrappings = [
        (0xFFFF << 32) | low,  # ::ffff:a.b.c.d
        (0xFFFF << 48) | low,  # ::ffff:0:a.b.c.d
        (0x64FF9B << 96) | low,  # 64:ff9b::a.b.c.d
        (0x2002 << 112) | (low << 80) | 1,  # 2002:AABB:CCDD::1
    ]
    if low > 1:  # ::0.0.0.0 and ::0.0.0.1 are :: and ::1
        wrappings.append(low)  # ::a.b.c.d
    expected = forbidden_address(inner) is None
    for wrapped in wrappings:
        assert (forbidden_address(ipaddress.IPv6Address(wrapped)) is None) == expected


NAMED_RANGES = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
    "::ffff:127.0.0.0/104",
    "64:ff9b::a00:0/104",
]


@given(st.sampled_from(NAMED_RANGES), st.integers(min_value=0))
def test_every_address_of_the_named_ranges_is_refused(network: str, offset: int) -> None:
    net = ipaddress.ip_network(network)
    address = net.network_address + offset % net.num_addresses
    assert forbidden_address(address) is not None


def _stdlib_says_special(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


WRAPPERS = [
    ipaddress.IPv6Network(net)
    for net in ("::ffff:0:0/96", "::ffff:0:0:0/96", "::/96", "64:ff9b::/96", "2002::/16")
]


@given(st.ip_addresses())
def test_whatever_the_stdlib_deems_special_is_refused(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    # Wrapped IPv4 forms are judged by their inner address (previous property).
    if isinstance(address, ipaddress.IPv6Address) and any(address in net for net in WRAPPERS):
        return
    if _stdlib_says_special(address):
        assert forbidden_address(address) is not None


# --- check_url ------------------------------------------------------------------------------


def answers(*addresses: str) -> Callable[[str, int], list[str]]:
    return lambda host, port: list(addresses)


def never(host: str, port: int) -> list[str]:
    raise AssertionError(f"resolver called for {host}:{port}")


def test_a_public_hostname_passes_and_the_url_is_normalised() -> None:
    seen: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[str]:
        seen.append((host, port))
        return [PUBLIC_V4, PUBLIC_V6]

    assert check_url("HTTPS://Hooks.Example.COM/in?a=1", allow_private=False, resolve=resolve) == (
        "https://hooks.example.com/in?a=1"
    )
    check_url("http://hooks.example.com:8080/", allow_private=False, resolve=resolve)
    check_url("http://hooks.example.com/", allow_private=False, resolve=resolve)
    assert seen == [
        ("hooks.example.com", 443),
        ("hooks.example.com", 8080),
        ("hooks.example.com", 80),
    ]


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.com/",
        "file:///etc/passwd",
        "gopher://hooks.example.com:70/_x",
        "javascript:alert(1)",
        "hooks.example.com/path",
    ],
)
@pytest.mark.parametrize("allow_private", [False, True])
def test_only_http_and_https_are_accepted(url: str, allow_private: bool) -> None:
    with pytest.raises(UnsafeUrl, match="scheme must be http or https"):
        check_url(url, allow_private=allow_private, resolve=answers(PUBLIC_V4))


@pytest.mark.parametrize(
    "url", ["http://user:pass@hooks.example.com/", "https://token@hooks.example.com/"]
)
@pytest.mark.parametrize("allow_private", [False, True])
def test_credentials_in_the_url_are_refused(url: str, allow_private: bool) -> None:
    with pytest.raises(UnsafeUrl, match="credentials"):
        check_url(url, allow_private=allow_private, resolve=answers(PUBLIC_V4))


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("http:///path", "no host"),
        ("http://hooks.example.com:0/", "port 0"),
        ("http://hooks.example.com:65536/", "port 65536"),
        ("http://%31%32%37.0.0.1/", "not a valid host name"),
        ("http://[::1/", "not a valid URL"),
    ],
)
def test_malformed_destinations_are_refused(url: str, match: str) -> None:
    with pytest.raises(UnsafeUrl, match=match):
        check_url(url, allow_private=False, resolve=answers(PUBLIC_V4))


def test_port_65535_is_fine() -> None:
    url = "http://hooks.example.com:65535/"
    assert check_url(url, allow_private=False, resolve=answers(PUBLIC_V4)) == url


def test_a_name_resolving_to_a_private_address_is_refused() -> None:
    with pytest.raises(UnsafeUrl, match=r"resolves to 10\.0\.0\.5, a private address") as info:
        check_url("https://intranet.example.com/", allow_private=False, resolve=answers("10.0.0.5"))
    assert isinstance(info.value, ValueError)
    assert info.value.url == "https://intranet.example.com/"
    assert "10.0.0.5" in info.value.reason


def test_every_resolved_address_must_be_public() -> None:
    mixed = answers(PUBLIC_V4, PUBLIC_V6, "127.0.0.1")
    with pytest.raises(UnsafeUrl, match="loopback"):
        check_url("https://hooks.example.com/", allow_private=False, resolve=mixed)


@pytest.mark.parametrize(
    "url",
    ["http://localhost/", "http://LOCALHOST.:8080/", "http://api.localhost/", "http://localhost"],
)
def test_localhost_names_are_refused_without_asking_dns(url: str) -> None:
    with pytest.raises(UnsafeUrl, match="localhost name"):
        check_url(url, allow_private=False, resolve=never)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://127.1/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0x7f.1:8080/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[64:ff9b::7f00:1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
    ],
)
def test_ip_literals_are_checked_directly(url: str) -> None:
    with pytest.raises(UnsafeUrl, match="resolves to"):
        check_url(url, allow_private=False, resolve=never)


def test_public_ip_literals_pass() -> None:
    assert check_url(f"https://[{PUBLIC_V6}]/", allow_private=False, resolve=never) == (
        f"https://[{PUBLIC_V6}]/"
    )
    assert check_url(f"http://{PUBLIC_V4}:81/", allow_private=False, resolve=never)


def test_a_name_that_does_not_resolve_is_refused_distinctly() -> None:
    def nxdomain(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(UnsafeUrl, match="does not resolve"):
        check_url("https://nowhere.example/", allow_private=False, resolve=nxdomain)
    with pytest.raises(UnsafeUrl, match="does not resolve"):
        check_url("https://nowhere.example/", allow_private=False, resolve=answers())


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/hook", "http://localhost/", "http://10.0.0.5/", "http://x.lan/"]
)
def test_allow_private_skips_the_address_checks(url: str) -> None:
    assert check_url(url, allow_private=True, resolve=never) == url


def test_system_resolve_reads_literals_offline() -> None:
    assert system_resolve("127.0.0.1", 80) == ["127.0.0.1"]


# --- connect time ---------------------------------------------------------------------------


@dataclass
class Receiver:
    """A real HTTP(S) server on 127.0.0.1 that records what reaches it."""

    port: int
    connections: list[str] = field(default_factory=list)
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, Host
    server_names: list[str | None] = field(default_factory=list)


def _handler(receiver: Receiver, behaviour: str) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            receiver.requests.append(("GET", self.path, self.headers.get("Host", "")))
            if behaviour == "redirect":
                self.send_response(302)
                self.send_header("Location", "http://127.0.0.1:1/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif behaviour == "truncated":
                self.send_response(200)
                self.send_header("Content-Length", "100")
                self.end_headers()
                self.wfile.write(b"short")
                self.close_connection = True
            else:
                body = b"ok"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


class _RecordingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    receiver: Receiver

    def verify_request(self, request: object, client_address: object) -> bool:
        self.receiver.connections.append(str(client_address))
        return True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # refused TLS handshakes are part of the tests


StartServer = Callable[..., Receiver]


@pytest.fixture
def start_server() -> Iterator[StartServer]:
    servers: list[_RecordingServer] = []

    def start(behaviour: str = "ok", tls: ssl.SSLContext | None = None) -> Receiver:
        server = _RecordingServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
        receiver = Receiver(port=server.server_address[1])
        server.receiver = receiver
        server.RequestHandlerClass = _handler(receiver, behaviour)
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: receiver.server_names.append(name)
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
        servers.append(server)
        return receiver

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def get(url: str, **client_options: object) -> httpx.Response:
    async def run() -> httpx.Response:
        async with guarded_client(timeout=5.0, **client_options) as client:  # type: ignore[arg-type]
            response = await client.get(url)
            await response.aread()
            return response

    return asyncio.run(run())


def test_a_name_rebound_to_loopback_is_refused_at_connect_time(start_server: StartServer) -> None:
    receiver = start_server()
    url = f"http://rebind.test:{receiver.port}/hook"
    with pytest.raises(httpx.ConnectError, match=r"127\.0\.0\.1.*loopback") as info:
        get(url, allow_private=False, resolve=answers("127.0.0.1"))
    assert isinstance(info.value.__cause__, BlockedConnection)
    assert receiver.connections == []
    assert receiver.requests == []


def test_allow_private_connects_to_the_resolved_address(start_server: StartServer) -> None:
    receiver = start_server()
    url = f"http://rebind.test:{receiver.port}/hook"
    response = get(url, allow_private=True, resolve=answers("127.0.0.1"))
    assert response.status_code == 200
    assert response.text == "ok"
    # The made-up name reached the server only through the injected answer; Host is the name.
    assert receiver.requests == [("GET", "/hook", f"rebind.test:{receiver.port}")]


def test_dns_rebinding_after_the_configuration_check_is_caught(start_server: StartServer) -> None:
    receiver = start_server()
    replies = iter([[PUBLIC_V4], ["127.0.0.1"]])  # public when checked, loopback when used

    def rebinding(host: str, port: int) -> list[str]:
        return next(replies)

    url = check_url(f"http://rebind.test:{receiver.port}/", allow_private=False, resolve=rebinding)
    with pytest.raises(httpx.ConnectError, match="loopback"):
        get(url, allow_private=False, resolve=rebinding)
    assert receiver.connections == []


def test_one_private_answer_among_public_ones_refuses_the_connection() -> None:
    mixed = answers(PUBLIC_V4, "169.254.169.254")
    with pytest.raises(httpx.ConnectError, match="metadata"):
        get("http://rebind.test/", allow_private=False, resolve=mixed)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1", "2130706433", "[::ffff:127.0.0.1]"])
def test_ip_literals_are_refused_at_connect_time(start_server: StartServer, host: str) -> None:
    receiver = start_server()
    with pytest.raises(httpx.ConnectError, match="loopback"):
        get(f"http://{host}:{receiver.port}/", allow_private=False, resolve=never)
    assert receiver.connections == []


def test_localhost_is_refused_at_connect_time_without_dns() -> None:
    with pytest.raises(httpx.ConnectError, match="localhost"):
        get("http://localhost:9/", allow_private=False, resolve=never)


def test_an_unresolvable_name_is_a_connect_error() -> None:
    def nxdomain(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(httpx.ConnectError, match="does not resolve"):
        get("http://nowhere.test/", allow_private=False, resolve=nxdomain)


def test_the_next_address_is_tried_when_one_refuses(start_server: StartServer) -> None:
    receiver = start_server()  # listens on 127.0.0.1 only: 127.0.0.2 refuses
    response = get(
        f"http://rebind.test:{receiver.port}/",
        allow_private=True,
        resolve=answers("127.0.0.2", "127.0.0.1"),
    )
    assert response.status_code == 200
    assert len(receiver.requests) == 1


def test_redirects_are_returned_not_followed(start_server: StartServer) -> None:
    receiver = start_server("redirect")
    response = get(
        f"http://rebind.test:{receiver.port}/", allow_private=True, resolve=answers("127.0.0.1")
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "http://127.0.0.1:1/elsewhere"
    assert len(receiver.requests) == 1
    assert len(receiver.connections) == 1


def test_errors_while_reading_the_body_are_httpx_errors(start_server: StartServer) -> None:
    receiver = start_server("truncated")
    with pytest.raises(httpx.RemoteProtocolError):
        get(
            f"http://rebind.test:{receiver.port}/",
            allow_private=True,
            resolve=answers("127.0.0.1"),
        )


# --- TLS: the certificate is checked against the URL's name, not the address ----------------


@dataclass(frozen=True)
class Pki:
    server: ssl.SSLContext
    client: ssl.SSLContext


def _pki(tmp_path: Path, name: str) -> Pki:
    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(days=1), now + datetime.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "leaf.pem", tmp_path / "leaf.key"
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return Pki(server=server, client=client)


def test_tls_verifies_the_url_name_while_connecting_to_the_checked_address(
    start_server: StartServer, tmp_path: Path
) -> None:
    pki = _pki(tmp_path, "rebind.test")
    receiver = start_server(tls=pki.server)
    response = get(
        f"https://rebind.test:{receiver.port}/",
        allow_private=True,
        resolve=answers("127.0.0.1"),
        ssl_context=pki.client,
    )
    assert response.status_code == 200
    assert receiver.server_names == ["rebind.test"]


def test_tls_refuses_a_certificate_for_another_name(
    start_server: StartServer, tmp_path: Path
) -> None:
    pki = _pki(tmp_path, "rebind.test")
    receiver = start_server(tls=pki.server)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        get(
            f"https://other.test:{receiver.port}/",
            allow_private=True,
            resolve=answers("127.0.0.1"),
            ssl_context=pki.client,
        )
    assert receiver.requests == []
