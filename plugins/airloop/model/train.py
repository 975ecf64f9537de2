"""Training: the train/test split, a seeded hyperparameter search per candidate (one MLflow run each), the
logged model, and the choice of the best candidate.

The logged artifact is the whole scikit-learn ``Pipeline`` (preprocessing + estimator, see
:mod:`airloop.model.candidates`), so it scores raw rows with the original columns, unseen categories and
missing values included.
"""

from __future__ import annotations

import logging
import math
import warnings
from importlib.metadata import version as package_version
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature, infer_signature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import AnyType, ColSpec, Schema
from sklearn.model_selection import (
    KFold,
    RandomizedSearchCV,
    StratifiedKFold,
    cross_val_score,
    train_test_split,
)
from sklearn.pipeline import Pipeline

from airloop.config import CandidateConfig, PipelineConfig
from airloop.data.datasets import feature_columns, fingerprint
from airloop.errors import BadInput
from airloop.model.calibration import calibrate_and_log
from airloop.model.candidates import build_pipeline, get_candidate, resolve_estimator, search_space
from airloop.model.metrics import check_metric, compute_metrics, cv_value, greater_is_better, predict_with_proba, scorer
from airloop.store import lake, models, tracking
from airloop.store.lake import BATCH_COLUMN
from airloop.values import plain

log = logging.getLogger(__name__)

MIN_TRAIN_ROWS = 20


# ------------------------------------------------------------------------------------------------ split


def _check_trainable(cfg: PipelineConfig, frame: pd.DataFrame) -> None:
    where = f"pipeline {cfg.name!r}"
    if cfg.target not in frame.columns:
        raise BadInput(
            f"{where}: target column {cfg.target!r} is not in the training data "
            f"(found columns: {sorted(map(str, frame.columns))})"
        )
    if len(frame) < MIN_TRAIN_ROWS:
        raise BadInput(
            f"{where}: training needs at least {MIN_TRAIN_ROWS} labeled rows in target column "
            f"{cfg.target!r}, found {len(frame)}"
        )
    if cfg.task == "classification":
        counts = frame[cfg.target].value_counts()
        if len(counts) < 2:
            found = repr(plain(counts.index[0])) if len(counts) else "none"
            raise BadInput(
                f"{where}: classification needs at least two classes in target column {cfg.target!r}, "
                f"found a single class {found} in {len(frame)} rows"
            )


def _time_key(cfg: PipelineConfig, frame: pd.DataFrame) -> tuple[str | None, pd.Series | None]:
    """The column that orders rows in time (event time, else the batch id) and its sortable values."""
    for col in (cfg.event_time_column, BATCH_COLUMN):
        if col and col in frame.columns:
            values = frame[col]
            if not (pd.api.types.is_datetime64_any_dtype(values) or pd.api.types.is_numeric_dtype(values)):
                values = pd.to_datetime(values, errors="coerce", utc=True)
            if values.notna().any():
                return col, values
    return None, None


def _time_split(frame: pd.DataFrame, key: pd.Series, test_size: float) -> tuple[pd.Index, pd.Index] | None:
    """Rows at or after the time where the last ``test_size`` share of rows begins are the test set.

    Ties never straddle the boundary. None when all rows share one time (no time order to use).
    """
    order = key.sort_values(kind="mergesort", na_position="first")
    boundary = order.iloc[min(len(order) - 1, int(round(len(order) * (1 - test_size))))]
    test_mask = key >= boundary
    if test_mask.all():
        # The boundary fell on the earliest time: move it to the next distinct time.
        later = order[order > boundary]
        if later.empty:
            return None
        test_mask = key >= later.iloc[0]
    if not test_mask.any():
        return None
    return frame.index[~test_mask], frame.index[test_mask]


