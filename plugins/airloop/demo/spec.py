"""What the demo simulates, without numpy or pandas: the ``airloop`` command builds its parser from these
defaults, and every command pays for what this module imports."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class SimulationSpec:
    """What to generate: ``days`` daily batches after a history, drift from day ``drift_day`` (1-based)."""

    start: dt.date = dt.date(2026, 1, 1)
    history_rows: int = 4000
    daily_rows: int = 1200
    days: int = 10
    drift_day: int = 5
    label_delay_days: int = 1
    seed: int = 7
