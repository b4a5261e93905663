"""MIME for the shell: inbound bytes become a `Parsed` value, outbound fields become bytes.

Theory of operation. `parse` walks the MIME tree depth-first with an explicit stack: it reads
each part's header block, splits multipart bodies on their delimiter lines (RFC 2046 §5.1.1)
and decodes the leaves. Python 3.11's own `email` parsing is not fit for hostile input: its
structured-header parser is quadratic on crafted values (a 16 KB To of quotes takes seconds)
and raises IndexError/RecursionError on some, its feed parser recurses once per nesting level
and tests every open boundary on every line, and `html.parser` is quadratic on unclosed tags.
So structure and header fields are read here by linear scanners, and the stdlib supplies the
defect names (`email.errors`), the transfer codecs (`binascii`, `quopri`), the charsets
(`codecs`) and the date format.

Rule 1 (total): `parse` returns a `Parsed` for any bytes, or raises `Refused` (an SMTP reply)
  for a broken limit: size → 552 5.3.4; a header block with more than `max_header_fields`
  fields, or one field over `max_header_field_size`, at any depth → 554 5.6.0 (refusing beats
  storing a message whose headers were cut). Any other damage (bad base64 or QP, unknown
  charsets, broken encoded words, 8-bit header bytes, missing boundaries) becomes best-effort
  text plus a defect string.
Rule 2 (bounded): a multipart nested deeper than `max_depth` is kept as one opaque part and
  parts beyond `max_parts` are dropped, each with a defect. Every scan is linear in its input
  (possessive quantifiers, searches that lead with a literal, loops with a cap), so no input
  makes parsing hang: a crafted 25 MiB message takes seconds, a real one milliseconds.
Rule 3 (stable ids): an attachment is `att_<n>`, n its index in a depth-first walk over all
  parts (containers included), so the same bytes always give the same ids. The body is the
  first inline text/plain and the first inline text/html; every other leaf is an attachment,
  message/rfc822 included (it is not descended into: parse its bytes to read it).
Rule 4 (compose): CRLF, 7-bit, lines ≤ 998, no Bcc, CR or LF in any header value is a
  ValueError (header injection), and the output is a function of the arguments alone.
  Attachments make it multipart/mixed; `parse` of the output gives back each file's name,
  media type and bytes, under the ids `composed_attachment_ids` names.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import html
import quopri
import re
import unicodedata
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email import errors
from email.utils import format_datetime

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_size: int = 25 * MIB
    max_depth: int = 30
    max_parts: int = 1000
    max_header_fields: int = 1000
    max_header_field_size: int = MIB
    max_stored_header_chars: int = 8192  # each value in Parsed.headers, and the subject
    max_addresses: int = 1000  # per address field
    max_html_render_chars: int = 2 * MIB  # of html rendered as body_text when no text exists


class Refused(Exception):
    """The message breaks a limit; ``code`` and ``text`` are the SMTP reply."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text


@dataclass(frozen=True)
class ParsedAttachment:
    attachment_id: str
    filename: str | None
    content_type: str
    size: int
    sha256: str
    content_id: str | None
    disposition: str | None


@dataclass(frozen=True)
class Parsed:
    sender: str
    sender_name: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    reply_to: tuple[str, ...]
    subject: str
    date: str | None
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    headers: tuple[tuple[str, str], ...]
    body_text: str
    body_html: str | None
    attachments: tuple[ParsedAttachment, ...]
    defects: tuple[str, ...]


_NOTHING = Parsed(
    sender="",
    sender_name="",
    to=(),
    cc=(),
    reply_to=(),
    subject="",
    date=None,
    message_id=None,
    in_reply_to=None,
    references=(),
    headers=(),
    body_text="",
    body_html=None,
    attachments=(),
    defects=(),
)


class _Defects:
    """Ordered, deduplicated and bounded: a crafted message cannot grow the list."""

    _MAX = 100

    def __init__(self) -> None:
        self._seen: dict[str, None] = {}

    def add(self, kind: str | type[Exception], detail: str = "") -> None:
        name = kind if isinstance(kind, str) else kind.__name__
        text = f"{name}: {_PRINTABLE.sub('?', detail[:60])}" if detail else name
        if len(self._seen) < self._MAX:
            self._seen.setdefault(text, None)

    def items(self) -> tuple[str, ...]:
        return tuple(self._seen)


_PRINTABLE = re.compile(r"[^\x20-\x7e]")

# --- header blocks -----------------------------------------------------------------------
# A header block is the run of lines that look like header lines (the stdlib's own test:
# "From ", a name and a colon, or leading whitespace); it ends at the first line that does not.
_HEADERISH = rb"(?:From |[\x21-\x39\x3b-\x7e]*+:|[\t ])"
_HEADER_LINES = re.compile(
    rb"(?:" + _HEADERISH + rb"[^\r\n]*+(?:\r\n|\r|\n))*+(?:" + _HEADERISH + rb"[^\r\n]*+\Z)?"
)
_FIELD = re.compile(rb"([^\r\n]*+(?:(?:\r\n|\r|\n)[ \t][^\r\n]*+)*+)(?:\r\n|\r|\n|\Z)")
_FIELD_START = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?![ \t])")
_FIELD_END = re.compile(rb"\r\n(?![ \t])|\r(?![\n \t])|\n(?![ \t])")
_MIME_FIELD = re.compile(rb"(?<![^\r\n])(content-(?:type|transfer-encoding|disposition|id)):", re.I)
_UNFOLD = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True)
class _Block:
    fields: tuple[tuple[str, bytes], ...]  # (name, raw value); only the MIME ones for parts
    body_start: int


def _read_block(
    raw: bytes, start: int, end: int, limits: Limits, defects: _Defects, *, every_field: bool
) -> _Block:
    match = _HEADER_LINES.match(raw, start, end)
    stop = match.end() if match else start
    _check_block(raw, start, stop, limits)
    if raw[start : start + 1] in (b" ", b"\t"):
        defects.add(errors.FirstHeaderLineIsContinuationDefect)
    fields = (
        _all_fields(raw, start, stop, defects) if every_field else _mime_fields(raw, start, stop)
    )
    return _Block(fields, _skip_separator(raw, stop, end, defects))


