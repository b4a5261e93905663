"""spec/*.toml against multimail_core: every cell, in both directions.

Each TOML file under spec/ states one table of the core. These tests load it and compare
it with the code cell by cell, parametrized over the union of both sides' rows, so a row
missing on either side fails and the test id names the cell. Where the spec states
expected *outcomes* (the oversight matrices, authorization examples, reviewer-rule
examples, requires_action, classification examples), the test calls the core function:
those are independent checks that fail even if someone edits the rule rows of code and
spec together.
"""

from __future__ import annotations

import itertools
import re
import tomllib
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import icontract
import pytest

from multimail_core import approval, authorization, events, inbound, mailbox, modes, outbound
from multimail_core import oversight as ovs
from multimail_core import workflows as wf
from multimail_core.addresses import Address, parse_address
from multimail_core.authorization import Key, Scope
from multimail_core.errors import (
    InvalidValue,
    MailboxUnavailable,
    OversightDenied,
    RecipientSuppressed,
)
from multimail_core.modes import OversightMode

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "spec"
TOML_FILES = (
    "modes.toml",
    "mailbox.toml",
    "outbound.toml",
    "inbound.toml",
    "approval.toml",
    "oversight.toml",
    "authorization.toml",
    "events.toml",
)
MISSING = "<missing>"


@cache
def spec(name: str) -> dict[str, Any]:
    with (SPEC / f"{name}.toml").open("rb") as f:
        return tomllib.load(f)


def union(a: Iterable[Any], b: Iterable[Any]) -> list[Any]:
    """Keys of both sides, each once, in first-seen order (stable test ids)."""
    return list(dict.fromkeys([*a, *b]))


def values(members: Iterable[Any]) -> list[str]:
    return [m.value for m in members]


def no_duplicates(items: list[Any]) -> bool:
    return len(items) == len(set(items))


# --- file hygiene ------------------------------------------------------------------------


@pytest.mark.parametrize("filename", TOML_FILES)
def test_toml_has_header_comment(filename: str) -> None:
    text = (SPEC / filename).read_text(encoding="utf-8")
    header = list(itertools.takewhile(lambda line: line.startswith("#"), text.splitlines()))
    assert len(header) >= 3, f"spec/{filename} must open with a comment saying what it is"
    joined = " ".join(line.lstrip("# ") for line in header)
    assert "tests/unit/test_spec_tables.py" in joined, f"spec/{filename}: name the checking test"
    assert "cell by cell" in joined, f"spec/{filename}: say the test compares it cell by cell"


Shape = tuple[str, str, frozenset[str], frozenset[str]]


def shape(filename: str, path: str, required: str, optional: str = "") -> Shape:
    return filename, path, frozenset(required.split()), frozenset(optional.split())


#: (file, dotted path to an array of rows, required columns, optional columns). A typo in a
#: column name would otherwise be silently ignored.
ROW_SHAPES: tuple[Shape, ...] = (
    shape("mailbox", "transitions", "from command to"),
    shape("outbound", "transitions", "from command to"),
    shape("inbound", "transitions", "from command to"),
    shape("approval", "transitions", "from command to"),
    shape("approval", "reviewer_rules", "name reason when example"),
    shape("inbound", "classification", "header test kind ref example"),
    shape("inbound", "classification_examples", "why headers kind"),
    shape("oversight", "rules", "name actions modes condition verdict monitor_copy reason"),
    shape("oversight", "conditions", "name meaning"),
    shape("oversight", "mode_change.actors", "name may_raise may_lower keys"),
    shape("oversight", "mode_change.matrix", "from to actor verdict rule"),
    shape("oversight", "send.matrix", "mode action allowlisted verdict monitor_copy rule"),
    shape("oversight", "inbound.matrix", "mode verdict rule"),
    shape("oversight", "read.matrix", "mode held verdict rule"),
    shape("oversight", "release.matrix", "mode verdict rule"),
    shape("authorization", "operations", "name any_of target agent_ok"),
    shape("authorization", "rules", "name reason when"),
    shape(
        "authorization",
        "examples",
        "expect why",
        "revoked server_admin scopes mailbox_ids operation account_id mailbox_id",
    ),
    shape("authorization", "scope_set_rules", "name rule"),
    shape("events", "events", "class type"),
)


def rows_at(doc: Mapping[str, Any], path: str) -> list[dict[str, Any]]:
    node: Any = doc
    for part in path.split("."):
        node = node[part]
    return list(node)


@pytest.mark.parametrize(
    ("filename", "path", "required", "optional"),
    ROW_SHAPES,
    ids=[f"{f}.{p}" for f, p, _, _ in ROW_SHAPES],
)
def test_rows_have_exactly_the_known_columns(
    filename: str, path: str, required: frozenset[str], optional: frozenset[str]
) -> None:
    rows = rows_at(spec(filename), path)
    assert rows, f"spec/{filename}.toml: {path} is empty"
    for i, row in enumerate(rows):
        keys = set(row)
        assert required <= keys, f"{path}[{i}] lacks {sorted(required - keys)}"
        unknown = keys - required - optional
        assert not unknown, f"{path}[{i}] has unknown columns {sorted(unknown)}"


# --- modes -------------------------------------------------------------------------------


def test_ladder_order() -> None:
    assert spec("modes")["ladder"] == values(modes.LADDER)


def test_ladder_holds_every_mode_once() -> None:
    assert sorted(spec("modes")["ladder"]) == sorted(values(OversightMode))
    assert no_duplicates(spec("modes")["ladder"])


def test_ladder_ranks_increase() -> None:
    ladder = [OversightMode(m) for m in spec("modes")["ladder"]]
    assert [modes.rank(m) for m in ladder] == list(range(len(ladder)))


def test_default_mode() -> None:
    assert spec("modes")["default"] == modes.DEFAULT_MODE.value


# --- state machines: mailbox, outbound, inbound, approval ---------------------------------

MACHINES: dict[str, ModuleType] = {
    "mailbox": mailbox,
    "outbound": outbound,
    "inbound": inbound,
    "approval": approval,
}


def command_classes(module: ModuleType) -> dict[str, type]:
    """The module's ``Command`` union, by class ``__name__``."""
    return {c.__name__: c for c in typing.get_args(module.Command)}


