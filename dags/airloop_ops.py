"""Score and monitor, per pipeline.

validated --> score (champion) ; monitor (scheduled) --[drift, only when confirmed]--> retrain
A task returning a dict pushes it as one XCom (`multiple_outputs=False`; for a `-> dict` task Airflow also
pushes each key by default, one Execution API call each: 15 for a gate verdict).
"""

from __future__ import annotations

from airflow.sdk import dag, task

from airloop.orchestration.dagkit import (
    asset,
    batch_ids,
    batch_param,
    call,
    dag_args,
    drift_alert_notifier,
    pipelines,
    run_info,
    schedule,
)

configs, _ = pipelines()


def ops_dags(cfg) -> None:
    """Wire this file's DAGs for one pipeline."""
    validated, predictions, drift = asset(cfg, "validated"), asset(cfg, "predictions"), asset(cfg, "drift")

    @dag(
        **dag_args(
            cfg,
            "score",
            "Scores each new validated batch with `models:/NAME@champion` and writes "
            "predictions (with prediction id and model version) to the lake.",
            schedule=[validated],
            params={"batch_id": batch_param()},
        )
    )
    def score_dag():
        @task(outlets=[predictions])
        def score(**context) -> list[dict]:
            from airloop.serving import score as stage

            out = [call(stage.score_batch, cfg, b, run_info=run_info(context)) for b in batch_ids(context, validated)]
            context["outlet_events"][predictions].extra = {"batch_ids": [r["batch_id"] for r in out]}
            return out

        score()

    @dag(
        **dag_args(
            cfg,
            "monitor",
            "Measures feature and prediction drift of the day's batch against the "
            "champion's training reference, the estimated performance before labels (CBPE/DLE), and the "
            "live metric once labels arrive. Emits the drift Asset (which triggers retraining) only when "
            "`retrain.trigger` fires (confirmed drift and/or an estimated drop), and then alerts (log, and a "
            "webhook when `monitoring.alert_connection` is set).",
            schedule=schedule(cfg.schedule.monitor),
            params={"batch_id": batch_param()},
        )
    )
    def monitor_dag():
        @task(multiple_outputs=False)
        def monitor(**context) -> dict:
            from airloop.monitoring import monitor as stage

            return call(stage.monitor_batch, cfg, batch_ids(context)[-1], run_info=run_info(context))

        @task(outlets=[drift], on_success_callback=drift_alert_notifier(cfg), multiple_outputs=False)
        def alert_confirmed_drift(verdict: dict, **context) -> dict:
            from airloop.monitoring import monitor as stage

            call(stage.require_confirmed, verdict)
            context["outlet_events"][drift].extra = {
                "batch_id": verdict["batch_id"],
                "features": verdict["drifted_features"],
            }
            return {"batch_id": verdict["batch_id"], "features": verdict["drifted_features"]}

        alert_confirmed_drift(monitor())

    score_dag()
    monitor_dag()


for cfg in configs:
    ops_dags(cfg)
