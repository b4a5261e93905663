"""Email address syntax, deliberately narrow.

Rule 1: an address is ``local@domain``: a dot-atom local part (RFC 5322 §3.2.3) and a host
        name of LDH labels (RFC 5321 §4.1.2, RFC 1035 §2.3.1) with at least two labels and a
        non-numeric last label. Anything else raises InvalidAddress saying why.
Rule 2: refused on purpose: quoted-string local parts, comments, display names and angle
        brackets, source routes, address lists, IP-literal domains and non-ASCII local parts
        (SMTPUTF8, RFC 6531). Agents' addresses need none of them, and each one is an
        avenue for header injection or recipient smuggling.
Rule 3: no control character, whitespace, invisible format, private-use or unassigned code
        point anywhere.
Rule 4: RFC 5321 §4.5.3.1 limits: local part 1..64 octets, domain ≤ 253, address ≤ 254.
Rule 5: a Unicode domain is NFC-normalized, IDNA full stops (RFC 3490 §3.1) become dots,
        and each label goes through the stdlib IDNA 2003 codec (nameprep + punycode,
        RFC 3490). Its limits: it maps ß to "ss" and final sigma to sigma where IDNA 2008
        (RFC 5891) keeps them, and accepts symbols IDNA 2008 disallows. An ASCII ``xn--``
        label must round-trip through the codec. Stored domains are lowercase A-labels.
Rule 6: the local part keeps its case (RFC 5321 §2.4: it may be case-sensitive); mailbox
        lookup compares ``normalized()``.
Rule 7: plus-addressing (RFC 5233): ``name+tag`` has base ``name``; only the first '+' counts,
        and only when ``name`` is itself a valid local part.
Rule 8: an allowlist pattern is an exact address or ``*@domain`` — that domain only, no
        subdomain wildcard; both compare case-insensitively, after base().
"""

from __future__ import annotations

import string
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from encodings import idna

import icontract

from multimail_core.errors import InvalidAddress, InvalidValue

ATEXT = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~")
LDH = frozenset(string.ascii_letters + string.digits + "-")
MAX_LOCAL = 64
MAX_LABEL = 63
MAX_DOMAIN = 253
MAX_ADDRESS = 254
# RFC 3490 §3.1: these full stops separate labels just like U+002E.
IDNA_DOTS = ("\u3002", "\uff0e", "\uff61")
DOMAIN_WILDCARD = "*@"


def _is_dot_atom_text(text: str) -> bool:
    """RFC 5322 §3.2.3 dot-atom-text: runs of atext separated by single dots."""
    if not text or text[0] == "." or text[-1] == "." or ".." in text:
        return False
    return all(c == "." or c in ATEXT for c in text)


@icontract.ensure(
    lambda text, result: (
        not result or (1 <= len(text) <= MAX_LOCAL and text.isascii() and ".." not in text)
    )
)
def is_valid_local_part(text: str) -> bool:
    """A dot-atom local part of at most 64 octets; any case."""
    return _local_ok(text)


def _local_ok(text: str) -> bool:
    return len(text) <= MAX_LOCAL and _is_dot_atom_text(text)


def _is_ldh_label(label: str) -> bool:
    return (
        1 <= len(label) <= MAX_LABEL
        and label[0] != "-"
        and label[-1] != "-"
        and all(c in LDH for c in label)
    )


def _is_a_label_round_trip(label: str) -> bool:
    """An ASCII ``xn--`` label must decode and re-encode to itself (RFC 3490 §4.2)."""
    lowered = label.lower()
    try:
        return idna.ToASCII(idna.ToUnicode(lowered)).decode("ascii") == lowered
    except UnicodeError:
        return False


@icontract.ensure(
    lambda text, result: (
        not result or (3 <= len(text) <= MAX_DOMAIN and text.isascii() and "." in text)
    )
)
def is_valid_domain(text: str) -> bool:
    """An ASCII host name as stored (A-labels), any case: LDH labels of 1..63 octets without
    a leading or trailing hyphen, at least two labels, at most 253 octets, last label not
    all digits, every ``xn--`` label a valid A-label. Unicode domains are not valid *as
    stored*; ``parse_address`` converts them."""
    return _domain_ok(text)


