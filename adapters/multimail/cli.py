"""The ``multimail`` command: ``serve`` the server, or talk to one through the SDK.

Rule 1: client subcommands only translate: argv → ``Client`` call(s) → output. No
business rule lives here; the server decides and the CLI reports. Bulk commands
(``mailboxes import``, ``export``) are loops over single calls.
Rule 2: ``--json`` prints the API's JSON unchanged (pretty-printed); otherwise a readable
table or summary. Untrusted text (subjects, bodies) is printed with control characters
made visible, so an email can't drive the terminal.
Rule 3: errors are one line on stderr, ``error: <code>: <detail>``, never a traceback, with
an exit code by kind: 0 ok, 2 usage, 3 not found, 4 auth, 5 server or connection,
6 conflict, 7 rate limited, 8 invalid request, 1 anything else (``wait`` with no email in
time, a broken audit chain, an internal error); Ctrl-C exits 130.
Rule 4: streamed output (``events --follow``) is one line per event, flushed at once; with
``--json`` one compact JSON object per line.
Rule 5: progress bars go to stderr, only when it is a terminal and never with ``--json``;
stdout carries results only. Files are written only where the user named them, and an
existing file or non-empty directory is replaced only with ``--force``.

The command is split by concern: ``cli_parser`` (the command line), ``cli_output`` (what
is printed, exit codes, files), ``cli_mail`` and ``cli_admin`` (one SDK call each),
``cli_bulk`` (import and export). This module is the entry point: it routes ``serve``,
parses, runs the handler and turns any failure into one stderr line and an exit code.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from multimail.cli_admin import run_mcp
from multimail.cli_bulk import (
    BULK_WAIT_CAP,
    ImportRow,
    mbox_entry,
    read_import,
)
from multimail.cli_output import (
    AUTH,
    CONFLICT,
    EXIT_CODES,
    FAILED,
    INVALID,
    NOT_FOUND,
    OK,
    RATE_LIMITED,
    SERVER,
    USAGE,
    Handler,
    Output,
    UsageError,
    connect,
    count,
    exit_code,
    safe,
    when,
)
from multimail.cli_parser import _GLOBAL_WITH_VALUE, MODES, build_parser
from multimail.client import AuthenticationError, Client, MultimailAPIError, RateLimited

__all__ = [
    "AUTH",
    "BULK_WAIT_CAP",
    "CONFLICT",
    "EXIT_CODES",
    "FAILED",
    "INVALID",
    "MODES",
    "NOT_FOUND",
    "OK",
    "RATE_LIMITED",
    "SERVER",
    "USAGE",
    "_GLOBAL_WITH_VALUE",
    "Handler",
    "ImportRow",
    "Output",
    "UsageError",
    "build_parser",
    "count",
    "exit_code",
    "main",
    "mbox_entry",
    "read_import",
    "run_mcp",
    "safe",
    "when",
]

# --- entry point ------------------------------------------------------------------------


def _serve_argv(argv: Sequence[str]) -> list[str] | None:
    """The arguments after ``serve`` when the command is ``serve``; they pass through as is."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "serve":
            return list(argv[i + 1 :])
        if arg in _GLOBAL_WITH_VALUE:
            i += 2
        elif arg == "--json" or arg.startswith(tuple(f"{o}=" for o in _GLOBAL_WITH_VALUE)):
            i += 1
        else:
            return None
    return None


def _serve(argv: list[str]) -> int:
    try:
        from multimail.server import serve_main
    except ModuleNotFoundError as exc:
        if exc.name != "multimail.server":
            raise
        print("error: unavailable: this build has no server (multimail.server)", file=sys.stderr)
        return SERVER
    try:
        return serve_main(argv)
    except SystemExit as exc:  # the server's argparse: --help or a bad flag
        if isinstance(exc.code, str):
            print(f"error: usage: {exc.code}", file=sys.stderr)
        return exc.code if isinstance(exc.code, int) else (OK if exc.code is None else USAGE)


def _fail(exc: MultimailAPIError, client: Client | None, as_json: bool) -> int:
    detail = exc.detail
    if isinstance(exc, AuthenticationError) and client is not None and not client.api_key:
        detail += " (no API key: set MULTIMAIL_API_KEY or pass --api-key)"
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        detail += f" (retry after {exc.retry_after}s)"
    if as_json and isinstance(exc.body, dict):
        print(json.dumps(exc.body, indent=2, ensure_ascii=False))
    print(f"error: {exc.code}: {detail}", file=sys.stderr)
    return exit_code(exc)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``multimail`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    serve_argv = _serve_argv(argv)
    if serve_argv is not None:
        return _serve(serve_argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else USAGE
    client: Client | None = None
    try:
        if args.run is not None:  # a process of its own (mcp): it makes its own client
            return int(args.run(args))
        client = connect(args.api_key, args.api_url)
        with client:
            return int(args.handler(client, args, Output(args.json)))
    except MultimailAPIError as exc:
        return _fail(exc, client, args.json)
    except UsageError as exc:
        print(f"error: usage: {exc}", file=sys.stderr)
        return USAGE
    except BrokenPipeError:  # `multimail ... | head`
        return FAILED
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug, or an answer the CLI did not expect: still one line
        detail = safe(" ".join(str(exc).split()))
        print(f"error: internal: {type(exc).__name__}: {detail}", file=sys.stderr)
        return FAILED


if __name__ == "__main__":
    raise SystemExit(main())
