"""airloop.serving.score: batch scoring with the pinned champion version, after the signature and suite checks."""

from __future__ import annotations

import pandas as pd
import pytest
from fixtures.servekit import churn_cfg, ingest_validated, simulate_small, train_version

from airloop.store import lake as lk


@pytest.fixture(scope="module")
def scored(mlflow_store, tmp_path_factory):
    data = tmp_path_factory.mktemp("score_data")
    written = simulate_small(data, days=1)
    cfg = churn_cfg("scr", data)
    for day in (written["history_day"], written["days"][0]):
        ingest_validated(cfg, day)
    v1 = train_version(cfg, written["history_day"])
    return {"cfg": cfg, "v1": v1, "day": written["days"][0]}


def test_score_batch_writes_traceable_predictions(scored):
    from airloop.serving.score import score_batch
    from airloop.store.lake import Lake

    cfg, day = scored["cfg"], scored["day"]
    out = score_batch(cfg, day, run_info={"dag_id": "airloop_scr_score", "run_id": "manual__1"})
    assert out["rows"] == 200 and out["model_version"] == scored["v1"]["version"]
    assert out["checks"]["suite"] and "checked against its signature" in out["summary"]
    preds = lk.read_parquet(out["uri"])
    batch = Lake(cfg.name).read_zone("validated", [day])
    assert preds["prediction_id"].tolist() == [f"scr:{day}:{c}" for c in batch["customer_id"]]
    assert set(preds["model_version"]) == {scored["v1"]["version"]}
    assert set(preds["model_run_id"]) == {scored["v1"]["run_id"]} and set(preds["_batch_id"]) == {day}
    assert set(preds["airflow_run_id"]) == {"manual__1"}
    assert preds["probability"].between(0.5, 1).all() and preds["score"].between(0, 1).all()
    assert pd.to_datetime(preds["scored_at"]).notna().all()


def test_a_batch_missing_a_signature_column_is_refused_unscored(scored):
    from airloop.serving.score import ScoringInputRefused, score_batch
    from airloop.store.lake import Lake

    cfg, lake = scored["cfg"], Lake(scored["cfg"].name)
    frame = lake.read_zone("validated", [scored["day"]]).drop(columns=["contract"])
    lk.write_parquet(lake.part("validated", "2030-01-01"), frame)
    with pytest.raises(ScoringInputRefused, match=r"columns \['contract'\] required by the signature"):
        score_batch(cfg, "2030-01-01")
    assert not lk.exists(lake.part("predictions", "2030-01-01"))


def test_a_batch_failing_the_suite_is_refused_unscored(scored):
    from airloop.serving.score import ScoringInputRefused, score_batch
    from airloop.store.lake import Lake

    cfg, lake = scored["cfg"], Lake(scored["cfg"].name)
    frame = lake.read_zone("validated", [scored["day"]])
    frame.loc[frame.index[:3], "customer_id"] = None
    lk.write_parquet(lake.part("validated", "2030-01-02"), frame)
    with pytest.raises(ScoringInputRefused, match="customer_id"):
        score_batch(cfg, "2030-01-02")
    assert not lk.exists(lake.part("predictions", "2030-01-02"))


def test_no_champion_is_nothing_to_do(mlflow_store, tmp_path):
    from airloop.serving.score import NoChampion, score_batch
    from airloop.store.lake import BatchMissing, Lake

    cfg = churn_cfg("scr_none", tmp_path)
    with pytest.raises(BatchMissing, match="batch 2026-01-01: nothing to score: no data was ingested"):
        score_batch(cfg, "2026-01-01")
    lk.write_parquet(Lake(cfg.name).part("validated", "2026-01-01"), pd.DataFrame({"customer_id": ["C1"]}))
    with pytest.raises(NoChampion, match="no model version has the alias 'champion'"):
        score_batch(cfg, "2026-01-01")


def test_predictions_are_immutable_and_a_new_champion_writes_beside(scored):
    import hashlib

    from airloop.monitoring import trace
    from airloop.serving.score import AlreadyScored, score_batch
    from airloop.store.lake import Lake

    cfg, day = scored["cfg"], scored["day"]
    lake = Lake(cfg.name)
    if not lake.prediction_parts(day):
        score_batch(cfg, day)
    (first_uri,) = lake.prediction_parts(day)
    digest = hashlib.sha256(lk.read_bytes(first_uri)).hexdigest()
    pid = lk.read_parquet(first_uri)["prediction_id"].iloc[0]
    answer = trace.find_prediction(lake, pid)
    with pytest.raises(AlreadyScored, match=f"already scored by v{scored['v1']['version']}"):
        score_batch(cfg, day)
    v2 = train_version(cfg, day)  # promoted: the new champion
    out = score_batch(cfg, day)
    assert out["model_version"] == v2["version"] and out["uri"] != first_uri
    assert sorted(lake.prediction_parts(day)) == sorted([first_uri, out["uri"]])
    assert hashlib.sha256(lk.read_bytes(first_uri)).hexdigest() == digest, "the served predictions were rewritten"
    again = trace.find_prediction(lake, pid)
    assert again["model_version"] == answer["model_version"] == scored["v1"]["version"]
    assert again["rescored_by"][0]["model_version"] == v2["version"]


def test_predict_frame_in_chunks_gives_the_models_predictions_in_one_pass_per_chunk():
    import numpy as np

    from airloop.config import CandidateConfig
    from airloop.model.candidates import build_pipeline, default_candidates
    from airloop.serving.score import predict_frame

    rng = np.random.default_rng(3)
    n = 250
    X = pd.DataFrame({"x": rng.normal(size=n), "c": rng.choice(["a", "b", "c"], size=n)})
    y = (X["x"] + (X["c"] == "a") > 0.4).astype(int)
    cfg = churn_cfg("chunked", "/nonexistent")
    for candidate in [c for c in default_candidates("classification") if c.name != "random_forest"] + [
        CandidateConfig(name="rf", estimator="random_forest", params={"n_estimators": 10})
    ]:
        model = build_pipeline(candidate, ["x"], ["c"], 0, task="classification").fit(X, y)
        out = predict_frame(cfg, model, X, chunk_rows=100)  # 3 chunks
        assert out["prediction"].tolist() == model.predict(X).tolist(), candidate.name
        proba = model.predict_proba(X)
        assert np.allclose(out["score"], proba[:, 1]) and np.allclose(out["probability"], proba.max(axis=1))
        assert out.index.equals(X.index)
