"""spec/identity.md and multimail_core/identity.py must not drift apart.

The spec's field table, bound-header list and check table must name exactly what the code
uses, and its worked example (claim + message) must be a valid, consistent test vector.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from multimail_core.identity import (
    BOUND_HEADERS,
    PAYLOAD_KEYS,
    Check,
    binding_hash,
    binding_input,
    canonical_payload,
    parse_payload,
)

SPEC = Path(__file__).resolve().parents[2] / "spec" / "identity.md"


@pytest.fixture(scope="module")
def spec() -> str:
    return SPEC.read_text(encoding="utf-8")


def section(text: str, heading: str) -> str:
    """The body of the section whose heading line ends with ``heading``."""
    match = re.search(rf"^#+ [^\n]*{re.escape(heading)}\n(.*?)(?=^#+ |\Z)", text, re.M | re.S)
    assert match, f"no section {heading!r} in {SPEC}"
    return match.group(1)


def fenced(text: str, info: str) -> list[str]:
    return re.findall(rf"^```{info}\n(.*?)^```", text, re.M | re.S)


def table_keys(text: str) -> list[str]:
    """First-column backticked names of a Markdown table."""
    return re.findall(r"^\| `([^`]+)` \|", text, re.M)


def parse_example_message(block: str) -> tuple[list[tuple[str, str]], bytes]:
    """Headers as raw (name, value) pairs with folding kept, and the body octets."""
    head, _, body = block.partition("\n\n")
    headers: list[tuple[str, str]] = []
    for line in head.split("\n"):
        if line[:1] in (" ", "\t"):
            name, value = headers[-1]
            headers[-1] = (name, value + "\r\n" + line)
        else:
            name, _, value = line.partition(":")
            headers.append((name, value))
    return headers, body.encode("utf-8")


def test_field_table_lists_exactly_the_payload_keys(spec: str) -> None:
    keys = table_keys(section(spec, "Payload fields"))
    assert keys == list(PAYLOAD_KEYS)


def test_example_claim_has_exactly_the_payload_keys(spec: str) -> None:
    (block,) = fenced(spec, "json")
    example = json.loads(block)
    assert set(example) == set(PAYLOAD_KEYS)


def test_example_claim_is_a_valid_canonical_claim(spec: str) -> None:
    (block,) = fenced(spec, "json")
    example = json.loads(block)
    canonical = json.dumps(example, sort_keys=True, separators=(",", ":")).encode("ascii")
    claim = parse_payload(canonical)
    assert canonical_payload(claim) == canonical
    assert set(json.loads(canonical_payload(claim))) == set(example)


def test_bound_headers_line_matches_the_code(spec: str) -> None:
    match = re.search(r"^Bound headers, in this order: (.*)\.$", spec, re.M)
    assert match
    listed = tuple(re.findall(r"`([^`]+)`", match.group(1)))
    assert listed == BOUND_HEADERS


def test_check_table_names_every_check(spec: str) -> None:
    listed = table_keys(section(spec, "Verifying and judging"))
    assert listed == [check.value for check in Check]


def test_worked_example_binding(spec: str) -> None:
    """The example message's binding input and hash are those the spec prints, and the
    example claim carries that hash."""
    example_section = section(spec, "Example message")
    (block,) = fenced(example_section, "text")
    headers, body = parse_example_message(block)
    printed_input = re.search(r'^`(".*")`$', example_section, re.M)
    printed_hash = re.search(r"its binding is `([0-9a-f]{64})`", example_section)
    assert printed_input
    assert printed_hash
    assert binding_input(headers, body) == json.loads(printed_input.group(1)).encode("utf-8")
    assert binding_hash(headers, body) == printed_hash.group(1)
    (claim_block,) = fenced(spec, "json")
    assert json.loads(claim_block)["binding"] == printed_hash.group(1)


def test_the_section_helpers_can_fail(spec: str) -> None:
    with pytest.raises(AssertionError):
        section(spec, "No such section anywhere")
    assert table_keys("| `a` | x |\n| b | y |\n") == ["a"]
