"""Monitoring: drift of a validated batch against the champion's training reference, and the live metric.

The verdict of each day is kept in ``monitoring/date=.../verdict.json``; drift is *confirmed* when the
last ``confirm_days`` days monitored against the same champion all alert. Only a confirmed drift triggers
retraining (the DAG emits the drift Asset event).
"""

from __future__ import annotations

import datetime as dt

from airloop.config import PipelineConfig
from airloop.errors import BadInput, NothingToDo
from airloop.store import lake as lk
from airloop.store import models
from airloop.store.lake import Lake


def live_metric(cfg: PipelineConfig, lake: Lake, model_version: str) -> dict:
    """The primary metric over this champion's predictions whose labels have arrived (empty when none)."""
    from airloop.data.datasets import attach_labels
    from airloop.model.metrics import compute_metrics

    preds = lake.read_zone("predictions")
    if preds.empty or cfg.id_column is None:
        return {}
    preds = preds[preds["model_version"] == model_version]
    joined = attach_labels(cfg, preds, lake.read_zone("labels"))
    if cfg.target not in joined.columns:
        return {}
    joined = joined[joined[cfg.target].notna()]
    if joined.empty or (cfg.task == "classification" and joined[cfg.target].nunique() < 2):
        return {}
    y_true = joined[cfg.target].to_numpy()
    proba = joined["score"].to_numpy() if "score" in joined.columns else None
    metrics = compute_metrics(cfg.task, y_true, joined["prediction"].to_numpy(), proba)
    return {"rows": len(joined), **{f"live_{k}": v for k, v in metrics.items()}}


def earlier_verdicts(lake: Lake, model_version: str, until_batch: str) -> list[dict]:
    """Verdicts of earlier days monitored against the same champion, oldest first."""
    out = []
    for batch in lake.batches("monitoring"):
        if batch >= until_batch:
            continue
        verdict = lk.read_json(lk.join(lake.partition("monitoring", batch), "verdict.json"))
        if verdict.get("model_version") == model_version:
            out.append(verdict)
    return out


def verdict_history(lake: Lake, model_version: str, until_batch: str) -> list[str]:
    """Drift statuses of earlier days monitored against the same champion, oldest first."""
    return [v["status"] for v in earlier_verdicts(lake, model_version, until_batch)]


class MissingReference(BadInput):
    """The champion's training run names no reference sample to compare against; retrying cannot help."""


