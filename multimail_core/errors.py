"""The core's exception tree.

Rule 1: expected outcomes (a held message, a deferred delivery) are values, never exceptions.
Rule 2: misuse raises a MultimailError subclass carrying fields, never an HTTP or SMTP code;
        the shell maps ``code`` to a status through one table.
Rule 3: a raised MultimailError means nothing changed.
"""

from __future__ import annotations


class MultimailError(Exception):
    """Base of every error the core raises on purpose."""

    code = "multimail_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class IllegalTransition(MultimailError):
    """A (state, command) pair that is absent from a transition table."""

    code = "illegal_transition"

    def __init__(self, entity: str, state: str, command: str) -> None:
        super().__init__(f"{entity} in state {state!r} does not accept {command}")
        self.entity = entity
        self.state = state
        self.command = command


class InvalidValue(MultimailError):
    """A value that fails its syntax or range rules (address, id, scope set, mode...)."""

    code = "invalid_value"

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field


class InvalidAddress(InvalidValue):
    code = "invalid_address"

    def __init__(self, detail: str) -> None:
        super().__init__("address", detail)


class NotPermitted(MultimailError):
    """The actor may not perform the command (authorization or oversight said no)."""

    code = "forbidden"

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(detail)
        self.rule = rule


class OversightDenied(NotPermitted):
    """The oversight table denied the action (e.g. send from ``read_only``)."""

    code = "oversight_denied"


class MailboxUnavailable(MultimailError):
    """The mailbox is suspended or decommissioned for the attempted action."""

    code = "mailbox_unavailable"


class AddressUnavailable(MultimailError):
    """The address is taken, or quarantined after a decommission."""

    code = "address_unavailable"


class RecipientSuppressed(MultimailError):
    """A recipient is on the account suppression list."""

    code = "recipient_suppressed"

    def __init__(self, addresses: tuple[str, ...]) -> None:
        super().__init__("recipient is on the suppression list: " + ", ".join(addresses))
        self.addresses = addresses
