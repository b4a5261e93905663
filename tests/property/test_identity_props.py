"""Identity claim properties: one encoding per claim, strict total decoders, and a binding
that moves with every bound header and the body but not with folding or unbound headers."""

from __future__ import annotations

import contextlib
import string

from hypothesis import assume, given
from hypothesis import strategies as st

from multimail_core.errors import InvalidValue
from multimail_core.identity import (
    BOUND_HEADERS,
    MAX_PAYLOAD,
    SIGNATURE_LENGTH,
    Check,
    Claim,
    Evidence,
    binding_hash,
    canonical_payload,
    decode_header,
    encode_header,
    judge,
    new_claim,
    parse_payload,
)
from multimail_core.modes import OversightMode

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ulids = st.tuples(st.sampled_from("01234567"), st.text(CROCKFORD, min_size=25, max_size=25)).map(
    "".join
)
tokens = st.text(string.ascii_letters + string.digits + "._:@+-", min_size=1, max_size=40)
atoms = st.text(
    string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~", min_size=1, max_size=10
)
dot_atoms = st.lists(atoms, min_size=1, max_size=3).map(".".join)
addresses = st.tuples(dot_atoms, st.sampled_from(["agents.example", "xn--bcher-kva.example"])).map(
    "@".join
)
message_ids = st.tuples(dot_atoms, dot_atoms).map(lambda p: f"<{p[0]}@{p[1]}>")

# Header values as a message would carry them: printable text, no line breaks of its own.
values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FFF, exclude_characters="\x7f"),
    max_size=30,
)
unbound_names = st.sampled_from(["X-Mailer", "Received", "Message-ID", "Reply-To", "Sender"])
header_lists = st.lists(
    st.tuples(st.sampled_from([*BOUND_HEADERS, "Subject", "FROM", "X-Other"]), values),
    max_size=8,
)
bodies = st.binary(max_size=200)


@st.composite
def claims(draw: st.DrawFn) -> Claim:
    approved = draw(st.booleans())
    return new_claim(
        mailbox_id="mbx_" + draw(ulids),
        address=draw(addresses),
        account_id=draw(tokens),
        mode=draw(st.sampled_from(OversightMode)),
        human_approved=approved,
        reviewer_key_id=draw(tokens) if approved else None,
        issued_at=draw(st.integers(0, 2**53 - 1)),
        message_id=draw(message_ids),
        headers=draw(header_lists),
        body=draw(bodies),
    )


def relaxed(value: str) -> str:
    """An independent model of DKIM relaxed value canonicalization (RFC 6376 §3.4.2)."""
    words: list[str] = []
    current = ""
    for c in value.replace("\r\n ", " ").replace("\r\n\t", "\t"):
        if c in " \t":
            if current:
                words.append(current)
            current = ""
        else:
            current += c
    if current:
        words.append(current)
    return " ".join(words)


# --- payload ----------------------------------------------------------------------------


@given(claims())
def test_payload_round_trip(claim: Claim) -> None:
    payload = canonical_payload(claim)
    assert parse_payload(payload) == claim
    assert len(payload) <= MAX_PAYLOAD
    assert payload.isascii()


@given(claims(), st.data())
def test_a_changed_byte_never_yields_the_same_claim(claim: Claim, data: st.DataObject) -> None:
    """One encoding per claim: any other bytes are refused or denote another claim."""
    payload = bytearray(canonical_payload(claim))
    at = data.draw(st.integers(0, len(payload) - 1))
    payload[at] = data.draw(st.integers(0, 255).filter(lambda b: b != payload[at]))
    try:
        other = parse_payload(bytes(payload))
    except InvalidValue:
        return
    assert other != claim


@given(st.binary(max_size=300))
def test_parse_payload_is_total(data: bytes) -> None:
    try:
        claim = parse_payload(data)
    except InvalidValue:
        return
    assert canonical_payload(claim) == data


@given(st.text(max_size=300))
def test_parse_payload_is_total_on_json_like_text(text: str) -> None:
    with contextlib.suppress(InvalidValue):
        parse_payload(("{" + text + "}").encode("utf-8", "surrogatepass"))


# --- header -------------------------------------------------------------------------------


@given(
    st.binary(min_size=1, max_size=MAX_PAYLOAD),
    st.binary(min_size=SIGNATURE_LENGTH, max_size=SIGNATURE_LENGTH),
)
def test_header_round_trip(payload: bytes, signature: bytes) -> None:
    value = encode_header(payload, signature)
    assert value.isascii()
    assert "=" not in value
    assert decode_header(value) == (payload, signature)


@given(st.text(string.ascii_letters + string.digits + "-_.=+/ \r\n\t", max_size=120))
def test_decode_header_is_total(value: str) -> None:
    try:
        payload, signature = decode_header(value)
    except InvalidValue:
        return
    assert len(signature) == SIGNATURE_LENGTH
    compact = "".join(value.split())
    assert encode_header(payload, signature) == compact


