"""What a ``multimail`` command shows, returns and touches: output, exit codes, files.

Rule 1: ``--json`` prints the API's JSON unchanged (pretty-printed, C1 controls escaped);
otherwise a readable table or summary. Untrusted text (subjects, bodies) goes through
``safe``, which shows control characters as escapes, so an email can't drive the terminal.
Rule 2: results go to stdout, notes and hints to stderr. A progress bar is drawn on stderr
only when it is a terminal and never with ``--json``.
Rule 3: every failure has one exit code by kind, from one table (``EXIT_CODES``): 0 ok,
2 usage, 3 not found, 4 auth, 5 server or connection, 6 conflict, 7 rate limited,
8 invalid request, 1 anything else. A command line that parsed but cannot be run raises
``UsageError`` (exit 2).
Rule 4: files are read and written only where the user named them; an existing file or a
non-empty directory is replaced only with ``--force``. An unreadable or unwritable path is
a ``UsageError`` naming it, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from multimail.client import (
    APIConnectionError,
    AuthenticationError,
    Client,
    Conflict,
    MultimailAPIError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    Result,
    ServerError,
    ValidationError,
)

# --- exit codes -------------------------------------------------------------------------

OK, FAILED, USAGE, NOT_FOUND, AUTH, SERVER, CONFLICT, RATE_LIMITED, INVALID = range(9)

EXIT_CODES: tuple[tuple[type[MultimailAPIError], int], ...] = (
    (NotFound, NOT_FOUND),
    (AuthenticationError, AUTH),
    (PermissionDenied, AUTH),
    (APIConnectionError, SERVER),
    (ServerError, SERVER),
    (Conflict, CONFLICT),
    (RateLimited, RATE_LIMITED),
    (ValidationError, INVALID),
    (PayloadTooLarge, INVALID),
)


class UsageError(Exception):
    """A command line that parsed but cannot be run (exit 2)."""


def exit_code(exc: MultimailAPIError) -> int:
    """The exit code for an API error's kind (1 for a kind without its own code)."""
    return next((code for cls, code in EXIT_CODES if isinstance(exc, cls)), FAILED)


# --- output -----------------------------------------------------------------------------

# C0 controls except tab and newline, DEL and C1: what a terminal would act on.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def safe(value: object) -> str:
    """Text for a terminal: control characters shown as escapes, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(safe(v) for v in value) or "-"
    if isinstance(value, Result):
        return ", ".join(f"{k}={safe(v)}" for k, v in value.to_dict().items()) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={safe(v)}" for k, v in value.items()) or "-"
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 email``, ``3 emails``."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def when(value: object) -> str:
    """``2026-04-19T10:00:00.000Z`` → ``2026-04-19 10:00:00``."""
    if not isinstance(value, str):
        return "-"
    return value.replace("T", " ")[:19]


def _escape_c1(text: str) -> str:
    """JSON escapes C0 controls; escape C1 too, so --json output is terminal-safe."""
    return re.sub(r"[\x80-\x9f]", lambda m: f"\\u{ord(m.group()):04x}", text)


class Output:
    """Where results go: JSON for machines, rich tables for people."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def json(self, data: Any, file: TextIO | None = None) -> None:
        """``data`` pretty-printed, on stdout (or ``file``)."""
        print(_escape_c1(json.dumps(data, indent=2, ensure_ascii=False)), file=file)

    def line(self, text: str) -> None:
        print(text)

    def done(self, result: Result, text: str) -> None:
        """The API's answer as JSON, or ``text``: one line saying what happened."""
        if self.as_json:
            self.json(result.to_dict())
        else:
            self.line(text)

    def json_line(self, data: Any) -> None:
        """One compact JSON object on one line (JSON Lines), C1 controls escaped too."""
        print(_escape_c1(json.dumps(data, ensure_ascii=False, separators=(",", ":"))))

    def flush(self) -> None:
        sys.stdout.flush()

    def note(self, text: str) -> None:
        print(text, file=sys.stderr)

    @contextmanager
    def progress(self, total: int, what: str) -> Iterator[Callable[[], None]]:
        """A bar on stderr for ``total`` steps (when stderr is a terminal and not --json);
        yields the function that advances it by one."""
        if self.as_json or not sys.stderr.isatty():
            yield lambda: None
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        columns = (
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=Console(stderr=True)) as bar:
            task = bar.add_task(what, total=total)
            yield lambda: bar.advance(task)

    def _print(self, renderable: Any) -> None:
        from rich.console import Console

        # On a terminal fit its width; in a pipe never cut ids short.
        tty = sys.stdout.isatty()
        console = Console(highlight=False, width=None if tty else 10_000, color_system=None)
        with console.capture() as captured:
            console.print(renderable)
        print("\n".join(line.rstrip() for line in captured.get().splitlines()))

    def record(self, result: Result) -> None:
        """One object: JSON, or a two-column field/value table of the fields that are set."""
        if self.as_json:
            self.json(result.to_dict())
            return
        from rich.table import Table
        from rich.text import Text

        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(no_wrap=True)
        table.add_column(overflow="fold")
        for name in result:
            value = result[name]
            if value is None or value == [] or value == {}:
                continue
            if name == "id" and any(result[k] == value for k in result if k.endswith("_id")):
                continue  # ``id`` repeats ``mailbox_id``/``email_id``
            table.add_row(Text(name), Text(safe(value)))
        self._print(table)

    def table(
        self,
        result: Result,
        rows: str,
        columns: Sequence[tuple[str, Callable[[Result], object]]],
        *,
        empty: str,
        more: str = "--cursor",
    ) -> None:
        """A list response: JSON, or a table of ``result[rows]`` plus a paging hint."""
        if self.as_json:
            self.json(result.to_dict())
            return
        from rich.table import Table
        from rich.text import Text

        items = result.get(rows) or []
        if not items:
            self.line(empty)
        else:
            cells = [[safe(get(item)) for _, get in columns] for item in items]
            table = Table(box=None, pad_edge=False, header_style="bold")
            for i, (title, _) in enumerate(columns):
                if title in ("SUBJECT", "FROM", "TO", "ADDRESS"):  # free text: cut with …
                    table.add_column(title, overflow="ellipsis", max_width=60)
                else:  # ids and short values: never cut
                    widest = max(len(title), *(len(row[i]) for row in cells))
                    table.add_column(title, no_wrap=True, min_width=widest)
            for row in cells:
                table.add_row(*(Text(cell) for cell in row))
            self._print(table)
        if result.get("next_cursor"):
            self.note(f"more: {more} {result.next_cursor}")


