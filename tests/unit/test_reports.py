"""Delivery reports: the corpus DSNs and ARF reports read to the values in their files, wild
bounces are read on a best-effort basis, other mail is not a report, VERP round-trips, and no
bytes make the parser raise."""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multimail.reports import (
    RecipientStatus,
    Report,
    local_message_id,
    message_id_to_local_id,
    parse_report,
    parse_verp,
    verp_address,
)
from multimail_core.errors import InvalidValue
from multimail_core.ids import CROCKFORD
from tests.corpus import CORPUS, corpus_files, require_corpus

ULID = "01JDQ8ZK3V5T7W9X2B4C6D8E0F"
MSG = f"msg_{ULID}"
OURS = "agents.example"


def ours(domain: str) -> bool:
    return domain == OURS


def read(name: str) -> bytes:
    return (require_corpus() / name).read_bytes()


def summary(report: Report) -> list[tuple[str, str, str | None, bool]]:
    return [(r.address, r.action, r.status, r.permanent) for r in report.recipients]


# --- the corpus ------------------------------------------------------------------------------

FAIL_511 = "550-5.1.1 The email account that you tried to reach does not exist."
MULTI = [
    "bbbbvhvbbvkjbhfbvbvjhb@gmail.com",
    "bscdbcjhasbcjhbdscbhbsdhcbj@gmail.com",
    "egyfefsdvsfvvhjsd@gmail.com",
    "kfhejkfbsjkjsbhds@gmail.com",
    "qfvhgsvhgsduiohncdhcvhsdfvsfygusd@gmail.com",
]

# file → (kind, recipients, original Message-ID, reporter)
DSNS: dict[str, tuple[str, list[tuple[str, str, str | None, bool]], str | None, str | None]] = {
    "cpython/msg_16.eml": (
        "bounce",
        [("jangel1@cougar.noc.ucla.edu", "failed", "5.0.0", True)],
        "<002001c144a6$8752e060$56104586@oxy.edu>",
        "cougar.noc.ucla.edu",
    ),
    "cpython/msg_25.eml": (  # the boundary parameter is cut off: recovered from the body
        "bounce",
        [("scoffman@wellpartner.com", "failed", "5.4.6", True)],
        "<01040616033903.00962@server>",
        "zinfandel.lacita.com",
    ),
    "flanker/bounce/delayed.eml": (  # gave up after 5 days on a 4.x.x: failed, not permanent
        "bounce",
        [("foo@example.com", "failed", "4.0.0", False)],
        None,  # the returned message has no Message-ID
        "cs.example.com",
    ),
    "flanker/bounce/mailbox-full.eml": (
        "bounce",
        [("user@aol.com", "failed", "5.2.2", True)],
        "<4E326A95.3010907@example.com>",
        "mtain-db01.r1000.mx.aol.com",
    ),
    "flanker/bounce/no-mx.eml": (
        "delay",
        [("user@example.com", "delayed", "4.4.4", False)],
        "<19E44CA63F984902B7D654F8FF40F89D@bo>",
        "example.com",
    ),
    "flanker/bounce/office365.eml": (
        "bounce",
        [("noname@example.com", "failed", "5.1.10", True)],
        "<20171013111011.20866.254C2F3A4D7AA526@ninomail.com>",
        "DB5PR06MB1800.eurprd06.prod.outlook.com",
    ),
    "flanker/bounce/zed.eml": (
        "bounce",
        [
            (
                "asdfasdfasdfasdfasdfasdfewrqertrtyrthsfgdfgadfqeadvxzvz@gmail.com",
                "failed",
                "5.1.1",
                True,
            )
        ],
        "<20090708054735.GC7578@example.com>",
        "mail.example.com",
    ),
    "flanker/bounce/delayed-broken.eml": (  # a bare message/delivery-status, no wrapper
        "bounce",
        [("demo@example.com", "failed", "4.2.2", False)],
        None,
        "a92.example.com",
    ),
    "mikel-mail/multipart_report_emails/multi_address_bounce1.eml": (
        "bounce",
        [(a, "failed", "5.1.1", True) for a in MULTI],
        "<118707422.15521266992174819.JavaMail.root@lvmail01>",
        "lvmail01.LL.com",
    ),
    "mikel-mail/multipart_report_emails/multipart_report_multiple_status.eml": (
        "bounce",
        [("u@ci.com", "failed", "5.3.0", True)],
        "<4c2a146147ac8_61ff157c4ec1652df@s.h.c.mail>",
        "schemailmta04.ci.com",
    ),
    "mikel-mail/multipart_report_emails/report_422.eml": (
        "delay",
        [("fraser@oooooooo.com.au", "delayed", "4.2.2", False)],
        "<15655788.13.1200472642578.JavaMail.Administrator@mail.ttttt.com.au>",
        "mail11.ttttt.com.au",
    ),
    "mikel-mail/multipart_report_emails/report_530.eml": (
        "bounce",
        [("edwin@zzzzzzz.com", "failed", "5.3.0", True)],
        "<200712232303.lBNN3jDq002941@mail12.rrrr.com.au>",
        "mail12.rrrr.com.au",
    ),
    "mikel-mail/mime_emails/raw_email_with_mimepart_without_content_type.eml": (
        "delay",
        [("larose.julie@courrier.uqam.ca", "delayed", "4.5.0", False)],
        "<89d7557c0610181510r6fa5ebd8n66a7deec71ade118@mail.gmail.com>",
        "antivirus.uqam.ca",
    ),
    # Bounces without a delivery-status part (best effort, module rule 3).
    "flanker/bounce/broken-mime.eml": (
        "bounce",
        [("info@example.net", "failed", None, False)],  # no code, no "permanent": not permanent
        None,
        "postmaster@example.com",
    ),
    "flanker/bounce/gmail-invalid-address.eml": (
        "bounce",
        [("awfawfawfawfawfaw@someserverhere.com", "failed", "5.1.0", True)],
        "<CAKsfaBUUGqVZiaMrmH3TRPfq1odQPtM7Ey5YW1SgyJJRHtAjgw@mail.gmail.com>",
        "mailer-daemon@googlemail.com",
    ),
    "flanker/bounce/gmail-no-dns.eml": (  # "failed permanently" without a code → 5.0.0
        "bounce",
        [("user@example.comm", "failed", "5.0.0", True)],
        None,
        "mailer-daemon@googlemail.com",
    ),
    # A declared DSN with no delivery-status part and nothing readable: "unknown".
    "cpython/msg_05.eml": ("unknown", [], None, "foo"),
}


