"""airloop.model.evaluate, .gate, .infra and .promotion: the gate scores challenger and champion on the same frozen
holdout and records why; a promotion records who and why."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures.configs import pipeline_cfg

from airloop.config import parse_pipeline
from airloop.errors import NothingToDo
from airloop.store import lake as lk

LR = {"name": "lr", "estimator": "logistic_regression", "search_space": {"C": [1.0]}}


@pytest.fixture(scope="module")
def store(mlflow_store):
    """The module's MLflow store (tests/conftest.py: mlflow_store)."""
    return mlflow_store


def make_cfg(name="gate", **evaluation):
    training = {"n_iter": 1, "cv_folds": 2, "candidates": [LR]}
    keys = {"target": "y", "id_column": None, "event_time_column": None}
    return pipeline_cfg(name=name, training=training, evaluation=evaluation, **keys)


def make_frame(n=400, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "x1": rng.normal(size=n),
            "x2": rng.normal(size=n),
            "visits": rng.integers(0, 9, n),  # an int64 column: the fresh-process pyfunc must accept it
            "color": rng.choice(["red", "green", "blue"], n),
        }
    )
    frame["y"] = (frame["x1"] + (frame["color"] == "red") * 1.5 + rng.normal(scale=0.5, size=n)) > 0.5
    frame["y"] = frame["y"].astype(int)
    frame.loc[::11, "x2"] = np.nan
    frame.loc[::13, "color"] = None
    return frame


@pytest.fixture(scope="module")
def trained(store):
    """A good model and one trained on shuffled labels, sharing one frozen holdout."""
    from airloop.model.train import prepare_split, train_candidate

    cfg = make_cfg()
    split = prepare_split(cfg, make_frame(), (store / "split").as_uri())
    good = train_candidate(cfg, "lr", split)
    train = lk.read_parquet(split["train_uri"])
    shuffled = train.assign(y=np.random.default_rng(1).permutation(train["y"].to_numpy()))
    bad_split = {**split, "train_uri": lk.write_parquet((store / "shuffled.parquet").as_uri(), shuffled)}
    bad = train_candidate(cfg, "lr", bad_split)
    return {"good": good, "bad": bad, "split": split}


@pytest.fixture
def fast_infra(monkeypatch):
    """Skip the fresh-process load (seconds each) in gate-logic tests; it has its own tests below."""

    class NotRun:
        def result(self):
            return True, "not run here"

        def cancel(self):
            pass

    monkeypatch.setattr("airloop.model.infra.start_check", lambda uri, rows, expected: NotRun())


def champion_is(cfg, result):
    from airloop.store import promotions, registry

    version = registry.register(cfg, result["model_uri"], result["run_id"])
    promotions.promote(cfg, version, reason="test setup", actor="test")
    return version


def run_of(result):
    from mlflow.tracking import MlflowClient

    return MlflowClient().get_run(result["run_id"])


def test_first_model_is_blessed_registered_and_challenger(trained):
    import mlflow

    from airloop.model.evaluate import evaluate_challenger, require_blessed
    from airloop.store import registry

    cfg = make_cfg("gate_first")
    verdict = evaluate_challenger(cfg, trained["good"], run_info={"dag_id": "airloop_gate_evaluate"})
    assert verdict["blessed"] is True, verdict["summary"]
    assert verdict["version"] == "1" and require_blessed(verdict) == "1"
    assert str(registry.get_version(cfg, "challenger").version) == "1"
    assert verdict["champion_version"] is None and verdict["champion_metric"] is None and verdict["ci"] is None
    assert verdict["metric"] == "roc_auc"
    assert verdict["challenger_metric"] == pytest.approx(trained["good"]["test_metrics"]["roc_auc"])
    assert any(r.startswith("PASS infra: loads in a fresh process") for r in verdict["reasons"])
    assert any(r.startswith("PASS champion: no champion yet") for r in verdict["reasons"])
    base = verdict["baseline"]
    assert base["kind"] == "class prior" and base["value"] == pytest.approx(0.5)  # a constant score
    assert base["lower_bound"] > 0.2 and base["ci"][0] <= base["improvement"] <= base["ci"][1]
    assert base["interval_90"][0] == base["lower_bound"] < base["improvement"] < base["interval_90"][1]
    assert any(r.startswith("PASS baseline: roc_auc") and "class prior baseline" in r for r in verdict["reasons"])
    assert verdict["holdout_uri"] == trained["split"]["test_uri"]
    assert len(verdict["summary"].splitlines()) >= 4 and "BLESSED" in verdict["summary"]
    json.dumps({k: v for k, v in verdict.items()})  # XCom-safe

    tags = run_of(trained["good"]).data.tags
    assert tags["airloop.gate.verdict"] == "blessed"
    assert "PASS infra" in tags["airloop.gate.reasons"]
    assert tags["airloop.gate.dag_id"] == "airloop_gate_evaluate"
    saved = mlflow.artifacts.load_dict(f"runs:/{trained['good']['run_id']}/gate/verdict.json")
    assert saved["blessed"] is True and saved["reasons"] == verdict["reasons"]