def code_transitions(module: ModuleType) -> dict[tuple[str, str], Any]:
    """TRANSITIONS as (status value, command name) → target value (a frozenset for outbound)."""
    cells: dict[tuple[str, str], Any] = {}
    for (status, command), target in module.TRANSITIONS.items():
        to = frozenset(values(target)) if isinstance(target, frozenset) else target.value
        cells[(status.value, command.__name__)] = to
    return cells


def spec_transitions(name: str) -> dict[tuple[str, str], Any]:
    cells: dict[tuple[str, str], Any] = {}
    for row in spec(name)["transitions"]:
        to = frozenset(row["to"]) if isinstance(row["to"], list) else row["to"]
        cells[(row["from"], row["command"])] = to
    return cells


TRANSITION_CELLS = [
    (name, key)
    for name, module in MACHINES.items()
    for key in union(spec_transitions(name), code_transitions(module))
]


@pytest.mark.parametrize(
    ("machine", "cell"),
    TRANSITION_CELLS,
    ids=[f"{m}:{s}+{c}" for m, (s, c) in TRANSITION_CELLS],
)
def test_transition_cell(machine: str, cell: tuple[str, str]) -> None:
    in_spec = spec_transitions(machine).get(cell, MISSING)
    in_code = code_transitions(MACHINES[machine]).get(cell, MISSING)
    assert in_spec == in_code, (
        f"{machine} {cell}: spec/{machine}.toml says {in_spec}, code {in_code}"
    )


@pytest.mark.parametrize("machine", MACHINES)
def test_transition_rows_are_unique(machine: str) -> None:
    pairs = [(r["from"], r["command"]) for r in spec(machine)["transitions"]]
    assert no_duplicates(pairs), f"spec/{machine}.toml lists a (from, command) pair twice"
    for row in spec(machine)["transitions"]:
        if isinstance(row["to"], list):
            assert no_duplicates(row["to"]), row


@pytest.mark.parametrize("machine", MACHINES)
def test_statuses(machine: str) -> None:
    assert spec(machine)["statuses"] == values(MACHINES[machine].Status)


@pytest.mark.parametrize("machine", MACHINES)
def test_commands_are_the_command_union(machine: str) -> None:
    """Command names map to the classes of the module's ``Command`` union by ``__name__``."""
    assert spec(machine)["commands"] == list(command_classes(MACHINES[machine]))


@pytest.mark.parametrize("machine", MACHINES)
def test_transition_rows_use_known_names(machine: str) -> None:
    statuses = set(spec(machine)["statuses"])
    commands = set(spec(machine)["commands"])
    for row in spec(machine)["transitions"]:
        targets = row["to"] if isinstance(row["to"], list) else [row["to"]]
        assert row["from"] in statuses, row
        assert row["command"] in commands, row
        assert set(targets) <= statuses, row


@pytest.mark.parametrize("machine", MACHINES)
def test_code_table_uses_only_the_command_union(machine: str) -> None:
    module = MACHINES[machine]
    union_classes = set(command_classes(module).values())
    assert {command for _, command in module.TRANSITIONS} <= union_classes


def targets_of(target: Any) -> frozenset[Any]:
    return target if isinstance(target, frozenset) else frozenset({target})


@pytest.mark.parametrize("machine", MACHINES)
def test_terminal_statuses_lead_nowhere_else(machine: str) -> None:
    """Terminal: no row leads to another status (a row may loop back to record a fact)."""
    module = MACHINES[machine]
    leaving = {
        status.value
        for (status, _), target in module.TRANSITIONS.items()
        if targets_of(target) - {status}
    }
    dead_ends = [s for s in values(module.Status) if s not in leaving]
    assert spec(machine)["terminal"] == dead_ends


def test_outbound_status_sets() -> None:
    assert set(spec("outbound")["never_sent"]) == set(values(outbound.NEVER_SENT))
    assert set(spec("outbound")["terminal"]) == set(values(outbound.TERMINAL))
    assert set(spec("outbound")["never_sent"]) <= set(spec("outbound")["terminal"])


def test_inbound_hidden_set() -> None:
    assert set(spec("inbound")["hidden"]) == set(values(inbound.HIDDEN))
    assert no_duplicates(spec("inbound")["hidden"])


# --- initial statuses: what the creating functions produce --------------------------------

NOW = 1_700_000_000_000
ALICE = parse_address("agent@agents.example")
BOB = parse_address("bob@example.com")
AGENT = Key("key_agent", "acc_1", frozenset({Scope.SEND, Scope.READ}), frozenset({"mbx_1"}))


def make_mailbox(
    mode: OversightMode = OversightMode.GATED_SEND,
    status: mailbox.Status = mailbox.Status.ACTIVE,
    allowlist: frozenset[str] = frozenset(),
) -> mailbox.Mailbox:
    box, _ = mailbox.create(
        "mbx_1", "acc_1", ALICE, display_name="Agent", mode=mode, webhook_url=None, now=NOW
    )
    gone = NOW if status is mailbox.Status.DECOMMISSIONED else None
    return replace(box, status=status, allowlist=allowlist, decommissioned_at=gone)


def ids(n: int) -> wf.NewIds:
    return wf.NewIds(f"msg_{n}", f"apr_{n}", f"thr_{n}")


def submissions() -> Iterator[wf.Submission]:
    """One submission per sending mode, allowlisted or not, now or later."""
    n = 0
    for mode in OversightMode:
        if mode is OversightMode.READ_ONLY:
            continue
        for allowlist, send_at in itertools.product(
            (frozenset(), frozenset({"bob@example.com"})), (None, NOW + 60_000)
        ):
            n += 1
            draft = wf.Draft((BOB,), "hello", "body", send_at=send_at)
            box = make_mailbox(mode, allowlist=allowlist)
            yield wf.submit(box, AGENT, draft, ids(n), suppressed=frozenset(), now=NOW)


def receive_into(box: mailbox.Mailbox, n: int) -> wf.Receipt:
    return wf.receive(
        box,
        sender="someone@example.com",
        subject="hi",
        body_text="body",
        kind=inbound.Kind.PERSONAL,
        ids=ids(n),
        now=NOW,
    )


def receipts() -> Iterator[wf.Receipt]:
    for n, mode in enumerate(OversightMode):
        yield receive_into(make_mailbox(mode), n)


def test_initial_mailbox_status() -> None:
    created = {
        mailbox.create(
            "mbx_1", "acc_1", ALICE, display_name="", mode=mode, webhook_url=None, now=NOW
        )[0].status.value
        for mode in OversightMode
    }
    assert set(spec("mailbox")["initial"]) == created


