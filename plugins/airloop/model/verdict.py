"""The gate's verdict: the decision assembled from the checks, registered when blessed, recorded and summarised.

In: the checks of :func:`airloop.model.evaluate.evaluate_challenger` (each {"check", "passed", "detail"}) and
the measurements behind them (challenger and champion metrics, comparisons, baseline, conformal calibration,
slices, production window). Out: the verdict dict (its keys are listed in ``evaluate_challenger``), the
registered version of a blessed challenger (alias ``challenger``), the verdict on the challenger's MLflow run
(tags ``airloop.gate.*``, a few metrics, artifact gate/verdict.json) and its readable summary.
"""

from __future__ import annotations

import math
import time
from typing import Any

from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from airloop.config import PipelineConfig
from airloop.model.gate import describe_interval
from airloop.store import promotions, registry, tracking


def register_blessed(
    cfg: PipelineConfig,
    candidate: dict[str, Any],
    run: Any,
    metric: str,
    value: float,
    champion_version: str | None,
    uncertainty: dict[str, Any] | None,
) -> str:
    """Register a blessed challenger (tagged with its gate metric, data fingerprint, the champion it was
    compared with and its conformal threshold) and give it the alias ``challenger``; returns the version."""
    run_id = candidate["run_id"]
    version = registry.register(
        cfg,
        candidate["model_uri"],
        run_id,
        tags={
            "airloop.pipeline": cfg.name,
            "airloop.candidate": candidate.get("candidate") or "",
            "airloop.data_fingerprint": run.data.tags.get("airloop.data_fingerprint", ""),
            f"airloop.gate.{metric}": f"{value:.6f}",
            "airloop.gate.verdict_uri": f"runs:/{run_id}/gate/verdict.json",
            # promote moves the alias only if this is still the champion (compare-and-set)
            registry.COMPARED_WITH_TAG: champion_version or "none",
            **_conformal_tags(uncertainty),
        },
    )
    promotions.set_challenger(cfg, version)
    return version


def assemble_verdict(
    *,
    checks: list[dict[str, Any]],
    metric: str,
    value: float | None,
    metrics: dict[str, float],
    champion_value: float | None,
    champion_version: str | None,
    cmp: dict[str, Any] | None,
    baseline: dict[str, Any] | None,
    conformal: dict[str, Any] | None,
    slices: list[dict[str, Any]],
    window: dict[str, Any] | None,
    version: str | None,
    run_id: str,
    holdout_uri: str,
) -> dict[str, Any]:
    """The verdict dict of the checks and measurements (blessed when every check passed); the evidence
    (plots, explanations, suspect labels, summary, model card) is added by the caller."""
    return {
        "blessed": all(c["passed"] for c in checks),
        "reasons": [f"{'PASS' if c['passed'] else 'FAIL'} {c['check']}: {c['detail']}" for c in checks],
        "checks": [{k: c[k] for k in ("check", "passed", "detail")} for c in checks],
        "metric": metric,
        "challenger_metric": value,
        "champion_metric": champion_value,
        "champion_version": champion_version,
        "ci": cmp["ci"] if cmp else None,
        "lower_bound": cmp["bounds"][0] if cmp and cmp["bounds"] else None,
        "interval_90": cmp["bounds"] if cmp and cmp["bounds"] else None,
        "improvement": cmp["improvement"] if cmp else None,
        "metrics": metrics,
        "baseline": baseline,
        "conformal": conformal,
        "slices": slices,
        "production_window": _window_summary(window),
        "version": version,
        "run_id": run_id,
        "run_url": tracking.run_url(run_id),
        "holdout_uri": holdout_uri,
        "verdict_uri": f"runs:/{run_id}/gate/verdict.json",
    }