def test_better_challenger_beats_the_champion_on_the_same_holdout(trained, fast_infra):
    from airloop.model.evaluate import evaluate_challenger
    from airloop.store import registry

    cfg = make_cfg("gate_better")
    old = champion_is(cfg, trained["bad"])
    verdict = evaluate_challenger(cfg, trained["good"])
    assert verdict["blessed"] is True, verdict["summary"]
    assert verdict["champion_version"] == old
    assert verdict["champion_metric"] == pytest.approx(trained["bad"]["test_metrics"]["roc_auc"])
    assert verdict["challenger_metric"] > verdict["champion_metric"] + 0.2
    low, high = verdict["ci"]
    assert 0 < low <= verdict["challenger_metric"] - verdict["champion_metric"] <= high
    assert any(r.startswith("PASS champion: roc_auc") and "better by" in r for r in verdict["reasons"])
    assert str(registry.get_version(cfg, "challenger").version) == verdict["version"] == "2"
    assert str(registry.get_version(cfg, "champion").version) == old  # promotion is the promote DAG's job


def test_clearly_worse_challenger_is_rejected_with_the_metric_and_both_values(trained, fast_infra):
    from mlflow.tracking import MlflowClient

    from airloop.model.evaluate import evaluate_challenger, require_blessed
    from airloop.store import registry

    cfg = make_cfg("gate_worse", tolerance=0.01)
    champion_is(cfg, trained["good"])
    verdict = evaluate_challenger(cfg, trained["bad"])
    assert verdict["blessed"] is False and verdict["version"] is None
    chall, champ = verdict["challenger_metric"], verdict["champion_metric"]
    assert chall < champ - 0.2
    failed = [r for r in verdict["reasons"] if r.startswith("FAIL champion")]
    assert len(failed) == 1
    assert "roc_auc" in failed[0] and f"{chall:.4f}" in failed[0] and f"{champ:.4f}" in failed[0]
    assert "tolerance 0.01" in failed[0]
    assert verdict["ci"][1] < 0
    assert "REJECTED" in verdict["summary"]
    assert run_of(trained["bad"]).data.tags["airloop.gate.verdict"] == "rejected"
    assert registry.get_version(cfg, "challenger") is None
    assert len(MlflowClient().search_model_versions(f"name='{cfg.registered_model_name}'")) == 1
    with pytest.raises(NothingToDo, match="rejected by the gate: FAIL baseline.*FAIL champion"):
        require_blessed(verdict)


def test_on_pure_noise_the_baseline_gate_refuses_the_first_champion(store, fast_infra):
    """Features and labels independent: no champion yet, but the model must not beat guessing by luck."""
    from airloop.model.evaluate import evaluate_challenger, require_blessed
    from airloop.model.train import prepare_split, train_candidate
    from airloop.store import registry

    rng = np.random.default_rng(5)
    noise = pd.DataFrame({f"x{i}": rng.normal(size=400) for i in range(5)}).assign(y=rng.integers(0, 2, 400))
    cfg = make_cfg("gate_noise")
    split = prepare_split(cfg, noise, (store / "noise").as_uri())
    verdict = evaluate_challenger(cfg, train_candidate(cfg, "lr", split))
    assert verdict["blessed"] is False and verdict["version"] is None
    assert registry.get_version(cfg, "challenger") is None
    failed = [r for r in verdict["reasons"] if r.startswith("FAIL")]
    assert len(failed) == 1 and failed[0].startswith("FAIL baseline: roc_auc"), verdict["reasons"]
    base = verdict["baseline"]
    assert f"{base['lower_bound']:+.4f}" in failed[0] and "must be > 0" in failed[0]
    assert base["lower_bound"] <= 0 and "class prior baseline" in verdict["summary"]
    with pytest.raises(NothingToDo, match="FAIL baseline"):
        require_blessed(verdict)


