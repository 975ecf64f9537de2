"""Training: the train/test split, candidate pipelines, a seeded hyperparameter search per candidate (one
MLflow run each), and the choice of the best candidate.

The logged artifact is the whole scikit-learn ``Pipeline`` (preprocessing + estimator), so it scores raw rows
with the original columns, unseen categories and missing values included.
"""

from __future__ import annotations

import importlib
import logging
import math
import operator
import warnings
from collections.abc import Collection
from importlib.metadata import version as package_version
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import AnyType, ColSpec, Schema
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    log_loss,
    make_scorer,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)
from sklearn.model_selection import (
    KFold,
    RandomizedSearchCV,
    StratifiedKFold,
    cross_val_score,
    train_test_split,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from airloop.config import CandidateConfig, PipelineConfig
from airloop.data.datasets import feature_columns, fingerprint
from airloop.errors import BadInput
from airloop.store import lake, tracking
from airloop.store.lake import BATCH_COLUMN
from airloop.values import plain

log = logging.getLogger(__name__)

MIN_TRAIN_ROWS = 20
MAX_ONEHOT_CATEGORIES = 50  # bounds the dense design matrix on high-cardinality columns

# Short estimator names per task; any full import path ("sklearn.svm.SVC") works too.
ESTIMATORS: dict[str, dict[str, str]] = {
    "classification": {
        "logistic_regression": "sklearn.linear_model.LogisticRegression",
        "random_forest": "sklearn.ensemble.RandomForestClassifier",
        "hist_gradient_boosting": "sklearn.ensemble.HistGradientBoostingClassifier",
    },
    "regression": {
        "ridge": "sklearn.linear_model.Ridge",
        "random_forest": "sklearn.ensemble.RandomForestRegressor",
        "hist_gradient_boosting": "sklearn.ensemble.HistGradientBoostingRegressor",
    },
}

# "max": greater is better; "min": lower is better.
METRIC_DIRECTIONS: dict[str, str] = {
    "roc_auc": "max",
    "pr_auc": "max",
    "f1": "max",
    "accuracy": "max",
    "log_loss": "min",
    "brier": "min",
    "rmse": "min",
    "mae": "min",
    "r2": "max",
}
TASK_METRICS = {
    "classification": ("roc_auc", "pr_auc", "f1", "log_loss", "brier", "accuracy"),
    "regression": ("rmse", "mae", "r2"),
}

# Types a saved pipeline may reference beyond skops' defaults: sklearn/numpy/scipy internals (tree
# structures, dtypes) and the operator.methodcaller that casts categorical columns to text.
_SKOPS_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.")
_SKOPS_TRUSTED_EXACT = frozenset({"operator.methodcaller"})


# ---------------------------------------------------------------------------------------------- metrics


def greater_is_better(metric: str) -> bool:
    """True when a higher value of ``metric`` is better; ValueError for an unknown metric."""
    if metric not in METRIC_DIRECTIONS:
        raise BadInput(f"metric {metric!r}: expected one of {sorted(METRIC_DIRECTIONS)}")
    return METRIC_DIRECTIONS[metric] == "max"


def check_metric(task: str, metric: str) -> None:
    """ValueError unless ``metric`` is computed for ``task`` (e.g. rmse is not a classification metric)."""
    if metric not in TASK_METRICS[task]:
        raise BadInput(
            f"evaluation.primary_metric: expected one of {list(TASK_METRICS[task])} for {task}, found {metric!r}"
        )


def compute_metrics(
    task: str,
    y_true: Any,
    y_pred: Any,
    y_proba: Any = None,
    *,
    classes: Any = None,
    only: Collection[str] | None = None,
) -> dict[str, float]:
    """Test metrics of one set of predictions (``only``: just these, e.g. inside a bootstrap loop).

    Classification: roc_auc (binary; macro one-vs-rest for multiclass), pr_auc (binary), f1 (binary on the
    second class; macro for multiclass), log_loss, brier (binary: mean squared error of the positive-class
    probability, the calibration metric), accuracy. ``y_proba`` columns follow ``classes``
    (the model's ``classes_``; default: the sorted labels of ``y_true``); a 1-D ``y_proba`` is the
    probability of the second class of a binary problem. Regression: rmse, mae, r2.
    A metric that is undefined on this data (one class only in ``y_true``) is left out.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    wanted = set(TASK_METRICS[task] if only is None else only)
    out: dict[str, float] = {}
    if task == "regression":
        if "rmse" in wanted:
            out["rmse"] = float(math.sqrt(mean_squared_error(y_true, y_pred)))
        if "mae" in wanted:
            out["mae"] = float(mean_absolute_error(y_true, y_pred))
        if "r2" in wanted and len(y_true) > 1:
            out["r2"] = float(r2_score(y_true, y_pred))
        return out
    classes = np.asarray(classes) if classes is not None else np.unique(y_true)
    binary = len(classes) == 2
    if "accuracy" in wanted:
        out["accuracy"] = float(accuracy_score(y_true, y_pred))
    if "f1" in wanted and binary:
        out["f1"] = float(f1_score(y_true, y_pred, pos_label=classes[1], zero_division=0.0))
    elif "f1" in wanted:
        out["f1"] = float(f1_score(y_true, y_pred, average="macro", labels=classes, zero_division=0.0))
    if y_proba is None:
        return out
    proba = np.asarray(y_proba, dtype=float)
    if proba.ndim == 1:  # the positive-class probability of a binary problem
        proba = np.column_stack([1.0 - proba, proba])
    if "log_loss" in wanted:
        out["log_loss"] = float(log_loss(y_true, proba, labels=classes))
    if "brier" in wanted and binary:
        out["brier"] = float(np.mean((proba[:, 1] - (y_true == classes[1])) ** 2))
    if len(np.unique(y_true)) < 2:
        return out
    try:
        if binary and "roc_auc" in wanted:
            out["roc_auc"] = float(roc_auc_score(y_true == classes[1], proba[:, 1]))
        elif "roc_auc" in wanted:
            out["roc_auc"] = float(roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=classes))
    except ValueError as err:  # e.g. a class missing from this holdout
        log.warning("roc_auc left out: %s", err)
    if binary and "pr_auc" in wanted:
        out["pr_auc"] = float(average_precision_score(y_true == classes[1], proba[:, 1]))
    return out


def _scorer(task: str, metric: str, classes: np.ndarray) -> Any:
    """The scikit-learn scorer for ``metric``; "neg_*" scorers are negated back in ``_cv_value``."""
    binary = len(classes) == 2
    if metric == "roc_auc":
        return "roc_auc" if binary else "roc_auc_ovr"
    if metric == "pr_auc":
        if not binary:
            raise BadInput(f"primary metric pr_auc needs a binary target, found {len(classes)} classes")
        return make_scorer(average_precision_score, response_method="predict_proba", pos_label=classes[1])
    if metric == "f1":
        return make_scorer(f1_score, pos_label=classes[1]) if binary else "f1_macro"
    return {
        "log_loss": "neg_log_loss",
        "brier": "neg_brier_score",
        "accuracy": "accuracy",
        "rmse": "neg_root_mean_squared_error",
        "mae": "neg_mean_absolute_error",
        "r2": "r2",
    }[metric]


def _cv_value(scorer: Any, score: float) -> float:
    return -float(score) if isinstance(scorer, str) and scorer.startswith("neg_") else float(score)


# ------------------------------------------------------------------------------------------- candidates


def default_candidates(task: str) -> list[CandidateConfig]:
    """Three candidates per task, each with a small search space (used when the YAML names none)."""
    trees = [
        CandidateConfig(
            name="random_forest",
            estimator="random_forest",
            params={"n_estimators": 100, "n_jobs": 1},
            search_space={"max_depth": [None, 8, 16], "min_samples_leaf": [1, 5]},
        ),
        CandidateConfig(
            name="hist_gradient_boosting",
            estimator="hist_gradient_boosting",
            search_space={"learning_rate": [0.05, 0.1, 0.2], "max_leaf_nodes": [15, 31]},
        ),
    ]
    if task == "classification":
        linear = CandidateConfig(
            name="logistic_regression",
            estimator="logistic_regression",
            params={"max_iter": 1000},
            search_space={"C": [0.01, 0.1, 1.0, 10.0]},
        )
        return [linear, *trees]
    if task == "regression":
        return [
            CandidateConfig(name="ridge", estimator="ridge", search_space={"alpha": [0.1, 1.0, 10.0, 100.0]}),
            *trees,
        ]
    raise BadInput(f"task: expected 'classification' or 'regression', found {task!r}")


def candidates(cfg: PipelineConfig) -> list[CandidateConfig]:
    """The pipeline's candidates: ``training.candidates`` from the YAML, else the task's defaults."""
    return list(cfg.training.candidates or default_candidates(cfg.task))


def get_candidate(cfg: PipelineConfig, name: str) -> CandidateConfig:
    """The candidate called ``name``; ValueError listing the known names otherwise."""
    found = {c.name: c for c in candidates(cfg)}
    if name not in found:
        raise BadInput(f"pipeline {cfg.name!r}: no candidate named {name!r} (known: {', '.join(found)})")
    return found[name]


def resolve_estimator(candidate: CandidateConfig, task: str | None = None) -> tuple[str, type]:
    """``(import path, class)`` of a candidate's estimator, named by short name (ESTIMATORS) or import path."""
    name = candidate.estimator
    paths = {t: names[name] for t, names in ESTIMATORS.items() if name in names}
    if task is not None and task in paths:
        path = paths[task]
    elif paths and task is None and len(set(paths.values())) == 1:
        path = next(iter(paths.values()))
    elif paths:
        raise BadInput(
            f"candidate {candidate.name!r}: estimator {name!r} is defined for {sorted(paths)}, "
            f"not for task {task!r}; use one of {sorted(ESTIMATORS.get(task or '', {}))} or an import path"
        )
    elif "." in name:
        path = name
    else:
        known = sorted({n for names in ESTIMATORS.values() for n in names})
        raise BadInput(
            f"candidate {candidate.name!r}: unknown estimator {name!r}; expected a short name "
            f"({', '.join(known)}) or an import path like 'sklearn.svm.SVC'"
        )
    module_name, _, class_name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise BadInput(
            f"candidate {candidate.name!r}: estimator {path!r} cannot be imported ({err}); expected an "
            f"importable class like 'sklearn.svm.SVC'"
        ) from None
    if not (hasattr(cls, "fit") and hasattr(cls, "predict")):
        raise BadInput(f"candidate {candidate.name!r}: {path!r} is not an estimator (no fit/predict)")
    return path, cls


def build_pipeline(
    candidate: CandidateConfig,
    numeric: list[str],
    categorical: list[str],
    seed: int,
    *,
    task: str | None = None,
) -> Pipeline:
    """An unfitted ``Pipeline([("prep", ColumnTransformer), ("model", estimator)])`` scoring raw rows.

    Numeric columns: median imputation + scaling. Categorical columns: cast to text (pandas 3 string,
    bool, category or object columns alike; missing stays missing), constant "missing" imputation, one-hot
    encoding that ignores unseen categories. The estimator gets ``random_state=seed`` when it has one.
    """
    if not numeric and not categorical:
        raise BadInput(f"candidate {candidate.name!r}: no feature columns to train on")
    _, cls = resolve_estimator(candidate, task)
    params = dict(candidate.params)
    try:
        estimator = cls(**params)
    except TypeError as err:
        raise BadInput(f"candidate {candidate.name!r}: params {params} rejected by {cls.__name__}: {err}") from None
    if "random_state" in estimator.get_params() and "random_state" not in params:
        estimator.set_params(random_state=seed)
    transformers = []
    if numeric:
        num = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
        transformers.append(("num", num, list(numeric)))
    if categorical:
        # A methodcaller (not a custom function) keeps the artifact loadable with sklearn/pandas/skops only.
        as_text = FunctionTransformer(operator.methodcaller("astype", "str"), feature_names_out="one-to-one")
        cat = Pipeline(
            [
                ("as_text", as_text),
                ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
                (
                    "onehot",
                    OneHotEncoder(handle_unknown="ignore", max_categories=MAX_ONEHOT_CATEGORIES),
                ),
            ]
        )
        transformers.append(("cat", cat, list(categorical)))
    prep = ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)
    return Pipeline([("prep", prep), ("model", estimator)])


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
    """Types skops must be told to trust to load ``model``; ValueError if any is outside the allow-list."""
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(data=sio.dumps(model))
    except Exception as err:  # skops raises assorted errors for objects it cannot represent
        raise ValueError(f"skops cannot serialize the model: {err}") from err
    unexpected = [t for t in untrusted if not (t.startswith(_SKOPS_TRUSTED_PREFIXES) or t in _SKOPS_TRUSTED_EXACT)]
    if unexpected:
        raise ValueError(f"model references types outside the skops allow-list: {unexpected}")
    return list(untrusted)


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
    """Log ``model`` as "model" in the active run, skops-serialized (cloudpickle if skops cannot).

    Returns (mlflow ModelInfo, serialization format).
    """
    signature = model_signature(X_sample, model.predict(X_sample))
    kwargs = {"name": "model", "signature": signature, "input_example": X_sample.head(5)}
    try:
        info = mlflow.sklearn.log_model(
            model,
            serialization_format="skops",
            skops_trusted_types=skops_trusted_types(model),
            pip_requirements=_pip_requirements(),
            **kwargs,
        )
        return info, "skops"
    except (MlflowException, ValueError) as err:  # skops cannot represent or trust it: fall back, loudly
        log.warning("skops serialization failed (%s); logging the model with cloudpickle instead", err)
    info = mlflow.sklearn.log_model(
        model,
        serialization_format="cloudpickle",
        pip_requirements=_pip_requirements(("cloudpickle",)),
        **kwargs,
    )
    return info, "cloudpickle"