@pytest.mark.parametrize("name", sorted(DSNS))
def test_corpus_dsn_reads_to_the_values_in_the_file(name: str) -> None:
    kind, recipients, message_id, reporter = DSNS[name]
    report = parse_report(read(name))
    assert report is not None
    assert report.kind == kind
    assert summary(report) == recipients
    assert report.original_message_id == message_id
    assert report.reporter == reporter
    assert report.feedback_type is None


def test_virus_scanner_dsn_lists_all_25_recipients() -> None:
    report = parse_report(read("cpython/msg_43.eml"))
    assert report is not None
    assert report.kind == "bounce"
    assert len(report.recipients) == 25
    assert {(r.action, r.status, r.permanent) for r in report.recipients} == {
        ("failed", "5.7.1", True)
    }
    assert report.recipients[0].address == "xxxxxxx@dot.ca.gov"
    assert report.recipients[-1].address == "xxxxxxx@dot.ca.gov"
    assert report.recipients[1].address == "xxxxxxxxxxxxx@dot.ca.gov"
    assert report.original_message_id == "<edab.7804f5cb8070@python.org>"
    assert report.recipients[0].diagnostic == (
        "550 5.7.1 Message content rejected, id=01956-02-2 - BANNED: auto__mail.python.bat"
    )


def test_envelope_id_and_diagnostic_fields() -> None:
    report = parse_report(read("cpython/msg_16.eml"))
    assert report is not None
    assert report.envelope_id == "0GK500B4HD0888@cougar.noc.ucla.edu"
    zed = parse_report(read("flanker/bounce/zed.eml"))
    assert zed is not None
    diagnostic = zed.recipients[0].diagnostic
    assert diagnostic is not None
    assert diagnostic.startswith(FAIL_511)  # folded lines are unfolded, the "smtp;" type cut
    assert diagnostic.endswith("answer=6596 17si20661415yxe.22")