# --- binding ------------------------------------------------------------------------------


@given(header_lists, bodies, st.sampled_from(BOUND_HEADERS), values, st.data())
def test_binding_changes_with_any_bound_header(
    headers: list[tuple[str, str]],
    body: bytes,
    name: str,
    new_value: str,
    data: st.DataObject,
) -> None:
    occurrences = [i for i, (n, _) in enumerate(headers) if n.lower() == name]
    if occurrences:
        at = data.draw(st.sampled_from(occurrences))
        assume(relaxed(headers[at][1]) != relaxed(new_value))
        changed = [*headers[:at], (headers[at][0], new_value), *headers[at + 1 :]]
    else:
        changed = [*headers, (name.title(), new_value)]  # an added header counts too
    assert binding_hash(changed, body) != binding_hash(headers, body)


@given(header_lists, bodies, st.sampled_from(BOUND_HEADERS))
def test_binding_changes_when_a_bound_header_is_removed(
    headers: list[tuple[str, str]], body: bytes, name: str
) -> None:
    assume(any(n.lower() == name for n, _ in headers))
    without = [(n, v) for n, v in headers if n.lower() != name]
    assert binding_hash(without, body) != binding_hash(headers, body)


def simple(body: bytes) -> bytes:
    """An independent model of DKIM simple body canonicalization after LF → CRLF."""
    lines = body.replace(b"\r\n", b"\n").split(b"\n")
    while lines and lines[-1] == b"":
        lines.pop()
    return b"".join(line + b"\r\n" for line in lines) or b"\r\n"


@given(header_lists, bodies, bodies)
def test_binding_changes_with_the_body(
    headers: list[tuple[str, str]], body: bytes, other: bytes
) -> None:
    assume(simple(body) != simple(other))
    assert binding_hash(headers, body) != binding_hash(headers, other)


@given(header_lists, bodies, st.integers(0, 3))
def test_trailing_empty_lines_and_line_endings_do_not_matter(
    headers: list[tuple[str, str]], body: bytes, extra: int
) -> None:
    assume(b"\r" not in body)
    crlf = body.replace(b"\n", b"\r\n")
    assert binding_hash(headers, body + b"\n" * extra) == binding_hash(headers, crlf)


@given(header_lists, bodies, unbound_names, values)
def test_unbound_headers_do_not_matter(
    headers: list[tuple[str, str]], body: bytes, name: str, value: str
) -> None:
    assert binding_hash([*headers, (name, value)], body) == binding_hash(headers, body)
    assert binding_hash([(name, value), *headers], body) == binding_hash(headers, body)


@given(header_lists, bodies, st.data())
def test_folding_whitespace_does_not_matter(
    headers: list[tuple[str, str]], body: bytes, data: st.DataObject
) -> None:
    """Folding at a space, widening a space run, or padding the ends keeps the binding."""
    refolded = []
    for name, value in headers:
        fws = data.draw(st.sampled_from(["\r\n ", "\r\n\t", "  ", " \t ", "\t"]))
        refolded.append((name, " " + value.replace(" ", fws) + "\t "))
    assert binding_hash(refolded, body) == binding_hash(headers, body)


# --- judge -------------------------------------------------------------------------------


@given(
    claims(),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.one_of(st.none(), st.integers(0, 2**53)),
    st.booleans(),
    st.one_of(st.none(), st.booleans()),
    st.booleans(),
)
def test_judge_passes_exactly_when_every_check_passes(
    claim: Claim,
    signature_valid: bool,
    binding_matches: bool,
    key_found: bool,
    revoked_at: int | None,
    from_matches: bool,
    dkim_pass: bool | None,
    claim_present: bool,
) -> None:
    evidence = Evidence(
        signature_valid=signature_valid,
        binding_matches=binding_matches,
        key_found=key_found,
        key_revoked_at=revoked_at,
        claim=claim if claim_present else None,
        from_address=claim.address if from_matches else "someone@else.example",
        dkim_pass=dkim_pass,
    )
    expected_failures = {
        Check.CLAIM: not claim_present,
        Check.SIGNATURE: not signature_valid,
        Check.BINDING: not binding_matches,
        Check.KEY_KNOWN: not key_found,
        Check.KEY_NOT_REVOKED: revoked_at is not None
        and (not claim_present or revoked_at <= claim.issued_at),
        Check.MAILBOX_MATCHES_FROM: not (claim_present and from_matches),
        Check.DKIM: dkim_pass is False,
    }
    verdict = judge(evidence)
    assert set(verdict.failed) == {c for c, failed in expected_failures.items() if failed}
    assert verdict.ok == (verdict.failed == ())
    assert verdict.mailbox_id == (claim.mailbox_id if verdict.ok else None)