def test_initial_outbound_statuses() -> None:
    produced = {s.message.status.value for s in submissions()}
    assert set(spec("outbound")["initial"]) == produced


def queued(status: outbound.Status = outbound.Status.QUEUED) -> outbound.Outbound:
    """An outbound message of mbx_1 to bob@example.com, due now."""
    return outbound.Outbound(
        id="msg_q",
        mailbox_id="mbx_1",
        account_id="acc_1",
        thread_id="thr_q",
        created_by="key_agent",
        recipients=("bob@example.com",),
        subject="hello",
        body_text="body",
        body_html=None,
        status=status,
        monitored=False,
        created_at=NOW,
        next_attempt_at=NOW,
    )


def test_read_only_creates_no_outbound_message() -> None:
    draft = wf.Draft((BOB,), "hello", "body")
    box = make_mailbox(OversightMode.READ_ONLY)
    with pytest.raises(OversightDenied):
        wf.submit(box, AGENT, draft, ids(0), suppressed=frozenset(), now=NOW)


def test_initial_inbound_statuses() -> None:
    produced = {r.message.status.value for r in receipts()}
    assert set(spec("inbound")["initial"]) == produced


def test_initial_approval_status() -> None:
    made = [s.approval for s in submissions()] + [r.approval for r in receipts()]
    produced = {a.status.value for a in made if a is not None}
    assert set(spec("approval")["initial"]) == produced


# --- mailbox: capabilities and quarantine ---------------------------------------------------

CAPABILITY_STATUSES = union(spec("mailbox")["capabilities"], values(mailbox.Status))


@pytest.mark.parametrize("status", CAPABILITY_STATUSES)
def test_mailbox_capabilities(status: str) -> None:
    stated = spec("mailbox")["capabilities"].get(status, MISSING)
    assert stated != MISSING, f"spec/mailbox.toml [capabilities] lacks {status}"
    box = make_mailbox(status=mailbox.Status(status))
    assert stated == {"can_send": mailbox.can_send(box), "can_receive": mailbox.can_receive(box)}


@pytest.mark.parametrize("status", values(mailbox.Status))
def test_mailbox_capabilities_govern_the_workflows(status: str) -> None:
    """receive stores mail exactly when can_receive; submit creates and start_delivery
    claims exactly when can_send (otherwise start_delivery cancels: P11)."""
    stated = spec("mailbox")["capabilities"][status]
    box = make_mailbox(OversightMode.AUTONOMOUS, status=mailbox.Status(status))
    if stated["can_receive"]:
        receive_into(box, 1)
    else:
        with pytest.raises(MailboxUnavailable):
            receive_into(box, 1)
    draft = wf.Draft((BOB,), "hello", "body")
    if stated["can_send"]:
        wf.submit(box, AGENT, draft, ids(2), suppressed=frozenset(), now=NOW)
    else:
        with pytest.raises(MailboxUnavailable):
            wf.submit(box, AGENT, draft, ids(2), suppressed=frozenset(), now=NOW)
    message, _ = wf.start_delivery(box, queued(), suppressed=frozenset(), now=NOW)
    expected = outbound.Status.SENDING if stated["can_send"] else outbound.Status.CANCELLED
    assert message.status is expected


def test_quarantine_length() -> None:
    assert spec("mailbox")["quarantine_days"] * mailbox.DAY_MS == mailbox.QUARANTINE_MS


def test_quarantine_boundary() -> None:
    """Another account waits exactly quarantine_days after the decommission; the same one
    does not wait at all."""
    quarantine = spec("mailbox")["quarantine_days"] * 86_400_000
    holder = mailbox.Holder("acc_old", mailbox.Status.DECOMMISSIONED, NOW)
    availability = mailbox.address_availability
    assert availability([holder], "acc_new", now=NOW) is mailbox.Availability.QUARANTINED
    last = NOW + quarantine - 1
    assert availability([holder], "acc_new", now=last) is mailbox.Availability.QUARANTINED
    end = NOW + quarantine
    assert availability([holder], "acc_new", now=end) is mailbox.Availability.AVAILABLE
    assert availability([holder], "acc_old", now=NOW) is mailbox.Availability.AVAILABLE


# --- inbound: visibility, requires_action, classification ----------------------------------


def make_inbound(status: str, kind: str, *, replied: bool = False) -> inbound.Inbound:
    return inbound.Inbound(
        id="msg_1",
        mailbox_id="mbx_1",
        account_id="acc_1",
        thread_id="thr_1",
        sender="someone@example.com",
        subject="hi",
        kind=inbound.Kind(kind),
        status=inbound.Status(status),
        received_at=NOW,
        replied=replied,
    )


@pytest.mark.parametrize("status", values(inbound.Status))
def test_inbound_visibility(status: str) -> None:
    expected = status not in spec("inbound")["hidden"]
    assert inbound.is_visible(make_inbound(status, "personal")) is expected


def test_inbound_kinds() -> None:
    assert spec("inbound")["kinds"] == values(inbound.Kind)


#: One instance of each inbound command, by class name.
INBOUND_COMMANDS: dict[str, inbound.Command] = {
    "Approve": inbound.Approve("apr_1", "key_reviewer"),
    "Reject": inbound.Reject("apr_1", "key_reviewer", "spam"),
    "MarkRead": inbound.MarkRead(),
    "MarkUnread": inbound.MarkUnread(),
    "Archive": inbound.Archive(),
    "MarkReplied": inbound.MarkReplied("msg_2"),
}


def test_inbound_events_name_every_command() -> None:
    assert list(spec("inbound")["events"]) == spec("inbound")["commands"]
    assert set(INBOUND_COMMANDS) == set(command_classes(inbound))


INBOUND_EVENT_CELLS = union(spec_transitions("inbound"), code_transitions(inbound))


@pytest.mark.parametrize(
    ("status", "command"), INBOUND_EVENT_CELLS, ids=[f"{s}+{c}" for s, c in INBOUND_EVENT_CELLS]
)
def test_inbound_event_of_each_transition(status: str, command: str) -> None:
    """Every legal row emits the one event spec/inbound.toml [events] names (P3, P12)."""
    message = make_inbound(status, "personal")
    _, emitted = inbound.apply(message, INBOUND_COMMANDS[command], now=NOW)
    assert [type(e).__name__ for e in emitted] == [spec("inbound")["events"][command]]


