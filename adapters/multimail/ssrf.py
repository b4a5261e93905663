"""Guard for outgoing webhook requests against server-side request forgery (PRODUCT.md §9).

Rule 1: a webhook URL is http or https, has a host, no userinfo and a port in 1–65535.
Rule 2: unless the operator allows private destinations, every address the host resolves to
        must be publicly routable: loopback, private, link-local, shared, multicast,
        unspecified, reserved, documentation, broadcast and cloud metadata addresses are
        refused, also when wrapped in IPv6 (mapped, compatible, translated, 6to4, NAT64).
        ``localhost`` names and names that do not resolve are refused.
Rule 3: IP literals are read as the system resolver reads them (``127.1``, ``0x7f.1`` and
        ``2130706433`` are all 127.0.0.1), so the check and the connection agree.
Rule 4: the check is repeated when connecting (DNS rebinding): the network backend resolves
        the host once, checks every address and connects to a checked one; TLS still
        verifies the certificate against the URL's host name.
Rule 5: the client never follows redirects and takes nothing (proxies, netrc) from the
        environment.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from contextlib import contextmanager

import anyio
import httpcore
import httpx
from anyio import to_thread

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

ALLOWED_SCHEMES = frozenset({"http", "https"})
_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# First match wins, so the specific entries (metadata, broadcast) precede their ranges.
_FORBIDDEN_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("169.254.169.254/32"), "cloud metadata address"),
    (_V4("100.100.100.200/32"), "cloud metadata address"),
    (_V4("168.63.129.16/32"), "cloud metadata address"),
    (_V4("0.0.0.0/32"), "unspecified address"),
    (_V4("255.255.255.255/32"), "broadcast address"),
    (_V4("0.0.0.0/8"), "'this network' address (RFC 791)"),
    (_V4("10.0.0.0/8"), "private address (RFC 1918)"),
    (_V4("100.64.0.0/10"), "shared address space (RFC 6598)"),
    (_V4("127.0.0.0/8"), "loopback address"),
    (_V4("169.254.0.0/16"), "link-local address"),
    (_V4("172.16.0.0/12"), "private address (RFC 1918)"),
    (_V4("192.0.0.0/24"), "IETF protocol assignment (RFC 6890)"),
    (_V4("192.0.2.0/24"), "documentation address (RFC 5737)"),
    (_V4("192.88.99.0/24"), "6to4 relay anycast address (RFC 7526)"),
    (_V4("192.168.0.0/16"), "private address (RFC 1918)"),
    (_V4("198.18.0.0/15"), "benchmarking address (RFC 2544)"),
    (_V4("198.51.100.0/24"), "documentation address (RFC 5737)"),
    (_V4("203.0.113.0/24"), "documentation address (RFC 5737)"),
    (_V4("224.0.0.0/4"), "multicast address"),
    (_V4("240.0.0.0/4"), "reserved address"),
)

_FORBIDDEN_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("fd00:ec2::254/128"), "cloud metadata address"),
    (_V6("::/128"), "unspecified address"),
    (_V6("::1/128"), "loopback address"),
    (_V6("64:ff9b:1::/48"), "local-use NAT64 address (RFC 8215)"),
    (_V6("100::/64"), "discard-only address (RFC 6666)"),
    (_V6("2001::/32"), "Teredo tunnel address (RFC 4380)"),
    (_V6("2001:db8::/32"), "documentation address (RFC 3849)"),
    (_V6("3fff::/20"), "documentation address (RFC 9637)"),
    (_V6("fc00::/7"), "unique local (private) address"),
    (_V6("fe80::/10"), "link-local address"),
    (_V6("fec0::/10"), "site-local address (deprecated)"),
    (_V6("ff00::/8"), "multicast address"),
)

# IPv6 forms that carry an IPv4 address in their low 32 bits (6to4 is handled apart).
_EMBEDDING_V4: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::ffff:0:0/96"), "IPv4-mapped"),
    (_V6("::ffff:0:0:0/96"), "IPv4-translated"),
    (_V6("64:ff9b::/96"), "NAT64"),
    (_V6("::/96"), "IPv4-compatible"),
)
_SIX_TO_FOUR = _V6("2002::/16")
_GLOBAL_UNICAST_V6 = _V6("2000::/3")  # RFC 4291 §2.4: all else is special or unassigned

_LOCALHOST = "localhost"
_HOSTNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-._")
_INET_ATON_CHARS = frozenset("0123456789abcdefx.")


class UnsafeUrl(ValueError):
    """A webhook URL that may not be called; ``reason`` says why."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"webhook URL refused: {reason}")
        self.url = url
        self.reason = reason


