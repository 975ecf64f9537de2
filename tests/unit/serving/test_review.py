"""airloop.serving.review: low-confidence served predictions → review queue → reviewers' labels → training data."""

from __future__ import annotations

import datetime as dt

import httpx
import pandas as pd
import pytest
from fixtures.servekit import RunningServer, churn_cfg, ingest_validated, simulate_small, train_version

from airloop.store.lake import Lake


@pytest.fixture(scope="module")
def reviewed(mlflow_store, tmp_path_factory):
    data = tmp_path_factory.mktemp("review_data")
    written = simulate_small(data, days=1)
    # Every binary prediction has probability >= 0.5, so 0.99 sends (almost) all of them to review.
    cfg = churn_cfg("rev", data, serving={"low_confidence_threshold": 0.99, "log_flush_s": 0.2})
    ingest_validated(cfg, written["history_day"])
    train_version(cfg, written["history_day"])
    return {"cfg": cfg, "history": written["history_day"]}


def test_low_confidence_predictions_round_trip_into_training_data(reviewed):
    from airloop.model.plan import training_frame
    from airloop.serving import review
    from airloop.serving.app import create_app

    cfg, lake = reviewed["cfg"], Lake(reviewed["cfg"].name)
    rows = Lake(cfg.name).read_zone("validated", [reviewed["history"]]).head(6)
    features = [
        "tenure_months",
        "monthly_charges",
        "total_charges",
        "support_calls",
        "senior",
        "contract",
        "payment_method",
        "internet_service",
        "region",
    ]
    records = [
        {**{c: (None if pd.isna(r[c]) else r[c]) for c in features}, "customer_id": f"R{i}"}
        for i, r in enumerate(rows.to_dict("records"))
    ]
    records = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in records]
    with RunningServer(create_app(cfg)) as url:
        doc = httpx.post(f"{url}/invocations", json={"dataframe_records": records}).json()
    flagged = [pid for pid, low in zip(doc["prediction_ids"], doc["low_confidence"], strict=True) if low]
    assert flagged, doc["probabilities"]
    assert all(p < 0.99 for p, low in zip(doc["probabilities"], doc["low_confidence"], strict=True) if low)

    queue = review.pending(cfg, lake)
    assert set(queue["prediction_id"]) == set(flagged)
    assert {"contract", "tenure_months", cfg.target}.issubset(queue.columns)

    # a reviewer labels all but one item; the unlabeled one stays pending
    labeled = queue.assign(churned=[1 - i % 2 for i in range(len(queue))])
    labeled.loc[labeled.index[-1], "churned"] = None
    done = review.submit_labels(cfg, lake, labeled, reviewer="ana")
    assert done["rows"] == len(flagged) - 1
    assert review.pending(cfg, lake)["prediction_id"].tolist() == [queue["prediction_id"].iloc[-1]]

    # the labels reach the training data of a window covering the day they were served
    today = dt.datetime.now(dt.UTC).date().isoformat()
    frame = training_frame(cfg, lake, [reviewed["history"], today], [])
    from_review = frame[frame["_batch_id"].astype(str).str.startswith("review:")]
    assert len(from_review) == len(flagged) - 1
    want = labeled.set_index("prediction_id")["churned"].dropna().astype(int)
    got = from_review.set_index("_prediction_id")["churned"].astype(int)
    assert got.sort_index().to_dict() == want.sort_index().to_dict()
    assert set(from_review["customer_id"]) <= {r["customer_id"] for r in records}
    assert from_review["contract"].notna().all()
    assert pd.api.types.is_integer_dtype(frame["churned"])  # reviewed 0/1 labels stay integers


def test_labels_for_unknown_ids_or_without_the_target_are_refused(reviewed):
    from airloop.serving import review

    cfg, lake = reviewed["cfg"], Lake(reviewed["cfg"].name)
    with pytest.raises(review.ReviewError, match="missing \\['churned'\\]"):
        review.submit_labels(cfg, lake, pd.DataFrame({"prediction_id": ["x"]}), reviewer="ana")
    with pytest.raises(review.ReviewError, match="not in the review queue"):
        review.submit_labels(cfg, lake, pd.DataFrame({"prediction_id": ["rev:serve-x:1"], "churned": [1]}), "ana")
