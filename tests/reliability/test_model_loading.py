"""Defect 1: nothing is loaded that the gate did not bless, and nothing loaded can run code.

An attacker with registry access registers a pickle whose unpickling runs a command, or copies a blessing
onto it, and points ``champion`` at it. Scoring, monitoring, evaluation and serving refuse it (ModelRefused,
one log line, a lake record); the server keeps serving the previous champion; training never writes pickle.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from airloop.config import parse_pipeline

PIPE = "guarded"


class Exploit:
    """Unpickling this writes a marker file: what ``touch /tmp/pwned`` would do, observable."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.fixture(scope="module")
def cfg():
    return parse_pipeline(
        {"name": PIPE, "source": {"uri": "file:///nowhere/*.csv"}, "target": "y", "task": "classification"}
    )


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"a": rng.normal(size=80), "b": rng.normal(size=80)})
    return X, (X["a"] > 0).astype(int)


@pytest.fixture(scope="module")
def blessed(mlflow_store, cfg, frame):
    """v1: trained, logged with skops and registered through the gate's register (blessed), champion."""
    import mlflow
    from sklearn.linear_model import LogisticRegression

    from airloop.model.train import log_sklearn_model
    from airloop.store import promotions, registry, tracking

    X, y = frame
    exp = tracking.ensure_experiment(cfg)
    with mlflow.start_run(experiment_id=exp) as run:
        info, fmt = log_sklearn_model(LogisticRegression().fit(X, y), X)
    assert fmt == "skops"
    version = registry.register(cfg, info.model_uri, run.info.run_id)
    promotions.promote(cfg, version, reason="test", actor="tester")
    return version


def _register_by_hand(cfg, obj, fmt: str, tags: dict | None = None) -> str:
    """What an attacker with MLflow access does: log ``obj`` in ``fmt`` and register it, bypassing the gate."""
    import mlflow
    import mlflow.sklearn

    from airloop.store import tracking

    exp = tracking.ensure_experiment(cfg)
    with mlflow.start_run(experiment_id=exp):
        info = mlflow.sklearn.log_model(obj, name="model", serialization_format=fmt)
    mv = mlflow.register_model(info.model_uri, cfg.registered_model_name, tags=tags)
    return str(mv.version)


def _point_champion(cfg, version):
    from mlflow.tracking import MlflowClient

    MlflowClient().set_registered_model_alias(cfg.registered_model_name, "champion", str(version))


def test_a_pickle_champion_never_runs_and_is_refused_everywhere(blessed, cfg, tmp_path, caplog):
    from airloop.store import models, promotions, registry

    marker = tmp_path / "pwned"
    evil = _register_by_hand(cfg, Exploit(str(marker)), "pickle")
    _point_champion(cfg, evil)
    try:
        caplog.set_level(logging.ERROR, logger="airloop.store.models")
        with pytest.raises(models.ModelRefused, match="not blessed"):
            models.load_version(cfg, evil)
        with pytest.raises(models.ModelRefused):
            models.load_uri(models.version_uri(cfg, evil))  # serving/score.py and serving/loaded.py's path
        with pytest.raises(models.ModelRefused):
            registry.load_model(cfg)  # the champion alias, as monitor and CLI resolve it
        assert not marker.exists(), "unpickling ran the attacker's code"
        assert any("model refused" in r.getMessage() and f"/{evil}" in r.getMessage() for r in caplog.records)
        refused = [r for r in models.refusals(cfg) if r["version"] == evil]
        assert refused and "not blessed" in refused[-1]["reason"]
        # promote refuses it too: the gate's own path cannot make it champion
        with pytest.raises(models.ModelRefused):
            promotions.promote(cfg, evil, reason="x", actor="attacker")
    finally:
        _point_champion(cfg, blessed)


def test_a_copied_blessing_does_not_bless_other_bytes(blessed, cfg, tmp_path):
    from mlflow.tracking import MlflowClient

    from airloop.store import models

    marker = tmp_path / "pwned"
    tags = MlflowClient().get_model_version(cfg.registered_model_name, blessed).tags
    copied = {k: tags[k] for k in (models.BLESSING_TAG, models.DIGEST_TAG)}
    evil = _register_by_hand(cfg, Exploit(str(marker)), "pickle", tags=copied)
    with pytest.raises(models.ModelRefused, match="does not match"):
        models.load_version(cfg, evil)
    assert not marker.exists()


