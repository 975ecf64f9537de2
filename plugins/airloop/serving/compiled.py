"""The numpy compiler of Airloop's sklearn pipelines: :func:`compile_pipeline` takes a fitted pipeline, its
input columns and the task, and returns a :class:`CompiledPipeline` that scores parsed request columns
({column: values}) without pandas, or None when it cannot reproduce the pipeline exactly.

The estimator behind the compiled preprocessing is called through :func:`native_estimator`: linear models in
closed form, forests tree by tree without joblib, hist gradient boosting through one compiled walk of all its
trees (numba, :mod:`airloop.serving.treewalk`), anything else through its own ``predict``/``predict_proba``
under a one-thread limit for small batches. On 2 cores an
OpenMP team that spins beside the event loop and the clients costs far more than it saves (profiled: a 1-row
``HistGradientBoostingClassifier.predict_proba`` p99 1.7 s under load with OpenMP, 25 ms on one thread).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from airloop.serving.spec import Column, to_frame

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NumericBlock:
    """The numeric columns of the preprocessing: missing values become the imputer's medians, then
    ``(x - mean) / scale``."""

    columns: list[str]
    medians: np.ndarray
    mean: np.ndarray
    scale: np.ndarray


@dataclass(frozen=True, slots=True)
class CategoryBlock:
    """One categorical column: its value's text looked up in ``index`` picks a row of ``rows`` (the one-hot
    columns the fitted step produced); ``missing_row`` and ``unseen_row`` are the rows of null and of a value
    not seen in training."""

    column: str
    index: dict[str, int]
    rows: np.ndarray
    missing_row: int
    unseen_row: int


class CompiledPipeline:
    """Airloop's fitted preprocessing (``airloop.model.candidates.build_pipeline``) as numpy lookups, in front of the
    fitted estimator: median imputation + scaling become two vector operations, and each categorical column's
    text-cast + impute + one-hot becomes a dict lookup into the rows the fitted step itself produced.

    A 1-row ``Pipeline.predict_proba`` spends milliseconds in pandas indexing and input validation; this path
    takes tens of microseconds plus the estimator. :func:`compile_pipeline` checks it against the real pipeline
    on probe rows (every category, missing and unseen values) and refuses anything it does not reproduce.
    """

    _UNSEEN = "\x00airloop-unseen\x00"

    def __init__(self, model: Any):
        if list(getattr(model, "named_steps", {})) != ["prep", "model"]:
            raise ValueError("not an Airloop pipeline (steps 'prep', 'model')")
        from sklearn.impute import SimpleImputer
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        prep, self.estimator = model.named_steps["prep"], model.named_steps["model"]
        self.scorer: Any = EstimatorScorer(self.estimator)
        self.blocks: list[NumericBlock | CategoryBlock] = []
        for name, trans, cols in prep.transformers_:
            cols = [str(c) for c in cols]
            if trans == "drop" or not cols:
                continue
            steps = [type(s) for _, s in getattr(trans, "steps", [])]
            if name == "num" and steps == [SimpleImputer, StandardScaler]:
                imputer, scaler = trans.steps[0][1], trans.steps[1][1]
                if imputer.add_indicator or len(imputer.statistics_) != len(cols):
                    raise ValueError("numeric imputer with indicator columns")
                mean = scaler.mean_ if scaler.with_mean else np.zeros(len(cols))
                scale = scaler.scale_ if scaler.with_std and scaler.scale_ is not None else np.ones(len(cols))
                self.blocks.append(NumericBlock(cols, np.asarray(imputer.statistics_, float), mean, scale))
            elif name == "cat" and steps and steps[-1] is OneHotEncoder:
                self.blocks.extend(self._lookups(trans, cols))
            else:
                raise ValueError(f"transformer {name!r} ({steps}) is not one the compiled path knows")

    def _lookups(self, trans: Any, cols: list[str]) -> list[CategoryBlock]:
        """One :class:`CategoryBlock` per column of a fitted categorical transformer, in its column order."""
        enc = trans.steps[-1][1]
        widths = list(enc._n_features_outs)
        offsets = np.cumsum([0, *widths])
        base = {c: str(enc.categories_[k][0]) for k, c in enumerate(cols)}
        out = []
        for j, col in enumerate(cols):
            values = [str(v) for v in enc.categories_[j]] + [None, self._UNSEEN]
            frame = pd.DataFrame({c: values if c == col else [base[c]] * len(values) for c in cols}, dtype=object)
            rows = trans.transform(frame)
            rows = rows.toarray() if hasattr(rows, "toarray") else np.asarray(rows)
            block = np.ascontiguousarray(rows[:, offsets[j] : offsets[j + 1]], dtype=float)
            index = {v: i for i, v in enumerate(values[:-2])}
            out.append(CategoryBlock(col, index, block, len(values) - 2, len(values) - 1))
        return out

    def transform(self, cols: dict[str, list]) -> np.ndarray:
        parts = []
        for block in self.blocks:
            if type(block) is NumericBlock:
                x = np.array([cols[n] for n in block.columns], dtype=float).T
                x = np.where(np.isnan(x), block.medians, x)
                parts.append((x - block.mean) / block.scale)
            else:
                get, missing, unseen = block.index.get, block.missing_row, block.unseen_row
                idx = [
                    missing if v is None else get(v if type(v) is str else str(v), unseen) for v in cols[block.column]
                ]
                parts.append(block.rows[idx])
        return np.hstack(parts) if len(parts) > 1 else parts[0]

    def predict_proba(self, cols: dict[str, list]) -> np.ndarray:
        return self.scorer.predict_proba(self.transform(cols))

    def predict(self, cols: dict[str, list]) -> np.ndarray:
        return self.scorer.predict(self.transform(cols))

    @property
    def path(self) -> str:
        """Which scoring path this is, for the log and /health: ``compiled+forest``, ``compiled+hgb`` or
        ``compiled+estimator``."""
        return f"compiled+{self.scorer.kind}"

    def probe_rows(self) -> dict[str, list]:
        """Rows covering every category, a missing and an unseen value per column, missing numbers, and random
        rows (seeded) spread over several scales around each median, so tree splits are crossed both ways."""
        n = max([6] + [len(b.index) + 2 for b in self.blocks if type(b) is CategoryBlock])
        extra = 64
        rng = np.random.default_rng(0)
        cols: dict[str, list] = {}
        for block in self.blocks:
            if type(block) is NumericBlock:
                for k, name in enumerate(block.columns):
                    center, spread = block.medians[k], block.scale[k]
                    fixed = [None if i % 5 == 3 else float(center + spread * (i - n / 2) / n) for i in range(n)]
                    noise = center + spread * rng.normal(size=extra) * rng.choice([0.1, 1.0, 3.0], size=extra)
                    cols[name] = fixed + [float(v) for v in noise]
            else:
                cats = [*block.index, None, "never-seen-in-training"]
                cols[block.column] = [cats[i % len(cats)] for i in range(n)] + [
                    cats[int(i)] for i in rng.integers(0, len(cats), size=extra)
                ]
        return cols


def _agrees(compiled: CompiledPipeline, model: Any, cols: dict[str, list], columns: list[Column], task: str) -> bool:
    frame = to_frame(cols, list(columns))
    if task == "classification" and hasattr(model, "predict_proba"):
        return bool(np.allclose(compiled.predict_proba(cols), model.predict_proba(frame), rtol=0, atol=1e-9))
    return bool(np.allclose(compiled.predict(cols), model.predict(frame), rtol=0, atol=1e-9))


def compile_pipeline(model: Any, columns: list[Column], task: str) -> CompiledPipeline | None:
    """A :class:`CompiledPipeline` that reproduces ``model`` on probe rows (to 1e-9), else None (the server then
    calls the sklearn pipeline itself). The native estimator path (:func:`native_estimator`) is used only when
    it too reproduces the pipeline on the probe rows; otherwise the estimator's own methods score."""
    try:
        compiled = CompiledPipeline(model)
        probe = compiled.probe_rows()
        names = [c.name for c in columns]
        if set(probe) != set(names):
            raise ValueError(f"preprocessing columns {sorted(probe)} differ from the input columns {sorted(names)}")
        if not _agrees(compiled, model, probe, columns, task):
            raise ValueError("compiled predictions differ from the pipeline's on the probe rows")
    except Exception as err:  # noqa: BLE001 - any surprise means: use the real pipeline
        log.warning("compiled scoring path not used (%s); scoring with the sklearn pipeline", err)
        return None
    try:
        native = native_estimator(compiled.estimator)
        if native is not None:
            generic, compiled.scorer = compiled.scorer, native
            if not _agrees(compiled, model, probe, columns, task):
                compiled.scorer = generic
                raise ValueError(f"native {native.kind} predictions differ from the estimator's on the probe rows")
    except Exception as err:  # noqa: BLE001 - the estimator's own methods still reproduce the pipeline
        compiled.scorer = EstimatorScorer(compiled.estimator)
        log.warning("native estimator path not used for %s (%s)", type(compiled.estimator).__name__, err)
    return compiled


