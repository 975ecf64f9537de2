"""What ``airloop status`` reads from MLflow's store: model versions and their runs, the last gate verdict, the
experiments. (What it reads from Airflow's metadata DB, the last run of each stage DAG and the promotions waiting
for approval, is :mod:`airloop.orchestration.metadata`, the package that speaks Airflow.)

In: a pipeline config (and the tracking and Airflow database URLs from the environment). Out: small dicts and
lists of plain values, the parts of the status document (docs/status.md). With the embedded default (a SQLite
file) the store is read directly, read-only, without importing MLflow (seconds); otherwise through its client.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from airloop.config import PipelineConfig
from airloop.store.sqlite import read_only as _read_only
from airloop.store.sqlite import sqlite_path

# Where each kind of metric was measured; every metric Airloop shows carries one of these.
WHERE = {
    "holdout": "holdout (frozen test split of the training data)",
    "cv": "CV (k-fold cross-validation on the training split)",
    "window": "recent window (latest labeled production batches)",
    "live": "live (this champion's scored batches, labels joined)",
}


def _version_facts(cfg: PipelineConfig, version: str, run_id: str, tags: dict, run_tags: dict, metrics: dict):
    promoted_at = tags.get("airloop.promoted_at")
    days = None
    if promoted_at:
        days = round((dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(promoted_at)).total_seconds() / 86400, 2)
    return {
        "version": str(version),
        "run_id": run_id,
        "candidate": run_tags.get("airloop.candidate"),
        "metrics": {k: round(v, 5) for k, v in sorted(metrics.items())},
        "promoted_at": promoted_at,
        "promoted_by": tags.get("airloop.promoted_by"),
        "days_in_production": days,
        **_measured(cfg, metrics),
        "gate": _gate_of(run_tags),
        "model_card": tags.get("airloop.model_card"),
    }


def _version_info_sqlite(db: Path, cfg: PipelineConfig, alias: str) -> dict | None:
    """:func:`version_info` read straight from MLflow's SQLite store: the same facts, without importing
    MLflow (seconds) or opening its store (more seconds, as it checks its schema)."""
    name = cfg.registered_model_name
    with _read_only(db) as con:
        row = con.execute(
            "select a.version, v.run_id from registered_model_aliases a join model_versions v "
            "on v.name = a.name and v.version = a.version where a.name = ? and a.alias = ?",
            (name, alias),
        ).fetchone()
        if row is None:
            return None
        version, run_id = row
        tags = dict(
            con.execute("select key, value from model_version_tags where name = ? and version = ?", (name, version))
        )
        run_tags = dict(con.execute("select key, value from tags where run_uuid = ?", (run_id,)))
        metrics = {
            k: (float("nan") if is_nan else float(v))
            for k, v, is_nan in con.execute(
                "select key, value, is_nan from latest_metrics where run_uuid = ?", (run_id,)
            )
        }
    return _version_facts(cfg, version, run_id, tags, run_tags, metrics)


def version_info(cfg: PipelineConfig, alias: str) -> dict | None:
    """The model version holding ``alias`` ("champion", "challenger"): its run, metrics (named by where they
    were measured), promotion and gate verdict; None when no version holds it."""
    from airloop import settings

    db = sqlite_path(settings.mlflow_tracking_uri())
    if db is not None:
        return _version_info_sqlite(db, cfg, alias)
    from mlflow.tracking import MlflowClient

    from airloop.store import registry

    mv = registry.get_version(cfg, alias)
    if mv is None:
        return None
    run = MlflowClient().get_run(mv.run_id)
    return _version_facts(cfg, mv.version, mv.run_id, mv.tags, run.data.tags, run.data.metrics)


def _measured(cfg: PipelineConfig, metrics: dict) -> dict:
    """The primary metric named by where it was measured: {"holdout": {...}, "cv": {...}} (None when absent)."""
    metric = cfg.primary_metric
    out = {}
    for key, prefix in (("holdout", "test_"), ("cv", "cv_")):
        out[key] = _metric_entry(metric, metrics.get(f"{prefix}{metric}"), key)
    return out


def _metric_entry(metric: str, value: float | None, where: str) -> dict | None:
    return None if value is None else {"metric": metric, "value": round(value, 5), "measured_on": WHERE[where]}


def _gate_of(tags: dict) -> dict | None:
    """The gate verdict recorded on a training run's tags (see airloop.model.evaluate), or None."""
    verdict = tags.get("airloop.gate.verdict")
    if not verdict:
        return None
    return {
        "verdict": verdict,
        "reasons": [r for r in tags.get("airloop.gate.reasons", "").splitlines() if r],
        "champion_version": tags.get("airloop.gate.champion_version"),
        "registered_version": tags.get("airloop.registered_version"),
        "dag_id": tags.get("airloop.gate.dag_id"),
        "dag_run_id": tags.get("airloop.gate.run_id"),
    }


