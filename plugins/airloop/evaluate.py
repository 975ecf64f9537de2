"""The evaluation gate ("blessing"): may the newly trained model become the challenger?

The challenger and the current champion are scored on the SAME frozen holdout (the challenger's test split),
so the comparison is like for like. Blessed only if every check passes:

1. ``min_value``: the primary metric reaches ``evaluation.min_value`` (when set);
2. ``champion``: it is not worse than the champion by more than ``evaluation.tolerance`` (direction-aware;
   a bootstrap 95% CI of the difference is reported alongside the point estimate);
3. ``infra``: the model loads and scores in a fresh Python process, and row order does not change its output.

The verdict is written to the challenger's MLflow run (tags ``airloop.gate.*``, artifact gate/verdict.json).
A blessed model is registered and gets the alias ``challenger``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from airloop import lake, registry, tracking
from airloop.config import PipelineConfig
from airloop.errors import BadInput, NothingToDo
from airloop.train import check_metric, compute_metrics, greater_is_better, predict_with_proba

log = logging.getLogger(__name__)

BOOTSTRAP_RESAMPLES = 200
INFRA_ROWS = 20
INFRA_TIMEOUT_S = 300

# Runs in a fresh interpreter: load the model as pyfunc, score rows, score them again shuffled.
_INFRA_SCRIPT = """
import json, sys, warnings
warnings.filterwarnings("ignore")
import mlflow.pyfunc, numpy as np, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
rows = pd.read_parquet(sys.argv[2])
pred = np.asarray(model.predict(rows)).tolist()
perm = np.random.default_rng(0).permutation(len(rows))
shuffled = np.asarray(model.predict(rows.iloc[perm].reset_index(drop=True))).tolist()
restored = [None] * len(rows)
for pos, src in enumerate(perm):
    restored[src] = shuffled[pos]
print("AIRLOOP_INFRA " + json.dumps({"n": len(rows), "predictions": pred, "restored": restored}))
"""


class GateError(BadInput):
    """The gate cannot judge: e.g. the training run has no holdout tag."""


def _same(a: list, b: list) -> bool:
    """Equal predictions; numbers within float noise."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if isinstance(x, float | int) and isinstance(y, float | int):
            if not math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12):
                return False
        elif x != y:
            return False
    return True


