"""StreamingDrift: bin counts of streamed chunks, whatever the column's dtype, and the verdicts they give."""

from __future__ import annotations

import numpy as np
import pandas as pd

from airloop.config import MonitoringConfig
from airloop.monitoring.sketch import StreamingDrift


def frames(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    x = rng.normal(shift, 1.0, n)
    x[rng.random(n) < 0.02] = np.nan
    plan = rng.choice(np.array(["basic", "plus", "pro"], dtype=object), n, p=[0.5, 0.3, 0.2])
    plan[rng.random(n) < 0.01] = None
    return pd.DataFrame({"x": x, "steady": rng.integers(0, 50, n).astype(float), "plan": plan})


def counted(sample: pd.DataFrame, chunks: list[pd.DataFrame]) -> StreamingDrift:
    sketch = StreamingDrift(sample, ["x", "steady"], ["plan"], MonitoringConfig())
    for chunk in chunks:
        sketch.add_reference(chunk)
        sketch.add_current(chunk)
    return sketch


def test_counts_do_not_depend_on_chunking_dtype_or_threads():
    rng = np.random.default_rng(0)
    sample, data = frames(rng, 3000), frames(rng, 20_000)
    whole = counted(sample, [data])
    assert whole.ref["x"].sum() == 20_000 and whole.ref["x"][-1] == int(data["x"].isna().sum())
    assert whole.ref["plan"][-1] == int(data["plan"].isna().sum())

    # Values exactly on a bin edge and just either side: float32 must bin as the same values in float64 do.
    edge_hits = data.copy()
    edges = whole.edges["x"]
    picks = np.concatenate([edges, np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf)])
    edge_hits.loc[: picks.size - 1, "x"] = picks.astype(np.float32).astype(np.float64)
    as64 = counted(sample, [edge_hits])
    as32 = counted(sample, [edge_hits.astype({"x": np.float32, "steady": np.float32})])

    variants = {
        "four chunks": counted(sample, [data.iloc[i : i + 5000] for i in range(0, 20_000, 5000)]),
        "one thread": counted(sample, []),
        "categorical": counted(sample, [data.astype({"plan": "category"})]),
        "string dtype": counted(sample, [data.astype({"plan": "str"})]),
    }
    variants["one thread"].workers = 1
    variants["one thread"].add_reference(data)
    variants["one thread"].add_current(data)
    for name, sketch in variants.items():
        for c in ("x", "steady", "plan"):
            assert sketch.ref[c].tolist() == whole.ref[c].tolist(), (name, c)
            assert sketch.cur[c].tolist() == whole.cur[c].tolist(), (name, c)
    for c in ("x", "steady"):
        assert as32.ref[c].tolist() == as64.ref[c].tolist(), c
    assert as64.ref["x"].tolist() != whole.ref["x"].tolist()  # the edge values did move rows between bins


def test_unseen_categories_go_to_other_and_the_shift_alerts():
    rng = np.random.default_rng(1)
    sample = frames(rng, 3000)
    sketch = StreamingDrift(sample, ["x", "steady"], ["plan"], MonitoringConfig())
    for _ in range(3):
        sketch.add_reference(frames(rng, 50_000))
    shifted = frames(rng, 50_000, shift=0.5)
    shifted.loc[:99, "plan"] = "enterprise"  # a level the reference never had
    sketch.add_current(shifted)
    assert sketch.cur["plan"][len(sketch.levels["plan"])] == 100  # "(other)"
    report = sketch.report()
    status = {f.feature: f.status for f in report.features}
    assert status["x"] == "alert" and status["steady"] == "ok", status
    assert report.n_reference == 150_000 and report.n_current == 50_000
    assert report.drifted_features[0] == "x"
    sketch.close()