def _check_block(raw: bytes, start: int, stop: int, limits: Limits) -> None:
    lines = raw.count(b"\n", start, stop) + raw.count(b"\r", start, stop)
    lines -= raw.count(b"\r\n", start, stop)
    if lines > limits.max_header_fields:
        for count, _ in enumerate(_FIELD_START.finditer(raw, start, stop), start=1):
            if count > limits.max_header_fields:
                raise Refused(554, "5.6.0 too many header fields")
    if stop - start > limits.max_header_field_size:
        for m in _FIELD.finditer(raw, start, stop):
            if m.end(1) - m.start(1) > limits.max_header_field_size:
                raise Refused(554, "5.6.0 header field too long")


def _all_fields(
    raw: bytes, start: int, stop: int, defects: _Defects
) -> tuple[tuple[str, bytes], ...]:
    out: list[tuple[str, bytes]] = []
    for i, m in enumerate(_FIELD.finditer(raw, start, stop)):
        text = m.group(1)
        if not text or text[:1] in b" \t":
            continue  # the end of the block, or a leading continuation line (defect noted)
        if text.startswith(b"From "):
            if i:
                defects.add(errors.MisplacedEnvelopeHeaderDefect)
            continue
        name, _, value = text.partition(b":")
        if not name:
            defects.add(errors.InvalidHeaderDefect, "missing header name")
            continue
        out.append((name.decode("ascii"), value))
    return tuple(out)


def _mime_fields(raw: bytes, start: int, stop: int) -> tuple[tuple[str, bytes], ...]:
    out: list[tuple[str, bytes]] = []
    for m in _MIME_FIELD.finditer(raw, start, stop):
        end = _FIELD_END.search(raw, m.end(), stop)
        out.append((m.group(1).decode("ascii"), raw[m.end() : end.start() if end else stop]))
    return tuple(out)


def _skip_separator(raw: bytes, stop: int, end: int, defects: _Defects) -> int:
    if stop >= end:
        return end
    if raw.startswith(b"\r\n", stop, end):
        return stop + 2
    if raw[stop] in b"\r\n":
        return stop + 1
    defects.add(errors.MissingHeaderBodySeparatorDefect)
    return stop


def _field_text(value: bytes, defects: _Defects, name: str, fallback: str | None = None) -> str:
    """Unfolded, stripped text; bytes that are not UTF-8 (RFC 6532) use the part's charset."""
    data = _UNFOLD.sub(b"", value).strip(b" \t")
    if data.isascii():
        return data.decode("ascii")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        defects.add("NonUTF8HeaderBytes", name.lower())
        return _decode_text(data, fallback or "utf-8", _Defects())


# --- charsets, transfer encodings, encoded words -----------------------------------------
# Codecs that are not text charsets, or whose decoder is slow Python (punycode is quadratic).
_UNSAFE_CODECS = frozenset(
    {"punycode", "idna", "undefined", "unicode_escape", "raw_unicode_escape", "palmos"}
)


def _codec(charset: str | None) -> str | None:
    name = (charset or "").strip().strip("\"'").lower()
    if not name or len(name) > 64:
        return None
    try:
        info = codecs.lookup(name)
        b"".decode(info.name)  # LookupError for codecs that are not text encodings (base64...)
    except (LookupError, ValueError):
        return None
    return None if info.name in _UNSAFE_CODECS else info.name


def _decode_text(data: bytes, charset: str | None, defects: _Defects) -> str:
    name = _codec(charset or "us-ascii")
    if name is None:
        defects.add("UnknownCharset", charset or "")
        name = "utf-8"
    if name == "ascii":
        if data.isascii():
            return data.decode("ascii")
        name = "utf-8"  # 8-bit data labelled (or defaulted to) US-ASCII: UTF-8 is the best bet
    try:
        return data.decode(name)
    except (UnicodeError, LookupError, ValueError, TypeError):
        defects.add(errors.UndecodableBytesDefect, name)
    try:
        return data.decode(name, "replace")
    except (UnicodeError, LookupError, ValueError, TypeError):
        return data.decode("utf-8", "replace")


_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")
_B64_INVALID = re.compile(rb"[^A-Za-z0-9+/=\s]")


def _b64decode(data: bytes, defects: _Defects) -> bytes:
    try:
        return binascii.a2b_base64(data)  # lenient: skips characters outside the alphabet
    except binascii.Error:
        pass
    clean = _B64_JUNK.sub(b"", data)
    if len(clean) % 4 == 1:
        defects.add(errors.InvalidBase64LengthDefect)
        clean = clean[:-1]
    else:
        defects.add(errors.InvalidBase64PaddingDefect)
    return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))


_IDENTITY = frozenset({"7bit", "8bit", "binary", "7bits", "8bits", ""})


def _transfer_decode(data: bytes, cte: str, defects: _Defects) -> bytes:
    if cte == "base64":
        if _B64_INVALID.search(data):
            defects.add(errors.InvalidBase64CharactersDefect)
        return _b64decode(data, defects)
    if cte == "quotedprintable":
        return quopri.decodestring(data)
    if cte not in _IDENTITY:
        defects.add("UnsupportedTransferEncoding", cte)
    return data


_EW = re.compile(r"=\?([^?\s]*+)\?([bBqQ])\?([^?]*+)\?=")
_MAX_WORDS = 1000


def _decode_words(text: str, defects: _Defects) -> str:
    """RFC 2047 encoded words; adjacent words of one charset are joined before decoding so
    a character split across two words survives (RFC 2047 §6.2 drops the space between)."""
    if "=?" not in text:
        return text
    out: list[str] = []
    run: list[bytes] = []
    run_charset = ""
    last = 0
    for n, m in enumerate(_EW.finditer(text)):
        if n >= _MAX_WORDS:
            break
        gap = text[last : m.start()]
        if not (run and not gap.strip()):
            out.append(_flush(run, run_charset, defects))
            out.append(gap)
        charset = m.group(1).split("*", 1)[0]
        data = _word_bytes(m.group(2), m.group(3), defects)
        if run and charset.lower() != run_charset.lower():
            out.append(_flush(run, run_charset, defects))
        run.append(data)
        run_charset = charset
        last = m.end()
    out.append(_flush(run, run_charset, defects))
    out.append(text[last:])
    return "".join(out)