def fresh_process_predictions(model_uri: str, rows: pd.DataFrame) -> dict[str, Any]:
    """Load ``model_uri`` with mlflow.pyfunc in a new interpreter (``sys.executable``) and score ``rows``
    in order and shuffled. Returns {"n", "predictions", "restored" (shuffled run, back in row order)};
    RuntimeError with the process's last lines when it cannot load or score."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking.configure_mlflow()}
    env["MLFLOW_REGISTRY_URI"] = env["MLFLOW_TRACKING_URI"]
    with tempfile.TemporaryDirectory(prefix="airloop-infra-") as tmp:
        path = Path(tmp) / "rows.parquet"
        rows.reset_index(drop=True).to_parquet(path, index=False)
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _INFRA_SCRIPT, model_uri, str(path)],
                capture_output=True,
                text=True,
                env=env,
                timeout=INFRA_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"loading and scoring took more than {INFRA_TIMEOUT_S} s") from None
    marker = [line for line in proc.stdout.splitlines() if line.startswith("AIRLOOP_INFRA ")]
    if proc.returncode != 0 or not marker:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"exit {proc.returncode}: {' | '.join(tail)}")
    return json.loads(marker[-1].removeprefix("AIRLOOP_INFRA "))


def infra_check(model_uri: str, rows: pd.DataFrame, expected: list) -> tuple[bool, str]:
    """The model loads and scores in a fresh process, row order does not change its output, and the output
    matches ``expected`` (the in-process predictions). Returns (passed, detail)."""
    try:
        out = fresh_process_predictions(model_uri, rows)
    except RuntimeError as err:
        return False, f"the model did not load or score in a fresh process ({err})"
    if not _same(out["predictions"], out["restored"]):
        return False, f"predictions on {out['n']} rows change when the rows are shuffled"
    if not _same(out["predictions"], [v.item() if hasattr(v, "item") else v for v in expected]):
        return False, "fresh-process predictions differ from the in-process predictions"
    return True, f"loads in a fresh process; {out['n']} rows scored identically in order and shuffled"


def _score(cfg: PipelineConfig, model: Any, holdout: pd.DataFrame) -> tuple[dict[str, float], dict]:
    """(metrics, raw predictions) of a fitted sklearn model on the holdout."""
    features = list(getattr(model, "feature_names_in_", [c for c in holdout.columns if c != cfg.target]))
    missing = [c for c in features if c not in holdout.columns]
    if missing:
        raise GateError(f"holdout lacks columns {missing} the model needs")
    y_pred, y_proba, classes = predict_with_proba(cfg.task, model, holdout[features])
    y_true = holdout[cfg.target].to_numpy()
    metrics = compute_metrics(cfg.task, y_true, y_pred, y_proba, classes=classes)
    return metrics, {"y_pred": y_pred, "y_proba": y_proba, "classes": classes, "features": features}


def bootstrap_ci(cfg: PipelineConfig, y_true: np.ndarray, chall: dict, champ: dict, metric: str) -> list[float] | None:
    """95% CI of (challenger - champion) on ``metric`` over seeded bootstrap resamples of the holdout."""
    rng = np.random.default_rng(cfg.training.seed)
    n, diffs = len(y_true), []
    for _ in range(BOOTSTRAP_RESAMPLES):
        idx = rng.integers(0, n, n)
        values = []
        for p in (chall, champ):
            proba = p["y_proba"][idx] if p["y_proba"] is not None else None
            m = compute_metrics(cfg.task, y_true[idx], p["y_pred"][idx], proba, classes=p["classes"], only=[metric])
            values.append(m.get(metric))
        if None not in values and not any(math.isnan(v) for v in values):
            diffs.append(values[0] - values[1])
    if len(diffs) < BOOTSTRAP_RESAMPLES // 2:
        return None
    return [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))]


def _champion_check(
    cfg: PipelineConfig, metric: str, value: float, champion_value: float, champion_version: str
) -> dict[str, Any]:
    higher = greater_is_better(metric)
    worse_by = (champion_value - value) if higher else (value - champion_value)
    tol = cfg.evaluation.tolerance
    # A challenger must beat the champion; `tolerance` is how much worse a team explicitly accepts.
    # With the default tolerance 0, a tie keeps the champion: replacing it must be earned.
    passed = worse_by < tol if tol > 0 else worse_by < -1e-12
    relation = f"worse by {worse_by:.4f}" if worse_by > 0 else f"better by {-worse_by:.4f}"
    if abs(worse_by) <= 1e-12:
        relation = "equal"
    needed = f"must be better (tolerance {tol:g})" if tol == 0 else f"may be worse by < tolerance {tol:g}"
    detail = (
        f"{metric} {value:.4f} (challenger) vs {champion_value:.4f} (champion v{champion_version}) on the "
        f"same holdout: {relation}; {needed} ({'higher' if higher else 'lower'} is better)"
    )
    return {"check": "champion", "passed": passed, "detail": detail}


def candidate_from_run(cfg: PipelineConfig, run_id: str) -> dict[str, Any]:
    """Rebuild the :func:`airloop.train.select_best` dict of a training run (for DAGs that get a run id)."""
    client = MlflowClient(tracking_uri=tracking.configure_mlflow())
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise GateError(f"no MLflow run {run_id!r} to evaluate") from None
    metric = cfg.primary_metric
    outputs = getattr(run, "outputs", None)
    model_ids = [o.model_id for o in (outputs.model_outputs if outputs else [])]
    model_uri = f"models:/{model_ids[-1]}" if model_ids else f"runs:/{run_id}/model"
    metrics = run.data.metrics
    return {
        "run_id": run_id,
        "candidate": run.data.tags.get("airloop.candidate"),
        "model_uri": model_uri,
        "cv_score": metrics.get(f"cv_{metric}"),
        "test_metrics": {k.removeprefix("test_"): v for k, v in metrics.items() if k.startswith("test_")},
        "primary_metric": metric,
        "greater_is_better": greater_is_better(metric),
    }


def evaluate_challenger(
    cfg: PipelineConfig, candidate: dict[str, Any], run_info: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Apply the gate to ``candidate`` (the dict of :func:`airloop.train.select_best`).

    Returns {"blessed", "reasons" (one line per check, passed or failed), "checks", "metric",
    "challenger_metric", "champion_metric", "champion_version", "ci" ([lo, hi] of challenger - champion, or
    None), "version" (registered version, None if rejected), "summary", "run_id", "run_url", "holdout_uri"}.
    """
    metric = cfg.primary_metric
    check_metric(cfg.task, metric)
    client = MlflowClient(tracking_uri=tracking.configure_mlflow())
    run_id, model_uri = candidate["run_id"], candidate["model_uri"]
    run = client.get_run(run_id)
    holdout_uri = run.data.tags.get("airloop.test_uri")
    if not holdout_uri:
        raise GateError(f"run {run_id}: no airloop.test_uri tag, so there is no frozen holdout to judge on")
    holdout = lake.read_parquet(holdout_uri)
    holdout = holdout[holdout[cfg.target].notna()].reset_index(drop=True)
    y_true = holdout[cfg.target].to_numpy()

    challenger = mlflow.sklearn.load_model(model_uri)
    chall_metrics, chall = _score(cfg, challenger, holdout)
    value = chall_metrics.get(metric)
    checks: list[dict[str, Any]] = []
    if value is None or math.isnan(value):
        checks.append({"check": "metric", "passed": False, "detail": f"{metric} is undefined on this holdout"})

    min_value = cfg.evaluation.min_value
    if min_value is not None and value is not None:
        ok = value >= min_value if greater_is_better(metric) else value <= min_value
        op = (">=" if ok else "<") if greater_is_better(metric) else ("<=" if ok else ">")
        checks.append(
            {"check": "min_value", "passed": ok, "detail": f"{metric} {value:.4f} {op} min_value {min_value:g}"}
        )

    champion_mv = registry.get_version(cfg, registry.CHAMPION)
    champion_version = str(champion_mv.version) if champion_mv is not None else None
    champion_value, ci = None, None
    if champion_mv is None:
        checks.append({"check": "champion", "passed": True, "detail": "no champion yet: nothing to compare"})
    else:
        try:
            champion = mlflow.sklearn.load_model(f"models:/{cfg.registered_model_name}/{champion_version}")
            champ_metrics, champ = _score(cfg, champion, holdout)
        except GateError as err:
            # The data changed shape since the champion was trained: it cannot compete on this holdout.
            checks.append(
                {"check": "champion", "passed": True, "detail": f"champion v{champion_version} cannot score: {err}"}
            )
        else:
            champion_value = champ_metrics.get(metric)
            if value is not None and champion_value is not None:
                checks.append(_champion_check(cfg, metric, value, champion_value, champion_version))
                ci = bootstrap_ci(cfg, y_true, chall, champ, metric)

    rows = holdout[chall["features"]].head(INFRA_ROWS)
    passed, detail = infra_check(model_uri, rows, list(chall["y_pred"][: len(rows)]))
    checks.append({"check": "infra", "passed": passed, "detail": detail})

    blessed = all(c["passed"] for c in checks)
    version = None
    if blessed:
        version = registry.register(
            cfg,
            model_uri,
            run_id,
            tags={
                "airloop.pipeline": cfg.name,
                "airloop.candidate": candidate.get("candidate") or "",
                "airloop.data_fingerprint": run.data.tags.get("airloop.data_fingerprint", ""),
                f"airloop.gate.{metric}": f"{value:.6f}",
            },
        )
        registry.set_challenger(cfg, version)

    reasons = [f"{'PASS' if c['passed'] else 'FAIL'} {c['check']}: {c['detail']}" for c in checks]
    url = tracking.run_url(run_id)
    verdict = {
        "blessed": blessed,
        "reasons": reasons,
        "checks": checks,
        "metric": metric,
        "challenger_metric": value,
        "champion_metric": champion_value,
        "champion_version": champion_version,
        "ci": ci,
        "version": version,
        "run_id": run_id,
        "run_url": url,
        "holdout_uri": holdout_uri,
    }
    verdict["summary"] = _summary(cfg, candidate, verdict, len(holdout))
    _record(client, cfg, verdict, run_info)
    log.info("%s", verdict["summary"])
    return verdict