def test_approving_held_inbound_tells_the_agent() -> None:
    """P3: the agent learns of held mail when it is approved (message.received), not before."""
    box = make_mailbox(OversightMode.GATED_ALL)
    held = receive_into(box, 1)
    assert held.approval is not None
    assert "message.received" not in {e.TYPE for e in held.events}
    reviewer_key = Key("key_reviewer", "acc_1", frozenset({Scope.OVERSIGHT}))
    done = wf.decide(box, reviewer_key, held.approval, held.message, approve=True, now=NOW)
    assert isinstance(done.message, inbound.Inbound)
    assert inbound.is_visible(done.message)
    assert [e.TYPE for e in done.events] == ["message.received"]


REQUIRES_ACTION_CELLS = list(
    itertools.product(values(inbound.Status), values(inbound.Kind), (False, True))
)


@pytest.mark.parametrize(
    ("status", "kind", "replied"),
    REQUIRES_ACTION_CELLS,
    ids=[f"{s}-{k}-{'replied' if r else 'unreplied'}" for s, k, r in REQUIRES_ACTION_CELLS],
)
def test_requires_action_cell(status: str, kind: str, replied: bool) -> None:
    rule = spec("inbound")["requires_action"]
    expected = kind in rule["kinds"] and status in rule["statuses"] and replied == rule["replied"]
    assert inbound.requires_action(make_inbound(status, kind, replied=replied)) is expected


CLASSIFICATION = spec("inbound")["classification"]


@pytest.mark.parametrize(
    "row",
    CLASSIFICATION,
    ids=[f"{i}-{r['header']}-{r['kind']}" for i, r in enumerate(CLASSIFICATION)],
)
def test_classification_row(row: dict[str, Any]) -> None:
    assert inbound.classify(row["example"]).value == row["kind"]


CLASSIFICATION_PAIRS = [
    (i, j)
    for i, j in itertools.combinations(range(len(CLASSIFICATION)), 2)
    if not set(CLASSIFICATION[i]["example"]) & set(CLASSIFICATION[j]["example"])
]


@pytest.mark.parametrize(
    ("first", "later"),
    CLASSIFICATION_PAIRS,
    ids=[f"{i}-before-{j}" for i, j in CLASSIFICATION_PAIRS],
)
def test_classification_first_match_wins(first: int, later: int) -> None:
    headers = {**CLASSIFICATION[later]["example"], **CLASSIFICATION[first]["example"]}
    assert inbound.classify(headers).value == CLASSIFICATION[first]["kind"]


def test_classification_ends_with_the_fallback_and_covers_every_kind() -> None:
    assert CLASSIFICATION[-1]["header"] == "*"
    assert CLASSIFICATION[-1]["kind"] == inbound.Kind.PERSONAL.value
    assert {r["kind"] for r in CLASSIFICATION} == set(values(inbound.Kind))


CLASSIFICATION_EXAMPLES = spec("inbound")["classification_examples"]


@pytest.mark.parametrize(
    "example", CLASSIFICATION_EXAMPLES, ids=[e["why"][:40] for e in CLASSIFICATION_EXAMPLES]
)
def test_classification_example(example: dict[str, Any]) -> None:
    assert inbound.classify(example["headers"]).value == example["kind"]


# --- approval: reviewer rules ---------------------------------------------------------------

REVIEWER_RULES = spec("approval")["reviewer_rules"]
HELD = approval.Approval(
    id="apr_1",
    account_id="acc_1",
    mailbox_id="mbx_1",
    message_id="msg_1",
    direction=approval.Direction.OUTBOUND,
    created_by="key_agent",
    original=approval.Content("subject", "body", None),
    created_at=NOW,
)


def reviewer(**changes: Any) -> Key:
    fields: dict[str, Any] = {
        "id": "key_reviewer",
        "account_id": "acc_1",
        "scopes": frozenset({Scope.OVERSIGHT}),
        "mailbox_ids": None,
        "revoked": False,
    }
    for name, value in changes.items():
        if name == "scopes":
            value = frozenset(Scope(s) for s in value)
        elif name == "mailbox_ids":
            value = frozenset(value)
        fields[name] = value
    return Key(**fields)


def test_approval_directions() -> None:
    assert spec("approval")["directions"] == values(approval.Direction)


REVIEWER_CELLS = [
    (i, field)
    for i in range(max(len(REVIEWER_RULES), len(approval.REVIEWER_RULES)))
    for field in ("name", "reason")
]


@pytest.mark.parametrize(
    ("index", "field"), REVIEWER_CELLS, ids=[f"reviewer_rules[{i}].{f}" for i, f in REVIEWER_CELLS]
)
def test_reviewer_rule_cell(index: int, field: str) -> None:
    in_spec = REVIEWER_RULES[index][field] if index < len(REVIEWER_RULES) else MISSING
    code = approval.REVIEWER_RULES
    in_code = getattr(code[index], field) if index < len(code) else MISSING
    assert in_spec == in_code


def test_valid_reviewer_is_not_denied() -> None:
    assert approval.reviewer_denial(HELD, reviewer()) is None


@pytest.mark.parametrize(
    "index", range(len(REVIEWER_RULES)), ids=[r["name"] for r in REVIEWER_RULES]
)
def test_reviewer_rule_example(index: int) -> None:
    """The example alone trips the rule; with every later rule's example too, still it."""
    alone = reviewer(**REVIEWER_RULES[index]["example"])
    assert approval.reviewer_denial(HELD, alone) == REVIEWER_RULES[index]["name"]
    merged: dict[str, Any] = {}
    for row in REVIEWER_RULES[index:]:
        merged.update(row["example"])
    assert approval.reviewer_denial(HELD, reviewer(**merged)) == REVIEWER_RULES[index]["name"]


# --- oversight: the rule table ----------------------------------------------------------------

OVS = spec("oversight")
RULE_FIELDS = ("name", "actions", "modes", "condition", "verdict", "monitor_copy", "reason")


def code_rule(rule: ovs.Rule) -> dict[str, Any]:
    return {
        "name": rule.name,
        "actions": frozenset(values(rule.actions)),
        "modes": frozenset(values(rule.modes)),
        "condition": rule.condition.value,
        "verdict": rule.verdict.value,
        "monitor_copy": rule.monitor_copy,
        "reason": rule.reason,
    }


def spec_rule(row: Mapping[str, Any]) -> dict[str, Any]:
    return {**row, "actions": frozenset(row["actions"]), "modes": frozenset(row["modes"])}


