"""The REST client's answers to what Airflow's api-server does under load on the embedded default: a write that
waited out SQLite's busy timeout (HTTP 500 "Database error") or a backfill that met SQLite's other writer (HTTP 503
"Database is locked") is retried; a second backfill of the same DAG while
the scheduler has not yet marked the first one completed (HTTP 409) is retried; any other error surfaces at once,
naming the method, path, status and body. A local HTTP server plays the api-server's part."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from airloop.orchestration import rest
from airloop.orchestration.rest import AirflowAPIError, AirflowClient


class Script:
    """Answers per path: a list of (status, body) consumed in order; the last answer repeats."""

    def __init__(self, answers: dict[str, list[tuple[int, dict]]]):
        self.answers, self.calls = answers, []


def serve(script: Script):
    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            path = self.path.split("?")[0]
            script.calls.append((self.command, path, body))
            queue = script.answers[path]
            status, payload = queue.pop(0) if len(queue) > 1 else queue[0]
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = _answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def api(monkeypatch):
    monkeypatch.setattr(rest.time, "sleep", lambda s: None)  # the retries' back-off, not what is tested
    servers = []

    def start(answers):
        script = Script({"/auth/token": [(201, {"access_token": "t"})], **answers})
        server = serve(script)
        servers.append(server)
        return AirflowClient(f"http://127.0.0.1:{server.server_port}", "admin", "pw"), script

    yield start
    for server in servers:
        server.shutdown()


def test_a_database_error_500_is_retried_until_the_write_succeeds(api):
    busy = (500, {"detail": "Database error"})
    client, script = api({"/api/v2/dags/d/dagRuns": [busy, busy, (200, {"dag_run_id": "r1"})]})
    assert client.trigger("d", {"batch_id": "2026-01-01"})["dag_run_id"] == "r1"
    posts = [c for c in script.calls if c[1] == "/api/v2/dags/d/dagRuns"]
    assert len(posts) == 3 and all(c[2]["conf"] == {"batch_id": "2026-01-01"} for c in posts)


def test_a_database_error_that_persists_surfaces_after_the_retries(api):
    client, script = api({"/api/v2/dags/d/dagRuns": [(500, {"detail": "Database error"})]})
    with pytest.raises(AirflowAPIError, match=r"POST /api/v2/dags/d/dagRuns: HTTP 500: .*Database error"):
        client.trigger("d")
    assert len([c for c in script.calls if c[1] == "/api/v2/dags/d/dagRuns"]) == rest.DB_ERROR_RETRIES + 1


def test_any_other_error_surfaces_at_once_with_its_body(api):
    client, script = api({"/api/v2/dags/d/dagRuns": [(400, {"detail": "conf: not an object"})]})
    with pytest.raises(AirflowAPIError, match=r"HTTP 400: .*conf: not an object"):
        client.trigger("d")
    assert len([c for c in script.calls if c[1] == "/api/v2/dags/d/dagRuns"]) == 1


def test_a_backfill_refused_while_the_previous_one_is_unfinished_is_retried(api):
    running = (409, {"detail": "There is already a running backfill for dag d"})
    created = (200, {"id": 7, "dag_id": "d"})
    client, script = api({"/api/v2/backfills": [running, running, created]})
    assert client.backfill("d", "2026-01-02") == {"id": 7, "dag_id": "d"}
    posts = [c for c in script.calls if c[1] == "/api/v2/backfills"]
    assert len(posts) == 3
    assert posts[0][2]["from_date"] == posts[0][2]["to_date"] == "2026-01-02T00:00:00Z"


def test_a_backfill_that_met_sqlite_s_other_writer_is_retried(api):
    # What CI saw: the api-server maps the backfill transaction's OperationalError to 503 on SQLite.
    locked = (503, {"detail": "Database is locked. Backfill creation is not supported on SQLite."})
    created = (200, {"id": 8, "dag_id": "d"})
    client, script = api({"/api/v2/backfills": [locked] * (rest.DB_ERROR_RETRIES + 2) + [created]})
    assert client.backfill("d", "2026-01-02") == {"id": 8, "dag_id": "d"}
    assert len([c for c in script.calls if c[1] == "/api/v2/backfills"]) == rest.DB_ERROR_RETRIES + 3


def test_a_503_that_is_not_the_database_lock_surfaces_at_once(api):
    client, script = api({"/api/v2/dags/d/dagRuns": [(503, {"detail": "Service Unavailable"})]})
    with pytest.raises(AirflowAPIError, match="HTTP 503"):
        client.trigger("d")
    assert len([c for c in script.calls if c[1] == "/api/v2/dags/d/dagRuns"]) == 1


def test_a_backfill_refused_for_another_reason_is_not_retried(api):
    client, script = api({"/api/v2/backfills": [(409, {"detail": "No runs to create for the interval"})]})
    with pytest.raises(AirflowAPIError, match="No runs to create"):
        client.backfill("d", "2026-01-02")
    assert len([c for c in script.calls if c[1] == "/api/v2/backfills"]) == 1


def test_waiting_for_a_backfill_follows_its_own_run_of_that_day(api):
    runs = {
        "dag_runs": [
            {"dag_run_id": "backfill__2026-01-03", "data_interval_start": "2026-01-03T00:00:00Z", "state": "queued"},
            {"dag_run_id": "scheduled__2026-01-02", "data_interval_start": "2026-01-02T00:00:00Z", "state": "success"},
        ]
    }
    done = {"dag_run_id": "backfill__2026-01-03", "state": "success"}
    client, script = api(
        {
            "/api/v2/dags/d/dagRuns": [(200, runs)],
            "/api/v2/dags/d/dagRuns/backfill__2026-01-03": [(200, {**done, "state": "running"}), (200, done)],
            "/api/v2/backfills/7/cancel": [(200, {"id": 7, "completed_at": "2026-01-04T00:00:01Z"})],
        }
    )
    assert client.wait_backfill({"dag_id": "d", "id": 7}, "2026-01-03")["state"] == "success"
    # closed once its run finished, not before: the next day's backfill need not wait for the scheduler's timer
    paths = [c[1] for c in script.calls]
    assert ("PUT", "/api/v2/backfills/7/cancel", None) in script.calls
    assert paths.index("/api/v2/backfills/7/cancel") > max(
        i for i, p in enumerate(paths) if p == "/api/v2/dags/d/dagRuns/backfill__2026-01-03"
    )


def test_a_backfill_the_scheduler_closed_first_is_fine(api):
    runs = {"dag_runs": [{"dag_run_id": "b", "data_interval_start": "2026-01-03T00:00:00Z", "state": "success"}]}
    client, _ = api(
        {
            "/api/v2/dags/d/dagRuns": [(200, runs)],
            "/api/v2/dags/d/dagRuns/b": [(200, {"dag_run_id": "b", "state": "success"})],
            "/api/v2/backfills/7/cancel": [(409, {"detail": "Backfill is already completed."})],
        }
    )
    assert client.wait_backfill({"dag_id": "d", "id": 7}, "2026-01-03")["state"] == "success"