def _record(
    client: MlflowClient, cfg: PipelineConfig, verdict: dict[str, Any], run_info: dict[str, Any] | None
) -> None:
    """Write the verdict to the challenger's run: tags, a few metrics, and gate/verdict.json."""
    run_id = verdict["run_id"]
    tags = {
        "airloop.gate.verdict": "blessed" if verdict["blessed"] else "rejected",
        "airloop.gate.reasons": "\n".join(verdict["reasons"])[:5000],
        "airloop.gate.champion_version": verdict["champion_version"] or "none",
    }
    if verdict["version"]:
        tags["airloop.registered_version"] = verdict["version"]
    tags.update({f"airloop.gate.{k.split('.', 1)[1]}": v for k, v in tracking.lineage_tags(run_info).items()})
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    metric = verdict["metric"]
    if verdict["champion_metric"] is not None:
        client.log_metric(run_id, f"gate_champion_{metric}", verdict["champion_metric"])
    if verdict["ci"]:
        client.log_metric(run_id, f"gate_diff_{metric}_ci_low", verdict["ci"][0])
        client.log_metric(run_id, f"gate_diff_{metric}_ci_high", verdict["ci"][1])
    client.log_dict(run_id, {**verdict, "pipeline": cfg.name, "airflow": run_info}, "gate/verdict.json")


def _summary(cfg: PipelineConfig, candidate: dict[str, Any], v: dict[str, Any], n_rows: int) -> str:
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
        if v["ci"]:
            shown += f" (difference 95% CI [{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}])"
    lines.append(f"  {metric}: challenger {shown}")
    lines += [f"  {r}" for r in v["reasons"]]
    lines.append(f"  evidence: {v['run_url']} (gate/verdict.json)")
    return "\n".join(lines)


def require_blessed(verdict: dict[str, Any]) -> str:
    """The registered version of a blessed verdict; NothingToDo (the DAG skips) when it was rejected."""
    if verdict.get("blessed") and verdict.get("version"):
        return str(verdict["version"])
    reasons = "; ".join(r for r in verdict.get("reasons", []) if r.startswith("FAIL"))
    raise NothingToDo(f"run {verdict.get('run_id')} was rejected by the gate: {reasons or 'no version'}")
