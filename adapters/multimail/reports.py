"""Delivery reports: VERP return paths, DSN bounces, ARF complaints, and wild bounces.

Rule 1: ``parse_report`` is total: any bytes give a ``Report`` or ``None``, never an exception.
Rule 2: only the top of the message is read as a report (the message itself, or the direct
        parts of a top-level multipart/report); a report forwarded inside another message is
        mail, not a report addressed to us.
Rule 3: RFC 3464 DSNs and RFC 5965 ARF reports are read from their machine-readable parts.
        A bounce without them (qmail, old Exim/Postfix, Gmail text notices) is read on a best
        effort basis, and only when it plainly is one: a daemon sender (MAILER-DAEMON,
        postmaster, null Return-Path) and a bounce subject, or an ``X-Failed-Recipients`` field.
Rule 4: ``kind`` is "unknown" when a report was recognised but says nothing a caller should
        count: a DSN or wild bounce whose recipients could not be read, or an ARF report whose
        Feedback-Type is not a complaint (not-spam, auth-failure). Callers count only the
        other kinds. Disposition notifications (RFC 8098) and all other mail give ``None``.
Rule 5: a recipient is permanent iff its action is "failed" and its status class is 5
        (RFC 3463). A wild bounce without a status code gets "5.0.0" only when its text says
        the failure is permanent; otherwise its status is ``None``.
Rule 6: text is decoded as UTF-8 with replacement: everything read here is ASCII in practice.

Our outbound mail uses the VERP return path ``bounces+<message id>@<domain>`` and the
Message-ID ``<msg_…@domain>``; ``parse_verp`` and ``message_id_to_local_id`` map both back.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from email import policy
from email.message import Message
from email.parser import BytesParser, HeaderParser
from email.utils import getaddresses, parseaddr
from typing import Literal

from multimail_core.errors import InvalidValue
from multimail_core.ids import Kind, is_id

ReportKind = Literal["bounce", "delay", "complaint", "delivered", "unknown"]

VERP_PREFIX = "bounces+"
DSN_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
ARF_TYPE = "message/feedback-report"
RETURNED_TYPES = frozenset(
    {"message/rfc822", "text/rfc822-headers", "message/global", "message/global-headers"}
)
ACTIONS = frozenset({"failed", "delayed", "delivered", "relayed", "expanded"})
COMPLAINT_TYPES = frozenset({"abuse", "fraud", "virus", "other"})  # RFC 5965 §7.3
DAEMONS = frozenset({"mailer-daemon", "mailerdaemon", "mail-daemon", "postmaster"})
NOTICE_LIMIT = 65_536  # characters of a bounce's text read for addresses and codes
GUESS_LIMIT = 100  # recipients taken from a bounce's text

_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_FIELD = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*)[ \t]*:(.*)")
_ANGLE_ID = re.compile(r"<([^<>\s]+)>")
_ADDRESS = re.compile(  # bounded parts keep the scan linear on long runs of text
    r"[A-Za-z0-9._%+=/!#$&'*^`{|}~-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,8}"
)
_BODY_MESSAGE_ID = re.compile(r"^message-id:[ \t]*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|returned mail|returned to sender|delivery status notification|failure notice"
    r"|deliver\w* (?:has )?fail|fail\w* (?:to )?deliver|non-?\s?delivery|could not (?:be )?deliver"
    r"|could not send|delayed mail|delivery delay|mail system error",
    re.IGNORECASE,
)
_COPY_MARKER = re.compile(
    r"^[ \t-]*(?:original message follows|original message[ \t-]*$"
    r"|below this line is a copy of the message|this is a copy of the message"
    r"|undelivered message headers|returned message)",
    re.IGNORECASE | re.MULTILINE,
)
_PERMANENT = re.compile(r"permanent|fatal error", re.IGNORECASE)
_DELAY = re.compile(
    r"delay|warning|will (?:be )?retr|still being retried|will keep trying", re.IGNORECASE
)


@dataclass(frozen=True)
class RecipientStatus:
    """One recipient of a report. ``address`` is the Original-Recipient when given (the
    address we sent to), else the Final-Recipient; for complaints, Original-Rcpt-To."""

    address: str
    action: str  # an RFC 3464 action, "complained" (ARF) or "unknown"
    status: str | None  # "5.1.1"
    diagnostic: str | None
    permanent: bool


@dataclass(frozen=True)
class Report:
    kind: ReportKind
    recipients: tuple[RecipientStatus, ...]
    original_message_id: str | None  # "<id@host>", from the returned message
    envelope_id: str | None  # Original-Envelope-Id (RFC 3461 ENVID)
    feedback_type: str | None  # ARF Feedback-Type, lower case
    reporter: str | None  # Reporting-MTA name, else the report's From address
    original_mail_from: str | None = None  # ARF Original-Mail-From (our VERP return path)


# --- VERP and Message-ID attribution -------------------------------------------------------


def verp_address(message_id: str, domain: str) -> str:
    """``bounces+msg_…@domain``. :raises InvalidValue: on a bad message id or domain."""
    if not is_id(Kind.MESSAGE, message_id):
        raise InvalidValue("message_id", f"not a msg_ id: {message_id[:40]!r}")
    if not domain or "@" in domain or any(c.isspace() or c in "<>" for c in domain):
        raise InvalidValue("domain", f"not a domain: {domain[:80]!r}")
    return f"{VERP_PREFIX}{message_id}@{domain}"


def parse_verp(address: str) -> str | None:
    """The message id in a VERP address (angle brackets allowed), else None."""
    local, _, domain = address.strip().removeprefix("<").removesuffix(">").rpartition("@")
    if not domain or local[: len(VERP_PREFIX)].lower() != VERP_PREFIX:
        return None
    candidate = local[len(VERP_PREFIX) :]
    return candidate if is_id(Kind.MESSAGE, candidate) else None


def message_id_to_local_id(message_id: str, domain_ok: Callable[[str], bool]) -> str | None:
    """``<msg_…@ours>`` → ``msg_…`` when ``domain_ok(domain.lower())``, else None."""
    text = message_id.strip().removeprefix("<").removesuffix(">")
    left, _, domain = text.rpartition("@")
    if not is_id(Kind.MESSAGE, left) or not domain:
        return None
    return left if domain_ok(domain.lower()) else None


def local_message_id(report: Report, domain_ok: Callable[[str], bool]) -> str | None:
    """Our message a report is about: its returned Message-ID on one of our domains, else an
    ENVID with ``msg_`` syntax (RFC 3461 ENVID, when we send one), else the ARF
    Original-Mail-From read as a VERP address on one of our domains."""
    if report.original_message_id:
        found = message_id_to_local_id(report.original_message_id, domain_ok)
        if found:
            return found
    if report.envelope_id and is_id(Kind.MESSAGE, report.envelope_id):
        return report.envelope_id
    if report.original_mail_from:
        found = parse_verp(report.original_mail_from)
        _, _, domain = report.original_mail_from.strip().strip("<>").rpartition("@")
        if found and domain_ok(domain.lower()):
            return found
    return None


# --- parsing --------------------------------------------------------------------------------


def parse_report(raw: bytes) -> Report | None:
    """A delivery report (DSN, ARF, or a recognisable bounce) read from ``raw``, else None."""
    msg = BytesParser(policy=policy.compat32).parsebytes(raw)
    ctype = msg.get_content_type()
    if ctype in DSN_TYPES:
        return _dsn(msg, [msg])
    if ctype == ARF_TYPE:
        return _arf(msg, [msg])
    if ctype == "multipart/report":
        return _multipart_report(_with_boundary(msg))
    return _wild_bounce(msg) if _looks_like_bounce(msg) else None


def _multipart_report(msg: Message) -> Report | None:
    parts = _children(msg)
    report_type = _text(msg.get_param("report-type")).lower()
    if report_type == "feedback-report" or any(p.get_content_type() == ARF_TYPE for p in parts):
        return _arf(msg, parts)
    if report_type == "delivery-status" or any(p.get_content_type() in DSN_TYPES for p in parts):
        return _dsn(msg, parts)
    return None  # disposition notifications and other report types are not ours to count


def _dsn(msg: Message, parts: Sequence[Message]) -> Report:
    blocks = [
        block
        for part in parts
        if part.get_content_type() in DSN_TYPES
        for block in _field_blocks(_part_text(part))
    ]
    recipients = tuple(r for r in map(_dsn_recipient, blocks) if r is not None)
    if not recipients:  # a DSN without readable recipients: read the human part instead
        recipients = _recipients_from_text(msg, _human_text(parts))
    reporting_mta = _first_in(blocks, "reporting-mta")
    return Report(
        kind=_kind(recipients),
        recipients=recipients,
        original_message_id=_returned_message_id(parts),
        envelope_id=_first_in(blocks, "original-envelope-id") or None,
        feedback_type=None,
        reporter=_after_type(reporting_mta) if reporting_mta else _from_address(msg),
    )


def _arf(msg: Message, parts: Sequence[Message]) -> Report:
    blocks = [
        block
        for part in parts
        if part.get_content_type() == ARF_TYPE
        for block in _field_blocks(_part_text(part))
    ]
    raw_type = _first_in(blocks, "feedback-type")
    feedback_type = raw_type.split()[0].lower() if raw_type else None
    recipients = tuple(
        RecipientStatus(_bare(value), "complained", None, None, permanent=False)
        for block in blocks
        for name, value in block
        if name == "original-rcpt-to" and _bare(value)
    )
    reporting_mta = _first_in(blocks, "reporting-mta")
    mail_from = _bare(_first_in(blocks, "original-mail-from"))
    is_complaint = feedback_type is None or feedback_type in COMPLAINT_TYPES
    return Report(
        kind="complaint" if is_complaint else "unknown",
        recipients=_unique(recipients),
        original_message_id=_returned_message_id(parts),
        envelope_id=None,
        feedback_type=feedback_type,
        reporter=_after_type(reporting_mta) if reporting_mta else _from_address(msg),
        original_mail_from=mail_from or None,
    )


def _wild_bounce(msg: Message) -> Report:
    parts = _children(msg)
    body = _human_text(parts)
    recipients = _recipients_from_text(msg, body)
    return Report(
        kind=_kind(recipients),
        recipients=recipients,
        original_message_id=_returned_message_id(parts) or _body_message_id(body),
        envelope_id=None,
        feedback_type=None,
        reporter=_from_address(msg),
    )


# --- DSN fields (RFC 3464 §2) ----------------------------------------------------------------

Block = tuple[tuple[str, str], ...]


def _field_blocks(text: str) -> list[Block]:
    """Blank-line separated groups of ``Name: value`` fields; names lower case, values
    unfolded (§2.1: the syntax of RFC 822 header fields). Other lines are ignored."""
    blocks: list[Block] = []
    current: list[tuple[str, list[str]]] = []
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if current:
                blocks.append(tuple((name, " ".join(pieces)) for name, pieces in current))
            current = []
        elif line[0] in " \t" and current:
            current[-1][1].append(line.strip())
        elif match := _FIELD.fullmatch(line):
            current.append((match[1].lower(), [match[2].strip()]))
    return blocks


def _first(block: Block, name: str) -> str:
    return next((value for field, value in block if field == name), "")


def _first_in(blocks: Sequence[Block], name: str) -> str:
    return next((value for block in blocks if (value := _first(block, name))), "")


def _dsn_recipient(block: Block) -> RecipientStatus | None:
    original = _bare(_after_type(_first(block, "original-recipient")))
    final = _bare(_after_type(_first(block, "final-recipient")))
    address = original if "@" in original else final or original
    if not address:
        return None  # the per-message block, or stray text
    diagnostic = _after_type(_first(block, "diagnostic-code")) or None
    status = _status_in(_first(block, "status")) or _status_in(diagnostic or "")
    action = _action(_first(block, "action"), status)
    return RecipientStatus(address, action, status, diagnostic, _is_permanent(action, status))


def _action(text: str, status: str | None) -> str:
    words = text.split()
    word = words[0].lower() if words else ""
    if word in ACTIONS:
        return word
    # A missing or unknown action: the status class still says what happened.
    return {"5": "failed", "4": "delayed", "2": "delivered"}.get((status or "?")[0], "unknown")


def _is_permanent(action: str, status: str | None) -> bool:
    return action == "failed" and status is not None and status.startswith("5")


def _kind(recipients: Sequence[RecipientStatus]) -> ReportKind:
    actions = {r.action for r in recipients}
    if "failed" in actions:
        return "bounce"
    if "delayed" in actions:
        return "delay"
    if actions & {"delivered", "relayed", "expanded"}:
        return "delivered"
    return "unknown"


def _status_in(text: str) -> str | None:
    match = _STATUS.search(text)
    return f"{match[1]}.{int(match[2])}.{int(match[3])}" if match else None


def _after_type(value: str) -> str:
    """``"rfc822; a@b"`` → ``"a@b"``: the typed fields of §2.1.1 and §2.3.6."""
    kind, sep, rest = value.partition(";")
    return " ".join((rest if sep else kind).split())


def _bare(address: str) -> str:
    return address.strip().removeprefix("<").removesuffix(">").strip()


# --- bounces without a delivery-status part ---------------------------------------------------


def _looks_like_bounce(msg: Message) -> bool:
    if msg.get("x-failed-recipients"):  # only bounces carry it
        return True
    sender = _from_address(msg) or ""
    local = sender.rpartition("@")[0] if "@" in sender else sender
    from_daemon = local.lower() in DAEMONS
    null_path = _text(msg.get("return-path")).strip() == "<>"
    subject = _text(msg.get("subject"))
    return (from_daemon or null_path) and bool(_BOUNCE_SUBJECT.search(subject))


def _recipients_from_text(msg: Message, body: str) -> tuple[RecipientStatus, ...]:
    """Recipients and statuses from a human-readable bounce, read before the returned copy."""
    notice = _COPY_MARKER.split(body[:NOTICE_LIMIT], maxsplit=1)[0]
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", notice.replace("\r", "")) if p.strip()]
    coded = next((p for p in paragraphs if _status_in(p)), "")
    permanent = next((p for p in paragraphs if _PERMANENT.search(p)), "")
    any_status = _status_in(coded) or ("5.0.0" if permanent else None)
    delayed = bool(_DELAY.search(_text(msg.get("subject")))) or bool(_DELAY.search(notice))
    result = []
    for address in _failed_addresses(msg, notice):
        own = next((p for p in paragraphs if address.lower() in p.lower()), "")
        status = _status_in(own) or any_status
        action = "delayed" if delayed and not (status or "").startswith("5") else "failed"
        said = own if _status_in(own) else coded or permanent
        diagnostic = " ".join(said.split())[:500] or None
        result.append(
            RecipientStatus(address, action, status, diagnostic, _is_permanent(action, status))
        )
    return tuple(result)


def _failed_addresses(msg: Message, notice: str) -> list[str]:
    listed = [
        a for _, a in getaddresses([_text(v) for v in msg.get_all("x-failed-recipients", [])])
    ]
    found = listed if any("@" in a for a in listed) else _ADDRESS.findall(notice)
    own = {a.lower() for _, a in getaddresses([_text(msg.get(h)) for h in ("from", "to")])}
    seen: dict[str, str] = {}
    for address in found:
        key = address.lower()
        if "@" in key and key not in own and key.partition("@")[0] not in DAEMONS:
            seen.setdefault(key, address)
    return list(seen.values())[:GUESS_LIMIT]


# --- MIME plumbing ---------------------------------------------------------------------------


def _with_boundary(msg: Message) -> Message:
    """A multipart whose boundary parameter is lost (cut header) is re-read with the boundary
    its body uses: the first ``--token`` line."""
    if msg.is_multipart():
        return msg
    body = _leaf_bytes(msg)
    match = re.search(rb"^--([^\s\"\\][^\"\\\r\n]{0,69}?)[ \t]*\r?$", body, re.MULTILINE)
    if not match:
        return msg
    report_type = _text(msg.get_param("report-type")).replace('"', "")
    boundary = match[1].decode("ascii", "replace")
    head = f'Content-Type: multipart/report; report-type="{report_type}"; boundary="{boundary}"'
    data = head.encode("utf-8", "replace") + b"\n\n" + body
    reparsed = BytesParser(policy=policy.compat32).parsebytes(data)
    for name, value in msg.items():  # keep From/Subject for the reporter and text fallbacks
        if name.lower() != "content-type":
            reparsed[name] = value
    return reparsed if reparsed.is_multipart() else msg


def _children(msg: Message) -> list[Message]:
    if not msg.is_multipart():
        return [msg]
    return [p for p in msg.get_payload() if isinstance(p, Message)]


def _leaf_bytes(part: Message) -> bytes:
    """A leaf's body, transfer-decoded. Only ``decode=True`` is total: without it the stdlib
    decodes 8-bit text with the declared charset, which may be any string at all."""
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _human_text(parts: Sequence[Message]) -> str:
    """The text/plain parts, descending into multiparts but not into returned messages."""
    texts: list[str] = []
    for part in _leaves(parts):
        if part.get_content_type() == "text/plain":
            texts.append(_part_text(part))
    return "\n\n".join(texts)


def _leaves(parts: Sequence[Message], depth: int = 0) -> Iterator[Message]:
    for part in parts:
        if part.get_content_maintype() == "multipart" and part.is_multipart() and depth < 8:
            yield from _leaves(_children(part), depth + 1)
        else:
            yield part


def _part_text(part: Message) -> str:
    """The body of a part as text. The stdlib pre-parses message/* bodies into header blocks;
    they are laid out again, so every part reads the same way."""
    if not part.is_multipart():
        return _leaf_bytes(part).decode("utf-8", "replace")
    text = "\n\n".join(_message_text(sub) for sub in _children(part))
    encoding = _text(part.get("content-transfer-encoding")).strip().lower()
    return _decoded(text, encoding)


def _message_text(msg: Message) -> str:
    head = "\n".join(f"{name}: {_text(value)}" for name, value in msg.items())
    if msg.is_multipart():
        return head
    return f"{head}\n\n{_leaf_bytes(msg).decode('utf-8', 'replace')}"


def _decoded(text: str, encoding: str) -> str:
    """A message/* part should not be encoded (RFC 2046 §5.2), but some are."""
    data = text.encode("ascii", "replace")
    if encoding == "base64":
        try:
            return base64.b64decode(data).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            return text
    if encoding == "quoted-printable":
        return quopri.decodestring(data).decode("utf-8", "replace")
    return text


def _returned_message_id(parts: Sequence[Message]) -> str | None:
    for part in parts:
        if part.get_content_type() not in RETURNED_TYPES:
            continue
        if part.is_multipart():
            headers = next(iter(_children(part)), None)
        else:
            headers = HeaderParser(policy=policy.compat32).parsestr(_part_text(part))
        found = _angle_id(_text(headers.get("message-id"))) if headers is not None else None
        if found:
            return found
    return None


def _body_message_id(body: str) -> str | None:
    notice_end = _COPY_MARKER.search(body)
    match = _BODY_MESSAGE_ID.search(body, notice_end.start() if notice_end else 0)
    return match[1] if match else None


def _angle_id(value: str) -> str | None:
    if match := _ANGLE_ID.search(value):
        return f"<{match[1]}>"
    token = value.strip()
    return f"<{token}>" if "@" in token and not any(c.isspace() for c in token) else None


def _from_address(msg: Message) -> str | None:
    return parseaddr(_text(msg.get("from")))[1] or None


def _unique(recipients: Sequence[RecipientStatus]) -> tuple[RecipientStatus, ...]:
    seen: dict[str, RecipientStatus] = {}
    for recipient in recipients:
        seen.setdefault(recipient.address.lower(), recipient)
    return tuple(seen.values())


def _text(value: object) -> str:
    """A header or parameter value as text: compat32 hands out str, Header or tuples."""
    if value is None:
        return ""
    if isinstance(value, tuple):  # an RFC 2231 parameter: (charset, language, text)
        return str(value[-1])
    return str(value)


__all__ = [
    "RecipientStatus",
    "Report",
    "ReportKind",
    "local_message_id",
    "message_id_to_local_id",
    "parse_report",
    "parse_verp",
    "verp_address",
]
