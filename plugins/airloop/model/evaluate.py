"""The evaluation gate ("blessing"): may the newly trained model become the challenger?

The challenger and the current champion are scored on the SAME frozen holdout (the challenger's test split),
so the comparison is like for like. Blessed only if every check passes:

1. ``min_value``: the primary metric reaches ``evaluation.min_value`` (when set);
2. ``champion``: the one-sided 95% lower confidence bound (paired bootstrap) of the improvement over the
   champion is above ``-evaluation.tolerance`` (tolerance 0: credibly better, not better by the luck of one
   holdout);
3. ``slices``: no slice of a ``segment_columns`` column (with enough rows) is worse than the champion's by more
   than ``evaluation.slice_tolerance``;
4. ``production_window``: on the latest labeled production rows the challenger did not train on, it is not
   credibly worse than the champion (checked once labels exist);
5. ``infra``: the model loads and scores in a fresh Python process, and row order does not change its output.

The verdict is written to the challenger's MLflow run (tags ``airloop.gate.*``, artifact gate/verdict.json),
with evaluation plots (plots/) and a model card (model_card.md). A blessed model is registered, gets the alias
``challenger``, and carries the card as its description. See docs/models.md.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.entities import Metric, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from airloop.config import PipelineConfig
from airloop.errors import BadInput, NothingToDo
from airloop.model.train import check_metric, compute_metrics, greater_is_better, predict_with_proba
from airloop.store import lake, models, registry, tracking
from airloop.store.lake import BATCH_COLUMN

log = logging.getLogger(__name__)

INFRA_ROWS = 20
MIN_SLICE_ROWS = 30  # smaller slices are reported, not judged: their metric is mostly noise
MAX_SLICE_VALUES = 12  # a numeric segment column with more values is sliced by quartile
MIN_WINDOW_ROWS = 100  # labeled production rows needed before the production window is compared
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


# ------------------------------------------------------------------------------ bootstrap, vectorised


def bootstrap_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) counts: how often each holdout row appears in each seeded bootstrap resample.

    A resample drawn with replacement is the same as weighting each row by its count, so every metric below
    is computed for all resamples at once as a weighted metric.
    """
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(float)


