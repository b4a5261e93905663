"""Who may do what: API keys, scopes and the authorization table.

Rule 1: a key holds scopes from {admin, oversight, send, read}; ``admin`` satisfies every
        scope requirement (self-approval is stopped elsewhere: reviewer != creator).
Rule 2: a key never holds both ``send`` and ``oversight`` (no self-approval by construction),
        and an ``admin`` key is never restricted to mailboxes.
Rule 3: every operation is a row of OPERATIONS: the scopes that satisfy it, whether it
        targets the server, an account or one mailbox, and whether mailbox-restricted
        (agent) keys may use it at all.
Rule 4: ``authorize`` walks RULES in order, first match wins; the last rule allows. Denials
        name the rule so the shell can answer 404 for another tenant's resource and 403
        for a missing scope.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import icontract

from multimail_core.errors import InvalidValue, NotPermitted


class Scope(enum.Enum):
    ADMIN = "admin"
    OVERSIGHT = "oversight"
    SEND = "send"
    READ = "read"


def _scopes_valid(scopes: frozenset[Scope], mailbox_ids: frozenset[str] | None) -> bool:
    if not scopes:
        return False
    if Scope.SEND in scopes and Scope.OVERSIGHT in scopes:
        return False
    if mailbox_ids is not None and not mailbox_ids:
        return False
    return not (Scope.ADMIN in scopes and mailbox_ids is not None)


@icontract.invariant(lambda self: _scopes_valid(self.scopes, self.mailbox_ids))
@dataclass(frozen=True)
class Key:
    """An API key as the core sees it (the secret itself never reaches the core)."""

    id: str
    account_id: str
    scopes: frozenset[Scope]
    mailbox_ids: frozenset[str] | None = None
    server_admin: bool = False
    revoked: bool = False


@icontract.ensure(lambda scopes, mailbox_ids, result: result == _scopes_valid(scopes, mailbox_ids))
def is_valid_scope_set(scopes: frozenset[Scope], mailbox_ids: frozenset[str] | None) -> bool:
    """True for a scope set a key may hold (non-empty, not send+oversight, admin unrestricted)."""
    return _scopes_valid(scopes, mailbox_ids)


@icontract.ensure(lambda scopes, mailbox_ids: _scopes_valid(scopes, mailbox_ids))
def check_scope_set(scopes: frozenset[Scope], mailbox_ids: frozenset[str] | None) -> None:
    """Refuse an invalid scope set with the reason.

    :raises InvalidValue: for an empty set, send+oversight, or a mailbox-restricted admin.
    """
    if not scopes:
        raise InvalidValue("scopes", "at least one scope is required")
    if Scope.SEND in scopes and Scope.OVERSIGHT in scopes:
        raise InvalidValue(
            "scopes", "a key cannot hold both send and oversight (it could approve its own mail)"
        )
    if Scope.ADMIN in scopes and mailbox_ids is not None:
        raise InvalidValue("scopes", "an admin key cannot be restricted to mailboxes")
    if mailbox_ids is not None and not mailbox_ids:
        raise InvalidValue("mailbox_ids", "a restriction must name at least one mailbox")


@icontract.ensure(lambda key, result: result == bool(key.scopes & {Scope.ADMIN, Scope.OVERSIGHT}))
def is_overseer(key: Key) -> bool:
    """Keys that may decide approvals and raise autonomy."""
    return bool(key.scopes & {Scope.ADMIN, Scope.OVERSIGHT})


@icontract.ensure(lambda key, result: result == (key.mailbox_ids is not None))
def is_agent_key(key: Key) -> bool:
    """A key restricted to a set of mailboxes: what one gives to one agent."""
    return key.mailbox_ids is not None


@icontract.ensure(lambda key, result: not result or not is_agent_key(key), "P5")
@icontract.ensure(lambda key, result: not result or is_overseer(key))
def can_raise_autonomy(key: Key) -> bool:
    """Only an unrestricted admin or oversight key: no agent key raises autonomy (P5)."""
    return is_overseer(key) and not is_agent_key(key)


@icontract.ensure(
    lambda key, mailbox_id, result: (
        result
        == (
            can_raise_autonomy(key)
            or (key.mailbox_ids is not None and mailbox_id in key.mailbox_ids)
        )
    )
)
def can_lower_autonomy(key: Key, mailbox_id: str) -> bool:
    """Unrestricted overseers, and any key restricted to this mailbox (its own agent's key)."""
    return can_raise_autonomy(key) or (
        key.mailbox_ids is not None and mailbox_id in key.mailbox_ids
    )


class Target(enum.Enum):
    SERVER = "server"
    ACCOUNT = "account"
    MAILBOX = "mailbox"


@dataclass(frozen=True)
class Operation:
    name: str
    any_of: frozenset[Scope]
    target: Target
    agent_ok: bool


def _op(name: str, scopes: str, target: Target, agent_ok: bool) -> Operation:
    return Operation(name, frozenset(Scope(s) for s in scopes.split()), target, agent_ok)


_A, _M, _S = Target.ACCOUNT, Target.MAILBOX, Target.SERVER

#: The authorization table. ``spec/authorization.toml`` states the same rows.
OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        _op("accounts.create", "admin", _S, False),
        _op("account.read", "read send oversight", _A, True),
        _op("account.update", "admin", _A, False),
        _op("keys.manage", "admin", _A, False),
        _op("mailboxes.create", "admin", _A, False),
        _op("mailboxes.list", "read send oversight", _A, True),
        _op("mailbox.read", "read send oversight", _M, True),
        _op("mailbox.configure", "send oversight", _M, True),
        _op("mailbox.set_mode", "read send oversight", _M, True),
        _op("mailbox.request_upgrade", "read send oversight", _M, True),
        _op("mailbox.allowlist.read", "read send oversight", _M, True),
        _op("mailbox.allowlist.change", "oversight", _M, False),
        _op("mailbox.decommission", "admin", _M, False),
        _op("messages.send", "send", _M, True),
        _op("messages.read", "read", _M, True),
        _op("messages.manage", "read send", _M, True),
        _op("messages.cancel", "send", _M, True),
        _op("oversight.list", "oversight", _A, True),
        _op("oversight.decide", "oversight", _M, True),
        _op("reputation.read", "read send oversight", _M, True),
        _op("reputation.list", "read oversight", _A, True),
        _op("audit.read", "oversight", _A, False),
        _op("usage.read", "oversight", _A, False),
        _op("domains.read", "read send oversight", _A, True),
        _op("domains.manage", "admin", _A, False),
        _op("contacts.read", "read send", _A, True),
        _op("contacts.manage", "send", _A, False),
        _op("suppression.read", "read send oversight", _A, True),
        _op("suppression.manage", "oversight", _A, False),
        _op("webhooks.manage", "admin", _A, False),
        _op("events.read", "read", _A, True),
        _op("mcp.connect", "read send oversight", _A, True),
    )
}


