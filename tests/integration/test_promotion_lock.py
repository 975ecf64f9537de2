"""The promotion lock on a PostgreSQL MLflow store is a PostgreSQL advisory lock: it excludes other sessions
(other workers, other hosts) and is per registered model."""

from __future__ import annotations

import threading
import time

import pytest
from fixtures.configs import pipeline_cfg

pytestmark = pytest.mark.integration


def make_cfg(name):
    return pipeline_cfg(name=name, target="y", task="regression", id_column=None, event_time_column=None)


def test_postgres_advisory_lock_excludes_a_second_session_of_the_same_model(postgres_url, monkeypatch, tmp_path):
    from airloop.store import promotions

    monkeypatch.setenv("AIRLOOP_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", postgres_url)
    events: list[str] = []

    def second() -> None:
        with promotions.promotion_lock(make_cfg("pgl")) as kind:
            events.append(f"second got {kind}")

    with promotions.promotion_lock(make_cfg("pgl")) as kind:
        assert kind == "postgres-advisory"
        other = threading.Thread(target=second, daemon=True)
        other.start()
        with promotions.promotion_lock(make_cfg("other_model")):  # another model's lock is independent
            events.append("other model")
        time.sleep(1.5)
        assert events == ["other model"], "a second session took the lock while it was held"
    other.join(timeout=30)
    assert events == ["other model", "second got postgres-advisory"]
