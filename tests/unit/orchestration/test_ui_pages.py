"""The Airloop plugin's pure parts: what a task's result references, and the page built from a status document."""

from __future__ import annotations

from airloop.orchestration import evidence
from airloop.orchestration.ui_pages import report_href, status_page, task_page


def test_references_come_from_what_the_stage_returned():
    verdict = {
        "run_id": "r1",
        "version": "3",
        "model_card_uri": "runs:/r1/model_card.md",
        "verdict_uri": "runs:/r1/gate/verdict.json",
        "blessed": True,
    }
    refs = evidence.references(verdict, "churn")
    assert [(r["kind"], r["ref"]) for r in refs] == [
        ("mlflow_run", "r1"),
        ("model_version", "3"),
        ("model_card", "runs:/r1/model_card.md"),
        ("gate_verdict", "runs:/r1/gate/verdict.json"),
    ]
    assert all(r["pipeline"] == "churn" for r in refs)
    batches = [
        {"batch_id": "2026-01-01", "data_docs": "file:///l/churn/reports/data_docs/2026-01-01/index.html"},
        {"batch_id": "2026-01-02", "data_docs": None},
    ]
    assert evidence.references(batches) == [
        {"kind": "data_docs", "ref": batches[0]["data_docs"], "batch_id": "2026-01-01"}
    ]
    assert evidence.references("3") == [] and evidence.references(None) == []
    assert evidence.merge(refs[:2], refs[1:3]) == refs[:3]


def test_report_links_only_for_files_under_the_pipelines_reports():
    lake = "file:///l/churn"
    assert report_href("churn", lake, f"{lake}/reports/drift/2026-01-02.html") == (
        "/airloop/reports/churn/drift/2026-01-02.html"
    )
    assert report_href("churn", lake, "file:///elsewhere/x.html") is None
    assert report_href("churn", lake, None) is None


def doc(champion=True):
    where = "holdout (frozen test split of the training data)"
    return {
        "generated_at": "2026-01-09T10:00:00+00:00",
        "lake_uri": "file:///l",
        "pipelines": {
            "churn": {
                "registered_model": "airloop-churn",
                "primary_metric": "log_loss",
                "lake_uri": "file:///l/churn",
                "experiments": {"training": {"name": "airloop/churn", "id": "1"}},
                "champion": {
                    "version": "2",
                    "run_id": "abc",
                    "candidate": "logistic_regression",
                    "holdout": {"metric": "roc_auc", "value": 0.81234, "measured_on": where},
                    "cv": None,
                    "gate": {"verdict": "blessed", "reasons": ["PASS champion: <better>"]},
                    "model_card": "runs:/abc/model_card.md",
                }
                if champion
                else None,
                "gate": None,
                "drift": {
                    "batch_id": "2026-01-08",
                    "status": "alert",
                    "confirmed": True,
                    "drifted_features": ["contract"],
                    "top_features": [["contract", 0.4]],
                    "report_uri": "file:///l/churn/reports/drift/2026-01-08.html",
                },
                "dag_runs": {"train": {"dag_id": "airloop_churn_train", "run_id": "manual__1", "state": "success"}},
                "approvals": [],
                "validation": None,
            }
        },
    }


def test_status_page_names_where_each_metric_was_measured_and_escapes_text():
    html = status_page(doc(), {})
    assert 'data-testid="champion-holdout">0.8123</span>' in html and "on holdout" in html
    assert "PASS champion: &lt;better&gt;" in html and "<better>" not in html
    assert 'href="/airloop/reports/churn/drift/2026-01-08.html"' in html
    assert 'href="/dags/airloop_churn_train/runs/manual__1" target="_top"' in html
    # The candidates' experiment lists them best first on the holdout (lower log loss is better).
    assert "/#/experiments/1/runs?workflowType=machine_learning&amp;orderByKey=metrics.%60test_log_loss%60&amp;" in html
    assert "orderByAsc=true" in html
    assert "http" not in html.split("<body>")[1].split("MLflow")[0]  # nothing loaded from a CDN
    assert "none yet" in status_page(doc(champion=False), {})


def test_task_page_says_when_a_task_recorded_nothing():
    assert "recorded no MLflow run" in task_page("d", "r", "t", -1, [], {})
    refs = [{"kind": "mlflow_run", "ref": "r1"}]
    page = task_page("d", "r", "t", 0, refs, {("mlflow_run", "r1"): "http://mlflow/#/runs/r1"})
    assert 'href="http://mlflow/#/runs/r1"' in page and "[0]" in page


def test_status_text_names_the_holdout_metric_and_the_gate():
    from airloop.monitoring.status_text import render

    d = doc()
    p = d["pipelines"]["churn"]
    p["champion"].update(
        promoted_at="2026-01-02",
        promoted_by="airloop-gate",
        staleness=None,
        cv={"metric": "roc_auc", "value": 0.8, "measured_on": "CV (k-fold cross-validation on the training split)"},
    )
    p["gate"] = {"verdict": "rejected", "candidate": "hgb", "run_id": "r9", "reasons": ["FAIL champion: worse"]}
    p.update(retrains=[], staleness=[])
    d["tracking_uri"] = "sqlite:///x"
    text = render(d)
    assert "roc_auc 0.8123 on holdout; roc_auc 0.8000 on CV" in text
    assert "gate      rejected: candidate hgb (run r9)" in text and "FAIL champion: worse" in text
    assert "largest PSI: contract 0.400" in text
