"""Sender-authentication signals for an inbound message: DKIM, SPF, DMARC (PRODUCT.md §6).

Rule 1: ``authenticate`` never raises. A check that breaks reports its own ``temperror`` or
        ``permerror``; the other checks still run.
Rule 2: every DNS answer comes through a ``Resolver``; nothing here touches a global resolver
        and nothing is monkeypatched (pyspf gets a subclass, dkimpy a ``dnsfunc``).
Rule 3: the work is bounded: at most ``MAX_DKIM_SIGNATURES`` signatures are checked, SPF keeps
        RFC 7208's lookup limits, DMARC makes at most two queries, and no lookup starts after
        the time budget is spent (so the total is at most the budget plus one resolver timeout).
Rule 4: these are signals, not verdicts: what to do with a ``fail`` is decided elsewhere.

The organizational domain (RFC 7489 §3.2) is found by a heuristic, not the Public Suffix
List: the last two labels, or the last three when the TLD has two letters and the label
before it is a common second level (``co``, ``com``, ``org``, ``net``, ``ac``, ``gov``,
``edu``), so ``mail.example.co.uk`` → ``example.co.uk``. Suffixes it does not know
(``github.io``, ``s3.amazonaws.com``) make distinct owners look like one organization.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses
from typing import Literal, Protocol, TypeVar

import dkim
import dns.exception
import dns.name
import dns.resolver
import spf

DkimResult = Literal["pass", "fail", "none", "temperror", "permerror"]
SpfResult = Literal[
    "pass", "fail", "softfail", "neutral", "none", "temperror", "permerror", "skipped"
]
DmarcResult = Literal["pass", "fail", "none", "temperror"]
DmarcPolicy = Literal["none", "quarantine", "reject"]

MAX_DKIM_SIGNATURES = 5
RTYPES = frozenset({"A", "AAAA", "MX", "PTR", "TXT"})
_SECOND_LEVELS = frozenset({"co", "com", "org", "net", "ac", "gov", "edu"})
_POLICIES: frozenset[str] = frozenset({"none", "quarantine", "reject"})
_SPF_RESULTS = frozenset({"pass", "fail", "softfail", "neutral", "none", "temperror"})
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_DMARC_VERSION = re.compile(r"^\s*v\s*=\s*DMARC1\s*(?:;|$)")
_TXT_CODEC = ("utf-8", "surrogateescape")  # TXT data is bytes; this round-trips any byte

T = TypeVar("T")
_DKIM_PRECEDENCE: tuple[DkimResult, ...] = ("pass", "temperror", "fail", "permerror")
_DKIM_BROKEN: tuple[DkimResult, tuple[str, ...]] = ("permerror", ())
_SPF_BROKEN: tuple[SpfResult, str | None] = ("permerror", None)
_DMARC_BROKEN: tuple[DmarcResult, DmarcPolicy | None] = ("temperror", None)


class DnsTempError(Exception):
    """A lookup that may succeed later: timeout, SERVFAIL, no reachable server, no budget."""


class Resolver(Protocol):
    """DNS as the checks need it. ``None`` (or ``[]``) means NXDOMAIN or no data.

    Names are lowercase without the trailing dot. Answers are presentation text: A/AAAA an
    address, MX ``"10 mx.example.com"``, PTR a host name, TXT one record's strings joined.
    """

    def txt(self, name: str) -> list[str] | None: ...

    def lookup(self, name: str, rtype: str) -> list[str] | None: ...


def normalize_name(name: str) -> str:
    return name.strip().rstrip(".").lower()


class StaticResolver:
    """Answers from a table keyed ``(name, rtype)``; ``temp_failures`` raise DnsTempError.

    Every lookup is recorded in ``queries`` so tests can count the work done.
    """

    def __init__(
        self,
        records: Mapping[tuple[str, str], list[str]],
        *,
        temp_failures: Iterable[tuple[str, str]] = (),
    ) -> None:
        self._records = {(normalize_name(n), t.upper()): list(v) for (n, t), v in records.items()}
        self._failing = {(normalize_name(n), t.upper()) for n, t in temp_failures}
        self.queries: list[tuple[str, str]] = []

    def txt(self, name: str) -> list[str] | None:
        return self.lookup(name, "TXT")

    def lookup(self, name: str, rtype: str) -> list[str] | None:
        key = (normalize_name(name), rtype.upper())
        self.queries.append(key)
        if key in self._failing:
            raise DnsTempError(f"{key[0]} {key[1]}: temporary failure")
        answers = self._records.get(key)
        return list(answers) if answers is not None else None


class SystemResolver:
    """dnspython with a short timeout and a small, thread-safe TTL cache.

    Positive answers are kept for their TTL (at most ``max_ttl`` s), negative ones for
    ``negative_ttl`` s; temporary failures are never cached.
    """

    def __init__(
        self,
        timeout: float = 3.0,
        *,
        nameservers: Sequence[str] | None = None,
        port: int = 53,
        cache_size: int = 1024,
        max_ttl: float = 300.0,
        negative_ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolver: dns.resolver.Resolver | None
        try:
            self._resolver = dns.resolver.Resolver(configure=nameservers is None)
        except dns.exception.DNSException:  # no /etc/resolv.conf: every lookup is a temperror
            self._resolver = None
        if self._resolver is not None:
            if nameservers is not None:
                self._resolver.port = port
                self._resolver.nameservers = list(nameservers)
            self._resolver.timeout = timeout
            self._resolver.lifetime = timeout
        self._cache: OrderedDict[tuple[str, str], tuple[float, list[str] | None]] = OrderedDict()
        self._lock = threading.Lock()
        self._cache_size, self._max_ttl, self._negative_ttl = cache_size, max_ttl, negative_ttl
        self._clock = clock

    def txt(self, name: str) -> list[str] | None:
        return self.lookup(name, "TXT")

    def lookup(self, name: str, rtype: str) -> list[str] | None:
        key = (normalize_name(name), rtype.upper())
        if key[1] not in RTYPES:
            raise ValueError(f"unsupported record type {rtype!r}")
        cached = self._cached(key)
        if cached is not None:
            return cached[1]
        answers, ttl = self._query(*key)
        self._store(key, answers, ttl)
        return answers

    def _cached(self, key: tuple[str, str]) -> tuple[float, list[str] | None] | None:
        with self._lock:
            entry = self._cache.get(key)
            if entry is None or entry[0] <= self._clock():
                return None
            self._cache.move_to_end(key)
            return entry

    def _store(self, key: tuple[str, str], answers: list[str] | None, ttl: float) -> None:
        with self._lock:
            self._cache[key] = (self._clock() + ttl, answers)
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _query(self, name: str, rtype: str) -> tuple[list[str] | None, float]:
        if self._resolver is None:
            raise DnsTempError("no resolver configuration")
        try:
            answer = self._resolver.resolve(name, rtype, search=False, raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.YXDOMAIN):
            return None, self._negative_ttl
        except (dns.name.NameTooLong, dns.name.LabelTooLong, dns.name.EmptyLabel):
            return None, self._negative_ttl
        except dns.exception.DNSException as exc:  # Timeout, NoNameservers, ...
            raise DnsTempError(f"{name} {rtype}: {type(exc).__name__}") from exc
        if answer.rrset is None:
            return None, self._negative_ttl
        return [_rdata_text(rtype, r) for r in answer.rrset], min(answer.rrset.ttl, self._max_ttl)


def _rdata_text(rtype: str, rdata: object) -> str:
    if rtype == "TXT":
        chunks: Iterable[bytes] = rdata.strings  # type: ignore[attr-defined]
        return b"".join(chunks).decode(*_TXT_CODEC)
    if rtype == "MX":
        exchange = rdata.exchange.to_text(omit_final_dot=True)  # type: ignore[attr-defined]
        return f"{rdata.preference} {exchange}"  # type: ignore[attr-defined]
    if rtype == "PTR":
        return str(rdata.target.to_text(omit_final_dot=True))  # type: ignore[attr-defined]
    return str(rdata.address)  # type: ignore[attr-defined]


class _Budgeted:
    """A Resolver that refuses to start lookups once ``deadline`` (by ``clock``) has passed."""

    def __init__(self, inner: Resolver, deadline: float, clock: Callable[[], float]) -> None:
        self._inner, self._deadline, self._clock = inner, deadline, clock

    def txt(self, name: str) -> list[str] | None:
        return self.lookup(name, "TXT")

    def lookup(self, name: str, rtype: str) -> list[str] | None:
        if self._clock() > self._deadline:
            raise DnsTempError("time budget for authentication checks spent")
        if rtype.upper() == "TXT":
            return self._inner.txt(name)
        return self._inner.lookup(name, rtype)


# --- values ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signals:
    """What the sender-authentication checks found; ``to_dict`` is the JSON shape."""

    dkim: DkimResult
    dkim_domains: tuple[str, ...]
    spf: SpfResult
    spf_domain: str | None
    dmarc: DmarcResult
    dmarc_policy: DmarcPolicy | None
    from_domain: str | None

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["dkim_domains"] = list(self.dkim_domains)
        return data


@dataclass(frozen=True)
class DmarcRecord:
    """The tags of a DMARC record that matter here (RFC 7489 §6.3)."""

    p: DmarcPolicy
    sp: DmarcPolicy | None
    adkim: Literal["r", "s"]
    aspf: Literal["r", "s"]


# --- names -------------------------------------------------------------------------------


def normalize_domain(text: str) -> str | None:
    """Lowercase A-label form of a domain with at least two labels, or None if it is not one."""
    name = normalize_name(text)
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or labels[-1].isdigit():
        return None
    if not all(_LABEL.match(label) for label in labels):
        return None
    return name


def organizational_domain(domain: str) -> str:
    """The heuristic of the module docstring; ``domain`` is already normalized."""
    labels = domain.split(".")
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVELS:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def is_aligned(domain: str, from_domain: str, mode: Literal["r", "s"]) -> bool:
    """RFC 7489 §3.1: strict means identical, relaxed means the same organizational domain."""
    if mode == "s":
        return domain == from_domain
    return organizational_domain(domain) == organizational_domain(from_domain)


def from_domain_of(raw: bytes) -> str | None:
    """The domain of the first address in the first From header (RFC 7489 §6.6.1)."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw)
    values = headers.get_all("From") or []
    if not values:
        return None
    for _, address in getaddresses([str(values[0])]):
        if "@" in address:
            return normalize_domain(address.rpartition("@")[2])
    return None


