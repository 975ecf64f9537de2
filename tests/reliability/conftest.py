"""Shared set-up of the fault matrix: small logged models, a private SeaweedFS that a test may kill."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fixtures.faultkit import make_cfg


@pytest.fixture(scope="module")
def logged_models(mlflow_store):
    """Four logged skops models (one run each): [(model_uri, run_id), ...]."""
    import mlflow
    from sklearn.linear_model import LogisticRegression

    from airloop.model.train import log_sklearn_model
    from airloop.store import tracking

    exp = tracking.ensure_experiment(make_cfg("faults"))
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60)})
    out = []
    for i in range(4):
        y = (X["a"] + i * X["b"] > 0).astype(int)
        with mlflow.start_run(experiment_id=exp) as run:
            info, _ = log_sklearn_model(LogisticRegression().fit(X, y), X)
        out.append((info.model_uri, run.info.run_id))
    return out


@pytest.fixture
def private_s3(tmp_path):
    """A SeaweedFS of this test's own, so the test may stop it (the session's one stays up)."""
    from fixtures.services import start_seaweedfs, stop_seaweedfs

    server = start_seaweedfs(tmp_path / "weed")
    yield server
    stop_seaweedfs(server)
