"""Webhook payloads: the envelope of every event and the ``message.received`` data.

Theory of operation. An agent that receives ``message.received`` should not need a second
call (PRODUCT.md §9): `message_payload` puts the parsed message, its new text without the
quoted history (`reply_text`), its attachments' metadata with download URLs and the small
ones inline, the thread and the sender signals into one JSON-ready dict. Pure functions of a
record; no IO.

Rule 1 (data): everything that came in an email is data. Nothing from it is evaluated,
  trusted as markup or used as a key; it is copied into strings and lists.
Rule 2 (bounded): ``text`` and ``html`` are cut to ``body_limit`` UTF-8 bytes at a character
  boundary (``reply_text`` is read from the cut text); when either is cut, ``truncated`` is
  true and ``raw_url``/``full_url`` say where the whole message is. An attachment is inlined
  (``content_base64``) only when its size is at most ``inline_limit``, the raw bytes exist and
  still hold it (same sha256), and at most ``inline_count_limit`` are inlined (finding one
  walks the raw message once).
Rule 3 (linear): `reply_text` reads each line once with tests of bounded cost, so crafted
  text (thousands of "On … wrote:" lines, endless blank lines) costs linear time.
Rule 4 (conservative): `reply_text` drops only what is recognisably history or signature;
  a message without quotes, attributions or signature comes back whole (blank lines at its
  ends aside). A message that is nothing but quotes gives "".
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence

from multimail import mime
from multimail.records import Attachment, MessageRecord
from multimail.render import iso
from multimail_core import inbound, outbound

INLINE_LIMIT = 64 * 1024
BODY_LIMIT = 256 * 1024
INLINE_COUNT_LIMIT = 16


def event_payload(
    event_id: str,
    type: str,  # the PRODUCT.md §9 field name
    created_at_ms: int,
    account_id: str,
    mailbox_id: str | None,
    data: dict[str, object],
) -> dict[str, object]:
    """The envelope every webhook delivers: ``{id, type, created_at, account_id, mailbox_id,
    data}``, ``created_at`` in ISO 8601 UTC with milliseconds and ``Z``."""
    return {
        "id": event_id,
        "type": type,
        "created_at": iso(created_at_ms),
        "account_id": account_id,
        "mailbox_id": mailbox_id,
        "data": data,
    }


def message_payload(
    record: MessageRecord,
    *,
    public_url: str,
    inline_limit: int = INLINE_LIMIT,
    body_limit: int = BODY_LIMIT,
    inline_count_limit: int = INLINE_COUNT_LIMIT,
) -> dict[str, object]:
    """The ``message.received`` data for ``record`` (Rules 1 and 2); JSON-ready."""
    c, state = record.content, record.state
    base = f"{public_url.rstrip('/')}/v1/emails/{record.id}"
    text, text_cut = truncate_utf8(c.body_text, body_limit)
    html, html_cut = truncate_utf8(c.body_html, body_limit)
    truncated = text_cut or html_cut
    payload: dict[str, object] = {
        "email_id": record.id,
        "mailbox_id": state.mailbox_id,
        "account_id": state.account_id,
        "thread_id": state.thread_id,
        "direction": record.direction,
        "status": state.status.value,
        "message_id": c.message_id_header or None,
        "in_reply_to": c.in_reply_to,
        "references": list(c.references),
        "from": c.sender,
        "from_name": from_name(c.headers, c.sender),
        "to": list(c.to),
        "cc": list(c.cc),
        "subject": c.subject,
        "date": _first_header(c.headers, "date"),
        "received_at": iso(state.received_at) if isinstance(state, inbound.Inbound) else None,
        "sent_at": iso(state.created_at) if isinstance(state, outbound.Outbound) else None,
        "headers": [{"name": name, "value": value} for name, value in c.headers],
        "text": text,
        "html": html,
        "reply_text": reply_text(text or ""),  # of the kept text: bounded work
        "attachments": _attachments(record, base, inline_limit, inline_count_limit),
        "signals": _json_dict(record.meta.get("signals")),
        "defects": _json_list(record.meta.get("defects")),
        "requires_action": isinstance(state, inbound.Inbound) and inbound.requires_action(state),
        "truncated": truncated,
    }
    if truncated:
        payload["raw_url"] = f"{base}/raw"
        payload["full_url"] = base
    return payload


# --- attachments -------------------------------------------------------------------------


def _attachments(
    record: MessageRecord, base: str, inline_limit: int, count_limit: int
) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    inlined = 0
    for a in record.content.attachments:
        view: dict[str, object] = {
            "attachment_id": a.attachment_id,
            "filename": a.filename,
            "content_type": a.content_type,
            "size": a.size,
            "sha256": a.sha256,
            "url": f"{base}/attachments/{a.attachment_id}",
        }
        if inlined < count_limit and a.size <= inline_limit and record.raw is not None:
            data = _attachment_bytes(record.raw, a)
            if data is not None:
                view["content_base64"] = base64.b64encode(data).decode("ascii")
                inlined += 1
        out.append(view)
    return out


def _attachment_bytes(raw: bytes, a: Attachment) -> bytes | None:
    """The attachment's bytes from ``raw``, or None when ``raw`` does not hold the same ones
    (an unknown id, other bytes under the id, or raw past the parser's limits)."""
    try:
        found = mime.attachment(raw, a.attachment_id)
    except mime.Refused:
        return None
    if found is None:
        return None
    data = found[1]
    if len(data) != a.size or hashlib.sha256(data).hexdigest() != a.sha256:
        return None
    return data


# --- headers -----------------------------------------------------------------------------


def _first_header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


_QUOTED_PAIR = re.compile(r"\\(.)", re.S)
_SPACES = re.compile(r"\s+")


def from_name(headers: Sequence[tuple[str, str]], sender: str) -> str | None:
    """The display name in the stored From value for ``sender``, or None when it has none.

    Stored values are already decoded (RFC 2047), so a name that was encoded may hold
    specials (``Doe, John <j@x>``): the text before the angle-addr is taken as the name
    first, and only a value without one is read as an address list (``j@x (John)``)."""
    value = _first_header(headers, "from")
    if not value or not sender:
        return None
    head, sep, tail = value.rpartition("<")
    if sep and _angle_addr(tail).lower() == sender.lower():
        name = _unquote(head)
    else:
        parsed = mime.parse(b"From: " + value.encode("utf-8", "replace") + b"\r\n\r\n")
        name = parsed.sender_name if parsed.sender.lower() == sender.lower() else ""
    return name or None


def _angle_addr(tail: str) -> str:
    inner, _, _ = tail.partition(">")
    return _SPACES.sub("", inner)


def _unquote(phrase: str) -> str:
    text = phrase.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = _QUOTED_PAIR.sub(r"\1", text[1:-1])
    return _SPACES.sub(" ", text).strip()


# --- meta --------------------------------------------------------------------------------


def _json_dict(value: object) -> dict[str, object]:
    return dict(value) if isinstance(value, dict) else {}


def _json_list(value: object) -> list[object]:
    return list(value) if isinstance(value, list | tuple) else []


# --- truncation --------------------------------------------------------------------------


def truncate_utf8(text: str | None, limit: int) -> tuple[str | None, bool]:
    """``text`` cut to at most ``limit`` UTF-8 bytes at a character boundary, and whether it
    was cut. Only a prefix of at most ``limit`` characters is ever encoded."""
    if text is None:
        return None, False
    if len(text) <= limit // 4:  # at most 4 bytes a character: it fits
        return text, False
    data = text[: limit + 1].encode("utf-8", "surrogatepass")
    if len(data) <= limit and len(text) <= limit:
        return text, False
    end = limit
    while end > 0 and data[end] & 0xC0 == 0x80:  # back off a continuation byte
        end -= 1
    return data[:end].decode("utf-8", "surrogatepass"), True


# --- reply text --------------------------------------------------------------------------
# Each test below sees one line, or a window of at most _WINDOW lines, and only lines of at
# most _SHORT characters are matched against patterns: the cost per line is bounded.
_SHORT = 400
_WINDOW = 6

_WROTE = re.compile(
    r"(?:wrote|writes|schrieb|a écrit|escribió|ha scritto|schreef|skrev|escreveu|napisał)"
    r"\s?:\Z",
    re.I,
)
_OPENER = re.compile(r"(?:On|Am|Le|El|Il|Op|Den|Em|W dniu)\s", re.I)
_ORIGINAL = re.compile(
    r"-{2,}\s?(?:original message|forwarded message|ursprüngliche nachricht|"
    r"weitergeleitete nachricht|message d'origine|message transféré|mensaje original)"
    r"\s?-{2,}|begin forwarded message:",
    re.I,
)
_HEADER_FIELD = re.compile(
    r"\*?(?P<name>from|sent|date|to|cc|subject|von|gesendet|an|betreff|datum|de|envoyé|à|"
    r"objet|enviado|para|asunto|fecha)\s?\*?\s?:",
    re.I,
)
_DIGIT = re.compile(r"\d")
_FROM_FIELD = frozenset({"from", "von", "de"})
_SEPARATOR = re.compile(r"[_-]{10,}")
_MOBILE = re.compile(
    r"(?:sent from my |sent from mail for |sent from outlook|get outlook for |"
    r"von meinem .{1,40} gesendet|envoyé de mon )",
    re.I,
)
_VALEDICTION = re.compile(
    r"(?:best|best regards|kind regards|warm regards|warmest regards|regards|best wishes|"
    r"many thanks|thanks|thanks again|thank you|cheers|sincerely|yours sincerely|"
    r"yours truly|yours|all the best|mit freundlichen grüßen|viele grüße|liebe grüße|"
    r"beste grüße|gruß|grüße|cordialement|bien à vous|saludos|un saludo|atentamente)"
    r"\s?[,.!]?\Z",
    re.I,
)
_SIGNOFF_LINES = 4  # lines after a valediction that may still be a name and a title
_SIGNOFF_WIDTH = 60


def reply_text(text: str) -> str:
    """The new text of a message: quoted lines (``>``), their attribution line ("On … wrote:"),
    forwarded or original-message history and the signature left out (Rules 3 and 4)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept = _without_history(lines)
    cut = _signature_start(kept)
    body = _trimmed(kept[:cut])
    return "\n".join(body if body else _trimmed(kept))


def _without_history(lines: list[str]) -> list[str]:
    """The lines before the first unquoted history, quoted lines and attributions left out;
    blank lines that met across a removed block collapse to one."""
    kept: list[str] = []
    removed = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if _is_quoted(line):
            removed, i = True, i + 1
            continue
        if _starts_history(lines, i):
            break
        span, dated = _attribution(lines, i)
        if span and _quoted_follows(lines, i + span):
            removed, i = True, i + span
            continue
        if dated:
            break  # history that is not marked with ">" runs to the end
        if not (removed and not line.strip() and kept and not kept[-1].strip()):
            kept.append(line)
        removed = removed and not line.strip()
        i += 1
    return kept


def _is_quoted(line: str) -> bool:
    return line.startswith(">")


def _short(line: str) -> str | None:
    """The stripped line when it is short enough to match patterns against."""
    return line.strip() if len(line) <= _SHORT else None


def _attribution(lines: list[str], i: int) -> tuple[int, bool]:
    """How many lines (0, 1 or 2) an attribution such as "On <date>, <name> wrote:" takes at
    ``i`` (clients wrap it, so an opener line may end on the next one), and whether it is
    one even with no quoted block after it: it opens with "On" and holds a digit (a date)."""
    first = _short(lines[i])
    if not first:
        return 0, False
    span = 0
    if _WROTE.search(first):
        span = 1
    elif i + 1 < len(lines) and _OPENER.match(first):
        second = _short(lines[i + 1])
        span = 2 if second and _WROTE.search(second) else 0
    dated = bool(span) and _OPENER.match(first) is not None and _DIGIT.search(first) is not None
    return span, dated


def _quoted_follows(lines: list[str], start: int) -> bool:
    """Is the next non-blank line within the window at ``start`` quoted?"""
    for line in lines[start : start + _WINDOW]:
        if line.strip():
            return _is_quoted(line)
    return False


def _starts_history(lines: list[str], i: int) -> bool:
    """An original-message or forwarded marker, or a mail client's header block ("From: …"
    followed closely by "Sent:", "To:" or "Subject:"), optionally after a separator rule."""
    line = _short(lines[i])
    if not line:
        return False
    if _ORIGINAL.fullmatch(line):
        return True
    if _SEPARATOR.fullmatch(line):
        following = _next_nonblank(lines, i + 1)
        return following is not None and _header_block(lines, following)
    return _header_block(lines, i)


def _next_nonblank(lines: list[str], start: int) -> int | None:
    for j in range(start, min(len(lines), start + _WINDOW)):
        if lines[j].strip():
            return j
    return None


def _header_block(lines: list[str], i: int) -> bool:
    if _header_name(lines[i]) not in _FROM_FIELD:
        return False
    window = lines[i + 1 : i + _WINDOW]
    return any(_header_name(line) not in (None, *_FROM_FIELD) for line in window)


def _header_name(line: str) -> str | None:
    short = _short(line)
    match = _HEADER_FIELD.match(short) if short else None
    return match.group("name").lower() if match else None


def _signature_start(lines: list[str]) -> int:
    """Where the signature begins: an RFC 3676 §4.3 delimiter ("-- "), or near the end a
    mobile footer or a valediction followed by a few short lines; len(lines) if none."""
    content = [j for j, line in enumerate(lines) if line.strip()]
    for n, j in enumerate(content):
        if lines[j].rstrip() == "--":
            return j
        if len(content) - n - 1 <= _SIGNOFF_LINES and _is_signoff(lines, j, content[n + 1 :]):
            return j
    return len(lines)


def _is_signoff(lines: list[str], j: int, rest: list[int]) -> bool:
    line = _short(lines[j])
    if not line:
        return False
    if _MOBILE.match(line):
        return True
    short_rest = all(len(lines[k].strip()) <= _SIGNOFF_WIDTH for k in rest)
    return short_rest and _VALEDICTION.match(line) is not None


def _trimmed(lines: list[str]) -> list[str]:
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end]


__all__ = [
    "BODY_LIMIT",
    "INLINE_COUNT_LIMIT",
    "INLINE_LIMIT",
    "event_payload",
    "from_name",
    "message_payload",
    "reply_text",
    "truncate_utf8",
]
