"""Explanations with SHAP: what each raw column contributes to a prediction, globally (mean |SHAP| on a holdout
sample, logged at evaluation) and per row (on request in serving).

The pipeline's preprocessing runs first; the estimator is explained on the columns it sees, with the exact
explainer for its family (``LinearExplainer`` for linear models, ``TreeExplainer`` for tree ensembles, a
permutation explainer otherwise), and the one-hot columns of a raw column are summed back into it (SHAP values
are additive, so the sum is that column's contribution). Contributions are in the model's output space:
log-odds for linear and boosted classifiers, probability for forests, the target's unit for regression.
For each row, ``expected_value + sum(contributions) = output``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

BACKGROUND_ROWS = 100  # rows the explainer integrates over
GLOBAL_ROWS = 300  # holdout rows explained for the global importance
PERMUTATION_MAX_EVALS = 200


class Explainer:
    """SHAP for one fitted ``Pipeline([("prep", ...), ("model", ...)])`` (:func:`airloop.model.candidates.
    build_pipeline`), with ``background`` raw rows; ValueError for a model of another shape."""

    def __init__(self, model: Any, background: pd.DataFrame, seed: int = 0):
        import shap

        steps = getattr(model, "named_steps", {})
        if "prep" not in steps or "model" not in steps:
            raise ValueError(f"explanations need a prep + model pipeline, found {type(model).__name__}")
        self.model, self.prep, self.estimator = model, steps["prep"], steps["model"]
        self.columns = list(getattr(model, "feature_names_in_", background.columns))
        sample = background[self.columns].sample(n=min(len(background), BACKGROUND_ROWS), random_state=seed)
        bg = np.asarray(self.prep.transform(sample), dtype=float)
        self.groups = self._groups()
        est = self.estimator
        self.positive = 1 if hasattr(est, "classes_") and len(est.classes_) == 2 else None
        if hasattr(est, "coef_"):
            self.kind = "linear"
            self._shap = shap.LinearExplainer(est, bg)
        elif hasattr(est, "estimators_") or type(est).__name__.startswith("HistGradientBoosting"):
            self.kind = "tree"
            self._shap = shap.TreeExplainer(est)  # path-dependent: exact for trees, needs no background
        else:
            self.kind = "permutation"
            fn = (lambda x: est.predict_proba(x)[:, 1]) if self.positive is not None else est.predict
            self._shap = shap.PermutationExplainer(fn, bg, seed=seed)

    def _groups(self) -> np.ndarray:
        """For each transformed column, the index of the raw column it came from."""
        raw_of: list[int] = []
        for name, trans, cols in self.prep.transformers_:
            if name == "remainder" or trans == "drop":
                continue
            cols = list(cols)
            out = list(trans.get_feature_names_out(cols))
            if len(out) == len(cols):
                raw_of += [self.columns.index(c) for c in cols]
                continue
            by_length = sorted(cols, key=len, reverse=True)  # longest prefix wins: "a_b_x" is "a_b", not "a"
            for feature in out:
                raw_of.append(self.columns.index(next(c for c in by_length if str(feature).startswith(f"{c}_"))))
        return np.asarray(raw_of)

    def explain(self, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(contributions (rows, raw columns), expected value per row) for the explained output."""
        Xt = np.asarray(self.prep.transform(rows[self.columns]), dtype=float)
        n = len(Xt)
        if self.kind == "permutation":
            got = self._shap(Xt, max_evals=max(PERMUTATION_MAX_EVALS, 2 * Xt.shape[1] + 1))
            values, base = np.asarray(got.values), np.asarray(got.base_values, dtype=float)
        else:
            values = self._shap.shap_values(Xt)
            values = np.stack(values, axis=-1) if isinstance(values, list) else np.asarray(values)
            base = np.asarray(self._shap.expected_value, dtype=float)
        if values.ndim == 3:  # (rows, columns, classes): the positive class, else the predicted one
            if self.positive is not None:
                cls = np.full(n, self.positive)
            else:
                cls = np.asarray(self.estimator.predict_proba(Xt)).argmax(axis=1)
            values = values[np.arange(n), :, cls]
            base = base[np.arange(n), cls] if base.ndim == 2 else (base[cls] if base.ndim == 1 else base)
        base = np.broadcast_to(base.reshape(-1) if base.size == n else base.reshape(-1)[0], (n,))
        raw = np.zeros((len(Xt), len(self.columns)))
        np.add.at(raw.T, self.groups, values.T)
        return raw, np.asarray(base, dtype=float)

    def output(self, rows: pd.DataFrame) -> np.ndarray:
        """The explained output: the margin (log-odds) for linear/boosted classifiers, else the probability or the
        prediction; expected value + contributions equals it."""
        Xt = np.asarray(self.prep.transform(rows[self.columns]), dtype=float)
        est = self.estimator
        if self.kind == "permutation":
            return est.predict_proba(Xt)[:, 1] if self.positive is not None else est.predict(Xt)
        if hasattr(est, "decision_function") and self.positive is not None and not hasattr(est, "estimators_"):
            return np.asarray(est.decision_function(Xt))
        if self.positive is not None:
            return est.predict_proba(Xt)[:, 1]
        return est.predict(Xt)