def _domain_ok(text: str) -> bool:
    if not 1 <= len(text) <= MAX_DOMAIN:
        return False
    labels = text.split(".")
    if len(labels) < 2 or not all(_is_ldh_label(label) for label in labels):
        return False
    if labels[-1].isdigit():
        return False
    return all(_is_a_label_round_trip(label) for label in labels if label[:4].lower() == "xn--")


# One invariant, not six: CrossHair checks every (method, invariant) pair separately.
@icontract.invariant(
    lambda self: (
        1 <= len(self.local) <= MAX_LOCAL
        and 1 <= len(self.domain) <= MAX_DOMAIN
        and len(self.local) + 1 + len(self.domain) <= MAX_ADDRESS
        and self.domain.isascii()
        and self.domain == self.domain.lower()
        and _local_ok(self.local)  # the undecorated rules: this runs on every method call
        and _domain_ok(self.domain)
    )
)
@dataclass(frozen=True)
class Address:
    """A mailbox address. Build it with ``parse_address``; the invariants make an invalid
    Address a bug, not an input error."""

    local: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"

    @icontract.ensure(
        lambda self, result: (
            result == result.lower()
            and result.endswith("@" + self.domain)
            and len(result) == len(self.local) + 1 + len(self.domain)
        )
    )
    def normalized(self) -> str:
        """Lowercase ``local@domain``: the key for mailbox lookup and comparisons."""
        return f"{self.local.lower()}@{self.domain}"


@dataclass(frozen=True)
class _Refusal:
    reason: str


def _control_refusal(text: str) -> _Refusal | None:
    for i, c in enumerate(text):
        code = ord(c)
        if c in "\r\n":
            return _Refusal(f"line break at position {i}: CR and LF are never allowed")
        if code == 0:
            return _Refusal(f"NUL character at position {i}")
        if code < 0x20 or 0x7F <= code <= 0x9F:
            return _Refusal(f"control character U+{code:04X} at position {i}")
    return None


def _character_refusal(text: str) -> _Refusal | None:
    for i, c in enumerate(text):
        code = ord(c)
        if c.isspace():
            return _Refusal(f"whitespace U+{code:04X} at position {i}")
        if code > 0x7F and unicodedata.category(c) in ("Cf", "Co", "Cs", "Cn"):
            return _Refusal(f"invisible, private or unassigned code point U+{code:04X}")
    return None


def _form_refusal(text: str) -> _Refusal | None:
    """The exotic RFC 5322 forms refused on purpose (module Rule 2), named precisely."""
    if '"' in text:
        return _Refusal("quoted-string local parts are not accepted; use a dot-atom local part")
    if "<" in text or ">" in text:
        return _Refusal("display names and angle brackets are not accepted; give local@domain")
    if "(" in text or ")" in text:
        return _Refusal("comments '(...)' are not accepted")
    if "," in text:
        return _Refusal("address lists are not accepted: one address per value")
    if text.startswith("@") and ":" in text:
        return _Refusal("source routes ('@host:') are not accepted (RFC 5321 §4.1.2)")
    return None


def _local_refusal(local: str) -> _Refusal | None:
    if not local:
        return _Refusal("empty local part")
    if not local.isascii():
        return _Refusal(
            "non-ASCII local parts (SMTPUTF8, RFC 6531) are not accepted for mailbox addresses"
        )
    if len(local) > MAX_LOCAL:
        return _Refusal(f"local part longer than {MAX_LOCAL} octets (RFC 5321 §4.5.3.1.1)")
    if local[0] == "." or local[-1] == ".":
        return _Refusal("local part starts or ends with '.'")
    if ".." in local:
        return _Refusal("local part has consecutive dots")
    for c in local:
        if c != "." and c not in ATEXT:
            return _Refusal(f"character {c!r} is not allowed in a local part (RFC 5322 atext)")
    return None


