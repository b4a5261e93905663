"""``multimail`` bulk commands: ``mailboxes import`` and ``export``, loops over single calls.

Rule 1: an import file is read and checked whole before the first call: an unknown
column, a row without a name, bad JSON or two rows for one mailbox (the same name, by
casefold, and domain) is a ``UsageError`` naming the lines, and nothing is created. JSON
Lines are split at line feeds only, so U+2028 or U+0085 inside a string stays in it.
Rule 2: every call a bulk command repeats is idempotent (a read, or a create with an
idempotency key derived from the row's content), so it waits out rate limiting
(``patiently``) and a rerun after a crash creates nothing twice.
Rule 3: a failed import row does not stop the others; the report lists every row with
the mailbox as it is now (a rerun replays the first answer, so the mailbox is read back:
one decommissioned since is reported so, not as created), and the exit code is the first
failure's.
Rule 4: an export writes only where the user named it (``--out DIR``, ``--mbox FILE`` or
``--mbox -`` for stdout) and replaces only with ``--force``: a regular FILE, or a DIR
holding nothing but an earlier export. The mbox is written to a temporary file of its own
beside FILE and renamed over it when complete; in a DIR ``index.jsonl`` is written last
(through ``index.jsonl.part``), so a DIR without it holds an interrupted export. mbox
quoting is mboxrd.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from multimail.cli_output import (
    OK,
    Output,
    UsageError,
    check_new_dir,
    check_new_file,
    check_not_terminal,
    count,
    exit_code,
    read_file,
    safe,
)
from multimail.client import Client, MultimailAPIError, RateLimited, Result

# --- import -----------------------------------------------------------------------------

IMPORT_FIELDS = ("name", "domain", "display_name", "oversight_mode", "webhook_url")
IMPORT_ALIASES = {"mode": "oversight_mode"}
IMPORT_HELP = """\
FILE is CSV with a header row, or JSON Lines (one object per line); '-' reads stdin.
Fields: name (required), domain, display_name, oversight_mode (or mode), webhook_url;
empty values are left out. The file is checked first: an unknown column, a row without
a name, bad JSON or two rows for the same mailbox (name, in any case, and domain) exits 2
naming the lines, and nothing is created.

Each row is sent with an idempotency key derived from its content, so running the same
file again after a crash or a partial failure creates nothing twice. Rows that fail do
not stop the others; a table (--json: a list) reports each row with the mailbox's
status now: a row whose mailbox was decommissioned since it was created says
"exists (decommissioned)" (--json: "exists").

