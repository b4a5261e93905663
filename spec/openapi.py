"""Write spec/openapi.json from the app (``python spec/openapi.py``; ``--check`` to compare).

The OpenAPI document is generated from the FastAPI app so it cannot drift from the code;
tests/unit/test_openapi_document.py fails when the committed copy is stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from multimail.api import create_app
from multimail.service import Service
from multimail.store.memory import MemoryStore

TARGET = Path(__file__).with_name("openapi.json")


def document() -> str:
    app = create_app(Service(MemoryStore(), clock=lambda: 0, new_ulid=lambda: "0" * 26))
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    text = document()
    if "--check" in argv:
        if TARGET.read_text() != text:
            print("spec/openapi.json is stale: run python spec/openapi.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