# --- DKIM (RFC 6376) ---------------------------------------------------------------------


class DkimKeyLookup:
    """A dkimpy ``dnsfunc`` over a Resolver; records what happened for the caller.

    A temporary failure raises ``dkim.DnsTimeoutError`` (which dkimpy turns into ``False``)
    and sets ``temp_failed``; an absent key record sets ``missing``.
    """

    def __init__(self, resolver: Resolver) -> None:
        self._resolver = resolver
        self.temp_failed = False
        self.missing = False

    def __call__(self, name: bytes, timeout: float = 5) -> bytes | None:
        try:
            records = self._resolver.txt(normalize_name(name.decode("ascii")))
        except UnicodeDecodeError:
            records = None
        except DnsTempError as exc:
            self.temp_failed = True
            raise dkim.DnsTimeoutError(str(exc)) from exc
        if not records:
            self.missing = True
            return None
        # RFC 6376 §3.6.2.2 leaves several records undefined; the first one is used.
        return records[0].encode(*_TXT_CODEC)


def check_dkim(raw: bytes, resolver: Resolver) -> tuple[DkimResult, tuple[str, ...]]:
    """Verify the first MAX_DKIM_SIGNATURES signatures; the d= of each passing one."""
    try:
        verifier = dkim.DKIM(raw)
    except Exception:
        return ("permerror" if b"dkim-signature" in _header_block(raw).lower() else "none"), ()
    count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    outcomes = [_verify_one(verifier, i, resolver) for i in range(min(count, MAX_DKIM_SIGNATURES))]
    passing = tuple(dict.fromkeys(d for result, d in outcomes if result == "pass" and d))
    results = {result for result, _ in outcomes}
    for result in _DKIM_PRECEDENCE:
        if result in results:
            return result, passing
    return "none", ()


