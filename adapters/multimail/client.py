"""The Python SDK: ``Client`` and ``AsyncClient`` over the HTTP API (httpx).

Rule 1: one method per API operation; keyword arguments are named like the API's fields,
so the API reference doubles as the SDK reference.
Rule 2: every response is a ``Result`` (attribute and item access over the JSON); every
error is a ``MultimailAPIError`` subclass chosen by HTTP status, carrying the problem
document's stable ``code``. Nothing is retried behind the caller's back, with one exception:
``stream_events`` reconnects a stream that dropped after it was once open, resuming after
the last event seen (``Last-Event-ID``), with a short capped backoff.
Rule 3: ``api_key`` defaults to ``MULTIMAIL_API_KEY`` and ``base_url`` to
``MULTIMAIL_API_URL`` (else ``http://127.0.0.1:8025``), so the seed's snippets run as written.

The operations are declared once (``_Operations``): each builds a request and hands it to
``_call``, which the sync client runs and returns, and the async client returns as a coroutine.
The event stream is Server-Sent Events (WHATWG HTML §9.2), decoded by ``_SSEDecoder`` and
resumed by ``_EventStream``; neither does IO, so both clients share them.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import difflib
import email.utils
import json
import keyword
import mimetypes
import os
import re
import reprlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Generator, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

__all__ = [
    "APIConnectionError",
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "Conflict",
    "MultimailAPIError",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimited",
    "Result",
    "ServerError",
    "ValidationError",
    "attachment",
]

DEFAULT_BASE_URL = "http://127.0.0.1:8025"
USER_AGENT = "multimail-python/0.1.0"
_ENV_REFERENCE = re.compile(r"^\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?$")

WAIT_MAX_SECONDS = 120  # the longest the server holds a wait_for_email request
WAIT_READ_MARGIN = 10.0  # the read timeout outlasts the server's hold by this much
STREAM_IDLE_TIMEOUT = 45.0  # three missed keep-alives (sent every ~15 s): the stream is dead
RECONNECT_DELAY = 0.5  # first pause before reconnecting a dropped stream; doubles per failure
RECONNECT_DELAY_CAP = 10.0


# --- results ----------------------------------------------------------------------------


def _wrap(value: Any) -> Any:
    if isinstance(value, dict):
        return Result(value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _unwrap(value: Any) -> Any:
    if isinstance(value, Result):
        return value.to_dict()
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


_short = reprlib.Repr()
_short.maxstring = 60
_short.maxlist = 4


def _brief(value: Any) -> str:
    """A field's value for ``Result.__repr__``: nested objects summarised, not expanded."""
    if isinstance(value, Result):
        return f"{type(value).__name__}({', '.join(value.keys())})"
    if isinstance(value, list) and any(isinstance(v, Result) for v in value):
        return f"[{len(value)} {'item' if len(value) == 1 else 'items'}]"
    return _short.repr(value)


class Result:
    """A JSON object from the API: ``r.subject`` or ``r["subject"]``; nested objects too.

    Fields that are Python keywords take a trailing underscore (``pending.from_``).
    ``to_dict()`` returns the plain JSON again.
    """

    __slots__ = ("_data",)
    _data: dict[str, Any]

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        object.__setattr__(self, "_data", {k: _wrap(v) for k, v in (data or {}).items()})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        data = self._data
        if name in data:
            return data[name]
        if name.endswith("_") and keyword.iskeyword(name[:-1]) and name[:-1] in data:
            return data[name[:-1]]
        hint = difflib.get_close_matches(name, list(data), n=1)
        message = f"{type(self).__name__} has no field {name!r}"
        if hint:
            message += f"; did you mean {hint[0]!r}?"
        message += f" Fields: {', '.join(data) or '(none)'}"
        raise AttributeError(message)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Result):
            return self._data == other._data
        if isinstance(other, dict):
            return self.to_dict() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._data))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={_brief(v)}" for k, v in self._data.items())
        return f"{type(self).__name__}({fields})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.to_dict(),))

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def keys(self) -> list[str]:
        return list(self._data)

    def to_dict(self) -> dict[str, Any]:
        """The plain JSON object (dicts and lists all the way down)."""
        return {k: _unwrap(v) for k, v in self._data.items()}


# --- errors -----------------------------------------------------------------------------


