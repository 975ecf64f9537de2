"""Read-only access to the embedded default's SQLite stores (MLflow's and Airflow's metadata files), for readers
that must answer in well under a second without importing MLflow or Airflow (``airloop status``, the Airloop page).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL when it exists (the embedded default), else None."""
    if not url.startswith("sqlite:///"):
        return None
    path = Path(url.removeprefix("sqlite:///"))
    return path if path.exists() else None


def read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to the SQLite file ``path`` (waits up to 30 s for a writer)."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


def utc_iso(value: str | None) -> str | None:
    """A timestamp column of SQLite (naive UTC text) as the ISO text the ORM path gives; None stays None."""
    if not value:
        return None
    return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC).isoformat()
