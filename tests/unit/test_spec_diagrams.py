"""spec/diagrams.md is what spec/generate.py renders from the code, and shows every row.

The first test fails when the committed file is stale. The others read the rendered
Mermaid back and compare its edges with the code tables, so a generator that dropped or
invented an edge fails too.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from multimail_core import approval, inbound, mailbox, outbound, oversight

ROOT = Path(__file__).resolve().parents[2]
MACHINES: dict[str, ModuleType] = {
    "mailbox": mailbox,
    "outbound": outbound,
    "inbound": inbound,
    "approval": approval,
}
EDGE = re.compile(r"^    (\w+) --> (\w+): (.+)$")
ENTRY = re.compile(r"^    \[\*\] --> (\w+)$")
EXIT = re.compile(r"^    (\w+) --> \[\*\]$")


def load_generator() -> ModuleType:
    """spec/generate.py by path: ``spec`` is a folder, not a package."""
    location = importlib.util.spec_from_file_location("spec_generate", ROOT / "spec/generate.py")
    assert location is not None
    assert location.loader is not None
    module = importlib.util.module_from_spec(location)
    sys.modules[location.name] = module
    location.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generate() -> ModuleType:
    return load_generator()


def test_diagrams_are_up_to_date(generate: ModuleType) -> None:
    committed = (ROOT / "spec/diagrams.md").read_text(encoding="utf-8")
    assert committed == generate.render(), (
        "spec/diagrams.md is stale: run `python spec/generate.py`"
    )


def test_check_mode_agrees(generate: ModuleType) -> None:
    assert generate.main(["--check"]) == 0


def code_rows(module: ModuleType) -> set[tuple[str, str, str]]:
    rows = set()
    for (status, command), target in module.TRANSITIONS.items():
        for to in target if isinstance(target, frozenset) else (target,):
            rows.add((status.value, command.__name__, to.value))
    return rows


@pytest.mark.parametrize("name", MACHINES)
def test_state_diagram_edges_are_the_table(generate: ModuleType, name: str) -> None:
    drawn = set()
    for line in generate.state_diagram(name).splitlines():
        match = EDGE.match(line)
        if match:
            src, dst, label = match.groups()
            drawn |= {(src, cmd, dst) for cmd in label.split(", ")}
    assert drawn == code_rows(MACHINES[name])


@pytest.mark.parametrize("name", MACHINES)
def test_state_diagram_entries_and_exits(generate: ModuleType, name: str) -> None:
    lines = generate.state_diagram(name).splitlines()
    entries = {m.group(1) for line in lines if (m := ENTRY.match(line))}
    exits = {m.group(1) for line in lines if (m := EXIT.match(line))}
    with (ROOT / f"spec/{name}.toml").open("rb") as f:
        stated = tomllib.load(f)
    assert entries == set(stated["initial"])
    assert exits == set(stated["terminal"])


def test_flowchart_shows_every_rule_in_order(generate: ModuleType) -> None:
    chart = generate.oversight_flowchart()
    shown = re.findall(r'^    r\d+\["\d+\. (\w+)<br/>', chart, flags=re.MULTILINE)
    assert shown == [rule.name for rule in oversight.RULES]
    assert oversight.DEFAULT_RULE in chart