def record_verdict(
    client: MlflowClient, cfg: PipelineConfig, verdict: dict[str, Any], run_info: dict[str, Any] | None
) -> None:
    """Write the verdict to the challenger's run: tags, a few metrics, and gate/verdict.json."""
    run_id = verdict["run_id"]
    tags = {
        "airloop.gate.verdict": "blessed" if verdict["blessed"] else "rejected",
        "airloop.gate.reasons": "\n".join(verdict["reasons"])[:5000],
        "airloop.gate.champion_version": verdict["champion_version"] or "none",
    }
    for check in verdict["checks"]:
        tags[f"airloop.gate.check.{check['check']}"] = "pass" if check["passed"] else "fail"
    if verdict["version"]:
        tags["airloop.registered_version"] = verdict["version"]
    tags.update({f"airloop.gate.{k.split('.', 1)[1]}": v for k, v in tracking.lineage_tags(run_info).items()})
    metric = verdict["metric"]
    metrics: dict[str, float] = {}
    if verdict["champion_metric"] is not None:
        metrics[f"gate_champion_{metric}"] = verdict["champion_metric"]
    if verdict.get("interval_90"):
        metrics[f"gate_improvement_{metric}_interval90_low"] = verdict["interval_90"][0]
        metrics[f"gate_improvement_{metric}_interval90_high"] = verdict["interval_90"][1]
    if verdict["ci"]:
        metrics[f"gate_improvement_{metric}"] = verdict["improvement"]
        metrics[f"gate_improvement_{metric}_ci_low"] = verdict["ci"][0]
        metrics[f"gate_improvement_{metric}_ci_high"] = verdict["ci"][1]
        metrics[f"gate_improvement_{metric}_lower_bound"] = verdict["lower_bound"]
    base = verdict.get("baseline")
    if base:
        metrics[f"gate_baseline_{metric}"] = base["value"]
        if base["lower_bound"] is not None:
            metrics[f"gate_baseline_improvement_{metric}_lower_bound"] = base["lower_bound"]
    c = verdict.get("conformal") or {}
    if "coverage_measured" in c:
        metrics["conformal_coverage_measured"] = c["coverage_measured"]
        if math.isfinite(c["threshold"]):
            metrics["conformal_threshold"] = c["threshold"]
    for s in verdict["slices"]:
        if s.get("challenger") is not None:
            key = f"slice_{metric}_{s['column']}_{s['value']}"
            metrics["".join(ch if ch.isalnum() or ch in "_-./ " else "_" for ch in key)] = s["challenger"]
    now = int(time.time() * 1000)
    client.log_batch(  # one round trip instead of one per tag and metric
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        tags=[RunTag(k, str(v)) for k, v in tags.items()],
    )
    client.log_dict(run_id, {**verdict, "pipeline": cfg.name, "airflow": run_info}, "gate/verdict.json")


def summarize_verdict(cfg: PipelineConfig, candidate: dict[str, Any], v: dict[str, Any], n_rows: int) -> str:
    """The verdict as the few lines the task log ends with: decision, holdout, metric, reasons, evidence."""
    head = (
        f"BLESSED: registered as v{v['version']} with alias 'challenger'"
        if v["blessed"]
        else "REJECTED: not registered; the champion stays"
    )
    lines = [
        f"Gate for pipeline {cfg.name}, candidate {candidate.get('candidate')} (run {v['run_id']}): {head}",
        f"  holdout: {v['holdout_uri']} ({n_rows} rows)",
    ]
    metric, value = v["metric"], v["challenger_metric"]
    shown = f"{value:.4f}" if value is not None else "undefined"
    if v["champion_metric"] is not None:
        shown += f", champion v{v['champion_version']} {v['champion_metric']:.4f}"
        if v.get("interval_90"):
            shown += f" (improvement: {describe_interval(v['lower_bound'], v['interval_90'])})"
    if v.get("baseline"):
        shown += f", {v['baseline']['kind']} baseline {v['baseline']['value']:.4f}"
    lines.append(f"  {metric}: challenger {shown}")
    lines += [f"  {r}" for r in v["reasons"]]
    sus = v.get("suspect_labels") or {}
    if "suspects" in sus:
        lines.append(
            f"  suspect labels: {sus['suspects']} of {sus['rows']} training rows, {sus['queued']} new in the review "
            "queue (airloop review NAME --export)"
        )
    if v.get("conformal"):
        from airloop.model.conformal import describe

        lines.append(f"  uncertainty: {describe(v['conformal'])}")
    lines.append(f"  evidence: {v['run_url']} (gate/verdict.json, model_card.md, plots/)")
    return "\n".join(lines)


def _conformal_tags(c: dict[str, Any] | None) -> dict[str, str]:
    """Version tags that let serving and review apply the conformal threshold without the verdict."""
    if not c or "threshold" not in c or not math.isfinite(c["threshold"]):
        return {}
    return {
        "airloop.conformal.threshold": f"{c['threshold']:.6f}",
        "airloop.conformal.coverage": f"{c['coverage_declared']:g}",
        "airloop.conformal.measured_coverage": f"{c['coverage_measured']:.4f}",
    }


def _window_summary(window: dict[str, Any] | None) -> dict[str, Any] | None:
    """The XCom-sized part of a production-window comparison."""
    if window is None or "skipped" in window:
        return window
    return {k: window[k] for k in ("rows", "batches", "challenger", "champion")} | {"ci": window["compare"]["ci"]}