def monitor_batch(
    cfg: PipelineConfig, batch_id: str, *, lake: Lake | None = None, run_info: dict | None = None
) -> dict:
    """Measure drift of one validated batch against the champion's reference sample.

    Also estimates the champion's primary metric on the batch before its labels arrive (CBPE or DLE, see
    :mod:`airloop.monitoring.performance`), sets each earlier day's estimate beside its realized value, and
    decides on a retrain under ``retrain.trigger``.
    Writes an HTML report and a verdict JSON to the lake and logs metrics to MLflow; returns
    {"batch_id","status","confirmed","drifted_features","psi","report_uri","live","model_version","run_id",
    "estimate","estimate_below","retrain","trigger_reason","impact","estimates"}.
    Raises NoChampion when there is no champion, and a BadInput (MissingReference, LakeError, DriftInputError)
    when its reference sample or the batch cannot be read or compared.
    """
    import mlflow
    import mlflow.sklearn

    from airloop.data.datasets import feature_columns
    from airloop.monitoring import drift
    from airloop.monitoring import performance as perf
    from airloop.monitoring.report import render_html
    from airloop.serving.score import champion_and_batch, predict_frame
    from airloop.store import tracking

    lake = lake or Lake(cfg.name)
    champion, batch_uri = champion_and_batch(
        cfg, lake, batch_id, "monitor", "nothing to monitor, no model version is 'champion' yet"
    )
    run = mlflow.tracking.MlflowClient().get_run(champion.run_id)
    reference_uri = run.data.tags.get("airloop.reference_uri")
    if not reference_uri:
        raise MissingReference(
            f"run {champion.run_id} of champion v{champion.version}: expected an airloop.reference_uri tag "
            "(set by training), found none; retrain to record the reference sample"
        )
    reference = lk.read_parquet(reference_uri)
    current = lk.read_parquet(batch_uri)
    numeric, categorical = feature_columns(cfg, reference)
    # Prediction drift: score both sides with the champion, so the comparison is like for like.
    model = models.load_version(cfg, champion.version)
    pred_col = "score" if cfg.task == "classification" else "prediction"
    ref_pred = predict_frame(cfg, model, reference.drop(columns=[cfg.target], errors="ignore"))
    cur_pred = predict_frame(cfg, model, current.drop(columns=[cfg.target], errors="ignore"))
    if pred_col not in ref_pred.columns:
        pred_col = "prediction"
    reference = reference.assign(_prediction=ref_pred[pred_col].to_numpy())
    current = current.assign(_prediction=cur_pred[pred_col].to_numpy())
    # The prediction's reference: the champion's scores on its holdout, rows it did not train on.
    holdout = perf.holdout_of(cfg, run)
    holdout_pred = None
    if holdout is not None and len(holdout):
        holdout_pred = predict_frame(cfg, model, holdout.drop(columns=[cfg.target]))[pred_col].reset_index(drop=True)
    report = drift.compute_drift(
        reference,
        current,
        numeric,
        categorical,
        cfg.monitoring,
        prediction_column="_prediction",
        prediction_reference=holdout_pred,
    )
    version = str(champion.version)
    before = earlier_verdicts(lake, version, batch_id)
    history = [*(v["status"] for v in before), report.status]
    confirmed = drift.confirm_drift(history, cfg.monitoring)
    live = live_metric(cfg, lake, version)
    estimate = perf.estimate_for_champion(cfg, run, model, current.drop(columns=["_prediction"]), cur_pred)
    below = perf.estimate_below(cfg, estimate)
    decision = perf.retrain_decision(cfg, confirmed, [*(bool(v.get("estimate_below")) for v in before), below])
    realized = perf.realized_by_batch(cfg, lake, version) if estimate is not None else {}
    track = perf.estimation_track([*before, {"batch_id": batch_id, "estimate": estimate}], realized)
    impact = perf.impact_text(cfg, report.drifted_features, estimate)
    est_metrics = {}
    if estimate is not None:
        name = f"estimated_{cfg.primary_metric}"
        est_metrics = perf.as_floats(
            {name: estimate["value"], f"{name}_lower": estimate["lower"], f"{name}_upper": estimate["upper"]}
        )
        latest = next((t for t in reversed(track) if t["realized"] is not None), None)
        if latest is not None:
            est_metrics["estimation_error"] = float(latest["error"])
    context = {
        "pipeline": cfg.name,
        "batch": batch_id,
        "champion version": version,
        "reference run": champion.run_id,
        "confirmed": confirmed,
        "retrain": f"{decision['retrain']} ({decision['reason']})",
        **live,
    }
    performance = {"estimate": estimate, "impact": impact, "track": track, "realized": realized.get(batch_id)}
    html = render_html(report, f"Drift report: {cfg.name} {batch_id}", context, performance)
    report_uri = lk.write_bytes(lake.report("drift", f"{batch_id}.html"), html.encode())
    experiment_id = tracking.ensure_experiment(cfg, "monitoring")
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"monitor-{batch_id}") as mrun:
        mlflow.set_tags(
            {
                **tracking.lineage_tags(run_info),
                "airloop.pipeline": cfg.name,
                "airloop.stage": "monitor",
                tracking.RUN_TYPE_TAG: "monitoring",
                "airloop.batch_id": batch_id,
                "airloop.model_version": version,
                "airloop.drift.status": report.status,
                "airloop.drift.confirmed": str(confirmed).lower(),
                "airloop.drift.features": ",".join(report.drifted_features),
                "airloop.retrain": str(decision["retrain"]).lower(),
                "airloop.retrain.reason": decision["reason"],
                "airloop.impact": impact[:4000],
            }
        )
        mlflow.log_metrics({**report.metrics(), **{k: float(v) for k, v in live.items()}, **est_metrics})
        mlflow.log_text(html, "drift/report.html")
        mlflow.log_dict(report.to_dict(), "drift/report.json")
        if estimate is not None:
            mlflow.log_dict({"estimate": estimate, "track": track}, "performance/estimate.json")
    verdict = {
        "batch_id": batch_id,
        "status": report.status,
        "confirmed": confirmed,
        "model_version": version,
        "drifted_features": report.drifted_features,
        "psi": {f.feature: round(f.psi, 4) for f in report.features},
        "report_uri": report_uri,
        "live": live,
        "run_id": mrun.info.run_id,
        "monitored_at": dt.datetime.now(dt.UTC).isoformat(),
        "summary": report.summary() + "\n  " + impact,
        "estimate": estimate,
        "estimate_below": below,
        "retrain": decision["retrain"],
        "trigger_reason": decision["reason"],
        "impact": impact,
        "estimates": track,
    }
    lk.write_json(lk.join(lake.partition("monitoring", batch_id), "verdict.json"), verdict)
    if estimate is not None:
        _update_card(cfg, version, cfg.primary_metric, track, impact)
    # The staleness record of every champion so far (days monitored, live-metric trend, time to stale).
    lk.write_json(lk.join(lake.zone("monitoring"), "staleness.json"), champion_history(cfg, lake))
    return verdict


def _update_card(cfg: PipelineConfig, version: str, metric: str, track: list[dict], impact: str) -> None:
    """Refresh the live section of the champion's model card (its registry description)."""
    import mlflow

    from airloop.model import modelcard

    client = mlflow.tracking.MlflowClient()
    current = client.get_model_version(cfg.registered_model_name, version).description
    section = modelcard.live_section(metric, track, impact)
    client.update_model_version(
        cfg.registered_model_name, version, description=modelcard.with_live_section(current, section)
    )


def last_verdict(lake: Lake) -> dict | None:
    """The most recent monitoring verdict, or None."""
    batches = lake.batches("monitoring")
    if not batches:
        return None
    return lk.read_json(lk.join(lake.partition("monitoring", batches[-1]), "verdict.json"))