def _header_block(raw: bytes) -> bytes:
    ends = [i for i in (raw.find(b"\n\n"), raw.find(b"\n\r\n")) if i >= 0]
    return raw[: min(ends)] if ends else raw


def _verify_one(verifier: dkim.DKIM, idx: int, resolver: Resolver) -> tuple[DkimResult, str | None]:
    lookup = DkimKeyLookup(resolver)
    try:
        ok = verifier.verify(idx=idx, dnsfunc=lookup)
    except dkim.ValidationError:  # body hash mismatch, expired, i= outside d=
        return "fail", None
    except Exception:  # unparsable signature or key
        return "permerror", None
    if lookup.temp_failed:
        return "temperror", None
    if ok:
        domain = verifier.domain
        return "pass", normalize_domain(domain.decode("ascii", "replace"))
    return ("permerror" if lookup.missing else "fail"), None


# --- SPF (RFC 7208) ----------------------------------------------------------------------


class ResolverSpfQuery(spf.query):  # type: ignore[misc]
    """pyspf's query with its DNS method answered by a Resolver (limits kept as in pyspf)."""

    def __init__(self, *args: object, resolver: Resolver, **kwargs: object) -> None:
        self._resolver = resolver
        super().__init__(*args, **kwargs)

    def dns(
        self, name: str, qtype: str, cnames: object = None, ignore_void: bool = False
    ) -> list[object]:
        name = normalize_name(str(name))
        if not name or not all(0 < len(label) < 64 for label in name.split(".")):
            return []
        key = (name, qtype)
        if key not in self.cache:
            self.cache[key] = self._answer(name, qtype)
        result = list(self.cache[key])
        if not result and not ignore_void:
            self.void_lookups += 1  # RFC 7208 §4.6.4
            if self.void_lookups > spf.MAX_VOID_LOOKUPS:
                raise spf.PermError(f"Void lookup limit of {spf.MAX_VOID_LOOKUPS} exceeded")
        return result

    def _answer(self, name: str, qtype: str) -> list[object]:
        if qtype not in RTYPES:
            return []
        try:
            answers = self._resolver.lookup(name, qtype) or []
        except DnsTempError as exc:
            raise spf.TempError(f"DNS {exc}") from exc
        if qtype == "TXT":
            return [(a.encode(*_TXT_CODEC),) for a in answers]
        if qtype == "MX":
            return [_mx_pair(a) for a in answers]
        return list(answers)