def prepare_split(cfg: PipelineConfig, frame: pd.DataFrame, out_prefix_uri: str) -> dict[str, Any]:
    """Split a labeled frame into train and test Parquet under ``out_prefix_uri``.

    Time-aware (latest ``training.test_size`` share of rows by event time, else by ``_batch_id``) when a
    time column exists; otherwise stratified (classification) or random, seeded. Also writes
    ``reference.parquet``, a seeded sample of the training rows for drift monitoring.
    Returns {"train_uri", "test_uri", "reference_uri", "fingerprint", "n_train", "n_test", "numeric",
    "categorical", "split": "time"|"stratified"|"random"}.
    """
    frame = frame[frame[cfg.target].notna()] if cfg.target in frame.columns else frame
    _check_trainable(cfg, frame)
    frame = frame.reset_index(drop=True)
    data_fingerprint = fingerprint(frame)
    seed = cfg.training.seed
    numeric, categorical = feature_columns(cfg, frame)
    time_col, key = _time_key(cfg, frame)
    if len(frame) > cfg.training.max_rows:
        if key is not None:  # keep the most recent rows
            keep = key.sort_values(kind="mergesort", na_position="first").index[-cfg.training.max_rows :]
            frame = frame.loc[sorted(keep)].reset_index(drop=True)
            time_col, key = _time_key(cfg, frame)
        else:
            frame = frame.sample(n=cfg.training.max_rows, random_state=seed).reset_index(drop=True)

    split_kind = "random"
    idx = _time_split(frame, key, cfg.training.test_size) if key is not None else None
    if idx is not None:
        split_kind = "time"
        train_idx, test_idx = idx
    else:
        stratify = None
        if cfg.task == "classification" and frame[cfg.target].value_counts().min() >= 2:
            stratify = frame[cfg.target]
            split_kind = "stratified"
        train_idx, test_idx = train_test_split(
            frame.index, test_size=cfg.training.test_size, random_state=seed, stratify=stratify
        )
    train = frame.loc[sorted(train_idx)].reset_index(drop=True)
    test = frame.loc[sorted(test_idx)].reset_index(drop=True)
    reference = train.sample(n=min(len(train), cfg.monitoring.reference_rows), random_state=seed)

    out = {
        "train_uri": lake.write_parquet(lake.join(out_prefix_uri, "train.parquet"), train),
        "test_uri": lake.write_parquet(lake.join(out_prefix_uri, "test.parquet"), test),
        "reference_uri": lake.write_parquet(
            lake.join(out_prefix_uri, "reference.parquet"), reference.reset_index(drop=True)
        ),
        "fingerprint": data_fingerprint,
        "n_train": len(train),
        "n_test": len(test),
        "numeric": numeric,
        "categorical": categorical,
        "split": split_kind,
    }
    if time_col and split_kind == "time":
        out["time_column"] = time_col
    return out


# --------------------------------------------------------------------------------------------- training


def _pip_requirements(extra: tuple[str, ...] = ()) -> list[str]:
    return [f"{pkg}=={package_version(pkg)}" for pkg in ("scikit-learn", "pandas", "numpy", "skops", *extra)]


def skops_trusted_types(model: Any) -> list[str]:
    """Types skops must be told to trust to load ``model``; BadInput naming the estimator if skops cannot
    serialize it or it needs a type outside the loader's allow-list (Airloop never falls back to pickle)."""
    import skops.io as sio

    what = _estimator_name(model)
    try:
        untrusted = sio.get_untrusted_types(data=sio.dumps(model))
    except Exception as err:  # skops raises assorted errors for objects it cannot represent
        raise BadInput(
            f"estimator {what}: skops cannot serialize it ({type(err).__name__}: {err}); Airloop saves models "
            f"with skops only (never pickle), so pick an estimator skops supports"
        ) from err
    unexpected = models.untrusted_beyond_allow_list(untrusted)
    if unexpected:
        raise BadInput(
            f"estimator {what}: its saved form references types outside the trusted list (sklearn., numpy., "
            f"scipy., operator.methodcaller): {unexpected}; Airloop would refuse to load it"
        )
    return list(untrusted)


def _estimator_name(model: Any) -> str:
    """``module.Class`` of the final estimator of ``model`` (a Pipeline or a bare estimator)."""
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    return f"{type(final).__module__}.{type(final).__qualname__}"


