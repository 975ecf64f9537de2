"""Train and retrain, per pipeline, chained by Assets (evaluation and promotion: airloop_release.py).

first-model (from validate, only while there is no champion) --> train --[trained]--> evaluate
drift (confirmed) --> retrain (guarded) --[trained]--> evaluate
Each DAG: prepare (plan and frozen split) → train_candidate (one mapped task per candidate, so candidates
spread over workers) → select_best.
A task returning a dict pushes it as one XCom (`multiple_outputs=False`; for a `-> dict` task Airflow also
pushes each key by default, one Execution API call each: 15 for a gate verdict).
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from airloop.model.candidates import candidate_names
from airloop.orchestration.dagkit import asset, batch_ids, batch_param, call, dag_args, pipelines, run_info

configs, _ = pipelines()


def training_tasks(cfg, split, trained):
    """One mapped task per candidate (named by the pipeline, at parse time) → select the best (emits `trained`).
    ``split`` is the DAG's first task, `prepare`: its plan and frozen split in one task (a task boundary costs
    about half a second under the scheduler). Nothing to train (prepare skipped): the whole run is skipped."""

    @task(map_index_template="{{ task.op_kwargs['candidate'] }}", multiple_outputs=False)
    def train_candidate(candidate: str, split: dict, **context) -> dict:
        from airloop.model import train

        return call(train.train_candidate, cfg, candidate, split, run_info=run_info(context))

    @task(outlets=[trained], multiple_outputs=False)
    def select_best(results: list[dict], split: dict, **context) -> dict:
        from airloop.model import plan as stage
        from airloop.store.lake import Lake

        best = call(stage.finish_training, cfg, Lake(cfg.name), split, list(results))
        context["outlet_events"][trained].extra = {"train_run_id": best["run_id"]}
        return best

    select_best(train_candidate.partial(split=split).expand(candidate=candidate_names(cfg)), split)


def model_dags(cfg) -> None:
    """Wire this file's DAGs for one pipeline."""
    first_model, trained, drift = asset(cfg, "first-model"), asset(cfg, "trained"), asset(cfg, "drift")

    @dag(
        **dag_args(
            cfg,
            "train",
            "Trains the first model on all validated data (later models come from the "
            "drift-triggered retrain DAG; `force` trains anyway).",
            schedule=[first_model],
            params={"batch_id": batch_param(), "force": Param(False, type="boolean")},
        )
    )
    def train_dag():
        @task(multiple_outputs=False)
        def prepare(**context) -> dict:
            from airloop.model import plan as stage
            from airloop.store.lake import Lake

            last = batch_ids(context, first_model)[-1]
            return call(stage.prepare_initial, cfg, Lake(cfg.name), last, force=context["params"]["force"])

        training_tasks(cfg, prepare(), trained)

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
        @task(multiple_outputs=False)
        def prepare(**context) -> dict:
            from airloop.model import plan as stage
            from airloop.store.lake import Lake

            last = batch_ids(context, drift)[-1]
            return call(stage.prepare_retrain, cfg, Lake(cfg.name), last, force=context["params"]["force"])

        training_tasks(cfg, prepare(), trained)

    train_dag()
    retrain_dag()


for cfg in configs:
    model_dags(cfg)
