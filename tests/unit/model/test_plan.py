import pandas as pd
import pytest

from airloop.model.plan import check_guards, record_retrain, retrain_log, training_frame, window_batches
from airloop.store import lake as lk
from airloop.store.lake import Lake


def guards(pipeline_cfg, **retrain):
    return pipeline_cfg(
        retrain={
            "cooldown_days": 3,
            "max_retrains": 2,
            "max_retrains_window_days": 30,
            "max_failed_in_row": 2,
            **retrain,
        }
    )


def test_cooldown_refuses_then_allows(pipeline_cfg):
    cfg = guards(pipeline_cfg)
    log = [{"batch_id": "2026-01-05", "train_run_id": "r1"}]
    refused = check_guards(cfg, "2026-01-07", log, {"r1": "promoted"})
    assert refused["guard"] == "cooldown" and not refused["allowed"] and "2 day(s)" in refused["reason"]
    assert check_guards(cfg, "2026-01-08", log, {"r1": "promoted"})["allowed"]


def test_max_retrains_per_window(pipeline_cfg):
    cfg = guards(pipeline_cfg, max_failed_in_row=5)
    log = [{"batch_id": "2026-01-01", "train_run_id": "a"}, {"batch_id": "2026-01-10", "train_run_id": "b"}]
    verdict = check_guards(cfg, "2026-01-20", log, {"a": "promoted", "b": "promoted"})
    assert verdict["guard"] == "max_retrains" and "2 retrains" in verdict["reason"]
    assert check_guards(cfg, "2026-02-05", log, {})["allowed"]  # the first one left the 30-day window


def test_stop_after_failures_in_a_row(pipeline_cfg):
    cfg = guards(pipeline_cfg, max_retrains=10)
    log = [{"batch_id": "2026-01-01", "train_run_id": "a"}, {"batch_id": "2026-01-05", "train_run_id": "b"}]
    verdict = check_guards(cfg, "2026-01-09", log, {"a": "rejected", "b": "rejected"})
    assert verdict["guard"] == "failed_in_row" and "force=true" in verdict["reason"]
    assert check_guards(cfg, "2026-01-09", log, {"a": "rejected", "b": "promoted"})["allowed"]


def test_retrain_log_replaces_same_batch(tmp_path):
    lake = Lake("t", root=tmp_path.as_uri())
    record_retrain(lake, {"batch_id": "2026-01-05"})
    record_retrain(lake, {"batch_id": "2026-01-05", "train_run_id": "r"})
    assert retrain_log(lake) == [{"batch_id": "2026-01-05", "train_run_id": "r"}]


def test_window_and_training_frame_join_delayed_labels(tmp_path, pipeline_cfg):
    cfg = pipeline_cfg(retrain={"window_days": 2, "reference_rows": 1})
    lake = Lake("t", root=tmp_path.as_uri())
    for i, day in enumerate(["2026-01-01", "2026-01-02", "2026-01-03"]):
        frame = pd.DataFrame(
            {"customer_id": [f"C{i}a", f"C{i}b"], "x": [i, i], "_batch_id": day, "event_time": pd.Timestamp(day)}
        )
        lk.write_parquet(lake.part("validated", day), frame)
    lk.write_parquet(
        lake.part("labels", "2026-01-03"),
        pd.DataFrame({"customer_id": ["C0a", "C0b", "C1a", "C2b"], "churned": [0, 1, 1, 0]}),
    )
    recent, older = window_batches(cfg, lake, "2026-01-03")
    assert recent == ["2026-01-02", "2026-01-03"] and older == ["2026-01-01"]
    frame = training_frame(cfg, lake, recent, older)
    # recent labeled rows (C1a, C2b) + one sampled older row; C1b and C2a have no label yet
    assert len(frame) == 3 and set(frame["customer_id"]) >= {"C1a", "C2b"}
    assert frame["event_time"].is_monotonic_increasing


def test_no_labels_at_all_is_a_clear_error(tmp_path, pipeline_cfg):
    from airloop.data.datasets import DatasetError

    lake = Lake("t", root=tmp_path.as_uri())
    lk.write_parquet(lake.part("validated", "2026-01-01"), pd.DataFrame({"customer_id": ["a"], "x": [1]}))
    with pytest.raises(DatasetError, match="target column 'churned'"):
        training_frame(pipeline_cfg(), lake, ["2026-01-01"], [])


