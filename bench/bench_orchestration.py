"""Orchestration benchmark: the lifecycle through Airflow's real scheduler against the same stage calls in one
Python process, side by side in one run, then the same lifecycle on the integration topology's CeleryExecutor,
and `airloop status` on the resulting state.

The lifecycle on one batch of 100,000 rows (regression, one fast candidate, so the figures measure
orchestration rather than model fitting): ingest -> validate -> (score, skipped: no champion yet) -> train
(prepare, one candidate, select_best) -> evaluate (evaluate, publish_challenger) -> promote.

- in-process: each stage function called in turn, in a fresh Python process, on its own AIRLOOP_HOME, after the
  same imports the executor's workers make before their first task (airloop.orchestration.preload);
- scheduler: `airloop.orchestration.stack` (scheduler, dag-processor, triggerer, the two api-servers, the
  preloading LocalExecutor) on another AIRLOOP_HOME; one ingest run is triggered through the REST API and the
  rest is chained by Assets, as in production;
- the two alternate, --repeats times (3), each lifecycle on a fresh home: a shared machine's slow spells hit
  both sides, and the medians are reported (one lifecycle of either side varied by 20-25% on the same machine);
- Celery (skipped with --no-celery): tests/integration/topology.py, the production topology as local processes
  (CeleryExecutor on the machine's Redis, PostgreSQL, an MLflow server, source and lake on SeaweedFS S3).

Per task, overhead = (task end - task queued) under the scheduler - the same call's in-process time.
Targets: p50 overhead <= 2 s per task, whole lifecycle <= 1.3x the in-process path; `airloop status` < 1 s.

Writes bench/results/orchestration.json and orchestration.md. Run: .venv/bin/python bench/bench_orchestration.py
[--rows N] [--repeats N] [--no-celery]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(REPO / "plugins"))

PIPELINE = """name: bench
source: {{uri: "{uri}/houses_*.csv"}}
target: price
task: regression
training:
  n_iter: 1
  cv_folds: 2
  candidates:
    - name: ridge
      estimator: sklearn.linear_model.Ridge
      search_space: {{alpha: [1.0]}}
"""


def write_data(folder: Path, rows: int, day: str) -> None:
    rng = np.random.default_rng(0)
    sqft = rng.normal(1500, 400, rows).clip(300)
    city = rng.choice(["lyon", "lille", "nantes", "brest"], rows)
    rooms = rng.integers(1, 7, rows)
    price = 50 * sqft + 8_000 * rooms + np.where(city == "lyon", 40_000, 0) + rng.normal(0, 10_000, rows)
    frame = pd.DataFrame({"sqft": sqft.round(), "rooms": rooms, "city": city, "price": price.round()})
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / f"houses_{day}.csv", index=False)


def point_at(home: Path, pipelines: Path) -> None:
    for k in [k for k in os.environ if k.startswith(("AIRFLOW", "MLFLOW", "AIRLOOP"))]:
        del os.environ[k]
    os.environ.update({"AIRLOOP_HOME": str(home), "AIRLOOP_PIPELINES_DIR": str(pipelines)})


def in_process(home: Path, pipelines: Path, day: str) -> dict[str, float]:
    """Seconds per task id, the same calls the DAG tasks make."""
    point_at(home, pipelines)
    from airloop.config import get_pipeline
    from airloop.data import ingest, validate
    from airloop.errors import NothingToDo
    from airloop.model import evaluate, plan, promotion, train
    from airloop.model.candidates import candidate_names
    from airloop.orchestration.preload import preload
    from airloop.serving import score
    from airloop.store.lake import Lake

    # The scheduler's workers import these before their first task; so does this path, before its first timing.
    preload()
    cfg, lake, out = get_pipeline("bench"), Lake("bench"), {}

    def timed(task_id, fn, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        except NothingToDo:
            return None
        finally:
            out[task_id] = time.perf_counter() - t0

    timed("ingest.ingest", ingest.ingest_batch, cfg, day)
    timed("validate.validate", validate.validate_batch, cfg, day)
    timed("score.score", score.score_batch, cfg, day)  # skipped: no champion yet, as under the scheduler
    split = timed("train.prepare", plan.prepare_initial, cfg, lake, day)
    names = candidate_names(cfg)  # named at DAG parse time, not a task
    results = [timed(f"train.train_candidate[{i}]", train.train_candidate, cfg, n, split) for i, n in enumerate(names)]
    best = timed("train.select_best", plan.finish_training, cfg, lake, split, results)
    verdict = timed(
        "evaluate.evaluate", lambda: evaluate.evaluate_challenger(cfg, evaluate.candidate_from_run(cfg, best["run_id"]))
    )
    version = timed("evaluate.publish_challenger", evaluate.require_blessed, verdict)
    timed("promote.promote", promotion.promote_challenger, cfg, str(version))
    return out


def through_scheduler(home: Path, pipelines: Path, day: str) -> tuple[dict[str, dict], float, str]:
    """Per task id: {"queued_to_end", "duration"}; the whole lifecycle's seconds; the UI URL."""
    point_at(home, pipelines)
    from airloop.demo.scheduled import _airflow_db
    from airloop.orchestration import stack
    from airloop.orchestration.rest import AirflowClient

    running = stack.start()
    try:
        client = AirflowClient(running.url, stack.ADMIN_USER, stack.admin_password())
        db = _airflow_db(running.env)
        for stage in ("ingest", "validate", "train", "evaluate", "promote", "score"):
            client.wait_dag(f"airloop_bench_{stage}")
        _settle(client, db)  # the scheduled runs of the latest interval (no data for it: skipped)
        seen = {(r["dag_id"], r["dag_run_id"]) for r in client.recent_runs(100)}
        t0 = time.time()
        client.trigger("airloop_bench_ingest", {"batch_id": day})
        _settle(client, db, timeout_s=3600)
        tasks, whole = _task_times(client, seen, t0)
        return tasks, whole, running.url
    finally:
        running.stop()


