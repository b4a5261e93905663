"""The service layer: the one place that sequences IO.

Every operation: authenticate → load → call the core → persist the new state, its events
and one audit entry in ONE store transaction (transactional outbox) → return. Nothing here
decides anything the core decides; if a business ``if`` appears here, it belongs in the core.
Clock and id generation are injected so tests control time.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

from multimail import mime, render
from multimail.errors import (
    AlreadyDecided,
    Conflict,
    IdempotencyConflict,
    LoopDetected,
    NotFound,
    Unauthenticated,
)
from multimail.mailflow import DKIM_SELECTORS, HOPS_HEADER, MailFlow, compose_outbound, hops_of
from multimail.records import (
    Account,
    Attachment,
    AuditEntry,
    Contact,
    Content,
    EventRecord,
    IdempotentResponse,
    KeyRecord,
    MessageRecord,
    ReputationFact,
    Suppression,
)
from multimail.store.base import Store
from multimail.webhookflow import WebhookFlow
from multimail_core import approval as approvals
from multimail_core import authorization as authz
from multimail_core import delivery, inbound, mailbox, outbound, reputation, workflows
from multimail_core.addresses import Address, base, parse_address, validate_allowlist_pattern
from multimail_core.authorization import OPERATIONS, Key, Scope
from multimail_core.errors import AddressUnavailable, InvalidValue, NotPermitted
from multimail_core.events import Event
from multimail_core.ids import Kind, make_id
from multimail_core.modes import DEFAULT_MODE, OversightMode

SyncTransport = Callable[[str, Sequence[str], bytes], dict[str, tuple[int, str]]]

KEY_PREFIX = "mm_live_"
GENESIS = "0" * 64
SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")
IDEMPOTENCY_TTL_MS = 24 * 3_600_000
AUTH_CACHE_TTL = 2.0  # seconds: a key revoked through another process stops within this
AUTH_CACHE_SIZE = 10_000
REFERENCES_KEPT = 20
THREAD_LOOKBACK = 100  # messages searched for a reply that lost its headers
THREAD_WINDOW_MS = 30 * 86_400_000


@dataclass(frozen=True)
class Config:
    domain: str = "agents.localhost"
    public_url: str = "http://127.0.0.1:8025"
    webhook_allow_private: bool = False  # --webhook-allow-private


def hash_secret(secret: str) -> str:
    """Keys are 256-bit random strings, so a plain SHA-256 is a sound at-rest hash."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def jsonable(value: object) -> object:
    """Core values → JSON-ready values (enums by value, sets sorted, dataclasses as dicts)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Address):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (frozenset, set)):
        return sorted(jsonable(v) for v in value)  # type: ignore[type-var]
    if isinstance(value, (tuple, list)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


def canonical(value: object) -> bytes:
    return json.dumps(jsonable(value), sort_keys=True, separators=(",", ":")).encode()


def audit_hash(entry: AuditEntry) -> str:
    """The chain link: SHA-256 over every field but the entry's own id and hash."""
    body = {
        "seq": entry.seq,
        "account_id": entry.account_id,
        "action": entry.action,
        "resource_type": entry.resource_type,
        "resource_id": entry.resource_id,
        "actor_key_id": entry.actor_key_id,
        "metadata": entry.metadata,
        "created_at": entry.created_at,
        "prev_hash": entry.prev_hash,
    }
    return hashlib.sha256(canonical(body)).hexdigest()


@dataclass(frozen=True)
class SendResult:
    status: str  # "sent" | "pending" | "scheduled"
    message_id: str
    thread_id: str
    pending_id: str | None
    decision: workflows.oversight.Decision


