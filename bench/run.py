"""``make bench``: run every benchmark in bench/ (each prints a table and writes JSON)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHES = ["api.py", "smtp.py", "webhooks.py", "mcp_calls.py"]

if __name__ == "__main__":
    here = Path(__file__).parent
    status = 0
    for name in BENCHES:
        print(f"== {name}", flush=True)
        status |= subprocess.call([sys.executable, str(here / name)], cwd=here.parent)
    raise SystemExit(status)