RULE_CELLS = [
    (i, field) for i in range(max(len(OVS["rules"]), len(ovs.RULES))) for field in RULE_FIELDS
]


@pytest.mark.parametrize(
    ("index", "field"), RULE_CELLS, ids=[f"rules[{i}].{f}" for i, f in RULE_CELLS]
)
def test_oversight_rule_cell(index: int, field: str) -> None:
    rows = OVS["rules"]
    in_spec = spec_rule(rows[index])[field] if index < len(rows) else MISSING
    in_code = code_rule(ovs.RULES[index])[field] if index < len(ovs.RULES) else MISSING
    assert in_spec == in_code


def test_oversight_rule_order() -> None:
    """The same names in the same order (the cell tests above say which cell differs)."""
    assert [r["name"] for r in OVS["rules"]] == [r.name for r in ovs.RULES]


def test_oversight_rule_lists_have_no_duplicates() -> None:
    assert no_duplicates([r["name"] for r in OVS["rules"]])
    for row in OVS["rules"]:
        assert no_duplicates(row["actions"]), row["name"]
        assert no_duplicates(row["modes"]), row["name"]


def test_oversight_vocabulary() -> None:
    assert OVS["actions"] == values(ovs.Action)
    assert OVS["verdicts"] == values(ovs.Verdict)
    assert [c["name"] for c in OVS["conditions"]] == values(ovs.Condition)
    assert set(ovs.CONDITIONS) == set(ovs.Condition)


def test_oversight_default_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no rule matching, decide answers the default rule's verdict and name."""
    assert OVS["default_rule"]["name"] == ovs.DEFAULT_RULE
    monkeypatch.setattr(ovs, "RULES", ())
    decision = ovs.decide(ovs.Request(OversightMode.AUTONOMOUS, ovs.Action.READ))
    assert (decision.verdict.value, decision.rule) == (
        OVS["default_rule"]["verdict"],
        OVS["default_rule"]["name"],
    )


@pytest.mark.parametrize(
    ("action", "mode"),
    list(itertools.product(values(ovs.Action), values(OversightMode))),
)
def test_oversight_table_is_total(action: str, mode: str) -> None:
    """Some row with condition "always" matches every (action, mode): no default verdicts."""
    assert any(
        action in row["actions"] and mode in row["modes"] and row["condition"] == "always"
        for row in OVS["rules"]
    )


# --- oversight: the derived matrices, checked by calling decide -------------------------------

LADDER = values(OversightMode)


def keyed(rows: Iterable[Mapping[str, Any]], *columns: str) -> dict[tuple[Any, ...], Any]:
    table: dict[tuple[Any, ...], Any] = {}
    for row in rows:
        key = tuple(row[c] for c in columns)
        assert key not in table, f"duplicate matrix row {key}"
        table[key] = row
    return table


def spec_key(fields: Mapping[str, Any]) -> Key:
    """A key of account acc_1 from a spec row: scopes, and mailbox_ids if restricted."""
    restriction = fields.get("mailbox_ids")
    return Key(
        "key_actor",
        "acc_1",
        frozenset(Scope(s) for s in fields["scopes"]),
        None if restriction is None else frozenset(restriction),
    )


ACTORS = {row["name"]: row for row in OVS["mode_change"]["actors"]}


def test_mode_change_actors() -> None:
    assert no_duplicates([row["name"] for row in OVS["mode_change"]["actors"]])
    for row in OVS["mode_change"]["actors"]:
        assert row["keys"], row["name"]
        for fields in row["keys"]:
            assert "scopes" in fields, row["name"]
            assert set(fields) <= {"scopes", "mailbox_ids"}, f"{row['name']}: {sorted(fields)}"


@pytest.mark.parametrize("actor", list(ACTORS))
def test_mode_change_actor_keys(actor: str) -> None:
    """Each listed key is valid and has exactly the stated rights on mbx_1."""
    row = ACTORS[actor]
    for fields in row["keys"]:
        key = spec_key(fields)
        assert authorization.can_raise_autonomy(key) is row["may_raise"], fields
        assert authorization.can_lower_autonomy(key, "mbx_1") is row["may_lower"], fields
        set_mode = authorization.OPERATIONS["mailbox.set_mode"]
        request = authorization.Request(key, set_mode, "acc_1", "mbx_1")
        assert authorization.authorize(request).allowed, fields


MODE_CHANGE = keyed(OVS["mode_change"]["matrix"], "from", "to", "actor")
MODE_CHANGE_CELLS = union(itertools.product(LADDER, LADDER, ACTORS), MODE_CHANGE)


@pytest.mark.parametrize(
    ("old", "new", "actor"),
    MODE_CHANGE_CELLS,
    ids=[f"{o}->{n}-{a}" for o, n, a in MODE_CHANGE_CELLS],
)
def test_mode_change_matrix(old: str, new: str, actor: str) -> None:
    """oversight.decide, and workflows.change_mode end to end, for every key of the actor."""
    row = MODE_CHANGE.get((old, new, actor))
    assert row is not None, "spec/oversight.toml mode_change.matrix lacks this row"
    assert actor in ACTORS, "spec/oversight.toml mode_change.actors lacks this actor"
    for fields in ACTORS[actor]["keys"]:
        key = spec_key(fields)
        decision = ovs.decide(
            ovs.Request(
                OversightMode(old),
                ovs.Action.MODE_CHANGE,
                actor_may_raise=authorization.can_raise_autonomy(key),
                actor_may_lower=authorization.can_lower_autonomy(key, "mbx_1"),
                new_mode=OversightMode(new),
            )
        )
        assert (decision.verdict.value, decision.rule) == (row["verdict"], row["rule"]), fields
        assert decision.monitor_copy is False
        box = make_mailbox(OversightMode(old))
        if row["verdict"] == "allow":
            after, emitted = wf.change_mode(box, key, OversightMode(new), now=NOW)
            assert after.mode.value == new, fields
            assert len(emitted) == (0 if old == new else 1), fields
        else:
            with pytest.raises(OversightDenied) as denied:
                wf.change_mode(box, key, OversightMode(new), now=NOW)
            assert denied.value.rule == row["rule"], fields


def test_mode_change_matrix_is_complete() -> None:
    assert len(MODE_CHANGE) == len(LADDER) * len(LADDER) * len(ACTORS) == 75


