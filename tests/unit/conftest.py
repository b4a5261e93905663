"""Small factories for the unit scenarios: keys, mailboxes, addresses, drafts.

Ids are short readable strings: the core treats them as opaque text (only ``ids`` parses).
Every scenario lives in account ``ACC_A`` unless it is about another tenant.
"""

from __future__ import annotations

from multimail_core import mailbox
from multimail_core.addresses import Address, parse_address
from multimail_core.authorization import Key, Scope
from multimail_core.modes import OversightMode
from multimail_core.workflows import Draft, NewIds

NOW = 1_700_000_000_000  # ms since epoch
MINUTE = 60_000
DAY = 86_400_000

ACC_A = "acc_A"
ACC_B = "acc_B"
MBX_1 = "mbx_1"
MBX_2 = "mbx_2"
BOX_ADDRESS = "agent@acme.agents.localhost"

IDS = NewIds(message_id="msg_1", approval_id="apr_1", thread_id="thr_1")


def addr(text: str) -> Address:
    return parse_address(text)


def key(
    *scopes: str,
    id: str = "key_1",
    account: str = ACC_A,
    mailboxes: tuple[str, ...] | None = None,
    server_admin: bool = False,
    revoked: bool = False,
) -> Key:
    """``key("send", "read", mailboxes=(MBX_1,))`` is a typical agent key."""
    return Key(
        id=id,
        account_id=account,
        scopes=frozenset(Scope(s) for s in scopes),
        mailbox_ids=None if mailboxes is None else frozenset(mailboxes),
        server_admin=server_admin,
        revoked=revoked,
    )


def admin_key(*, id: str = "key_admin", account: str = ACC_A) -> Key:
    return key("admin", id=id, account=account)


def overseer_key(*, id: str = "key_overseer", account: str = ACC_A) -> Key:
    return key("oversight", id=id, account=account)


def agent_key(*, id: str = "key_agent", mailbox_id: str = MBX_1) -> Key:
    """What an agent gets: send and read, restricted to its one mailbox."""
    return key("send", "read", id=id, mailboxes=(mailbox_id,))


def box(
    mode: OversightMode = OversightMode.GATED_SEND,
    *,
    id: str = MBX_1,
    account: str = ACC_A,
    status: mailbox.Status = mailbox.Status.ACTIVE,
    allowlist: frozenset[str] = frozenset(),
    webhook_url: str | None = None,
    address: str = BOX_ADDRESS,
) -> mailbox.Mailbox:
    return mailbox.Mailbox(
        id=id,
        account_id=account,
        address=addr(address),
        display_name="Support agent",
        mode=mode,
        status=status,
        allowlist=allowlist,
        webhook_url=webhook_url,
        created_at=NOW - DAY,
        decommissioned_at=NOW - MINUTE if status is mailbox.Status.DECOMMISSIONED else None,
    )


def draft(
    *to: str,
    cc: tuple[str, ...] = (),
    bcc: tuple[str, ...] = (),
    subject: str = "Your order",
    body_text: str = "It ships tomorrow.",
    body_html: str | None = None,
    send_at: int | None = None,
) -> Draft:
    return Draft(
        to=tuple(addr(t) for t in to),
        subject=subject,
        body_text=body_text,
        cc=tuple(addr(c) for c in cc),
        bcc=tuple(addr(b) for b in bcc),
        body_html=body_html,
        send_at=send_at,
    )