def _flush(run: list[bytes], charset: str, defects: _Defects) -> str:
    if not run:
        return ""
    text = _decode_text(b"".join(run), charset, defects)
    run.clear()
    return text


def _word_bytes(kind: str, payload: str, defects: _Defects) -> bytes:
    data = payload.encode("utf-8", "surrogateescape")
    if kind in "qQ":
        return binascii.a2b_qp(data, header=True)
    return _b64decode(data, defects)


# --- MIME fields of a part -----------------------------------------------------------------
_PARAM_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*+"?|;|[^";]++', re.S)
_MAX_PARAM_TOKENS = 1000
_CTYPE = re.compile(r"[a-z0-9!#$%&'*+.^_`{|}~-]+/[a-z0-9!#$%&'*+.^_`{|}~-]+")
_COMMENT = re.compile(r"\([^()]*\)")
_SECTION = re.compile(r"([^*]+)\*(?:(\d{1,4})(\*?))?")
_QUOTED_PAIR = re.compile(r"\\(.)", re.S)


@dataclass(frozen=True)
class _Mime:
    content_type: str
    charset: str | None
    boundary: str | None
    cte: str
    disposition: str | None
    filename: str | None
    content_id: str | None


def _mime(fields: tuple[tuple[str, bytes], ...], default: str, defects: _Defects) -> _Mime:
    first: dict[str, bytes] = {}
    for name, value in fields:
        first.setdefault(name.lower(), value)

    def text(name: str) -> str | None:
        value = first.get(name)
        return None if value is None else _field_text(value, defects, name)

    ctype_text, disp_text = text("content-type"), text("content-disposition")
    main, params, extended = _parameterized(ctype_text or "", defects)
    ctype = (
        re.sub(r"\s+", "", _COMMENT.sub("", main)).lower() if ctype_text is not None else default
    )
    if not _CTYPE.fullmatch(ctype):
        defects.add(errors.InvalidHeaderDefect, "Content-Type")
        ctype = "text/plain"
    disposition_type, dparams, dextended = _parameterized(disp_text or "", defects)
    # an RFC 2231 value is already decoded text; RFC 2047 words are for the plain form only
    if dparams.get("filename"):
        filename, encoded = dparams["filename"], "filename" in dextended
    else:
        filename, encoded = params.get("name"), "name" in extended
    if filename and not encoded:
        filename = _decode_words(filename, defects)
    cte = re.sub(r"[^a-z0-9]", "", (text("content-transfer-encoding") or "").split(";")[0].lower())
    return _Mime(
        content_type=ctype,
        charset=params.get("charset"),
        boundary=params.get("boundary"),
        cte=cte,
        disposition=disposition_type.lower()[:64] or None,
        filename=_clean_filename(filename) if filename else None,
        content_id=(text("content-id") or None),
    )


def _parameterized(value: str, defects: _Defects) -> tuple[str, dict[str, str], frozenset[str]]:
    """``main; name=value; ...`` with quoted strings and RFC 2231 sections, and the names
    whose value came from RFC 2231 (``name*``) sections."""
    segments: list[list[str]] = [[]]
    for n, m in enumerate(_PARAM_TOKEN.finditer(value)):
        if n >= _MAX_PARAM_TOKENS:
            defects.add("ParametersTruncated")
            break
        if m.group() == ";":
            segments.append([])
        else:
            segments[-1].append(m.group())
    raw: list[tuple[str, str]] = []
    for segment in segments[1:]:
        name, eq, val = "".join(segment).partition("=")
        if eq and name.strip():
            raw.append((name.strip().lower(), _unquote(val.strip())))
    params, extended = _rfc2231(raw, defects)
    return "".join(segments[0]).strip(), params, extended


def _unquote(value: str) -> str:
    if value.startswith('"'):
        return _QUOTED_PAIR.sub(r"\1", value[1:-1] if value.endswith('"') else value[1:])
    return value


def _rfc2231(
    raw: list[tuple[str, str]], defects: _Defects
) -> tuple[dict[str, str], frozenset[str]]:
    plain: dict[str, str] = {}
    sections: dict[str, list[tuple[int, bool, str]]] = {}
    for name, value in raw:
        m = _SECTION.fullmatch(name)
        if m is None:
            plain.setdefault(name, value)
        else:
            number = int(m.group(2)) if m.group(2) else 0
            encoded = m.group(2) is None or m.group(3) == "*"
            sections.setdefault(m.group(1), []).append((number, encoded, value))
    for name, parts in sections.items():
        parts.sort(key=lambda p: p[0])
        charset, data = "us-ascii", []
        for i, (_, encoded, value) in enumerate(parts):
            if encoded and i == 0 and value.count("'") >= 2:
                charset, _, value = value.split("'", 2)
            data.append(urllib.parse.unquote_to_bytes(value) if encoded else value.encode())
        plain[name] = _decode_text(b"".join(data), charset or "us-ascii", defects)
    return plain, frozenset(sections)


def _clean_filename(name: str) -> str | None:
    """The last path segment, without control characters: a name, never a path."""
    base = re.split(r"[/\\]", name)[-1]
    base = re.sub(r"[\x00-\x1f\x7f]", "", base).strip()[:255]
    return base or None


# --- the MIME tree -------------------------------------------------------------------------
@dataclass(frozen=True)
class _Leaf:
    index: int
    mime: _Mime
    start: int
    end: int


@dataclass(frozen=True)
class _Tree:
    top: _Block
    top_mime: _Mime
    leaves: tuple[_Leaf, ...]


