"""A small client of Airflow's public REST API (``/api/v2``), as the UI uses it: trigger a DAG run, wait for it,
read its task instances and task logs. Standard library only; used by tests, benchmarks and drivers that go
through a running scheduler (:mod:`airloop.orchestration.stack`).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

FINISHED = {"success", "failed"}
DB_ERROR_RETRIES = 4
WAIT_POLL_S = 1.0  # how often a wait for a run reads its state (one GET to the api-server, which tasks need too)


class AirflowAPIError(RuntimeError):
    """An Airflow REST call failed; the message names the method, path, status and body."""


def _sqlite_writer_busy(status: int, detail: bytes) -> bool:
    """Whether an answer is SQLite's single writer being busy, which the same request survives once the other
    writer is done: a write that waited out the busy timeout answers 500 "Database error"; a backfill whose
    transaction met another writer answers 503 "Database is locked" (SQLite refuses a lock upgrade at once,
    without waiting, when two transactions would otherwise deadlock)."""
    return (status == 500 and b"Database error" in detail) or (status == 503 and b"Database is locked" in detail)


class AirflowClient:
    def __init__(self, url: str, username: str, password: str):
        self.url = url.rstrip("/")
        self._credentials = {"username": username, "password": password}
        self._token: str | None = None

    def _call(self, method: str, path: str, body: Any = None, raw: bool = False) -> Any:
        if self._token is None and not path.startswith("/auth/"):
            self._token = self._call("POST", "/auth/token", self._credentials)["access_token"]
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        req.add_header("Accept", "application/json")
        if self._token:
            req.add_header("Authorization", f"Bearer {self._token}")
        for attempt in range(DB_ERROR_RETRIES + 1):
            try:
                with urllib.request.urlopen(req, timeout=60) as resp:
                    payload = resp.read()
                break
            except urllib.error.HTTPError as err:
                detail = err.read()[:500]
                if _sqlite_writer_busy(err.code, detail) and attempt < DB_ERROR_RETRIES:
                    time.sleep(1.0 + attempt)
                    continue
                raise AirflowAPIError(f"{method} {path}: HTTP {err.code}: {detail!r}") from None
        if raw:
            return payload.decode(errors="replace")
        return json.loads(payload) if payload else None

    def trigger(self, dag_id: str, conf: dict | None = None, note: str | None = None, **fields) -> dict:
        """POST a DAG run (``logical_date`` null unless given, as the UI's default); returns the run."""
        body = {"conf": conf or {}, "logical_date": fields.pop("logical_date", None), **fields}
        if note:
            body["note"] = note
        return self._call("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)

    def run(self, dag_id: str, run_id: str) -> dict:
        return self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")

    def runs(self, dag_id: str) -> list[dict]:
        return self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100&order_by=id")["dag_runs"]

    def wait(self, dag_id: str, run_id: str, timeout_s: float = 600) -> dict:
        """Poll until the run finishes; returns it. Raises TimeoutError with its state otherwise."""
        deadline = time.monotonic() + timeout_s
        while True:
            run = self.run(dag_id, run_id)
            if run["state"] in FINISHED:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dag_id} run {run_id} still {run['state']} after {timeout_s:.0f} s")
            time.sleep(WAIT_POLL_S)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        rid = urllib.parse.quote(run_id, safe="")
        return self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{rid}/taskInstances")["task_instances"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1) -> str:
        """The task's log as text (``GET .../logs/{try_number}``), as the UI's log view shows it."""
        rid = urllib.parse.quote(run_id, safe="")
        path = f"/api/v2/dags/{dag_id}/dagRuns/{rid}/taskInstances/{task_id}/logs/{try_number}?map_index={map_index}"
        doc = self._call("GET", path)
        content = doc.get("content", "")
        if isinstance(content, list):
            return "\n".join(c.get("event", "") if isinstance(c, dict) else str(c) for c in content)
        return str(content)

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self._call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": paused})

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        """A task's XCom value as JSON (None when there is none)."""
        rid = urllib.parse.quote(run_id, safe="")
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{rid}/taskInstances/{task_id}/xcomEntries/{key}"
            f"?map_index={map_index}&deserialize=true&stringify=false"
        )
        try:
            return self._call("GET", path).get("value")
        except AirflowAPIError as err:
            if "HTTP 404" in str(err):
                return None
            raise

    def backfill(self, dag_id: str, day: str, reprocess: str = "completed") -> dict:
        """Airflow's own backfill of one data interval (the run whose interval starts on ``day``)."""
        body = {
            "dag_id": dag_id,
            "from_date": f"{day}T00:00:00Z",
            "to_date": f"{day}T00:00:00Z",
            "max_active_runs": 1,
            "reprocess_behavior": reprocess,
        }
        deadline = time.monotonic() + 120
        while True:
            try:
                return self._call("POST", "/api/v2/backfills", body)
            except AirflowAPIError as err:
                # The scheduler marks the previous backfill of this DAG completed only on its 30 s timer; a
                # backfill that met SQLite's other writer longer than the retries in _call is tried again too.
                transient = "already a running backfill" in str(err) or "Database is locked" in str(err)
                if not transient or time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def backfill_run(self, dag_id: str, day: str) -> dict:
        """The run of ``dag_id`` whose data interval starts on ``day`` (what :meth:`backfill` created, or the
        earlier run it queued again)."""
        recent = self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns?order_by=-id&limit=50")["dag_runs"]
        runs = [r for r in recent if (r.get("data_interval_start") or "").startswith(day)]
        if not runs:
            raise AirflowAPIError(f"{dag_id}: no run for the data interval starting {day}")
        return runs[0]

    def wait_backfill(self, backfill: dict, day: str, timeout_s: float = 900) -> dict:
        """Poll until the backfill's run of ``day`` finishes, then close the backfill; returns that run.

        The scheduler marks a backfill whose runs have all finished completed only on a 30 s timer, and until
        then the api-server refuses the DAG's next backfill (409 "already a running backfill"): a day-by-day
        driver idled up to 30 s per day and DAG, about half the demo's time. Once its one run has finished,
        the backfill is closed through Airflow's own ``PUT /backfills/{id}/cancel``, which does what the timer
        would (``completed_at``); nothing is left to cancel, and a backfill the timer closed first is fine."""
        run = self.backfill_run(backfill["dag_id"], day)
        finished = self.wait(backfill["dag_id"], run["dag_run_id"], timeout_s=timeout_s)
        try:
            self._call("PUT", f"/api/v2/backfills/{backfill['id']}/cancel")
        except AirflowAPIError as err:
            if "HTTP 409" not in str(err):  # 409: "Backfill is already completed"
                raise
        return finished

    def wait_dag(self, dag_id: str, timeout_s: float = 300) -> dict:
        """Poll until the dag-processor has parsed ``dag_id`` (a new home or pipeline); returns the DAG."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self._call("GET", f"/api/v2/dags/{dag_id}")
            except AirflowAPIError as err:
                if "HTTP 404" not in str(err) or time.monotonic() > deadline:
                    raise
            time.sleep(1)

    def active_runs(self) -> int:
        """Queued or running DAG runs, over every DAG."""
        return self._call("GET", "/api/v2/dags/~/dagRuns?state=queued&state=running&limit=1")["total_entries"]

    def recent_runs(self, limit: int = 50) -> list[dict]:
        return self._call("GET", f"/api/v2/dags/~/dagRuns?order_by=-id&limit={limit}")["dag_runs"]

    def upstream_events(self, dag_id: str, run_id: str) -> list[dict]:
        rid = urllib.parse.quote(run_id, safe="")
        return self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{rid}/upstreamAssetEvents")["asset_events"]

    def set_note(self, dag_id: str, run_id: str, note: str) -> None:
        rid = urllib.parse.quote(run_id, safe="")
        self._call("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{rid}?update_mask=note", {"note": note})