class MultimailAPIError(Exception):
    """An error answer from the API: HTTP ``status``, stable ``code``, human ``detail``.

    ``body`` is the whole problem document (RFC 9457) as a dict, or the raw text.
    """

    def __init__(self, status: int | None, code: str, detail: str, body: Any = None) -> None:
        super().__init__(f"{code}: {detail}" if status is None else f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.body = body


class AuthenticationError(MultimailAPIError):
    """401: the key is missing, unknown or revoked."""


class PermissionDenied(MultimailAPIError):
    """403: the key may not do this (scope, oversight mode, or self-approval)."""


class NotFound(MultimailAPIError):
    """404: no such resource visible to this key."""


class Conflict(MultimailAPIError):
    """409: address taken, already decided, idempotency key reused with another body, …"""


class ValidationError(MultimailAPIError):
    """422 (or 400): the request was refused as invalid; ``body["errors"]`` may say where."""


class PayloadTooLarge(MultimailAPIError):
    """413: the request body is over the server's limit."""


class RateLimited(MultimailAPIError):
    """429: slow down; ``retry_after`` is the number of seconds to wait (or None)."""

    def __init__(
        self, status: int, code: str, detail: str, body: Any = None, retry_after: int | None = None
    ) -> None:
        super().__init__(status, code, detail, body)
        self.retry_after = retry_after


class ServerError(MultimailAPIError):
    """5xx: the server failed; the request may or may not have taken effect."""


class APIConnectionError(MultimailAPIError):
    """The server could not be reached (refused, DNS, timeout, broken connection)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(None, "connection_error", f"cannot reach MultiMail at {url}: {reason}")
        self.url = url


_BY_STATUS: dict[int, type[MultimailAPIError]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationError,
}


def _retry_after(value: str | None, now: float) -> int | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0, round(when.timestamp() - now))


def _error(response: httpx.Response) -> MultimailAPIError:
    status = response.status_code
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    if isinstance(body, dict):
        code = str(body.get("code") or f"http_{status}")
        detail = str(body.get("detail") or body.get("title") or response.reason_phrase)
    else:
        code = f"http_{status}"
        detail = (body or response.reason_phrase or "").strip()[:300]
    if status == 429:
        seconds = _retry_after(response.headers.get("retry-after"), time.time())
        if seconds is None and isinstance(body, dict) and isinstance(body.get("retry_after"), int):
            seconds = body["retry_after"]
        return RateLimited(status, code, detail, body, seconds)
    cls = ServerError if status >= 500 else _BY_STATUS.get(status, MultimailAPIError)
    return cls(status, code, detail, body)


def _bytes(response: httpx.Response) -> bytes:
    """A binary answer's body (a raw message, an attachment), or its error raised."""
    if response.status_code >= 400:
        raise _error(response)
    return response.content


def _parse(response: httpx.Response) -> Result:
    if response.status_code >= 400:
        raise _error(response)
    if not response.content:
        return Result()
    try:
        data = response.json()
    except ValueError:
        kind = response.headers.get("content-type", "no content type")
        raise ServerError(
            response.status_code,
            "invalid_response",
            f"expected JSON from {response.request.url}, got {kind}; is this a MultiMail server?",
            response.text[:300],
        ) from None
    return Result(data if isinstance(data, dict) else {"items": data})


# --- request building -------------------------------------------------------------------


class _Request:
    __slots__ = ("headers", "json", "method", "params", "path", "read_timeout")

    def __init__(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        read_timeout: float | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.params = {k: v for k, v in (params or {}).items() if v is not None}
        self.json = json
        self.headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        self.read_timeout = read_timeout  # at least this long to wait for the answer


def _timeout(default: httpx.Timeout, read: float | None) -> httpx.Timeout:
    """The client's timeouts, with the read timeout raised to at least ``read``."""
    if read is None or default.read is None or default.read >= read:
        return default
    return httpx.Timeout(connect=default.connect, read=read, write=default.write, pool=default.pool)


def _check_wait(timeout_seconds: int) -> None:
    if (
        isinstance(timeout_seconds, bool)
        or not isinstance(timeout_seconds, int)
        or not 1 <= timeout_seconds <= WAIT_MAX_SECONDS
    ):
        raise ValueError(
            f"timeout_seconds must be a whole number of seconds from 1 to {WAIT_MAX_SECONDS} "
            f"(the longest the server holds a wait), got {timeout_seconds!r}"
        )


def attachment(filename: str, data: bytes, content_type: str | None = None) -> dict[str, str]:
    """One entry of ``send_email``'s and ``reply_email``'s ``attachments``:
    ``{"filename", "content_base64", "content_type"}``, the bytes base64-encoded. Without
    ``content_type`` it is guessed from the filename (``mimetypes``), else
    ``application/octet-stream``. The server takes up to 20 files, 7 MiB together.

        client.send_email(box, to="bob@example.com", subject="Report", body_text="Attached.",
                          attachments=[attachment("report.pdf", Path("report.pdf").read_bytes())])
    """
    if content_type is None:
        guessed, encoding = mimetypes.guess_type(filename)
        if encoding is not None:  # "x.tar.gz" is gzip data, not a tar file
            guessed = "application/gzip" if encoding == "gzip" else None
        if guessed is not None and guessed.startswith(("multipart/", "message/")):
            guessed = None  # composite types cannot travel base64-encoded; send the bytes
        content_type = guessed or "application/octet-stream"
    return {
        "filename": filename,
        "content_base64": base64.b64encode(bytes(data)).decode("ascii"),
        "content_type": content_type,
    }


def _attachments(value: Iterable[dict[str, str]] | None) -> list[dict[str, str]] | None:
    return None if value is None else [dict(a) for a in value]


def _seg(value: str) -> str:
    """One path segment, escaped so an id can never change the route."""
    return quote(str(value), safe="")


def _listed(value: str | Iterable[str] | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return list(value)


def _body(**fields: Any) -> dict[str, Any]:
    """A JSON body without the fields left out (None), so server defaults apply."""
    return {k: v for k, v in fields.items() if v is not None}


def _when(value: str | datetime | None) -> str | None:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


def _api_key(explicit: str | None) -> str | None:
    key = explicit if explicit is not None else os.environ.get("MULTIMAIL_API_KEY")
    # The seed writes Client(api_key="$MULTIMAIL_API_KEY"); expand such a reference.
    match = _ENV_REFERENCE.match(key or "")
    if match and os.environ.get(match.group(1)):
        return os.environ[match.group(1)]
    return key or None


def _base_url(explicit: str | None) -> str:
    return (explicit or os.environ.get("MULTIMAIL_API_URL") or DEFAULT_BASE_URL).rstrip("/")


def _check_settings(api_key: str | None, base_url: str) -> None:
    """Raise ``ValueError`` for a base URL that does not parse or a key an HTTP header cannot
    carry (printable ASCII), before anything is sent; the key itself is never quoted."""
    try:
        httpx.URL(base_url)
    except httpx.InvalidURL as exc:
        raise ValueError(f"invalid base URL {base_url!r}: {exc}") from None
    if api_key is not None and not (api_key.isascii() and api_key.isprintable()):
        raise ValueError("invalid API key: it may hold printable ASCII characters only")


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


R = TypeVar("R")


class _Operations(Generic[R]):
    """Every API operation, declared once for both clients."""

    def _call(self, request: _Request) -> R:
        raise NotImplementedError

    # health, account, keys

    def health(self) -> R:
        """``GET /health`` → ``{"status": "ok"}`` once the server is ready."""
        return self._call(_Request("GET", "/health"))

    def create_account(
        self,
        name: str,
        oversight_email: str | None = None,
        slug: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> R:
        """Create a tenant (server-admin key only); the result carries its admin ``api_key``."""
        body = _body(name=name, oversight_email=oversight_email, slug=slug)
        return self._call(
            _Request("POST", "/v1/accounts", json=body, idempotency_key=idempotency_key)
        )

    def get_account(self) -> R:
        """The key's own account."""
        return self._call(_Request("GET", "/v1/account"))

    def update_account(self, **fields: Any) -> R:
        """Change ``name``, ``oversight_email`` or ``default_oversight_mode``."""
        return self._call(_Request("PATCH", "/v1/account", json=fields))

    def create_api_key(
        self,
        name: str,
        scopes: str | Iterable[str] | None = None,
        mailbox_ids: str | Iterable[str] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> R:
        """A new key (``api_key`` is shown once). Scopes: admin, oversight, send, read."""
        body = _body(name=name, scopes=_listed(scopes), mailbox_ids=_listed(mailbox_ids))
        return self._call(
            _Request("POST", "/v1/api-keys", json=body, idempotency_key=idempotency_key)
        )

    def list_api_keys(self, limit: int | None = None, cursor: str | None = None) -> R:
        """``{api_keys: [...], next_cursor}`` (no secrets)."""
        return self._call(
            _Request("GET", "/v1/api-keys", params={"limit": limit, "cursor": cursor})
        )

    def revoke_api_key(self, key_id: str) -> R:
        """Revoke a key at once; returns the key with ``revoked: true``."""
        return self._call(_Request("DELETE", f"/v1/api-keys/{_seg(key_id)}"))

    # mailboxes

    def create_mailbox(
        self,
        name: str,
        domain: str | None = None,
        display_name: str | None = None,
        oversight_mode: str | None = None,
        webhook_url: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> R:
        """A new mailbox ``name@domain``, live when this returns (``mailbox_id``, ``address``)."""
        body = _body(
            name=name,
            domain=domain,
            display_name=display_name,
            oversight_mode=oversight_mode,
            webhook_url=webhook_url,
        )
        return self._call(
            _Request("POST", "/v1/mailboxes", json=body, idempotency_key=idempotency_key)
        )

    def list_mailboxes(self, limit: int = 50, cursor: str | None = None) -> R:
        """One page: ``{mailboxes: [...], next_cursor}``; see ``iter_mailboxes`` for all."""
        return self._call(
            _Request("GET", "/v1/mailboxes", params={"limit": limit, "cursor": cursor})
        )

    def get_mailbox(self, mailbox_id: str) -> R:
        return self._call(_Request("GET", f"/v1/mailboxes/{_seg(mailbox_id)}"))

    def update_mailbox(self, mailbox_id: str, **fields: Any) -> R:
        """PATCH exactly the given fields: ``oversight_mode``, ``display_name``,
        ``webhook_url`` (None removes it), ``allowlist``."""
        return self._call(_Request("PATCH", f"/v1/mailboxes/{_seg(mailbox_id)}", json=fields))

    def delete_mailbox(self, mailbox_id: str) -> R:
        """Decommission: the address stops receiving and sending at once."""
        return self._call(_Request("DELETE", f"/v1/mailboxes/{_seg(mailbox_id)}"))

    def get_allowlist(self, mailbox_id: str) -> R:
        """``{mailbox_id, entries}``: addresses or ``*@domain`` that skip gated_send review."""
        return self._call(_Request("GET", f"/v1/mailboxes/{_seg(mailbox_id)}/allowlist"))

    def set_allowlist(self, mailbox_id: str, entries: Iterable[str]) -> R:
        """Replace the allowlist."""
        return self._call(
            _Request(
                "PUT",
                f"/v1/mailboxes/{_seg(mailbox_id)}/allowlist",
                json={"entries": list(entries)},
            )
        )

    def request_upgrade(self, mailbox_id: str, target_mode: str) -> R:
        """Ask the operator for more autonomy (agent keys cannot promote themselves)."""
        return self._call(
            _Request(
                "POST",
                f"/v1/mailboxes/{_seg(mailbox_id)}/request-upgrade",
                json={"target_mode": target_mode},
            )
        )

    # sending

    def send_email(
        self,
        mailbox_id: str,
        to: str | Iterable[str],
        subject: str,
        body_text: str | None = None,
        body_html: str | None = None,
        markdown: str | None = None,
        cc: str | Iterable[str] | None = None,
        bcc: str | Iterable[str] | None = None,
        send_at: str | datetime | None = None,
        dry_run: bool = False,
        idempotency_key: str | None = None,
        attachments: Iterable[dict[str, str]] | None = None,
    ) -> R:
        """Send from a mailbox. ``status`` is ``sent``, ``pending`` (held for approval:
        ``pending_id``) or ``scheduled``; ``dry_run=True`` only reports the oversight verdict.
        ``attachments``: ``{"filename", "content_base64", "content_type"?}`` dicts as the API
        takes them (``attachment(filename, data)`` makes one), up to 20 files, 7 MiB together."""
        body = _body(
            to=_listed(to),
            subject=subject,
            body_text=body_text,
            body_html=body_html,
            markdown=markdown,
            cc=_listed(cc),
            bcc=_listed(bcc),
            send_at=_when(send_at),
            dry_run=dry_run or None,
            attachments=_attachments(attachments),
        )
        return self._call(
            _Request(
                "POST",
                f"/v1/mailboxes/{_seg(mailbox_id)}/send",
                json=body,
                idempotency_key=idempotency_key,
            )
        )

    def reply_email(
        self,
        mailbox_id: str,
        email_id: str | None = None,
        thread_id: str | None = None,
        body_text: str | None = None,
        body_html: str | None = None,
        markdown: str | None = None,
        cc: str | Iterable[str] | None = None,
        bcc: str | Iterable[str] | None = None,
        dry_run: bool = False,
        idempotency_key: str | None = None,
        attachments: Iterable[dict[str, str]] | None = None,
    ) -> R:
        """Reply to ``email_id`` or to the latest message of ``thread_id``; threading
        headers and ``Re:`` are set by the server. Same result as ``send_email``;
        ``attachments`` as there."""
        body = _body(
            email_id=email_id,
            thread_id=thread_id,
            body_text=body_text,
            body_html=body_html,
            markdown=markdown,
            cc=_listed(cc),
            bcc=_listed(bcc),
            dry_run=dry_run or None,
            attachments=_attachments(attachments),
        )
        return self._call(
            _Request(
                "POST",
                f"/v1/mailboxes/{_seg(mailbox_id)}/reply",
                json=body,
                idempotency_key=idempotency_key,
            )
        )

    def cancel_message(self, email_id: str) -> R:
        """Cancel an outbound message that has not started sending."""
        return self._call(_Request("POST", f"/v1/emails/{_seg(email_id)}/cancel"))

    # reading

    def check_inbox(
        self,
        mailbox_id: str,
        filter: str = "all",
        limit: int = 20,
        cursor: str | None = None,
        direction: str | None = None,
    ) -> R:
        """``{emails: [...], next_cursor}``; ``filter`` is all, unread or requires_action."""
        params = {"filter": filter, "limit": limit, "cursor": cursor, "direction": direction}
        return self._call(
            _Request("GET", f"/v1/mailboxes/{_seg(mailbox_id)}/emails", params=params)
        )

    def read_email(self, email_id: str) -> R:
        """The full message (bodies, headers, attachments); marks an inbound message read."""
        return self._call(_Request("GET", f"/v1/emails/{_seg(email_id)}"))

    def get_thread(self, mailbox_id: str, thread_id: str) -> R:
        """``{thread_id, message_count, participants, emails: [...]}``, oldest first."""
        return self._call(
            _Request("GET", f"/v1/mailboxes/{_seg(mailbox_id)}/threads/{_seg(thread_id)}")
        )

    def get_tags(self, email_id: str) -> R:
        return self._call(_Request("GET", f"/v1/emails/{_seg(email_id)}/tags"))

    def set_tags(self, email_id: str, tags: dict[str, str]) -> R:
        """Replace the message's tags (a name → value map)."""
        return self._call(
            _Request("PUT", f"/v1/emails/{_seg(email_id)}/tags", json={"tags": dict(tags)})
        )

    def delete_tag(self, email_id: str, name: str) -> R:
        return self._call(_Request("DELETE", f"/v1/emails/{_seg(email_id)}/tags/{_seg(name)}"))

    # oversight

    def list_pending(self, limit: int = 50, cursor: str | None = None) -> R:
        """Held messages awaiting a decision: ``{pending: [...], next_cursor}``."""
        return self._call(
            _Request("GET", "/v1/oversight/pending", params={"limit": limit, "cursor": cursor})
        )

    def decide_email(
        self,
        pending_id: str | None = None,
        email_id: str | None = None,
        action: str = "approve",
        reason: str | None = None,
        edits: dict[str, str] | None = None,
    ) -> R:
        """Approve or reject a held message, by ``pending_id`` or ``email_id``; ``edits``
        may change ``subject``/``body_text``/``body_html`` before approval."""
        body = _body(
            pending_id=pending_id, email_id=email_id, action=action, reason=reason, edits=edits
        )
        return self._call(_Request("POST", "/v1/oversight/decide", json=body))

    def approve(
        self, pending_id: str, reason: str | None = None, edits: dict[str, str] | None = None
    ) -> R:
        """``decide_email(pending_id, action="approve", ...)``."""
        return self.decide_email(
            pending_id=pending_id, action="approve", reason=reason, edits=edits
        )

    def reject(self, pending_id: str, reason: str | None = None) -> R:
        """``decide_email(pending_id, action="reject", ...)``."""
        return self.decide_email(pending_id=pending_id, action="reject", reason=reason)

    # reputation, audit, usage, domains, events

    def get_reputation(self, mailbox_id: str) -> R:
        """Score 0-100, bounce/complaint/delivery rates and 30-day counts for one mailbox."""
        return self._call(_Request("GET", f"/v1/mailboxes/{_seg(mailbox_id)}/reputation"))

    def list_reputation(self, sort: str = "reputation_score", order: str | None = None) -> R:
        """Every mailbox's reputation, sorted by ``reputation_score``, ``bounce_rate``,
        ``complaint_rate`` or ``delivery_rate`` (worst first for the rates)."""
        return self._call(_Request("GET", "/v1/reputation", params={"sort": sort, "order": order}))

    def get_audit_log(self, limit: int = 50, cursor: str | None = None) -> R:
        """``{entries: [...], next_cursor}``, hash-chained per account."""
        return self._call(
            _Request("GET", "/v1/audit-log", params={"limit": limit, "cursor": cursor})
        )

    def verify_audit_log(self) -> R:
        """Recompute the hash chain: ``{valid, entries, broken_at}``."""
        return self._call(_Request("GET", "/v1/audit-log/verify"))

    def get_usage(self) -> R:
        return self._call(_Request("GET", "/v1/usage"))

    def get_identity_keys(self, mailbox_id: str) -> R:
        """A mailbox's published Ed25519 identity keys (public, no key needed):
        ``{mailbox_id, keys: [jwk, ...]}``; revoked keys carry ``revoked_at``."""
        return self._call(_Request("GET", f"/.well-known/multimail/keys/{_seg(mailbox_id)}"))

    def get_published_dns(self, name: str) -> R:
        """The TXT records this server asks to publish at ``name`` (its DKIM keys), public:
        ``{name, type, records: [str, ...]}``; NotFound when there are none."""
        return self._call(
            _Request("GET", "/.well-known/multimail/dns", params={"name": name, "type": "TXT"})
        )

    def list_domains(self) -> R:
        """``{domains: [{domain, status, dns_records}]}``."""
        return self._call(_Request("GET", "/v1/domains"))

    def list_events(
        self,
        after: int = 0,
        mailbox_id: str | None = None,
        type: str | Iterable[str] | None = None,
        limit: int = 100,
    ) -> R:
        """Events with ``seq`` greater than ``after``, in commit order; ``type`` filters."""
        types = ",".join(_listed(type) or []) or None
        params = {"after": after, "mailbox_id": mailbox_id, "type": types, "limit": limit}
        return self._call(_Request("GET", "/v1/events", params=params))

    def wait_for_email(
        self,
        mailbox_id: str,
        timeout_seconds: int = 30,
        sender: str | None = None,
        subject_contains: str | None = None,
        after: str | int | None = None,
    ) -> R:
        """Hold until an email matching the filters reaches the mailbox, or until
        ``timeout_seconds`` (1-120) pass: ``{email, timed_out, cursor}``, ``email`` None on
        timeout. Pass ``cursor`` back as ``after`` to wait for the next one without missing
        any. A timeout outside 1-120 raises ``ValueError`` before anything is sent."""
        _check_wait(timeout_seconds)
        params = {
            "timeout_seconds": timeout_seconds,
            "sender": sender,
            "subject_contains": subject_contains,
            "after": after,
        }
        return self._call(
            _Request(
                "GET",
                f"/v1/mailboxes/{_seg(mailbox_id)}/wait",
                params=params,
                read_timeout=timeout_seconds + WAIT_READ_MARGIN,
            )
        )

    # contacts and suppression

    def list_contacts(
        self, q: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> R:
        params = {"q": q, "limit": limit, "cursor": cursor}
        return self._call(_Request("GET", "/v1/contacts", params=params))

    def add_contact(
        self,
        email: str,
        name: str | None = None,
        tags: Iterable[str] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> R:
        body = _body(email=email, name=name, tags=_listed(tags))
        return self._call(
            _Request("POST", "/v1/contacts", json=body, idempotency_key=idempotency_key)
        )

    def delete_contact(self, contact_id: str) -> R:
        return self._call(_Request("DELETE", f"/v1/contacts/{_seg(contact_id)}"))

    def list_suppressions(self, limit: int | None = None, cursor: str | None = None) -> R:
        """Addresses no mailbox of the account will send to (``next_cursor`` pages on)."""
        return self._call(
            _Request("GET", "/v1/suppression", params={"limit": limit, "cursor": cursor})
        )

    def add_suppression(self, email_address: str, reason: str | None = None) -> R:
        body = _body(email_address=email_address, reason=reason)
        return self._call(_Request("POST", "/v1/suppression", json=body))

    def remove_suppression(self, email_address: str) -> R:
        return self._call(_Request("DELETE", f"/v1/suppression/{_seg(email_address)}"))

    # webhooks

    def create_webhook(
        self,
        url: str,
        events: str | Iterable[str] | None = None,
        mailbox_id: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> R:
        """Subscribe ``url`` to ``events`` (None or empty: every event), for one mailbox or
        the whole account: ``{id, url, events, mailbox_id, status, signing_secret,
        created_at}``; deliveries are signed with ``signing_secret`` (``whsec_…``)."""
        body = _body(url=url, events=_listed(events), mailbox_id=mailbox_id)
        return self._call(
            _Request("POST", "/v1/webhooks", json=body, idempotency_key=idempotency_key)
        )

    def list_webhooks(self) -> R:
        """``{subscriptions: [...]}``, without their signing secrets."""
        return self._call(_Request("GET", "/v1/webhooks"))

    def get_webhook(self, webhook_id: str) -> R:
        """One subscription, with its ``signing_secret``."""
        return self._call(_Request("GET", f"/v1/webhooks/{_seg(webhook_id)}"))

    def delete_webhook(self, webhook_id: str) -> R:
        """Remove a subscription: nothing more is delivered to it. An empty result."""
        return self._call(_Request("DELETE", f"/v1/webhooks/{_seg(webhook_id)}"))

    def rotate_webhook_secret(self, webhook_id: str) -> R:
        """A new ``signing_secret``; the old one stays valid until
        ``previous_secret_expires_at``: ``{id, signing_secret, previous_secret_expires_at}``."""
        return self._call(_Request("POST", f"/v1/webhooks/{_seg(webhook_id)}/rotate-secret"))

    def list_webhook_deliveries(
        self,
        limit: int = 50,
        cursor: str | None = None,
        status: str | None = None,
        webhook_id: str | None = None,
    ) -> R:
        """The delivery log: ``{deliveries: [{id, webhook_id, event_id, event_type, url,
        status, attempts, response_status, latency_ms, last_attempt_at, next_attempt_at}],
        next_cursor}``; ``status`` is pending, delivering, delivered or dead."""
        params = {"limit": limit, "cursor": cursor, "status": status, "webhook_id": webhook_id}
        return self._call(_Request("GET", "/v1/webhook-deliveries", params=params))

    def replay_webhook_delivery(self, delivery_id: str) -> R:
        """Queue a delivery (a dead one, say) to be sent again: ``{delivery}``."""
        return self._call(_Request("POST", f"/v1/webhook-deliveries/{_seg(delivery_id)}/replay"))


# --- the event stream -------------------------------------------------------------------

_LINE_END = re.compile(r"\r\n|\r|\n")
_TRANSIENT = frozenset({502, 503, 504})  # a proxy in front of a restarting server


@dataclass(frozen=True)
class _SSE:
    """One dispatched Server-Sent Event."""

    event: str
    data: str
    id: str


class _SSEDecoder:
    """Server-Sent Events from UTF-8 bytes in chunks of any size (WHATWG HTML §9.2.6).

    Lines end in CRLF, LF or CR; ``:`` starts a comment; ``data`` lines join with LF; a
    blank line dispatches; an event with no data is dropped, and so is one cut off by the
    end of the stream. ``last_event_id`` and ``retry_ms`` survive ``restart()`` (a new
    connection), as the reconnection needs them.
    """

    def __init__(self) -> None:
        self.last_event_id = ""
        self.retry_ms: int | None = None
        self.restart()

    def restart(self) -> None:
        """Forget any partial line and event: a new connection starts clean."""
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""
        self._after_cr = False  # a CR ended the last chunk; an LF opening the next is its pair
        self._at_start = True  # a byte order mark may open the stream
        self._id = self.last_event_id
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[_SSE]:
        text = self._utf8.decode(chunk)
        if not text:
            return []
        if self._at_start:
            self._at_start = False
            text = text.removeprefix("\ufeff")
        if self._after_cr and text.startswith("\n"):
            text = text[1:]
        self._after_cr = text.endswith("\r")
        *lines, self._partial = _LINE_END.split(self._partial + text)
        return [event for line in lines if (event := self._line(line)) is not None]

    def _line(self, line: str) -> _SSE | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):  # a comment, e.g. the server's keep-alive
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None  # unknown fields are ignored

    def _dispatch(self) -> _SSE | None:
        # The id is committed only here, so a stream cut mid-event resumes before it.
        self.last_event_id = self._id
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return _SSE(event=event or "message", data="\n".join(data), id=self.last_event_id)


def _seq(event_id: str) -> int | str:
    return int(event_id) if event_id.isascii() and event_id.isdigit() else event_id


def _event_result(sse: _SSE) -> Result:
    """The event's JSON object, with the stream's id as ``seq``."""
    try:
        data = json.loads(sse.data)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ServerError(
            None,
            "invalid_event",
            f"event {sse.id or '(no id)'} of type {sse.event} is not a JSON object: "
            f"{sse.data[:100]!r}",
        )
    if sse.id:
        data["seq"] = _seq(sse.id)
    else:
        data.setdefault("seq", None)
    return Result(data)


def _backoff(failures: int, base: float) -> float:
    """Seconds to wait before reconnection number ``failures`` in a row: doubling, capped."""
    return min(RECONNECT_DELAY_CAP, base * (1 << min(max(failures - 1, 0), 16)))


class _EventStream:
    """Where an event stream stands between connections: decoder, position and backoff.

    The first connection starts at ``after`` (None: from now). A reconnection asks for the
    events after the last one dispatched, as ``?after=`` and ``Last-Event-ID`` alike. A
    failure before the stream ever opened is raised: it is a wrong URL or a server that is
    not there, not a dropped stream.
    """

    def __init__(
        self,
        after: str | int | None,
        mailbox_id: str | None,
        types: str | Iterable[str] | None,
        reconnect_delay: float,
    ) -> None:
        self.after = None if after is None else str(after)
        self.mailbox_id = mailbox_id
        self.types = ",".join(_listed(types) or []) or None
        self.reconnect_delay = reconnect_delay
        self.decoder = _SSEDecoder()
        self.opened_once = False
        self.failures = 0  # connections in a row that brought nothing

    def request(self) -> _Request:
        last = self.decoder.last_event_id or None
        params = {"after": last or self.after, "mailbox_id": self.mailbox_id, "type": self.types}
        request = _Request(
            "GET", "/v1/events/stream", params=params, read_timeout=STREAM_IDLE_TIMEOUT
        )
        request.headers["Accept"] = "text/event-stream"
        if last is not None:
            request.headers["Last-Event-ID"] = last
        return request

    def opened(self, response: httpx.Response) -> bool:
        """True when the response is the stream; False for a transient failure to retry.

        An error response must have been read already (its problem document is raised)."""
        if response.status_code >= 400:
            if self.opened_once and response.status_code in _TRANSIENT:
                return False
            raise _error(response)
        kind = response.headers.get("content-type", "")
        if not kind.startswith("text/event-stream"):
            raise ServerError(
                response.status_code,
                "invalid_response",
                f"expected an event stream from {response.request.url}, got "
                f"{kind or 'no content type'}; is this a MultiMail server?",
            )
        self.opened_once = True
        self.decoder.restart()
        return True

    def dropped(self, base_url: str, exc: httpx.TransportError) -> None:
        """A connection failed or broke; raises unless the stream had ever been open."""
        if not self.opened_once:
            raise APIConnectionError(base_url, str(exc) or type(exc).__name__) from exc

    def feed(self, chunk: bytes) -> list[Result]:
        if chunk:
            self.failures = 0  # bytes arrived (even a keep-alive): the connection worked
        return [_event_result(sse) for sse in self.decoder.feed(chunk)]

    def delay(self) -> float:
        """Seconds to pause before the next connection; the server's ``retry:`` sets the base."""
        self.failures += 1
        retry = self.decoder.retry_ms
        base = self.reconnect_delay if retry is None else retry / 1000
        return _backoff(self.failures, base)


# --- the clients ------------------------------------------------------------------------


def _raw_request(email_id: str) -> _Request:
    request = _Request("GET", f"/v1/emails/{_seg(email_id)}/raw")
    request.headers["Accept"] = "message/rfc822"
    return request


def _attachment_request(email_id: str, attachment_id: str) -> _Request:
    return _Request("GET", f"/v1/emails/{_seg(email_id)}/attachments/{_seg(attachment_id)}")


class Client(_Operations[Result]):
    """Synchronous client. ``with Client() as mm: mm.check_inbox(mailbox_id=...)``.

    A base URL that does not parse, or a key that is not printable ASCII, raises
    ``ValueError`` here."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.api_key = _api_key(api_key)
        self.base_url = _base_url(base_url)
        _check_settings(self.api_key, self.base_url)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=_headers(self.api_key),
            timeout=timeout,
            transport=transport,
        )

    def _send(self, request: _Request) -> httpx.Response:
        try:
            return self._http.request(
                request.method,
                request.path,
                params=request.params,
                json=request.json,
                headers=request.headers,
                timeout=_timeout(self._http.timeout, request.read_timeout),
            )
        except httpx.TransportError as exc:
            raise APIConnectionError(self.base_url, str(exc) or type(exc).__name__) from exc

    def _call(self, request: _Request) -> Result:
        return _parse(self._send(request))

    def stream_events(
        self,
        after: str | int | None = None,
        mailbox_id: str | None = None,
        types: str | Iterable[str] | None = None,
        *,
        reconnect_delay: float = RECONNECT_DELAY,
    ) -> Generator[Result, None, None]:
        """Events as they are committed, from ``GET /v1/events/stream`` (Server-Sent Events):
        each a ``Result`` like ``list_events``' items, its stream id as ``seq``.

        Starts after ``after`` (a ``seq``; None: from now), optionally one mailbox and some
        ``types``. A dropped stream is reopened after a short backoff, resuming after the
        last event seen; it ends only when the caller stops iterating (``close()`` drops
        the connection at once). A failure to connect before the stream ever opened, and
        HTTP errors other than 502/503/504 on a reconnection, are raised."""
        stream = _EventStream(after, mailbox_id, types, reconnect_delay)
        while True:
            request = stream.request()
            try:
                with self._http.stream(
                    request.method,
                    request.path,
                    params=request.params,
                    headers=request.headers,
                    timeout=_timeout(self._http.timeout, request.read_timeout),
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                    if stream.opened(response):
                        for chunk in response.iter_bytes():
                            yield from stream.feed(chunk)
            except httpx.TransportError as exc:
                stream.dropped(self.base_url, exc)
            time.sleep(stream.delay())

    def get_raw_email(self, email_id: str) -> bytes:
        """The message exactly as received or sent (RFC 5322 bytes)."""
        return _bytes(self._send(_raw_request(email_id)))

    def download_attachment(self, email_id: str, attachment_id: str) -> bytes:
        """One attachment's decoded bytes (ids from ``read_email``'s ``attachments``)."""
        return _bytes(self._send(_attachment_request(email_id, attachment_id)))

    def iter_mailboxes(self, limit: int = 50) -> Iterator[Result]:
        """Every mailbox, following ``next_cursor`` page by page."""
        cursor = None
        while True:
            page = self.list_mailboxes(limit=limit, cursor=cursor)
            yield from page.mailboxes
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r})"


class AsyncClient(_Operations[Awaitable[Result]]):
    """Asynchronous client: the same methods as ``Client``, awaited.

    ``async with AsyncClient() as mm: await mm.check_inbox(mailbox_id=...)``. Settings
    are checked as ``Client`` checks them.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.api_key = _api_key(api_key)
        self.base_url = _base_url(base_url)
        _check_settings(self.api_key, self.base_url)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=_headers(self.api_key),
            timeout=timeout,
            transport=transport,
        )

    async def _send(self, request: _Request) -> httpx.Response:
        try:
            return await self._http.request(
                request.method,
                request.path,
                params=request.params,
                json=request.json,
                headers=request.headers,
                timeout=_timeout(self._http.timeout, request.read_timeout),
            )
        except httpx.TransportError as exc:
            raise APIConnectionError(self.base_url, str(exc) or type(exc).__name__) from exc

    async def stream_events(
        self,
        after: str | int | None = None,
        mailbox_id: str | None = None,
        types: str | Iterable[str] | None = None,
        *,
        reconnect_delay: float = RECONNECT_DELAY,
    ) -> AsyncGenerator[Result, None]:
        """Events as they are committed (Server-Sent Events), as in ``Client.stream_events``.

        ``async for event in mm.stream_events(): ...``; to stop early and close the
        connection at once, iterate inside ``contextlib.aclosing(mm.stream_events())``."""
        stream = _EventStream(after, mailbox_id, types, reconnect_delay)
        while True:
            request = stream.request()
            try:
                async with self._http.stream(
                    request.method,
                    request.path,
                    params=request.params,
                    headers=request.headers,
                    timeout=_timeout(self._http.timeout, request.read_timeout),
                ) as response:
                    if response.status_code >= 400:
                        await response.aread()
                    if stream.opened(response):
                        async for chunk in response.aiter_bytes():
                            for event in stream.feed(chunk):
                                yield event
            except httpx.TransportError as exc:
                stream.dropped(self.base_url, exc)
            await asyncio.sleep(stream.delay())

    async def _run(self, request: _Request) -> Result:
        return _parse(await self._send(request))

    def _call(self, request: _Request) -> Awaitable[Result]:
        return self._run(request)

    async def get_raw_email(self, email_id: str) -> bytes:
        """The message exactly as received or sent (RFC 5322 bytes)."""
        return _bytes(await self._send(_raw_request(email_id)))

    async def download_attachment(self, email_id: str, attachment_id: str) -> bytes:
        """One attachment's decoded bytes (ids from ``read_email``'s ``attachments``)."""
        return _bytes(await self._send(_attachment_request(email_id, attachment_id)))

    async def iter_mailboxes(self, limit: int = 50) -> AsyncIterator[Result]:
        """Every mailbox, following ``next_cursor`` page by page."""
        cursor = None
        while True:
            page = await self.list_mailboxes(limit=limit, cursor=cursor)
            for mailbox in page.mailboxes:
                yield mailbox
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncClient(base_url={self.base_url!r})"
