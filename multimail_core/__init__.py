"""MultiMail's pure core: state machines, oversight and authorization tables, reputation math.

No IO, no clock, no randomness: time, ids, keys and DNS answers come in as arguments.
Its only runtime dependency is icontract.
"""

__version__ = "0.1.0"

# icontract creates its per-context "contracts being checked" set on the first check. Made
# here, at import, it is a plain set; made inside a CrossHair analysis it would be a
# symbolic set that deepens with every nested check until CrossHair reports a RecursionError.
from multimail_core.modes import OversightMode, rank

rank(OversightMode.READ_ONLY)