#: Concrete (recipients, allowlist) pairs for each abstract "allowlisted" cell.
RECIPIENT_CASES: dict[bool, tuple[tuple[tuple[Address, ...], frozenset[str]], ...]] = {
    True: (
        ((BOB,), frozenset({"bob@example.com"})),
        (
            (parse_address("Bob+news@Example.COM"), parse_address("carol@partner.example")),
            frozenset({"bob@example.com", "*@partner.example"}),
        ),
    ),
    False: (
        ((BOB,), frozenset()),
        ((BOB, parse_address("mallory@evil.example")), frozenset({"bob@example.com"})),
        ((parse_address("x@sub.partner.example"),), frozenset({"*@partner.example"})),
        ((parse_address("bobby@example.com"),), frozenset({"bob@example.com"})),
    ),
}

SEND = keyed(OVS["send"]["matrix"], "mode", "action", "allowlisted")
SEND_CELLS = union(itertools.product(LADDER, ("send", "reply"), (True, False)), SEND)


@pytest.mark.parametrize(
    ("mode", "action", "allowlisted"),
    SEND_CELLS,
    ids=[f"{m}-{a}-{'allowlisted' if ok else 'not_allowlisted'}" for m, a, ok in SEND_CELLS],
)
def test_send_matrix(mode: str, action: str, allowlisted: bool) -> None:
    row = SEND.get((mode, action, allowlisted))
    assert row is not None, "spec/oversight.toml send.matrix lacks this row"
    expected = (row["verdict"], row["monitor_copy"], row["rule"])
    for recipients, allowlist in RECIPIENT_CASES[allowlisted]:
        request = ovs.Request(OversightMode(mode), ovs.Action(action), recipients, allowlist)
        decision = ovs.decide(request)
        got = (decision.verdict.value, decision.monitor_copy, decision.rule)
        assert got == expected, f"recipients {[str(r) for r in recipients]}, allowlist {allowlist}"


def test_send_matrix_is_complete() -> None:
    assert len(SEND) == len(LADDER) * 2 * 2 == 20


INBOUND = keyed(OVS["inbound"]["matrix"], "mode")


@pytest.mark.parametrize("mode", union(LADDER, [m for (m,) in INBOUND]))
def test_inbound_matrix(mode: str) -> None:
    row = INBOUND.get((mode,))
    assert row is not None, "spec/oversight.toml inbound.matrix lacks this row"
    decision = ovs.decide(ovs.Request(OversightMode(mode), ovs.Action.INBOUND))
    assert (decision.verdict.value, decision.rule, decision.monitor_copy) == (
        row["verdict"],
        row["rule"],
        False,
    )


READ = keyed(OVS["read"]["matrix"], "mode", "held")
READ_CELLS = union(itertools.product(LADDER, (False, True)), READ)


@pytest.mark.parametrize(
    ("mode", "held"), READ_CELLS, ids=[f"{m}-{'held' if h else 'visible'}" for m, h in READ_CELLS]
)
def test_read_matrix(mode: str, held: bool) -> None:
    row = READ.get((mode, held))
    assert row is not None, "spec/oversight.toml read.matrix lacks this row"
    decision = ovs.decide(ovs.Request(OversightMode(mode), ovs.Action.READ, message_held=held))
    assert (decision.verdict.value, decision.rule, decision.monitor_copy) == (
        row["verdict"],
        row["rule"],
        False,
    )


RELEASE = keyed(OVS["release"]["matrix"], "mode")


@pytest.mark.parametrize("mode", union(LADDER, [m for (m,) in RELEASE]))
def test_release_matrix(mode: str) -> None:
    """oversight.decide; approving held outbound mail (workflows.decide) and claiming a
    due message (workflows.start_delivery) follow the same verdict."""
    row = RELEASE.get((mode,))
    assert row is not None, "spec/oversight.toml release.matrix lacks this row"
    decision = ovs.decide(ovs.Request(OversightMode(mode), ovs.Action.RELEASE))
    assert (decision.verdict.value, decision.rule, decision.monitor_copy) == (
        row["verdict"],
        row["rule"],
        False,
    )
    # Held while the mailbox was gated_all, decided after it moved to `mode`.
    held = wf.submit(
        make_mailbox(OversightMode.GATED_ALL),
        AGENT,
        wf.Draft((BOB,), "hello", "body"),
        ids(1),
        suppressed=frozenset(),
        now=NOW,
    )
    assert held.approval is not None
    box = make_mailbox(OversightMode(mode))
    reviewer_key = Key("key_reviewer", "acc_1", frozenset({Scope.OVERSIGHT}))
    due = queued()
    if row["verdict"] == "allow":
        done = wf.decide(box, reviewer_key, held.approval, held.message, approve=True, now=NOW)
        assert done.message.status is outbound.Status.QUEUED
        claimed, _ = wf.start_delivery(box, due, suppressed=frozenset(), now=NOW)
        assert claimed.status is outbound.Status.SENDING
    else:
        with pytest.raises(OversightDenied) as denied:
            wf.decide(box, reviewer_key, held.approval, held.message, approve=True, now=NOW)
        assert denied.value.rule == row["rule"]
        cancelled, _ = wf.start_delivery(box, due, suppressed=frozenset(), now=NOW)
        assert cancelled.status is outbound.Status.CANCELLED
    rejected = wf.decide(box, reviewer_key, held.approval, held.message, approve=False, now=NOW)
    assert rejected.message.status is outbound.Status.REJECTED


@pytest.mark.parametrize("mode", [r["mode"] for r in OVS["release"]["matrix"]])
def test_release_refuses_suppressed_recipients(mode: str) -> None:
    """P14 at the last moment: a recipient suppressed while the message waited blocks the
    approval and cancels the due message, in every mode."""
    held = wf.submit(
        make_mailbox(OversightMode.GATED_ALL),
        AGENT,
        wf.Draft((BOB,), "hello", "body"),
        ids(1),
        suppressed=frozenset(),
        now=NOW,
    )
    assert held.approval is not None
    box = make_mailbox(OversightMode(mode))
    reviewer_key = Key("key_reviewer", "acc_1", frozenset({Scope.OVERSIGHT}))
    suppressed = frozenset({"bob@example.com"})
    # Oversight is checked before suppression (workflows Rule 2).
    allowed = RELEASE[(mode,)]["verdict"] == "allow"
    with pytest.raises(RecipientSuppressed if allowed else OversightDenied):
        wf.decide(
            box,
            reviewer_key,
            held.approval,
            held.message,
            approve=True,
            suppressed=suppressed,
            now=NOW,
        )
    for status in (outbound.Status.QUEUED, outbound.Status.DEFERRED):
        cancelled, _ = wf.start_delivery(box, queued(status), suppressed=suppressed, now=NOW)
        assert cancelled.status is outbound.Status.CANCELLED


