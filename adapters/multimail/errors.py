"""Shell-side errors and the one table that maps every error to an HTTP status.

Core errors (multimail_core.errors) carry a ``code``; shell errors add what only the shell
knows (authentication, lookups, idempotency, rate limits). ``STATUS`` is the single
error → status table the HTTP API, the SDK and the CLI agree on.
"""

from __future__ import annotations

from multimail_core.errors import MultimailError


class ShellError(MultimailError):
    code = "error"


class Unauthenticated(ShellError):
    code = "unauthenticated"


class NotFound(ShellError):
    code = "not_found"


class Conflict(ShellError):
    code = "conflict"


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"


class AlreadyDecided(Conflict):
    code = "already_decided"


class RateLimited(ShellError):
    code = "rate_limited"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class PayloadTooLarge(ShellError):
    code = "payload_too_large"


class LoopDetected(ShellError):
    """A reply that would extend an agent-to-agent exchange past the hop limit."""

    code = "loop_detected"


class LinkExpired(ShellError):
    code = "link_expired"


#: code → HTTP status. Anything not listed is a 500 (a bug, logged, never shown).
STATUS: dict[str, int] = {
    "unauthenticated": 401,
    "forbidden": 403,
    "oversight_denied": 403,
    "not_found": 404,
    "conflict": 409,
    "idempotency_conflict": 409,
    "already_decided": 409,
    "link_expired": 410,
    "illegal_transition": 409,
    "address_unavailable": 409,
    "mailbox_unavailable": 409,
    "payload_too_large": 413,
    "invalid_value": 422,
    "invalid_address": 422,
    "validation_error": 422,
    "recipient_suppressed": 422,
    "loop_detected": 422,
    "rate_limited": 429,
}

#: Authorization rules whose denial must not reveal that the resource exists.
HIDE_AS_NOT_FOUND = frozenset({"other_account", "other_mailbox", "held_message_hidden"})