# --- the estimator behind the compiled preprocessing ---------------------------------------------------------

SMALL_BATCH_ROWS = 4096  # up to this many rows an estimator is called on one thread


class EstimatorScorer:
    """Any estimator through its own methods; batches up to :data:`SMALL_BATCH_ROWS` rows run under a
    one-thread BLAS/OpenMP limit (threadpoolctl), larger ones with the library defaults."""

    kind = "estimator"

    def __init__(self, estimator: Any):
        from threadpoolctl import ThreadpoolController

        self.estimator = estimator
        self._threads = ThreadpoolController()

    def _call(self, method: str, x: np.ndarray) -> np.ndarray:
        fn = getattr(self.estimator, method)
        if len(x) > SMALL_BATCH_ROWS:
            return fn(x)
        with self._threads.limit(limits=1):
            return fn(x)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self._call("predict_proba", x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self._call("predict", x)


class LinearScorer:
    """A fitted linear model (``LogisticRegression``, ``Ridge``, ``LinearRegression``) in closed form: one
    matrix product plus the intercept, then the logistic function (two classes) or the softmax (more) for
    probabilities. The estimator's own methods validate their input on every call and are wrapped in a thread
    limit here: for a 4-row batch that is over 100 µs around a product of a few microseconds."""

    kind = "linear"

    def __init__(self, model: Any):
        coef = np.asarray(model.coef_, dtype=np.float64)
        self.classes = getattr(model, "classes_", None)
        self.coef = np.ascontiguousarray(coef.T if coef.ndim == 2 else coef[:, None])
        self.intercept = np.atleast_1d(np.asarray(model.intercept_, dtype=np.float64))
        if self.coef.shape[1] != len(self.intercept):
            raise ValueError(f"coefficients for {self.coef.shape[1]} outputs, intercepts for {len(self.intercept)}")
        if self.classes is None and self.coef.shape[1] != 1:
            raise ValueError("multi-output regression")

    def _decision(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) @ self.coef + self.intercept

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if self.classes is None:
            raise AttributeError("a regressor has no predict_proba")
        d = self._decision(x)
        if d.shape[1] == 1:
            from scipy.special import expit

            p = expit(d[:, 0])
            return np.column_stack([1 - p, p])
        from scipy.special import softmax

        return softmax(d, axis=1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        d = self._decision(x)
        if self.classes is None:
            return d[:, 0]
        return self.classes[(d[:, 0] > 0).astype(int) if d.shape[1] == 1 else np.argmax(d, axis=1)]


class ForestScorer:
    """A fitted sklearn forest (random forest, extra trees; single output) tree by tree through each tree's
    compiled ``tree_.predict``: what the forest's own methods do, without joblib and input validation per tree."""

    kind = "forest"

    def __init__(self, forest: Any):
        if getattr(forest, "n_outputs_", 1) != 1:
            raise ValueError("multi-output forest")
        self.trees = [e.tree_ for e in forest.estimators_]
        self.n_classes = int(forest.n_classes_) if hasattr(forest, "classes_") else None
        self.classes = getattr(forest, "classes_", None)

    def _mean(self, x: np.ndarray) -> np.ndarray:
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        width = self.n_classes or 1
        total = np.zeros((len(x32), width), dtype=np.float64)
        for tree in self.trees:
            total += tree.predict(x32)[:, :width]
        total /= len(self.trees)
        return total

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if self.n_classes is None:
            raise AttributeError("a regression forest has no predict_proba")
        return self._mean(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.n_classes is None:
            return self._mean(x)[:, 0]
        return self.classes.take(np.argmax(self._mean(x), axis=1), axis=0)


class BoostingScorer:
    """A fitted ``HistGradientBoosting*`` without its per-tree calls: every tree's nodes in one flat table,
    walked row by row by one compiled loop (:func:`_boosting_kernel`, numba), adding each tree's leaf value in
    the library's own order, so the raw scores are the same floats. The library calls one Cython function per
    tree (3 µs each here, 0.3 ms for 100 trees on a 4-row batch) on an OpenMP team that spins beside the event
    loop on small machines. Models with categorical splits (Airloop one-hot encodes, so only hand-built ones)
    or without numba go through the tree predictors one by one, on one thread."""

    kind = "hgb"

    def __init__(self, model: Any):
        self.model = model
        self.predictors = model._predictors
        self.baseline = model._baseline_prediction
        self.known_cat_bitsets, self.f_idx_map = model._bin_mapper.make_known_categories_bitsets()
        self.classes = getattr(model, "classes_", None)
        self.kernel, self.table = None, None
        if not any(p.nodes["is_categorical"].any() for trees in self.predictors for p in trees):
            self.kernel = _boosting_kernel()
        if self.kernel is not None:
            self.table = _flat_trees([(k, p.nodes) for trees in self.predictors for k, p in enumerate(trees)])
        else:
            log.info("hist gradient boosting scored tree by tree (categorical splits, or numba missing)")

    def _raw(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float64)
        raw = np.zeros((len(x), self.model.n_trees_per_iteration_), dtype=self.baseline.dtype, order="F")
        raw += self.baseline
        if self.kernel is not None:
            self.kernel(x, *self.table, raw)
            return raw
        for trees in self.predictors:
            for k, predictor in enumerate(trees):
                raw[:, k] += predictor.predict(x, self.known_cat_bitsets, self.f_idx_map, 1)
        return raw

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if self.classes is None:
            raise AttributeError("a regressor has no predict_proba")
        return self.model._loss.predict_proba(self._raw(x))

    def predict(self, x: np.ndarray) -> np.ndarray:
        raw = self._raw(x)
        if self.classes is None:
            return self.model._loss.link.inverse(raw.ravel())
        encoded = (raw.ravel() > 0).astype(int) if raw.shape[1] == 1 else np.argmax(raw, axis=1)
        return self.classes[encoded]


def _flat_trees(trees: list[tuple[int, np.ndarray]]) -> tuple[np.ndarray, ...]:
    """The node tables of ``trees`` ([(output column, predictor nodes)], in scoring order) as one flat table:
    (root of each tree, its output column, feature, threshold, left child, right child, is leaf, NaN goes
    left, value), children renumbered to the flat index."""
    sizes = [len(nodes) for _, nodes in trees]
    roots = np.cumsum([0, *sizes[:-1]]).astype(np.int64)
    nodes = np.concatenate([n for _, n in trees])
    offset = np.repeat(roots, sizes)
    return (
        roots,
        np.array([k for k, _ in trees], dtype=np.int64),
        np.ascontiguousarray(nodes["feature_idx"], dtype=np.int64),
        np.ascontiguousarray(nodes["num_threshold"], dtype=np.float64),
        nodes["left"].astype(np.int64) + offset,
        nodes["right"].astype(np.int64) + offset,
        np.ascontiguousarray(nodes["is_leaf"], dtype=np.bool_),
        np.ascontiguousarray(nodes["missing_go_to_left"], dtype=np.bool_),
        np.ascontiguousarray(nodes["value"], dtype=np.float64),
    )


def _boosting_kernel() -> Any:
    """The compiled tree walk (:func:`airloop.serving.treewalk.walk`), or None without numba."""
    try:
        from airloop.serving.treewalk import walk
    except ImportError:  # pragma: no cover - numba is a dependency; the tree-by-tree path still scores
        return None
    return walk


def native_estimator(estimator: Any) -> LinearScorer | ForestScorer | BoostingScorer | None:
    """The native scorer of a linear model, a forest or a hist gradient boosting model, None for any other
    estimator (scored through its own methods). Raises when the fitted model lacks what the native path reads."""
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        ExtraTreesRegressor,
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge

    kind = type(estimator)
    if kind in (LogisticRegression, Ridge, LinearRegression):
        return LinearScorer(estimator)
    if kind in (RandomForestClassifier, RandomForestRegressor, ExtraTreesClassifier, ExtraTreesRegressor):
        return ForestScorer(estimator)
    if kind in (HistGradientBoostingClassifier, HistGradientBoostingRegressor):
        return BoostingScorer(estimator)
    return None