def test_release_matrix_is_complete() -> None:
    assert len(RELEASE) == len(LADDER) == 5


@pytest.mark.parametrize(
    ("section", "column"),
    [
        ("mode_change", "rule"),
        ("send", "rule"),
        ("inbound", "rule"),
        ("read", "rule"),
        ("release", "rule"),
    ],
)
def test_matrices_name_existing_rules(section: str, column: str) -> None:
    names = {r["name"] for r in OVS["rules"]}
    assert {row[column] for row in OVS[section]["matrix"]} <= names


# --- authorization ----------------------------------------------------------------------------

AUTHZ = spec("authorization")
SCOPES = values(Scope)


def code_operation(op: authorization.Operation) -> dict[str, Any]:
    return {
        "name": op.name,
        "any_of": frozenset(values(op.any_of)),
        "target": op.target.value,
        "agent_ok": op.agent_ok,
    }


SPEC_OPERATIONS = {
    row["name"]: {**row, "any_of": frozenset(row["any_of"])} for row in AUTHZ["operations"]
}
OPERATION_CELLS = union(SPEC_OPERATIONS, authorization.OPERATIONS)


@pytest.mark.parametrize("name", OPERATION_CELLS)
def test_operation_row(name: str) -> None:
    in_spec = SPEC_OPERATIONS.get(name, MISSING)
    op = authorization.OPERATIONS.get(name)
    in_code = MISSING if op is None else code_operation(op)
    assert in_spec == in_code


def test_operation_rows_are_unique() -> None:
    names = [row["name"] for row in AUTHZ["operations"]]
    assert no_duplicates(names)
    for row in AUTHZ["operations"]:
        assert no_duplicates(row["any_of"]), row["name"]
        assert set(row["any_of"]) <= set(SCOPES), row["name"]


def test_authorization_vocabulary() -> None:
    assert AUTHZ["scopes"] == SCOPES
    assert AUTHZ["targets"] == values(authorization.Target)
    assert AUTHZ["allow_rule"] == authorization.ALLOW_RULE


AUTHZ_RULE_CELLS = [
    (i, field)
    for i in range(max(len(AUTHZ["rules"]), len(authorization.RULES)))
    for field in ("name", "reason")
]


@pytest.mark.parametrize(
    ("index", "field"), AUTHZ_RULE_CELLS, ids=[f"rules[{i}].{f}" for i, f in AUTHZ_RULE_CELLS]
)
def test_authorization_rule_cell(index: int, field: str) -> None:
    rows, code = AUTHZ["rules"], authorization.RULES
    in_spec = rows[index][field] if index < len(rows) else MISSING
    in_code = getattr(code[index], field) if index < len(code) else MISSING
    assert in_spec == in_code


def authz_request(example: Mapping[str, Any]) -> authorization.Request:
    """The baseline request of spec/authorization.toml `examples`, with the example's changes."""
    key = Key(
        "key_1",
        "acc_1",
        frozenset(Scope(s) for s in example.get("scopes", ["send"])),
        frozenset(example["mailbox_ids"]) if "mailbox_ids" in example else None,
        server_admin=example.get("server_admin", False),
        revoked=example.get("revoked", False),
    )
    mailbox_id = example.get("mailbox_id", "mbx_1") or None
    operation = authorization.OPERATIONS[example.get("operation", "messages.send")]
    return authorization.Request(key, operation, example.get("account_id", "acc_1"), mailbox_id)


AUTHZ_EXAMPLES = AUTHZ["examples"]


@pytest.mark.parametrize(
    "example", AUTHZ_EXAMPLES, ids=[f"{e['expect']}:{e['why'][:40]}" for e in AUTHZ_EXAMPLES]
)
def test_authorization_example(example: dict[str, Any]) -> None:
    decision = authorization.authorize(authz_request(example))
    assert decision.rule == example["expect"]
    assert decision.allowed is (example["expect"] == AUTHZ["allow_rule"])


def test_every_authorization_rule_has_an_example() -> None:
    expected = {r["name"] for r in AUTHZ["rules"]} | {AUTHZ["allow_rule"]}
    assert {e["expect"] for e in AUTHZ_EXAMPLES} == expected


def scope_sets() -> list[frozenset[str]]:
    return [frozenset(c) for n in range(len(SCOPES) + 1) for c in itertools.combinations(SCOPES, n)]


def valid_keys() -> Iterator[Key]:
    """Every valid key of account acc_1: each scope set, unrestricted or restricted to mbx_1,
    and the server admin."""
    for names in scope_sets():
        scopes = frozenset(Scope(s) for s in names)
        for restriction in (None, frozenset({"mbx_1"})):
            if authorization.is_valid_scope_set(scopes, restriction):
                yield Key("key_1", "acc_1", scopes, restriction)
    yield Key("key_root", "acc_1", frozenset({Scope.ADMIN}), None, server_admin=True)


@pytest.mark.parametrize("name", [row["name"] for row in AUTHZ["operations"]])
def test_operation_row_governs_authorize(name: str) -> None:
    """For every valid key in its own account, authorize follows the spec row."""
    row = SPEC_OPERATIONS[name]
    operation = authorization.OPERATIONS[name]
    mailbox_id = "mbx_1" if row["target"] == "mailbox" else None
    admin_all = AUTHZ["admin_satisfies_every_scope"]
    for key in valid_keys():
        held = set(values(key.scopes))
        expected = (
            (row["target"] != "server" or key.server_admin)
            and (key.mailbox_ids is None or row["agent_ok"])
            and (bool(held & row["any_of"]) or (admin_all and "admin" in held))
        )
        request = authorization.Request(key, operation, "acc_1", mailbox_id)
        assert authorization.authorize(request).allowed is expected, key


VALID_UNRESTRICTED = [
    names
    for names in scope_sets()
    if authorization.is_valid_scope_set(frozenset(Scope(s) for s in names), None)
]