def test_regression_baseline_is_the_training_mean_and_noise_is_refused(store, fast_infra):
    from airloop.model.evaluate import evaluate_challenger
    from airloop.model.train import prepare_split, train_candidate

    rng = np.random.default_rng(6)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=400) for i in range(3)})
    cfg = parse_pipeline(
        {
            "name": "gate_reg",
            "source": {"uri": "file:///nowhere/*.csv"},
            "target": "y",
            "task": "regression",
            "training": {"n_iter": 1, "cv_folds": 2, "candidates": [{"name": "ridge", "estimator": "ridge"}]},
        }
    )
    signal = prepare_split(cfg, frame.assign(y=2 * frame["x0"] + rng.normal(size=400)), (store / "r1").as_uri())
    noise = prepare_split(cfg, frame.assign(y=rng.normal(size=400) + 10), (store / "r2").as_uri())
    good = evaluate_challenger(cfg, train_candidate(cfg, "ridge", signal))
    assert good["blessed"], good["summary"]
    assert good["baseline"]["kind"] == "training mean" and good["baseline"]["lower_bound"] > 0.5
    bad = evaluate_challenger(cfg.model_copy(update={"name": "gate_reg_noise"}), train_candidate(cfg, "ridge", noise))
    assert not bad["blessed"] and any(r.startswith("FAIL baseline: rmse") for r in bad["reasons"])


def test_min_value_failure_rejects_even_without_a_champion(trained, fast_infra):
    from airloop.model.evaluate import evaluate_challenger

    cfg = make_cfg("gate_min", min_value=0.999)
    verdict = evaluate_challenger(cfg, trained["good"])
    assert verdict["blessed"] is False
    failed = [r for r in verdict["reasons"] if r.startswith("FAIL")]
    assert failed == [f"FAIL min_value: roc_auc {verdict['challenger_metric']:.4f} < min_value 0.999"]


def test_candidate_from_run_rebuilds_the_select_best_dict(trained):
    from airloop.model.evaluate import candidate_from_run

    cand = candidate_from_run(make_cfg(), trained["good"]["run_id"])
    assert cand["model_uri"] == trained["good"]["model_uri"]
    assert cand["candidate"] == "lr" and cand["cv_score"] == pytest.approx(trained["good"]["cv_score"])
    assert cand["test_metrics"] == pytest.approx(trained["good"]["test_metrics"])


def test_infra_check_loads_in_a_fresh_process(trained):
    import mlflow

    from airloop.model.infra import infra_check

    rows = lk.read_parquet(trained["split"]["test_uri"])[["x1", "x2", "visits", "color"]].head(10)
    expected = list(mlflow.sklearn.load_model(trained["good"]["model_uri"]).predict(rows))
    passed, detail = infra_check(trained["good"]["model_uri"], rows, expected)
    assert passed, detail
    passed, detail = infra_check("models:/m-doesnotexist", rows, expected)
    assert not passed and "did not load or score in a fresh process" in detail


def test_a_started_infra_check_can_be_cancelled_and_leaves_no_process(trained):
    from airloop.model.infra import start_check

    rows = lk.read_parquet(trained["split"]["test_uri"])[["x1", "x2", "visits", "color"]].head(5)
    check = start_check(trained["good"]["model_uri"], rows, [0] * 5)
    folder = Path(check._tmp.name)
    assert folder.exists() and check._proc.poll() is None
    check.cancel()
    assert check._proc.poll() is not None and not folder.exists()


