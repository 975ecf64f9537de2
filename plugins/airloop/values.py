"""Small conversions every stage shares."""

from __future__ import annotations

from typing import Any


def plain(value: Any) -> Any:
    """A numpy or pandas scalar as the plain Python value (JSON-able, and messages read 1, not np.int64(1));
    timestamps become ISO strings. Anything else is returned as it is."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str, bytes)):
        try:
            value = value.item()
        except (ValueError, TypeError):
            return value
    if hasattr(value, "isoformat") and not isinstance(value, str):
        return value.isoformat()
    return value