def _walk(raw: bytes, limits: Limits, defects: _Defects) -> _Tree:
    stack = [(0, len(raw), 0, "text/plain")]  # (start, end, depth, default content type)
    leaves: list[_Leaf] = []
    top: _Block | None = None
    top_mime: _Mime | None = None
    index = 0
    while stack:
        if index >= limits.max_parts:
            defects.add("TooManyParts")
            break
        start, end, depth, default = stack.pop()
        block = _read_block(raw, start, end, limits, defects, every_field=index == 0)
        mime = _mime(block.fields, default, defects)
        top, top_mime = top or block, top_mime or mime
        index += 1
        if mime.content_type.startswith("multipart/"):
            if depth >= limits.max_depth:
                defects.add("NestingTooDeep")
            else:
                kids = _split(raw, block.body_start, end, mime, limits.max_parts - index, defects)
                if kids is not None:
                    inner = (
                        "message/rfc822"
                        if mime.content_type == "multipart/digest"
                        else "text/plain"
                    )
                    stack.extend((s, e, depth + 1, inner) for s, e in reversed(kids))
                    continue
                if depth == 0:  # a message that only claims to be multipart: read its text
                    mime = replace(mime, content_type="text/plain")
        leaves.append(_Leaf(index - 1, mime, block.body_start, end))
    if top is None or top_mime is None:  # max_parts < 1: nothing was read
        return _Tree(_Block((), len(raw)), _mime((), "text/plain", defects), ())
    return _Tree(top, top_mime, tuple(leaves))


_DELIMITER_TAIL = rb"(--)?[ \t]*+(?:\r\n|\r|\n|\Z)"
_MAX_BOUNDARY = 200  # RFC 2046 allows 70


def _split(
    raw: bytes, start: int, end: int, mime: _Mime, budget: int, defects: _Defects
) -> list[tuple[int, int]] | None:
    """Body ranges of a multipart's parts, or None when it has no usable boundary."""
    if mime.cte not in _IDENTITY:
        defects.add(errors.InvalidMultipartContentTransferEncodingDefect)
    if not mime.boundary:
        defects.add(errors.NoBoundaryInMultipartDefect)
        return None
    if len(mime.boundary) > _MAX_BOUNDARY:
        defects.add("BoundaryTooLong")
        return None
    boundary = re.escape(mime.boundary.encode("utf-8", "replace"))
    delimiters = _delimiters(raw, start, end, boundary, budget + 2)
    if not delimiters:
        defects.add(errors.StartBoundaryNotFoundDefect)
        return None
    parts: list[tuple[int, int]] = []
    for i, (_, after, close) in enumerate(delimiters):
        if close:
            return parts
        if len(parts) >= budget:
            defects.add("TooManyParts")
            return parts
        stop = delimiters[i + 1][0] if i + 1 < len(delimiters) else end
        parts.append((after, max(after, stop)))
    defects.add(errors.CloseBoundaryNotFoundDefect)
    return parts


def _delimiters(
    raw: bytes, start: int, end: int, boundary: bytes, limit: int
) -> list[tuple[int, int, bool]]:
    """(start of the line break before it, end of its line, is close) for each delimiter line.

    The searches lead with a literal (``\\n--boundary``), which the regex engine scans for at
    memchr speed; a pattern that opened with a look-behind would test every byte."""
    found: list[tuple[int, int, bool]] = []
    head = re.compile(b"--" + boundary + _DELIMITER_TAIL).match(raw, start, end)
    if head:
        found.append((start, head.end(), head.group(1) is not None))
    for lead in (b"\n", b"\r"):
        for n, m in enumerate(
            re.compile(lead + b"--" + boundary + _DELIMITER_TAIL).finditer(raw, start, end)
        ):
            if n >= limit:
                break
            crlf = lead == b"\n" and m.start() > start and raw[m.start() - 1] == 13
            found.append((m.start() - crlf, m.end(), m.group(1) is not None))
    return sorted(found)[:limit]


# --- addresses -----------------------------------------------------------------------------
_ADDR_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*+"?|\\.?|[()<>,;:]|[^"\\()<>,;:]++', re.S)
_ATOM = r"[^\s\x00-\x1f\x7f\"@<>()\[\],;:\\]++"
_ADDR_SPEC = re.compile(rf'(?:"(?:[^"\\\r\n]|\\.)*+"|{_ATOM})@(?:{_ATOM}|\[[^\[\]\\\s]*+\])')
_MAX_ADDR_TOKENS = 100_000
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class _Mailbox:
    addr_spec: str
    name: str


class _Element:
    """One address being read: its phrase, its <angle-addr> and its comments."""

    def __init__(self) -> None:
        self.phrase: list[str] = []
        self.angle: list[str] | None = None
        self.in_angle = False
        self.comments: list[str] = []

    def take(self, piece: str) -> None:
        if self.in_angle:
            if piece == ">":
                self.in_angle = False
            elif self.angle is not None:
                self.angle.append(piece)
        elif piece == "<":
            self.angle, self.in_angle = [], True
        elif piece != ">":
            self.phrase.append(piece)

    def mailboxes(self, defects: _Defects, field: str) -> list[_Mailbox]:
        if self.angle is not None:
            spec, name = _spec(self.angle), _phrase(self.phrase, defects)
            if spec.startswith("@") and ":" in spec:  # obsolete source route, RFC 5322 §4.4
                spec = spec.split(":", 1)[1]
        else:
            spec, name = _spec(self.phrase), _phrase(self.comments, defects)
        if not spec:  # nothing, a comment, or the null path <>
            return []
        if _ADDR_SPEC.fullmatch(spec):
            return [_Mailbox(spec, name)]
        words = "".join(self.phrase).split()
        if self.angle is None and len(words) > 1 and all(map(_ADDR_SPEC.fullmatch, words)):
            defects.add("MissingAddressSeparator", field)
            return [_Mailbox(word, "") for word in words]
        defects.add("UnparsableAddress", field)
        return []


