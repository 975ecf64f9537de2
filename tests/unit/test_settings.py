"""The environment Airloop gives the Airflow components it starts (the demo, `make ui`, `airloop run`)."""

from __future__ import annotations

from airloop import settings


def test_airflow_env_turns_mlflow_telemetry_off_unless_the_user_chose(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRLOOP_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    assert settings.airflow_env()["MLFLOW_DISABLE_TELEMETRY"] == "true"
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "false")
    assert settings.airflow_env()["MLFLOW_DISABLE_TELEMETRY"] == "false"
