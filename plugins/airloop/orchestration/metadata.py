"""What Airloop reads from Airflow's metadata DB for ``airloop status`` and the Airloop page: the last run of each
stage DAG of a pipeline, and the promotions waiting for a person's approval.

In: a pipeline config (and Airflow's database URL from the environment). Out: small dicts and lists of plain
values (docs/status.md). With the embedded default (a SQLite file) the DB is read directly, read-only, without
importing Airflow (seconds); otherwise through Airflow's ORM.
"""

from __future__ import annotations

from airloop.config import STAGES, PipelineConfig
from airloop.store.sqlite import read_only, sqlite_path, utc_iso


def pending_approvals(cfg: PipelineConfig) -> list[dict]:
    """Promotions waiting for a person (Airflow HITL requests of the promote DAG without a response)."""
    import os

    dag_id = cfg.dag_id("promote")
    db = sqlite_path(os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", ""))
    if db is not None:  # the embedded default: read the file, without importing Airflow (seconds)
        with read_only(db) as con:
            rows = con.execute(
                "select h.subject, h.created_at, ti.run_id, ti.task_id from hitl_detail h "
                "join task_instance ti on ti.id = h.ti_id where ti.dag_id = ? and h.responded_at is null "
                "order by h.created_at",
                (dag_id,),
            ).fetchall()
        return [
            {"dag_id": dag_id, "run_id": r[2], "task_id": r[3], "subject": r[0], "requested_at": utc_iso(r[1])}
            for r in rows
        ]
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(HITLDetail.subject, HITLDetail.created_at, TaskInstance.run_id, TaskInstance.task_id)
            .join(TaskInstance, TaskInstance.id == HITLDetail.ti_id)
            .where(TaskInstance.dag_id == dag_id, HITLDetail.responded_at.is_(None))
            .order_by(HITLDetail.created_at)
        ).all()
    return [
        {
            "dag_id": dag_id,
            "run_id": r.run_id,
            "task_id": r.task_id,
            "subject": r.subject,
            "requested_at": r.created_at.isoformat() if r.created_at else None,
        }
        for r in rows
    ]


def dag_runs(cfg: PipelineConfig) -> dict:
    """The last run of each stage DAG from Airflow's metadata DB (None where it never ran)."""
    import os

    db = sqlite_path(os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", ""))
    if db is not None:  # the embedded default: read the file, without importing Airflow (seconds)
        out: dict[str, dict | None] = {}
        with read_only(db) as con:
            for stage in STAGES:
                dag_id = cfg.dag_id(stage)
                row = con.execute(
                    "select run_id, state, start_date, end_date from dag_run where dag_id = ? order by id desc limit 1",
                    (dag_id,),
                ).fetchone()
                out[stage] = (
                    None
                    if row is None
                    else {
                        "dag_id": dag_id,
                        "run_id": row[0],
                        "state": str(row[1]).split(".")[-1].lower(),
                        "start": utc_iso(row[2]),
                        "end": utc_iso(row[3]),
                    }
                )
        return out
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    out: dict[str, dict | None] = {}
    with create_session() as session:
        for stage in STAGES:
            dag_id = cfg.dag_id(stage)
            run = session.scalars(
                select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()).limit(1)
            ).first()
            out[stage] = (
                None
                if run is None
                else {
                    "dag_id": dag_id,
                    "run_id": run.run_id,
                    "state": str(run.state).split(".")[-1].lower(),
                    "start": run.start_date.isoformat() if run.start_date else None,
                    "end": run.end_date.isoformat() if run.end_date else None,
                }
            )
    return out