# --- each guard through the retrain plan (the function the retrain DAG calls), with real MLflow gate tags ---


def _planned_lake(tmp_path, days):
    lake = Lake("t", root=tmp_path.as_uri())
    for day in days:
        lk.write_parquet(lake.part("validated", day), pd.DataFrame({"customer_id": [day], "x": [1]}))
    return lake


def _gate_run(verdict: str) -> str:
    """A finished MLflow run whose gate verdict is ``verdict`` ("blessed" or "rejected")."""
    import mlflow

    from airloop.store import tracking

    tracking.configure_mlflow()
    with mlflow.start_run() as run:
        mlflow.set_tag("airloop.gate.verdict", verdict)
    return run.info.run_id


@pytest.mark.parametrize(
    ("earlier", "verdicts", "day", "guard", "overrides"),
    [
        (["2026-01-10"], ["blessed"], "2026-01-12", "cooldown", {}),
        (["2026-01-01", "2026-01-10"], ["blessed", "blessed"], "2026-01-20", "max_retrains", {}),
        (["2026-01-01", "2026-01-05"], ["rejected", "rejected"], "2026-01-09", "failed_in_row", {"max_retrains": 10}),
    ],
)
def test_plan_retrain_refuses_by_each_guard_and_force_overrides(
    mlflow_store, tmp_path, pipeline_cfg, earlier, verdicts, day, guard, overrides
):
    from airloop.model.plan import RetrainRefused, plan_retrain

    cfg = guards(pipeline_cfg, **overrides)  # cooldown 3 days, 2 retrains per 30 days, stop after 2 failures in a row
    lake = _planned_lake(tmp_path, ["2026-01-01", "2026-01-05", "2026-01-09", "2026-01-10", "2026-01-12", day])
    for batch, verdict in zip(earlier, verdicts, strict=True):
        record_retrain(lake, {"batch_id": batch, "train_run_id": _gate_run(verdict)})
    with pytest.raises(RetrainRefused, match=f"refused by guard {guard}"):
        plan_retrain(cfg, lake, day)
    assert [e["batch_id"] for e in retrain_log(lake)] == earlier  # a refused retrain is not recorded
    plan = plan_retrain(cfg, lake, day, force=True)
    assert plan["reason"] == "forced" and plan["batch_id"] == day
    entry = retrain_log(lake)[-1]
    assert entry["batch_id"] == day and entry["forced"] and entry["guards"]["guard"] == guard


def test_plan_retrain_allows_and_records_when_the_guards_pass(mlflow_store, tmp_path, pipeline_cfg):
    from airloop.model.plan import plan_retrain

    cfg = guards(pipeline_cfg, window_days=2)
    lake = _planned_lake(tmp_path, ["2026-01-01", "2026-01-05", "2026-01-06"])
    record_retrain(lake, {"batch_id": "2026-01-01", "train_run_id": _gate_run("rejected")})
    plan = plan_retrain(cfg, lake, "2026-01-06")
    assert plan["recent"] == ["2026-01-05", "2026-01-06"] and plan["older"] == ["2026-01-01"]
    assert plan["reason"] == "all guards passed"
    assert retrain_log(lake)[-1]["guards"] == {"allowed": True, "guard": None, "reason": "all guards passed"}


@pytest.mark.parametrize("kind", ["initial", "retrain"])
def test_finish_training_selects_the_best_and_records_a_retrains_run(tmp_path, pipeline_cfg, monkeypatch, kind):
    from airloop.model.plan import finish_training

    cfg = guards(pipeline_cfg)
    lake = _planned_lake(tmp_path, ["2026-01-05"])
    record_retrain(lake, {"batch_id": "2026-01-05", "forced": False})
    results = [{"run_id": "r1", "cv_score": 0.7}, {"run_id": "r2", "cv_score": 0.9}]
    monkeypatch.setattr("airloop.model.train.select_best", lambda cfg, rs: max(rs, key=lambda r: r["cv_score"]))
    split = {"plan": {"kind": kind, "batch_id": "2026-01-05"}}
    assert finish_training(cfg, lake, split, results)["run_id"] == "r2"
    assert retrain_log(lake)[-1].get("train_run_id") == ("r2" if kind == "retrain" else None)
