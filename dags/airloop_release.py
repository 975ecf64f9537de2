"""Evaluate, promote and roll back, per pipeline, chained by Assets.

trained --> evaluate (gate) --[challenger, only when blessed]--> promote (champion; optionally approved by a person)
rollback (manual) restores an earlier champion with a recorded reason.
A task returning a dict pushes it as one XCom (`multiple_outputs=False`; for a `-> dict` task Airflow also
pushes each key by default, one Execution API call each: 15 for a gate verdict).
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from airloop.orchestration.dagkit import (
    approval_decision,
    approval_task,
    asset,
    call,
    dag_args,
    optional_text,
    pipelines,
    run_info,
    trigger_extra,
)

configs, _ = pipelines()


def release_dags(cfg) -> None:
    """Wire this file's DAGs for one pipeline."""
    trained, challenger = asset(cfg, "trained"), asset(cfg, "challenger")

    @dag(
        **dag_args(
            cfg,
            "evaluate",
            "Scores the new model and the champion on the same frozen holdout and "
            "applies the gate; a blessed model is registered with alias `challenger`.",
            schedule=[trained],
            params={"train_run_id": optional_text("MLflow run id of the trained model; empty: from the trigger")},
        )
    )
    def evaluate_dag():
        @task(multiple_outputs=False)
        def evaluate(**context) -> dict:
            from airloop.model import evaluate as stage

            candidate = stage.candidate_from_run(cfg, trigger_extra(context, trained, "train_run_id"))
            return call(stage.evaluate_challenger, cfg, candidate, run_info=run_info(context))

        @task(outlets=[challenger])
        def publish_challenger(verdict: dict, **context) -> str:
            from airloop.model import evaluate as stage

            version = call(stage.require_blessed, verdict)
            context["outlet_events"][challenger].extra = {"version": version}
            return version

        publish_challenger(evaluate())

    approval = cfg.promotion.approval == "required"

    @dag(
        **dag_args(
            cfg,
            "promote",
            "Moves alias `champion` to the blessed challenger (stages mirrored) and records who, when and why"
            + (" after a person approves it (Required Actions)." if approval else "."),
            schedule=[challenger],
            params={
                "version": optional_text("model version to promote; empty: the triggering challenger"),
                "reason": optional_text("why (recorded); empty: the gate's or the approver's decision"),
            },
        )
    )
    def promote_dag():
        @task(multiple_outputs=False)
        def promote(**context) -> dict:
            from airloop.model import promotion

            version = str(trigger_extra(context, challenger, "version"))
            decision = approval_decision(context, "approve") if approval else None
            reason = context["params"]["reason"] or ""
            return call(promotion.promote_challenger, cfg, version, reason=reason, approval=decision)

        if not approval:
            promote()
            return

        @task(multiple_outputs=False)
        def evidence(**context) -> dict:
            from airloop.store import registry

            return call(registry.promotion_evidence, cfg, str(trigger_extra(context, challenger, "version")))

        @task(trigger_rule="all_done", multiple_outputs=False)
        def record_rejection(**context) -> dict | None:
            from airloop.model import promotion

            decision = approval_decision(context, "approve")
            # No decision (the approval never ran): nothing to record, and the version may not be known.
            version = str(trigger_extra(context, challenger, "version")) if decision else ""
            return call(promotion.record_if_rejected, cfg, version, decision)

        gate = approval_task(cfg, "evidence")
        evidence() >> gate >> promote() >> record_rejection()

    @dag(
        **dag_args(
            cfg,
            "rollback",
            "Restores an earlier champion: `to_version`, else the previous champion in the promotion log. "
            "`reason` is required and recorded. Same as `airloop rollback NAME [--to VERSION] --reason ...`.",
            schedule=None,
            params={
                "to_version": optional_text("version to restore; empty: the previous champion"),
                "reason": Param(type="string", minLength=1, description="why (required, recorded)"),
            },
        )
    )
    def rollback_dag():
        @task(multiple_outputs=False)
        def rollback(**context) -> dict:
            from airloop.store import promotions

            user = getattr(context["dag_run"], "triggering_user_name", None) or "airflow"
            p = context["params"]
            return call(promotions.rollback, cfg, p["to_version"] or None, reason=p["reason"], actor=user)

        rollback()

    evaluate_dag()
    promote_dag()
    rollback_dag()


for cfg in configs:
    release_dags(cfg)
