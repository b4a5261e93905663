"""Every public function of the core carries at least one icontract contract (STYLE.md:
CrossHair checks only what has a contract), and every dataclass invariant is icontract's."""

import importlib
import inspect
import pkgutil

import icontract._checkers as checkers
import pytest

import multimail_core

MODULES = [
    importlib.import_module(f"multimail_core.{m.name}")
    for m in pkgutil.iter_modules(multimail_core.__path__)
]
PUBLIC = [
    (module.__name__, name, fn)
    for module in MODULES
    for name, fn in vars(module).items()
    if inspect.isfunction(fn) and fn.__module__ == module.__name__ and not name.startswith("_")
]


def test_the_core_has_public_functions_to_check():
    assert len(PUBLIC) > 60


@pytest.mark.parametrize(("module", "name", "fn"), PUBLIC, ids=[f"{m}.{n}" for m, n, _ in PUBLIC])
def test_public_function_has_a_contract(module, name, fn):
    checker = checkers.find_checker(fn)
    assert checker is not None, f"{module}.{name} has no @require/@ensure"
    pre = getattr(checker, "__preconditions__", [])
    post = getattr(checker, "__postconditions__", [])
    assert pre or post, f"{module}.{name} has a checker but no conditions"
