"""``make verify``: CrossHair over every contract of the core, module by module, in parallel.

A module passes when CrossHair exits 0 *and* prints nothing: any reported counterexample
fails the run. The targets are each module's public functions (every one carries
contracts). Classes are not targeted on their own: their ``@invariant`` is checked by
icontract on every construction inside those functions, and targeting a class makes
CrossHair explore the dunder methods inherited from ``object`` (``__ne__`` against an
``int``...), which costs seconds per class and, in CrossHair 0.0.113, intermittently
overflows the stack inside CrossHair itself. Budgets (CPU seconds per contract condition)
come from the environment, so a longer search is one variable away:
``CROSSHAIR_TIMEOUT=10 make verify``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "multimail_core"
TIMEOUT = os.environ.get("CROSSHAIR_TIMEOUT", "3")
ITERATIONS = os.environ.get("CROSSHAIR_ITERATIONS", "10")
JOBS = int(os.environ.get("CROSSHAIR_JOBS", str(os.cpu_count() or 2)))


def targets(module: Path) -> list[str]:
    name = f"multimail_core.{module.stem}"
    loaded = importlib.import_module(name)
    return [
        f"{name}.{attr}"
        for attr, value in vars(loaded).items()
        if inspect.isfunction(value) and value.__module__ == name and not attr.startswith("_")
    ]


def check(module: Path) -> tuple[str, int, str, float]:
    start = time.monotonic()
    functions = targets(module)
    if not functions:
        return module.name, 0, "", 0.0
    run = subprocess.run(
        [
            sys.executable, "-m", "crosshair", "check", "--analysis_kind=icontract",
            f"--per_condition_timeout={TIMEOUT}",
            f"--max_uninteresting_iterations={ITERATIONS}",
            *functions,
        ],
        cwd=ROOT, capture_output=True, text=True, check=False,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )  # fmt: skip
    return module.name, run.returncode, (run.stdout + run.stderr).strip(), time.monotonic() - start


def main() -> int:
    sys.path.insert(0, str(ROOT))
    modules = sorted(p for p in CORE.glob("*.py") if p.name != "__init__.py")
    print(
        f"CrossHair over {len(modules)} core modules ({TIMEOUT}s per condition, "
        f"{ITERATIONS} uninteresting iterations, {JOBS} jobs)",
        flush=True,
    )
    start = time.monotonic()
    failed = 0
    with ThreadPoolExecutor(max_workers=JOBS) as pool:
        for name, code, output, seconds in pool.map(check, modules):
            ok = code == 0 and not output
            failed += not ok
            print(f"  {'ok  ' if ok else 'FAIL'} {name:<20} {seconds:6.1f}s", flush=True)
            if output:
                print("    " + output.replace("\n", "\n    "), flush=True)
    print(f"CrossHair took {time.monotonic() - start:.0f}s; {failed} module(s) with findings")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