def _a_label(label: str) -> str | _Refusal:
    """One label as a lowercase ASCII label (an A-label when it was Unicode)."""
    if not label:
        return _Refusal("empty domain label (leading, trailing or consecutive dots)")
    if label.isascii():
        ascii_label = label.lower()
    else:
        try:
            ascii_label = idna.ToASCII(label).decode("ascii").lower()
        except UnicodeError as exc:
            return _Refusal(f"label {label!r} has no A-label form (IDNA 2003): {exc}")
    if len(ascii_label) > MAX_LABEL:
        return _Refusal(f"domain label longer than {MAX_LABEL} octets (RFC 1035 §2.3.4)")
    if ascii_label[0] == "-" or ascii_label[-1] == "-":
        return _Refusal(f"domain label {ascii_label!r} starts or ends with '-'")
    for c in ascii_label:
        if c not in LDH:
            return _Refusal(f"character {c!r} is not allowed in a domain label")
    if ascii_label.startswith("xn--") and not _is_a_label_round_trip(ascii_label):
        return _Refusal(f"label {ascii_label!r} is not a valid A-label (RFC 3490 §4.2)")
    return ascii_label


def _domain(text: str) -> str | _Refusal:
    """``text`` as a lowercase A-label host name, or why not."""
    if not text:
        return _Refusal("empty domain")
    if text.startswith("["):
        return _Refusal("IP-literal domains ('[...]') are not accepted")
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
        for dot in IDNA_DOTS:
            text = text.replace(dot, ".")
    labels: list[str] = []
    for label in text.split("."):
        converted = _a_label(label)
        if isinstance(converted, _Refusal):
            return converted
        labels.append(converted)
    if len(labels) < 2:
        return _Refusal("domain needs at least two labels")
    if labels[-1].isdigit():
        return _Refusal("last domain label is all digits: IP addresses are not accepted")
    domain = ".".join(labels)
    if len(domain) > MAX_DOMAIN:
        return _Refusal(f"domain longer than {MAX_DOMAIN} octets (RFC 5321 §4.5.3.1.2)")
    return domain


def _parse(text: str) -> Address | _Refusal:
    # Controls first (the injection attempts), then the refused forms by name.
    refusal = _control_refusal(text) or _form_refusal(text) or _character_refusal(text)
    if refusal is not None:
        return refusal
    if "@" not in text:
        return _Refusal("missing '@'")
    if text.count("@") > 1:
        return _Refusal("more than one '@'")
    local, _, raw_domain = text.partition("@")
    refusal = _local_refusal(local)
    if refusal is not None:
        return refusal
    domain = _domain(raw_domain)
    if isinstance(domain, _Refusal):
        return domain
    if len(local) + 1 + len(domain) > MAX_ADDRESS:
        return _Refusal(f"address longer than {MAX_ADDRESS} octets (RFC 5321 §4.5.3.1.3)")
    return Address(local, domain)


@icontract.ensure(
    lambda text, result: (
        result.local == text.partition("@")[0]
        and (not text.isascii() or result.domain == text.partition("@")[2].lower())
        and _reparses_unchanged(result)
    )
)
def parse_address(text: str) -> Address:
    """Parse a bare ``local@domain`` (module rules 1-5); the local part keeps its case.

    :raises InvalidAddress: when ``text`` is not an address this module accepts; the
        message names the reason.
    """
    parsed = _parse(text)
    if isinstance(parsed, _Refusal):
        raise InvalidAddress(parsed.reason)
    return parsed


def _reparses_unchanged(address: Address) -> bool:
    return parse_address(str(address)) == address


def _split_plus(local: str) -> tuple[str, str | None]:
    name, plus, tag_text = local.partition("+")
    if plus and is_valid_local_part(name):
        return name, tag_text
    return local, None


@icontract.ensure(
    lambda address, result: (
        result.domain == address.domain
        and address.local.startswith(result.local)
        and _is_own_base(result)
    )
)
def base(address: Address) -> Address:
    """The address without its RFC 5233 subaddress: ``name+tag@d`` → ``name@d``.

    Only the first '+' separates; ``+tag@d`` (empty name) is its own base."""
    name, _ = _split_plus(address.local)
    return Address(name, address.domain)


