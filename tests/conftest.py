"""Shared fixtures. Every test gets its own AIRLOOP_HOME, so no test touches the developer's .airloop/."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO / "plugins",):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))


@pytest.fixture
def airloop_home(tmp_path, monkeypatch) -> Path:
    """A private AIRLOOP_HOME with its own lake and MLflow store."""
    home = tmp_path / "airloop_home"
    home.mkdir()
    monkeypatch.setenv("AIRLOOP_HOME", str(home))
    for var in ("AIRLOOP_LAKE_URI", "MLFLOW_TRACKING_URI", "AIRLOOP_ARTIFACT_URI"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def pipeline_cfg():
    """A small pipeline config factory: ``pipeline_cfg(source_uri, **overrides)``."""
    from airloop.config import parse_pipeline

    def make(uri: str = "file:///nowhere/*.csv", **overrides):
        data = {
            "name": "t",
            "source": {"uri": uri},
            "target": "churned",
            "task": "classification",
            "id_column": "customer_id",
            "event_time_column": "event_time",
        }
        data.update(overrides)
        return parse_pipeline(data, "test.yaml")

    return make
