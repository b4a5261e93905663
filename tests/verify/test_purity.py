"""The core does no IO: it imports only pure stdlib modules, icontract and itself.

Two independent checks:
1. Static: every ``import`` in ``multimail_core/`` (at any depth, including under
   ``if TYPE_CHECKING``) names an allowlisted module; calls to ``__import__``, ``open``,
   ``exec`` and friends are rejected too. Unit tests of the checker prove it can fail.
2. Dynamic: a fresh interpreter imports every core module; nothing forbidden appears in
   ``sys.modules`` beyond what startup and icontract already loaded, and the only
   third-party packages loaded are icontract and its own runtime requirements.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "multimail_core"

# Pure stdlib: no IO, no clock, no randomness.
ALLOWED_STDLIB = frozenset(
    {
        "__future__",
        "dataclasses",
        "enum",
        "typing",
        "collections",
        "collections.abc",
        "functools",
        "itertools",
        "hashlib",
        "hmac",
        "base64",
        "json",
        "re",
        "math",
        "fractions",
        "unicodedata",
        "string",
        "types",
        "abc",
        "operator",
        "encodings.idna",
        "struct",
        "bisect",
        "heapq",
    }
)
# Packages whose submodules are allowed as well.
ALLOWED_PACKAGES = frozenset({"icontract", "multimail_core"})

FORBIDDEN = (
    "asyncio",
    "socket",
    "sqlite3",
    "sqlite_utils",
    "smtplib",
    "aiosmtpd",
    "aiosmtplib",
    "httpx",
    "fastapi",
    "starlette",
    "pydantic",
    "logging",
    "random",
    "uuid",
    "time",
    "datetime",
    "os",
    "sys",
    "subprocess",
    "threading",
    "urllib",
    "http",
    "ssl",
    "secrets",
    "psycopg",
    "dkim",
    "dns",
    "io",
    "pathlib",
)

# Builtins that do IO or import/execute code by name.
FORBIDDEN_CALLS = frozenset(
    {"__import__", "open", "exec", "eval", "compile", "input", "breakpoint"}
)


@dataclass(frozen=True)
class Violation:
    line: int
    what: str


def is_allowed(module: str) -> bool:
    """True when ``module`` (dotted, absolute) may be imported by the core."""
    if module in ALLOWED_STDLIB:
        return True
    return any(module == pkg or module.startswith(pkg + ".") for pkg in ALLOWED_PACKAGES)


def violations(source: str, *, package: str = "multimail_core") -> list[Violation]:
    """Every import or call in ``source`` that the core must not make.

    ``package`` is the package that holds the module, for resolving relative imports.
    """
    found: list[Violation] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(
                Violation(node.lineno, alias.name)
                for alias in node.names
                if not is_allowed(alias.name)
            )
        elif isinstance(node, ast.ImportFrom):
            found.extend(_from_violations(node, package))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in FORBIDDEN_CALLS
        ):
            found.append(Violation(node.lineno, f"{node.func.id}()"))
    return found


def _from_violations(node: ast.ImportFrom, package: str) -> list[Violation]:
    if node.level:
        parts = package.split(".")
        if node.level > len(parts):
            return [Violation(node.lineno, "." * node.level + (node.module or ""))]
        base = ".".join(parts[: len(parts) - node.level + 1])
        module = f"{base}.{node.module}" if node.module else base
    else:
        module = node.module or ""
    if is_allowed(module):
        return []
    # `from encodings import idna` imports the allowed submodule encodings.idna.
    return [
        Violation(node.lineno, f"{module}.{alias.name}")
        for alias in node.names
        if not is_allowed(f"{module}.{alias.name}")
    ]


def core_files() -> list[Path]:
    return sorted(p for p in CORE.rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(path: Path) -> str:
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


# --- the checker itself -------------------------------------------------------------


@pytest.mark.parametrize("module", FORBIDDEN)
def test_checker_rejects_forbidden_module(module: str) -> None:
    assert not is_allowed(module)
    assert violations(f"import {module}") == [Violation(1, module)]
    assert violations(f"import {module}.sub as s") == [Violation(1, f"{module}.sub")]
    assert violations(f"from {module} import thing") == [Violation(1, f"{module}.thing")]
    nested = f"def f():\n    if True:\n        import {module}\n"
    assert violations(nested) == [Violation(3, module)]


@pytest.mark.parametrize("module", sorted(ALLOWED_STDLIB | ALLOWED_PACKAGES))
def test_checker_accepts_allowed_module(module: str) -> None:
    assert violations(f"import {module}") == []
    assert violations(f"from {module} import thing") == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from collections import abc", []),
        ("from encodings import idna", []),
        ("from encodings import utf_8", ["encodings.utf_8"]),
        ("import encodings", ["encodings"]),
        ("import icontract._checkers", []),
        ("import icontractx", ["icontractx"]),
        ("import multimail_core_shadow", ["multimail_core_shadow"]),
        ("import multimail", ["multimail"]),
        ("from os import path", ["os.path"]),
        ("from os.path import join", ["os.path.join"]),
        ("import typing, time", ["time"]),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import datetime", ["datetime"]),
        ("x = __import__('os')", ["__import__()"]),
        ("data = open('f').read()", ["open()"]),
        ("exec('import os')", ["exec()"]),
        ("def f(open_: int) -> int:\n    return open_", []),
    ],
)
def test_checker_cases(source: str, expected: list[str]) -> None:
    assert [v.what for v in violations(source)] == expected


@pytest.mark.parametrize(
    ("source", "package", "expected"),
    [
        ("from .errors import InvalidValue", "multimail_core", []),
        ("from . import modes", "multimail_core", []),
        ("from .. import errors", "multimail_core.sub", []),
        ("from .. import adapters", "multimail_core", [".."]),
        ("from ... import x", "multimail_core.sub", ["..."]),
    ],
)
def test_checker_resolves_relative_imports(source: str, package: str, expected: list[str]) -> None:
    assert [v.what for v in violations(source, package=package)] == expected


# --- the core, statically ----------------------------------------------------------


def test_core_files_are_found() -> None:
    assert CORE / "__init__.py" in core_files()


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_imports_only_pure_modules(path: Path) -> None:
    found = violations(path.read_text(encoding="utf-8"), package=package_of(path))
    assert found == [], "\n".join(f"{path.relative_to(ROOT)}:{v.line}: {v.what}" for v in found)


# --- the core, dynamically -------------------------------------------------------------

_PROBE = """\
import sys
sys.path.insert(0, sys.argv[1])
startup = set(sys.modules)
import icontract
with_icontract = set(sys.modules)
for name in sys.argv[2:]:
    __import__(name)