def _grouped(weights: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum ``weights`` (B, n) over groups of tied ``scores``, groups ordered by ascending score: (B, G)."""
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ends = np.flatnonzero(np.append(sorted_scores[1:] != sorted_scores[:-1], True))
    cum = np.cumsum(weights[:, order], axis=1)[:, ends]
    return np.diff(cum, axis=1, prepend=0.0), sorted_scores[ends]


def _weighted_auc(pos: np.ndarray, scores: np.ndarray, W: np.ndarray) -> np.ndarray:
    """ROC-AUC per resample (ties count one half), as roc_auc_score with sample_weight=counts."""
    gp, _ = _grouped(W * pos, scores)
    gn, _ = _grouped(W * ~pos, scores)
    below = np.cumsum(gn, axis=1) - gn
    with np.errstate(invalid="ignore", divide="ignore"):
        return (gp * (below + 0.5 * gn)).sum(axis=1) / (gp.sum(axis=1) * gn.sum(axis=1))


def _weighted_ap(pos: np.ndarray, scores: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Average precision per resample, as average_precision_score with sample_weight=counts."""
    gp, _ = _grouped(W * pos, -scores)  # descending score
    gn, _ = _grouped(W * ~pos, -scores)
    tp, fp = np.cumsum(gp, axis=1), np.cumsum(gn, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        return (gp * precision).sum(axis=1) / gp.sum(axis=1)


def _wmean(values: np.ndarray, W: np.ndarray) -> np.ndarray:
    return (W * values).sum(axis=1) / W.sum(axis=1)


def weighted_metric(task: str, metric: str, y_true: np.ndarray, scored: dict, W: np.ndarray) -> np.ndarray:
    """``metric`` of one model's predictions (``scored``: y_pred, y_proba, classes) for every row of the
    weight matrix ``W`` (B, n); NaN where undefined (e.g. one class only). Vectorised for regression and
    binary classification; multiclass roc_auc/f1/log_loss fall back to a loop over resamples."""
    y_pred = np.asarray(scored["y_pred"])
    if task == "regression":
        err = y_pred.astype(float) - y_true.astype(float)
        if metric == "rmse":
            return np.sqrt(_wmean(err**2, W))
        if metric == "mae":
            return _wmean(np.abs(err), W)
        if metric == "r2":
            mean = _wmean(y_true.astype(float), W)
            total = (W * (y_true.astype(float)[None, :] - mean[:, None]) ** 2).sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                return 1.0 - (W * err**2).sum(axis=1) / total
    classes = scored.get("classes")
    classes = np.asarray(classes) if classes is not None else np.unique(y_true)
    proba = scored.get("y_proba")
    if metric == "accuracy":
        return _wmean((y_pred == y_true).astype(float), W)
    if len(classes) == 2:
        pos = y_true == classes[1]
        if metric == "f1":
            pred_pos = y_pred == classes[1]
            tp, fp, fn = ((W * (a & b)).sum(axis=1) for a, b in ((pos, pred_pos), (~pos, pred_pos), (pos, ~pred_pos)))
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        if proba is not None:
            p1 = np.asarray(proba, dtype=float)
            p1 = p1[:, 1] if p1.ndim == 2 else p1
            if metric == "roc_auc":
                return _weighted_auc(pos, p1, W)
            if metric == "pr_auc":
                return _weighted_ap(pos, p1, W)
            if metric == "brier":
                return _wmean((p1 - pos) ** 2, W)
            if metric == "log_loss":
                eps = np.finfo(float).eps
                return _wmean(-np.log(np.clip(np.where(pos, p1, 1.0 - p1), eps, 1.0)), W)
    out = np.full(len(W), np.nan)  # multiclass: one resample at a time
    for b, counts in enumerate(W):
        idx = np.repeat(np.arange(len(y_true)), counts.astype(int))
        sub_proba = np.asarray(proba)[idx] if proba is not None else None
        got = compute_metrics(task, y_true[idx], y_pred[idx], sub_proba, classes=classes, only=[metric])
        out[b] = got.get(metric, np.nan)
    return out


def improvement(metric: str, challenger: Any, champion: Any) -> Any:
    """How much better the challenger is (direction-aware: positive = better), scalars or arrays."""
    diff = np.asarray(challenger, dtype=float) - np.asarray(champion, dtype=float)
    return diff if greater_is_better(metric) else -diff


def compare(
    cfg: PipelineConfig, metric: str, y_true: np.ndarray, chall: dict, champ: dict, W: np.ndarray | None = None
) -> dict[str, Any]:
    """Paired bootstrap of the improvement (challenger over champion) on the same rows.

    Returns {"improvement" (point estimate), "ci": [lo, hi] (two-sided 95%), "bounds": [lower, upper]
    (one-sided 95% confidence bounds: the 5th and 95th percentiles), "resamples"}; "ci" and "bounds" are None
    when fewer than half the resamples define the metric.
    """
    if W is None:
        W = bootstrap_weights(len(y_true), cfg.evaluation.bootstrap_resamples, cfg.training.seed)
    full = np.ones((1, len(y_true)))
    point = float(improvement(metric, *(weighted_metric(cfg.task, metric, y_true, m, full)[0] for m in (chall, champ))))
    diffs = improvement(
        metric,
        weighted_metric(cfg.task, metric, y_true, chall, W),
        weighted_metric(cfg.task, metric, y_true, champ, W),
    )
    diffs = diffs[np.isfinite(diffs)]
    ci = bounds = None
    if len(diffs) >= len(W) // 2:
        ci = [float(v) for v in np.percentile(diffs, [2.5, 97.5])]
        bounds = [float(v) for v in np.percentile(diffs, [5.0, 95.0])]
    return {"improvement": point, "ci": ci, "bounds": bounds, "resamples": int(len(diffs))}


# ------------------------------------------------------------------------------------------ the checks


def champion_check(
    cfg: PipelineConfig, metric: str, value: float, champion_value: float, champion_version: str, cmp: dict
) -> dict[str, Any]:
    """Is the challenger credibly not worse than the champion by more than ``tolerance``?

    A one-sided test at the 5% level on the paired bootstrap: passes only when the one-sided 95% lower
    confidence bound of the improvement (direction-aware) is above ``-tolerance``. With tolerance 0 the
    challenger must be credibly better, not better by the luck of one holdout. Without a CI (too few rows to
    resample) the point estimate decides, and the detail says so.
    """
    tol = cfg.evaluation.tolerance
    point, bounds = cmp["improvement"], cmp["bounds"]
    relation = f"better by {point:.4f}" if point > 1e-12 else ("equal" if abs(point) <= 1e-12 else "")
    relation = relation or f"worse by {-point:.4f}"
    head = (
        f"{metric} {value:.4f} (challenger) vs {champion_value:.4f} (champion v{champion_version}) on the same "
        f"holdout: {relation}"
    )
    if bounds is None:
        passed = point > -tol if tol > 0 else point > 1e-12
        return {
            "check": "champion",
            "passed": passed,
            "detail": f"{head}; no bootstrap CI (too few rows), judged on the point estimate, tolerance {tol:g}",
        }
    lower = bounds[0]
    passed = lower > -tol
    need = "> 0 (credibly better; tolerance 0)" if tol == 0 else f"> {-tol:g} (tolerance {tol:g})"
    lo, hi = cmp["ci"]
    detail = (
        f"{head}; one-sided 95% lower bound of the improvement {lower:+.4f} must be {need}; "
        f"95% CI [{lo:+.4f}, {hi:+.4f}] over {cmp['resamples']} paired bootstrap resamples"
    )
    return {"check": "champion", "passed": passed, "detail": detail}


def window_check(cfg: PipelineConfig, metric: str, window: dict[str, Any]) -> dict[str, Any]:
    """On the latest labeled production window the challenger must not be credibly worse: fails only when
    the one-sided 95% upper bound of the improvement is below ``-tolerance``. Passes (saying why) without a
    window."""
    if "skipped" in window:
        return {"check": "production_window", "passed": True, "detail": window["skipped"]}
    tol = cfg.evaluation.tolerance
    cmp = window["compare"]
    head = (
        f"{metric} {window['challenger']:.4f} (challenger) vs {window['champion']:.4f} (champion) on "
        f"{window['rows']} labeled production rows of {', '.join(window['batches'])}"
    )
    if cmp["bounds"] is None:
        return {"check": "production_window", "passed": True, "detail": f"{head}; too few rows for a CI, not judged"}
    upper = cmp["bounds"][1]
    passed = upper >= -tol
    detail = (
        f"{head}: one-sided 95% upper bound of the improvement {upper:+.4f} must be >= {-tol:g} (not credibly worse)"
    )
    return {"check": "production_window", "passed": passed, "detail": detail}


def segment_labels(frame: pd.DataFrame, column: str) -> pd.Series:
    """The slice of each row for one segment column: its value, or its quartile for a many-valued number."""
    values = frame[column]
    if pd.api.types.is_numeric_dtype(values) and values.nunique() > MAX_SLICE_VALUES:
        return pd.qcut(values, 4, duplicates="drop").astype(str)
    return values.astype("string").fillna("(missing)").astype(str)


def slice_metrics(
    cfg: PipelineConfig, metric: str, holdout: pd.DataFrame, chall: dict, champ: dict | None
) -> list[dict[str, Any]]:
    """The primary metric per slice of each segment column (challenger, and champion when there is one).

    Each entry: {"column", "value", "rows", "challenger", "champion", "improvement", "judged"}; a slice is
    judged only with at least MIN_SLICE_ROWS rows and the metric defined for both models.
    """
    y_true = holdout[cfg.target].to_numpy()
    out = []
    for column in cfg.segment_columns:
        if column not in holdout.columns:
            out.append({"column": column, "value": None, "rows": 0, "missing": True, "judged": False})
            continue
        labels = segment_labels(holdout, column).to_numpy()
        values = sorted(set(labels))
        W = np.stack([(labels == v).astype(float) for v in values])  # one weight row per slice
        ch = weighted_metric(cfg.task, metric, y_true, chall, W)
        cp = weighted_metric(cfg.task, metric, y_true, champ, W) if champ is not None else np.full(len(values), np.nan)
        for i, value in enumerate(values):
            rows = int(W[i].sum())
            entry = {"column": column, "value": value, "rows": rows, "challenger": _finite(ch[i])}
            entry["champion"] = _finite(cp[i])
            both = entry["challenger"] is not None and entry["champion"] is not None
            entry["improvement"] = float(improvement(metric, ch[i], cp[i])) if both else None
            entry["judged"] = both and rows >= MIN_SLICE_ROWS
            out.append(entry)
    return out


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def slice_check(cfg: PipelineConfig, metric: str, slices: list[dict[str, Any]], has_champion: bool) -> dict:
    """No judged slice may be worse than the champion's by more than ``evaluation.slice_tolerance``."""
    tol = cfg.evaluation.slice_tolerance
    if not cfg.segment_columns:
        return {"check": "slices", "passed": True, "detail": "no segment_columns declared"}
    missing = [s["column"] for s in slices if s.get("missing")]
    if missing:
        return {"check": "slices", "passed": False, "detail": f"segment columns {missing} are not in the holdout"}
    if not has_champion:
        return {"check": "slices", "passed": True, "detail": f"{len(slices)} slices measured; no champion to compare"}
    judged = [s for s in slices if s["judged"]]
    worst = sorted(judged, key=lambda s: s["improvement"])
    failed = [s for s in worst if s["improvement"] < -tol]
    skipped = len(slices) - len(judged)
    note = f" ({skipped} slices under {MIN_SLICE_ROWS} rows or undefined, not judged)" if skipped else ""
    if failed:
        shown = "; ".join(
            f"{s['column']}={s['value']} ({s['rows']} rows) {s['challenger']:.4f} vs {s['champion']:.4f}"
            for s in failed[:3]
        )
        return {
            "check": "slices",
            "passed": False,
            "detail": f"{len(failed)} slice(s) of {len(judged)} worse than the champion by more than "
            f"slice_tolerance {tol:g} on {metric}: {shown}{note}",
        }
    if not worst:
        return {"check": "slices", "passed": True, "detail": f"no slice large enough to judge{note}"}
    w = worst[0]
    return {
        "check": "slices",
        "passed": True,
        "detail": f"{len(judged)} slices within slice_tolerance {tol:g}; worst {w['column']}={w['value']} "
        f"({w['rows']} rows) {w['improvement']:+.4f}{note}",
    }


def production_window(cfg: PipelineConfig, lake: Any, exclude_batches: set[str]) -> tuple[pd.DataFrame, list[str]]:
    """Labeled rows of the latest ``retrain.window_days`` scored batches (``predictions/`` zone) that are not
    in ``exclude_batches`` (the challenger's training data); features from ``validated/``, labels joined
    from ``labels/``. Returns (frame, batches); an empty frame when no labels have arrived yet."""
    from airloop.data.datasets import attach_labels

    scored = [b for b in lake.batches("predictions") if b not in exclude_batches]
    if not scored or cfg.id_column is None:
        return pd.DataFrame(), []
    frame = lake.read_zone("validated", scored)
    if frame.empty:
        return frame, []
    frame = attach_labels(cfg, frame, lake.read_zone("labels"))
    if cfg.target not in frame.columns:
        return pd.DataFrame(), []
    frame = frame[frame[cfg.target].notna()]
    batches = sorted(frame[BATCH_COLUMN].astype(str).unique())[-cfg.retrain.window_days :] if len(frame) else []
    frame = frame[frame[BATCH_COLUMN].astype(str).isin(batches)].reset_index(drop=True)
    return frame, batches


def _window(
    cfg: PipelineConfig, metric: str, challenger: Any, champion: Any, train_uri: str | None, data_lake: Any
) -> dict[str, Any]:
    """Score challenger and champion on the production window (see :func:`production_window`)."""
    exclude: set[str] = set()
    if train_uri:
        train = lake.read_parquet(train_uri)
        if BATCH_COLUMN in train.columns:
            exclude = set(train[BATCH_COLUMN].astype(str).unique())
    frame, batches = production_window(cfg, data_lake, exclude)
    if len(frame) < MIN_WINDOW_ROWS:
        return {
            "skipped": f"no labeled production window yet outside the challenger's training data "
            f"({len(frame)} rows, need {MIN_WINDOW_ROWS})"
        }
    try:
        chall_metrics, chall = _score(cfg, challenger, frame)
        champ_metrics, champ = _score(cfg, champion, frame)
    except GateError as err:
        return {"skipped": f"production window not comparable: {err}"}
    if metric not in chall_metrics or metric not in champ_metrics:
        return {"skipped": f"{metric} undefined on the production window ({len(frame)} rows)"}
    y_true = frame[cfg.target].to_numpy()
    return {
        "rows": len(frame),
        "batches": batches,
        "challenger": chall_metrics[metric],
        "champion": champ_metrics[metric],
        "challenger_metrics": chall_metrics,
        "champion_metrics": champ_metrics,
        "compare": compare(cfg, metric, y_true, chall, champ),
    }


def candidate_from_run(cfg: PipelineConfig, run_id: str) -> dict[str, Any]:
    """Rebuild the :func:`airloop.model.train.select_best` dict of a training run (for DAGs that get a run id)."""
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
    """Apply the gate to ``candidate`` (the dict of :func:`airloop.model.train.select_best`).

    Returns {"blessed", "reasons" (one line per check, passed or failed), "checks", "metric",
    "challenger_metric", "champion_metric", "champion_version", "improvement" (direction-aware: positive =
    better), "ci" ([lo, hi] two-sided 95%, or None), "lower_bound" (one-sided 95%, what the gate decides on),
    "metrics" (all challenger holdout metrics), "slices",
    "production_window", "version" (registered version, None if rejected), "plots", "model_card_uri",
    "summary", "run_id", "run_url", "holdout_uri"}.
    """
    from airloop.store.lake import Lake

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

    challenger = models.load_uri(model_uri)
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
    champion_value, cmp, champ, champion, window = None, None, None, None, None
    if champion_mv is None:
        checks.append({"check": "champion", "passed": True, "detail": "no champion yet: nothing to compare"})
    else:
        try:
            champion = models.load_version(cfg, champion_version)
            champ_metrics, champ = _score(cfg, champion, holdout)
        except GateError as err:
            # The data changed shape since the champion was trained: it cannot compete on this holdout.
            champion, champ = None, None
            checks.append(
                {"check": "champion", "passed": True, "detail": f"champion v{champion_version} cannot score: {err}"}
            )
        else:
            champion_value = champ_metrics.get(metric)
            if value is not None and champion_value is not None:
                cmp = compare(cfg, metric, y_true, chall, champ)
                checks.append(champion_check(cfg, metric, value, champion_value, champion_version, cmp))

    slices = slice_metrics(cfg, metric, holdout, chall, champ)
    checks.append(slice_check(cfg, metric, slices, champ is not None))
    if champion is not None:
        window = _window(cfg, metric, challenger, champion, run.data.tags.get("airloop.train_uri"), Lake(cfg.name))
        checks.append(window_check(cfg, metric, window))

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
                "airloop.gate.verdict_uri": f"runs:/{run_id}/gate/verdict.json",
            },
        )
        registry.set_challenger(cfg, version)

    reasons = [f"{'PASS' if c['passed'] else 'FAIL'} {c['check']}: {c['detail']}" for c in checks]
    url = tracking.run_url(run_id)
    verdict = {
        "blessed": blessed,
        "reasons": reasons,
        "checks": [{k: c[k] for k in ("check", "passed", "detail")} for c in checks],
        "metric": metric,
        "challenger_metric": value,
        "champion_metric": champion_value,
        "champion_version": champion_version,
        "ci": cmp["ci"] if cmp else None,
        "lower_bound": cmp["bounds"][0] if cmp and cmp["bounds"] else None,
        "improvement": cmp["improvement"] if cmp else None,
        "metrics": chall_metrics,
        "slices": slices,
        "production_window": _window_summary(window),
        "version": version,
        "run_id": run_id,
        "run_url": url,
        "holdout_uri": holdout_uri,
        "verdict_uri": f"runs:/{run_id}/gate/verdict.json",
    }
    verdict["plots"] = _plots(client, cfg, run_id, challenger, holdout, chall)
    verdict["summary"] = _summary(cfg, candidate, verdict, len(holdout))
    verdict["model_card_uri"] = _model_card(client, cfg, run, verdict)
    _record(client, cfg, verdict, run_info)
    log.info("%s", verdict["summary"])
    return verdict