def test_identical_corpus_bounces_read_the_same() -> None:
    a = parse_report(read("mikel-mail/multipart_report_emails/multi_address_bounce1.eml"))
    b = parse_report(read("mikel-mail/multipart_report_emails/multi_address_bounce2.eml"))
    assert a == b


@pytest.mark.parametrize(
    ("name", "recipients", "message_id", "reporter", "mail_from"),
    [
        (
            "flanker/complaints/aol.eml",
            [],  # AOL redacts the recipient: no Original-Rcpt-To
            "<20101117174130.28884.55421@luna>",
            "scomp@aol.net",
            None,
        ),
        (
            "flanker/complaints/yahoo.eml",
            [("user@yahoo.com", "complained", None, False)],
            "<20120711015015.4A8BE2E088E@www.example.com>",
            "feedback@arf.mail.yahoo.com",
            "bounce+705f77.d4a-user=yahoo.com@example.com",
        ),
    ],
)
def test_corpus_arf_complaints(
    name: str,
    recipients: list[tuple[str, str, str | None, bool]],
    message_id: str,
    reporter: str,
    mail_from: str | None,
) -> None:
    report = parse_report(read(name))
    assert report is not None
    assert report.kind == "complaint"
    assert report.feedback_type == "abuse"
    assert summary(report) == recipients
    assert report.original_message_id == message_id
    assert report.reporter == reporter
    assert report.original_mail_from == mail_from


def test_disposition_notification_is_not_a_delivery_report() -> None:
    assert parse_report(read("flanker/disposition-notification.eml")) is None


REPORT_FILES = {
    *DSNS,
    "cpython/msg_43.eml",
    "flanker/complaints/aol.eml",
    "flanker/complaints/yahoo.eml",
    "mikel-mail/multipart_report_emails/multi_address_bounce2.eml",
}


def test_every_other_corpus_message_is_not_a_report() -> None:
    root = require_corpus()
    others = [p for p in corpus_files() if p.relative_to(root).as_posix() not in REPORT_FILES]
    assert len(others) > 150
    found = {p.relative_to(root).as_posix() for p in others if parse_report(p.read_bytes())}
    assert found == set()


def test_every_report_in_the_corpus_is_covered() -> None:
    root = require_corpus()
    declared = {
        p.relative_to(root).as_posix()
        for p in corpus_files()
        if b"report-type" in p.read_bytes().lower()
    }
    assert declared - {"flanker/disposition-notification.eml"} <= REPORT_FILES


# --- wild bounces, built here ----------------------------------------------------------------

QMAIL = b"""\
Return-Path: <>
From: MAILER-DAEMON@mx.example.org
To: bounces+msg_01JDQ8ZK3V5T7W9X2B4C6D8E0F@agents.example
Subject: failure notice

Hi. This is the qmail-send program at mx.example.org.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<nobody@example.org>:
Sorry, no mailbox here by that name. (#5.1.1)

<full@example.org>:
user is over quota (#4.2.2)

--- Below this line is a copy of the message.

Return-Path: <bounces+msg_01JDQ8ZK3V5T7W9X2B4C6D8E0F@agents.example>
Message-ID: <msg_01JDQ8ZK3V5T7W9X2B4C6D8E0F@agents.example>
From: agent@agents.example
To: nobody@example.org, full@example.org, cc@example.org

hello
"""

EXIM = b"""\
From: Mail Delivery System <Mailer-Daemon@mx.example.org>
To: agent@agents.example
Subject: Mail delivery failed: returning message to sender
X-Failed-Recipients: nobody@example.org
Auto-Submitted: auto-replied

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  nobody@example.org
    SMTP error from remote mail server after RCPT TO:<nobody@example.org>:
    host mx.example.org [192.0.2.1]: 550 5.1.1 <nobody@example.org>: User unknown

------ This is a copy of the message, including all the headers. ------

Message-ID: <msg_01JDQ8ZK3V5T7W9X2B4C6D8E0F@agents.example>
From: agent@agents.example
To: nobody@example.org

hello
"""

