"""``make demo`` through Airflow's own scheduler: the simulated days are real data intervals.

The simulated history ends yesterday. Airflow's components start under AIRLOOP_HOME (:mod:`airloop.orchestration
.stack`); each day's files arrive in the landing folder and the ingest DAG is backfilled over that day with
Airflow's own backfill; everything downstream (validate, train, score, evaluate, promote) is started by the
scheduler from Asset events, and the monitor DAG is backfilled over the same day. The console shows each run
as it finishes, the UI address and the login. The state stays for ``make ui``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import signal
import sqlite3
import time
from pathlib import Path

from airloop.config import STAGES, PipelineConfig
from airloop.demo.run import facts
from airloop.demo.simulate import SimulationSpec, simulate
from airloop.orchestration import stack as stk
from airloop.orchestration.lifecycle import Outcome, StageRefused
from airloop.orchestration.rest import AirflowClient
from airloop.settings import airloop_home


class _Progress:
    """Prints each finished Airloop DAG run once, with its batch and, when skipped, the reason."""

    def __init__(self, client: AirflowClient, say):
        self.client, self.say = client, say
        self.seen: set[tuple[str, str, str | None]] = set()
        self.failed: list[str] = []
        self.notes: list[tuple[str, str, str]] = []

    def write_notes(self) -> None:
        """Name each reported run's batch in its note, once no task runs. (On SQLite, a REST write while task
        processes heartbeat through the same api-server can stall it for the whole busy timeout.)"""
        while self.notes:
            self.client.set_note(*self.notes.pop(0))

    def poll(self) -> None:
        for run in reversed(self.client.recent_runs()):
            key = (run["dag_id"], run["dag_run_id"], run.get("start_date"))  # a re-queued run reports again
            if key in self.seen or run["state"] not in ("success", "failed"):
                continue
            self.seen.add(key)
            self.report(run)

    def report(self, run: dict) -> None:
        dag_id, run_id = run["dag_id"], run["dag_run_id"]
        stage = dag_id.split("_", 2)[-1]
        tis = self.client.task_instances(dag_id, run_id)
        seconds = sum(ti.get("duration") or 0 for ti in tis)
        skipped = [ti for ti in tis if ti["state"] == "skipped"]
        note = ""
        if skipped:
            reason = self.client.xcom(dag_id, run_id, skipped[0]["task_id"], key="airloop_skip")
            note = f" (skipped: {reason})" if reason else ""
        subject = (run.get("conf") or {}).get("batch_id") or ""
        if not subject and run.get("logical_date"):
            subject = run["data_interval_start"][:10] if run.get("data_interval_start") else ""
        if not subject:
            extras = [e.get("extra") or {} for e in self.client.upstream_events(dag_id, run_id)]
            batches = sorted({b for x in extras for b in x.get("batch_ids", [x.get("batch_id")]) if b})
            named = [f"v{x['version']}" if "version" in x else f"run {str(x.get('train_run_id'))[:8]}" for x in extras]
            subject = ",".join(batches) or ",".join(n for n in named if not n.endswith("None"))
        if subject and not run.get("note"):
            # Scheduled and backfill run ids carry the interval's end; the note names the batch itself.
            self.notes.append((dag_id, run_id, f"batch {subject}" if subject[:1].isdigit() else subject))
        mark = "ok" if run["state"] == "success" else "FAILED"
        if run["state"] == "failed":
            refusal = next(
                (
                    r
                    for ti in tis
                    if ti["state"] == "failed"
                    and (r := self.client.xcom(dag_id, run_id, ti["task_id"], key="airloop_refusal"))
                ),
                "see the task log",
            )
            self.failed.append(f"{dag_id} {run_id}: {refusal}")
        self.say(f"  {mark:6} {stage:9} {subject[:24]:24} {seconds:6.1f} s in tasks{note}")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _airflow_db(env: dict[str, str]) -> Path | None:
    url = env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "")
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def wait_idle(client: AirflowClient, progress: _Progress, db: Path | None, timeout_s: float = 900) -> None:
    """Until no Asset event waits for a run and then no run is queued or running.

    The queue is read first: a run the scheduler creates afterwards comes from an event that a still-active run
    emitted, so one quiet reading in that order is final. Without the metadata DB to read (not SQLite), two
    quiet readings in a row are required instead."""
    deadline, quiet = time.monotonic() + timeout_s, 0
    while quiet < (1 if db is not None else 2):
        if time.monotonic() > deadline:
            raise StageRefused(f"the loop did not settle within {timeout_s:.0f} s (see the Airflow UI)")
        time.sleep(1.0)  # every poll is REST reads on the api-server that the running tasks report through
        progress.poll()
        queued = 0
        if db is not None:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as con:
                queued = con.execute("select count(*) from asset_dag_run_queue").fetchone()[0]
        quiet = quiet + 1 if queued == 0 and client.active_runs() == 0 else 0
    progress.poll()
    progress.write_notes()


def _deliver(incoming: Path, landing: Path, pattern: str) -> None:
    landing.mkdir(parents=True, exist_ok=True)
    for f in incoming.glob(pattern):
        shutil.copy2(f, landing / f.name)


def _outcomes(client: AirflowClient, cfg: PipelineConfig) -> list[tuple[dict, dict | None]]:
    """(gate verdict, promotion record or None) of every evaluate run, oldest first."""
    promoted = {}
    for run in client.runs(cfg.dag_id("promote")):
        record = client.xcom(cfg.dag_id("promote"), run["dag_run_id"], "promote")
        if record:
            promoted[str(record.get("version"))] = record
    out = []
    for run in client.runs(cfg.dag_id("evaluate")):
        verdict = client.xcom(cfg.dag_id("evaluate"), run["dag_run_id"], "evaluate")
        if verdict:
            out.append((verdict, promoted.get(str(verdict.get("version")))))
    return out


def run_demo_scheduled(cfg: PipelineConfig, spec: SimulationSpec | None = None, say=print) -> dict:
    """Simulate ``spec.days`` days ending yesterday, run them through the scheduler; returns the facts for
    :func:`airloop.demo.run.summary` and leaves Airflow stopped, its state kept."""
    from airloop.model.plan import retrain_log
    from airloop.store import lake as lk
    from airloop.store.lake import Lake

    spec = spec or SimulationSpec()
    today = dt.datetime.now(dt.UTC).date()
    spec = dataclasses.replace(spec, start=today - dt.timedelta(days=spec.days))
    started = time.monotonic()
    root = airloop_home() / "demo" / cfg.name
    incoming = root / "incoming"
    written = simulate(incoming, spec)
    say(
        f"Simulated {spec.days} days of {cfg.name} data ending yesterday ({written['days'][-1]}); drift starts "
        f"{written['drift_starts']}."
    )
    say("Starting Airflow (scheduler, dag-processor, triggerer, api-server) ...")
    # SIGTERM ends the demo like Ctrl-C does, so the `finally` below stops every Airflow component.
    signal.signal(signal.SIGTERM, _interrupt)
    running = stk.start()
    try:
        say(f"Airflow UI: {running.url}  (login: {stk.ADMIN_USER} / {stk.admin_password()}): watch the runs there.")
        client = AirflowClient(running.url, stk.ADMIN_USER, stk.admin_password())
        db = _airflow_db(running.env)
        progress = _Progress(client, say)
        for stage in STAGES:
            client.wait_dag(cfg.dag_id(stage))  # parsed by the dag-processor (a fresh home takes a moment)
        wait_idle(client, progress, db)  # the scheduler's own runs for the latest interval (no data yet: skipped)
        progress.seen |= {(r["dag_id"], r["dag_run_id"], r.get("start_date")) for r in client.recent_runs()}
        days = [written["history_day"], *written["days"]]
        for i, day in enumerate(days):
            say(
                f"Day {day}: "
                + (
                    "history -> ingest, validate, train, evaluate, promote"
                    if i == 0
                    else "ingest, validate, score; monitor"
                )
            )
            _deliver(incoming / "landing", root / "landing", f"*_{day}.csv")
            _deliver(incoming / "labels", root / "labels", f"*_{day}.csv")
            client.wait_backfill(client.backfill(cfg.dag_id("ingest"), day), day)
            wait_idle(client, progress, db)
            if i == 0:
                if not _outcomes(client, cfg) or not _outcomes(client, cfg)[0][1]:
                    raise StageRefused("the first model was not promoted (see the evaluate run in the Airflow UI)")
                continue
            client.wait_backfill(client.backfill(cfg.dag_id("monitor"), day), day)
            wait_idle(client, progress, db)
        if progress.failed:
            raise StageRefused("runs failed:\n  " + "\n  ".join(progress.failed))
        outcomes = _outcomes(client, cfg)
    finally:
        say("Stopping Airflow (the state stays for `make ui`) ...")
        running.stop()
    lake = Lake(cfg.name)
    verdict0, promoted0 = outcomes[0]
    first = Outcome(kind="train", batch_id=written["history_day"], verdict=verdict0, promoted=promoted0)
    verdicts = []
    for day in written["days"]:
        uri = lk.join(lake.partition("monitoring", day), "verdict.json")
        if lk.exists(uri):
            verdicts.append(lk.read_json(uri))
    by_run = {v.get("run_id"): (v, p) for v, p in outcomes[1:]}
    retrains = []
    for entry in retrain_log(lake):
        verdict, promoted = by_run.get(entry.get("train_run_id"), ({}, None))
        retrains.append(
            Outcome(
                kind="retrain",
                batch_id=entry["batch_id"],
                verdict=verdict,
                promoted=promoted,
                skipped=None if verdict else "no gate verdict (see the retrain run)",
            )
        )
    return facts(first, verdicts, retrains, written, started, ui=running.url)