def _mx_pair(text: str) -> tuple[int, str]:
    preference, _, exchange = text.strip().partition(" ")
    return int(preference), normalize_name(exchange)


def check_spf(
    resolver: Resolver, *, client_ip: str | None, helo: str | None, mail_from: str
) -> tuple[SpfResult, str | None]:
    """SPF for MAIL FROM (HELO when the reverse path is null); ``skipped`` without an IP."""
    sender = mail_from.strip().strip("<>")
    domain = sender.split("@", 1)[1] if "@" in sender else (sender or helo or "")
    spf_domain = normalize_domain(domain) if domain else None
    if client_ip is None:
        return "skipped", spf_domain
    if spf_domain is None:
        return "none", None
    try:
        query = ResolverSpfQuery(client_ip, sender, helo or "", resolver=resolver)
        result = query.check()[0]
    except Exception:
        return "permerror", spf_domain
    return (result if result in _SPF_RESULTS else "permerror"), spf_domain


# --- DMARC (RFC 7489) --------------------------------------------------------------------


def parse_dmarc(text: str) -> DmarcRecord | None:
    """A record per §6.3/§6.6.3 step 6; None when DMARC must not be applied."""
    tags: dict[str, str] = {}
    for part in text.split(";")[1:]:
        tag, sep, value = part.partition("=")
        if sep:
            tags.setdefault(tag.strip().lower(), value.strip().lower())
    p, sp = tags.get("p"), tags.get("sp")
    if p not in _POLICIES or (sp is not None and sp not in _POLICIES):
        if not tags.get("rua", "").startswith("mailto:"):
            return None
        p, sp = "none", None
    return DmarcRecord(
        p=p,  # type: ignore[arg-type]
        sp=sp,  # type: ignore[arg-type]
        adkim="s" if tags.get("adkim") == "s" else "r",
        aspf="s" if tags.get("aspf") == "s" else "r",
    )