def _spec(tokens: list[str]) -> str:
    """An addr-spec's text: whitespace and comments (CFWS) go, quoted strings stay."""
    return "".join(t if t.startswith('"') else _SPACE.sub("", t) for t in tokens)


def _phrase(tokens: list[str], defects: _Defects) -> str:
    text = "".join(_unquote(t) if t.startswith('"') else t for t in tokens)
    return _SPACE.sub(" ", _CONTROLS.sub(" ", _decode_words(text, defects))).strip()


def _addresses(value: str, field: str, limits: Limits, defects: _Defects) -> tuple[_Mailbox, ...]:
    """An address list (RFC 5322 §3.4), groups flattened; what cannot be read is skipped."""
    found: list[_Mailbox] = []
    element, depth = _Element(), 0
    for n, m in enumerate(_ADDR_TOKEN.finditer(value)):
        piece = m.group()
        if n >= _MAX_ADDR_TOKENS or len(found) >= limits.max_addresses:
            defects.add("AddressListTruncated", field)
            return tuple(found)
        if depth:
            depth += {"(": 1, ")": -1}.get(piece, 0)
            if depth:
                element.comments.append(piece)
        elif piece == "(":
            depth = 1
            element.take(" ")
        elif element.in_angle:
            element.take(piece)
        elif piece in {",", ";", ":"}:
            if piece != ":":  # after ":" only the group's display name is dropped
                found.extend(element.mailboxes(defects, field))
            element = _Element()
        else:
            element.take(piece)
    return tuple([*found, *element.mailboxes(defects, field)][: limits.max_addresses])


# --- message ids ---------------------------------------------------------------------------
_MSG_ID = re.compile(r"<([^<>]*+)>")
_MAX_REFERENCES = 1000
_MAX_ID = 998


def _one_id(text: str | None) -> str | None:
    """The first <id>, or a bare token given without brackets; None when there is neither."""
    if not text:
        return None
    m = _MSG_ID.search(text)
    inner = _SPACE.sub("", m.group(1)) if m else text.strip()
    if not inner or _SPACE.search(inner) or len(inner) > _MAX_ID:
        return None
    return f"<{inner}>"


def _references(text: str | None, defects: _Defects) -> tuple[str, ...]:
    if not text:
        return ()
    ids = [f"<{i}>" for i in (_SPACE.sub("", m.group(1)) for m in _MSG_ID.finditer(text)) if i]
    ids = [i for i in ids if len(i) <= _MAX_ID + 2]
    if len(ids) > _MAX_REFERENCES:  # keep the thread's root and the most recent ancestors
        defects.add("ReferencesTruncated")
        ids = [ids[0], *ids[-(_MAX_REFERENCES - 1) :]]
    return tuple(ids)


# --- html to text --------------------------------------------------------------------------
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
_HTML_DROP = re.compile(r"<(script|style|title)\b[^<>]*+>.*?(?:</\1\s*+>|\Z)", re.I | re.S)
_HTML_BLOCK = re.compile(
    r"<\s*+/?\s*+(?:br|p|div|li|tr|h[1-6]|table|blockquote|pre|hr|ul|ol|dt|dd)\b[^<>]*+>", re.I
)
_HTML_TAG = re.compile(r"<[^<>]*+>")


def html_to_text(markup: str, limit: int = 2 * MIB) -> tuple[str, bool]:
    """A plain rendering of html (block elements become line breaks) and whether the markup
    was cut to `limit` characters first.

    Regexes rather than ``html.parser``, which is quadratic on unclosed tags; each pattern is
    linear (an unclosed comment or script runs to the end, as in a browser)."""
    cut = len(markup) > limit
    text = _HTML_DROP.sub("", _HTML_COMMENT.sub("", markup[:limit]))
    text = _HTML_TAG.sub("", _HTML_BLOCK.sub("\n", _SPACE.sub(" ", text)))
    text = re.sub(r" ?\n ?", "\n", re.sub(r"[^\S\n]+", " ", html.unescape(text)))
    return re.sub(r"\n{3,}", "\n\n", text).strip(), cut


# --- parse ---------------------------------------------------------------------------------
DEFAULT_LIMITS = Limits()
_SINGLETONS = ("from", "sender", "to", "cc", "reply-to", "subject", "date", "message-id")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]+")


def parse(raw: bytes, limits: Limits = DEFAULT_LIMITS) -> Parsed:
    """Read a message; raises only `Refused` (Rule 1)."""
    data = bytes(raw)
    if len(data) > limits.max_size:
        raise Refused(552, "5.3.4 message size exceeds fixed maximum message size")
    defects = _Defects()
    try:
        return _parse(data, limits, defects)
    except Refused:
        raise
    except Exception as exc:  # Rule 1's last line: a bug here must not lose a message
        defects.add("InternalParseError", type(exc).__name__)
        return replace(_NOTHING, defects=defects.items())


def attachment(
    raw: bytes, attachment_id: str, limits: Limits = DEFAULT_LIMITS
) -> tuple[ParsedAttachment, bytes] | None:
    """One attachment of `parse(raw)` with its decoded bytes; None for an unknown id."""
    data = bytes(raw)
    if len(data) > limits.max_size:
        raise Refused(552, "5.3.4 message size exceeds fixed maximum message size")
    try:
        tree = _walk(data, limits, _Defects())
        for leaf in _attachment_leaves(tree.leaves):
            if f"att_{leaf.index}" == attachment_id:
                content = _content(data, leaf, _Defects())
                return _attachment_record(leaf, content), content
    except Refused:
        raise
    except Exception:  # the same net as parse's: a bug must not become a crash
        return None
    return None


