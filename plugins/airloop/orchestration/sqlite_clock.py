"""``now()`` to the millisecond in Airflow's SQL on SQLite (the embedded default): importing this module makes
SQLAlchemy compile ``func.now()`` for SQLite as ``strftime('%Y-%m-%d %H:%M:%f', 'now')`` instead of
``CURRENT_TIMESTAMP``.

Why: Airflow stores times on SQLite as text with microseconds (``2026-12-06 05:23:04.520717``) and its scheduler
picks the DAG runs it may start or examine with ``DagRun.run_after <= func.now()`` (and scheduled DAGs with
``next_dagrun_create_after <= func.now()``). SQLite's ``CURRENT_TIMESTAMP`` has whole seconds
(``2026-12-06 05:23:04``), and as text ``'...04.520717' <= '...04'`` is false: every new run (an Asset-triggered
one, a trigger, a backfill's) waited for the next whole second, then for the scheduler's next loop. Measured on
the benchmark's lifecycle: each DAG run started 0.5-1.1 s after it was created, always just after a second
boundary. On PostgreSQL ``now()`` has microseconds and nothing changes.

Both formats are UTC, and the text comparison is right to the millisecond. Imported by the scheduler's process
through :mod:`airloop.orchestration.executor` (the executor the embedded default names); other components and
databases are unaffected.
"""

from __future__ import annotations

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import now

SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')"


@compiles(now, "sqlite")
def _now_with_milliseconds(element, compiler, **kw) -> str:
    return SQLITE_NOW
