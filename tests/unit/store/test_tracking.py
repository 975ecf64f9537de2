"""MLflow experiments as users expect: model-development kind, candidates apart from validation and monitoring."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from airloop.config import parse_pipeline
from airloop.store import tracking


def cfg(name: str):
    return parse_pipeline(
        {"name": name, "source": {"uri": "file:///x/*.csv"}, "target": "y", "task": "classification"}, f"{name}.yaml"
    )


def test_each_purpose_has_its_own_experiment_of_the_training_kind(mlflow_store):
    client = MlflowClient(tracking_uri=tracking.configure_mlflow())
    ids = {purpose: tracking.ensure_experiment(cfg("kinds"), purpose) for purpose in ("training", "data", "monitoring")}
    assert len(set(ids.values())) == 3
    for purpose, exp_id in ids.items():
        exp = client.get_experiment(exp_id)
        assert exp.name == {"training": "airloop/kinds", "data": "airloop/kinds/data"}.get(
            purpose, "airloop/kinds/monitoring"
        )
        assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
        assert exp.tags["airloop.purpose"] == purpose
    with pytest.raises(ValueError, match="expected one of"):
        tracking.experiment_name(cfg("kinds"), "validate")


def test_an_experiment_made_before_the_kind_tag_gets_it(mlflow_store):
    client = MlflowClient(tracking_uri=tracking.configure_mlflow())
    old = client.create_experiment("airloop/old")
    assert "mlflow.experimentKind" not in client.get_experiment(old).tags
    assert tracking.ensure_experiment(cfg("old")) == old
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