OLD_POSTFIX = b"""\
From: MAILER-DAEMON@mail.example.org (Mail Delivery System)
To: agent@agents.example
Subject: Undelivered Mail Returned to Sender

This is the Postfix program at host mail.example.org.

I'm sorry to have to inform you that the message returned
below could not be delivered to one or more destinations.

			The Postfix program

<nobody@example.org>: host mx.example.org[192.0.2.1] said: 550 5.1.1
    <nobody@example.org>: Recipient address rejected: User unknown (in reply to
    RCPT TO command)

--- Returned message follows ---
Message-ID: <msg_01JDQ8ZK3V5T7W9X2B4C6D8E0F@agents.example>
From: agent@agents.example
To: nobody@example.org

hello
"""


def test_qmail_bounce_reads_each_recipient_with_its_own_status() -> None:
    report = parse_report(QMAIL)
    assert report is not None
    assert report.kind == "bounce"
    assert summary(report) == [
        ("nobody@example.org", "failed", "5.1.1", True),
        ("full@example.org", "failed", "4.2.2", False),  # the copy's cc@ is not read
    ]
    assert report.recipients[0].diagnostic == (
        "<nobody@example.org>: Sorry, no mailbox here by that name. (#5.1.1)"
    )
    assert report.original_message_id == f"<{MSG}@{OURS}>"
    assert local_message_id(report, ours) == MSG


def test_exim_bounce_trusts_x_failed_recipients() -> None:
    report = parse_report(EXIM)
    assert report is not None
    assert summary(report) == [("nobody@example.org", "failed", "5.1.1", True)]
    assert report.reporter == "Mailer-Daemon@mx.example.org"
    assert local_message_id(report, ours) == MSG


def test_old_postfix_text_bounce() -> None:
    report = parse_report(OLD_POSTFIX)
    assert report is not None
    assert summary(report) == [("nobody@example.org", "failed", "5.1.1", True)]
    assert local_message_id(report, ours) == MSG


def test_delay_notice_without_parts_is_a_delay() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.org\nSubject: Delayed Mail (still being retried)\n\n"
        b"<slow@example.org>: 451 4.4.1 connection timed out\n"
    )
    report = parse_report(raw)
    assert report is not None
    assert summary(report) == [("slow@example.org", "delayed", "4.4.1", False)]
    assert report.kind == "delay"


def test_recognised_bounce_without_addresses_is_unknown() -> None:
    raw = b"From: postmaster@mx.example.org\nSubject: Undeliverable: hi\n\nSomething failed.\n"
    report = parse_report(raw)
    assert report is not None
    assert report.kind == "unknown"
    assert report.recipients == ()


@pytest.mark.parametrize(
    "raw",
    [
        # a person writing about an undeliverable parcel
        b"From: Ann <ann@example.org>\nSubject: Undeliverable parcel\n\nfrom bob@example.org\n",
        # the daemon address, but not a bounce subject
        b"From: postmaster@example.org\nSubject: Welcome\n\nwrite to help@example.org\n",
        # a DSN forwarded inside another message is mail, not a report (module rule 2)
        b"From: ann@example.org\nContent-Type: multipart/mixed; boundary=b\n\n--b\n"
        b"Content-Type: message/rfc822\n\nContent-Type: multipart/report; "
        b"report-type=delivery-status; boundary=c\n\n--c\nContent-Type: message/delivery-status"
        b"\n\nFinal-Recipient: rfc822; x@example.org\nAction: failed\nStatus: 5.1.1\n\n--c--\n"
        b"--b--\n",
        b"",
        b"\xff\xfe\x00",
    ],
)
def test_not_a_report(raw: bytes) -> None:
    assert parse_report(raw) is None


# --- DSN and ARF details, built here ----------------------------------------------------------