def _parse(raw: bytes, limits: Limits, defects: _Defects) -> Parsed:
    tree = _walk(raw, limits, defects)
    by_name: dict[str, list[bytes]] = {}
    for name, value in tree.top.fields:
        by_name.setdefault(name.lower(), []).append(value)
    for name in _SINGLETONS:
        if len(by_name.get(name, ())) > 1:
            defects.add("DuplicateHeader", name)
    charset, cap = tree.top_mime.charset, limits.max_stored_header_chars

    def text(name: str) -> str | None:
        values = by_name.get(name)
        return _field_text(values[0], defects, name, charset) if values else None

    def boxes(name: str) -> tuple[_Mailbox, ...]:
        return _addresses(text(name) or "", name, limits, defects)

    sender = boxes("from")
    if len(sender) > 1:
        defects.add("MultipleFrom")
    subjects = by_name.get("subject")
    body_text, body_html, attachments = _bodies(raw, tree, limits, defects)
    return Parsed(
        sender=sender[0].addr_spec if sender else "",
        sender_name=sender[0].name if sender else "",
        to=tuple(b.addr_spec for b in boxes("to")),
        cc=tuple(b.addr_spec for b in boxes("cc")),
        reply_to=tuple(b.addr_spec for b in boxes("reply-to")),
        subject=_stored(subjects[0], "subject", charset, cap, defects) if subjects else "",
        date=(text("date") or "")[:cap] or None,
        message_id=_one_id(text("message-id")),
        in_reply_to=_one_id(text("in-reply-to")),
        references=_references(text("references"), defects),
        headers=tuple(
            (name, _stored(value, name, charset, cap, defects)) for name, value in tree.top.fields
        ),
        body_text=body_text,
        body_html=body_html,
        attachments=attachments,
        defects=defects.items(),
    )


def _stored(value: bytes, name: str, charset: str | None, cap: int, defects: _Defects) -> str:
    """A header value as stored: unfolded, decoded, on one line (encoded words may carry CR,
    LF or NUL), at most `cap` characters; only the first 2 × cap are decoded."""
    text = _field_text(value, defects, name, charset)[: 2 * cap]
    return _CONTROLS.sub(" ", _decode_words(text, defects)).strip()[:cap]


def _bodies(
    raw: bytes, tree: _Tree, limits: Limits, defects: _Defects
) -> tuple[str, str | None, tuple[ParsedAttachment, ...]]:
    text_leaf, html_leaf = _body_leaves(tree.leaves)
    html_body = _leaf_text(raw, html_leaf, defects) if html_leaf else None
    if text_leaf:
        body = _leaf_text(raw, text_leaf, defects)
    elif html_body is not None:
        body, cut = html_to_text(html_body, limits.max_html_render_chars)
        if cut:
            defects.add("HtmlRenderTruncated")
    else:
        body = ""
    attachments = tuple(
        _attachment_record(leaf, _content(raw, leaf, defects))
        for leaf in _attachment_leaves(tree.leaves)
    )
    return body, html_body, attachments


def _body_leaves(leaves: tuple[_Leaf, ...]) -> tuple[_Leaf | None, _Leaf | None]:
    """The first inline text/plain and the first inline text/html (Rule 3)."""
    text = html_leaf = None
    for leaf in leaves:
        mime = leaf.mime
        if mime.disposition == "attachment" or mime.filename:
            continue
        if text is None and mime.content_type == "text/plain":
            text = leaf
        elif html_leaf is None and mime.content_type == "text/html":
            html_leaf = leaf
    return text, html_leaf


def _attachment_leaves(leaves: tuple[_Leaf, ...]) -> tuple[_Leaf, ...]:
    bodies = _body_leaves(leaves)
    return tuple(leaf for leaf in leaves if leaf not in bodies)


def _content(raw: bytes, leaf: _Leaf, defects: _Defects) -> bytes:
    return _transfer_decode(raw[leaf.start : leaf.end], leaf.mime.cte, defects)


def _leaf_text(raw: bytes, leaf: _Leaf, defects: _Defects) -> str:
    text = _decode_text(_content(raw, leaf, defects), leaf.mime.charset, defects)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _attachment_record(leaf: _Leaf, content: bytes) -> ParsedAttachment:
    mime = leaf.mime
    return ParsedAttachment(
        attachment_id=f"att_{leaf.index}",
        filename=mime.filename,
        content_type=mime.content_type,
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        content_id=mime.content_id[:_MAX_ID] if mime.content_id else None,
        disposition=mime.disposition,
    )


def has_bare_line_endings(data: bytes) -> bool:
    """A LF without CR before it, or a CR without LF after it (SMTP smuggling, RFC 5321 §2.3.8).

    Three memchr-speed counts: every CR and every LF belongs to a CRLF exactly when all
    three counts agree."""
    crlf = data.count(b"\r\n")
    return data.count(b"\r") != crlf or data.count(b"\n") != crlf


# --- compose -------------------------------------------------------------------------------
_MANAGED = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
    }
)
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")
_ASCII_ADDR = re.compile(r"[\x21-\x7e]+")
_FOLD_AT = 78
_MAX_LINE = 998
_EW_BYTES = 42  # 56 base64 characters: "Subject: " and one encoded word stay within 78


#: (filename, media type, bytes) of one file attached to a composed message
AttachmentData = tuple[str, str, bytes]
MAX_FILENAME = 255
# bidirectional controls can make a name read differently from what it is ("…\u202efdp.exe")
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_COMPOSITE = ("multipart/", "message/")
_PARAM_SAFE = "!#$&+^`{|}~"  # RFC 2231 attribute-char that ``quote`` would escape
_SECTION_CHARS = 56


def filename_problem(name: str) -> str | None:
    """Why ``compose`` refuses ``name`` as an attachment's filename, else None: 1–255
    characters; no control, line-separator or bidirectional-control character, no ``/`` or
    ``\\``, not ``.`` or ``..``, no space at either end. What passes comes back from `parse`
    unchanged (its cleaning strips paths, control characters and surrounding spaces)."""
    if not 1 <= len(name) <= MAX_FILENAME:
        return f"must be 1 to {MAX_FILENAME} characters"
    for char in name:
        if unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp") or char in _BIDI:
            return f"must not contain control characters (found U+{ord(char):04X})"
        if char in "/\\":
            return "must be a name, not a path: no / or \\"
    if name.strip() != name:
        return "must not begin or end with a space"
    if name in (".", ".."):
        return "must be a file name, not . or .."
    return None


