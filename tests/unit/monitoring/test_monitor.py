"""airloop.monitoring.monitor: staleness per champion from the daily verdicts, and the confirmed-drift alert."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from airloop.store import lake as lk
from airloop.store.lake import Lake


def write_verdict(lake, batch, version, *, live=None, confirmed=False, features=()):
    doc = {
        "batch_id": batch,
        "model_version": version,
        "status": "alert" if features else "ok",
        "confirmed": confirmed,
        "drifted_features": list(features),
        "live": {} if live is None else {"rows": 100, "live_roc_auc": live},
    }
    lk.write_json(lk.join(lake.partition("monitoring", batch), "verdict.json"), doc)


def test_champion_history_records_days_trend_and_time_to_stale(tmp_path, pipeline_cfg):
    from airloop.monitoring.monitor import champion_history

    cfg = pipeline_cfg(evaluation={"primary_metric": "roc_auc", "min_value": 0.7})
    lake = Lake("t", root=tmp_path.as_uri())
    write_verdict(lake, "2026-01-01", "1")
    write_verdict(lake, "2026-01-02", "1", live=0.82)
    write_verdict(lake, "2026-01-03", "1", live=0.78, features=["contract"])
    write_verdict(lake, "2026-01-04", "1", live=0.74, features=["contract", "monthly_charges"], confirmed=True)
    write_verdict(lake, "2026-01-05", "2", live=0.81)
    write_verdict(lake, "2026-01-06", "2", live=0.69)  # below evaluation.min_value: stale by the metric
    write_verdict(lake, "2026-01-07", "3")
    v1, v2, v3 = champion_history(cfg, lake)
    assert (v1["model_version"], v1["first_batch"], v1["last_batch"], v1["days_monitored"]) == (
        "1",
        "2026-01-01",
        "2026-01-04",
        4,
    )
    assert v1["live"] == [["2026-01-02", 0.82], ["2026-01-03", 0.78], ["2026-01-04", 0.74]]
    assert v1["trend"] == "degrading" and abs(v1["trend_per_day"] + 0.04) < 1e-9
    assert v1["stale_on"] == "2026-01-04" and v1["days_to_stale"] == 3 and "contract" in v1["stale_reason"]
    assert (
        v2["stale_on"] == "2026-01-06"
        and v2["days_to_stale"] == 1
        and "below evaluation.min_value" in v2["stale_reason"]
    )
    assert v3["stale_on"] is None and v3["trend"] is None and v3["days_to_stale"] is None


def test_status_shows_staleness_of_the_champion_and_earlier_ones():
    from airloop.monitoring.status_text import render

    staleness = {
        "days_monitored": 4,
        "live_metric": "live_roc_auc",
        "live": [["2026-01-04", 0.74]],
        "trend": "degrading",
        "trend_per_day": -0.04,
        "stale_on": "2026-01-04",
        "days_to_stale": 3,
    }
    champ = {
        "version": "2",
        "candidate": "lr",
        "promoted_at": "t",
        "promoted_by": "gate",
        "metrics": {},
        "staleness": staleness,
    }
    earlier = {
        "model_version": "1",
        "first_batch": "2025-12-01",
        "last_batch": "2025-12-20",
        "stale_on": "2025-12-18",
        "days_to_stale": 17,
        "stale_reason": "drift confirmed on contract",
    }
    doc = {
        "tracking_uri": "x",
        "lake_uri": "y",
        "pipelines": {
            "t": {
                "registered_model": "airloop-t",
                "champion": champ,
                "dag_runs": {},
                "drift": None,
                "retrains": [],
                "staleness": [earlier],
            }
        },
    }
    text = render(doc)
    assert "4 day(s) monitored; live_roc_auc 0.7400 on 2026-01-04, trend degrading (-0.0400/day)" in text
    assert "stale on 2026-01-04 after 3 day(s)" in text
    assert "v1: served 2025-12-01..2025-12-20, stale after 17 day(s) (drift confirmed on contract)" in text


def test_alert_document_and_webhook_post(pipeline_cfg):
    from fixtures.services import free_port

    from airloop.monitoring.monitor import alert_document, post_webhook

    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.headers.get("Authorization"), json.loads(body)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", free_port()), Hook)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    verdict = {"batch_id": "2026-01-06", "model_version": "1", "drifted_features": ["contract"], "report_uri": "r"}
    doc = alert_document(pipeline_cfg(), verdict)
    assert "drift confirmed on pipeline 't', batch 2026-01-06, champion v1" in doc["text"]
    status = post_webhook(f"http://127.0.0.1:{server.server_port}/hook", doc, headers={"Authorization": "Bearer s"})
    thread.join(timeout=10)
    server.server_close()
    assert status == 204 and received == [("Bearer s", doc)]