def _task_times(client, seen: set, t0: float) -> tuple[dict[str, dict], float]:
    """Per task id of the runs not in ``seen``: {"queued_to_end", "duration"}; seconds from ``t0`` to the last
    task's end."""
    tasks, last_end = {}, t0
    for run in client.recent_runs(100):
        if (run["dag_id"], run["dag_run_id"]) in seen:
            continue
        stage = run["dag_id"].removeprefix("airloop_bench_")
        for ti in client.task_instances(run["dag_id"], run["dag_run_id"]):
            if not ti.get("end_date") or not ti.get("queued_when"):
                continue
            end = dt.datetime.fromisoformat(ti["end_date"]).timestamp()
            queued = dt.datetime.fromisoformat(ti["queued_when"]).timestamp()
            key = f"{stage}.{ti['task_id']}" + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else "")
            tasks[key] = {"queued_to_end": end - queued, "duration": ti.get("duration") or 0.0}
            last_end = max(last_end, end)
    return tasks, last_end - t0


def through_celery(work: Path, csv: Path, day: str) -> tuple[dict[str, dict], float]:
    """The same lifecycle on the integration topology (tests/integration/topology.py: CeleryExecutor on Redis,
    PostgreSQL metadata, an MLflow server, source and lake on SeaweedFS S3), triggered through the REST API.
    Returns what :func:`through_scheduler` does, without the URL."""
    sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "integration")]
    from fixtures.services import start_seaweedfs, stop_seaweedfs
    from topology import start_topology, stop_topology

    from airloop.orchestration.rest import AirflowClient

    text = PIPELINE.format(uri="s3://BUCKET/landing") + "schedule: {ingest: null, monitor: null}\n"
    pipeline_yaml = text.replace("{", "{{").replace("}", "}}").replace("BUCKET", "{bucket}")

    def upload(top) -> str:
        top.s3.client().put_object(Bucket=top.bucket, Key=f"landing/{csv.name}", Body=csv.read_bytes())
        return day

    s3 = start_seaweedfs(work / "seaweedfs")
    top = None
    try:
        top = start_topology(work / "topology", s3, pipeline_yaml=pipeline_yaml, upload=upload)
        client = AirflowClient(top.airflow_url, "admin", top.admin_password)
        for stage in ("ingest", "validate", "train", "evaluate", "promote", "score"):
            client.wait_dag(f"airloop_bench_{stage}", timeout_s=300)
            client.set_paused(f"airloop_bench_{stage}", False)
        _settle(client, None)
        seen = {(r["dag_id"], r["dag_run_id"]) for r in client.recent_runs(100)}
        t0 = time.time()
        client.trigger("airloop_bench_ingest", {"batch_id": day})
        deadline = time.monotonic() + 3600
        while True:  # without the metadata DB's Asset queue to read, quiet may come between two DAG runs
            _settle(client, None, timeout_s=3600)
            tasks, whole = _task_times(client, seen, t0)
            if "promote.promote" in tasks or time.monotonic() > deadline:
                return tasks, whole
    finally:
        if top is not None:
            stop_topology(top)
        stop_seaweedfs(s3)