@icontract.ensure(
    lambda address, result: (
        (result is None) == (base(address) == address)
        and (result is None or address.local == f"{base(address).local}+{result}")
    )
)
def tag(address: Address) -> str | None:
    """The subaddress after the first '+' (possibly empty), or None when there is none."""
    return _split_plus(address.local)[1]


def _is_own_base(address: Address) -> bool:
    return base(address) == address


def _normalized_pattern(text: str) -> str | _Refusal:
    """The normalized form of an allowlist pattern, or why it is not one."""
    refusal = _control_refusal(text) or _character_refusal(text)
    if refusal is not None:
        return refusal
    if text.startswith(DOMAIN_WILDCARD):
        domain_text = text[len(DOMAIN_WILDCARD) :]
        if "*" in domain_text:
            return _Refusal("subdomain wildcards are not supported; list each domain as *@domain")
        domain = _domain(domain_text)
        return domain if isinstance(domain, _Refusal) else DOMAIN_WILDCARD + domain
    if "@" not in text or text.startswith("@"):
        return _Refusal("give an address, or *@domain to allow a whole domain")
    if "*" in text.partition("@")[2]:
        return _Refusal("wildcards are supported only as *@domain")
    parsed = _parse(text)
    if isinstance(parsed, _Refusal):
        return parsed
    return base(parsed).normalized()


@icontract.ensure(
    lambda result: result == result.lower() and result.isascii() and _is_normalized_pattern(result)
)
def validate_allowlist_pattern(text: str) -> str:
    """Normalize an allowlist pattern: ``local@domain`` → base address, lowercase;
    ``*@domain`` → ``*@`` + lowercase A-label domain.

    :raises InvalidValue: when ``text`` is neither form.
    """
    normalized = _normalized_pattern(text)
    if isinstance(normalized, _Refusal):
        raise InvalidValue("allowlist", f"{text[:80]!r}: {normalized.reason}")
    return normalized


def _is_normalized_pattern(pattern: str) -> bool:
    return validate_allowlist_pattern(pattern) == pattern


def _lower_ascii(text: str) -> str | None:
    return text.lower() if text.isascii() else None


@icontract.ensure(
    lambda address, pattern, result: not result or pattern.lower().endswith("@" + address.domain)
)
def matches_allowlist(address: Address, pattern: str) -> bool:
    """True when ``address`` matches ``pattern`` (module Rule 8).

    Patterns should come from ``validate_allowlist_pattern``. A non-ASCII pattern (never a
    normalized one) matches nothing: when in doubt, hold the message."""
    lowered = _lower_ascii(pattern)
    if lowered is None:
        return False
    if lowered.startswith(DOMAIN_WILDCARD):
        return lowered[len(DOMAIN_WILDCARD) :] == address.domain
    local, at, domain = lowered.rpartition("@")
    if not at or domain != address.domain:
        return False
    return _split_plus(local)[0] == base(address).local.lower()


@icontract.ensure(
    lambda recipients, patterns, result: not result or (len(recipients) > 0 and len(patterns) > 0)
)
def all_allowlisted(recipients: Sequence[Address], patterns: frozenset[str]) -> bool:
    """True iff there is at least one recipient and every one matches some pattern."""
    if not recipients:
        return False
    return all(any(matches_allowlist(r, p) for p in patterns) for r in recipients)


@icontract.ensure(
    lambda text, result: (
        (result or not any(c in text for c in ("\r", "\n", "\x00")))
        and (not result or len(text) > 0)
    )
)
def has_header_breaking_chars(text: str) -> bool:
    """True when ``text`` holds a character that could end or split a header line: any C0
    control except TAB (CR, LF, NUL, ...), DEL, and the NEL / LINE SEPARATOR / PARAGRAPH
    SEPARATOR code points that ``str.splitlines`` also breaks on."""
    for c in text:
        code = ord(c)
        if (code < 0x20 and code != 0x09) or code in (0x7F, 0x85, 0x2028, 0x2029):
            return True
    return False