class Unresolvable(UnsafeUrl):
    """The host name does not resolve (now). Not unsafe in itself: a caller may accept the
    URL, since every connection is checked again when it is made."""


class BlockedConnection(httpcore.ConnectError):
    """A connection refused by the guard at connect time (httpx raises ConnectError from it)."""


def system_resolve(host: str, port: int) -> list[str]:
    """Every address ``getaddrinfo`` gives for a TCP connection to host:port, in its order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def forbidden_address(ip: IPAddress) -> str | None:
    """Why ``ip`` may not be called, or None for a publicly routable address."""
    if isinstance(ip, ipaddress.IPv6Address):
        ip = ipaddress.IPv6Address(int(ip))  # drop any scope id: ranges are what matter
        embedded = _embedded_v4(ip)
        if embedded is not None:
            form, inner = embedded
            reason = forbidden_address(inner)
            return None if reason is None else f"{form} form of {inner}: {reason}"
        table: Iterable[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = _FORBIDDEN_V6
    else:
        table = _FORBIDDEN_V4
    for network, reason in table:
        if ip in network:
            return reason
    if isinstance(ip, ipaddress.IPv6Address) and ip not in _GLOBAL_UNICAST_V6:
        return "reserved address (outside IPv6 global unicast 2000::/3)"
    # Backstop for ranges registered after this table was written.
    return None if ip.is_global else "address not globally routable"


def _embedded_v4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address a wrapping IPv6 form carries, with the form's name."""
    if ip in _SIX_TO_FOUR:
        inner = ip.sixtofour
        return None if inner is None else ("6to4", inner)
    if int(ip) <= 1:  # :: and ::1 are themselves, not IPv4-compatible 0.0.0.0/0.0.0.1
        return None
    for network, form in _EMBEDDING_V4:
        if ip in network:
            return form, ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def literal_address(host: str) -> IPAddress | None:
    """The address an IP-literal host names (read as the C resolver does), or None."""
    text = host.strip("[]")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    # inet_aton takes 1-4 parts in decimal, octal or hex and ignores text after a space;
    # allow only the characters of those spellings so hostnames never match.
    if not text or not set(text.lower()) <= _INET_ATON_CHARS:
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(text))
    except OSError:
        return None


def is_localhost_name(host: str) -> bool:
    """``localhost`` and every name below it (RFC 6761 §6.3)."""
    name = host.lower().rstrip(".")
    return name == _LOCALHOST or name.endswith("." + _LOCALHOST)


def check_url(url: str, *, allow_private: bool, resolve: Resolver = system_resolve) -> str:
    """The normalised URL, or UnsafeUrl saying why it may not be a webhook destination.

    ``resolve`` blocks (DNS): call this off the event loop.
    """
    parsed = _parse(url)
    host = parsed.raw_host.decode("ascii")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    if not allow_private:
        for ip in _destination_addresses(url, host, port, resolve):
            reason = forbidden_address(ip)
            if reason is not None:
                raise UnsafeUrl(url, f"host {host!r} resolves to {ip}, a {reason}")
    return str(parsed)


