"""Estimated performance before labels (CBPE, DLE), calibration, and retraining on impact through
``monitor_batch`` against a real MLflow store and lake."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, brier_score_loss, f1_score, log_loss, roc_auc_score

from airloop.config import parse_pipeline
from airloop.model.calibration import apply_calibration, fit_calibration
from airloop.monitoring.estimate import CBPEAccumulator, cbpe
from airloop.monitoring.performance import retrain_decision
from airloop.store import lake as lk

CBPE_TOLERANCE = 0.02  # |estimated - realized| ROC-AUC and accuracy, batches of 5,000 rows


def logistic_data(rng: np.random.Generator, n: int, shift: float = 0.0, spread: float = 1.0):
    """Two features, labels from a known logistic model; ``shift``/``spread`` move x1 (covariate shift)."""
    X = np.column_stack([rng.normal(shift, spread, n), rng.normal(0, 1, n)])
    p = 1 / (1 + np.exp(-(1.2 * X[:, 0] - 0.8 * X[:, 1] - 0.5)))
    return X, (rng.random(n) < p).astype(int)


def test_cbpe_tracks_the_realized_metric_under_covariate_shift():
    rng = np.random.default_rng(0)
    X, y = logistic_data(rng, 4000)
    model = LogisticRegression().fit(X, y)
    Xh, yh = logistic_data(rng, 3000)

    # An over-confident version of the model: the calibration map must undo it.
    def overconfident(X):
        logit = model.decision_function(X)
        return 1 / (1 + np.exp(-2.5 * logit))

    calibration = fit_calibration(yh == 1, overconfident(Xh))
    assert calibration["method"] != "none" and calibration["ece_calibrated"] < calibration["ece_raw"]
    for shift, spread in [(0.0, 1.0), (1.0, 1.0), (-1.0, 0.5), (0.5, 2.0)]:
        Xc, yc = logistic_data(rng, 5000, shift, spread)
        score = overconfident(Xc)
        got = cbpe(score, calibration)
        realized_auc = roc_auc_score(yc, score)
        realized_acc = accuracy_score(yc, score > 0.5)
        assert abs(got["metrics"]["roc_auc"] - realized_auc) < CBPE_TOLERANCE, (shift, spread)
        assert abs(got["metrics"]["accuracy"] - realized_acc) < CBPE_TOLERANCE, (shift, spread)
        assert got["lower"]["roc_auc"] < got["metrics"]["roc_auc"] < got["upper"]["roc_auc"]
    # Without calibration the over-confident scores overstate... the Brier estimate, at least.
    raw = cbpe(score, None)
    realized_brier = float(np.mean((score - yc) ** 2))
    assert abs(raw["metrics"]["brier"] - realized_brier) > abs(got["metrics"]["brier"] - realized_brier)


def test_the_accumulator_with_labels_is_the_realized_metric():
    rng = np.random.default_rng(3)
    score = rng.random(2000)
    y = (rng.random(2000) < score).astype(float)
    acc = CBPEAccumulator()
    for part in np.array_split(np.arange(2000), 4):  # streamed in chunks
        acc.update(score[part], y[part], score[part] > 0.5)
    got = acc.metrics()
    assert got["roc_auc"] == pytest.approx(roc_auc_score(y, score), abs=1e-4)
    assert got["accuracy"] == pytest.approx(accuracy_score(y, score > 0.5))
    assert got["f1"] == pytest.approx(f1_score(y, score > 0.5))
    assert got["log_loss"] == pytest.approx(log_loss(y, score), rel=1e-9)
    assert got["brier"] == pytest.approx(brier_score_loss(y, score), rel=1e-9)
    assert apply_calibration(None, np.array([1.2, -0.1])).tolist() == [1.0, 0.0]


def test_a_streamed_estimate_keeps_a_uniform_sample_for_its_band():
    rng = np.random.default_rng(4)
    # Chunks that differ (low scores first, high later): a sample of the first chunks only would show it.
    chunks = [rng.beta(2, 5, 30_000) for _ in range(3)] + [rng.beta(5, 2, 30_000) for _ in range(3)]
    score = np.concatenate(chunks)
    acc = CBPEAccumulator(band_rows=5_000, seed=1)
    for part in chunks:
        acc.update(part, part, part > 0.5)
    got = acc.estimate()
    sampled = acc._sample[0]
    assert sampled.size == 5_000 and abs(sampled.mean() - score.mean()) < 0.01
    assert abs((sampled > 0.5).mean() - (score > 0.5).mean()) < 0.03
    whole = cbpe(score, None)
    assert got["rows"] == whole["rows"] == score.size
    for name in ("roc_auc", "accuracy", "brier"):
        assert got["metrics"][name] == pytest.approx(whole["metrics"][name], rel=1e-9)
        assert got["lower"][name] < got["metrics"][name] < got["upper"][name], name
        width, expected = got["upper"][name] - got["lower"][name], whole["upper"][name] - whole["lower"][name]
        assert 0.7 * expected < width < 1.4 * expected, (name, width, expected)
    bare = CBPEAccumulator()
    bare.update(score, score, score > 0.5)
    assert np.isnan(bare.estimate()["lower"]["roc_auc"])


@pytest.mark.parametrize(
    ("trigger", "drift", "below", "retrain"),
    [
        ("drift", True, [False], True),
        ("drift", False, [True], False),
        ("estimated_performance", True, [False], False),
        ("estimated_performance", False, [True], True),
        ("both", True, [False], True),
        ("both", False, [True], True),
    ],
)
def test_retrain_decision_follows_the_trigger(pipeline_cfg, trigger, drift, below, retrain):
    cfg = pipeline_cfg(retrain={"trigger": trigger}, monitoring={"confirm_days": 1})
    assert retrain_decision(cfg, drift, below)["retrain"] is retrain


def test_an_estimate_needs_confirm_days_below_in_a_row(pipeline_cfg):
    cfg = pipeline_cfg(monitoring={"confirm_days": 2})
    assert not retrain_decision(cfg, False, [False, True])["retrain"]
    assert retrain_decision(cfg, False, [True, True])["retrain"]


# --- through monitor_batch: a real champion, lake and MLflow store -----------------------------------------


def make_cfg():
    return parse_pipeline(
        {
            "name": "impact",
            "source": {"uri": "file:///nowhere/*.csv"},
            "target": "y",
            "task": "classification",
            "id_column": "id",
            "segment_columns": ["segment"],
            "training": {
                "n_iter": 1,
                "cv_folds": 2,
                "candidates": [{"name": "lr", "estimator": "logistic_regression"}],
            },
            "evaluation": {"primary_metric": "roc_auc", "min_value": 0.7},
            "monitoring": {"confirm_days": 1},
        }
    )


def features(rng: np.random.Generator, n: int, *, first_id: int = 0, noise_shift: float = 0.0, joint: bool = False):
    """x1, x2 drive the label; ``noise`` the model ignores. ``joint``: x2 follows -x1 (each marginal unchanged,
    every row near the decision boundary)."""
    x1 = rng.normal(size=n)
    x2 = rng.normal(size=n)
    if joint:
        x2 = -0.97 * x1 + np.sqrt(1 - 0.97**2) * x2
    frame = pd.DataFrame(
        {
            "id": [f"r{first_id + i}" for i in range(n)],
            "x1": x1,
            "x2": x2,
            "noise": rng.normal(noise_shift, 1.0, size=n),
            "segment": rng.choice(["a", "b"], size=n),
        }
    )
    frame["y"] = (rng.random(n) < 1 / (1 + np.exp(-2.0 * (x1 + x2)))).astype(int)
    return frame


@pytest.fixture(scope="module")
def champion(mlflow_store):
    from airloop.model.train import prepare_split, train_candidate
    from airloop.store import promotions, registry

    cfg = make_cfg()
    split = prepare_split(cfg, features(np.random.default_rng(0), 3000), (mlflow_store / "split").as_uri())
    result = train_candidate(cfg, "lr", split)
    version = registry.register(cfg, result["model_uri"], result["run_id"])
    promotions.promote(cfg, version, reason="test setup", actor="test")
    return cfg, result


def put_batch(cfg, lake, day: str, frame: pd.DataFrame, *, labels_day: str | None = None):
    """The validated batch, its predictions by the champion, and (optionally) its labels arriving."""
    from airloop.serving.score import predict_frame
    from airloop.store import models, registry

    lk.write_parquet(lake.part("validated", day), frame.drop(columns=["y"]))
    champion = registry.get_version(cfg, "champion")
    model = models.load_version(cfg, champion.version)
    preds = predict_frame(cfg, model, frame.drop(columns=["y", "id"]))
    preds.insert(0, "id", frame["id"].to_numpy())
    preds["model_version"] = str(champion.version)
    lk.write_parquet(lake.part("predictions", day), preds)
    if labels_day:
        lk.write_parquet(lake.part("labels", labels_day), frame[["id", "y"]])


def test_training_logs_a_calibration_map_and_reliability_plot(champion):
    from mlflow.tracking import MlflowClient

    from airloop.model.calibration import load_calibration

    _, result = champion
    calibration = load_calibration(result["run_id"])
    assert calibration["method"] in ("platt", "isotonic", "none") and calibration["rows"] > 0
    artifacts = [a.path for a in MlflowClient().list_artifacts(result["run_id"], "calibration")]
    assert "calibration/reliability.png" in artifacts


def test_retrain_on_impact_not_on_a_harmless_shift(champion, tmp_path):
    from airloop.monitoring.monitor import monitor_batch, require_confirmed
    from airloop.store.lake import Lake

    cfg, _ = champion
    lake = Lake(cfg.name)
    rng = np.random.default_rng(5)
    # Day 1: a big shift of a feature the model ignores. Drift alerts; the estimate holds; no retrain.
    harmless = features(rng, 1500, first_id=10_000, noise_shift=3.0)
    put_batch(cfg, lake, "2026-02-01", harmless, labels_day="2026-02-02")
    day1 = monitor_batch(cfg, "2026-02-01", lake=lake)
    assert "noise" in day1["drifted_features"] and day1["confirmed"]
    assert day1["estimate"]["value"] == pytest.approx(day1["estimate"]["reference_value"], abs=0.03)
    assert not day1["estimate_below"] and not day1["retrain"]
    assert "does not hurt the model" in day1["impact"]
    with pytest.raises(Exception, match="no retraining"):
        require_confirmed(day1)
    # Day 2: every feature's distribution unchanged, rows moved to the decision boundary: the estimate drops.
    harmful = features(rng, 1500, first_id=20_000, joint=True)
    put_batch(cfg, lake, "2026-02-02", harmful)
    day2 = monitor_batch(cfg, "2026-02-02", lake=lake)
    assert day2["drifted_features"] == [], day2["summary"]
    assert day2["estimate"]["value"] < day2["estimate"]["reference_value"] - 0.1
    assert day2["retrain"] and "estimated roc_auc below its floor" in day2["trigger_reason"]
    assert require_confirmed(day2) is day2
    # Day 1's estimate now stands beside its realized value (the labels arrived on day 2).
    first = day2["estimates"][0]
    assert first["batch_id"] == "2026-02-01" and first["realized"] is not None
    assert abs(first["error"]) < 0.05
    # Per segment, with the gate's minimum rows.
    segments = {s["value"]: s for s in day2["estimate"]["segments"]}
    assert set(segments) == {"a", "b"} and all(s["judged"] and s["estimate"] is not None for s in segments.values())
    html = lk.read_bytes(day2["report_uri"]).decode()
    assert "Performance before labels" in html and "Estimated and realized, by batch" in html
    # The champion's model card (its registry description) carries the live section.
    from mlflow.tracking import MlflowClient

    from airloop.store import registry

    champion_version = registry.get_version(cfg, "champion")
    card = MlflowClient().get_model_version(cfg.registered_model_name, champion_version.version).description
    assert "## Live: estimated and realized performance" in card and "2026-02-01" in card
    assert card.count("## Live") == 1


def test_the_drift_trigger_would_have_retrained_on_the_harmless_shift(champion, tmp_path):
    from airloop.monitoring.monitor import monitor_batch
    from airloop.store.lake import Lake

    cfg, _ = champion
    drift_cfg = cfg.model_copy(update={"retrain": cfg.retrain.model_copy(update={"trigger": "drift"})})
    lake = Lake("impact_drift")
    rng = np.random.default_rng(6)
    put_batch(drift_cfg, lake, "2026-03-01", features(rng, 1500, first_id=30_000, noise_shift=3.0))
    verdict = monitor_batch(drift_cfg, "2026-03-01", lake=lake)
    assert verdict["retrain"] and verdict["trigger_reason"] == "drift confirmed"


def test_status_shows_the_estimate_and_the_realized_value_beside_it():
    from airloop.monitoring.status import estimated_performance
    from airloop.monitoring.status_text import render

    verdict = {
        "batch_id": "2026-01-08",
        "estimate": {
            "method": "cbpe",
            "metric": "roc_auc",
            "value": 0.79,
            "lower": 0.77,
            "upper": 0.81,
            "reference_value": 0.84,
        },
        "retrain": True,
        "trigger_reason": "estimated roc_auc below its floor on 2 day(s) in a row",
        "estimates": [{"batch_id": "2026-01-07", "estimate": 0.8, "realized": 0.78, "error": -0.02}],
    }
    est = estimated_performance(verdict)
    assert est["value"] == 0.79 and est["by_batch"][0]["realized"] == 0.78
    pipeline = {"registered_model": "m", "champion": None, "dag_runs": {}, "drift": None, "retrains": []}
    text = render(
        {"tracking_uri": "x", "lake_uri": "y", "pipelines": {"t": {**pipeline, "estimated_performance": est}}}
    )
    assert "estimate  2026-01-08: roc_auc 0.7900 (cbpe, holdout 0.84); last realized 0.7800 on 2026-01-07" in text
    assert estimated_performance({"batch_id": "x"}) is None
