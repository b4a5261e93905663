"""Suite-wide Hypothesis profiles.

``ci`` (the default) runs the usual 100 examples with no deadline, since the contract
checks icontract adds make timings noisy; ``thorough`` runs ten times as many. Pick one
with ``HYPOTHESIS_PROFILE=thorough make test``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=False,
    print_blob=True,
)
settings.register_profile("thorough", parent=settings.get_profile("ci"), max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