def media_type_problem(value: str) -> str | None:
    """Why ``compose`` refuses ``value`` as an attachment's media type, else None: a bare
    ``type/subtype`` of RFC 2045 token characters (no parameters), at most 255 characters,
    and not composite: multipart/* and message/* bodies may not be base64-encoded
    (RFC 2045 §6.4, RFC 2046 §5.2.1)."""
    lowered = value.lower()
    if len(value) > MAX_FILENAME or not _CTYPE.fullmatch(lowered):
        return "must be a media type such as application/pdf: type/subtype, no parameters"
    if lowered.startswith(_COMPOSITE):
        return (
            "multipart/* and message/* cannot be sent base64-encoded as an attachment; "
            "send the bytes as application/octet-stream"
        )
    return None


def composed_attachment_ids(count: int, *, alternative: bool) -> tuple[str, ...]:
    """The ids `parse` gives the attachments of a message ``compose`` made (Rule 3): the
    multipart/mixed is part 0, the body part 1 (a multipart/alternative adds its text and
    HTML leaves, 2 and 3), then the attachments in order."""
    first = 4 if alternative else 2
    return tuple(f"att_{first + i}" for i in range(count))


def compose(
    *,
    sender: str,
    display_name: str | None,
    to: Sequence[str],
    cc: Sequence[str],
    subject: str,
    body_text: str,
    body_html: str | None,
    message_id: str,
    date: datetime | int,
    in_reply_to: str | None,
    references: Sequence[str],
    extra_headers: Sequence[tuple[str, str]] = (),
    attachments: Sequence[AttachmentData] = (),
) -> bytes:
    """An RFC 5322 message (Rule 4). Bodies get LF line breaks and a final one when missing;
    ValueError for CR/LF in a header, a bad address or id, a naive datetime, an extra header
    that names a managed field (Bcc among them), a line that cannot fit in 998 octets, or an
    attachment whose filename or media type is refused (``filename_problem``,
    ``media_type_problem``).

    With attachments the message is multipart/mixed: the body as it would be alone, then
    each file base64-encoded (76-character lines) with its name in Content-Type ``name`` and
    Content-Disposition ``filename``: quoted ASCII, plus RFC 2231 ``*=utf-8''…`` when the
    name is not plain ASCII (or holds ``=?``, which readers would take for RFC 2047)."""
    lines = [_fold("From", _mailbox(display_name, sender))]
    if to:
        lines.append(_fold("To", ", ".join(_address(a) for a in to)))
    if cc:
        lines.append(_fold("Cc", ", ".join(_address(a) for a in cc)))
    lines.append(_fold("Subject", _unstructured(subject)))
    lines.append(_fold("Date", format_datetime(_datetime(date))))
    lines.append(_fold("Message-ID", _id(message_id)))
    if in_reply_to:
        lines.append(_fold("In-Reply-To", _id(in_reply_to)))
    if references:
        lines.append(_fold("References", " ".join(_id(r) for r in references)))
    for name, value in extra_headers:
        if not _FIELD_NAME.fullmatch(name) or name.lower() in _MANAGED:
            raise ValueError(f"header name not allowed: {name!r}")
        lines.append(_fold(name, _unstructured(value)))
    lines.append("MIME-Version: 1.0")
    digest = hashlib.sha256(message_id.encode("utf-8", "replace")).hexdigest()[:32]
    # neither boundary is a prefix of the other, and neither can occur in base64 or QP
    boundary, mixed = "=_mm_" + digest, "=_mmx_" + digest
    head = "\r\n".join(lines).encode("ascii") + b"\r\n"
    if not attachments:
        return head + _body(body_text, body_html, boundary, (boundary,))
    files = [_attachment_part(*a) for a in attachments]
    chunks = [
        _fold("Content-Type", f'multipart/mixed; boundary="{mixed}"').encode("ascii"),
        b"\r\n\r\n",
        f"--{mixed}\r\n".encode(),
        _body(body_text, body_html, boundary, (boundary, mixed)),
    ]
    for part in files:
        chunks.append(f"\r\n--{mixed}\r\n".encode() + part)
    chunks.append(f"\r\n--{mixed}--\r\n".encode())
    return head + b"".join(chunks)


def _body(text: str, html: str | None, boundary: str, avoid: Sequence[str]) -> bytes:
    """The body entity (its Content-* headers, a blank line, the content): one text/plain
    part, or a multipart/alternative of text and HTML."""
    if html is None:
        part_head, part_body = _text_part("plain", text, avoid)
        return part_head + b"\r\n" + part_body
    content_type = _fold("Content-Type", f'multipart/alternative; boundary="{boundary}"')
    chunks = [content_type.encode("ascii") + b"\r\n\r\n"]
    for subtype, body in (("plain", text), ("html", html)):
        part_head, part_body = _text_part(subtype, body, avoid)
        chunks.append(f"--{boundary}\r\n".encode() + part_head + b"\r\n" + part_body + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks)


