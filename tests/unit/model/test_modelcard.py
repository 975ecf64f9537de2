"""The model card states the gate's interval as the gate uses it, and where each metric was measured."""

from __future__ import annotations

from types import SimpleNamespace

from airloop.config import parse_pipeline
from airloop.model import modelcard
from airloop.model.baseline import baseline_check
from airloop.model.gate import champion_check


def _shop_cfg():
    return parse_pipeline(
        {"name": "shop", "source": {"uri": "file:///x/*.csv"}, "target": "y", "task": "classification"}, "shop.yaml"
    )


def _run(params: dict, metrics: dict) -> SimpleNamespace:
    """The parts of an MLflow training run the card reads."""
    return SimpleNamespace(
        data=SimpleNamespace(tags={}, params=params, metrics=metrics), info=SimpleNamespace(run_id="r1")
    )


def _blessed(version: str, reason: str, roc_auc: float, **fields) -> dict:
    """A blessed roc_auc verdict as the gate writes it, with one reason line; ``fields`` adds the comparisons."""
    return {
        "metric": "roc_auc",
        "version": version,
        "blessed": True,
        "reasons": [reason],
        "metrics": {"roc_auc": roc_auc},
        "challenger_metric": roc_auc,
        **fields,
    }


def test_card_shows_the_one_sided_bound_with_the_two_sided_90_interval():
    cfg = _shop_cfg()
    run = _run(params={"cv_folds": "3"}, metrics={"cv_roc_auc": 0.8})
    # A credibly better challenger whose two-sided 95% interval includes zero: the old card contradicted its verdict.
    cmp = {"improvement": 0.012, "ci": [-0.001, 0.025], "bounds": [0.002, 0.022], "resamples": 200}
    check = champion_check(cfg, "roc_auc", 0.83, 0.818, "1", cmp)
    assert check["passed"] and "two-sided 90% interval [+0.0020, +0.0220]" in check["detail"]
    assert "-0.0010" not in check["detail"]
    verdict = _blessed(
        "2",
        f"PASS champion: {check['detail']}",
        0.83,
        champion_metric=0.818,
        champion_version="1",
        improvement=0.012,
        ci=cmp["ci"],
        lower_bound=0.002,
        interval_90=cmp["bounds"],
        production_window={"rows": 120, "batches": ["2026-01-02"], "challenger": 0.8, "champion": 0.79},
    )
    card = modelcard.render(cfg, run, verdict)
    assert "one-sided 95% lower bound +0.0020; two-sided 90% interval [+0.0020, +0.0220]" in card
    assert "95% bootstrap CI" not in card and "[-0.0010" not in card
    assert "| roc_auc | 0.8300 | holdout |" in card and "| roc_auc | 0.8000 | CV (3-fold, training split) |" in card
    assert "Recent window (latest labeled production rows: 120 rows" in card


def test_card_shows_the_baseline_comparison_as_the_gate_rule_reads():
    cfg = _shop_cfg()
    run = _run(params={}, metrics={})
    # Credibly better than guessing (5th percentile > 0) while the two-sided 95% interval includes zero.
    cmp = {"improvement": 0.03, "ci": [-0.004, 0.061], "bounds": [0.003, 0.057], "resamples": 200}
    check = baseline_check(cfg, "roc_auc", 0.53, 0.5, cmp)
    assert check["passed"]
    assert "one-sided 95% lower bound +0.0030 must be > 0" in check["detail"]
    assert "two-sided 90% interval [+0.0030, +0.0570]" in check["detail"] and "-0.0040" not in check["detail"]
    baseline = {
        "kind": "class prior",
        "value": 0.5,
        "improvement": 0.03,
        "ci": cmp["ci"],
        "lower_bound": 0.003,
        "interval_90": cmp["bounds"],
    }
    verdict = _blessed("1", f"PASS baseline: {check['detail']}", 0.53, champion_metric=None, baseline=baseline)
    card = modelcard.render(cfg, run, verdict)
    line = next(x for x in card.splitlines() if x.startswith("Against the trivial baseline"))
    assert "roc_auc 0.5300 vs 0.5000; improvement 0.0300" in line
    assert "one-sided 95% lower bound +0.0030; two-sided 90% interval [+0.0030, +0.0570]" in line
    assert "lower bound must be above 0" in line
    assert "95% bootstrap CI" not in card and "-0.0040" not in card and "0.0610" not in card
