"""Drive Airloop's DAGs through Airflow in one process, on the embedded default (SQLite).

Each DAG run goes through Airflow's own task runner, logs, XCom and Asset events (``dag.test``), so what a
run does here is what the scheduler would do. Because there is no scheduler, this driver plays its part in
chaining: it runs the Asset-triggered DAGs in the order the Assets would, passing the batch or run id as a
Param (the same Params an operator fills in the UI), and consumes the Asset queue it has served so a later
scheduler does not run the same work again.

Start-up (imports, DAG parsing, DB migration) is paid once per process: after that a DAG run costs well
under a second of Airflow overhead.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from airloop.settings import airflow_env, airloop_home


@dataclass
class RunResult:
    """The outcome of one DAG run: its state, each task's state, return values and refusal messages."""

    dag_id: str
    run_id: str
    state: str
    seconds: float
    tasks: dict[str, str] = field(default_factory=dict)
    returns: dict[str, object] = field(default_factory=dict)
    refusals: dict[str, str] = field(default_factory=dict)
    skips: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.state == "success"

    def task_ok(self, task_id: str) -> bool:
        return self.tasks.get(task_id) == "success"

    def reason(self) -> str:
        if self.refusals:
            return "; ".join(f"{t}: {m}" for t, m in self.refusals.items())
        failed = [t for t, s in self.tasks.items() if s in ("failed", "upstream_failed")]
        return f"failed tasks: {', '.join(failed) or 'none'} (see the log)"


def prepare_environment() -> dict[str, str]:
    """Point Airflow at the embedded default under AIRLOOP_HOME (values already set win); returns it."""
    env = airflow_env()
    os.environ.update(env)
    plugins = str(Path(env["AIRFLOW__CORE__PLUGINS_FOLDER"]))
    if plugins not in sys.path:
        sys.path.insert(0, plugins)
    return env


def ensure_airflow_db() -> None:
    """Create or migrate Airflow's metadata DB (a no-op when it is current).

    Two first runs on a fresh home would both migrate the same SQLite file and one would fail half-way, so
    the check and the migration hold an exclusive lock file next to the DB (``airflow/migrate.lock``).
    """
    import fcntl

    from airflow.utils.db import check_migrations, upgradedb

    lock_path = Path(os.environ["AIRFLOW_HOME"]) / "migrate.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        try:
            check_migrations(timeout=0)
        except Exception:  # not created or not current: migrate
            upgradedb()


