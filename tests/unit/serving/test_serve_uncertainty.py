"""Served predictions carry their conformal set (classification) or interval (regression), from the threshold the
gate stored with the version: in POST /invocations answers, in the serving log and in batch-scored predictions; and
the review queue can route on set size (``serving.review_by: set_size``) with the reason kept for the reviewer."""

from __future__ import annotations

import httpx
import numpy as np
import pandas as pd
import pytest
from fixtures.servekit import CHURN_ROW, RunningServer, churn_cfg, ingest_validated, simulate_small, train_version

from airloop.store import lake as lk
from airloop.store.lake import Lake

THRESHOLD = 0.6  # a class is in the set when p >= 0.4: rows with 0.4 <= p(churn) <= 0.6 get both classes


@pytest.fixture(scope="module")
def served(mlflow_store, tmp_path_factory):
    from mlflow.tracking import MlflowClient

    from airloop.model.conformal import COVERAGE_TAG, THRESHOLD_TAG

    data = tmp_path_factory.mktemp("uncertainty_data")
    written = simulate_small(data, days=1)
    cfg = churn_cfg("srvu", data, serving={"poll_interval_s": 0.2, "log_flush_s": 0.2})
    for day in (written["history_day"], written["days"][0]):
        ingest_validated(cfg, day)
    v1 = train_version(cfg, written["history_day"])
    client = MlflowClient()  # as the gate does (airloop.model.evaluate): the threshold travels as version tags
    client.set_model_version_tag(cfg.registered_model_name, v1["version"], THRESHOLD_TAG, str(THRESHOLD))
    client.set_model_version_tag(cfg.registered_model_name, v1["version"], COVERAGE_TAG, "0.9")
    return {"cfg": cfg, "v1": v1, "history": written["history_day"], "day": written["days"][0]}


def records(cfg, batch_id: str, n: int) -> list[dict]:
    rows = Lake(cfg.name).read_zone("validated", [batch_id]).head(n)
    features = list(CHURN_ROW)
    out = []
    for r in rows.to_dict("records"):
        rec = {c: (None if pd.isna(r[c]) else r[c]) for c in features}
        out.append({k: (v.item() if hasattr(v, "item") else v) for k, v in rec.items()})
    return out


def expected_sets(cfg, version: str, rows: list[dict]) -> list[list[int]]:
    from airloop.store import models

    model = models.load_version(cfg, version)
    frame = pd.DataFrame(rows)
    for col, value in CHURN_ROW.items():  # nulls in numeric columns: NaN, as the server parses them
        if not isinstance(value, str):
            frame[col] = pd.to_numeric(frame[col]).astype(float)
    proba = model.predict_proba(frame)
    return [[int(c) for c, p in zip(model.classes_, row, strict=True) if p >= 1 - THRESHOLD] for row in proba]


def test_invocations_answer_the_conformal_set_beside_the_mlflow_predictions(served):
    from airloop.serving.app import create_app

    cfg = served["cfg"]
    rows = records(cfg, served["history"], 60)
    with RunningServer(create_app(cfg, log_requests=False)) as url:
        doc = httpx.post(f"{url}/invocations", json={"dataframe_records": rows}, timeout=30).json()
        single = httpx.post(f"{url}/invocations", json={"instances": [CHURN_ROW]}, timeout=30).json()
    assert len(doc["predictions"]) == 60 and doc["coverage"] == 0.9
    want = expected_sets(cfg, served["v1"]["version"], rows)
    assert doc["prediction_sets"] == want
    assert any(len(s) == 2 for s in want) and any(len(s) == 1 for s in want), "the test needs both kinds"
    # a set always holds the predicted class when it has one class; MLflow's key is unchanged
    assert all(s == [p] for s, p in zip(want, doc["predictions"], strict=True) if len(s) == 1)
    assert single["predictions"][0] in single["prediction_sets"][0]


def test_review_by_set_size_queues_the_ambiguous_rows_with_their_reason(served):
    from airloop.serving import review
    from airloop.serving.app import create_app
    from airloop.serving.servinglog import read_serving_log

    cfg = served["cfg"]
    cfg = cfg.model_copy(update={"serving": cfg.serving.model_copy(update={"review_by": "set_size"})})
    rows = records(cfg, served["history"], 40)
    with RunningServer(create_app(cfg)) as url:
        doc = httpx.post(f"{url}/invocations", json={"dataframe_records": rows}, timeout=30).json()
    sizes = [len(s) for s in doc["prediction_sets"]]
    assert doc["low_confidence"] == [n > 1 for n in sizes] and any(doc["low_confidence"])
    ambiguous = {pid for pid, low in zip(doc["prediction_ids"], doc["low_confidence"], strict=True) if low}

    logged = read_serving_log(Lake(cfg.name))
    logged = logged[logged["prediction_id"].isin(doc["prediction_ids"])].set_index("prediction_id")
    assert logged.loc[doc["prediction_ids"], "set_size"].tolist() == sizes
    assert [list(s) for s in logged.loc[doc["prediction_ids"], "prediction_set"]] == doc["prediction_sets"]

    queue = review.pending(cfg, Lake(cfg.name))
    queued = queue[queue["prediction_id"].isin(doc["prediction_ids"])]
    assert set(queued["prediction_id"]) == ambiguous
    assert queued["reason"].str.contains(r"prediction set \[0, 1\] has 2 classes").all()
    assert queued["reason"].str.contains("serving.review_max_set_size 1").all()


def test_batch_scoring_writes_the_set_of_each_prediction(served):
    from airloop.serving.score import score_batch

    cfg, day = served["cfg"], served["day"]
    out = score_batch(cfg, day)
    preds = lk.read_parquet(out["uri"])
    assert len(preds) == 200
    in_set = [np.asarray(s).tolist() for s in preds["prediction_set"]]
    p1 = preds["score"].to_numpy()
    want = [[c for c, p in ((0, 1 - q), (1, q)) if p >= 1 - THRESHOLD - 1e-12] for q in p1]
    assert in_set == want and preds["set_size"].tolist() == [len(s) for s in want]
    assert (preds["set_size"] == 2).any()


def test_regression_intervals_and_routing_on_interval_width():
    from sklearn.linear_model import LinearRegression

    from airloop.config import parse_pipeline
    from airloop.model.conformal import served_columns
    from airloop.serving.review import review_flags, review_reasons
    from airloop.serving.score import predict_frame

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x": rng.normal(size=50)})
    model = LinearRegression().fit(X, 3 * X["x"] + rng.normal(size=50))

    def cfg(width):
        keys = {"name": "reg", "source": {"uri": "file:///d"}, "target": "y", "task": "regression"}
        return parse_pipeline({**keys, "serving": {"review_by": "interval_width", "review_max_interval_width": width}})

    out = predict_frame(cfg(5.0), model, X, conformal_threshold=1.5)
    assert np.allclose(out["interval_low"], model.predict(X) - 1.5)
    assert np.allclose(out["interval_high"], model.predict(X) + 1.5)
    assert "interval_low" not in predict_frame(cfg(5.0), model, X).columns  # not calibrated: nothing added
    served = served_columns("regression", 1.5, model.predict(X), None, None)
    # split conformal gives every row of a version the same width (2 x threshold): all rows or none
    assert review_flags(cfg(5.0), None, served, 50) == [False] * 50
    assert review_flags(cfg(2.9), None, served, 50) == [True] * 50
    (reason,) = review_reasons(cfg(2.9), pd.DataFrame(served).head(1).assign(probability=None))
    assert "is 3 wide, more than serving.review_max_interval_width 2.9" in reason