def dsn(fields: str, returned: str = "", *, report_type: str = "delivery-status") -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.org\n"
        f"Content-Type: multipart/report; report-type={report_type}; boundary=B\n\n"
        "--B\nContent-Type: text/plain\n\nsee below\n\n"
        f"--B\nContent-Type: message/delivery-status\n\n{fields}\n"
        f"--B\nContent-Type: text/rfc822-headers\n\n{returned}\n--B--\n"
    ).encode()


def test_our_dsn_is_attributed_by_message_id_and_envelope_id() -> None:
    raw = dsn(
        f"Reporting-MTA: dns; mx.example.org\nOriginal-Envelope-Id: {MSG}\n\n"
        "Original-Recipient: rfc822;Bob@Example.org\nFinal-Recipient: rfc822;bob@example.org\n"
        "Action: failed\nStatus: 5.1.1\n",
        f"Message-ID: <{MSG}@{OURS}>\n",
    )
    report = parse_report(raw)
    assert report is not None
    assert report.envelope_id == MSG
    assert report.recipients[0].address == "Bob@Example.org"  # the address we sent to
    assert local_message_id(report, ours) == MSG
    assert local_message_id(report, lambda d: False) == MSG  # ENVID is ours by syntax alone
    no_envid = parse_report(dsn("Final-Recipient: rfc822;b@x\nAction: failed\nStatus: 5.1.1\n"))
    assert no_envid is not None
    assert local_message_id(no_envid, ours) is None


@pytest.mark.parametrize(
    ("recipient_fields", "kind"),
    [
        (["Action: delivered\nStatus: 2.0.0"], "delivered"),
        (["Action: relayed\nStatus: 2.0.0"], "delivered"),
        (["Action: delivered\nStatus: 2.0.0", "Action: delayed\nStatus: 4.4.1"], "delay"),
        (["Action: delayed\nStatus: 4.4.1", "Action: failed\nStatus: 5.0.0"], "bounce"),
        (["Status: 5.2.1"], "bounce"),  # no Action: the status class says failed
        (["Action: Failed (gave up)\nStatus: 4.4.7"], "bounce"),
        (["Action: exploded"], "unknown"),
    ],
)
def test_report_kind_follows_the_recipient_actions(recipient_fields: list[str], kind: str) -> None:
    blocks = "\n".join(
        f"Final-Recipient: rfc822; r{i}@example.org\n{fields}\n"
        for i, fields in enumerate(recipient_fields)
    )
    report = parse_report(dsn("Reporting-MTA: dns; mx.example.org\n\n" + blocks))
    assert report is not None
    assert report.kind == kind
    assert len(report.recipients) == len(recipient_fields)


def test_status_missing_from_status_field_is_read_from_the_diagnostic() -> None:
    report = parse_report(
        dsn(
            "Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5\n"
            "Diagnostic-Code: smtp; 550 5.7.26 unauthenticated\n"
        )
    )
    assert report is not None
    assert summary(report) == [("a@example.org", "failed", "5.7.26", True)]
    assert report.recipients[0].diagnostic == "550 5.7.26 unauthenticated"


def test_base64_encoded_delivery_status_part_is_decoded() -> None:
    fields = b"Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.1.1\n"
    raw = (
        b"From: MAILER-DAEMON@mx.example.org\n"
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=B\n\n"
        b"--B\nContent-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n\n"
        + base64.encodebytes(fields)
        + b"--B--\n"
    )
    report = parse_report(raw)
    assert report is not None
    assert summary(report) == [("a@example.org", "failed", "5.1.1", True)]


def arf(fields: str) -> bytes:
    return (
        "From: fbl@isp.example\n"
        "Content-Type: multipart/report; report-type=feedback-report; boundary=B\n\n"
        "--B\nContent-Type: text/plain\n\nA complaint.\n"
        f"--B\nContent-Type: message/feedback-report\n\n{fields}\n"
        f"--B\nContent-Type: message/rfc822\n\nMessage-ID: <{MSG}@{OURS}>\nSubject: hi\n\nhi\n"
        "--B--\n"
    ).encode()


