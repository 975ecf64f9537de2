"""airloop.orchestration.sqlite_clock: on SQLite, func.now() compares to the millisecond with the microsecond
text Airflow stores, so a DAG run whose run_after is a fraction of a second in the past is startable now, not
at the next whole second; other dialects keep their own now()."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from airloop.orchestration import sqlite_clock


def test_now_on_sqlite_has_milliseconds_and_other_dialects_are_untouched():
    query = sa.select(sa.func.now())
    assert sqlite_clock.SQLITE_NOW in str(query.compile(dialect=sa.create_engine("sqlite://").dialect))
    assert "strftime" not in str(query.compile(dialect=postgresql.dialect()))


def test_a_run_after_a_moment_ago_is_due_now_as_the_scheduler_asks():
    engine = sa.create_engine("sqlite://")
    runs = sa.table("dag_run", sa.column("run_id"), sa.column("run_after"))
    with engine.begin() as con:
        con.execute(sa.text("create table dag_run (run_id text, run_after text)"))
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        # Airflow's text form, microseconds included: one run 2 ms ago, one in an hour
        rows = [("past", now - dt.timedelta(milliseconds=2)), ("future", now + dt.timedelta(hours=1))]
        for run_id, when in rows:
            con.execute(runs.insert().values(run_id=run_id, run_after=when.isoformat(sep=" ")))
        due = con.execute(sa.select(runs.c.run_id).where(runs.c.run_after <= sa.func.now())).scalars().all()
        # What CURRENT_TIMESTAMP (whole seconds) answers for the same rows: the past run only after the next second
        seconds = con.execute(sa.text("select run_id from dag_run where run_after <= CURRENT_TIMESTAMP")).all()
    assert due == ["past"]
    assert len(seconds) <= 1  # "past" is there only when its second has already ended
