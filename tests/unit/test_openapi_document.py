import importlib.util
import json
from pathlib import Path

SPEC = Path(__file__).parents[2] / "spec"


def load_generator():
    spec = importlib.util.spec_from_file_location("openapi_gen", SPEC / "openapi.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_openapi_document_is_current():
    assert (SPEC / "openapi.json").read_text() == load_generator().document(), (
        "spec/openapi.json is stale: run python spec/openapi.py"
    )


def test_openapi_lists_the_seed_operations():
    doc = json.loads((SPEC / "openapi.json").read_text())
    paths = doc["paths"]
    assert "post" in paths["/v1/mailboxes"]
    assert "patch" in paths["/v1/mailboxes/{mailbox_id}"]
    assert "get" in paths["/v1/mailboxes/{mailbox_id}/reputation"]
    assert "post" in paths["/v1/mailboxes/{mailbox_id}/reply"]
    assert "get" in paths["/v1/mailboxes/{mailbox_id}/emails"]
