"""spec/mcp.toml against the MCP server: the tool list, the routes each tool calls, and the
coverage of the API (PRODUCT.md §10).

The routes a tool calls are observed, not declared: every tool runs once with arguments
built from its own input schema against an SDK client whose transport records each
request and answers with a generic JSON body (the real server is driven tool by tool in
tests/integration/test_mcp_tools.py and tests/e2e/test_mcp_stdio.py).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from multimail.client import AsyncClient
from multimail.mcp_server import StdioConnection, build_server
from multimail.signing import (
    ED25519_SHA256,
    dkim_dns_record,
    generate_dkim_key,
    generate_identity_key,
    jwk,
    sign_message,
)
from multimail_core.modes import OversightMode

ROOT = Path(__file__).parents[2]
SPEC = tomllib.loads((ROOT / "spec" / "mcp.toml").read_text())
ROUTES = tomllib.loads((ROOT / "spec" / "routes.toml").read_text())["routes"]

#: One answer for every request: enough fields for the tools that read a response.
GENERIC = {
    "attachments": [{"attachment_id": "att_1", "size": 3, "url": "http://x/a"}],
    "entries": ["a@example.com"],
    "emails": [],
    "keys": [],
    "records": [],
}


MAILBOX = "mbx_01JDQ8ZK3V5T7W9X2B4C6D8E0F"
DKIM_KEY = generate_dkim_key("agents.example", "mm-ed", ED25519_SHA256, 1_700_000_000_000)
IDENTITY_KEY = generate_identity_key(MAILBOX, 1_700_000_000_000)
#: A message as the server signs it, for verify_message (which then looks up both keys).
SIGNED = sign_message(
    b"From: bot@agents.example\r\nTo: a@example.com\r\nSubject: hi\r\n"
    b"Message-ID: <1@agents.example>\r\n\r\nhello\r\n",
    mailbox_id=MAILBOX,
    address="bot@agents.example",
    account_id="acc_01JDQ8ZK3V5T7W9X2B4C6D8E0H",
    mode=OversightMode.AUTONOMOUS,
    human_approved=False,
    reviewer_key_id=None,
    issued_at=1_700_000_100,
    identity_key=IDENTITY_KEY,
    dkim_keys=[DKIM_KEY],
)


def _answer(route: str) -> dict[str, Any]:
    if route == "GET /.well-known/multimail/keys/{mailbox_id}":
        return {"keys": [jwk(IDENTITY_KEY)]}
    if route == "GET /.well-known/multimail/dns":
        return {"records": [dkim_dns_record(DKIM_KEY)["value"]]}
    return GENERIC


def _pattern(route: str) -> tuple[str, re.Pattern[str]]:
    method, path = route.split(" ", 1)
    return method, re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$")


def _route_of(request: httpx.Request) -> str:
    for route in ROUTES:
        method, pattern = _pattern(route)
        if request.method == method and pattern.match(request.url.path):
            return route
    return f"{request.method} {request.url.path} (unknown route)"


def _argument(name: str, schema: dict[str, Any]) -> Any:
    options = schema.get("anyOf", [schema])
    first = next((o for o in options if o.get("type") != "null"), options[0])
    if "enum" in first:
        return first["enum"][0]
    kind = first.get("type")
    if kind == "array":
        item = first.get("items", {})
        if "$ref" in item:  # a list of files
            return [{"filename": "a.txt", "content_base64": "aGk=", "content_type": "text/plain"}]
        return [item["enum"][0]] if "enum" in item else ["a@example.com"]
    if kind == "object":
        return {"k": "v"}
    if kind == "integer":
        return max(1, int(first.get("minimum", 1)))
    if kind == "boolean":
        return name == "check_dkim"  # no dry runs; DKIM checked
    return {"raw_message": SIGNED.decode(), "attachment_id": "att_1"}.get(name, "x_1")


def _arguments(schema: dict[str, Any]) -> dict[str, Any]:
    """Every parameter, optional ones too (some tools need one of several)."""
    return {name: _argument(name, prop) for name, prop in schema.get("properties", {}).items()}


async def _observe() -> dict[str, set[str]]:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        route = _route_of(request)
        seen.append(route)
        if route == "GET /v1/emails/{email_id}/raw":
            return httpx.Response(200, content=SIGNED)
        return httpx.Response(200, json=_answer(route))

    client = AsyncClient("mm_live_test", "http://mm.test", transport=httpx.MockTransport(answer))
    server = build_server(StdioConnection(client, "mbx_default"))
    called: dict[str, set[str]] = {}
    for tool in await server.list_tools():
        seen.clear()
        for arguments in _variants(tool.name, _arguments(tool.input_schema)):
            result = await server.call_tool(tool.name, arguments)
            assert not getattr(result, "is_error", False), (tool.name, result)
            if tool.name == "verify_message":  # the lookups answered through the client
                assert result.structured_content["ok"] is True, result.structured_content
        called[tool.name] = set(seen)
    return called


def _variants(tool: str, arguments: dict[str, Any]) -> list[dict[str, Any]]:
    """Calls that take one of two parameters run once with each."""
    if tool == "verify_message":
        return [
            {k: v for k, v in arguments.items() if k != "email_id"},
            {k: v for k, v in arguments.items() if k != "raw_message"},
        ]
    return [arguments]


@pytest.fixture(scope="module")
def called() -> dict[str, set[str]]:
    return anyio.run(_observe)


def test_the_server_offers_exactly_the_specified_tools(called):
    assert set(called) == set(SPEC["tools"])
    assert len(called) >= 50


@pytest.mark.parametrize("tool", sorted(SPEC["tools"]))
def test_each_tool_calls_exactly_its_specified_routes(tool, called):
    assert called[tool] == set(SPEC["tools"][tool])


def test_every_specified_route_exists():
    for tool, routes in SPEC["tools"].items():
        for route in routes:
            assert route in ROUTES, (tool, route)
    for route in SPEC["not_tools"]:
        assert route in ROUTES, route


def test_every_protected_route_is_reached_by_a_tool_or_excused():
    reached = {route for routes in SPEC["tools"].values() for route in routes}
    protected = {route for route, op in ROUTES.items() if op != "public"}
    assert protected - reached == set(SPEC["not_tools"])


def test_hosted_tool_names_are_kept_or_their_omission_explained():
    hosted = set(SPEC["hosted"]["names"])
    assert len(hosted) == 50
    omitted = set(SPEC["hosted_omitted"])
    assert omitted <= hosted
    assert hosted - omitted <= set(SPEC["tools"])
    assert all(reason.strip() for reason in SPEC["hosted_omitted"].values())
