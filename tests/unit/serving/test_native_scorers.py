"""airloop.serving.compiled's native scorers beyond the default candidates' settings (a three-class linear
model, the compiled boosting walk against the library tree by tree, NaN routing) and the serving log's
sliced table (airloop.serving.servinglog.log_table)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression

from airloop.serving import compiled as cp
from airloop.serving.servinglog import FLUSH_SLICE_ROWS, log_table


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 5))
    score = x[:, 0] + 0.5 * x[:, 1] * x[:, 2]
    return x, score, np.digitize(score, [-0.5, 0.5])  # three classes


def test_linear_scorer_matches_three_classes_and_regression(data):
    x, score, classes = data
    lr = LogisticRegression(max_iter=500).fit(x, classes)
    native = cp.native_estimator(lr)
    assert native.kind == "linear"
    assert np.allclose(native.predict_proba(x), lr.predict_proba(x), rtol=0, atol=1e-12)
    assert (native.predict(x) == lr.predict(x)).all()
    binary = LogisticRegression().fit(x, classes > 0)
    assert np.allclose(cp.native_estimator(binary).predict_proba(x), binary.predict_proba(x), rtol=0, atol=1e-12)
    ols = LinearRegression().fit(x, score)
    assert np.allclose(cp.native_estimator(ols).predict(x), ols.predict(x), rtol=0, atol=1e-12)
    with pytest.raises(AttributeError):
        cp.native_estimator(ols).predict_proba(x)


@pytest.mark.parametrize("kind", ["binary", "three-class", "regression"])
def test_boosting_walk_gives_the_librarys_floats_with_missing_values(data, kind):
    x, score, classes = data
    train = x.copy()
    train[::9, 1] = np.nan  # the trees learn where missing values go
    if kind == "regression":
        model = HistGradientBoostingRegressor(max_iter=40, random_state=0).fit(train, score)
    else:
        model = HistGradientBoostingClassifier(max_iter=40, random_state=0)
        model.fit(train, classes if kind == "three-class" else classes > 0)
    walk = cp.BoostingScorer(model)
    assert walk.kernel is not None  # numeric splits only: the compiled walk
    by_tree = cp.BoostingScorer(model)
    by_tree.kernel = None  # the library's predictors one by one
    probe = np.random.default_rng(4).normal(size=(300, 5)) * 3
    probe[::5, 1] = np.nan
    probe[::7, 3] = np.nan
    assert np.array_equal(walk._raw(probe), by_tree._raw(probe))
    assert np.array_equal(walk._raw(probe[:1]), by_tree._raw(probe[:1]))
    if kind == "regression":
        assert np.array_equal(walk.predict(probe), model.predict(probe))
    else:
        assert np.array_equal(walk.predict_proba(probe), model.predict_proba(probe))
        assert (walk.predict(probe) == model.predict(probe)).all()


def test_boosting_with_categorical_splits_scores_tree_by_tree():
    rng = np.random.default_rng(5)
    x = np.column_stack([rng.integers(0, 4, size=500).astype(float), rng.normal(size=500)])
    y = (x[:, 0] == 2) | (x[:, 1] > 1)
    model = HistGradientBoostingClassifier(max_iter=20, categorical_features=[0], random_state=0).fit(x, y)
    scorer = cp.BoostingScorer(model)
    assert scorer.kernel is None
    assert np.allclose(scorer.predict_proba(x), model.predict_proba(x), rtol=0, atol=1e-12)


def _chunk(ids: list[str], shadow: list | None, inputs: dict) -> dict:
    n = len(ids)
    return {
        "prediction_id": ids,
        "prediction": [1] * n,
        "shadow_prediction": shadow if shadow is not None else [None] * n,
        "_inputs": (list(inputs), inputs),
    }


def test_log_table_in_slices_keeps_every_row_and_promotes_empty_columns():
    chunks = []
    for b in range(3 * FLUSH_SLICE_ROWS // 4):  # several slices of 4-row batches
        ids = [f"id-{b}-{i}" for i in range(4)]
        shadow = None if b < FLUSH_SLICE_ROWS // 2 else [0, 1, 0, 1]  # a shadow appears mid-buffer
        chunks.append(_chunk(ids, shadow, {"x": [b, b + 0.5, None, -1.0], "c": ["a", None, "b", "é"]}))
    table = log_table(chunks, pause_s=0.0001)
    assert table.num_rows == 4 * len(chunks)
    assert table.column("prediction_id").to_pylist() == [i for c in chunks for i in c["prediction_id"]]
    assert str(table.schema.field("shadow_prediction").type) == "int64"
    shadow = table.column("shadow_prediction").to_pylist()
    assert shadow[0] is None and shadow[-4:] == [0, 1, 0, 1]
    features = [json.loads(f) for f in table.column("features").to_pylist()]
    assert features[4 * 5 + 1] == {"x": 5.5, "c": None}
    assert features[-1] == {"x": -1.0, "c": "é"}