def test_infra_check_fails_on_order_dependence_or_mismatch(monkeypatch):
    from airloop.model.infra import infra_check

    outputs = {"n": 3, "predictions": [0, 1, 1], "restored": [0, 1, 0]}
    monkeypatch.setattr("airloop.model.infra.fresh_process_predictions", lambda uri, rows: outputs)
    passed, detail = infra_check("models:/m-x", pd.DataFrame(), [0, 1, 1])
    assert not passed and "change when the rows are shuffled" in detail
    outputs["restored"] = [0, 1, 1]
    passed, detail = infra_check("models:/m-x", pd.DataFrame(), [np.int64(0), np.int64(1), np.int64(0)])
    assert not passed and "differ from the in-process predictions" in detail
    assert infra_check("models:/m-x", pd.DataFrame(), [np.int64(0), np.int64(1), np.int64(1)])[0]


# ------------------------------------------------------------------------- the CI gate, slices, evidence


def test_vectorised_bootstrap_metrics_equal_sklearn_with_count_weights():
    from sklearn.metrics import average_precision_score, f1_score, log_loss, r2_score, roc_auc_score

    from airloop.model.gate import bootstrap_weights, weighted_metric

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    p = np.round(rng.random(300), 1)  # many ties
    scored = {"y_pred": (p > 0.5).astype(int), "y_proba": np.column_stack([1 - p, p]), "classes": np.array([0, 1])}
    W = bootstrap_weights(300, 25, seed=1)
    assert W.shape == (25, 300) and (W.sum(axis=1) == 300).all()
    checks = {
        "roc_auc": lambda w: roc_auc_score(y, p, sample_weight=w),
        "pr_auc": lambda w: average_precision_score(y, p, sample_weight=w),
        "f1": lambda w: f1_score(y, scored["y_pred"], sample_weight=w),
        "log_loss": lambda w: log_loss(y, scored["y_proba"], sample_weight=w),
        "brier": lambda w: np.average((p - y) ** 2, weights=w),
    }
    for metric, reference in checks.items():
        got = weighted_metric("classification", metric, y, scored, W)
        assert got == pytest.approx([reference(w) for w in W], abs=1e-12), metric
    yr = rng.normal(size=300)
    reg = {"y_pred": yr + rng.normal(scale=0.5, size=300)}
    got = weighted_metric("regression", "r2", yr, reg, W)
    assert got == pytest.approx([r2_score(yr, reg["y_pred"], sample_weight=w) for w in W])


def test_champion_check_decides_on_the_lower_confidence_bound_not_the_point_estimate():
    from airloop.model.gate import champion_check

    cfg = make_cfg("ci_rule")
    lucky = {"improvement": 0.012, "ci": [-0.004, 0.025], "bounds": [-0.002, 0.022], "resamples": 200}
    check = champion_check(cfg, "roc_auc", 0.812, 0.800, "3", lucky)
    assert not check["passed"], "better on the point estimate only: must not replace the champion"
    assert "better by 0.0120" in check["detail"] and "lower bound of the improvement -0.0020" in check["detail"]
    assert "must be > 0 (credibly better" in check["detail"]
    credible = {**lucky, "ci": [0.001, 0.025], "bounds": [0.003, 0.022]}
    assert champion_check(cfg, "roc_auc", 0.812, 0.800, "3", credible)["passed"]
    # a tolerance lets a credibly-not-much-worse challenger through (e.g. a simpler, cheaper model)
    tolerant = make_cfg("ci_rule_tol", tolerance=0.01)
    slightly_worse = {"improvement": -0.002, "ci": [-0.009, 0.004], "bounds": [-0.008, 0.003], "resamples": 200}
    assert champion_check(tolerant, "roc_auc", 0.798, 0.800, "3", slightly_worse)["passed"]
    assert not champion_check(cfg, "roc_auc", 0.798, 0.800, "3", slightly_worse)["passed"]


def test_a_challenger_equal_to_the_champion_keeps_the_champion_unless_tolerated(trained, fast_infra):
    from airloop.model.evaluate import evaluate_challenger

    cfg = make_cfg("gate_tie")
    champion_is(cfg, trained["good"])
    verdict = evaluate_challenger(cfg, trained["good"])  # the same model: improvement exactly 0
    assert verdict["improvement"] == 0 and verdict["ci"] == [0.0, 0.0] and verdict["lower_bound"] == 0
    assert not verdict["blessed"] and any(r.startswith("FAIL champion") for r in verdict["reasons"])
    tolerant = make_cfg("gate_tie_tol", tolerance=0.005)
    champion_is(tolerant, trained["good"])
    assert evaluate_challenger(tolerant, trained["good"])["blessed"]