@dataclass(frozen=True)
class Request:
    """One authorization question: may ``key`` perform ``operation`` on this resource?"""

    key: Key
    operation: Operation
    account_id: str
    mailbox_id: str | None = None


@dataclass(frozen=True)
class Rule:
    name: str
    denies: Callable[[Request], bool]
    reason: str


def _holds_scope(r: Request) -> bool:
    return Scope.ADMIN in r.key.scopes or bool(r.key.scopes & r.operation.any_of)


def _outside_restriction(r: Request) -> bool:
    ids = r.key.mailbox_ids
    return ids is not None and r.mailbox_id is not None and r.mailbox_id not in ids


#: Ordered; the first rule whose ``denies`` is true decides. Names are stable (spec/, audit).
RULES: tuple[Rule, ...] = (
    Rule("key_revoked", lambda r: r.key.revoked, "the key has been revoked"),
    Rule(
        "server_admin_only",
        lambda r: r.operation.target is Target.SERVER and not r.key.server_admin,
        "only the server's bootstrap admin key may do this",
    ),
    Rule(
        "other_account",
        lambda r: r.operation.target is not Target.SERVER and r.key.account_id != r.account_id,
        "the resource belongs to another account",
    ),
    Rule(
        "agent_key_account_operation",
        lambda r: r.key.mailbox_ids is not None and not r.operation.agent_ok,
        "a mailbox-restricted key cannot perform account-wide operations",
    ),
    Rule("other_mailbox", _outside_restriction, "the key is restricted to other mailboxes"),
    Rule(
        "missing_mailbox",
        lambda r: r.operation.target is Target.MAILBOX and r.mailbox_id is None,
        "the operation needs a mailbox",
    ),
    Rule("missing_scope", lambda r: not _holds_scope(r), "the key lacks the required scope"),
)

ALLOW_RULE = "allowed"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str
    reason: str


@icontract.ensure(lambda request, result: result.allowed == (result.rule == ALLOW_RULE))
@icontract.ensure(
    lambda request, result: (
        not result.allowed
        or request.operation.target is Target.SERVER
        or request.key.account_id == request.account_id
    ),
    "P6: never across accounts",
)
@icontract.ensure(
    lambda request, result: not result.allowed or not _outside_restriction(request),
    "P6: agent keys never reach another mailbox",
)
@icontract.ensure(lambda request, result: not result.allowed or not request.key.revoked)
def authorize(request: Request) -> Decision:
    """Walk RULES in order; the first that denies decides, else allow."""
    for rule in RULES:
        if rule.denies(request):
            return Decision(False, rule.name, rule.reason)
    return Decision(True, ALLOW_RULE, "allowed")


@icontract.ensure(lambda request: authorize(request).allowed)
def require(request: Request) -> None:
    """Authorize or raise.

    :raises NotPermitted: with the denying rule's name.
    """
    decision = authorize(request)
    if not decision.allowed:
        raise NotPermitted(decision.rule, decision.reason)