def _search_space(candidate: CandidateConfig, model: Pipeline) -> dict[str, list[Any]]:
    valid = model.named_steps["model"].get_params()
    unknown = [k for k in candidate.search_space if k not in valid]
    if unknown:
        raise BadInput(
            f"candidate {candidate.name!r}: search_space keys {unknown} are not parameters of "
            f"{type(model.named_steps['model']).__name__} (known: {sorted(valid)})"
        )
    return {f"model__{k}": list(v) for k, v in candidate.search_space.items()}


def _fit(
    cfg: PipelineConfig, candidate: CandidateConfig, split: dict[str, Any], X: pd.DataFrame, y: pd.Series
) -> tuple[Pipeline, dict[str, Any], float, Any]:
    """Search (or just cross-validate) and refit; returns (fitted model, best params, cv score, scorer)."""
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
    scorer = _scorer(cfg.task, cfg.primary_metric, classes)
    splitter_cls = StratifiedKFold if cfg.task == "classification" else KFold
    cv = splitter_cls(n_splits=cfg.training.cv_folds, shuffle=True, random_state=seed)
    space = _search_space(candidate, model)
    if not space:
        scores = cross_val_score(model, X, y, scoring=scorer, cv=cv, n_jobs=1, error_score="raise")
        model.fit(X, y)
        return model, {}, _cv_value(scorer, float(np.mean(scores))), scorer
    grid_size = math.prod(len(v) for v in space.values())
    search = RandomizedSearchCV(
        model,
        space,
        n_iter=min(cfg.training.n_iter, grid_size),
        scoring=scorer,
        cv=cv,
        refit=True,
        random_state=seed,
        n_jobs=1,
        error_score="raise",
    )
    search.fit(X, y)
    best = {k.removeprefix("model__"): v for k, v in search.best_params_.items()}
    return search.best_estimator_, best, _cv_value(scorer, search.best_score_), scorer


def predict_with_proba(task: str, model: Any, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None, Any]:
    """(predictions, class probabilities or None, classes or None) of a fitted sklearn model."""
    y_pred = np.asarray(model.predict(X))
    if task == "classification" and hasattr(model, "predict_proba"):
        return y_pred, np.asarray(model.predict_proba(X)), getattr(model, "classes_", None)
    return y_pred, None, None


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
    model, best_params, cv_score, _ = _fit(cfg, candidate, split, X, y)
    y_pred, y_proba, classes = predict_with_proba(cfg.task, model, test[features])
    test_metrics = compute_metrics(cfg.task, test[cfg.target], y_pred, y_proba, classes=classes)

    experiment_id = tracking.ensure_experiment(cfg)
    tags = {
        **tracking.lineage_tags(run_info),
        "airloop.pipeline": cfg.name,
        "airloop.stage": "train",
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
        run_id = run.info.run_id
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
        raise ValueError(f"pipeline {cfg.name!r}: no candidate produced a cv score (got {len(results)} results)")
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
