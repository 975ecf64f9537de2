"""``airloop status``: per pipeline, the champion and its metrics, the last run of each DAG, the last drift
verdict. The JSON form is stable (``schema_version``) and documented in docs/status.md.

In: the pipeline configs. Out: the status document (:func:`collect`). What it reads from MLflow's store is
:mod:`airloop.monitoring.status_stores`; from Airflow's metadata DB, :mod:`airloop.orchestration.metadata` (the
one import of this package from orchestration, which keeps Airflow there); from the lake (drift verdicts,
manifests, retrains), this module; the text form is :mod:`airloop.monitoring.status_text`.
"""

from __future__ import annotations

import datetime as dt

from airloop.config import PipelineConfig
from airloop.monitoring import status_stores
from airloop.orchestration import metadata
from airloop.store.lake import Lake

SCHEMA_VERSION = 1
STALENESS_KEYS = ("days_monitored", "live_metric", "live", "trend", "trend_per_day", "stale_on", "days_to_stale")


def _last_validation(lake: Lake) -> dict | None:
    """The newest batch manifest's validation: {"batch_id", "verdict", "data_docs", "mlflow_run_id"}."""
    from airloop.store import lake as lk

    manifests = sorted(u for u in lk.list_uris(lk.join(lake.root, "manifests"), recursive=False) if u.endswith(".json"))
    for uri in reversed(manifests):
        validation = lk.read_json(uri).get("validation")
        if validation:
            return {
                "batch_id": uri.rsplit("/", 1)[-1].removesuffix(".json"),
                "verdict": validation.get("verdict"),
                "data_docs": validation.get("data_docs"),
                "mlflow_run_id": validation.get("mlflow_run_id"),
            }
    return None


def _top_features(verdict: dict, n: int = 5) -> list[list]:
    """The features with the largest PSI in a drift verdict, largest first: [[feature, psi], ...]."""
    psi = verdict.get("psi") or {}
    return [[f, v] for f, v in sorted(psi.items(), key=lambda kv: -kv[1])[:n]]


def pipeline_status(cfg: PipelineConfig) -> dict:
    """One pipeline's part of the status document: champion, challenger, DAG runs, drift, retrains, estimate,
    staleness, experiments, last gate, pending approvals and last validation (see docs/status.md)."""
    from airloop.model.plan import retrain_log
    from airloop.monitoring import monitor

    lake = Lake(cfg.name)
    verdict = monitor.last_verdict(lake)
    champion = status_stores.version_info(cfg, "champion")
    history = monitor.champion_history(cfg, lake)
    if champion is not None:
        mine = next((h for h in history if h["model_version"] == champion["version"]), None)
        champion["staleness"] = None if mine is None else {k: mine[k] for k in STALENESS_KEYS}
    out = {
        "registered_model": cfg.registered_model_name,
        "experiment": cfg.experiment_name,
        "primary_metric": cfg.primary_metric,
        "source_file": cfg.source_file,
        "champion": champion,
        "challenger": status_stores.version_info(cfg, "challenger"),
        "dag_runs": metadata.dag_runs(cfg),
        "drift": None
        if verdict is None
        else {
            k: verdict.get(k)
            for k in ("batch_id", "status", "confirmed", "drifted_features", "report_uri", "model_version")
        },
        "retrains": retrain_log(lake),
        "estimated_performance": estimated_performance(verdict),
        "staleness": history,
        "lake_uri": lake.root,
        "experiments": status_stores.experiments(cfg),
        "gate": status_stores.last_gate(cfg),
        "approvals": metadata.pending_approvals(cfg),
        "validation": _last_validation(lake),
    }
    if out["drift"] is not None:
        out["drift"]["top_features"] = _top_features(verdict)
        out["drift"]["live"] = verdict.get("live") or {}
    return out


def estimated_performance(verdict: dict | None) -> dict | None:
    """The last verdict's estimate before labels, its retrain decision, and estimated vs realized by batch."""
    est = (verdict or {}).get("estimate")
    if not est:
        return None
    return {
        "batch_id": verdict.get("batch_id"),
        "method": est.get("method"),
        "metric": est.get("metric"),
        "value": est.get("value"),
        "lower": est.get("lower"),
        "upper": est.get("upper"),
        "holdout_value": est.get("reference_value"),
        "retrain": verdict.get("retrain"),
        "reason": verdict.get("trigger_reason"),
        "by_batch": verdict.get("estimates") or [],
    }


def collect(pipelines: dict[str, PipelineConfig]) -> dict:
    """The whole status document (see docs/status.md)."""
    from airloop import settings

    uri = settings.mlflow_tracking_uri()
    if status_stores.sqlite_path(uri) is None:  # a tracking server, or no store yet: MLflow's own client
        from airloop.store import tracking

        uri = tracking.configure_mlflow()
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(),
        "tracking_uri": uri,
        "lake_uri": settings.lake_uri(),
        "airloop_home": str(settings.airloop_home()),
        "pipelines": {name: pipeline_status(cfg) for name, cfg in sorted(pipelines.items())},
    }