class DriftNotConfirmed(NothingToDo):
    """Today's drift verdict does not confirm drift; no retraining is triggered."""


def require_confirmed(verdict: dict) -> dict:
    """Pass a verdict that starts a retrain (``retrain``, under ``retrain.trigger``; older verdicts: a
    confirmed drift) through; raise DriftNotConfirmed otherwise."""
    if not verdict.get("retrain", verdict.get("confirmed")):
        reason = verdict.get("trigger_reason") or "drift not confirmed"
        raise DriftNotConfirmed(
            f"drift status {verdict.get('status')!r} on {verdict.get('batch_id')}: {reason}; no retraining"
        )
    return verdict


def alert_document(cfg: PipelineConfig, verdict: dict) -> dict:
    """The confirmed-drift alert: {"pipeline","batch_id","model_version","features","report_uri","text"}."""
    feats = verdict.get("drifted_features") or []
    reason = verdict.get("trigger_reason") or "drift confirmed"
    text = (
        f"Airloop: {reason} on pipeline {cfg.name!r}, batch {verdict.get('batch_id')}, champion "
        f"v{verdict.get('model_version')}; drifting features: {', '.join(feats[:8]) or '-'}. Retraining is "
        f"triggered (guards permitting). Report: {verdict.get('report_uri')}"
    )
    return {
        "pipeline": cfg.name,
        "batch_id": verdict.get("batch_id"),
        "model_version": verdict.get("model_version"),
        "features": feats,
        "report_uri": verdict.get("report_uri"),
        "text": text,
    }


def post_webhook(url: str, doc: dict, *, timeout_s: float = 10.0, headers: dict | None = None) -> int:
    """POST ``doc`` as JSON (with a Slack-style ``text`` field) to ``url``; returns the HTTP status."""
    import json
    import urllib.request

    request = urllib.request.Request(
        url,
        data=json.dumps(doc).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - an operator's URL
        return response.status


def champion_history(cfg: PipelineConfig, lake: Lake) -> list[dict]:
    """Staleness per model version that served as champion, from the daily verdicts, oldest first.

    Each entry: {"model_version", "first_batch", "last_batch", "days_monitored", "live_metric" (name),
    "live" ([[batch, value], ...]), "trend_per_day" (least-squares slope, None under 2 points), "trend"
    ("improving", "degrading", "flat" or None), "stale_on" (first batch with confirmed drift or a live metric
    below evaluation.min_value; None while fresh), "stale_reason", "days_to_stale"}.
    """
    import numpy as np

    from airloop.model.directions import greater_is_better

    metric = f"live_{cfg.primary_metric}"
    higher = greater_is_better(cfg.primary_metric)
    floor = cfg.evaluation.min_value
    by_version: dict[str, dict] = {}
    for batch in lake.batches("monitoring"):
        uri = lk.join(lake.partition("monitoring", batch), "verdict.json")
        if not lk.exists(uri):
            continue
        v = lk.read_json(uri)
        entry = by_version.setdefault(
            str(v.get("model_version")),
            {"model_version": str(v.get("model_version")), "first_batch": batch, "live": [], "stale_on": None},
        )
        entry["last_batch"] = batch
        value = (v.get("live") or {}).get(metric)
        if value is not None:
            entry["live"].append([batch, round(float(value), 5)])
        if entry["stale_on"] is None:
            below = value is not None and floor is not None and (value < floor if higher else value > floor)
            if v.get("confirmed") or below or v.get("estimate_below"):
                entry["stale_on"] = batch
                est = v.get("estimate") or {}
                if v.get("confirmed"):
                    feats = ", ".join((v.get("drifted_features") or [])[:4]) or "the prediction"
                    entry["stale_reason"] = f"drift confirmed on {feats}"
                elif below:
                    entry["stale_reason"] = (
                        f"{metric} {value:.4f} {'below' if higher else 'above'} evaluation.min_value {floor}"
                    )
                else:
                    shown = est.get("value")
                    shown = "n/a" if shown is None else f"{shown:.4f}"
                    entry["stale_reason"] = f"estimated {cfg.primary_metric} {shown} past its floor"
    out = []
    for entry in by_version.values():
        first = dt.date.fromisoformat(entry["first_batch"])
        entry["days_monitored"] = (dt.date.fromisoformat(entry["last_batch"]) - first).days + 1
        entry["live_metric"] = metric
        slope = None
        if len(entry["live"]) >= 2:
            days = [(dt.date.fromisoformat(b) - first).days for b, _ in entry["live"]]
            if len(set(days)) >= 2:
                slope = float(np.polyfit(days, [x for _, x in entry["live"]], 1)[0])
        entry["trend_per_day"] = None if slope is None else round(slope, 5)
        if slope is None:
            entry["trend"] = None
        elif abs(slope) < 0.001:
            entry["trend"] = "flat"
        else:
            entry["trend"] = "improving" if (slope > 0) == higher else "degrading"
        stale = entry["stale_on"]
        entry["days_to_stale"] = None if stale is None else (dt.date.fromisoformat(stale) - first).days
        entry.setdefault("stale_reason", None)
        out.append(entry)
    return sorted(out, key=lambda e: e["first_batch"])
