"""``multimail`` bulk commands: ``mailboxes import`` and ``export``, loops over single calls.

Rule 1: an import file is read and checked whole before the first call: an unknown
column, a row without a name, bad JSON or a repeated row is a ``UsageError`` naming the
line, and nothing is created.
Rule 2: every call a bulk command repeats is idempotent (a read, or a create with an
idempotency key derived from the row's content), so it waits out rate limiting
(``patiently``) and a rerun after a crash creates nothing twice.
Rule 3: a failed import row does not stop the others; the report lists every row and the
exit code is the first failure's.
Rule 4: an export writes only where the user named it (``--out DIR`` or ``--mbox FILE``),
replaces only with ``--force``, and writes the mbox beside it first (``FILE.part``), so a
failed export leaves no half file under the name. mbox quoting is mboxrd.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from multimail.cli_output import (
    OK,
    Output,
    UsageError,
    check_new_dir,
    check_new_file,
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
a name, bad JSON or a repeated row exits 2 naming the line, and nothing is created.

Each row is sent with an idempotency key derived from its content, so running the same
file again after a crash or a partial failure creates nothing twice. Rows that fail do
not stop the others; a table (--json: a list) reports each row.

Exit codes: 0 every row created; otherwise the code of the first failed row's kind
(3 not found, 4 auth, 5 server or connection, 6 conflict, 7 rate limited, 8 invalid)."""


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
    for number, line in enumerate(text.splitlines(), start=1):
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
    seen: dict[str, int] = {}
    for row in rows:
        first = seen.setdefault(row.idempotency_key, row.line)
        if first != row.line:
            raise UsageError(f"{path} line {row.line}: repeats line {first}")
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
                entry |= {"status": "created", "mailbox": box.to_dict()}
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
        ("RESULT", lambda r: r.status if r.status == "created" else r.error.code),
        ("MAILBOX_ID", lambda r: r.mailbox.mailbox_id if r.status == "created" else None),
        ("ADDRESS", lambda r: r.mailbox.address if r.status == "created" else r.error.detail),
    )
    out.table(Result({"rows": report}), "rows", columns, empty="no rows")
    created = sum(1 for r in report if r["status"] == "created")
    out.line(f"created {created} of {len(report)} mailboxes")


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


def _export_dir(
    client: Client, emails: list[Result], path: Path, advance: Callable[[], None]
) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with (path / "index.jsonl").open("w", encoding="utf-8") as index:
            for email in emails:
                raw = _raw(client, email)
                (path / _eml_name(email.email_id)).write_bytes(raw)
                index.write(json.dumps(email.to_dict(), ensure_ascii=False) + "\n")
                advance()
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


def _export_mbox(
    client: Client, emails: list[Result], path: Path, advance: Callable[[], None]
) -> None:
    partial = path.with_name(path.name + ".part")
    try:
        with partial.open("wb") as mbox:
            for email in emails:
                raw = _raw(client, email)
                date = email.get("received_at") or email.get("sent_at")
                mbox.write(mbox_entry(raw, email.get("sender"), date))
                advance()
        partial.replace(path)
    except OSError as exc:
        raise UsageError(f"cannot write {exc.filename or path}: {exc.strerror}") from None
    finally:
        partial.unlink(missing_ok=True)


def cmd_export(client: Client, args: argparse.Namespace, out: Output) -> int:
    path = Path(args.out if args.out is not None else args.mbox)
    if args.out is not None:
        check_new_dir(path, args.force)
    else:
        check_new_file(path, args.force)
    emails = _oldest_first(_all_emails(client, args.mailbox_id))
    write = _export_dir if args.out is not None else _export_mbox
    with out.progress(len(emails), "exporting emails") as advance:
        write(client, emails, path, advance)
    if out.as_json:
        kind = "eml" if args.out is not None else "mbox"
        out.json(
            {
                "mailbox_id": args.mailbox_id,
                "exported": len(emails),
                "format": kind,
                "path": str(path),
            }
        )
    else:
        out.line(f"exported {count(len(emails), 'email')} of {safe(args.mailbox_id)} to {path}")
    return OK
