"""Rendering stored messages: JSON views for the API and RFC 5322 bytes for ``/raw``.

Pure functions of records; no IO. The JSON shapes follow PRODUCT.md §5 (the seed's field
names: ``email_id``, ``sender``, ``thread_id``, ``requires_action``...).
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from html import escape
from typing import Any

from multimail.records import (
    Account,
    Attachment,
    AuditEntry,
    Contact,
    EventRecord,
    KeyRecord,
    MessageRecord,
    Suppression,
)
from multimail_core import approval as approval_rules
from multimail_core import inbound, outbound, reputation
from multimail_core.approval import Approval
from multimail_core.approval import Status as ApprovalStatus
from multimail_core.mailbox import Mailbox


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def mailbox_view(box: Mailbox) -> dict[str, object]:
    return {
        "mailbox_id": box.id,
        "id": box.id,
        "address": str(box.address),
        "display_name": box.display_name,
        "oversight_mode": box.mode.value,
        "status": box.status.value,
        "webhook_url": box.webhook_url,
        "allowlist": sorted(box.allowlist),
        "account_id": box.account_id,
        "created_at": iso(box.created_at),
        "decommissioned_at": iso(box.decommissioned_at),
    }


def account_view(account: Account) -> dict[str, object]:
    return {
        "account_id": account.id,
        "name": account.name,
        "oversight_email": account.oversight_email,
        "slug": account.slug,
        "default_oversight_mode": account.default_mode.value,
        "created_at": iso(account.created_at),
    }


def key_view(record: KeyRecord) -> dict[str, object]:
    return {
        "id": record.id,
        "name": record.name,
        "prefix": record.prefix,
        "scopes": sorted(s.value for s in record.key.scopes),
        "mailbox_ids": sorted(record.key.mailbox_ids)
        if record.key.mailbox_ids is not None
        else None,
        "revoked": record.key.revoked,
        "created_at": iso(record.created_at),
    }


def _status(record: MessageRecord) -> str:
    return record.state.status.value


def _requires_action(record: MessageRecord) -> bool:
    return isinstance(record.state, inbound.Inbound) and inbound.requires_action(record.state)


def attachment_view(a: Attachment) -> dict[str, object]:
    return {
        "attachment_id": a.attachment_id,
        "filename": a.filename,
        "content_type": a.content_type,
        "size": a.size,
        "sha256": a.sha256,
    }


def email_summary(record: MessageRecord) -> dict[str, object]:
    c = record.content
    state = record.state
    return {
        "email_id": record.id,
        "id": record.id,
        "mailbox_id": state.mailbox_id,
        "thread_id": state.thread_id,
        "direction": record.direction,
        "status": _status(record),
        "sender": c.sender,
        "from": c.sender,
        "to": list(c.to),
        "cc": list(c.cc),
        "subject": c.subject,
        "body_text": c.body_text,
        "requires_action": _requires_action(record),
        "has_attachments": bool(c.attachments),
        "received_at": iso(state.received_at) if isinstance(state, inbound.Inbound) else None,
        "sent_at": iso(state.created_at) if isinstance(state, outbound.Outbound) else None,
        "tags": dict(record.tags),
    }


def email_view(record: MessageRecord, public_url: str) -> dict[str, object]:
    c = record.content
    view = email_summary(record)
    view.update(
        {
            "bcc": list(c.bcc) if record.direction == "outbound" else [],
            "body_html": c.body_html,
            "message_id": c.message_id_header,
            "in_reply_to": c.in_reply_to,
            "references": list(c.references),
            "headers": [{"name": k, "value": v} for k, v in c.headers],
            "attachments": [
                {
                    **attachment_view(a),
                    "url": f"{public_url}/v1/emails/{record.id}/attachments/{a.attachment_id}",
                }
                for a in c.attachments
            ],
            "signals": dict(record.meta.get("signals", {})),  # type: ignore[call-overload]
            "defects": list(record.meta.get("defects", [])),  # type: ignore[call-overload]
        }
    )
    state = record.state
    if isinstance(state, outbound.Outbound):
        view.update(
            {
                "pending_id": state.approval_id,
                "approved_by": state.approved_by,
                "send_at": iso(state.send_at),
                "attempts": state.attempts,
                "last_reply": state.last_reply or None,
            }
        )
    return view


def raw_message(record: MessageRecord) -> bytes:
    """The message as sent or received; rendered from its content when no raw bytes exist."""
    if record.raw is not None:
        return record.raw
    c = record.content
    msg = EmailMessage()
    msg["From"] = c.sender
    if c.to:
        msg["To"] = ", ".join(c.to)
    if c.cc:
        msg["Cc"] = ", ".join(c.cc)
    msg["Subject"] = c.subject
    msg["Date"] = format_datetime(datetime.fromtimestamp(_when(record) / 1000, tz=UTC))
    msg["Message-ID"] = c.message_id_header
    if c.in_reply_to:
        msg["In-Reply-To"] = c.in_reply_to
    if c.references:
        msg["References"] = " ".join(c.references)
    for name, value in c.headers:
        if name.lower() not in {"from", "to", "cc", "subject", "date", "message-id"}:
            msg[name] = value
    msg.set_content(c.body_text)
    if c.body_html:
        msg.add_alternative(c.body_html, subtype="html")
    return msg.as_bytes()


def _when(record: MessageRecord) -> int:
    state = record.state
    return state.received_at if isinstance(state, inbound.Inbound) else state.created_at


def pending_view(approval: Approval, record: MessageRecord) -> dict[str, object]:
    c = record.content
    return {
        "pending_id": approval.id,
        "email_id": record.id,
        "mailbox_id": approval.mailbox_id,
        "direction": approval.direction.value,
        "sender": c.sender,
        "from": c.sender,
        "to": list(c.to),
        "cc": list(c.cc),
        "subject": c.subject,
        "body_text": c.body_text,
        "body_html": c.body_html,
        "attachments": [attachment_view(a) for a in c.attachments],
        "created_at": iso(approval.created_at),
    }


def reputation_view(box: Mailbox, c: reputation.Counters) -> dict[str, object]:
    def rate(bp: int) -> float:
        return round(bp / reputation.BP, 4)

    suggestion = reputation.suggest_promotion(c, box.mode)
    return {
        "mailbox_id": box.id,
        "address": str(box.address),
        "reputation_score": reputation.score(c),
        "bounce_rate": rate(reputation.bounce_rate_bp(c)),
        "complaint_rate": rate(reputation.complaint_rate_bp(c)),
        "delivery_rate": rate(reputation.delivery_rate_bp(c)),
        "engagement_rate": rate(reputation.engagement_rate_bp(c)),
        "approval_rate": rate(reputation.approval_rate_bp(c)),
        "messages_sent_30d": c.sent,
        "messages_delivered_30d": c.delivered,
        "hard_bounces_30d": c.hard_bounced,
        "soft_bounces_30d": c.soft_bounced,
        "complaints_30d": c.complaints,
        "messages_reviewed_30d": reputation.reviewed(c),
        "identity_verified": True,
        "oversight_mode": box.mode.value,
        "status": box.status.value,
        "suggested_mode": suggestion.value if suggestion else None,
    }


def event_view(event: EventRecord) -> dict[str, object]:
    return {
        "id": event.id,
        "seq": event.seq,
        "type": event.type,
        "created_at": iso(event.created_at),
        "account_id": event.account_id,
        "mailbox_id": event.mailbox_id,
        "data": event.data,
    }


def audit_view(entry: AuditEntry) -> dict[str, object]:
    return {
        "id": entry.id,
        "seq": entry.seq,
        "action": entry.action,
        "resource_type": entry.resource_type,
        "resource_id": entry.resource_id,
        "actor_key_id": entry.actor_key_id,
        "metadata": entry.metadata,
        "created_at": iso(entry.created_at),
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }


def suppression_view(s: Suppression) -> dict[str, object]:
    return {
        "email_address": s.address,
        "reason": s.reason,
        "mailbox_id": s.mailbox_id,
        "created_at": iso(s.created_at),
    }


def contact_view(c: Contact) -> dict[str, object]:
    return {
        "id": c.id,
        "email": c.email,
        "name": c.name,
        "tags": list(c.tags),
        "created_at": iso(c.created_at),
    }


def display_from(box: Mailbox) -> str:
    return formataddr((box.display_name, str(box.address)))


# --- the approval-link pages (small, static, no scripts) ---------------------------------

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto;
       padding: 0 1rem; color: #1b1b1b; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th {{ text-align: left; padding-right: 1rem; color: #555; font-weight: 500; }}
pre {{ white-space: pre-wrap; background: #f5f5f4; padding: 1rem; border-radius: 6px; }}
button {{ font: inherit; padding: .5rem 1.2rem; margin-right: .6rem; border-radius: 6px;
          border: 1px solid #888; cursor: pointer; }}
.approve {{ background: #1f7a3a; color: #fff; border-color: #1f7a3a; }}
.reject {{ background: #fff; color: #a11; border-color: #a11; }}
.note {{ color: #555; font-size: 13px; }}
input[type=text] {{ font: inherit; width: 100%; padding: .4rem; margin: .4rem 0 1rem; }}
</style></head><body>{body}</body></html>
"""


