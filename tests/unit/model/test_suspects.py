"""airloop.model.suspects: labels flipped on purpose in a simulated set are found by confident learning, queued for
review, and a reviewer's answer replaces the row's label in the next training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from airloop.config import CandidateConfig, parse_pipeline
from airloop.model.candidates import build_pipeline

FLIPS = 60


def make_cfg(name="suspects"):
    return parse_pipeline(
        {
            "name": name,
            "source": {"uri": "file:///nowhere/*.csv"},
            "target": "y",
            "task": "classification",
            "id_column": "cid",
            "event_time_column": "ts",
            "training": {"cv_folds": 3, "candidates": [{"name": "lr", "estimator": "logistic_regression"}]},
        }
    )


@pytest.fixture(scope="module")
def planted():
    """1200 rows with a clear signal; FLIPS labels flipped at known ids."""
    rng = np.random.default_rng(0)
    n = 1200
    frame = pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.normal(size=n), "color": rng.choice(["r", "g"], n)})
    logit = 2.5 * frame["x1"] - 1.5 * frame["x2"] + (frame["color"] == "r") * 1.0
    frame["y"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame["cid"] = [f"c{i:05d}" for i in range(n)]
    frame["ts"] = pd.Timestamp("2026-03-01") + pd.to_timedelta(np.arange(n), unit="min")
    flipped = rng.choice(n, FLIPS, replace=False)
    frame.loc[flipped, "y"] = 1 - frame.loc[flipped, "y"]
    model = build_pipeline(CandidateConfig(name="lr", estimator="logistic_regression"), ["x1", "x2"], ["color"], 0)
    model.fit(frame[["x1", "x2", "color"]], frame["y"])
    return frame, set(frame.loc[flipped, "cid"]), model


def test_planted_flipped_labels_are_found_with_recall_above_half(planted):
    from airloop.model.suspects import find_suspects, out_of_fold_proba

    frame, flipped, model = planted
    proba = out_of_fold_proba(model, frame[["x1", "x2", "color"]], frame["y"], folds=3, seed=0)
    found = set(frame["cid"].iloc[find_suspects(frame["y"].to_numpy(), proba)])
    recall = len(found & flipped) / len(flipped)
    precision = len(found & flipped) / max(1, len(found))
    assert recall > 0.5, (recall, precision, len(found))
    assert len(found) < 4 * FLIPS, "flags a reviewable share, not the whole set"


def test_suspects_go_to_the_review_queue_once_and_a_review_replaces_the_label(planted, airloop_home):
    from airloop.data.datasets import with_reviewed
    from airloop.model.suspects import review_suspects
    from airloop.serving import review
    from airloop.store.lake import Lake

    frame, flipped, model = planted
    cfg = make_cfg()
    got = review_suspects(cfg, model, frame, run_id="r1")
    assert got["rows"] == 1200 and got["queued"] == got["suspects"] > FLIPS // 2
    again = review_suspects(cfg, model, frame, run_id="r2")
    assert again["queued"] == 0, "the same rows are not queued twice"

    lake = Lake(cfg.name)
    items = review.pending(cfg, lake)
    assert len(items) == got["suspects"] and items["prediction_id"].str.startswith("suspect-").all()
    first = items.iloc[0]
    row = frame.set_index("cid").loc[first["entity_id"]]
    # each item keeps why it was queued, for the reviewer
    assert items["reason"].str.startswith("suspect label: given ").all()
    assert f"given {int(row['y'])!r}" in first["reason"] and "out-of-fold p(given)" in first["reason"]
    assert first["x1"] == pytest.approx(row["x1"]) and first["served_at"][:10] == "2026-03-01"
    # the reviewer confirms the model: the label is flipped back
    fixed = 1 - int(row["y"])
    review.submit_labels(cfg, lake, pd.DataFrame({"prediction_id": [first["prediction_id"]], "y": [fixed]}), "ana")
    merged = with_reviewed(cfg, lake, frame.assign(_batch_id="2026-03-01"), ["2026-03-01"])
    assert len(merged) == len(frame)
    assert merged.set_index("cid").loc[first["entity_id"], "y"] == fixed
