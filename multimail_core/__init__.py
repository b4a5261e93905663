"""MultiMail's pure core: state machines, oversight and authorization tables, reputation math.

No IO, no clock, no randomness: time, ids, keys and DNS answers come in as arguments.
Its only runtime dependency is icontract.
"""

__version__ = "0.1.0"