def test_arf_attributes_through_verp_mail_from_and_message_id() -> None:
    verp = verp_address(MSG, OURS)
    report = parse_report(
        arf(
            f"Feedback-Type: abuse\nVersion: 1\nOriginal-Mail-From: <{verp}>\n"
            "Original-Rcpt-To: <a@example.org>\nOriginal-Rcpt-To: b@example.org\n"
            "Reporting-MTA: dns; fbl.isp.example\n"
        )
    )
    assert report is not None
    assert report.kind == "complaint"
    assert [r.address for r in report.recipients] == ["a@example.org", "b@example.org"]
    assert report.reporter == "fbl.isp.example"
    assert report.original_mail_from == verp
    assert local_message_id(report, ours) == MSG
    from_verp_only = Report("complaint", (), None, None, "abuse", None, verp)
    assert local_message_id(from_verp_only, ours) == MSG
    assert local_message_id(from_verp_only, lambda d: d == "elsewhere.example") is None


@pytest.mark.parametrize(
    ("feedback_type", "kind"),
    [
        ("abuse", "complaint"),
        ("Fraud", "complaint"),
        ("not-spam", "unknown"),
        ("auth-failure", "unknown"),
    ],
)
def test_only_complaint_feedback_types_count(feedback_type: str, kind: str) -> None:
    report = parse_report(arf(f"Feedback-Type: {feedback_type}\nVersion: 1\n"))
    assert report is not None
    assert report.kind == kind
    assert report.feedback_type == feedback_type.lower()


# --- VERP and Message-ID attribution ---------------------------------------------------------

ulids = st.tuples(
    st.sampled_from("01234567"), st.text(alphabet=sorted(CROCKFORD), min_size=25, max_size=25)
).map("".join)
labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
domains = st.lists(labels, min_size=2, max_size=4).map(".".join)


@given(ulids, domains)
def test_verp_round_trip(ulid: str, domain: str) -> None:
    message_id = f"msg_{ulid}"
    address = verp_address(message_id, domain)
    assert address == f"bounces+{message_id}@{domain}"
    assert parse_verp(address) == message_id
    assert parse_verp(f"<{address}>") == message_id
    assert parse_verp(address.replace("bounces", "BOUNCES", 1)) == message_id
    assert message_id_to_local_id(f"<{message_id}@{domain}>", lambda d: d == domain) == message_id


@pytest.mark.parametrize(
    "address",
    [
        f"bounce+{MSG}@{OURS}",
        f"bounces-{MSG}@{OURS}",
        f"bounces+{MSG}",  # no domain
        f"bounces+{MSG.lower()}@{OURS}",  # the id is case-sensitive
        f"bounces+mbx_{ULID}@{OURS}",
        f"bounces+{MSG}X@{OURS}",
        f"bounces+{MSG}+tag@{OURS}",
        f"bounces+msg_81JDQ8ZK3V5T7W9X2B4C6D8E0F@{OURS}",  # beyond the 48-bit timestamp
        f"bounces+msg_01JDQ8ZK3V5T7W9X2B4C6D8E0U@{OURS}",  # U is not Crockford
        "",
    ],
)
def test_parse_verp_rejects(address: str) -> None:
    assert parse_verp(address) is None


@pytest.mark.parametrize(
    ("message_id", "domain"),
    [("msg_1", OURS), (f"mbx_{ULID}", OURS), (MSG, ""), (MSG, "a@b"), (MSG, "a b")],
)
def test_verp_address_rejects_bad_input(message_id: str, domain: str) -> None:
    with pytest.raises(InvalidValue):
        verp_address(message_id, domain)


@pytest.mark.parametrize(
    ("message_id", "expected"),
    [
        (f"<{MSG}@{OURS}>", MSG),
        (f"  <{MSG}@AGENTS.Example> ", MSG),  # domains compare in lower case
        (f"{MSG}@{OURS}", MSG),
        (f"<{MSG}@elsewhere.example>", None),
        (f"<x{MSG}@{OURS}>", None),
        (f"<{MSG}>", None),
        (f"<mbx_{ULID}@{OURS}>", None),
        ("", None),
    ],
)
def test_message_id_to_local_id(message_id: str, expected: str | None) -> None:
    assert message_id_to_local_id(message_id, ours) == expected


# --- totality ---------------------------------------------------------------------------------


