"""Bayesian hyperparameter search with Optuna: TPE over a candidate's ``search_space`` (the same YAML keys as
the random search), cross-validated fold by fold with median pruning, and every trial logged as a nested
MLflow run under the candidate's training run.

A list of values becomes a categorical choice, a ``{low, high, log}`` range a float (or integer) range. A
space made only of lists, no larger than the trial budget, is searched exhaustively (Optuna's grid sampler),
as ``RandomizedSearchCV`` does. ``training.search: random`` keeps the scikit-learn random search.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.metrics import check_scoring

from airloop.config import CandidateConfig, SearchRange
from airloop.store import tracking

PRUNE_STARTUP_TRIALS = 3  # trials that always run every fold, so the median is worth something


def _suggest(trial: Any, key: str, spec: Any) -> Any:
    if isinstance(spec, SearchRange):
        if isinstance(spec.low, int) and isinstance(spec.high, int):
            return trial.suggest_int(key, spec.low, spec.high, log=spec.log)
        return trial.suggest_float(key, float(spec.low), float(spec.high), log=spec.log)
    return trial.suggest_categorical(key, list(spec))


def _sampler(space: dict[str, Any], n_trials: int, seed: int) -> tuple[Any, int]:
    """(sampler, number of trials): the grid when the whole (categorical) space fits the budget, else TPE."""
    import optuna

    if all(isinstance(v, list) for v in space.values()):
        size = math.prod(len(v) for v in space.values())
        if size <= n_trials:
            return optuna.samplers.GridSampler({k: list(v) for k, v in space.items()}, seed=seed), size
    startup = max(1, min(10, n_trials // 2))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup), n_trials


def optuna_search(
    model: Any,
    candidate: CandidateConfig,
    X: pd.DataFrame,
    y: pd.Series,
    cv: Any,
    scoring: Any,
    n_trials: int,
    seed: int,
) -> tuple[Any, dict[str, Any], float, list[dict[str, Any]]]:
    """Search ``candidate.search_space`` on the unfitted pipeline ``model`` (parameters of its "model" step).

    Each trial fits the folds of ``cv`` one by one and reports the running mean score; the median pruner stops
    a trial whose running mean falls below the median of earlier trials at the same fold. Returns (the best
    parameters refitted on all of ``X``, best params, best mean CV score in the scorer's sign (greater is
    better), trials: [{"number", "params", "state", "value", "fold_scores", "duration_s"}]).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    score = check_scoring(model, scoring=scoring)
    folds = list(cv.split(X, y))
    sampler, n_trials = _sampler(candidate.search_space, n_trials, seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=PRUNE_STARTUP_TRIALS, n_warmup_steps=0)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    records: list[dict[str, Any]] = []
    seen: dict[tuple, float] = {}

    def objective(trial: Any) -> float:
        params = {k: _suggest(trial, k, spec) for k, spec in candidate.search_space.items()}
        key = tuple(sorted((k, repr(v)) for k, v in params.items()))
        record = {"number": trial.number, "params": params, "fold_scores": [], "state": "complete"}
        records.append(record)
        started = time.perf_counter()
        if key in seen:  # TPE may propose a point again: reuse its score rather than refit
            record.update(value=seen[key], duration_s=0.0, state="repeat")
            return seen[key]
        estimator = clone(model).set_params(**{f"model__{k}": v for k, v in params.items()})
        for step, (train_idx, valid_idx) in enumerate(folds):
            fitted = estimator.fit(X.iloc[train_idx], y.iloc[train_idx])
            record["fold_scores"].append(float(score(fitted, X.iloc[valid_idx], y.iloc[valid_idx])))
            trial.report(float(np.mean(record["fold_scores"])), step)
            if step < len(folds) - 1 and trial.should_prune():
                record.update(state="pruned", value=float(np.mean(record["fold_scores"])))
                record["duration_s"] = time.perf_counter() - started
                raise optuna.TrialPruned()
        value = float(np.mean(record["fold_scores"]))
        seen[key] = value
        record.update(value=value, duration_s=time.perf_counter() - started)
        return value

    study.optimize(objective, n_trials=n_trials, catch=())
    best = study.best_trial
    best_params = {k: best.params[k] for k in candidate.search_space}
    refit = clone(model).set_params(**{f"model__{k}": v for k, v in best_params.items()}).fit(X, y)
    return refit, best_params, float(best.value), records


def log_trials(parent_run_id: str, experiment_id: str, trials: list[dict[str, Any]], metric: str, sign: float) -> None:
    """One nested MLflow run per trial under ``parent_run_id``: its params, the mean CV metric and per-fold
    values (``sign`` turns the scorer's value back into the metric, -1 for "neg_*" scorers), its state."""
    from mlflow.entities import Metric, Param, RunStatus, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    now = int(time.time() * 1000)
    for t in trials:
        run = client.create_run(
            experiment_id,
            run_name=f"trial-{t['number']}",
            tags={
                "mlflow.parentRunId": parent_run_id,
                "airloop.stage": "tune",
                tracking.RUN_TYPE_TAG: "trial",  # nested under its candidate in the training view
                "airloop.trial": str(t["number"]),
                "airloop.trial_state": t["state"],
            },
        )
        metrics = [Metric(f"cv_{metric}", sign * t["value"], now, 0)] if t.get("value") is not None else []
        metrics += [Metric(f"cv_{metric}_fold", sign * v, now, i) for i, v in enumerate(t["fold_scores"])]
        metrics.append(Metric("trial_duration_s", float(t.get("duration_s", 0.0)), now, 0))
        client.log_batch(
            run.info.run_id,
            metrics=metrics,
            params=[Param(k, str(v)) for k, v in t["params"].items()],
            tags=[RunTag("airloop.folds_run", str(len(t["fold_scores"])))],
        )
        status = RunStatus.to_string(RunStatus.KILLED if t["state"] == "pruned" else RunStatus.FINISHED)
        client.set_terminated(run.info.run_id, status=status)
