"""airloop.model.feasibility: go on the demo simulator, no-go on a leak-planted copy of it, and a no-go stops the
first promotion until someone overrides it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from airloop.config import get_pipeline


@pytest.fixture(scope="module")
def churn(tmp_path_factory):
    """The simulator's history (4000 rows) and the demo pipeline's config."""
    from airloop.demo.simulate import SimulationSpec, simulate

    out = tmp_path_factory.mktemp("sim")
    simulate(out, SimulationSpec(days=1))
    history = pd.read_csv(sorted((out / "landing").glob("churn_*.csv"))[0])
    return get_pipeline("churn"), history


def test_go_on_the_simulator(churn):
    from airloop.model.feasibility import assess

    cfg, frame = churn
    report = assess(cfg, frame)
    assert report["decision"] == "go", report["reasons"]
    assert report["sentence"].startswith("Go for churn: a simple model beats the baseline credibly")
    sig = report["signal"]
    assert sig["value"] > 0.7 and sig["baseline"] == pytest.approx(0.5) and sig["lower_bound"] > 0.1
    assert sig["ci"][0] <= sig["improvement"] <= sig["ci"][1]
    assert [c["share"] for c in sig["curve"]] == [0.25, 0.5, 1.0]
    assert 0.1 < report["label_balance"]["minority_share"] < 0.5
    assert report["columns"]["leakage"] == [] and report["columns"]["id_like"] == []


def test_no_go_on_a_leak_planted_set_with_its_reasons(churn):
    from airloop.model.feasibility import assess, render_html

    cfg, frame = churn
    rng = np.random.default_rng(0)
    leaky = frame.assign(
        refund_issued=np.where(rng.random(len(frame)) < 0.01, 1 - frame["churned"], frame["churned"]),
        account_no=np.arange(len(frame)) + 10_000,  # an undeclared id
        plan_code="standard",  # constant
    )
    report = assess(cfg, leaky)
    assert report["decision"] == "no-go"
    leak = report["columns"]["leakage"]
    assert [c["column"] for c in leak] == ["refund_issued"] and leak[0]["value"] > 0.98
    assert [c["column"] for c in report["columns"]["id_like"]] == ["account_no"]
    assert any("leakage suspect: column 'refund_issued'" in r for r in report["reasons"])
    assert any("id-like column 'account_no'" in r for r in report["reasons"])
    assert any("constant column 'plan_code'" in w for w in report["warnings"])
    assert report["sentence"].startswith("No-go for churn: leakage suspect")
    page = render_html(report)
    assert "NO-GO" in page and "refund_issued" in page and "<script" not in page


def test_no_signal_is_a_no_go_with_the_interval():
    from airloop.config import parse_pipeline
    from airloop.model.feasibility import assess

    rng = np.random.default_rng(1)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=400) for i in range(4)}).assign(y=rng.integers(0, 2, 400))
    cfg = parse_pipeline(
        {"name": "noise", "source": {"uri": "file:///x/*.csv"}, "target": "y", "task": "classification"}
    )
    report = assess(cfg, frame)
    assert report["decision"] == "no-go"
    assert any(r.startswith("no credible signal: roc_auc") and "lower bound" in r for r in report["reasons"])


def test_a_no_go_stops_the_first_promotion_until_forced(churn, mlflow_store):
    from airloop.model import feasibility
    from airloop.store import lake as lk

    cfg, frame = churn
    leaky = frame.assign(refund_issued=frame["churned"])
    assert feasibility.gate_check(cfg)["detail"] == "no feasibility report for this pipeline"
    report = feasibility.run_feasibility(cfg, leaky)
    assert lk.exists(report["html_uri"]) and report["run_id"]
    check = feasibility.gate_check(cfg)
    assert not check["passed"] and "leakage suspect" in check["detail"] and "--force" in check["detail"]
    feasibility.force(cfg, "the refund column is filled before the cancellation", by="ana")
    check = feasibility.gate_check(cfg)
    assert check["passed"] and check["detail"].startswith("no-go overridden by ana")
    import mlflow

    page = mlflow.artifacts.load_text(f"runs:/{report['run_id']}/feasibility/report.html")
    assert "No-go for churn" in page