after = set(sys.modules)
print(*sorted(after - startup), sep=" ")
print(*sorted(after - with_icontract), sep=" ")
"""


@dataclass(frozen=True)
class Loaded:
    since_startup: frozenset[str]  # everything importing icontract + the modules loaded
    since_icontract: frozenset[str]  # what the modules loaded beyond icontract


def load_in_fresh_interpreter(modules: list[str]) -> Loaded:
    """Import ``modules`` in an isolated interpreter (-I) and report what got loaded."""
    proc = subprocess.run(
        [sys.executable, "-I", "-c", _PROBE, str(ROOT), *modules],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    since_startup, since_icontract = proc.stdout.splitlines()
    return Loaded(frozenset(since_startup.split()), frozenset(since_icontract.split()))


def top_level(modules: frozenset[str]) -> set[str]:
    return {m.partition(".")[0] for m in modules}


def third_party(modules: frozenset[str]) -> set[str]:
    stdlib = sys.stdlib_module_names | set(sys.builtin_module_names)
    return {m for m in top_level(modules) if m not in stdlib} - {"multimail_core"}


def _dist_key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def icontract_closure() -> set[str]:
    """Import names of icontract and its runtime requirements, transitively.

    Requirements behind an ``extra`` marker are skipped; version-gated ones are kept
    (harmless: an unneeded one is simply not loaded).
    """
    dists: set[str] = set()
    todo = ["icontract"]
    while todo:
        dist = _dist_key(todo.pop())
        if dist in dists:
            continue
        try:
            requires = importlib.metadata.requires(dist) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        dists.add(dist)
        for req in requires:
            if "extra" in req.partition(";")[2]:
                continue
            name = re.match(r"[A-Za-z0-9._-]+", req)
            if name:
                todo.append(name.group(0))
    return {
        module
        for module, owners in importlib.metadata.packages_distributions().items()
        if any(_dist_key(owner) in dists for owner in owners)
    }


@pytest.fixture(scope="module")
def core_loaded() -> Loaded:
    return load_in_fresh_interpreter([module_name(p) for p in core_files()])


def test_fresh_interpreter_loads_every_core_module(core_loaded: Loaded) -> None:
    expected = {module_name(p) for p in core_files()}
    assert expected <= core_loaded.since_icontract


def test_core_loads_nothing_forbidden(core_loaded: Loaded) -> None:
    assert top_level(core_loaded.since_icontract) & set(FORBIDDEN) == set()


def test_only_icontract_and_its_requirements_are_third_party(core_loaded: Loaded) -> None:
    allowed = icontract_closure()
    assert "icontract" in allowed
    assert third_party(core_loaded.since_startup) - allowed == set()


def test_dynamic_check_can_fail() -> None:
    loaded = load_in_fresh_interpreter(["multimail_core", "logging", "sqlite3", "hypothesis"])
    assert {"logging", "sqlite3"} <= top_level(loaded.since_icontract) & set(FORBIDDEN)
    assert "hypothesis" in third_party(loaded.since_startup) - icontract_closure()