def _settle(client, db, timeout_s: float = 600) -> None:
    import sqlite3

    deadline, quiet = time.monotonic() + timeout_s, 0
    while quiet < 3:
        if time.monotonic() > deadline:
            raise TimeoutError("the scheduler did not settle")
        time.sleep(1)
        queued = 0
        if db is not None:  # PostgreSQL (Celery): three quiet readings of the runs alone
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
                queued = con.execute("select count(*) from asset_dag_run_queue").fetchone()[0]
        quiet = quiet + 1 if client.active_runs() == 0 and queued == 0 else 0


def status_seconds(home: Path, pipelines: Path, repeat: int = 3) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW", "AIRLOOP"))}
    env.update(
        {"AIRLOOP_HOME": str(home), "AIRLOOP_PIPELINES_DIR": str(pipelines), "PYTHONPATH": str(REPO / "plugins")}
    )
    walls, cpus = [], []
    for _ in range(repeat):
        t0, r0 = time.perf_counter(), os.times()
        proc = subprocess.run([sys.executable, "-m", "airloop.cli", "status", "--json"], env=env, capture_output=True)
        r1 = os.times()
        walls.append(time.perf_counter() - t0)
        cpus.append((r1.children_user - r0.children_user) + (r1.children_system - r0.children_system))
        assert proc.returncode == 0, proc.stderr[-2000:]
    return {"wall_s": round(min(walls), 3), "cpu_s": round(min(cpus), 3)}