Exit codes: 0 every row created (or exists); otherwise the code of the first failed row's
kind (3 not found, 4 auth, 5 server or connection, 6 conflict, 7 rate limited, 8 invalid)."""


@dataclasses.dataclass(frozen=True)
class ImportRow:
    """One mailbox to create: the file line it came from and its non-empty fields."""

    line: int
    fields: dict[str, str]

    @property
    def idempotency_key(self) -> str:
        canonical = json.dumps(self.fields, sort_keys=True, separators=(",", ":"))
        return "import-" + hashlib.sha256(canonical.encode()).hexdigest()


def _field(line: int, column: object) -> str:
    name = str(column).strip()
    name = IMPORT_ALIASES.get(name, name)
    if name not in IMPORT_FIELDS:
        raise UsageError(
            f"line {line}: unknown column {column!r} (known: name, domain, display_name, "
            "oversight_mode or mode, webhook_url)"
        )
    return name


def _import_row(line: int, raw: dict[Any, Any]) -> ImportRow:
    fields: dict[str, str] = {}
    for column, value in raw.items():
        name = _field(line, column)
        if value is not None and not isinstance(value, str):
            raise UsageError(f"line {line}: {column} must be text")
        if value is None or not value.strip():
            continue
        if name in fields:
            raise UsageError(f"line {line}: give oversight_mode or mode, not both")
        fields[name] = value.strip()
    if "name" not in fields:
        raise UsageError(f"line {line}: no name")
    return ImportRow(line, fields)


def _csv_rows(text: str) -> list[ImportRow]:
    reader = csv.DictReader(io.StringIO(text), restkey="\0extra")
    header = [_field(1, column) for column in reader.fieldnames or []]
    if header and "name" not in header:
        raise UsageError("line 1: no name column")
    if len(set(header)) != len(header):
        raise UsageError("line 1: a column appears twice (mode is oversight_mode)")
    rows = []
    for raw in reader:
        if "\0extra" in raw:
            raise UsageError(f"line {reader.line_num}: more cells than the header has")
        rows.append(_import_row(reader.line_num, raw))
    return rows


def _jsonl_rows(text: str) -> list[ImportRow]:
    rows = []
    # Only "\n" ends a line: str.splitlines() would also split at U+2028 or U+0085 inside
    # a JSON string.
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"line {number}: not JSON: {exc.msg}") from None
        if not isinstance(raw, dict):
            raise UsageError(f"line {number}: expected a JSON object")
        rows.append(_import_row(number, raw))
    return rows


def _import_format(path: str, text: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    return "jsonl" if text.lstrip().startswith("{") else "csv"


def read_import(path: str, fmt: str | None) -> list[ImportRow]:
    """Every row of an import file, validated; a ``UsageError`` names the first bad line."""
    if path == "-" and (sys.stdin is None or sys.stdin.isatty()):
        raise UsageError("pipe the file on stdin, or name it")
    text = sys.stdin.read() if path == "-" else read_file(path)
    text = text.removeprefix("\ufeff")
    try:
        rows = (_csv_rows if (fmt or _import_format(path, text)) == "csv" else _jsonl_rows)(text)
    except csv.Error as exc:
        raise UsageError(f"not CSV: {exc}") from None
    except UsageError as exc:
        raise UsageError(f"{'stdin' if path == '-' else path} {exc}") from None
    if not rows:
        raise UsageError(f"{path}: no rows to import")
    seen: dict[tuple[str, str | None], int] = {}
    for row in rows:
        name, domain = row.fields["name"], row.fields.get("domain")
        mailbox = (name.casefold(), None if domain is None else domain.casefold())
        first = seen.setdefault(mailbox, row.line)
        if first != row.line:
            where = f"{name}@{domain}" if domain else f"{name} at the default domain"
            raise UsageError(
                f"{path} line {row.line}: repeats line {first}: the same mailbox {safe(where)}"
            )
    return rows


T = TypeVar("T")
BULK_RETRIES = 5  # a bulk command waits out this many 429s per call before giving up
BULK_WAIT_CAP = 60  # seconds


def patiently(call: Callable[[], T]) -> T:
    """``call()``, waiting out rate limiting (429, for as long as Retry-After says) a few
    times: bulk commands are expected to reach the limit, and every retried call is
    idempotent (a read, or a create with an idempotency key)."""
    for _ in range(BULK_RETRIES):
        try:
            return call()
        except RateLimited as exc:
            time.sleep(min(exc.retry_after or 1, BULK_WAIT_CAP))
    return call()


def _problem(exc: MultimailAPIError) -> dict[str, Any]:
    return {"status": exc.status, "code": exc.code, "detail": exc.detail}


def _create(client: Client, row: ImportRow) -> Result:
    return patiently(
        lambda: client.create_mailbox(**row.fields, idempotency_key=row.idempotency_key)
    )


def cmd_mailboxes_import(client: Client, args: argparse.Namespace, out: Output) -> int:
    rows = read_import(args.file, args.format)
    report: list[dict[str, Any]] = []
    failures: list[MultimailAPIError] = []
    with out.progress(len(rows), "creating mailboxes") as advance:
        for row in rows:
            entry: dict[str, Any] = {"line": row.line, "row": row.fields}
            try:
                box = _create(client, row)
                # A rerun replays the first answer: read the mailbox back as it is now.
                now = patiently(partial(client.get_mailbox, box.mailbox_id))
                status = "created" if now.get("status") == "active" else "exists"
                entry |= {"status": status, "mailbox": now.to_dict()}
            except MultimailAPIError as exc:
                failures.append(exc)
                entry |= {"status": "failed", "error": _problem(exc)}
            report.append(entry)
            advance()
    _show_import(report, out)
    if not failures:
        return OK
    first = next(e for e in report if e["status"] == "failed")
    out.note(
        f"error: {failures[0].code}: {len(failures)} of {len(rows)} rows failed "
        f"(first: line {first['line']}: {safe(failures[0].detail)})"
    )
    return exit_code(failures[0])


def _show_import(report: list[dict[str, Any]], out: Output) -> None:
    if out.as_json:
        out.json(report)
        return
    columns: Sequence[tuple[str, Callable[[Result], object]]] = (
        ("LINE", lambda r: r.line),
        ("NAME", lambda r: r.row.name),
        ("RESULT", _import_result),
        ("MAILBOX_ID", lambda r: r.mailbox.mailbox_id if "mailbox" in r else None),
        ("STATUS", lambda r: r.mailbox.status if "mailbox" in r else None),
        ("ADDRESS", lambda r: r.mailbox.address if "mailbox" in r else r.error.detail),
    )
    out.table(Result({"rows": report}), "rows", columns, empty="no rows")
    created = sum(1 for r in report if r["status"] == "created")
    inactive = sum(1 for r in report if r["status"] == "exists")
    tail = f"; {inactive} not active" if inactive else ""
    out.line(f"created {created} of {len(report)} mailboxes{tail}")


def _import_result(row: Result) -> str:
    if row.status == "failed":
        return str(row.error.code)
    if row.status == "exists":
        return f"exists ({row.mailbox.status})"
    return str(row.status)


# --- export -----------------------------------------------------------------------------


def _all_emails(client: Client, mailbox_id: str) -> list[Result]:
    emails: list[Result] = []
    cursor = None
    while True:
        page = patiently(
            partial(client.check_inbox, mailbox_id, filter="all", limit=100, cursor=cursor)
        )
        emails.extend(page.get("emails") or [])
        cursor = page.get("next_cursor")
        if not cursor:
            return emails


def _raw(client: Client, email: Result) -> bytes:
    return patiently(lambda: client.get_raw_email(email.email_id))


def _oldest_first(emails: list[Result]) -> list[Result]:
    return sorted(
        emails, key=lambda e: (e.get("received_at") or e.get("sent_at") or "", e.email_id)
    )


def _eml_name(email_id: object) -> str:
    # Ids are the server's (msg_…); anything else is kept out of the path all the same.
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(email_id)).lstrip(".") + ".eml"


_EXPORT_FILE = re.compile(r"msg_[0-9A-Za-z]{1,64}\.eml|index\.jsonl(\.part)?")
_INDEX = "index.jsonl"


def _previous_export(path: Path) -> list[Path]:
    """The files an earlier export wrote into ``path`` (what ``--force`` replaces); a
    directory holding anything else is refused."""
    try:
        found = list(path.iterdir()) if path.is_dir() else []
        others = [
            p.name
            for p in found
            if p.is_symlink() or not p.is_file() or not _EXPORT_FILE.fullmatch(p.name)
        ]
    except OSError as exc:
        raise UsageError(f"cannot use {path}: {exc.strerror}") from None
    if others:
        raise UsageError(
            f"{path} holds files an export did not write ({safe(min(others))}): --force "
            "replaces only an earlier export; name an empty or new directory"
        )
    return found


def _export_dir(
    client: Client,
    emails: list[Result],
    path: Path,
    previous: list[Path],
    advance: Callable[[], None],
) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        # The index goes first and comes back last: a DIR without it is an unfinished export.
        for old in sorted(previous, key=lambda p: p.name != _INDEX):
            old.unlink()
        unfinished = path / (_INDEX + ".part")
        with unfinished.open("w", encoding="utf-8") as index:
            for email in emails:
                raw = _raw(client, email)
                (path / _eml_name(email.email_id)).write_bytes(raw)
                index.write(json.dumps(email.to_dict(), ensure_ascii=False) + "\n")
                advance()
        unfinished.replace(path / _INDEX)
    except OSError as exc:
        raise UsageError(f"cannot write {exc.filename or path}: {exc.strerror}") from None


_FROM_LINE = re.compile(rb"^(>*From )", re.MULTILINE)
_ENVELOPE_SENDER = re.compile(r"[!-~]+")


def mbox_entry(raw: bytes, sender: object, date: object) -> bytes:
    """One mboxrd message: a ``From `` separator line, then the message with LF line
    endings and every ``>*From `` line quoted with one more ``>``, then a blank line."""
    text = _FROM_LINE.sub(rb">\1", raw.replace(b"\r\n", b"\n"))
    if not text.endswith(b"\n"):
        text += b"\n"
    who = str(sender) if _ENVELOPE_SENDER.fullmatch(str(sender)) else "MAILER-DAEMON"
    try:
        moment = datetime.fromisoformat(str(date).replace("Z", "+00:00"))
    except ValueError:
        moment = datetime.fromtimestamp(0, tz=UTC)
    separator = f"From {who} {time.asctime(moment.utctimetuple())}\n"
    return separator.encode("ascii") + text + b"\n"


def _write_mbox(
    client: Client, emails: list[Result], stream: BinaryIO, advance: Callable[[], None]
) -> None:
    for email in emails:
        raw = _raw(client, email)
        date = email.get("received_at") or email.get("sent_at")
        stream.write(mbox_entry(raw, email.get("sender"), date))
        advance()


def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 less the umask (mkstemp's is 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _export_mbox(
    client: Client, emails: list[Result], path: Path, advance: Callable[[], None]
) -> None:
    """Write a temporary file of our own beside ``path``, renamed over it when complete;
    it is removed if anything fails, and no other file is touched."""
    # Through a symlink, replace the file it names: renaming over the link would replace it.
    target = Path(os.path.realpath(path))
    try:
        fd, name = tempfile.mkstemp(prefix=".multimail-export-", suffix=".part", dir=target.parent)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    temporary = Path(name)
    try:
        with os.fdopen(fd, "wb") as mbox:
            os.fchmod(mbox.fileno(), _new_file_mode())
            _write_mbox(client, emails, mbox, advance)
        temporary.replace(target)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def cmd_export(client: Client, args: argparse.Namespace, out: Output) -> int:
    to_stdout = args.mbox == "-"
    path = Path(args.out if args.out is not None else args.mbox)
    previous: list[Path] = []
    if args.out is not None:
        check_new_dir(path, args.force)
        previous = _previous_export(path)
    elif to_stdout:
        check_not_terminal("an mbox", "redirect stdout, or name a FILE")
    else:
        check_new_file(path, args.force, regular=True)
    emails = _oldest_first(_all_emails(client, args.mailbox_id))
    with out.progress(len(emails), "exporting emails") as advance:
        if args.out is not None:
            _export_dir(client, emails, path, previous, advance)
        elif to_stdout:
            _write_mbox(client, emails, sys.stdout.buffer, advance)
            sys.stdout.buffer.flush()
        else:
            _export_mbox(client, emails, path, advance)
    if out.as_json:
        kind = "eml" if args.out is not None else "mbox"
        summary = {
            "mailbox_id": args.mailbox_id,
            "exported": len(emails),
            "format": kind,
            "path": str(path),
        }
        out.json(summary, file=sys.stderr if to_stdout else None)
        return OK
    done = f"exported {count(len(emails), 'email')} of {safe(args.mailbox_id)} to"
    if to_stdout:
        out.note(f"{done} stdout")
    else:
        out.line(f"{done} {path}")
    return OK