Handler = Callable[[Client, argparse.Namespace, Output], int]
"""A command that makes one or more SDK calls and reports them; returns the exit code."""


# --- arguments and files ----------------------------------------------------------------


def split_list(value: str | None) -> list[str] | None:
    """``"a, b,,c"`` → ``["a", "b", "c"]``; ``None`` (option not given) stays ``None``."""
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def read_file(path: str) -> str:
    """The UTF-8 text of a file the user named."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UsageError(f"cannot read {path}: {reason}") from exc


def check_new_file(path: Path, force: bool, *, regular: bool = False) -> None:
    """Refuse to replace a file that has content, unless ``--force``; with ``regular``, also
    refuse anything but a regular file (a pipe, a terminal, a symlink to one), even then."""
    try:
        if path.is_dir():
            raise UsageError(f"{path} is a directory")
        if regular and path.exists() and not path.is_file():
            raise UsageError(f"{path} is not a regular file")
        if path.exists() and path.stat().st_size > 0 and not force:
            raise UsageError(f"{path} exists: pass --force to overwrite it")
    except OSError as exc:  # a name too long for the file system, a directory we may not read
        raise UsageError(f"cannot use {path}: {exc.strerror}") from None


def check_new_dir(path: Path, force: bool) -> None:
    """Refuse to write into a directory that has content, unless ``--force``."""
    try:
        if path.exists() and not path.is_dir():
            raise UsageError(f"{path} is not a directory")
        if path.is_dir() and any(path.iterdir()) and not force:
            raise UsageError(f"{path} is not empty: pass --force to write into it")
    except OSError as exc:
        raise UsageError(f"cannot use {path}: {exc.strerror}") from None


def check_not_terminal(what: str, instead: str) -> None:
    """Refuse to write ``what`` (bytes from an email, which could drive the terminal) to a
    stdout that is a terminal."""
    if sys.stdout.isatty():
        raise UsageError(f"not writing {what} to a terminal: {instead}")


def connect(api_key: str | None, api_url: str | None) -> Client:
    """The client for the global options; a URL or key it cannot use is a ``UsageError``."""
    try:
        return Client(api_key=api_key, base_url=api_url)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def write_bytes(path: Path, data: bytes) -> None:
    """Write a file the user named (already checked with ``check_new_file``)."""
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
