"""How every table shows a row's values: one missing-value rule for the console, HTML, Markdown and sensitivity."""
from __future__ import annotations

import math
from typing import Any

MISSING = "—"  # a value that was not measured or could not be computed
NA = "n/a"  # a phase that does not exist on this device (host→device on a CPU)


def is_number(value: Any) -> bool:
    """A finite int or float (JSON ``NaN``/``Infinity`` and booleans are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fmt(value: Any, spec: str = "{}", suffix: str = "", scale: float = 1.0) -> str:
    """``value`` (times ``scale``) formatted with ``spec`` (``"{:.3f}"``) and ``suffix``.

    Null, "" and a non-finite number are :data:`MISSING`; text (such as :data:`NA`) is shown as it is; a
    value ``spec`` cannot format is shown as text.
    """
    if value is None or value == "" or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    if isinstance(value, str):
        return value
    try:
        return spec.format(value * scale if scale != 1.0 and is_number(value) else value) + suffix
    except (ValueError, TypeError):
        return str(value)