@pytest.mark.parametrize("names", VALID_UNRESTRICTED, ids=lambda s: "+".join(sorted(s)))
def test_overseer_scopes(names: frozenset[str]) -> None:
    scopes = frozenset(Scope(s) for s in names)
    expected = bool(names & set(AUTHZ["overseer_scopes"]))
    assert authorization.is_overseer(Key("key_1", "acc_1", scopes)) is expected


SCOPE_SET_RULES: dict[str, Callable[[frozenset[str], frozenset[str] | None], bool]] = {
    "non_empty": lambda scopes, ids: bool(scopes),
    "no_send_with_oversight": lambda scopes, ids: not {"send", "oversight"} <= scopes,
    "admin_unrestricted": lambda scopes, ids: not ("admin" in scopes and ids is not None),
    "restriction_non_empty": lambda scopes, ids: ids is None or bool(ids),
}


def test_scope_set_rules_are_the_checked_ones() -> None:
    assert [r["name"] for r in AUTHZ["scope_set_rules"]] == list(SCOPE_SET_RULES)


RESTRICTIONS: dict[str, frozenset[str] | None] = {
    "unrestricted": None,
    "restricted": frozenset({"mbx_1"}),
    "restricted_to_none": frozenset(),
}
SCOPE_SET_CELLS = list(itertools.product(scope_sets(), RESTRICTIONS))


def spec_valid(names: frozenset[str], restriction: frozenset[str] | None) -> bool:
    return all(SCOPE_SET_RULES[r["name"]](names, restriction) for r in AUTHZ["scope_set_rules"])


@pytest.mark.parametrize(
    ("names", "restriction"),
    SCOPE_SET_CELLS,
    ids=[f"{'+'.join(sorted(s)) or 'none'}-{r}" for s, r in SCOPE_SET_CELLS],
)
def test_scope_set_cell(names: frozenset[str], restriction: str) -> None:
    """check_scope_set and the Key invariant accept exactly the sets the spec rules allow."""
    scopes = frozenset(Scope(s) for s in names)
    ids_ = RESTRICTIONS[restriction]
    valid = spec_valid(names, ids_)
    if valid:
        authorization.check_scope_set(scopes, ids_)
        Key("key_1", "acc_1", scopes, ids_)
    else:
        with pytest.raises(InvalidValue):
            authorization.check_scope_set(scopes, ids_)
        with pytest.raises(icontract.ViolationError):
            Key("key_1", "acc_1", scopes, ids_)
    assert authorization.is_valid_scope_set(scopes, ids_) is valid


AUTONOMY_RULES: dict[str, Callable[[frozenset[str], frozenset[str] | None, str], bool]] = {
    "raise": lambda scopes, ids, mbx: bool(scopes & set(AUTHZ["overseer_scopes"])) and ids is None,
    "lower": lambda scopes, ids, mbx: (
        AUTONOMY_RULES["raise"](scopes, ids, mbx) or (ids is not None and mbx in ids)
    ),
}
AUTONOMY_RESTRICTIONS: dict[str, frozenset[str] | None] = {
    "unrestricted": None,
    "this_mailbox": frozenset({"mbx_1"}),
    "this_and_another": frozenset({"mbx_1", "mbx_2"}),
    "another_mailbox": frozenset({"mbx_2"}),
}
AUTONOMY_CELLS = [
    (names, restriction)
    for names, restriction in itertools.product(scope_sets(), AUTONOMY_RESTRICTIONS)
    if spec_valid(names, AUTONOMY_RESTRICTIONS[restriction])
]


def test_autonomy_rules_are_the_checked_ones() -> None:
    assert list(AUTHZ["autonomy"]) == list(AUTONOMY_RULES)


@pytest.mark.parametrize(
    ("names", "restriction"),
    AUTONOMY_CELLS,
    ids=[f"{'+'.join(sorted(s))}-{r}" for s, r in AUTONOMY_CELLS],
)
def test_autonomy_cell(names: frozenset[str], restriction: str) -> None:
    """can_raise_autonomy / can_lower_autonomy follow [autonomy] for every valid key (P5)."""
    ids_ = AUTONOMY_RESTRICTIONS[restriction]
    key = Key("key_1", "acc_1", frozenset(Scope(s) for s in names), ids_)
    assert authorization.can_raise_autonomy(key) is AUTONOMY_RULES["raise"](names, ids_, "mbx_1")
    assert authorization.can_lower_autonomy(key, "mbx_1") is AUTONOMY_RULES["lower"](
        names, ids_, "mbx_1"
    )


ROUTE = r"(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) /\S*"


def test_routes_name_known_operations() -> None:
    """spec/routes.toml: every HTTP route names an operation of this table, or is public."""
    routes = spec("routes")["routes"]
    assert isinstance(routes, dict)
    assert len(routes) > 30
    for route, operation in routes.items():
        assert re.fullmatch(ROUTE, route), f"route {route!r}: expected 'METHOD /path'"
        assert operation == "public" or operation in authorization.OPERATIONS, route


# --- events -----------------------------------------------------------------------------------

EVENTS = spec("events")


def event_classes() -> list[type[events.Event]]:
    return [
        obj
        for obj in vars(events).values()
        if isinstance(obj, type)
        and issubclass(obj, events.Event)
        and obj.__module__ == events.__name__
    ]


def is_concrete(cls: type[events.Event]) -> bool:
    """Emitted events state their own TYPE; bases inherit the placeholder."""
    return cls is not events.Event and "TYPE" in vars(cls)


CODE_EVENTS = {c.__name__: c.TYPE for c in event_classes() if is_concrete(c)}
SPEC_EVENTS = {row["class"]: row["type"] for row in EVENTS["events"]}


@pytest.mark.parametrize("name", union(SPEC_EVENTS, CODE_EVENTS))
def test_event_type(name: str) -> None:
    assert SPEC_EVENTS.get(name, MISSING) == CODE_EVENTS.get(name, MISSING)


def test_event_rows_are_unique() -> None:
    assert no_duplicates([row["class"] for row in EVENTS["events"]])


def test_abstract_event_bases() -> None:
    abstract = {c.__name__ for c in event_classes() if not is_concrete(c)}
    assert set(EVENTS["abstract"]) == abstract


def test_public_types() -> None:
    assert no_duplicates(EVENTS["public_types"])
    assert set(EVENTS["public_types"]) == events.PUBLIC_TYPES


@pytest.mark.parametrize("event_type", EVENTS["public_types"])
def test_public_type_is_emitted_by_some_event(event_type: str) -> None:
    assert event_type in set(CODE_EVENTS.values())