def _page(title: str, body: str) -> str:
    return _PAGE.format(title=escape(title), body=body)


def _open(review: Any, now: int) -> bool:
    """A link shows the message only while it can still decide it."""
    return approval_rules.link_open(review.approval, now=now, expires_at=review.expires_at)


def link_view(review: Any, now: int) -> dict[str, object]:
    c = review.record.content
    view: dict[str, object] = {
        "pending_id": review.approval.id,
        "status": review.approval.status.value,
        "direction": review.record.direction,
        "mailbox_id": review.approval.mailbox_id,
        "expires_at": iso(review.expires_at),
        "expired": now > review.expires_at,
    }
    if _open(review, now):
        view.update(
            {
                "from": c.sender,
                "to": list(c.to),
                "cc": list(c.cc),
                "bcc": list(c.bcc),
                "subject": c.subject,
                "body_text": c.body_text,
                "body_html": c.body_html,
                "attachments": [
                    {"filename": a.filename, "content_type": a.content_type, "size": a.size}
                    for a in c.attachments
                ],
            }
        )
    return view


def review_page(review: Any, *, now: int, preselect: str | None = None) -> str:
    c = review.record.content
    apr = review.approval
    if apr.status is not ApprovalStatus.PENDING:
        return _page(
            "Already decided",
            f"<h1>Already decided</h1><p>This message was already "
            f"<b>{escape(apr.status.value)}</b>. Links work once.</p>",
        )
    if now > review.expires_at:
        return _page(
            "Link expired",
            "<h1>Link expired</h1><p>This link has expired. Decide in the API or with "
            "<code>multimail approve</code>.</p>",
        )
    rows = [("Mailbox", apr.mailbox_id), ("From", c.sender), ("To", ", ".join(c.to))]
    if c.cc:
        rows.append(("Cc", ", ".join(c.cc)))
    if c.bcc:
        rows.append(("Bcc (hidden from the others)", ", ".join(c.bcc)))
    rows += [("Subject", c.subject), ("Direction", review.record.direction)]
    rows += [
        ("Attachment", f"{a.filename or a.attachment_id} ({a.content_type}, {a.size} bytes)")
        for a in c.attachments
    ]
    table = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    head = f"<h1>Review a held message</h1><table>{table}</table><pre>{escape(c.body_text)}</pre>"
    if c.body_html:
        head += (
            "<h2>HTML part (source; this is what mail programs display)</h2>"
            f"<pre>{escape(c.body_html)}</pre>"
        )
    hint = ""
    if preselect in ("approve", "reject"):
        hint = f'<p class="note">You followed the “{escape(preselect)}” link; confirm below.</p>'
    form = (
        f'{hint}<form method="post"><label>Reason (optional)'
        '<input type="text" name="reason" maxlength="1000"></label>'
        '<button class="approve" name="action" value="approve">Approve and send</button>'
        '<button class="reject" name="action" value="reject">Reject</button></form>'
        f'<p class="note">Expires {escape(iso(review.expires_at) or "")}. '
        "Nothing is decided until you press a button.</p>"
    )
    return _page("Review a held message", head + form)


def decided_page(approval: Any, record: MessageRecord) -> str:
    verb = escape(approval.status.value)
    return _page(
        f"Message {verb}",
        f"<h1>Message {verb}</h1><p>{escape(record.content.subject)}</p>"
        f'<p class="note">Pending id {escape(approval.id)}; message {escape(record.id)}.</p>',
    )


def link_error_page(text: str) -> str:
    return _page("Approval link", f"<h1>Approval link</h1><p>{escape(text)}</p>")