def _window_summary(window: dict[str, Any] | None) -> dict[str, Any] | None:
    """The XCom-sized part of a production-window comparison."""
    if window is None or "skipped" in window:
        return window
    return {k: window[k] for k in ("rows", "batches", "challenger", "champion")} | {"ci": window["compare"]["ci"]}


def _plots(client: MlflowClient, cfg: PipelineConfig, run_id: str, model: Any, holdout: pd.DataFrame, scored: dict):
    """Log the evaluation plots to the challenger's run; a plotting failure never fails the gate."""
    from airloop.model import plots

    try:
        return plots.log_evaluation_plots(client, run_id, cfg, model, holdout, scored)
    except Exception as err:  # plots are evidence, not a decision: say so and go on
        log.warning("evaluation plots not logged for run %s: %s", run_id, err)
        return []


def _model_card(client: MlflowClient, cfg: PipelineConfig, run: Any, verdict: dict[str, Any]) -> str | None:
    from airloop.model import modelcard

    try:
        return modelcard.publish(client, cfg, run, verdict)
    except Exception as err:  # the card documents the decision; it must not change it
        log.warning("model card not written for run %s: %s", run.info.run_id, err)
        return None


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
    for check in verdict["checks"]:
        tags[f"airloop.gate.check.{check['check']}"] = "pass" if check["passed"] else "fail"
    if verdict["version"]:
        tags["airloop.registered_version"] = verdict["version"]
    tags.update({f"airloop.gate.{k.split('.', 1)[1]}": v for k, v in tracking.lineage_tags(run_info).items()})
    metric = verdict["metric"]
    metrics: dict[str, float] = {}
    if verdict["champion_metric"] is not None:
        metrics[f"gate_champion_{metric}"] = verdict["champion_metric"]
    if verdict["ci"]:
        metrics[f"gate_improvement_{metric}"] = verdict["improvement"]
        metrics[f"gate_improvement_{metric}_ci_low"] = verdict["ci"][0]
        metrics[f"gate_improvement_{metric}_ci_high"] = verdict["ci"][1]
        metrics[f"gate_improvement_{metric}_lower_bound"] = verdict["lower_bound"]
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
            shown += f" (improvement 95% CI [{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}])"
    lines.append(f"  {metric}: challenger {shown}")
    lines += [f"  {r}" for r in v["reasons"]]
    lines.append(f"  evidence: {v['run_url']} (gate/verdict.json, model_card.md, plots/)")
    return "\n".join(lines)


def require_blessed(verdict: dict[str, Any]) -> str:
    """The registered version of a blessed verdict; NothingToDo (the DAG skips) when it was rejected."""
    if verdict.get("blessed") and verdict.get("version"):
        return str(verdict["version"])
    reasons = "; ".join(r for r in verdict.get("reasons", []) if r.startswith("FAIL"))
    raise NothingToDo(f"run {verdict.get('run_id')} was rejected by the gate: {reasons or 'no version'}")