def test_slice_check_fails_on_one_regressed_slice_and_ignores_tiny_ones():
    from airloop.model.gate import slice_check

    cfg = make_cfg("slices", slice_tolerance=0.05)
    cfg.segment_columns = ["region"]
    base = {"column": "region", "judged": True}
    slices = [
        {**base, "value": "north", "rows": 200, "challenger": 0.80, "champion": 0.78, "improvement": 0.02},
        {**base, "value": "south", "rows": 150, "challenger": 0.70, "champion": 0.79, "improvement": -0.09},
        {**base, "value": "islands", "rows": 12, "challenger": 0.2, "champion": 0.9, "improvement": -0.7},
    ]
    slices[2]["judged"] = False
    check = slice_check(cfg, "roc_auc", slices, has_champion=True)
    assert not check["passed"]
    assert "region=south (150 rows) 0.7000 vs 0.7900" in check["detail"] and "islands" not in check["detail"]
    assert "1 slices under 30 rows" in check["detail"]
    slices[1]["improvement"] = -0.04
    assert slice_check(cfg, "roc_auc", slices, has_champion=True)["passed"]


def test_verdict_has_slices_plots_model_card_and_the_production_window(trained, store, fast_infra):
    import mlflow
    from mlflow.tracking import MlflowClient

    from airloop.model.evaluate import evaluate_challenger
    from airloop.store.lake import Lake

    cfg = parse_pipeline(
        {
            "name": "evidence",
            "source": {"uri": "file:///nowhere/*.csv"},
            "target": "y",
            "task": "classification",
            "id_column": "cid",
            "segment_columns": ["color"],
            "training": {"n_iter": 1, "cv_folds": 2, "candidates": [LR]},
        }
    )
    # a labeled production day the models never trained on: features, predictions made, labels arrived
    lake = Lake(cfg.name)
    day = make_frame(n=300, seed=11).assign(cid=lambda f: [f"c{i}" for i in range(len(f))])
    lk.write_parquet(lake.part("validated", "2026-02-01"), day.drop(columns="y").assign(_batch_id="2026-02-01"))
    lk.write_parquet(lake.part("predictions", "2026-02-01"), day[["cid"]].assign(model_version="1"))
    lk.write_parquet(lake.part("labels", "2026-02-01"), day[["cid", "y"]])

    champion_is(cfg, trained["bad"])
    verdict = evaluate_challenger(cfg, trained["good"])
    assert verdict["blessed"], verdict["summary"]
    colors = {s["value"]: s for s in verdict["slices"] if s["column"] == "color"}
    assert {"red", "green", "blue", "(missing)"} == set(colors)
    assert sum(s["rows"] for s in colors.values()) == 80  # every holdout row in exactly one slice
    assert all(s["challenger"] is not None and s["champion"] is not None for s in colors.values())
    assert any(r.startswith("PASS slices: ") for r in verdict["reasons"])
    window = verdict["production_window"]
    assert window["rows"] == 300 and window["batches"] == ["2026-02-01"]
    assert window["challenger"] > window["champion"]
    assert any(r.startswith("PASS production_window: roc_auc") for r in verdict["reasons"])

    run_id = trained["good"]["run_id"]
    names = {a.path for a in MlflowClient().list_artifacts(run_id, "plots")}
    assert names == {
        f"plots/{n}.png" for n in ("roc", "precision_recall", "calibration", "confusion_matrix", "feature_importance")
    }
    card = mlflow.artifacts.load_text(f"runs:/{run_id}/model_card.md")
    for heading in ("## Intended use", "## Data", "## Metrics", "## Slices", "## Gate verdict: BLESSED", "## Lineage"):
        assert heading in card, heading
    assert "| color | red |" in card and verdict["reasons"][0] in card and run_id in card
    assert "Against the trivial baseline (class prior)" in card
    assert verdict["explanations"]["explainer"] == "linear"
    top = [d["feature"] for d in verdict["explanations"]["top"]]
    assert top[0] in {"x1", "color"} and "## Explanations (SHAP)" in card and f"| {top[0]} |" in card
    shap_files = {a.path for a in MlflowClient().list_artifacts(run_id, "explanations")}
    assert shap_files == {"explanations/shap_global.json", "explanations/shap_importance.png"}
    conformal = verdict["conformal"]
    assert conformal["coverage_declared"] == 0.9 and conformal["test_rows"] == 40
    assert "## Uncertainty (conformal)" in card and f"measured {conformal['coverage_measured']:.1%}" in card
    mv = MlflowClient().get_model_version(cfg.registered_model_name, verdict["version"])
    assert mv.description.startswith(f"# Model card: airloop-evidence v{verdict['version']}")
    assert mv.tags["airloop.model_card"] == verdict["model_card_uri"] == f"runs:/{run_id}/model_card.md"
    assert mv.tags["airloop.gate.verdict_uri"] == verdict["verdict_uri"]
    assert float(mv.tags["airloop.conformal.threshold"]) == pytest.approx(conformal["threshold"], abs=1e-6)
    saved = mlflow.artifacts.load_dict(verdict["verdict_uri"])
    assert saved["model_card_uri"] == verdict["model_card_uri"] and saved["slices"] == verdict["slices"]


