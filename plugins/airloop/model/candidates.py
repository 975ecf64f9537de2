"""Candidates: the estimators a pipeline may try, their search spaces, and the unfitted pipeline
(preprocessing + estimator) each one trains as."""

from __future__ import annotations

import importlib
import operator
from typing import TYPE_CHECKING, Any

from airloop.config import CandidateConfig, PipelineConfig
from airloop.errors import BadInput

if TYPE_CHECKING:  # scikit-learn loads when a pipeline is built: the DAG files name the candidates at parse time
    from sklearn.pipeline import Pipeline

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


def candidate_names(cfg: PipelineConfig) -> list[str]:
    """The names of the pipeline's candidates, in order (one training task each)."""
    return [c.name for c in candidates(cfg)]


def get_candidate(cfg: PipelineConfig, name: str) -> CandidateConfig:
    """The candidate called ``name``; BadInput listing the known names otherwise."""
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
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

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


def search_space(candidate: CandidateConfig, model: Pipeline) -> dict[str, Any]:
    """The candidate's search space as ``RandomizedSearchCV`` parameters of ``model`` ("model__<param>"): a
    list of values, or a scipy distribution for a range (log-uniform when ``log``, integer when low and high
    are); BadInput for a key the estimator does not take or an empty range."""
    valid = model.named_steps["model"].get_params()
    unknown = [k for k in candidate.search_space if k not in valid]
    if unknown:
        raise BadInput(
            f"candidate {candidate.name!r}: search_space keys {unknown} are not parameters of "
            f"{type(model.named_steps['model']).__name__} (known: {sorted(valid)})"
        )
    return {f"model__{k}": _distribution(candidate, k, v) for k, v in candidate.search_space.items()}


def _distribution(candidate: CandidateConfig, key: str, spec: Any) -> Any:
    from scipy import stats

    if isinstance(spec, list):
        return list(spec)
    if not spec.low < spec.high or (spec.log and spec.low <= 0):
        raise BadInput(
            f"candidate {candidate.name!r}: search_space.{key}: expected low < high (and low > 0 with log), "
            f"found low={spec.low}, high={spec.high}, log={spec.log}"
        )
    if isinstance(spec.low, int) and isinstance(spec.high, int):
        return stats.randint(spec.low, spec.high + 1)
    if spec.log:
        return stats.loguniform(spec.low, spec.high)
    return stats.uniform(spec.low, spec.high - spec.low)