def model_signature(X_sample: pd.DataFrame, predictions: Any) -> ModelSignature:
    """``infer_signature`` of raw rows, with integer columns declared ``Any``.

    MLflow's schema enforcement refuses float64 for a "long" column and int64 for a "double" one, yet an
    integer column turns float as soon as a batch has a missing value; the pipeline accepts both.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        signature = infer_signature(X_sample, predictions)
    integer = {
        str(c)
        for c in X_sample.columns
        if pd.api.types.is_integer_dtype(X_sample[c]) and not pd.api.types.is_bool_dtype(X_sample[c])
    }
    columns = [
        ColSpec(AnyType(), spec.name, required=spec.required) if spec.name in integer else spec
        for spec in signature.inputs.inputs
    ]
    return ModelSignature(inputs=Schema(columns), outputs=signature.outputs, params=signature.params)


def log_sklearn_model(model: Pipeline, X_sample: pd.DataFrame) -> tuple[Any, str]:
    """Log ``model`` as "model" in the active run, skops-serialized with its trusted types.

    Returns (mlflow ModelInfo, "skops"). BadInput naming the estimator when skops cannot save it: there is
    no pickle fallback, because the loader refuses pickle (docs/security.md).
    """
    signature = model_signature(X_sample, model.predict(X_sample))
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        signature=signature,
        input_example=X_sample.head(5),
        serialization_format="skops",
        skops_trusted_types=skops_trusted_types(model),
        pip_requirements=_pip_requirements(),
    )
    return info, "skops"


def _fit(
    cfg: PipelineConfig, candidate: CandidateConfig, split: dict[str, Any], X: pd.DataFrame, y: pd.Series
) -> tuple[Pipeline, dict[str, Any], float, Any, list[dict[str, Any]]]:
    """Search (``training.search``: Optuna TPE or random) or just cross-validate, and refit; returns (fitted
    model, best params, cv score, scorer, Optuna trials (empty for the random search))."""
    seed = cfg.training.seed
    model = build_pipeline(candidate, split["numeric"], split["categorical"], seed, task=cfg.task)
    classes = np.unique(y) if cfg.task == "classification" else np.array([])
    if cfg.task == "classification":
        rarest = y.value_counts()
        if rarest.min() < cfg.training.cv_folds:
            raise BadInput(
                f"pipeline {cfg.name!r}: class {plain(rarest.idxmin())!r} of target column {cfg.target!r} has "
                f"{rarest.min()} training rows; training.cv_folds={cfg.training.cv_folds} needs at least that many"
            )
    cv_scorer = scorer(cfg.task, cfg.primary_metric, classes)
    splitter_cls = StratifiedKFold if cfg.task == "classification" else KFold
    cv = splitter_cls(n_splits=cfg.training.cv_folds, shuffle=True, random_state=seed)
    space = search_space(candidate, model)
    if not space:
        scores = cross_val_score(model, X, y, scoring=cv_scorer, cv=cv, n_jobs=1, error_score="raise")
        model.fit(X, y)
        return model, {}, cv_value(cv_scorer, float(np.mean(scores))), cv_scorer, []
    if cfg.training.search == "optuna":
        from airloop.model.tuning import optuna_search

        fitted, best, score, trials = optuna_search(model, candidate, X, y, cv, cv_scorer, cfg.training.n_iter, seed)
        return fitted, best, cv_value(cv_scorer, score), cv_scorer, trials
    finite = all(isinstance(v, list) for v in space.values())
    grid_size = math.prod(len(v) for v in space.values()) if finite else cfg.training.n_iter
    search = RandomizedSearchCV(
        model,
        space,
        n_iter=min(cfg.training.n_iter, grid_size),
        scoring=cv_scorer,
        cv=cv,
        refit=True,
        random_state=seed,
        n_jobs=1,
        error_score="raise",
    )
    search.fit(X, y)
    best = {k.removeprefix("model__"): v for k, v in search.best_params_.items()}
    return search.best_estimator_, best, cv_value(cv_scorer, search.best_score_), cv_scorer, []


def train_candidate(
    cfg: PipelineConfig,
    candidate_name: str,
    split: dict[str, Any],
    run_info: dict[str, Any] | None = None,
    parent_run_id: str | None = None,
) -> dict[str, Any]:
    """Search, refit and test one candidate on the split from :func:`prepare_split`; log one MLflow run.

    The run (nested under ``parent_run_id`` when given) holds params, cv and test metrics, lineage tags,
    the train/test datasets as inputs and the model. Returns {"run_id", "candidate", "model_uri",
    "model_id", "cv_score", "test_metrics", "primary_metric", "greater_is_better", "serialization",
    "run_url", "summary"}.
    """
    metric = cfg.primary_metric
    check_metric(cfg.task, metric)
    candidate = get_candidate(cfg, candidate_name)
    estimator_path, _ = resolve_estimator(candidate, cfg.task)
    features = list(split["numeric"]) + list(split["categorical"])
    train = lake.read_parquet(split["train_uri"])
    test = lake.read_parquet(split["test_uri"])
    X, y = train[features], train[cfg.target]
    model, best_params, cv_score, cv_scorer, trials = _fit(cfg, candidate, split, X, y)
    y_pred, y_proba, classes = predict_with_proba(cfg.task, model, test[features])
    test_metrics = compute_metrics(cfg.task, test[cfg.target], y_pred, y_proba, classes=classes)

    experiment_id = tracking.ensure_experiment(cfg)
    tags = {
        **tracking.lineage_tags(run_info),
        "airloop.pipeline": cfg.name,
        "airloop.stage": "train",
        tracking.RUN_TYPE_TAG: "candidate",
        "airloop.candidate": candidate.name,
        "airloop.train_uri": split["train_uri"],
        "airloop.test_uri": split["test_uri"],
        "airloop.data_fingerprint": split.get("fingerprint", ""),
        "airloop.split": split.get("split", ""),
    }
    if split.get("reference_uri"):
        tags["airloop.reference_uri"] = split["reference_uri"]
    if parent_run_id:
        # The tag (not start_run(parent_run_id=...)) nests the run without requiring an active parent.
        tags["mlflow.parentRunId"] = parent_run_id
    params = {
        **{k: v for k, v in candidate.params.items()},
        **best_params,
        "candidate": candidate.name,
        "estimator": estimator_path,
        "cv_folds": cfg.training.cv_folds,
        "n_iter": cfg.training.n_iter,
        "search": cfg.training.search if candidate.search_space else "none",
        "seed": cfg.training.seed,
        "n_train": len(train),
        "n_test": len(test),
    }
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{candidate.name}", tags=tags) as run:
        mlflow.log_params(params)
        with warnings.catch_warnings():
            # file:// sources match two equivalent resolvers; MLflow warns and picks one.
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            # The dataset schema is descriptive only; the model signature declares integers as double.
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
            train_ds = mlflow.data.from_pandas(train, source=split["train_uri"], name="train", targets=cfg.target)
            test_ds = mlflow.data.from_pandas(test, source=split["test_uri"], name="test", targets=cfg.target)
            mlflow.log_input(train_ds, context="training")
            mlflow.log_input(test_ds, context="testing")
        info, serialization = log_sklearn_model(model, X.head(50))
        mlflow.set_tag("airloop.serialization", serialization)
        mlflow.log_metric(f"cv_{metric}", cv_score, model_id=info.model_id)
        mlflow.log_metrics({f"test_{k}": v for k, v in test_metrics.items()}, model_id=info.model_id, dataset=test_ds)
        # Calibration for estimated performance (CBPE), on the holdout the model did not train on.
        calibrate_and_log(test[cfg.target], y_proba, classes, seed=cfg.training.seed)
        run_id = run.info.run_id
    if trials:  # after the search, so tracking is not inside the timed fits
        from airloop.model.tuning import log_trials

        sign = cv_value(cv_scorer, 1.0)
        log_trials(run_id, experiment_id, trials, metric, sign)
    url = tracking.run_url(run_id)
    shown = ", ".join(f"{k}={v:.4f}" for k, v in test_metrics.items())
    summary = "\n".join(
        [
            f"Trained candidate {candidate.name} ({estimator_path}) on {len(train)} rows, "
            f"{split.get('split', '?')} split",
            f"  cv_{metric} = {cv_score:.4f} over {cfg.training.cv_folds} folds; best params {best_params}",
            f"  test ({len(test)} rows): {shown}",
            f"  model: {info.model_uri} ({serialization}); run: {url}",
        ]
    )
    log.info("%s", summary)
    return {
        "run_id": run_id,
        "candidate": candidate.name,
        "model_uri": info.model_uri,
        "model_id": info.model_id,
        "cv_score": cv_score,
        "test_metrics": test_metrics,
        "primary_metric": metric,
        "greater_is_better": greater_is_better(metric),
        "serialization": serialization,
        "run_url": url,
        "summary": summary,
    }


def select_best(cfg: PipelineConfig, results: list[dict[str, Any]]) -> dict[str, Any]:
    """The result with the best cv score of the primary metric (direction-aware), tagged airloop.selected.

    Returns that result plus "ranking": [(candidate, cv_score), ...] best first, and a new "summary".
    """
    usable = [r for r in results if r and r.get("cv_score") is not None and not math.isnan(r["cv_score"])]
    if not usable:
        raise BadInput(f"pipeline {cfg.name!r}: no candidate produced a cv score (got {len(results)} results)")
    higher = greater_is_better(cfg.primary_metric)
    ranked = sorted(usable, key=lambda r: r["cv_score"], reverse=higher)
    best = ranked[0]
    tracking.configure_mlflow()
    client = MlflowClient()
    client.set_tag(best["run_id"], "airloop.selected", "true")
    for other in ranked[1:]:
        client.set_tag(other["run_id"], "airloop.selected", "false")
    ranking = [(r["candidate"], r["cv_score"]) for r in ranked]
    direction = "higher" if higher else "lower"
    summary = f"Selected {best['candidate']} by cv_{cfg.primary_metric} ({direction} is better): " + ", ".join(
        f"{name}={score:.4f}" for name, score in ranking
    )
    return {**best, "ranking": ranking, "summary": summary}