def _text_part(subtype: str, text: str, avoid: Sequence[str]) -> tuple[bytes, bytes]:
    """Headers and encoded body of one UTF-8 text part; the body ends with CRLF unless empty.
    Text holding one of the ``avoid`` boundaries is encoded (QP or base64 cannot hold one)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text and not text.endswith("\n"):
        text += "\n"
    data = text.encode("utf-8")
    if _is_7bit(data) and not any(b.encode() in data for b in avoid):
        cte, body = "7bit", data
    else:  # neither encoding can contain "=_", the boundaries' prefix
        qp = quopri.encodestring(data)
        b64 = base64.encodebytes(data)
        cte, body = ("quoted-printable", qp) if len(qp) <= len(b64) else ("base64", b64)
    head = f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}\r\n'
    return head.encode("ascii"), body.replace(b"\n", b"\r\n")


def _attachment_part(filename: str, media_type: str, data: bytes) -> bytes:
    """One attached file: its headers, a blank line, base64 in CRLF lines (empty if no data)."""
    problem = filename_problem(filename)
    if problem is not None:
        raise ValueError(f"attachment filename {filename!r} {problem}")
    problem = media_type_problem(media_type)
    if problem is not None:
        raise ValueError(f"attachment content type {media_type!r} {problem}")
    head = (
        _with_name("Content-Type", media_type.lower(), "name", filename)
        + _with_name("Content-Disposition", "attachment", "filename", filename)
        + "Content-Transfer-Encoding: base64\r\n"
    )
    return head.encode("ascii") + b"\r\n" + base64.encodebytes(data).replace(b"\n", b"\r\n")


def _with_name(field: str, value: str, param: str, name: str) -> str:
    """``Field: value; param="ascii"`` (after RFC 2231 sections when the name needs them),
    folded between parameters."""
    fallback = _ascii_name(name).replace("\\", "\\\\").replace('"', '\\"')
    params = [f'{param}="{fallback}"']
    if not (name.isascii() and name.isprintable()) or "=?" in name:
        # the RFC 2231 form first: readers that keep the first of two (Python's email
        # package among them) take it, and those that do not know it take the fallback
        params = [*_rfc2231_sections(param, name), *params]
    lines, current = [], f"{field}: {value}"
    for item in params:
        if len(current) + 2 + len(item) > _FOLD_AT:
            lines.append(current + ";")
            current = " " + item
        else:
            current += "; " + item
    lines.append(current)
    return "\r\n".join(lines) + "\r\n"


def _ascii_name(name: str) -> str:
    """A plain-ASCII stand-in for readers without RFC 2231: accents dropped (NFKD), anything
    else non-ASCII (and any path separator a decomposition makes) becomes ``_``."""
    decomposed = unicodedata.normalize("NFKD", name)
    if len(decomposed) > len(name) * 2:  # a decomposition that expands: keep lengths bounded
        decomposed = name
    out = "".join(
        "" if unicodedata.combining(c) else c if " " <= c <= "~" and c not in "/\\" else "_"
        for c in decomposed
    )
    return out[:MAX_FILENAME] or "_"


def _rfc2231_sections(param: str, name: str) -> list[str]:
    """``param*=utf-8''…`` (RFC 2231 §4), in numbered sections (§3) when it is long."""
    encoded = urllib.parse.quote(name.encode("utf-8"), safe=_PARAM_SAFE)
    if len(encoded) <= _SECTION_CHARS:
        return [f"{param}*=utf-8''{encoded}"]
    pieces = re.findall(r"%[0-9A-F]{2}|[^%]", encoded)
    sections, current = [], ""
    for piece in pieces:
        if len(current) + len(piece) > _SECTION_CHARS:
            sections.append(current)
            current = ""
        current += piece
    sections.append(current)
    sections[0] = "utf-8''" + sections[0]
    return [f"{param}*{i}*={section}" for i, section in enumerate(sections)]


_NOT_7BIT = re.compile(rb"[^\t\n\x20-\x7e]")


_LONG_LINE = re.compile(rb"(?:\A|\n)[^\n]{%d}" % (_MAX_LINE + 1))  # tried at line starts only


def _is_7bit(data: bytes) -> bool:
    return not _NOT_7BIT.search(data) and not _LONG_LINE.search(data)


def _fold(name: str, value: str) -> str:
    """``Name: value`` folded at spaces to 78 columns where it can be (RFC 5322 §2.2.3)."""
    if "\r" in value or "\n" in value or "\x00" in value:
        raise ValueError(f"CR, LF or NUL in the {name} header")
    lines, current = [], f"{name}:"
    for word in value.split(" "):
        if word and current != f"{name}:" and len(current) + 1 + len(word) > _FOLD_AT:
            lines.append(current)
            current = ""
        current += " " + word
    lines.append(current)
    if any(len(line) > _MAX_LINE for line in lines):
        raise ValueError(f"the {name} header has a word too long for one line")
    return "\r\n".join(lines)


def _unstructured(text: str) -> str:
    """Text as is when it is printable ASCII, else RFC 2047 encoded words (UTF-8, base64).
    CR and LF are refused before encoding: they are header injection, not text."""
    if "\r" in text or "\n" in text:
        raise ValueError("CR or LF in a header value")
    if text.isascii() and "=?" not in text and not _CONTROLS.search(text.replace("\t", " ")):
        return text
    return _encoded_words(text)


def _encoded_words(text: str) -> str:
    chunks, current = [], b""
    for char in text:
        encoded = char.encode("utf-8")
        if len(current) + len(encoded) > _EW_BYTES:
            chunks.append(current)
            current = b""
        current += encoded
    chunks.append(current)
    return " ".join(f"=?utf-8?b?{base64.b64encode(c).decode('ascii')}?=" for c in chunks)


def _mailbox(display_name: str | None, address: str) -> str:
    spec = _address(address)
    if not display_name:
        return spec
    if "\r" in display_name or "\n" in display_name:
        raise ValueError("CR or LF in the display name")
    if display_name.isascii() and "=?" not in display_name and not _CONTROLS.search(display_name):
        quoted = display_name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}" <{spec}>'
    return f"{_encoded_words(display_name)} <{spec}>"


def _address(address: str) -> str:
    if not (_ASCII_ADDR.fullmatch(address) and _ADDR_SPEC.fullmatch(address)):
        raise ValueError(f"not an ASCII addr-spec: {address!r}")
    return address


def _id(message_id: str) -> str:
    inner = message_id
    if inner.startswith("<") and inner.endswith(">"):
        inner = inner[1:-1]
    if not inner or not _ASCII_ADDR.fullmatch(inner) or "<" in inner or ">" in inner:
        raise ValueError(f"not a message id: {message_id!r}")
    return f"<{inner}>"


def is_message_id(text: str) -> bool:
    """Would ``compose`` take ``text`` as a Message-ID, In-Reply-To or References entry?"""
    try:
        _id(text)
    except ValueError:
        return False
    return True


def _datetime(value: datetime | int) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a naive datetime has no time zone for the Date header")
        return value
    return datetime.fromtimestamp(value // 1000, tz=UTC)