@settings(max_examples=300)
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise(raw: bytes) -> None:
    report = parse_report(raw)
    assert report is None or isinstance(report, Report)


TOKENS = [
    "Content-Type: multipart/report; report-type=delivery-status; boundary=b\n",
    "Content-Type: multipart/report; report-type=feedback-report; boundary=b\n",
    "Content-Type: multipart/report; boundary*0*=utf-8''b\n",
    "Content-Type: message/delivery-status\n",
    "Content-Type: message/feedback-report\n",
    "Content-Type: message/rfc822\n",
    "Content-Type: text/rfc822-headers\n",
    "Content-Transfer-Encoding: base64\n",
    "Content-Transfer-Encoding: quoted-printable\n",
    'Content-Type: text/plain; charset="x\x00y"\n',
    "From: MAILER-DAEMON@x\n",
    "X-Failed-Recipients: a@b.c, <>\n",
    "Subject: Undelivered Mail Returned to Sender\n",
    "Subject: =?utf-8?b?w6k=?=\n",
    "Final-Recipient: rfc822; a@b.c\n",
    "Original-Recipient: ;\n",
    "Action: failed\n",
    "Status: 5.1.1\n",
    "Diagnostic-Code: smtp;\n",
    "Feedback-Type:\n",
    "Original-Rcpt-To: <>\n",
    "Message-ID: <\n",
    "--b\n",
    "--b--\n",
    "--- Below this line is a copy of the message.\n",
    "\n",
    " folded\n",
    "\r\n",
    "é",
    "\udcff",
]


@settings(
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(st.sampled_from(TOKENS), max_size=40))
def test_report_shaped_noise_never_raises(tokens: list[str]) -> None:
    raw = "".join(tokens).encode("utf-8", "surrogateescape")
    report = parse_report(raw)
    assert report is None or isinstance(report, Report)


def report_samples() -> list[bytes]:
    if not CORPUS.is_dir():
        return [QMAIL, EXIM]
    names = sorted(DSNS.keys() - {"flanker/bounce/office365.eml"})  # keep examples fast
    return [(CORPUS / n).read_bytes() for n in names] + [
        (CORPUS / "flanker/complaints/aol.eml").read_bytes(),
        (CORPUS / "flanker/complaints/yahoo.eml").read_bytes(),
        QMAIL,
        EXIM,
    ]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(report_samples())))
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["delete", "insert", "flip", "truncate"]))
        if op == "delete":
            del data[at : at + draw(st.integers(1, 200))]
        elif op == "insert":
            data[at:at] = draw(
                st.binary(min_size=1, max_size=20)
                | st.sampled_from([t.encode("utf-8", "surrogateescape") for t in TOKENS])
            )
        elif op == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[at:]
    return bytes(data)


@settings(
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(mutated())
def test_mutated_reports_never_raise(raw: bytes) -> None:
    report = parse_report(raw)
    assert report is None or isinstance(report, Report)
    if report is not None:
        assert all(isinstance(r, RecipientStatus) and r.address for r in report.recipients)
        for r in report.recipients:
            assert r.permanent == (r.action == "failed" and (r.status or "").startswith("5"))


@pytest.mark.parametrize("run", [b"a" * 300_000, b"-" * 300_000, b"<a" * 150_000])
def test_long_runs_in_a_bounce_are_read_in_linear_time(run: bytes) -> None:
    # Each run would take hours through a backtracking scan; here it is one pass.
    raw = b"From: MAILER-DAEMON@x.example\nSubject: failure notice\n\n" + run + b"\n"
    report = parse_report(raw)
    assert report is not None
    assert report.kind == "unknown"


def test_a_long_folded_field_is_read_in_linear_time() -> None:
    fields = "Final-Recipient: rfc822; a@example.org\nDiagnostic-Code: smtp; 550\n"
    report = parse_report(dsn(fields + " x\n" * 200_000 + "Action: failed\nStatus: 5.1.1\n"))
    assert report is not None
    assert summary(report) == [("a@example.org", "failed", "5.1.1", True)]
    diagnostic = report.recipients[0].diagnostic
    assert diagnostic is not None
    assert len(diagnostic) == len("550") + 2 * 200_000