def discover_dmarc(from_domain: str, resolver: Resolver) -> tuple[DmarcRecord, bool] | None:
    """§6.6.3: the From domain's record, else the organizational domain's.

    Returns the record and whether it came from the organizational domain on behalf of a
    subdomain (so ``sp`` applies). Raises DnsTempError.
    """
    org = organizational_domain(from_domain)
    for domain in dict.fromkeys((from_domain, org)):
        found = [t for t in resolver.txt(f"_dmarc.{domain}") or [] if _DMARC_VERSION.match(t)]
        if found:
            record = parse_dmarc(found[0]) if len(found) == 1 else None
            return (record, domain != from_domain) if record else None
    return None


def check_dmarc(
    resolver: Resolver,
    from_domain: str | None,
    dkim_result: tuple[DkimResult, tuple[str, ...]],
    spf_result: tuple[SpfResult, str | None],
) -> tuple[DmarcResult, DmarcPolicy | None]:
    if from_domain is None:
        return "none", None
    try:
        discovered = discover_dmarc(from_domain, resolver)
    except DnsTempError:
        return "temperror", None
    if discovered is None:
        return "none", None
    record, inherited = discovered
    policy = (record.sp or record.p) if inherited else record.p
    (dkim_status, dkim_domains), (spf_status, spf_domain) = dkim_result, spf_result
    dkim_ok = any(is_aligned(d, from_domain, record.adkim) for d in dkim_domains)
    spf_ok = spf_status == "pass" and is_aligned(spf_domain or "", from_domain, record.aspf)
    if dkim_ok or spf_ok:
        return "pass", policy
    # An undecided check might have passed: fail only on firm evidence.
    if "temperror" in (dkim_status, spf_status):
        return "temperror", policy
    return "fail", policy


# --- all together ------------------------------------------------------------------------


def authenticate(
    raw: bytes,
    *,
    client_ip: str | None,
    helo: str | None,
    mail_from: str,
    resolver: Resolver,
    budget: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
    from_address: str | None = None,
) -> Signals:
    """DKIM, SPF and DMARC for one message as received; never raises (Rule 1).

    ``from_address``: the From address when the caller has parsed the message already
    (the SMTP path has), saving a second parse of the header block."""
    dns_ = _Budgeted(resolver, clock() + budget, clock)
    dkim_result = _guarded(lambda: check_dkim(raw, dns_), _DKIM_BROKEN)
    spf_result = _guarded(
        lambda: check_spf(dns_, client_ip=client_ip, helo=helo, mail_from=mail_from),
        _SPF_BROKEN,
    )
    if from_address is not None:
        _, at, domain = from_address.rpartition("@")
        from_domain = _guarded(lambda: normalize_domain(domain), None) if at else None
    else:
        from_domain = _guarded(lambda: from_domain_of(raw), None)
    dmarc_result = _guarded(
        lambda: check_dmarc(dns_, from_domain, dkim_result, spf_result), _DMARC_BROKEN
    )
    return Signals(
        dkim=dkim_result[0],
        dkim_domains=dkim_result[1],
        spf=spf_result[0],
        spf_domain=spf_result[1],
        dmarc=dmarc_result[0],
        dmarc_policy=dmarc_result[1],
        from_domain=from_domain,
    )


def _guarded(check: Callable[[], T], fallback: T) -> T:
    try:
        return check()
    except Exception:
        return fallback


__all__ = [
    "MAX_DKIM_SIGNATURES",
    "DkimKeyLookup",
    "DmarcRecord",
    "DnsTempError",
    "Resolver",
    "ResolverSpfQuery",
    "Signals",
    "StaticResolver",
    "SystemResolver",
    "authenticate",
    "check_dkim",
    "check_dmarc",
    "check_spf",
    "discover_dmarc",
    "from_domain_of",
    "is_aligned",
    "normalize_domain",
    "organizational_domain",
    "parse_dmarc",
]