def _percentiles(values: list[float]) -> tuple[float | None, float | None]:
    """(p50, p95) of ``values``; (None, None) when empty."""
    if not values:
        return None, None
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def in_fresh_process(side: str, home: Path, pipelines: Path, day: str):
    """:func:`in_process` (``side`` "in-process") or :func:`through_scheduler` ("scheduler", without the URL) in a
    new Python process: each repeat starts as cold as the first (and Airflow's settings, read once per process,
    point at that repeat's home)."""
    proc = subprocess.run(
        [sys.executable, __file__, "--only", side, str(home), str(pipelines), day],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _median_times(repeats: list[dict[str, float]]) -> dict[str, float]:
    """Per task id, the median of its seconds over the repeats (in the first repeat's order)."""
    return {k: statistics.median(r[k] for r in repeats if k in r) for k in repeats[0]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3, help="lifecycles per side (medians are reported)")
    parser.add_argument("--no-celery", action="store_true", help="skip the CeleryExecutor topology")
    parser.add_argument("--only", nargs=4, metavar=("SIDE", "HOME", "PIPELINES", "DAY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        side, home, pipelines, day = args.only
        if side == "in-process":
            print(json.dumps(in_process(Path(home), Path(pipelines), day)))
        else:
            tasks, whole, _ = through_scheduler(Path(home), Path(pipelines), day)
            print(json.dumps([tasks, whole]))
        return 0
    day = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)).isoformat()
    work = Path(tempfile.mkdtemp(prefix="airloop-bench-orch-"))
    write_data(work / "data", args.rows, day)
    pipelines = work / "pipelines"
    pipelines.mkdir()
    (pipelines / "bench.yaml").write_text(PIPELINE.format(uri=(work / "data").as_uri()))
    # The two sides alternate, each lifecycle on a fresh home (and the in-process one in a fresh process), so
    # that a slow spell of a shared machine hits both; the medians are reported.
    sched_runs, sched_wholes, local_runs = [], [], []
    for i in range(args.repeats):
        tasks, whole = in_fresh_process("scheduler", work / f"scheduler-{i}", pipelines, day)
        sched_runs.append({k: v["queued_to_end"] for k, v in tasks.items()})
        sched_wholes.append(whole)
        local_runs.append(in_fresh_process("in-process", work / f"in_process-{i}", pipelines, day))
    sched = {k: {"queued_to_end": v} for k, v in _median_times(sched_runs).items()}
    whole_sched = statistics.median(sched_wholes)
    local_wholes = [sum(r.values()) for r in local_runs]
    whole_local = statistics.median(local_wholes)
    local = _median_times(local_runs)
    csv = next((work / "data").glob("*.csv"))
    celery, whole_celery = ({}, None) if args.no_celery else through_celery(work, csv, day)
    rows, overheads, celery_overheads = [], [], []
    for task_id, seconds in local.items():
        s, c = sched.get(task_id), celery.get(task_id)
        overhead = None if s is None else s["queued_to_end"] - seconds
        c_overhead = None if c is None else c["queued_to_end"] - seconds
        if overhead is not None:
            overheads.append(overhead)
        if c_overhead is not None:
            celery_overheads.append(c_overhead)
        rows.append((task_id, seconds, s and s["queued_to_end"], overhead, c and c["queued_to_end"], c_overhead))
    p50, p95 = _percentiles(overheads)
    c_p50, c_p95 = _percentiles(celery_overheads)
    status = status_seconds(work / "scheduler-0", pipelines)
    result = {
        "rows": args.rows,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_1m": os.getloadavg()[0]},
        "tasks": [
            {
                "task": t,
                "in_process_s": round(a, 3),
                "scheduler_s": _r(b),
                "overhead_s": _r(c),
                "celery_s": _r(d),
                "celery_overhead_s": _r(e),
            }
            for t, a, b, c, d, e in rows
        ],
        "overhead_p50_s": _r(p50),
        "overhead_p95_s": _r(p95),
        "celery_overhead_p50_s": _r(c_p50),
        "celery_overhead_p95_s": _r(c_p95),
        "repeats": args.repeats,
        "whole_in_process_s": round(whole_local, 2),
        "whole_scheduler_s": round(whole_sched, 2),
        "whole_in_process_each_s": [round(w, 2) for w in local_wholes],
        "whole_scheduler_each_s": [round(w, 2) for w in sched_wholes],
        "whole_celery_s": _r(whole_celery),
        "ratio": round(whole_sched / whole_local, 2),
        "celery_ratio": None if whole_celery is None else round(whole_celery / whole_local, 2),
        "status": status,
        "targets": {"overhead_p50_s": 2.0, "ratio": 1.3, "status_wall_s": 1.0},
    }
    met = {
        "overhead_p50_s": p50 is not None and p50 <= 2.0,
        "ratio": whole_sched / whole_local <= 1.3,
        "status_wall_s": status["wall_s"] < 1.0,
    }
    result["met"] = met
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "orchestration.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# Orchestration: {args.rows:,} rows, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}",
        "",
        "LocalExecutor: the embedded default (SQLite, file lake). Celery: the integration topology (CeleryExecutor"
        " on Redis, PostgreSQL, an MLflow server, source and lake on SeaweedFS S3), so its overhead includes S3 and"
        " MLflow-server round trips. Overhead = queued-to-end under Airflow - the same call in one process."
        f" LocalExecutor and in-process: medians of {args.repeats} alternating lifecycles, each on a fresh home"
        " (in-process: in a fresh process); Celery: one lifecycle.",
        "",
        "| task | in-process s | LocalExecutor (queued to end) s | overhead s | Celery (queued to end) s "
        "| overhead s |",
        "|---|---:|---:|---:|---:|---:|",
        *[f"| {t} | {a:.2f} | {_f(b)} | {_f(c)} | {_f(d)} | {_f(e)} |" for t, a, b, c, d, e in rows],
        "",
        f"overhead per task, LocalExecutor: p50 {_f(p50)} s (target <= 2 s: {_met(met['overhead_p50_s'])}), "
        f"p95 {_f(p95)} s",
        f"overhead per task, Celery: p50 {_f(c_p50)} s (target <= 2 s), p95 {_f(c_p95)} s",
        f"whole lifecycle: LocalExecutor {whole_sched:.1f} s vs in-process {whole_local:.1f} s = "
        f"{whole_sched / whole_local:.2f}x (target <= 1.3x: {_met(met['ratio'])}); each: LocalExecutor "
        f"{', '.join(f'{w:.1f}' for w in sched_wholes)} s, in-process {', '.join(f'{w:.1f}' for w in local_wholes)} s",
        f"whole lifecycle: Celery {_f(whole_celery, 1)} s = "
        f"{'-' if whole_celery is None else f'{whole_celery / whole_local:.2f}'}x",
        f"airloop status: {status['wall_s']:.2f} s wall, {status['cpu_s']:.2f} s CPU (target < 1 s: "
        f"{_met(met['status_wall_s'])})",
    ]
    (RESULTS / "orchestration.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(met.values()) else 1


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


if __name__ == "__main__":
    sys.exit(main())
