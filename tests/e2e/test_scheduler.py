"""After `make demo`, with Airflow started as the README says (`make ui`): the demo's runs are ordinary
scheduler runs (task logs through the REST API), a re-ingested day is re-processed alone, and SIGTERM stops
every component.

Order matters: the last test stops the shared `airloop ui` (the demo_ui fixture, tests/conftest.py).
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow


def sha256s(home: Path) -> dict[str, str]:
    root = home / "lake" / "churn" / "predictions"
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.parquet"))
    }


def settle(client, timeout_s: float = 600) -> None:
    deadline, quiet = time.monotonic() + timeout_s, 0
    while quiet < 3:
        assert time.monotonic() < deadline, "runs still active"
        time.sleep(2)
        quiet = quiet + 1 if client.active_runs() == 0 else 0


def test_a_demo_validate_run_is_a_scheduler_run_with_its_task_log_through_the_rest_api(demo_ui):
    client = demo_ui.client()
    # The demo's validate runs (the browser tests, run earlier on the same state, add manual ones).
    runs = [r for r in client.runs("airloop_churn_validate") if (r.get("note") or "").startswith("batch ")]
    assert len(runs) >= 5, [(r["run_type"], r.get("note")) for r in client.runs("airloop_churn_validate")]
    assert {r["run_type"] for r in runs} == {"asset_triggered"}, runs
    run = runs[0]
    assert run["state"] == "success", run
    text = client.task_log("airloop_churn_validate", run["dag_run_id"], "validate")
    assert "Airloop summary: validate" in text, text[-2000:]
    events = client.upstream_events("airloop_churn_validate", run["dag_run_id"])
    assert len(events) == 1 and (events[0].get("extra") or {}).get("batch_ids"), events


def test_a_demo_score_task_log_is_short_enough_to_read(demo_ui):
    """A person opens a score task's log: the summary is there, not buried under import-time warnings (skops
    listing scipy's ufuncs used to warn once per deprecated Airflow module: 1,160 lines, seconds per task)."""
    client = demo_ui.client()
    runs = [r for r in client.runs("airloop_churn_score") if r["state"] == "success"]
    tis = [ti for r in runs for ti in client.task_instances("airloop_churn_score", r["dag_run_id"])]
    scored = [ti for ti in tis if ti["task_id"] == "score" and ti["state"] == "success"]
    assert scored, [(ti["dag_run_id"], ti["state"]) for ti in tis]
    text = client.task_log("airloop_churn_score", scored[-1]["dag_run_id"], "score")
    assert "Airloop summary: score_batch" in text, text[-2000:]
    warnings = [line for line in text.splitlines() if "DeprecatedImportWarning" in line or "is deprecated" in line]
    assert len(warnings) < 20, f"{len(warnings)} deprecation lines, e.g. {warnings[:3]}"


def test_reingesting_one_day_reprocesses_that_day_only_and_keeps_every_prediction_file(demo_ui):
    client = demo_ui.client()
    before = sha256s(demo_ui.home)
    days = sorted({k.split("/")[0].removeprefix("date=") for k in before})
    assert len(days) >= 5, before
    day = days[2]
    stages = ("validate", "score", "train")
    known = {(r["dag_id"], r["dag_run_id"]) for d in stages for r in client.runs(f"airloop_churn_{d}")}
    run = client.trigger("airloop_churn_ingest", {"batch_id": day})
    assert client.wait("airloop_churn_ingest", run["dag_run_id"])["state"] == "success"
    settle(client)
    trains = [r for r in client.runs("airloop_churn_train") if (r["dag_id"], r["dag_run_id"]) not in known]
    assert trains == [], f"a champion exists, yet the train DAG started: {trains}"
    for stage in ("validate", "score"):
        new = [r for r in client.runs(f"airloop_churn_{stage}") if (r["dag_id"], r["dag_run_id"]) not in known]
        assert len(new) == 1, f"{stage}: expected one new run, found {new}"
        assert new[0]["state"] == "success", new[0]
        events = client.upstream_events(f"airloop_churn_{stage}", new[0]["dag_run_id"])
        batches = {b for e in events for b in (e.get("extra") or {}).get("batch_ids", [])}
        assert batches == {day}, f"{stage} consumed events for {batches}, expected only {day}"
        done = client.xcom(f"airloop_churn_{stage}", new[0]["dag_run_id"], stage) or []
        assert [r["batch_id"] for r in done] in ([day], []), done  # [] when skipped (already scored)
    after = sha256s(demo_ui.home)
    for key, digest in before.items():
        assert after.get(key) == digest, f"{key} was rewritten"
    assert all(k.startswith(f"date={day}/") for k in set(after) - set(before)), set(after) - set(before)


def test_sigterm_stops_every_component_within_30_s(demo_ui):
    parent = psutil.Process(demo_ui.proc.pid)
    children = parent.children(recursive=True)
    assert len(children) >= 5, [c.cmdline()[:3] for c in children]
    # scheduler, dag-processor, triggerer and two api-servers (the UI and REST API; the Execution API)
    started = time.monotonic()
    os.killpg(demo_ui.proc.pid, signal.SIGTERM)
    demo_ui.proc.wait(timeout=60)
    gone, alive = psutil.wait_procs(children, timeout=max(30 - (time.monotonic() - started), 1))
    took = time.monotonic() - started
    assert not alive, f"still running after {took:.0f} s: {[p.pid for p in alive]}"
    assert took <= 30, f"stopping took {took:.1f} s"
