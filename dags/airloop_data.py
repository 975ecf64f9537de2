r"""Ingest and validate, per pipeline: raw batches land in the lake, and only validated data flows on.

ingest (scheduled) --[raw]--> validate --[validated]--> score
                                     \--[first-model, only while there is no champion]--> train
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from airloop.orchestration.dagkit import (
    alias,
    asset,
    batch_ids,
    batch_param,
    call,
    connection_dict,
    dag_args,
    invalid_pipeline_dag,
    pipelines,
    run_info,
    schedule,
)

configs, invalid = pipelines()


def data_dags(cfg) -> None:
    """Wire this file's DAGs for one pipeline."""
    raw, validated = asset(cfg, "raw"), asset(cfg, "validated")
    first_model, first_model_alias = asset(cfg, "first-model"), alias(cfg, "first-model")

    @dag(
        **dag_args(
            cfg,
            "ingest",
            "Copies the data interval's source files to `raw/` as received, stages them "
            "as Parquet and writes the batch manifest. Also brings in delayed labels.",
            schedule=schedule(cfg.schedule.ingest),
            params={
                "batch_id": batch_param(),
                "history": Param(
                    False, type="boolean", description="Take every row up to the end of the batch's day (history)"
                ),
            },
        )
    )
    def ingest_dag():
        @task(outlets=[raw])
        def ingest(**context) -> list[dict]:
            from airloop.data import ingest as stage

            out, conn = [], connection_dict(cfg.source.connection)
            history = bool(context["params"].get("history"))
            for batch in batch_ids(context):
                call(stage.ingest_labels, cfg, batch, connection=conn)
                info = run_info(context)
                out.append(call(stage.ingest_batch, cfg, batch, run_info=info, connection=conn, history=history))
            context["outlet_events"][raw].extra = {"batch_ids": [r["batch_id"] for r in out]}
            return out

        ingest()

    @dag(
        **dag_args(
            cfg,
            "validate",
            "Validates staged batches with the pipeline's Great Expectations suite. "
            "Critical failures quarantine the batch and fail; warnings pass and are recorded. "
            "Set `batch_id` to validate a given batch again; with `replay`, a quarantined batch is "
            "revalidated with the current suite and, if it passes, flows on as if it had arrived clean.",
            schedule=[raw],
            params={
                "batch_id": batch_param(),
                "replay": Param(False, type="boolean", description="Revalidate a quarantined batch"),
            },
        )
    )
    def validate_dag():
        @task(outlets=[validated, first_model_alias])
        def validate(**context) -> list[dict]:
            from airloop.data import validate as stage
            from airloop.model.plan import wants_first_model

            replay = bool(context["params"].get("replay"))
            out = []
            for batch in batch_ids(context, raw):
                out.append(call(stage.validate_batch, cfg, batch, run_info=run_info(context), replay=replay))
            extra = {"batch_ids": [r["batch_id"] for r in out]}
            context["outlet_events"][validated].extra = extra
            if wants_first_model(cfg):  # no champion yet: start the train DAG
                context["outlet_events"][first_model_alias].add(first_model, extra=extra)
            return out

        validate()

    ingest_dag()
    validate_dag()


for cfg in configs:
    data_dags(cfg)

for stem, message in invalid.items():
    invalid_pipeline_dag(stem, message)