def _parse(url: str) -> httpx.URL:
    """The URL as the client will read it, with the checks that need no DNS."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise UnsafeUrl(url, f"not a valid URL ({exc})") from exc
    if parsed.scheme not in ALLOWED_SCHEMES:
        raise UnsafeUrl(url, f"scheme must be http or https, not {parsed.scheme!r}")
    if parsed.userinfo:
        raise UnsafeUrl(url, "credentials (user:password@) are not allowed in the URL")
    if not parsed.raw_host:
        raise UnsafeUrl(url, "the URL has no host")
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise UnsafeUrl(url, f"port {parsed.port} is outside 1-65535")
    return parsed


def _destination_addresses(url: str, host: str, port: int, resolve: Resolver) -> list[IPAddress]:
    literal = literal_address(host)
    if literal is not None:
        return [literal]
    if is_localhost_name(host):
        raise UnsafeUrl(url, f"host {host!r} is a localhost name")
    if not set(host) <= _HOSTNAME_CHARS:
        raise UnsafeUrl(url, f"host {host!r} is not a valid host name")
    try:
        answers = resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise Unresolvable(url, f"host {host!r} does not resolve ({exc})") from exc
    if not answers:
        raise Unresolvable(url, f"host {host!r} does not resolve (no addresses)")
    return [_parse_answer(url, host, answer) for answer in answers]


def _parse_answer(url: str, host: str, answer: str) -> IPAddress:
    try:
        return ipaddress.ip_address(answer)
    except ValueError as exc:
        raise UnsafeUrl(url, f"host {host!r} resolved to {answer!r}, not an address") from exc


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Network backend that resolves, checks, then connects to a checked address."""

    def __init__(
        self,
        *,
        allow_private: bool,
        resolve: Resolver = system_resolve,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._allow_private = allow_private
        self._resolve = resolve
        self._inner = inner if inner is not None else httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                addresses = await self.checked_addresses(host, port)
                return await self._connect_first(addresses, port, local_address, socket_options)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"connecting to {host}:{port} timed out") from exc

    async def checked_addresses(self, host: str, port: int) -> list[IPAddress]:
        """Every address of ``host``, or BlockedConnection if one may not be called."""
        literal = literal_address(host)
        if literal is not None:
            addresses = [literal]
        else:
            addresses = await self._resolved(host, port)
        if not self._allow_private:
            for ip in addresses:
                reason = forbidden_address(ip)
                if reason is not None:
                    raise BlockedConnection(f"refused to connect to {host} ({ip}): {reason}")
        return addresses

    async def _resolved(self, host: str, port: int) -> list[IPAddress]:
        if not self._allow_private and is_localhost_name(host):
            raise BlockedConnection(f"refused to connect to {host}: a localhost name")
        try:
            answers = await to_thread.run_sync(self._resolve, host, port, abandon_on_cancel=True)
            addresses = [ipaddress.ip_address(answer) for answer in answers]
        except (OSError, UnicodeError, ValueError) as exc:
            raise httpcore.ConnectError(f"{host} does not resolve ({exc})") from exc
        if not addresses:
            raise httpcore.ConnectError(f"{host} does not resolve (no addresses)")
        return addresses

    async def _connect_first(
        self,
        addresses: list[IPAddress],
        port: int,
        local_address: str | None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None,
    ) -> httpcore.AsyncNetworkStream:
        """The first address that accepts; the last failure if none does."""
        options = list(socket_options or ())
        failure: httpcore.ConnectError | None = None
        for ip in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(ip), port, local_address=local_address, socket_options=options
                )
            except httpcore.ConnectError as exc:
                failure = exc
        assert failure is not None  # addresses is never empty
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise BlockedConnection("webhooks are never sent over a unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


# Most specific first: the first isinstance match wins.
_MAPPED_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextmanager
def _httpx_errors() -> Iterator[None]:
    """Re-raise httpcore errors as their httpx counterparts (the cause is kept)."""
    try:
        yield
    except Exception as exc:
        for source, target in _MAPPED_ERRORS:
            if isinstance(exc, source):
                raise target(str(exc)) from exc
        raise


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for chunk in self._stream:
                yield chunk

    async def aclose(self) -> None:
        closer = getattr(self._stream, "aclose", None)
        if closer is not None:
            await closer()


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport over an httpcore pool that connects through a GuardedBackend."""

    def __init__(self, backend: GuardedBackend, *, ssl_context: ssl.SSLContext | None) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            # httpx's defaults; idle connections expire so a host's new address is seen soon.
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            http1=True,
            http2=False,
            network_backend=backend,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = await self._pool.handle_async_request(core_request)
        assert isinstance(response.stream, AsyncIterable)  # an async pool streams asynchronously
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


def guarded_client(
    *,
    allow_private: bool,
    timeout: float,
    resolve: Resolver = system_resolve,
    ssl_context: ssl.SSLContext | None = None,
) -> httpx.AsyncClient:
    """An AsyncClient for webhook deliveries: guarded connects, no redirects, no environment.

    ``ssl_context`` defaults to verifying certificates against certifi's roots (no
    SSL_CERT_FILE from the environment either).
    """
    context = ssl_context if ssl_context is not None else httpx.create_ssl_context(trust_env=False)
    backend = GuardedBackend(allow_private=allow_private, resolve=resolve)
    return httpx.AsyncClient(
        transport=GuardedTransport(backend, ssl_context=context),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
    )