def explainer_for_run(model: Any, run_tags: dict[str, str], seed: int = 0) -> Explainer:
    """The :class:`Explainer` of a trained ``model``, integrating over its training run's reference rows (the
    run tag ``airloop.reference_uri``, else ``airloop.train_uri``, read from the lake); ValueError without."""
    from airloop.store import lake

    uri = run_tags.get("airloop.reference_uri") or run_tags.get("airloop.train_uri")
    if not uri:
        raise ValueError("its training run has no reference rows (airloop.reference_uri / airloop.train_uri)")
    return Explainer(model, lake.read_parquet(uri), seed=seed)


def global_importance(explainer: Explainer, rows: pd.DataFrame, seed: int = 0) -> list[dict[str, Any]]:
    """Mean |SHAP| per raw column on a seeded sample of ``rows``, largest first:
    [{"feature", "mean_abs_shap", "mean_shap"}]."""
    sample = rows.sample(n=min(len(rows), GLOBAL_ROWS), random_state=seed)
    values, _ = explainer.explain(sample)
    out = [
        {"feature": c, "mean_abs_shap": float(np.abs(values[:, i]).mean()), "mean_shap": float(values[:, i].mean())}
        for i, c in enumerate(explainer.columns)
    ]
    return sorted(out, key=lambda d: d["mean_abs_shap"], reverse=True)


def top_contributions(explainer: Explainer, rows: pd.DataFrame, top: int = 5) -> list[dict[str, Any]]:
    """Per row: {"expected_value", "contributions": [{"feature", "value", "contribution"}] (largest |c| first)}."""
    values, base = explainer.explain(rows)
    out = []
    for r in range(len(rows)):
        order = np.argsort(-np.abs(values[r]))[:top]
        contributions = []
        for i in order:
            value = rows.iloc[r][explainer.columns[i]]
            value = None if pd.isna(value) else (value.item() if hasattr(value, "item") else value)
            contributions.append({"feature": explainer.columns[i], "value": value, "contribution": float(values[r, i])})
        out.append({"expected_value": float(base[r]), "contributions": contributions})
    return out


def importance_figure(importance: list[dict[str, Any]], top: int = 15):
    from airloop.model.plots import FIGSIZE, _pyplot

    plt = _pyplot()
    shown = importance[:top][::-1]
    fig, ax = plt.subplots(figsize=(FIGSIZE[0] + 1, max(FIGSIZE[1], 0.3 * len(shown) + 1)))
    ax.barh([d["feature"] for d in shown], [d["mean_abs_shap"] for d in shown], color="#4c72b0")
    ax.set(xlabel="mean |SHAP value| (holdout sample)", title="Global explanation (SHAP)")
    fig.tight_layout()
    return fig