# The experiments of a pipeline by purpose (as airloop.store.tracking.PURPOSES, which imports MLflow).
EXPERIMENT_SUFFIXES = {"training": "", "data": "/data", "monitoring": "/monitoring"}


def _mlflow_db() -> Path | None:
    from airloop import settings

    return sqlite_path(settings.mlflow_tracking_uri())


def _gate_entry(cfg: PipelineConfig, run_id: str, tags: dict, metrics: dict) -> dict:
    metric = cfg.primary_metric
    return {
        "run_id": run_id,
        "candidate": tags.get("airloop.candidate"),
        "holdout": _metric_entry(metric, metrics.get(f"test_{metric}"), "holdout"),
        **(_gate_of(tags) or {}),
    }


def _last_gate_sqlite(db: Path, cfg: PipelineConfig) -> dict | None:
    with _read_only(db) as con:
        row = con.execute(
            "select r.run_uuid from runs r join experiments e on e.experiment_id = r.experiment_id "
            "join tags t on t.run_uuid = r.run_uuid and t.key = 'airloop.gate.verdict' "
            "where e.name = ? and r.lifecycle_stage = 'active' order by r.start_time desc limit 1",
            (cfg.experiment_name,),
        ).fetchone()
        if row is None:
            return None
        run_id = row[0]
        tags = dict(con.execute("select key, value from tags where run_uuid = ?", (run_id,)))
        metrics = dict(con.execute("select key, value from latest_metrics where run_uuid = ?", (run_id,)))
    return _gate_entry(cfg, run_id, tags, metrics)


def last_gate(cfg: PipelineConfig) -> dict | None:
    """The most recent gate verdict of the pipeline (blessed or rejected), from the training experiment."""
    db = _mlflow_db()
    if db is not None:  # the embedded default: read MLflow's SQLite store without importing MLflow
        return _last_gate_sqlite(db, cfg)
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name(cfg.experiment_name)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string="tags.`airloop.gate.verdict` LIKE '%'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    run = runs[0]
    return _gate_entry(cfg, run.info.run_id, run.data.tags, run.data.metrics)


def experiments(cfg: PipelineConfig) -> dict:
    """The pipeline's MLflow experiments by purpose: {"training"|"data"|"monitoring": {"name", "id"}}
    ("id" None until the first run of that purpose)."""
    names = {purpose: cfg.experiment_name + suffix for purpose, suffix in EXPERIMENT_SUFFIXES.items()}
    db = _mlflow_db()
    if db is not None:
        with _read_only(db) as con:
            ids = dict(
                con.execute(
                    "select name, experiment_id from experiments where name like ?", (f"{cfg.experiment_name}%",)
                )
            )
        return {purpose: {"name": n, "id": str(ids[n]) if n in ids else None} for purpose, n in names.items()}
    from mlflow.tracking import MlflowClient

    client, out = MlflowClient(), {}
    for purpose, name in names.items():
        exp = client.get_experiment_by_name(name)
        out[purpose] = {"name": name, "id": exp.experiment_id if exp else None}
    return out