class Runner:
    """Runs DAGs in-process. Airflow's own output goes to ``log_path``; progress lines go to ``console``."""

    def __init__(self, log_path: Path | None = None, console: TextIO | None = None, quiet: bool = True):
        prepare_environment()
        home = airloop_home()
        (home / "airflow").mkdir(parents=True, exist_ok=True)
        (home / "logs").mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.log_path = log_path or home / "logs" / f"airloop-{stamp}.log"
        self.console = console or sys.stdout
        self.quiet = quiet
        self.command = "run"  # names the driver in each run's note ("airloop run", "airloop demo")
        self._saved_fds: tuple[int, int] | None = None
        with self._captured():
            from airflow.dag_processing.dagbag import DagBag

            ensure_airflow_db()
            self.dagbag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
        if self.dagbag.import_errors:
            errors = "\n".join(f"{k}: {v}" for k, v in self.dagbag.import_errors.items())
            raise RuntimeError(f"DAG files failed to import:\n{errors}")

    def say(self, text: str) -> None:
        print(text, file=self.console, flush=True)

    def _captured(self):
        """Send fd 1 and 2 (Airflow's structured logs) to the log file while a block runs."""
        runner = self

        class _Capture:
            def __enter__(self):
                if not runner.quiet:
                    return self
                sys.stdout.flush()
                sys.stderr.flush()
                runner._saved_fds = (os.dup(1), os.dup(2))
                self.fh = open(runner.log_path, "a")  # noqa: SIM115 - closed in __exit__
                os.dup2(self.fh.fileno(), 1)
                os.dup2(self.fh.fileno(), 2)
                return self

            def __exit__(self, *exc):
                if not runner.quiet:
                    return False
                sys.stdout.flush()
                sys.stderr.flush()
                out, err = runner._saved_fds
                os.dup2(out, 1)
                os.dup2(err, 2)
                os.close(out)
                os.close(err)
                self.fh.close()
                return False

        return _Capture()

    def dag_ids(self) -> list[str]:
        return sorted(self.dagbag.dag_ids)

    def run(
        self, dag_id: str, conf: dict | None = None, logical_date: dt.datetime | None = None, note: str = ""
    ) -> RunResult:
        """One DAG run through Airflow's task runner; returns its RunResult (never raises on task failure).
        ``note`` becomes the run's note in the UI (the batch it worked on, say)."""
        if dag_id not in self.dagbag.dags:
            raise KeyError(f"no DAG {dag_id!r}; known: {', '.join(self.dag_ids())}")
        dag = self.dagbag.dags[dag_id]
        started = time.monotonic()
        with self._captured():
            dagrun = dag.test(logical_date=logical_date or dt.datetime.now(dt.UTC), run_conf=conf or {})
            self._record_as_scheduled(dag_id, dagrun.run_id, note)
            result = self._collect(dag_id, dagrun.run_id, str(dagrun.state))
        result.seconds = round(time.monotonic() - started, 2)
        return result

    def _record_as_scheduled(self, dag_id: str, run_id: str, note: str) -> None:
        """Make the run this driver just made look like the scheduler's: the note names its batch, and a run
        of an Asset-scheduled DAG consumes the Asset events it served (the ones the scheduler would have
        given it). The scheduler floors its next event window at the last Asset-triggered run, so a later
        run started by the scheduler, the UI or the REST API sees only newer events, never this backlog."""
        from airflow.models.asset import AssetEvent, DagScheduleAssetReference
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session
        from airflow.utils.types import DagRunType
        from sqlalchemy import func, select

        with create_session() as session:
            run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
            if run is None:
                return
            if note:
                run.note = note
            assets = select(DagScheduleAssetReference.asset_id).where(DagScheduleAssetReference.dag_id == dag_id)
            if not session.scalar(select(func.count()).select_from(assets.subquery())):
                return  # a scheduled or manual DAG: nothing to consume
            floor = session.scalar(
                select(func.max(DagRun.run_after)).where(
                    DagRun.dag_id == dag_id, DagRun.run_type == DagRunType.ASSET_TRIGGERED, DagRun.id != run.id
                )
            )
            events = select(AssetEvent).where(AssetEvent.asset_id.in_(assets), AssetEvent.timestamp <= run.run_after)
            if floor is not None:
                events = events.where(AssetEvent.timestamp > floor)
            run.consumed_asset_events.extend(session.scalars(events).all())
            run.run_type = DagRunType.ASSET_TRIGGERED

    def _collect(self, dag_id: str, run_id: str, state: str) -> RunResult:
        from airflow.models.asset import AssetDagRunQueue
        from airflow.models.taskinstance import TaskInstance
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session
        from sqlalchemy import delete, select

        result = RunResult(dag_id=dag_id, run_id=run_id, state=state.split(".")[-1].lower(), seconds=0.0)
        with create_session() as session:
            tis = session.scalars(
                select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
            ).all()
            for ti in tis:
                key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
                result.tasks[key] = str(ti.state).split(".")[-1].lower()
            for xcom in session.scalars(
                select(XComModel).where(XComModel.dag_id == dag_id, XComModel.run_id == run_id)
            ).all():
                value = XComModel.deserialize_value(xcom)
                if xcom.key == "return_value" and xcom.map_index < 0:
                    result.returns[xcom.task_id] = value
                elif xcom.key == "airloop_refusal":
                    result.refusals[xcom.task_id] = value
                elif xcom.key == "airloop_skip":
                    result.skips[xcom.task_id] = value
            # This driver plays the scheduler: the Asset queue it serves is consumed here.
            session.execute(delete(AssetDagRunQueue).where(AssetDagRunQueue.target_dag_id.like("airloop_%")))
        return result
