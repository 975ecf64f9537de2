"""airloop profile: a self-contained HTML EDA report, logged to MLflow."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fixtures.configs import pipeline_cfg

from airloop.data.profile import profile_frame, profile_pipeline, render_html


def cfg_for(task: str = "classification", target: str = "churned"):
    return pipeline_cfg(name="shop", target=target, task=task, event_time_column=None)


def frame(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    signal = rng.normal(0, 1, rows)
    out = pd.DataFrame(
        {
            "customer_id": [f"C{i}" for i in range(rows)],
            "signal": signal,
            "noise": rng.normal(0, 1, rows),
            "plan": np.where(signal > 0, "pro", "basic"),
            "churned": (signal + rng.normal(0, 0.3, rows) > 0).astype(int),
        }
    )
    out.loc[:39, "noise"] = np.nan  # 10% missing
    out.loc[40:44, "noise"] = 50.0  # 5 planted outliers
    return out


def test_profile_finds_missing_values_outliers_and_what_goes_with_the_target():
    profile = profile_frame(cfg_for(), frame())
    by_name = {c.name: c for c in profile.columns}
    assert by_name["noise"].missing == 40 and by_name["noise"].missing_pct == 10.0
    assert by_name["noise"].outliers >= 5  # the planted ones (plus the normal tail's few)
    assert by_name["noise"].outlier_pct == round(100 * by_name["noise"].outliers / 360, 3)
    assert by_name["signal"].target_association > 0.6 > abs(by_name["noise"].target_association)
    assert by_name["plan"].association_measure == "Cramér's V" and by_name["plan"].target_association > 0.6
    assert by_name["signal"].stats["min"] < by_name["signal"].stats["median"] < by_name["signal"].stats["max"]
    assert sum(c for _, c in by_name["signal"].histogram) == 400
    assert dict(profile.target_distribution).keys() == {"0", "1"}


def test_regression_targets_use_correlation_and_eta():
    data = frame().assign(price=lambda f: f["signal"] * 10 + 100)
    profile = profile_frame(cfg_for("regression", "price"), data.drop(columns=["churned"]))
    by_name = {c.name: c for c in profile.columns}
    assert by_name["signal"].association_measure == "Pearson r" and by_name["signal"].target_association > 0.99
    assert by_name["plan"].association_measure == "correlation ratio (eta)"


def test_html_is_self_contained():
    page = render_html(profile_frame(cfg_for(), frame()))
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    for section in ("Association with the target", "Descriptive statistics", "Missing values", "Distributions"):
        assert section in page
    assert "<script" not in page and "src=" not in page and "<link" not in page


def test_profile_is_written_to_the_lake_and_logged_to_mlflow(mlflow_store):
    from mlflow.tracking import MlflowClient

    from airloop.store import lake as lk

    result = profile_pipeline(cfg_for(), frame())

    assert lk.read_bytes(result["uri"]).startswith(b"<!DOCTYPE html>")
    client = MlflowClient()
    artifacts = {a.path for a in client.list_artifacts(result["mlflow_run_id"], "profile")}
    assert artifacts == {"profile/profile.html", "profile/profile.json"}
    assert client.get_run(result["mlflow_run_id"]).data.tags["airloop.stage"] == "profile"
    assert "most associated with the target: " in result["summary"]
    assert set(result["summary"].split("target: ")[1].split(", ")[:2]) == {"signal", "plan"}


@pytest.mark.parametrize("rows", [1, 3])
def test_tiny_frames_do_not_break_the_report(rows):
    page = render_html(profile_frame(cfg_for(), frame().head(rows)))
    assert "Profile of pipeline" in page


def test_cli_profiles_a_file(mlflow_store, tmp_path, monkeypatch, capsys):
    from airloop.cli import main

    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "shop.yaml").write_text(
        "name: shop\nsource: {uri: 'file:///x/*.csv'}\ntarget: churned\ntask: classification\nid_column: customer_id\n"
    )
    monkeypatch.setenv("AIRLOOP_PIPELINES_DIR", str(pipelines))
    data = tmp_path / "sample.csv"
    frame().to_csv(data, index=False)

    assert main(["profile", "shop", "--from", str(data)]) == 0
    assert "Profiled 400 rows of 'shop'" in capsys.readouterr().out
    assert main(["profile", "shop"]) == 2  # no batches in the lake yet, and no file given
    assert "no validated or staged batches" in capsys.readouterr().err


def test_profile_joins_the_delayed_labels_feed(mlflow_store, tmp_path):
    """Validated batches carry no target when labels arrive later: the profile fills it from the labels feed,
    and rows still unlabeled are shown as such, not as a "nan" class."""
    from airloop.data.profile import join_labels
    from airloop.store.lake import Lake, write_parquet

    cfg = pipeline_cfg(name="shop", labels={"uri": "file:///x/labels_*.csv"}, event_time_column=None)
    full = frame()
    features = full.drop(columns=["churned"])
    lake = Lake("shop", root=tmp_path.as_uri())
    write_parquet(lake.part("labels", "2026-01-01"), full[["customer_id", "churned"]].iloc[:300])

    joined, count = join_labels(cfg, features, lake)
    assert count == 300
    assert joined["churned"].iloc[:300].tolist() == full["churned"].iloc[:300].tolist()
    profile = profile_frame(cfg, joined)
    shown = dict(profile.target_distribution)
    assert shown["not labeled yet"] == 100 and "nan" not in shown
    assert shown["0"] + shown["1"] == 300
    assert next(c for c in profile.columns if c.name == "signal").target_association is not None
