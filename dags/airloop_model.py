"""Train, retrain, evaluate and promote, per pipeline, chained by Assets.

validated --> train (first model) --[trained]--> evaluate (gate) --[challenger]--> promote (champion)
drift (confirmed) --> retrain (guarded) --[trained]--> evaluate --> promote
Each candidate model is one dynamically mapped task, so candidates spread over workers.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from airloop.dagkit import (
    approval_decision,
    approval_task,
    asset,
    batch_ids,
    batch_param,
    call,
    dag_args,
    pipelines,
    run_info,
    trigger_extra,
)

configs, _ = pipelines()


def training_tasks(cfg, plan, trained):
    """prepare data → one mapped task per candidate → select the best (emits `trained`)."""

    @task
    def prepare(plan: dict) -> dict:
        from airloop import retrain
        from airloop.lake import Lake

        return call(retrain.prepare_training, cfg, Lake(cfg.name), plan)

    @task
    def candidates() -> list[str]:
        from airloop.train import default_candidates

        return [c.name for c in (cfg.training.candidates or default_candidates(cfg.task))]

    @task(map_index_template="{{ task.op_kwargs['candidate'] }}")
    def train_candidate(candidate: str, split: dict, **context) -> dict:
        from airloop import train

        return call(train.train_candidate, cfg, candidate, split, run_info=run_info(context))

    @task(outlets=[trained])
    def select_best(results: list[dict], split: dict, **context) -> dict:
        from airloop import retrain, train
        from airloop.lake import Lake

        best = call(train.select_best, cfg, list(results))
        if split["plan"]["kind"] == "retrain":
            retrain.finish_retrain(Lake(cfg.name), split["plan"]["batch_id"], best["run_id"])
        context["outlet_events"][trained].extra = {"train_run_id": best["run_id"]}
        return best

    split = prepare(plan)
    select_best(train_candidate.partial(split=split).expand(candidate=candidates()), split)


def model_dags(cfg) -> None:
    """Wire this file's DAGs for one pipeline."""
    validated, trained = asset(cfg, "validated"), asset(cfg, "trained")
    challenger, drift = asset(cfg, "challenger"), asset(cfg, "drift")

    @dag(
        **dag_args(
            cfg,
            "train",
            "Trains the first model on all validated data (later models come from the "
            "drift-triggered retrain DAG; `force` trains anyway).",
            schedule=[validated],
            params={"batch_id": batch_param(), "force": Param(False, type="boolean")},
        )
    )
    def train_dag():
        @task
        def plan(**context) -> dict:
            from airloop import retrain
            from airloop.lake import Lake

            last = batch_ids(context, validated)[-1]
            return call(retrain.plan_initial, cfg, Lake(cfg.name), last, force=context["params"]["force"])

        training_tasks(cfg, plan(), trained)

    @dag(
        **dag_args(
            cfg,
            "retrain",
            "Retrains on recent data plus a reference sample when drift is confirmed, "
            "if the guards (cooldown, max retrains, failures in a row) allow.",
            schedule=[drift],
            params={"batch_id": batch_param(), "force": Param(False, type="boolean", description="Bypass the guards")},
        )
    )
    def retrain_dag():
        @task
        def guarded_plan(**context) -> dict:
            from airloop import retrain
            from airloop.lake import Lake

            last = batch_ids(context, drift)[-1]
            return call(retrain.plan_retrain, cfg, Lake(cfg.name), last, force=context["params"]["force"])

        training_tasks(cfg, guarded_plan(), trained)

    @dag(
        **dag_args(
            cfg,
            "evaluate",
            "Scores the new model and the champion on the same frozen holdout and "
            "applies the gate; a blessed model is registered with alias `challenger`.",
            schedule=[trained],
            params={"train_run_id": Param("", type="string")},
        )
    )
    def evaluate_dag():
        @task
        def evaluate(**context) -> dict:
            from airloop import evaluate as stage

            candidate = stage.candidate_from_run(cfg, trigger_extra(context, trained, "train_run_id"))
            return call(stage.evaluate_challenger, cfg, candidate, run_info=run_info(context))

        @task(outlets=[challenger])
        def publish_challenger(verdict: dict, **context) -> str:
            from airloop import evaluate as stage

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
            params={"version": Param("", type="string"), "reason": Param("", type="string")},
        )
    )
    def promote_dag():
        @task
        def promote(**context) -> dict:
            from airloop import registry

            version = str(trigger_extra(context, challenger, "version"))
            decision = approval_decision(context, "approve") if approval else None
            actor = decision["approved_by"] if decision else "airloop-gate"
            reason = context["params"]["reason"] or ("approved in Airflow" if decision else "blessed by the gate")
            return call(registry.promote, cfg, version, reason=reason, actor=actor, approval=decision)

        if not approval:
            promote()
            return

        @task
        def evidence(**context) -> dict:
            from airloop import registry

            return call(registry.promotion_evidence, cfg, str(trigger_extra(context, challenger, "version")))

        @task(trigger_rule="all_done")
        def record_rejection(**context) -> dict | None:
            from airloop import registry

            decision = approval_decision(context, "approve")
            if decision is None or decision["decision"] == "Approve":
                return None
            version = str(trigger_extra(context, challenger, "version"))
            return call(registry.record_rejection, cfg, version, decision)

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
                "to_version": Param("", type="string", description="empty: the previous champion"),
                "reason": Param("", type="string", description="why (required, recorded)"),
            },
        )
    )
    def rollback_dag():
        @task
        def rollback(**context) -> dict:
            from airloop import registry

            user = getattr(context["dag_run"], "triggering_user_name", None) or "airflow"
            p = context["params"]
            return call(registry.rollback, cfg, p["to_version"] or None, reason=p["reason"], actor=user)

        rollback()

    train_dag()
    retrain_dag()
    evaluate_dag()
    promote_dag()
    rollback_dag()


for cfg in configs:
    model_dags(cfg)
