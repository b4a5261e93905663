"""The baseline: a bare FastAPI endpoint accepting the same body as POST /v1/mailboxes.

It validates the body with the same kind of pydantic model and answers 201 with a JSON
body of the same size, but stores nothing and checks no key: the floor of what the
framework itself costs. Run as ``uvicorn bench.bare_app:app``.
"""

from __future__ import annotations

import itertools

from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

app = FastAPI()
_ids = itertools.count(1)


class CreateMailbox(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    domain: str | None = None
    display_name: str | None = None
    oversight_mode: str | None = None
    webhook_url: str | None = None


@app.post("/v1/mailboxes", status_code=201)
def create(body: CreateMailbox, authorization: str | None = Header(None)) -> JSONResponse:
    n = next(_ids)
    return JSONResponse(
        {
            "mailbox_id": f"mbx_{n:026d}",
            "address": f"{body.name}@default.agents.localhost",
            "oversight_mode": body.oversight_mode or "gated_send",
            "created_at": "2026-01-01T00:00:00.000Z",
            "display_name": body.display_name,
            "status": "active",
        },
        status_code=201,
    )


@app.get("/v1/mailboxes/{mailbox_id}/emails")
def inbox(mailbox_id: str, authorization: str | None = Header(None)) -> dict[str, object]:
    return {"emails": [], "next_cursor": None}


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}
