"""Number helpers shared by the layers above (imports nothing heavy)."""

from __future__ import annotations

import math
from typing import Any


def json_number(x: Any) -> float | None:
    """A finite float, or None where ``x`` is not one (JSON has no NaN or infinity)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None