class Service(MailFlow, WebhookFlow):
    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], int],
        new_ulid: Callable[[], str],
        config: Config | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.new_ulid = new_ulid
        self.config = config or Config()
        self._pending: list[tuple[Event | EventRecord, str]] = []
        #: A synchronous transport for ``run_deliveries``: (mail_from, rcpts, raw) →
        #: {rcpt: (code, text)}. The server's asynchronous worker brings its own.
        self.transport: SyncTransport | None = None
        #: called after every outermost committed transaction (from the committing thread)
        self.on_commit: list[Callable[[], None]] = []
        self._local = threading.local()
        self._rcpt_cache = {}
        self._rcpt_generation = 0
        self._key_cache = {}
        #: secret hash → (expiry, Key): every request authenticates, and waiting for the
        #: store lock behind a write made that the API's bottleneck under load
        self._auth_cache: dict[str, tuple[float, Key]] = {}

    # --- plumbing ---------------------------------------------------------------------

    def new_id(self, kind: Kind) -> str:
        # make_id's contracts cost ~0.1 ms a call on the hot SMTP path; the generator is
        # python-ulid (or a test's), so only its length is checked here and the shape of
        # every id is checked where ids come in from outside (parse_id, is_id).
        ulid = self.new_ulid().upper()
        if len(ulid) != 26:
            return make_id(kind, ulid)  # raises InvalidValue with the reason
        return f"{kind.value}_{ulid}"

    @contextmanager
    def _tx(self) -> Iterator[None]:
        local = self._local
        depth = getattr(local, "depth", 0)
        local.depth = depth + 1
        try:
            with self.store.transaction():
                yield
        finally:
            local.depth = depth
        if depth == 0:  # committed: wake whoever waits for new events (SSE, wait, webhooks)
            for listener in self.on_commit:
                listener()

    def _emit(self, account_id: str, events: Sequence[Event], now: int) -> list[EventRecord]:
        stored = []
        for event in events:
            data = jsonable(event)
            assert isinstance(data, dict)
            record = EventRecord(
                id=self.new_id(Kind.EVENT),
                seq=0,
                type=event.TYPE,
                account_id=account_id,
                mailbox_id=event.mailbox_id,
                created_at=now,
                data=data,
            )
            stored.append(self.store.append_event(record))
        return stored

    def _audit(
        self,
        account_id: str,
        actor: Key | None,
        action: str,
        resource_type: str,
        resource_id: str,
        now: int,
        **metadata: object,
    ) -> None:
        last = self.store.last_audit(account_id)
        entry = AuditEntry(
            id=self.new_id(Kind.EVENT).replace("evt_", "aud_"),
            seq=last.seq + 1 if last else 1,
            account_id=account_id,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            actor_key_id=actor.id if actor else None,
            metadata=jsonable(metadata),  # type: ignore[arg-type]
            created_at=now,
            prev_hash=last.hash if last else GENESIS,
            hash="",
        )
        self.store.append_audit(replace(entry, hash=audit_hash(entry)))

    def verify_audit(self, key: Key) -> dict[str, object]:
        self._authorize(key, "audit.read", key.account_id)
        prev, count = GENESIS, 0
        for entry in self.store.iter_audit(key.account_id):
            if entry.prev_hash != prev or audit_hash(entry) != entry.hash:
                return {"valid": False, "entries": count, "broken_at": entry.seq}
            prev, count = entry.hash, count + 1
        return {"valid": True, "entries": count, "broken_at": None}

    @staticmethod
    def _authorize(
        key: Key, operation: str, account_id: str, mailbox_id: str | None = None
    ) -> None:
        authz.require(authz.Request(key, OPERATIONS[operation], account_id, mailbox_id))

    def idempotent(
        self,
        key: Key,
        idempotency_key: str | None,
        fingerprint: str,
        create: Callable[[], tuple[int, dict[str, object]]],
    ) -> tuple[int, dict[str, object]]:
        """Run ``create`` once per (key, Idempotency-Key); replay its response after."""
        if not idempotency_key:
            return create()
        with self._tx():
            now = self.clock()
            seen = self.store.get_idempotent(key.id, idempotency_key)
            if seen is not None and now - seen.created_at < IDEMPOTENCY_TTL_MS:
                if seen.fingerprint != fingerprint:
                    raise IdempotencyConflict(
                        "this Idempotency-Key was used with a different request body"
                    )
                return seen.status, seen.body
            status, body = create()
            self.store.put_idempotent(
                IdempotentResponse(key.id, idempotency_key, fingerprint, status, body, now)
            )
            return status, body

    # --- keys and accounts ------------------------------------------------------------

    def authenticate(self, secret: str | None) -> Key:
        if not secret:
            raise Unauthenticated("missing bearer key: send 'Authorization: Bearer mm_live_…'")
        digest = hash_secret(secret)
        hit = self._auth_cache.get(digest)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        record = self.store.key_by_hash(digest)
        if record is None or record.key.revoked:
            raise Unauthenticated("unknown or revoked API key")
        if len(self._auth_cache) > AUTH_CACHE_SIZE:
            self._auth_cache.clear()
        self._auth_cache[digest] = (time.monotonic() + AUTH_CACHE_TTL, record.key)
        return record.key

    def bootstrap(
        self, admin_secret: str | None, *, name: str = "default"
    ) -> tuple[Account, str | None]:
        """Ensure the default account and its server-admin key exist.

        Returns the account and the admin secret when one was generated now (else None).
        """
        with self._tx():
            now = self.clock()
            account = self.store.account_by_slug(name)
            if account is None:
                account = Account(self.new_id(Kind.ACCOUNT), name, None, name, DEFAULT_MODE, now)
                self.store.insert_account(account)
                self._audit(account.id, None, "account.bootstrap", "account", account.id, now)
            if admin_secret is not None and self.store.key_by_hash(hash_secret(admin_secret)):
                return account, None
            if admin_secret is None and any(
                k.key.server_admin and not k.key.revoked for k in self.store.list_keys(account.id)
            ):
                return account, None
            secret = admin_secret or new_secret()
            self._insert_key(
                account.id,
                "bootstrap admin",
                frozenset({Scope.ADMIN}),
                None,
                now,
                secret,
                server_admin=True,
            )
            return account, (None if admin_secret else secret)

    def _insert_key(
        self,
        account_id: str,
        name: str,
        scopes: frozenset[Scope],
        mailbox_ids: frozenset[str] | None,
        now: int,
        secret: str,
        *,
        server_admin: bool = False,
        actor: Key | None = None,
    ) -> KeyRecord:
        authz.check_scope_set(scopes, mailbox_ids)
        key = Key(self.new_id(Kind.KEY), account_id, scopes, mailbox_ids, server_admin)
        record = KeyRecord(key, name, hash_secret(secret), secret[: len(KEY_PREFIX) + 4], now)
        self.store.insert_key(record)
        self._audit(
            account_id,
            actor,
            "api_key.create",
            "api_key",
            key.id,
            now,
            name=name,
            scopes=scopes,
            mailbox_ids=mailbox_ids,
        )
        return record

    def create_account(
        self, key: Key, name: str, oversight_email: str | None, slug: str | None = None
    ) -> tuple[Account, str]:
        self._authorize(key, "accounts.create", key.account_id)
        slug = (slug or re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-"))[:32].strip("-")
        if not SLUG.match(slug):
            raise InvalidValue("slug", "use 1-32 lowercase letters, digits or hyphens")
        if oversight_email is not None:
            oversight_email = str(parse_address(oversight_email))
        with self._tx():
            if self.store.account_by_slug(slug) is not None:
                raise Conflict(f"an account with slug {slug!r} exists")
            now = self.clock()
            account = Account(
                self.new_id(Kind.ACCOUNT), name, oversight_email, slug, DEFAULT_MODE, now
            )
            self.store.insert_account(account)
            self._audit(account.id, key, "account.create", "account", account.id, now)
            secret = new_secret()
            self._insert_key(
                account.id, "admin", frozenset({Scope.ADMIN}), None, now, secret, actor=key
            )
        return account, secret

    def get_account(self, key: Key) -> Account:
        self._authorize(key, "account.read", key.account_id)
        account = self.store.get_account(key.account_id)
        if account is None:
            raise NotFound("account not found")
        return account

    def update_account(
        self,
        key: Key,
        *,
        name: str | None = None,
        oversight_email: str | None = None,
        default_oversight_mode: OversightMode | None = None,
    ) -> Account:
        self._authorize(key, "account.update", key.account_id)
        with self._tx():
            account = self.get_account(key)
            email = (
                str(parse_address(oversight_email))
                if oversight_email is not None
                else account.oversight_email
            )
            updated = replace(
                account,
                name=name if name is not None else account.name,
                oversight_email=email,
                default_mode=default_oversight_mode or account.default_mode,
            )
            self.store.update_account(updated)
            self._audit(
                account.id,
                key,
                "account.update",
                "account",
                account.id,
                self.clock(),
                name=updated.name,
                oversight_email=email,
            )
        return updated

    def create_key(
        self, key: Key, name: str, scopes: Sequence[str], mailbox_ids: Sequence[str] | None
    ) -> tuple[KeyRecord, str]:
        self._authorize(key, "keys.manage", key.account_id)
        try:
            scope_set = frozenset(Scope(s) for s in scopes)
        except ValueError as exc:
            raise InvalidValue("scopes", f"unknown scope; use {[s.value for s in Scope]}") from exc
        restriction = frozenset(mailbox_ids) if mailbox_ids is not None else None
        with self._tx():
            for mid in restriction or ():
                self._mailbox(key, mid, "mailbox.read")
            secret = new_secret()
            record = self._insert_key(
                key.account_id, name, scope_set, restriction, self.clock(), secret, actor=key
            )
        return record, secret

    def list_keys(self, key: Key) -> list[KeyRecord]:
        self._authorize(key, "keys.manage", key.account_id)
        return self.store.list_keys(key.account_id)

    def revoke_key(self, key: Key, key_id: str) -> KeyRecord:
        self._authorize(key, "keys.manage", key.account_id)
        with self._tx():
            record = self.store.get_key(key_id)
            if record is None or record.key.account_id != key.account_id:
                raise NotFound(f"no API key {key_id}")
            revoked = replace(record, key=replace(record.key, revoked=True))
            self.store.update_key(revoked)
            self._auth_cache.clear()  # a revoked key stops working at once in this process
            self._audit(key.account_id, key, "api_key.revoke", "api_key", key_id, self.clock())
        return revoked

    # --- mailboxes --------------------------------------------------------------------

    def _mailbox(self, key: Key, mailbox_id: str, operation: str) -> mailbox.Mailbox:
        box = self.store.get_mailbox(mailbox_id)
        if box is None:
            raise NotFound(f"no mailbox {mailbox_id}")
        self._authorize(key, operation, box.account_id, box.id)
        return box

    def account_domain(self, account: Account) -> str:
        return f"{account.slug}.{self.config.domain}"

    def create_mailbox(
        self,
        key: Key,
        *,
        name: str,
        domain: str | None = None,
        display_name: str | None = None,
        oversight_mode: OversightMode | None = None,
        webhook_url: str | None = None,
    ) -> mailbox.Mailbox:
        self._authorize(key, "mailboxes.create", key.account_id)
        if webhook_url is not None:
            webhook_url = self._check_hook_url(webhook_url)
        with self._tx():
            account = self.get_account(key)
            allowed = {self.account_domain(account), self.config.domain}
            chosen = (domain or self.account_domain(account)).lower()
            if chosen not in allowed:
                raise InvalidValue(
                    "domain", f"use one of {sorted(allowed)} (custom domains need verification)"
                )
            address = parse_address(f"{name}@{chosen}")
            now = self.clock()
            availability = mailbox.address_availability(
                self.store.address_holders(address.normalized()), key.account_id, now=now
            )
            if availability is not mailbox.Availability.AVAILABLE:
                raise AddressUnavailable(f"{address} is {availability.value}")
            box, events = mailbox.create(
                self.new_id(Kind.MAILBOX),
                key.account_id,
                address,
                display_name=display_name if display_name is not None else name,
                mode=oversight_mode or account.default_mode,
                webhook_url=webhook_url,
                now=now,
            )
            self.store.insert_mailbox(box)
            self.forget_rcpts()
            self.identity_key(box.id)  # published from the start, stored with the mailbox
            self.sync_mailbox_webhook(box.id, box.account_id, box.webhook_url, now)
            self._emit(key.account_id, events, now)
            self._audit(
                key.account_id,
                key,
                "mailbox.create",
                "mailbox",
                box.id,
                now,
                address=str(address),
                mode=box.mode,
            )
        return box

    def list_mailboxes(
        self, key: Key, *, limit: int, cursor: str | None
    ) -> tuple[list[mailbox.Mailbox], str | None]:
        self._authorize(key, "mailboxes.list", key.account_id)
        return self.store.list_mailboxes(
            key.account_id, only=key.mailbox_ids, limit=limit, cursor=cursor
        )

    def get_mailbox(self, key: Key, mailbox_id: str) -> mailbox.Mailbox:
        return self._mailbox(key, mailbox_id, "mailbox.read")

    def update_mailbox(
        self,
        key: Key,
        mailbox_id: str,
        *,
        oversight_mode: OversightMode | None = None,
        display_name: str | None = None,
        webhook_url: str | None = None,
        clear_webhook: bool = False,
        allowlist: Sequence[str] | None = None,
    ) -> mailbox.Mailbox:
        if webhook_url is not None:
            webhook_url = self._check_hook_url(webhook_url)
        with self._tx():
            box = self._mailbox(key, mailbox_id, "mailbox.read")
            now = self.clock()
            steps: list[
                tuple[str, Callable[[mailbox.Mailbox], tuple[mailbox.Mailbox, tuple[Event, ...]]]]
            ] = []
            if display_name is not None or webhook_url is not None or clear_webhook:
                cfg = mailbox.Configure(display_name, webhook_url, clear_webhook)
                steps.append(
                    ("mailbox.configure", lambda b: workflows.configure(b, key, cfg, now=now))
                )
            if allowlist is not None:
                patterns = frozenset(validate_allowlist_pattern(p) for p in allowlist)
                steps.append(
                    (
                        "mailbox.allowlist",
                        lambda b: workflows.set_allowlist(b, key, patterns, now=now),
                    )
                )
            if oversight_mode is not None:
                steps.append(
                    (
                        "mailbox.set_mode",
                        lambda b: workflows.change_mode(b, key, oversight_mode, now=now),
                    )
                )
            for action, step in steps:
                before = box
                box, events = step(box)
                if events:
                    self._emit(box.account_id, events, now)
                    self._audit(
                        box.account_id,
                        key,
                        action,
                        "mailbox",
                        box.id,
                        now,
                        before=_settings(before),
                        after=_settings(box),
                    )
            self.store.update_mailbox(box)
            self.forget_rcpts()
            self.sync_mailbox_webhook(box.id, box.account_id, box.webhook_url, now)
        return box

    def delete_mailbox(self, key: Key, mailbox_id: str) -> mailbox.Mailbox:
        with self._tx():
            box = self._mailbox(key, mailbox_id, "mailbox.read")
            now = self.clock()
            box, events = workflows.decommission(box, key, now=now)
            self.store.update_mailbox(box)
            self.forget_rcpts()
            self.revoke_identity_key(box.id, now)
            self._emit(box.account_id, events, now)
            self._audit(box.account_id, key, "mailbox.decommission", "mailbox", box.id, now)
        return box

    def request_upgrade(self, key: Key, mailbox_id: str, target_mode: OversightMode) -> None:
        with self._tx():
            box = self._mailbox(key, mailbox_id, "mailbox.read")
            now = self.clock()
            events = workflows.request_upgrade(box, key, target_mode)
            self._emit(box.account_id, events, now)
            self._audit(
                box.account_id,
                key,
                "mailbox.request_upgrade",
                "mailbox",
                box.id,
                now,
                target_mode=target_mode,
            )
            self.notify_operator(
                box.account_id,
                subject=f"[MultiMail] {box.address} asks for {target_mode.value}",
                text=(
                    f"The agent of mailbox {box.address} ({box.id}) asks to move from "
                    f"{box.mode.value} to {target_mode.value}.\n\nOnly an operator can raise "
                    "a mailbox's autonomy: PATCH /v1/mailboxes/{id} with an admin or oversight "
                    "key, or `multimail mailboxes update ID --mode MODE`."
                ),
                purpose="upgrade_request",
                related_id=box.id,
                now=now,
            )

    # --- sending ----------------------------------------------------------------------

    def _suppressed(self, account_id: str) -> frozenset[str]:
        return frozenset(s.address for s in self.store.list_suppressions(account_id))

    def send(
        self,
        key: Key,
        mailbox_id: str,
        *,
        to: Sequence[str],
        subject: str,
        body_text: str,
        body_html: str | None = None,
        cc: Sequence[str] = (),
        bcc: Sequence[str] = (),
        send_at: int | None = None,
        dry_run: bool = False,
        reply_to: MessageRecord | None = None,
        extra_headers: Sequence[tuple[str, str]] = (),
        attachments: Sequence[mime.AttachmentData] = (),
    ) -> SendResult:
        """Submit a message. ``attachments`` are (filename, media type, bytes); their bytes
        are stored by SHA-256 in the same transaction as the message (PRODUCT §3)."""
        draft = workflows.Draft(
            to=tuple(parse_address(a) for a in to),
            cc=tuple(parse_address(a) for a in cc),
            bcc=tuple(parse_address(a) for a in bcc),
            subject=subject,
            body_text=body_text,
            body_html=body_html,
            send_at=send_at,
        )
        with self._tx():
            box = self._mailbox(key, mailbox_id, "messages.send")
            now = self.clock()
            suppressed = self._suppressed(box.account_id)
            if dry_run:
                decision = workflows.check_send(
                    box, key, draft, suppressed=suppressed, reply=reply_to is not None
                )
                status = {"allow": "sent", "hold": "pending"}[decision.verdict.value]
                return SendResult(status, "", "", None, decision)
            thread_id = reply_to.state.thread_id if reply_to else self.new_id(Kind.THREAD)
            ids = workflows.NewIds(self.new_id(Kind.MESSAGE), self.new_id(Kind.APPROVAL), thread_id)
            sub = workflows.submit(
                box, key, draft, ids, suppressed=suppressed, now=now, reply=reply_to is not None
            )
            header_id = f"<{ids.message_id}@{box.address.domain}>"
            refs: tuple[str, ...] = ()
            in_reply_to = None
            if reply_to is not None:
                # what came from outside may not be sendable: keep the ids compose takes,
                # and the last REFERENCES_KEPT of a long chain (RFC 5322 §3.6.4)
                parent = reply_to.content.message_id_header
                in_reply_to = parent if mime.is_message_id(parent) else None
                chain = [r for r in (*reply_to.content.references, parent) if mime.is_message_id(r)]
                refs = tuple(chain[-REFERENCES_KEPT:])
            numbered = zip(
                mime.composed_attachment_ids(len(attachments), alternative=body_html is not None),
                attachments,
                strict=True,
            )
            attached = tuple(
                Attachment(aid, name, media_type.lower(), len(data), self.store.put_blob(data))
                for aid, (name, media_type, data) in numbered
            )
            content = Content(
                sender=str(box.address),
                to=tuple(str(a) for a in draft.to),
                cc=tuple(str(a) for a in draft.cc),
                bcc=tuple(str(a) for a in draft.bcc),
                subject=subject,
                body_text=body_text,
                body_html=body_html,
                headers=tuple(extra_headers),
                message_id_header=header_id,
                in_reply_to=in_reply_to,
                references=refs,
                attachments=attached,
            )
            _check_composable(content, box.display_name, now)
            self.store.insert_message(MessageRecord(sub.message, content))
            if sub.approval is not None:
                self.store.insert_approval(sub.approval)
                self.request_approval_by_mail(
                    sub.approval, MessageRecord(sub.message, content), now
                )
            answered = reply_to.state if reply_to is not None else None
            mark = inbound.MarkReplied(ids.message_id)
            if (
                reply_to is not None
                and isinstance(answered, inbound.Inbound)
                and answered.mailbox_id == box.id
                and inbound.accepts(answered, mark)
            ):
                replied, revents = inbound.apply(answered, mark, now=now)
                self.store.update_message(replace(reply_to, state=replied))
                self._emit(box.account_id, revents, now)
            self._emit(box.account_id, sub.events, now)
            self._audit(
                box.account_id,
                key,
                "message.send",
                "message",
                ids.message_id,
                now,
                to=content.to,
                cc=content.cc,
                bcc=content.bcc,
                subject=subject,
                verdict=sub.decision.verdict,
                rule=sub.decision.rule,
                **_attachment_audit(attached),
            )
        status = {
            outbound.Status.PENDING_APPROVAL: "pending",
            outbound.Status.SCHEDULED: "scheduled",
        }.get(sub.message.status, "sent")
        return SendResult(
            status,
            ids.message_id,
            thread_id,
            sub.approval.id if sub.approval else None,
            sub.decision,
        )

    def reply(
        self,
        key: Key,
        mailbox_id: str,
        *,
        email_id: str | None = None,
        thread_id: str | None = None,
        body_text: str,
        body_html: str | None = None,
        cc: Sequence[str] = (),
        bcc: Sequence[str] = (),
        dry_run: bool = False,
        attachments: Sequence[mime.AttachmentData] = (),
    ) -> SendResult:
        box = self._mailbox(key, mailbox_id, "messages.send")
        original = self._reply_target(box, email_id, thread_id)
        subject = original.content.subject
        if not subject.lower().startswith("re:"):
            subject = f"Re: {subject}"
        recipient = (
            original.content.sender if original.direction == "inbound" else original.content.to[0]
        )
        if isinstance(original.state, inbound.Inbound) and not inbound.answerable(
            original.state.kind
        ):
            raise LoopDetected(
                f"{original.id} is an automatic message ({original.state.kind.value}); agents "
                "do not reply to automatic mail (RFC 3834), which is how mail loops start. "
                "Write a new message with send if a person needs to be told."
            )
        hops = hops_of(original.content.headers) + 1
        if delivery.loop_suspected(hops, 0):
            raise LoopDetected(
                f"this thread has passed {hops - 1} agent hops; replying again could loop "
                f"forever (limit {delivery.HOP_LIMIT}). A human can reply with a new message."
            )
        return self.send(
            key,
            mailbox_id,
            to=[recipient],
            cc=cc,
            bcc=bcc,
            subject=subject,
            body_text=body_text,
            body_html=body_html,
            dry_run=dry_run,
            reply_to=original,
            extra_headers=((HOPS_HEADER, str(hops)),),
            attachments=attachments,
        )

    def _reply_target(
        self, box: mailbox.Mailbox, email_id: str | None, thread_id: str | None
    ) -> MessageRecord:
        if email_id:
            record = self.store.get_message(email_id)
            if record is None or record.state.mailbox_id != box.id or not _visible(record):
                raise NotFound(f"no email {email_id} in this mailbox")
            return record
        if thread_id:
            messages = [m for m in self.store.thread_messages(box.id, thread_id) if _visible(m)]
            inbound_msgs = [m for m in messages if m.direction == "inbound"]
            if inbound_msgs or messages:
                return (inbound_msgs or messages)[-1]
            raise NotFound(f"no thread {thread_id} in this mailbox")
        raise InvalidValue("email_id", "give email_id or thread_id")

    def cancel(self, key: Key, email_id: str) -> MessageRecord:
        with self._tx():
            record = self._message(key, email_id, "messages.cancel")
            if not isinstance(record.state, outbound.Outbound):
                raise Conflict("only outbound messages can be cancelled")
            now = self.clock()
            state, events = outbound.apply(record.state, outbound.Cancel(), now=now)
            record = replace(record, state=state)
            self.store.update_message(record)
            self._emit(record.state.account_id, events, now)
            self._audit(record.state.account_id, key, "message.cancel", "message", email_id, now)
        return record

    # --- reading ----------------------------------------------------------------------

    def _message(self, key: Key, email_id: str, operation: str) -> MessageRecord:
        record = self.store.get_message(email_id)
        if record is None:
            raise NotFound(f"no email {email_id}")
        self._authorize(key, operation, record.state.account_id, record.state.mailbox_id)
        if not _visible(record):
            raise NotFound(f"no email {email_id}")
        return record

    def list_emails(
        self,
        key: Key,
        mailbox_id: str,
        *,
        filter: str,
        direction: str | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[MessageRecord], str | None]:
        box = self._mailbox(key, mailbox_id, "messages.read")
        return self.store.list_messages(
            box.id, filter=filter, direction=direction, limit=limit, cursor=cursor
        )

    def read_email(self, key: Key, email_id: str) -> MessageRecord:
        with self._tx():
            record = self._message(key, email_id, "messages.read")
            if isinstance(record.state, inbound.Inbound):
                box = self.store.get_mailbox(record.state.mailbox_id)
                assert box is not None
                now = self.clock()
                state, events = workflows.read(box, key, record.state, now=now)
                if events:
                    record = replace(record, state=state)
                    self.store.update_message(record)
                    self._emit(box.account_id, events, now)
        return record

    def get_email(self, key: Key, email_id: str) -> MessageRecord:
        return self._message(key, email_id, "messages.read")

    def raw_source(self, key: Key, email_id: str) -> bytes:
        """The message's bytes as received or sent; an outbound message not yet sent (held,
        scheduled, queued) as it would be composed now, files included, unsigned."""
        record = self.get_email(key, email_id)
        state = record.state
        if record.raw is None and isinstance(state, outbound.Outbound):
            box = self.store.get_mailbox(state.mailbox_id)
            if box is not None:
                return self.composed(box, record, state, state.created_at)
        return render.raw_message(record)

    def get_attachment(
        self, key: Key, email_id: str, attachment_id: str
    ) -> tuple[mime.ParsedAttachment, bytes]:
        """From the message's bytes; an outbound message not yet composed (held, scheduled,
        queued) serves the stored blob its content names."""
        record = self.get_email(key, email_id)
        found = mime.attachment(record.raw, attachment_id) if record.raw is not None else None
        if found is not None:
            return found
        for a in record.content.attachments:
            data = self.store.get_blob(a.sha256) if a.attachment_id == attachment_id else None
            if data is not None:
                meta = mime.ParsedAttachment(
                    a.attachment_id, a.filename, a.content_type, a.size, a.sha256, None,
                    "attachment",
                )  # fmt: skip
                return meta, data
        raise NotFound(f"no attachment {attachment_id} in {email_id}")

    def get_thread(self, key: Key, mailbox_id: str, thread_id: str) -> list[MessageRecord]:
        box = self._mailbox(key, mailbox_id, "messages.read")
        messages = [m for m in self.store.thread_messages(box.id, thread_id) if _visible(m)]
        if not messages:
            raise NotFound(f"no thread {thread_id} in this mailbox")
        return messages

    def set_tags(
        self, key: Key, email_id: str, tags: dict[str, str], *, replace_all: bool = False
    ) -> MessageRecord:
        with self._tx():
            record = self._message(key, email_id, "messages.manage")
            merged = {} if replace_all else dict(record.tags)
            merged.update(tags)
            record = replace(record, tags=tuple(sorted(merged.items())))
            self.store.update_message(record)
        return record

    def delete_tag(self, key: Key, email_id: str, name: str) -> MessageRecord:
        with self._tx():
            record = self._message(key, email_id, "messages.manage")
            record = replace(record, tags=tuple((k, v) for k, v in record.tags if k != name))
            self.store.update_message(record)
        return record

    # --- oversight --------------------------------------------------------------------

    def list_pending(
        self, key: Key, *, limit: int, cursor: str | None
    ) -> tuple[list[tuple[approvals.Approval, MessageRecord]], str | None]:
        self._authorize(key, "oversight.list", key.account_id)
        items, nxt = self.store.list_pending(
            key.account_id, only=key.mailbox_ids, limit=limit, cursor=cursor
        )
        out = []
        for apr in items:
            record = self.store.get_message(apr.message_id)
            if record is not None:
                out.append((apr, record))
        return out, nxt

    def decide(
        self,
        key: Key,
        *,
        pending_id: str | None = None,
        email_id: str | None = None,
        action: str,
        reason: str = "",
        edits: approvals.Content | None = None,
    ) -> tuple[approvals.Approval, MessageRecord]:
        if action not in ("approve", "reject"):
            raise InvalidValue("action", "use approve or reject")
        with self._tx():
            apr = self._find_approval(key, pending_id, email_id)
            record = self.store.get_message(apr.message_id)
            box = self.store.get_mailbox(apr.mailbox_id)
            assert record is not None
            assert box is not None
            now = self.clock()
            if apr.status is not approvals.Status.PENDING:
                raise AlreadyDecided(f"{apr.id} was already {apr.status.value}")
            merged = None
            if edits is not None:
                merged = approvals.Content(
                    edits.subject or apr.original.subject,
                    edits.body_text or apr.original.body_text,
                    edits.body_html if edits.body_html is not None else apr.original.body_html,
                )
            result = workflows.decide(
                box,
                key,
                apr,
                record.state,
                approve=action == "approve",
                edits=merged,
                reason=reason,
                suppressed=self._suppressed(box.account_id),
                now=now,
            )
            content = record.content
            if result.approval.edited is not None:
                e = result.approval.edited
                content = replace(
                    content, subject=e.subject, body_text=e.body_text, body_html=e.body_html
                )
                if record.direction == "outbound":
                    # an edit that adds an HTML part moves the attachments in the MIME tree
                    ids = mime.composed_attachment_ids(
                        len(content.attachments), alternative=content.body_html is not None
                    )
                    content = replace(content, attachments=tuple(
                        replace(a, attachment_id=i)
                        for a, i in zip(content.attachments, ids, strict=True)
                    ))  # fmt: skip
                    _check_composable(content, box.display_name, now)
            record = replace(record, state=result.message, content=content)
            self.store.update_approval(result.approval)
            self.store.update_message(record)
            if result.review is not None:
                self.store.add_fact(ReputationFact(box.id, result.review.value, now))
            self._emit(box.account_id, result.events, now)
            self._audit(
                box.account_id,
                key,
                f"oversight.{action}",
                "message",
                record.id,
                now,
                pending_id=apr.id,
                reason=reason,
                original=apr.original,
                edited=result.approval.edited,
            )
        return result.approval, record

    def _find_approval(
        self, key: Key, pending_id: str | None, email_id: str | None
    ) -> approvals.Approval:
        apr = None
        if pending_id:
            apr = self.store.get_approval(pending_id)
        elif email_id:
            record = self.store.get_message(email_id)
            approval_id = getattr(record.state, "approval_id", None) if record else None
            apr = self.store.get_approval(approval_id) if approval_id else None
        else:
            raise InvalidValue("pending_id", "give pending_id or email_id")
        if apr is None:
            raise NotFound("no such pending message")
        self._authorize(key, "oversight.decide", apr.account_id, apr.mailbox_id)
        return apr

    # --- inbound (local delivery; SMTP arrives with the SMTP issue) --------------------

    def deliver_local(
        self,
        box: mailbox.Mailbox,
        content: Content,
        raw: bytes | None,
        now: int,
        *,
        meta: dict[str, object] | None = None,
        request_approval: bool = True,
    ) -> MessageRecord | None:
        """Store an inbound message for ``box``; caller holds the transaction."""
        if not mailbox.can_receive(box):
            return None
        headers = {k.lower(): v for k, v in content.headers}
        kind = inbound.classify(headers)
        refs = [r for r in (*content.references, content.in_reply_to) if r]
        known_thread = self.store.thread_of_header(box.id, refs) if refs else None
        if known_thread is None and inbound.is_reply_subject(content.subject):
            known_thread = self._thread_by_subject(box.id, content, now)
        thread_id = known_thread or self.new_id(Kind.THREAD)
        ids = workflows.NewIds(self.new_id(Kind.MESSAGE), self.new_id(Kind.APPROVAL), thread_id)
        receipt = workflows.receive(
            box,
            sender=content.sender,
            subject=content.subject,
            body_text=content.body_text,
            kind=kind,
            ids=ids,
            now=now,
        )
        if not content.message_id_header:
            content = replace(content, message_id_header=f"<{ids.message_id}@{box.address.domain}>")
        # a Bcc list belongs to the sender's copy only, never to a recipient's
        record = MessageRecord(
            receipt.message, replace(content, bcc=()), raw, meta=dict(meta or {})
        )
        self.store.insert_message(record)
        if receipt.approval is not None:
            self.store.insert_approval(receipt.approval)
        self._emit(box.account_id, receipt.events, now)
        self._audit(
            box.account_id,
            None,
            "message.receive",
            "message",
            record.id,
            now,
            sender=content.sender,
            verdict=receipt.decision.verdict,
        )
        if receipt.approval is not None and request_approval:
            self.request_approval_by_mail(receipt.approval, record, now)
        if known_thread is not None and receipt.approval is None:
            # a visible reply in this mailbox's thread: engagement (§8); mail held for
            # review does not count (anyone can send it)
            self.store.add_fact(ReputationFact(box.id, reputation.Outcome.REPLY.value, now))
        return record

    def _thread_by_subject(self, mailbox_id: str, content: Content, now: int) -> str | None:
        """A reply that lost its In-Reply-To/References (some clients and gateways drop
        them): the newest message of this mailbox in the last 30 days with the same thread
        subject and the sender among its participants (PRODUCT §6)."""
        wanted = inbound.thread_subject(content.subject)
        sender = content.sender.lower()
        recent, _ = self.store.list_messages(
            mailbox_id, filter="all", direction=None, limit=THREAD_LOOKBACK, cursor=None
        )
        for record in recent:
            state = record.state
            when = state.created_at if isinstance(state, outbound.Outbound) else state.received_at
            if now - when > THREAD_WINDOW_MS:
                break
            others = {a.lower() for a in (*record.content.to, *record.content.cc)}
            others.add(record.content.sender.lower())
            if sender in others and inbound.thread_subject(record.content.subject) == wanted:
                return state.thread_id
        return None

    def run_deliveries(self, *, limit: int = 100) -> int:
        """One synchronous pass of the delivery worker (tests and tools; the server runs the
        asynchronous one in ``multimail.worker``): claim due messages, hand their outside
        recipients to ``self.transport`` (none: a 4xx, retried later), settle."""
        jobs, handled = self.claim_deliveries(limit=limit)
        for job in jobs:
            if self.transport is None:
                replies = dict.fromkeys(job.recipients, (451, "4.4.0 no transport in this process"))
            else:
                replies = self.transport(job.mail_from, job.recipients, job.raw)
            self.finish_delivery(job, replies)
        return handled

    def _local_mailbox(self, address: str) -> mailbox.Mailbox | None:
        parsed = parse_address(address)
        return self.store.mailbox_by_address(parsed.normalized()) or self.store.mailbox_by_address(
            base(parsed).normalized()
        )

    # --- reputation, suppression, contacts, events, audit, usage ------------------------

    def counters(self, mailbox_id: str, now: int) -> reputation.Counters:
        facts = [
            reputation.Fact(reputation.Outcome(f.outcome), f.at)
            for f in self.store.facts(mailbox_id, now - 30 * 86_400_000)
        ]
        return reputation.window(facts, now)

    def reputation(self, key: Key, mailbox_id: str) -> tuple[mailbox.Mailbox, reputation.Counters]:
        box = self._mailbox(key, mailbox_id, "reputation.read")
        return box, self.counters(box.id, self.clock())

    def list_reputation(self, key: Key) -> list[tuple[mailbox.Mailbox, reputation.Counters]]:
        self._authorize(key, "reputation.list", key.account_id)
        now = self.clock()
        boxes: list[mailbox.Mailbox] = []
        cursor: str | None = None
        while True:
            page, cursor = self.store.list_mailboxes(
                key.account_id, only=key.mailbox_ids, limit=500, cursor=cursor
            )
            boxes.extend(page)
            if cursor is None:
                break
        return [(b, self.counters(b.id, now)) for b in boxes]

    def list_suppressions(self, key: Key) -> list[Suppression]:
        self._authorize(key, "suppression.read", key.account_id)
        return self.store.list_suppressions(key.account_id)

    def add_suppression(self, key: Key, address: str, reason: str = "manual") -> Suppression:
        self._authorize(key, "suppression.manage", key.account_id)
        normalized = reputation.normalize_for_suppression(str(parse_address(address)))
        with self._tx():
            now = self.clock()
            entry = Suppression(key.account_id, normalized, reason, None, now)
            self.store.add_suppression(entry)
            self._audit(key.account_id, key, "suppression.add", "suppression", normalized, now)
        return entry

    def remove_suppression(self, key: Key, address: str) -> None:
        self._authorize(key, "suppression.manage", key.account_id)
        normalized = reputation.normalize_for_suppression(address)
        with self._tx():
            if not self.store.remove_suppression(key.account_id, normalized):
                raise NotFound(f"{address} is not suppressed")
            self._audit(
                key.account_id, key, "suppression.remove", "suppression", normalized, self.clock()
            )

    def add_contact(
        self, key: Key, email: str, name: str = "", tags: Sequence[str] = ()
    ) -> Contact:
        self._authorize(key, "contacts.manage", key.account_id)
        address = str(parse_address(email))
        with self._tx():
            now = self.clock()
            contact = Contact(
                self.new_id(Kind.EVENT).replace("evt_", "con_"),
                key.account_id,
                address,
                name,
                tuple(tags),
                now,
            )
            self.store.insert_contact(contact)
            self._audit(key.account_id, key, "contact.create", "contact", contact.id, now)
        return contact

    def list_contacts(self, key: Key, query: str | None) -> list[Contact]:
        self._authorize(key, "contacts.read", key.account_id)
        return self.store.list_contacts(key.account_id, query)

    def delete_contact(self, key: Key, contact_id: str) -> None:
        self._authorize(key, "contacts.manage", key.account_id)
        with self._tx():
            if not self.store.delete_contact(key.account_id, contact_id):
                raise NotFound(f"no contact {contact_id}")
            self._audit(key.account_id, key, "contact.delete", "contact", contact_id, self.clock())

    def list_events(
        self,
        key: Key,
        *,
        after: int,
        mailbox_id: str | None,
        types: frozenset[str] | None,
        limit: int,
    ) -> list[EventRecord]:
        self._authorize(key, "events.read", key.account_id)
        if mailbox_id is not None:
            self._mailbox(key, mailbox_id, "mailbox.read")
        events = self.store.list_events(
            key.account_id, after=after, mailbox_id=mailbox_id, types=types, limit=limit
        )
        if key.mailbox_ids is not None:
            events = [e for e in events if e.mailbox_id in key.mailbox_ids]
        return events

    def connect_mcp(self, secret: str | None) -> Key:
        """The key behind an MCP connection; each tool call is then authorized as its own
        API operation."""
        key = self.authenticate(secret)
        self._authorize(key, "mcp.connect", key.account_id)
        return key

    def list_audit(
        self, key: Key, *, limit: int, cursor: str | None
    ) -> tuple[list[AuditEntry], str | None]:
        self._authorize(key, "audit.read", key.account_id)
        return self.store.list_audit(key.account_id, limit=limit, cursor=cursor)

    def usage(self, key: Key) -> dict[str, int]:
        self._authorize(key, "usage.read", key.account_id)
        counts: dict[str, int] = {}
        after = 0
        while True:
            batch = self.store.list_events(
                key.account_id, after=after, mailbox_id=None, types=None, limit=1000
            )
            for e in batch:
                counts[e.type] = counts.get(e.type, 0) + 1
            if len(batch) < 1000:
                break
            after = batch[-1].seq
        return {
            "emails_sent": counts.get("message.sent", 0),
            "emails_received": counts.get("message.received", 0),
            "emails_held": counts.get("oversight.pending", 0),
            "oversight_actions": counts.get("oversight.approved", 0)
            + counts.get("oversight.rejected", 0),
            "mailboxes_created": counts.get("mailbox.created", 0),
        }

    def domains(self, key: Key) -> list[dict[str, object]]:
        self._authorize(key, "domains.read", key.account_id)
        account = self.get_account(key)
        return [
            {
                "domain": domain,
                "status": "active",
                "kind": kind,
                "dkim_selectors": [sel for sel, _ in DKIM_SELECTORS],
                "dns_records": self.dns_records(domain),
            }
            for domain, kind in (
                (self.config.domain, "default"),
                (self.account_domain(account), "account"),
            )
        ]


def _settings(box: mailbox.Mailbox) -> dict[str, object]:
    return {
        "mode": box.mode.value,
        "display_name": box.display_name,
        "webhook_url": box.webhook_url,
        "allowlist": sorted(box.allowlist),
        "status": box.status.value,
    }


def _check_composable(content: Content, display_name: str | None, now: int) -> None:
    """Refuse at submission what could not be put on the wire later (a 422 now, rather than
    a message that fails at delivery). An attachment's bytes cannot make a message
    unsendable (base64 is 7-bit in short lines), its name and type can: empty stand-ins
    keep this check cheap inside the transaction."""
    stand_ins = [(a.filename, a.content_type, b"") for a in content.attachments]
    try:
        compose_outbound(content, display_name, now, stand_ins)
    except ValueError as exc:
        raise InvalidValue("message", str(exc)) from None


def _attachment_audit(attached: Sequence[Attachment]) -> dict[str, object]:
    """What the audit log keeps of a message's attachments (names, types, sizes, hashes)."""
    if not attached:
        return {}
    return {
        "attachments": [
            {"filename": a.filename, "content_type": a.content_type, "size": a.size,
             "sha256": a.sha256}
            for a in attached
        ]
    }  # fmt: skip


def _visible(record: MessageRecord) -> bool:
    return not isinstance(record.state, inbound.Inbound) or inbound.is_visible(record.state)


__all__ = ["Config", "NotPermitted", "SendResult", "Service", "hash_secret", "new_secret"]