def test_worse_challenger_fails_the_production_window_too(trained, fast_infra):
    from airloop.model.evaluate import evaluate_challenger
    from airloop.store.lake import Lake

    cfg = parse_pipeline(
        {
            "name": "window_worse",
            "source": {"uri": "file:///nowhere/*.csv"},
            "target": "y",
            "task": "classification",
            "id_column": "cid",
            "training": {"n_iter": 1, "cv_folds": 2, "candidates": [LR]},
        }
    )
    lake = Lake(cfg.name)
    day = make_frame(n=300, seed=12).assign(cid=lambda f: [f"c{i}" for i in range(len(f))])
    lk.write_parquet(lake.part("validated", "2026-02-02"), day.drop(columns="y").assign(_batch_id="2026-02-02"))
    lk.write_parquet(lake.part("predictions", "2026-02-02"), day[["cid"]].assign(model_version="1"))
    lk.write_parquet(lake.part("labels", "2026-02-02"), day[["cid", "y"]])
    champion_is(cfg, trained["good"])
    verdict = evaluate_challenger(cfg, trained["bad"])
    failed = [r.split(":")[0] for r in verdict["reasons"] if r.startswith("FAIL")]
    # shuffled labels are no better than the class prior either
    assert failed == ["FAIL baseline", "FAIL champion", "FAIL production_window"], verdict["reasons"]


@pytest.mark.parametrize(
    ("reason", "approval", "actor", "recorded"),
    [
        ("", None, "airloop-gate", "blessed by the gate"),
        ("", {"approved_by": "ana", "decision": "Approve"}, "ana", "approved in Airflow"),
        ("hotfix", {"approved_by": "ana", "decision": "Approve"}, "ana", "hotfix"),
        ("hotfix", None, "airloop-gate", "hotfix"),
    ],
)
def test_promotion_records_the_approver_else_the_gate_and_a_default_reason(
    monkeypatch, reason, approval, actor, recorded
):
    from airloop.model import promotion

    calls = []
    monkeypatch.setattr("airloop.store.promotions.promote", lambda cfg, version, **kw: calls.append((version, kw)))
    promotion.promote_challenger(make_cfg(), "3", reason=reason, approval=approval)
    assert calls == [("3", {"reason": recorded, "actor": actor, "approval": approval, "check_gate": True})]


def test_only_a_rejection_is_recorded(monkeypatch):
    from airloop.model import promotion

    calls = []
    monkeypatch.setattr("airloop.store.promotions.record_rejection", lambda cfg, v, d: calls.append((v, d)) or d)
    assert promotion.record_if_rejected(make_cfg(), "", None) is None
    assert promotion.record_if_rejected(make_cfg(), "3", {"decision": "Approve", "approved_by": "ana"}) is None
    rejected = {"decision": "Reject", "approved_by": "ana"}
    assert promotion.record_if_rejected(make_cfg(), "3", rejected) == rejected
    assert calls == [("3", rejected)]