def test_a_blessed_version_whose_bytes_change_is_refused(blessed, cfg, frame, tmp_path):
    """Even a skops artifact signed by the gate is refused once its bytes are not the ones signed."""
    import mlflow
    from mlflow.tracking import MlflowClient
    from sklearn.linear_model import LogisticRegression

    from airloop.model.train import log_sklearn_model
    from airloop.store import models, registry, tracking

    X, y = frame
    with mlflow.start_run(experiment_id=tracking.ensure_experiment(cfg)) as run:
        info, _ = log_sklearn_model(LogisticRegression(C=0.5).fit(X, y), X)
    version = registry.register(cfg, info.model_uri, run.info.run_id)
    assert models.load_version(cfg, version).predict(X).shape == (len(X),)
    source = MlflowClient().get_model_version(cfg.registered_model_name, version).source
    local = mlflow.artifacts.download_artifacts(artifact_uri=source)
    # Tamper in the artifact store itself (file:// here): append a byte to the skops archive.
    root = mlflow.get_logged_model(info.model_id).artifact_location.removeprefix("file://")
    with open(f"{root}/model.skops", "ab") as handle:
        handle.write(b"\0")
    assert local
    with pytest.raises(models.ModelRefused, match="does not match"):
        models.load_version(cfg, version)


def test_a_skops_file_with_an_untrusted_type_is_refused(mlflow_store, cfg, tmp_path):
    """A skops archive naming a type outside the allow-list (here builtins.exec via a custom function
    transformer) is refused before anything is built from it."""
    import mlflow
    from sklearn.preprocessing import FunctionTransformer

    from airloop.store import models, tracking

    with mlflow.start_run(experiment_id=tracking.ensure_experiment(cfg)):
        info = mlflow.sklearn.log_model(
            FunctionTransformer(func=eval),
            name="model",
            serialization_format="skops",
            skops_trusted_types=["builtins.eval"],
        )
    with pytest.raises(models.ModelRefused, match="outside the trusted list"):
        models.load_uri(info.model_uri)


class HomeMadeClassifier:
    """An estimator of the user's own: skops can only save it by reference to a type nobody trusted."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


def test_training_never_writes_pickle_and_names_the_estimator(mlflow_store, cfg, frame):
    """skops cannot save an estimator it does not trust: training fails naming it; no cloudpickle fallback."""
    import mlflow

    from airloop.errors import BadInput
    from airloop.model.train import log_sklearn_model
    from airloop.store import tracking

    X, y = frame
    with mlflow.start_run(experiment_id=tracking.ensure_experiment(cfg)) as run:
        with pytest.raises(BadInput, match="HomeMadeClassifier"):
            log_sklearn_model(HomeMadeClassifier().fit(X, y), X)
    assert not mlflow.artifacts.list_artifacts(run_id=run.info.run_id)  # nothing logged, pickle or otherwise


def test_the_server_keeps_serving_the_previous_champion_when_the_new_one_is_refused(blessed, cfg, tmp_path, caplog):
    from airloop.serving.server import ModelServer
    from airloop.store import models
    from airloop.store.lake import Lake

    marker = tmp_path / "pwned"
    server = ModelServer(cfg, lake=Lake(cfg.name, root=(tmp_path / "lake").as_uri()), log_requests=False)
    assert server.refresh() and server.current.version == blessed
    evil = _register_by_hand(cfg, Exploit(str(marker)), "pickle")
    _point_champion(cfg, evil)
    try:
        caplog.set_level(logging.ERROR)
        assert server.refresh() is False
        assert server.refresh() is False  # the next poll neither retries the load nor logs again
        assert server.current.version == blessed
        assert not marker.exists()
        lines = [r for r in caplog.records if "model refused" in r.getMessage()]
        assert len(lines) == 1
        assert any(r["version"] == evil for r in models.refusals(cfg))
    finally:
        _point_champion(cfg, blessed)
