"""POST /explain (airloop.serving.explain): the champion's top SHAP contributions per row on request, with the
conformal set when the version has one; /invocations answers as before."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from fixtures.servekit import CHURN_ROW, RunningServer, churn_cfg, ingest_validated, simulate_small, train_version


@pytest.fixture(scope="module")
def served(mlflow_store, tmp_path_factory):
    from mlflow.tracking import MlflowClient

    data = tmp_path_factory.mktemp("explain_data")
    written = simulate_small(data, days=1)
    cfg = churn_cfg("srvx", data, serving={"poll_interval_s": 0.2, "log_flush_s": 0.2})
    ingest_validated(cfg, written["history_day"])
    v1 = train_version(cfg, written["history_day"])
    # as the gate would: the conformal threshold travels as a version tag
    MlflowClient().set_model_version_tag(cfg.registered_model_name, v1["version"], "airloop.conformal.threshold", "0.6")
    return {"cfg": cfg, "v1": v1}


def test_explain_answers_the_top_contributions_that_add_up_to_the_log_odds(served):
    import mlflow.sklearn

    from airloop.serving.app import create_app

    cfg = served["cfg"]
    low_risk = {**CHURN_ROW, "tenure_months": 70, "contract": "two_year", "support_calls": 0}
    with RunningServer(create_app(cfg, log_requests=False)) as url:
        body = {"dataframe_records": [CHURN_ROW, low_risk]}
        got = httpx.post(f"{url}/explain?top=20", json=body, timeout=60)
        assert got.status_code == 200, got.text
        doc = got.json()
        plain = httpx.post(f"{url}/invocations", json=body, timeout=30).json()
    assert doc["model_version"] == served["v1"]["version"] and doc["explainer"] == "linear"
    assert doc["predictions"] == plain["predictions"]
    model = mlflow.sklearn.load_model(f"models:/{cfg.registered_model_name}/{served['v1']['version']}")
    import pandas as pd

    margin = model.decision_function(pd.DataFrame([CHURN_ROW, low_risk]).astype({"monthly_charges": float}))
    for row, want in zip(doc["explanations"], margin, strict=True):
        contributions = row["contributions"]
        assert len(contributions) == 9  # every raw column, largest first
        sizes = [abs(c["contribution"]) for c in contributions]
        assert sizes == sorted(sizes, reverse=True)
        assert row["expected_value"] + sum(c["contribution"] for c in contributions) == pytest.approx(want, abs=1e-6)
        assert row["prediction_set"] and set(row["prediction_set"]) <= {0, 1}
    first = {c["feature"]: c for c in doc["explanations"][0]["contributions"]}
    assert first["contract"]["value"] == "month-to-month" and first["contract"]["contribution"] > 0
    assert np.sign(margin[1]) < 0 or doc["predictions"][1] == 1


def test_explain_refuses_a_bad_body_naming_the_field(served):
    from airloop.serving.app import create_app

    with RunningServer(create_app(served["cfg"], log_requests=False)) as url:
        got = httpx.post(f"{url}/explain", json={"dataframe_records": [{"tenure_months": 3}]}, timeout=30)
    assert got.status_code == 422 and "monthly_charges" in got.json()["message"]  # as /invocations answers
